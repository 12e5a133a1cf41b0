"""Pretraining: the held-out slice, the data stream (fresh augmentations, resumable order), the schedule, and a few
steps of scratch:tiny end to end (a model directory the run's pipeline loads; resume continues step count and data)."""
import itertools
import json
import time

import numpy as np
import pytest
import torch

from solver import data as D
from solver import pretrain as P
from solver.tasks import is_heldout
from solver.train import lr_factor
from solver.codec import Codec
from solver.config import Config, get_preset
from solver.tasks import Task

CODEC = Codec.compact()


def small_tasks(arc1_train, n=4):
    """The n smallest non-held-out ARC-AGI-1 training tasks."""
    kept = [t for tid, t in arc1_train.items() if not is_heldout(tid) and t.valid]
    kept.sort(key=lambda t: (D.task_tokens(t, CODEC), t.id))
    return kept[:n]


def write_dir(tmp_path, tasks, rename=None):
    d = tmp_path / "data"
    d.mkdir(exist_ok=True)
    for t in tasks:
        (d / f"{rename(t.id) if rename else t.id}.json").write_text(json.dumps(t.to_json()))
    return d


# the held-out slice -------------------------------------------------------------------------------------------------
def test_heldout_slice_is_fixed_and_never_trained_on(arc1_train, tmp_path):
    held = {tid for tid in arc1_train if is_heldout(tid)}
    assert 40 <= len(held) <= 70                       # ~12.5% of 400, decided by id alone
    assert set(D.heldout_tasks()) == {tid for tid in held if arc1_train[tid].valid}
    training = D.load_training(["arc1:train"])
    # 40853293 is a copy of an ARC-AGI-1 evaluation task (070dd51e's demos): dropped by content with the held-out slice
    assert not held & set(training) and len(training) == 400 - len(held) - 1 and "40853293" not in training
    # generated variants named after a held-out task (re-ARC style '<id>_<n>') are removed with it
    some_held = [arc1_train[t] for t in sorted(held)[:2]]
    some_kept = small_tasks(arc1_train, 2)
    d = write_dir(tmp_path, some_held + some_kept, rename=lambda tid: f"{tid}_gen7")
    assert sorted(D.load_training([str(d)])) == sorted(f"{t.id}_gen7" for t in some_kept)
    assert all(is_heldout(tid) for tid in D.heldout_tasks(5))


def test_heldout_tasks_are_smallest_first(arc1_train):
    sizes = [D.task_tokens(t, CODEC) for t in D.heldout_tasks(6).values()]
    assert sizes == sorted(sizes) and len(sizes) == 6


# data ---------------------------------------------------------------------------------------------------------------
def test_every_pair_is_a_query_under_a_fresh_augmentation_each_epoch(arc1_train):
    task = small_tasks(arc1_train, 1)[0]
    pc = Config().pretrain
    pairs = D.all_pairs(task)
    seqs = D.task_sequences(task, CODEC, pc, seed=1)
    assert len(seqs) == len(pairs)                    # each pair in turn is the query, the others its context
    for e in seqs:
        assert e.mask.any() and (e.ids == CODEC.inp).sum() == len(pairs)
    epochs = [D.epoch_examples([task], CODEC, pc, k) for k in range(3)]
    again = D.epoch_examples([task], CODEC, pc, 0)
    assert all(np.array_equal(a.ids, b.ids) for a, b in zip(epochs[0], again))  # a function of (seed, epoch)
    firsts = {tuple(ep[0].ids) for ep in epochs}
    assert len(firsts) == 3                           # fresh augmentations each epoch


def test_token_batches_cover_every_sequence_within_the_budget():
    rng = np.random.default_rng(0)
    lengths = [int(x) for x in rng.integers(10, 400, 200)] + [900]
    batches = D.length_batches(lengths, rng, tokens=800)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 800


