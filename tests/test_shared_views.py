"""One prefill per view (solver.generate.SharedViews): scores from the shared cache, DFS that verifies before it
searches, prefills counted per test input. Fakes from test_generate; the real-model checks use scratch:tiny (fp32)."""
import math
import time

import numpy as np
import pytest
from test_generate import (CODEC, FakeModel, answer_ids, answer_policy, colour_swap_task, enumerate_above, split,
                           tree_policy)

from solver.augment import IDENTITY
from solver.config import Config
from solver.generate import (EOS_SYM, LP, NL_SYM, SharedViews, View, _known_paths, decode_batch, dfs_view, grammar_for,
                             make_views, score_view)
from solver.model import Loaded, load_model
from solver.pipeline import predict, predict_one
from solver.tasks import Task, grid_key

FAR = 120.0


def transformed_views(codec, n: int = 6):
    """Views of the colour swap with rotations/flips and colour permutations, prompts of different lengths."""
    views = make_views(colour_swap_task(), 0, codec, n, 0, Config().infer)
    assert any(v.transform.dihedral not in (0,) for v in views)
    assert any(v.transform.colors != tuple(range(10)) for v in views)
    assert len({len(v.prompt) for v in views}) > 1  # rows of different views in one batch: left padding
    return views


def some_grids() -> list[np.ndarray]:
    task = colour_swap_task()
    rng = np.random.default_rng(0)
    return [task.test_outputs[0], task.test_inputs[0], rng.integers(0, 10, (2, 5)).astype(np.uint8),
            np.array([[7]], np.uint8), rng.integers(0, 3, (4, 3)).astype(np.uint8)]


def test_scores_from_the_shared_cache_equal_scores_from_a_fresh_prefill():
    loaded = load_model("scratch:tiny", seed=3)
    views, grids = transformed_views(loaded.codec), some_grids()
    fresh = np.array([score_view(loaded.model, loaded.codec, v, grids, time.monotonic() + FAR) for v in views])
    stats = {}
    shared = SharedViews(loaded.model, loaded.codec, views, prefill_batch=4, stats=stats)  # batched prefills
    scores = shared.score(grids, len(views), time.monotonic() + FAR, batch_size=7)  # batches mix views
    assert scores.shape == (len(views), len(grids))
    assert np.abs(scores - fresh).max() < 1e-4
    assert stats["prefills"] == len(views) and stats["scored"] == len(views) * len(grids)


def test_decoded_log_probs_reused_as_scores_equal_fresh_scores():
    loaded = load_model("scratch:tiny", seed=4)
    views = transformed_views(loaded.codec)
    views = [View(v.transform, v.prompt, (2, 3)) for v in views]  # short answers: a quick greedy decode
    shared = SharedViews(loaded.model, loaded.codec, views)
    icfg = Config().override(infer={"num_views": len(views)}).infer
    decoded = shared.decode(icfg, time.monotonic() + FAR)
    assert len(decoded) == len(views)
    grids = list({grid_key(d.grid): d.grid for d in decoded}.values()) + some_grids()[:2]
    scores = shared.score(grids, 3, time.monotonic() + FAR)  # fewer scoring views: the first 3
    fresh = np.array([score_view(loaded.model, loaded.codec, v, grids, time.monotonic() + FAR) for v in views[:3]])
    assert np.abs(scores - fresh).max() < 1e-4
    for d in decoded[:3]:  # a decoded candidate's score under its own view is its log-prob
        assert scores[d.view][[grid_key(g) for g in grids].index(grid_key(d.grid))] == d.logp


def test_caches_are_sized_to_the_prompts_and_the_views_own_answer_caps():
    loaded = load_model("scratch:tiny")
    views = transformed_views(loaded.codec, 3)
    views = [View(v.transform, v.prompt, shape) for v, shape in zip(views, [(2, 2), (3, 5), (1, 1)])]
    shared = SharedViews(loaded.model, loaded.codec, views)
    shared.prefill(3, time.monotonic() + FAR)
    assert [kv[0][0].shape[2] for kv in shared.kv] == [len(v.prompt) for v in views]  # no padding kept
    _, cache, mask, _ = shared.rows([0, 2])
    width = max(len(views[0].prompt), len(views[2].prompt))
    assert cache.layers[0].get_max_length() == width + max(views[0].max_new_tokens, views[2].max_new_tokens)
    assert mask.shape == (2, width) and int(mask.sum()) == len(views[0].prompt) + len(views[2].prompt)


