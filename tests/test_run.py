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
from pathlib import Path

import numpy as np
import pytest

from solver import budget as B
from solver.cli import demo_tasks
from solver.config import get_preset, resolve
from solver.results import RESULTS, Deadlines, TaskResult, read_results
from solver.plan import config_for, full_work, preset_rates, task_size
from solver.run import HARD_STOP_EXIT, run_tasks
from solver.submission import fallback_attempts, read_submission, validate_submission
from solver.tasks import load_tasks

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------------------------------------------
# Fake solvers: behaviour set by environment variables, so that worker processes and subprocesses share it.

def _log_call(task, cfg):
    path = os.environ.get("FAKE_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"id": task.id, "views": cfg.infer.num_views, "pid": os.getpid(),
                                "ttt": cfg.ttt.enabled, "shared": cfg.ttt.shared_adapter}) + "\n")


def known_factory(cfg):
    """Answers with the known test outputs after FAKE_SLEEP seconds (never past its deadline)."""
    def solve(task, cfg, deadlines: Deadlines):
        _log_call(task, cfg)
        time.sleep(max(0.0, min(float(os.environ.get("FAKE_SLEEP", "0")), deadlines.end - time.monotonic())))
        return TaskResult([(o, o) for o in task.test_outputs], ttt_steps=3, candidates=2, views=cfg.infer.num_views)
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
    assert report["levels"] == {"FULL": 3} and report["ttt_steps"] == {"min": 3, "median": 3, "max": 3}
    assert report["views"]["max"] == fake_cfg().infer.num_views
    assert 0 < report["task_share_of_budget"] <= 1 and report["load_problems"] == ["x.json: not valid JSON"]
    assert report["peak_memory_mib"] > 10  # the process's resident high-water mark


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
    report = json.loads((work / "report.json").read_text())
    assert report["elapsed_s"] <= report["budget_s"]  # the run's own clock: it ended inside its budget
    assert_complete(out, load_tasks(tasks_file))
    assert (work / "report.csv").exists()


def test_the_config_does_the_fitted_work(arc1_eval):
    cfg = get_preset("test").override(ttt={"num_transforms": 8, "max_examples": 40}, infer={"num_views": 8})
    task = next(iter(arc1_eval.values()))
    full = full_work(task, cfg)
    assert config_for(cfg, full, full).to_dict() == cfg.to_dict()
    fewer = config_for(cfg, B.Work(3, full.batch_size, 8), full)
    assert fewer.ttt.max_steps == 3 and fewer.ttt.enabled and fewer.infer.num_views == 8
    views = config_for(cfg, B.Work(3, full.batch_size, 2), full)
    assert views.infer.num_views == 2 and views.infer.score_views <= 2
    assert not config_for(cfg, B.Work(0, full.batch_size, 2), full).ttt.enabled
    assert config_for(cfg, B.Work(0, full.batch_size, 2, shared_adapter=True), full).ttt.shared_adapter
    size = task_size(task, __import__("solver.codec").codec.Codec.compact())
    assert size.prompt_tokens > size.train_tokens > 0 and size.num_tests == task.num_tests


def test_bad_budget_is_refused():
    with pytest.raises(ValueError, match="duration"):
        resolve("test", run={"budget": "soon"})


def test_scratch_tiny_pipeline_three_tasks_in_60s(tmp_path, arc1_eval):
    """The real pipeline (model loaded once, TTT, prediction) on 3 tasks; the run ends within its budget."""
    tasks = demo_tasks(3)
    cfg = resolve("test", run={"budget": "60s"}).override(
        ttt={"num_transforms": 2, "max_examples": 4, "batch_size": 2}, infer={"num_views": 2, "score_views": 2})
    t0 = time.monotonic()
    report = run_tasks(tasks, cfg, tmp_path / "sub.json", tmp_path / "work", start=t0, progress=False)
    assert report["elapsed_s"] <= report["budget_s"]
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
    # plenty of time: every task at full level, longest first
    relaxed = fake_cfg(budget="60s")
    run_tasks(tasks, relaxed, fake_env / "a.json", fake_env / "a", progress=False)
    order = [c["id"] for c in calls(fake_env)]
    assert order == B.order_tasks(_full_needs(tasks, relaxed), under_pressure=False)
    assert {o.level for o in read_results(fake_env / "a" / RESULTS).values()} == {int(B.Level.FULL)}
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
    level_cfg = config_for(cfg, B.Work(0, full.batch_size, 1, shared_adapter=True), full).override(
        run={"replan": False})  # as planned: the worker does not fit TTT back in
    now = time.monotonic()
    result = solve(task, level_cfg, Deadlines(now, now + 20))
    assert result.ttt_steps == 0 and len(result.attempts) == task.num_tests
    live = solve.args[0].adapter.trainable()  # the worker's adapter now holds the shared weights
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
    worker = solve.args[0]
    first, second = list(demo_tasks(2).values())
    now = time.monotonic()
    a = solve(first, cfg, Deadlines(now, now + 30))
    assert a.calibration_seconds > 0 and worker.rates.train_tokens_per_s > 1.0  # timed, not the preset's guess
    assert a.train_tokens_per_s > 0 or a.ttt_steps == 0
    now = time.monotonic()
    b = solve(second, cfg, Deadlines(now, now + 30))
    assert b.calibration_seconds == 0 and b.ttt_steps > 0  # fitted with the measured speed, it trains
    assert b.level in (int(B.Level.FULL), int(B.Level.FEWER_STEPS), int(B.Level.FEWER_VIEWS))