def test_batch_stream_resumes_in_the_same_order(arc1_train):
    tasks = small_tasks(arc1_train, 3)
    pc = Config().pretrain.__class__(batch_tokens=600, epochs=3)
    whole = list(D.batch_stream(tasks, CODEC, pc))
    per_epoch = len(D.epoch_batches(tasks, CODEC, pc, 0))
    assert len({e for e, _ in whole}) == 3
    k = per_epoch + 2                                 # resume inside the second epoch
    resumed = list(D.batch_stream(tasks, CODEC, pc, start=k))
    assert len(resumed) == len(whole) - k
    for (e1, b1), (e2, b2) in zip(whole[k:], resumed):
        assert e1 == e2 and [x.ids.tolist() for x in b1] == [x.ids.tolist() for x in b2]


def test_schedule_warms_up_then_decays_to_the_floor():
    assert lr_factor(0.0, 0.1, 0.1) < 0.01
    assert lr_factor(0.05, 0.1, 0.1) == pytest.approx(0.5)
    assert lr_factor(0.1, 0.1, 0.1) == pytest.approx(1.0)
    assert lr_factor(1.0, 0.1, 0.1) == pytest.approx(0.1)
    pc = Config().pretrain.__class__(max_steps=100, budget="100s")  # a 10 s margin (a tenth of a short budget)
    assert P.budget_margin(pc) == pytest.approx(10.0) and P.schedule_seconds(pc) == pytest.approx(90.0)
    assert P.progress_fraction(pc, 10, 45.0) == pytest.approx(0.5)  # time binds
    assert P.progress_fraction(pc, 80, 45.0) == pytest.approx(0.8)  # steps bind
    long = Config().pretrain.__class__(budget="2h", target_tokens="1M")
    assert P.budget_margin(long) == 60.0 and P.schedule_seconds(long) == 0.0  # tokens set the schedule
    assert P.progress_fraction(long, 5, 7000.0, tokens=250_000) == pytest.approx(0.25)



def test_a_budgeted_sessions_warm_up_ends_within_it_and_a_resumed_one_goes_on_at_its_rate():
    pc = get_preset("pretrain-gpu").pretrain.__class__(budget="150s", target_tokens="1G", warmup=0.03)
    span = P.schedule_seconds(pc) or 150 - P.budget_margin(pc)  # tokens set the schedule: time limits the session
    speed = 50_000  # tokens/s: the whole session sees 7.5M tokens, a quarter of the schedule's 30M-token warm-up
    rate = [P.session_lr_factor(pc, t * speed / 1e9, t) for t in np.linspace(0, span, 301)]
    assert lr_factor(span * speed / 1e9, 0.03, 0.1) < 0.3  # the schedule alone: in its warm-up all along
    assert rate[0] < 0.01 and np.all(np.diff(rate) >= 0)
    reached = next(i for i, r in enumerate(rate) if r == 1.0) * span / 300
    assert reached <= P.SESSION_WARMUP_SHARE * span + 1e-6  # the peak within the session's first tenth
    again = 2 * span  # a resumed session: time counts over sessions, so the rate stays at its peak
    assert P.session_lr_factor(pc, again * speed / 1e9, span + 1.0) == 1.0
    # past the schedule's warm-up the decay is the schedule's own; a time-set schedule and no budget are unchanged
    assert P.session_lr_factor(pc, 0.5, 1e6) == pytest.approx(lr_factor(0.5, 0.03, 0.1))
    timed = pc.__class__(budget="150s", warmup=0.03)
    assert P.session_lr_factor(timed, 0.01, 0.01 * P.schedule_seconds(timed)) == pytest.approx(lr_factor(0.01, 0.03))
    assert P.session_lr_factor(pc.__class__(max_steps=100), 0.01, 1e6) == pytest.approx(lr_factor(0.01, 0.03, 0.1))


def test_a_short_budgeted_session_on_a_token_schedule_trains_at_the_peak_rate(data_dir, tmp_path, monkeypatch):
    rates, real = [], P.session_lr_factor
    monkeypatch.setattr(P, "session_lr_factor", lambda *a: rates.append(real(*a)) or rates[-1])
    cfg = tiny_config(data_dir).override(pretrain={"max_steps": 0, "budget": "12s", "target_tokens": "1G",
                                                   "eval_every": 0})
    state = P.pretrain(cfg, tmp_path / "m", progress=False)
    assert state.tokens < 0.03 * 1e9 and len(rates) == state.step > 2
    assert rates[0] < 0.01 and rates[-1] == 1.0  # the peak before the session's end, though 1G tokens set the schedule

