"""The solver run: a whole task set inside a fixed time budget, never losing work.

Owns the run's plan and its state: which tasks are pending, in flight and done; each task's time share and level
(with solver.budget's rules), measured speeds fed back; the submission's life (fallback attempts written first,
rewritten atomically after every task), resuming from the work directory, faults (a task that raises is retried once
at a smaller level, then gets fallback attempts), the watchdog that keeps the budget, and the glue between the
executor (solver.workers) and a per-task solve function.

Knows nothing of how a task is solved: that is `solve(task, cfg, deadlines) -> TaskResult` (solver.results), made once
per worker by a factory named in cfg.run.solver ("module:function", called as `factory(cfg)`); the default is
solver.pipeline:pipeline. Model code, and so torch and Unsloth, is imported only where the factory runs: inside the
workers. The results file is solver.results', the report solver.report's, the command line solver.cli's.
"""
from __future__ import annotations

import importlib
import json
import logging
import math
import os
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Callable

from solver import budget as B
from solver.codec import Codec
from solver.config import Config
from solver.files import setup_logging, stale_temporaries
from solver.report import write_report
from solver.results import (RESULTS, Deadlines, Job, Outcome, TaskResult, TaskStats, _json_pairs, append_result,
                            fallback_outcome, read_results)
from solver.submission import complete_attempts, write_submission
from solver.tasks import Task
from solver.workers import make_executor

log = logging.getLogger(__name__)

CONFIG = "config.json"


# ---------------------------------------------------------------------------------------------------------------
# Sizes, work and levels: the one place that turns config fields into the planner's numbers and back

def task_size(task: Task, codec: Codec) -> B.TaskSize:
    """Token counts of a task's training sequence, decoding prompt and expected output."""
    if not task.valid or not task.train:
        return B.TaskSize(0, 0, 0, task.num_tests)
    *context, (qi, qo) = task.train
    out = max(b.shape[0] * (b.shape[1] + 1) + 1 for _, b in task.train)
    prompt = max((codec.num_tokens(task.train, q) for q in task.test_inputs), default=0)
    return B.TaskSize(codec.num_tokens(context, qi, qo), prompt, out, task.num_tests)


def ttt_examples(task: Task, cfg: Config) -> int:
    """Training sequences TTT builds for a task (before de-duplication): demos x transforms, capped."""
    k = len(task.train)
    n = k * (cfg.ttt.num_transforms if cfg.ttt.augment else 1)
    return max(0, min(cfg.ttt.max_examples, n))


def full_work(task: Task, cfg: Config) -> B.Work:
    """The work a task does at Level.FULL under `cfg`."""
    steps = 0
    if cfg.ttt.enabled and not cfg.ttt.shared_adapter:
        steps = math.ceil(ttt_examples(task, cfg) / max(1, cfg.ttt.batch_size)) * cfg.ttt.epochs
    return B.Work(steps, cfg.ttt.batch_size, cfg.infer.num_views, cfg.ttt.shared_adapter)


def rates(cfg: Config) -> B.Rates:
    r = cfg.run
    return B.Rates(r.train_tokens_per_s, r.prefill_tokens_per_s, r.decode_tokens_per_s, r.task_overhead_s)


def config_at(cfg: Config, level: B.Level, task: Task) -> Config:
    """The config a task runs with at `level` (see budget.Level for the ladder)."""
    r = cfg.run
    if level in (B.Level.FULL, B.Level.FALLBACK):
        return cfg
    views = min(cfg.infer.num_views, max(1, r.min_views))
    ttt = {"max_examples": max(cfg.ttt.batch_size, int(ttt_examples(task, cfg) * r.steps_factor))}
    infer = {}
    if level >= B.Level.FEWER_VIEWS:
        infer = {"num_views": views, "score_views": min(cfg.infer.score_views, views)}
    if level == B.Level.SHARED_ADAPTER:
        ttt = {"shared_adapter": True}
    if level == B.Level.NO_TTT:
        ttt = {"enabled": False}
    return cfg.override(ttt=ttt, infer=infer)


