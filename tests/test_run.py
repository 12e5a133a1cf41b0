"""The solver run: budget, never losing work (kill and resume), faults, malformed tasks, worker processes.

Most tests inject fake solve functions (below, named to the run as "test_run:<factory>"); one runs the real
pipeline with a scratch:tiny model.
"""
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from solver import budget as B
from solver.cli import demo_tasks
from solver.config import get_preset, resolve
from solver.budget import Deadlines
from solver.results import RESULTS, Job, TaskResult, read_results
from solver.plan import config_for, fit_to_share, full_work, preset_rates, retry_config, task_size
from solver.run import HARD_STOP_EXIT, Run, run_tasks
from solver.submission import fallback_attempts, read_submission, validate_submission
from solver.tasks import load_tasks

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------------------------------------------
# Fake solvers: behaviour set by environment variables, so that worker processes and subprocesses share it.

def _fit(task, cfg, deadlines):
    """The work fitted to the deadline at the preset's speeds (solver.plan.fit_to_share), as a solver does."""
    from solver.codec import Codec
    return fit_to_share(task, cfg, Codec.compact(), preset_rates(cfg), deadlines, bool(cfg.run.shared_adapter))


def _log_call(task, cfg):
    path = os.environ.get("FAKE_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"id": task.id, "views": cfg.infer.num_views, "pid": os.getpid(),
                                "ttt": cfg.ttt.enabled, "shared": cfg.ttt.use_shared_adapter}) + "\n")


def known_factory(cfg):
    """Answers with the known test outputs after FAKE_SLEEP seconds (never past its deadline)."""
    def solve(task, cfg, deadlines: Deadlines):
        cfg, deadlines, _, work, _ = fitted = _fit(task, cfg, deadlines)
        _log_call(task, cfg)
        time.sleep(max(0.0, min(float(os.environ.get("FAKE_SLEEP", "0")), deadlines.end - time.monotonic())))
        return TaskResult([(o, o) for o in task.test_outputs], level=int(fitted.level), ttt_steps=work.ttt_steps,
                          candidates=2, views=cfg.infer.num_views)
    return solve


def faulty_factory(cfg):
    """Task ids in FAKE_RAISE always raise; those in FAKE_RAISE_ONCE raise at the first (full) level only."""
    full_views = cfg.infer.num_views
    known = known_factory(cfg)

    def solve(task, cfg, deadlines):
        marker = Path(os.environ.get("FAKE_LOG", "/nonexistent")).with_name(f"died-{task.id}")
        if task.id in os.environ.get("FAKE_DIE_ONCE", "").split(",") and not marker.exists():
            _log_call(task, cfg)
            marker.touch()
            os._exit(9)  # the worker process dies mid-task (killed, out of host memory)
        if task.id in os.environ.get("FAKE_STICKY", "").split(","):
            _log_call(task, cfg)
            raise RuntimeError("CUDA error: an illegal memory access was encountered (fake)")
        if task.id in os.environ.get("FAKE_RAISE", "").split(","):
            _log_call(task, cfg)
            raise RuntimeError("CUDA out of memory (fake)")
        if task.id in os.environ.get("FAKE_RAISE_ONCE", "").split(",") and cfg.infer.num_views == full_views:
            _log_call(task, cfg)
            raise FloatingPointError("TTT loss is nan (fake)")
        return known(task, cfg, deadlines)
    return solve


def stubborn_factory(cfg):
    """Ignores its deadline: sleeps FAKE_SLEEP seconds whatever it was told (the run's last resort must act)."""
    def solve(task, cfg, deadlines):
        time.sleep(float(os.environ.get("FAKE_SLEEP", "30")))
        return TaskResult([None] * task.num_tests)
    return solve


def empty_factory(cfg):
    """Trains, then answers nothing (no candidate decoded in time) for task ids in FAKE_EMPTY; else known answers."""
    known = known_factory(cfg)

    def solve(task, cfg, deadlines):
        if task.id in os.environ.get("FAKE_EMPTY", "").split(","):
            return TaskResult([None] * task.num_tests, ttt_steps=3, candidates=0, views=cfg.infer.num_views)
        return known(task, cfg, deadlines)
    return solve


def broken_factory(cfg):
    raise FileNotFoundError("model weights not found (fake)")


# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture
def fake_env(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "calls.jsonl"))
    for k in ("FAKE_SLEEP", "FAKE_RAISE", "FAKE_RAISE_ONCE", "FAKE_DIE_ONCE", "FAKE_STICKY"):
        monkeypatch.delenv(k, raising=False)
    return tmp_path


def calls(tmp_path) -> list[dict]:
    path = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def fake_cfg(factory="known_factory", budget="60s", workers=0, **run):
    cfg = resolve("test", run={"budget": budget, "workers": workers, "solver": f"test_run:{factory}"})
    # planning speeds of a fake that takes no time: every task is planned at full level
    return cfg.override(run={"train_tokens_per_s": 1e9, "prefill_tokens_per_s": 1e9, "decode_tokens_per_s": 1e9,
                             "task_overhead_s": 0.01, **run})


def write_challenges(path: Path, tasks, solutions=True) -> Path:
    path.write_text(json.dumps({t.id: t.to_json() for t in tasks}))
    return path


def assert_complete(sub_path, tasks):
    sub = json.loads(Path(sub_path).read_text())
    assert validate_submission(sub, tasks) == []


def scores(sub_path, tasks) -> dict[str, bool]:
    sub = read_submission(sub_path)
    return {tid: all(np.array_equal(p[0], o) for p, o in zip(sub[tid], t.test_outputs)) for tid, t in tasks.items()}


# ---------------------------------------------------------------------------------------------------------------

def test_fake_run_writes_everything(fake_env, arc1_eval):
    tasks = dict(list(arc1_eval.items())[:4])
    out, work = fake_env / "sub.json", fake_env / "work"
    report = run_tasks(tasks, fake_cfg(), out, work, progress=False)
    assert_complete(out, tasks)
    assert all(scores(out, tasks).values()) and report["score"]["score"] == 1.0
    assert report["status"] == {"ok": 4}
    assert sorted(read_results(work / RESULTS)) == sorted(tasks)
    assert json.loads((work / "config.json").read_text())["run"]["solver"] == "test_run:known_factory"
    lines = (work / "report.csv").read_text().splitlines()
    assert len(lines) == 5 and lines[0].startswith("task_id,status,level")
    assert json.loads((work / "report.json").read_text())["score"]["correct"] == report["score"]["correct"]


def test_raising_task_gets_fallback_and_others_are_unaffected(fake_env, arc1_eval, monkeypatch):
    tasks = dict(list(arc1_eval.items())[:4])
    bad, flaky = list(tasks)[1], list(tasks)[2]
    monkeypatch.setenv("FAKE_RAISE", bad)
    monkeypatch.setenv("FAKE_RAISE_ONCE", flaky)
    out, work = fake_env / "sub.json", fake_env / "work"
    report = run_tasks(tasks, fake_cfg("faulty_factory"), out, work, progress=False)
    assert_complete(out, tasks)
    results = read_results(work / RESULTS)
    assert results[bad].status == "failed" and "out of memory" in results[bad].error
    assert "retry" in results[bad].error  # tried twice
    sub = read_submission(out)
    assert all(np.array_equal(a, b) for pa, pb in zip(sub[bad], fallback_attempts(tasks[bad])) for a, b in zip(pa, pb))
    assert results[flaky].status == "retried" and "nan" in results[flaky].error
    ok = scores(out, tasks)
    assert not ok[bad] and all(ok[t] for t in tasks if t != bad)
    retried_views = [c["views"] for c in calls(fake_env) if c["id"] == flaky]
    assert retried_views[0] > retried_views[-1]  # the retry ran a smaller configuration
    assert report["status"] == {"ok": 2, "failed": 1, "retried": 1}


