"""TTT data (leave-one-out structure, loss mask, token budget, ablation switches) and training (loss falls, deadline,
shared adapter, a scratch model learning a colour swap)."""
import math

import numpy as np
import pytest
import torch

from solver import data, train, ttt
from solver.compat import is_checkpointing
from solver.adapter import attach
from solver.codec import Codec
from solver.config import TTTConfig
from solver.model import load_model
from solver.tasks import Task

CODEC = Codec.compact()


def _grid(rng, h, w, colours=4):
    return rng.integers(0, colours, size=(h, w)).astype(np.uint8)


def _swap(a):
    b = a.copy()
    b[a == 1], b[a == 2] = 2, 1
    return b


def swap_task(num_demos, side=3, seed=0) -> Task:
    """Random grids, colours 1 and 2 swapped; one held-out test pair."""
    rng = np.random.default_rng(seed)
    pairs = [(a, _swap(a)) for a in (_grid(rng, side, side) for _ in range(num_demos + 1))]
    return Task("swap", pairs[:num_demos], [pairs[-1][0]], [pairs[-1][1]])


@pytest.fixture
def task3():
    """Three demos of different shapes, so that every demo is recognisable in a sequence."""
    rng = np.random.default_rng(1)
    train = [(_grid(rng, 2, 3), _grid(rng, 3, 2)), (_grid(rng, 3, 3), _grid(rng, 1, 4)), (_grid(rng, 4, 2), _grid(rng, 2, 2))]
    return Task("t3", train, [_grid(rng, 2, 2)])


def _segments(ids):
    """(input grid ids, output grid ids) of every pair in an encoded sequence, query last."""
    ids = list(ids)
    cuts = [i for i, t in enumerate(ids) if t == CODEC.inp]
    pairs = []
    for k, c in enumerate(cuts):
        end = cuts[k + 1] if k + 1 < len(cuts) else len(ids)
        o = ids.index(CODEC.out, c)
        pairs.append((ids[c + 1:o], ids[o + 1:end]))
    return pairs


# data -----------------------------------------------------------------------------------------------------------------
def test_leave_one_out_of_three_demos(task3):
    ex = data.build_examples(task3, CODEC, TTTConfig(augment=False))
    assert len(ex) == 3
    for j, e in enumerate(ex):
        others = [p for k, p in enumerate(task3.train) if k != j]
        segs = _segments(e.ids)
        assert len(segs) == 3
        for (a, b), (si, so) in zip(others + [task3.train[j]], segs):
            assert si == list(CODEC.grid_ids(a)) and so[:len(CODEC.grid_ids(b))] == list(CODEC.grid_ids(b))
        assert e.ids[-1] == CODEC.eos
        assert np.array_equal(e.ids, CODEC.encode(others, *task3.train[j], train_demo_outputs=True).ids)


def test_loss_mask_covers_exactly_the_output_cells(task3):
    for demo_outputs in (True, False):
        (e, *_) = data.build_examples(task3, CODEC, TTTConfig(augment=False, train_demo_outputs=demo_outputs))
        expected = np.zeros(len(e), bool)
        ids = list(e.ids)
        outs = [i for i, t in enumerate(ids) if t == CODEC.out]
        for k, o in enumerate(outs):
            last = k == len(outs) - 1
            end = len(ids) if last else ids.index(CODEC.inp, o)
            if last or (demo_outputs and k > 0):   # the first demo output has no context to learn from
                expected[o + 1:end] = True
        assert np.array_equal(e.mask, expected)
        assert set(e.ids[e.mask]) <= set(range(10)) | {CODEC.nl, CODEC.eos}


def test_augmented_examples_are_unique_and_capped(task3):
    cfg = TTTConfig(num_transforms=8, max_examples=1000)
    ex = data.build_examples(task3, CODEC, cfg, seed=3)
    assert len({e.ids.tobytes() for e in ex}) == len(ex) == 24
    plain = data.build_examples(task3, CODEC, TTTConfig(augment=False))
    assert all(np.array_equal(a.ids, b.ids) for a, b in zip(ex, plain))  # the un-augmented ones first
    assert len(data.build_examples(task3, CODEC, TTTConfig(num_transforms=8, max_examples=10))) == 10


def test_duplicates_are_removed():
    g = np.array([[1, 2], [0, 1]], np.uint8)
    task = Task("dup", [(g, _swap(g))] * 3, [g])
    assert len(data.build_examples(task, CODEC, TTTConfig(augment=False))) == 1


