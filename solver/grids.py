"""The program search's library of grid primitives: pure functions of one grid that return a new grid, or None where
they do not apply (an empty result, a shape they cannot handle, a result larger than 30x30). None never raises.

Owns the primitives and how they are named and instantiated for a task (`library`, `shape_rule`). Families:
rigid transforms; crops (also at the smallest scale); colour filters and recolouring; scaling, tiling and
mirror-tiling; cutting at separator lines or into halves and combining the parts (and, or, xor, nor, overlays, one
part's mask in each colour of the other's) or picking one; symmetry completion (also about off-centre axes, about the
centre of the drawing under mirrors and turns, and of a masked colour); periodic completion; gravity, shifts, rays
and connecting lines; outlines, halos and fills; objects (connected components, by colour or multicolour, 4- or
8-connected) picked, erased or painted by a property; the windows around marker cells laid on one another; counting,
bars of the largest objects' colours and symmetry flags. Colour 0 is the background throughout; a colour map learned
after a program (solver.search) turns a primitive's marker colours (1, 2, ...) into the task's. Knows nothing of
demos, of searching or of models.
"""
from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

from solver.tasks import MAX_SIDE, Grid

Primitive = Callable[[Grid], "Grid | None"]


def _ok(g) -> Grid | None:
    """A fresh uint8 copy of g, or None when g is missing, not 2-D, empty or larger than 30x30."""
    if g is None or g.ndim != 2 or g.size == 0 or g.shape[0] > MAX_SIDE or g.shape[1] > MAX_SIDE:
        return None
    return np.array(g, dtype=np.uint8)


def primitive(fn):
    """Guard a grid function: odd input (not a 2-D non-empty array) and odd output become None."""
    @functools.wraps(fn)
    def guarded(g, *args, **kwargs):
        if not isinstance(g, np.ndarray) or g.ndim != 2 or g.size == 0:
            return None
        return _ok(fn(g, *args, **kwargs))
    return guarded


IDENTITY = np.arange(10, dtype=np.uint8)


def learn_colour_map(produced: list[Grid], wanted: list[Grid],
                     masks: list[np.ndarray] | None = None) -> np.ndarray | None:
    """A colour table t (t[c] for colour c) with t[p] == w cell for cell in every pair (on the cells of `masks`
    where given), or None when the shapes differ or one colour would need two images. Colours not seen map to
    themselves."""
    if any(p.shape != w.shape for p, w in zip(produced, wanted)):
        return None
    if masks is not None:
        produced, wanted = [p[m] for p, m in zip(produced, masks)], [w[m] for w, m in zip(wanted, masks)]
    table = IDENTITY.copy()
    for p, w in zip(produced, wanted):
        table[p.ravel()] = w.ravel()  # the last image of each colour wins; the check below finds any conflict
    for p, w in zip(produced, wanted):
        if not (table[p] == w).all():
            return None
    return table


# rigid transforms ------------------------------------------------------------------------------------------------
@primitive
def rot90(g: Grid) -> Grid | None:
    """A quarter turn counter-clockwise."""
    return np.rot90(g, 1)


@primitive
def rot180(g: Grid) -> Grid | None:
    """A half turn."""
    return np.rot90(g, 2)


@primitive
def rot270(g: Grid) -> Grid | None:
    """A quarter turn clockwise."""
    return np.rot90(g, 3)


@primitive
def flip_h(g: Grid) -> Grid | None:
    """Mirror left-right."""
    return g[:, ::-1]


@primitive
def flip_v(g: Grid) -> Grid | None:
    """Mirror top-bottom."""
    return g[::-1]


@primitive
def transpose(g: Grid) -> Grid | None:
    """Mirror in the main diagonal."""
    return g.T


@primitive
def antitranspose(g: Grid) -> Grid | None:
    """Mirror in the anti-diagonal."""
    return np.rot90(g, 2).T


# crops -----------------------------------------------------------------------------------------------------------
def _bbox(mask: np.ndarray) -> tuple[slice, slice] | None:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not rows.size:
        return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


@primitive
def crop_bbox(g: Grid) -> Grid | None:
    """The bounding box of the non-zero cells."""
    box = _bbox(g != 0)
    return None if box is None else g[box]


def majority(g: Grid) -> int:
    """The most frequent colour (the smallest on a tie)."""
    return int(np.argmax(np.bincount(g.ravel(), minlength=10)))


@primitive
def crop_bg(g: Grid) -> Grid | None:
    """The bounding box of the cells that differ from the most frequent colour."""
    box = _bbox(g != majority(g))
    return None if box is None else g[box]


@primitive
def crop_colour(g: Grid, c: int) -> Grid | None:
    """The bounding box of the cells of colour c."""
    box = _bbox(g == c)
    return None if box is None else g[box]


@primitive
def crop_inside(g: Grid, c: int) -> Grid | None:
    """Inside the frame of colour c: its bounding box less a one-cell border."""
    box = _bbox(g == c)
    if box is None or box[0].stop - box[0].start < 3 or box[1].stop - box[1].start < 3:
        return None
    return g[box][1:-1, 1:-1]


@primitive
def drop_empty_lines(g: Grid) -> Grid | None:
    """The grid less its all-zero rows and columns."""
    nz = g != 0
    return g[nz.any(1)][:, nz.any(0)]


@primitive
def dedupe_lines(g: Grid) -> Grid | None:
    """The grid less every row equal to the row above and every column equal to the column to its left."""
    rows = np.r_[True, (g[1:] != g[:-1]).any(1)]
    g = g[rows]
    cols = np.r_[True, (g[:, 1:] != g[:, :-1]).any(0)]
    return g[:, cols]


# colours ---------------------------------------------------------------------------------------------------------
@primitive
def keep(g: Grid, c: int) -> Grid | None:
    """Only the cells of colour c; the rest become 0."""
    return np.where(g == c, g, 0)


@primitive
def remove(g: Grid, c: int) -> Grid | None:
    """The cells of colour c become 0."""
    return np.where(g == c, 0, g)


@primitive
def recolour(g: Grid, c: int) -> Grid | None:
    """Every non-zero cell becomes colour c."""
    return np.where(g != 0, c, 0)


@primitive
def majority_1x1(g: Grid) -> Grid | None:
    """A 1x1 grid of the most frequent non-zero colour."""
    counts = np.bincount(g.ravel(), minlength=10)[1:]
    return None if not counts.any() else np.array([[np.argmax(counts) + 1]])


@primitive
def minority_1x1(g: Grid) -> Grid | None:
    """A 1x1 grid of the least frequent non-zero colour present."""
    counts = np.bincount(g.ravel(), minlength=10)[1:].astype(float)
    counts[counts == 0] = np.inf
    return None if np.isinf(counts).all() else np.array([[np.argmin(counts) + 1]])


# scaling and tiling ----------------------------------------------------------------------------------------------
@primitive
def scale_up(g: Grid, k: int) -> Grid | None:
    """Every cell becomes a k x k block."""
    return _blow(g, k)


def _blow(g: Grid, k: int) -> Grid:
    """Every cell as a k x k block."""
    return np.repeat(np.repeat(g, k, 0), k, 1)


@primitive
def scale_down(g: Grid, k: int) -> Grid | None:
    """Every k x k block becomes one cell (its top-left); None unless the sides divide by k and blocks are uniform."""
    h, w = g.shape
    if h % k or w % k:
        return None
    small = g[::k, ::k]
    return small if np.array_equal(_blow(small, k), g) else None


@primitive
def crop_unscale(g: Grid) -> Grid | None:
    """The bounding box of the non-zero cells at its smallest scale: each k x k block one cell, for the largest k
    (2 to 5) whose blocks are uniform; None when no k is."""
    box = crop_bbox(g)
    if box is None:
        return None
    for k in (5, 4, 3, 2):
        small = scale_down(box, k)
        if small is not None:
            return small
    return None


@primitive
def stack_windows(g: Grid, c: int) -> Grid | None:
    """The 3 x 3 windows centred on the cells of colour c, laid on one another (0 transparent, the first in reading
    order on top), a marker cell showing c; None with fewer than two such cells, or one at the edge."""
    marks = np.argwhere(g == c)
    h, w = g.shape
    if len(marks) < 2 or marks.min() < 1 or (marks[:, 0] >= h - 1).any() or (marks[:, 1] >= w - 1).any():
        return None
    out = np.zeros((3, 3), dtype=g.dtype)
    for y, x in marks[::-1]:
        window = g[y - 1:y + 2, x - 1:x + 2]
        out = np.where(window != 0, window, out)
    return out


