"""One task end to end, in a worker: the solver of the run (`Solver`) and the job handler around it.

`Solver.build(cfg)` (the run's factory: `pipeline`) runs once per worker: it builds the candidate sources of
`run.sources` (solver.source_registry's, such as the search; the model: loaded once, with its LoRA adapter attached
and, where those options are on, the neighbour library and the adapter store of solver.embed / solver.reuse). Called
as `solver(task, cfg, deadlines)`, it first asks the sources other than the model for their candidates (each test
input's table; the search pass's tables, where the job carries them, stand for the sources that ran ahead), then
times the worker's speeds (its first task), fits the model's work to the time left at the run's speeds (the job
carries them; on a calibrating task with what it timed), trains the adapter until the TTT deadline (solver.ttt), and
predicts every test input: views, decoding and scoring of its own and the other sources' candidates
(solver.generate), the merged table, and the selection (solver.select), with fallbacks when time or candidates run
out. `make_handler` builds the solve function once per worker (this Solver, or the factory cfg.run.solver names) and
handles each job: the task's finished result (solver.results.finish), a retry at a smaller level where it raises
(solver.plan.retry_config), its fallback attempts where that raises too, and a sticky device error reported as
WorkerBroken. Knows nothing of other tasks' results, the submission file or
reports: the speeds a task measured go back in its result, and the run keeps them (solver.run).
"""
from __future__ import annotations

import importlib
import logging
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Callable

from solver import budget as B
from solver.codec import Codec, Encoded
from solver.config import MODEL, Config
from solver.files import setup_logging
from solver.invariants import invariants
from solver.measure import gpu_peak_mib, reset_gpu_peak
from solver.plan import fit_to_share, preset_rates, retry_config
from solver.results import Job, TaskResult, fallback_result, finish
from solver.select import Candidate, CandidateSource, Choice, candidate_table, choose_attempts, merge_tables, no_choice
from solver.source_registry import build_sources, source_names
from solver.tasks import Task
from solver.workers import WorkerBroken

log = logging.getLogger(__name__)


@dataclass
class Solver:
    """One worker's solver, built once (`Solver.build`): the candidate sources other than the model, the model (None
    when it is no source), its adapter (and the shared adapter's state), the related-task options, and whether it
    has timed its speeds (the speeds themselves are the run's: each call is handed them, and its result carries
    what it measured). Called as the run's solve function: `solver(task, cfg, deadlines)`; `train` and `predict`
    are its two halves for callers that drive them (benchmarks, notebooks, checks)."""
    cfg: Config
    loaded: object
    adapter: object = None  # its `shared` state: the shared adapter's weights (run.shared_adapter), read once
    related: tuple = (None, None)
    sources: list = field(default_factory=list)
    calibrated: bool = False  # this worker timed its speeds (its first task)
    untrained_in_row: int = 0  # tasks in a row that the measured speeds kept from training (_count_untrained)
    recalibrate: bool = False  # the next task times the speeds again (_far_off, _count_untrained)

    @classmethod
    def build(cls, cfg: Config, sources: list[CandidateSource] | None = None) -> Solver:
        """The sources of run.sources (`sources`: the ones other than the model, instead of those it names); the
        model loaded once, with a LoRA adapter attached when TTT is on (and with cfg.run.shared_adapter, that
        adapter's weights read once too: a task whose share fits no TTT step predicts with them)."""
        names = source_names(cfg)
        if sources is None:
            sources = build_sources(cfg)
        solver = _with_model(cfg) if MODEL in names else cls(cfg, None)
        solver.sources = sources
        return solver

    def __call__(self, task: Task, cfg: Config, deadlines: B.Deadlines, known: list | None = None,
                 rates: B.Rates | None = None, may_defer: bool = False) -> TaskResult:
        """Solve one task; `known`: the tables of the sources that ran ahead (the run's search pass: one list of
        Candidates per test input), which those sources are then not asked again; `rates`: the run's speeds,
        which the model's work is fitted with (None: the preset's). The result carries the speeds the task measured
        (and its calibration's, when this call timed them), for the caller to keep (solver.budget.record_speeds).
        With `may_defer`, a task that a first calibration in doubt keeps from training comes back unsolved
        (TaskResult.deferred), to be planned again after a second measurement."""
        return _solve_pipeline(self, task, cfg, deadlines, known, rates, may_defer)

    def train(self, task: Task, deadline: float, cfg: Config | None = None):
        """TTT of the adapter (reset first) on the task until `deadline` (a time.monotonic() value): a TTTResult."""
        from solver.ttt import TTTResult
        if self.adapter is None:
            return TTTResult()
        self.adapter.reset()
        cfg = cfg or self.cfg
        res, _ = _train_or_reuse(self.adapter, self.related, self.loaded, task, cfg, B.Deadlines(deadline, deadline))
        return res

    def predict(self, task: Task, deadline: float, cfg: Config | None = None, known=None,
                stats: dict | None = None) -> list[Choice]:
        """Two attempts per test input with the adapter as it is (trained or not), over the other sources'
        candidates `known` (one table per test input; gathered now when None)."""
        from solver.model import Loaded
        cfg = cfg or self.cfg
        if known is None:
            known = gather(self.sources, task, sources_deadline(cfg, deadline, self.loaded is not None)).tables
        if self.loaded is None:
            return choose_without_model(task, known, cfg)
        model = self.adapter.model if self.adapter is not None else self.loaded.model
        if self.adapter is not None:
            self.adapter.eval_mode()
        return predict(Loaded(model, self.loaded.codec, self.loaded.spec), task, cfg, deadline, stats, known)


