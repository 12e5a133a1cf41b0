"""The Ray executor on a local two-CPU Ray cluster (one per module): the run's jobs on two actors, each task once and
the same submission as the local executor; a killed actor loses its task only and is started again; a resumed run
does only the rest; ablation rows side by side.

The fake solve functions below are imported by the actors (and the ablation's row processes) as
"test_ray_executor:<factory>"; they read their behaviour from files in $FAKE_RAY_DIR, set before the cluster starts
so that every Ray worker inherits it.
"""
import json
import logging
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from solver.config import resolve
from solver.results import RESULTS, TaskResult, read_results
from solver.run import run_tasks
from solver.submission import validate_submission
from solver.tasks import Task
from solver.workers import make_executor
from test_workers import FakeJob, drive, failing_setup

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


# fake solvers ------------------------------------------------------------------------------------------------------
def _dir() -> Path:
    return Path(os.environ["FAKE_RAY_DIR"])


def _log(event: dict) -> None:
    with open(_dir() / "calls.jsonl", "a") as f:
        f.write(json.dumps(event) + "\n")


def _calls() -> list[dict]:
    path = _dir() / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _wait_for_pids(n: int, timeout: float = 30.0) -> None:
    """Block until n different processes have logged a call (the proof that n workers run at the same time)."""
    t0 = time.monotonic()
    while len({c["pid"] for c in _calls()}) < n and time.monotonic() - t0 < timeout:
        time.sleep(0.05)


def seeded_factory(cfg):
    """Answers that depend on the run's seed and the task id only (not the truth), so that two executors on one seed
    write one submission. Files in $FAKE_RAY_DIR: `die-<id>` makes that task kill its own process (once); `together`
    makes each call wait for a second process; `sleep` holds seconds to sleep per task."""
    def solve(task, cfg, deadlines):
        _log({"id": task.id, "pid": os.getpid()})
        die = _dir() / f"die-{task.id}"
        if die.exists():
            die.unlink()
            os.kill(os.getpid(), signal.SIGKILL)
        if (_dir() / "together").exists():
            _wait_for_pids(2)
        if (_dir() / "sleep").exists():
            time.sleep(float((_dir() / "sleep").read_text()))
        rng = np.random.default_rng([cfg.run.seed, zlib.crc32(task.id.encode())])
        grids = [rng.integers(0, 10, size=x.shape, dtype=np.uint8) for x in task.test_inputs]
        return TaskResult([(g, g[::-1].copy()) for g in grids], ttt_steps=1, views=1)
    return solve


def rows_factory(cfg):
    """An ablation row's solve function: right only when another row's process is running at the same time."""
    def solve(task, cfg, deadlines):
        _log({"id": task.id, "pid": os.getpid(), "views": cfg.infer.num_views})
        _wait_for_pids(2)
        together = len({c["pid"] for c in _calls()}) >= 2
        return TaskResult([(out if together else np.zeros((1, 1), np.uint8),) * 2 for out in task.test_outputs])
    return solve


# the cluster -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import ray
    control = tmp_path_factory.mktemp("ray")
    saved = {k: os.environ.get(k) for k in ("FAKE_RAY_DIR", "PYTHONPATH")}
    os.environ["FAKE_RAY_DIR"] = str(control)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(ROOT), saved["PYTHONPATH"] or ""])
    ray.init(num_cpus=2, logging_level=logging.WARNING)
    yield control
    ray.shutdown()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def control(cluster):
    for f in cluster.iterdir():
        f.unlink()
    return cluster


def ray_cfg(**run):
    cfg = resolve("test", run={"budget": "120s", "solver": "test_ray_executor:seeded_factory", "seed": 3})
    return cfg.override(run={"train_tokens_per_s": 1e9, "prefill_tokens_per_s": 1e9, "decode_tokens_per_s": 1e9,
                             "task_overhead_s": 0.01, **run})


def assert_complete(sub_path, tasks):
    assert validate_submission(json.loads(Path(sub_path).read_text()), tasks) == []


# -------------------------------------------------------------------------------------------------------------------
def test_two_actors_do_each_task_once_and_write_the_local_submission(control, arc1_eval, tmp_path, caplog):
    tasks = dict(list(arc1_eval.items())[:4])
    (control / "together").touch()
    with caplog.at_level(logging.INFO):
        report = run_tasks(tasks, ray_cfg(executor="ray", ray_cpus_per_actor=1.0), tmp_path / "ray.json",
                           tmp_path / "ray", progress=False)
    assert "Ray cluster: 2 actors" in caplog.text and report["status"] == {"ok": 4}
    done = _calls()
    assert sorted(c["id"] for c in done) == sorted(tasks)  # each exactly once
    assert len({c["pid"] for c in done}) == 2 and os.getpid() not in {c["pid"] for c in done}
    assert_complete(tmp_path / "ray.json", tasks)

    (control / "together").unlink()
    run_tasks(tasks, ray_cfg(), tmp_path / "local.json", tmp_path / "local", progress=False)  # in-process
    assert {c["pid"] for c in _calls()[4:]} == {os.getpid()}
    assert json.loads((tmp_path / "ray.json").read_text()) == json.loads((tmp_path / "local.json").read_text())


def test_a_killed_actors_task_is_redone_once_and_the_actor_started_again(control, arc1_eval, tmp_path, caplog):
    tasks = dict(list(arc1_eval.items())[4:8])
    victim = next(iter(tasks))  # order "given": the first job handed out, while three tasks remain
    (control / f"die-{victim}").touch()
    (control / "sleep").write_text("0.3")
    with caplog.at_level(logging.INFO):
        report = run_tasks(tasks, ray_cfg(order="given", executor="ray"), tmp_path / "sub.json", tmp_path / "work",
                           progress=False)
    assert_complete(tmp_path / "sub.json", tasks)
    results = read_results(tmp_path / "work" / RESULTS)
    assert all(results[t].status == "ok" for t in tasks) and report["status"] == {"ok": 4}
    assert "queued again, once" in caplog.text
    ids = [c["id"] for c in _calls()]
    assert sorted(ids) == sorted(list(tasks) + [victim])  # the victim twice: killed, then redone
    assert "starting actor" in caplog.text


