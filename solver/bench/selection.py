"""`python -m solver bench selection --workdir RUN --tasks SPEC`: every selection rule and source mix on the candidate
tables a finished run kept (candidates.jsonl), against the task set's solutions. One run, every rule on the same
candidates: a table of test outputs right within the two attempts per (rule, mix), each with and without the verifier
(solver.invariants: how many right candidates it demotes, how many wrong first attempts it replaces), each source
alone, and the share that any candidate got right (the ceiling of selection); then one JSON line.

Measure on training splits (the held-out slice: `run --tasks arc1:train --heldout ...`); a rule is chosen there, never
on an evaluation split. Owns no selection code: it replays solver.select.
"""
from __future__ import annotations

import json

from solver.invariants import broken, invariants
from solver.program_source import SEARCH
from solver.results import read_candidates
from solver.select import MIXES, MODEL, RULES, Candidate, choose_attempts
from solver.tasks import grid_key, load_tasks


def only(table: list[Candidate], source: str) -> list[Candidate]:
    """The rows that `source` proposed."""
    return [c for c in table if source in c.sources]


def right(choice, truth) -> bool:
    return grid_key(truth) in (grid_key(choice.attempt_1), grid_key(choice.attempt_2))


def replay(tables: dict[str, list[list[Candidate]]], tasks: dict) -> dict[str, int]:
    """Test outputs right within the two attempts, per selection variant, over every kept test input (the fallback
    is the test input, as in a run)."""
    counts: dict[str, int] = {}

    def count(name: str, ok: bool) -> None:
        counts[name] = counts.get(name, 0) + int(ok)

    for tid, per_test in tables.items():
        task = tasks[tid]
        found = invariants(task)
        for table, x, truth in zip(per_test, task.test_inputs, task.test_outputs):
            key = grid_key(truth)
            count("any candidate (ceiling)", any(c.key == key for c in table))
            own = sorted(only(table, SEARCH), key=lambda c: c.source_rank(SEARCH))[:2]
            count("search alone (its own order)", any(c.key == key for c in own))
            count("verifier: right candidates it demotes",
                  any(c.key == key and broken(found, x, c.grid) for c in table))
            for rule in RULES:
                count(f"model alone, {rule}", right(choose_attempts(only(table, MODEL), rule, x), truth))
                for mix in MIXES:
                    plain = choose_attempts(table, rule, x, mix=mix)
                    checked = choose_attempts(table, rule, x, mix=mix, verify=found)
                    count(f"{rule} + search {mix}", right(plain, truth))
                    count(f"{rule} + search {mix} + verify", right(checked, truth))
                    count(f"verifier: wrong attempt 1 replaced, {rule} {mix}",
                          grid_key(plain.attempt_1) != key and grid_key(checked.attempt_1) != grid_key(plain.attempt_1))
    return counts


def main(args) -> int:
    """Entry point: args.workdir (a run's work directory), args.tasks (the task SPEC with solutions)."""
    tasks = load_tasks(args.tasks)
    raw = read_candidates(args.workdir)
    tables = {tid: [[Candidate.from_json(c) for c in t] for t in per_test] for tid, per_test in raw.items()
              if tid in tasks}
    tables = {tid: t for tid, t in tables.items() if tasks[tid].test_outputs is not None}
    outputs = sum(min(len(t), len(tasks[tid].test_outputs)) for tid, t in tables.items())
    if not outputs:
        print(f"no candidate tables with known solutions in {args.workdir} (candidates.jsonl) for {args.tasks}")
        return 1
    counts = replay(tables, tasks)
    print(f"{len(tables)} tasks, {outputs} test outputs with candidates kept in {args.workdir}")
    print(f"{'selection':<40} {'right in top 2':>15}")
    for name, n in counts.items():
        print(f"{name:<40} {n:>7}/{outputs:<7}")
    print(json.dumps({"tasks": len(tables), "outputs": outputs, **counts}))
    return 0
