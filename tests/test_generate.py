"""Views, constrained decoding (greedy, DFS, sampling), teacher-forced scoring and predict, on fakes and scratch:tiny."""
import itertools
import math
import time

import numpy as np
import pytest
import torch
from transformers import DynamicCache

from solver.augment import IDENTITY, Transform
from solver.codec import Codec
from solver.config import Config
from solver.generate import (EOS_SYM, NL_SYM, View, decode_batch, decode_views, dfs_view, make_view, make_views,
                             score_view)
from solver.model import Loaded, load_model
from solver.pipeline import predict
from solver.plan import plausible_shape
from solver.tasks import Task, grid_key

CODEC = Codec.compact()


# fakes --------------------------------------------------------------------------------------------------------------
class FakeModel(torch.nn.Module):
    """A causal LM whose next-token log-probabilities are `policy(history)`, history = the row's tokens, pads removed.

    Its cache is a real transformers DynamicCache (or the one passed in) filled through `Cache.update`, whose keys are
    the token ids + 1 (0: padding). `prefills` counts rows of forward passes that start from an empty cache.
    """

    def __init__(self, policy):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.policy = policy
        self.calls = 0
        self.prefills = 0
        self.rows: list[int] = []  # batch rows of each call

    def forward(self, input_ids, past_key_values=None, logits_to_keep=0, **_):
        self.calls += 1
        self.rows.append(input_ids.shape[0])
        if past_key_values is None or past_key_values.get_seq_length() == 0:
            self.prefills += input_ids.shape[0]
        cache = past_key_values if past_key_values is not None else DynamicCache()
        ids = (input_ids + 1).float()[:, None, :, None]
        keys, _ = cache.update(ids, ids, 0)
        keep = logits_to_keep or input_ids.shape[1]  # positions whose logits are asked for
        rows = []
        for row in (keys[:, 0, :, 0].long() - 1).tolist():
            steps = []
            for t in range(len(row) - keep, len(row)):
                history = [x for x in row[:t + 1] if x not in (CODEC.pad, -1)]
                steps.append(torch.as_tensor(self.policy(history), dtype=torch.float32))
            rows.append(torch.stack(steps))
        return type("Out", (), {"logits": torch.stack(rows), "past_key_values": cache})()


def split(history: list[int]) -> tuple[bytes, list[int]]:
    """(prompt as bytes, generated tokens): the prompt ends with the last O marker."""
    if CODEC.out not in history:
        return bytes(history), []
    cut = len(history) - history[::-1].index(CODEC.out)
    return bytes(history[:cut]), history[cut:]


def answer_policy(script: dict[bytes, np.ndarray], default: np.ndarray):
    """Spell script[prompt] (token ids ending in EOS), or `default` for any other prompt, with near-certainty."""
    def policy(history):
        prompt, gen = split(history)
        target = script.get(prompt, default)
        logits = np.full(len(CODEC.token_ids), -20.0)
        logits[target[len(gen)] if len(gen) < len(target) else CODEC.eos] = 0.0
        return logits
    return policy


def answer_ids(grid) -> np.ndarray:
    return np.append(CODEC.grid_ids(np.asarray(grid, dtype=np.uint8)), CODEC.eos)


def colour_swap_task() -> Task:
    """Swap colours 1 and 2; one test input."""
    rng = np.random.default_rng(3)

    def pair(shape):
        a = rng.choice([0, 1, 2], size=shape).astype(np.uint8)
        b = a.copy()
        b[a == 1], b[a == 2] = 2, 1
        return a, b
    demos = [pair((3, 4)), pair((4, 4)), pair((2, 3))]
    x, y = pair((3, 3))
    return Task("swap", demos, [x], [y])


# views --------------------------------------------------------------------------------------------------------------
def test_plausible_shape_covers_demo_outputs_and_scaled_query():
    demos = [(np.zeros((2, 2), np.uint8), np.zeros((4, 6), np.uint8))]
    assert plausible_shape(demos, np.zeros((3, 3), np.uint8)) == (6, 9)
    assert plausible_shape(demos, np.zeros((20, 20), np.uint8)) == (30, 30)


