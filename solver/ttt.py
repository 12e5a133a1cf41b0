"""Per-task test-time training: the loop that trains an adapter on one task's sequences before its deadline.

Training: length-bucketed batches of solver.data's sequences, AdamW with warm-up and a schedule, the shared
`solver.train.train_step` (logits only at trained positions), stopping cleanly before a caller's deadline (a
`time.monotonic()` value); the one loop (`transformers.Trainer` was measured against it on a quiet CPU: 154 against
158 tokens/s, and removed). Extra sequences (a related task's, built by the caller) can join a task's own.

Knows nothing of decoding, voting, task embeddings or the run's budget; the adapter's state lives in solver/adapter.py.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np

from solver.budget import TrainEnd
from solver.codec import Codec, Encoded
from solver.config import TTTConfig
from solver.data import build_examples, collate, length_batches, mix
from solver.tasks import Task
from solver.precision import make_precision
from solver.train import lr_factor, make_optimizer, train_step

log = logging.getLogger(__name__)


# training -----------------------------------------------------------------------------------------------------------
@dataclass
class TTTResult:
    """What one training call did."""
    steps: int = 0
    examples: int = 0          # sequences trained on (repeats across epochs counted)
    tokens: int = 0            # real tokens forwarded (padding excluded)
    padded_tokens: int = 0     # tokens forwarded including padding
    trained_tokens: int = 0    # tokens with loss
    loss: float = float("nan")  # mean loss of the last step
    first_loss: float = float("nan")
    seconds: float = 0.0
    stopped_by_deadline: bool = False
    last_lr: float = float("nan")  # the learning rate of the last step (of the first parameter group)

    def to_dict(self) -> dict:
        return asdict(self)

    def add(self, step, examples: int) -> None:
        """Count one optimiser step (a solver.train.StepResult over `examples` sequences)."""
        self.loss = step.loss
        self.first_loss = step.loss if self.steps == 0 else self.first_loss
        self.steps += 1
        self.examples += examples
        self.tokens += step.tokens
        self.padded_tokens += step.padded_tokens
        self.trained_tokens += step.trained_tokens


def adapter_optimizer(adapter, cfg: TTTConfig):
    """The adapter's parameter groups (LoRA at ttt.lr, trained codec rows at ttt.embedding_lr) under the one AdamW
    builder (solver.train.make_optimizer)."""
    return make_optimizer(adapter.param_groups(cfg.lr, cfg.embedding_lr), cfg)


def _time_left(deadline: float | None, step_seconds: float) -> bool:
    """Whether one more step (as long as the slowest so far) ends before the deadline."""
    return deadline is None or time.monotonic() + step_seconds < deadline


def schedule_progress(step: int, total: int, start: float, deadline: float | None, slowest: float) -> float:
    """How far training will be at the end of step `step` (0-based) of at most `total`: the larger of the steps
    and the time used up; 1.0 for the last step that will run (the last of `total`, or the last one the deadline
    leaves room for), so that the schedule ends at its final rate whenever training stops."""
    if step >= total - 1 or (step > 0 and not _time_left(deadline, 2 * slowest)):
        return 1.0
    p = (step + 1) / total
    if deadline is not None and deadline > start:
        p = max(p, (time.monotonic() + slowest - start) / (deadline - start))
    return min(1.0, p)


RECENT_STEPS = 3  # the steps whose speed says whether training runs slower than planned (TrainEnd)


def step_limit(cap: int, fitted: int) -> int | None:
    """The most optimiser steps a training call takes: the smaller of the user's cap and the plan's fitted count,
    each 0 for none; None when neither limits it."""
    return min((n for n in (cap, fitted) if n > 0), default=None)


def train(adapter, examples: list[Encoded], cfg: TTTConfig, pad_id: int, deadline: float | TrainEnd | None = None,
          seed: int = 0, progress: bool = False, steps: int = 0) -> TTTResult:
    """Train the adapter on the examples (no reset here); stop before the deadline (a `TrainEnd`: moved earlier
    after each step by the speed of the last RECENT_STEPS steps), after `steps` optimiser steps (the count a plan
    fitted to the task's time, solver.plan.Fitted.steps; 0: none) and at the user's cap cfg.max_steps (0: none),
    whichever comes first; the model ends in eval mode."""
    end = deadline if isinstance(deadline, TrainEnd) else None
    deadline = end.at() if end is not None else deadline
    if deadline is not None and time.monotonic() >= deadline:
        return TTTResult(stopped_by_deadline=True)
    from tqdm import tqdm
    res, start = TTTResult(), time.monotonic()
    if not examples:
        return res
    rng = np.random.default_rng(seed)
    lengths = [len(e) for e in examples]
    epochs = [length_batches(lengths, rng, rows=cfg.batch_size, tokens=cfg.batch_tokens or None)
              for _ in range(cfg.epochs)]
    batches = [b for epoch in epochs for b in epoch][:step_limit(cfg.max_steps, steps)]
    total = len(batches)
    opt = adapter_optimizer(adapter, cfg)
    long = bool(cfg.checkpoint_above_tokens) and max(lengths) > cfg.checkpoint_above_tokens
    adapter.train_mode(cfg.gradient_checkpointing or long)
    params = [p for g in opt.param_groups for p in g["params"]]
    device = adapter.device
    precision = make_precision(cfg, device, adapter.model, opt, params)
    opt = precision.optimizer  # loss-scaled in fp16
    slowest, rows = 0.0, cfg.batch_size  # rows: sequences per forward pass, halved after an out-of-memory error
    recent: list[tuple[int, float]] = []  # (tokens, seconds) of the last steps
    try:
        with tqdm(total=total, desc="ttt", disable=not progress, leave=False) as bar:
            for k, batch_idx in enumerate(batches):
                if not _time_left(deadline, slowest):
                    res.stopped_by_deadline = True
                    break
                t0 = time.monotonic()
                factor = lr_factor(schedule_progress(k, total, start, deadline, slowest), cfg.warmup,
                                   cfg.min_lr_ratio, cfg.schedule)
                for g in opt.param_groups:
                    g["lr"] = g["base_lr"] * factor
                step, rows = _step_fitting_memory(adapter, [examples[i] for i in batch_idx], rows, opt, params, cfg,
                                                  pad_id, device, precision.autocast)
                res.add(step, len(batch_idx))
                res.last_lr = opt.param_groups[0]["lr"]
                slowest = max(slowest, time.monotonic() - t0)
                if end is not None:
                    recent = (recent + [(step.tokens, time.monotonic() - t0)])[-RECENT_STEPS:]
                    deadline = end.at(sum(t for t, _ in recent) / max(1e-9, sum(s for _, s in recent)))
                bar.update(1)
                bar.set_postfix(loss=f"{res.loss:.3f}")
    finally:
        adapter.eval_mode()
        if precision.loss_scale is not None:
            precision.loss_scale.remove()
    res.seconds = time.monotonic() - start
    return res


def _step_fitting_memory(adapter, batch: list[Encoded], rows: int, opt, params: list, cfg: TTTConfig, pad_id: int,
                         device, autocast=None) -> tuple:
    """One optimiser step on the batch, `rows` sequences per forward pass (accumulated); on an out-of-memory error,
    the same step again with half the rows per pass, down to one (then the error stands). Returns (step, rows)."""
    import torch
    while True:
        micro = [collate(batch[i:i + rows], pad_id, device) for i in range(0, len(batch), max(1, rows))]
        try:
            return train_step(adapter.model, micro, opt, params, cfg.max_grad_norm, autocast), rows
        except torch.OutOfMemoryError:
            opt.zero_grad(set_to_none=True)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if rows <= 1:
                raise
            rows = max(1, min(rows, len(batch)) // 2)
            log.warning("TTT step out of memory: %d sequences per forward pass from now on (accumulated)", rows)


def train_task(adapter, task: Task, codec: Codec, cfg: TTTConfig, deadline: float | TrainEnd | None = None,
               seed: int = 0, progress: bool = False, extra: list[Encoded] = (), start: dict | None = None,
               steps: int = 0) -> TTTResult:
    """Reset the adapter (or restore `start`, a warm start) and train it on one task, for at most `steps` steps (the
    plan's fitted count; 0: none) within cfg.max_steps (`train`).

    TTT off: nothing (the caller decodes with the adapter disabled). Shared adapter: no training; the adapter is put
    in the state `train_shared` left (the initial state if it never ran). `extra`: sequences of related tasks (built by
    the caller, e.g. solver.data.neighbour_examples) that take cfg.neighbour_share of the data, trained first or
    mixed in (cfg.neighbour_order).
    """
    if not cfg.enabled:
        return TTTResult()
    if cfg.use_shared_adapter:
        adapter.use_shared()
        return TTTResult()
    adapter.reset() if start is None else adapter.restore(start)
    examples = build_examples(task, codec, cfg, seed)
    if extra:
        res = _train_with_extra(adapter, examples, list(extra), codec, cfg, deadline, seed, progress, steps=steps)
    else:
        res = train(adapter, examples, cfg, codec.pad, deadline, seed, progress, steps=steps)
    log.info("task %s: TTT %d steps on %d examples, %d tokens, loss %.3f -> %.3f, %.1fs%s", task.id, res.steps,
             res.examples, res.tokens, res.first_loss, res.loss, res.seconds,
             " (stopped by deadline)" if res.stopped_by_deadline else "")
    return res


def _train_with_extra(adapter, own: list[Encoded], extra: list[Encoded], codec: Codec, cfg: TTTConfig,
                      deadline: float | TrainEnd | None, seed: int, progress: bool, steps: int = 0) -> TTTResult:
    """Own and extra sequences at cfg.neighbour_share: one pass on both, or the extra first (in their share of the
    time left), then the task's own (each call limited to `steps` and cfg.max_steps)."""
    if cfg.neighbour_order not in ("first", "mixed"):
        raise ValueError(f"unknown neighbour_order '{cfg.neighbour_order}' (choose first or mixed)")
    own, extra = mix(own, extra, cfg.neighbour_share, cfg.max_examples)
    if cfg.neighbour_order == "mixed" or not extra:
        return train(adapter, own + extra, cfg, codec.pad, deadline, seed, progress, steps=steps)
    limit = deadline.at() if isinstance(deadline, TrainEnd) else deadline
    cut = None if limit is None else \
        time.monotonic() + max(0.0, limit - time.monotonic()) * len(extra) / (len(extra) + len(own))
    a = train(adapter, extra, cfg, codec.pad, cut, seed, progress, steps=steps)
    b = train(adapter, own, cfg, codec.pad, deadline, seed, progress, steps=steps)
    return TTTResult(a.steps + b.steps, a.examples + b.examples, a.tokens + b.tokens, a.padded_tokens + b.padded_tokens,
                     a.trained_tokens + b.trained_tokens, b.loss, a.first_loss, a.seconds + b.seconds,
                     b.stopped_by_deadline)


def train_shared(adapter, tasks: list[Task], codec: Codec, cfg: TTTConfig, deadline: float | None = None,
                 seed: int = 0, progress: bool = False) -> TTTResult:
    """The 'shared adapter' ablation: one training run on every task's examples together (call once, up front)."""
    if not cfg.enabled:
        return TTTResult()
    adapter.reset()
    examples = [e for t in tasks if t.valid for e in build_examples(t, codec, cfg, seed)]
    res = train(adapter, examples, cfg, codec.pad, deadline, seed, progress)
    adapter.shared = adapter.snapshot()
    log.info("shared adapter: %d steps on %d examples of %d tasks, loss %.3f -> %.3f, %.1fs", res.steps,
             res.examples, len(tasks), res.first_loss, res.loss, res.seconds)
    return res
