"""Pretraining's adapter export (solver.shipped): a LoRA run of scratch:tiny and of SmolLM2 exports an adapter that
loads as BASE+DIR with the logits of the in-memory model, resumes from the export alone, records the splits it saw
(so that a measurement on them warns); the `default` SPEC; shards; a budget ends with an export before its end."""
import logging

import numpy as np
import pytest
import torch

from solver import pretrain as P
from solver import shipped as X
from solver.codec import Codec
from solver.data import collate
from solver.model import load_model
from solver.train import train_step
from test_pretrain import small_tasks, tiny_config, write_dir

CODEC = Codec.compact()


@pytest.fixture(scope="module")
def data_dir(arc1_train, tmp_path_factory):
    return write_dir(tmp_path_factory.mktemp("px"), small_tasks(arc1_train, 3))


def lora_config(data_dir, spec="scratch:tiny", steps=2, **pretrain):
    return tiny_config(data_dir, steps).override(model={"spec": spec}, pretrain={
        "mode": "lora", "rank": 4, "alpha": 8.0, "eval_every": 0, "eval_tasks": 0, "lr": 1e-2, **pretrain})


def train_in_memory(cfg, out):
    """A session trained and exported, its model kept: (session, state). Its thread tuner is closed, as `P.pretrain`
    does, so that torch's thread count is back to what it was."""
    s = P.setup(cfg, out)
    state = P.resume(s)
    try:
        P.train_steps(s, state, progress=False, stop_at_step=None)
    finally:
        if s.tuner is not None:
            s.tuner.close()
    P.save_all(s, state)
    return s, state


def fp32_tolerance(model, logits) -> float:
    """How far two fp32 computations of the same logits may differ when one runs the adapter merged into the weights
    (each weight rounded once more) and the other beside them (its product rounded and added): fp32 keeps 24 bits
    (2^-24 relative rounding), and each layer's matmuls (sums of hundreds of products), norms and residual additions
    add a few such roundings of the hidden state's scale, which the next layers carry on. Allow 2^-24 times 64
    roundings per layer, times the layers, at the scale of the largest logit. Measured: SmolLM2 (30 layers, largest
    logit about 20) differs by 1e-4 against a tolerance of 5e-3 (the adapter itself moves logits by 20); scratch:tiny
    (2 layers) by 9e-8 against 3e-6 (the adapter: 0.4)."""
    return 64 * 2.0 ** -24 * model.config.num_hidden_layers * float(logits[torch.isfinite(logits)].abs().max())


def logits(model, tasks):
    seqs = [CODEC.encode(t.train, t.test_inputs[0], t.test_outputs[0]) for t in tasks]
    batch = collate(seqs, CODEC.pad)
    model.eval()
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return out[batch["attention_mask"].bool()].float()


def check_roundtrip(cfg, out, arc1_train, base):
    s, state = train_in_memory(cfg, out)
    assert state.step == cfg.pretrain.max_steps and X.is_export(out)
    assert not (out / "config.json").exists()                          # adapter only, no full weights
    meta = X.read_meta(out)
    assert meta["base"] == base and meta["source"]["pretrain"]["steps"] == state.step
    assert meta["source"]["pretrain"]["tokens"] == state.tokens > 0 and meta["source"]["pretrain"]["splits"] == []
    tasks = small_tasks(arc1_train, 2)
    want = logits(s.model, tasks)
    loaded = load_model(f"{base}+{out}")
    assert not any("lora_" in n for n, _ in loaded.model.named_parameters())  # merged
    got = logits(loaded.model, tasks)
    live = torch.isfinite(want)                                         # PAD's logit is dead (-inf) in both
    assert torch.equal(live, torch.isfinite(got))
    tol = fp32_tolerance(loaded.model, want)
    assert (got - want)[live].abs().max() <= tol, ((got - want)[live].abs().max(), tol)
    fresh = logits(load_model(base, cfg.pretrain.seed).model, tasks)
    assert (fresh[live] - want[live]).abs().max() > 10 * tol            # the adapter changed something, far beyond
    return meta