@primitive
def tile(g: Grid, a: int, b: int) -> Grid | None:
    """The grid repeated a times down and b times across."""
    return np.tile(g, (a, b))


@primitive
def mirror_right(g: Grid) -> Grid | None:
    """The grid beside its left-right mirror."""
    return np.hstack([g, g[:, ::-1]])


@primitive
def mirror_down(g: Grid) -> Grid | None:
    """The grid above its top-bottom mirror."""
    return np.vstack([g, g[::-1]])


@primitive
def mirror_4(g: Grid) -> Grid | None:
    """A 2x2 tiling of the grid and its mirrors, the grid at the top left."""
    top = np.hstack([g, g[:, ::-1]])
    return np.vstack([top, top[::-1]])


@primitive
def mirror_4_rot(g: Grid) -> Grid | None:
    """A 2x2 tiling of the grid turned by 0, 90, 180 and 270 degrees clockwise around the centre (square only)."""
    if g.shape[0] != g.shape[1]:
        return None
    return np.vstack([np.hstack([g, np.rot90(g, 3)]), np.hstack([np.rot90(g, 1), np.rot90(g, 2)])])


@primitive
def fractal(g: Grid) -> Grid | None:
    """Each non-zero cell replaced by a copy of the grid, each zero cell by zeros."""
    return None if g.shape[0] ** 2 > MAX_SIDE or g.shape[1] ** 2 > MAX_SIDE else np.kron(g != 0, g)


@primitive
def fractal_colour(g: Grid, c: int) -> Grid | None:
    """Each cell of colour c replaced by a copy of the grid, every other cell by zeros; None without a cell of c."""
    if g.shape[0] ** 2 > MAX_SIDE or g.shape[1] ** 2 > MAX_SIDE or not (g == c).any():
        return None
    return np.kron(g == c, g)


@primitive
def fractal_inverse(g: Grid) -> Grid | None:
    """Each zero cell replaced by a copy of the grid, each non-zero cell by zeros."""
    return None if g.shape[0] ** 2 > MAX_SIDE or g.shape[1] ** 2 > MAX_SIDE else np.kron(g == 0, g)


# parts and their combinations ------------------------------------------------------------------------------------
def separator_lines(g: Grid) -> tuple[np.ndarray, np.ndarray] | None:
    """Rows and columns (boolean masks) that are all one colour, the same for all; None if there are none. A colour
    found only on such lines is preferred, then a non-zero one, then the smaller."""
    full_r = (g == g[:, :1]).all(1)
    full_c = (g == g[:1, :]).all(0)
    best = None
    for c in set(g[full_r, 0].tolist()) | set(g[0, full_c].tolist()):
        rows, cols = full_r & (g[:, 0] == c), full_c & (g[0, :] == c)
        if rows.all() or cols.all():
            continue
        off = bool((g[~rows][:, ~cols] == c).any())
        splits = len(_runs(rows)) > 1 or len(_runs(cols)) > 1
        if best is None or (not splits, off, c == 0, c) < best[0]:
            best = ((not splits, off, c == 0, c), rows, cols)
    return None if best is None else best[1:]


def _runs(lines: np.ndarray) -> list[slice]:
    """The runs of False in a boolean vector, as slices."""
    out, start = [], None
    for i, v in enumerate(list(lines) + [True]):
        if not v and start is None:
            start = i
        elif v and start is not None:
            out.append(slice(start, i))
            start = None
    return out


CUTS = ("h", "v", "grid", "squares")  # how the primitives cut a grid with `parts` (which also cuts in 'quarters')


def parts(g: Grid, how: str) -> list[Grid]:
    """The grid cut at its separator lines: 'h' side by side (columns), 'v' stacked (rows), 'grid' both. Without
    separators, 'h' and 'v' cut into two halves (the middle line dropped on an odd side). 'squares': a grid whose
    long side is a multiple of its short one, cut into squares along it (none otherwise). 'quarters': the four
    quarters, the middle lines dropped on an odd side (none where a side is one cell)."""
    return list(_parts(g.shape, g.astype(np.uint8).tobytes(), how))


@functools.lru_cache(maxsize=4096)
def _parts(shape: tuple, data: bytes, how: str) -> tuple[Grid, ...]:
    g = np.frombuffer(data, dtype=np.uint8).reshape(shape)
    return tuple(_cut(g, how))


def _cut(g: Grid, how: str) -> list[Grid]:
    if how == "quarters":
        return [q for half in halves(g, "v") for q in halves(half, "h")]
    if how == "squares":
        h, w = g.shape
        if h != w and max(h, w) % min(h, w) == 0:
            k = min(h, w)
            return [g[i:i + k] for i in range(0, h, k)] if h > w else [g[:, i:i + k] for i in range(0, w, k)]
        return []
    seps = separator_lines(g)
    h, w = g.shape
    rows = seps[0] if seps is not None and how in ("v", "grid") else np.zeros(h, bool)
    cols = seps[1] if seps is not None and how in ("h", "grid") else np.zeros(w, bool)
    if how in ("h", "v") and not (cols if how == "h" else rows).any():
        return halves(g, how)
    return [g[r, c] for r in _runs(rows) for c in _runs(cols)]


