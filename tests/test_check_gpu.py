"""`python -m solver check-gpu` on the CPU with a tiny model of SmolLM2's kind: every check passes, a broken reset or a
check that raises fails it, and fp16/bf16 are skipped or run by what the device computes natively."""
import pytest
import torch

from solver import check_gpu as C
from solver.cli import main

NAMES = ["build", "load", "ttt", "decode", "dfs", "score"]


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
    assert [ln.split()[0] for ln in lines[1:7]] == NAMES
    assert all(ln.split()[1] == "ok" and ln.endswith(" s)") for ln in lines[1:7])
    assert lines[7:] == ["fp16     skipped (cpu: fp32 only)", "bf16     skipped (cpu: fp32 only)"]


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
