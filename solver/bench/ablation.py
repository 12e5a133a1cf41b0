"""`python -m solver bench ablation`: does TTT help, at our scale? The MIT paper's comparison on one model and budget.

Every row is a set of overrides of one Config (the preset), run through the same code path as `python -m solver run`
(solver.run.run_tasks, its planner and degradation ladder included) on the same tasks with the same budget. The
table prints tasks solved, Kaggle score and time per row, and is saved as CSV; the last line is JSON.

Measure on the held-out slice of ARC-AGI-1 training (solver.tasks.is_heldout: never trained on by `pretrain`):
`--tasks arc1:train` keeps only its held-out tasks, smallest first. The evaluation splits are for the final
measurement only. Knows nothing of how a row's settings change the solver: that is the Config's business.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

from solver.config import Config, resolve
from solver.tasks import Task, load_tasks

log = logging.getLogger(__name__)

ONE_VIEW = {"num_views": 1, "score_views": 0, "rule": "vote"}  # the identity view only: no augmented inference
# (name, config overrides): add rows here (e.g. task-neighbour TTT data, adapter reuse).
ROWS: list[tuple[str, dict]] = [
    ("pretrained only (no TTT)", {"ttt": {"enabled": False}, "infer": ONE_VIEW}),
    ("TTT, one shared adapter", {"ttt": {"use_shared_adapter": True}, "infer": ONE_VIEW}),
    ("TTT per task", {"infer": ONE_VIEW}),
    ("TTT per task + augmented inference, voting", {}),
]
FULL_ROW = ROWS[-1]
# the options of solver.embed / solver.reuse, each on top of the full row (`bench ablation` runs ROWS + these)
RELATED_ROWS: list[tuple[str, dict]] = [
    ("full + 2 neighbour tasks' data (25%, first)", {"ttt": {"neighbours": 2}}),
    # a looser warm start than the default (0.995), so that it happens on the held-out slice, whose closest pair of
    # small tasks is at cosine 0.86 (model-free features)
    ("full + adapter reuse (warm start >= 0.85)", {"run": {"reuse_adapters": True, "reuse_warm_threshold": 0.85}}),
]
# rows that isolate one thing, appended after the others so that earlier row numbers keep their meaning
EXTRA_ROWS: list[tuple[str, dict]] = [
    ("pretrained only + augmented inference, voting", {"ttt": {"enabled": False}}),  # row 3 without its TTT
]
SHARED_SHARE = 0.5  # the share of a row's budget the shared adapter trains in (the rest: the run that uses it)
COLUMNS = ["row", "model", "tasks", "solved", "correct", "outputs", "score", "seconds", "budget_s", "levels"]


def row_config(base: Config, overrides: dict) -> Config:
    return base.override(**overrides)


def ablation_tasks(spec: str, limit: int | None) -> dict[str, Task]:
    """The task set; for the held-out source (arc1:train), its held-out tasks only, smallest first."""
    from solver.data import heldout_tasks
    from solver.tasks import HELDOUT_SOURCE
    if spec in (HELDOUT_SOURCE, "heldout"):
        return heldout_tasks(limit)
    return load_tasks(spec, limit)


def train_shared_adapter(cfg: Config, tasks: dict[str, Task], directory: Path, deadline: float) -> Path:
    """The shared adapter of the 'one shared adapter' row: ttt.train_shared on every task's demos, saved."""
    from solver.adapter import attach
    from solver.model import load_configured
    from solver.ttt import train_shared
    loaded = load_configured(cfg.model, cfg.run.seed)
    adapter = attach(loaded.model, cfg.ttt, loaded.codec.token_ids, cfg.run.seed)
    train_cfg = dataclasses.replace(cfg.ttt, use_shared_adapter=False)
    train_shared(adapter, list(tasks.values()), loaded.codec, train_cfg, deadline, cfg.run.seed)
    adapter.save(directory)
    return directory


