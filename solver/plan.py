"""The one place that turns a task and the config into the planner's numbers (solver.budget), and work back into a
config: a task's size in tokens, its full work, the preset's speeds, and the configs a task runs with (its fitted
work's, its retry's).

Used by the run (each task's share and deadline, in the parent) and by the worker that runs the task
(solver.pipeline): it fits the task's work to the time to its deadline, with the speeds it measured (`fit_to_share`),
and builds the retry's config (`retry_config`) where the first try raised. Knows nothing of models, processes or
files.
"""
from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import NamedTuple

from solver import budget as B
from solver.codec import PromptFormat
from solver.config import MODEL, Config, parse_sources
from solver.shapes import deduce_from
from solver.tasks import MAX_SIDE, Grid, Task


def task_size(task: Task, codec: PromptFormat, max_train_tokens: int = 0) -> B.TaskSize:
    """Token counts of a task's training sequence (at most `max_train_tokens`, ttt.max_tokens, where TTT cuts its
    sequences: the planner's tokens are the ones trained on), decoding prompt and output: the longest answer the
    decoder may generate for a test input (its plausible shape, either way round: a view may transpose it), since a
    model that does not end its grid early (an untrained one rarely does) decodes that far, and its first answer must
    fit. Where the demos make the shape certain, that is the answer's exact length, end included (the decoder forces
    the shape: infer.force_shape), in the longer of its two orientations."""
    if not task.valid or not task.train:
        return B.TaskSize(0, 0, 0, task.num_tests)
    *context, (qi, qo) = task.train
    caps = [plausible_shape(task.train, q) for q in task.test_inputs]
    out = max((max(codec.answer_length(r, c), codec.answer_length(c, r)) for r, c in caps), default=0)
    prompt = max((codec.num_tokens(task.train, q) for q in task.test_inputs), default=0)
    train = codec.num_tokens(context, qi, qo)
    return B.TaskSize(min(train, max_train_tokens) if max_train_tokens > 0 else train, prompt, out, task.num_tests)


