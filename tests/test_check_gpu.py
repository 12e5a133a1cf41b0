"""`python -m solver check-gpu` on the CPU with a tiny model of SmolLM2's kind: every check passes, a broken reset or a
check that raises fails it, and fp16/bf16 are skipped or run by what the device computes natively."""
import pytest
import torch

from solver.bench import check_gpu as C
from solver.cli import main

NAMES = ["build", "load", "ttt", "decode", "dfs", "score", "solve"]


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine, two threads of tiny matmuls wait on each other."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _lines(device="cpu"):
    lines = []
    return C.run_checks(device, tiny=True, out=lines.append), lines


def test_every_check_passes_on_the_cpu_and_half_precision_is_skipped(capsys):
    assert main(["check-gpu", "--tiny", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("check-gpu: device cpu, fp32; random tied Llama 64 wide, 2 layers")
    assert [ln.split()[0] for ln in lines[1:8]] == NAMES
    assert all(ln.split()[1] == "ok" and ln.endswith(" s)") for ln in lines[1:8])
    assert lines[8:] == ["fp16     skipped (cpu: fp32 only)", "bf16     skipped (cpu: fp32 only)"]


def test_the_model_has_smollm2s_shape_and_is_saved_as_a_reduced_model(tmp_path):
    import json
    directory = C.build(tmp_path / "m", C.TINY_SHAPE)
    meta = json.loads((directory / "arc_codec.json").read_text())
    assert meta["reduced"] and meta["token_ids"] == list(range(16))
    config = json.loads((directory / "config.json").read_text())
    assert config["tie_word_embeddings"] and config["vocab_size"] == 16
    assert C.SMOLLM2_SHAPE == (576, 30, 9, 3, 1536) and C.SMOLLM2_ROPE["rope_theta"] == 100000.0


def test_a_reset_that_is_not_bit_exact_fails(monkeypatch):
    from solver.adapter import Adapter
    monkeypatch.setattr(Adapter, "reset", lambda self: None)
    status, lines = _lines()
    assert status == 1
    (ttt,) = [ln for ln in lines if ln.startswith("ttt ")]
    assert "FAILED: reset is not bit-exact" in ttt
    assert all("skipped: an earlier check failed" in ln for ln in lines if ln.split()[0] in NAMES[3:])


def test_a_check_that_raises_fails_with_its_exception(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("device-side assert")

    monkeypatch.setattr("solver.generate.dfs_view", broken)
    status, lines = _lines()
    assert status == 1
    (dfs,) = [ln for ln in lines if ln.startswith("dfs ")]
    assert "FAILED: RuntimeError: device-side assert" in dfs
    assert [ln for ln in lines if ln.startswith("decode ")][0].split()[1] == "ok"


@pytest.mark.parametrize("capability, bf16", [((7, 5), "skipped (compute capability 7.5: no native bf16)"),
                                              ((8, 0), None), ((9, 0), None)])
def test_half_precision_runs_where_the_gpu_computes_it(monkeypatch, capability, bf16):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert C.half_support("cuda") == {"fp16": None, "bf16": bf16}
    assert C.half_support("cpu") == {"fp16": "skipped (cpu: fp32 only)", "bf16": "skipped (cpu: fp32 only)"}


def test_the_probe_measures_every_batch_shape_with_and_without_checkpointing_and_autocast(monkeypatch):
    """Through its interface on a CPU (tiny shapes): each row is a real step of the package's loop in the state it
    names; on a GPU the same rows run at the Kaggle preset's shapes (unverified here)."""
    import json
    import solver.train as T
    from solver.compat import is_checkpointing
    from solver.config import get_preset
    assert C.probe_shapes(get_preset("kaggle-4xl4").ttt) == [(2, 8192), (4, 4096)]  # 16k-token batches, both sides
    seen, real = [], T.train_step                                                  # of the 4,096 threshold

    def spy(model, micro, *args):
        seen.append((tuple(micro[0]["input_ids"].shape), is_checkpointing(model.get_base_model()),
                     args[-1] is not None))
        return real(model, micro, *args)
    monkeypatch.setattr(T, "train_step", spy)
    lines = []
    assert C.run_probe(tiny=True, out=lines.append) == 0
    rows = json.loads(lines[-1])["probe"]
    combos = [(r["rows"], r["tokens"], r["checkpointing"], r["precision"]) for r in rows]
    assert combos == [(n, t, gc, kind) for n, t in C.TINY_PROBE_SHAPES for gc in (False, True) for kind in
                      ("fp32", "bf16")]
    assert all(r["step_s"] > 0 and r["tokens_per_s"] > 0 and r["peak_mib"] is None for r in rows)  # no GPU figure
    expected = [((n, t), gc, kind == "bf16") for n, t, gc, kind in combos for _ in range(1 + C.PROBE_STEPS)]
    assert seen == expected  # warm-up + timed steps, each in the state its row names
