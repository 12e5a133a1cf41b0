"""The solver run: a whole task set inside a fixed time budget, never losing work.

Owns the run's folder (config.json, results.jsonl, report.csv, report.json), the submission's life (fallback attempts
written first, rewritten atomically after every task), resuming, faults (a task that raises is retried once at a
smaller level, then gets fallback attempts) and the glue between the planner (solver.budget), the executor
(solver.workers) and a per-task solve function.

Knows nothing of how a task is solved: that is `solve(task, cfg, deadlines) -> TaskResult`, made once per worker by
a factory named in cfg.run.solver ("module:function", called as `factory(cfg)`); the default, `pipeline`, loads the
model once, then per task trains the adapter (solver.ttt) and predicts (solver.generate). Model code, and so torch and
Unsloth, is imported only where the factory runs: inside the workers.
"""
from __future__ import annotations

import csv
import glob
import importlib
import json
import logging
import math
import os
import platform
import subprocess
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from solver import budget as B
from solver.codec import Codec
from solver.config import Config, get_preset
from solver.submission import Attempts, complete_attempts, write_json_atomic, write_submission
from solver.tasks import Task, load_tasks
from solver.workers import make_executor

log = logging.getLogger(__name__)

RESULTS, CONFIG, REPORT_CSV, REPORT_JSON = "results.jsonl", "config.json", "report.csv", "report.json"
KAGGLE_TASKS = "/kaggle/input/arc-prize-*/arc-agi_test_challenges.json"
KAGGLE_OUT, KAGGLE_WORK = "/kaggle/working/submission.json", "/kaggle/working/run"
DEMO_TASKS = 10  # the smallest ARC-AGI-1 evaluation tasks the no-argument demonstration runs on


# ---------------------------------------------------------------------------------------------------------------
# What moves between the run, the workers and the solve function

class Deadlines(NamedTuple):
    """`time.monotonic()` values: the end of TTT, and the end of the whole task (prediction included)."""
    ttt: float
    end: float


@dataclass
class TaskResult:
    """What a solve function returns: per test input a pair of grids, or None where it found nothing."""
    attempts: list[Attempts | None]
    ttt_steps: int = 0
    candidates: int = 0
    views: int = 0
    ttt_seconds: float = 0.0
    predict_seconds: float = 0.0
    note: str = ""
    adapter_from: str = ""  # the trained task whose adapter this one started from (solver.reuse.Decision.describe)


@dataclass
class Job:
    """One task as handed to a worker: the config of its level, its deadlines, and what to do if it raises."""
    id: str
    task: Task
    level: int
    cfg: dict
    deadlines: Deadlines
    retry_level: int
    retry_cfg: dict | None  # None: no retry (cfg.run.retry off)
    retry_ttt_fraction: float


@dataclass
class Outcome:
    """One finished task, as the results file holds it (one JSON line)."""
    id: str
    status: str  # ok | retried (raised once, then ok) | failed (raised twice: fallback) | lost | invalid
    level: int
    attempts: list  # [[attempt_1, attempt_2], ...] as JSON lists, one pair per test input, always complete
    found: int = 0  # test inputs whose attempts came from the solver rather than the fallback
    ttt_steps: int = 0
    candidates: int = 0
    views: int = 0
    seconds: float = 0.0
    ttt_seconds: float = 0.0
    predict_seconds: float = 0.0
    worker: str = ""
    error: str = ""
    note: str = ""
    adapter_from: str = ""  # 'reuse:<task id>@<cosine>' or 'warm:<task id>@<cosine>' (adapter reuse), else empty

    def grids(self) -> list[Attempts]:
        return [(np.array(a, dtype=np.uint8), np.array(b, dtype=np.uint8)) for a, b in self.attempts]


def _json_pairs(pairs: list[Attempts]) -> list:
    return [[a.tolist(), b.tolist()] for a, b in pairs]


def fallback_outcome(task: Task, status: str, level: int, error: str = "", seconds: float = 0.0,
                     worker: str = "") -> Outcome:
    return Outcome(task.id, status, level, _json_pairs(complete_attempts(task, None)), seconds=seconds,
                   worker=worker, error=error)


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
# The results file