def plausible_shape(train: list[tuple[Grid, Grid]], query: Grid) -> tuple[int, int]:
    """The largest output shape worth generating, (rows, cols), at most 30x30.

    The shape solver.shapes deduces for the query where it is certain (every rule that holds on the demos gives it;
    the search ranks by the same deduction). Else the query's own shape when every demo keeps its shape. Else per
    side: the largest size predicted for the query by the simple rules every demo obeys (a fixed size, a fixed ratio
    to either input side when it gives whole cells, a fixed difference from either input side). When a side has no such rule, the shape depends on
    content: a square as large as the query, as the demo outputs extrapolated one step (largest + (largest -
    smallest)) and as the query scaled by the largest demo ratio. Chosen on the training splits less their protected
    tasks, whose every test output it admits (tests/test_reachable.py).
    """
    def predicted(axis: int) -> list[int]:
        outs = [b.shape[axis] for _, b in train]
        sizes = [outs[0]] if len(set(outs)) == 1 else []
        for src in (axis, 1 - axis):
            pairs = [(b.shape[axis], a.shape[src]) for a, b in train]
            o0, i0 = pairs[0]
            if all(o * i0 == o0 * i for o, i in pairs) and query.shape[src] * o0 % i0 == 0:
                sizes.append(query.shape[src] * o0 // i0)
            if len({o - i for o, i in pairs}) == 1:
                sizes.append(query.shape[src] + o0 - i0)
        return [s for s in sizes if s >= 1]

    deduced = deduce_from([a for a, _ in train], [b for _, b in train], [query])
    if deduced.certain[0]:
        return deduced.shapes[0]
    if all(a.shape == b.shape for a, b in train):
        return query.shape[0], query.shape[1]
    rows, cols = predicted(0), predicted(1)
    if rows and cols:
        return min(max(rows), MAX_SIDE), min(max(cols), MAX_SIDE)
    side = 0
    for axis in (0, 1):
        outs = [b.shape[axis] for _, b in train]
        scaled = max(-(-query.shape[axis] * b.shape[axis] // a.shape[axis]) for a, b in train)  # ceil
        side = max(side, 2 * max(outs) - min(outs), query.shape[axis], scaled)
    return min(side, MAX_SIDE), min(side, MAX_SIDE)


def ttt_examples(task: Task, cfg: Config) -> int:
    """Training sequences TTT builds for a task (before de-duplication): demos x transforms, capped."""
    k = len(task.train)
    n = k * (cfg.ttt.num_transforms if cfg.ttt.augment else 1)
    return max(0, min(cfg.ttt.max_examples, n))


def full_work(task: Task, cfg: Config) -> B.Work:
    """The work a task does when time is no object: every TTT step of its data (capped by ttt.max_steps), every view."""
    steps = 0
    if cfg.ttt.enabled and not cfg.ttt.use_shared_adapter:
        steps = math.ceil(ttt_examples(task, cfg) / max(1, cfg.ttt.batch_size)) * cfg.ttt.epochs
        steps = min(steps, cfg.ttt.max_steps) if cfg.ttt.max_steps > 0 else steps
    return B.Work(steps, cfg.ttt.batch_size, cfg.infer.num_views, cfg.ttt.use_shared_adapter)


def preset_rates(cfg: Config) -> B.Rates:
    """The preset's speeds: the planner's first guess, until tasks measure them (run.search_seconds where a source
    other than the model is named)."""
    r = cfg.run
    search = r.search_seconds if any(n != MODEL for n in parse_sources(r.sources)) else 0.0
    return B.Rates(r.train_tokens_per_s, r.prefill_tokens_per_s, r.decode_tokens_per_s, r.task_overhead_s,
                   search_s=search)


def config_for(cfg: Config, work: B.Work, full: B.Work) -> Config:
    """The config a task runs with to do `work` (solver.budget.fit_work) instead of `full`: its views, TTT off or the
    shared adapter where the work has no step of its own, and its batch where the floor's one step takes fewer
    sequences. The step count is the plan's (`Fitted.steps`), never written here: ttt.max_steps stays the user's
    cap."""
    if work == full:
        return cfg
    infer = {"num_views": work.views, "score_views": min(cfg.infer.score_views, work.views)}
    if work.shared_adapter:
        ttt = {"use_shared_adapter": True}
    elif work.ttt_steps == 0:
        ttt = {"enabled": False}
    else:
        ttt = {"batch_size": work.batch_size} if work.batch_size != cfg.ttt.batch_size else {}
    return cfg.override(ttt=ttt, infer=infer)


def retry_config(task: Task, cfg: Config) -> tuple[Config, int]:
    """The config a task's retry runs with (no TTT, at most run.min_views views: the full work's other settings)
    and its level (solver.budget.Level)."""
    full = full_work(task, cfg)
    retry = B.Work(0, full.batch_size, min(full.views, max(1, cfg.run.min_views)))
    return config_for(cfg, retry, full), int(B.level_of(retry, full))


class Fitted(NamedTuple):
    """A task's work fitted to its time: the config it runs with, its deadlines (the end of TTT set), the full work
    and the fitted one (`budget.level_of(work, full)` names it), and the task's size it was fitted with."""
    cfg: Config
    deadlines: B.Deadlines
    full: B.Work
    work: B.Work
    size: B.TaskSize

    @property
    def level(self) -> B.Level:
        return B.level_of(self.work, self.full)

    @property
    def steps(self) -> int:
        """The TTT steps the fit allows (solver.ttt.train stops there, and at the user's ttt.max_steps): the fitted
        work's where the fit changed the work, 0 (no limit of the plan's) for the full work: every step its data
        gives."""
        return self.work.ttt_steps if self.work != self.full else 0


def fit_to_share(task: Task, cfg: Config, codec: PromptFormat, rates: B.Rates, deadlines: B.Deadlines,
                 shared_adapter: bool = False, now: float | None = None) -> Fitted:
    """A task's work fitted, in its worker, to the time from `now` to `deadlines.end` at `rates`, prediction's time
    reserved first and TTT until the rest is spent (solver.budget.fit_work; where one step of ttt.batch_size does
    not fit, the config's batch is the smaller one that does), from the work `cfg` asks for (the run's
    full config; a retry's smaller one, retry_config, keeps its size and only its views are fitted). Fitted when the
    model starts:
    the other candidate sources ran already, so their time (`rates.search_s`) is not counted again."""
    now = time.monotonic() if now is None else now
    rates = replace(rates, search_s=0.0)
    size, full = task_size(task, codec, cfg.ttt.max_tokens), full_work(task, cfg)
    share = max(0.0, deadlines.end - now)
    work = B.fit_work(size, full, rates, share, cfg.run.min_views, shared_adapter, cfg.run.room)
    ttt_end = now + B.ttt_seconds(size, work, rates, share)
    fitted = deadlines._replace(ttt=ttt_end, train_tokens_per_s=rates.train_tokens_per_s)
    return Fitted(config_for(cfg, work, full), fitted, full, work, size)