def pipeline(cfg: Config, sources: list[CandidateSource] | None = None) -> Solver:
    """Solver.build under the factory name that saved configs give ('solver.pipeline:pipeline')."""
    return Solver.build(cfg, sources)


def _with_model(cfg: Config) -> Solver:
    """The model loaded once, its adapter attached (and the shared adapter's state read) where asked for."""
    from solver import model as M
    loaded = M.load_configured(cfg.model, cfg.run.seed)
    adapter = None
    if cfg.ttt.enabled or cfg.run.shared_adapter:
        from solver.adapter import attach
        adapter = attach(loaded.model, cfg.ttt, loaded.codec.token_ids, cfg.run.seed)
    if cfg.run.shared_adapter:
        adapter.load(cfg.run.shared_adapter)
        adapter.shared = adapter.snapshot()  # the one holder of that state (Adapter.use_shared)
        adapter.reset()
    return Solver(cfg, loaded, adapter, _related(cfg, loaded, adapter))


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


def _train_or_reuse(adapter, related: tuple, loaded, task: Task, cfg: Config, deadlines: B.Deadlines,
                    steps: int = 0):
    """TTT of a task (at most `steps` steps, the plan's fitted count, 0: none; within ttt.max_steps), with its
    neighbours' data and from a reused adapter where those options are on: (result, the source adapter's
    description)."""
    from solver.data import neighbour_examples
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
    extra = neighbour_examples(near, loaded.codec, cfg.ttt, cfg.run.seed) if near else []
    res = train_task(adapter, task, loaded.codec, cfg.ttt, deadlines.train_end(), cfg.run.seed, extra=extra,
                     start=start, steps=steps)
    if reuse is not None and res.steps and math.isfinite(res.loss):
        reuse.keep(task.id, vec, adapter.snapshot())
    return res, decision.describe() if decision is not None else ""


def on_accelerator(model) -> bool:
    """Whether the model's weights live on an accelerator (CUDA, MPS, ...) rather than the CPU."""
    return next(model.parameters()).device.type != "cpu"


MIN_DECODE_TOKENS = 8  # a decoding speed from fewer generated tokens is not believed: on the CPU, 2-token answers
# measured 953 tokens/s where 20-40 is true, and the first tasks' prediction was planned 12x too short


FAR_OFF = 4.0  # a training speed this many times below the preset's is timed twice: one busy step must not rule
# (a run started beside other CPU work measured 9 tokens/s where 150-280 is true, and then trained no task at all)
WARM_TOKENS = 256  # a CPU's untimed warm-up step trains the last this many tokens of the shortest sequence: its cold
# costs (allocations, threads) do not grow with the length, and on a busy 2-core machine a whole cold step of a
# 668-token sequence took 15-40 s of the first task's share (a 256-token one 1.7 s quiet, the next whole step 3.8 s)
RETIME_BELOW = 2.0  # a first calibration's training speed this many times below the preset's is timed again on the
# next task (the busy-start run measured 55 tokens/s beside two spinning processes that ended 20 s later, 200-280 quiet)
RECALIBRATE_AFTER = 3  # tasks in a row whose fitted work has no TTT step (where the full work has some): time again


def _step_speed(adapter, train, examples: list, tcfg, codec) -> float:
    """Training tokens per second of one timed step (0.0 when it ran none); the adapter is reset after."""
    res = train(adapter, examples, tcfg, codec.pad, steps=1)
    adapter.reset()
    return res.tokens / max(res.seconds, 1e-6) if res.steps else 0.0