def append_result(path: Path, outcome: Outcome) -> None:
    """One JSON line, flushed to disk before returning."""
    with open(path, "a") as f:
        f.write(json.dumps(asdict(outcome), separators=(",", ":")) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_results(path: Path) -> dict[str, Outcome]:
    """Finished tasks by id. A line cut short by a kill is dropped, and cut off the file so appends stay whole."""
    if not path.exists():
        return {}
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        log.warning("%s: dropping a last line cut short (%d bytes)", path, len(data) - end)
        with open(path, "r+b") as f:
            f.truncate(end)
    out = {}
    for n, line in enumerate(data[:end].decode().splitlines(), 1):
        try:
            o = Outcome(**json.loads(line))
        except (json.JSONDecodeError, TypeError) as e:
            log.warning("%s line %d: unreadable, ignored (%s)", path, n, e)
            continue
        out[o.id] = o
    return out


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
    if not logging.getLogger().handlers:  # a spawned worker: log lines as the parent does
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            datefmt="%H:%M:%S")
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
    return Outcome(job.id, status, level, _json_pairs(pairs), len(found), result.ttt_steps, result.candidates,
                   result.views, time.monotonic() - t0, result.ttt_seconds, result.predict_seconds, worker,
                   note=result.note, adapter_from=result.adapter_from)


# ---------------------------------------------------------------------------------------------------------------
# The default solve function: the real pipeline

def pipeline(cfg: Config):
    """Load the model (and attach a LoRA adapter when TTT is on) once; return solve(task, cfg, deadlines).

    With cfg.run.shared_adapter, that adapter's weights are read once too; tasks at the 'shared adapter' level
    (cfg.ttt.shared_adapter set by `config_at`) predict with them instead of training their own.
    """
    from solver import model as M
    loaded = M.load_configured(cfg.model, cfg.run.seed)
    adapter, shared = None, None
    if cfg.ttt.enabled or cfg.run.shared_adapter:
        from solver.adapter import attach
        adapter = attach(loaded.model, cfg.ttt, loaded.codec.token_ids, cfg.run.seed)
    if cfg.run.shared_adapter:
        adapter.load(cfg.run.shared_adapter)
        shared = adapter.snapshot()
        adapter.reset()
    return partial(_solve_pipeline, loaded, adapter, shared, _related(cfg, loaded, adapter))


def _related(cfg: Config, loaded, adapter) -> tuple:
    """(neighbour library, adapter reuse) of a worker, each None when its option is off (solver.embed, .reuse)."""
    if adapter is None or not cfg.ttt.enabled:
        return None, None
    from solver.embed import Neighbours, embed_tasks
    neighbours = Neighbours.from_config(cfg.ttt, loaded, adapter, cfg.model.cache_dir or None) \
        if cfg.ttt.neighbours > 0 else None
    reuse = None
    if cfg.run.reuse_adapters and cfg.run.reuse_dir:
        from solver.reuse import AdapterStore, Reuse
        r = cfg.run
        reuse = Reuse(AdapterStore(r.reuse_dir), lambda t: embed_tasks([t], r.reuse_embedding, loaded,
                                                                       cfg.model.cache_dir or None, adapter)[0],
                      r.reuse_warm_threshold, r.reuse_threshold)
    return neighbours, reuse


def _train_or_reuse(adapter, related: tuple, loaded, task: Task, cfg: Config, deadlines: Deadlines):
    """TTT of a task, with its neighbours' data and from a reused adapter where those options are on: (result,
    the source adapter's description)."""
    from solver.reuse import REUSE, WARM
    from solver.ttt import TTTResult, train_task
    neighbours, reuse = related
    decision, vec = reuse.decide(task) if reuse is not None else (None, None)
    if decision is not None and decision.action == REUSE:
        adapter.restore(reuse.store.load(decision.source))
        log.info("task %s: adapter of %s reused (cosine %.4f), no TTT", task.id, decision.source, decision.similarity)
        return TTTResult(), decision.describe()
    start = reuse.store.load(decision.source) if decision is not None and decision.action == WARM else None
    near = neighbours.find(task, cfg.ttt.neighbours) if neighbours is not None and cfg.ttt.neighbours > 0 else []
    res = train_task(adapter, task, loaded.codec, cfg.ttt, deadlines.ttt, cfg.run.seed, neighbours=near, start=start)
    if reuse is not None and res.steps and math.isfinite(res.loss):
        reuse.keep(task.id, vec, adapter.snapshot())
    return res, decision.describe() if decision is not None else ""