def test_token_budget_drops_context_but_keeps_the_query():
    rng = np.random.default_rng(0)
    big = (_grid(rng, 10, 10), _grid(rng, 10, 10))
    small, small2 = [(_grid(rng, 2, 2), _grid(rng, 2, 2)) for _ in range(2)]
    task = Task("budget", [big, small, small2], [small[0]])
    budget = CODEC.num_tokens([small], *big)   # the big query fits with one small demo only
    ex = data.build_examples(task, CODEC, TTTConfig(augment=False, max_tokens=budget, train_demo_outputs=False))
    assert len(ex) == 3 and all(len(e) <= budget for e in ex)
    for e, (a, b) in zip(ex, task.train):
        query_in, query_out = _segments(e.ids)[-1]
        assert query_in == list(CODEC.grid_ids(a)) and query_out == list(CODEC.grid_ids(b)) + [CODEC.eos]
    assert len(_segments(ex[0].ids)) == 2      # big query: one of its two small demos dropped
    assert len(_segments(ex[1].ids)) == 2      # small query: the big demo dropped, the small one kept
    tight = CODEC.num_tokens([], *small)       # now the big demo cannot be a query at all: that example goes
    ex = data.build_examples(task, CODEC, TTTConfig(augment=False, max_tokens=tight))
    assert len(ex) == 2 and all(len(_segments(e.ids)) == 1 for e in ex)


def test_direct_format_has_no_context(task3):
    ex = data.build_examples(task3, CODEC, TTTConfig(augment=False, data_format="direct"))
    assert [len(_segments(e.ids)) for e in ex] == [1, 1, 1]
    with pytest.raises(ValueError, match="data_format"):
        data.build_examples(task3, CODEC, TTTConfig(data_format="chat"))


def test_batches_group_similar_lengths():
    lengths = [5, 100, 6, 101, 7, 102, 8, 103]
    batches = data.length_batches(lengths, np.random.default_rng(0), rows=2)
    assert sorted(i for b in batches for i in b) == list(range(8))
    assert all(abs(lengths[b[0]] - lengths[b[1]]) <= 1 for b in batches)


# training -------------------------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train faster on one thread than on two shared ones."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny():
    loaded = load_model("scratch:tiny")
    cfg = TTTConfig(backend="peft", rank=8, train_embeddings=True)
    return loaded, attach(loaded.model, cfg, loaded.codec.token_ids)


FAST = dict(augment=False, lr=2e-2, embedding_lr=2e-2, schedule="constant", warmup=0.0, batch_size=2)


def test_training_loss_falls(tiny):
    loaded, ad = tiny
    task = swap_task(4, side=2)
    cfg = TTTConfig(**FAST, epochs=30)
    probe = data.collate(data.build_examples(task, loaded.codec, cfg), loaded.codec.pad)  # the same sequences
    ad.reset()
    with torch.no_grad():
        before = train.masked_loss(ad.model, probe).item()
    res = ttt.train_task(ad, task, loaded.codec, cfg)
    assert res.steps == 30 * math.ceil(4 / 2) and res.examples == 120 and not res.stopped_by_deadline
    assert res.tokens == res.padded_tokens > res.trained_tokens > 0
    with torch.no_grad():
        after = train.masked_loss(ad.model, probe).item()
    assert after < 0.7 * before
    assert not ad.model.training   # left ready to decode


def test_masked_loss_equals_the_models_own_loss(tiny):
    loaded, ad = tiny
    rng = np.random.default_rng(0)
    task = Task("shapes", [(_grid(rng, 2, 5), _grid(rng, 2, 5)), (_grid(rng, 3, 3), _grid(rng, 1, 2))], [])
    ex = data.build_examples(task, loaded.codec, TTTConfig(num_transforms=8, augmentations=["dihedral"]))
    ex = sorted(ex, key=len)
    batch = data.collate([ex[0], ex[-1]], loaded.codec.pad)
    assert len(ex[0]) < len(ex[-1])  # padding present: the loss without a padding mask must still be exact
    with torch.no_grad():
        ours = train.masked_loss(ad.model, batch)
        theirs = ad.model(**batch).loss
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)


def test_gradient_checkpointing_computes_the_same_step(tiny):
    loaded, ad = tiny
    task = swap_task(2, side=2)
    results = []
    for gc in (False, True):
        res = ttt.train_task(ad, task, loaded.codec, TTTConfig(**FAST, gradient_checkpointing=gc))
        results.append((res.first_loss, ad.snapshot()))
    (l0, s0), (l1, s1) = results
    assert l0 == pytest.approx(l1, rel=1e-6)
    assert all(torch.allclose(s0[n], s1[n], atol=1e-6) for n in s0)
    assert is_checkpointing(ad.model.get_base_model())


