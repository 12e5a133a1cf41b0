"""Candidate selection: the candidate table and the rules that rank it into two attempts.

Owns the `Candidate` table (one row per distinct grid: the candidate sources that proposed it, the model's evidence
(which views produced it, its generation log-probabilities, its teacher-forced log-likelihood under each scoring
view) and every other source's own evidence (a score, a text such as a program, a rank)), the `CandidateSource`
protocol, the merge of several sources' tables, the selection rules, and the `Choice` of two attempts (filled from
solver.submission's fallbacks when short). Every rule is a small pure function `rank(table) -> indices, best first`;
`mix_sources` puts one source's best answers before (or after) what a rule ranks; `demote_broken` moves the
candidates that break one of the task's invariants (solver.invariants) after the others. Knows no model, no tokens
and no decoding.

Ties, in every rule, fall to the next criterion the rule names and finally to the table order: the order in which
candidates were first produced (views in order, the identity view first), so a rule never depends on dict or hash
order and the same table always gives the same attempts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np


from solver.config import MODEL, InferConfig
from solver.invariants import broken
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
    sources: list[str] = field(default_factory=list)       # candidate sources that proposed it, in order
    evidence: dict[str, dict] = field(default_factory=dict)  # other sources' own: {"rank", "score", "text"}

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
        return {"shape": list(self.grid.shape), "sources": list(self.sources), "votes": self.votes,
                "groups": sorted(set(self.groups)),
                "gen_logp": round(max(self.gen_logps), 4) if self.gen_logps else None,
                "score": round(self.score, 4) if self.scores else None,
                **{name: e.get("text", "") for name, e in self.evidence.items()}}

    def to_json(self) -> dict:
        """The row with its grid, as candidates.jsonl keeps it (Candidate.from_json reads it back)."""
        return {"grid": self.grid.tolist(), "views": [int(v) for v in self.views], "groups": list(self.groups),
                "gen_logps": [float(x) for x in self.gen_logps], "scores": [float(x) for x in self.scores],
                "sources": list(self.sources), "evidence": self.evidence}

    @classmethod
    def from_json(cls, d: dict) -> Candidate:
        return cls(**{**d, "grid": np.asarray(d["grid"], dtype=np.uint8)})

    def source_rank(self, source: str) -> float:
        """This grid's rank among `source`'s answers (0: its best), inf when that source did not propose it."""
        return self.evidence.get(source, {}).get("rank", math.inf)


class CandidateSource(Protocol):
    """Something that proposes answers: a name, and the candidates for one test input before a deadline (a
    `time.monotonic()` value). Each candidate names the source in `sources` and keeps its evidence under
    `evidence[name]` ({"rank": 0 for its best, "score": its own, higher better, "text": e.g. a program}). `ahead`:
    it runs ahead of the model over the whole task set (solver.search_pass, where run.search_pass allows), else
    inside each task's job; `fits`: how many of its answers for the last task reproduce every demo (0 where it cannot
    tell), which marks a task solved (run.solved_share). Built from the run's Config (solver.source_registry)."""
    name: str
    ahead: bool
    fits: int

    def propose(self, task, test_index: int, deadline: float) -> list[Candidate]: ...


def proposed(source: str, answers: list[tuple[Grid, float, str]]) -> list[Candidate]:
    """A source's candidate rows from its (grid, score, text) answers, best first; a repeated grid keeps its first."""
    rows: dict[bytes, Candidate] = {}
    for grid, score, text in answers:
        if grid_key(grid) not in rows:
            rows[grid_key(grid)] = Candidate(grid, sources=[source],
                                             evidence={source: {"rank": len(rows), "score": score, "text": text}})
    return list(rows.values())


def merge_tables(tables: list[list[Candidate]]) -> list[Candidate]:
    """One row per distinct grid over several sources' tables, in order of first appearance; a grid that several
    sources proposed gathers the evidence of each (the model's views and scores, the others' evidence)."""
    rows: dict[bytes, Candidate] = {}
    for table in tables:
        for c in table:
            row = rows.get(c.key)
            if row is None:
                rows[c.key] = row = Candidate(c.grid, sources=[])
            row.views += c.views
            row.groups += c.groups
            row.gen_logps += c.gen_logps
            row.scores = row.scores or list(c.scores)
            row.sources += [s for s in c.sources if s not in row.sources]
            row.evidence.update(c.evidence)
    return list(rows.values())


def candidate_table(productions: list[tuple[int, str, Grid, float]]) -> list[Candidate]:
    """Merge (view index, view group, grid, generation log-prob) productions into one row per distinct grid.

    Rows come in order of first production; a view that produced a grid twice (sampling) counts once, with its
    best log-probability.
    """
    rows: dict[bytes, Candidate] = {}
    for view, group, grid, logp in productions:
        row = rows.setdefault(grid_key(grid), Candidate(grid, sources=[MODEL]))
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


