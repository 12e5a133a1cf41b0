"""Pieces with a position: a grid split into its objects, a unary grid function mapped over every piece, and the
pieces put back where they were; and more ways to choose one piece of a list.

Owns `map_pieces` (each object, or the grid under its bounding box, transformed in place: the piece cleared, its
image laid back centred on the same box, 0 transparent) and the piece operations it maps (`PIECE_OPS`), and
`choose_piece` with the properties that `solver.grids.choose` lacks (width, height, box area, a unique size,
symmetric or not, touching the border or not), and `join_pieces`: a list of pieces in an order, joined in a row, a
column or laid on one another. Pure functions on numpy grids built on solver.grids; knows nothing of
demos or of searching.
"""
from __future__ import annotations

import functools
from collections import Counter

import numpy as np

from solver.grids import (Obj, Prim, Primitive, flip_h, flip_v, hollow, objects, primitive, rot90, rot180, rot270,
                          symmetric, symmetrize, transpose)
from solver.tasks import Grid, grid_key

# unary functions of one piece that a piece map applies; colour ones are added per task (see `piece_ops`)
PIECE_OPS: dict[str, Primitive] = {
    "flip_h": flip_h, "flip_v": flip_v, "rot180": rot180, "rot90": rot90, "rot270": rot270, "transpose": transpose,
    "hollow": hollow, "sym_all": functools.partial(symmetrize, how="all"),
}
MAX_PIECES = 16  # a piece map applies to grids of at most this many objects (more: no image, as for a refused piece)


@primitive
def map_pieces(g: Grid, conn: str, mode: str, op: Primitive) -> Grid | None:
    """Every object of `objects(g, conn)` ('obj': its own cells; 'box': the grid under its bounding box) replaced by
    op's image of it, centred on the same box (0 transparent); None when op refuses a piece, an image leaves the
    grid, nothing changes, or there are more than MAX_PIECES objects."""
    objs = objects(g, conn)
    if not objs or len(objs) > MAX_PIECES:
        return None
    out = g.copy()
    images = []
    for o in objs:
        box = o.box
        piece = o.cells if mode == "obj" else g[box]
        image = op(piece)
        if image is None:
            return None
        top = o.top + (o.mask.shape[0] - image.shape[0]) // 2
        left = o.left + (o.mask.shape[1] - image.shape[1]) // 2
        if top < 0 or left < 0 or top + image.shape[0] > g.shape[0] or left + image.shape[1] > g.shape[1]:
            return None
        if mode == "obj":
            out[box][o.mask] = 0
        else:
            out[box] = 0
        images.append((top, left, image))
    for top, left, image in images:
        region = out[top:top + image.shape[0], left:left + image.shape[1]]
        region[image != 0] = image[image != 0]
    return None if np.array_equal(out, g) else out


def _symmetric(o: Obj) -> bool:
    return symmetric(o.cells, ("h", "v"))


def _touches(o: Obj, shape: tuple) -> bool:
    return o.top == 0 or o.left == 0 or o.top + o.mask.shape[0] == shape[0] or o.left + o.mask.shape[1] == shape[1]


PIECE_PICKS = ("widest", "tallest", "largest_box", "smallest_box", "unique_size", "symmetric", "asymmetric",
               "border", "inner", "commonest")


