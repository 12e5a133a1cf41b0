"""Counterparts under transposition: each declared one checked on training grids, and the transposed view that skips
programs of counterparts alone gives the same answers as one that runs them."""
import numpy as np
import pytest

from solver import search as S
from solver.grids import library
from solver.pieces import piece_library
from solver.tasks import is_heldout, load_tasks
from solver.transposition import counterpart, counterparts

LIBRARY = library(list(range(10)), list(range(10))) + piece_library()


@pytest.fixture(scope="module")
def training_grids():
    """Every 25th demo grid (input and output) of the ARC-AGI-1 training tasks not held out."""
    tasks = [t for k, t in sorted(load_tasks("arc1:train").items()) if not is_heldout(k)]
    return [g for t in tasks for pair in t.train for g in pair][::25]


def _same(a, b) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and a.shape == b.shape and (a == b).all())


def test_every_declared_counterpart_does_to_a_grid_what_its_primitive_does_to_the_transpose(training_grids):
    fns = {p.name: p.fn for p in LIBRARY}
    declared = counterparts(fns)
    assert len(declared) >= 0.8 * len(fns)  # the declaration covers most of the library (else the view saves little)
    for name in sorted(declared):
        p, q = fns[name], fns[counterpart(name)]
        for g in training_grids:
            got = p(g.T.copy())
            assert _same(None if got is None else got.T, q(g)), (name, counterpart(name), g.tolist())


def test_a_counterpart_of_a_counterpart_is_the_primitive():
    for name in counterparts(p.name for p in LIBRARY):
        assert counterpart(counterpart(name)) == name
    assert counterpart("rot90") == "rot270" and counterpart("gravity_down") == "gravity_right"
    assert counterpart("object_c4_top_obj") == "object_c4_left_obj" and counterpart("tile1x3") == "tile3x1"
    assert counterpart("rays_down_left") == "rays_up_right" and counterpart("scale_down2") == "scale_down2"
    assert counterpart("slide_to_largest") is None  # its result depends on the scan order


@pytest.mark.parametrize("task_id", ["3bd67248", "d4f3cd78", "b27ca6d3"])
def test_the_transposed_view_skips_programs_its_plain_view_tried_and_answers_the_same(task_id, monkeypatch):
    task = load_tasks("arc1:train")[task_id]
    skipping = S.search_task(task, float("inf"))
    assert skipping.stats["skipped_transposed"] > 0
    monkeypatch.setattr(S, "counterparts", lambda names: frozenset())
    running = S.search_task(task, float("inf"))
    assert running.stats["skipped_transposed"] == 0
    for i in range(task.num_tests):
        got = [g for g, _ in S.answers(skipping, i)]
        want = [g for g, _ in S.answers(running, i)]
        assert len(got) == len(want) and all(np.array_equal(a, b) for a, b in zip(got, want))
