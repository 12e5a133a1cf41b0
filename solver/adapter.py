"""LoRA adapters: attach one to a model, snapshot its initial state, reset to it, save and load it.

Two backends behind one `Adapter`: PEFT, the default and the only one `auto` picks, and Unsloth, strictly opt-in
(`backend: unsloth`) and unverified on a GPU. A review against Unsloth 2026.10.7 found that its
`FastLanguageModel.get_peft_model` needs a model loaded by `FastLanguageModel.from_pretrained` (model.py loads with
transformers, so it raises there), that its forward returns logits at every position for a tensor `logits_to_keep`
and tuples for caches, that it keeps copies of LoRA weights `restore` does not clear, and that it must be imported
before transformers. So a request for Unsloth whose import or attach raises falls back to PEFT with one WARNING line
naming the exception; Unsloth is imported only when asked for.

Owns the adapter's trainable state. Knows nothing of tasks, tokens or training schedules.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
from pathlib import Path

import torch

from solver.compat import is_checkpointing, set_checkpointing
from solver.config import TrainingConfig

log = logging.getLogger(__name__)

EMBEDDING_KEYS = ("trainable_tokens", "modules_to_save")  # parameter names of trained embeddings / output rows


BACKENDS = ("peft", "unsloth", "auto")


def _cuda_available() -> bool:
    return torch.cuda.is_available()


def select_backend(requested: str = "peft") -> str:
    """'peft' for 'peft' and 'auto'; 'unsloth' only when asked for by name, with CUDA present and unsloth importable.
    A request for Unsloth that cannot be met logs one WARNING line saying why and returns 'peft'."""
    if requested not in BACKENDS:
        raise ValueError(f"unknown adapter backend '{requested}' (choose from {', '.join(BACKENDS)})")
    if requested != "unsloth":
        return "peft"
    if not _cuda_available():
        log.warning("adapter backend: PEFT, not the Unsloth asked for (CUDA is not available)")
        return "peft"
    try:
        importlib.import_module("unsloth")
    except Exception as e:  # whatever `import unsloth` raises: ImportError, NotImplementedError without a GPU, ...
        log.warning("adapter backend: PEFT, not the Unsloth asked for (import unsloth raised %s: %s)",
                    type(e).__name__, e)
        return "peft"
    return "unsloth"


def _is_tied(model) -> bool:
    cfg = getattr(model, "config", None)
    return bool(getattr(cfg, "tie_word_embeddings", False))


def _embedding_options(model, cfg: TrainingConfig, token_ids) -> dict:
    """PEFT options that make the codec tokens' embeddings (and output rows) trainable.

    Tied models: PEFT's trainable tokens on the codec's ids (the head follows the tie). Untied models: whole copies of
    embeddings and head (cheap for a reduced 16-token vocabulary).
    """
    if not cfg.train_embeddings:
        return {}
    if _is_tied(model):
        if token_ids is None:
            raise ValueError("train_embeddings on a tied model needs the codec's token ids")
        return {"trainable_token_indices": {"embed_tokens": sorted(set(int(i) for i in token_ids))}}
    return {"modules_to_save": ["embed_tokens", "lm_head"]}


def _peft_model(model, cfg: TrainingConfig, token_ids, seed: int):
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(seed)  # LoRA A matrices are initialised at random
    lcfg = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, use_rslora=cfg.rslora,
                      target_modules=list(cfg.target_modules), bias="none", task_type="CAUSAL_LM",
                      **_embedding_options(model, cfg, token_ids))
    return get_peft_model(model, lcfg)


def _unsloth_model(model, cfg: TrainingConfig, seed: int):
    from unsloth import FastLanguageModel  # lazily: needs a GPU
    extra = {"modules_to_save": ["embed_tokens", "lm_head"]} if cfg.train_embeddings else {}
    return FastLanguageModel.get_peft_model(
        model, r=cfg.rank, target_modules=list(cfg.target_modules), lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
        bias="none", use_gradient_checkpointing="unsloth" if cfg.gradient_checkpointing else False,
        random_state=seed, use_rslora=cfg.rslora, loftq_config=None, **extra)


class Adapter:
    """A LoRA adapter attached to a model; `model` is the wrapped model to train and decode with."""

    def __init__(self, model, backend: str):
        self.model = model
        self.backend = backend
        self.initial = self.snapshot()
        self.shared: dict[str, torch.Tensor] | None = None  # state trained on all tasks (the shared-adapter mode)

    @property
    def device(self) -> torch.device:
        """Where the model's weights are: every batch trained or decoded on is moved there."""
        return next(self.model.parameters()).device

    # state ------------------------------------------------------------------------------------------------------
    def trainable(self) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable().values())

    def snapshot(self) -> dict[str, torch.Tensor]:
        """A copy of every trainable tensor."""
        return {n: p.detach().clone() for n, p in self.trainable().items()}

    @torch.no_grad()
    def restore(self, state: dict[str, torch.Tensor]) -> None:
        params = self.trainable()
        if set(params) != set(state):
            raise ValueError(f"adapter state does not match: missing {sorted(set(params) - set(state))[:3]}, "
                             f"unexpected {sorted(set(state) - set(params))[:3]}")
        for n, p in params.items():
            p.copy_(state[n])

    def reset(self) -> None:
        """Back to the state it was attached with, bit for bit."""
        self.restore(self.initial)

    def use_shared(self) -> None:
        """The state trained across tasks when there is one, else the initial state."""
        self.restore(self.shared if self.shared is not None else self.initial)

    def param_groups(self, lr: float, embedding_lr: float) -> list[dict]:
        """Optimiser groups: LoRA weights at lr, trained embeddings / head rows at embedding_lr."""
        emb, lora = [], []
        for n, p in self.trainable().items():
            (emb if any(k in n for k in EMBEDDING_KEYS) else lora).append(p)
        groups = [{"params": lora, "lr": lr}]
        if emb:
            groups.append({"params": emb, "lr": embedding_lr})
        return groups

    # modes ------------------------------------------------------------------------------------------------------
    def train_mode(self, gradient_checkpointing: bool = False) -> None:
        if self.backend == "unsloth":
            from unsloth import FastLanguageModel
            FastLanguageModel.for_training(self.model)
            return
        base = self.model.get_base_model()
        if gradient_checkpointing != is_checkpointing(base):
            set_checkpointing(base, gradient_checkpointing)
        self.model.train()

    def eval_mode(self) -> None:
        if self.backend == "unsloth":
            from unsloth import FastLanguageModel
            FastLanguageModel.for_inference(self.model)
            return
        self.model.eval()

    def disabled(self):
        """Context in which the model runs without the adapter (the base model)."""
        fn = getattr(self.model, "disable_adapter", None)
        return fn() if fn is not None else contextlib.nullcontext()

    # files ------------------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """PEFT's adapter files (adapter_config.json + weights) in a directory."""
        self.model.save_pretrained(str(path))

    def load(self, path: str | Path) -> None:
        """Load weights saved by `save` into this adapter (same configuration)."""
        from peft import set_peft_model_state_dict
        from peft.utils import load_peft_weights
        result = set_peft_model_state_dict(self.model, load_peft_weights(str(path), device="cpu"))
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise ValueError(f"adapter files in {path} do not fit this adapter: unexpected {unexpected[:3]}")


