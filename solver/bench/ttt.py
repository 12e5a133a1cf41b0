"""`python -m solver bench ttt`: TTT training speed, memory and model FLOPs utilisation (MFU).

For a few tasks (those whose leave-one-out sequences come close to 1,024 tokens), trains a fresh LoRA adapter for a
fixed number of steps with the package's training loop and each adapter backend asked for (`--backends`), on the reduced
and on the full vocabulary of a pretrained model (scratch models have only the compact vocabulary: no ratio), and
prints examples/s, tokens/s, trained tokens/s, step time, peak memory and MFU against the fp32 matmul peak measured
here. Ends with one JSON line.

FLOPs as solver.measure.FlopModel counts them (honestly for LoRA: a frozen weight gets no weight gradient).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import platform
import time

import numpy as np

from solver.config import get_preset
from solver.measure import FlopModel, flop_model, matmul_peak_gflops, peak_memory_mib, reset_peak_memory
from solver.tasks import load_tasks

log = logging.getLogger(__name__)

SEQ_TOKENS = 1024      # sequences are trimmed to this budget; tasks whose longest sequence is under 3/4 of it are skipped
STEPS_PER_TASK = 2     # timed optimiser steps per task and variant (after one untimed warm-up step)
BATCH = 2


def pick_tasks(tasks: dict, codec, cfg, limit: int) -> list:
    """The first `limit` tasks whose longest training sequence is at least 3/4 of SEQ_TOKENS."""
    from solver.data import build_examples
    out = []
    for task in tasks.values():
        if not task.valid:
            continue
        ex = build_examples(task, codec, cfg)
        if ex and max(len(e) for e in ex) >= 0.75 * SEQ_TOKENS:
            out.append(task)
        if len(out) == limit:
            break
    return out


def measure(loaded, adapter, task, cfg, flops: FlopModel) -> dict:
    """One untimed warm-up step, then STEPS_PER_TASK timed steps on the task's longest sequences."""
    from solver.data import build_examples
    from solver.ttt import train
    examples = sorted(build_examples(task, loaded.codec, cfg), key=len, reverse=True)[:BATCH * (STEPS_PER_TASK + 1)]
    adapter.reset()
    train(adapter, examples[:1], dataclasses.replace(cfg, batch_size=1), loaded.codec.pad)
    adapter.reset()
    timed = examples[BATCH:]
    reset_peak_memory()
    res = train(adapter, timed, cfg, loaded.codec.pad)
    return {"steps": res.steps, "examples": res.examples, "tokens": res.tokens, "trained_tokens": res.trained_tokens,
            "seconds": res.seconds, "flops": flops.flops([len(e) for e in timed], res.trained_tokens),
            "peak_mib": peak_memory_mib()}


def summarise(runs: list[dict]) -> dict:
    """Rates as the median over tasks (robust to other load on a shared machine); counts summed."""
    def med(key):
        return float(np.median([r[key] / r["seconds"] for r in runs]))
    steps = sum(r["steps"] for r in runs)
    return {"steps": steps, "tokens": sum(r["tokens"] for r in runs), "examples_per_s": med("examples"),
            "tokens_per_s": med("tokens"), "trained_tokens_per_s": med("trained_tokens"),
            "step_s": float(np.median([r["seconds"] / max(r["steps"], 1) for r in runs])),
            "peak_mib": max(r["peak_mib"] for r in runs), "gflops": med("flops") / 1e9}


def setup(spec: str, reduce_vocab: bool, cfg):
    """(vocabulary name, loaded model, adapter, FLOP model, load seconds): the run's Solver built with `cfg` (a TTT
    section) as its TTT settings and the model its only source (load and attach timed together)."""
    from solver.pipeline import Solver
    t0 = time.monotonic()
    solver = Solver.build(get_preset("default").override(model={"spec": spec, "reduce_vocab": reduce_vocab},
                                                         ttt=dataclasses.asdict(cfg), run={"sources": "model"}))
    load_s = time.monotonic() - t0
    vocab = "compact" if spec.startswith("scratch") else ("reduced" if reduce_vocab else "full")
    return vocab, solver.loaded, solver.adapter, flop_model(solver.adapter.model), load_s


def make_setups(spec: str, cfg, backends: list[str], full_vocab: bool = True) -> list:
    """One setup per backend asked for that is available (reduced vocabulary), then (full_vocab) the full vocabulary
    with PEFT for pretrained models. A backend that falls back (Unsloth without a GPU or not importable) is left out,
    logged."""
    setups = []
    for backend in backends:
        one = setup(spec, True, dataclasses.replace(cfg, backend=backend))
        if one[2].backend != backend:
            log.warning("bench ttt: backend %s unavailable here (it fell back to %s); no row for it", backend,
                        one[2].backend)
            continue
        setups.append(one)
    if full_vocab and not spec.startswith("scratch"):
        setups.append(setup(spec, False, dataclasses.replace(cfg, backend="peft")))
    return setups


