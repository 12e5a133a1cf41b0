"""The executor: runs jobs on workers and hands their results back. Knows nothing of tasks, models or budgets.

A job is any picklable object with an `id`; `setup()` (picklable, called once in each worker: it loads the model
there) returns a handler that turns a job into a result. Both backends share one interface:

    executor.run(setup, next_job, on_result, on_lost, stop_at)

- `InProcess`: one worker in the caller's process (a CPU machine).
- `Processes`: N spawned worker processes, one per GPU, each pinned with CUDA_VISIBLE_DEVICES before anything in it
  imports torch, all pulling jobs from one shared queue. The parent puts one job in the queue per idle worker, so
  every job is planned (by `next_job`) at the moment a worker is free for it; results come back on a pipe per
  worker and only the parent writes files. A worker that dies loses its job (`on_lost`); the others go on. Workers exit
  on their own when the parent dies, and are terminated at `stop_at`.
Another backend offers the same `run`: solver.ray_executor's Ray actors, made here by `make_executor(kind="ray")`.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import subprocess
import threading
import time
import traceback
from contextlib import contextmanager
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable, Protocol

log = logging.getLogger(__name__)

Handler = Callable[[Any], Any]


class Executor(Protocol):
    def run(self, setup: Callable[[], Handler], next_job: Callable[[], Any | None], on_result: Callable[[Any], None],
            on_lost: Callable[[Any, str], None], stop_at: float) -> None: ...


def visible_gpus() -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES when set, else those `nvidia-smi -L` lists (no torch)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and not g.strip().startswith("-")]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(l for l in out.splitlines() if l.startswith("GPU "))]


class WorkerBroken(Exception):
    """Raised by a job handler whose process can run no more jobs (a sticky CUDA error: every later call fails at
    once). It carries the job's outcome, which is recorded; a worker process then exits (BROKEN_EXIT) to be started
    afresh instead of draining the queue into fallbacks."""

    def __init__(self, outcome, reason: str):
        super().__init__(reason)
        self.outcome = outcome


BROKEN_EXIT = 75


class InProcess:
    """One worker: the caller's own process. `stop_at` is checked between jobs (a job obeys its own deadline)."""

    def run(self, setup, next_job, on_result, on_lost, stop_at: float) -> None:
        handler = setup()
        while time.monotonic() < stop_at:
            job = next_job()
            if job is None:
                return
            try:
                result = handler(job)
            except WorkerBroken as e:  # nothing to restart in-process: record it, and later jobs will say so too
                log.error("job %s: %s; this process cannot start afresh", getattr(job, "id", job), e)
                result = e.outcome
            except Exception as e:  # a handler should not raise; if it does, the job is lost and the run goes on
                log.error("job %s raised: %s", getattr(job, "id", job), e)
                on_lost(job, f"{type(e).__name__}: {e}")
                continue
            on_result(result)


def _watch_parent(parent_pid: int) -> None:
    """Exit this worker as soon as its parent is gone (killed): nobody is left to read its results."""
    while True:
        if os.getppid() != parent_pid:
            os._exit(0)
        time.sleep(1.0)


def _worker_main(wid: int, gpu: str | None, setup, jobs, conn, parent_pid: int) -> None:
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    try:
        handler = setup()
    except Exception as e:
        conn.send(("failed", f"setup failed: {type(e).__name__}: {e}\n{traceback.format_exc()}"))
        return
    conn.send(("ready", None))
    while True:
        job = jobs.get()
        if job is None:
            return
        conn.send(("start", job.id))  # synchronous: the parent knows which job a worker held if it dies next
        try:
            conn.send(("done", handler(job)))
        except WorkerBroken as e:
            conn.send(("done", e.outcome))
            os._exit(BROKEN_EXIT)  # started again by the parent, with a fresh CUDA context
        except Exception as e:
            conn.send(("error", f"{type(e).__name__}: {e}"))


@contextmanager
def _pinned(gpu: str | None):
    """CUDA_VISIBLE_DEVICES=gpu in this process's environment for the duration (nothing when gpu is None)."""
    if gpu is None:
        yield
        return
    old = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    try:
        yield
    finally:
        if old is None:
            del os.environ["CUDA_VISIBLE_DEVICES"]
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = old


class Processes:
    """`workers` spawned processes; `gpus[i]` (when given) is pinned in worker i with CUDA_VISIBLE_DEVICES.

    A worker that dies (not one whose setup failed) is started again, up to `restarts` times per worker slot, while
    jobs remain: a crashed CUDA context is lost with its process, the GPU is not.
    """

    def __init__(self, workers: int, gpus: list[str] | None = None, poll: float = 0.5, restarts: int = 1):
        if workers < 1:
            raise ValueError("Processes needs at least one worker")
        self.workers, self.gpus, self.poll, self.restarts = workers, gpus, poll, restarts

    def run(self, setup, next_job, on_result, on_lost, stop_at: float) -> None:
        ctx = mp.get_context("spawn")  # CUDA cannot be forked; spawned workers also never inherit the parent's imports
        jobs = ctx.Queue()

        def start(wid: int):
            gpu = self.gpus[wid] if self.gpus else None
            receive, send = ctx.Pipe(duplex=False)  # one pipe per worker: messages arrive in order, unbuffered
            proc = ctx.Process(target=_worker_main, args=(wid, gpu, setup, jobs, send, os.getpid()),
                               name=f"solver-worker-{wid}", daemon=True)
            with _pinned(gpu):  # in the child's environment from its first instruction
                proc.start()
            send.close()
            return proc, receive

        loop = _Loop(start, range(self.workers), self.restarts, jobs, next_job, on_result, on_lost)
        procs = loop.procs
        try:
            loop.run(stop_at, self.poll)
        finally:
            for p in procs.values():
                if p.is_alive():
                    p.terminate()
            for p in procs.values():
                p.join(timeout=5)
                if p.is_alive():
                    p.kill()
                    p.join(timeout=5)
            jobs.cancel_join_thread()
            jobs.close()