def test_a_failure_is_loud_logged_counted_and_in_the_exit_status(fake_env, arc1_eval, monkeypatch, caplog):
    import logging

    from solver.run import FELL_BACK_EXIT, exit_status
    tasks = dict(list(arc1_eval.items())[:3])
    bad = list(tasks)[0]
    monkeypatch.setenv("FAKE_RAISE", bad)
    out, work = fake_env / "sub.json", fake_env / "work"
    with caplog.at_level(logging.INFO):
        report = run_tasks(tasks, fake_cfg("faulty_factory"), out, work, progress=False)
    assert_complete(out, tasks)
    tracebacks = [r for r in caplog.records if r.exc_info and bad in r.getMessage()]
    assert len(tracebacks) == 2 and "CUDA out of memory" in caplog.text  # the first try and the retry
    assert report["failures"] == {"RuntimeError": 2} and report["fell_back_after_exception"] == 1
    assert json.loads((work / "report.json").read_text())["failures"] == {"RuntimeError": 2}
    assert exit_status(report) == FELL_BACK_EXIT
    assert exit_status(run_tasks({t: tasks[t] for t in list(tasks)[1:]}, fake_cfg(), fake_env / "b.json",
                                 fake_env / "b", progress=False)) == 0
    assert "failures: 2 RuntimeError" in caplog.text  # the closing summary line counts them


def test_a_task_that_answers_nothing_is_a_failure_in_the_report(fake_env, arc1_eval, monkeypatch):
    tasks = dict(list(arc1_eval.items())[:3])
    monkeypatch.setenv("FAKE_EMPTY", list(tasks)[1])
    report = run_tasks(tasks, fake_cfg("empty_factory"), fake_env / "sub.json", fake_env / "work", progress=False)
    assert report["no_candidate"] == 1 and report["failures"] == {"no candidate": 1}
    assert len(json.loads((fake_env / "sub.json").read_text())) == 3  # its entry holds fallback attempts


def test_the_report_says_what_the_budget_bought(fake_env, arc1_eval, monkeypatch):
    monkeypatch.setenv("FAKE_SLEEP", "0.3")
    tasks = dict(list(arc1_eval.items())[:3])
    report = run_tasks(tasks, fake_cfg(), fake_env / "sub.json", fake_env / "work", progress=False,
                       load_problems=["x.json: not valid JSON"])
    steps = sorted(full_work(t, fake_cfg()).ttt_steps for t in tasks.values())  # FULL: every step of each task
    assert report["levels"] == {"FULL": 3} and report["ttt_steps"] == {"min": steps[0], "median": steps[1],
                                                                     "max": steps[2]}
    assert report["views"]["max"] == fake_cfg().infer.num_views
    assert 0 < report["task_share_of_budget"] <= 1 and report["load_problems"] == ["x.json: not valid JSON"]
    assert report["peak_memory_mib"] > 10  # the process's resident high-water mark


def test_the_closing_line_counts_the_tasks_that_trained_and_those_without_a_program(arc1_eval, caplog):
    from solver.report import RunSummary, summarise, summary_line
    ids = list(arc1_eval)[:4]
    outcomes = {ids[0]: TaskResult(id=ids[0], status="ok", ttt_steps=3, candidates=2),          # no program: trained
                ids[1]: TaskResult(id=ids[1], status="ok", ttt_steps=0, candidates=1),          # no program: untrained
                ids[2]: TaskResult(id=ids[2], status="ok", ttt_steps=1, candidates=4, fits=2)}  # the search's program
    finished = RunSummary({t: arc1_eval[t] for t in ids}, outcomes, {ids[3]: "no time"}, False, Path("."),
                          Path("sub.json"), time.monotonic(), 60.0, 1, B.Rates(1, 1, 1, 1), [], "", "fake")
    report = summarise(finished, [{"status": "ok", "level": "FULL"}] * 4)
    assert (report["trained"], report["valid_tasks"]) == (2, 4)
    assert (report["without_program"], report["trained_without_program"], report["answered_without_program"]) == \
        (3, 1, 2)  # the skipped task has no program either
    assert "trained 2 of 4 tasks, 1 of the 3 without a fitting program (2 of those answered by the model)" in \
        summary_line(report)


def test_malformed_task_still_yields_every_task_id(fake_env, arc1_eval):
    good = list(arc1_eval.values())[:2]
    raw = {t.id: t.to_json() for t in good}
    raw["badtask1"] = {"train": [{"input": [[1, 2], [3]], "output": [[1]]}], "test": [{"input": [[1, 12]]}]}
    path = fake_env / "arc-agi_test_challenges.json"
    path.write_text(json.dumps(raw))
    tasks = load_tasks(path)
    out, work = fake_env / "sub.json", fake_env / "work"
    report = run_tasks(tasks, fake_cfg(), out, work, progress=False)
    assert_complete(out, tasks)
    assert set(json.loads(out.read_text())) == {"badtask1"} | {t.id for t in good}
    assert read_results(work / RESULTS)["badtask1"].status == "invalid"
    assert report["status"] == {"ok": 2, "invalid": 1}


def test_a_task_whose_worker_died_is_redone_once(fake_env, arc1_eval, monkeypatch):
    tasks = dict(list(arc1_eval.items())[:3])
    victim = list(tasks)[1]
    monkeypatch.setenv("FAKE_DIE_ONCE", victim)
    out, work = fake_env / "sub.json", fake_env / "work"
    report = run_tasks(tasks, fake_cfg("faulty_factory", workers=1), out, work, progress=False)
    assert_complete(out, tasks)
    assert report["status"] == {"ok": 3} and all(scores(out, tasks).values())
    assert sorted(c["id"] for c in calls(fake_env)) == sorted(list(tasks) + [victim])  # the victim twice


def test_a_sticky_device_error_restarts_its_worker_instead_of_draining_the_queue(fake_env, arc1_eval, monkeypatch):
    tasks = dict(list(arc1_eval.items())[:4])
    broken = list(tasks)[0]
    monkeypatch.setenv("FAKE_STICKY", broken)
    out, work = fake_env / "sub.json", fake_env / "work"
    report = run_tasks(tasks, fake_cfg("faulty_factory", workers=1, order="given"), out, work, progress=False)
    assert_complete(out, tasks)
    results = read_results(work / RESULTS)
    assert results[broken].status == "failed" and "illegal memory access" in results[broken].error
    assert "retry" not in results[broken].error  # a retry in the same process would fail at once
    assert all(results[t].status == "ok" for t in tasks if t != broken)
    pids = {c["id"]: c["pid"] for c in calls(fake_env)}
    assert all(pids[t] != pids[broken] for t in tasks if t != broken)  # the rest ran in a fresh worker process
    assert report["failures"] == {"RuntimeError": 1}


