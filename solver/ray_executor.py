"""The Ray executor: the run's jobs on a Ray cluster, one actor per GPU (or per `cpus_per_actor` CPUs on a CPU-only
cluster). Knows nothing of tasks, models or budgets; offers the same `run` as solver.workers' executors:

    executor.run(setup, next_job, on_result, on_lost, stop_at)

The driver (the caller's process) keeps everything it owns with a local executor: it plans each job (`next_job`) at
the moment an actor is free for it, receives every result (`on_result`) and writes every file. Each actor calls
`setup()` once (it loads the model there) and then handles the jobs it is handed, one at a time. An actor that dies
(killed, out of memory, its node gone) loses its job (`on_lost`, as a dead local worker does) and is started again,
up to `restarts` times per actor slot, while jobs remain; at `stop_at` the jobs still running are reported lost
("stopped: ...") and every actor is killed.

Ray is imported only here, and only when a Ray executor is made: the local executors never import it.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

log = logging.getLogger(__name__)


def _ray():
    try:
        import ray
    except ImportError as e:
        raise ImportError(f"the Ray executor needs ray ({e}); pip install the version pinned in requirements.txt")
    return ray


def connect(address: str = "") -> bool:
    """Join the Ray cluster at `address` ('' : $RAY_ADDRESS, else a new local one; 'auto': the one `ray start` began
    on this machine). Returns True when this call connected (the caller disconnects), False when already connected."""
    ray = _ray()
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address or None, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise RuntimeError(f"cannot join the Ray cluster at '{address or os.environ.get('RAY_ADDRESS', 'local')}': "
                           f"{e} (start one with `ray start --head`, then pass --ray-address HOST:6379)") from e
    return True


def actor_options(cpus_per_actor: float = 1.0) -> tuple[dict, int]:
    """Resources each actor (or row) asks for, and how many fit in the cluster: one per GPU when the cluster has
    GPUs, else one per `cpus_per_actor` CPUs."""
    resources = _ray().cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus > 0:
        return {"num_gpus": 1}, gpus
    if cpus_per_actor <= 0:
        raise ValueError(f"cpus_per_actor must be positive, not {cpus_per_actor}")
    fit = int(resources.get("CPU", 0) // cpus_per_actor)
    if fit < 1:
        raise RuntimeError(f"the Ray cluster has {resources.get('CPU', 0):g} CPUs and no GPU: no actor of "
                           f"{cpus_per_actor:g} CPUs fits (lower run.ray_cpus_per_actor)")
    return {"num_cpus": cpus_per_actor}, fit


class _Actor:
    """One worker on the cluster: the handler built once by `setup`, then one job per call."""

    def __init__(self, setup):
        self.handler = setup()

    def ready(self) -> str:
        return f"pid {os.getpid()} on {socket.gethostname()}"

    def handle(self, job):
        """The job's outcome. A handler's exception that carries an outcome (solver.workers.WorkerBroken: a sticky
        CUDA error; not imported, workers imports this module) gives `_Broken`: the driver records the outcome and
        replaces this actor, whose CUDA context is gone."""
        try:
            return self.handler(job)
        except Exception as e:
            if getattr(e, "outcome", None) is None:
                raise
            return _Broken(e.outcome, str(e))


class _Broken:
    """An actor's answer when its process can run no more jobs: the job's outcome, and why."""

    def __init__(self, outcome, reason: str):
        self.outcome, self.reason = outcome, reason


class RayActors:
    """`workers` actors on the Ray cluster at `address` (0: as many as its GPUs, or its CPUs / cpus_per_actor)."""

    def __init__(self, workers: int = 0, address: str = "", cpus_per_actor: float = 1.0, restarts: int = 1,
                 poll: float = 0.5):
        self.connected = connect(address)
        self.options, fit = actor_options(cpus_per_actor)
        if workers > fit:
            raise RuntimeError(f"{workers} actors asked for, but the Ray cluster fits {fit} of {self.options}")
        self.workers, self.restarts, self.poll = workers or fit, restarts, poll
        log.info("Ray cluster: %d actors of %s", self.workers, self.options)

    def run(self, setup, next_job, on_result, on_lost, stop_at: float) -> None:
        ray = _ray()
        actor_class = ray.remote(max_restarts=0, max_task_retries=0)(_Actor)
        driver = _Driver(lambda: actor_class.options(**self.options).remote(setup), self.workers, self.restarts,
                         next_job, on_result, on_lost)
        try:
            driver.run(stop_at, self.poll)
        finally:
            driver.kill_all()
            if self.connected:
                ray.shutdown()


class _Driver:
    """The driver's side of `RayActors`: one job per ready actor, results in, dead actors noticed and replaced."""

    def __init__(self, start, slots: int, restarts: int, next_job, on_result, on_lost):
        self.start_actor, self.next_job, self.on_result, self.on_lost = start, next_job, on_result, on_lost
        self.actors: dict[int, Any] = {}
        self.pending: dict[Any, tuple[int, Any]] = {}  # object ref -> (slot, its job; None for the readiness call)
        self.restarts = {slot: restarts for slot in range(slots)}
        self.failed: dict[int, str] = {}  # slot -> why its actor's setup failed
        self.exhausted = False
        self.delivered = 0
        for slot in range(slots):
            self._start(slot)

    def _start(self, slot: int) -> None:
        self.actors[slot] = self.start_actor()
        self.pending[self.actors[slot].ready.remote()] = (slot, None)

    def run(self, stop_at: float, poll: float) -> None:
        ray = _ray()
        while self.pending and time.monotonic() < stop_at:
            ready, _ = ray.wait(list(self.pending), num_returns=1,
                                timeout=min(poll, max(0.0, stop_at - time.monotonic())))
            for ref in ready:
                slot, job = self.pending.pop(ref)
                self._finish(ref, slot, job)
        for slot, job in list(self.pending.values()):  # left only when the time is up
            if job is not None:
                self.on_lost(job, "stopped: the run's time was up")
        if len(self.failed) == len(self.restarts) and not self.delivered:
            raise RuntimeError(f"every Ray actor failed to start; first: {self.failed[min(self.failed)]}")

    def _finish(self, ref, slot: int, job) -> None:
        """One call came back: an actor ready, a result, a handler that raised, or an actor gone."""
        ray = _ray()
        try:
            value = ray.get(ref)
        except ray.exceptions.RayError as e:
            if job is None:  # setup raised (or the actor died while loading): no restart, as with a local worker
                self._setup_failed(slot, e)
                return
            if not isinstance(e, ray.exceptions.RayTaskError):  # RayActorError, ActorDiedError, its node lost
                self._died(slot, job, e)
                return
            log.error("job %s raised on actor %d: %s", job.id, slot, _reason(e))
            self.on_lost(job, _reason(e))
        else:
            if job is None:
                log.info("actor %d ready (%s)", slot, value)
            elif isinstance(value, _Broken):
                self.delivered += 1
                self.on_result(value.outcome)
                self._broken(slot, job, value.reason)
                return
            else:
                self.delivered += 1
                self.on_result(value)
        self._feed(slot)

    def _broken(self, slot: int, job, reason: str) -> None:
        """The actor's device is unusable (a sticky error): its job is recorded; it is replaced as a dead one is."""
        log.error("actor %d broken running %s (%s)", slot, job.id, reason)
        self._kill(slot)
        if self.restarts[slot] > 0 and not self.exhausted:
            self.restarts[slot] -= 1
            log.warning("starting actor %d again", slot)
            self._start(slot)

    def _feed(self, slot: int) -> None:
        """One job (planned now) for the actor that just became idle; none left: the actor stays idle."""
        job = None if self.exhausted else self.next_job()
        if job is None:
            self.exhausted = True
            return
        self.pending[self.actors[slot].handle.remote(job)] = (slot, job)

    def _setup_failed(self, slot: int, error) -> None:
        self.failed[slot] = _reason(error)
        log.error("actor %d failed to start: %s", slot, self.failed[slot])
        self._kill(slot)

    def _died(self, slot: int, job, error) -> None:
        reason = f"actor {slot} died ({type(error).__name__}: {_reason(error)})"
        log.error("%s running %s", reason, job.id)
        self._kill(slot)
        self.on_lost(job, reason)
        if self.restarts[slot] > 0 and not self.exhausted:
            self.restarts[slot] -= 1
            log.warning("starting actor %d again", slot)
            self._start(slot)

    def _kill(self, slot: int) -> None:
        actor = self.actors.pop(slot, None)
        if actor is not None:
            _ray().kill(actor, no_restart=True)

    def kill_all(self) -> None:
        for slot in list(self.actors):
            self._kill(slot)


def _reason(error: BaseException) -> str:
    """A Ray error in one line (Ray's messages carry a whole traceback): the handler's own exception, the last line
    of a setup that raised, or the first line of Ray's account of a death."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        text = str(cause).strip()
        return f"{type(cause).__name__}: {text.splitlines()[0] if text else ''}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return lines[-1] if "creation task" in lines[0] else lines[0]
