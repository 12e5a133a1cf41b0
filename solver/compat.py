"""What differs between the transformers versions the package meets: the CPU pin (5.23) and GPU images (5.17).

- Activation checkpointing: 5.23 names it `activation_checkpointing_enable/_disable` and `is_activation_checkpointing`
  (the `gradient_checkpointing_*` names warn there); 5.17 has only `gradient_checkpointing_enable/_disable` and
  `is_gradient_checkpointing`. `set_checkpointing` and `is_checkpointing` take whichever the model has.
- Logits at chosen positions: 5.23's models slice hidden states with `slice_logits_to_keep`, which takes a 2-D boolean
  `logits_to_keep` and returns [kept, vocab]; 5.17's models index `hidden_states[:, logits_to_keep]`, where a 2-D mask
  raises. `kept_logits` passes the mask where the model's code takes it, else the 1-D positions any row keeps (a form
  both versions take) and selects the kept rows from those.

Imports nothing of the package; transformers only inside functions.
"""
from __future__ import annotations

import functools
import sys


# activation checkpointing -----------------------------------------------------------------------------------------
def is_checkpointing(model) -> bool:
    """Whether activation (gradient) checkpointing is on for a transformers model."""
    cls = type(model)
    if hasattr(cls, "is_activation_checkpointing"):
        return bool(model.is_activation_checkpointing)
    return bool(model.is_gradient_checkpointing)


def set_checkpointing(model, enabled: bool) -> None:
    """Turn activation checkpointing on (non-reentrant: inputs need not require grad) or off."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        if enabled:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.activation_checkpointing_disable()
    elif enabled:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_disable()


# logits at chosen positions ---------------------------------------------------------------------------------------
@functools.cache
def _class_takes_mask(cls) -> bool:
    """Whether a model class's code slices its hidden states with transformers' `slice_logits_to_keep` (which takes a
    2-D boolean mask)."""
    module = sys.modules.get(cls.__module__)
    return getattr(module, "slice_logits_to_keep", None) is not None


def takes_mask(model) -> bool:
    """Whether `model` (or the transformers model inside a wrapper such as PEFT's) takes a 2-D boolean mask."""
    for m in model.modules() if hasattr(model, "modules") else (model,):
        if type(m).__module__.startswith("transformers.models."):
            return _class_takes_mask(type(m))
    return False


def kept_logits(model, input_ids, keep, **kwargs):
    """[keep.sum(), vocab]: the logits at the True positions of keep ([rows, positions] bool), in row-major order,
    computing few others. Extra keyword arguments go to the model (e.g. use_cache=False)."""
    if takes_mask(model):
        logits = model(input_ids=input_ids, logits_to_keep=keep, **kwargs).logits
        if logits.dim() == 3:  # a forward that ignored the mask and returned every position
            logits = logits[keep]
        return logits
    positions = keep.any(dim=0).nonzero()[:, 0]
    logits = model(input_ids=input_ids, logits_to_keep=positions, **kwargs).logits
    if logits.shape[1] == keep.shape[1] and len(positions) != keep.shape[1]:  # it ignored the positions
        return logits[keep]
    return logits[keep[:, positions]]