class _Loop:
    """The parent's side of `Processes`: feed one job per idle worker, route messages, notice dead workers."""

    def __init__(self, start, wids, restarts: int, jobs, next_job, on_result, on_lost):
        self.start, self.jobs = start, jobs
        self.procs, self.conns = {}, {}
        for wid in wids:
            self.procs[wid], self.conns[wid] = start(wid)
        self.restarts = {wid: restarts for wid in self.procs}
        self.next_job, self.on_result, self.on_lost = next_job, on_result, on_lost
        self.queued: dict[str, Any] = {}   # jobs in the shared queue that no worker has started yet, by id
        self.running: dict[int, Any] = {}  # worker id -> its job
        self.alive = set(self.procs)
        self.failed: list[str] = []
        self.exhausted = False

    def run(self, stop_at: float, poll: float) -> None:
        # A worker that dies between taking a job from the queue and announcing it leaves that job in `queued`:
        # the loop then waits for `stop_at` and reports the job lost there; the run still ends in time.
        while self.alive and time.monotonic() < stop_at:
            if self.exhausted and not self.running and not self.queued:
                break
            waiting = {self.conns[w]: w for w in self.alive} | {self.procs[w].sentinel: w for w in self.alive}
            for ready in wait(list(waiting), timeout=min(poll, max(0.0, stop_at - time.monotonic()))):
                wid = waiting[ready]
                if wid in self.alive:
                    self._drain(wid)
        stopped = time.monotonic() >= stop_at
        for job in list(self.running.values()) + list(self.queued.values()):
            self.on_lost(job, "stopped: the run's time was up" if stopped else "no worker left")
        if len(self.failed) == len(self.procs):
            raise RuntimeError(f"every worker failed to start; first: {self.failed[0]}")

    def _drain(self, wid: int) -> None:
        """Handle every message waiting from a worker; then, if it has exited, its death."""
        conn = self.conns[wid]
        try:
            while conn.poll():
                self._message(wid, *conn.recv())
        except (EOFError, OSError):
            pass
        if not self.procs[wid].is_alive() and wid in self.alive:
            self.procs[wid].join(timeout=1)
            self.alive.discard(wid)
            code = self.procs[wid].exitcode
            if code != 0:
                log.error("worker %d died (exit code %s)%s", wid, code,
                          "" if wid not in self.running else f" running {self.running[wid].id}")
            if wid in self.running:
                self.on_lost(self.running.pop(wid), f"worker {wid} died (exit code {code})")
            if code != 0 and self.restarts[wid] > 0 and not self.exhausted:
                self.restarts[wid] -= 1
                log.warning("starting worker %d again", wid)
                self.procs[wid], self.conns[wid] = self.start(wid)
                self.alive.add(wid)
            if not self.alive:
                for job in self.queued.values():
                    self.on_lost(job, "no worker left")
                self.queued.clear()

    def _message(self, wid: int, kind: str, payload) -> None:
        if kind == "ready":
            if len(self.queued) < len(self.alive) - len(self.running):  # not when a job already waits for it
                self._feed()  # (a worker started again finds the one fed when its predecessor finished)
        elif kind == "start":
            self.running[wid] = self.queued.pop(payload)
        elif kind == "done":
            self.running.pop(wid, None)
            self.on_result(payload)
            self._feed()
        elif kind == "error":
            self.on_lost(self.running.pop(wid), payload)
            self._feed()
        elif kind == "failed":
            log.error("worker %d: %s", wid, payload)
            self.failed.append(payload.splitlines()[0])

    def _feed(self) -> None:
        """One job (planned now) for the worker that just became idle, or a stop sign."""
        job = None if self.exhausted else self.next_job()
        if job is None:
            self.exhausted = True
            self.jobs.put(None)
        else:
            self.queued[job.id] = job
            self.jobs.put(job)


EXECUTORS = ("local", "ray")


def make_executor(workers: int = 0, kind: str = "local", **options) -> Executor:
    """kind local: workers=0, one process per visible GPU, or in-process on a CPU machine; N>0: N processes. kind
    ray: Ray actors (solver.ray_executor, with `options` address and cpus_per_actor; workers=0: one per GPU of the
    cluster)."""
    if kind not in EXECUTORS:
        raise ValueError(f"unknown executor '{kind}' (choose from {', '.join(EXECUTORS)})")
    if kind == "ray":
        from solver.ray_executor import RayActors  # imported only here: the local executors never import ray
        return RayActors(workers, **options)
    gpus = visible_gpus()
    if workers == 0:
        return Processes(len(gpus), gpus) if gpus else InProcess()
    return Processes(workers, [gpus[i % len(gpus)] for i in range(workers)] if gpus else None)


def process_start() -> float:
    """The `time.monotonic()` value when this process started (interpreter start-up counts against the budget)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        return time.monotonic() - min(max(age, 0.0), 60.0)
    except (OSError, ValueError, IndexError, AttributeError):
        return time.monotonic()


def spawn_pool(workers: int):
    """A pool of `workers` spawned processes, each logging as the parent does (files.setup_logging)."""
    from concurrent.futures import ProcessPoolExecutor
    from solver.files import setup_logging
    return ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=setup_logging)