def _row_process(cfg: dict, tasks: dict[str, Task], workdir: str, start: float | None = None) -> None:
    """A row inside its own process (the run's watchdog may end the process at its hard stop); the budget counts
    from the process's start, or from `start` (a time.monotonic() value) in-process."""
    from solver.budget import parse_duration
    from solver.files import setup_logging
    from solver.run import run_tasks
    from solver.workers import process_start
    setup_logging()
    start = process_start() if start is None else start
    cfg, workdir = Config.from_dict(cfg), Path(workdir)
    if cfg.ttt.use_shared_adapter and not cfg.run.shared_adapter:
        deadline = start + SHARED_SHARE * parse_duration(cfg.run.budget)
        path = train_shared_adapter(cfg, tasks, workdir / "shared_adapter", deadline)
        cfg = cfg.override(run={"shared_adapter": str(path)})
    run_tasks(tasks, cfg, workdir / "submission.json", workdir, start=start, progress=False)


def run_row(name: str, cfg: Config, tasks: dict[str, Task], workdir: Path, isolate: bool = True) -> dict:
    """One row, in a fresh process when isolate (always, outside tests: the run's hard stop ends its process):
    (the shared adapter trained when the row needs one, then) the run; scored from the submission it left."""
    import multiprocessing

    from solver.budget import parse_duration
    from solver.score import score_table, summary
    from solver.submission import read_submission
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in ("results.jsonl", "report.csv", "report.json", "submission.json"):
        (workdir / stale).unlink(missing_ok=True)  # a row is measured from scratch, never resumed
    shutil.rmtree(workdir / "adapters", ignore_errors=True)  # adapters kept by a previous measurement (reuse)
    t0 = time.monotonic()
    if isolate:
        proc = multiprocessing.get_context("spawn").Process(target=_row_process,
                                                            args=(cfg.to_dict(), tasks, str(workdir)))
        proc.start()
        proc.join()
        exitcode = proc.exitcode
    else:
        _row_process(cfg.to_dict(), tasks, str(workdir), start=time.monotonic())
        exitcode = 0
    seconds = time.monotonic() - t0
    truths = {tid: t.test_outputs for tid, t in tasks.items() if t.test_outputs is not None}
    sub = workdir / "submission.json"
    s = summary(score_table(read_submission(sub) if sub.is_file() else {}, truths))
    levels = {}
    if (workdir / "report.csv").is_file():
        with open(workdir / "report.csv") as f:
            for r in csv.DictReader(f):
                levels[r["level"]] = levels.get(r["level"], 0) + 1
    error = "" if exitcode == 0 else f"row process exit code {exitcode}"
    return {"row": name, "model": cfg.model.spec, "tasks": len(tasks), "solved": s["tasks_solved"],
            "correct": s["correct"], "outputs": s["total"], "score": round(s["score"], 4),
            "seconds": round(seconds, 1), "budget_s": parse_duration(cfg.run.budget),
            "levels": " ".join(f"{k}:{v}" for k, v in sorted(levels.items())), "error": error}


def run_ablation(base: Config, tasks: dict[str, Task], out_dir: Path, rows: list[tuple[str, dict]] = ROWS,
                 isolate: bool = True, executor: str = "local") -> list[dict]:
    """Every row in turn (local), or side by side across a Ray cluster (executor 'ray': base.run.ray_address)."""
    if executor == "ray":
        return run_ablation_on_ray(base, tasks, out_dir, rows)
    if executor != "local":
        raise ValueError(f"unknown executor '{executor}' (choose local or ray)")
    results = []
    for i, (name, overrides) in enumerate(rows):
        log.info("ablation row %d/%d: %s", i + 1, len(rows), name)
        results.append(run_row(name, row_config(base, overrides), tasks, out_dir / f"row{i}", isolate))
    return results


