"""The one place that turns a task and the config into the planner's numbers (solver.budget), and work back into a
config: a task's size in tokens, its full work, the preset's speeds, and the config a task runs with.

Used by the run (shares and deadlines in the parent) and by the pipeline (re-fitting a task's work to its share with
the speeds its worker measured). Knows nothing of models, processes or files.
"""
from __future__ import annotations

import math

from solver import budget as B
from solver.codec import PromptFormat
from solver.config import Config, parse_sources
from solver.tasks import Task


def task_size(task: Task, codec: PromptFormat) -> B.TaskSize:
    """Token counts of a task's training sequence, decoding prompt and expected output."""
    if not task.valid or not task.train:
        return B.TaskSize(0, 0, 0, task.num_tests)
    *context, (qi, qo) = task.train
    out = max(codec.answer_length(*b.shape) for _, b in task.train)
    prompt = max((codec.num_tokens(task.train, q) for q in task.test_inputs), default=0)
    return B.TaskSize(codec.num_tokens(context, qi, qo), prompt, out, task.num_tests)


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
    """The preset's speeds: the planner's first guess, until tasks measure them."""
    r = cfg.run
    search = r.search_seconds if "search" in parse_sources(r.sources) else 0.0
    return B.Rates(r.train_tokens_per_s, r.prefill_tokens_per_s, r.decode_tokens_per_s, r.task_overhead_s,
                   search_s=search)


def config_for(cfg: Config, work: B.Work, full: B.Work) -> Config:
    """The config a task runs with to do `work` (solver.budget.fit_work) instead of `full`."""
    if work == full:
        return cfg
    infer = {"num_views": work.views, "score_views": min(cfg.infer.score_views, work.views)}
    if work.shared_adapter:
        ttt = {"use_shared_adapter": True}
    elif work.ttt_steps == 0:
        ttt = {"enabled": False}
    else:
        ttt = {"max_steps": work.ttt_steps}
    return cfg.override(ttt=ttt, infer=infer)
