"""Local rules: a cell's output colour as a lookup table of its neighbourhood in the input, learned from the demos.

Owns the neighbourhoods (`NEIGHBOURHOODS`: the cell with its 4 or 8 neighbours, as colours or as which of them are
non-zero; the cell with the colours present in its row and its column) and the learning of a table: every demo
cell with the same neighbourhood must give the same colour, and every test cell's neighbourhood must have been seen
in a demo (a table that does not cover the test is refused, never guessed). Only for grids whose output has the
input's shape. Pure functions of numpy grids; knows nothing of the search that calls it.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from solver.tasks import Grid

OUTSIDE = 10  # the colour of a cell beyond the grid's edge


def _padded(g: Grid) -> np.ndarray:
    out = np.full((g.shape[0] + 2, g.shape[1] + 2), OUTSIDE, dtype=np.int64)
    out[1:-1, 1:-1] = g
    return out


def _around(g: Grid, offsets: tuple) -> list[np.ndarray]:
    """The grid's cells seen from each offset (dy, dx): the neighbour's colour per cell, OUTSIDE past the edge."""
    p, (h, w) = _padded(g), g.shape
    return [p[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy, dx in offsets]


CROSS = ((-1, 0), (1, 0), (0, -1), (0, 1))
BOX = CROSS + ((-1, -1), (-1, 1), (1, -1), (1, 1))


def _colours_key(g: Grid, offsets: tuple) -> np.ndarray:
    """Per cell, its colour and its neighbours' colours (base 11) as one integer."""
    key = g.astype(np.int64)
    for n in _around(g, offsets):
        key = key * 11 + n
    return key


def _mask_key(g: Grid, offsets: tuple) -> np.ndarray:
    """Per cell, its colour and which neighbours are non-zero (and which are beyond the edge)."""
    key = g.astype(np.int64)
    for n in _around(g, offsets):
        key = key * 3 + np.where(n == OUTSIDE, 2, n != 0)
    return key


def _lines_key(g: Grid) -> np.ndarray:
    """Per cell, its colour and the sets of non-zero colours in its row and in its column."""
    bits = (1 << np.arange(10, dtype=np.int64))
    present = np.where(g != 0, bits[g], 0)
    rows = np.bitwise_or.reduce(present, axis=1)[:, None]
    cols = np.bitwise_or.reduce(present, axis=0)[None, :]
    return (g.astype(np.int64) << 20) | (rows << 10) | cols


# most general first: the first neighbourhood that gives a consistent table covering the test is the one used
NEIGHBOURHOODS: dict[str, Callable[[Grid], np.ndarray]] = {
    "cross_mask": lambda g: _mask_key(g, CROSS),
    "box_mask": lambda g: _mask_key(g, BOX),
    "cross": lambda g: _colours_key(g, CROSS),
    "lines": _lines_key,
    "box": lambda g: _colours_key(g, BOX),
}


def learn_table(keys: list[np.ndarray], outputs: list[Grid]) -> dict[int, int] | None:
    """The colour per neighbourhood key, when every demo cell with one key has one colour; else None."""
    k = np.concatenate([a.ravel() for a in keys])
    v = np.concatenate([o.ravel() for o in outputs]).astype(np.int64)
    order = np.argsort(k, kind="stable")
    k, v = k[order], v[order]
    starts = np.r_[0, np.flatnonzero(np.diff(k)) + 1]
    first = v[starts]
    if not np.array_equal(np.repeat(first, np.diff(np.r_[starts, k.size])), v):
        return None
    return dict(zip(k[starts].tolist(), first.tolist()))


def apply_table(table: dict[int, int], key: np.ndarray) -> Grid | None:
    """The grid the table gives for a grid's keys; None when one key is not in the table."""
    flat = key.ravel().tolist()
    try:
        cells = [table[x] for x in flat]
    except KeyError:
        return None
    return np.array(cells, dtype=np.uint8).reshape(key.shape)


def local_rule(inputs: list[Grid], outputs: list[Grid], tests: list[Grid]) -> tuple[str, list[Grid]] | None:
    """The most general neighbourhood whose table maps every demo input to its output and covers every test input,
    and the test outputs it gives; None when the shapes differ, when the demos change nothing, or when none fits."""
    if any(i.shape != o.shape for i, o in zip(inputs, outputs)) or not tests:
        return None
    if all(np.array_equal(i, o) for i, o in zip(inputs, outputs)):
        return None
    for name, keyer in NEIGHBOURHOODS.items():
        table = learn_table([keyer(i) for i in inputs], outputs)
        if table is None:
            continue
        answers = [apply_table(table, keyer(t)) for t in tests]
        if all(a is not None for a in answers):
            return name, answers
    return None
