"""Command line: `python -m solver <command>`. Each command is a thin wrapper over a library function."""
from __future__ import annotations

import argparse
import logging
import sys


def cmd_validate(args) -> int:
    from solver.submission import validate_file
    from solver.tasks import load_tasks
    problems = validate_file(args.submission, load_tasks(args.tasks))
    for p in problems:
        print(p)
    print(f"{len(problems)} problems" if problems else "submission is valid")
    return 1 if problems else 0


def cmd_score(args) -> int:
    from solver.score import print_score, score_file
    table = score_file(args.submission, args.solutions)
    if args.csv:
        table.to_csv(args.csv, index=False)
    print_score(table, show_table=not args.quiet)
    return 0


def cmd_bench(args) -> int:
    if args.what == "ttt":
        from solver.bench_ttt import main as bench
    elif args.what == "ablation":
        from solver.bench_ablation import main as bench
    else:
        from solver.bench_infer import main as bench
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
                                     "ablation (does TTT help: the paper's comparison on the held-out slice)")
    s.add_argument("what", choices=["ttt", "infer", "ablation"])
    s.add_argument("--model", default="smollm2", help="model SPEC")
    s.add_argument("--tasks", default="arc1:train", help="task SPEC")
    s.add_argument("--limit", type=int, default=3, help="number of tasks")
    s.add_argument("--budget", default="5m", help="ablation: the time budget of each row")
    s.add_argument("--preset", default="cpu-demo", help="ablation: the Config every row overrides")
    s.add_argument("--csv", default="runs/ablation.csv", help="ablation: where the table is saved")
    s.add_argument("--rows", default="", help="ablation: comma-separated row numbers to run (default: all)")
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

    from solver.run import add_parser as add_run_parser
    add_run_parser(sub)  # `run`: the whole solver inside a time budget
    from solver.pretrain import add_parser as add_pretrain_parser
    add_pretrain_parser(sub)  # `pretrain`: initial fine-tuning on whole task sets
    return p


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.command is None:  # no arguments: the embedded default (the competition run on Kaggle, else a demo)
        from solver.run import default_command
        return default_command()
    from solver.tasks import TaskFileError
    try:
        return args.func(args)
    except TaskFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
