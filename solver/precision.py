"""The arithmetic of a training step by device: bf16 autocast on a GPU with native bf16 (compute capability 8.0+),
fp16 autocast with dynamic loss scaling on an older GPU (fp16's range is too narrow for raw gradients), fp32 on a CPU.

Loss scaling works around solver.train's step without changing it: a forward hook multiplies the gradient reaching
the logits by the scale S (the loss is a function of the logits alone, so this is the loss times S), a hook on every
trained parameter divides its incoming gradient by S before it is accumulated (so clipping sees true gradients), and
`ScaledOptimizer.step` skips a step whose gradients are not finite, halving S, and doubles S after `growth_interval`
finite steps in a row (torch.amp.GradScaler's rule). Knows nothing of data or schedules.
"""
from __future__ import annotations

import logging
from contextlib import nullcontext

from solver.config import TrainingConfig

log = logging.getLogger(__name__)

KINDS = ("bf16", "fp16", "fp32")


def choose(device) -> str:
    """'bf16' on a CUDA device with native bf16, 'fp16' on an older one, 'fp32' on a CPU."""
    from solver.model import native_bf16
    device = str(device)
    if not device.startswith("cuda"):
        return "fp32"
    return "bf16" if native_bf16(device) else "fp16"


def make_precision(tc: TrainingConfig, device, model, opt, params: list) -> Precision:
    """The step's arithmetic of a training setting (TTT's or pretraining's `precision`): the kind it names, or on
    'auto' `choose(device)`. The base may be bf16 and the LoRA weights fp32: without autocast PEFT casts the LoRA
    inputs up and its matrix products run in fp32."""
    kind = choose(device) if tc.precision == "auto" else tc.precision
    if kind not in KINDS:
        raise ValueError(f"unknown training precision '{tc.precision}' (ttt.precision, pretrain.precision: choose "
                         f"auto, {', '.join(KINDS)})")
    return Precision(kind, device, model, opt, params)


def autocast_for(kind: str, device):
    """The autocast context of a kind (None for fp32)."""
    import torch
    if kind not in KINDS:
        raise ValueError(f"unknown precision '{kind}' (choose from {', '.join(KINDS)})")
    if kind == "fp32":
        return None
    return torch.autocast(str(device).split(":")[0], dtype=torch.bfloat16 if kind == "bf16" else torch.float16)


class LossScale:
    """Dynamic loss scaling by hooks on a model and its trained parameters (see the module docstring)."""

    def __init__(self, model, params: list, init: float = 2.0 ** 16, growth_interval: int = 2000):
        self.scale, self.growth_interval, self.good, self.skipped = float(init), growth_interval, 0, 0
        self.handles = [model.register_forward_hook(self._scale_logits)]
        self.handles += [p.register_hook(self._unscale) for p in params]

    def _scale_logits(self, module, args, output):
        logits = getattr(output, "logits", None)
        if logits is not None and logits.requires_grad:
            logits.register_hook(lambda g: g * self.scale)
        return output

    def _unscale(self, grad):
        return grad / self.scale

    def update(self, finite: bool) -> None:
        if finite:
            self.good += 1
            if self.good >= self.growth_interval:
                self.scale, self.good = self.scale * 2.0, 0
        else:
            self.scale, self.good, self.skipped = self.scale / 2.0, 0, self.skipped + 1
            log.info("loss scale: gradients overflowed, step skipped, scale now %g", self.scale)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


class ScaledOptimizer:
    """An optimiser whose step is skipped when the (unscaled) gradients are not finite; everything else passes
    through to the wrapped optimiser (param_groups, state_dict, zero_grad)."""

    def __init__(self, optimizer, params: list, scale: LossScale):
        self.optimizer, self.params, self.loss_scale = optimizer, params, scale

    def __getattr__(self, name):
        return getattr(self.optimizer, name)

    def step(self):
        import torch
        grads = [p.grad for p in self.params if p.grad is not None]
        finite = bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()) if grads else True
        self.loss_scale.update(finite)
        if finite:
            self.optimizer.step()

    def zero_grad(self, set_to_none: bool = True):
        self.optimizer.zero_grad(set_to_none=set_to_none)


class Precision:
    """What a training loop needs of a precision kind: the autocast context (or None) and the optimiser to step."""

    def __init__(self, kind: str, device, model=None, optimizer=None, params: list | None = None):
        self.kind = kind
        self.autocast = autocast_for(kind, device)
        self.loss_scale = LossScale(model, params or []) if kind == "fp16" else None
        self.optimizer = ScaledOptimizer(optimizer, params or [], self.loss_scale) if self.loss_scale else optimizer

    def context(self):
        return self.autocast if self.autocast is not None else nullcontext()

    def describe(self) -> str:
        return {"bf16": "bf16 autocast", "fp16": "fp16 autocast, dynamic loss scaling", "fp32": "fp32"}[self.kind]
