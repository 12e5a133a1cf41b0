"""The time budget: durations, each task's time share, the order of tasks and the degradation ladder.

Pure functions over numbers, importing nothing of the package. A task is known here only by its size in tokens; work
is a number of TTT steps and decoded views; time is seconds on a monotonic clock. Knows nothing of tasks, codecs,
models, configs, processes or files: the run (solver/run.py) turns a `Level` into config changes and feeds measured
times back in.

The rules, in one place:
- share: the next task gets its part, by size, of the worker-seconds left (minus those promised to tasks in flight),
  never more than the wall time left, and never more than `headroom` times its estimated need.
- order: longest first while the whole set fits, cheapest first under pressure (see `order_tasks`).
- degradation: the best level whose estimate fits the share, in the order of `Level`.
- re-planning: every dispatch re-reads the clock and what is pending; a correction factor (measured / estimated
  seconds of finished tasks) scales every estimate.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from enum import IntEnum

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = r"(\d+(?:\.\d*)?|\.\d+)([smhd])"
_DURATION = re.compile(rf"(?:{_PART})+")


def parse_duration(text: str | float | int) -> float:
    """Seconds in a duration such as '90s', '10m', '12h', '1h30m' or '45' (seconds); raises ValueError otherwise."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        s = str(text).strip().lower()
        if re.fullmatch(r"\d+(?:\.\d*)?", s):
            seconds = float(s)
        elif _DURATION.fullmatch(s):
            seconds = sum(float(n) * UNITS[u] for n, u in re.findall(_PART, s))
        else:
            raise ValueError(f"'{text}' is not a duration (examples: 90s, 10m, 12h, 1h30m)")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"duration '{text}' must be positive")
    return seconds


