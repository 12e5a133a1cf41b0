"""Command line: `python -m solver <command>`. Each command is a thin wrapper over a library function; every
command that builds a Config takes --preset, --config and --set (solver.config.resolve)."""
from __future__ import annotations

import argparse
import glob
import logging
import sys
import time
from pathlib import Path

from solver.config import ConfigError, add_config_arguments, resolve
from solver.files import setup_logging
from solver.workers import process_start
from solver.tasks import Task, load_tasks, load_tasks_checked

log = logging.getLogger("solver.cli")

KAGGLE_TASKS = "/kaggle/input/arc-prize-*/arc-agi_test_challenges.json"
KAGGLE_OUT, KAGGLE_WORK = "/kaggle/working/submission.json", "/kaggle/working/run"
DEMO_TASKS = 10  # the smallest ARC-AGI-1 evaluation tasks the no-argument demonstration runs on


def cmd_validate(args) -> int:
    from solver.submission import validate_file
    from solver.tasks import load_tasks
    problems = validate_file(args.submission, load_tasks(args.tasks))
    for p in problems:
        print(p)
    print(f"{len(problems)} problems" if problems else "submission is valid")
    return 1 if problems else 0


def cmd_trim_model(args) -> int:
    """`trim-model`: the reduced SmolLM2 as a trimmed folder (solver.trimmed), from the GGUF `smollm2` names."""
    from solver.model import cached_gguf, smollm2_path
    from solver.trimmed import trim
    gguf = smollm2_path()
    sizes = trim(gguf, cached_gguf(gguf, True, args.cache_dir), args.out)
    for name, n in sizes.items():
        print(f"{args.out}/{name}: {n / 2 ** 20:.2f} MiB")
    print(f"{args.out}: {sum(sizes.values()) / 2 ** 20:.2f} MiB in all (the GGUF: {gguf.stat().st_size / 2 ** 20:.2f})")
    return 0


def add_trim_parser(sub) -> None:
    """The `trim-model` subcommand."""
    s = sub.add_parser("trim-model", help="save the reduced SmolLM2 as a trimmed folder small enough for one GPU "
                                          "call (--model DIR loads it; tools/gpu_pack.sh packs it)")
    s.add_argument("--out", required=True, help="the folder to write")
    s.add_argument("--cache-dir", help="model cache (default: $ARC_SOLVER_CACHE or ~/.cache/arc-solver)")
    s.set_defaults(func=cmd_trim_model)


def cmd_score(args) -> int:
    from solver.score import print_score, score_file
    table = score_file(args.submission, args.solutions)
    if args.csv:
        table.to_csv(args.csv, index=False)
    print_score(table, show_table=not args.quiet)
    return 0


def cmd_search(args) -> int:
    from solver.search_alone import search_command
    from solver.budget import parse_duration
    return search_command(args.tasks, args.out, depth=args.depth, limit=args.limit,
                          budget_s=parse_duration(args.budget) if args.budget else None, workers=args.workers)


ABLATION_BUDGET = "5m"  # bench ablation: each row's budget unless --budget says otherwise


def cmd_bench(args) -> int:
    if args.what == "selection":
        from solver.bench.selection import main as replay
        return replay(args)
    if args.what == "search":
        from solver.bench.search import bench_command
        from solver.budget import parse_duration
        return bench_command(args.tasks, args.depth, args.limit, parse_duration(args.budget) if args.budget else None)
    if args.what == "ttt":
        from solver.bench.ttt import main as bench
    elif args.what == "ablation":
        from solver.bench.ablation import main as bench
        args.budget = args.budget or ABLATION_BUDGET
    elif args.what == "plan":
        from solver.bench.plan import main as bench
    elif args.what == "pretrain":
        from solver.bench.pretrain import main as bench
    else:
        from solver.bench.infer import main as bench
    return bench(args) or 0