def test_a_resumed_ray_run_does_only_the_rest(control, arc1_eval, tmp_path, caplog):
    tasks = dict(list(arc1_eval.items())[8:12])
    first = dict(list(tasks.items())[:2])
    run_tasks(first, ray_cfg(executor="ray"), tmp_path / "sub.json", tmp_path / "work", progress=False)
    assert sorted(c["id"] for c in _calls()) == sorted(first)
    with caplog.at_level(logging.INFO):
        report = run_tasks(tasks, ray_cfg(executor="ray"), tmp_path / "sub.json", tmp_path / "work", progress=False)
    assert "2 of 4 tasks already done" in caplog.text
    assert sorted(c["id"] for c in _calls()[2:]) == sorted(set(tasks) - set(first))
    assert sorted(read_results(tmp_path / "work" / RESULTS)) == sorted(tasks) and report["status"] == {"ok": 4}
    assert_complete(tmp_path / "sub.json", tasks)


def test_ablation_rows_run_side_by_side_on_the_cluster(control, tmp_path):
    from solver.bench import ablation as A
    a, b = np.array([[1, 2]], np.uint8), np.array([[2, 1]], np.uint8)
    tasks = {"toy": Task("toy", [(a, b), (b, a)], [a], [b])}
    base = ray_cfg(solver="test_ray_executor:rows_factory", budget="60s")
    rows = A.ROWS[2:]  # per-task TTT with one view, then with eight: two rows, one table
    results = A.run_ablation(base, tasks, tmp_path / "abl", rows, executor="ray")
    assert [r["row"] for r in results] == [name for name, _ in rows]
    assert [r["solved"] for r in results] == [1, 1] and all(r["error"] == "" for r in results)  # met each other
    assert sorted(c["views"] for c in _calls()) == [1, 8] and len({c["pid"] for c in _calls()}) == 2
    assert A.format_table(results).count(" 1/1 ") == 2


def test_the_command_line_joins_a_running_cluster(control, arc1_eval, tmp_path):
    import ray
    tasks = dict(list(arc1_eval.items())[12:14])
    (tmp_path / "tasks.json").write_text(json.dumps({t.id: t.to_json() for t in tasks.values()}))
    address = ray.get_runtime_context().gcs_address  # as `ray start --head` prints it on another machine
    cmd = [sys.executable, "-m", "solver", "run", "--tasks", str(tmp_path / "tasks.json"), "--preset", "test",
           "--solver", "test_ray_executor:seeded_factory", "--budget", "90s", "--out", str(tmp_path / "sub.json"),
           "--executor", "ray", "--ray-address", address, "--no-progress"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "RayActors" in proc.stderr and sorted(c["id"] for c in _calls()) == sorted(tasks)
    assert_complete(tmp_path / "sub.json", tasks)
    assert json.loads((tmp_path / "sub_work" / "config.json").read_text())["run"]["executor"] == "ray"


def test_the_local_executor_never_imports_ray():
    code = ("import sys; from solver.workers import make_executor; import solver.cli, solver.run; "
            "make_executor(0); make_executor(2); make_executor(0, 'local')\n"
            "assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
    with pytest.raises(ValueError, match="unknown executor 'slurm'"):
        make_executor(0, "slurm")


def test_a_raising_handler_loses_its_job_and_the_actor_goes_on(cluster):
    from solver.ray_executor import RayActors
    results, lost, _ = drive(RayActors(1), [FakeJob("x", action="raise"), FakeJob("a")])
    assert [r[0] for r in results] == ["a"] and lost == [("x", "RuntimeError: CUDA out of memory (fake)")]


def test_stop_at_ends_a_hung_actor_and_a_failed_setup_is_an_error(cluster):
    from solver.ray_executor import RayActors
    results, lost, asked = drive(RayActors(1), [FakeJob("hang", action="hang"), FakeJob("never")], stop_after=4.0)
    assert not results and lost[0][0] == "hang" and lost[0][1].startswith("stopped") and asked == 1
    with pytest.raises(RuntimeError, match="every Ray actor failed to start; first: .*model file missing"):
        RayActors(2).run(failing_setup, lambda: None, print, print, time.monotonic() + 60)


def sticky_setup():
    """A handler that raises WorkerBroken (as solver.pipeline.handle_job does on a sticky CUDA error) for 'sticky' jobs."""
    from solver.workers import WorkerBroken

    def handler(job: FakeJob):
        if job.action == "sticky":
            raise WorkerBroken(("broken", job.id, os.getpid()), "sticky device error in worker (fake)")
        return (job.id, os.getpid(), None)
    return handler


def test_a_broken_actor_delivers_its_jobs_outcome_and_is_replaced(cluster):
    from solver.ray_executor import RayActors
    queue, results, lost = [FakeJob("s", action="sticky"), FakeJob("a"), FakeJob("b")], [], []
    RayActors(1).run(sticky_setup, lambda: queue.pop(0) if queue else None, results.append,
                     lambda job, why: lost.append((job.id, why)), time.monotonic() + 60)
    assert not lost and [r[:2] for r in results] == [("broken", "s"), ("a", results[1][1]), ("b", results[1][1])]
    assert results[1][1] != results[0][2]  # the jobs after it ran in a fresh actor process