def test_finished_rows_leave_the_batch_and_answers_stay_those_of_one_view_at_a_time():
    task = colour_swap_task()
    views = make_views(task, 0, CODEC, 4, 0, Config().infer)
    lengths = [(1, 1), (3, 3), (2, 5), (4, 4)]  # answers of different lengths: rows finish at different steps
    script = {bytes(v.prompt.tolist()): answer_ids(np.ones(s, np.uint8)) for v, s in zip(views, lengths)}
    views = [View(v.transform, v.prompt, (5, 5)) for v in views]
    model = FakeModel(answer_policy(script, default=answer_ids([[5]])))
    shared = SharedViews(model, CODEC, views)
    shared.prefill(4, time.monotonic() + FAR)
    model.rows.clear()
    together = decode_batch(model, CODEC, views, time.monotonic() + FAR, shared=shared)
    # 3, 13, 13 and 21 symbols: a row leaves the batch when its answer ends
    assert model.rows == [4] * 2 + [3] * 10 + [1] * 8
    alone = [decode_batch(model, CODEC, [v], time.monotonic() + FAR) for v in views]
    assert [(grid_key(d.grid), d.logp, d.tokens) for d in together] == \
        [(grid_key(d.grid), d.logp, d.tokens) for [d] in alone]
    assert [views[d.view].transform.apply(d.grid).shape for d in together] == lengths


def test_a_row_below_the_floor_leaves_the_batch_unfinished_and_its_path_stays_known():
    views = make_views(colour_swap_task(), 0, CODEC, 4, 0, Config().infer)
    sure = answer_policy({}, default=answer_ids(np.ones((2, 2))))

    def policy(history):  # view 1 is torn between two symbols at every step: p = 1/2 each
        logits = sure(history)
        if split(history)[0] == bytes(views[1].prompt.tolist()):
            logits[CODEC.token_ids[7]] = 0.0
        return logits
    model = FakeModel(policy)
    shared = SharedViews(model, CODEC, views)
    shared.prefill(4, time.monotonic() + FAR)
    model.rows.clear()
    record = {}
    got = decode_batch(model, CODEC, views, time.monotonic() + FAR, shared=shared, record=record,
                       floor=math.log(0.3))
    assert model.rows[0] == 4 and set(model.rows[1:]) == {3}  # after 1/4 < 0.3 at its second symbol it left
    assert sorted(d.view for d in got) == [0, 2, 3] and record["cut"].tolist() == [-1, 1, -1, -1]
    known = {}
    _known_paths(record, 0, known, grammar_for(CODEC).end)
    depth, node = 0, known[1]
    while LP in node:  # the nodes of its path with log-probs: the two it saw, not the padding after it left
        depth, node = depth + 1, next(v for k, v in node.items() if k != LP)
    assert depth == 2


def test_shared_greedy_equals_one_view_at_a_time_on_a_real_model():
    loaded = load_model("scratch:tiny", seed=5)
    views = transformed_views(loaded.codec, 4)
    views = [View(v.transform, v.prompt, s) for v, s in zip(views, [(1, 2), (3, 3), (2, 4), (1, 1)])]
    shared = SharedViews(loaded.model, loaded.codec, views)
    together = decode_batch(loaded.model, loaded.codec, views, time.monotonic() + FAR,
                            shared=shared) if shared.prefill(4, time.monotonic() + FAR) == 4 else []
    alone = [decode_batch(loaded.model, loaded.codec, [v], time.monotonic() + FAR)[0] for v in views]
    assert [grid_key(d.grid) for d in together] == [grid_key(d.grid) for d in alone]
    assert np.abs(np.array([d.logp for d in together]) - [d.logp for d in alone]).max() < 1e-4


# DFS that checks before it searches ---------------------------------------------------------------------------------
def view_tree_policy(seed: int, num_views: int):
    """Like tree_policy, but each view (told apart by the digit after BOS in its prompt) bends the shared tree a
    little: views agree on much, not all."""
    _, base = tree_policy(seed)

    def probs(view: int, gen: tuple) -> np.ndarray:
        p = base(gen)
        rng = np.random.default_rng([seed, 1000 + view, len(gen)] + list(gen))
        p = p * np.exp(rng.normal(0, 0.7, 12))
        return p / p.sum()

    def policy(history):
        prompt, gen = split(history)
        sym = {t: i for i, t in enumerate(list(CODEC.digit_ids) + [CODEC.nl, CODEC.eos])}
        logits = np.full(len(CODEC.token_ids), -1e9)
        view, seq = sym[prompt[1]], tuple(sym[t] for t in gen)
        logits[list(CODEC.digit_ids) + [CODEC.nl, CODEC.eos]] = np.log(probs(view, seq))
        return logits
    views = [View(IDENTITY, np.array([CODEC.bos, CODEC.digit_ids[v], CODEC.out]), (2, 3)) for v in range(num_views)]
    return policy, probs, views