def _solve_pipeline(loaded, adapter, shared, related: tuple, task: Task, cfg: Config,
                    deadlines: Deadlines) -> TaskResult:
    from solver import generate
    from solver.model import Loaded
    t0 = time.monotonic()
    steps, model, adapter_from = 0, loaded.model, ""
    if adapter is not None:
        model = adapter.model
        if cfg.ttt.shared_adapter:
            if shared is None:
                raise ValueError("level 'shared adapter' without cfg.run.shared_adapter")
            adapter.restore(shared)
        elif cfg.ttt.enabled:
            res, adapter_from = _train_or_reuse(adapter, related, loaded, task, cfg, deadlines)
            if res.steps and not math.isfinite(res.loss):
                raise FloatingPointError(f"TTT loss is {res.loss} after {res.steps} steps")
            steps = res.steps
        adapter.eval_mode()
    t1 = time.monotonic()
    stats: dict = {}
    base_only = adapter is not None and not cfg.ttt.enabled and not cfg.ttt.shared_adapter
    with adapter.disabled() if base_only else nullcontext():
        found = generate.predict(Loaded(model, loaded.codec, loaded.spec), task, cfg, deadlines.end, stats)
    attempts = [(a.attempt_1, a.attempt_2) if a.candidates else None for a in found]
    return TaskResult(attempts, steps, sum(len(a.candidates) for a in found), cfg.infer.num_views,
                      t1 - t0, time.monotonic() - t1, "; ".join(a.note for a in found if a.note), adapter_from)


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
    for tmp in list(workdir.glob(".*.tmp")) + list(out.parent.glob(f".{out.name}.*.tmp")):
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


# ---------------------------------------------------------------------------------------------------------------
# The report

REPORT_COLUMNS = ["task_id", "status", "level", "found", "tests", "correct", "ttt_steps", "candidates", "views",
                  "seconds", "ttt_seconds", "predict_seconds", "worker", "error", "note", "adapter_from"]


