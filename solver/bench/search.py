"""`python -m solver bench search`: the program search alone over a task set, measured: programs evaluated per
second, core-seconds per task, peak memory, test outputs solved top-1/top-2, per family of steps the tasks solved only
with it, then one JSON line.

Owns only this command's body: the loop over the tasks is solver.search_alone's (the `search` command's), the search
solver.search.
"""
from __future__ import annotations

import json

import numpy as np

from solver.measure import peak_rss_mib
from solver.search import SearchResult, answers, families
from solver.search_alone import search_each
from solver.tasks import Task, load_tasks


def _solved(task: Task, result: SearchResult | None) -> tuple[int, int, int, set[str]]:
    """Test outputs right at the first answer, within the first two, how many were known, and the families that every
    right answer within the first two needed (solver.search.families)."""
    if task.test_outputs is None or result is None:
        return 0, 0, 0 if task.test_outputs is None else len(task.test_outputs), set()
    top1 = top2 = 0
    needed: set[str] | None = None
    for i, truth in enumerate(task.test_outputs):
        top = answers(result, i)[:2]
        hits = [g.shape == truth.shape and np.array_equal(g, truth) for g, _ in top]
        top1 += bool(hits[:1] and hits[0])
        top2 += any(hits)
        for (_, p), hit in zip(top, hits):
            if hit:
                needed = set(families(p.text)) if needed is None else needed & set(families(p.text))
    return top1, top2, len(task.test_outputs), needed or set()


def bench_command(tasks_spec: str = "heldout", depth: int = 2, limit: int | None = None,
                  budget_s: float | None = None) -> int:
    """Print the search's speed, cost and solves over a task set, then one JSON line of the figures."""
    tasks = load_tasks(tasks_spec, limit)
    evaluated, core, top1, top2, total, failed = 0, [], 0, 0, 0, 0
    only: dict[str, list[str]] = {}
    for task, result, seconds in search_each(tasks, depth, budget_s, "bench search"):
        core.append(seconds)
        failed += result is None
        evaluated += result.stats["evaluated"] if result is not None else 0
        a, b, n, needed = _solved(task, result)
        top1, top2, total = top1 + a, top2 + b, total + n
        for name in needed:
            only.setdefault(name, []).append(task.id)
    core_total = sum(core)
    figures = {"tasks": len(tasks), "depth": depth, "evaluated": evaluated,
               "programs_per_s": evaluated / core_total if core_total else 0.0,
               "core_s_min": min(core, default=0.0), "core_s_median": float(np.median(core)) if core else 0.0,
               "core_s_max": max(core, default=0.0), "core_s_total": core_total, "peak_mib": peak_rss_mib(),
               "top1": top1, "top2": top2, "test_outputs": total, "raised": failed,
               "needs_family": {name: sorted(ids) for name, ids in sorted(only.items())}}
    print(f"tasks {len(tasks)}  depth {depth}  programs evaluated/s {figures['programs_per_s']:.0f}")
    print(f"core-seconds per task: min {figures['core_s_min']:.2f}  median {figures['core_s_median']:.2f}  "
          f"max {figures['core_s_max']:.2f}  (all {core_total:.1f})")
    print(f"peak memory {figures['peak_mib']:.0f} MiB   solved top-1 {top1}/{total}  top-2 {top2}/{total}")
    for name, ids in figures["needs_family"].items():
        print(f"  solved only with {name}: {len(ids)} tasks ({' '.join(ids)})")
    print(json.dumps(figures))
    return 1 if failed else 0