def format_seconds(seconds: float) -> str:
    """'1h02m', '3m05s', '42s'."""
    s = max(0, int(round(seconds)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


# ---------------------------------------------------------------------------------------------------------------
# Sizes, work and estimates

@dataclass(frozen=True)
class TaskSize:
    """What a task costs, in tokens."""
    train_tokens: int    # one training sequence: every demo pair (a leave-one-out task is K-1 demos + 1 as query)
    prompt_tokens: int   # one decoding prompt: every demo pair + one test input
    output_tokens: int   # tokens to generate for one test output (estimated)
    num_tests: int


@dataclass(frozen=True)
class Work:
    """What a task is asked to do."""
    ttt_steps: int        # optimiser steps of per-task TTT (0: none)
    batch_size: int       # sequences per step
    views: int            # augmented views decoded per test input (0: no model at all)
    shared_adapter: bool = False


@dataclass(frozen=True)
class Rates:
    """Throughput of the hardware, from the preset; `correction` scales every estimate from measurements."""
    train_tokens_per_s: float
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    task_overhead_s: float
    correction: float = 1.0


def estimate_seconds(size: TaskSize, work: Work, rates: Rates) -> tuple[float, float]:
    """Estimated (TTT seconds, prediction seconds) of a task doing `work`."""
    ttt = work.ttt_steps * work.batch_size * size.train_tokens / rates.train_tokens_per_s
    per_view = size.prompt_tokens / rates.prefill_tokens_per_s + size.output_tokens / rates.decode_tokens_per_s
    predict = work.views * size.num_tests * per_view
    if work.views:
        predict += rates.task_overhead_s
    return ttt * rates.correction, predict * rates.correction


def total_seconds(size: TaskSize, work: Work, rates: Rates) -> float:
    return sum(estimate_seconds(size, work, rates))


def update_correction(rates: Rates, estimated: float, measured: float, weight: float = 0.3) -> Rates:
    """Move the correction factor towards measured / estimated (an exponential average, clamped to [0.05, 20])."""
    if estimated <= 0 or measured <= 0:
        return rates
    base = estimated / rates.correction  # the estimate before correction
    ratio = min(20.0, max(0.05, measured / base))
    return replace(rates, correction=(1 - weight) * rates.correction + weight * ratio)


# ---------------------------------------------------------------------------------------------------------------
# The degradation ladder

class Level(IntEnum):
    """What a task does, best first; under time pressure a task moves down this list."""
    FULL = 0            # the configured TTT and views
    FEWER_STEPS = 1     # TTT steps x steps_factor
    FEWER_VIEWS = 2     # ... and views cut to min_views
    SHARED_ADAPTER = 3  # no per-task training: the adapter shared by all tasks (where the pipeline has one), few views
    NO_TTT = 4          # the base model, few views
    FALLBACK = 5        # no model: the fallback attempts


def work_at(level: Level, full: Work, steps_factor: float = 0.5, min_views: int = 2) -> Work:
    """The work a task does at `level`, from the work of the full configuration."""
    if level == Level.FULL:
        return full
    steps = max(1, int(full.ttt_steps * steps_factor)) if full.ttt_steps else 0
    views = min(full.views, max(1, min_views))
    if level == Level.FEWER_STEPS:
        return replace(full, ttt_steps=steps)
    if level == Level.FEWER_VIEWS:
        return replace(full, ttt_steps=steps, views=views)
    if level == Level.SHARED_ADAPTER:
        return replace(full, ttt_steps=0, views=views, shared_adapter=True)
    if level == Level.NO_TTT:
        return replace(full, ttt_steps=0, views=views, shared_adapter=False)
    return Work(0, full.batch_size, 0)


def choose_level(size: TaskSize, full: Work, rates: Rates, share: float, *, min_seconds: float = 0.0,
                 shared_adapter: bool = False, steps_factor: float = 0.5, min_views: int = 2,
                 start: Level = Level.FULL) -> Level:
    """The best level from `start` on whose estimated time fits in `share` seconds.

    SHARED_ADAPTER is skipped unless the pipeline has a shared adapter. When no level fits, NO_TTT as a best effort
    (estimates are guesses until tasks finish, and prediction returns what it has at its deadline); FALLBACK (no
    model at all) only when the share is below `min_seconds`.
    """
    if share < min_seconds or share <= 0:
        return Level.FALLBACK
    for level in Level:
        if level < start or level >= Level.NO_TTT or (level == Level.SHARED_ADAPTER and not shared_adapter):
            continue
        if total_seconds(size, work_at(level, full, steps_factor, min_views), rates) <= share:
            return level
    return Level.NO_TTT


def retry_level(failed: Level) -> Level:
    """The smaller configuration a task that raised is retried at, once: the one most likely to succeed, no
    training (out of memory in training, NaN loss) and few views (out of memory or an error in decoding)."""
    return Level.NO_TTT if failed <= Level.NO_TTT else Level.FALLBACK


# ---------------------------------------------------------------------------------------------------------------
# Shares, deadlines and order

def time_share(cost: float, pending_cost: float, remaining: float, workers: int, committed: float = 0.0,
               cap: float = math.inf) -> float:
    """Seconds the next task may take: its part by `cost` of the worker-seconds left.

    remaining: wall seconds to the end of the run; committed: worker-seconds already promised to tasks in flight;
    pending_cost: the cost of every task not yet started, this one included. Never more than `remaining`, `cap`,
    or the uncommitted capacity, so shares handed out one after another never add up to more than is left.
    """
    remaining = max(0.0, remaining)
    capacity = max(0.0, workers * remaining - max(0.0, committed))
    fraction = 1.0 if pending_cost <= 0 else min(1.0, max(0.0, cost) / pending_cost)
    return max(0.0, min(capacity * fraction, remaining, cap))


def plan_share(this: dict[Level, float], pending: dict[Level, float], remaining: float, workers: int,
               committed: float = 0.0, cap: float = math.inf, headroom: float = 3.0, floor: float = 0.0) -> float:
    """Seconds for the next task, from its estimated need at each level (`this`) and the pending set's (`pending`,
    this task included).

    Find the best level at which the whole pending set fits in the worker-seconds left; the task gets its part of
    them in proportion to its need at that level (so at least that need). When the set does not fit even at the
    last level, the task gets its need there (cheapest-first order then finishes as many tasks as it can). Never
    more than `headroom` x its full need (the rest stays free for re-planning; but at least `floor`), `cap`, the
    wall time left, or the uncommitted worker-seconds.
    """
    capacity = max(0.0, workers * max(0.0, remaining) - max(0.0, committed))
    levels = [lv for lv in Level if lv in this and lv in pending and lv != Level.FALLBACK]
    share = this[levels[-1]] if levels else 0.0
    for level in levels:
        if pending[level] <= capacity:
            share = time_share(this[level], pending[level], remaining, workers, committed)
            break
    if Level.FULL in this:
        share = min(share, max(headroom * this[Level.FULL], floor))
    return max(0.0, min(share, cap, max(0.0, remaining), capacity))


def stage_deadlines(now: float, seconds: float, ttt_estimate: float, predict_estimate: float) -> tuple[float, float]:
    """(end of TTT, end of the task): TTT gets the share's part in proportion to its estimate, prediction the rest."""
    total = ttt_estimate + predict_estimate
    ttt_part = seconds * ttt_estimate / total if total > 0 else 0.0
    return now + ttt_part, now + seconds


def pressure(needs: list[float], remaining: float, workers: int, committed: float = 0.0) -> float:
    """Estimated worker-seconds the pending tasks need at full level / worker-seconds left (>1: they do not fit)."""
    capacity = max(0.0, workers * max(0.0, remaining) - committed)
    need = sum(needs)
    return math.inf if capacity <= 0 and need > 0 else (need / capacity if capacity > 0 else 0.0)


def order_tasks(needs: dict[str, float], under_pressure: bool) -> list[str]:
    """The order pending tasks start in: longest first when everything fits, cheapest first under pressure.

    Measured by list-scheduling 200 random 100-task subsets of ARC-AGI-1 evaluation on 4 workers, time in proportion
    to token count (`python -m solver bench plan` prints the table):
    - when the set fits, longest-first ends on average 0.1 % (at worst 0.3 %) after the ideal total / workers, the
      file order 3.7 % (13 %) and cheapest-first 7.6 % (12 %): a long task started last overruns while the other
      workers idle; long-first leaves short tasks to fill the gaps at the end;
    - with half the time the set needs, cheapest-first completes 76 of 100 tasks, the file order 49 and
      longest-first 20: every task is worth the same score, so the cheap ones go first.
    Ties keep the given order.
    """
    ids = list(needs)
    return sorted(ids, key=lambda t: needs[t] if under_pressure else -needs[t])


def simulate(needs: list[float], workers: int, budget: float | None = None) -> tuple[float, int]:
    """(makespan, tasks finished within `budget`) of list scheduling in the given order: for the measurement above."""
    free = [0.0] * workers
    done = 0
    for need in needs:
        w = min(range(workers), key=free.__getitem__)
        free[w] += need
        done += budget is None or free[w] <= budget
    return max(free), done