def test_views_are_seeded_distinct_and_start_with_the_identity():
    task, icfg = colour_swap_task(), Config().infer
    a, b = make_views(task, 0, CODEC, 6, 0, icfg), make_views(task, 0, CODEC, 6, 0, icfg)
    assert [v.transform for v in a] == [v.transform for v in b]
    assert a[0].transform.is_identity and len({v.transform for v in a}) == 6
    assert all(v.prompt[-1] == CODEC.out for v in a)


# decoding -----------------------------------------------------------------------------------------------------------
def test_answer_known_only_under_one_transform_is_recovered_by_inversion():
    task, icfg = colour_swap_task(), Config().infer
    views = make_views(task, 0, CODEC, 8, 0, icfg)
    k = 5
    special = views[k].transform
    assert special.dihedral not in (0,) and special.colors != tuple(range(10))
    truth_in_view = special.apply(task.test_outputs[0])
    model = FakeModel(answer_policy({bytes(views[k].prompt.tolist()): answer_ids(truth_in_view)},
                                    default=answer_ids([[5, 5, 5]])))
    decoded = decode_batch(model, CODEC, views, time.monotonic() + 60)
    assert len(decoded) == 8
    right = [d.view for d in decoded if grid_key(d.grid) == grid_key(task.test_outputs[0])]
    assert right == [k]
    assert grid_key(truth_in_view) != grid_key(task.test_outputs[0])  # inversion did real work


def test_batched_greedy_equals_one_view_at_a_time_on_a_real_model():
    loaded = load_model("scratch:tiny")
    task = colour_swap_task()
    views = make_views(task, 0, loaded.codec, 3, 1, Config().infer)  # prompts of different lengths: left padding
    assert len({len(v.prompt) for v in views}) > 1
    together = decode_batch(loaded.model, loaded.codec, views, time.monotonic() + 60)
    alone = [decode_batch(loaded.model, loaded.codec, [v], time.monotonic() + 60)[0] for v in views]
    assert [grid_key(d.grid) for d in together] == [grid_key(d.grid) for d in alone]
    assert np.allclose([d.logp for d in together], [d.logp for d in alone], atol=1e-3)


def tree_policy(seed: int):
    """Next-token probabilities drawn (peaked, seeded) from the generated prefix alone; invalid tokens get some."""
    def probs(gen: tuple) -> np.ndarray:
        rng = np.random.default_rng([seed, len(gen)] + list(gen))
        p = np.full(12, 1e-6)
        p[[0, 1, 2, NL_SYM, EOS_SYM]] = rng.dirichlet(np.full(5, 0.5))  # mass on few symbols: a bushy tree
        return p / p.sum()
    def policy(history):
        _, gen = split(history)
        sym = {t: i for i, t in enumerate(list(CODEC.digit_ids) + [CODEC.nl, CODEC.eos])}
        logits = np.full(len(CODEC.token_ids), -1e9)
        p = probs(tuple(sym[t] for t in gen))
        logits[list(CODEC.digit_ids) + [CODEC.nl, CODEC.eos]] = np.log(p)
        return logits
    return policy, probs


def enumerate_above(probs, threshold: float, max_shape) -> dict[bytes, float]:
    """Brute force: every valid grid within max_shape whose sequence probability exceeds threshold."""
    out, frontier = {}, [((), 1.0)]
    while frontier:
        seq, p = frontier.pop()
        dist = probs(seq)
        for s in range(12):
            q = p * dist[s]
            if q <= threshold:
                continue
            if s == EOS_SYM:
                ids = [CODEC.token_ids[x] if x < 10 else CODEC.nl for x in seq] + [CODEC.eos]
                grid = CODEC.decode_grid(ids)
                if grid is not None and grid.shape[0] <= max_shape[0] and grid.shape[1] <= max_shape[1]:
                    out[grid_key(grid)] = math.log(q)
            elif len(seq) < 40:
                frontier.append((seq + (s,), q))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_dfs_returns_exactly_the_completions_above_the_threshold(seed):
    policy, probs = tree_policy(seed)
    view = View(IDENTITY, np.array([CODEC.bos, CODEC.out]), (2, 3))
    threshold = 0.002
    expected = enumerate_above(probs, threshold, view.max_shape)
    got = dfs_view(FakeModel(policy), CODEC, view, time.monotonic() + 60, threshold=threshold, max_candidates=10**6)
    assert {grid_key(d.grid): pytest.approx(d.logp, abs=1e-4) for d in got} == expected
    assert [d.logp for d in got] == sorted((d.logp for d in got), reverse=True)


