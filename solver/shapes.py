"""The output's shape, deduced from the demos: each side of the output as a rule of the input (its own side, the
other side, a constant, a multiple or fraction, plus or minus a constant; or a side of its non-zero cells' box, of
its largest object, a count of its colours or objects or cells).

Owns the features of an input grid (`features`), the rules for one side that hold on every demo (`side_rules`),
the task's deduction (`deduce`): per test input the shape of the simplest rules, and whether it is certain
(every rule that holds on the demos gives that shape there), and the ways to bring a grid to a shape (`SIZERS`:
tile, mirror-tile, scale, embed or crop at a corner or the centre, fold overlapping corners onto one another). The program search ranks by the deduction and
sizes its grids with the sizers; a decoder can force the shape.
Pure functions of numpy grids; knows nothing of searching or of models.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from solver.grids import objects
from solver.tasks import MAX_SIDE, Grid, Task

FACTORS = (Fraction(1), Fraction(2), Fraction(3), Fraction(4), Fraction(5), Fraction(1, 2), Fraction(1, 3))
# simplest first: a rule on an earlier feature is preferred to one on a later one
FEATURES = ("rows", "cols", "box_rows", "box_cols", "object_rows", "object_cols", "colours", "objects", "cells")


def features(g: Grid) -> dict[str, int]:
    """The numbers of an input grid that an output side may follow (see FEATURES)."""
    nz = np.argwhere(g != 0)
    box = (nz.max(0) - nz.min(0) + 1).tolist() if nz.size else [0, 0]
    objs = objects(g, "m8")
    big = max(objs, key=lambda o: o.size).mask.shape if objs else (0, 0)
    return {"rows": g.shape[0], "cols": g.shape[1], "box_rows": box[0], "box_cols": box[1], "object_rows": big[0],
            "object_cols": big[1], "colours": len(set(np.unique(g).tolist()) - {0}), "objects": len(objs),
            "cells": int(len(nz))}


@dataclass(frozen=True)
class SideRule:
    """One side of the output: `factor * feature + offset`, or the constant `offset` when feature is None."""
    feature: str | None
    factor: Fraction
    offset: int

    def __call__(self, feats: dict[str, int]) -> int | None:
        if self.feature is None:
            return self.offset
        value = self.factor * feats[self.feature] + self.offset
        return int(value) if value.denominator == 1 and 1 <= value <= MAX_SIDE else None

    @property
    def text(self) -> str:
        if self.feature is None:
            return str(self.offset)
        scaled = self.feature if self.factor == 1 else f"{self.factor}*{self.feature}"
        return scaled + (f"{self.offset:+d}" if self.offset else "")


def side_rules(feats: list[dict[str, int]], sides: list[int]) -> list[SideRule]:
    """Every rule that gives `sides[k]` from `feats[k]` on every demo, simplest first: a side of the input times a
    factor, a constant, another feature times a factor, a feature times a factor plus an offset of at most 2."""
    plain, shifted = [], []
    for name in FEATURES:
        for factor in FACTORS:
            offset = sides[0] - factor * feats[0][name]
            if offset.denominator != 1:
                continue
            rule = SideRule(name, factor, int(offset))
            if all(rule(f) == s for f, s in zip(feats, sides)):
                (shifted if rule.offset else plain).append(rule)
    const = [SideRule(None, Fraction(1), sides[0])] if len(set(sides)) == 1 else []
    own = [r for r in plain if r.feature in ("rows", "cols")]
    return own + const + [r for r in plain if r not in own] + [r for r in shifted if abs(r.offset) <= 2]


@dataclass(frozen=True)
class ShapeDeduction:
    """The demos' rules for the output's rows and columns, and per test input the shape they give."""
    row_rules: tuple[SideRule, ...]
    col_rules: tuple[SideRule, ...]
    shapes: tuple[tuple[int, int] | None, ...]  # per test input: the simplest rules' shape (None: no rule applies)
    certain: tuple[bool, ...]  # per test input: every rule that holds gives that shape, the simplest on a side or fixed

    def certain_shape(self, index: int) -> tuple[int, int] | None:
        """Test input `index`'s output shape where it is certain, else None."""
        return self.shapes[index] if self.certain[index] else None

    def text(self) -> str:
        rows = self.row_rules[0].text if self.row_rules else "?"
        cols = self.col_rules[0].text if self.col_rules else "?"
        return f"{rows} x {cols}"


def _side(rules: tuple[SideRule, ...], feats: dict[str, int]) -> tuple[int | None, bool]:
    """The simplest rule's size, and whether it is certain: every rule agrees and the simplest follows an input side
    or is a constant (a rule on a piece or a count fits few demos by chance too often to force a decoder)."""
    values = [r(feats) for r in rules]
    first = values[0] if values else None
    plain = bool(rules) and rules[0].feature in (None, "rows", "cols")
    return first, first is not None and plain and all(v == first for v in values)


