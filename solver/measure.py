"""Measurements the benchmarks share: the machine's matmul peak and the process's peak memory.

Imports torch only inside its functions. Knows nothing of models or tasks.
"""
from __future__ import annotations

import resource
import time


def matmul_peak_gflops(seconds: float = 2.0) -> float:
    """Best fp32 matmul GFLOP/s of torch here (square matrices, current thread count)."""
    import torch
    best = 0.0
    for n in (1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(2):
            a @ b
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 2:
            a @ b
            reps += 1
        best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9)
    return best


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
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