def write_report(run: Run, printing: bool = True) -> dict:
    """report.csv (one row per task) and report.json (summary, score when solutions are known) in the work dir."""
    table = None
    if run.solutions:
        from solver.score import score_table
        truths = {tid: t.test_outputs for tid, t in run.tasks.items() if t.test_outputs is not None}
        table = score_table({tid: o.grids() for tid, o in run.outcomes.items()}, truths)
        correct = dict(zip(table["task_id"], table["correct"]))
    rows = []
    for tid, task in run.tasks.items():
        o = run.outcomes.get(tid)
        row = asdict(o) if o else {"status": "skipped", "level": int(B.Level.FALLBACK),
                                   "note": run.skipped.get(tid, "")}
        row.update(task_id=tid, tests=task.num_tests, level=B.Level(row["level"]).name,
                   correct=correct.get(tid, "") if table is not None else "")
        rows.append({k: row.get(k, "") for k in REPORT_COLUMNS})
    with open(run.workdir / REPORT_CSV, "w", newline="") as f:
        w = csv.DictWriter(f, REPORT_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    statuses = {}
    for row in rows:
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    done = list(run.outcomes.values())
    report = {"tasks": len(run.tasks), "status": statuses, "budget_s": run.budget,
              "elapsed_s": round(time.monotonic() - run.start, 1), "workers": run.workers,
              "ttt_seconds": round(sum(o.ttt_seconds for o in done), 1),
              "predict_seconds": round(sum(o.predict_seconds for o in done), 1),
              "speed_correction": round(run.rates.correction, 3), "error": run.error,
              "submission": str(run.out), "model": run.cfg.model.spec, "hardware": _hardware(run.workers),
              "code_version": _git_version()}
    if table is not None:
        from solver.score import print_score, summary
        report["score"] = summary(table)
        if printing:
            print_score(table)
    write_json_atomic(run.workdir / REPORT_JSON, report)
    problems = [r for r in rows if r["status"] in ("failed", "lost", "invalid", "retried")]
    for r in problems:
        log.warning("task %s: %s (%s)", r["task_id"], r["status"], r["error"])
    _write_html_report(run)
    log.info("run done in %s of %s: %s; report in %s", B.format_seconds(report["elapsed_s"]),
             B.format_seconds(run.budget), ", ".join(f"{v} {k}" for k, v in statuses.items()), run.workdir)
    return report


def _write_html_report(run: Run) -> None:
    """report.html beside report.csv, when the budget still has room: a picture of the run, never a risk to it."""
    left = run.budget - (time.monotonic() - run.start)
    if left < 5 + 0.25 * len(run.tasks):  # `show --report` on the 10-task demo: 2.6 s with imports, about 0.1 s a task
        log.info("no report.html: %.0f s of the budget left (show --report %s writes it later)", left, run.workdir)
        return
    try:
        from solver.show import write_html_report
        write_html_report(run.workdir, run.tasks, submission=run.out)
    except Exception as e:  # the report is optional; the submission and report.csv are already on disk
        log.warning("report.html not written: %s: %s", type(e).__name__, e)


def _hardware(workers: int) -> str:
    from solver.workers import visible_gpus
    gpus = visible_gpus()
    return f"{platform.machine()} {os.cpu_count()} CPUs, {len(gpus)} GPU(s), {workers} worker(s)"


def _git_version() -> str:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


# ---------------------------------------------------------------------------------------------------------------
# Command line

def add_parser(sub) -> None:
    """The `run` subcommand of `python -m solver`."""
    s = sub.add_parser("run", help="solve a task set within a time budget and write a submission")
    s.add_argument("--tasks", required=True, help="task SPEC: challenges file, directory, or arc1:eval etc.")
    s.add_argument("--model", help="model SPEC (default: the preset's)")
    s.add_argument("--budget", help="time for the whole run, model loading included: 90s, 10m, 12h")
    s.add_argument("--out", default="submission/submission.json", help="where the submission is written")
    s.add_argument("--preset", default="default", help="named settings to start from (see solver/config.py)")
    s.add_argument("--limit", type=int, help="only the first N tasks")
    s.add_argument("--workdir", help="the run's folder (config, results, report); the same folder resumes "
                                     "(default: beside --out, named after it)")
    s.add_argument("--workers", type=int, help="0: one process per GPU, or in-process on a CPU; N: N processes")
    s.add_argument("--solver", help="factory of the per-task solve function, 'module:function' (default: the "
                                    "pipeline)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    s.set_defaults(func=cmd_run)


def resolve_config(preset: str, model: str | None = None, budget: str | None = None, workers: int | None = None,
                   solver: str | None = None) -> Config:
    cfg = get_preset(preset)
    run = {k: v for k, v in {"budget": budget, "workers": workers, "solver": solver}.items() if v is not None}
    cfg = cfg.override(model={"spec": model} if model else {}, run=run)
    B.parse_duration(cfg.run.budget)  # fail now on a bad duration
    return cfg


def process_start() -> float:
    """The `time.monotonic()` value when this process started (interpreter start-up counts against the budget)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        return time.monotonic() - min(max(age, 0.0), 60.0)
    except (OSError, ValueError, IndexError, AttributeError):
        return time.monotonic()


def cmd_run(args, start: float | None = None) -> int:
    start = process_start() if start is None else start
    cfg = resolve_config(args.preset, args.model, args.budget, args.workers, args.solver)
    tasks = load_tasks(args.tasks, args.limit)
    workdir = args.workdir or str(Path(args.out).with_name(Path(args.out).stem + "_work"))
    report = run_tasks(tasks, cfg, args.out, workdir, start=start, progress=not args.no_progress)
    return 1 if report.get("error") else 0


def demo_tasks(n: int = DEMO_TASKS) -> dict[str, Task]:
    """The n ARC-AGI-1 evaluation tasks with the fewest tokens (one test input each): a quick demonstration."""
    codec = Codec.compact()
    tasks = [t for t in load_tasks("arc1:eval").values() if t.valid and t.num_tests == 1]
    tasks.sort(key=lambda t: (task_size(t, codec).train_tokens + task_size(t, codec).prompt_tokens, t.id))
    return {t.id: t for t in tasks[:n]}


def default_command(start: float | None = None) -> int:
    """`python -m solver` with no arguments: the competition run on Kaggle, else a CPU demonstration."""
    start = process_start() if start is None else start
    found = sorted(glob.glob(KAGGLE_TASKS))
    if found:
        log.info("Kaggle: solving %s", found[-1])
        cfg = get_preset("kaggle-4xl4")
        report = run_tasks(load_tasks(found[-1]), cfg, KAGGLE_OUT, KAGGLE_WORK, start=start)
        return 1 if report.get("error") else 0
    cfg = get_preset("cpu-demo")
    tasks = demo_tasks()
    workdir = Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    log.info("demonstration: %d small ARC-AGI-1 evaluation tasks, model %s, budget %s, work dir %s", len(tasks),
             cfg.model.spec, cfg.run.budget, workdir)
    report = run_tasks(tasks, cfg, Path("submission") / "submission.json", workdir, start=start)
    return 1 if report.get("error") else 0
