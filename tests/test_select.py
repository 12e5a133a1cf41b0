"""Selection rules on hand-built candidate tables, ties included, and the fallback attempts."""
import numpy as np
import pytest

from solver.select import (RULES, Candidate, candidate_table, choose_attempts, no_choice, rank_combined,
                           rank_hierarchical, rank_poe, rank_vote)


def g(v: int, shape=(1, 1)) -> np.ndarray:
    return np.full(shape, v, dtype=np.uint8)


def cand(v: int, groups: list[str], scores: list[float] = ()) -> Candidate:
    return Candidate(g(v), list(range(len(groups))), list(groups), [0.0] * len(groups), list(scores))


def test_candidate_table_merges_by_grid_and_counts_a_view_once():
    prods = [(0, "id", g(1), -1.0), (1, "rot90", g(2), -2.0), (2, "rot90", g(1), -0.5),
             (2, "rot90", g(1), -0.2), (3, "id", g(1, (2, 1)), -3.0)]
    table = candidate_table(prods)
    assert [c.grid.tolist() for c in table] == [[[1]], [[2]], [[1], [1]]]  # first-production order; shape matters
    assert table[0].views == [0, 2] and table[0].groups == ["id", "rot90"]
    assert table[0].gen_logps == [-1.0, -0.2]  # the repeated view keeps its best log-prob
    assert [c.votes for c in table] == [2, 1, 1]


def test_vote_ranks_by_views_and_breaks_ties_by_table_order():
    table = [cand(1, ["a"]), cand(2, ["a", "b"]), cand(3, ["b"]), cand(4, ["a", "c"])]
    assert rank_vote(table) == [1, 3, 0, 2]


def test_hierarchical_prefers_agreement_across_groups_over_raw_votes():
    # group a: five views all say 1; groups b, c, d: 2 is in each group's top 3 once
    table = [cand(1, ["a"] * 5), cand(2, ["b", "c", "d"]), cand(3, ["b", "b"])]
    assert rank_vote(table)[0] == 0
    assert rank_hierarchical(table)[0] == 1
    # a group keeps only its top `top` candidates: with top=1, group b counts only 3 (2 votes there)
    assert rank_hierarchical(table, top=1) == [1, 0, 2]  # 1: groups c,d; 0: group a (5 votes); 2: group b


def test_hierarchical_tie_falls_to_total_votes_then_table_order():
    table = [cand(1, ["a"]), cand(2, ["b", "b"]), cand(3, ["c"])]
    assert rank_hierarchical(table) == [1, 0, 2]


def test_poe_ranks_by_summed_log_likelihood_and_ties_by_votes():
    table = [cand(1, ["a"], [-1.0, -5.0]), cand(2, ["a"], [-2.0, -2.0]), cand(3, ["a", "b"], [-3.0, -1.0])]
    assert rank_poe(table) == [2, 1, 0]  # -4 (2 votes) before -4 (1 vote) before -6


def test_poe_without_scores_is_the_vote():
    table = [cand(1, ["a"]), cand(2, ["a", "b"])]
    assert rank_poe(table) == rank_vote(table) == [1, 0]


def test_combined_trades_votes_against_mean_log_likelihood():
    table = [cand(1, ["a", "b", "c"], [-3.0, -3.0]), cand(2, ["a"], [-0.5, -0.5])]
    assert rank_combined(table) == [1, 0]          # 3 - 3.0 = 0 < 1 - 0.5 = 0.5
    assert rank_combined(table, weight=0.1) == [0, 1]  # 3 - 0.3 > 1 - 0.05


def test_every_rule_is_deterministic_on_a_full_tie():
    table = [cand(5, ["a"], [-1.0]), cand(6, ["b"], [-1.0]), cand(7, ["c"], [-1.0])]
    for rule in RULES.values():
        assert rule(table) == [0, 1, 2]


def test_attempts_are_the_two_best_distinct_grids():
    table = [cand(1, ["a"]), cand(2, ["a", "b"]), cand(3, ["a", "b", "c"])]
    att = choose_attempts(table, "vote", fallback=g(9))
    assert att.attempt_1.tolist() == [[3]] and att.attempt_2.tolist() == [[2]]
    assert att.to_json() == {"attempt_1": [[3]], "attempt_2": [[2]]}
    report = att.report(expected=g(2))
    assert report["rank_of_correct"] == 1 and report["num_candidates"] == 3


@pytest.mark.parametrize("rule", sorted(RULES))
def test_one_candidate_is_filled_with_the_test_input(rule):
    att = choose_attempts([cand(4, ["a"], [-1.0])], rule, fallback=g(7, (2, 2)))
    assert att.attempt_1.tolist() == [[4]] and att.attempt_2.tolist() == [[7, 7], [7, 7]]


def test_fallback_skips_a_grid_already_chosen():
    att = choose_attempts([cand(7, ["a"])], "vote", fallback=g(7))
    assert att.attempt_1.tolist() == [[7]] and att.attempt_2.tolist() == [[0]]


def test_no_candidates_gives_test_input_then_zero():
    att = no_choice(g(3, (2, 3)), "no time left")
    assert att.attempt_1.shape == (2, 3) and att.attempt_2.tolist() == [[0]]
    assert att.note == "no time left" and att.report()["note"] == "no time left"


def test_unknown_rule_is_named():
    with pytest.raises(ValueError, match="unknown selection rule 'best'"):
        choose_attempts([], "best", g(0))