def calibrate(w: Solver, task: Task, cfg: Config, deadline: float) -> dict[str, float]:
    """Time one TTT step and the prefill and a few decoding steps of the task's views, on the path prediction takes
    (solver.generate.SharedViews: one prefill per view, then infer.strategy's decoding); the adapter is reset after.
    The TTT step comes after one untimed warm-up step on every device (a cold first step understates the speed many
    times; on a CPU it trains a WARM_TOKENS tail of the shortest sequence), and a speed FAR_OFF below the preset's is
    timed a second time while the deadline allows (the faster believed). On an
    accelerator at the planned shapes (cfg.ttt.batch_size of the task's shortest training sequences; the planned
    views in batches of infer.batch_size), decoding after an untimed warm-up of one view too (CUDA context, kernels
    and allocator are cold at first). On a CPU, whose speed per token does not grow with the batch, one sequence and
    one view: on the first (largest) task of the held-out slice the planned shapes cost minutes of its share.
    Decoding stops at `deadline`. Returns the speeds measured (tokens per second by Rates field; one not measured is
    absent), which the task is fitted with and the run keeps (solver.budget.calibrated_rates: a slower one whole, a
    faster one halfway); it is paid from the task's share."""
    from solver.data import build_examples
    from solver.ttt import train
    preset, codec = preset_rates(cfg), w.loaded.codec
    model = w.adapter.model if w.adapter is not None else w.loaded.model
    warm = on_accelerator(model)
    measured = {}
    if w.adapter is not None and cfg.ttt.enabled:
        examples = sorted(build_examples(task, codec, cfg.ttt, cfg.run.seed), key=len)
        if examples:
            batch = max(1, cfg.ttt.batch_size) if warm else 1
            one = replace(cfg.ttt, epochs=1)  # one step each call (steps=1): the user's ttt.max_steps stays as it is
            first = examples[0] if warm else Encoded(examples[0].ids[-WARM_TOKENS:], examples[0].mask[-WARM_TOKENS:])
            train(w.adapter, [first], replace(one, batch_size=1), codec.pad, steps=1)  # warm-up: not timed
            w.adapter.reset()
            rows, planned = (examples * batch)[:batch], replace(one, batch_size=batch)
            speed = _step_speed(w.adapter, train, rows, planned, codec)
            if 0 < speed < preset.train_tokens_per_s / FAR_OFF and time.monotonic() < deadline:
                speed = max(speed, _step_speed(w.adapter, train, rows, planned, codec))  # a busy start? the faster
            if speed:
                measured["train_tokens_per_s"] = speed
    measured.update(_decode_speeds(model, codec, task, cfg, deadline, warm))
    log.info("task %s: calibrated at %d sequences per step and %d views: %s", task.id,
             max(1, cfg.ttt.batch_size) if warm else 1, max(1, cfg.infer.num_views) if warm else 1,
             ", ".join(f"{k} {v:.0f}" for k, v in measured.items()))
    return measured


def _decode_speeds(model, codec: Codec, task: Task, cfg: Config, deadline: float, warm: bool) -> dict[str, float]:
    """Prefill and decoding speeds of the task's first test input through SharedViews, as prediction runs them
    (answers capped at CALIBRATION_SHAPE): on an accelerator the planned views in batches of infer.batch_size after
    an untimed warm-up of one view, on a CPU one view."""
    from solver.generate import SharedViews, make_views
    n, per_batch = (max(1, cfg.infer.num_views), max(1, cfg.infer.batch_size)) if warm else (1, 1)
    icfg, seed = replace(cfg.infer, num_views=n, batch_size=per_batch), cfg.run.seed
    views = [replace(v, max_shape=B.CALIBRATION_SHAPE) for v in make_views(task, 0, codec, n, seed, cfg.infer)]
    model.eval()
    if warm:  # warm-up: not timed
        SharedViews(model, codec, views[:1], batch_size=per_batch).decode(replace(icfg, num_views=1), deadline,
                                                                          seed=seed)
    stats: dict = {}
    shared = SharedViews(model, codec, views, batch_size=per_batch, stats=stats)
    shared.decode(icfg, deadline, seed=seed)
    measured = {}
    prefilled = [v for v, kv in zip(views, shared.kv) if kv is not None]  # the views prefilled before the deadline
    if stats.get("prefill_s") and prefilled:
        measured["prefill_tokens_per_s"] = sum(len(v.prompt) for v in prefilled) / stats["prefill_s"]
    if stats.get("decode_s") and stats.get("tokens", 0) >= MIN_DECODE_TOKENS:  # fewer: a guess, not a speed
        measured["decode_tokens_per_s"] = stats["tokens"] / stats["decode_s"]
    return measured