@pytest.fixture
def one_second_steps(fake_clock, monkeypatch):
    """TTT on a fake clock where every training step takes one second."""
    fake_clock.install(ttt)
    step = ttt._step_fitting_memory

    def slow_step(*args, **kw):
        fake_clock.advance(1.0)
        return step(*args, **kw)
    monkeypatch.setattr(ttt, "_step_fitting_memory", slow_step)
    return fake_clock


def test_stops_cleanly_at_the_deadline(tiny, one_second_steps):
    loaded, ad = tiny
    clock = one_second_steps
    task = swap_task(4, side=2)
    cfg = TTTConfig(**FAST, epochs=100)
    res = ttt.train_task(ad, task, loaded.codec, cfg, deadline=clock.now - 1)
    assert res.steps == 0 and res.stopped_by_deadline
    cfg = TTTConfig(**FAST, epochs=10_000)
    deadline = clock.now + 10.0
    res = ttt.train_task(ad, task, loaded.codec, cfg, deadline=deadline)
    assert res.steps == 9 and res.stopped_by_deadline  # a 10th step (as long as the slowest) would end at the deadline
    assert clock.now == deadline - 1.0 and not ad.model.training


@pytest.mark.parametrize("slowdown", [1.0, 3.0])
def test_training_that_slows_mid_task_ends_early_enough_to_keep_prediction_stretched_as_much(tiny, fake_clock,
                                                                                            monkeypatch, slowdown):
    """Steps run at the planned 100 tokens/s, then (from the 4th) `slowdown` times slower, as when another process
    takes the cores: TTT stops where prediction keeps its 10 s reserve stretched by the slowdown it measured."""
    from solver.budget import TrainEnd
    loaded, ad = tiny
    fake_clock.install(ttt)
    step, durations = ttt._step_fitting_memory, []

    def timed_step(*args, **kw):
        result, rows = step(*args, **kw)
        durations.append(result.tokens / 100.0 * (slowdown if len(durations) >= 3 else 1.0))
        fake_clock.advance(durations[-1])
        return result, rows
    monkeypatch.setattr(ttt, "_step_fitting_memory", timed_step)
    end = fake_clock.now + 60.0 * slowdown
    res = ttt.train_task(ad, swap_task(4, side=2), loaded.codec, TTTConfig(**FAST, epochs=10_000),
                         deadline=TrainEnd(end, reserve=10.0, planned_tokens_per_s=100.0))
    left = end - fake_clock.now
    assert res.stopped_by_deadline and res.steps > 3
    assert 10.0 * slowdown <= left <= 10.0 * slowdown + 2 * max(durations)


def test_the_learning_rate_ends_at_its_final_value_when_the_deadline_cuts_training(tiny, one_second_steps):
    loaded, ad = tiny
    task = swap_task(4, side=2)
    cfg = TTTConfig(augment=False, lr=1e-3, embedding_lr=1e-3, batch_size=2, epochs=10_000, warmup=0.1,
                    schedule="cosine", min_lr_ratio=0.1)
    res = ttt.train_task(ad, task, loaded.codec, cfg, deadline=one_second_steps.now + 10.0)
    assert res.stopped_by_deadline and res.steps == 9  # cut far before its 20,000 steps
    assert res.last_lr == pytest.approx(cfg.lr * cfg.min_lr_ratio)
    res = ttt.train_task(ad, task, loaded.codec, TTTConfig(**{**FAST, "schedule": "cosine", "epochs": 50},
                                                           max_steps=7, min_lr_ratio=0.25))
    assert res.steps == 7 and not res.stopped_by_deadline  # the cap, and the schedule ends with it
    assert res.last_lr == pytest.approx(FAST["lr"] * 0.25)


def test_training_stops_at_the_plans_fitted_steps_or_the_users_cap_whichever_is_first(tiny):
    loaded, ad = tiny
    task, cfg = swap_task(4, side=2), TTTConfig(**{**FAST, "epochs": 50}, max_steps=7)
    assert ttt.train_task(ad, task, loaded.codec, cfg, steps=3).steps == 3  # the plan fitted 3
    assert ttt.train_task(ad, task, loaded.codec, cfg, steps=9).steps == 7  # the user's cap binds
    assert ttt.train_task(ad, task, loaded.codec, TTTConfig(**{**FAST, "epochs": 2}), steps=0).steps == 4  # all
    assert ttt.step_limit(0, 0) is None and ttt.step_limit(5, 0) == 5 and ttt.step_limit(0, 2) == 2


