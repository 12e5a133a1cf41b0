"""Candidate selection: the candidate table and the rules that rank it into two attempts.

Owns the `Candidate` table (one row per distinct grid: which views produced it, its generation log-probabilities and
its teacher-forced log-likelihood under each scoring view), the selection rules, and the `Choice` of two attempts
(filled from solver.submission's fallbacks when short). Every rule
is a small pure function `rank(table) -> indices, best first`. Knows no model, no tokens and no decoding.

Ties, in every rule, fall to the next criterion the rule names and finally to the table order: the order in which
candidates were first produced (views in order, the identity view first), so a rule never depends on dict or hash
order and the same table always gives the same attempts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable


from solver.submission import fill_attempts
from solver.tasks import Grid, grid_key

HIERARCHICAL_TOP = 3  # the MIT paper keeps the top 3 answers within each transform


@dataclass
class Candidate:
    """One distinct grid (in the task's own frame) and the evidence for it."""
    grid: Grid
    views: list[int] = field(default_factory=list)         # decoding views that produced it, each once
    groups: list[str] = field(default_factory=list)        # transform group (dihedral) of each of those views
    gen_logps: list[float] = field(default_factory=list)   # generation log-probability in each of those views
    scores: list[float] = field(default_factory=list)      # log-likelihood under each scoring view (same for all rows)

    @property
    def key(self) -> bytes:
        return grid_key(self.grid)

    @property
    def votes(self) -> int:
        return len(self.views)

    @property
    def score(self) -> float:
        """Product-of-experts score: the sum of log-likelihoods over the scoring views (0.0 when unscored)."""
        return float(sum(self.scores))

    @property
    def mean_score(self) -> float:
        return self.score / len(self.scores) if self.scores else 0.0

    def summary(self) -> dict:
        """A JSON-ready line for reports (no grid cells)."""
        return {"shape": list(self.grid.shape), "votes": self.votes, "groups": sorted(set(self.groups)),
                "gen_logp": round(max(self.gen_logps), 4) if self.gen_logps else None,
                "score": round(self.score, 4) if self.scores else None}


def candidate_table(productions: list[tuple[int, str, Grid, float]]) -> list[Candidate]:
    """Merge (view index, view group, grid, generation log-prob) productions into one row per distinct grid.

    Rows come in order of first production; a view that produced a grid twice (sampling) counts once, with its
    best log-probability.
    """
    rows: dict[bytes, Candidate] = {}
    for view, group, grid, logp in productions:
        row = rows.setdefault(grid_key(grid), Candidate(grid))
        if view in row.views:
            i = row.views.index(view)
            row.gen_logps[i] = max(row.gen_logps[i], logp)
        else:
            row.views.append(view)
            row.groups.append(group)
            row.gen_logps.append(logp)
    return list(rows.values())


def _order(table: list[Candidate], key: Callable[[Candidate], tuple]) -> list[int]:
    """Indices sorted by key descending, ties by table order."""
    return sorted(range(len(table)), key=lambda i: tuple(-k for k in key(table[i])) + (i,))


def rank_vote(table: list[Candidate]) -> list[int]:
    """Majority vote: most views first."""
    return _order(table, lambda c: (c.votes,))


def rank_hierarchical(table: list[Candidate], top: int = HIERARCHICAL_TOP) -> list[int]:
    """The MIT paper's vote: the top `top` candidates within each transform group, then a vote across groups.

    Within a group candidates rank by that group's votes (ties by table order); across groups by the number of
    groups whose top holds the candidate, then by total votes.
    """
    groups = sorted({g for c in table for g in c.groups})
    in_top = [0] * len(table)
    for g in groups:
        counts = [c.groups.count(g) for c in table]
        ranked = sorted((i for i in range(len(table)) if counts[i]), key=lambda i: (-counts[i], i))
        for i in ranked[:top]:
            in_top[i] += 1
    return sorted(range(len(table)), key=lambda i: (-in_top[i], -table[i].votes, i))


def rank_poe(table: list[Candidate]) -> list[int]:
    """Product of experts: the highest summed log-likelihood over the scoring views; ties by votes.

    Unscored tables (no scoring view finished in time) fall back to the vote.
    """
    if not any(c.scores for c in table):
        return rank_vote(table)
    return _order(table, lambda c: (c.score if c.scores else -math.inf, c.votes))


def rank_combined(table: list[Candidate], weight: float = 1.0) -> list[int]:
    """NVARC's rule: votes plus weight x mean log-likelihood over the scoring views (i.e. minus the mean NLL).

    An unscored candidate counts a mean of 0, so with no scores at all this is the vote.
    """
    return _order(table, lambda c: (c.votes + weight * c.mean_score, c.votes))


RULES: dict[str, Callable[[list[Candidate]], list[int]]] = {
    "vote": rank_vote,
    "hierarchical": rank_hierarchical,
    "poe": rank_poe,
    "combined": rank_combined,
}


@dataclass
class Choice:
    """The two attempts for one test input, and the candidate table they were chosen from (for reports)."""
    attempt_1: Grid
    attempt_2: Grid
    candidates: list[Candidate] = field(default_factory=list)
    ranking: list[int] = field(default_factory=list)
    rule: str = ""
    note: str = ""  # what the report should know: why the attempts are fallbacks, or that the prompt was trimmed

    def to_json(self) -> dict:
        return {"attempt_1": self.attempt_1.tolist(), "attempt_2": self.attempt_2.tolist()}

    def report(self, expected: Grid | None = None) -> dict:
        """Candidates in ranked order with their evidence; with `expected`, where the right answer stood."""
        out = {"rule": self.rule, "num_candidates": len(self.candidates),
               "ranked": [self.candidates[i].summary() for i in self.ranking]}
        if self.note:
            out["note"] = self.note
        if expected is not None:
            keys = [self.candidates[i].key for i in self.ranking]
            out["rank_of_correct"] = keys.index(grid_key(expected)) if grid_key(expected) in keys else None
        return out


def choose_attempts(table: list[Candidate], rule: str, fallback: Grid, note: str = "",
                    **rule_args) -> Choice:
    """The two best distinct grids under `rule`, filled from the fallbacks (the test input `fallback`, then [[0]])
    when short."""
    if rule not in RULES:
        raise ValueError(f"unknown selection rule '{rule}' (choose from {', '.join(RULES)})")
    ranking = RULES[rule](table, **rule_args) if table else []
    first, second = fill_attempts([table[i].grid for i in ranking[:2]], fallback)
    return Choice(first, second, table, ranking, rule, note)


def no_choice(fallback: Grid, note: str) -> Choice:
    """The fallback attempts of a test input without any candidate (invalid task, no time left), and why."""
    return choose_attempts([], "vote", fallback, note)