def measured_speeds(size: B.TaskSize, steps: int, batch: int, ttt_s: float, predict_s: float,
                    stats: dict) -> dict[str, float]:
    """A finished task's speeds in the planner's terms: the TTT steps' time per planned token, the decoding phase's
    generated tokens, and everything else in prediction (prefills, scoring) as an effective prefill speed, counted
    over the prompts actually computed (stats' `prefills`, not the views planned): a task whose
    deadline left no time to prefill measures no prefill speed (the morning run's busy re-run planned
    its next task at 17,224 prompt tokens/s from one that prefilled nothing in 0.01 s)."""
    out = {}
    if steps and ttt_s > 0:
        out["train_tokens_per_s"] = steps * batch * size.train_tokens / ttt_s
    decode_s = stats.get("decode_s", 0.0)
    if decode_s > 0 and stats.get("tokens"):
        out["decode_tokens_per_s"] = stats["tokens"] / decode_s
    prompts = stats.get("prefills", 0)
    if prompts and predict_s > decode_s:
        out["prefill_tokens_per_s"] = prompts * size.prompt_tokens / (predict_s - decode_s)
    return out


@dataclass
class Gathered:
    """What the sources other than the model proposed for a task: one candidate table per test input."""
    tables: list[list[Candidate]]
    seconds: float = 0.0
    fits: int = 0
    errors: list[str] = field(default_factory=list)


def gather(sources: list, task: Task, deadline: float) -> Gathered:
    """Each source's candidates for every test input, merged in source order. A source that raises is logged with
    its traceback and named in `errors`; the others (and the model) still answer."""
    t0, out = time.monotonic(), Gathered([[] for _ in task.test_inputs])
    if not task.valid:
        return out
    for source in sources:
        try:
            for i in range(len(task.test_inputs)):
                out.tables[i] = merge_tables([out.tables[i], source.propose(task, i, deadline)])
        except Exception as e:
            log.exception("task %s: candidate source '%s' raised; the task goes on without it", task.id, source.name)
            out.errors.append(f"{source.name}: {type(e).__name__}: {e}")
        out.fits += source.fits
    out.seconds = time.monotonic() - t0
    return out


def sources_deadline(cfg: Config, end: float, model_too: bool) -> float:
    """When the sources other than the model must stop: search.max_seconds from now, and with the model as a source
    too at most search.share of the time left."""
    now = time.monotonic()
    left = max(0.0, end - now)
    return now + min(cfg.search.max_seconds, cfg.search.share * left if model_too else left)


def _solve_pipeline(w: Solver, task: Task, cfg: Config, deadlines: B.Deadlines, known: list | None,
                    rates: B.Rates | None, may_defer: bool = False) -> TaskResult:
    gathered = _gather_task(w, task, cfg, deadlines, known)
    if w.loaded is None:
        return result_of(choose_without_model(task, gathered.tables, cfg), gathered)
    found, stats = _solve_with_model(w, task, cfg, deadlines, gathered.tables, rates or preset_rates(cfg), may_defer)
    return result_of(found, gathered, **stats)


def _gather_task(w: Solver, task: Task, cfg: Config, deadlines: B.Deadlines, known: list | None) -> Gathered:
    """The task's tables from the sources other than the model: all of them here, or with `known` (the search pass's
    tables) only those that run inside the job, after the pass's candidates."""
    sources = w.sources if known is None else [s for s in w.sources if not s.ahead]
    gathered = gather(sources, task, sources_deadline(cfg, deadlines.end, w.loaded is not None)) if sources \
        else Gathered([[] for _ in task.test_inputs])
    if known is not None:
        gathered.tables = [merge_tables([list(k), t]) for k, t in zip(known, gathered.tables)]
    return gathered


def choose_without_model(task: Task, tables: list[list[Candidate]], cfg: Config) -> list[Choice]:
    """Two attempts per test input from the other sources' tables alone (no model is a source)."""
    note = "" if task.valid else f"invalid task: {task.problem}"
    return [_choose(table, cfg, task, x, note) for table, x in zip(tables, task.test_inputs)]


