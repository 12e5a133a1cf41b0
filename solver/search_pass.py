"""The search pass: the candidate sources that run ahead of the model (solver.source_registry: the program search)
over a whole task set, in a pool of CPU processes.

On a CPU machine the pass runs before the model (both want the same cores, and the search is cheap: its answers are
in the submission within minutes); where GPUs train, it runs beside them on the cores their workers leave
(run.search_workers). Each task's pass is a finished `solver.results.TaskResult` at level SEARCH_ONLY (its candidate
tables, its attempts chosen as a run without the model would: solver.pipeline.choose_without_model, completed with
fallbacks; the answers that fit every demo, seconds, errors), kept in search.jsonl so that a resumed run does not
search again; the model's job for the task carries the tables (solver.run). It runs the pipeline's own gathering
and choosing (no model is loaded here), and knows nothing of the plan, the model's workers or the submission file.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable

from solver.budget import Level
from solver.config import SEARCH_PASSES, Config
from solver.pipeline import choose_without_model, gather, result_of
from solver.results import TaskResult, append_line, finish, read_results
from solver.source_registry import build_sources
from solver.tasks import Task
from solver.workers import spawn_pool

log = logging.getLogger(__name__)

SEARCHED = "search.jsonl"  # one pass result (TaskResult.to_json) per line, in the run's work directory
SEARCH_ONLY = int(Level.SEARCH_ONLY)


def solved(record: TaskResult) -> bool:
    """Whether a pass solved its task: an answer that reproduces every demo (CandidateSource.fits) answered every
    test input, and nothing raised."""
    return record.fits > 0 and not (record.source_errors or record.error) and record.found == len(record.tables) > 0


def pass_one(task: Task, cfg: Config, seconds: float) -> TaskResult:
    """The sources that run ahead of the model on one task for at most `seconds` from now, with its attempts chosen
    as a run without the model would (solver.pipeline.choose_without_model)."""
    gathered = gather(build_sources(cfg, ahead=True), task, time.monotonic() + seconds)
    gathered.seconds = round(gathered.seconds, 3)
    result = result_of(choose_without_model(task, gathered.tables, cfg), gathered)
    return finish(task, result, "ok", SEARCH_ONLY, gathered.seconds)


def _pass_in_pool(task: Task, cfg: dict, seconds: float) -> TaskResult:
    """pass_one in a pool process; what it raises outside the sources themselves comes back as the record's source
    error (the model still answers the task)."""
    try:
        return pass_one(task, Config.from_dict(cfg), seconds)
    except Exception as e:
        log.error("task %s: the search pass raised:\n%s", task.id, traceback.format_exc())
        return finish(task, TaskResult(source_errors=f"pass: {type(e).__name__}: {e}"), "ok", SEARCH_ONLY, 0.0)


def resolve_mode(mode: str, model_is_source: bool, gpus: int) -> str:
    """The pass's mode: 'auto' runs it before the model on a CPU-only machine (or without the model), beside it
    where GPUs train."""
    if mode not in SEARCH_PASSES:
        raise ValueError(f"run.search_pass='{mode}': expected one of {', '.join(SEARCH_PASSES)}")
    if mode != "auto":
        return mode
    return "beside" if model_is_source and gpus > 0 else "before"


def pass_workers(requested: int, mode: str, model_workers: int, tasks: int) -> int:
    """Processes for the pass: `requested`, else every core before the model and the cores left by the model's
    workers beside it; at most one per task, at least one (1: in the run's own process)."""
    cores = os.cpu_count() or 1
    n = requested or (cores if mode == "before" else cores - 2 * model_workers)
    return max(1, min(n, tasks))


def task_seconds(cfg: Config, end: float, left: int, workers: int) -> float:
    """A task's search time: search.max_seconds, or its part of the pass's time left when that is less."""
    fair = max(0.0, end - time.monotonic()) * workers / max(1, left)
    return max(0.0, min(cfg.search.max_seconds, fair))


def run_pass(tasks: list[Task], cfg: Config, end: float, workers: int, on_record: Callable[[TaskResult], None],
             progress: bool = True) -> int:
    """Search `tasks` in order until `end` (a time.monotonic() value), `workers` at a time (1: here), calling
    `on_record` in this thread as each finishes; returns how many were searched. A pool that breaks (a process
    killed) ends the pass with an error logged: the tasks not searched are searched by the model's workers."""
    bar = _bar(len(tasks), end, progress)
    done = 0
    try:
        if workers <= 1:
            for i, task in enumerate(tasks):
                if time.monotonic() >= end:
                    break
                on_record(pass_one(task, cfg, task_seconds(cfg, end, len(tasks) - i, 1)))
                done += 1
                _tick(bar, end)
            return done
        return _run_pool(tasks, cfg, end, workers, on_record, bar)
    finally:
        if bar is not None:
            bar.close()


def _run_pool(tasks: list[Task], cfg: Config, end: float, workers: int, on_record, bar) -> int:
    queue, flight, done, d = list(tasks), {}, 0, cfg.to_dict()
    with spawn_pool(workers) as pool:
        try:
            while queue or flight:
                while queue and len(flight) < workers and time.monotonic() < end:
                    task = queue.pop(0)
                    seconds = task_seconds(cfg, end, len(queue) + len(flight) + 1, workers)
                    flight[pool.submit(_pass_in_pool, task, d, seconds)] = task.id
                if not flight:
                    break
                finished, _ = wait(flight, timeout=max(1.0, end - time.monotonic() + 5), return_when=FIRST_COMPLETED)
                if not finished:
                    log.error("search pass: %d tasks still searching past the pass's end; left to the model's "
                              "workers", len(flight))
                    break
                for fut in finished:
                    flight.pop(fut)
                    on_record(fut.result())
                    done += 1
                    _tick(bar, end)
        except BrokenProcessPool as e:
            log.error("search pass: its process pool broke (%s); %d tasks not searched are left to the model's "
                      "workers", e, len(queue) + len(flight))
        finally:
            for fut in flight:
                fut.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
    return done


def run_pass_logged(tasks: list[Task], cfg: Config, end: float, workers: int,
                    on_record: Callable[[TaskResult], None], progress: bool = True) -> int:
    """run_pass, with what it raises (e.g. no process pool here) logged: the tasks it did not search are left to the
    model's workers. Returns how many were searched."""
    seen: list[str] = []

    def record(r: TaskResult) -> None:
        seen.append(r.id)
        on_record(r)
    try:
        return run_pass(tasks, cfg, end, workers, record, progress)
    except Exception:
        log.exception("search pass raised: the tasks not searched are searched by the model's workers")
        return len(seen)


def pass_beside(tasks: list[Task], cfg: Config, end: float, workers: int, on_record: Callable[[TaskResult], None],
                on_end: Callable[[], None]) -> threading.Thread:
    """run_pass_logged in a daemon thread beside the model (started, and returned); `on_end` when it ends, however."""
    def beside() -> None:
        try:
            run_pass_logged(tasks, cfg, end, workers, on_record, progress=False)
        finally:
            on_end()
    thread = threading.Thread(target=beside, name="search-pass", daemon=True)
    thread.start()
    return thread


def _bar(total: int, end: float, enabled: bool):
    if not enabled or not total:
        return None
    from tqdm import tqdm
    bar = tqdm(total=total, desc="search", unit="task", dynamic_ncols=True, leave=False)
    _tick(bar, end, 0)
    return bar


def _tick(bar, end: float, n: int = 1) -> None:
    if bar is not None:
        bar.update(n)
        bar.set_postfix_str(f"pass time left {max(0.0, end - time.monotonic()):.0f}s")


def append_record(workdir: Path, record: TaskResult) -> None:
    append_line(Path(workdir) / SEARCHED, record.to_json())


def read_records(workdir: Path) -> dict[str, TaskResult]:
    """A run's pass results by task id (solver.results.read_results)."""
    return read_results(Path(workdir) / SEARCHED)


def pass_end(cfg: Config, start: float, budget: float, run_end: float, mode: str) -> float:
    """When the pass must stop: before the model, search.pass_share of the budget; beside it, the run's end."""
    return min(run_end, start + cfg.search.pass_share * budget) if mode == "before" else run_end
