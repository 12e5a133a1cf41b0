"""Invertible augmentations of grids and whole tasks: the 8 dihedral symmetries, colour permutations, demo order.

Owns the augmentation set. A `Transform` is one element of (dihedral group) x (colour permutations) x (demo orders);
`apply`/`invert` work on grids and tasks, `then` composes explicitly. Knows nothing of tokens or models.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from solver.tasks import Grid, Task

IDENTITY_COLORS = tuple(range(10))


def dihedral(grid: Grid, k: int) -> Grid:
    """Dihedral symmetry k of a grid: k % 4 quarter turns counter-clockwise, then a transpose when k >= 4."""
    out = np.rot90(grid, k % 4)
    return np.ascontiguousarray(out.T if k >= 4 else out)


def _dihedral_table() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Composition and inverse tables of the dihedral group, read off a grid with no symmetry."""
    probe = np.arange(6, dtype=np.uint8).reshape(2, 3)
    images = [dihedral(probe, k) for k in range(8)]
    index = {(g.shape, g.tobytes()): k for k, g in enumerate(images)}
    compose = tuple(index[(dihedral(images[a], b).shape, dihedral(images[a], b).tobytes())]
                    for a in range(8) for b in range(8))  # compose[a*8+b]: a first, then b
    inverse = tuple(next(b for b in range(8) if compose[a * 8 + b] == 0) for a in range(8))
    return compose, inverse


DIHEDRAL_COMPOSE, DIHEDRAL_INVERSE = _dihedral_table()
DIHEDRAL_NAMES = ("id", "rot90", "rot180", "rot270", "transpose", "flip_lr", "anti_transpose", "flip_ud")
SWAPPING = frozenset(k for k in range(8) if dihedral(np.zeros((1, 2), np.uint8), k).shape == (2, 1))  # sides swap


@dataclass(frozen=True)
class Transform:
    """dihedral k in 0..7; colors[c] is the new colour of colour c; order[i] is the old index of new demo i."""
    dihedral: int = 0
    colors: tuple[int, ...] = IDENTITY_COLORS
    order: tuple[int, ...] | None = None  # None keeps the demo order, whatever the number of demos

    def __post_init__(self):
        if not 0 <= self.dihedral < 8:
            raise ValueError(f"dihedral index {self.dihedral} is not in 0..7")
        if sorted(self.colors) != list(range(10)):
            raise ValueError(f"colors {self.colors} is not a permutation of 0..9")
        if self.order is not None and sorted(self.order) != list(range(len(self.order))):
            raise ValueError(f"order {self.order} is not a permutation")

    # grids ------------------------------------------------------------------------------------------------------
    def apply(self, grid: Grid) -> Grid:
        return dihedral(np.asarray(self.colors, dtype=np.uint8)[grid], self.dihedral)

    def invert(self, grid: Grid) -> Grid:
        return self.inverse().apply(grid)

    def apply_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        """The (rows, cols) a grid of `shape` has once transformed: a quarter turn or a transpose swaps its sides."""
        rows, cols = shape
        return (cols, rows) if self.dihedral in SWAPPING else (rows, cols)

    # tasks ------------------------------------------------------------------------------------------------------
    def apply_task(self, task: Task) -> Task:
        train = [(self.apply(a), self.apply(b)) for a, b in task.train]
        if self.order is not None:
            if len(self.order) != len(train):
                raise ValueError(f"task {task.id}: order {self.order} does not fit {len(train)} demos")
            train = [train[i] for i in self.order]
        outs = None if task.test_outputs is None else [self.apply(g) for g in task.test_outputs]
        return replace(task, train=train, test_inputs=[self.apply(g) for g in task.test_inputs], test_outputs=outs)

    def invert_task(self, task: Task) -> Task:
        return self.inverse().apply_task(task)

    # group structure --------------------------------------------------------------------------------------------
    def inverse(self) -> Transform:
        order = None if self.order is None else tuple(int(i) for i in np.argsort(self.order))
        return Transform(DIHEDRAL_INVERSE[self.dihedral], tuple(int(c) for c in np.argsort(self.colors)), order)

    def then(self, other: Transform) -> Transform:
        """The transform that applies self first, then other."""
        # colours commute with dihedral maps, so they compose separately from the geometry
        colors = tuple(other.colors[c] for c in self.colors)
        if self.order is None or other.order is None:
            order = self.order if other.order is None else other.order
        else:
            if len(self.order) != len(other.order):
                raise ValueError(f"cannot compose demo orders of {len(self.order)} and {len(other.order)} demos")
            order = tuple(self.order[i] for i in other.order)
        return Transform(DIHEDRAL_COMPOSE[self.dihedral * 8 + other.dihedral], colors, order)

    @property
    def is_identity(self) -> bool:
        return (self.dihedral == 0 and self.colors == IDENTITY_COLORS
                and (self.order is None or self.order == tuple(range(len(self.order)))))

    def __str__(self) -> str:
        parts = [DIHEDRAL_NAMES[self.dihedral]]
        if self.colors != IDENTITY_COLORS:
            parts.append("c" + "".join(map(str, self.colors)))
        if self.order is not None:
            parts.append("o" + ".".join(map(str, self.order)))
        return "/".join(parts)


IDENTITY = Transform()


def random_colors(rng: np.random.Generator, keep_background: bool = True) -> tuple[int, ...]:
    """A random colour permutation; colour 0 (the background) stays 0 when keep_background."""
    if keep_background:
        return (0,) + tuple(int(c) for c in rng.permutation(np.arange(1, 10)))
    return tuple(int(c) for c in rng.permutation(10))


def sample_transforms(task: Task, n: int, seed: int = 0, *, dihedral: bool = True, colors: bool = True,
                      keep_background: bool = True, order: bool = True, include_identity: bool = True,
                      max_tries: int = 1000) -> list[Transform]:
    """Up to n distinct transforms for a task, seeded. The identity comes first when include_identity.

    Fewer than n come back only when the allowed set is smaller than n (e.g. dihedral only: 8).
    """
    rng = np.random.default_rng(seed)
    num_demos = len(task.train)
    out: list[Transform] = [IDENTITY] if include_identity and n > 0 else []
    seen = {_key(IDENTITY, num_demos)}  # never drawn again, nor at all without include_identity
    tries = 0
    while len(out) < n and tries < max_tries:
        tries += 1
        t = Transform(int(rng.integers(8)) if dihedral else 0,
                      random_colors(rng, keep_background) if colors else IDENTITY_COLORS,
                      tuple(int(i) for i in rng.permutation(num_demos)) if order and num_demos > 1 else None)
        key = _key(t, num_demos)
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def _key(t: Transform, num_demos: int) -> tuple:
    return t.dihedral, t.colors, t.order or tuple(range(num_demos))