def choose_piece(objs: tuple[Obj, ...], shape: tuple, how: str) -> Obj | None:
    """One object by a property (see PIECE_PICKS): the unique widest, tallest, of the largest or smallest bounding
    box; the one whose cell count no other has; the one (a)symmetric (mirror left-right or top-bottom) or touching
    (not touching) the grid's border where all the others are not; the first of the objects whose cells (shape and
    colours) repeat most often, when that is more often than any other's; None when none is unique."""
    if len(objs) < 2:
        return None
    if how == "commonest":
        keys = [grid_key(o.cells) for o in objs]
        ranked = Counter(keys).most_common(2)
        if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
            return None
        return objs[keys.index(ranked[0][0])]
    if how in ("unique_size", "symmetric", "asymmetric", "border", "inner"):
        sizes = Counter(x.size for x in objs)
        test = {"unique_size": lambda o: sizes[o.size] == 1,
                "symmetric": _symmetric, "asymmetric": lambda o: not _symmetric(o),
                "border": lambda o: _touches(o, shape), "inner": lambda o: not _touches(o, shape)}[how]
        hits = [o for o in objs if test(o)]
        return hits[0] if len(hits) == 1 else None
    score = {"widest": lambda o: o.mask.shape[1], "tallest": lambda o: o.mask.shape[0],
             "largest_box": lambda o: o.mask.size, "smallest_box": lambda o: -o.mask.size}[how]
    scores = [score(o) for o in objs]
    best = max(scores)
    return objs[scores.index(best)] if scores.count(best) == 1 else None


@primitive
def pick_piece(g: Grid, conn: str, how: str, mode: str) -> Grid | None:
    """The object chosen by `choose_piece`: 'obj' its cells cropped, 'box' the grid under its box, 'only' the grid
    with just it, 'erase' the grid without it."""
    o = choose_piece(objects(g, conn), g.shape, how)
    if o is None:
        return None
    box = o.box
    if mode == "obj":
        return o.cells
    if mode == "box":
        return g[box]
    out = g.copy() if mode == "erase" else np.zeros_like(g)
    out[box][o.mask] = 0 if mode == "erase" else o.cells[o.mask]
    return out


@primitive
def stamp(g: Grid) -> Grid | None:
    """Every one-colour object (8-connected) with the mask of the one multicolour object takes that object's cells;
    None without exactly one multicolour object, or without an object of its mask."""
    objs = objects(g, "m8")
    multi = [o for o in objs if o.colours > 1]
    if len(multi) != 1:
        return None
    t = multi[0]
    out, hit = g.copy(), False
    for o in objs:
        if o.colours == 1 and o.mask.shape == t.mask.shape and np.array_equal(o.mask, t.mask):
            out[o.box] = np.where(o.mask, t.cells, out[o.box])
            hit = True
    return out if hit else None


STEPS = {"down": (1, 0), "up": (-1, 0), "left": (0, -1), "right": (0, 1)}


def _slide(out: np.ndarray, o: Obj, d: str) -> None:
    """Move object o (its cells lifted from `out`) towards side d until the edge or another non-zero cell of `out`
    stops it, in place."""
    dy, dx = STEPS[d]
    ys, xs = np.nonzero(o.mask)
    ys, xs = ys + o.top, xs + o.left
    values = out[ys, xs].copy()
    out[ys, xs] = 0
    h, w = out.shape
    k = 0
    while True:
        ny, nx = ys + (k + 1) * dy, xs + (k + 1) * dx
        if ny.min() < 0 or nx.min() < 0 or ny.max() >= h or nx.max() >= w or out[ny, nx].any():
            break
        k += 1
    out[ys + k * dy, xs + k * dx] = values


def _far_edge(o: Obj, d: str) -> int:
    """How far o reaches towards side d (larger: nearer that side)."""
    return {"down": o.top + o.mask.shape[0], "up": -o.top, "right": o.left + o.mask.shape[1], "left": -o.left}[d]


@primitive
def fall(g: Grid, d: str) -> Grid | None:
    """Every object (multicolour, 8-connected) slides rigidly towards side d until the edge or another object stops
    it, the nearest to that side first; None without objects or with more than MAX_PIECES."""
    objs = objects(g, "m8")
    if not 1 <= len(objs) <= MAX_PIECES:
        return None
    out = g.copy()
    for o in sorted(objs, key=lambda o: -_far_edge(o, d)):
        _slide(out, o, d)
    return out


