"""`python -m solver bench plan`: the planner's rules measured on real task sizes, without a model.

Task costs come from token counts of a real task set (solver.codec); the schedules are solver.budget's.
"""
from __future__ import annotations

from solver.budget import order_tasks, simulate
from solver.codec import Codec
from solver.tasks import load_tasks


def measure_order(subsets: int = 200, size: int = 100, workers: int = 4) -> None:
    """Print the order measurement quoted in `order_tasks`: random 100-task subsets of ARC-AGI-1 evaluation."""
    import random
    codec = Codec.compact()
    tasks = [t for t in load_tasks("arc1:eval").values() if t.valid]
    rng = random.Random(0)
    spans = {"file": [], "longest": [], "cheapest": []}
    dones = {k: [] for k in spans}
    for _ in range(subsets):
        needs = {t.id: float(sum(codec.num_tokens(t.train, q) for q in t.test_inputs)) for t in rng.sample(tasks, size)}
        ideal = sum(needs.values()) / workers
        for name, ids in {"file": list(needs), "longest": order_tasks(needs, False),
                          "cheapest": order_tasks(needs, True)}.items():
            spans[name].append(simulate([needs[t] for t in ids], workers)[0] / ideal)
            dones[name].append(simulate([needs[t] for t in ids], workers, budget=ideal / 2)[1])
    print(f"{subsets} random subsets of {size} tasks, {workers} workers, time proportional to tokens")
    for name in spans:
        print(f"{name:9s} makespan / ideal: mean {sum(spans[name]) / subsets:.3f} max {max(spans[name]):.3f}   "
              f"tasks done with half the time: {sum(dones[name]) / subsets:.1f} of {size}")


def main(args) -> int:
    measure_order()
    return 0
