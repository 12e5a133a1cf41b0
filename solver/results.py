"""What moves between the run, its workers and a solve function, and the files that keep it.

`TaskResult` is the one record of a task's result, from the solve function that makes it to the line that keeps it:
a solve function (`solve(task, cfg, deadlines) -> TaskResult`, with solver.budget.Deadlines) fills its attempts (None
for a test input it found nothing for), candidate tables and stats; `finish` completes it (id, status, level,
attempts with fallbacks, seconds, worker); the search pass's record of a task is one too (solver.search_pass: level
SEARCH_ONLY). Finished results are appended to results.jsonl (the tables to candidates.jsonl beside it) and flushed
before the submission is rewritten, so that a killed run resumes without losing a finished task. Grids and
candidates are objects in memory; JSON only in the files (`to_json`, `from_json`). `Job` is a task as handed to a
worker. Knows nothing of models or reports, and of planning only the types a job carries (Deadlines, Rates).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from solver.budget import Deadlines, Rates
from solver.select import Candidate
from solver.submission import Attempts, complete_attempts
from solver.tasks import Task

log = logging.getLogger(__name__)

RESULTS = "results.jsonl"
CANDIDATES = "candidates.jsonl"  # every test input's candidate table with its evidence, one line per task


@dataclass
class TaskResult:
    """One task's result: what a solve function returns, and once `finish`ed, what the run records, reports and
    keeps (one line of results.jsonl or search.jsonl)."""
    attempts: list[Attempts | None] = field(default_factory=list)  # per test input a pair of grids; None: nothing
    #   found (a solve function's); finished: complete, fallbacks where nothing was found
    level: int | None = None  # solver.budget.Level; None from a solve function: the config it was given, unfitted
    tables: list[list[Candidate]] = field(default_factory=list)  # per test input its candidates (candidates.jsonl)
    id: str = ""
    status: str = ""  # ok | retried (raised once, then ok) | failed (raised twice: fallback) | lost | invalid
    found: int = 0  # test inputs whose attempts came from the solver rather than the fallback
    seconds: float = 0.0
    worker: str = ""
    error: str = ""  # what the task raised (status retried, failed, lost)
    gpu_peak_mib: float | None = None  # peak GPU memory allocated while solving it (solver.measure); None on a CPU
    # what solving it did, beyond its attempts (reported per task)
    ttt_steps: int = 0
    candidates: int = 0
    views: int = 0
    ttt_seconds: float = 0.0
    predict_seconds: float = 0.0
    note: str = ""
    adapter_from: str = ""  # 'reuse:<task id>@<cosine>' or 'warm:<task id>@<cosine>' (solver.reuse), else empty
    # speeds measured while solving (0: not measured), which the run's speeds follow
    train_tokens_per_s: float = 0.0
    prefill_tokens_per_s: float = 0.0
    decode_tokens_per_s: float = 0.0
    calibration_seconds: float = 0.0  # of `seconds` (not of ttt_seconds), timing the worker's speeds (its first task)
    calibrated: dict[str, float] = field(default_factory=dict)  # what that timing measured (Rates field -> tokens/s)
    recalibrated: bool = False  # that timing was a re-measure (solver.budget.calibrated_rates' `remeasure`)
    calibrates_next: bool = False  # its worker times the speeds again on its next task (the run gives that time)
    deferred: bool = False  # handed back unsolved (Job.may_defer): its first calibration was in doubt; planned again
    planned_speeds: str = ""  # the speeds the task's work was fitted with: 'train 180 prefill 900 decode 30' tokens/s
    # the candidate sources other than the model (solver.pipeline.gather, solver.search_pass)
    source_seconds: float = 0.0  # spent in them, before the model's work was fitted to the time left
    fits: int = 0  # their answers that reproduce every demo (CandidateSource.fits: the search's programs)
    source_errors: str = ""  # '<source>: ValueError: ...' for each source that raised (the task went on without it)
    origins: str = ""  # per test input ('; '), where attempt 1 and 2 came from ('|'): Choice.origins
    verifier: str = ""  # per test input ('; '), the invariants checked and the candidates demoted (infer.verify)

    def speeds(self) -> dict[str, float]:
        """What the task measured while solving, which the run's rates follow (solver.budget.record_speeds, with
        `calibrated`)."""
        return {**{k: getattr(self, k) for k in ("train_tokens_per_s", "prefill_tokens_per_s", "decode_tokens_per_s")},
                "search_s": self.source_seconds}

    def as_dict(self) -> dict:
        """Every field by name, as it is (a shallow dict: no grid or candidate copied)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_json(self) -> dict:
        """The record as JSON-ready lists and dicts (from_json reads it back)."""
        return {**self.as_dict(), "attempts": [None if p is None else [p[0].tolist(), p[1].tolist()]
                                              for p in self.attempts],
                "tables": [[c.to_json() for c in t] for t in self.tables]}

    @classmethod
    def from_json(cls, d: dict) -> TaskResult:
        return cls(**{**d, "attempts": [None if p is None else (np.array(p[0], dtype=np.uint8),
                                                                np.array(p[1], dtype=np.uint8))
                                        for p in d.get("attempts", [])],
                      "tables": [[Candidate.from_json(c) for c in t] for t in d.get("tables", [])]})


