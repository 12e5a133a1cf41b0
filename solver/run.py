"""The solver run, in the parent: a whole task set inside a fixed time budget, never losing work.

It plans, dispatches, records and writes the submission: which tasks are pending, in flight and done; each task's
time share and deadline (solver.budget's rules), with the speeds the outcomes measured; the search pass of the
sources that run ahead of the model (solver.search_pass); the submission's life (fallback attempts written first,
rewritten atomically after every task), resuming from the work directory, a task whose worker died handed out once
more, and the watchdog that keeps the budget. What a worker does to a task (fit, calibrate, search, train, predict,
retry) is solver.pipeline's: `make_handler` builds the solve function there, the package's Solver or the factory
cfg.run.solver names. The executor is solver.workers', the results file solver.results', the report solver.report's
(handed a RunSummary), the command line solver.cli's.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from solver import budget as B
from solver.codec import Codec
from solver.config import MODEL, Config, changed_settings
from solver.files import stale_temporaries
from solver.pipeline import FIRST, make_handler
from solver.plan import full_work, preset_rates, task_size
from solver.report import RunSummary, write_report
from solver.results import RESULTS, Job, TaskResult, append_result, fallback_result, read_results
from solver.search_pass import (append_record, pass_beside, pass_end, pass_workers, read_records, resolve_mode,
                                run_pass_logged, solved)
from solver.source_registry import runs_ahead, source_names
from solver.submission import write_submission
from solver.tasks import Task
from solver.workers import make_executor, visible_gpus

log = logging.getLogger(__name__)

CONFIG = "config.json"


# ---------------------------------------------------------------------------------------------------------------
# The run (in the parent)

@dataclass
class _Plan:
    size: B.TaskSize
    full: B.Work
    need: B.Need | None = None  # estimated seconds at the current speeds


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
        self.rates = preset_rates(cfg)
        self.shared_adapter = bool(cfg.run.shared_adapter)  # without one, no task falls back to it
        self.codec = Codec.compact()
        self.outcomes: dict[str, TaskResult] = {}  # finished tasks (solver.results.finish)
        self.in_flight: dict[str, float] = {}  # id -> deadline
        self.skipped: dict[str, str] = {}
        self.requeued: set[str] = set()  # tasks whose worker died once: a second loss gives fallback attempts
        self.deferred: dict[str, TaskResult] = {}  # tasks handed back once, unsolved (TaskResult.deferred): not again
        self.load_problems: list[str] = []
        self.solutions = solutions
        self.lock = threading.Lock()
        self.pbar = None
        self.finished = threading.Event()  # set when run_tasks is done: the watchdog stands down
        self.searched: dict[str, TaskResult] = {}  # the search pass's results (solver.search_pass)
        self.search_open = False  # the pass runs beside the model: a task without a record is not started yet
        # the package's solver with the model as a source: a share too short for one view is not handed out
        self.model_answers = not cfg.run.solver and MODEL in source_names(cfg)
        # each worker's first task times its speeds (solver.pipeline.calibrate): the time for that comes on top
        self.uncalibrated = workers if self.model_answers and cfg.run.calibrate else 0
        self.plans = {tid: _Plan(task_size(t, self.codec, cfg.ttt.max_tokens), full_work(t, cfg))
                      for tid, t in tasks.items()}
        self._estimate()
        self.pending: list[str] = []

    # planning -----------------------------------------------------------------------------------------------------
    def _estimate(self) -> None:
        """Every task's need at the current speeds (its floor the share in which its worker's fit trains one step:
        run.room included); a task the search solved needs run.solved_share of it, and is planned after the others
        with the time they leave (budget.Need.answered)."""
        r = self.cfg.run
        for tid, p in self.plans.items():
            done = tid in self.searched and solved(self.searched[tid])
            p.need = B.task_need(p.size, p.full, self.rates, r.min_views, r.room, r.solved_share if done else 1.0,
                                 done)

    def next_job(self) -> Job | None:
        """Plan the next task now (clock, pending set, measured speed) and hand it out; None when done. While the
        search pass runs beside the model, only tasks it has searched are handed out (waiting for one if need be)."""
        while True:
            with self.lock:
                job, waiting = self._next_job()
            if job is not None or not waiting:
                return job
            time.sleep(0.2)

    def _next_job(self) -> tuple[Job | None, bool]:
        """(the next job or None, whether a pending task waits for its search)."""
        r = self.cfg.run
        while self.pending:
            now = time.monotonic()
            remaining = self.end - now
            if remaining < r.min_task_seconds:
                return None, False
            busy = [max(0.0, d - now) for d in self.in_flight.values()]
            self._reorder(remaining, sum(busy))
            needs = [self.plans[t].need for t in self.pending]
            ready = [i for i, t in enumerate(self.pending) if not self.search_open or t in self.searched]
            if not ready:
                return None, True
            # a share shorter than one view decodes nothing: with the model, one view is the least worth starting
            one_view = lambda i: B.predict_seconds(self.plans[self.pending[i]].size, 1, self.rates) \
                if self.model_answers else 0.0
            pick, share = B.plan_next(needs, ready, remaining, self.workers, busy, cap=r.max_task_seconds or math.inf,
                                      headroom=r.headroom, floor=r.min_task_seconds, least=one_view)
            least = one_view(pick)
            tid = self.pending.pop(pick)
            if share < r.min_task_seconds:
                self._skip(tid, f"no time: a share of {share:.1f}s (minimum {r.min_task_seconds:g}s)")
                continue
            if share < least:  # it would decode nothing: its time goes to the others
                self._skip(tid, f"no time for one view: a share of {share:.0f}s, one view needs about "
                                f"{least:.0f}s at the speeds measured")
                continue
            calibration = 0.0
            if self.uncalibrated:
                self.uncalibrated -= 1
                calibration = min(max(0.0, remaining - share), B.calibration_seconds(
                    self.plans[tid].size, self.rates, self.codec.answer_length(*B.CALIBRATION_SHAPE)))
            self.in_flight[tid] = now + calibration + share
            return self._job(tid, now, share, calibration), False
        return None, False

    def _reorder(self, remaining: float, committed: float) -> None:
        """Pending tasks in the order they should start now (budget.start_order)."""
        self.pending = B.start_order({t: self.plans[t].need for t in self.pending}, remaining, self.workers,
                                     committed, self.cfg.run.order)

    def _job(self, tid: str, now: float, share: float, calibration: float = 0.0) -> Job:
        """The task with its share: the run's full config, the end of its share (a worker's first task has
        `calibration` seconds before it) and, for the package's solver, the run's speeds. The worker fits the work
        to that time with them (solver.plan.fit_to_share; a calibrating task with what it timed), and builds its
        retry itself (solver.pipeline)."""
        now += calibration
        deadlines = B.Deadlines(now + share, now + share, calibration=now if calibration else 0.0)
        log.debug("task %s: share %.1fs%s", tid, share,
                  f" after {calibration:.1f}s of calibration" if calibration else "")
        return Job(tid, self.tasks[tid], self.cfg.to_dict(), deadlines, bool(self.cfg.run.retry), self._known(tid),
                   self.rates if self.model_answers else None, self.model_answers and tid not in self.deferred)

    # the search pass ----------------------------------------------------------------------------------------------
    def on_searched(self, record: TaskResult) -> None:
        """A task's search: kept in search.jsonl, its attempts in the submission until the model's replace them."""
        with self.lock:
            append_record(self.workdir, record)
            self._searched(record)
            self.write_submission()

    def pass_ended(self) -> None:
        """The pass beside the model ended (however): a pending task no longer waits for its record."""
        with self.lock:
            self.search_open = False

    def _searched(self, record: TaskResult) -> None:
        """Plan with a task's search: a solved task needs less of the model (run.solved_share), none at 0; without
        the model as a source the search's attempts are the task's."""
        self.searched[record.id] = record
        self._estimate()
        if record.id not in self.pending:
            return
        if MODEL not in source_names(self.cfg):
            self.pending.remove(record.id)
            self._search_only(record.id, "")
        elif solved(record) and self.cfg.run.solved_share <= 0:
            self.pending.remove(record.id)
            self._search_only(record.id, "solved by the search: no model time (run.solved_share 0)")

    def _known(self, tid: str) -> list | None:
        """The search pass's tables for a task's job (None: not searched; the worker's own sources run)."""
        record = self.searched.get(tid)
        if record is None:
            return None
        return record.tables if len(record.tables) == self.tasks[tid].num_tests else \
            [[] for _ in range(self.tasks[tid].num_tests)]

    def _search_only(self, tid: str, note: str) -> None:
        """The task's search attempts as its outcome (kept in search.jsonl only: a resumed run may still give the
        task to the model)."""
        r = self.searched[tid]
        self.outcomes[tid] = replace(r, note=note)  # the pass's own result: level SEARCH_ONLY
        log.info("task %s: search only, attempts found %d/%d%s", tid, r.found, self.tasks[tid].num_tests,
                 f" ({note})" if note else "")
        self._tick()

    def _with_search(self, o: TaskResult) -> TaskResult:
        """A model's result with the search pass's statistics, and the search's attempts where the model's job
        failed or was lost (never the fallback over a program's answer)."""
        r = self.searched.get(o.id)
        if r is None:
            return o
        o = replace(o, source_seconds=r.source_seconds, fits=r.fits, source_errors=o.source_errors or r.source_errors)
        if o.status in ("failed", "lost") and r.found:
            o = replace(o, attempts=r.attempts, found=r.found, origins=r.origins)
        return o

    # recording ----------------------------------------------------------------------------------------------------
    def on_result(self, outcome: TaskResult) -> None:
        with self.lock:
            deadline = self.in_flight.pop(outcome.id, 0.0)
            if outcome.calibrates_next:  # the worker's next task times the speeds again: it gets that time too
                self.uncalibrated += 1
            if outcome.deferred:
                self._defer(outcome)
                return
            self._measured(outcome, deadline)
            self._record(outcome)

    def _defer(self, outcome: TaskResult) -> None:
        """A task its worker handed back unsolved (a first calibration in doubt kept it from training): pending
        again, once; the speeds in doubt are not kept (believed only after the second measurement: planned with
        them, the busy start of 2026-12-07 gave the handed-back task 109 s and left the largest one no time for a
        view); its search attempts stay in the submission."""
        self.deferred[outcome.id] = outcome
        self.pending.append(outcome.id)
        log.warning("task %s: handed back after %.1fs (calibration in doubt: %s): planned again", outcome.id,
                    outcome.seconds, ", ".join(f"{k} {v:.0f}" for k, v in outcome.calibrated.items()))

    def _measured(self, outcome: TaskResult, deadline: float) -> None:
        """The speeds the task measured (its worker's calibration too, whatever its status: a fallback measured
        none) become the run's, kept here alone and handed to every later job (budget.record_speeds); a task that
        ran through with a solve function that measures none (a fake, another solver) moves the correction factor
        instead, from its time against the estimate (a task its deadline cut short only says "slower")."""
        p = self.plans[outcome.id]
        if outcome.calibrated or any(outcome.speeds().values()):
            self.rates = B.record_speeds(self.rates, preset_rates(self.cfg), outcome.calibrated, outcome.speeds(),
                                         outcome.recalibrated)
        elif outcome.status == "ok":
            estimate = B.total_seconds(p.size, B.Work(outcome.ttt_steps, p.full.batch_size, outcome.views),
                                       self.rates)
            if time.monotonic() < deadline - 0.5 or outcome.seconds > estimate:
                self.rates = B.update_correction(self.rates, estimate, outcome.seconds)
        self._estimate()

    def on_lost(self, job: Job, reason: str) -> None:
        with self.lock:
            self.in_flight.pop(job.id, None)
            if reason.startswith("stopped"):
                self._skip(job.id, reason)  # cut off by the end of the run: a resumed run may try it again
                return
            if job.id not in self.requeued:  # its worker died (killed, out of memory): once more, on another
                self.requeued.add(job.id)
                log.error("task %s lost (%s): queued again, once", job.id, reason)
                self.pending.insert(0, job.id)
                return
            log.error("task %s lost again: %s", job.id, reason)
            self._record(fallback_result(self.tasks[job.id], "lost", FIRST, reason))

    def _record(self, o: TaskResult) -> None:
        o = self._with_search(o)
        back = self.deferred.get(o.id)
        if back is not None:  # the time of the call that handed it back is the task's too
            o = replace(o, seconds=o.seconds + back.seconds,
                        calibration_seconds=o.calibration_seconds + back.calibration_seconds)
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
        """The submission: every task's outcome, else its search pass's attempts, else its fallback attempts."""
        found = {tid: r.attempts for tid, r in self.searched.items() if r.attempts}
        found.update({tid: o.attempts for tid, o in self.outcomes.items()})
        write_submission(self.out, self.tasks, found)

    def summary(self) -> RunSummary:
        """What the report reads of the run: a plain record, copied now."""
        return RunSummary(dict(self.tasks), dict(self.outcomes), dict(self.skipped), self.solutions, self.workdir,
                          self.out, self.start, self.budget, self.workers, self.rates, list(self.load_problems),
                          self.error, self.cfg.model.spec)

    def close(self) -> None:
        """At the end: a task the model did not reach keeps its search's attempts as its outcome."""
        for tid in self.pending:
            self.skipped.setdefault(tid, f"not started: {self.error or 'time was up'}")
        for tid in [t for t in self.skipped if t in self.searched and t not in self.outcomes]:
            self._search_only(tid, f"the model did not reach it: {self.skipped.pop(tid)}")
        self.pending = []
        self.write_submission()


def executor_options(cfg: Config) -> dict:
    """The options of cfg.run.executor (solver.workers.make_executor)."""
    if cfg.run.executor == "ray":
        return {"address": cfg.run.ray_address, "cpus_per_actor": cfg.run.ray_cpus_per_actor}
    return {}


def run_tasks(tasks: dict[str, Task], cfg: Config, out: str | Path, workdir: str | Path, *,
              start: float | None = None, progress: bool = True, load_problems: list[str] = ()) -> dict:
    """Run a task set within cfg.run.budget; returns the summary also written to report.json (`load_problems`: the
    task set's bad files and ids, named in the report)."""
    start = time.monotonic() if start is None else start
    source_names(cfg)  # fail now on a source the registry does not know
    budget = B.parse_duration(cfg.run.budget)
    out, workdir = Path(out), Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for tmp in stale_temporaries(workdir) + stale_temporaries(out.parent, out.name):
        tmp.unlink(missing_ok=True)  # left by a killed run mid-write
    if cfg.run.reuse_adapters and not cfg.run.reuse_dir:  # adapters kept for reuse live in the run's folder
        cfg = cfg.override(run={"reuse_dir": str(workdir / "adapters")})
    resumed = {tid: o for tid, o in read_results(workdir / RESULTS).items() if tid in tasks}
    # a complete submission (fallbacks + what a previous run finished) before anything else
    write_submission(out, tasks, {tid: o.attempts for tid, o in resumed.items()})
    changed = changed_settings(workdir / CONFIG, cfg) if resumed else []
    if changed:  # resuming keeps the finished tasks' attempts: say so when they were made under other settings
        log.warning("resuming with settings that differ from the previous run's (%s); its finished tasks are kept",
                    ", ".join(changed[:8]))
    cfg.save(workdir / CONFIG)
    executor = make_executor(cfg.run.workers, cfg.run.executor, **executor_options(cfg))
    workers = getattr(executor, "workers", 1)
    solutions = bool(tasks) and all(t.test_outputs is not None for t in tasks.values() if t.valid)
    if solutions:
        import solver.score  # noqa: F401  (pandas: imported now, not in the last seconds of the budget)
    run = Run(tasks, cfg, out, workdir, start, budget, workers, solutions)
    run.load_problems = list(load_problems)
    run.outcomes.update(resumed)
    if resumed:
        log.info("resuming in %s: %d of %d tasks already done", workdir, len(resumed), len(tasks))
    for tid, task in tasks.items():
        if tid not in resumed and not task.valid:
            run._record(fallback_result(task, "invalid", int(B.Level.FALLBACK), task.problem or ""))
    run.pending = [tid for tid, t in tasks.items() if t.valid and tid not in run.outcomes]
    log.info("run: %d tasks (%d to do), budget %s, %d worker(s) (%s), tasks end by +%s", len(tasks),
             len(run.pending), B.format_seconds(budget), workers, type(executor).__name__,
             B.format_seconds(run.end - start))

    watchdog = threading.Thread(target=_watchdog, args=(run,), daemon=True)
    watchdog.start()
    setup = partial(make_handler, cfg.run.solver, cfg.to_dict(), "main" if type(executor).__name__ == "InProcess"
                    else "")
    with _progress(run, len(tasks), progress):
        search = start_search_pass(run, progress)
        try:
            if run.pending:
                executor.run(setup, run.next_job, run.on_result, run.on_lost, run.stop_at)
        except Exception as e:  # e.g. the model failed to load: the fallback submission stands, the report says why
            log.error("run stopped: %s: %s", type(e).__name__, e)
            run.error = f"{type(e).__name__}: {e}"
        if search is not None:
            search.join(timeout=max(0.0, run.stop_at - time.monotonic()))
    with run.lock:
        run.finished.set()
        run.close()
        return write_report(run.summary())


def start_search_pass(run: Run, progress: bool) -> threading.Thread | None:
    """The search pass over the tasks still to do (solver.search_pass), when the search is a source of the package's
    Solver and run.search_pass is not 'inside': before the model it runs now, to its end (search.pass_share of the
    budget); beside it, in a thread (returned) whose records the model's jobs wait for. Records of a previous run in
    the work directory are reused."""
    cfg = run.cfg
    if cfg.run.solver or not runs_ahead(cfg):
        return None
    mode = resolve_mode(cfg.run.search_pass, MODEL in source_names(cfg), len(visible_gpus()))
    if mode == "inside":
        return None
    run.rates = replace(run.rates, search_s=0.0)  # the model's jobs do not search
    run._estimate()
    for record in read_records(run.workdir).values():
        if record.id in run.pending:
            run._searched(record)
    todo = [run.tasks[t] for t in run.pending if t not in run.searched]
    end = pass_end(cfg, run.start, run.budget, run.end, mode)
    workers = pass_workers(cfg.run.search_workers, mode, run.workers, len(todo))
    log.info("search pass %s the model: %d tasks (%d reused), %d process(es), until +%s", mode, len(todo),
             len(run.searched), workers, B.format_seconds(end - run.start))
    if mode == "before":
        done = run_pass_logged(todo, cfg, end, workers, run.on_searched, progress)
        log.info("search pass done: %d of %d tasks searched, %d solved", done, len(todo),
                 sum(solved(r) for r in run.searched.values()))
        return None
    run.search_open = True
    return pass_beside(todo, cfg, end, workers, run.on_searched, run.pass_ended)


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
FELL_BACK_EXIT = 4  # exit status of a run in which a task got fallback attempts because it raised (submission complete)


def exit_status(report: dict) -> int:
    """0: every task ran; 1: the run itself stopped on an error; FELL_BACK_EXIT: some task raised and fell back."""
    if report.get("error"):
        return 1
    return FELL_BACK_EXIT if report.get("fell_back_after_exception") else 0


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
        run.close()
        write_report(run.summary(), printing=False)
    finally:
        logging.shutdown()
        os._exit(HARD_STOP_EXIT)
