"""Benchmark of inference: `python -m solver bench infer --model SPEC --tasks SPEC [--limit N] [--shapes-only]
[--set infer.X=Y]`.

For the first test input of each task, side by side in one run: prediction one view at a time (infer.batch_size=1)
and batched across views (the config's batch size), each end to end through `predict_one` (one prefill per view,
extended by decoding and scoring; views, decoding, scoring, selection); then the decode phase alone, batched and one
view at a time from the same cached prompts. The earlier path that prefilled decoding and scoring views apart is
gone; its figures are in docs/measurements.md. Prints prefills, end-to-end seconds,
candidates, candidates scored per second, peak memory per stage and in all, decode tokens/s and the batched /
one-at-a-time ratio, as tables, then one JSON line. Then (alone with --shapes-only) the forced-shape line: the views
decoded greedily, batched, with the shape forced where the demos make it certain (infer.force_shape) and as before
(off), from the same prompts (two rounds of one decode of each mode, the faster timed): tokens decoded, decode seconds per view, the planner's output tokens, answers of the
right shape and right answers. Starts from the default config (8 views, 8 scoring views, greedy) and applies --set.
Owns no inference code: it times solver.pipeline and solver.generate.
"""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import replace

import numpy as np
import torch

from solver.config import resolve
from solver.generate import SharedViews, decode_batch, make_views
from solver.measure import peak_memory_mib, reset_peak_memory
from solver.pipeline import Solver, predict_one
from solver.plan import task_size
from solver.shapes import deduce
from solver.tasks import grid_key, load_tasks

NO_DEADLINE = float("inf")
PATHS = ("one", "batched")  # infer.batch_size 1, the config's
STAGES = ("prefill", "decode", "score")
SHAPE_MODES = (("today", False), ("forced", True))  # infer.force_shape off, on
REPEATS = 2  # rounds of one decode of each mode from the same prompts (greedy: the same tokens); the fastest timed


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


def time_forcing(loaded, task, cfg, forced_first: bool = False) -> dict:
    """The first test input's views decoded greedily, batched, with infer.force_shape off and on: both modes' prompts
    computed first (untimed), then REPEATS rounds of one decode of each mode (`forced_first` swaps the order within
    a round), the fastest of each mode's timed, so that a machine's load falls on both alike: tokens, decode seconds
    per view, answers of the truth's shape and right answers."""
    model, codec = loaded.model, loaded.codec
    truth = task.test_outputs[0] if task.test_outputs else None
    modes = SHAPE_MODES[::-1] if forced_first else SHAPE_MODES
    shared = {}
    for name, force in modes:
        icfg = replace(cfg.infer, force_shape=force)
        views = make_views(task, 0, codec, icfg.num_views, cfg.run.seed, icfg)
        shared[name] = SharedViews(model, codec, views, batch_size=icfg.batch_size)
        shared[name].prefill(len(views), NO_DEADLINE)
    runs: dict[str, list[dict]] = {name: [] for name, _ in modes}
    decoded = {}
    for _ in range(REPEATS):
        for name, _ in modes:
            runs[name].append({})
            views = shared[name].views
            decoded[name] = decode_batch(model, codec, views, NO_DEADLINE, stats=runs[name][-1], shared=shared[name])
    row = {"certain": deduce(task).certain[0], "planned_tokens": task_size(task, codec).output_tokens}
    for name, _ in SHAPE_MODES:
        n = len(shared[name].views)
        row[name] = {"views": n, "tokens": runs[name][-1].get("tokens", 0),
                     "decode_s_per_view": min(r.get("decode_s", 0.0) for r in runs[name]) / n,
                     "right_shape": sum(truth is not None and d.grid.shape == truth.shape for d in decoded[name]),
                     "right": sum(truth is not None and grid_key(d.grid) == grid_key(truth) for d in decoded[name])}
    return row


def summarise_forcing(rows: list[dict]) -> dict:
    """The forced-shape line over tasks: sums, and decode seconds per view averaged over every view."""
    out = {"tasks": len(rows), "certain": sum(r["certain"] for r in rows)}
    for name, _ in SHAPE_MODES:
        views = sum(r[name]["views"] for r in rows)
        out[f"{name}_tokens"] = sum(r[name]["tokens"] for r in rows)
        out[f"{name}_tokens_per_view"] = out[f"{name}_tokens"] / max(views, 1)
        out[f"{name}_decode_s_per_view"] = sum(r[name]["decode_s_per_view"] * r[name]["views"] for r in rows) / \
            max(views, 1)
        out[f"{name}_right_shape"] = sum(r[name]["right_shape"] for r in rows)
        out[f"{name}_right"] = sum(r[name]["right"] for r in rows)
    out["views"] = sum(r["forced"]["views"] for r in rows)
    return out