@pytest.mark.parametrize("seed", range(4))
def test_dfs_with_verification_returns_exactly_the_brute_forced_set(seed):
    policy, probs, views = view_tree_policy(seed, 4)
    threshold = 0.002
    icfg = Config().override(infer={"strategy": "dfs", "num_views": 4, "dfs_threshold": threshold,
                                    "dfs_max_candidates": 10 ** 6, "score_batch_size": 3}).infer
    stats, model, plain_model = {}, FakeModel(policy), FakeModel(policy)
    shared = SharedViews(model, CODEC, views, batch_size=2, prefill_batch=3, stats=stats)
    got = shared.decode(icfg, time.monotonic() + FAR)
    for v in range(4):
        expected = enumerate_above(lambda gen: probs(v, gen), threshold, views[v].max_shape)
        assert {grid_key(d.grid): pytest.approx(d.logp, abs=1e-4) for d in got if d.view == v} == expected
        dfs_view(plain_model, CODEC, views[v], time.monotonic() + FAR, threshold=threshold, max_candidates=10 ** 6)
    # verification did work: fewer forward passes in all (prefills, greedy steps and verification included) than
    # four DFS runs that each search everything
    assert stats["forced"] > 0 and model.calls < plain_model.calls
    # every candidate found by a view is already scored under every view that searched after it
    for d in got:
        assert all((w, grid_key(d.grid)) in shared.logp for w in range(d.view, 4))


def test_verified_scores_are_teacher_forced_scores():
    policy, probs, views = view_tree_policy(7, 3)
    shared = SharedViews(FakeModel(policy), CODEC, views)
    icfg = Config().override(infer={"strategy": "dfs", "num_views": 3, "dfs_threshold": 0.01}).infer
    got = {grid_key(d.grid): d.grid for d in shared.decode(icfg, time.monotonic() + FAR)}
    checked = 0
    for (v, key), logp in shared.logp.items():
        if key in got:
            syms = shared.symbols(v, got[key])
            truth = sum(math.log(probs(v, tuple(syms[:t]))[s]) for t, s in enumerate(syms))
            assert logp == pytest.approx(truth, abs=1e-4)
            checked += 1
    assert checked > len(got)  # some under views other than the one that found them


# prefills per test input --------------------------------------------------------------------------------------------
def two_test_task() -> Task:
    t = colour_swap_task()
    x = np.array([[1, 2], [0, 1]], np.uint8)
    return Task("swap2", t.train, [t.test_inputs[0], x], [t.test_outputs[0], 3 - x])


@pytest.mark.parametrize("strategy", ["greedy", "dfs", "sample"])
@pytest.mark.parametrize("num_views,score_views", [(6, 3), (3, 6), (4, 0)])
def test_prefills_per_test_input_equal_the_number_of_views(strategy, num_views, score_views):
    task = two_test_task()
    cfg = Config().override(infer={"strategy": strategy, "num_views": num_views, "score_views": score_views,
                                   "samples_per_view": 2, "dfs_threshold": 0.3, "batch_size": 4})
    model = FakeModel(answer_policy({}, default=answer_ids(np.zeros((2, 2)))))
    found = predict(Loaded(model, CODEC, "fake"), task, cfg, time.monotonic() + FAR)
    assert model.prefills == 2 * max(num_views, score_views)
    assert all(len(c.scores) == score_views for a in found for c in a.candidates)
    assert all(a.candidates for a in found)


def test_past_deadline_costs_no_model_call():
    model = FakeModel(answer_policy({}, default=answer_ids(np.zeros((2, 2)))))
    shared = SharedViews(model, CODEC, make_views(colour_swap_task(), 0, CODEC, 3, 0, Config().infer))
    past = time.monotonic() - 1
    assert shared.decode(Config().infer, past) == []
    assert shared.score([np.zeros((2, 2), np.uint8)], 3, past).shape == (0, 1)
    assert model.calls == 0


def test_a_prefill_that_would_end_past_the_deadline_is_not_begun(fake_clock):
    import solver.generate
    fake_clock.install(solver.generate)

    class SlowPrefill(FakeModel):
        def forward(self, input_ids, past_key_values=None, **kw):
            if past_key_values is None or past_key_values.get_seq_length() == 0:
                fake_clock.advance(0.3 * input_ids.shape[0])  # each prompt takes 0.3 s
            return super().forward(input_ids, past_key_values=past_key_values, **kw)

    model = SlowPrefill(answer_policy({}, default=answer_ids(np.zeros((2, 2)))))
    views = make_views(colour_swap_task(), 0, CODEC, 4, 0, Config().infer)
    views = [View(v.transform, views[0].prompt, v.max_shape) for v in views]  # one prompt length: one per pass
    stats = {}
    shared = SharedViews(model, CODEC, views, prefill_batch=1, stats=stats)
    assert shared.prefill(4, fake_clock.now + 0.5) == 1  # the first always; a second would end at 0.6 s
    assert model.prefills == 1 and stats["prefills_too_late"] == 3 and fake_clock.now == pytest.approx(1000.3)
    assert shared.prefill(4, fake_clock.now + 0.65) == 3  # room for two more (0.6 s), not a third
    assert shared.prefill(4, fake_clock.now + FAR) == 4


