"""Local rules: a cell's output colour as a lookup table of its neighbourhood in the input, or of a few of its
features, learned from the demos.

Owns the neighbourhoods (`NEIGHBOURHOODS`: the cell with its 4 or 8 neighbours, as colours or as which of them are
non-zero; the cell with the colours present in its row and its column), the cell features (`CELL_FEATURES`: its
colour, its object's size, box and place, the colours that rays from it meet, its row and column parity, ...), and
the learning of a table: every demo cell with the same key must give the same colour, and every test cell's key
must have been seen in a demo (a table that does not cover the test is refused, never guessed). Only for grids
whose output has the input's shape. Pure functions of numpy grids; knows nothing of the search that calls it.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from solver.grids import enclosed, label
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


def _learnable(inputs: list[Grid], outputs: list[Grid], tests: list[Grid]) -> bool:
    """Whether a cell table can be learned at all: every output has its input's shape, some demo changes a cell, and
    there is a test input to answer."""
    return bool(tests) and all(i.shape == o.shape for i, o in zip(inputs, outputs)) and \
        not all(np.array_equal(i, o) for i, o in zip(inputs, outputs))


def local_rule(inputs: list[Grid], outputs: list[Grid], tests: list[Grid]) -> tuple[str, list[Grid]] | None:
    """The most general neighbourhood whose table maps every demo input to its output and covers every test input,
    and the test outputs it gives; None when the shapes differ, when the demos change nothing, or when none fits."""
    if not _learnable(inputs, outputs, tests):
        return None
    for name, keyer in NEIGHBOURHOODS.items():
        table = learn_table([keyer(i) for i in inputs], outputs)
        if table is None:
            continue
        answers = [apply_table(table, keyer(t)) for t in tests]
        if all(a is not None for a in answers):
            return name, answers
    return None


# cell features ---------------------------------------------------------------------------------------------------
def _object_stats(g: Grid, multi: bool) -> dict[str, np.ndarray]:
    """Per cell, features of the 8-connected object it belongs to (one colour, or any non-zero colours when
    `multi`); 0 for a zero cell."""
    lab = label(g != 0, None if multi else g, True)
    h, w = g.shape
    flat = lab.ravel()
    on = flat >= 0
    ids = np.where(on, flat, h * w)
    size = np.bincount(ids, minlength=h * w + 1)
    ys, xs = np.divmod(np.arange(h * w), w)
    big = h * w + 1
    top = np.full(big, h, np.int64)
    bottom = np.full(big, -1, np.int64)
    left = np.full(big, w, np.int64)
    right = np.full(big, -1, np.int64)
    np.minimum.at(top, ids, ys)
    np.maximum.at(bottom, ids, ys)
    np.minimum.at(left, ids, xs)
    np.maximum.at(right, ids, xs)
    touches = (top == 0) | (left == 0) | (bottom == h - 1) | (right == w - 1)
    zero = ~on
    out = {"size": np.minimum(size[ids], 12), "height": bottom[ids] - top[ids] + 1,
           "width": right[ids] - left[ids] + 1, "border": touches[ids].astype(np.int64),
           "edge": ((ys == top[ids]) | (ys == bottom[ids]) | (xs == left[ids]) | (xs == right[ids])).astype(np.int64)}
    return {k: np.where(zero, 0, v).reshape(h, w) for k, v in out.items()}


def _ray_colours(g: Grid) -> dict[str, np.ndarray]:
    """Per cell, the colour of the first non-zero cell strictly beyond it in each direction (10 past the edge)."""
    out = {}
    for name, view in (("ray_right", lambda a: a), ("ray_left", lambda a: a[:, ::-1]),
                       ("ray_down", lambda a: a.T), ("ray_up", lambda a: a[::-1].T)):
        t = view(g)
        h, w = t.shape
        seen = np.full(h, OUTSIDE, np.int64)
        res = np.empty((h, w), np.int64)
        for x in range(w - 1, -1, -1):
            res[:, x] = seen
            seen = np.where(t[:, x] != 0, t[:, x], seen)
        out[name] = view(res) if name in ("ray_right", "ray_left") else (res.T if name == "ray_down" else res.T[::-1])
    return out


def cell_features(g: Grid) -> dict[str, np.ndarray]:
    """Every cell feature (CELL_FEATURES) of a grid, each an int array of the grid's shape."""
    ys, xs = np.indices(g.shape)
    feats = {"colour": g.astype(np.int64), "row_parity": ys % 2, "col_parity": xs % 2,
             "row_3": ys % 3, "col_3": xs % 3, "enclosed": enclosed(g).astype(np.int64),
             "neighbours4": sum((n != 0) & (n != OUTSIDE) for n in _around(g, CROSS)).astype(np.int64),
             "neighbours8": sum((n != 0) & (n != OUTSIDE) for n in _around(g, BOX)).astype(np.int64)}
    feats.update(_ray_colours(g))
    feats.update({f"object_{k}": v for k, v in _object_stats(g, False).items()})
    feats.update({f"multi_{k}": v for k, v in _object_stats(g, True).items()})
    return feats


CELL_FEATURES = ("colour", "row_parity", "col_parity", "row_3", "col_3", "enclosed", "neighbours4", "neighbours8",
                 "ray_right", "ray_left", "ray_down", "ray_up", "object_size", "object_height", "object_width",
                 "object_border", "object_edge", "multi_size", "multi_height", "multi_width", "multi_border",
                 "multi_edge")


def _joint(feats: dict[str, np.ndarray], names: tuple[str, ...]) -> np.ndarray:
    key = np.zeros(feats["colour"].shape, np.int64)
    for n in names:
        key = key * 32 + feats[n]
    return key


def feature_rule(inputs: list[Grid], outputs: list[Grid], tests: list[Grid],
                 max_features: int = 2) -> tuple[str, list[Grid]] | None:
    """The cell's colour and the fewest other features (at most `max_features`, in CELL_FEATURES order) whose table
    maps every demo input to its output and covers every test input, and the test outputs it gives; None when the
    shapes differ, the demos change nothing, or no such set exists."""
    if not _learnable(inputs, outputs, tests):
        return None
    demo, test = [cell_features(i) for i in inputs], [cell_features(t) for t in tests]
    others = CELL_FEATURES[1:]
    sets = [()] + [(a,) for a in others] + [(a, b) for k, a in enumerate(others) for b in others[k + 1:]]
    for extra in sets:
        if len(extra) > max_features:
            break
        names = ("colour",) + extra
        table = learn_table([_joint(f, names) for f in demo], outputs)
        if table is None:
            continue
        answers = [apply_table(table, _joint(f, names)) for f in test]
        if all(a is not None for a in answers):
            return "+".join(names), answers
    return None