# ---------------------------------------------------------------------------------------------------------------
# Inside a worker: the solve function, faults and retries

def import_object(spec: str):
    """The object named 'package.module:attribute'."""
    module, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"'{spec}' is not 'module:function'")
    return getattr(importlib.import_module(module), attr)


def make_handler(solver_spec: str, cfg: dict, worker: str = "") -> Callable[[Job], Outcome]:
    """Build the solve function once (in the worker: loads the model) and return the job handler."""
    t0 = time.monotonic()
    setup_logging()  # a spawned worker: log lines as the parent does
    worker = worker or f"pid{os.getpid()}"
    solve = import_object(solver_spec)(Config.from_dict(cfg))
    log.info("worker %s ready in %.1fs (%s)", worker, time.monotonic() - t0, solver_spec)
    return partial(handle_job, solve, worker)


def _free_memory() -> None:
    """Give back what a failed attempt held on the GPU (CUDA out of memory); nothing without torch loaded."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def handle_job(solve, worker: str, job: Job) -> Outcome:
    """Solve one task; a raise is retried once at `job.retry_level`, then the task gets its fallback attempts."""
    t0 = time.monotonic()
    try:
        return _outcome(job, solve(job.task, Config.from_dict(job.cfg), job.deadlines), "ok", job.level, t0, worker)
    except Exception as e:
        first = f"{type(e).__name__}: {e}"
    _free_memory()
    if job.retry_cfg is None:
        log.error("task %s raised (%s): fallback attempts", job.id, first)
        return fallback_outcome(job.task, "failed", job.level, first, time.monotonic() - t0, worker)
    log.warning("task %s raised at level %s: %s; retrying at level %s", job.id, B.Level(job.level).name, first,
                B.Level(job.retry_level).name)
    now = time.monotonic()
    deadlines = Deadlines(now + job.retry_ttt_fraction * max(0.0, job.deadlines.end - now), job.deadlines.end)
    try:
        result = solve(job.task, Config.from_dict(job.retry_cfg), deadlines)
        out = _outcome(job, result, "retried", job.retry_level, t0, worker)
        out.error = first
        return out
    except Exception as e:
        _free_memory()
        second = f"{type(e).__name__}: {e}"
        log.error("task %s raised again (%s): fallback attempts", job.id, second)
        return fallback_outcome(job.task, "failed", job.retry_level, f"{first} | retry: {second}",
                                time.monotonic() - t0, worker)


def _outcome(job: Job, result: TaskResult, status: str, level: int, t0: float, worker: str) -> Outcome:
    found = [p for p in result.attempts[:job.task.num_tests] if p is not None]
    pairs = complete_attempts(job.task, result.attempts)
    stats = {f.name: getattr(result, f.name) for f in fields(TaskStats)}
    return Outcome(id=job.id, status=status, level=level, attempts=_json_pairs(pairs), found=len(found),
                   seconds=time.monotonic() - t0, worker=worker, **stats)


# ---------------------------------------------------------------------------------------------------------------
# The run (in the parent)

@dataclass
class _Plan:
    size: B.TaskSize
    full: B.Work
    needs: dict = field(default_factory=dict)  # Level -> estimated seconds


class Run:
    """The parent's state: what is pending, in flight and done; it plans each job and records each outcome."""

    error = ""

    def __init__(self, tasks: dict[str, Task], cfg: Config, out: Path, workdir: Path, start: float, budget: float,
                 workers: int, solutions: bool):
        self.tasks, self.cfg, self.out, self.workdir = tasks, cfg, out, workdir
        self.start, self.budget, self.workers = start, budget, workers
        margin = min(budget / 3, max(cfg.run.safety_margin_s, cfg.run.safety_fraction * budget))
        self.end = start + budget - margin               # no task deadline beyond this
        self.stop_at = start + budget - 0.6 * margin     # workers still running are stopped here
        self.hard_stop = start + budget - 0.4 * margin   # an in-process run still stuck in a task exits here
        self.rates = rates(cfg)
        self.shared_adapter = bool(cfg.run.shared_adapter)  # without one, the ladder skips that level
        self.codec = Codec.compact()
        self.outcomes: dict[str, Outcome] = {}
        self.in_flight: dict[str, tuple[float, float]] = {}  # id -> (deadline, estimated seconds)
        self.skipped: dict[str, str] = {}
        self.solutions = solutions
        self.lock = threading.Lock()
        self.pbar = None
        self.finished = threading.Event()  # set when run_tasks is done: the watchdog stands down
        self.plans = {tid: self._plan(t) for tid, t in tasks.items()}
        self.pending: list[str] = []

    # planning -----------------------------------------------------------------------------------------------------
    def _plan(self, task: Task) -> _Plan:
        p = _Plan(task_size(task, self.codec), full_work(task, self.cfg))
        self._estimate(p)
        return p

    def _estimate(self, p: _Plan) -> None:
        r = self.cfg.run
        p.needs = {lv: B.total_seconds(p.size, B.work_at(lv, p.full, r.steps_factor, r.min_views), self.rates)
                   for lv in B.Level if lv != B.Level.FALLBACK
                   and (lv != B.Level.SHARED_ADAPTER or self.shared_adapter)}

    def next_job(self) -> Job | None:
        """Plan the next task now (clock, pending set, measured speed) and hand it out; None when done."""
        with self.lock:
            r = self.cfg.run
            while self.pending:
                now = time.monotonic()
                remaining = self.end - now
                if remaining < r.min_task_seconds:
                    return None
                committed = sum(max(0.0, d - now) for d, _ in self.in_flight.values())
                self._reorder(remaining, committed)
                tid0 = self.pending[0]
                totals = {lv: sum(self.plans[t].needs[lv] for t in self.pending) for lv in self.plans[tid0].needs}
                tid = self.pending.pop(0)
                p = self.plans[tid]
                share = B.plan_share(p.needs, totals, remaining, self.workers, committed,
                                     cap=r.max_task_seconds or math.inf, headroom=r.headroom,
                                     floor=r.min_task_seconds)
                level = B.choose_level(p.size, p.full, self.rates, share, min_seconds=r.min_task_seconds,
                                       shared_adapter=self.shared_adapter, steps_factor=r.steps_factor,
                                       min_views=r.min_views)
                if level == B.Level.FALLBACK:
                    self._skip(tid, f"no time: a share of {share:.1f}s (minimum {r.min_task_seconds:g}s)")
                    continue
                self.in_flight[tid] = (now + share, p.needs[level])
                return self._job(tid, level, now, share)
            return None

    def _reorder(self, remaining: float, committed: float) -> None:
        """Pending tasks in the order they should start now (see budget.order_tasks)."""
        order = self.cfg.run.order
        if order == "given":
            return
        full = {t: self.plans[t].needs[B.Level.FULL] for t in self.pending}
        tight = B.pressure(list(full.values()), remaining, self.workers, committed) > 1
        self.pending = B.order_tasks(full, tight if order == "auto" else order == "cheapest")

    def _job(self, tid: str, level: B.Level, now: float, share: float) -> Job:
        task, p, r = self.tasks[tid], self.plans[tid], self.cfg.run
        ttt, pred = B.estimate_seconds(p.size, B.work_at(level, p.full, r.steps_factor, r.min_views), self.rates)
        deadlines = Deadlines(*B.stage_deadlines(now, share, ttt, pred))
        retry = B.retry_level(level)
        rt, rp = B.estimate_seconds(p.size, B.work_at(retry, p.full, r.steps_factor, r.min_views), self.rates)
        log.debug("task %s: level %s, share %.1fs (TTT until +%.1fs)", tid, level.name, share, deadlines.ttt - now)
        retry_cfg = config_at(self.cfg, retry, task).to_dict() if r.retry else None
        return Job(tid, task, int(level), config_at(self.cfg, level, task).to_dict(), deadlines, int(retry),
                   retry_cfg, rt / (rt + rp) if rt + rp > 0 else 0.0)

    # recording ----------------------------------------------------------------------------------------------------
    def on_result(self, outcome: Outcome) -> None:
        with self.lock:
            deadline, _ = self.in_flight.pop(outcome.id, (0.0, 0.0))
            if outcome.status == "ok":
                # Measured speed, from the work actually done. A task its deadline cut short only says "slower".
                p = self.plans[outcome.id]
                estimate = B.total_seconds(p.size, B.Work(outcome.ttt_steps, p.full.batch_size, outcome.views),
                                           self.rates)
                if time.monotonic() < deadline - 0.5 or outcome.seconds > estimate:
                    self.rates = B.update_correction(self.rates, estimate, outcome.seconds)
                    for q in self.plans.values():
                        self._estimate(q)
            self._record(outcome)

    def on_lost(self, job: Job, reason: str) -> None:
        with self.lock:
            self.in_flight.pop(job.id, None)
            if reason.startswith("stopped"):
                self._skip(job.id, reason)  # cut off by the end of the run: a resumed run may try it again
                return
            log.error("task %s lost: %s", job.id, reason)
            self._record(fallback_outcome(self.tasks[job.id], "lost", job.level, reason))

    def _record(self, o: Outcome) -> None:
        append_result(self.workdir / RESULTS, o)
        self.outcomes[o.id] = o
        self.write_submission()
        log.info("task %s: %s level=%s ttt_steps=%d candidates=%d time=%.1fs attempts found %d/%d%s%s", o.id,
                 o.status, B.Level(o.level).name, o.ttt_steps, o.candidates, o.seconds, o.found,
                 self.tasks[o.id].num_tests, f" adapter from {o.adapter_from}" if o.adapter_from else "",
                 f" error: {o.error}" if o.error else "")
        self._tick()

    def _skip(self, tid: str, reason: str) -> None:
        self.skipped[tid] = reason
        log.info("task %s: fallback attempts (%s)", tid, reason)
        self._tick()

    def _tick(self) -> None:
        if self.pbar is not None:
            self.pbar.update(1)
            self.pbar.set_postfix_str(f"budget left {B.format_seconds(self.end - time.monotonic())}")

    def write_submission(self) -> None:
        write_submission(self.out, self.tasks, {tid: o.grids() for tid, o in self.outcomes.items()})


