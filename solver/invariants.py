"""What the demonstrations already say about every right answer: properties that hold between each demo's input and
output, inferred per task and checked on a candidate answer for a test input.

Owns the properties (`PROPERTIES`: a name and a check on one (input, output) pair, or on the outputs' shared value
such as a fixed palette), `invariants(task)` (those that hold on every demo), and `broken(...)` (those a candidate
breaks). A selection step demotes, never deletes, a candidate that breaks one (solver.select). Pure functions of
numpy grids; knows nothing of models, sources or ranking.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from solver.tasks import Grid, Task


def _palette(g: Grid) -> frozenset[int]:
    return frozenset(np.unique(g).tolist())


def _inside(small: Grid, big: Grid) -> bool:
    """Whether `small` appears as a block of `big`, and shows two colours at least (a block of one colour is found
    inside a grid by chance: on ARC-AGI-1 training an output counting cells as a solid block broke it)."""
    if len(np.unique(small)) < 2:
        return False
    h, w = small.shape
    H, W = big.shape
    if h > H or w > W:
        return False
    windows = np.lib.stride_tricks.sliding_window_view(big, (h, w))
    return bool((windows == small).all(axis=(2, 3)).any())


# an output at most this many cells across is symmetric by chance too often to be a rule: on ARC-AGI-1 training,
# small pieces cropped from a grid were symmetric in every demo of a task whose test answer is not (39a8645d)
SMALL_SIDE = 3


def _same_shape(i: Grid, o: Grid) -> bool:
    return i.shape == o.shape


# each property: a check on one (input, output) pair
PROPERTIES: dict[str, Callable[[Grid, Grid], bool]] = {
    "same_shape": _same_shape,
    "palette_equal": lambda i, o: _palette(i) == _palette(o),
    "palette_subset": lambda i, o: _palette(o) <= _palette(i),
    "histogram_kept": lambda i, o: _same_shape(i, o) and np.array_equal(np.bincount(i.ravel(), minlength=10),
                                                                        np.bincount(o.ravel(), minlength=10)),
    "non_zero_count_kept": lambda i, o: np.count_nonzero(i) == np.count_nonzero(o),
    "non_zero_cells_kept": lambda i, o: _same_shape(i, o) and bool((o[i != 0] == i[i != 0]).all()),
    "zero_cells_kept": lambda i, o: _same_shape(i, o) and bool((o[i == 0] == 0).all()),
    "input_inside_output": lambda i, o: i.shape != o.shape and _inside(i, o),
    "output_inside_input": lambda i, o: i.shape != o.shape and _inside(o, i),
    "output_symmetric_lr": lambda i, o: o.shape[1] > SMALL_SIDE and bool(np.array_equal(o, o[:, ::-1])),
    "output_symmetric_ud": lambda i, o: o.shape[0] > SMALL_SIDE and bool(np.array_equal(o, o[::-1])),
}
FIXED_PALETTE = "palette_fixed"  # every demo output shows one palette: a candidate must show it too


def invariants(task: Task) -> dict[str, object]:
    """The properties that hold on every demo pair of a task (name -> True), and the fixed palette of the outputs
    where there is one (FIXED_PALETTE -> the colours); nothing for a task with fewer than two demos (one pair proves
    little)."""
    if len(task.train) < 2:
        return {}
    found: dict[str, object] = {name: True for name, check in PROPERTIES.items()
                                if all(check(i, o) for i, o in task.train)}
    palettes = {_palette(o) for _, o in task.train}
    if len(palettes) == 1:
        found[FIXED_PALETTE] = next(iter(palettes))
    return found


def broken(found: dict[str, object], test_input: Grid, candidate: Grid) -> list[str]:
    """The names of the invariants in `found` that a candidate answer for `test_input` breaks."""
    out = [name for name in found if name in PROPERTIES and not PROPERTIES[name](test_input, candidate)]
    if FIXED_PALETTE in found and _palette(candidate) != found[FIXED_PALETTE]:
        out.append(FIXED_PALETTE)
    return out