def test_dfs_stops_at_the_candidate_cap_keeping_the_best_branches_first():
    policy, probs = tree_policy(1)
    view = View(IDENTITY, np.array([CODEC.bos, CODEC.out]), (2, 3))
    got = dfs_view(FakeModel(policy), CODEC, view, time.monotonic() + 60, threshold=1e-4, max_candidates=2)
    assert len(got) == 2


def test_dfs_log_prob_equals_teacher_forced_score_on_a_real_model():
    loaded = load_model("scratch:tiny", seed=2)
    view = make_view(colour_swap_task(), 0, loaded.codec, IDENTITY)
    view = View(view.transform, view.prompt, (2, 2))
    found = dfs_view(loaded.model, loaded.codec, view, time.monotonic() + 60, threshold=1e-6, max_candidates=5)
    assert len(found) == 5
    scores = score_view(loaded.model, loaded.codec, view, [d.grid for d in found], time.monotonic() + 60,
                        batch_size=2)  # batches of different widths: right padding
    assert np.allclose(scores, [d.logp for d in found], atol=1e-3)


def random_policy(seed: int):
    rng = np.random.default_rng(seed)
    return lambda history: rng.normal(0, 3, len(CODEC.token_ids))


@pytest.mark.parametrize("seed", range(8))
def test_constrained_decoding_never_returns_a_malformed_grid(seed):
    rng = np.random.default_rng(seed)
    views = []
    for _ in range(4):
        h, w = int(rng.integers(1, 13)), int(rng.integers(1, 13))
        t = Transform(int(rng.integers(8)))
        views.append(View(t, np.array([CODEC.bos, CODEC.out]), (h, w)))
    model = FakeModel(random_policy(seed))
    for temperature in (0.0, 2.0):
        decoded = decode_batch(model, CODEC, views, time.monotonic() + 60, temperature=temperature, samples=2,
                               generator=torch.Generator().manual_seed(seed))
        assert len(decoded) == 8  # every row finishes within its token cap
        for d in decoded:
            view_grid = views[d.view].transform.apply(d.grid)
            assert d.grid.dtype == np.uint8 and d.grid.ndim == 2 and d.grid.max() <= 9
            assert 1 <= view_grid.shape[0] <= views[d.view].max_shape[0]
            assert 1 <= view_grid.shape[1] <= views[d.view].max_shape[1]
            assert d.tokens <= views[d.view].max_new_tokens


# forced shapes ------------------------------------------------------------------------------------------------------
def eager_end_policy(history):
    """A model that would end the grid at once: EOS first, then the newline, digits last."""
    logits = np.full(len(CODEC.token_ids), -30.0)
    logits[CODEC.eos], logits[CODEC.nl], logits[list(CODEC.digit_ids)] = 0.0, -5.0, -20.0
    return logits


def rambling_policy(history):
    """A model that would never end a row: digits first, the newline and EOS last."""
    logits = np.full(len(CODEC.token_ids), -30.0)
    logits[list(CODEC.digit_ids)], logits[CODEC.nl], logits[CODEC.eos] = 0.0, -20.0, -25.0
    return logits


def forced_views(shapes: list[tuple[int, int]]) -> list[View]:
    return [View(Transform(k % 8), np.array([CODEC.bos, CODEC.out]), s, forced=True) for k, s in enumerate(shapes)]


def assert_exact(decoded, views: list[View], expected: int) -> None:
    assert len(decoded) == expected
    for d in decoded:
        view = views[d.view]
        assert view.transform.apply(d.grid).shape == view.max_shape
        assert d.tokens == view.max_new_tokens == CODEC.answer_length(*view.max_shape)


@pytest.mark.parametrize("policy", [random_policy(3), eager_end_policy, rambling_policy],
                         ids=["random", "eager_end", "rambling"])