def result_of(found: list[Choice], gathered: Gathered, **stats) -> TaskResult:
    """A task's result from its choices (per test input the attempts where a candidate stood behind them, the table,
    where the attempts came from, what the verifier did) and the other sources' cost (`gathered`); `stats`: what the
    model's work adds (its level, steps, views, seconds, speeds)."""
    attempts = [(a.attempt_1, a.attempt_2) if a.candidates else None for a in found]
    return TaskResult(attempts, candidates=sum(len(a.candidates) for a in found),
                      tables=[list(a.candidates) for a in found], note="; ".join(a.note for a in found if a.note),
                      origins="; ".join("|".join(a.origins()) for a in found), verifier=_verifier_text(found),
                      source_seconds=gathered.seconds, fits=gathered.fits, source_errors="; ".join(gathered.errors),
                      **stats)


def _verifier_text(found: list[Choice]) -> str:
    """What the verifier knew and did, for the report: 'same_shape,palette_equal: 2 demoted (histogram_kept)' per test
    input ('; '), '' where it was off or found no invariant."""
    out = []
    for a in found:
        if a.invariants:
            broke = sorted({name for names in a.demoted.values() for name in names})
            why = f" ({','.join(broke)})" if broke else ""
            out.append(f"{','.join(a.invariants)}: {len(a.demoted)} demoted{why}")
    return "; ".join(out)


def _solve_with_model(w: Solver, task: Task, cfg: Config, deadlines: B.Deadlines, known: list[list[Candidate]],
                      rates: B.Rates, may_defer: bool = False) -> tuple[list[Choice], dict]:
    """Calibration (a worker's first task; again where _far_off or _count_untrained says so), the work fitted to the
    time left at `rates` (the run's; with what calibration timed, as budget.calibrated_rates takes it), TTT, then
    prediction of every test input over the other sources' candidates too: the choices and what the report and the
    run's speeds keep."""
    from solver.model import Loaded
    t0, calibration_s, calibrated, remeasure, doubted = time.monotonic(), 0.0, {}, w.calibrated, False
    if cfg.run.calibrate and (not w.calibrated or w.recalibrate) and task.valid:
        calibrated = calibrate(w, task, cfg, deadlines.calibration or t0 + 0.25 * max(0.0, deadlines.end - t0))
        calibration_s = time.monotonic() - t0
        rates = B.calibrated_rates(rates, preset_rates(cfg), calibrated, remeasure)
        doubted = not remeasure and _far_off(task, calibrated, cfg)  # a first look far below the preset's
        w.calibrated, w.untrained_in_row, w.recalibrate = True, 0, doubted
    shared = w.adapter is not None and w.adapter.shared is not None
    now = time.monotonic()
    fitted = fit_to_share(task, cfg, w.loaded.codec, rates, deadlines, shared, now)
    cfg, deadlines, full, work, size = fitted
    share = max(0.0, deadlines.end - now)
    planned = " ".join(f"{k} {getattr(rates, k + '_tokens_per_s'):.0f}" for k in ("train", "prefill", "decode"))
    batch = f" of {work.batch_size} sequences (not {full.batch_size}: no step of {full.batch_size} fits)" \
        if work.ttt_steps and work.batch_size != full.batch_size else ""
    log.info("task %s: %.0fs: %d of %d TTT steps%s, %d of %d views (planned at %s tokens/s)", task.id,
             share, work.ttt_steps, full.ttt_steps, batch, work.views, full.views, planned)
    if may_defer and doubted and _kept_from_training(cfg, size, full, work, share):
        log.warning("task %s: handed back unsolved: the speeds in doubt fit no TTT step where the preset's fit one; "
                    "planned again after the next task's second measurement", task.id)
        return [], dict(deferred=True, calibrates_next=True, level=int(B.Level.NO_TTT),
                        calibration_seconds=calibration_s, calibrated=calibrated, planned_speeds=planned)
    steps, model, adapter_from, adapter = 0, w.loaded.model, "", w.adapter
    if adapter is not None:
        model = adapter.model
        if cfg.ttt.use_shared_adapter:
            if adapter.shared is None:
                raise ValueError("level 'shared adapter' without cfg.run.shared_adapter")
            adapter.use_shared()
        elif cfg.ttt.enabled:
            res, adapter_from = _train_or_reuse(adapter, w.related, w.loaded, task, cfg, deadlines, fitted.steps)
            if res.steps and not math.isfinite(res.loss):
                raise FloatingPointError(f"TTT loss is {res.loss} after {res.steps} steps")
            steps = res.steps
        adapter.eval_mode()
    t1 = time.monotonic()
    stats: dict = {}
    base_only = adapter is not None and not cfg.ttt.enabled and not cfg.ttt.use_shared_adapter
    with adapter.disabled() if base_only else nullcontext():
        found = predict(Loaded(model, w.loaded.codec, w.loaded.spec), task, cfg, deadlines.end, stats, known)
    t2 = time.monotonic()
    speeds = measured_speeds(size, steps, cfg.ttt.batch_size, t1 - t0 - calibration_s, t2 - t1, stats)
    _count_untrained(w, task, cfg, size, full, work, share)
    did = B.Work(steps, cfg.ttt.batch_size, cfg.infer.num_views, cfg.ttt.use_shared_adapter)
    return found, dict(level=int(B.level_of(did, full)), ttt_steps=steps, views=cfg.infer.num_views,
                       ttt_seconds=t1 - t0 - calibration_s, predict_seconds=t2 - t1, adapter_from=adapter_from,
                       calibration_seconds=calibration_s, calibrated=calibrated,
                       recalibrated=bool(calibrated) and remeasure, calibrates_next=w.recalibrate,
                       planned_speeds=planned, **speeds)


