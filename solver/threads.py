"""CPU threads of a loop of similar steps, chosen by measurement.

On a machine whose cores other processes share, torch's OpenMP threads wait on each other at every operation: a
training step of scratch:small ran 2.5x faster on one thread than on two with the two cores busy elsewhere, while
on idle cores two threads win. So `ThreadTuner` times a few steps at each candidate count (tokens per second),
keeps the fastest, and measures again every `every_s` seconds. Imports torch only inside its methods; knows nothing
of models or data.
"""
from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)


class ThreadTuner:
    """Call `before()` ahead of each step and `after(tokens)` when it is done; torch's thread count follows."""

    def __init__(self, candidates: list[int], probe_steps: int = 2, every_s: float = 300.0, warmup_steps: int = 1):
        if not candidates or min(candidates) < 1:
            raise ValueError(f"thread candidates {candidates} must be counts of at least 1")
        self.candidates, self.probe_steps, self.every_s = list(candidates), probe_steps, every_s
        self.warmup = warmup_steps
        self.best = max(candidates)
        self.rates: dict[int, list[float]] = {}
        self.step_in_probe = 0 if len(candidates) > 1 else None
        self.next_probe = 0.0
        self.t0 = 0.0
        self.original = None  # torch's thread count before the tuner changed it (`close` puts it back)

    def _current(self) -> int:
        if self.warmup > 0 or self.step_in_probe is None:
            return self.best
        return self.candidates[min(self.step_in_probe // self.probe_steps, len(self.candidates) - 1)]

    def before(self) -> None:
        import torch
        if self.step_in_probe is None and len(self.candidates) > 1 and time.monotonic() >= self.next_probe:
            self.step_in_probe, self.rates = 0, {}
        n = self._current()
        if torch.get_num_threads() != n:
            if self.original is None:
                self.original = torch.get_num_threads()
            torch.set_num_threads(n)
        self.t0 = time.monotonic()

    def after(self, tokens: int) -> None:
        seconds = max(time.monotonic() - self.t0, 1e-9)
        if self.warmup > 0:
            self.warmup -= 1
            return
        if self.step_in_probe is None:
            return
        self.rates.setdefault(self._current(), []).append(tokens / seconds)
        self.step_in_probe += 1
        if self.step_in_probe >= self.probe_steps * len(self.candidates):
            self._choose()

    def _choose(self) -> None:
        means = {n: sum(r) / len(r) for n, r in self.rates.items()}
        best = max(means, key=lambda n: (means[n], -n))
        if best != self.best or not self.next_probe:
            log.info("CPU threads: %d (%s tokens/s)", best,
                     ", ".join(f"{n} thread{'s' if n > 1 else ''} {r:,.0f}" for n, r in sorted(means.items())))
        self.best, self.step_in_probe = best, None
        self.next_probe = time.monotonic() + self.every_s


    def close(self) -> None:
        """Torch's thread count back to what it was."""
        import torch
        if self.original is not None:
            torch.set_num_threads(self.original)
            self.original = None


def tuner_for(threads: int, device_type: str, world: int = 1) -> ThreadTuner | None:
    """A tuner over half and all of torch's threads (1 and 2 on two cores) for a single CPU process with threads 0
    (auto); else None, after setting a fixed count when `threads` > 0."""
    import torch
    if threads > 0:
        torch.set_num_threads(threads)
        return None
    if device_type != "cpu" or world > 1 or torch.get_num_threads() <= 1:
        return None
    top = torch.get_num_threads()
    return ThreadTuner(sorted({max(1, top // 2), top}))
