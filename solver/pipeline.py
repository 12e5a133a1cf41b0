"""One task end to end: the default solve function of the run.

`pipeline(cfg)` runs once per worker: it loads the model and attaches the LoRA adapter (and, where those options are
on, builds the neighbour library and the adapter store of solver.embed / solver.reuse). The `solve(task, cfg,
deadlines)` it returns trains the adapter on the task until the TTT deadline (solver.ttt; related tasks' sequences
built here and passed in), then predicts every test input: views, decoding and scoring (solver.generate), selection
(solver.select), fallbacks when time or candidates run out. Knows nothing of planning, other tasks' results, the
submission file or reports.
"""
from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from functools import partial

from solver import budget as B
from solver.codec import Codec
from solver.config import Config
from solver.plan import config_for, full_work, preset_rates, task_size
from solver.results import Deadlines, TaskResult
from solver.select import Choice, candidate_table, choose_attempts, no_choice
from solver.tasks import Task

log = logging.getLogger(__name__)


@dataclass
class Worker:
    """What a worker keeps across tasks: the model, its adapter (and the shared adapter's state), the related-task
    options, and the speeds it measured (None until it calibrated)."""
    cfg: Config
    loaded: object
    adapter: object = None
    shared: dict | None = None
    related: tuple = (None, None)
    rates: B.Rates | None = None