def test_a_forced_shape_is_decoded_exactly_greedy_sampled_and_by_dfs(policy):
    views = forced_views([(1, 1), (1, 5), (4, 1), (3, 7), (6, 2)])
    model = FakeModel(policy)
    assert_exact(decode_batch(model, CODEC, views, time.monotonic() + 60), views, 5)
    sampled = decode_batch(model, CODEC, views, time.monotonic() + 60, temperature=2.0, samples=2,
                           generator=torch.Generator().manual_seed(0))
    assert_exact(sampled, views, 10)
    for i, view in enumerate(views):
        found = dfs_view(model, CODEC, view, time.monotonic() + 60, threshold=1e-300, max_candidates=3, view_index=i)
        assert_exact(found, views, 3)


def test_unforced_the_same_models_end_early_or_ramble_to_the_cap():
    """Within a cap alone, the model picks the shape: one that would end at once gives a 1x1 grid."""
    [view] = forced_views([(3, 7)])
    capped = View(view.transform, view.prompt, view.max_shape)
    [early] = decode_batch(FakeModel(eager_end_policy), CODEC, [capped], time.monotonic() + 60)
    [long] = decode_batch(FakeModel(rambling_policy), CODEC, [capped], time.monotonic() + 60)
    assert capped.transform.apply(early.grid).shape == (1, 1)
    assert capped.transform.apply(long.grid).shape == (3, 7)  # to the cap: rows, then a newline (EOS only after one)


@pytest.mark.parametrize("seed", range(4))
def test_forced_dfs_returns_exactly_the_completions_of_that_shape_above_the_threshold(seed):
    policy, probs = tree_policy(seed)
    threshold = 1e-5
    expected = {k: lp for k, lp in enumerate_above(probs, threshold, (2, 3)).items() if k[:2] == bytes((2, 3))}
    view = View(IDENTITY, np.array([CODEC.bos, CODEC.out]), (2, 3), forced=True)
    got = dfs_view(FakeModel(policy), CODEC, view, time.monotonic() + 60, threshold=threshold, max_candidates=10**6)
    assert expected and {grid_key(d.grid): pytest.approx(d.logp, abs=1e-4) for d in got} == expected
    assert all(d.grid.shape == (2, 3) for d in got)


def doubling_task() -> Task:
    """Each row written twice side by side: the output is rows x 2*cols, certain on every demo."""
    rng = np.random.default_rng(5)
    grids = [rng.integers(0, 4, size=s).astype(np.uint8) for s in [(2, 3), (3, 2), (4, 4), (2, 5)]]
    return Task("double", [(g, np.hstack([g, g])) for g in grids[:3]], [grids[3]], [np.hstack([grids[3]] * 2)])


def test_views_force_a_certain_shape_through_each_transform_and_the_plan_reserves_its_length():
    from solver.plan import task_size
    task, icfg = doubling_task(), Config().infer
    views = make_views(task, 0, CODEC, 8, 0, icfg)
    assert {v.transform.dihedral % 2 for v in views} == {0, 1}  # some views swap the sides
    assert all(v.forced and v.max_shape == v.transform.apply(task.test_outputs[0]).shape for v in views)
    model = FakeModel(random_policy(1))
    decoded = decode_batch(model, CODEC, views, time.monotonic() + 60)
    assert len(decoded) == 8 and all(d.grid.shape == (2, 10) for d in decoded)
    assert all(d.tokens == views[d.view].max_new_tokens for d in decoded)
    planned = task_size(task, CODEC).output_tokens  # the larger orientation: a view may transpose the answer
    assert planned == max(d.tokens for d in decoded) == max(CODEC.answer_length(2, 10), CODEC.answer_length(10, 2))
    unforced = make_views(task, 0, CODEC, 8, 0, Config().override(infer={"force_shape": False}).infer)
    assert not any(v.forced for v in unforced)


def test_a_shape_that_is_not_certain_leaves_views_and_decoding_as_they_were():
    rng = np.random.default_rng(2)
    grids = [rng.integers(1, 4, size=s).astype(np.uint8) for s in [(3, 3), (4, 4), (5, 5)]]
    outs = [np.zeros((2, 2), np.uint8), np.zeros((5, 3), np.uint8)]  # no rule of the inputs gives these sides
    task = Task("vague", list(zip(grids[:2], outs)), [grids[2]])
    forcing, plain = Config().infer, Config().override(infer={"force_shape": False}).infer
    a, b = make_views(task, 0, CODEC, 6, 0, forcing), make_views(task, 0, CODEC, 6, 0, plain)
    assert not any(v.forced for v in a)
    assert [(v.transform, v.max_shape, v.prompt.tolist()) for v in a] == \
        [(v.transform, v.max_shape, v.prompt.tolist()) for v in b]
    model = FakeModel(lambda history: np.random.default_rng(history).normal(0, 3, len(CODEC.token_ids)))
    got = [decode_batch(model, CODEC, views, time.monotonic() + 60) for views in (a, b)]
    assert [(grid_key(d.grid), d.tokens) for d in got[0]] == [(grid_key(d.grid), d.tokens) for d in got[1]]