class _EmulatedCuda:
    """A CUDA device as torch.cuda shows it: after a sticky error (`broken`) every call raises, empty_cache too."""

    def __init__(self, monkeypatch):
        import torch
        self.broken, self.emptied = False, 0
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "empty_cache", self.empty_cache)

    def empty_cache(self):
        if self.broken:
            raise RuntimeError("CUDA error: an illegal memory access was encountered (emulated)")
        self.emptied += 1


def _job(task, retry=True):
    cfg = resolve("test").to_dict()
    now = time.monotonic()
    return Job(task.id, task, cfg, Deadlines(now, now + 60), retry)


def _solve_raising(device, *errors):
    """A solve function that raises `errors` in turn (breaking the device on a sticky one), then answers."""
    calls = []

    def solve(task, cfg, deadlines):
        calls.append(task.id)
        if len(calls) <= len(errors):
            device.broken = device.broken or "illegal memory access" in errors[len(calls) - 1]
            raise RuntimeError(errors[len(calls) - 1])
        return TaskResult([(x, x) for x in task.test_inputs])
    return solve, calls


def test_a_sticky_error_breaks_the_worker_even_when_empty_cache_raises_too(monkeypatch, arc1_eval):
    from solver.pipeline import handle_job
    from solver.workers import WorkerBroken
    device, task = _EmulatedCuda(monkeypatch), next(iter(arc1_eval.values()))
    solve, calls = _solve_raising(device, "CUDA error: an illegal memory access was encountered")
    with pytest.raises(WorkerBroken) as caught:
        handle_job(solve, "w0", _job(task))
    out = caught.value.outcome
    assert out.id == task.id and out.status == "failed" and "illegal memory access" in out.error
    assert [[a.tolist() for a in pair] for pair in out.attempts] == \
        [[a.tolist() for a in pair] for pair in fallback_attempts(task)]
    assert len(calls) == 1 and device.emptied == 0  # no retry, and no empty_cache on a device known broken


def test_a_device_that_fails_to_free_memory_breaks_the_worker(monkeypatch, arc1_eval):
    """An error that does not read as sticky, on a device whose empty_cache then raises: broken, not retried."""
    from solver.pipeline import handle_job
    from solver.workers import WorkerBroken
    device, task = _EmulatedCuda(monkeypatch), next(iter(arc1_eval.values()))
    solve, calls = _solve_raising(device, "cuDNN went away (fake)")
    device.broken = True
    with pytest.raises(WorkerBroken) as caught:
        handle_job(solve, "w0", _job(task))
    assert "empty_cache" in caught.value.outcome.error and len(calls) == 1


def test_a_sticky_error_in_the_retry_breaks_the_worker(monkeypatch, arc1_eval):
    from solver.pipeline import handle_job
    from solver.workers import WorkerBroken
    device, task = _EmulatedCuda(monkeypatch), next(iter(arc1_eval.values()))
    solve, calls = _solve_raising(device, "CUDA out of memory (fake)", "CUDA error: an illegal memory access (x)")
    with pytest.raises(WorkerBroken) as caught:
        handle_job(solve, "w0", _job(task))
    out = caught.value.outcome
    assert out.status == "failed" and "retry: RuntimeError: CUDA error" in out.error and out.level == B.Level.NO_TTT
    assert len(calls) == 2 and device.emptied == 1  # freed after the out-of-memory error only
    solve, calls = _solve_raising(device := _EmulatedCuda(monkeypatch), "CUDA out of memory (fake)")
    assert handle_job(solve, "w0", _job(task)).status == "retried" and device.emptied == 1  # a healthy device


def test_two_worker_processes_do_each_task_once(fake_env, arc1_eval, monkeypatch):
    monkeypatch.setenv("FAKE_SLEEP", "0.5")
    tasks = dict(list(arc1_eval.items())[:4])
    out, work = fake_env / "sub.json", fake_env / "work"
    run_tasks(tasks, fake_cfg(workers=2), out, work, progress=False)
    assert_complete(out, tasks)
    done = [c["id"] for c in calls(fake_env)]
    assert sorted(done) == sorted(tasks)  # each exactly once
    assert os.getpid() not in {c["pid"] for c in calls(fake_env)}
    assert all(scores(out, tasks).values())


