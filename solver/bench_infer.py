"""Benchmark of inference: `python -m solver bench infer --model SPEC --tasks SPEC [--limit N]`.

For the first test input of each task: its views decoded together in one batch and one view at a time (greedy, same
views, same answers), then the distinct answers scored under the scoring views. Prints views/s, generated tokens/s
(end to end and in the decode phase alone), candidates scored/s, the batched/one-at-a-time ratio and peak memory, as
a table, then one JSON line. Owns no inference code: it times solver.generate.
"""
from __future__ import annotations

import json
import platform
import time

import numpy as np
import torch

from solver.config import Config
from solver.generate import decode_batch, make_views, score_candidates
from solver.measure import peak_memory_mib
from solver.model import load_model
from solver.select import candidate_table
from solver.tasks import load_tasks

NO_DEADLINE = float("inf")


def bench_task(loaded, task, cfg: Config) -> dict:
    """Time batched and one-view-at-a-time greedy decoding of one test input, then scoring of its candidates."""
    model, codec, icfg = loaded.model, loaded.codec, cfg.infer
    views = make_views(task, 0, codec, icfg.num_views, cfg.run.seed, icfg)
    batched, single = {}, {}
    start = time.perf_counter()
    together = decode_batch(model, codec, views, NO_DEADLINE, stats=batched)
    batched["wall_s"] = time.perf_counter() - start
    start = time.perf_counter()
    for i, view in enumerate(views):
        decode_batch(model, codec, [view], NO_DEADLINE, stats=single, view_offset=i)
    single["wall_s"] = time.perf_counter() - start
    table = candidate_table([(d.view, views[d.view].group, d.grid, d.logp) for d in together])
    score_views = make_views(task, 0, codec, icfg.score_views, cfg.run.seed + 1, icfg)
    scoring = {}
    start = time.perf_counter()
    score_candidates(model, codec, score_views, [c.grid for c in table], NO_DEADLINE, icfg.score_batch_size, scoring)
    scoring["wall_s"] = time.perf_counter() - start
    n = len(views)
    return {
        "task": task.id, "views": n, "prompt_tokens": int(np.mean([len(v.prompt) for v in views])),
        "gen_tokens": batched["tokens"], "candidates": len(table), "scored": scoring.get("scored", 0),
        "batched_views_per_s": n / batched["wall_s"], "single_views_per_s": n / single["wall_s"],
        "batched_tok_per_s": batched["tokens"] / batched["wall_s"],
        "single_tok_per_s": single["tokens"] / single["wall_s"],
        "batched_decode_tok_per_s": batched["tokens"] / batched["decode_s"],
        "single_decode_tok_per_s": single["tokens"] / single["decode_s"],
        "batched_prefill_s": batched["prefill_s"], "single_prefill_s": single["prefill_s"],
        "scored_per_s": scoring.get("scored", 0) / scoring["wall_s"],
        "batched_wall_s": batched["wall_s"], "single_wall_s": single["wall_s"], "score_wall_s": scoring["wall_s"],
    }


def summarise(rows: list[dict]) -> dict:
    """Aggregate figures over tasks (sums of tokens over sums of seconds)."""
    def total(key):
        return sum(r[key] for r in rows)
    tokens, views = total("gen_tokens"), total("views")
    b_decode = sum(r["gen_tokens"] / r["batched_decode_tok_per_s"] for r in rows)
    s_decode = sum(r["gen_tokens"] / r["single_decode_tok_per_s"] for r in rows)
    return {
        "tasks": len(rows), "views": views, "gen_tokens": tokens,
        "batched_views_per_s": views / total("batched_wall_s"), "single_views_per_s": views / total("single_wall_s"),
        "batched_tok_per_s": tokens / total("batched_wall_s"), "single_tok_per_s": tokens / total("single_wall_s"),
        "batched_decode_tok_per_s": tokens / b_decode, "single_decode_tok_per_s": tokens / s_decode,
        "ratio_end_to_end": total("single_wall_s") / total("batched_wall_s"),
        "ratio_decode": s_decode / b_decode,
        "scored_per_s": total("scored") / max(total("score_wall_s"), 1e-9),
    }


def print_table(rows: list[dict], summary: dict) -> None:
    head = (f"{'task':<10} {'prompt':>6} {'gen':>5} | {'views/s':>15} | {'gen tok/s (end to end)':>22} | "
            f"{'decode tok/s':>15} | {'ratio':>5} | {'scored/s':>8}")
    print(head)
    print(f"{'':<10} {'tok':>6} {'tok':>5} | {'8 batch  1x1':>15} | {'8 batch    1x1':>22} | {'8 batch    1x1':>15} |"
          f" {'dec':>5} | {'':>8}")
    print("-" * len(head))
    for r in rows:
        print(f"{r['task']:<10} {r['prompt_tokens']:>6} {r['gen_tokens']:>5} | "
              f"{r['batched_views_per_s']:>7.2f} {r['single_views_per_s']:>7.2f} | "
              f"{r['batched_tok_per_s']:>11.1f} {r['single_tok_per_s']:>10.1f} | "
              f"{r['batched_decode_tok_per_s']:>7.1f} {r['single_decode_tok_per_s']:>7.1f} | "
              f"{r['single_decode_tok_per_s'] and r['batched_decode_tok_per_s'] / r['single_decode_tok_per_s']:>5.2f} |"
              f" {r['scored_per_s']:>8.2f}")
    s = summary
    print("-" * len(head))
    print(f"{'all':<10} {'':>6} {s['gen_tokens']:>5} | {s['batched_views_per_s']:>7.2f} {s['single_views_per_s']:>7.2f} | "
          f"{s['batched_tok_per_s']:>11.1f} {s['single_tok_per_s']:>10.1f} | "
          f"{s['batched_decode_tok_per_s']:>7.1f} {s['single_decode_tok_per_s']:>7.1f} | {s['ratio_decode']:>5.2f} |"
          f" {s['scored_per_s']:>8.2f}")
    print(f"batched / one-at-a-time: {s['ratio_decode']:.2f}x in the decode phase, "
          f"{s['ratio_end_to_end']:.2f}x end to end (prefill included)")


def main(args) -> int:
    """Entry point of `python -m solver bench infer` (args: model, tasks, limit)."""
    cfg = Config()
    loaded = load_model(args.model)
    device = next(loaded.model.parameters()).device
    loaded.model.eval()
    tasks = [t for t in load_tasks(args.tasks, limit=args.limit).values() if t.valid]
    warm = make_views(tasks[0], 0, loaded.codec, 1, 0, cfg.infer)
    decode_batch(loaded.model, loaded.codec, warm, time.monotonic() + 30)  # first-call costs out of the figures
    rows = []
    for task in tasks:
        rows.append(bench_task(loaded, task, cfg))
        print(f"# {task.id}: {rows[-1]['batched_wall_s']:.1f} s batched, {rows[-1]['single_wall_s']:.1f} s one at a "
              f"time, {rows[-1]['score_wall_s']:.1f} s scoring", flush=True)
    summary = summarise(rows)
    print(f"model {args.model} on {device} ({torch.get_num_threads()} threads, {platform.processor() or 'cpu'}), "
          f"{cfg.infer.num_views} views, {cfg.infer.score_views} scoring views, greedy")
    print_table(rows, summary)
    summary.update(model=args.model, device=str(device), threads=torch.get_num_threads(),
                   peak_memory_mib=round(peak_memory_mib(), 1))
    print(f"peak memory: {summary['peak_memory_mib']:.0f} MiB")
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in summary.items()}))
    return 0