def finish(task: Task, result: TaskResult, status: str, level: int, seconds: float, worker: str = "") -> TaskResult:
    """A solve function's result as the run records it: the task's id, the status, the result's own level where it
    names one (else `level`), its attempts completed with fallbacks (`found`: the test inputs it answered), the
    seconds it took and the worker."""
    found = sum(p is not None for p in result.attempts[:task.num_tests])
    return replace(result, id=task.id, status=status, level=result.level if result.level is not None else level,
                   attempts=complete_attempts(task, result.attempts), found=found, seconds=seconds, worker=worker)


def fallback_result(task: Task, status: str, level: int, error: str = "", seconds: float = 0.0,
                    worker: str = "") -> TaskResult:
    """A finished task with its fallback attempts only: it raised (`error`), was lost or is invalid."""
    return finish(task, TaskResult(error=error), status, level, seconds, worker)


@dataclass
class Job:
    """One task as handed to a worker: the run's config (the solver fits its work to the deadlines), its deadlines,
    whether it is retried if it raises, the search pass's tables, and the run's speeds to fit the work with."""
    id: str
    task: Task
    cfg: dict
    deadlines: Deadlines
    retry: bool  # once more at the retry's level if it raises (run.retry; solver.plan.retry_config)
    known: list[list[Candidate]] | None = None  # the search pass's candidate tables, per test input; None: none
    rates: Rates | None = None  # the run's speeds when the job was planned (the package's Solver only); None: none
    may_defer: bool = False  # the solver may hand it back once, unsolved (TaskResult.deferred; the package's Solver)


def append_line(path: Path, record: dict) -> None:
    """One JSON line, flushed to disk before returning."""
    with open(path, "a") as f:
        f.write(json.dumps(record, separators=(",", ":")) + "\n")
        f.flush()
        os.fsync(f.fileno())


def append_result(path: Path, result: TaskResult) -> None:
    """A finished result as one line of `path` (results.jsonl); its candidate tables, when it has any, as one line of
    candidates.jsonl beside it ({"id", "tables"}), first."""
    line = result.to_json()
    if result.tables:
        append_line(path.parent / CANDIDATES, {"id": result.id, "tables": line["tables"]})
    append_line(path, {**line, "tables": []})


def read_candidates(workdir: Path) -> dict[str, list[list[dict]]]:
    """A run's candidate tables by task id (the last line of a task wins; a line cut short is skipped)."""
    path, out = Path(workdir) / CANDIDATES, {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            out[record["id"]] = record["tables"]
    return out


def read_results(path: Path) -> dict[str, TaskResult]:
    """The finished results a JSON-lines file keeps (results.jsonl, search.jsonl) by id; the last line of an id wins.
    A line cut short by a kill is dropped, and cut off the file so appends stay whole; an unreadable line is logged
    and skipped."""
    if not path.exists():
        return {}
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        log.warning("%s: dropping a last line cut short (%d bytes)", path, len(data) - end)
        with open(path, "r+b") as f:
            f.truncate(end)
    out = {}
    for n, line in enumerate(data[:end].decode().splitlines(), 1):
        try:
            record = TaskResult.from_json(json.loads(line))
        except (json.JSONDecodeError, TypeError, ValueError, IndexError) as e:
            log.warning("%s line %d: unreadable, ignored (%s)", path, n, e)
            continue
        out[record.id] = record
    return out
