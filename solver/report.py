"""The run's report: report.csv (one row per task), report.json (the summary, and the score when solutions are
known), report.html when the budget has room, and the closing log lines.

Reads a `RunSummary`: the plain record of a finished (or stopped) run that solver.run hands it (its tasks, outcomes,
skipped tasks, speeds and settings). Knows nothing of planning, workers or models.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import platform
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from solver import budget as B
from solver.files import write_json_atomic, write_text_atomic
from solver.measure import peak_memory_mib

log = logging.getLogger(__name__)

REPORT_CSV, REPORT_JSON = "report.csv", "report.json"


@dataclass(frozen=True)
class RunSummary:
    """What the report reads of a run: its tasks and their results (solver.results.TaskResult) or skip reasons, whether
    solutions are known, its files, its clock (time.monotonic() at its start, its budget), its workers, the speeds
    it ended with, the task set's load problems, the error that stopped it, and the model's spec."""
    tasks: dict
    outcomes: dict
    skipped: dict
    solutions: bool
    workdir: Path
    out: Path
    start: float
    budget: float
    workers: int
    rates: B.Rates
    load_problems: list
    error: str
    model: str


REPORT_COLUMNS = ["task_id", "status", "level", "found", "tests", "correct", "ttt_steps", "candidates", "views",
                  "seconds", "ttt_seconds", "predict_seconds", "worker", "error", "note", "adapter_from", "fits",
                  "source_seconds", "origins", "source_errors", "gpu_peak_mib", "calibration_seconds",
                  "planned_speeds", "verifier"]


def write_report(finished: RunSummary, printing: bool = True) -> dict:
    """report.csv (one row per task) and report.json (summary, score when solutions are known) in the work dir."""
    table = None
    if finished.solutions:
        from solver.score import score_table
        truths = {tid: t.test_outputs for tid, t in finished.tasks.items() if t.test_outputs is not None}
        table = score_table({tid: o.attempts for tid, o in finished.outcomes.items()}, truths)
    rows = task_rows(finished, dict(zip(table["task_id"], table["correct"])) if table is not None else None)
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, REPORT_COLUMNS)
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(finished.workdir / REPORT_CSV, text.getvalue())
    report = summarise(finished, rows)
    if table is not None:
        from solver.score import print_score, summary
        report["score"] = summary(table)
        if printing:
            print_score(table)
    write_json_atomic(finished.workdir / REPORT_JSON, report)
    for r in rows:
        if r["status"] in ("failed", "lost", "invalid", "retried"):
            log.warning("task %s: %s (%s)", r["task_id"], r["status"], r["error"])
    for line in report["load_problems"]:
        log.warning("task set: %s", line)
    _write_html_report(finished)
    log.info("run done in %s of %s: %s", B.format_seconds(report["elapsed_s"]), B.format_seconds(finished.budget),
             summary_line(report))
    return report


def task_rows(finished: RunSummary, correct: dict | None) -> list[dict]:
    """One report row per task of the run, in the task set's order."""
    rows = []
    for tid, task in finished.tasks.items():
        o = finished.outcomes.get(tid)
        row = o.as_dict() if o else {"status": "skipped", "level": int(B.Level.FALLBACK),
                                   "note": finished.skipped.get(tid, "")}
        row.update(task_id=tid, tests=task.num_tests, level=B.Level(row["level"]).name,
                   correct=correct.get(tid, "") if correct is not None else "")
        rows.append({k: row.get(k, "") for k in REPORT_COLUMNS})
    return rows