def cmd_show(args) -> int:
    from solver import show
    from solver.submission import read_submission
    from solver.tasks import load_tasks
    tasks = load_tasks(args.tasks) if args.tasks else None
    if args.report:
        out = show.write_html_report(args.report, tasks, args.out, args.submission)
        print(f"report: {out}")
        return 0
    if not args.task_id or tasks is None:
        print("error: show needs TASK_ID and --tasks (or --report WORKDIR)", file=sys.stderr)
        return 2
    if args.task_id not in tasks:
        print(f"error: task {args.task_id} is not in {args.tasks} ({len(tasks)} tasks, e.g. "
              f"{', '.join(list(tasks)[:3])})", file=sys.stderr)
        return 2
    attempts = read_submission(args.submission).get(args.task_id) if args.submission else None
    out = show.save_task_png(tasks[args.task_id], args.out or f"{args.task_id}.png", attempts, args.max_demos)
    print(f"picture: {out}")
    return 0


# run and pretrain ---------------------------------------------------------------------------------------------------
def add_run_parser(sub) -> None:
    """The `run` subcommand."""
    s = sub.add_parser("run", help="solve a task set within a time budget and write a submission")
    s.add_argument("--tasks", required=True, help="task SPEC: challenges file, directory, or arc1:eval etc.")
    s.add_argument("--model", help="model SPEC (default: the preset's)")
    s.add_argument("--budget", help="time for the whole run, model loading included: 90s, 10m, 12h")
    s.add_argument("--out", default="submission/submission.json", help="where the submission is written")
    s.add_argument("--limit", type=int, help="only the first N tasks")
    s.add_argument("--workdir", help="the run's folder (config, results, report); the same folder resumes "
                                     "(default: beside --out, named after it)")
    s.add_argument("--workers", type=int, help="0: one process per GPU, or in-process on a CPU; N: N processes")
    s.add_argument("--solver", help="factory of the per-task solve function, 'module:function' (default: the "
                                    "package's Solver)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    add_executor_arguments(s)
    add_config_arguments(s)
    s.set_defaults(func=cmd_run)


def add_executor_arguments(s) -> None:
    """--executor and --ray-address (run, bench ablation)."""
    s.add_argument("--executor", choices=["local", "ray"], help="local (default): this machine's workers; ray: one "
                                                                  "Ray actor per GPU of a Ray cluster")
    s.add_argument("--ray-address", help="the Ray cluster to join: HOST:6379, or 'auto' for the one `ray start` began "
                                         "here (default: $RAY_ADDRESS, else a new local cluster)")


def cmd_run(args, start: float | None = None) -> int:
    start = process_start() if start is None else start
    cfg = resolve(args.preset, args.config, args.set, model={"spec": args.model},
                  run={"budget": args.budget, "workers": args.workers, "solver": args.solver,
                       "executor": args.executor, "ray_address": args.ray_address})
    tasks, problems = load_tasks_checked(args.tasks, args.limit)
    from solver.shipped import warn_if_trained_on
    warn_if_trained_on(cfg.model.spec, tasks)  # a model measured on a split it was trained on says so
    workdir = args.workdir or str(Path(args.out).with_name(Path(args.out).stem + "_work"))
    from solver.run import exit_status, run_tasks
    report = run_tasks(tasks, cfg, args.out, workdir, start=start, progress=not args.no_progress,
                       load_problems=problems)
    return exit_status(report)


def demo_tasks(n: int = DEMO_TASKS) -> dict[str, Task]:
    """The n ARC-AGI-1 evaluation tasks with the fewest tokens (one test input each): a quick demonstration."""
    from solver.codec import Codec
    from solver.plan import task_size
    codec = Codec.compact()
    tasks = [t for t in load_tasks("arc1:eval").values() if t.valid and t.num_tests == 1]
    tasks.sort(key=lambda t: (task_size(t, codec).train_tokens + task_size(t, codec).prompt_tokens, t.id))
    return {t.id: t for t in tasks[:n]}


def default_command(start: float | None = None) -> int:
    """`python -m solver` with no arguments: the competition run on Kaggle, else a CPU demonstration."""
    from solver.run import exit_status, run_tasks
    start = process_start() if start is None else start
    found = sorted(glob.glob(KAGGLE_TASKS))
    if found:
        log.info("Kaggle: solving %s", found[-1])
        cfg = resolve("kaggle-4xl4")
        tasks, problems = load_tasks_checked(found[-1])
        return exit_status(run_tasks(tasks, cfg, KAGGLE_OUT, KAGGLE_WORK, start=start, load_problems=problems))
    cfg = resolve("cpu-demo")
    tasks = demo_tasks()
    workdir = Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    log.info("demonstration: %d small ARC-AGI-1 evaluation tasks, model %s, budget %s, work dir %s", len(tasks),
             cfg.model.spec, cfg.run.budget, workdir)
    return exit_status(run_tasks(tasks, cfg, Path("submission") / "submission.json", workdir, start=start))


def add_pretrain_parser(sub) -> None:
    """The `pretrain` subcommand."""
    s = sub.add_parser("pretrain", help="fine-tune a model on whole ARC task sets before TTT (resumable)")
    s.add_argument("--model", help="model SPEC to start from (default: the preset's)")
    s.add_argument("--data", help="comma-separated SPEC[:WEIGHT] (arc1:train:1,path/to/re-arc:3; task sets, folders "
                                  "of task or generated-example JSON); evaluation splits and the held-out slice are "
                                  "removed by id and content")
    s.add_argument("--allow-eval-data", action="store_true", default=None,
                   help="keep evaluation-split tasks (the model records it; run and bench warn on those splits)")
    s.add_argument("--tokens", help="tokens to train on in all (50M): the schedule follows tokens across sessions, "
                                    "--budget then limits each session")
    s.add_argument("--out", required=True, help="output directory: the model, curve.csv, checkpoint/ (resumes)")
    s.add_argument("--budget", help="wall time: 35m, 6h; the session ends with its export a minute before it")
    s.add_argument("--steps", type=int, help="optimiser steps (cap)")
    s.add_argument("--flops", help="training FLOPs to spend in all (2e14): the schedule follows FLOPs across sessions "
                                   "(bases of different sizes at equal compute); --budget then limits each session")
    s.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    s.add_argument("--no-plot", action="store_true", help="no curve.png (fewer files in --out)")
    add_config_arguments(s, "pretrain-cpu")
    s.set_defaults(func=cmd_pretrain)


def cmd_pretrain(args) -> int:
    from solver.pretrain import CURVE, main_rank, plot_curve, pretrain
    data = [d for d in args.data.split(",") if d] if args.data else None
    cfg = resolve(args.preset, args.config, args.set, model={"spec": args.model},
                  pretrain={"data": data, "budget": args.budget, "max_steps": args.steps,
                            "allow_eval_data": args.allow_eval_data, "target_tokens": args.tokens,
                            "target_flops": args.flops})
    pretrain(cfg, args.out, progress=not args.no_progress)
    if not main_rank():  # under torchrun, rank 0 alone writes and reports
        return 0
    if (Path(args.out) / CURVE).is_file() and not args.no_plot:
        try:
            print(f"curve: {plot_curve(Path(args.out) / CURVE, Path(args.out) / 'curve.png')}")
        except ImportError:
            pass
    print(f"model: {args.out} (use it with --model {args.out})")
    return 0


# the parser ---------------------------------------------------------------------------------------------------------
def add_search_parser(sub) -> None:
    s = sub.add_parser("search", help="the program search alone (no model): a submission in seconds to minutes, "
                                      "scored when solutions are known")
    s.add_argument("--tasks", required=True, help="task SPEC: challenges file, directory, or arc1:train etc.")
    s.add_argument("--out", default="submission/search.json",
                   help="the submission file (.json), or a folder for its submission.json")
    s.add_argument("--depth", type=int, default=2, help="compositions of up to this many transforms")
    s.add_argument("--budget", help="time for all tasks (90s, 10m); default: at most 30 s a task")
    s.add_argument("--limit", type=int, help="the first N tasks")
    s.add_argument("--workers", type=int, default=1, help="processes searching tasks side by side (default 1; each "
                                                          "task's limit is its share of --budget times this)")
    s.set_defaults(func=cmd_search)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m solver", description="ARC solver built on test-time training.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command")

    s = sub.add_parser("validate", help="check a submission file against a task set (exit 1 on any problem)")
    s.add_argument("submission")
    s.add_argument("--tasks", required=True, help="task SPEC: challenges file, directory, or arc1:eval etc.")
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("score", help="score a submission against solutions")
    s.add_argument("submission")
    s.add_argument("--solutions", required=True, help="task SPEC with solutions, or a *_solutions.json file")
    s.add_argument("--csv", help="also save the per-task table as CSV here")
    s.add_argument("-q", "--quiet", action="store_true", help="print only the summary lines")
    s.set_defaults(func=cmd_score)

    s = sub.add_parser("bench", help="benchmarks that print figures: ttt (training speed), infer (decoding speed), "
                                     "ablation (does TTT help: the paper's comparison on the held-out slice), plan (the planner on real "
                                     "task sizes, no model), search (the program search alone), selection (every rule and mix replayed on a "
                                     "run's kept candidates)")
    s.add_argument("what", choices=["ttt", "infer", "ablation", "plan", "pretrain", "search", "selection"])
    s.add_argument("--model", default="smollm2", help="model SPEC")
    s.add_argument("--tasks", default="arc1:train", help="task SPEC")
    s.add_argument("--limit", type=int, default=3, help="number of tasks")
    s.add_argument("--budget", help="ablation: the time budget of each row (default 5m); search: time for all tasks "
                                    "(default: at most 30 s a task)")
    s.add_argument("--csv", default="runs/ablation.csv", help="ablation: where the table is saved")
    s.add_argument("--rows", default="", help="ablation: comma-separated row numbers to run (default: all)")
    s.add_argument("--backends", default="peft", help="ttt: adapter backends side by side (peft,unsloth); one that "
                                                      "is unavailable here is left out with a warning")
    s.add_argument("--shapes-only", action="store_true", help="infer: only the forced-shape line (the views decoded "
                                                           "with shapes forced where certain against as before)")
    s.add_argument("--reduced-only", action="store_true", help="ttt: no full-vocabulary rows (saves a second load)")
    s.add_argument("--depth", type=int, default=2, help="search: compositions of up to this many transforms")
    s.add_argument("--workdir", help="selection: a finished run's work directory (its candidates.jsonl)")
    add_executor_arguments(s)
    add_config_arguments(s, "cpu-demo")
    s.set_defaults(func=cmd_bench)
    s = sub.add_parser("show", help="draw a task and a submission's attempts as a PNG, or a run's HTML report")
    s.add_argument("task_id", nargs="?", help="task id to draw")
    s.add_argument("--tasks", help="task SPEC (needed for a task; for a report, draws inputs and truth)")
    s.add_argument("--submission", help="submission.json whose attempts are drawn, marked right/wrong when "
                                        "solutions are known")
    s.add_argument("--out", help="PNG file (default TASK_ID.png); with --report, the HTML file "
                                 "(default WORKDIR/report.html)")
    s.add_argument("--report", metavar="WORKDIR", help="write the HTML report of the run in WORKDIR instead")
    s.add_argument("--max-demos", type=int, help="draw at most this many demonstration pairs")
    s.set_defaults(func=cmd_show)

    from solver.bench.check_gpu import add_parser as add_check_gpu_parser  # standard library only at import
    add_check_gpu_parser(sub)  # `check-gpu`: the GPU path on a random model of SmolLM2's shape
    add_run_parser(sub)  # `run`: the whole solver inside a time budget
    add_search_parser(sub)  # `search`: the program search alone
    add_pretrain_parser(sub)  # `pretrain`: initial fine-tuning on whole task sets
    add_trim_parser(sub)  # `trim-model`: the reduced SmolLM2 small enough for one GPU call
    from solver.bench.session import add_parser as add_session_parser  # standard library only at import
    add_session_parser(sub)  # `gpu-session`: one GPU window, verification then pretraining
    return p


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if args.command is None:  # no arguments: the embedded default (the competition run on Kaggle, else a demo)
        return default_command()
    from solver.tasks import TaskFileError
    try:
        return args.func(args)
    except (TaskFileError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