def run_ablation_on_ray(base: Config, tasks: dict[str, Task], out_dir: Path,
                        rows: list[tuple[str, dict]] = ROWS) -> list[dict]:
    """Each row a Ray task (one GPU, or run.ray_cpus_per_actor CPUs) running `run_row` in its own process with its
    own budget, counted from its own start; rows wait for a free slot. The rows' folders are written on the nodes
    that ran them; the table comes back here."""
    import ray

    from solver.ray_executor import actor_options, connect
    connected = connect(base.run.ray_address)
    try:
        options, slots = actor_options(base.run.ray_cpus_per_actor)
        log.info("ablation: %d rows on the Ray cluster, %d at a time (%s each)", len(rows), slots, options)
        remote_row = ray.remote(max_retries=0)(run_row).options(**options)
        shared = ray.put(tasks)
        local = base.override(run={"executor": "local"})  # each row's own run is local to the node it lands on
        refs = [remote_row.remote(name, row_config(local, o), shared, out_dir / f"row{i}", True)
                for i, (name, o) in enumerate(rows)]
        results = []
        for ref, (name, o) in zip(refs, rows):
            try:
                results.append(ray.get(ref))
            except ray.exceptions.RayError as e:
                log.error("ablation row %s failed on the cluster: %s", name, str(e).splitlines()[0])
                results.append(failed_row(name, row_config(base, o), tasks, f"{type(e).__name__} on the cluster"))
            log.info("ablation row %s done", name)
        return results
    finally:
        if connected:
            ray.shutdown()


def failed_row(name: str, cfg: Config, tasks: dict[str, Task], error: str) -> dict:
    """The table's row of a row that never reported (nothing solved, the error named)."""
    from solver.budget import parse_duration
    truths = sum(len(t.test_outputs or []) for t in tasks.values())
    return {"row": name, "model": cfg.model.spec, "tasks": len(tasks), "solved": 0, "correct": 0, "outputs": truths,
            "score": 0.0, "seconds": 0.0, "budget_s": parse_duration(cfg.run.budget), "levels": "", "error": error}


def format_table(results: list[dict]) -> str:
    width = max(len(r["row"]) for r in results)
    lines = [f"{'row':<{width}}  solved  score   seconds  levels"]
    for r in results:
        lines.append(f"{r['row']:<{width}}  {r['solved']:>2}/{r['tasks']:<3}  {r['score']:.3f}  {r['seconds']:>7.1f}"
                     f"  {r['levels']}")
    return "\n".join(lines)


def write_csv(path: Path, results: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS + ["error"])
        w.writeheader()
        w.writerows(results)


def main(args) -> int:
    """Entry point of `python -m solver bench ablation` (args from solver.cli)."""
    executor = getattr(args, "executor", None) or "local"
    base = resolve(args.preset, args.config, args.set, model={"spec": args.model},
                   run={"budget": args.budget, "executor": executor, "ray_address": getattr(args, "ray_address", None)})
    tasks = ablation_tasks(args.tasks, args.limit)
    out = Path(args.csv)
    out_dir = out.with_suffix("")
    log.info("ablation: model %s, %d tasks (%s), budget %s per row, preset %s; rows in %s", args.model, len(tasks),
             ", ".join(tasks), args.budget, args.preset, out_dir)
    rows = ROWS + RELATED_ROWS + EXTRA_ROWS
    if getattr(args, "rows", ""):
        rows = [rows[int(i)] for i in args.rows.split(",")]
    results = run_ablation(base, tasks, out_dir, rows, executor=base.run.executor)
    write_csv(out, results)
    print(f"model {args.model}, {len(tasks)} tasks of {args.tasks}, budget {args.budget} per row, preset {args.preset}")
    print(format_table(results))
    print(f"table: {out}")
    print(json.dumps({"model": args.model, "tasks": len(tasks), "budget": args.budget,
                      "rows": {r["row"]: r["solved"] for r in results}}))
    return 0
