"""Scores under non-identity views are the model's probabilities of the view's own frame, and the default selection
rule ranks a hand-built table as documented (tie-breaks included): checks that fail if a view is mapped the wrong
way or the rule drifts."""
import math
import time

import numpy as np
import pytest
import torch
from test_generate import CODEC, FakeModel, colour_swap_task

from solver.augment import Transform
from solver.generate import make_view, score_view
from solver.select import Candidate, choose_attempts, rank_combined

V = len(CODEC.token_ids)


def bigram_table(seed: int = 0) -> np.ndarray:
    """Log-probabilities of the next token given the current one: a fixed random table."""
    logits = np.random.default_rng(seed).normal(0.0, 2.0, size=(V, V))
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def bigram_policy(table: np.ndarray):
    return lambda history: table[history[-1]]


def expected_score(table: np.ndarray, prompt_last: int, grid_in_view_frame: np.ndarray) -> float:
    ids = np.append(CODEC.grid_ids(grid_in_view_frame), CODEC.eos)
    prev = np.concatenate([[prompt_last], ids[:-1]])
    return float(sum(table[p, t] for p, t in zip(prev, ids)))


@pytest.mark.parametrize("transform", [Transform(dihedral=1), Transform(colors=(0, 2, 3, 1, 4, 5, 6, 7, 8, 9)),
                                       Transform(dihedral=5, colors=(0, 3, 1, 2, 4, 5, 6, 7, 8, 9))])
def test_a_candidate_is_scored_in_the_views_frame(transform):
    table = bigram_table()
    task = colour_swap_task()
    view = make_view(task, 0, CODEC, transform)
    candidates = [task.test_outputs[0], np.array([[1, 2, 0], [0, 0, 1]], dtype=np.uint8)]
    scores = score_view(FakeModel(bigram_policy(table)), CODEC, view, candidates, time.monotonic() + 60)
    for grid, score in zip(candidates, scores):
        right = expected_score(table, int(view.prompt[-1]), transform.apply(grid))
        wrong = expected_score(table, int(view.prompt[-1]), transform.invert(grid))
        assert score == pytest.approx(right, abs=1e-4)
        assert abs(right - wrong) > 1e-3  # the check would notice apply and invert swapped


def test_the_combined_rule_ranks_votes_plus_mean_log_likelihood_with_its_tie_breaks():
    g = [np.full((1, 1), k, dtype=np.uint8) for k in range(5)]
    table = [
        Candidate(g[0], views=[0, 1, 2], gen_logps=[-1, -1, -1], scores=[-2.0, -2.0]),   # 3 - 2.0 = 1.0
        Candidate(g[1], views=[3, 4], gen_logps=[-1, -1], scores=[-0.5, -0.5]),          # 2 - 0.5 = 1.5
        Candidate(g[2], views=[5], gen_logps=[-1], scores=[0.0, -1.0]),                  # 1 - 0.5 = 0.5
        Candidate(g[3], views=[6, 7], gen_logps=[-1, -1], scores=[-1.0, -1.0]),          # 2 - 1.0 = 1.0: tie with g0
        Candidate(g[4], views=[8], gen_logps=[-1], scores=[]),                           # unscored: 1 + 0 = 1.0
    ]
    # 1.5 first; then three at 1.0: more votes first (g0: 3, g3: 2, g4: 1); then 0.5
    assert rank_combined(table) == [1, 0, 3, 4, 2]
    assert rank_combined(table, weight=0.0) == [0, 1, 3, 2, 4]  # votes alone; equal votes keep the table order
    choice = choose_attempts(table, "combined", fallback=np.zeros((2, 2), np.uint8), weight=1.0)
    assert choice.attempt_1[0, 0] == 1 and choice.attempt_2[0, 0] == 0
    assert math.isclose(table[1].mean_score, -0.5)


def test_probabilities_of_the_fake_sum_to_one():
    table = bigram_table()
    assert np.allclose(np.exp(table).sum(axis=1), 1.0)
    assert torch.allclose(torch.log_softmax(torch.as_tensor(table), -1), torch.as_tensor(table), atol=1e-9)