def print_forcing(rows: list[dict], s: dict) -> None:
    print("\nforced shapes against today (greedy, batched, the same prompts):")
    lines = [f"{r['task']:<10} {str(r['certain']):>7} {r['planned_tokens']:>7} | "
             f"{r['today']['tokens'] / r['today']['views']:>6.1f} {r['forced']['tokens'] / r['forced']['views']:>8.1f} "
             f"| {r['today']['decode_s_per_view']:>6.2f} {r['forced']['decode_s_per_view']:>8.2f} | "
             f"{r['today']['right_shape']:>4} {r['forced']['right_shape']:>6} | {r['today']['right']:>3} "
             f"{r['forced']['right']:>3}" for r in rows]
    _print_table(f"{'task':<10} {'certain':>7} {'planned':>7} | {'tokens / view':>15} | {'decode s / view':>15} | "
                 f"{'right shape':>11} | {'right':>7}",
                 f"{'':<10} {'':>7} {'tok':>7} | {'today forced':>15} | {'today forced':>15} | {'tod  for':>11} | "
                 f"{'tod for':>7}", lines,
                 f"{'all':<10} {s['certain']:>7} {'':>7} | {s['today_tokens_per_view']:>6.1f} "
                 f"{s['forced_tokens_per_view']:>8.1f} | {s['today_decode_s_per_view']:>6.2f} "
                 f"{s['forced_decode_s_per_view']:>8.2f} | {s['today_right_shape']:>4} {s['forced_right_shape']:>6} | "
                 f"{s['today_right']:>3} {s['forced_right']:>3}")


def _print_table(head: str, units: str, lines: list[str], total: str) -> None:
    """A table: its heading, the units under it, a rule, its rows, a rule, the row of totals."""
    print(head)
    print(units)
    print("-" * len(head))
    for line in lines:
        print(line)
    print("-" * len(head))
    print(total)


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
    lines = [f"{r['task']:<10} {r['prompt_tokens']:>6} | {r['one']['prefills']:>4} {r['batched']['prefills']:>4} | "
             f"{r['one']['wall_s']:>8.1f} {r['batched']['wall_s']:>7.1f} {r['speedup']:>4.1f} | "
             f"{r['one']['candidates']:>4} {r['batched']['candidates']:>5} | {r['one']['scored_per_s']:>6.2f} "
             f"{r['batched']['scored_per_s']:>8.2f} | {r['one']['peak_mib']:>6.0f} {r['batched']['peak_mib']:>6.0f}"
             for r in rows]
    _print_table(f"{'task':<10} {'prompt':>6} | {'prefills':>9} | {'end to end s':>20} | {'candidates':>10} | "
                 f"{'scored/s':>15} | {'peak MiB':>13}",
                 f"{'':<10} {'tok':>6} | {'one  bat':>9} | {'one  batched  x':>20} | {'one  bat':>10} | "
                 f"{'one   batched':>15} | {'one    bat':>13}", lines,
                 f"{'per task':<10} {'':>6} | {s['one_prefills_per_task']:>4.0f} "
                 f"{s['batched_prefills_per_task']:>4.0f} | {s['one_wall_s_per_task']:>8.1f} "
                 f"{s['batched_wall_s_per_task']:>7.1f} {s['speedup_end_to_end']:>4.1f} | {s['one_candidates']:>4} "
                 f"{s['batched_candidates']:>5} | {s['one_scored_per_s']:>6.2f} {s['batched_scored_per_s']:>8.2f} | "
                 f"{s['one_peak_mib']:>6.0f} {s['batched_peak_mib']:>6.0f}")
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
    """Entry point of `python -m solver bench infer` (args: model, tasks, limit, set, shapes_only)."""
    cfg = resolve("default", None, getattr(args, "set", []) or [])
    loaded = Solver.build(cfg.override(model={"spec": args.model}, ttt={"enabled": False},
                                       run={"sources": "model", "shared_adapter": ""})).loaded  # the base, no adapter
    device = next(loaded.model.parameters()).device
    loaded.model.eval()
    tasks = [t for t in load_tasks(args.tasks, limit=args.limit).values() if t.valid]
    load_before = os.getloadavg()
    warm = make_views(tasks[0], 0, loaded.codec, 1, 0, cfg.infer)
    decode_batch(loaded.model, loaded.codec, warm, time.monotonic() + 30)  # first-call costs out of the figures
    only_shapes = getattr(args, "shapes_only", False)
    rows, shapes = [], []
    for k, task in enumerate(tasks):  # the modes' order alternates, so neither always runs first
        shapes.append({"task": task.id, **time_forcing(loaded, task, cfg, forced_first=k % 2 == 1)})
        f = shapes[-1]
        line = (f"# {task.id}: shape {'forced' if f['certain'] else 'not certain'}, {f['today']['tokens']} tokens "
                f"decoded today, {f['forced']['tokens']} forced")
        if not only_shapes:
            rows.append(bench_task(loaded, task, cfg))
            r = rows[-1]
            line += (f"; one {r['one']['wall_s']:.1f} s, batched {r['batched']['wall_s']:.1f} s "
                     f"({r['speedup']:.2f}x); decode phase {r['ratio_decode']:.2f}x batched")
        print(line, flush=True)
    summary = {} if only_shapes else summarise(rows)
    summary["shapes"] = summarise_forcing(shapes)
    load_after = os.getloadavg()
    print(f"model {args.model} on {device} ({torch.get_num_threads()} threads, {platform.processor() or 'cpu'}, "
          f"{os.cpu_count()} cores, load average {load_before[0]:.2f} before, {load_after[0]:.2f} after), "
          f"{cfg.infer.num_views} views, {cfg.infer.score_views} scoring views, {cfg.infer.strategy}; peak memory is "
          f"the process's resident high-water mark (CPU) or allocated (GPU)")
    if rows:
        print_tables(rows, summary)
    print_forcing(shapes, summary["shapes"])
    summary.update(model=args.model, device=str(device), threads=torch.get_num_threads(),
                   load_before=round(load_before[0], 2), load_after=round(load_after[0], 2))
    print(json.dumps(_rounded(summary)))
    return 0


def _rounded(value):
    """Floats to 3 decimals, inside dicts too."""
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return round(value, 3) if isinstance(value, float) else value