# end to end ---------------------------------------------------------------------------------------------------------
def tiny_config(data_dir, steps=4):
    return get_preset("test").override(
        model={"spec": "scratch:tiny"},
        pretrain={"data": [str(data_dir)], "max_steps": steps, "batch_tokens": 512, "max_tokens": 512,
                  "eval_every": 2, "eval_tasks": 1, "lr": 3e-3, "checkpoint_every_s": 1e9})


@pytest.fixture(scope="module")
def data_dir(arc1_train, tmp_path_factory):
    return write_dir(tmp_path_factory.mktemp("pt"), small_tasks(arc1_train, 4))


def test_pretrain_writes_a_model_the_run_loads(data_dir, tmp_path):
    from solver.model import load_model
    from solver.pipeline import pipeline
    from solver.budget import Deadlines
    state = P.pretrain(tiny_config(data_dir), tmp_path / "m", progress=False)
    assert state.step == 4 and state.tokens > 0 and [r["step"] for r in state.curve] == [0, 2, 4]
    assert (tmp_path / "m" / P.CURVE).read_text().count("\n") == 4
    loaded = load_model(str(tmp_path / "m"))
    trained = {n: p for n, p in loaded.model.named_parameters()}
    fresh = dict(load_model("scratch:tiny").model.named_parameters())
    assert loaded.codec.is_compact and any(not torch.equal(trained[n], fresh[n]) for n in fresh)
    cfg = tiny_config(data_dir).override(model={"spec": str(tmp_path / "m")},
                                         ttt={"max_examples": 2, "batch_size": 2},
                                         infer={"num_views": 1, "score_views": 0})
    solve = pipeline(cfg)
    task = Task("toy", [(np.array([[1, 2]], np.uint8), np.array([[2, 1]], np.uint8))] * 2,
                [np.array([[1, 2]], np.uint8)])
    now = time.monotonic()
    result = solve(task, cfg, Deadlines(now + 5, now + 10))
    assert result.ttt_steps >= 1 and len(result.attempts) == 1


def test_resume_continues_step_count_and_data_order(data_dir, tmp_path):
    straight = P.pretrain(tiny_config(data_dir), tmp_path / "a", progress=False)
    first = P.pretrain(tiny_config(data_dir), tmp_path / "b", progress=False, stop_at_step=2)
    assert first.step == 2
    resumed = P.pretrain(tiny_config(data_dir), tmp_path / "b", progress=False)
    assert resumed.step == straight.step == 4 and resumed.micro == straight.micro
    assert resumed.tokens == straight.tokens           # the same batches, in the same order
    a = torch.load(tmp_path / "a" / P.CHECKPOINT / "state.pt", weights_only=False)["weights"]
    b = torch.load(tmp_path / "b" / P.CHECKPOINT / "state.pt", weights_only=False)["weights"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)


def test_old_config_without_a_pretrain_section_loads():
    d = Config().to_dict()
    del d["pretrain"]
    assert Config.from_dict(d).pretrain == Config().pretrain
    assert get_preset("pretrain-gpu").pretrain.mode == "lora"


def test_lora_pretraining_writes_an_adapter_export_that_loads_merged(data_dir, tmp_path):
    from solver.model import load_model
    from solver.shipped import META, read_meta
    cfg = tiny_config(data_dir, steps=2).override(pretrain={"mode": "lora", "rank": 4, "eval_every": 0})
    P.pretrain(cfg, tmp_path / "lora", progress=False)
    assert (tmp_path / "lora" / META).is_file() and not (tmp_path / "lora" / "config.json").exists()
    meta = read_meta(tmp_path / "lora")
    assert meta["base"] == "scratch:tiny" and meta["source"]["pretrain"]["steps"] == 2 == meta["state"]["step"]
    loaded = load_model(str(tmp_path / "lora"))                          # the recorded base, the adapter merged
    fresh = dict(load_model("scratch:tiny").model.named_parameters())
    changed = [n for n, p in loaded.model.named_parameters() if not torch.equal(p, fresh[n])]
    assert any("proj" in n for n in changed) and any("embed_tokens" in n or "lm_head" in n for n in changed)
    assert not any("lora_" in n for n, _ in loaded.model.named_parameters())
