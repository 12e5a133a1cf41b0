"""Benchmark of inference: `python -m solver bench infer --model SPEC --tasks SPEC [--limit N] [--set infer.X=Y]`.

For the first test input of each task, side by side in one run: prediction one view at a time (infer.batch_size=1)
and batched across views (the config's batch size), each end to end through `predict_one` (one prefill per view,
extended by decoding and scoring; views, decoding, scoring, selection); then the decode phase alone, batched and one
view at a time from the same cached prompts. The earlier path that prefilled decoding and scoring views apart is
gone; its figures are in docs/measurements.md. Prints prefills, end-to-end seconds,
candidates, candidates scored per second, peak memory per stage and in all, decode tokens/s and the batched /
one-at-a-time ratio, as tables, then one JSON line. Starts from the default config (8 views, 8 scoring views,
greedy) and applies --set. Owns no inference code: it times solver.pipeline and solver.generate.
"""
from __future__ import annotations

import json
import os
import platform
import time

import numpy as np
import torch

from solver.config import resolve
from solver.generate import SharedViews, decode_batch, make_views
from solver.measure import peak_memory_mib, reset_peak_memory
from solver.pipeline import Solver, predict_one
from solver.tasks import load_tasks

NO_DEADLINE = float("inf")
PATHS = ("one", "batched")  # infer.batch_size 1, the config's
STAGES = ("prefill", "decode", "score")


def time_path(loaded, task, cfg) -> dict:
    """One test input through predict_one: wall seconds, prefills, candidates, scoring rate and peak memory."""
    stats: dict = {"peak_mib": {}}
    reset_peak_memory()
    start = time.perf_counter()
    choice = predict_one(loaded.model, loaded.codec, task, 0, cfg, NO_DEADLINE, stats)
    wall = time.perf_counter() - start
    peaks = stats["peak_mib"]
    return {"wall_s": wall, "prefills": stats.get("prefills", 0), "candidates": len(choice.candidates),
            "scored": stats.get("scored", 0), "score_s": stats.get("score_s", 0.0),
            "scored_per_s": stats.get("scored", 0) / max(stats.get("score_s", 0.0), 1e-9),
            "prefill_s": stats.get("prefill_s", 0.0), "peak_mib": max([peak_memory_mib(), *peaks.values()]),
            "steps": stats.get("steps", 0), "forced": stats.get("forced", 0), "dfs_calls": stats.get("dfs_calls", 0),
            "dfs_s": stats.get("dfs_s", 0.0), "decode_s": stats.get("decode_s", 0.0),
            **{f"peak_{s}_mib": peaks.get(s, 0.0) for s in STAGES}}


def time_decode_phase(loaded, task, cfg) -> dict:
    """Greedy decoding of the views batched and one view at a time, both from one set of cached prompts."""
    model, codec, icfg = loaded.model, loaded.codec, cfg.infer
    views = make_views(task, 0, codec, icfg.num_views, cfg.run.seed, icfg)
    shared = SharedViews(model, codec, views, batch_size=icfg.batch_size)
    shared.prefill(len(views), NO_DEADLINE)
    batched, single = {}, {}
    decode_batch(model, codec, views, NO_DEADLINE, stats=batched, shared=shared)
    for i, view in enumerate(views):
        decode_batch(model, codec, [view], NO_DEADLINE, stats=single, view_offset=i, shared=shared)
    return {"views": len(views), "prompt_tokens": int(np.mean([len(v.prompt) for v in views])),
            "gen_tokens": batched["tokens"], "batched_decode_s": batched["decode_s"],
            "single_decode_s": single["decode_s"], "batched_decode_tok_per_s": batched["tokens"] / batched["decode_s"],
            "single_decode_tok_per_s": single["tokens"] / single["decode_s"]}


def bench_task(loaded, task, cfg) -> dict:
    """Prediction one view at a time and batched on one task's first test input, then the decode phase."""
    row = {"task": task.id}
    for name in PATHS:
        row[name] = time_path(loaded, task, cfg.override(infer={"batch_size": 1}) if name == "one" else cfg)
    row.update(time_decode_phase(loaded, task, cfg))
    row["speedup"] = row["one"]["wall_s"] / row["batched"]["wall_s"]
    row["ratio_decode"] = row["single_decode_s"] / row["batched_decode_s"]
    return row


def summarise(rows: list[dict]) -> dict:
    """Aggregate figures over tasks: per-task means of each path, ratios of sums."""
    def total(path, key):
        return sum(r[path][key] for r in rows)
    out = {"tasks": len(rows), "gen_tokens": sum(r["gen_tokens"] for r in rows)}
    for p in PATHS:
        out[f"{p}_wall_s_per_task"] = total(p, "wall_s") / len(rows)
        out[f"{p}_prefills_per_task"] = total(p, "prefills") / len(rows)
        out[f"{p}_candidates"] = total(p, "candidates")
        out[f"{p}_scored_per_s"] = total(p, "scored") / max(total(p, "score_s"), 1e-9)
        out[f"{p}_peak_mib"] = max(r[p]["peak_mib"] for r in rows)
        for s in STAGES:
            out[f"{p}_peak_{s}_mib"] = max(r[p][f"peak_{s}_mib"] for r in rows)
    out["speedup_end_to_end"] = total("one", "wall_s") / total("batched", "wall_s")
    out["batched_decode_tok_per_s"] = out["gen_tokens"] / sum(r["batched_decode_s"] for r in rows)
    out["single_decode_tok_per_s"] = out["gen_tokens"] / sum(r["single_decode_s"] for r in rows)
    out["ratio_decode"] = out["batched_decode_tok_per_s"] / out["single_decode_tok_per_s"]
    return out


