"""bench ablation: the rows are overrides of one Config that reach the run's solve function (through the same
run_tasks path, each row in its own process), the shared-adapter row gets a trained adapter, and the table/CSV count
what the submissions solved."""
import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from solver.bench import ablation as A
from solver.config import get_preset
from solver.results import TaskResult
from solver.tasks import Task, is_heldout

TESTS = Path(__file__).parent


# a fake solve function (imported by the row processes as test_bench_ablation:fake_factory) -------------------------
def fake_factory(cfg):
    """Solves a task only with per-task TTT and more than one view; logs the settings it was run with."""
    def solve(task, cfg, deadlines):
        with open(os.environ["FAKE_LOG"], "a") as f:
            f.write(json.dumps({"task": task.id, "enabled": cfg.ttt.enabled, "shared": cfg.ttt.use_shared_adapter,
                                "adapter_dir": cfg.run.shared_adapter, "views": cfg.infer.num_views,
                                "pid": os.getpid()}) + "\n")
        good = cfg.ttt.enabled and not cfg.ttt.use_shared_adapter and cfg.infer.num_views > 1
        wrong = np.zeros((1, 1), np.uint8)
        return TaskResult([(out if good else wrong, wrong) for out in task.test_outputs])
    return solve


def toy(tid: str) -> Task:
    a, b = np.array([[1, 2]], np.uint8), np.array([[2, 1]], np.uint8)
    return Task(tid, [(a, b), (b, a)], [a], [b])


@pytest.fixture
def fake_env(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "calls.jsonl"))
    return tmp_path


def base_config():
    return get_preset("test").override(
        model={"spec": "scratch:tiny"}, ttt={"max_examples": 2, "batch_size": 2, "rank": 2},
        run={"budget": "60s", "solver": "test_bench_ablation:fake_factory", "train_tokens_per_s": 1e9,
             "prefill_tokens_per_s": 1e9, "decode_tokens_per_s": 1e9, "task_overhead_s": 0.01})


def test_rows_are_overrides_of_one_config():
    base = get_preset("cpu-demo")
    names = [name for name, _ in A.ROWS]
    assert len(set(names)) == len(names) == 4
    cfgs = {name: A.row_config(base, o) for name, o in A.ROWS}
    assert not cfgs["pretrained only (no TTT)"].ttt.enabled
    assert cfgs["TTT, one shared adapter"].ttt.use_shared_adapter
    per_task, full = cfgs["TTT per task"], cfgs["TTT per task + augmented inference, voting"]
    assert per_task.ttt == full.ttt == base.ttt and per_task.infer.num_views == 1
    assert full.infer == base.infer and full.infer.num_views > 1
    assert all(c.model == base.model and c.run == base.run for c in cfgs.values())


def test_ablation_tasks_are_the_heldout_slice():
    tasks = A.ablation_tasks("arc1:train", 5)
    assert len(tasks) == 5 and all(is_heldout(tid) for tid in tasks)


def test_each_row_runs_through_the_run_with_its_settings(fake_env):
    tasks = {t.id: t for t in (toy("aa"), toy("bb"))}
    results = A.run_ablation(base_config(), tasks, fake_env / "abl", isolate=False)
    solved = {r["row"]: r["solved"] for r in results}
    assert solved == {"pretrained only (no TTT)": 0, "TTT, one shared adapter": 0, "TTT per task": 0,
                      "TTT per task + augmented inference, voting": 2}
    assert all(r["error"] == "" and r["levels"] == "FULL:2" for r in results)
    log = [json.loads(line) for line in (fake_env / "calls.jsonl").read_text().splitlines()]
    assert len(log) == 8
    shared = [c for c in log if c["shared"]]
    assert len(shared) == 2 and Path(shared[0]["adapter_dir"], "adapter_config.json").is_file()
    A.write_csv(fake_env / "t.csv", results)
    with open(fake_env / "t.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["solved"] for r in rows] == ["0", "0", "0", "2"] and rows[3]["score"] == "1.0"
    table = A.format_table(results)
    assert "2/2" in table and table.count("\n") == 4


def test_a_row_runs_in_its_own_process(fake_env):
    tasks = {t.id: t for t in (toy("aa"),)}
    name, overrides = A.ROWS[-1]
    r = A.run_row(name, A.row_config(base_config(), overrides), tasks, fake_env / "row", isolate=True)
    assert r["solved"] == 1 and r["error"] == "" and r["seconds"] > 0  # timed (how long is the benchmarks' business)
    call = json.loads((fake_env / "calls.jsonl").read_text())
    assert call["views"] > 1 and call["pid"] != os.getpid()  # solved in another process
