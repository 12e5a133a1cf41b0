"""Which primitives commute with transposition: a primitive p's counterpart q, with q(g) == p(g.T).T on every grid.

The search's transposed view (solver.search) skips a program whose every step has a counterpart: it gives the
transpose of what the program of the counterparts gives in the view as given, which that view has already tried.
Counterparts are declared by name, a token rewrite per family of names (steps and rays: up <-> left, down <-> right;
objects picked by place: top <-> left, bottom <-> right; layouts: row <-> col; everywhere: h <-> v, rot90 <->
rot270, rows <-> cols, widest <-> tallest, a x b tiles <-> b x a). tests/test_transposition.py checks every declared
counterpart on the demo grids of ARC-AGI-1 training tasks. A primitive whose result depends on the scan order (ties
broken by row before column, pieces painted back in reading order) has none: UNTRANSPOSABLE.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Iterable


def _both(pairs: dict[str, str]) -> dict[str, str]:
    return {**pairs, **{b: a for a, b in pairs.items()}}


_COMMON = _both({"h": "v", "rot90": "rot270", "rows": "cols", "widest": "tallest"})
_DIRECTIONS = _both({"up": "left", "down": "right"})
_POSITIONS = _both({"top": "left", "bottom": "right"})
_TABLES = {  # a name's first token -> the tokens it rewrites beyond _COMMON (directions where not listed)
    "object": _POSITIONS, "piece": _POSITIONS, "join": {**_POSITIONS, **_both({"row": "column"})},
    "count": _both({"row": "col"}), "colours": _both({"row": "col"}), "scale": {}, "part": {},
}
_DIAGONALS = _both({"rays_down_left": "rays_up_right"}) | {"rays_down_right": "rays_down_right",
                                                          "rays_up_left": "rays_up_left"}
# results that depend on the scan order, found where a counterpart's check fails on the training grids
UNTRANSPOSABLE = re.compile(
    r"diagonals|grid_(over|under)|broadcast_over|sym_all|sym_box_all|shoot_|rays_hv|connect_same|symfill|"
    r"periodic_fill|unmask|each_|piece_.*_commonest|slide_to_|join_.*_(largest|smallest)_|stack_windows|"
    r"largest_bars|colour_bars")


@functools.lru_cache(maxsize=4096)
def counterpart(name: str) -> str | None:
    """The name of the primitive that does to a grid what `name` does to its transpose, transposed back; None when
    it has none declared (the name may still not be in a library: see `counterparts`)."""
    if UNTRANSPOSABLE.match(name):
        return None
    if name in _DIAGONALS:
        return _DIAGONALS[name]
    tokens = re.split(r"([_{}])", name)
    table = {**_COMMON, **_TABLES.get(tokens[0], _DIRECTIONS)}
    out = "".join(table.get(t, t) for t in tokens)
    return re.sub(r"^tile(\d)x(\d)", r"tile\2x\1", out)


def counterparts(names: Iterable[str]) -> frozenset[str]:
    """The names among `names` whose counterpart is among them too."""
    names = set(names)
    return frozenset(n for n in names if counterpart(n) in names)