def run_tasks(tasks: dict[str, Task], cfg: Config, out: str | Path, workdir: str | Path, *,
              start: float | None = None, progress: bool = True) -> dict:
    """Run a task set within cfg.run.budget; returns the summary also written to report.json."""
    start = time.monotonic() if start is None else start
    budget = B.parse_duration(cfg.run.budget)
    out, workdir = Path(out), Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for tmp in stale_temporaries(workdir) + stale_temporaries(out.parent, out.name):
        tmp.unlink(missing_ok=True)  # left by a killed run mid-write
    if cfg.run.reuse_adapters and not cfg.run.reuse_dir:  # adapters kept for reuse live in the run's folder
        cfg = cfg.override(run={"reuse_dir": str(workdir / "adapters")})
    resumed = {tid: o for tid, o in read_results(workdir / RESULTS).items() if tid in tasks}
    # a complete submission (fallbacks + what a previous run finished) before anything else
    write_submission(out, tasks, {tid: o.grids() for tid, o in resumed.items()})
    _warn_if_config_changed(workdir / CONFIG, cfg, bool(resumed))
    cfg.save(workdir / CONFIG)
    executor = make_executor(cfg.run.workers)
    workers = getattr(executor, "workers", 1)
    solutions = bool(tasks) and all(t.test_outputs is not None for t in tasks.values() if t.valid)
    if solutions:
        import solver.score  # noqa: F401  (pandas: imported now, not in the last seconds of the budget)
    run = Run(tasks, cfg, out, workdir, start, budget, workers, solutions)
    run.outcomes.update(resumed)
    if resumed:
        log.info("resuming in %s: %d of %d tasks already done", workdir, len(resumed), len(tasks))
    for tid, task in tasks.items():
        if tid not in resumed and not task.valid:
            run._record(fallback_outcome(task, "invalid", int(B.Level.FALLBACK), task.problem or ""))
    run.pending = [tid for tid, t in tasks.items() if t.valid and tid not in run.outcomes]
    log.info("run: %d tasks (%d to do), budget %s, %d worker(s) (%s), tasks end by +%s", len(tasks),
             len(run.pending), B.format_seconds(budget), workers, type(executor).__name__,
             B.format_seconds(run.end - start))

    watchdog = threading.Thread(target=_watchdog, args=(run,), daemon=True)
    watchdog.start()
    setup = partial(make_handler, cfg.run.solver, cfg.to_dict(), "main" if type(executor).__name__ == "InProcess"
                    else "")
    with _progress(run, len(tasks), progress):
        try:
            executor.run(setup, run.next_job, run.on_result, run.on_lost, run.stop_at)
        except Exception as e:  # e.g. the model failed to load: the fallback submission stands, the report says why
            log.error("run stopped: %s: %s", type(e).__name__, e)
            run.error = f"{type(e).__name__}: {e}"
    with run.lock:
        run.finished.set()
        for tid in run.pending:
            run.skipped.setdefault(tid, f"not started: {run.error or 'time was up'}")
        run.write_submission()
        return write_report(run)


