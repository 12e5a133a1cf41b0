"""The decoding shape cap (solver.plan.plausible_shape) never rules out a true answer of a training task.

The rule was chosen on the training splits less their protected tasks (solver.tasks.drop_protected: arc2:train copies
376 arc1:eval tasks, and both hold the held-out slice); evaluation outputs were only measured, never tuned on.
"""
import numpy as np
import pytest

from solver.plan import plausible_shape
from solver.tasks import drop_protected, load_tasks


@pytest.fixture(scope="module", params=["arc1:train", "arc2:train"])
def unprotected(request):
    """(task id, demos, test input, test output) of every test pair of a training split's unprotected tasks."""
    tasks, _ = drop_protected(load_tasks(request.param), request.param)
    assert len(tasks) > 300
    return [(tid, t.train, q, y) for tid, t in tasks.items() for q, y in zip(t.test_inputs, t.test_outputs)]


def test_no_training_test_output_exceeds_the_cap(unprotected):
    excluded = [(tid, q.shape, y.shape, plausible_shape(train, q)) for tid, train, q, y in unprotected
                if any(s > c for s, c in zip(y.shape, plausible_shape(train, q)))]
    assert excluded == []  # (task, query shape, true output shape, cap)


def test_cap_follows_a_transposed_view(unprotected):
    """Views transpose every grid of a task together: the cap of the transposed task is the transposed cap."""
    for tid, train, q, _ in unprotected:
        flipped = [(a.T, b.T) for a, b in train]
        assert plausible_shape(flipped, q.T) == plausible_shape(train, q)[::-1], tid


def test_shape_keeping_tasks_get_exactly_the_query_shape(unprotected):
    """The common case stays tight: when every demo keeps its shape, the budget is the query's shape, no more."""
    same = [(train, q) for _, train, q, _ in unprotected if all(a.shape == b.shape for a, b in train)]
    assert len(same) > 100
    assert all(plausible_shape(train, q) == q.shape for train, q in same)


def grid(rows: int, cols: int) -> np.ndarray:
    return np.zeros((rows, cols), np.uint8)


def test_rules_every_demo_obeys():
    # a fixed ratio: 2x rows, 3x cols (and the difference rule agrees on nothing larger)
    assert plausible_shape([(grid(2, 2), grid(4, 6)), (grid(3, 1), grid(6, 3))], grid(5, 4)) == (10, 12)
    # a fixed output shape
    assert plausible_shape([(grid(9, 9), grid(3, 3)), (grid(12, 7), grid(3, 3))], grid(20, 20)) == (3, 3)
    # a fixed difference: a border of one cell
    assert plausible_shape([(grid(3, 4), grid(5, 6)), (grid(6, 2), grid(8, 4))], grid(7, 7)) == (9, 9)
    # the output's rows are the input's columns (a rotation)
    assert plausible_shape([(grid(2, 5), grid(5, 2)), (grid(4, 3), grid(3, 4))], grid(6, 8)) == (8, 6)
    # capped at 30
    assert plausible_shape([(grid(2, 2), grid(4, 6))], grid(20, 20)) == (30, 30)


def test_content_dependent_shapes_get_an_extrapolated_square():
    # output side = a count (1, 2, 4 seen): one step past the largest seen, and at least the query
    demos = [(grid(3, 3), grid(1, 2)), (grid(3, 3), grid(1, 1)), (grid(3, 3), grid(1, 4))]
    assert plausible_shape(demos, grid(3, 3)) == (7, 7)
    # a ratio that gives the query no whole number of cells is no rule (rows / 4 here; 15 / 4 is not whole)
    demos = [(grid(16, 10), grid(4, 4)), (grid(12, 12), grid(3, 3)), (grid(8, 12), grid(2, 2))]
    assert plausible_shape(demos, grid(15, 12)) == (15, 15)
    assert plausible_shape(demos, grid(20, 12)) == (5, 5)  # 20 / 4 is whole: the ratio rule fits both sides
