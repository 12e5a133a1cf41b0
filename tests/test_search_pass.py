"""The search pass: the whole set searched ahead of the model (in a process pool or here), its answers in the
submission before the model loads, kept when the model's job fails, reused on resume; solved tasks give their model
time away; beside the model every job carries its task's search."""
import csv
import json
import time
import numpy as np
import pytest
from test_search import make_task, rand_grid

from solver import budget as B
from solver import run as R
from solver import search_pass as SP
from solver.config import ConfigError, resolve
from solver.results import RESULTS, TaskResult, read_results
from solver.run import run_tasks
from solver.tasks import Task


def solved_task(tid="rot") -> Task:
    return make_task(lambda g: np.rot90(g).copy(), [(5, 6), (6, 7), (5, 8), (7, 6)], seed=1, tid=tid)


def noise_task(tid="noise") -> Task:
    """Outputs unrelated to the inputs: no program fits."""
    rng = np.random.default_rng(7)
    pairs = [(rand_grid(rng, 5, 6), rng.integers(0, 10, (3, 3)).astype(np.uint8)) for _ in range(4)]
    return Task(tid, pairs[:-1], [pairs[-1][0]], [pairs[-1][1]])


def tasks() -> dict[str, Task]:
    return {t.id: t for t in (solved_task(), noise_task())}


def cfg_for(**run):
    return resolve("test", run={"budget": "60s", "workers": 0, "search_pass": "before", **run})


def attempt_1(out, tid):
    return np.array(json.loads(out.read_text())[tid][0]["attempt_1"])


def same(a: TaskResult, b: TaskResult) -> bool:
    timeless = {"seconds": 0, "source_seconds": 0}
    return {**a.to_json(), **timeless} == {**b.to_json(), **timeless}


def test_the_pass_in_two_processes_gives_the_records_it_gives_here():
    # depth 1 and a far limit: both searches finish, so neither record depends on how busy the machine is
    cfg, ts = resolve("test", sets=["search.depth=1", "search.max_seconds=20"]), list(tasks().values())
    here, pool = [], []
    assert SP.run_pass(ts, cfg, time.monotonic() + 60, 1, here.append, progress=False) == 2
    assert SP.run_pass(ts, cfg, time.monotonic() + 60, 2, pool.append, progress=False) == 2
    pool.sort(key=lambda r: [t.id for t in ts].index(r.id))
    assert all(same(a, b) for a, b in zip(here, pool))
    assert [SP.solved(r) for r in here] == [True, False]
    assert all(r.level == int(B.Level.SEARCH_ONLY) and r.status == "ok" for r in here)
    assert np.array_equal(here[0].attempts[0][0], ts[0].test_outputs[0])


def test_a_pass_past_its_end_searches_nothing():
    assert SP.run_pass(list(tasks().values()), resolve("test"), time.monotonic() - 1, 1, lambda r: None,
                       progress=False) == 0


def test_the_mode_and_the_processes():
    assert SP.resolve_mode("auto", True, 0) == "before"
    assert SP.resolve_mode("auto", True, 4) == "beside"
    assert SP.resolve_mode("auto", False, 4) == "before"
    assert SP.resolve_mode("inside", True, 0) == "inside"
    with pytest.raises(ValueError, match="search_pass"):
        SP.resolve_mode("sideways", True, 0)
    with pytest.raises(ConfigError, match="search_pass"):
        resolve("test", sets=["run.search_pass=sideways"])
    assert SP.pass_workers(3, "before", 1, 10) == 3
    assert SP.pass_workers(0, "before", 1, 1) == 1  # one task: one process
    assert SP.pass_workers(0, "beside", 64, 10) == 1  # no core left: at least one


def test_search_answers_are_in_the_submission_before_the_model_loads(monkeypatch, tmp_path):
    seen = {}
    make = R.make_handler

    def spying_handler(*args, **kw):
        seen["attempt_1"] = attempt_1(out, "rot")
        return make(*args, **kw)
    monkeypatch.setattr(R, "make_handler", spying_handler)
    out, work = tmp_path / "sub.json", tmp_path / "work"
    report = run_tasks(tasks(), cfg_for(), out, work, progress=False)
    assert np.array_equal(seen["attempt_1"], solved_task().test_outputs[0])
    assert report["score"]["correct"] >= 1
    rows = {r["task_id"]: r for r in csv.DictReader((work / "report.csv").open())}
    assert float(rows["rot"]["source_seconds"]) > 0 and int(rows["rot"]["fits"]) > 0
    assert rows["rot"]["status"] == "ok" and rows["rot"]["level"] != "SEARCH_ONLY"  # the model ran on it too
    assert set(SP.read_records(work)) == {"rot", "noise"}


def test_a_model_job_that_fails_keeps_the_search_answer(monkeypatch, tmp_path):
    import solver.pipeline as P

    def broken(*args, **kw):
        raise RuntimeError("the model broke")
    monkeypatch.setattr(P, "_solve_with_model", broken)
    out, work = tmp_path / "sub.json", tmp_path / "work"
    run_tasks(tasks(), cfg_for(), out, work, progress=False)
    assert np.array_equal(attempt_1(out, "rot"), solved_task().test_outputs[0])
    rows = {r["task_id"]: r for r in csv.DictReader((work / "report.csv").open())}
    assert rows["rot"]["status"] == "failed" and "the model broke" in rows["rot"]["error"]
    assert rows["rot"]["found"] == "1" and rows["noise"]["found"] == "0"


