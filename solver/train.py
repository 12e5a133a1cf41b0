"""The one training step, shared by test-time training (solver.ttt) and pretraining (solver.pretrain).

A step: each micro-batch forward with logits only at the labelled positions, its masked next-token loss scaled by
1/micro-batches and backward (under autocast when given), then gradient clipping, the optimiser step and zeroed
gradients. Also the one optimiser builder (`make_optimizer`) and the one learning-rate shape: linear warm-up, then
cosine (or linear, or constant) to a floor, as a function of training progress in [0, 1]. Knows nothing of where batches come from, deadlines or checkpoints.
"""
from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from dataclasses import dataclass

from solver.codec import IGNORE
from solver.config import TrainingConfig
from solver.compat import kept_logits

SCHEDULES = ("cosine", "linear", "constant")
log = logging.getLogger(__name__)


def make_optimizer(groups: list[dict], tc: TrainingConfig, fused: bool = True):
    """AdamW over parameter groups at tc's rate, weight decay and (0.9, tc.adam_beta2): fused (one kernel for every
    tensor: on a CPU a quarter of the per-tensor loop's step time) where torch offers it for these parameters, else
    the multi-tensor loop; `fused=False`: the per-tensor loop (a benchmark's comparison). Each group remembers its
    peak rate as 'base_lr' for the schedule."""
    import torch
    kwargs = {"lr": tc.lr, "weight_decay": tc.weight_decay, "betas": (0.9, tc.adam_beta2)}
    opt = None
    if fused:
        try:
            opt = torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, ValueError) as e:
            log.debug("fused AdamW unavailable (%s); the multi-tensor one instead", e)
    if opt is None:
        opt = torch.optim.AdamW(groups, foreach=fused, fused=False, **kwargs)
    for g in opt.param_groups:
        g["base_lr"] = g["lr"]
    return opt


def masked_loss(model, batch: dict):
    """Mean next-token cross-entropy over the labelled positions, computing logits only there."""
    import torch.nn.functional as F
    labels = batch["labels"]
    keep = labels[:, 1:] != IGNORE                        # position t predicts token t+1
    keep = F.pad(keep, (0, 1), value=False)
    # Right padding: under the causal mask no real token sees a pad, so no padding mask is needed, and without one
    # attention takes the fused causal kernel instead of materialising a T x T mask and probabilities.
    logits = kept_logits(model, batch["input_ids"], keep, use_cache=False)  # (either transformers version)
    targets = labels[:, 1:][keep[:, :-1]]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets)


@dataclass
class StepResult:
    """What one optimiser step saw: its mean loss and its token counts (padding excluded, padding included, with
    loss)."""
    loss: float
    tokens: int
    padded_tokens: int
    trained_tokens: int


def train_step(model, micro_batches: list[dict], optimizer, params: list, max_grad_norm: float = 0.0,
               autocast=None) -> StepResult:
    """One optimiser step over the micro-batches (gradient accumulation when there are several)."""
    import torch
    n = len(micro_batches)
    loss_sum, tokens, padded, trained = 0.0, 0, 0, 0
    for batch in micro_batches:
        with autocast if autocast is not None else nullcontext():
            loss = masked_loss(model, batch)
        (loss / n if n > 1 else loss).backward()
        loss_sum += float(loss.detach())
        tokens += int(batch["attention_mask"].sum())
        padded += batch["input_ids"].numel()
        trained += int((batch["labels"] != IGNORE).sum())
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(loss_sum / max(n, 1), tokens, padded, trained)


def lr_factor(progress: float, warmup: float, min_ratio: float = 0.0, shape: str = "cosine") -> float:
    """The learning rate's multiplier at `progress` (0..1): linear warm-up to 1 over the first `warmup`, then
    `shape` down to min_ratio at progress 1."""
    if shape not in SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule '{shape}' (choose from {', '.join(SCHEDULES)})")
    if progress < warmup:
        return max(progress / warmup, 1e-3)
    q = min(1.0, (progress - warmup) / max(1e-9, 1 - warmup))
    if shape == "constant":
        return 1.0
    fall = 0.5 * (1 + math.cos(math.pi * q)) if shape == "cosine" else 1 - q
    return min_ratio + (1 - min_ratio) * fall