def print_tables(rows: list[dict], s: dict) -> None:
    head = (f"{'task':<10} {'prompt':>6} | {'prefills':>9} | {'end to end s':>20} | {'candidates':>10} | "
            f"{'scored/s':>15} | {'peak MiB':>13}")
    print(head)
    print(f"{'':<10} {'tok':>6} | {'one  bat':>9} | {'one  batched  x':>20} | {'one  bat':>10} | "
          f"{'one   batched':>15} | {'one    bat':>13}")
    print("-" * len(head))
    for r in rows:
        a, b = r["one"], r["batched"]
        print(f"{r['task']:<10} {r['prompt_tokens']:>6} | {a['prefills']:>4} {b['prefills']:>4} | "
              f"{a['wall_s']:>8.1f} {b['wall_s']:>7.1f} {r['speedup']:>4.1f} | {a['candidates']:>4} "
              f"{b['candidates']:>5} | {a['scored_per_s']:>6.2f} {b['scored_per_s']:>8.2f} | "
              f"{a['peak_mib']:>6.0f} {b['peak_mib']:>6.0f}")
    print("-" * len(head))
    print(f"{'per task':<10} {'':>6} | {s['one_prefills_per_task']:>4.0f} {s['batched_prefills_per_task']:>4.0f} | "
          f"{s['one_wall_s_per_task']:>8.1f} {s['batched_wall_s_per_task']:>7.1f} {s['speedup_end_to_end']:>4.1f} |"
          f" {s['one_candidates']:>4} {s['batched_candidates']:>5} | {s['one_scored_per_s']:>6.2f} "
          f"{s['batched_scored_per_s']:>8.2f} | {s['one_peak_mib']:>6.0f} {s['batched_peak_mib']:>6.0f}")
    print("seconds by stage per task (one / batched): " + ", ".join(
        f"{st} {sum(r['one'][st + '_s'] for r in rows) / len(rows):.1f} / "
        f"{sum(r['batched'][st + '_s'] for r in rows) / len(rows):.1f}" for st in STAGES))
    print("peak MiB by stage (one / batched): " + ", ".join(
        f"{st} {s[f'one_peak_{st}_mib']:.0f} / {s[f'batched_peak_{st}_mib']:.0f}" for st in STAGES))
    if any(r[p]["dfs_calls"] for r in rows for p in PATHS):
        print("DFS per task: " + "; ".join(
            f"{r['task']} one {r['one']['dfs_calls']} single-row calls, batched {r['batched']['steps']} "
            f"batched greedy steps + {r['batched']['forced']} candidates verified/scored in batches + "
            f"{r['batched']['dfs_calls']} single-row calls ({r['batched']['dfs_s']:.1f} s)" for r in rows))
    print(f"\ndecode phase from the same cached prompts: {'task':<10} {'gen tok':>7} | {'batched':>8} {'1x1':>7} "
          f"tok/s | ratio")
    for r in rows:
        print(f"{'':<43}{r['task']:<10} {r['gen_tokens']:>7} | {r['batched_decode_tok_per_s']:>8.1f} "
              f"{r['single_decode_tok_per_s']:>7.1f}       | {r['ratio_decode']:>5.2f}")
    print(f"{'':<43}{'all':<10} {s['gen_tokens']:>7} | {s['batched_decode_tok_per_s']:>8.1f} "
          f"{s['single_decode_tok_per_s']:>7.1f}       | {s['ratio_decode']:>5.2f}")


def main(args) -> int:
    """Entry point of `python -m solver bench infer` (args: model, tasks, limit, set)."""
    cfg = resolve("default", None, getattr(args, "set", []) or [])
    loaded = Solver.build(cfg.override(model={"spec": args.model}, ttt={"enabled": False},
                                       run={"sources": "model", "shared_adapter": ""})).loaded  # the base, no adapter
    device = next(loaded.model.parameters()).device
    loaded.model.eval()
    tasks = [t for t in load_tasks(args.tasks, limit=args.limit).values() if t.valid]
    load_before = os.getloadavg()
    warm = make_views(tasks[0], 0, loaded.codec, 1, 0, cfg.infer)
    decode_batch(loaded.model, loaded.codec, warm, time.monotonic() + 30)  # first-call costs out of the figures
    rows = []
    for task in tasks:
        rows.append(bench_task(loaded, task, cfg))
        r = rows[-1]
        print(f"# {task.id}: one {r['one']['wall_s']:.1f} s, batched {r['batched']['wall_s']:.1f} s "
              f"({r['speedup']:.2f}x); decode phase {r['ratio_decode']:.2f}x batched", flush=True)
    summary = summarise(rows)
    load_after = os.getloadavg()
    print(f"model {args.model} on {device} ({torch.get_num_threads()} threads, {platform.processor() or 'cpu'}, "
          f"{os.cpu_count()} cores, load average {load_before[0]:.2f} before, {load_after[0]:.2f} after), "
          f"{cfg.infer.num_views} views, {cfg.infer.score_views} scoring views, {cfg.infer.strategy}; peak memory is "
          f"the process's resident high-water mark (CPU) or allocated (GPU)")
    print_tables(rows, summary)
    summary.update(model=args.model, device=str(device), threads=torch.get_num_threads(),
                   load_before=round(load_before[0], 2), load_after=round(load_after[0], 2))
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in summary.items()}))
    return 0