def attach(model, cfg: TrainingConfig, token_ids=None, seed: int = 0) -> Adapter:
    """A fresh LoRA adapter on model, on the backend `cfg.backend` resolves to here (see `select_backend`).

    token_ids: the codec's token ids (needed only to train embeddings of a tied model).
    """
    backend = select_backend(cfg.backend)
    wrapped = _try_unsloth(model, cfg, seed) if backend == "unsloth" else None
    backend = "unsloth" if wrapped is not None else "peft"
    if wrapped is None:
        wrapped = _peft_model(model, cfg, token_ids, seed)
    adapter = Adapter(wrapped, backend)
    log.debug("adapter: %s backend, rank %d, %d trainable parameters", backend, cfg.rank, adapter.num_trainable())
    return adapter


def _try_unsloth(model, cfg: TrainingConfig, seed: int):
    """The model with Unsloth's LoRA, or None (one WARNING line) when Unsloth raises; an error if it raised after
    adding LoRA layers (PEFT cannot attach on top of those)."""
    try:
        return _unsloth_model(model, cfg, seed)
    except Exception as e:  # Unsloth's failures are many and depend on its version
        if any("lora_" in name for name, _ in model.named_parameters()):
            raise RuntimeError(f"Unsloth's get_peft_model raised {type(e).__name__}: {e} after adding LoRA layers; "
                               f"load the model again and use ttt.backend=peft") from e
        log.warning("adapter backend: PEFT, not the Unsloth asked for (FastLanguageModel.get_peft_model raised "
                    "%s: %s)", type(e).__name__, e)
        return None