def test_sampling_is_seeded():
    views = [View(IDENTITY, np.array([CODEC.bos, CODEC.out]), (4, 4))] * 3
    runs = [decode_batch(FakeModel(lambda h: np.zeros(16)), CODEC, views, time.monotonic() + 60, temperature=1.0,
                         generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert [grid_key(d.grid) for d in runs[0]] == [grid_key(d.grid) for d in runs[1]]


# deadlines ----------------------------------------------------------------------------------------------------------
def test_past_deadline_returns_fallback_without_calling_the_model(fake_clock):
    import solver.generate
    import solver.pipeline
    fake_clock.install(solver.pipeline, solver.generate)
    task = colour_swap_task()
    model = FakeModel(random_policy(0))
    attempts = predict(Loaded(model, CODEC, "fake"), task, Config(), deadline=fake_clock.now - 1)
    assert model.calls == 0  # no work at all: the fallback alone
    assert len(attempts) == 1
    assert grid_key(attempts[0].attempt_1) == grid_key(task.test_inputs[0])
    assert attempts[0].attempt_2.tolist() == [[0]]
    view = View(IDENTITY, np.array([CODEC.bos, CODEC.out]), (3, 3))
    past = fake_clock.now - 1
    assert decode_batch(model, CODEC, [view], past) == []
    assert dfs_view(model, CODEC, view, past, threshold=0.1, max_candidates=3) == []
    assert score_view(model, CODEC, view, [np.zeros((1, 1), np.uint8)], past) is None
    assert model.calls == 0


def test_deadline_mid_decode_returns_what_finished(fake_clock):
    """Rows that finished before the deadline come back (mapped to their views); rows still decoding do not; decoding
    stops at the first step past the deadline. Time is a fake clock: each model call takes one second."""
    import solver.generate
    fake_clock.install(solver.generate)
    short = np.array([CODEC.bos, CODEC.out])                                     # answers a 2x2 grid: 7 tokens
    long = np.array([CODEC.bos, *CODEC.grid_ids(np.array([[7]], np.uint8)), CODEC.out])  # never ends early
    never_ends = np.where(np.arange(len(CODEC.token_ids)) < 10, 0.0, -50.0)      # digits only: a full 5x5, 31 tokens
    quick = answer_ids([[1, 2], [3, 4]])

    class OneSecondPerCall(FakeModel):
        def forward(self, *args, **kw):
            fake_clock.advance(1.0)
            return super().forward(*args, **kw)

    def policy(history):
        prompt, _ = split(history)
        return answer_policy({}, default=quick)(history) if prompt == bytes(short.tolist()) else never_ends
    views = [View(IDENTITY, short, (5, 5)), View(IDENTITY, long, (5, 5)), View(IDENTITY, short, (5, 5))]

    unhurried = decode_batch(OneSecondPerCall(policy), CODEC, views, fake_clock.now + 1000)
    assert sorted(d.view for d in unhurried) == [0, 1, 2]                        # with time, every row finishes
    assert [d.grid.shape for d in sorted(unhurried, key=lambda d: d.view)] == [(2, 2), (5, 5), (2, 2)]

    model = OneSecondPerCall(policy)
    deadline = fake_clock.now + 15                                               # the short rows end by 8 s
    got = decode_batch(model, CODEC, views, deadline)
    assert sorted(d.view for d in got) == [0, 2]                                 # what finished; not the long row
    assert all(d.grid.tolist() == [[1, 2], [3, 4]] and d.tokens == len(quick) for d in got)
    assert deadline <= fake_clock.now < deadline + 1 and model.calls < 31        # stopped at the first step past it
    assert decode_batch(OneSecondPerCall(policy), CODEC, views[1:2], fake_clock.now + 15) == []  # nothing finished


def test_invalid_task_gets_fallbacks():
    bad = Task("bad", [], [np.ones((2, 2), np.uint8)], problem="train[0] is not rectangular")
    att = predict(Loaded(FakeModel(random_policy(0)), CODEC, "fake"), bad, Config(), time.monotonic() + 10)
    assert att[0].attempt_1.tolist() == [[1, 1], [1, 1]] and "invalid task" in att[0].note


# the whole test input -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["greedy", "dfs", "sample"])
def test_predict_votes_the_answer_most_views_agree_on(strategy):
    """A fake that knows the answer in every view's frame except two, which say something else."""
    task = colour_swap_task()
    cfg = Config().override(infer={"strategy": strategy, "num_views": 8, "score_views": 4, "rule": "vote",
                                   "samples_per_view": 2, "temperature": 0.5})
    views = make_views(task, 0, CODEC, 8, cfg.run.seed, cfg.infer)
    script = {bytes(v.prompt.tolist()): answer_ids(v.transform.apply(task.test_outputs[0])) for v in views[2:]}
    model = FakeModel(answer_policy(script, default=answer_ids(np.zeros((2, 2)))))
    [att] = predict(Loaded(model, CODEC, "fake"), task, cfg, time.monotonic() + 120)
    assert grid_key(att.attempt_1) == grid_key(task.test_outputs[0])
    assert att.candidates[att.ranking[0]].votes == 6
    assert all(len(c.scores) == 4 for c in att.candidates)
    assert model.training  # predict puts the model back in the mode it found it in


# end to end -----------------------------------------------------------------------------------------------------------
# about a minute on a 2-core CPU, most of it TTT (scratch:mini; the real model: tests/test_real_pipeline.py)
def test_scratch_model_trained_on_a_colour_swap_gets_it_right_under_8_voted_views():
    """TTT (solver.ttt) on a fixed colour swap, then 8 dihedral / demo-order views decoded together and voted."""
    from solver.adapter import attach
    from solver.config import TTTConfig
    from solver.ttt import train_task
    loaded = load_model("scratch:mini")
    rng = np.random.default_rng(1)
    pairs = []
    for _ in range(9):
        a = rng.integers(0, 4, size=(3, 3)).astype(np.uint8)
        b = a.copy()
        b[a == 1], b[a == 2] = 2, 1
        pairs.append((a, b))
    task = Task("swap", pairs[:8], [pairs[8][0]], [pairs[8][1]])
    tcfg = TTTConfig(backend="peft", augmentations=["dihedral", "order"], num_transforms=4, rank=16, alpha=16,
                     rslora=False, train_embeddings=True, lr=3e-3, embedding_lr=3e-3, epochs=10, schedule="constant",
                     warmup=0.05, batch_size=2)
    adapter = attach(loaded.model, tcfg, loaded.codec.token_ids)
    train_task(adapter, task, loaded.codec, tcfg)
    adapter.eval_mode()
    cfg = Config().override(infer={"num_views": 8, "view_colors": False, "score_views": 4, "rule": "vote"})
    stats = {}
    [att] = predict(Loaded(adapter.model, loaded.codec, "scratch:mini"), task, cfg, time.monotonic() + 120, stats)
    assert grid_key(att.attempt_1) == grid_key(task.test_outputs[0])
    assert att.candidates[att.ranking[0]].votes >= 5  # most of the 8 views agree after inversion
    assert stats["scored"] == 4 * len(att.candidates)


def test_bench_infer_forced_shape_line_counts_tokens_and_shapes():
    from solver.bench.infer import summarise_forcing, time_forcing
    loaded, task = load_model("scratch:tiny"), doubling_task()
    cfg = Config().override(infer={"num_views": 4})
    row = {"task": task.id, **time_forcing(loaded, task, cfg, forced_first=True)}
    views = make_views(task, 0, loaded.codec, 4, cfg.run.seed, cfg.infer)
    assert row["certain"] and row["forced"]["right_shape"] == 4
    assert row["forced"]["tokens"] == sum(v.max_new_tokens for v in views) <= 4 * row["planned_tokens"]
    assert row["today"]["tokens"] <= 4 * row["planned_tokens"]
    s = summarise_forcing([row])
    assert s["views"] == 4 and s["forced_tokens_per_view"] == row["forced"]["tokens"] / 4