def pipeline(cfg: Config):
    """Load the model (and attach a LoRA adapter when TTT is on) once; return solve(task, cfg, deadlines).

    With cfg.run.shared_adapter, that adapter's weights are read once too; a task whose share fits no TTT step
    predicts with them instead of the base model.
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
    return partial(_solve_pipeline, Worker(cfg, loaded, adapter, shared, _related(cfg, loaded, adapter)))


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
    res = train_task(adapter, task, loaded.codec, cfg.ttt, deadlines.ttt, cfg.run.seed, extra=extra, start=start)
    if reuse is not None and res.steps and math.isfinite(res.loss):
        reuse.keep(task.id, vec, adapter.snapshot())
    return res, decision.describe() if decision is not None else ""


def fit_to_share(w: Worker, task: Task, cfg: Config, deadlines: Deadlines) -> tuple[Config, Deadlines, B.Work]:
    """The task's work fitted to the time to its deadline at this worker's speeds (measured, else the preset's):
    prediction's time reserved first, TTT until the rest is spent (solver.budget.fit_work). A planned job is fitted
    from the run's full configuration (the parent planned it with the speeds it knew); a retry (run.replan off)
    keeps its smaller configuration, and only its views are fitted."""
    rates = w.rates or preset_rates(cfg)
    if cfg.run.replan:
        cfg = w.cfg
    size, full = task_size(task, w.loaded.codec), full_work(task, cfg)
    now = time.monotonic()
    share = max(0.0, deadlines.end - now)
    work = B.fit_work(size, full, rates, share, cfg.run.min_views, w.shared is not None)
    ttt_end = now + max(0.0, share - B.predict_seconds(size, work.views, rates)) if work.ttt_steps else now
    log.info("task %s: %.0fs: %d of %d TTT steps, %d of %d views", task.id, share, work.ttt_steps, full.ttt_steps,
             work.views, full.views)
    return config_for(cfg, work, full), Deadlines(ttt_end, deadlines.end), full


def calibrate(w: Worker, task: Task, cfg: Config) -> B.Rates:
    """Time one TTT step on the task's shortest training sequence and a prefill and a few decoding steps of its first
    view (the adapter is reset after): the speeds this worker plans with (solver.budget.cautious_rates: a slower one
    whole, a faster one halfway from the preset's) until its tasks measure their own. Cheap on purpose: it is paid
    from the first task's share."""
    from solver.data import build_examples
    from solver.generate import View, decode_batch, make_views
    from solver.ttt import train
    rates, codec = preset_rates(cfg), w.loaded.codec
    measured = {}
    if w.adapter is not None and cfg.ttt.enabled:
        shortest = min(build_examples(task, codec, cfg.ttt, cfg.run.seed), key=len, default=None)
        if shortest is not None:
            res = train(w.adapter, [shortest], replace(cfg.ttt, max_steps=1, batch_size=1), codec.pad)
            w.adapter.reset()
            if res.steps:
                measured["train_tokens_per_s"] = res.tokens / max(res.seconds, 1e-6)
    model = w.adapter.model if w.adapter is not None else w.loaded.model
    view = make_views(task, 0, codec, 1, cfg.run.seed, cfg.infer)[0]
    stats: dict = {}
    model.eval()
    decode_batch(model, codec, [View(view.transform, view.prompt, (1, 2))], time.monotonic() + 600, stats=stats)
    if stats.get("prefill_s"):
        measured["prefill_tokens_per_s"] = len(view.prompt) / stats["prefill_s"]
    if stats.get("decode_s") and stats.get("tokens"):
        measured["decode_tokens_per_s"] = stats["tokens"] / stats["decode_s"]
    log.info("task %s: calibrated %s", task.id, ", ".join(f"{k} {v:.0f}" for k, v in measured.items()))
    return B.cautious_rates(rates, measured)  # slower than planned: believed whole; faster: halfway


def measured_speeds(size: B.TaskSize, steps: int, batch: int, ttt_s: float, views: int, predict_s: float,
                    stats: dict) -> dict[str, float]:
    """A finished task's speeds in the planner's terms: the TTT steps' time per planned token, the decoding phase's
    generated tokens, and everything else in prediction (prefills, scoring) as an effective prefill speed."""
    out = {}
    if steps and ttt_s > 0:
        out["train_tokens_per_s"] = steps * batch * size.train_tokens / ttt_s
    decode_s = stats.get("decode_s", 0.0)
    if decode_s > 0 and stats.get("tokens"):
        out["decode_tokens_per_s"] = stats["tokens"] / decode_s
    if views and predict_s > decode_s:
        out["prefill_tokens_per_s"] = views * size.num_tests * size.prompt_tokens / (predict_s - decode_s)
    return out


def _solve_pipeline(w: Worker, task: Task, cfg: Config, deadlines: Deadlines) -> TaskResult:
    from solver.model import Loaded
    t0, calibration_s = time.monotonic(), 0.0
    if cfg.run.calibrate and w.rates is None and task.valid:
        w.rates = calibrate(w, task, cfg)
        calibration_s = time.monotonic() - t0
    cfg, deadlines, full = fit_to_share(w, task, cfg, deadlines)
    steps, model, adapter_from, adapter = 0, w.loaded.model, "", w.adapter
    if adapter is not None:
        model = adapter.model
        if cfg.ttt.shared_adapter:
            if w.shared is None:
                raise ValueError("level 'shared adapter' without cfg.run.shared_adapter")
            adapter.restore(w.shared)
        elif cfg.ttt.enabled:
            res, adapter_from = _train_or_reuse(adapter, w.related, w.loaded, task, cfg, deadlines)
            if res.steps and not math.isfinite(res.loss):
                raise FloatingPointError(f"TTT loss is {res.loss} after {res.steps} steps")
            steps = res.steps
        adapter.eval_mode()
    t1 = time.monotonic()
    stats: dict = {}
    base_only = adapter is not None and not cfg.ttt.enabled and not cfg.ttt.shared_adapter
    with adapter.disabled() if base_only else nullcontext():
        found = predict(Loaded(model, w.loaded.codec, w.loaded.spec), task, cfg, deadlines.end, stats)
    t2 = time.monotonic()
    speeds = measured_speeds(task_size(task, w.loaded.codec), steps, cfg.ttt.batch_size, t1 - t0 - calibration_s,
                             cfg.infer.num_views, t2 - t1, stats)
    w.rates = B.update_rates(w.rates or preset_rates(cfg), speeds)
    attempts = [(a.attempt_1, a.attempt_2) if a.candidates else None for a in found]
    did = B.Work(steps, cfg.ttt.batch_size, cfg.infer.num_views, cfg.ttt.shared_adapter)
    return TaskResult(attempts, level=int(B.level_of(did, full)), ttt_steps=steps, candidates=sum(len(a.candidates) for a in found),
                      views=cfg.infer.num_views, ttt_seconds=t1 - t0, predict_seconds=t2 - t1,
                      note="; ".join(a.note for a in found if a.note), adapter_from=adapter_from,
                      calibration_seconds=calibration_s, **speeds)


def predict_one(model, codec: Codec, task: Task, test_index: int, cfg: Config, deadline: float,
                stats: dict | None = None, *, shared_prefill: bool = True) -> Choice:
    """Views, decoding, scoring and selection for one test input; fallbacks when time or candidates run out.

    shared_prefill: one prefill per view, which decoding and scoring both extend; the scoring views are the decoding
    views (score_views > num_views adds views, fewer scores under the first score_views). False: the earlier path
    (decoding prefills its views, scoring prefills seed+1 views of its own), kept for `bench infer`.
    """
    icfg = cfg.infer
    fallback = task.test_inputs[test_index]
    if time.monotonic() >= deadline:
        return no_choice(fallback, "no time left")
    decode_deadline = time.monotonic() + icfg.decode_share * (deadline - time.monotonic())
    decode = _decode_and_score_shared if shared_prefill else _decode_and_score_separately
    table = decode(model, codec, task, test_index, cfg, decode_deadline, deadline, stats)
    note = "" if table else "no candidate decoded in time"
    extra = {"weight": icfg.combined_weight} if icfg.rule == "combined" else {}
    return choose_attempts(table, icfg.rule, fallback, note, **extra)


def _decode_and_score_shared(model, codec: Codec, task: Task, test_index: int, cfg: Config, decode_deadline: float,
                             deadline: float, stats: dict | None) -> list:
    """The candidate table of one test input, scored, over one prefill per view (solver.generate.SharedViews)."""
    from solver import generate as G
    icfg, seed = cfg.infer, cfg.run.seed
    views = G.make_views(task, test_index, codec, max(icfg.num_views, icfg.score_views), seed, icfg)
    shared = G.SharedViews(model, codec, views, batch_size=icfg.batch_size, stats=stats)
    decoded = shared.decode(icfg, decode_deadline, seed=seed)
    table = candidate_table([(d.view, views[d.view].group, d.grid, d.logp) for d in decoded])
    if table and icfg.score_views > 0:
        scores = shared.score([c.grid for c in table], icfg.score_views, deadline, icfg.score_batch_size)
        for c, column in zip(table, scores.T):
            c.scores = [float(x) for x in column]
    return table


def _decode_and_score_separately(model, codec: Codec, task: Task, test_index: int, cfg: Config,
                                 decode_deadline: float, deadline: float, stats: dict | None) -> list:
    """The candidate table of one test input, scored, the earlier way: decoding and scoring prefill their own views."""
    from solver import generate as G
    icfg, seed = cfg.infer, cfg.run.seed
    views = G.make_views(task, test_index, codec, icfg.num_views, seed, icfg)
    decoded = G.decode_views(model, codec, views, icfg, decode_deadline, seed=seed, stats=stats)
    table = candidate_table([(d.view, views[d.view].group, d.grid, d.logp) for d in decoded])
    if table and icfg.score_views > 0:
        score_set = G.make_views(task, test_index, codec, icfg.score_views, seed + 1, icfg)
        scores = G.score_candidates(model, codec, score_set, [c.grid for c in table], deadline,
                                    icfg.score_batch_size, stats)
        for c, column in zip(table, scores.T):
            c.scores = [float(x) for x in column]
    return table


def predict(loaded, task: Task, cfg: Config, deadline: float, stats: dict | None = None) -> list[Choice]:
    """Two attempts per test input of a task (`loaded` is a model.Loaded); each test input gets an equal share of
    the time left. Invalid tasks and a past deadline get fallback attempts without touching the model."""
    if not task.valid:
        return [no_choice(g, f"invalid task: {task.problem}") for g in task.test_inputs]
    model = loaded.model
    was_training = model.training
    model.eval()
    try:
        out = []
        for i in range(len(task.test_inputs)):
            share = time.monotonic() + (deadline - time.monotonic()) / (len(task.test_inputs) - i)
            fitted, note = prompt_within_context(model, loaded.codec, task, i, cfg)
            choice = predict_one(model, loaded.codec, fitted, i, cfg, min(share, deadline), stats)
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
    from solver.generate import plausible_shape
    limit = cfg.infer.max_prompt_tokens or getattr(getattr(model, "config", None), "max_position_embeddings", 0)
    if not limit:
        return task, ""
    rows, cols = plausible_shape(task.train, task.test_inputs[test_index])
    fitted, dropped = fit_prompt(task, test_index, codec, limit - (rows * (cols + 1) + 1))
    if not dropped:
        return task, ""
    note = (f"test {test_index}: prompt trimmed to the {limit}-token context: {dropped} of {len(task.train)} demos "
            f"dropped ({codec.num_tokens(task.train, task.test_inputs[test_index])} -> "
            f"{codec.num_tokens(fitted.train, task.test_inputs[test_index])} tokens)")
    log.warning("task %s: %s", task.id, note)
    return fitted, note