def _far_off(task: Task, calibrated: dict[str, float], cfg: Config) -> bool:
    """Whether a first calibration's training speed is RETIME_BELOW times below the preset's or more: then the next
    task times it again (a busy start can last the whole first calibration; the busy-start runs of 2026-12-07
    measured 31 and 55 tokens/s beside two spinning processes that ended seconds later, and then fitted no step
    into any task until three in a row had made the worker re-measure)."""
    speed = calibrated.get("train_tokens_per_s", 0.0)
    far = 0 < speed < preset_rates(cfg).train_tokens_per_s / RETIME_BELOW
    if far:
        log.warning("task %s: training measured at %.0f tokens/s, over %gx below the preset's: the next task times "
                    "it again", task.id, speed, RETIME_BELOW)
    return far


def _kept_from_training(cfg: Config, size: B.TaskSize, full: B.Work, work: B.Work, share: float) -> bool:
    """Whether the measured speeds fitted no TTT step into `share` where the preset's would have fitted one."""
    preset = replace(preset_rates(cfg), search_s=0.0)
    return bool(full.ttt_steps and not work.ttt_steps and
                B.fit_work(size, full, preset, share, cfg.run.min_views, room=cfg.run.room).ttt_steps)


def _count_untrained(w: Solver, task: Task, cfg: Config, size: B.TaskSize, full: B.Work, work: B.Work,
                     share: float) -> None:
    """Count the tasks in a row whose `share` the measured speeds fitted without a TTT step where the preset's would
    have fitted one (a task the search solved, planned with run.solved_share, fits none either way: neither counted
    nor ending the row); after RECALIBRATE_AFTER of them the next task times the speeds again (a speed measured on a
    busy start must not keep TTT out of the rest of the run)."""
    locked = _kept_from_training(cfg, size, full, work, share)
    if locked or work.ttt_steps:  # a task no speed would train (too short a share) leaves the count as it is
        w.untrained_in_row = w.untrained_in_row + 1 if locked else 0
    if w.untrained_in_row >= RECALIBRATE_AFTER and cfg.run.calibrate:
        log.warning("task %s: %d tasks in a row fitted no TTT step at the measured speeds (the preset's would have "
                    "fitted one): the next task times the speeds again", task.id, w.untrained_in_row)
        w.recalibrate, w.untrained_in_row = True, 0


def _choose(table: list[Candidate], cfg: Config, task: Task, fallback, note: str) -> Choice:
    """The two attempts from a merged candidate table under infer.rule and infer.mix, and the task's invariants
    when infer.verify (fallback is the test input)."""
    extra = {"weight": cfg.infer.combined_weight} if cfg.infer.rule == "combined" else {}
    verify = invariants(task) if cfg.infer.verify and task.valid else None
    return choose_attempts(table, cfg.infer.rule, fallback, note, mix=cfg.infer.mix, verify=verify, **extra)


