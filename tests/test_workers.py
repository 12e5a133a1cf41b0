"""The executor: worker processes pulling jobs from one queue, exercised on the CPU with trivial handlers."""
import os
import time
from dataclasses import dataclass

import pytest

from solver.workers import InProcess, Processes, make_executor, visible_gpus


@dataclass
class FakeJob:
    id: str
    sleep: float = 0.0
    action: str = ""  # "" | raise | die | hang


def fake_setup():
    """Runs once in each worker; the handler reports which process (and which pinned GPU) did each job."""
    def handler(job: FakeJob):
        if job.action == "raise":
            raise RuntimeError("CUDA out of memory (fake)")
        if job.action == "die":
            os._exit(7)
        time.sleep(600 if job.action == "hang" else job.sleep)
        return (job.id, os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES"))
    return handler


def failing_setup():
    raise RuntimeError("model file missing (fake)")


def drive(executor, jobs, stop_after=60.0):
    """Run jobs through an executor; returns (results, lost, how many times next_job was asked)."""
    queue, results, lost, asked = list(jobs), [], [], []

    def next_job():
        asked.append(1)
        return queue.pop(0) if queue else None

    executor.run(fake_setup, next_job, results.append, lambda job, why: lost.append((job.id, why)),
                 time.monotonic() + stop_after)
    return results, lost, len(asked)


def test_two_processes_do_each_job_exactly_once_on_pinned_gpus():
    jobs = [FakeJob(f"t{i}", sleep=0.2) for i in range(6)]
    results, lost, _ = drive(Processes(2, gpus=["3", "5"]), jobs)
    assert sorted(r[0] for r in results) == sorted(j.id for j in jobs) and not lost
    pids = {r[1] for r in results}
    assert os.getpid() not in pids
    gpu_of = {}
    for _, pid, gpu in results:  # each worker keeps the one GPU it was pinned to
        assert gpu in {"3", "5"} and gpu_of.setdefault(pid, gpu) == gpu


def test_a_dead_worker_loses_its_job_only():
    jobs = [FakeJob("a", 0.3), FakeJob("die"), FakeJob("b", 0.3), FakeJob("c", 0.3), FakeJob("d", 0.3)]
    jobs[1].action = "die"
    results, lost, _ = drive(Processes(2), jobs)
    assert [j for j, _ in lost] == ["die"] and "died" in lost[0][1]
    assert sorted(r[0] for r in results) == ["a", "b", "c", "d"]


def test_a_dead_worker_is_started_again():
    jobs = [FakeJob("die", action="die"), FakeJob("a"), FakeJob("b")]
    results, lost, _ = drive(Processes(1, restarts=1), jobs)
    assert [j for j, _ in lost] == ["die"] and sorted(r[0] for r in results) == ["a", "b"]
    assert len({r[1] for r in results}) == 1  # both done by the one worker started again
    results, lost, _ = drive(Processes(1, restarts=0), [FakeJob("die", action="die"), FakeJob("a")], stop_after=20)
    assert not results and [j for j, _ in lost] == ["die"]  # "a" was never handed out: the caller still has it


def test_a_raising_handler_loses_the_job_and_the_worker_goes_on():
    jobs = [FakeJob("x", action="raise"), FakeJob("y")]
    results, lost, _ = drive(Processes(1), jobs)
    assert [r[0] for r in results] == ["y"]
    assert lost[0][0] == "x" and "out of memory" in lost[0][1]


def test_stop_at_ends_a_hung_worker():
    results, lost, _ = drive(Processes(1), [FakeJob("hang", action="hang"), FakeJob("never")], stop_after=4.0)
    assert not results and lost[0][0] == "hang" and lost[0][1].startswith("stopped")


def test_every_worker_failing_to_start_is_an_error():
    with pytest.raises(RuntimeError, match="model file missing"):
        Processes(2).run(failing_setup, lambda: None, print, print, time.monotonic() + 30)


def test_in_process_runs_in_order_and_survives_a_raise():
    jobs = [FakeJob("a"), FakeJob("b", action="raise"), FakeJob("c")]
    results, lost, asked = drive(InProcess(), jobs)
    assert [r[0] for r in results] == ["a", "c"] and [r[1] for r in results] == [os.getpid()] * 2
    assert [j for j, _ in lost] == ["b"] and asked == 4


def test_in_process_stops_handing_out_jobs_at_stop_at(fake_clock):
    import solver.workers
    fake_clock.install(solver.workers)
    queue = [FakeJob(f"t{i}", sleep=0.3) for i in range(10)]

    def setup():
        def handler(job):
            fake_clock.sleep(job.sleep)  # each job takes 0.3 s of the fake clock
            return job.id
        return handler
    results = []
    InProcess().run(setup, lambda: queue.pop(0) if queue else None, results.append, print, fake_clock.now + 1.0)
    assert results == ["t0", "t1", "t2", "t3"] and len(queue) == 6  # begun before 1.0 s (the last ends past it)


@pytest.mark.parametrize("env,expected", [("0,1", ["0", "1"]), ("", []), ("-1", []), ("2", ["2"])])
def test_visible_gpus_reads_cuda_visible_devices(monkeypatch, env, expected):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", env)
    assert visible_gpus() == expected


def test_make_executor(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert isinstance(make_executor(0), InProcess)
    assert isinstance(make_executor(2), Processes) and make_executor(2).gpus is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    ex = make_executor(0)
    assert isinstance(ex, Processes) and ex.workers == 2 and ex.gpus == ["4", "6"]