def _start(tasks_file, out, work, solver, budget, extra_env=None):
    cmd = [sys.executable, "-m", "solver", "run", "--tasks", str(tasks_file), "--solver", f"test_run:{solver}",
           "--budget", budget, "--out", str(out), "--workdir", str(work), "--preset", "test", "--no-progress"]
    env = {**os.environ, **(extra_env or {})}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_killed_run_leaves_valid_submission_and_resumes(fake_env, arc1_eval):
    tasks = dict(list(arc1_eval.items())[:8])
    tasks_file = write_challenges(fake_env / "tasks.json", tasks.values())
    out, work = fake_env / "sub.json", fake_env / "work"
    proc = _start(tasks_file, out, work, "known_factory", "60s", {"FAKE_SLEEP": "0.4"})
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30:
        if (work / RESULTS).exists() and len((work / RESULTS).read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    loaded = load_tasks(tasks_file)
    assert_complete(out, loaded)  # valid the moment it was killed
    first = set(read_results(work / RESULTS))
    assert 3 <= len(first) < len(tasks)
    done_before = len(calls(fake_env))

    proc = _start(tasks_file, out, work, "known_factory", "60s")
    log, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, log
    assert f"{len(first)} of 8 tasks already done" in log
    assert_complete(out, loaded)
    assert all(scores(out, loaded).values())
    ids = [c["id"] for c in calls(fake_env)]
    assert len(ids) - done_before == len(tasks) - len(first)  # the resumed run did only the rest
    assert not first & set(ids[done_before:])
    lines = (work / RESULTS).read_text().splitlines()
    assert sorted(json.loads(x)["id"] for x in lines) == sorted(tasks)


def test_stuck_task_cannot_overrun_the_budget(fake_env, arc1_eval):
    tasks = dict(list(arc1_eval.items())[:3])
    tasks_file = write_challenges(fake_env / "tasks.json", tasks.values())
    out, work = fake_env / "sub.json", fake_env / "work"
    proc = _start(tasks_file, out, work, "stubborn_factory", "8s", {"FAKE_SLEEP": "60"})
    log, _ = proc.communicate(timeout=30)
    assert "hard stop" in log and proc.returncode == HARD_STOP_EXIT, log
    report = json.loads((work / "report.json").read_text())  # written by the watchdog (when: the test below)
    assert report["budget_s"] == 8.0 and "not started: time was up" in (work / "report.csv").read_text()
    assert_complete(out, load_tasks(tasks_file))


def test_the_watchdog_acts_at_the_hard_stop_inside_the_budget(fake_env, arc1_eval, monkeypatch, fake_clock):
    """The watchdog on a fake clock, its exit and report caught: it stands down when the run finished; at the hard
    stop (inside the budget) it marks what was never started, writes the report and exits with HARD_STOP_EXIT; with
    the run's lock held by a stuck task, it exits without the report."""
    import types

    import solver.run as R

    class Exited(Exception):
        pass

    def exit_(code):
        raise Exited(code)
    fake_clock.install(R)
    monkeypatch.setattr(R, "os", types.SimpleNamespace(_exit=exit_))
    monkeypatch.setattr(R, "logging", types.SimpleNamespace(shutdown=lambda: None))
    reports = []
    monkeypatch.setattr(R, "write_report", lambda run, printing=True: reports.append(fake_clock.now - run.start))
    tasks = dict(list(arc1_eval.items())[:3])
    run = R.Run(tasks, fake_cfg("stubborn_factory", budget="8s"), fake_env / "sub.json", fake_env / "work",
                fake_clock.now, 8.0, 1, True)
    run.pending = list(tasks)[1:]  # the first is stuck in flight
    assert run.start < run.stop_at < run.hard_stop < run.start + run.budget
    run.finished.set()
    R._watchdog(run)  # the run ended in time: nothing to do
    assert reports == [] and run.skipped == {}
    run.finished.clear()
    fake_clock.now = run.hard_stop
    with pytest.raises(Exited) as exited:
        R._watchdog(run)
    assert exited.value.args == (HARD_STOP_EXIT,) and reports == [run.hard_stop - run.start] and reports[0] < 8.0
    assert run.skipped == {tid: "not started: time was up" for tid in list(tasks)[1:]}
    stuck = R.Run(tasks, fake_cfg("stubborn_factory", budget="8s"), fake_env / "sub.json", fake_env / "work",
                  fake_clock.now - (run.hard_stop - run.start), 8.0, 1, True)
    with stuck.lock, pytest.raises(Exited):  # a task holds the lock past the hard stop: leave at once, as it stands
        R._watchdog(stuck)
    assert len(reports) == 1


def test_the_config_does_the_fitted_work(arc1_eval):
    cfg = get_preset("test").override(ttt={"num_transforms": 8, "max_examples": 40, "max_steps": 50},
                                      infer={"num_views": 8})
    task = next(iter(arc1_eval.values()))
    full = full_work(task, cfg)
    assert config_for(cfg, full, full).to_dict() == cfg.to_dict()
    fewer = config_for(cfg, B.Work(3, full.batch_size, 8), full)
    assert fewer.ttt.max_steps == 50 and fewer.ttt.enabled and fewer.infer.num_views == 8  # the user's cap kept
    views = config_for(cfg, B.Work(3, full.batch_size, 2), full)
    assert views.infer.num_views == 2 and views.infer.score_views <= 2
    assert not config_for(cfg, B.Work(0, full.batch_size, 2), full).ttt.enabled
    assert config_for(cfg, B.Work(0, full.batch_size, 2, shared_adapter=True), full).ttt.use_shared_adapter
    size = task_size(task, __import__("solver.codec").codec.Codec.compact())
    assert size.prompt_tokens > size.train_tokens > 0 and size.num_tests == task.num_tests


def test_bad_budget_is_refused():
    with pytest.raises(ValueError, match="duration"):
        resolve("test", run={"budget": "soon"})


def test_scratch_tiny_pipeline_three_tasks_in_60s(tmp_path, arc1_eval):
    """The real pipeline (model loaded once, TTT, prediction) on 3 tasks, each finished within its budget (how long
    it took is the benchmarks' business; that the run ends inside its budget, the watchdog's test above)."""
    tasks = demo_tasks(3)
    cfg = resolve("test", run={"budget": "60s"}).override(
        ttt={"num_transforms": 2, "max_examples": 4, "batch_size": 2}, infer={"num_views": 2, "score_views": 2})
    report = run_tasks(tasks, cfg, tmp_path / "sub.json", tmp_path / "work", start=time.monotonic(), progress=False)
    assert_complete(tmp_path / "sub.json", tasks)
    results = read_results(tmp_path / "work" / RESULTS)
    assert sorted(results) == sorted(tasks) and report["error"] == ""
    assert all(o.status == "ok" for o in results.values()), [o.error for o in results.values()]
    assert any(o.ttt_steps > 0 for o in results.values())
    html = (tmp_path / "work" / "report.html").read_text()  # written while the budget had room
    assert all(tid in html for tid in tasks)


def test_the_parent_never_imports_model_code():
    """torch (and so Unsloth) is imported only where the solve factory runs: in the workers."""
    code = "import sys, solver.cli, solver.run; print(sorted(m for m in ('torch', 'unsloth', 'transformers') " \
           "if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _full_needs(tasks, cfg):
    from solver.codec import Codec
    return {tid: B.total_seconds(task_size(t, Codec.compact()), full_work(t, cfg), preset_rates(cfg))
            for tid, t in tasks.items()}


def test_order_and_degradation_follow_the_pressure(fake_env, arc1_eval):
    tasks = dict(list(arc1_eval.items())[:5])
    # plenty of time: every task at full level; one worker (no other to straggle behind): cheapest first all the same
    relaxed = fake_cfg(budget="60s")
    run_tasks(tasks, relaxed, fake_env / "a.json", fake_env / "a", progress=False)
    order = [c["id"] for c in calls(fake_env)]
    assert order == B.order_tasks(_full_needs(tasks, relaxed), under_pressure=True)
    assert {o.level for o in read_results(fake_env / "a" / RESULTS).values()} == {int(B.Level.FULL)}
    # two workers with plenty of time: longest first
    two = Run(tasks, relaxed, fake_env / "d.json", fake_env, time.monotonic(), 60.0, 2, False)
    two.pending = list(tasks)
    two._reorder(1e6, 0.0)
    assert two.pending == B.order_tasks(_full_needs(tasks, relaxed), under_pressure=False) != order
    # TTT priced far beyond the budget: cheapest first, without TTT
    (fake_env / "calls.jsonl").unlink()
    tight = fake_cfg(budget="30s", train_tokens_per_s=1.0, prefill_tokens_per_s=1e6, decode_tokens_per_s=1e5)
    run_tasks(tasks, tight, fake_env / "b.json", fake_env / "b", progress=False)
    order = [c["id"] for c in calls(fake_env)]
    assert order == B.order_tasks(_full_needs(tasks, tight), under_pressure=True)
    assert {o.level for o in read_results(fake_env / "b" / RESULTS).values()} == {int(B.Level.NO_TTT)}
    assert not any(c["ttt"] for c in calls(fake_env))
    # the same pressure with a shared adapter at hand: every task uses it
    (fake_env / "calls.jsonl").unlink()
    run_tasks(tasks, tight.override(run={"shared_adapter": "somewhere"}), fake_env / "c.json", fake_env / "c",
              progress=False)
    assert {o.level for o in read_results(fake_env / "c" / RESULTS).values()} == {int(B.Level.SHARED_ADAPTER)}
    assert all(c["shared"] for c in calls(fake_env))


def test_no_arguments_on_kaggle_runs_the_competition_set(fake_env, arc1_eval, monkeypatch):
    import solver.cli
    import solver.config
    from solver.cli import main
    comp = fake_env / "input" / "arc-prize-2099"
    comp.mkdir(parents=True)
    tasks = dict(list(arc1_eval.items())[:3])
    write_challenges(comp / "arc-agi_test_challenges.json", tasks.values())
    monkeypatch.setattr(solver.cli, "KAGGLE_TASKS", str(fake_env / "input" / "arc-prize-*" /
                                                        "arc-agi_test_challenges.json"))
    monkeypatch.setattr(solver.cli, "KAGGLE_OUT", str(fake_env / "working" / "submission.json"))
    monkeypatch.setattr(solver.cli, "KAGGLE_WORK", str(fake_env / "working" / "run"))
    monkeypatch.setitem(solver.config.PRESETS, "kaggle-4xl4", fake_cfg(budget="30s"))
    monkeypatch.setattr(solver.cli, "process_start", time.monotonic)  # the budget counts from now, not pytest's start
    assert main([]) == 0
    assert_complete(fake_env / "working" / "submission.json", load_tasks(comp / "arc-agi_test_challenges.json"))
    assert sorted(read_results(fake_env / "working" / "run" / RESULTS)) == sorted(tasks)


def test_scratch_tiny_pipeline_with_a_shared_adapter(tmp_path, arc1_eval):
    """The 'shared adapter' level of the real pipeline: the saved adapter's weights are what the task predicts with."""
    import torch
    from solver.adapter import attach
    from solver.model import load_model
    from solver.pipeline import pipeline
    cfg = resolve("test", run={"budget": "60s"}).override(ttt={"rank": 4}, infer={"num_views": 1, "score_views": 0})
    loaded = load_model(cfg.model.spec)
    adapter = attach(loaded.model, cfg.ttt, loaded.codec.token_ids)
    with torch.no_grad():
        for p in adapter.trainable().values():
            p.add_(0.5)
    adapter.save(tmp_path / "shared")
    saved = {n: p.clone() for n, p in adapter.trainable().items()}
    solve = pipeline(cfg.override(run={"shared_adapter": str(tmp_path / "shared")}))
    task = next(iter(demo_tasks(1).values()))
    full = full_work(task, cfg)
    level_cfg = config_for(cfg, B.Work(0, full.batch_size, 1, shared_adapter=True), full)
    now = time.monotonic()
    result = solve(task, level_cfg, Deadlines(now, now + 20))
    assert result.ttt_steps == 0 and len(result.attempts) == task.num_tests
    live = solve.adapter.trainable()  # the worker's adapter now holds the shared weights
    assert all(torch.equal(live[n], saved[n]) for n in saved)


def test_model_that_fails_to_load_leaves_the_fallback_submission(fake_env, arc1_eval):
    tasks = dict(list(arc1_eval.items())[:3])
    out, work = fake_env / "sub.json", fake_env / "work"
    report = run_tasks(tasks, fake_cfg("broken_factory"), out, work, progress=False)
    assert "model weights not found" in report["error"] and report["status"] == {"skipped": 3}
    assert_complete(out, tasks)
    assert "model weights not found" in (work / "report.csv").read_text()


def test_a_worker_calibrates_on_its_first_task_then_fits_work_with_what_it_measured(tmp_path):
    from solver.pipeline import pipeline
    cfg = resolve("test", run={"budget": "60s"}).override(
        ttt={"num_transforms": 2, "max_examples": 4, "batch_size": 2, "rank": 2},
        infer={"num_views": 2, "score_views": 0},
        run={"train_tokens_per_s": 1e-3})  # the preset says no step ever fits: only measuring can say otherwise
    solve = pipeline(cfg)
    first, second = list(demo_tasks(2).values())
    now = time.monotonic()
    a = solve(first, cfg, Deadlines(now, now + 30))
    assert a.calibration_seconds > 0  # measured, not the preset's guess (whatever this machine's speed):
    assert a.calibrated["train_tokens_per_s"] > 0 and a.planned_speeds.startswith("train ")
    assert a.train_tokens_per_s > 0 or a.ttt_steps == 0
    rates = B.record_speeds(preset_rates(cfg), preset_rates(cfg), a.calibrated, a.speeds())  # what the run keeps
    assert rates.train_tokens_per_s != preset_rates(cfg).train_tokens_per_s
    now = time.monotonic()
    b = solve(second, cfg, Deadlines(now, now + 30), rates=rates)
    assert b.calibration_seconds == 0 and b.calibrated == {} and b.ttt_steps > 0  # fitted with it, it trains
    assert b.level in (int(B.Level.FULL), int(B.Level.FEWER_STEPS), int(B.Level.FEWER_VIEWS))


def test_calibration_times_a_warm_call_at_the_planned_batch_and_views(monkeypatch):
    """The untimed warm-up comes first (one sequence, one view); the timed TTT step has the planned rows and the
    timed decoding the planned views on prediction's path (SharedViews: the first view alone, then the others in the
    planned batches). Each fake call reports a speed: the warm-up's (slow, as a cold GPU) must not be the one
    believed."""
    import solver.generate as G
    import solver.ttt as T
    from solver.model import load_model
    from solver.pipeline import Solver, calibrate
    loaded = load_model("scratch:tiny")
    cfg = resolve("test").override(ttt={"batch_size": 3, "num_transforms": 2, "max_examples": 8},
                                   infer={"num_views": 5, "batch_size": 2})
    trains, decodes = [], []

    def fake_train(adapter, examples, tcfg, pad, *args, **kw):
        trains.append((len(examples), tcfg.batch_size, kw.get("steps")))
        assert tcfg.max_steps == cfg.ttt.max_steps  # the user's cap, untouched
        warm = len(trains) == 1
        return T.TTTResult(steps=1, tokens=sum(len(e) for e in examples), seconds=1e3 if warm else 1e-3)

    def fake_decode(model, codec, views, deadline, stats=None, **kw):
        assert kw.get("shared") is not None  # from the views' cached prompts, as prediction decodes
        decodes.append((len(views), stats is not None))
        if stats is not None:
            for key, value in (("prefill_s", 1e-3), ("decode_s", 1e-3), ("tokens", 2 * len(views))):
                stats[key] = stats.get(key, 0) + value
        return []

    class Adapter:
        model, resets = loaded.model, 0

        def reset(self):
            Adapter.resets += 1
    monkeypatch.setattr(T, "train", fake_train)
    monkeypatch.setattr(G, "decode_batch", fake_decode)
    import solver.pipeline as P
    monkeypatch.setattr(P, "on_accelerator", lambda model: True)  # as on a GPU
    task, far = next(iter(demo_tasks(1).values())), time.monotonic() + 600
    measured = calibrate(Solver(cfg, loaded, Adapter()), task, cfg, far)
    assert trains == [(1, 1, 1), (3, 3, 1)] and Adapter.resets == 2  # warm-up at one row, then the planned batch
    assert decodes == [(1, False), (1, True), (2, True), (2, True)]  # the first of 5 views alone, then batches of 2
    preset = preset_rates(cfg)
    assert measured["train_tokens_per_s"] > preset.train_tokens_per_s  # the warm call's speed, not the cold one's
    assert measured["decode_tokens_per_s"] == pytest.approx(10 / 3e-3)  # 10 tokens in 3 ms
    assert B.cautious_rates(preset, measured).decode_tokens_per_s == pytest.approx(
        (preset.decode_tokens_per_s + 10 / 3e-3) / 2)  # faster than planned: believed halfway

    monkeypatch.setattr(P, "on_accelerator", lambda model: False)  # on a CPU: one sequence, one view
    trains.clear(), decodes.clear()
    measured = calibrate(Solver(cfg, loaded, Adapter()), task, cfg, far)
    assert trains == [(1, 1, 1), (1, 1, 1)] and decodes == [(1, True)]  # the TTT step warmed up here too
    assert measured["train_tokens_per_s"] > preset.train_tokens_per_s  # the warm step's speed, not the cold one's
    assert "decode_tokens_per_s" not in measured  # 2 tokens in 1 ms: too few to be a speed


def test_a_training_speed_far_below_the_presets_is_timed_a_second_time(monkeypatch):
    """A busy start: the warm-up and the first timed step are slow (the machine shared), the second timed step is
    not; the faster of the two is believed, so the plan does not keep TTT out of every task."""
    import solver.generate as G
    import solver.pipeline as P
    import solver.ttt as T
    from solver.model import load_model
    loaded = load_model("scratch:tiny")
    cfg = resolve("test").override(ttt={"num_transforms": 2, "max_examples": 8}, infer={"num_views": 1})
    calls = []

    def fake_train(adapter, examples, tcfg, pad, *args, **kw):
        calls.append(len(calls))
        busy = len(calls) <= 2
        return T.TTTResult(steps=1, tokens=100, seconds=100.0 if busy else 0.1)  # 1 token/s busy, 1,000 quiet

    class Adapter:
        model = loaded.model

        def reset(self):
            pass
    monkeypatch.setattr(T, "train", fake_train)
    monkeypatch.setattr(G, "decode_batch", lambda *a, **k: [])
    monkeypatch.setattr(P, "on_accelerator", lambda model: False)
    task = next(iter(demo_tasks(1).values()))
    measured = P.calibrate(P.Solver(cfg, loaded, Adapter()), task, cfg, time.monotonic() + 600)
    assert len(calls) == 3  # warm-up, a slow timed step, a second timed step
    assert preset_rates(cfg).train_tokens_per_s > 4 * 1000.0  # both far below the preset's: a second look
    assert measured["train_tokens_per_s"] == pytest.approx(1000.0)  # the faster of the two
    assert B.cautious_rates(preset_rates(cfg), measured).train_tokens_per_s == pytest.approx(1000.0)  # slower: whole


def test_tasks_in_a_row_fitted_without_ttt_make_the_next_one_calibrate_again(monkeypatch):
    """Calibration that measured a speed far too slow fits no TTT step into any task; after RECALIBRATE_AFTER such
    tasks the worker times the speeds again instead of believing the first measurement for the rest of the run."""
    import solver.pipeline as P
    cfg = resolve("test").override(ttt={"num_transforms": 2, "max_examples": 4, "rank": 2},
                                   infer={"num_views": 1, "score_views": 0})
    solve = P.pipeline(cfg)
    timed = []

    def calibrate(w, task, cfg, deadline):
        timed.append(task.id)
        return {"train_tokens_per_s": 1e-6}  # no step ever fits at this speed
    monkeypatch.setattr(P, "calibrate", calibrate)
    tasks, rates = list(demo_tasks(P.RECALIBRATE_AFTER + 2).values()), preset_rates(cfg)
    for task in tasks:
        now = time.monotonic()
        result = solve(task, cfg, Deadlines(now, now + 30), rates=rates)
        assert result.ttt_steps == 0 and "train 0" in result.planned_speeds
        rates = B.record_speeds(rates, preset_rates(cfg), result.calibrated, result.speeds(), result.recalibrated)
    # the second: a first look far below the preset's; the last: RECALIBRATE_AFTER tasks kept from training after it
    assert timed == [tasks[0].id, tasks[1].id, tasks[P.RECALIBRATE_AFTER + 1].id]


def test_a_first_calibration_far_below_the_preset_is_timed_again_on_the_next_task_once(monkeypatch):
    """A busy start can outlast the first calibration: a training speed RETIME_BELOW the preset's is timed again on
    the next task (a re-measure, which the run weighs against the preset's), and only once for that reason."""
    import solver.pipeline as P
    cfg = resolve("test").override(ttt={"num_transforms": 2, "max_examples": 4, "rank": 2},
                                   infer={"num_views": 1, "score_views": 0})
    solve, timed, rates = P.pipeline(cfg), [], preset_rates(cfg)

    def calibrate(w, task, cfg, deadline):
        timed.append((task.id, w.calibrated))
        return {"train_tokens_per_s": preset_rates(cfg).train_tokens_per_s / 10}
    monkeypatch.setattr(P, "calibrate", calibrate)
    tasks, remeasured = list(demo_tasks(3).values()), []
    for task in tasks:
        now = time.monotonic()
        result = solve(task, cfg, Deadlines(now, now + 30), rates=rates)
        remeasured.append(result.recalibrated)
        rates = B.record_speeds(rates, preset_rates(cfg), result.calibrated, result.speeds(), result.recalibrated)
    assert timed == [(tasks[0].id, False), (tasks[1].id, True)]
    assert remeasured == [False, True, False]


def test_tasks_that_no_speed_would_train_do_not_make_the_worker_calibrate_again(monkeypatch):
    """Shares too short for a step even at the preset's speeds (the search's solved tasks, planned with
    run.solved_share) are not a sign of a wrong measurement: however many in a row, no second calibration."""
    import solver.pipeline as P
    cfg = resolve("test").override(ttt={"num_transforms": 2, "max_examples": 4, "rank": 2},
                                   infer={"num_views": 1, "score_views": 0}, run={"train_tokens_per_s": 1e-3})
    solve, timed, rates = P.pipeline(cfg), [], preset_rates(cfg)

    def calibrate(w, task, cfg, deadline):
        timed.append(task.id)
        return {"train_tokens_per_s": preset_rates(cfg).train_tokens_per_s}  # as slow as the preset says
    monkeypatch.setattr(P, "calibrate", calibrate)
    tasks = list(demo_tasks(P.RECALIBRATE_AFTER + 2).values())
    for task in tasks:
        now = time.monotonic()
        result = solve(task, cfg, Deadlines(now, now + 30), rates=rates)
        assert result.ttt_steps == 0
        rates = B.record_speeds(rates, preset_rates(cfg), result.calibrated, result.speeds(), result.recalibrated)
    assert timed == [tasks[0].id]


def test_a_task_that_prefilled_nothing_measures_no_prefill_speed():
    from solver.pipeline import measured_speeds
    size = B.TaskSize(train_tokens=900, prompt_tokens=1100, output_tokens=183, num_tests=1)
    assert "prefill_tokens_per_s" not in measured_speeds(size, 0, 2, 0.0, 0.01, {})  # no time left: nothing run
    assert "prefill_tokens_per_s" not in measured_speeds(size, 0, 2, 0.0, 3.0, {"prefills_too_late": 5})
    got = measured_speeds(size, 0, 2, 0.0, 13.0, {"prefills": 2, "decode_s": 2.0, "tokens": 10})
    assert got["prefill_tokens_per_s"] == pytest.approx(2 * 1100 / 11.0)  # the two prompts computed, not the views planned
    assert got["decode_tokens_per_s"] == pytest.approx(5.0)


def test_calibration_looks_twice_only_before_its_deadline_and_warms_up_short_on_a_cpu(monkeypatch):
    """A slow first timed step past the calibration's end is not timed again (on a busy CPU each step costs tens of
    seconds of the first task's share); the untimed warm-up on a CPU trains a short tail of a sequence; a past
    deadline times no prefill or decoding (calibration returns only what it timed)."""
    import solver.pipeline as P
    import solver.ttt as T
    from solver.model import load_model
    loaded = load_model("scratch:tiny")
    cfg = resolve("test").override(ttt={"num_transforms": 2, "max_examples": 8}, infer={"num_views": 1})
    lengths = []

    def fake_train(adapter, examples, tcfg, pad, *args, **kw):
        lengths.append(len(examples[0]))
        return T.TTTResult(steps=1, tokens=100, seconds=100.0)  # 1 token/s: far below the preset's

    class Adapter:
        model = loaded.model

        def reset(self):
            pass
    monkeypatch.setattr(T, "train", fake_train)
    monkeypatch.setattr(P, "on_accelerator", lambda model: False)
    monkeypatch.setattr(P, "WARM_TOKENS", 20)  # the test preset's sequences are short
    task = next(iter(demo_tasks(1).values()))
    measured = P.calibrate(P.Solver(cfg, loaded, Adapter()), task, cfg, time.monotonic() - 1.0)  # its end has passed
    assert len(lengths) == 2  # the warm-up and one timed step, no second look
    assert lengths[1] > P.WARM_TOKENS and lengths[0] == P.WARM_TOKENS  # the warm-up: a tail of the timed sequence
    assert measured == {"train_tokens_per_s": pytest.approx(1.0)}


def test_each_task_reports_its_own_gpu_peak_memory_and_none_on_a_cpu(fake_env, arc1_eval, monkeypatch):
    """An emulated CUDA device whose peak each task sets: reset before every task, read after it, in results.jsonl,
    report.csv and report.json (the largest task's); on a CPU the figure is absent (None, an empty cell)."""
    import torch
    tasks = dict(list(arc1_eval.items())[:3])
    out, work = fake_env / "sub.json", fake_env / "work"
    report = run_tasks(tasks, fake_cfg(), out, work, progress=False)
    assert report["gpu_peak_mib"] is None and all(o.gpu_peak_mib is None for o in read_results(work / RESULTS).values())
    peaks, device = {tid: (i + 1) * 2 ** 20 * 100 for i, tid in enumerate(tasks)}, {"peak": 0}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a: device.update(peak=0))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: device["peak"])
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)

    def solve(task, cfg, deadlines):
        assert device["peak"] == 0  # reset before the task
        device["peak"] = peaks[task.id]
        return TaskResult([(x, x) for x in task.test_inputs])
    monkeypatch.setattr(sys.modules[__name__], "peak_factory", lambda cfg: solve, raising=False)
    work = fake_env / "work2"
    report = run_tasks(tasks, fake_cfg("peak_factory"), fake_env / "sub2.json", work, progress=False)
    assert {t: o.gpu_peak_mib for t, o in read_results(work / RESULTS).items()} == {t: p / 2 ** 20 for t, p in
                                                                                     peaks.items()}
    assert report["gpu_peak_mib"] == 300.0 and "gpu_peak_mib" in (work / "report.csv").read_text().splitlines()[0]