@primitive
def slide_to(g: Grid, anchor: str) -> Grid | None:
    """Every other object (multicolour, 8-connected) that shares rows (else columns) with the anchor, the unique
    'largest' or 'smallest' object, slides towards it until it touches it or another object, the nearest first;
    None without a unique anchor, with more than MAX_PIECES objects, or when nothing is in line with it."""
    objs = objects(g, "m8")
    if not 2 <= len(objs) <= MAX_PIECES:
        return None
    sign = 1 if anchor == "largest" else -1
    sizes = sorted((sign * o.size for o in objs), reverse=True)
    if sizes[0] == sizes[1]:
        return None
    fixed = max(objs, key=lambda o: sign * o.size)
    rows = range(fixed.top, fixed.top + fixed.mask.shape[0])
    cols = range(fixed.left, fixed.left + fixed.mask.shape[1])
    moves = []
    for o in objs:
        if o is fixed:
            continue
        if set(range(o.top, o.top + o.mask.shape[0])) & set(rows):
            d, gap = ("right", fixed.left - o.left) if o.left < fixed.left else ("left", o.left - fixed.left)
        elif set(range(o.left, o.left + o.mask.shape[1])) & set(cols):
            d, gap = ("down", fixed.top - o.top) if o.top < fixed.top else ("up", o.top - fixed.top)
        else:
            continue
        moves.append((gap, o.top, o.left, d, o))
    if not moves:
        return None
    out = g.copy()
    for *_, d, o in sorted(moves, key=lambda m: m[:3]):
        _slide(out, o, d)
    return out


JOIN_ORDERS = {"left": lambda o: (o.left, o.top), "top": lambda o: (o.top, o.left),
               "largest": lambda o: (-o.size, o.top, o.left), "smallest": lambda o: (o.size, o.top, o.left)}
JOINS = ("row", "column", "over")


@primitive
def join_pieces(g: Grid, conn: str, order: str, how: str) -> Grid | None:
    """The objects' cells cropped and put in `order` (JOIN_ORDERS; ties by position), then joined: side by side
    ('row', all of one height), one above another ('column', all of one width), or laid on one another ('over', all
    of one shape, the first on top, 0 transparent); None for fewer than 2 or more than MAX_PIECES objects, or
    pieces the join cannot fit."""
    objs = objects(g, conn)
    if not 2 <= len(objs) <= MAX_PIECES:
        return None
    crops = [o.cells for o in sorted(objs, key=JOIN_ORDERS[order])]
    if how == "row":
        return np.hstack(crops) if len({c.shape[0] for c in crops}) == 1 else None
    if how == "column":
        return np.vstack(crops) if len({c.shape[1] for c in crops}) == 1 else None
    if len({c.shape for c in crops}) != 1:
        return None
    out = crops[-1].copy()
    for c in reversed(crops[:-1]):
        out = np.where(c != 0, c, out)
    return out


def piece_library() -> list[Prim]:
    """The named piece primitives, each with its declared shape rule (solver.grids.Prim)."""
    out = [Prim(f"each_{conn}_{mode}_{name}", functools.partial(map_pieces, conn=conn, mode=mode, op=op), "same")
           for conn in ("c8", "m8") for mode in ("obj", "box") for name, op in PIECE_OPS.items()]
    out += [Prim(f"piece_{conn}_{how}_{mode}", functools.partial(pick_piece, conn=conn, how=how, mode=mode),
                 "same" if mode in ("only", "erase") else None)
            for conn in ("c8", "m8") for how in PIECE_PICKS for mode in ("obj", "box", "only", "erase")]
    out += [Prim(f"fall_{d}", functools.partial(fall, d=d), "same") for d in STEPS]
    out.append(Prim("stamp", stamp, "same"))
    out += [Prim(f"slide_to_{a}", functools.partial(slide_to, anchor=a), "same") for a in ("largest", "smallest")]
    out += [Prim(f"join_{conn}_{order}_{how}", functools.partial(join_pieces, conn=conn, order=order, how=how), None)
            for conn in ("c8", "m8") for order in JOIN_ORDERS for how in JOINS]
    return out