def test_scratch_adapter_exports_reloads_and_resumes_from_the_export_alone(data_dir, arc1_train, tmp_path, caplog):
    out = tmp_path / "tiny"
    check_roundtrip(lora_config(data_dir), out, arc1_train, "scratch:tiny")
    assert X.load_weights(out) and sum(f.stat().st_size for f in out.glob("adapter_model*")) < 100_000
    # the export alone: no checkpoint, a fresh optimiser, the step count and tokens go on
    tokens = X.read_meta(out)["state"]["tokens"]
    for f in (out / P.CHECKPOINT).iterdir():
        f.unlink()
    with caplog.at_level(logging.INFO, logger="solver.pretrain"):
        state = P.pretrain(lora_config(data_dir, steps=3), out, progress=False)
    assert "resuming from the adapter export" in caplog.text and "step 2" in caplog.text
    assert state.step == 3 and state.tokens > tokens and X.read_meta(out)["state"]["step"] == 3
    with pytest.raises(ValueError, match="does not fit"):              # another rank: a clear error, not garbage
        for f in (out / P.CHECKPOINT).iterdir():
            f.unlink()
        P.pretrain(lora_config(data_dir, steps=4, rank=8), out, progress=False)


@pytest.mark.real
def test_smollm2_adapter_exports_and_reloads_with_the_same_logits(data_dir, arc1_train, tmp_path):
    meta = check_roundtrip(lora_config(data_dir, "smollm2", steps=2, max_tokens=256, batch_tokens=256,
                                       train_embeddings=True), tmp_path / "s", arc1_train, "smollm2")
    assert meta["source"]["pretrain"]["mode"] == "lora"
    names = X.load_weights(tmp_path / "s")
    assert any("lora_A" in n for n in names) and any("trainable_tokens" in n for n in names)  # tied: token rows


def test_a_model_trained_on_an_evaluation_split_is_flagged(tmp_path, arc1_eval, data_dir, arc1_train):
    d = write_dir(tmp_path, small_tasks(arc1_train, 1) + [arc1_eval["00576224"]])
    P.pretrain(lora_config(d, steps=1, allow_eval_data=True), tmp_path / "m", progress=False)
    assert "arc1:eval" in X.trained_on(tmp_path / "m")
    flagged = X.warn_if_trained_on(str(tmp_path / "m"), {t: arc1_eval[t] for t in list(arc1_eval)[:3]})
    assert flagged[0] == "arc1:eval"                  # (and kaggle2024:eval, which holds the same task corrected)
    assert X.warn_if_trained_on(str(tmp_path / "m"), {"x": small_tasks(arc1_train, 1)[0]}) == []
    P.pretrain(lora_config(d, steps=1), tmp_path / "clean", progress=False)   # the default drops it
    assert X.trained_on(tmp_path / "clean") == [] and X.trained_on("smollm2") == []
    assert X.trained_on(f"scratch:tiny+{tmp_path / 'm'}") == X.trained_on(tmp_path / "m")


def test_default_spec_is_the_shipped_folder_when_there_is_one(tmp_path, monkeypatch, data_dir, caplog):
    monkeypatch.setattr(X, "DEFAULT_DIR", tmp_path / "models" / "default")
    with caplog.at_level(logging.INFO, logger="solver.shipped"):
        assert X.resolve_default("default") == "smollm2" and X.resolve_default("scratch:mini") == "scratch:mini"
    assert "default model: smollm2, untouched" in caplog.text
    P.pretrain(lora_config(data_dir, steps=1), X.DEFAULT_DIR, progress=False)
    loaded = load_model("default")
    assert loaded.spec == str(X.DEFAULT_DIR) and loaded.codec.is_compact
    with pytest.raises(X.AdapterError, match="not an adapter export"):
        load_model(f"smollm2+{tmp_path / 'nothing'}")


def test_exports_shard_at_the_file_limit(monkeypatch, tmp_path, data_dir):
    state = {f"w{i}": torch.zeros(100, dtype=torch.float32) for i in range(5)}   # 400 bytes (+ header) each
    groups = X._shards(state, 2300)
    assert [len(g) for g in groups] == [2, 2, 1] and X._shard_names(3)[0].endswith("00001-of-00003.safetensors")
    monkeypatch.setattr(X, "SHARD_BYTES", 20_000)
    P.pretrain(lora_config(data_dir, steps=1), tmp_path / "a", progress=False)
    files = X.read_meta(tmp_path / "a")["files"]
    assert len(files) > 1 and all((tmp_path / "a" / f).stat().st_size <= 20_000 for f in files)
    assert load_model(str(tmp_path / "a")).codec.is_compact


