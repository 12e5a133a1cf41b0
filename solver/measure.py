"""Measurements the benchmarks and pretraining share: the machine's matmul peak, the process's peak memory, and the
FLOPs of a training step.

Imports torch only inside its functions. Knows nothing of tasks.
"""
from __future__ import annotations

import dataclasses
import logging
import resource
import sys
import time

log = logging.getLogger(__name__)


def matmul_peak_gflops(seconds: float = 2.0, device: str = "cpu", dtype: str = "float32") -> float:
    """Best matmul GFLOP/s of torch here: square matrices of `dtype` on `device` (current thread count on a CPU)."""
    import torch
    best = 0.0
    sizes = (1024, 2048) if device == "cpu" else (4096, 8192)
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=getattr(torch, dtype))
        b = torch.randn(n, n, device=device, dtype=getattr(torch, dtype))
        for _ in range(2):
            a @ b
        _sync(device)
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 2:
            a @ b
            reps += 1
            if device != "cpu" and reps % 8 == 0:
                _sync(device)
        _sync(device)
        best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9)
    return best


def _sync(device: str) -> None:
    import torch
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak_memory() -> None:
    import torch
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:  # "5" resets the resident-set high-water mark (VmHWM)
            f.write("5")
    except OSError:
        pass


def peak_memory_mib() -> float:
    """Peak GPU memory allocated, or the process's peak resident memory since the last reset."""
    import torch
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2 ** 20
    return peak_rss_mib()


def peak_rss_mib() -> float:
    """The process's peak resident memory since the last reset (no torch needed)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_gpu_peak() -> None:
    """Start a window for `gpu_peak_mib` (per task in a run's worker); nothing without CUDA or without torch loaded
    (a run's parent and a solver that uses no torch never import it for this), or on a device that raises."""
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
    except Exception as e:  # a broken device (a sticky CUDA error): the task's outcome is reported without it
        log.debug("reset_peak_memory_stats raised: %s", e)


def gpu_peak_mib() -> float | None:
    """Peak GPU memory allocated since `reset_gpu_peak`, in MiB; None without CUDA (a CPU) or when the device raises."""
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            return round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
    except Exception as e:
        log.debug("max_memory_allocated raised: %s", e)
    return None


# FLOPs of training --------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class FlopModel:
    """Per-token FLOP constants of a model in training. Counted honestly for LoRA: 4 per frozen matmul parameter per
    token (forward, and the input gradient of backward: frozen weights get no weight gradient), 6 per trained
    parameter per token, the output head only at the positions with loss (all that training needs), and causal
    attention (2*T*d per token per layer forward, 3x in all)."""
    frozen: int     # frozen matmul parameters in the decoder layers
    trainable: int  # trained parameters (full training: every matmul; LoRA: its matrices and trained embedding rows)
    head: int       # output-head matmul parameters (vocab x hidden)
    layers: int
    attn_dim: int   # heads x head dim

    def flops(self, lengths: list[int], trained_tokens: int) -> float:
        tokens = sum(lengths)
        attention = 6 * self.layers * self.attn_dim * sum(t * t for t in lengths)  # causal: T^2*d per matmul
        return 4 * self.frozen * tokens + 6 * self.trainable * tokens + 4 * self.head * trained_tokens + attention


def flop_model(model) -> FlopModel:
    """FLOP constants of a model being trained: LoRA (a frozen base; PEFT-wrapped) or full (every matmul trained)."""
    import torch
    lora = any("lora_" in n for n, _ in model.named_parameters())
    matmul = head = 0
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and "lora_" not in name and "original_module" not in name:
            if "lm_head" in name:
                head = max(head, mod.weight.numel())
            else:
                matmul += mod.weight.numel()
    cfg = (model.get_base_model() if hasattr(model, "get_base_model") else model).config
    attn_dim = cfg.num_attention_heads * (getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
    if lora:
        return FlopModel(matmul, sum(p.numel() for p in model.parameters() if p.requires_grad), head,
                         cfg.num_hidden_layers, attn_dim)
    return FlopModel(0, matmul, head, cfg.num_hidden_layers, attn_dim)