@pytest.mark.parametrize("calibrate", [True, False])
def test_each_workers_first_task_gets_time_to_calibrate_beyond_its_share(tmp_path, calibrate):
    """The first job of each worker (two here) carries the end of its calibration, and its share starts there; the
    later jobs, or every job with run.calibrate off, have none (the pipeline times speeds on the first task only)."""
    tasks = demo_tasks(4)
    cfg = resolve("test", run={"budget": "10m", "calibrate": calibrate, "sources": "model"})
    start = time.monotonic()
    run = Run(tasks, cfg, tmp_path / "s.json", tmp_path, start, 600.0, 2, False)
    run.pending = list(tasks)
    jobs = [run.next_job() for _ in range(2)]
    ends = dict(run.in_flight)  # when the run expects each to end
    run.in_flight.clear()  # both finished: a third task starts on a calibrated worker
    jobs.append(run.next_job())
    for k, job in enumerate(jobs):
        first = calibrate and k < 2
        expected = B.calibration_seconds(task_size(job.task, run.codec, cfg.ttt.max_tokens), run.rates,
                                         run.codec.answer_length(*B.CALIBRATION_SHAPE))
        assert (job.deadlines.calibration > 0) == first
        if first:
            assert job.deadlines.calibration - start == pytest.approx(expected, abs=1.0)
            assert ends[job.id] == pytest.approx(job.deadlines.end, abs=1e-6)