def test_prompts_in_pieces_and_forcing_in_small_passes_give_the_scores_of_one_pass():
    """A prompt computed in forward passes of at most 7 tokens and answers forced a pass of at most 12 tokens (one
    row at least) score every grid as one pass each does, on a real model."""
    loaded = load_model("scratch:tiny", seed=3)
    views, grids = transformed_views(loaded.codec, 3), some_grids()
    whole = SharedViews(loaded.model, loaded.codec, views).score(grids, 3, time.monotonic() + FAR)
    stats = {}
    small = SharedViews(loaded.model, loaded.codec, views, stats=stats)
    small.pass_tokens = 7
    assert small.prefill(3, time.monotonic() + FAR) == 3
    assert small.kv[0][0][0].shape[2] == len(views[0].prompt) > 7  # the whole prompt, from several passes
    passes, force = [], small.force
    small.force = lambda rows: passes.append((len(rows), max(len(s) for _, s in rows))) or force(rows)
    small.pass_tokens = 12
    scores = small.score(grids, 3, time.monotonic() + FAR, batch_size=16)
    assert np.abs(scores - whole).max() < 1e-4
    assert stats["forced"] == 3 * len(grids) and max(w for _, w in passes) > 12  # every pair forced
    assert all(n * w <= 12 or n == 1 for n, w in passes)  # a longer answer alone in its pass


def test_a_forcing_pass_takes_rows_while_their_padded_tokens_fit_and_one_row_always():
    from solver.generate import rows_per_pass
    assert rows_per_pass([3, 3, 3], 7) == 2    # 3 x 3 = 9 > 7
    assert rows_per_pass([2, 2, 9], 20) == 2   # a third row pads all to 9: 27 > 20
    assert rows_per_pass([10, 2], 5) == 1      # longer than a pass: alone
    assert rows_per_pass([4, 4, 4, 4], 16) == 4


def test_a_deadline_between_two_pieces_of_a_prompt_leaves_the_view_out(fake_clock):
    """Each forward pass takes 1 s: a prompt of three pieces begun 1.5 s before the deadline stops after two, its view
    not ready (counted), and no forced pass begins that the last prefill's speed says would end late."""
    import solver.generate
    fake_clock.install(solver.generate)

    class OneSecondPasses(FakeModel):
        def forward(self, input_ids, **kw):
            fake_clock.advance(1.0)
            return super().forward(input_ids, **kw)

    model = OneSecondPasses(answer_policy({}, default=answer_ids(np.zeros((2, 2)))))
    views = make_views(colour_swap_task(), 0, CODEC, 2, 0, Config().infer)
    stats = {}
    shared = SharedViews(model, CODEC, views, prefill_batch=1, stats=stats)
    shared.pass_tokens = -(-len(views[0].prompt) // 3)  # three pieces a prompt
    assert shared.prefill(1, fake_clock.now + 1.5) == 0 and stats["prefills_cut"] == 1 and model.calls == 2
    assert shared.prefill(1, fake_clock.now + FAR) == 1 and shared.rate > 0
    calls, grid = model.calls, np.zeros((2, 2), np.uint8)
    seconds = len(shared.symbols(0, grid)) / shared.rate  # forcing the answer at the last prefill's speed
    shared.verify([(0, grid)], fake_clock.now + 0.5 * seconds, 4)
    assert model.calls == calls and not shared.logp  # it would end late: not begun
    shared.verify([(0, grid)], fake_clock.now + 2 * seconds, 4)
    assert model.calls == calls + 1 and len(shared.logp) == 1


def test_symbols_spell_the_grid_in_the_views_frame():
    views = transformed_views(CODEC, 4)
    shared = SharedViews(FakeModel(lambda h: np.zeros(16)), CODEC, views)
    grid = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)
    for v, view in enumerate(views):
        syms = shared.symbols(v, grid)
        rows = view.transform.apply(grid)
        assert syms[-1] == EOS_SYM and syms.count(NL_SYM) == rows.shape[0]
        assert [s for s in syms if s < 10] == rows.ravel().tolist()