def test_schedule_progress_follows_steps_or_time_and_ends_at_one(fake_clock):
    now = fake_clock.install(ttt).now
    far = now + 1e6
    assert ttt.schedule_progress(0, 4, now, far, 0.0) == pytest.approx(0.25)
    assert ttt.schedule_progress(3, 4, now, far, 0.0) == 1.0
    start = now - 50
    assert ttt.schedule_progress(0, 100, start, start + 100, 1.0) == pytest.approx(0.51)  # time binds: (50 + 1) / 100
    assert ttt.schedule_progress(5, 100, start, now + 1.0, 0.6) == 1.0  # no room for another step
    assert ttt.schedule_progress(5, 100, start, now + 1.3, 0.6) == pytest.approx((50 + 0.6) / 51.3)  # room for one


def test_each_task_starts_from_the_initial_adapter(tiny):
    loaded, ad = tiny
    cfg = TTTConfig(**FAST, epochs=2)
    ttt.train_task(ad, swap_task(4, side=2, seed=1), loaded.codec, cfg)
    first = ad.snapshot()
    ttt.train_task(ad, swap_task(4, side=2, seed=2), loaded.codec, cfg)
    ttt.train_task(ad, swap_task(4, side=2, seed=1), loaded.codec, cfg)
    assert all(torch.equal(first[n], p) for n, p in ad.trainable().items())  # same task, same start: same result


def test_ablation_switches(tiny):
    loaded, ad = tiny
    tasks = [swap_task(3, side=2, seed=s) for s in range(2)]
    off = ttt.train_task(ad, tasks[0], loaded.codec, TTTConfig(**FAST, enabled=False))
    assert off.steps == 0 and all(torch.equal(ad.initial[n], p) for n, p in ad.trainable().items())
    shared = TTTConfig(**FAST, use_shared_adapter=True)
    res = ttt.train_shared(ad, tasks, loaded.codec, shared)
    assert res.examples == 6
    trained = ad.snapshot()
    ttt.train_task(ad, tasks[1], loaded.codec, TTTConfig(**FAST))      # a per-task run changes the weights ...
    assert ttt.train_task(ad, tasks[0], loaded.codec, shared).steps == 0
    assert all(torch.equal(trained[n], p) for n, p in ad.trainable().items())  # ... the shared state comes back


def _greedy(model, codec, task, max_new=40):
    ids = torch.tensor(codec.encode(task.train, task.test_inputs[0]).ids)[None]
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new,
                             do_sample=False, eos_token_id=codec.eos, pad_token_id=codec.pad)
    return codec.decode_grid(out[0, ids.shape[1]:].numpy())


def test_scratch_model_learns_a_colour_swap_by_ttt():
    loaded = load_model("scratch:mini")
    task = swap_task(8, side=3, seed=1)
    cfg = TTTConfig(backend="peft", augmentations=["dihedral", "order"], num_transforms=4, rank=16, alpha=16,
                    rslora=False, train_embeddings=True, lr=3e-3, embedding_lr=3e-3, epochs=10, schedule="constant",
                    warmup=0.05, batch_size=2)
    ad = attach(loaded.model, cfg, loaded.codec.token_ids)
    ad.eval_mode()
    before = _greedy(ad.model, loaded.codec, task)
    assert before is None or not np.array_equal(before, task.test_outputs[0])
    res = ttt.train_task(ad, task, loaded.codec, cfg)
    assert res.loss < 0.1
    assert np.array_equal(_greedy(ad.model, loaded.codec, task), task.test_outputs[0])


@pytest.mark.real  # loads the real SmolLM2 (converted once, then cached): CI runs it
def test_smollm2_reduced_vocabulary_trains():
    loaded = load_model("smollm2")
    assert loaded.codec.is_compact
    task = swap_task(3, side=3)
    cfg = TTTConfig(backend="peft", augment=False, rank=8, lr=1e-3, epochs=2, batch_size=1)
    ad = attach(loaded.model, cfg, loaded.codec.token_ids)
    res = ttt.train_task(ad, task, loaded.codec, cfg)
    assert res.steps == 6 and math.isfinite(res.loss) and res.loss < res.first_loss