def _warn_if_config_changed(path: Path, cfg: Config, resuming: bool) -> None:
    """Resuming keeps the finished tasks' attempts: say so when they were made under other settings."""
    if not resuming or not path.exists():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return
    new = cfg.to_dict()
    changed = [f"{s}.{k}" for s in new for k in new[s] if s in old and old[s].get(k) != new[s][k]
               and (s, k) != ("run", "budget")]
    if changed:
        log.warning("resuming with settings that differ from the previous run's (%s); its finished tasks are kept",
                    ", ".join(changed[:8]))


class _progress:
    """A tqdm bar over tasks (and log lines routed around it) for the life of the run."""

    def __init__(self, run: Run, total: int, enabled: bool):
        self.run, self.total, self.enabled = run, total, enabled

    def __enter__(self):
        if not self.enabled:
            self.ctx = nullcontext()
            return self
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm
        self.ctx = logging_redirect_tqdm()
        self.ctx.__enter__()
        self.run.pbar = tqdm(total=self.total, initial=len(self.run.outcomes), unit="task", dynamic_ncols=True)
        return self

    def __exit__(self, *exc):
        if self.run.pbar is not None:
            self.run.pbar.close()
            self.run.pbar = None
        self.ctx.__exit__(*exc)
        return False


HARD_STOP_EXIT = 3  # exit status of a run the watchdog ended (its submission on disk is complete)


def _watchdog(run: Run) -> None:
    """Last resort at the hard stop: a task stuck past every deadline in this process must not overrun the budget.
    The submission on disk is complete at every moment; write the report and leave with HARD_STOP_EXIT."""
    if run.finished.wait(max(0.0, run.hard_stop - time.monotonic())):
        return
    if not run.lock.acquire(timeout=max(0.1, run.start + run.budget - time.monotonic() - 1)):
        os._exit(HARD_STOP_EXIT)
    if run.finished.is_set():  # the run ended while we waited for the lock
        run.lock.release()
        return
    log.error("hard stop: the budget is spent with a task still running; exiting with the submission on disk")
    try:
        for tid in run.pending:
            run.skipped.setdefault(tid, "not started: time was up")
        write_report(run, printing=False)
    finally:
        logging.shutdown()
        os._exit(HARD_STOP_EXIT)