def predict_one(model, codec: Codec, task: Task, test_index: int, cfg: Config, deadline: float,
                stats: dict | None = None, known: list[Candidate] = ()) -> Choice:
    """Views, decoding, scoring and selection for one test input, over the model's candidates and the other sources'
    (`known`, which the model scores too); fallbacks when time or candidates run out. One prefill per view, which
    decoding and scoring both extend; the scoring views are the decoding views (score_views > num_views adds views,
    fewer scores under the first score_views)."""
    fallback = task.test_inputs[test_index]
    if time.monotonic() >= deadline:
        return _choose(list(known), cfg, task, fallback, "no time left for the model")
    decode_deadline = time.monotonic() + cfg.infer.decode_share * (deadline - time.monotonic())
    table, decoded = _decode_and_score(model, codec, task, test_index, cfg, decode_deadline, deadline, stats, known)
    return _choose(table, cfg, task, fallback, "" if decoded else "no candidate decoded in time")


def _decode_and_score(model, codec: Codec, task: Task, test_index: int, cfg: Config, decode_deadline: float,
                      deadline: float, stats: dict | None, known: list[Candidate]) -> tuple[list[Candidate], int]:
    """The merged candidate table of one test input (the other sources' first, then the model's), every row scored
    over one prefill per view (solver.generate.SharedViews); and how many grids the model decoded."""
    from solver import generate as G
    icfg, seed = cfg.infer, cfg.run.seed
    views = G.make_views(task, test_index, codec, max(icfg.num_views, icfg.score_views), seed, icfg)
    shared = G.SharedViews(model, codec, views, batch_size=icfg.batch_size, stats=stats)
    decoded = shared.decode(icfg, decode_deadline, seed=seed, first_deadline=deadline)  # the first view: all of it
    table = merge_tables([list(known), candidate_table([(d.view, views[d.view].group, d.grid, d.logp)
                                                        for d in decoded])])
    if table and icfg.score_views > 0:
        scores = shared.score([c.grid for c in table], icfg.score_views, deadline, icfg.score_batch_size)
        for c, column in zip(table, scores.T):
            c.scores = [float(x) for x in column]
    return table, len(decoded)


def predict(loaded, task: Task, cfg: Config, deadline: float, stats: dict | None = None,
            known: list[list[Candidate]] | None = None) -> list[Choice]:
    """Two attempts per test input of a task (`loaded` is a model.Loaded), over the model's candidates and the other
    sources' (`known`, one table per test input); each test input gets an equal share of the time left. Invalid
    tasks and a past deadline get fallback attempts without touching the model."""
    if not task.valid:
        return [no_choice(g, f"invalid task: {task.problem}") for g in task.test_inputs]
    known = known or [[] for _ in task.test_inputs]
    model = loaded.model
    was_training = model.training
    model.eval()
    try:
        out = []
        for i in range(len(task.test_inputs)):
            share = time.monotonic() + (deadline - time.monotonic()) / (len(task.test_inputs) - i)
            fitted, note = prompt_within_context(model, loaded.codec, task, i, cfg)
            choice = predict_one(model, loaded.codec, fitted, i, cfg, min(share, deadline), stats, known[i])
            choice.note = "; ".join(n for n in (note, choice.note) if n)
            out.append(choice)
        return out
    finally:
        model.train(was_training)


def prompt_within_context(model, codec: Codec, task: Task, test_index: int, cfg: Config) -> tuple[Task, str]:
    """The task with context demos dropped (largest first, as in training; never the query) until a prompt and the
    longest answer worth generating fit the model's context (or infer.max_prompt_tokens); logged, and named in the
    note the report shows."""
    from solver.data import fit_prompt
    from solver.plan import plausible_shape
    limit = cfg.infer.max_prompt_tokens or getattr(getattr(model, "config", None), "max_position_embeddings", 0)
    if not limit:
        return task, ""
    rows, cols = plausible_shape(task.train, task.test_inputs[test_index])
    fitted, dropped = fit_prompt(task, test_index, codec, limit - codec.answer_length(rows, cols))
    if not dropped:
        return task, ""
    note = (f"test {test_index}: prompt trimmed to the {limit}-token context: {dropped} of {len(task.train)} demos "
            f"dropped ({codec.num_tokens(task.train, task.test_inputs[test_index])} -> "
            f"{codec.num_tokens(fitted.train, task.test_inputs[test_index])} tokens)")
    log.warning("task %s: %s", task.id, note)
    return fitted, note


# ---------------------------------------------------------------------------------------------------------------
# A worker's jobs: the solve function built once, faults and retries

def import_object(spec: str):
    """The object named 'package.module:attribute'."""
    module, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"'{spec}' is not 'module:function'")
    return getattr(importlib.import_module(module), attr)