def test_a_budget_ends_the_session_before_its_deadline(data_dir, tmp_path, caplog, monkeypatch, fake_clock):
    cfg = lora_config(data_dir, steps=0, budget="12s")
    assert P.budget_margin(cfg.pretrain) == pytest.approx(1.2)          # a tenth of a short budget
    assert P.budget_margin(lora_config(data_dir, budget="2h").pretrain) == 60.0
    s = P.setup(cfg, tmp_path / "b")
    state = P.resume(s)
    fake_clock.install(P)                                                # each training step takes one (fake) second

    def one_second_step(*args, **kw):
        fake_clock.advance(1.0)
        return train_step(*args, **kw)
    monkeypatch.setattr(P, "train_step", one_second_step)
    s.export_s, s.eval_s = 0.5, 0.0                                      # what the session's end keeps time for
    s.deadline = fake_clock.now + 6.0                                    # before the 12 s schedule's end
    with caplog.at_level(logging.INFO, logger="solver.pretrain"):
        P.train_steps(s, state, progress=False, stop_at_step=None)
    assert "the budget's end is near" in caplog.text and s.step_s == 1.0
    assert fake_clock.now + s.reserve() >= s.deadline                    # another step and the export would not fit
    assert fake_clock.now + 1.5 * s.export_s <= s.deadline               # the export still fits, with room
    assert state.step == 5     # after step 4 (t=4 s) a step and the end fit in the 2 s left; after step 5, not in 1 s
    steps = state.step
    P.train_steps(s, state, progress=False, stop_at_step=None)          # already too late: no further step
    assert state.step == steps and fake_clock.now == 1005.0


def test_loss_scaling_unscales_gradients_and_skips_overflow():
    from solver.precision import LossScale, ScaledOptimizer
    torch.manual_seed(0)
    model = load_model("scratch:tiny").model
    params = [p for p in model.parameters() if p.requires_grad]
    batch = collate([CODEC.encode([], np.ones((2, 2), np.uint8), np.zeros((2, 2), np.uint8))], CODEC.pad)
    from solver.train import masked_loss
    masked_loss(model, batch).backward()
    plain = [p.grad.clone() for p in params]
    model.zero_grad(set_to_none=True)
    scale = LossScale(model, params, init=1024.0)
    masked_loss(model, batch).backward()
    for p, g in zip(params, plain):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)   # scaled in the backward, unscaled on arrival
    opt = ScaledOptimizer(torch.optim.SGD(params, lr=1.0), params, scale)
    before = params[0].detach().clone()
    params[0].grad[0] = float("inf")
    opt.step()
    assert torch.equal(params[0], before) and scale.scale == 512.0 and scale.skipped == 1
    scale.remove()


def test_the_thread_tuner_keeps_the_faster_count(monkeypatch):
    from solver import threads as T
    clock = [0.0]
    monkeypatch.setattr(T.time, "monotonic", lambda: clock[0])
    tuner = T.ThreadTuner([1, 2], probe_steps=2, every_s=100.0, warmup_steps=1)
    seen = []
    for _ in range(1 + 4 + 3):
        tuner.before()
        n = torch.get_num_threads()
        seen.append(n)
        clock[0] += 1.0 if n == 1 else 3.0                              # one thread is faster here
        tuner.after(1000)
    tuner.close()
    assert seen[1:5] == [1, 1, 2, 2] and seen[5:] == [1, 1, 1] and tuner.best == 1


def test_a_float32_export_cast_to_bfloat16_halves_and_still_loads(data_dir, arc1_train, tmp_path):
    out = tmp_path / "x"
    s, state = train_in_memory(lora_config(data_dir, steps=1), out)
    before = sum((out / f).stat().st_size for f in X.read_meta(out)["files"])
    tasks = small_tasks(arc1_train, 2)
    want = logits(load_model(f"scratch:tiny+{out}").model, tasks)
    X.cast_export(out, "bfloat16")
    meta = X.read_meta(out)
    after = sum((out / f).stat().st_size for f in meta["files"])
    assert meta["dtype"] == "bfloat16" and after < 0.6 * before
    assert all(v.dtype == torch.bfloat16 for v in X.load_weights(out).values())
    got = logits(load_model(f"scratch:tiny+{out}").model, tasks)
    live = torch.isfinite(want)  # PAD's logit is dead (-inf) in both
    assert torch.equal(live, torch.isfinite(got))
    assert (got - want)[live].abs().max() < 0.05 * want[live].abs().max()  # bf16 rounding of the adapter only
    assert P.exported_state(out)["step"] == state.step  # still resumable
