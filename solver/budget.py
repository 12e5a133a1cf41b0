"""The time budget: durations, each task's time share, the order of tasks and the degradation ladder.

Pure functions over numbers, importing nothing of the package. A task is known here only by its size in tokens; work
is a number of TTT steps and decoded views; time is seconds on a monotonic clock. Knows nothing of tasks, codecs,
models, configs, processes or files: solver.plan turns a task into these numbers and fitted work into a config
(`fit_to_share`, called by the solver that runs the task); the run (solver/run.py) plans shares and feeds measured
times back in.

The rules, in one place:
- share: the next task gets its floor (prediction + one TTT step) and a part, by what its full work adds, of the
  worker-seconds left beyond every pending task's floor (minus those promised to tasks in flight); never more than
  the wall time left, or `headroom` times its full need (`plan_share`).
- work: prediction reserved first, then as many TTT steps as fit, down to one (at a smaller batch where the
  configured one does not fit); steps and views scale together up to the configured ones (`fit_work`); the step that
  cannot be cut is planned at `room` times its estimate; no TTT only when not even one step of one sequence fits.
  The share that buys that one step is the task's floor (`minimum_seconds`): the planner and the fit agree on it.
  `Level` names what a task did.
- order: longest first while every pending task's floor (prediction + one step) fits, cheapest first when not
  (see `order_tasks`); a task another source already answers (`Need.answered`: the search solved it) after every
  task it does not, and planned with what they leave (`plan_next`).
- re-planning: every dispatch re-reads the clock and what is pending; the run keeps one set of speeds: those measured
  by finished tasks (a worker's calibration taken cautiously, then each task's own, `record_speeds`) replace the
  preset's, and every job is fitted with them; a correction factor (measured / estimated seconds) scales what remains
  where a task measures none; the seconds the candidate sources other than the model take a task (`Rates.search_s`,
  measured) are added to every estimate.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Callable, NamedTuple

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
    output_tokens: int   # tokens to generate for one test output (at most; exact where its shape is forced)
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
    search_s: float = 0.0  # seconds the candidate sources other than the model take a task (measured, not scaled)


def estimate_seconds(size: TaskSize, work: Work, rates: Rates) -> tuple[float, float]:
    """Estimated (TTT seconds, prediction seconds) of a task doing `work`."""
    ttt = work.ttt_steps * work.batch_size * size.train_tokens / rates.train_tokens_per_s
    per_view = size.prompt_tokens / rates.prefill_tokens_per_s + size.output_tokens / rates.decode_tokens_per_s
    predict = work.views * size.num_tests * per_view
    if work.views:
        predict += rates.task_overhead_s
    return ttt * rates.correction, predict * rates.correction + rates.search_s


def total_seconds(size: TaskSize, work: Work, rates: Rates) -> float:
    return sum(estimate_seconds(size, work, rates))


def update_rates(rates: Rates, measured: dict[str, float], weight: float = 0.5) -> Rates:
    """Move each measured speed (train/prefill/decode tokens per second, the other sources' seconds a task; 0 or
    absent: not measured) towards the measurement (an exponential average)."""
    new = {}
    for key in ("train_tokens_per_s", "prefill_tokens_per_s", "decode_tokens_per_s", "search_s"):
        value = measured.get(key, 0.0)
        if value and value > 0 and math.isfinite(value):
            new[key] = (1 - weight) * getattr(rates, key) + weight * value
    return replace(rates, **new)


SPEEDS = ("train_tokens_per_s", "prefill_tokens_per_s", "decode_tokens_per_s")


def cautious_rates(rates: Rates, measured: dict[str, float], guessed: bool = True) -> Rates:
    """Rates after a first quick measurement: each measured speed taken whole where it is slower than the planned one
    (prediction's reserve must hold: a task that trains must also answer), halfway towards it where it is faster
    (one quick step on a busy machine can flatter). With `guessed` (`rates` are the preset's guesses, not speeds
    measured before), a speed it could not time (its deadline came first) is scaled like the slowest one it timed,
    where that is slower than planned: a busy machine is slower at everything (the
    busy runs of 2026-12-07 measured training at 0.33x and 0.07x the preset's, prediction then ran at 0.36x and
    0.1-0.3x, while the untimed prefill and decoding were planned at the preset's)."""
    slower = {k: v for k, v in measured.items() if 0 < v < getattr(rates, k)}
    faster = {k: v for k, v in measured.items() if k not in slower}
    slowest = min((v / getattr(rates, k) for k, v in slower.items()), default=1.0)
    untimed = {k: slowest * getattr(rates, k) for k in SPEEDS if not measured.get(k, 0) > 0} \
        if slower and guessed else {}
    return update_rates(update_rates(rates, {**untimed, **slower}, weight=1.0), faster, weight=0.5)


def calibrated_rates(rates: Rates, preset: Rates, calibrated: dict[str, float], remeasure: bool = False) -> Rates:
    """The speeds after a calibration (`calibrated`: what it timed; empty when none), taken cautiously from `rates`
    (`cautious_rates`); while `rates` are still the `preset`'s guesses, what it could not time is scaled like the
    slowest speed it timed. A `remeasure` (the training speed that kept TTT out of several tasks is in doubt) weighs its
    new training speed against the preset's, not against that one, and keeps a speed it could not time as it was."""
    if remeasure and calibrated.get("train_tokens_per_s", 0) > 0:
        rates = replace(rates, train_tokens_per_s=preset.train_tokens_per_s)
    guessed = not remeasure and all(getattr(rates, k) == getattr(preset, k) for k in SPEEDS)
    return cautious_rates(rates, calibrated, guessed)


def record_speeds(rates: Rates, preset: Rates, calibrated: dict[str, float], measured: dict[str, float],
                  remeasure: bool = False) -> Rates:
    """The run's speeds once a task reports what it measured: its worker's calibration (a quick look; empty when it
    did not calibrate) taken as `calibrated_rates` does, then the task's own speeds averaged in."""
    return update_rates(calibrated_rates(rates, preset, calibrated, remeasure), measured)


def update_correction(rates: Rates, estimated: float, measured: float, weight: float = 0.3) -> Rates:
    """Move the correction factor towards measured / estimated (an exponential average, clamped to [0.05, 20])."""
    if estimated <= 0 or measured <= 0:
        return rates
    base = estimated / rates.correction  # the estimate before correction
    ratio = min(20.0, max(0.05, measured / base))
    return replace(rates, correction=(1 - weight) * rates.correction + weight * ratio)


# ---------------------------------------------------------------------------------------------------------------
# Work that scales with the share

class Level(IntEnum):
    """What a task did, 0-6 best first (for reports: the planner scales work continuously, see `fit_work`)."""
    FULL = 0            # the configured TTT steps and views
    FEWER_STEPS = 1     # fewer TTT steps, every view
    FEWER_VIEWS = 2     # TTT (at least one step) and fewer views
    SHARED_ADAPTER = 3  # no per-task training: the adapter shared by all tasks (where the pipeline has one), few views
    NO_TTT = 4          # the base model, few views: not even one step fitted
    FALLBACK = 5        # no model: the fallback attempts
    SEARCH_ONLY = 6     # no model: the search pass's attempts (solved with run.solved_share 0, never reached, or no
    #                     model among run.sources)


MAX_SLOWDOWN = 8.0  # the most a measured slowdown stretches prediction's reserve


@dataclass(frozen=True)
class TrainEnd:
    """Where TTT stops: the task's `end` less prediction's `reserve` (seconds at the planned speeds), the reserve
    stretched by how much slower than `planned_tokens_per_s` training measures: a machine that slows mid-task (another
    process on its cores) slows prediction as much, and a task that trains must still answer."""
    end: float
    reserve: float = 0.0
    planned_tokens_per_s: float = 0.0

    def at(self, measured_tokens_per_s: float = 0.0) -> float:
        slow = 1.0
        if measured_tokens_per_s > 0 and self.planned_tokens_per_s > 0:
            slow = min(MAX_SLOWDOWN, max(1.0, self.planned_tokens_per_s / measured_tokens_per_s))
        return self.end - self.reserve * slow


class Deadlines(NamedTuple):
    """`time.monotonic()` values: the end of TTT, and the end of the whole task (prediction included); the
    training speed the end of TTT was planned with (0: none), against which TTT measures a slowdown; and the end of
    the calibration the run gave time for."""
    ttt: float
    end: float
    train_tokens_per_s: float = 0.0
    calibration: float = 0.0  # when a worker's first task must end calibrating (0: a quarter of its share)

    def train_end(self) -> TrainEnd:
        """Where TTT stops: prediction's reserve (end - ttt) kept, stretched if training measures slower than
        planned."""
        return TrainEnd(self.end, max(0.0, self.end - self.ttt), self.train_tokens_per_s)


CALIBRATION_SHAPE = (2, 6)  # the answers calibration decodes: at most 2 rows of 6 cells (about 15 tokens)
CALIBRATION_ROOM = 2.0  # calibration's allowance over its estimate (the speeds are the preset's guesses until then)


def calibration_seconds(size: TaskSize, rates: Rates, answer_tokens: int) -> float:
    """Seconds that timing one TTT step, one prefill and an answer of `answer_tokens` (CALIBRATION_SHAPE) take, with
    room: a worker's first task gets them beyond its share (solver.pipeline.calibrate)."""
    return CALIBRATION_ROOM * (step_seconds(size, 1, rates) + size.prompt_tokens / rates.prefill_tokens_per_s
                               + answer_tokens / rates.decode_tokens_per_s)


def step_seconds(size: TaskSize, batch_size: int, rates: Rates) -> float:
    """Estimated seconds of one TTT step."""
    return estimate_seconds(size, Work(1, batch_size, 0), rates)[0]


def predict_seconds(size: TaskSize, views: int, rates: Rates) -> float:
    return estimate_seconds(size, Work(0, 1, views), rates)[1]


FLOOR_BATCH = 1  # sequences in the floor's one step where the configured batch does not fit: the least that trains


def floor_batch(size: TaskSize, full: Work, rates: Rates, share: float, min_views: int = 2,
                room: float = 1.0) -> int:
    """The largest batch, at most the configured one and at least FLOOR_BATCH, whose one TTT step fits `share` with
    prediction at min_views: room x the step (it cannot be cut short) + the prediction (it keeps what it has decoded
    at its deadline); 0 when not even that fits, or the work has no TTT."""
    if not full.ttt_steps:
        return 0
    pred = predict_seconds(size, min(full.views, max(1, min_views)), rates)
    for batch in range(max(FLOOR_BATCH, full.batch_size), FLOOR_BATCH - 1, -1):
        if pred + room * step_seconds(size, batch, rates) <= share * (1 + 1e-9):  # (a share computed as exactly
            return batch                                                          # the floor, rounding below it)
    return 0


def fit_work(size: TaskSize, full: Work, rates: Rates, share: float, min_views: int = 2,
             shared_adapter: bool = False, room: float = 1.0) -> Work:
    """The most work that fits in `share` seconds, never more than `full`.

    Prediction is reserved first (min_views, at most the full views); training gets the rest, as many steps as fit
    down to one. The step in flight cannot be cut short, so one step is planned at `room` times its estimate (the
    slack, kept once: TTT measures its own speed and stops before a step that would end late, TrainEnd);
    prediction needs none, it keeps what it has decoded at its deadline. Where one step of the configured batch
    does not fit, one step of the largest batch that does (`floor_batch`, down to FLOOR_BATCH sequences) at
    min_views. Beyond the floor (prediction at min_views + one step + the slack) the time goes to steps and views in
    proportion to what each still lacks of `full`, then any leftover to more steps. Not even one step of
    FLOOR_BATCH: no TTT (the shared adapter where there is one), and as many views as fit in the whole share
    (min_views at least, as a best effort).
    """
    if room < 1:
        raise ValueError(f"run.room is {room}: it must be at least 1 (the factor a TTT step is planned at)")
    low = min(full.views, max(1, min_views))
    batch = floor_batch(size, full, rates, share, min_views, room)
    if not batch:
        fits = [v for v in range(low, full.views + 1) if predict_seconds(size, v, rates) <= share]
        return Work(0, full.batch_size, max(fits, default=low), shared_adapter and full.ttt_steps > 0)
    if batch < full.batch_size:
        return Work(1, batch, low)
    step = step_seconds(size, batch, rates)
    share = share * (1 + 1e-9) - (room - 1) * step
    lacking = (full.ttt_steps - 1) * step + predict_seconds(size, full.views, rates) - predict_seconds(size, low, rates)
    spare = share - predict_seconds(size, low, rates) - step
    f = 1.0 if lacking <= 0 else min(1.0, max(0.0, spare / lacking))
    views = low + int(f * (full.views - low))
    steps = 1 + int(f * (full.ttt_steps - 1))
    left = share - predict_seconds(size, views, rates) - steps * step
    steps = min(full.ttt_steps, steps + max(0, int(left // step)) if step > 0 else full.ttt_steps)
    return Work(steps, batch, views)


def ttt_seconds(size: TaskSize, work: Work, rates: Rates, share: float) -> float:
    """The part of a share TTT may use: all but prediction's reserve (its estimate at the work's views; TTT stretches
    it if it measures a slowdown, TrainEnd); none for work without steps."""
    return max(0.0, share - predict_seconds(size, work.views, rates)) if work.ttt_steps else 0.0


def level_of(work: Work, full: Work) -> Level:
    """The ladder's name for what a task did (or was planned to do)."""
    if work.views == 0:
        return Level.FALLBACK
    if work.ttt_steps == 0 and full.ttt_steps > 0:
        return Level.SHARED_ADAPTER if work.shared_adapter else Level.NO_TTT
    if work.views < full.views:
        return Level.FEWER_VIEWS
    return Level.FEWER_STEPS if work.ttt_steps < full.ttt_steps else Level.FULL


def minimum_seconds(size: TaskSize, full: Work, rates: Rates, min_views: int = 2,
                    room: float = 1.0) -> tuple[float, float]:
    """(prediction alone at min_views, the least share that trains): the two floors of a task's share. The second is
    prediction at min_views + room x one step of FLOOR_BATCH sequences, the share in which `fit_work` trains one step
    (prediction alone where the work has no TTT)."""
    pred = predict_seconds(size, min(full.views, max(1, min_views)), rates)
    return pred, pred + (room * step_seconds(size, min(full.batch_size, FLOOR_BATCH), rates) if full.ttt_steps
                         else 0.0)


# ---------------------------------------------------------------------------------------------------------------
# Shares and order

@dataclass(frozen=True)
class Need:
    """A task's estimated seconds: prediction alone (`bare`), the least share that trains one step (`one_step`), the
    full work; `answered`: another source already answers it (the search solved it), so it is planned after every
    task that is not, with the time they leave."""
    bare: float
    one_step: float
    full: float
    answered: bool = False


def task_need(size: TaskSize, full: Work, rates: Rates, min_views: int = 2, room: float = 1.0, scale: float = 1.0,
              answered: bool = False) -> Need:
    """A task's Need at `rates` (its floors: `minimum_seconds`), every figure times `scale` (run.solved_share for a
    task another source answers)."""
    bare, one = minimum_seconds(size, full, rates, min_views, room)
    return Need(scale * bare, scale * one, scale * total_seconds(size, full, rates), answered)


def plan_share(this: Need, pending: list[Need], remaining: float, workers: int, busy: list[float] = (),
               cap: float = math.inf, headroom: float = 3.0, floor: float = 0.0) -> float:
    """Seconds for the next task (`this`, also in `pending`: every task not yet started); `busy`: the seconds each
    task in flight on the other workers still has to its deadline.

    When the worker-seconds left cover every pending task's one-step floor, each task gets its floor plus a part of
    the rest in proportion to what its full work adds above the floor (so time left over by tasks that finished
    early flows to the tasks after them), but no more than leaves room for the others' floors on the workers' wall
    time (`lane_room`). Otherwise the task gets its one-step floor if the others can still predict, else its
    prediction floor. Never more than `headroom` x its full need, never less than `floor` (the shortest share worth
    starting a task with), and never more than `cap`, the wall time left, or the uncommitted worker-seconds.
    """
    remaining = max(0.0, remaining)
    lanes = other_lanes(remaining, workers, busy)
    capacity = max(0.0, remaining + sum(lanes)) if workers > len(busy) else 0.0
    low = sum(n.one_step for n in pending)
    if capacity >= low * (1 - 1e-9):  # (sums of the same seconds in another order differ by rounding)
        extra = sum(n.full - n.one_step for n in pending)
        spare = capacity - low
        share = this.one_step + (spare * (this.full - this.one_step) / extra if extra > 0 else spare / len(pending))
        others = [n.one_step for n in pending]
        others.remove(this.one_step)
        share = max(this.one_step, min(share, remaining - lane_room(others, lanes)))
    else:
        others = sum(n.bare for n in pending) - this.bare
        share = this.one_step if capacity - this.one_step >= others else this.bare
    share = max(min(share, headroom * this.full), floor)
    return max(0.0, min(share, cap, remaining, capacity))


def other_lanes(remaining: float, workers: int, busy: list[float]) -> list[float]:
    """The free seconds the other workers will have after their tasks in flight (idle ones: all that remains)."""
    remaining = max(0.0, remaining)
    return [max(0.0, remaining - b) for b in busy] + [remaining] * max(0, workers - 1 - len(busy))


def pick_next(pending: list[Need], remaining: float, workers: int, busy: list[float] = ()) -> int:
    """Which pending task (index, in their planned order) the worker free now should take: the first, unless every
    floor fits in the worker-seconds left but the others' would not fit after the first (on the other workers, or on
    this one after it); then the one with the largest floor (the free worker has the most room: largest first is
    how floors pack)."""
    lanes = other_lanes(remaining, workers, busy)
    floors = [n.one_step for n in pending]
    if len(pending) < 2 or sum(floors) > max(0.0, remaining) + sum(lanes):  # they cannot all fit: keep the order
        return 0
    if lane_room(floors[1:], lanes) <= max(0.0, remaining) - floors[0]:
        return 0
    return max(range(len(pending)), key=lambda i: (floors[i], -i))


def lane_room(others: list[float], lanes: list[float]) -> float:
    """Seconds the next task's worker must keep free for the other tasks' floors: they are packed, largest first,
    onto the other workers' free seconds (`lanes`, each onto the one with the most room); what fits on none stays."""
    room, here = list(lanes), 0.0
    for need in sorted(others, reverse=True):
        j = max(range(len(room)), key=room.__getitem__, default=None)
        if j is not None and room[j] >= need:
            room[j] -= need
        else:
            here += need
    return here


def pressure(needs: list[float], remaining: float, workers: int, committed: float = 0.0) -> float:
    """Estimated worker-seconds the pending tasks need at full level / worker-seconds left (>1: they do not fit)."""
    capacity = max(0.0, workers * max(0.0, remaining) - committed)
    need = sum(needs)
    return math.inf if capacity <= 0 and need > 0 else (need / capacity if capacity > 0 else 0.0)


def affordable(needs: list[Need], remaining: float, workers: int, committed: float = 0.0) -> list[bool]:
    """Which pending tasks a share is planned against now: the cheapest prediction floors (`bare`) first, those of
    tasks no other source answers before any that one does, while their sum fits the worker-seconds left (at least
    one). The others do not squeeze the rest to their floors; they wait, last in a cheapest-first order, for the time
    left over (on a CPU, a 30x30 task's one view can need minutes)."""
    capacity = max(0.0, workers * max(0.0, remaining) - committed)
    keep, total = [False] * len(needs), 0.0
    for i in sorted(range(len(needs)), key=lambda i: (needs[i].answered, needs[i].bare, i)):
        total += needs[i].bare
        if total > capacity and any(keep):
            break
        keep[i] = True
    return keep


def plan_next(needs: list[Need], ready: list[int], remaining: float, workers: int, busy: list[float] = (), *,
              cap: float = math.inf, headroom: float = 3.0, floor: float = 0.0,
              least: Callable[[int], float] = lambda i: 0.0) -> tuple[int, float]:
    """The task (an index of `needs`, among `ready`) that the worker free now takes, and its share: picked among the
    affordable tasks (the cheapest floors that fit), a task no other source answers before any that one does, and
    planned against them (plan_share): a task not answered against the affordable ones not answered either (the
    answered ones get what those leave), never under `floor` nor `least(task)` (one view, with the model) where the
    time left allows."""
    counted = affordable(needs, remaining, workers, sum(busy))
    pool = [i for i in ready if counted[i]] or list(ready)
    pool = [i for i in pool if not needs[i].answered] or pool
    pick = pool[pick_next([needs[i] for i in pool], remaining, workers, busy)]
    counted[pick] = True
    if not needs[pick].answered:
        counted = [c and not n.answered for c, n in zip(counted, needs)]
    share = plan_share(needs[pick], [n for n, c in zip(needs, counted) if c], remaining, workers, busy, cap=cap,
                       headroom=headroom, floor=max(floor, least(pick)))
    return pick, share


def start_order(needs: dict, remaining: float, workers: int, committed: float = 0.0, order: str = "auto") -> list:
    """The ids of `needs` in the order they should start now (order_tasks): `auto` is cheapest first under pressure
    or on one worker (no task can straggle while others idle, and a first guess of the speeds can otherwise spend
    the first minutes on tasks too large to answer), longest first otherwise; `longest`, `cheapest`; `given` keeps
    them. Except with `given`, the tasks another source answers (`Need.answered`) come after all the others."""
    if order == "given":
        return list(needs)
    tight = workers == 1 or pressure([n.one_step for n in needs.values()], remaining, workers, committed) > 1
    cheapest = tight if order == "auto" else order == "cheapest"
    return [k for answered in (False, True) for k in
            order_tasks({k: n.full for k, n in needs.items() if n.answered == answered}, cheapest)]


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


# ---------------------------------------------------------------------------------------------------------------
# A whole run, simulated with the rules above (bench plan, and the tests of the planner)

@dataclass
class Simulated:
    """What a simulated run did: per task (in the given order) its TTT steps, views and seconds (0 views: never
    started), and when the last task ended."""
    steps: list[int]
    views: list[int]
    seconds: list[float]
    end: float


def simulate_run(tasks: list[tuple[TaskSize, Work]], true_rates: list[Rates], first_guess: Rates, workers: int,
                 budget: float, min_views: int = 2, headroom: float = 3.0, order: str = "auto",
                 room: float = 1.0, answered: list[bool] | None = None, solved_share: float = 1.0) -> Simulated:
    """Plan and 'run' tasks on `workers` workers: each dispatch plans a share and fits the work with the speeds
    known so far (the first guess, then each finished task's measurement); a task takes its work's time at its
    true speeds, cut at its share's end (its deadline). Tasks whose share would be under a second are skipped.
    `answered`: the tasks another source answers, planned (as the run does) with `solved_share` of their need
    after the others; their work is fitted to that share."""
    n = len(tasks)
    steps, views, seconds = [0] * n, [0] * n, [0.0] * n
    free = [0.0] * workers
    in_flight: dict[int, tuple[float, Rates]] = {}  # task -> (end, measured speeds), applied when it ends
    pending, rates = list(range(n)), first_guess
    answered = answered or [False] * n

    def need(i: int) -> Need:
        size, full = tasks[i]
        return task_need(size, full, rates, min_views, room, solved_share if answered[i] else 1.0, answered[i])

    while pending:
        w = min(range(workers), key=free.__getitem__)
        now = free[w]
        for i, (end, measured) in sorted(in_flight.items(), key=lambda kv: kv[1][0]):
            if end <= now:
                rates = update_rates(rates, vars(measured))
                del in_flight[i]
        needs = {i: need(i) for i in pending}
        busy = [end - now for end, _ in in_flight.values() if end > now]
        pending = start_order(needs, budget - now, workers, sum(busy), order)
        k, share = plan_next([needs[j] for j in pending], list(range(len(pending))), budget - now, workers, busy,
                             headroom=headroom, floor=1.0,
                             least=lambda k: predict_seconds(tasks[pending[k]][0], 1, rates))
        i = pending.pop(k)
        size, full = tasks[i]
        if share < max(1.0, predict_seconds(size, 1, rates)):  # not even one view: skipped, as the run does
            continue
        work = fit_work(size, full, rates, share, min_views, room=room)
        took = min(share, total_seconds(size, work, true_rates[i]))
        done_steps = work.ttt_steps
        if took < total_seconds(size, work, true_rates[i]) * (1 - 1e-9):  # the deadline cut TTT short
            left = share - predict_seconds(size, work.views, true_rates[i])
            done_steps = max(0, min(work.ttt_steps, int(left // step_seconds(size, work.batch_size, true_rates[i]))))
        steps[i], views[i], seconds[i] = done_steps, work.views, took
        free[w] = now + took
        in_flight[i] = (now + took, true_rates[i])
    return Simulated(steps, views, seconds, max(free))