def make_handler(solver_spec: str, cfg: dict, worker: str = "") -> Callable[[Job], TaskResult]:
    """Build the solve function once (in the worker: loads the model) and return the job handler."""
    t0 = time.monotonic()
    setup_logging()  # a spawned worker: log lines as the parent does
    worker = worker or f"pid{os.getpid()}"
    solve = (import_object(solver_spec) if solver_spec else Solver.build)(Config.from_dict(cfg))
    log.info("worker %s ready in %.1fs (%s)", worker, time.monotonic() - t0, solver_spec or "Solver")
    return partial(handle_job, solve, worker)


STICKY_DEVICE_ERRORS = ("CUDA error", "device-side assert", "illegal memory access", "CUBLAS_STATUS",
                        "unspecified launch failure")


def is_sticky_device_error(e: Exception) -> bool:
    """Whether an exception leaves the process's CUDA context unusable (every later call fails): not out of memory."""
    text = str(e)
    return "out of memory" not in text and any(s in text for s in STICKY_DEVICE_ERRORS)


def _free_memory() -> str:
    """Give back what a failed attempt held on the GPU (CUDA out of memory); nothing without torch loaded. Returns
    '' or the error empty_cache raised: on a broken device (a sticky error) it raises too, which is never let out."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return ""
    try:
        torch.cuda.empty_cache()
    except Exception as e:  # the device itself is gone: the caller reports the worker broken
        return f"{type(e).__name__}: {e}"
    return ""


def _broken_after(job: Job, error: str, sticky: bool, level: int, t0: float, worker: str) -> None:
    """Raise WorkerBroken (with the task's fallback result) when `error` was sticky or freeing memory fails now;
    the sticky check comes first, so empty_cache is never called on a device known to be broken."""
    freed = "" if sticky else _free_memory()
    if sticky or freed:
        if freed:
            log.error("task %s: freeing GPU memory failed (%s): the device is unusable", job.id, freed)
            error = f"{error} | empty_cache: {freed}"
        raise WorkerBroken(fallback_result(job.task, "failed", level, error, time.monotonic() - t0, worker),
                           f"sticky device error in worker {worker}: {error}")


FIRST = int(B.Level.FULL)  # the level a job's first call runs at: the full config, which the solver fits to its time


def handle_job(solve, worker: str, job: Job) -> TaskResult:
    """Solve one task (`_solve_job`), with the peak GPU memory it took (None on a CPU) in its result."""
    reset_gpu_peak()
    out = _solve_job(solve, worker, job)
    out.gpu_peak_mib = gpu_peak_mib()
    return out


def _solve_job(solve, worker: str, job: Job) -> TaskResult:
    """Solve one task; a raise is logged with its traceback and retried once with its retry config (no TTT, few
    views: solver.plan.retry_config) when job.retry, then the task gets its fallback attempts. The result's `error`
    names the exception(s). A sticky device error (or a device that fails to free memory) raises WorkerBroken with
    the task's fallback result."""
    t0 = time.monotonic()
    # the search pass's tables and the run's speeds, where the job carries them (to the package's Solver only)
    extra = {k: getattr(job, k) for k in ("known", "rates") if getattr(job, k) is not None}
    if job.may_defer:
        extra["may_defer"] = True
    cfg = Config.from_dict(job.cfg)
    try:
        result = solve(job.task, cfg, job.deadlines, **extra)
        return finish(job.task, result, "ok", FIRST, time.monotonic() - t0, worker)
    except Exception as e:
        first, sticky = f"{type(e).__name__}: {e}", is_sticky_device_error(e)
        log.error("task %s raised (%s)%s", job.id, first,
                  "; retrying without TTT" if job.retry and not sticky else ": fallback attempts", exc_info=True)
    _broken_after(job, first, sticky, FIRST, t0, worker)
    if not job.retry:
        return fallback_result(job.task, "failed", FIRST, first, time.monotonic() - t0, worker)
    retry_cfg, retry_level = retry_config(job.task, cfg)
    try:
        result = solve(job.task, retry_cfg, B.Deadlines(time.monotonic(), job.deadlines.end), **extra)
        return replace(finish(job.task, result, "retried", retry_level, time.monotonic() - t0, worker), error=first)
    except Exception as e:
        second = f"{type(e).__name__}: {e}"
        log.error("task %s raised again (%s): fallback attempts", job.id, second, exc_info=True)
        _broken_after(job, f"{first} | retry: {second}", is_sticky_device_error(e), retry_level, t0, worker)
        return fallback_result(job.task, "failed", retry_level, f"{first} | retry: {second}",
                                time.monotonic() - t0, worker)