def _counts(values) -> dict:
    out: dict = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def _spread(values: list[float]) -> dict:
    """min / median / max of a list (zeros when empty)."""
    v = sorted(values)
    return {"min": v[0], "median": v[len(v) // 2], "max": v[-1]} if v else {"min": 0, "median": 0, "max": 0}


def _max_or_none(values: list) -> float | None:
    """The largest of the values that are not None; None when there is none (a CPU run: no GPU figure)."""
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _first_source(origins: str) -> str:
    """The first source named in one test input's 'attempt 1|attempt 2' origins (solver.select.Choice.origins)."""
    return re.match(r"[a-z_]*", origins).group() or "unknown"


def summarise(finished: RunSummary, rows: list[dict]) -> dict:
    """report.json without the score: counts by status, level and failure kind, and what the budget bought."""
    done = list(finished.outcomes.values())
    seconds = sum(o.seconds for o in done)
    kinds = [part.split(":")[0].strip() for o in done if o.status in ("failed", "retried", "lost")
             for part in (o.error or "unknown").split("| retry:")]
    empty = sum(o.status == "ok" and o.candidates == 0 for o in done)  # trained (or not), then answered nothing
    kinds += ["no candidate"] * empty
    kinds += [f"{e.split(':')[0]} raised" for o in done for e in o.source_errors.split("; ") if e]
    return {"tasks": len(finished.tasks), "status": _counts(r["status"] for r in rows),
            "levels": _counts(r["level"] for r in rows), "failures": _counts(kinds),
            "fell_back_after_exception": sum(o.status == "failed" for o in done), "no_candidate": empty,
            "attempt_1_from": _counts(_first_source(part) for o in done for part in o.origins.split("; ") if part),
            "source_seconds": _spread([o.source_seconds for o in done if o.status != "invalid"]),
            "budget_s": finished.budget, "elapsed_s": round(time.monotonic() - finished.start, 1), "workers": finished.workers,
            "task_share_of_budget": round(seconds / max(1e-9, finished.budget * finished.workers), 3),
            "ttt_share_of_task_time": round(sum(o.ttt_seconds for o in done) / max(1e-9, seconds), 3),
            "ttt_seconds": round(sum(o.ttt_seconds for o in done), 1),
            "calibration_seconds": round(sum(o.calibration_seconds for o in done), 1),
            "predict_seconds": round(sum(o.predict_seconds for o in done), 1),
            "ttt_steps": _spread([o.ttt_steps for o in done if o.status != "invalid"]),
            **trained_counts(finished),
            "views": _spread([o.views for o in done if o.status != "invalid"]),
            "speeds": {k: round(getattr(finished.rates, k), 1) for k in ("train_tokens_per_s", "prefill_tokens_per_s",
                                                                     "decode_tokens_per_s")},
            "speed_correction": round(finished.rates.correction, 3), "load_problems": list(finished.load_problems),
            "error": finished.error, "submission": str(finished.out), "model": finished.model,
            "hardware": _hardware(finished.workers), "code_version": _git_version(),
            "peak_memory_mib": round(peak_memory_mib()),  # this process's: the whole run when workers are in-process
            "gpu_peak_mib": _max_or_none([o.gpu_peak_mib for o in done])}  # the largest task's (None on a CPU)


def trained_counts(finished: RunSummary) -> dict:
    """How many tasks trained at least one TTT step: of all the valid ones, and of those without a fitting program
    (no answer of another source reproduced every demo: the tasks the model is there for), with how many of those
    the model answered (a candidate decoded: with no program, every candidate is the model's)."""
    valid = [tid for tid, t in finished.tasks.items() if t.valid]
    outcomes = [finished.outcomes.get(tid) for tid in valid]
    open_ = [o for o in outcomes if o is None or not o.fits]
    return {"trained": sum(o is not None and o.ttt_steps > 0 for o in outcomes), "valid_tasks": len(valid),
            "without_program": len(open_), "trained_without_program": sum(o is not None and o.ttt_steps > 0
                                                                          for o in open_),
            "answered_without_program": sum(o is not None and o.candidates > 0 for o in open_)}


def summary_line(report: dict) -> str:
    """The closing line: statuses, levels, failures, and how the budget was spent."""
    def fmt(d: dict) -> str:
        return ", ".join(f"{v} {k}" for k, v in d.items()) or "none"
    steps, views = report["ttt_steps"], report["views"]
    return (f"tasks: {fmt(report['status'])}; levels: {fmt(report['levels'])}; failures: {fmt(report['failures'])}; "
            f"{report['task_share_of_budget']:.0%} of the budget in tasks, {report['ttt_share_of_task_time']:.0%} "
            f"of that in TTT; trained {report['trained']} of {report['valid_tasks']} tasks, "
            f"{report['trained_without_program']} of the {report['without_program']} without a fitting program "
            f"({report['answered_without_program']} of those answered by the model); "
            f"TTT steps per task {steps['min']}/{steps['median']}/{steps['max']} (min/median/max), "
            f"views {views['min']}/{views['median']}/{views['max']}; attempt 1 from {fmt(report['attempt_1_from'])}; "
            f"{len(report['load_problems'])} task-set problems")


def _write_html_report(finished: RunSummary) -> None:
    """report.html beside report.csv, when the budget still has room: a picture of the run, never a risk to it."""
    left = finished.budget - (time.monotonic() - finished.start)
    if left < 5 + 0.25 * len(finished.tasks):  # `show --report` on the 10-task demo: 2.6 s with imports, about 0.1 s a task
        log.info("no report.html: %.0f s of the budget left (show --report %s writes it later)", left, finished.workdir)
        return
    try:
        from solver.show import write_html_report
        write_html_report(finished.workdir, finished.tasks, submission=finished.out)
    except Exception as e:  # the report is optional; the submission and report.csv are already on disk
        log.warning("report.html not written: %s: %s", type(e).__name__, e)


def _hardware(workers: int) -> str:
    from solver.workers import visible_gpus
    gpus = visible_gpus()
    return f"{platform.machine()} {os.cpu_count()} CPUs, {len(gpus)} GPU(s), {workers} worker(s)"


def _git_version() -> str:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