def bench(spec: str, tasks_all: dict, limit: int, backends: list[str] = ("peft",),
          full_vocab: bool = True) -> list[dict]:
    """Every (vocabulary, backend) on every task, interleaved task by task so that outside load hits all alike."""
    cfg = dataclasses.replace(get_preset("default").ttt, max_tokens=SEQ_TOKENS, num_transforms=4,
                              batch_size=BATCH, backend="peft")
    setups = make_setups(spec, cfg, list(backends), full_vocab)
    if not setups:
        raise RuntimeError(f"bench ttt: no backend of {', '.join(backends)} is available here (see the warnings)")
    tasks = pick_tasks(tasks_all, setups[0][1].codec, cfg, limit)
    runs = {i: [] for i in range(len(setups))}
    for task in tasks:
        for i, (vocab, loaded, adapter, flops, _) in enumerate(setups):
            r = measure(loaded, adapter, task, cfg, flops)
            runs[i].append(r)
            log.info("%s %s %s %s: %.1f tokens/s", task.id, spec, vocab, adapter.backend, r["tokens"] / r["seconds"])
    rows = []
    for i, (vocab, loaded, adapter, flops, load_s) in enumerate(setups):
        row = {"model": spec, "vocab": vocab, "backend": adapter.backend, **summarise(runs[i])}
        row.update(vocab_size=loaded.model.get_input_embeddings().weight.shape[0], load_s=load_s,
                   tasks=[t.id for t in tasks])
        rows.append(row)
    return rows


def print_table(rows: list[dict], peak: float) -> None:
    head = f"{'vocab':8} {'V':>6} {'backend':8} {'ex/s':>6} {'tokens/s':>8} {'loss tok/s':>10} {'step s':>7} " \
           f"{'peak MiB':>9} {'GFLOP/s':>8} {'MFU':>6}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['vocab']:8} {r['vocab_size']:>6} {r['backend']:8} {r['examples_per_s']:6.2f} "
              f"{r['tokens_per_s']:8.1f} "
              f"{r['trained_tokens_per_s']:10.1f} {r['step_s']:7.2f} {r['peak_mib']:9.0f} {r['gflops']:8.1f} "
              f"{r['gflops'] / peak:6.1%}")


def main(args) -> int:
    import torch
    from solver.model import resolve_device, resolve_dtype
    spec, limit = args.model, args.limit
    device = resolve_device("auto")
    dtype = str(resolve_dtype("auto", device)).removeprefix("torch.")  # what load_model trains in here
    peak = matmul_peak_gflops(device=device, dtype=dtype)
    where = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or platform.machine()
    print(f"machine: {where}, torch {torch.__version__}, {torch.get_num_threads()} threads, {dtype} matmul peak "
          f"{peak:.1f} GFLOP/s on {device}")
    tasks_all = load_tasks(args.tasks)
    backends = [b for b in (getattr(args, "backends", "") or "peft").split(",")]
    rows = bench(spec, tasks_all, limit, backends, full_vocab=not getattr(args, "reduced_only", False))
    scratch = spec.startswith("scratch")
    print(f"\nmodel {spec}, tasks {args.tasks} ({', '.join(rows[0]['tasks'])}), sequences <= {SEQ_TOKENS} tokens, "
          f"batch {BATCH}, {STEPS_PER_TASK} timed steps per task, backend {rows[0]['backend']}; rates are medians "
          f"over tasks, peak memory is the process's (CPU) or allocated (GPU) high-water mark")
    print_table(rows, peak)
    summary = {"model": spec, "tasks": args.tasks, "matmul_peak_gflops": round(peak, 1), "matmul_dtype": dtype,
               "rows": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]}
    if scratch or not any(r["vocab"] == "full" for r in rows):
        print("no full-vocabulary rows (a scratch model, or --reduced-only): no reduced/full ratio")
    else:
        by = {r["vocab"]: r["tokens_per_s"] for r in rows if r["backend"] == "peft"}
        summary["ratio_reduced_vs_full"] = round(by["reduced"] / by["full"], 3)
        print(f"reduced/full tokens/s: {summary['ratio_reduced_vs_full']:.2f}x")
    print("note: other processes may share this CPU while this runs")
    print(json.dumps(summary))
    return 0