def test_the_run_keeps_the_speeds_a_task_measured_and_hands_them_to_the_next_job(tmp_path):
    """The speeds live in the parent alone: a first outcome's calibration and measured speeds are recorded once
    (budget.record_speeds), and the next job carries them to its worker; a solver of the cfg's own gets none."""
    from solver.results import fallback_result
    tasks = demo_tasks(3)
    cfg = resolve("test", run={"budget": "10m", "sources": "model"})
    run = Run(tasks, cfg, tmp_path / "s.json", tmp_path, time.monotonic(), 600.0, 1, False)
    run.pending = list(tasks)
    first = run.next_job()
    assert first.rates == run.rates == preset_rates(cfg)
    calibrated, measured = {"train_tokens_per_s": 5.0}, {"decode_tokens_per_s": 40.0, "prefill_tokens_per_s": 0.0}
    outcome = replace(fallback_result(first.task, "ok", int(B.Level.FULL)), calibrated=calibrated, **measured)
    run.on_result(outcome)
    expected = B.update_rates(B.cautious_rates(preset_rates(cfg), calibrated), measured)
    assert run.rates == expected and expected.train_tokens_per_s == 5.0  # slower than the preset's: whole
    assert run.next_job().rates == expected  # the worker fits the next task with the run's speeds
    other = Run(tasks, fake_cfg(), tmp_path / "o.json", tmp_path / "o", time.monotonic(), 600.0, 1, False)
    other.pending = list(tasks)
    assert other.next_job().rates is None  # another solve function takes (task, cfg, deadlines) alone


