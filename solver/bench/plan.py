"""`python -m solver bench plan`: the planner's rules measured on real task sizes, without a model.

Task costs come from token counts of real task sets (solver.plan); the schedules are solver.budget's. Prints the
order measurement quoted in `budget.order_tasks`, then whole runs simulated in two shapes: Kaggle 2025 (240 tasks of
ARC-AGI-2 evaluation sizes, 4 workers, the kaggle-4xl4 preset) and this CPU (40 ARC-AGI-1 training tasks of at most
2,048 tokens, 1 worker, 30 minutes, cpu-demo), each task's true speeds drawn within +-30% of the preset's.
"""
from __future__ import annotations

import random
import statistics

from solver import budget as B
from solver.budget import order_tasks, simulate
from solver.codec import Codec
from solver.config import get_preset
from solver.plan import full_work, preset_rates, task_size
from solver.tasks import load_tasks

SHAPES = {  # name: (preset, task set, tasks, workers, budget, max tokens)
    "kaggle 2025": ("kaggle-4xl4", "arc2:eval", 240, 4, "11h30m", None),
    "cpu": ("cpu-demo", "arc1:train", 40, 1, "30m", 2048),
}


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


def shape_tasks(spec: str, n: int, max_tokens: int | None, cfg, rng: random.Random) -> list:
    """(size, full work) of n tasks of the set (drawn with replacement when the set is smaller)."""
    codec = Codec.compact()
    sized = [(task_size(t, codec, cfg.ttt.max_tokens), full_work(t, cfg)) for t in load_tasks(spec).values() if t.valid]
    sized = [s for s in sized if max_tokens is None or s[0].prompt_tokens + s[0].output_tokens <= max_tokens]
    return rng.sample(sized, n) if len(sized) >= n else [rng.choice(sized) for _ in range(n)]


def simulate_shape(name: str, noise: float = 0.3, seed: int = 0) -> dict:
    preset, spec, n, workers, budget, max_tokens = SHAPES[name]
    cfg, rng = get_preset(preset), random.Random(seed)
    tasks = shape_tasks(spec, n, max_tokens, cfg, rng)
    guess = preset_rates(cfg)
    true = [B.Rates(*(getattr(guess, k) * rng.uniform(1 - noise, 1 + noise) for k in
                      ("train_tokens_per_s", "prefill_tokens_per_s", "decode_tokens_per_s")), guess.task_overhead_s)
            for _ in tasks]
    seconds = B.parse_duration(budget)
    sim = B.simulate_run(tasks, true, guess, workers, seconds, cfg.run.min_views, cfg.run.headroom,
                         room=cfg.run.room)
    full = [w.ttt_steps for _, w in tasks]
    return {"shape": name, "tasks": n, "workers": workers, "budget_s": seconds, "end_s": round(sim.end),
            "used": sum(sim.seconds) / (workers * seconds), "trained": sum(s > 0 for s in sim.steps),
            "steps": sim.steps, "full_steps": full, "views": sim.views, "started": sum(v > 0 for v in sim.views)}


def print_shape(r: dict) -> None:
    steps = sorted(r["steps"])
    print(f"{r['shape']}: {r['tasks']} tasks, {r['workers']} worker(s), budget {B.format_seconds(r['budget_s'])}; "
          f"last task ends at {B.format_seconds(r['end_s'])}, {r['used']:.1%} of the worker-time used; "
          f"{r['started']} started, {r['trained']} with TTT; steps per task min {steps[0]} median "
          f"{statistics.median(steps):g} max {steps[-1]} (full: median {statistics.median(r['full_steps']):g}); "
          f"views median {statistics.median(r['views']):g}")


def main(args) -> int:
    measure_order()
    for name in SHAPES:
        print_shape(simulate_shape(name))
    return 0
