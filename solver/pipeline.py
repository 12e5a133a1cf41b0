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
from functools import partial

from solver.codec import Codec
from solver.config import Config
from solver.results import Deadlines, TaskResult
from solver.select import Choice, candidate_table, choose_attempts, no_choice
from solver.tasks import Task

log = logging.getLogger(__name__)


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


def _solve_pipeline(loaded, adapter, shared, related: tuple, task: Task, cfg: Config,
                    deadlines: Deadlines) -> TaskResult:
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
        found = predict(Loaded(model, loaded.codec, loaded.spec), task, cfg, deadlines.end, stats)
    attempts = [(a.attempt_1, a.attempt_2) if a.candidates else None for a in found]
    return TaskResult(attempts, ttt_steps=steps, candidates=sum(len(a.candidates) for a in found),
                      views=cfg.infer.num_views, ttt_seconds=t1 - t0, predict_seconds=time.monotonic() - t1,
                      note="; ".join(a.note for a in found if a.note), adapter_from=adapter_from)


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
            out.append(predict_one(model, loaded.codec, task, i, cfg, min(share, deadline), stats))
        return out
    finally:
        model.train(was_training)