def test_a_task_a_first_calibration_in_doubt_keeps_from_training_is_handed_back_once(monkeypatch):
    """A busy start: the first calibration measures training RETIME_BELOW the preset's, and at that speed the task's
    share fits no step where the preset's fits one. With the job's leave (may_defer) the task comes back unsolved,
    its worker timing the speeds again on its next task; that second look is believed (weighed against the
    preset's) and hands nothing back; without the leave the task is answered as it is."""
    import solver.pipeline as P
    cfg = resolve("test").override(ttt={"num_transforms": 2, "max_examples": 4, "rank": 2},
                                   infer={"num_views": 1, "score_views": 0})
    slow = {"train_tokens_per_s": preset_rates(cfg).train_tokens_per_s / 1e6}
    timed = []

    def calibrate(w, task, cfg, deadline):
        timed.append(w.calibrated)
        return dict(slow)
    monkeypatch.setattr(P, "calibrate", calibrate)
    task = next(iter(demo_tasks(1).values()))
    solve, rates = P.pipeline(cfg), preset_rates(cfg)
    now = time.monotonic()
    back = solve(task, cfg, Deadlines(now, now + 30), rates=rates, may_defer=True)
    assert back.deferred and back.calibrates_next and back.attempts == [] and back.calibrated == slow
    rates = B.record_speeds(rates, preset_rates(cfg), back.calibrated, back.speeds())
    again = solve(task, cfg, Deadlines(now, now + 30), rates=rates, may_defer=True)
    assert not again.deferred and again.recalibrated and not again.calibrates_next and again.attempts
    assert timed == [False, True]  # the second call timed the speeds again, as a re-measure
    kept = P.pipeline(cfg)
    answered = kept(task, cfg, Deadlines(now, now + 30), rates=preset_rates(cfg))
    assert not answered.deferred and answered.attempts and answered.calibrates_next