def test_an_out_of_memory_step_is_retried_with_fewer_rows_per_pass(tiny, monkeypatch, caplog):
    import logging
    loaded, ad = tiny
    real_step = ttt.train_step
    passes = []

    def small_memory(model, micro, *args, **kw):
        passes.append([b["input_ids"].shape[0] for b in micro])
        if any(b["input_ids"].shape[0] > 1 for b in micro):
            raise torch.OutOfMemoryError("fake: 2 rows do not fit")
        return real_step(model, micro, *args, **kw)
    monkeypatch.setattr(ttt, "train_step", small_memory)
    cfg = TTTConfig(**{**FAST, "batch_size": 4}, epochs=2)
    with caplog.at_level(logging.WARNING):
        res = ttt.train_task(ad, swap_task(4, side=2), loaded.codec, cfg)
    assert res.steps == 2 and res.examples == 8  # the same steps, each accumulated over 1-row passes
    assert passes[:3] == [[4], [2, 2], [1, 1, 1, 1]] and passes[3] == [1, 1, 1, 1]  # halved once and for all
    assert "out of memory" in caplog.text


def test_batches_keep_a_token_budget_and_long_tasks_turn_checkpointing_on(tiny):
    loaded, ad = tiny
    task = swap_task(4, side=2)
    longest = max(len(e) for e in data.build_examples(task, loaded.codec, TTTConfig(**FAST)))
    cfg = TTTConfig(**{**FAST, "batch_size": 4}, batch_tokens=2 * longest, checkpoint_above_tokens=longest - 1)
    res = ttt.train_task(ad, task, loaded.codec, cfg)
    assert res.steps == 2 and res.padded_tokens <= 2 * res.steps * longest  # two sequences per batch at most
    asked = []
    real_mode = ad.train_mode
    ad.train_mode = lambda gc=False: (asked.append(gc), real_mode(gc))[1]
    for threshold in (longest - 1, longest):
        ttt.train_task(ad, task, loaded.codec, TTTConfig(**FAST, checkpoint_above_tokens=threshold))
    assert asked == [True, False]  # on only for a task with a sequence over the threshold


def test_lora_weights_and_optimiser_stay_fp32_on_a_half_precision_model():
    """fp16 (a T4) has no loss scaler here: the trainable LoRA weights, so AdamW's state, are kept in fp32."""
    loaded = load_model("scratch:tiny")
    loaded.model.half()
    ad = attach(loaded.model, TTTConfig(backend="peft", rank=4), loaded.codec.token_ids)
    assert {p.dtype for p in ad.trainable().values()} == {torch.float32}
    assert next(p for p in ad.model.parameters() if not p.requires_grad).dtype == torch.float16


def _lora_matmul_dtypes(ad, run) -> set:
    """Dtypes of the LoRA matrix products while `run()` trains: lora_B's inputs (lora_A's products) and the products
    themselves, seen by forward hooks on the LoRA Linear layers."""
    seen, handles = set(), []

    def hook(module, args, output):
        seen.update({args[0].dtype, output.dtype} if module.lora_name == "B" else {output.dtype})
    for name, m in ad.model.named_modules():
        if isinstance(m, torch.nn.Linear) and (".lora_A." in name or ".lora_B." in name):
            m.lora_name = "A" if ".lora_A." in name else "B"
            handles.append(m.register_forward_hook(hook))
    assert handles
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return seen


def test_ttt_runs_its_lora_products_under_the_precisions_autocast(tiny):
    """As pretraining does (solver.precision): bf16 autocast makes the LoRA products bf16 though the weights are
    fp32; the default on a CPU stays fp32."""
    loaded, ad = tiny
    task = swap_task(3, side=2)
    forced = _lora_matmul_dtypes(ad, lambda: ttt.train_task(ad, task, loaded.codec,
                                                             TTTConfig(**FAST, max_steps=1, precision="bf16")))
    assert forced == {torch.bfloat16}
    assert {p.dtype for p in ad.trainable().values()} == {torch.float32}  # weights and AdamW's state stay fp32
    default = _lora_matmul_dtypes(ad, lambda: ttt.train_task(ad, task, loaded.codec, TTTConfig(**FAST, max_steps=1)))
    assert default == {torch.float32}
    with pytest.raises(ValueError, match="precision 'fp8' \\(ttt.precision"):
        ttt.train_task(ad, task, loaded.codec, TTTConfig(**FAST, max_steps=1, precision="fp8"))


def test_fp16_ttt_scales_the_loss_and_leaves_no_hooks_behind(tiny):
    loaded, ad = tiny
    res = ttt.train_task(ad, swap_task(3, side=2), loaded.codec, TTTConfig(**FAST, max_steps=2, precision="fp16"))
    assert res.steps == 2 and math.isfinite(res.loss)
    assert not ad.model._forward_hooks and all(not p._backward_hooks for p in ad.trainable().values())
