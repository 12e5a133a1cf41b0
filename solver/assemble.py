"""Answers assembled from parts: a greedy overlay of several partial programs, each exactly right on the cells it
covers across every demo, until every demo output is reproduced.

A part is a candidate's grids on the demo and test inputs. Over the input (`base="input"`, outputs of the input's
shape) a part covers the cells it changes; over a blank grid (`base="blank"`) it covers its non-zero cells. A part
is usable when a colour table (learned on the cells it covers) makes every cell it covers right on every demo; the
greedy step takes the usable part that covers the most cells still wrong (the earliest on a tie), and stops when
nothing is wrong, or when no part helps (no answer). On a test input the parts are laid in the order chosen, an
earlier part's cells staying on top. Pure functions of numpy grids; knows nothing of the search that finds the
parts.
"""
from __future__ import annotations

import numpy as np

from solver.grids import learn_colour_map
from solver.tasks import Grid

BASES = ("input", "blank")


def _covered(part: list[Grid], bases: list[Grid], base: str) -> list[np.ndarray]:
    return [p != b for p, b in zip(part, bases)] if base == "input" else [p != 0 for p in part]


def part_table(part: list[Grid], inputs: list[Grid], outputs: list[Grid]) -> np.ndarray | None:
    """Over the input: the colour table that makes a part right on every cell it changes and changes some wrong
    cell, or None."""
    cover = _covered(part, inputs, "input")
    if not any((c & (i != o)).any() for c, i, o in zip(cover, inputs, outputs)):
        return None
    return learn_colour_map(part, outputs, cover)


def _usable(parts: list[list[Grid]], bases: list[Grid], outputs: list[Grid],
            base: str) -> tuple[list[int], list[np.ndarray], np.ndarray, np.ndarray]:
    """Indices of the parts that a colour table makes right on every cell they cover, those tables, per usable part
    the wrong cells it fixes, and the cells wrong on the base (flat over the demos)."""
    keep, tables, gains = [], [], []
    wrong = np.concatenate([(b != o).ravel() for b, o in zip(bases, outputs)])
    for k, part in enumerate(parts):
        if any(p.shape != o.shape for p, o in zip(part, outputs)):
            continue
        cover = _covered(part, bases, base)
        table = learn_colour_map(part, outputs, cover)
        if table is None:
            continue
        gain = np.concatenate([c.ravel() for c in cover]) & wrong
        if gain.any():
            keep.append(k)
            tables.append(table)
            gains.append(gain)
    return keep, tables, (np.stack(gains) if gains else np.zeros((0, wrong.size), bool)), wrong


def assemble(parts: list[tuple[list[Grid], list[Grid | None]]], inputs: list[Grid], outputs: list[Grid],
             tests: list[Grid], base: str = "input", max_parts: int = 4) -> tuple[list[int], list[Grid]] | None:
    """The parts chosen (indices into `parts`, each a pair of demo grids and test grids) and the test outputs they
    give, when at most `max_parts` of them reproduce every demo output over `base` and every test input gets an
    answer; else None. Only assemblies of two parts or more are returned: one part alone is a plain program."""
    if base == "input" and any(i.shape != o.shape for i, o in zip(inputs, outputs)):
        return None
    bases = list(inputs) if base == "input" else [np.zeros_like(o) for o in outputs]
    keep, tables, gains, wrong = _usable([p for p, _ in parts], bases, outputs, base)
    if not keep or not wrong.any():
        return None
    chosen, left = [], wrong.copy()
    while left.any() and len(chosen) < max_parts:
        score = (gains & left).sum(1)
        best = int(np.argmax(score))
        if score[best] == 0:
            return None
        chosen.append(best)
        left &= ~gains[best]
    if left.any() or len(chosen) < 2:
        return None
    outs = _lay([parts[keep[b]][1] for b in chosen], [tables[b] for b in chosen], tests, base)
    return None if outs is None else ([keep[b] for b in chosen], outs)


def _lay(part_tests: list[list[Grid | None]], tables: list[np.ndarray], tests: list[Grid],
         base: str) -> list[Grid] | None:
    """The chosen parts' test grids (each under its colour table) laid over the test inputs (or a blank grid),
    earlier parts on top; None when a part has no grid for a test input or the shapes disagree."""
    out = []
    for j, test_in in enumerate(tests):
        grids = [part[j] for part in part_tests]
        if any(g is None for g in grids) or len({g.shape for g in grids}) != 1:
            return None
        if base == "input" and grids[0].shape != test_in.shape:
            return None
        canvas = test_in.copy() if base == "input" else np.zeros_like(grids[0])
        done = np.zeros(canvas.shape, bool)
        for g, table in zip(grids, tables):
            cover = (g != test_in) if base == "input" else (g != 0)
            cover &= ~done
            canvas = np.where(cover, table[g], canvas)
            done |= cover
        out.append(canvas)
    return out
