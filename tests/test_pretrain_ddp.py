"""Data-parallel pretraining: `torchrun --nproc_per_node 2` (gloo on the CPU) trains scratch:tiny with each rank on its
own share of every step's micro-batches (together: the single-process stream), gradients averaged (the weights of one
process accumulating the same micro-batches), one checkpoint written by rank 0, and a resume on one rank going on
from the same step and the same place in the stream."""
import itertools
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from solver import data as D
from solver import pretrain as P
from solver.codec import Codec
from test_pretrain import small_tasks, tiny_config, write_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(arc1_train, tmp_path_factory):
    return write_dir(tmp_path_factory.mktemp("ddp"), small_tasks(arc1_train, 4))


def torchrun(cfg_file: Path, out: Path, ranks: int = 2) -> str:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
           "-m", "solver", "-v", "pretrain", "--config", str(cfg_file), "--out", str(out), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    return text


def micro_batches(text: str, rank: int) -> list[str]:
    """The fingerprints of the micro-batches a rank trained on, in order (its debug lines)."""
    return [fp for line in re.findall(rf"rank {rank} step \d+ micro-batches ([0-9a-f ]+)", text)
            for fp in line.split()]


def weights(out: Path) -> dict:
    return torch.load(out / P.CHECKPOINT / "state.pt", weights_only=False)["weights"]


def test_two_ranks_share_the_stream_and_resume_on_one(data_dir, tmp_path, caplog):
    cfg = tiny_config(data_dir, steps=2)
    cfg.save(tmp_path / "cfg.json")
    text = torchrun(tmp_path / "cfg.json", tmp_path / "two")
    tasks = list(D.load_training(cfg.pretrain.data).values())
    stream = [P.fingerprint(b) for _, b in itertools.islice(D.batch_stream(tasks, Codec.compact(), cfg.pretrain), 5)]
    assert micro_batches(text, 0) == [stream[0], stream[2]]   # rank r: micro-batches r, r + 2, ...
    assert micro_batches(text, 1) == [stream[1], stream[3]]
    assert text.count("eval step") == 2 and text.count("checkpoint at step 2 (4 micro-batches)") == 1  # rank 0 only
    assert text.count("model: ") == 1 and (tmp_path / "two" / "config.json").is_file()

    # gradients averaged across ranks: one process accumulating the same four micro-batches ends with the same weights
    one = P.pretrain(cfg.override(pretrain={"grad_accum": 2}), tmp_path / "one", progress=False)
    assert one.step == 2 and one.micro == 4
    two = weights(tmp_path / "two")
    for name, w in weights(tmp_path / "one").items():
        torch.testing.assert_close(two[name], w, rtol=1e-4, atol=1e-5)
    assert any(not torch.equal(two[n], w) for n, w in P.trainable_state(_fresh()).items())

    # resume on one rank: step 3 takes micro-batch 4, the next of the stream
    with caplog.at_level(logging.DEBUG, logger="solver.pretrain"):
        resumed = P.pretrain(tiny_config(data_dir, steps=3), tmp_path / "two", progress=False)
    assert "resuming from" in caplog.text and "step 2, epoch 0, 4 micro-batches" in caplog.text
    assert resumed.step == 3 and resumed.micro == 5 and micro_batches(caplog.text, 0) == [stream[4]]


def _fresh():
    from solver.model import load_model
    return load_model("scratch:tiny", dtype="float32").model
