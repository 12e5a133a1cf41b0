"""Kaggle submission files: build, write atomically, read back, validate.

Format: {task_id: [{"attempt_1": grid, "attempt_2": grid}, ...]}, one dict per test input in order, every task of the
input set present, both attempts always present. Knows nothing of models or how attempts were found.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from solver.tasks import BadGrid, Grid, Task, TaskFileError, read_json, to_grid

Attempts = tuple[Grid, Grid]  # (attempt_1, attempt_2) for one test input
ZERO = np.zeros((1, 1), dtype=np.uint8)


def fallback_attempts(task: Task) -> list[Attempts]:
    """Attempts when nothing better is known: the test input itself, then [[0]]."""
    return [(g, ZERO) for g in task.test_inputs[:task.num_tests]] + \
        [(ZERO, ZERO)] * max(0, task.num_tests - len(task.test_inputs))


def complete_attempts(task: Task, found: list[Attempts] | None) -> list[Attempts]:
    """Exactly one pair per test input. A missing or invalid attempt becomes the first fallback (test input, [[0]])
    that differs from the other attempt."""
    fallback = fallback_attempts(task)
    found = list(found or [])[:task.num_tests]
    out = []
    for i, defaults in enumerate(fallback):
        pair = found[i] if i < len(found) and found[i] is not None else (None, None)
        a1 = _valid_or(pair[0], defaults[0])
        a2 = _valid_or(pair[1], next((d for d in defaults if not np.array_equal(d, a1)), defaults[1]))
        out.append((a1, a2))
    return out


def _valid_or(grid, default: Grid) -> Grid:
    if grid is None:
        return default
    try:
        return to_grid(grid)
    except BadGrid:
        return default


def build_submission(tasks: dict[str, Task], attempts: dict[str, list[Attempts]]) -> dict:
    """The submission as JSON-ready lists: every task in `tasks`, fallback where `attempts` has nothing."""
    return {tid: [{"attempt_1": a.tolist(), "attempt_2": b.tolist()}
                  for a, b in complete_attempts(task, attempts.get(tid))]
            for tid, task in tasks.items()}


def write_json_atomic(path: str | Path, obj) -> None:
    """Write JSON to a temporary file beside `path`, then rename: a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_submission(path: str | Path, tasks: dict[str, Task], attempts: dict[str, list[Attempts]]) -> dict:
    """Build and atomically write a complete submission; returns what was written."""
    sub = build_submission(tasks, attempts)
    write_json_atomic(path, sub)
    return sub


def read_submission(path: str | Path) -> dict[str, list[Attempts]]:
    """A submission file as grids; raises TaskFileError naming the file and the first problem of its shape."""
    raw = read_json(Path(path))
    if not isinstance(raw, dict):
        raise TaskFileError(f"{path}: a submission is an object of task id -> list of attempts")
    out = {}
    for tid, entries in raw.items():
        if not isinstance(entries, list):
            raise TaskFileError(f"{path}: task {tid}: expected a list of attempt dicts")
        pairs = []
        for i, entry in enumerate(entries):
            try:
                pairs.append((to_grid(entry["attempt_1"]), to_grid(entry["attempt_2"])))
            except (BadGrid, KeyError, TypeError) as e:
                raise TaskFileError(f"{path}: task {tid} test {i}: {e}") from None
        out[tid] = pairs
    return out


def validate_submission(sub, tasks: dict[str, Task]) -> list[str]:
    """Every problem of a submission (JSON form) against a task set, one line each; empty when valid."""
    if not isinstance(sub, dict):
        return [f"submission is a {type(sub).__name__}, not an object of task id -> list of attempts"]
    problems = [f"{tid}: task missing" for tid in tasks if tid not in sub]
    problems += [f"{tid}: not in the task set" for tid in sub if tid not in tasks]
    for tid, task in tasks.items():
        entries = sub.get(tid)
        if entries is None:
            continue
        if not isinstance(entries, list):
            problems.append(f"{tid}: expected a list of attempt dicts, got {type(entries).__name__}")
            continue
        if len(entries) != task.num_tests:
            problems.append(f"{tid}: {len(entries)} attempt dicts for {task.num_tests} test inputs")
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                problems.append(f"{tid} test {i}: expected a dict with attempt_1 and attempt_2")
                continue
            for key in ("attempt_1", "attempt_2"):
                if key not in entry:
                    problems.append(f"{tid} test {i}: {key} missing")
                    continue
                try:
                    to_grid(entry[key], key)
                except BadGrid as e:
                    problems.append(f"{tid} test {i}: {e}")
    return problems


def validate_file(path: str | Path, tasks: dict[str, Task]) -> list[str]:
    try:
        sub = read_json(Path(path))
    except TaskFileError as e:
        return [str(e)]
    return validate_submission(sub, tasks)
