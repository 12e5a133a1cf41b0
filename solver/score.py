"""Scoring attempts against solutions: a test output counts if either attempt equals it exactly.

Kaggle's figure is correct test outputs / all test outputs; the per-task mean averages each task's fraction.
Knows nothing of how attempts were made.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from solver.submission import Attempts, read_submission
from solver.tasks import Grid, load_solutions


def is_correct(pair: Attempts, truth: Grid) -> bool:
    return any(a.shape == truth.shape and np.array_equal(a, truth) for a in pair)


def score_table(attempts: dict[str, list[Attempts]], solutions: dict[str, list[Grid]]) -> pd.DataFrame:
    """One row per task of `solutions`: tests, correct, fraction, and which attempt matched per test (1, 2 or -)."""
    rows = []
    for tid, truths in solutions.items():
        pairs = attempts.get(tid, [])
        hits = []
        for i, truth in enumerate(truths):
            pair = pairs[i] if i < len(pairs) else None
            hits.append("-" if pair is None else "1" if is_correct(pair[:1], truth)
                        else "2" if is_correct(pair[1:], truth) else "x")
        correct = sum(h in "12" for h in hits)
        rows.append({"task_id": tid, "tests": len(truths), "correct": correct,
                     "fraction": correct / len(truths), "hits": "".join(hits)})
    return pd.DataFrame(rows, columns=["task_id", "tests", "correct", "fraction", "hits"])


def summary(table: pd.DataFrame) -> dict:
    """Kaggle score (correct test outputs / all), per-task mean, and the counts behind them."""
    correct, total = int(table["correct"].sum()), int(table["tests"].sum())
    return {"score": correct / total if total else 0.0, "correct": correct, "total": total,
            "task_mean": float(table["fraction"].mean()) if len(table) else 0.0,
            "tasks_solved": int((table["correct"] == table["tests"]).sum()), "tasks": len(table)}


def score_file(submission: str | Path, solutions_spec: str | Path) -> pd.DataFrame:
    return score_table(read_submission(submission), load_solutions(solutions_spec))


def print_score(table: pd.DataFrame, show_table: bool = True) -> dict:
    """Print the per-task table (optional) and the summary; the last line is `score: 0.1234 (N/M test outputs)`."""
    s = summary(table)
    if show_table:
        with pd.option_context("display.max_rows", None, "display.width", 120):
            print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"tasks fully solved: {s['tasks_solved']}/{s['tasks']}   per-task mean: {s['task_mean']:.4f}")
    print(f"score: {s['score']:.4f} ({s['correct']}/{s['total']} test outputs)")
    return s
