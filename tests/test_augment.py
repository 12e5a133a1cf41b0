import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from solver.augment import (DIHEDRAL_NAMES, IDENTITY, Transform, dihedral, random_colors, sample_transforms)
from solver.tasks import Task

grids = st.tuples(st.integers(1, 30), st.integers(1, 30)).flatmap(
    lambda hw: arrays(np.uint8, hw, elements=st.integers(0, 9)))
perms = st.permutations(list(range(10))).map(tuple)
transforms = st.builds(Transform, st.integers(0, 7), perms, st.none() | st.permutations([0, 1, 2]).map(tuple))


def make_task(seed=0, demos=3):
    rng = np.random.default_rng(seed)
    g = lambda: rng.integers(0, 10, size=tuple(rng.integers(1, 8, size=2)), dtype=np.uint8)  # noqa: E731
    return Task("t", [(g(), g()) for _ in range(demos)], [g()], [g()])


def tasks_equal(a: Task, b: Task) -> bool:
    pairs = [(x, y) for p, q in zip(a.train, b.train) for x, y in zip(p, q)]
    pairs += list(zip(a.test_inputs, b.test_inputs)) + list(zip(a.test_outputs, b.test_outputs))
    return len(a.train) == len(b.train) and all(x.shape == y.shape and np.array_equal(x, y) for x, y in pairs)


def test_dihedral_group_has_eight_distinct_elements():
    g = np.arange(6, dtype=np.uint8).reshape(2, 3)
    images = {(dihedral(g, k).shape, dihedral(g, k).tobytes()) for k in range(8)}
    assert len(images) == 8 and len(DIHEDRAL_NAMES) == 8
    assert np.array_equal(dihedral(g, 5), g[:, ::-1])  # flip_lr
    assert np.array_equal(dihedral(g, 7), g[::-1, :])  # flip_ud
    assert np.array_equal(dihedral(g, 4), g.T)


@settings(max_examples=200, deadline=None)
@given(grids, transforms)
def test_every_transform_inverts_exactly(grid, t):
    out = t.apply(grid)
    assert out.dtype == np.uint8
    assert out.shape in (grid.shape, grid.shape[::-1])
    back = t.invert(out)
    assert back.shape == grid.shape and np.array_equal(back, grid)
    assert np.array_equal(t.inverse().inverse().apply(grid), out)


@settings(max_examples=200, deadline=None)
@given(grids, transforms, transforms)
def test_composition_matches_sequential_application(grid, s, t):
    composed = s.then(t)
    assert np.array_equal(composed.apply(grid), t.apply(s.apply(grid)))
    assert np.array_equal(composed.inverse().apply(composed.apply(grid)), grid)
    assert np.array_equal(composed.inverse().apply(grid), s.inverse().apply(t.inverse().apply(grid)))


@settings(max_examples=50, deadline=None)
@given(transforms, transforms, st.integers(0, 1000))
def test_task_transforms_invert_and_compose(s, t, seed):
    task = make_task(seed)
    assert tasks_equal(s.invert_task(s.apply_task(task)), task)
    assert tasks_equal(s.then(t).apply_task(task), t.apply_task(s.apply_task(task)))


def test_demo_order_moves_pairs_together():
    task = make_task(1)
    moved = Transform(order=(2, 0, 1)).apply_task(task)
    assert [p[0].tobytes() for p in moved.train] == [task.train[i][0].tobytes() for i in (2, 0, 1)]
    assert [p[1].tobytes() for p in moved.train] == [task.train[i][1].tobytes() for i in (2, 0, 1)]
    with pytest.raises(ValueError, match="does not fit 2 demos"):
        Transform(order=(2, 0, 1)).apply_task(make_task(1, demos=2))


def test_invalid_transforms_are_refused():
    with pytest.raises(ValueError):
        Transform(dihedral=8)
    with pytest.raises(ValueError):
        Transform(colors=(0,) * 10)
    with pytest.raises(ValueError):
        Transform(order=(0, 0))


def test_background_kept_or_not():
    rng = np.random.default_rng(0)
    assert all(random_colors(rng)[0] == 0 for _ in range(50))
    assert any(random_colors(rng, keep_background=False)[0] != 0 for _ in range(50))


def test_sampler_is_seeded_distinct_and_bounded():
    task = make_task(2)
    a, b = sample_transforms(task, 16, seed=3), sample_transforms(task, 16, seed=3)
    assert a == b and len(set(a)) == 16 and a[0] == IDENTITY
    assert sample_transforms(task, 16, seed=4) != a
    only_dihedral = sample_transforms(task, 20, colors=False, order=False)
    assert len(only_dihedral) == 8 and {t.dihedral for t in only_dihedral} == set(range(8))
    assert all(t.colors[0] == 0 for t in a)
    assert IDENTITY not in sample_transforms(task, 5, include_identity=False, dihedral=False, order=False)
    assert str(Transform(1, order=(1, 0))) == "rot90/o1.0"


def test_a_shape_maps_as_a_grid_of_that_shape_does():
    grid = np.zeros((2, 5), np.uint8)
    for k in range(8):
        t = Transform(k, colors=(0, 2, 1, 3, 4, 5, 6, 7, 8, 9))
        assert t.apply_shape((2, 5)) == t.apply(grid).shape
    assert Transform(1).apply_shape((2, 5)) == (5, 2) and Transform(2).apply_shape((2, 5)) == (2, 5)