def halves(g: Grid, how: str) -> list[Grid]:
    """The grid's two halves side by side ('h') or stacked ('v'), the middle line dropped on an odd side; none when
    that side is one cell."""
    h, w = g.shape
    if how == "h":
        return [g[:, :w // 2], g[:, (w + 1) // 2:]] if w > 1 else []
    return [g[:h // 2], g[(h + 1) // 2:]] if h > 1 else []


def _same_shape(ps: list[Grid]) -> bool:
    return len(ps) >= 2 and all(p.shape == ps[0].shape for p in ps)


def combinable_parts(g: Grid, how: str) -> list[Grid] | None:
    """The parts (see `parts`) when they share one shape, else, where the lines taken for separators cut 'h' or 'v'
    parts of different shapes (a full line inside a part), the two halves; None when neither shares one."""
    ps = parts(g, how)
    if not _same_shape(ps) and how in ("h", "v"):
        ps = halves(g, how)
    return ps if _same_shape(ps) else None


COMBINERS = ("and", "or", "xor", "nor", "over", "under", "kron")


@primitive
def combine(g: Grid, how: str, op: str) -> Grid | None:
    """The parts (`combinable_parts`) combined cell by cell: masks and/or/xor (exactly one)/nor of non-zero cells as
    colour 1, or the parts overlaid with 0 transparent, the first on top ('over') or the last ('under'); or ('kron')
    of two parts, one of one colour and one of several, each cell of the second replaced by the first's mask in
    its colour."""
    ps = combinable_parts(g, how)
    if ps is None:
        return None
    if op == "kron":
        return _kron_parts(ps)
    stack = np.stack(ps)
    nz = stack != 0
    if op in ("over", "under"):
        order = stack if op == "over" else stack[::-1]
        first = np.argmax(order != 0, axis=0)
        return np.take_along_axis(order, first[None], 0)[0]
    count = nz.sum(0)
    mask = {"and": count == len(ps), "or": count > 0, "xor": count == 1, "nor": count == 0}[op]
    return mask.astype(np.uint8)


def _kron_parts(ps: list[Grid]) -> Grid | None:
    """kron(pattern, mask) of two parts: the mask the part of one colour, the pattern the part of several."""
    if len(ps) != 2 or ps[0].shape[0] ** 2 > MAX_SIDE or ps[0].shape[1] ** 2 > MAX_SIDE:
        return None
    counts = [len(set(np.unique(p).tolist()) - {0}) for p in ps]
    fewer, more = sorted(counts)
    if fewer != 1 or more < 2:
        return None
    mask, pattern = (ps[0], ps[1]) if counts[0] == 1 else (ps[1], ps[0])
    return np.kron(pattern, (mask != 0).astype(np.uint8))


PART_PICKS = ("first", "last", "most_cells", "fewest_cells", "unique", "most_colours", "symmetric", "asymmetric")


@primitive
def pick_part(g: Grid, how: str, pick: str) -> Grid | None:
    """One part (see `parts`): the first, the last, the one with the most or fewest non-zero cells, the one unlike
    all others, the one with the most colours, or the only one that is (is not) `symmetric`; None on a tie."""
    ps = parts(g, how)
    if len(ps) < 2:
        return None
    if pick in ("first", "last"):
        return ps[0] if pick == "first" else ps[-1]
    if pick in ("symmetric", "asymmetric"):
        hits = [p for p in ps if symmetric(p) == (pick == "symmetric")]
        return hits[0] if len(hits) == 1 else None
    if pick == "unique":
        keys = [bytes(p.shape) + p.tobytes() for p in ps]
        counts = Counter(keys)
        single = [p for p, k in zip(ps, keys) if counts[k] == 1]
        return single[0] if len(single) == 1 and len(ps) >= 3 else None
    score = {"most_cells": lambda p: np.count_nonzero(p), "fewest_cells": lambda p: -np.count_nonzero(p),
             "most_colours": lambda p: len(set(p[p != 0].tolist()))}[pick]
    return _unique_best(ps, score)


def _unique_best(items: list, score):
    """The one item of the highest score, or None when the highest is shared."""
    scores = [score(x) for x in items]
    best = max(scores)
    return items[scores.index(best)] if scores.count(best) == 1 else None


@primitive
def broadcast_part(g: Grid, pick: str) -> Grid | None:
    """Every cell of the separator lattice (see `separator_lines`) replaced by one of them: the part `pick_part`
    picks ('most_cells', 'unique', 'most_colours'), or all of them overlaid ('over', 0 transparent, the first on
    top); the lines kept. None without a lattice of two cells or more of one shape."""
    seps = separator_lines(g)
    if seps is None:
        return None
    cells = [(r, c) for r in _runs(seps[0]) for c in _runs(seps[1])]
    ps = [g[r, c] for r, c in cells]
    if not _same_shape(ps):
        return None
    chosen = combine(g, "grid", "over") if pick == "over" else pick_part(g, "grid", pick)
    if chosen is None or chosen.shape != ps[0].shape:
        return None
    out = g.copy()
    for r, c in cells:
        out[r, c] = chosen
    return out


# symmetry --------------------------------------------------------------------------------------------------------
SYMMETRIES = {"h": lambda g: g[:, ::-1], "v": lambda g: g[::-1], "rot": lambda g: g[::-1, ::-1],
              "diag": lambda g: g.T, "anti": lambda g: g[::-1, ::-1].T}


def symmetric(g: Grid, hows: tuple[str, ...] = tuple(SYMMETRIES)) -> bool:
    """Whether g equals its image under one of the SYMMETRIES named (the diagonal ones only for a square)."""
    return any(SYMMETRIES[h](g).shape == g.shape and np.array_equal(SYMMETRIES[h](g), g) for h in hows)


@primitive
def symmetrize(g: Grid, how: str) -> Grid | None:
    """The zero cells filled from their mirror images ('h', 'v', 'rot' 180 degrees, 'diag', 'anti'; 'all' tries
    each in turn); the diagonal ones need a square grid."""
    out = g.copy()
    for name in (SYMMETRIES if how == "all" else [how]):
        if name in ("diag", "anti") and g.shape[0] != g.shape[1]:
            if how != "all":
                return None
            continue
        out = np.where(out == 0, SYMMETRIES[name](out), out)
    return out


SYMMETRY_GROUPS = ("h", "v", "hv", "rot2", "rot4")  # the symmetries `complete_symmetry` restores
CENTRE_REACH = 2  # half cells: how far a symmetry's centre may lie from the centre of the non-zero cells' box


def _images(ys: np.ndarray, xs: np.ndarray, cy2: np.ndarray, cx2: np.ndarray,
            group: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """The cells' images under the group's elements other than the identity, one row per centre (cy2/2, cx2/2),
    columns of shape (centres, 1); a quarter turn about a centre that maps cells between cells gives no cells."""
    mirror_y, mirror_x = cy2 - ys, cx2 - xs
    same_y, same_x = np.broadcast_to(ys, mirror_y.shape), np.broadcast_to(xs, mirror_x.shape)
    if group == "h":
        return [(same_y, mirror_x)]
    if group == "v":
        return [(mirror_y, same_x)]
    if group == "hv":
        return [(same_y, mirror_x), (mirror_y, same_x), (mirror_y, mirror_x)]
    if group == "rot2":
        return [(mirror_y, mirror_x)]
    turn_y, turn_x = (cy2 - cx2) // 2 + xs, (cy2 + cx2) // 2 - ys  # a quarter turn (where cy2 - cx2 is even)
    return [(turn_y, turn_x), (mirror_y, mirror_x), (cy2 - turn_y, cx2 - turn_x)]


@primitive
def complete_symmetry(g: Grid, group: str) -> Grid | None:
    """The zero cells that the non-zero cells' images fill under a symmetry group (SYMMETRY_GROUPS: a mirror
    left-right 'h' or top-bottom 'v', both 'hv', a half turn 'rot2', quarter turns 'rot4') about the centre near the
    non-zero cells' box (within CENTRE_REACH half cells) where no image meets another colour and most images of a
    cell on another cell meet their own (one at least; the nearer centre on a tie; centres where two colours would
    fill one cell or none is filled do not count); None when no centre fills a cell, or two as good fill
    differently."""
    nz = np.argwhere(g != 0)
    if len(nz) < 2:
        return None
    ys, xs = nz[:, 0], nz[:, 1]
    colours = g[ys, xs]
    h, w = g.shape
    reach = np.arange(-CENTRE_REACH, CENTRE_REACH + 1)
    dy, dx = (a.ravel()[:, None] for a in np.meshgrid(reach, reach, indexing="ij"))
    cy2, cx2 = ys.min() + ys.max() + dy, xs.min() + xs.max() + dx  # every centre at once, one row each
    images = _images(ys, xs, cy2, cx2, group)
    usable = np.ones(len(dy), dtype=bool) if group != "rot4" else (cy2 - cx2)[:, 0] % 2 == 0
    agree = np.zeros(len(dy), dtype=np.int64)
    for my, mx in images:
        inside = (my >= 0) & (my < h) & (mx >= 0) & (mx < w)
        there = np.where(inside, g[np.clip(my, 0, h - 1), np.clip(mx, 0, w - 1)], 0)
        usable &= ~((there != 0) & (there != colours)).any(axis=1)
        agree += ((there != 0) & ((my != ys) | (mx != xs))).sum(axis=1)
    distance = (np.abs(dy) + np.abs(dx))[:, 0]
    order = sorted((-int(agree[c]), int(distance[c]), c) for c in np.flatnonzero(usable & (agree > 0)))
    found, best = None, None
    for *score, c in order:
        if best is not None and score != best:
            break
        out = _filled(g, colours, [(my[c], mx[c]) for my, mx in images])
        if out is None or np.array_equal(out, g):
            continue
        if found is not None and not np.array_equal(found, out):  # two centres as good fill differently
            return None
        found, best = out, score
    return found


def _filled(g: Grid, colours: np.ndarray, images: list) -> Grid | None:
    """g with each cell's images painted in its colour; None when two colours land on one cell."""
    h, w = g.shape
    kept = [((my >= 0) & (my < h) & (mx >= 0) & (mx < w), my, mx) for my, mx in images]
    out = g.copy()
    for inside, my, mx in kept:
        out[my[inside], mx[inside]] = colours[inside]
    if any(not np.array_equal(out[my[inside], mx[inside]], colours[inside]) for inside, my, mx in kept):
        return None
    return out


@primitive
def unmask(g: Grid, c: int) -> Grid | None:
    """The cells hidden under a rectangle of colour c, recovered from the grid's mirror symmetries (about any axis
    position) and cropped to the rectangle; None unless c is one filled rectangle and every hidden cell is recovered."""
    hidden = g == c
    box = _bbox(hidden)
    if box is None or hidden.all() or not hidden[box].all():
        return None
    out = fill_by_symmetry(g, hidden)
    return None if out is None else out[box]


def _mirror_fill(g: Grid, known: np.ndarray, axis: int, centre2: int) -> tuple[Grid, np.ndarray] | None:
    """Cells copied from their mirror image about a line at centre2/2 along `axis` where that image is known; None
    when the known cells disagree with the mirror (no symmetry there) or it overlaps too little."""
    n = g.shape[axis]
    idx = np.arange(n)
    mirror = centre2 - idx
    inside = (mirror >= 0) & (mirror < n)
    if inside.sum() < n // 2 + 1:
        return None
    src = np.take(g, np.clip(mirror, 0, n - 1), axis=axis)
    src_known = np.take(known, np.clip(mirror, 0, n - 1), axis=axis)
    shape = [1, 1]
    shape[axis] = n
    src_known = src_known & inside.reshape(shape)
    both = known & src_known
    if both.sum() < 4 or not (g[both] == src[both]).all():
        return None
    fill = ~known & src_known
    return np.where(fill, src, g), known | src_known


def _mirror_centres(g: Grid, known: np.ndarray, axis: int) -> list[int]:
    """Twice the positions of the mirror lines along `axis` (overlapping at least half the grid) that the known cells
    obey on at least 4 cells, the most central first; all positions tested at once."""
    t, k = (g, known) if axis == 1 else (g.T, known.T)
    n = t.shape[1]
    centres = np.arange(n // 2, 2 * n - 1 - n // 2)
    mirror = centres[:, None] - np.arange(n)[None, :]
    inside = (mirror >= 0) & (mirror < n)
    mirror = np.clip(mirror, 0, n - 1)
    both = k[:, None, :] & k[:, mirror] & inside[None]
    agree = ((t[:, mirror] == t[:, None, :]) | ~both).all(axis=(0, 2)) & (both.sum(axis=(0, 2)) >= 4)
    return sorted(centres[agree].tolist(), key=lambda c: abs(c - (n - 1)))


def fill_by_symmetry(g: Grid, hidden: np.ndarray) -> Grid | None:
    """The hidden cells filled from mirror symmetries of the rest: left-right and top-bottom about every axis
    position that the known cells obey, and the diagonal when square; None unless every hidden cell is filled."""
    known = ~hidden
    out = g.copy()
    for axis in (1, 0):
        for centre2 in _mirror_centres(out, known, axis):
            found = _mirror_fill(out, known, axis, centre2)
            if found is not None:
                out, known = found
                break
    if not known.all() and g.shape[0] == g.shape[1]:
        both = known & known.T
        if (out[both] == out.T[both]).all():
            out, known = np.where(known, out, out.T), known | known.T
    return out if known.all() else None


# gravity and rays ------------------------------------------------------------------------------------------------
@primitive
def gravity(g: Grid, d: str) -> Grid | None:
    """Every non-zero cell slides as far as it can towards side d ('down', 'up', 'left', 'right'), order kept."""
    t = {"down": g, "up": g[::-1], "right": g.T, "left": g[:, ::-1].T}[d]
    order = np.argsort(t != 0, axis=0, kind="stable")
    moved = np.take_along_axis(t, order, 0)
    return {"down": moved, "up": moved[::-1], "right": moved.T, "left": moved.T[:, ::-1]}[d]


def _ray_right(g: Grid) -> Grid:
    """Zero cells take the colour of the nearest non-zero cell to their left in the row."""
    w = g.shape[1]
    idx = np.where(g != 0, np.arange(w), -1)
    idx = np.maximum.accumulate(idx, axis=1)
    filled = np.take_along_axis(g, np.maximum(idx, 0), 1)
    return np.where(idx >= 0, filled, 0)


RAYS = {"right": lambda g: _ray_right(g), "left": lambda g: _ray_right(g[:, ::-1])[:, ::-1],
        "down": lambda g: _ray_right(g.T).T, "up": lambda g: _ray_right(g[::-1].T).T[::-1]}


def _ray_down_right(g: Grid) -> Grid:
    """Zero cells take the colour of the nearest non-zero cell up and to their left on their diagonal."""
    out = g.copy()
    for y in range(1, g.shape[0]):
        cur, prev = out[y, 1:], out[y - 1, :-1]
        out[y, 1:] = np.where(cur == 0, prev, cur)
    return out


DIAGONAL_RAYS = {"down_right": _ray_down_right, "down_left": lambda g: _ray_down_right(g[:, ::-1])[:, ::-1],
                 "up_right": lambda g: _ray_down_right(g[::-1])[::-1],
                 "up_left": lambda g: _ray_down_right(g[::-1, ::-1])[::-1, ::-1]}


@primitive
def rays(g: Grid, d: str) -> Grid | None:
    """Zero cells filled by rays from the non-zero cells towards d ('right', 'left', 'down', 'up', a diagonal as
    'down_right', 'h' both ways in rows, 'v' both ways in columns, 'hv' rows then columns where still zero); each ray
    stops at the next non-zero cell, and a cell between two different colours stays 0."""
    if d in RAYS:
        return RAYS[d](g)
    if d in DIAGONAL_RAYS:
        return DIAGONAL_RAYS[d](g)
    if d in ("h", "v"):
        a, b = (RAYS["right"](g), RAYS["left"](g)) if d == "h" else (RAYS["down"](g), RAYS["up"](g))
        return np.where(a == 0, b, np.where((b == 0) | (a == b), a, 0))
    h = rays(g, "h")
    return np.where(h != 0, h, rays(g, "v"))


STEPS = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1),
         "up_left": (-1, -1), "up_right": (-1, 1), "down_left": (1, -1), "down_right": (1, 1)}
SHOOT_MODES = ("hit", "hit8", "edge8", "mark")  # rays that reach a cell not lone (4 or 8 directions); every ray
# (8); only the cell the ray reaches (4)


@primitive
def shoot(g: Grid, mode: str) -> Grid | None:
    """Rays from every lone cell (non-zero, no 8-neighbour of its colour) over the zero cells in its colour, in the
    four side directions ('hit', 'mark') or all eight ('hit8', 'edge8'): 'hit' modes paint a ray only when it ends at
    a non-zero cell that is not lone, 'edge8' paints every ray up to the next non-zero cell or the edge, 'mark'
    paints only the cell not lone that a ray reaches; where rays meet, the first lone cell in reading order paints;
    None when no cell is lone or no ray is painted."""
    same = np.zeros(g.shape, dtype=bool)
    p = np.pad(g, 1, constant_values=255)
    h, w = g.shape
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                same |= p[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] == g
    lone = (g != 0) & ~same
    ys, xs = np.nonzero(lone)
    if not ys.size or ys.size > 60:
        return None
    steps = list(STEPS.values())[:4] if mode in ("hit", "mark") else list(STEPS.values())
    marked = np.zeros(g.shape, dtype=bool)
    out = g.copy()
    painted = False
    for y, x in zip(ys.tolist(), xs.tolist()):
        for dy, dx in steps:
            cells = []
            r, c = y + dy, x + dx
            while 0 <= r < h and 0 <= c < w and g[r, c] == 0:
                cells.append((r, c))
                r, c = r + dy, c + dx
            if mode == "mark":
                if 0 <= r < h and 0 <= c < w and not lone[r, c] and not marked[r, c]:
                    out[r, c], marked[r, c], painted = g[y, x], True, True
                continue
            if cells and (mode == "edge8" or (0 <= r < h and 0 <= c < w and not lone[r, c])):
                for r, c in cells:
                    if out[r, c] == 0:
                        out[r, c] = g[y, x]
                painted = True
    return out if painted else None


@primitive
def diagonals(g: Grid) -> Grid | None:
    """Both diagonal lines through every non-zero cell drawn over the zero cells, to the edges."""
    ys, xs = np.nonzero(g)
    if not ys.size or ys.size > 60:
        return None
    out = g.copy()
    h, w = g.shape
    yy, xx = np.mgrid[:h, :w]
    for y, x in zip(ys, xs):
        on = ((yy - y) == (xx - x)) | ((yy - y) == (x - xx))
        out = np.where(on & (out == 0), g[y, x], out)
    return out


# outlines and fills ----------------------------------------------------------------------------------------------
def _pad(mask: np.ndarray, value: bool) -> np.ndarray:
    """A boolean mask with a one-cell border of `value` around it."""
    out = np.full((mask.shape[0] + 2, mask.shape[1] + 2), value)
    out[1:-1, 1:-1] = mask
    return out


def _neighbours(mask: np.ndarray, diag: bool) -> np.ndarray:
    """Cells with at least one neighbour in mask (4- or 8-connected), outside the grid counting as not in mask."""
    p = _pad(mask, False)
    out = p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:]
    if diag:
        out |= p[:-2, :-2] | p[:-2, 2:] | p[2:, :-2] | p[2:, 2:]
    return out


@primitive
def hollow(g: Grid) -> Grid | None:
    """Non-zero cells whose four neighbours are all non-zero (inside the grid) become 0."""
    inner = ~_neighbours(_pad(g == 0, True), False)[1:-1, 1:-1]
    return np.where(inner, 0, g)


@primitive
def halo(g: Grid, c: int, diag: bool = True) -> Grid | None:
    """Zero cells next to a non-zero cell (8-connected, or 4 with diag False) become colour c."""
    return np.where((g == 0) & _neighbours(g != 0, diag), c, g)


def enclosed(g: Grid) -> np.ndarray:
    """The zero cells that cannot reach the border through zero cells (4-connected), as a mask."""
    lab = label(g == 0, None, False)
    outside = np.unique(np.r_[lab[0], lab[-1], lab[:, 0], lab[:, -1]])
    return (lab >= 0) & ~np.isin(lab, outside)


@primitive
def fill_enclosed(g: Grid, c: int) -> Grid | None:
    """Zero cells that cannot reach the border through zero cells (4-connected) become colour c."""
    return np.where(enclosed(g), c, g)


@primitive
def flood(g: Grid, c: int) -> Grid | None:
    """Every region of zero cells (4-connected) that a cell of colour c touches side by side takes colour c; None
    when c touches none."""
    lab = label(g == 0, None, False)
    touched = np.zeros(g.shape, dtype=bool)
    cc = g == c
    touched[1:] |= cc[:-1]
    touched[:-1] |= cc[1:]
    touched[:, 1:] |= cc[:, :-1]
    touched[:, :-1] |= cc[:, 1:]
    hit = np.unique(lab[touched & (lab >= 0)])
    return None if hit.size == 0 else np.where(np.isin(lab, hit) & (lab >= 0), c, g)


@primitive
def line_majority(g: Grid, axis: int | None) -> Grid | None:
    """Every row (axis 1) or column (axis 0) painted all in its most frequent colour; None on a tie in some line.
    axis None: rows or columns, whichever changes fewer cells (None on a tie)."""
    if axis is None:
        got = sorted(((int((r != g).sum()), a), r) for a in (1, 0) if (r := line_majority(g, a)) is not None)
        if not got or (len(got) == 2 and got[0][0][0] == got[1][0][0]):
            return None
        return got[0][1]
    t = g if axis == 1 else g.T
    counts = np.stack([np.bincount(row, minlength=10) for row in t])
    if ((counts == counts.max(1, keepdims=True)).sum(1) > 1).any():
        return None
    out = np.repeat(counts.argmax(1)[:, None], t.shape[1], 1).astype(np.uint8)
    return out if axis == 1 else out.T


# objects ---------------------------------------------------------------------------------------------------------
def label(mask: np.ndarray, key: np.ndarray | None, diag: bool) -> np.ndarray:
    """Connected components of the cells in mask (joined only where `key` is equal, when given), 4- or 8-connected:
    per cell the smallest flat index in its component, -1 off the mask."""
    h, w = mask.shape
    idx = np.arange(h * w).reshape(h, w)
    key = mask if key is None else key
    shifts = [(slice(None), slice(None, -1), slice(None), slice(1, None)),
              (slice(None, -1), slice(None), slice(1, None), slice(None))]
    if diag:
        shifts += [(slice(None, -1), slice(None, -1), slice(1, None), slice(1, None)),
                   (slice(None, -1), slice(1, None), slice(1, None), slice(None, -1))]
    a_list, b_list = [], []
    for r0, c0, r1, c1 in shifts:
        link = mask[r0, c0] & mask[r1, c1] & (key[r0, c0] == key[r1, c1])
        a_list.append(idx[r0, c0][link])
        b_list.append(idx[r1, c1][link])
    a, b = np.concatenate(a_list), np.concatenate(b_list)
    lab = idx.ravel().copy()
    while a.size:
        low = np.minimum(lab[a], lab[b])
        new = lab.copy()
        np.minimum.at(new, a, low)
        np.minimum.at(new, b, low)
        new = new[new[new]]
        if np.array_equal(new, lab):
            break
        lab = new
    return np.where(mask.ravel(), lab, -1).reshape(h, w)


@dataclass(frozen=True)
class Obj:
    """One connected component: its bounding box's corner, its mask and cells in the box (0 off the object)."""
    top: int
    left: int
    mask: np.ndarray
    cells: np.ndarray
    size: int
    colour: int  # its most frequent colour
    colours: int  # how many colours it has

    @property
    def box(self) -> tuple[slice, slice]:
        """Its bounding box in the grid, as a pair of slices."""
        return slice(self.top, self.top + self.mask.shape[0]), slice(self.left, self.left + self.mask.shape[1])


CONNECTIVITY = {"c4": (False, False), "c8": (False, True), "m4": (True, False), "m8": (True, True)}


MAX_OBJECTS = 64  # a grid with more components counts as having none (noise; bounds the search's cost)


def objects(g: Grid, conn: str) -> tuple[Obj, ...]:
    """The connected components of the non-zero cells, in reading order of their first cell: 'c4'/'c8' one colour
    each, 'm4'/'m8' multicolour, 4- or 8-connected; none when there are more than MAX_OBJECTS."""
    return _objects(g.shape, g.astype(np.uint8).tobytes(), conn)


@functools.lru_cache(maxsize=2048)
def _objects(shape: tuple, data: bytes, conn: str) -> tuple[Obj, ...]:
    g = np.frombuffer(data, dtype=np.uint8).reshape(shape)
    multi, diag = CONNECTIVITY[conn]
    lab = label(g != 0, None if multi else g, diag)
    flat = lab.ravel()
    cells = np.flatnonzero(flat >= 0)
    if not cells.size:
        return ()
    order = cells[np.argsort(flat[cells], kind="stable")]
    starts = np.r_[0, np.flatnonzero(np.diff(flat[order])) + 1]
    if starts.size > MAX_OBJECTS:
        return ()
    ys, xs = np.divmod(order, shape[1])
    tops, lefts = np.minimum.reduceat(ys, starts), np.minimum.reduceat(xs, starts)
    bottoms, rights = np.maximum.reduceat(ys, starts), np.maximum.reduceat(xs, starts)
    ends = np.r_[starts[1:], order.size]
    out = []
    for k, (a, b) in enumerate(zip(starts, ends)):
        top, left = tops[k], lefts[k]
        mask = np.zeros((bottoms[k] - top + 1, rights[k] - left + 1), dtype=bool)
        mask[ys[a:b] - top, xs[a:b] - left] = True
        box = np.where(mask, g[top:top + mask.shape[0], left:left + mask.shape[1]], 0)
        counts = np.bincount(g.ravel()[order[a:b]], minlength=10)
        out.append(Obj(int(top), int(left), mask, box, int(b - a), int(np.argmax(counts)),
                       int(np.count_nonzero(counts))))
    return tuple(out)


def _shape_key(o: Obj) -> bytes:
    return bytes(o.mask.shape) + o.mask.tobytes()


def choose(objs: tuple[Obj, ...], how: str) -> Obj | None:
    """One object by a property: 'largest', 'smallest', 'top', 'bottom', 'left', 'right' (the unique extreme),
    'unique_colour' (the one whose colour no other has), 'unique_shape' (the one whose mask no other has),
    'most_colours', 'holed' (the one that encloses zero cells), 'most_of_c' (the most cells of colour c); None when
    no object or none is unique."""
    if not objs:
        return None
    if how.startswith("most_of_"):
        c = int(how[len("most_of_"):])
        return _unique_best(list(objs), lambda o: int(np.count_nonzero(o.cells == c)))
    if how in ("unique_colour", "unique_shape"):
        key = (lambda o: o.colour) if how == "unique_colour" else _shape_key
        keys = [key(o) for o in objs]
        counts = Counter(keys)
        single = [o for o, k in zip(objs, keys) if counts[k] == 1]
        return single[0] if len(single) == 1 and len(objs) >= 3 else None
    score = {"largest": lambda o: o.size, "smallest": lambda o: -o.size, "top": lambda o: -o.top,
             "bottom": lambda o: o.top + o.mask.shape[0], "left": lambda o: -o.left,
             "right": lambda o: o.left + o.mask.shape[1], "most_colours": lambda o: o.colours,
             "holed": lambda o: _has_hole(o.mask)}[how]
    return _unique_best(list(objs), score)


@functools.lru_cache(maxsize=8192)
def _chosen(shape: tuple, data: bytes, conn: str, how: str) -> Obj | None:
    return choose(_objects(shape, data, conn), how)


OBJECT_PICKS = ("largest", "smallest", "top", "bottom", "left", "right", "unique_colour", "unique_shape",
                "most_colours", "holed")


@primitive
def pick_object(g: Grid, conn: str, how: str, mode: str) -> Grid | None:
    """The object chosen by `how` (see `choose`) among `objects(g, conn)`: 'obj' its own cells, cropped; 'box' the
    grid under its bounding box; 'only' the whole grid with just that object; 'erase' the grid less that object."""
    o = _chosen(g.shape, g.astype(np.uint8).tobytes(), conn, how)
    if o is None:
        return None
    if mode == "obj":
        return o.cells
    box = o.box
    if mode == "box":
        return g[box]
    out = g.copy() if mode == "erase" else np.zeros_like(g)
    out[box][o.mask] = 0 if mode == "erase" else o.cells[o.mask]
    return out


@primitive
def count_objects(g: Grid, conn: str, layout: str) -> Grid | None:
    """The number n of objects as a grid of the most frequent non-zero colour: 'row' 1 x n, 'col' n x 1, 'diag' n x n
    with a diagonal."""
    n = len(objects(g, conn))
    if n == 0:
        return None
    return _top_colour(g) * {"row": np.ones((1, n)), "col": np.ones((n, 1)), "diag": np.eye(n)}[layout]


def _top_colour(g: Grid) -> int:
    """The most frequent non-zero colour (0 when there is none)."""
    counts = np.bincount(g.ravel(), minlength=10)[1:]
    return int(np.argmax(counts)) + 1 if counts.any() else 0


@primitive
def count_cells(g: Grid, layout: str) -> Grid | None:
    """The number n of non-zero cells as a grid of the most frequent non-zero colour: 'row' 1 x n, 'col' n x 1."""
    n = int(np.count_nonzero(g))
    if n == 0:
        return None
    return _top_colour(g) * {"row": np.ones((1, n)), "col": np.ones((n, 1))}[layout]


@primitive
def colours_by_count(g: Grid, layout: str) -> Grid | None:
    """The non-zero colours present, most frequent first (ties by colour), as a 'row' or a 'col'."""
    counts = np.bincount(g.ravel(), minlength=10)[1:]
    present = [c + 1 for c in np.argsort(-counts, kind="stable") if counts[c]]
    if not present:
        return None
    return np.array([present]) if layout == "row" else np.array([present]).T


@primitive
def largest_bars(g: Grid) -> Grid | None:
    """The colours of the largest one-colour objects (8-connected), left to right by their first column, each a
    column as tall as their size; None without objects or when the size passes MAX_SIDE."""
    objs = objects(g, "c8")
    if not objs:
        return None
    best = max(o.size for o in objs)
    tops = sorted((o.left, o.top, int(o.cells.max())) for o in objs if o.size == best)
    if best > MAX_SIDE:
        return None
    return np.tile(np.array([[c for _, _, c in tops]], dtype=np.uint8), (best, 1))


@primitive
def colour_bars(g: Grid) -> Grid | None:
    """A bar chart of the non-zero colours: a column per colour, most frequent first (ties by colour), filled from
    the top for as many cells as the colour has; None without a colour or when a count passes MAX_SIDE."""
    counts = np.bincount(g.ravel(), minlength=10)[1:]
    order = [c for c in np.argsort(-counts, kind="stable") if counts[c]]
    if not order or counts.max() > MAX_SIDE:
        return None
    out = np.zeros((int(counts.max()), len(order)), dtype=np.uint8)
    for k, c in enumerate(order):
        out[:counts[c], k] = c + 1
    return out


PAINT_PROPS = ("size", "rank", "extreme", "holes", "single", "shape")


@primitive
def paint_objects(g: Grid, conn: str, prop: str) -> Grid | None:
    """Every object's cells painted with a number for one property (the final colour map turns numbers into
    colours): 'size' its cell count (at most 9), 'rank' 1 for the largest size, 2 the next..., 'extreme' 1 for the
    largest size, 2 the smallest, 3 the rest, 'holes' 1 when it encloses zero cells, else 2, 'single' 1 for a single
    cell, else 2, 'shape' 1 when no other object has its shape, else 2."""
    objs = objects(g, conn)
    if not objs:
        return None
    sizes = sorted({o.size for o in objs}, reverse=True)
    if prop == "rank" and len(sizes) > 9:
        return None
    shapes = Counter(_shape_key(o) for o in objs) if prop == "shape" else None
    out = np.zeros_like(g)
    for o in objs:
        value = {"size": lambda: min(o.size, 9), "rank": lambda: sizes.index(o.size) + 1,
                 "extreme": lambda: 1 if o.size == sizes[0] else 2 if o.size == sizes[-1] else 3,
                 "holes": lambda: 1 if _has_hole(o.mask) else 2, "single": lambda: 1 if o.size == 1 else 2,
                 "shape": lambda: 1 if shapes[_shape_key(o)] == 1 else 2}[prop]()
        out[o.box][o.mask] = value
    return out


def _has_hole(mask: np.ndarray) -> bool:
    """Whether a mask encloses cells that cannot reach its box's border outside the mask (4-connected)."""
    if mask.shape[0] < 3 or mask.shape[1] < 3 or mask.sum() < 4:
        return False
    lab = label(_pad(~mask, True), None, False)
    return bool(np.any(lab[lab >= 0] != lab[0, 0]))


@primitive
def colour_boxes(g: Grid) -> Grid | None:
    """Zero cells inside the bounding box of exactly one colour's cells take that colour (in several: stay 0)."""
    out, hits = g.copy(), np.zeros(g.shape, dtype=np.uint8)
    for c in np.unique(g[g != 0]).tolist():
        box = _bbox(g == c)
        hits[box] += 1
        out[box] = np.where(g[box] == 0, c, out[box])
    return np.where((g == 0) & (hits > 1), 0, out)


@primitive
def connect(g: Grid, c: int) -> Grid | None:
    """Zero cells between two cells of the same colour in a row or a column become colour c (their colour when c
    is 0); rows first."""
    out = g.copy()
    for t, o in ((g, out), (g.T, out.T)):
        right, left = RAYS["right"](t), RAYS["left"](t)
        between = (t == 0) & (right == left) & (right != 0) & (o == 0)
        o[between] = right[between] if c == 0 else c
    return out


@primitive
def scale_by_colours(g: Grid) -> Grid | None:
    """Every cell becomes a k x k block, k the number of non-zero colours present."""
    k = len(set(np.unique(g).tolist()) - {0})
    return None if k < 1 else _blow(g, k)


@primitive
def symmetry_flag(g: Grid, how: str) -> Grid | None:
    """A 1x1 grid: colour 1 when the grid equals its mirror image ('h', 'v', 'rot', 'diag', 'anti'), else 2."""
    if how in ("diag", "anti") and g.shape[0] != g.shape[1]:
        return np.array([[2]])
    return np.array([[1 if np.array_equal(SYMMETRIES[how](g), g) else 2]])


@primitive
def symmetrize_box(g: Grid, how: str) -> Grid | None:
    """`symmetrize` applied inside the bounding box of the non-zero cells, the rest of the grid kept."""
    box = _bbox(g != 0)
    if box is None:
        return None
    inner = symmetrize(g[box], how)
    if inner is None:
        return None
    out = g.copy()
    out[box] = inner
    return out


@primitive
def symfill(g: Grid, c: int) -> Grid | None:
    """The cells of colour c replaced from the grid's mirror symmetries (see `fill_by_symmetry`), in place; None
    unless every such cell is recovered."""
    hidden = g == c
    if not hidden.any() or hidden.all():
        return None
    return fill_by_symmetry(g, hidden)


def _period(g: Grid, known: np.ndarray, axis: int) -> int:
    """The smallest shift p along `axis` with g equal to itself shifted by p wherever both cells are known (and some
    are); all shifts tested at once."""
    t, k = (g, known) if axis == 0 else (g.T, known.T)
    n = t.shape[0]
    if n < 2:
        return n
    shifted = np.arange(n)[None, :] + np.arange(1, n)[:, None]
    inside = shifted < n
    shifted = np.minimum(shifted, n - 1)
    both = k[None] & k[shifted] & inside[..., None]
    agree = ((t[shifted] == t[None]) | ~both).all(axis=(1, 2)) & both.any(axis=(1, 2))
    hits = np.flatnonzero(agree)
    return int(hits[0]) + 1 if hits.size else n


LATTICE_REACH = 3  # a pattern is tried as a lattice only when it obeys a step this short (rows and columns)
LATTICE_SIDE = 10  # the lattices tried: rows of p <= this, each row shifted by q < s <= this columns


def _has_short_step(g: Grid, known: np.ndarray) -> bool:
    """Whether the grid equals itself shifted by some step (dy, dx), |dy|, |dx| <= LATTICE_REACH, wherever both
    cells are known (and some are); all steps tested at once."""
    h, w = g.shape
    r = LATTICE_REACH
    pad = np.full((h + r, w + 2 * r), -1, dtype=np.int64)
    base = np.where(known, g.astype(np.int64), -1)
    pad[:h, r:r + w] = base
    win = np.lib.stride_tricks.sliding_window_view(pad, (h, w))[:r + 1]  # [dy, r + dx]: the cell (y + dy, x + dx)
    both = (win >= 0) & (base >= 0)[None, None]
    ok = ((win == base[None, None]) | ~both).all(axis=(2, 3)) & both.any(axis=(2, 3))
    ok[0, :r + 1] = False  # the null step, and the steps left along a row (the same as right)
    return bool(ok.any())


def lattice_fill(g: Grid, known: np.ndarray) -> Grid | None:
    """The grid's unknown cells from the lattice of fewest classes (rows of p cells' period, each p rows shifted by
    q of s columns: the lattice's Hermite normal form) in which every class holds one known colour; None when no
    lattice within LATTICE_SIDE does."""
    h, w = g.shape
    ys, xs = np.indices((h, w))
    lattices = sorted((p * s, p, s) for p in range(1, min(h, LATTICE_SIDE) + 1)
                      for s in range(1, min(w, LATTICE_SIDE) + 1) if p < h or s < w)
    colours = g[known].astype(np.int64)
    for _, p, s in lattices:
        qs = np.arange(s)[:, None, None]
        cls = (ys % p) * s + (xs[None] - (ys // p)[None] * qs) % s + qs * (p * s)  # one class set per shift q
        seen, values = cls[:, known].ravel(), np.tile(colours, s)
        lo, hi = np.full(s * p * s, 10), np.full(s * p * s, -1)
        np.minimum.at(lo, seen, values)
        np.maximum.at(hi, seen, values)
        good = ((lo == hi).reshape(s, p * s)).all(axis=1)  # every class of that shift holds one colour
        if good.any():
            q = int(np.argmax(good))
            return hi[cls[q]].astype(g.dtype)
    return None


@primitive
def periodic_fill(g: Grid, c: int) -> Grid | None:
    """The cells of colour c replaced from the grid's repeating pattern: the smallest row and column periods that the
    other cells obey, else (when they obey a short step: diagonal stripes, staggered tiles) the lattice of fewest
    classes that they obey (`lattice_fill`); None unless every such cell is recovered."""
    known = g != c
    if known.all() or not known.any():
        return None
    py, px = _period(g, known, 0), _period(g, known, 1)
    if py < g.shape[0] or px < g.shape[1]:
        cls = (np.arange(g.shape[0])[:, None] % py) * px + np.arange(g.shape[1])[None, :] % px
        value = np.full(py * px, -1)
        value[cls[known]] = g[known]
        out = value[cls]
        if not (out < 0).any():
            return out
    return lattice_fill(g, known) if _has_short_step(g, known) else None


@primitive
def drop_specks(g: Grid, conn: str) -> Grid | None:
    """The grid less its objects of a single cell (objects as in `objects(g, conn)`)."""
    out = g.copy()
    for o in objects(g, conn):
        if o.size == 1:
            out[o.top, o.left] = 0
    return out


@primitive
def frame(g: Grid, c: int) -> Grid | None:
    """The grid's outermost rows and columns painted colour c."""
    out = g.copy()
    out[[0, -1], :] = c
    out[:, [0, -1]] = c
    return out


@primitive
def interior(g: Grid, c: int) -> Grid | None:
    """Non-zero cells whose eight neighbours are all non-zero (inside the grid) become colour c."""
    inner = ~_neighbours(_pad(g == 0, True), True)[1:-1, 1:-1]
    return np.where(inner & (g != 0), c, g)


@primitive
def scale_down_majority(g: Grid, k: int) -> Grid | None:
    """Every k x k block becomes one cell of its most frequent colour (ties to the smaller); the sides must divide
    by k."""
    h, w = g.shape
    if h % k or w % k:
        return None
    blocks = g.reshape(h // k, k, w // k, k).transpose(0, 2, 1, 3).reshape(h // k, w // k, k * k)
    counts = (blocks[..., None] == np.arange(10)).sum(2)
    return np.argmax(counts, axis=2)


@primitive
def shift(g: Grid, d: str) -> Grid | None:
    """The grid moved one cell towards side d ('down', 'up', 'left', 'right'), zeros coming in."""
    out = np.zeros_like(g)
    if d == "down":
        out[1:] = g[:-1]
    elif d == "up":
        out[:-1] = g[1:]
    elif d == "right":
        out[:, 1:] = g[:, :-1]
    else:
        out[:, :-1] = g[:, 1:]
    return out


@primitive
def fill_bbox(g: Grid, c: int) -> Grid | None:
    """Zero cells inside the bounding box of a multicolour 8-connected object become colour c."""
    out = g.copy()
    for o in objects(g, "m8"):
        box = out[o.box]
        box[box == 0] = c
    return out


@primitive
def keep_by_count(g: Grid, which: str) -> Grid | None:
    """Only the cells of the 'rarest' or 'commonest' non-zero colour (None on a tie); the rest become 0."""
    counts = np.bincount(g.ravel(), minlength=10)[1:]
    present = counts[counts > 0]
    if not present.size:
        return None
    target = present.min() if which == "rarest" else present.max()
    if (counts == target).sum() != 1:
        return None
    return np.where(g == int(np.flatnonzero(counts == target)[0]) + 1, g, 0)


@primitive
def corner(g: Grid) -> Grid | None:
    """The top-left quarter (rounded up) of the grid."""
    return g[:(g.shape[0] + 1) // 2, :(g.shape[1] + 1) // 2]


@primitive
def repeat_band(g: Grid, axis: int) -> Grid | None:
    """The band of rows (axis 0) or columns (axis 1) holding the non-zero cells repeated to fill the grid."""
    t = g if axis == 0 else g.T
    rows = np.flatnonzero((t != 0).any(1))
    if not rows.size:
        return None
    top, height = rows[0], rows[-1] - rows[0] + 1
    out = t[top + (np.arange(t.shape[0]) - top) % height]
    return out if axis == 0 else out.T


def _cell_pixels(g: Grid, value) -> np.ndarray | None:
    """A grid cut by separator lines into cells (at least two), each cell become one pixel: value(cell)."""
    seps = separator_lines(g)
    if seps is None:
        return None
    rows, cols = _runs(seps[0]), _runs(seps[1])
    if len(rows) * len(cols) < 2:
        return None
    return np.array([[value(g[r, c]) for c in cols] for r in rows])


@primitive
def cells_to_pixels(g: Grid) -> Grid | None:
    """A grid cut by separator lines into cells, each cell become one pixel of its most frequent non-zero colour
    (0 for an empty cell)."""
    return _cell_pixels(g, _top_colour)


@primitive
def cells_count(g: Grid) -> Grid | None:
    """A grid cut by separator lines into cells, each cell become one pixel valued by its number of non-zero cells
    (a final colour map names the colours); None when a cell holds more than 9."""
    out = _cell_pixels(g, np.count_nonzero)
    return None if out is None or out.max() > 9 else out


@primitive
def fill_majority(g: Grid) -> Grid | None:
    """A grid of the same shape, all of the most frequent colour."""
    return np.full_like(g, majority(g))


@primitive
def fractal_majority(g: Grid) -> Grid | None:
    """Each cell of the most frequent colour replaced by a copy of the grid, every other cell by zeros."""
    if g.shape[0] ** 2 > MAX_SIDE or g.shape[1] ** 2 > MAX_SIDE:
        return None
    return np.kron(g == majority(g), g)


@primitive
def tile_unit(g: Grid) -> Grid | None:
    """The smallest tile whose repetition makes the grid (its top-left corner); None when the grid does not repeat."""
    known = np.ones(g.shape, dtype=bool)
    py, px = _period(g, known, 0), _period(g, known, 1)
    return None if (py, px) == g.shape else g[:py, :px]


@primitive
def mirror_left(g: Grid) -> Grid | None:
    """The grid's left-right mirror beside it, the mirror on the left."""
    return np.hstack([g[:, ::-1], g])


@primitive
def mirror_up(g: Grid) -> Grid | None:
    """The grid's top-bottom mirror above it."""
    return np.vstack([g[::-1], g])


@primitive
def invert(g: Grid) -> Grid | None:
    """Zero cells become the most frequent non-zero colour, non-zero cells become 0."""
    c = _top_colour(g)
    return None if c == 0 else np.where(g == 0, c, 0)


@primitive
def extend_periodic(g: Grid, axis: int) -> Grid | None:
    """The grid continued by its own repeating pattern to twice its height (axis 0) or width (axis 1)."""
    t = g if axis == 0 else g.T
    p = _period(t, np.ones(t.shape, dtype=bool), 0)
    out = t[np.arange(2 * t.shape[0]) % p]
    return out if axis == 0 else out.T


# the library -----------------------------------------------------------------------------------------------------
class Prim(NamedTuple):
    """A named primitive and the shape rule it declares: 'same' (it keeps a grid's shape), 'swap' (it transposes
    it) or None (anything: the search runs it to see)."""
    name: str
    fn: Primitive
    shape: str | None


def _declare(shape: str | None, named: list[tuple[str, Primitive]]) -> list[Prim]:
    return [Prim(n, f, shape) for n, f in named]


def _part(fn, **fixed) -> Primitive:
    return functools.partial(fn, **fixed)


# -----------------------------------------------------------------------------------------------------
def _plain() -> list[Prim]:
    """The primitives without a colour parameter, named, each with its shape rule."""
    out = _declare("swap", [(f.__name__, f) for f in (rot90, rot270, transpose, antitranspose)])
    out += _declare("same", [(f.__name__, f) for f in (rot180, flip_h, flip_v, hollow, diagonals, colour_boxes,
                                                       invert, fill_majority)])
    out += _declare(None, [(f.__name__, f) for f in (crop_bbox, crop_bg, drop_empty_lines, dedupe_lines, majority_1x1,
                                                     minority_1x1, mirror_right, mirror_down, mirror_4, mirror_4_rot,
                                                     fractal, fractal_inverse, scale_by_colours, cells_to_pixels,
                                                     fractal_majority, tile_unit, mirror_left, mirror_up, corner,
                                                     cells_count, crop_unscale, largest_bars, colour_bars)])
    out += _declare(None, [(f"scale_up{k}", _part(scale_up, k=k)) for k in (2, 3, 4)])
    out += _declare(None, [(f"scale_down{k}", _part(scale_down, k=k)) for k in (2, 3)])
    out += _declare(None, [(f"tile{a}x{b}", _part(tile, a=a, b=b))
                           for a, b in ((1, 2), (2, 1), (2, 2), (3, 3), (1, 3), (3, 1))])
    out += _declare(None, [(f"{how}_{op}", _part(combine, how=how, op=op)) for how in CUTS for op in COMBINERS])
    out += _declare(None, [(f"part_{how}_{pick}", _part(pick_part, how=how, pick=pick))
                           for how in CUTS for pick in PART_PICKS])
    out += _declare("same", [(f"broadcast_{pick}", _part(broadcast_part, pick=pick))
                             for pick in ("most_cells", "unique", "most_colours", "over")])
    out += _declare("same", [("majority_rows", _part(line_majority, axis=1)),
                             ("majority_cols", _part(line_majority, axis=0)),
                             ("majority_lines", _part(line_majority, axis=None))])
    out += _declare("same", [(f"sym_{how}", _part(symmetrize, how=how)) for how in (*SYMMETRIES, "all")])
    out += _declare("same", [(f"shoot_{m}", _part(shoot, mode=m)) for m in SHOOT_MODES])
    out += _declare("same", [(f"gravity_{d}", _part(gravity, d=d)) for d in ("down", "up", "left", "right")])
    out += _declare("same", [(f"rays_{d}", _part(rays, d=d)) for d in (*RAYS, *DIAGONAL_RAYS, "h", "v", "hv")])
    out += [Prim(f"object_{conn}_{how}_{mode}", _part(pick_object, conn=conn, how=how, mode=mode),
                 "same" if mode in ("only", "erase") else None)
            for conn in CONNECTIVITY for how in OBJECT_PICKS for mode in ("obj", "box", "only", "erase")]
    out += _declare("same", [(f"paint_{conn}_{prop}", _part(paint_objects, conn=conn, prop=prop))
                             for conn in ("c4", "m8") for prop in PAINT_PROPS])
    out += _declare(None, [(f"flag_{how}", _part(symmetry_flag, how=how)) for how in SYMMETRIES])
    out += _declare("same", [(f"complete_{grp}", _part(complete_symmetry, group=grp)) for grp in SYMMETRY_GROUPS])
    out += _declare("same", [(f"sym_box_{how}", _part(symmetrize_box, how=how)) for how in (*SYMMETRIES, "all")])
    out += _declare("same", [("connect_same", _part(connect, c=0))])
    out += _declare("same", [(f"drop_specks_{conn}", _part(drop_specks, conn=conn)) for conn in ("c8", "m8")])
    out += _declare(None, [(f"scale_down_majority{k}", _part(scale_down_majority, k=k)) for k in (2, 3)])
    out += _declare("same", [(f"shift_{d}", _part(shift, d=d)) for d in ("down", "up", "left", "right")])
    out += _declare("same", [(f"keep_{w}", _part(keep_by_count, which=w)) for w in ("rarest", "commonest")])
    out += _declare(None, [("extend_v", _part(extend_periodic, axis=0)), ("extend_h", _part(extend_periodic, axis=1))])
    out += _declare("same", [("repeat_band_v", _part(repeat_band, axis=0)), ("repeat_band_h", _part(repeat_band, axis=1))])
    out += _declare(None, [(f"count_objects_{conn}_{lay}", _part(count_objects, conn=conn, layout=lay))
                           for conn in ("c4", "m8") for lay in ("row", "col", "diag")])
    out += _declare(None, [(f"count_cells_{lay}", _part(count_cells, layout=lay)) for lay in ("row", "col")])
    out += _declare(None, [(f"colours_by_count_{lay}", _part(colours_by_count, layout=lay)) for lay in ("row", "col")])
    return out


def library(in_colours: list[int], out_colours: list[int]) -> list[Prim]:
    """The named primitives for a task, each with its shape rule: the plain ones, then those with a colour taken from
    the task (colours of the inputs for filters and crops, of the outputs for what is painted)."""
    out = _plain()
    for c in sorted(set(in_colours) - {0}):
        out += _declare("same", [(f"keep{{{c}}}", _part(keep, c=c)), (f"remove{{{c}}}", _part(remove, c=c))])
        out += _declare(None, [(f"crop_colour{{{c}}}", _part(crop_colour, c=c)),
                               (f"crop_inside{{{c}}}", _part(crop_inside, c=c))])
        out += _declare("same", [(f"flood{{{c}}}", _part(flood, c=c))])
        out += _declare(None, [(f"stack_windows{{{c}}}", _part(stack_windows, c=c))])
        out += _declare(None, [(f"object_m8_most{{{c}}}_obj", _part(pick_object, conn="m8", how=f"most_of_{c}",
                                                                   mode="obj"))])
    for c in sorted(set(in_colours)):
        out += _declare(None, [(f"unmask{{{c}}}", _part(unmask, c=c))])
        if c:
            out += _declare(None, [(f"fractal{{{c}}}", _part(fractal_colour, c=c))])
        out += _declare("same", [(f"symfill{{{c}}}", _part(symfill, c=c)),
                                 (f"periodic_fill{{{c}}}", _part(periodic_fill, c=c))])
    for c in sorted(set(out_colours) - {0}):
        out += _declare("same", [(f"recolour{{{c}}}", _part(recolour, c=c)),
                                 (f"fill_enclosed{{{c}}}", _part(fill_enclosed, c=c)),
                                 (f"halo{{{c}}}", _part(halo, c=c)), (f"halo4{{{c}}}", _part(halo, c=c, diag=False)),
                                 (f"connect{{{c}}}", _part(connect, c=c)), (f"frame{{{c}}}", _part(frame, c=c)),
                                 (f"interior{{{c}}}", _part(interior, c=c)), (f"fill_bbox{{{c}}}", _part(fill_bbox, c=c))])
    return out
