"""What moves between the run, its workers and a solve function, and the results file that keeps it.

`TaskResult` (with solver.budget.Deadlines) is the contract of a solve function (`solve(task, cfg, deadlines) ->
TaskResult`); `Job` is a task as handed to a worker; `Outcome` is a finished task, one JSON line of results.jsonl,
appended and flushed before the submission is rewritten, so that a killed run resumes without losing a finished task.
Knows nothing of models, planning or reports.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from solver.budget import Deadlines, Rates
from solver.submission import Attempts, complete_attempts
from solver.tasks import Task

log = logging.getLogger(__name__)

RESULTS = "results.jsonl"
CANDIDATES = "candidates.jsonl"  # every test input's candidate table with its evidence, one line per task


@dataclass
class TaskStats:
    """What solving a task did, beyond its attempts (reported per task)."""
    ttt_steps: int = 0
    candidates: int = 0
    views: int = 0
    ttt_seconds: float = 0.0
    predict_seconds: float = 0.0
    note: str = ""
    adapter_from: str = ""  # 'reuse:<task id>@<cosine>' or 'warm:<task id>@<cosine>' (solver.reuse), else empty
    # speeds measured while solving (0: not measured), which the planner's estimates follow
    train_tokens_per_s: float = 0.0
    prefill_tokens_per_s: float = 0.0
    decode_tokens_per_s: float = 0.0
    calibration_seconds: float = 0.0  # of `seconds` (not of ttt_seconds), timing the worker's speeds (its first task)
    calibrated: dict[str, float] = field(default_factory=dict)  # what that timing measured (Rates field -> tokens/s)
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


@dataclass
class TaskResult(TaskStats):
    """What a solve function returns: per test input a pair of grids, or None where it found nothing; `level`, what
    it did after fitting its work to its time (solver.budget.Level; None: the config it was given, unfitted)."""
    attempts: list[Attempts | None] = field(default_factory=list)
    level: int | None = None
    tables: list[list[dict]] = field(default_factory=list)  # per test input its candidates (Candidate.to_json)

    def __init__(self, attempts: list[Attempts | None], level: int | None = None,
                 tables: list[list[dict]] | None = None, **stats):
        super().__init__(**stats)
        self.attempts, self.level, self.tables = attempts, level, tables or []


@dataclass
class Job:
    """One task as handed to a worker: the run's config (the solver fits its work to the deadlines), its deadlines,
    whether it is retried if it raises, the search pass's tables, and the run's speeds to fit the work with."""
    id: str
    task: Task
    cfg: dict
    deadlines: Deadlines
    retry: bool  # once more at the retry's level if it raises (run.retry; solver.plan.retry_config)
    known: list | None = None  # the search pass's candidate tables (Candidate.to_json per test input); None: none
    rates: Rates | None = None  # the run's speeds when the job was planned (the package's Solver only); None: none


@dataclass
class Outcome(TaskStats):
    """One finished task, as the results file holds it (one JSON line)."""
    id: str = ""
    status: str = ""  # ok | retried (raised once, then ok) | failed (raised twice: fallback) | lost | invalid
    level: int = 0
    attempts: list = field(default_factory=list)  # [[attempt_1, attempt_2], ...] one pair per test input, complete
    found: int = 0  # test inputs whose attempts came from the solver rather than the fallback
    seconds: float = 0.0
    worker: str = ""
    error: str = ""
    tables: list = field(default_factory=list)  # moved to candidates.jsonl when recorded (append_result)
    gpu_peak_mib: float | None = None  # peak GPU memory allocated while solving it (solver.measure); None on a CPU

    def grids(self) -> list[Attempts]:
        return pairs_to_grids(self.attempts)


def pairs_to_grids(pairs: list) -> list[Attempts]:
    """[[attempt_1, attempt_2], ...] as lists (results.jsonl, search.jsonl) -> pairs of grids."""
    return [(np.array(a, dtype=np.uint8), np.array(b, dtype=np.uint8)) for a, b in pairs]


def _json_pairs(pairs: list[Attempts]) -> list:
    return [[a.tolist(), b.tolist()] for a, b in pairs]


def fallback_outcome(task: Task, status: str, level: int, error: str = "", seconds: float = 0.0,
                     worker: str = "") -> Outcome:
    return Outcome(id=task.id, status=status, level=level, attempts=_json_pairs(complete_attempts(task, None)),
                   seconds=seconds, worker=worker, error=error)


def append_line(path: Path, record: dict) -> None:
    """One JSON line, flushed to disk before returning."""
    with open(path, "a") as f:
        f.write(json.dumps(record, separators=(",", ":")) + "\n")
        f.flush()
        os.fsync(f.fileno())


def append_result(path: Path, outcome: Outcome) -> None:
    """The outcome as one line of `path` (results.jsonl); its candidate tables, when it has any, as one line of
    candidates.jsonl beside it ({"id", "tables"}), first."""
    if outcome.tables:
        append_line(path.parent / CANDIDATES, {"id": outcome.id, "tables": outcome.tables})
    append_line(path, asdict(replace(outcome, tables=[])))


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


def read_results(path: Path) -> dict[str, Outcome]:
    """Finished tasks by id (read_lines)."""
    return read_lines(path, Outcome)


def read_lines(path: Path, make) -> dict:
    """The records of a JSON-lines file (results.jsonl, search.jsonl) by id, each `make(**fields)`; the last line of
    an id wins. A line cut short by a kill is dropped, and cut off the file so appends stay whole; an unreadable line
    is logged and skipped."""
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
            record = make(**json.loads(line))
        except (json.JSONDecodeError, TypeError) as e:
            log.warning("%s line %d: unreadable, ignored (%s)", path, n, e)
            continue
        out[record.id] = record
    return out