def test_a_solved_task_gives_its_model_time_away_at_solved_share_zero(tmp_path):
    out, work = tmp_path / "sub.json", tmp_path / "work"
    report = run_tasks(tasks(), cfg_for(solved_share=0.0), out, work, progress=False)
    rows = {r["task_id"]: r for r in csv.DictReader((work / "report.csv").open())}
    assert rows["rot"]["level"] == "SEARCH_ONLY" and "solved by the search" in rows["rot"]["note"]
    assert rows["noise"]["level"] != "SEARCH_ONLY"
    assert set(read_results(work / RESULTS)) == {"noise"}  # only the model's tasks are final on resume
    assert report["levels"]["SEARCH_ONLY"] == 1


def test_a_resumed_run_reuses_the_search_records(monkeypatch, tmp_path):
    calls = []
    pass_one = SP.pass_one

    def counting(task, cfg, seconds):
        calls.append(task.id)
        return pass_one(task, cfg, seconds)
    monkeypatch.setattr(SP, "pass_one", counting)
    out, work = tmp_path / "sub.json", tmp_path / "work"
    cfg = cfg_for(sources="search")
    run_tasks(tasks(), cfg, out, work, progress=False)
    assert sorted(calls) == ["noise", "rot"]
    first = out.read_text()
    report = run_tasks(tasks(), cfg, out, work, progress=False)
    assert sorted(calls) == ["noise", "rot"]  # not searched again
    assert out.read_text() == first and report["levels"] == {"SEARCH_ONLY": 2}


def test_beside_the_model_every_job_carries_its_search(monkeypatch, tmp_path):
    known = {}
    import solver.pipeline as P
    handle = P.handle_job

    def spying(solve, worker, job):
        known[job.id] = job.known
        return handle(solve, worker, job)
    monkeypatch.setattr(P, "handle_job", spying)
    out, work = tmp_path / "sub.json", tmp_path / "work"
    run_tasks(tasks(), cfg_for(search_pass="beside"), out, work, progress=False)
    assert set(known) == {"rot", "noise"}
    assert known["rot"][0] and known["rot"][0][0].sources == ["search"] and known["noise"] == [[]]
    assert np.array_equal(attempt_1(out, "rot"), solved_task().test_outputs[0])


def test_a_task_the_model_never_reached_keeps_its_search_attempts(tmp_path):
    ts = tasks()
    run = R.Run(ts, cfg_for(), tmp_path / "sub.json", tmp_path, time.monotonic(), 60.0, 1, True)
    run.pending = list(ts)
    record = SP.pass_one(ts["rot"], run.cfg, 30.0)
    run._searched(record)
    run.close()
    assert run.outcomes["rot"].level == int(B.Level.SEARCH_ONLY)
    assert "the model did not reach it" in run.outcomes["rot"].note and "rot" not in run.skipped
    assert "noise" in run.skipped and "noise" not in run.outcomes
    assert np.array_equal(attempt_1(tmp_path / "sub.json", "rot"), ts["rot"].test_outputs[0])


def test_a_share_too_short_for_one_view_is_not_spent_on_the_model(tmp_path):
    out, work = tmp_path / "sub.json", tmp_path / "work"
    slow = cfg_for(decode_tokens_per_s=0.01, calibrate=False)  # one view: hours at this speed
    report = run_tasks(tasks(), slow, out, work, progress=False)
    rows = {r["task_id"]: r for r in csv.DictReader((work / "report.csv").open())}
    assert rows["rot"]["level"] == "SEARCH_ONLY" and "no time for one view" in rows["rot"]["note"]
    assert rows["noise"]["level"] == "SEARCH_ONLY" and rows["noise"]["found"] == "0"  # searched, nothing found
    assert report["no_candidate"] == 1 and report["failures"]["no candidate"] == 1  # which counts as a failure
    assert read_results(work / RESULTS) == {}  # a resumed run with more time may still give them to the model
    assert np.array_equal(attempt_1(out, "rot"), solved_task().test_outputs[0])


def test_a_pass_that_raises_leaves_the_search_to_the_models_workers(monkeypatch, tmp_path, caplog):
    def broken(*args, **kw):
        raise OSError("no process pool here")
    monkeypatch.setattr(SP, "run_pass", broken)
    out, work = tmp_path / "sub.json", tmp_path / "work"
    report = run_tasks(tasks(), cfg_for(), out, work, progress=False)
    assert "search pass raised" in caplog.text and "OSError: no process pool here" in caplog.text
    rows = {r["task_id"]: r for r in csv.DictReader((work / "report.csv").open())}
    assert int(rows["rot"]["fits"]) > 0 and rows["rot"]["status"] == "ok"  # searched inside its job
    assert np.array_equal(attempt_1(out, "rot"), solved_task().test_outputs[0]) and report["score"]["correct"] >= 1