def test_the_run_plans_a_handed_back_task_again_with_calibration_time_and_no_second_leave(tmp_path):
    from solver.results import fallback_result
    tasks = demo_tasks(1)
    cfg = resolve("test", run={"budget": "10m", "sources": "model"})
    run = Run(tasks, cfg, tmp_path / "s.json", tmp_path, time.monotonic(), 600.0, 1, False)
    run.pending = list(tasks)
    first, slow = run.next_job(), preset_rates(cfg).train_tokens_per_s / 3
    assert first.may_defer and first.deadlines.calibration  # a worker's first task: calibration time before it
    run.on_result(replace(fallback_result(first.task, "ok", int(B.Level.NO_TTT), seconds=7.0), attempts=[],
                          deferred=True, calibrates_next=True, calibration_seconds=3.0,
                          calibrated={"train_tokens_per_s": slow}))
    assert first.id not in run.outcomes and run.pending == [first.id]
    assert run.rates == preset_rates(cfg)  # speeds in doubt are not planned with before a second look
    again = run.next_job()
    assert again.id == first.id and not again.may_defer  # once only
    assert again.deadlines.calibration  # its worker times the speeds again: the time for it comes before the share
    run.on_result(replace(fallback_result(again.task, "ok", int(B.Level.NO_TTT), seconds=5.0),
                          calibration_seconds=2.0))
    assert (run.outcomes[first.id].seconds, run.outcomes[first.id].calibration_seconds) == (12.0, 5.0)


def test_calibration_ends_where_the_run_said_and_is_counted_apart_from_ttt(fake_clock, monkeypatch):
    """On a fake clock: calibration (5 s) gets the end the job carries; TTT (2 s) is reported without it."""
    import solver.pipeline as P
    from solver.ttt import TTTResult
    cfg = resolve("test").override(ttt={"num_transforms": 2, "max_examples": 4, "rank": 2},
                                   infer={"num_views": 2, "score_views": 0})
    solve = P.pipeline(cfg)
    fake_clock.install(P)
    seen = {}

    def calibrate(w, task, cfg, deadline):
        seen["deadline"] = deadline
        fake_clock.advance(5.0)
        return {}

    def train(adapter, related, loaded, task, cfg, deadlines, steps=0):
        fake_clock.advance(2.0)
        return TTTResult(steps=1, loss=0.5, first_loss=0.6), ""
    monkeypatch.setattr(P, "calibrate", calibrate)
    monkeypatch.setattr(P, "_train_or_reuse", train)
    now = fake_clock.now
    result = solve(next(iter(demo_tasks(1).values())), cfg, Deadlines(now, now + 100, calibration=now + 7))
    assert seen["deadline"] == now + 7
    assert result.calibration_seconds == 5.0 and result.ttt_steps == 1 and result.ttt_seconds == 2.0


def test_a_task_reports_its_calibrated_speeds_where_it_measures_none_itself(fake_clock, monkeypatch):
    """The run plans the next tasks with each result's speeds: a first task whose calibration used up its share
    measures nothing itself, and its result carries what calibration timed, which the run keeps (not the preset's)."""
    import solver.pipeline as P
    cfg = resolve("test").override(ttt={"num_transforms": 2, "max_examples": 4, "rank": 2},
                                   infer={"num_views": 2, "score_views": 0})
    solve = P.pipeline(cfg)
    fake_clock.install(P)
    slow = {"train_tokens_per_s": 11.0, "prefill_tokens_per_s": 22.0, "decode_tokens_per_s": 3.0}

    def calibrate(w, task, cfg, deadline):
        fake_clock.advance(50.0)  # past the task's end
        return dict(slow)
    monkeypatch.setattr(P, "calibrate", calibrate)
    now = fake_clock.now
    result = solve(next(iter(demo_tasks(1).values())), cfg, Deadlines(now, now + 10))
    assert result.ttt_steps == 0 and result.calibration_seconds == 50.0 and result.calibrated == slow
    assert not any(result.speeds()[k] for k in slow)  # the task itself measured nothing
    kept = B.record_speeds(preset_rates(cfg), preset_rates(cfg), result.calibrated, result.speeds())
    assert (kept.train_tokens_per_s, kept.prefill_tokens_per_s, kept.decode_tokens_per_s) == (11.0, 22.0, 3.0)


def test_a_job_carries_the_full_config_and_the_solver_fits_the_work_once(tmp_path):
    """The parent hands out the run's config and the task's share; the one fit (solver.plan.fit_to_share) is the
    solver's: here TTT priced far beyond the share, so the fit drops it and keeps prediction's time; the retry's
    smaller config keeps its size."""
    from solver.codec import Codec
    from solver.config import Config
    tasks = demo_tasks(2)
    cfg = resolve("test", run={"budget": "60s", "sources": "model", "calibrate": False}).override(
        run={"train_tokens_per_s": 1.0, "prefill_tokens_per_s": 1e6, "decode_tokens_per_s": 1e5})
    run = Run(tasks, cfg, tmp_path / "s.json", tmp_path, time.monotonic(), 60.0, 1, False)
    run.pending = list(tasks)
    job = run.next_job()
    assert job.cfg == cfg.to_dict() and job.deadlines.ttt == job.deadlines.end  # nothing fitted in the parent
    fitted = fit_to_share(job.task, Config.from_dict(job.cfg), Codec.compact(), preset_rates(cfg), job.deadlines)
    assert fitted.level == B.Level.NO_TTT and not fitted.cfg.ttt.enabled and fitted.full.ttt_steps > 0
    assert fitted.deadlines.end == job.deadlines.end and fitted.deadlines.ttt <= fitted.deadlines.end
    fast = fit_to_share(job.task, Config.from_dict(job.cfg), Codec.compact(), replace(preset_rates(cfg),
                        train_tokens_per_s=1e9, search_s=1e6), job.deadlines)  # the search ran before: not counted
    assert fast.level == B.Level.FULL and fast.cfg.to_dict() == job.cfg and fast.deadlines.ttt < job.deadlines.end
    assert fast.steps == 0  # the full work: no step count of the plan's, every step the data gives
    some = fit_to_share(job.task, Config.from_dict(job.cfg), Codec.compact(), replace(preset_rates(cfg),
                        train_tokens_per_s=3e3), job.deadlines)  # a few of the steps fit in the share
    assert 0 < some.steps == some.work.ttt_steps < some.full.ttt_steps  # the plan's own count, carried apart
    assert some.cfg.ttt.max_steps == cfg.ttt.max_steps and some.cfg.ttt.enabled  # the user's cap, untouched
    retry_cfg, _ = retry_config(job.task, Config.from_dict(job.cfg))  # built in the worker, from the job's config
    retry = fit_to_share(job.task, retry_cfg, Codec.compact(), preset_rates(cfg), job.deadlines)
    assert not retry.cfg.ttt.enabled and retry.cfg.infer.num_views <= cfg.run.min_views