MIXES = ("pool", "first", "fill")


def mix_sources(table: list[Candidate], ranking: list[int], source: str, mix: str, take: int = 1) -> list[int]:
    """A rule's ranking with one source's answers placed by `mix`: pool, as the rule ranked them; first, that
    source's best `take` answers (by its own rank) ahead of the rest; fill, the rule's ranking of the other sources'
    candidates first, then that source's answers in its own order."""
    if mix not in MIXES:
        raise ValueError(f"unknown source mix '{mix}' (choose from {', '.join(MIXES)})")
    own = sorted((i for i in range(len(table)) if source in table[i].sources),
                 key=lambda i: (table[i].source_rank(source), i))
    if mix == "pool" or not own:
        return ranking
    if mix == "first":
        ahead = own[:take]
        return ahead + [i for i in ranking if i not in ahead]
    only_own = [i for i in ranking if table[i].sources == [source]]
    return [i for i in ranking if i not in only_own] + [i for i in own if i in only_own]


@dataclass
class Choice:
    """The two attempts for one test input, and the candidate table they were chosen from (for reports)."""
    attempt_1: Grid
    attempt_2: Grid
    candidates: list[Candidate] = field(default_factory=list)
    ranking: list[int] = field(default_factory=list)
    rule: str = ""
    note: str = ""  # what the report should know: why the attempts are fallbacks, or that the prompt was trimmed
    demoted: dict[int, list[str]] = field(default_factory=dict)  # rows moved back by the verifier: what they break
    invariants: tuple[str, ...] = ()  # the task's invariants the verifier checked (none: it was off or found none)

    def to_json(self) -> dict:
        return {"attempt_1": self.attempt_1.tolist(), "attempt_2": self.attempt_2.tolist()}

    def origins(self) -> list[str]:
        """Where each attempt came from: its sources joined by '+' (a program's text after the search's name:
        'search[crop_bbox | rot90]'), or 'fallback'."""
        out = []
        for i in self.ranking[:2]:
            c = self.candidates[i]
            out.append("+".join(f"{s}[{c.evidence[s]['text']}]" if c.evidence.get(s, {}).get("text") else s
                                for s in c.sources) or "unknown")
        return out + ["fallback"] * (2 - len(out))

    def report(self, expected: Grid | None = None) -> dict:
        """Candidates in ranked order with their evidence; with `expected`, where the right answer stood."""
        out = {"rule": self.rule, "num_candidates": len(self.candidates),
               "ranked": [self.candidates[i].summary() for i in self.ranking]}
        if self.note:
            out["note"] = self.note
        if self.demoted:
            out["demoted"] = {str(self.ranking.index(i)): names for i, names in self.demoted.items()}
        if expected is not None:
            keys = [self.candidates[i].key for i in self.ranking]
            out["rank_of_correct"] = keys.index(grid_key(expected)) if grid_key(expected) in keys else None
        return out


def demote_broken(table: list[Candidate], ranking: list[int], found: dict,
                  test_input: Grid) -> tuple[list[int], dict[int, list[str]]]:
    """The ranking with every candidate that breaks one of the task's invariants (`found`: solver.invariants) moved
    after those that break none, each group in its own order; and per demoted row the invariants it breaks."""
    demoted = {i: names for i in ranking if (names := broken(found, test_input, table[i].grid))}
    return [i for i in ranking if i not in demoted] + [i for i in ranking if i in demoted], demoted


def choose_attempts(table: list[Candidate], rule: str, fallback: Grid, note: str = "", mix: str = "pool",
                    mix_source: str = InferConfig.mix_source, verify: dict | None = None, **rule_args) -> Choice:
    """The two best distinct grids under `rule` (with `mix_source`'s answers placed by `mix`: mix_sources; with
    `verify`, the task's invariants, a candidate that breaks one after all that do not: demote_broken), filled from
    the fallbacks (the test input `fallback`, then [[0]]) when short."""
    if rule not in RULES:
        raise ValueError(f"unknown selection rule '{rule}' (choose from {', '.join(RULES)})")
    ranking = mix_sources(table, RULES[rule](table, **rule_args), mix_source, mix) if table else []
    demoted: dict[int, list[str]] = {}
    if verify:
        ranking, demoted = demote_broken(table, ranking, verify, fallback)
    first, second = fill_attempts([table[i].grid for i in ranking[:2]], fallback)
    mixed = mix != "pool" and any(mix_source in c.sources for c in table)
    return Choice(first, second, table, ranking, f"{rule}+{mix_source}:{mix}" if mixed else rule, note, demoted,
                  tuple(verify or ()))


def no_choice(fallback: Grid, note: str) -> Choice:
    """The fallback attempts of a test input without any candidate (invalid task, no time left), and why."""
    return choose_attempts([], "vote", fallback, note)