def deduce(task: Task) -> ShapeDeduction:
    """The output shape's rules from the demos, and what they give for each test input."""
    return deduce_from([i for i, _ in task.train], [o for _, o in task.train], list(task.test_inputs))


def deduce_from(inputs: list[Grid], outputs: list[Grid], tests: list[Grid]) -> ShapeDeduction:
    """`deduce` on demo inputs and outputs and test inputs given apart (a search's view of a task)."""
    feats = [features(i) for i in inputs]
    rows = tuple(side_rules(feats, [o.shape[0] for o in outputs])) if inputs else ()
    cols = tuple(side_rules(feats, [o.shape[1] for o in outputs])) if inputs else ()
    shapes, certain = [], []
    for g in tests:
        f = features(g)
        (r, r_sure), (c, c_sure) = _side(rows, f), _side(cols, f)
        shapes.append((r, c) if r is not None and c is not None else None)
        certain.append(shapes[-1] is not None and r_sure and c_sure)
    return ShapeDeduction(rows, cols, tuple(shapes), tuple(certain))


# bringing a grid to a shape --------------------------------------------------------------------------------------
def _tile(g: Grid, shape: tuple) -> Grid:
    reps = (-(-shape[0] // g.shape[0]), -(-shape[1] // g.shape[1]))
    return np.tile(g, reps)[:shape[0], :shape[1]]


def _mirror_tile(g: Grid, shape: tuple) -> Grid:
    """Tiled with every other copy mirrored, so neighbouring copies meet as reflections."""
    row = np.hstack([g if k % 2 == 0 else g[:, ::-1] for k in range(-(-shape[1] // g.shape[1]))])
    full = np.vstack([row if k % 2 == 0 else row[::-1] for k in range(-(-shape[0] // g.shape[0]))])
    return full[:shape[0], :shape[1]]


def _scale(g: Grid, shape: tuple) -> Grid | None:
    if shape[0] % g.shape[0] or shape[1] % g.shape[1]:
        return None
    return np.kron(g, np.ones((shape[0] // g.shape[0], shape[1] // g.shape[1]), dtype=np.uint8))


def _place(g: Grid, shape: tuple, anchor: tuple[int, int]) -> Grid:
    """g embedded in (or cropped to) a zero grid of `shape`, aligned on each axis in halves of the difference: at its
    start (0), its middle (1, rounded down) or its end (2); (0, 0) is the top-left corner."""
    out = np.zeros(shape, dtype=np.uint8)
    oy, ox = ((shape[k] - g.shape[k]) * anchor[k] // 2 for k in (0, 1))
    sy, dy = (0, oy) if oy >= 0 else (-oy, 0)
    sx, dx = (0, ox) if ox >= 0 else (-ox, 0)
    h, w = min(g.shape[0] - sy, shape[0] - dy), min(g.shape[1] - sx, shape[1] - dx)
    out[dy:dy + h, dx:dx + w] = g[sy:sy + h, sx:sx + w]
    return out


def _fold(g: Grid, shape: tuple) -> Grid | None:
    """The grid's four corners of `shape` laid on one another (0 transparent, the top-left on top); None unless the
    shape fits inside the grid and the corners overlap on a side where it is smaller (halves and quarters
    that do not overlap are the search's combiners, solver.grids.combine)."""
    h, w = shape
    overlap = [n < 2 * k < 2 * n for k, n in zip(shape, g.shape)]
    if h > g.shape[0] or w > g.shape[1] or not any(overlap):
        return None
    out = np.zeros(shape, dtype=np.uint8)
    for part in (g[-h:, -w:], g[-h:, :w], g[:h, -w:], g[:h, :w]):  # the last laid wins
        out = np.where(part != 0, part, out)
    return out


SIZERS = {"tile": _tile, "mirror_tile": _mirror_tile, "scale": _scale,
          "corner": lambda g, s: _place(g, s, (0, 0)), "centre": lambda g, s: _place(g, s, (1, 1)),
          "corner_tr": lambda g, s: _place(g, s, (0, 2)), "corner_bl": lambda g, s: _place(g, s, (2, 0)),
          "corner_br": lambda g, s: _place(g, s, (2, 2)), "fold": _fold}


def to_shape(g: Grid, shape: tuple, how: str) -> Grid | None:
    """g brought to `shape` by one of SIZERS; None when that sizer cannot (a scale that is not a whole factor) or
    the shape is empty or larger than 30x30."""
    if not (1 <= shape[0] <= MAX_SIDE and 1 <= shape[1] <= MAX_SIDE) or g.size == 0:
        return None
    return SIZERS[how](g, shape)
