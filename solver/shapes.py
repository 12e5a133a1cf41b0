"""The output's shape, deduced from the demos: each side of the output as a rule of the input (its own side, the
other side, a constant, a multiple or fraction, plus or minus a constant; or a side of its non-zero cells' box, of
its largest object, a count of its colours or objects or cells).

Owns the features of an input grid (`features`), the rules for one side that hold on every demo (`side_rules`),
and the task's deduction (`deduce`): per test input the shape of the simplest rules, and whether it is certain
(every rule that holds on the demos gives that shape there). The program search ranks by it; a decoder can force it.
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
    certain: tuple[bool, ...]  # per test input: every rule that holds gives that shape

    def text(self) -> str:
        rows = self.row_rules[0].text if self.row_rules else "?"
        cols = self.col_rules[0].text if self.col_rules else "?"
        return f"{rows} x {cols}"


def _side(rules: tuple[SideRule, ...], feats: dict[str, int]) -> tuple[int | None, bool]:
    values = [r(feats) for r in rules]
    first = values[0] if values else None
    return first, first is not None and all(v == first for v in values)


def deduce(task: Task) -> ShapeDeduction:
    """The output shape's rules from the demos, and what they give for each test input."""
    feats = [features(i) for i, _ in task.train]
    rows = tuple(side_rules(feats, [o.shape[0] for _, o in task.train])) if task.train else ()
    cols = tuple(side_rules(feats, [o.shape[1] for _, o in task.train])) if task.train else ()
    shapes, certain = [], []
    for g in task.test_inputs:
        f = features(g)
        (r, r_sure), (c, c_sure) = _side(rows, f), _side(cols, f)
        shapes.append((r, c) if r is not None and c is not None else None)
        certain.append(shapes[-1] is not None and r_sure and c_sure)
    return ShapeDeduction(rows, cols, tuple(shapes), tuple(certain))
