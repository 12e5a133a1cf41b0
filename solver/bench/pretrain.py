"""`python -m solver bench pretrain`: speed of the pretraining step on this device: tokens/s and model FLOPs
utilisation (MFU) against the fp32 matmul peak measured here, for each CPU thread count and optimiser variant, on the
same micro-batches; where a step's time goes (one step under torch.profiler); what one held-out evaluation costs.

Settings are the preset's (`pretrain-cpu` unless --preset names another; --model, --set pretrain.* apply); the timed
steps are `pretrain.max_steps` (default 6) after one untimed warm-up step per row. FLOPs as solver.measure.FlopModel
counts them: 6 per trained matmul parameter per token, 4 per frozen one, causal attention 6*T^2*d per layer per
sequence. Ends with one JSON line.
"""
from __future__ import annotations

import json
import logging
import platform
import tempfile
import time
from pathlib import Path

from solver.config import resolve
from solver.measure import FlopModel, flop_model, matmul_peak_gflops

log = logging.getLogger(__name__)

DEFAULT_STEPS = 6
BENCH_PRESET = "pretrain-cpu"  # used when the bench command's own default preset (cpu-demo) is left as it is


def rows_to_run(device_type: str, top: int) -> list[tuple[int, str]]:
    """(threads, optimiser) rows: on a CPU each thread count with the fused AdamW, and all threads with the
    per-tensor AdamW (the step before fused); on a GPU the fused and per-tensor ones."""
    if device_type != "cpu":
        return [(top, "fused"), (top, "per-tensor")]
    counts = sorted({max(1, top // 2), top})
    return [(top, "per-tensor")] + [(n, "fused") for n in counts]


def optimizer(kind: str, s):
    from solver.train import make_optimizer
    groups = [{"params": g["params"], "lr": g["lr"]} for g in s.optimizer.param_groups]
    return make_optimizer(groups, s.cfg.pretrain, fused=kind == "fused")


def time_row(s, groups: list, threads: int, opt, flops: FlopModel) -> dict:
    """Warm-up, then every group as one optimiser step: tokens/s, FLOP/s and seconds per step."""
    import torch

    from solver.data import collate
    from solver.train import train_step
    torch.set_num_threads(threads)
    device = next(s.model.parameters()).device
    params = [p for g in opt.param_groups for p in g["params"]]
    run = lambda g: train_step(s.trainer or s.model, [collate(b, s.codec.pad, device) for b in g], opt, params,
                               s.cfg.pretrain.max_grad_norm, s.precision.autocast)
    run(groups[0])
    tokens = flop = 0.0
    t0 = time.perf_counter()
    for g in groups:
        r = run(g)
        tokens += r.tokens
        flop += flops.flops([max(len(e) for e in b) for b in g for _ in b], r.trained_tokens)  # padded lengths
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {"threads": threads, "tokens_per_s": tokens / seconds, "gflops": flop / seconds / 1e9,
            "step_s": seconds / len(groups)}


def profile_step(s, group: list, top: int = 8) -> str:
    """The `top` operations of one step by their own time (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    from solver.data import collate
    from solver.train import train_step
    device = next(s.model.parameters()).device
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        train_step(s.trainer or s.model, [collate(b, s.codec.pad, device) for b in group], s.precision.optimizer,
                   s.params, s.cfg.pretrain.max_grad_norm, s.precision.autocast)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=top)


def take_groups(s, steps: int) -> tuple[list, float]:
    """steps + 1 optimiser steps' micro-batches from the stream, and the seconds per step the data took to build."""
    from solver.data import mixture_stream
    stream = mixture_stream(s.mixture, s.codec, s.cfg.pretrain, 0)
    t0 = time.perf_counter()
    groups = [[next(stream)[1] for _ in range(s.cfg.pretrain.grad_accum)] for _ in range(steps + 1)]
    return groups, (time.perf_counter() - t0) / (steps + 1)


def main(args) -> int:
    import torch

    from solver.pretrain import evaluate, setup
    preset = BENCH_PRESET if args.preset == "cpu-demo" and not args.config else args.preset
    cfg = resolve(preset, args.config, args.set, model={"spec": args.model})
    steps = cfg.pretrain.max_steps or DEFAULT_STEPS
    with tempfile.TemporaryDirectory() as tmp:
        s = setup(cfg, Path(tmp))
    top = torch.get_num_threads()
    device = next(s.model.parameters()).device
    peaks = {}
    for n in sorted({max(1, top // 2), top}) if device.type == "cpu" else [top]:
        torch.set_num_threads(n)
        peaks[n] = matmul_peak_gflops(1.0)
    torch.set_num_threads(top)
    groups, data_s = take_groups(s, steps)
    flops = flop_model(s.model)
    rows = []
    for threads, kind in rows_to_run(device.type, top):
        row = time_row(s, groups[1:], threads, optimizer(kind, s), flops)
        row.update(optimizer=kind, mfu=row["gflops"] / peaks.get(threads, max(peaks.values())))
        rows.append(row)
    best = max(rows, key=lambda r: r["tokens_per_s"])
    report(cfg, s, rows, peaks, data_s, steps)
    torch.set_num_threads(best["threads"])
    print(f"one step on {best['threads']} thread(s), by operation:\n{profile_step(s, groups[0])}")
    evals = {n: time_eval(s, evaluate, n) for n in sorted({r["threads"] for r in rows})} if s.evals else {}
    torch.set_num_threads(top)
    for n, eval_s in evals.items():
        share = eval_s / (eval_s + max(1, cfg.pretrain.eval_every) * best["step_s"])
        print(f"one evaluation ({len(s.evals)} held-out tasks, greedy) on {n} thread{'s' if n > 1 else ''}: "
              f"{eval_s:.1f} s; every {cfg.pretrain.eval_every} steps: {100 * share:.0f}% of training time at the "
              f"best step time")
    print("note: other processes may share this machine while this runs")
    print(json.dumps({"model": cfg.model.spec, "device": str(device), "steps": steps, "matmul_peak_gflops":
                      {str(k): round(v, 1) for k, v in peaks.items()}, "data_s_per_step": round(data_s, 3),
                      "eval_s": {str(k): round(v, 1) for k, v in evals.items()},
                      "rows": [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in rows]}))
    return 0


def time_eval(s, evaluate, threads: int) -> float:
    import torch
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    evaluate(s.model, s.codec, s.evals)
    return time.perf_counter() - t0


def report(cfg, s, rows: list[dict], peaks: dict, data_s: float, steps: int) -> None:
    import torch
    pc = cfg.pretrain
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, fp32 matmul peak "
          + ", ".join(f"{v:.0f} GFLOP/s on {k} thread{'s' if k > 1 else ''}" for k, v in peaks.items()))
    print(f"model {cfg.model.spec} ({'LoRA' if s.lora else 'full'}, {s.precision.describe()}), data "
          f"{','.join(pc.data)}, micro-batches of {pc.batch_tokens} tokens x {pc.grad_accum}, sequences <= "
          f"{pc.max_tokens} tokens; {steps} timed steps per row on the same batches; building the data: "
          f"{data_s:.3f} s per step")
    print(f"{'threads':>7} {'optimiser':>10} {'tokens/s':>9} {'s/step':>7} {'GFLOP/s':>8} {'MFU':>6}")
    for r in rows:
        print(f"{r['threads']:>7} {r['optimizer']:>10} {r['tokens_per_s']:>9,.0f} {r['step_s']:>7.2f} "
              f"{r['gflops']:>8.1f} {100 * r['mfu']:>5.1f}%")
