"""`python -m solver search`: the program search alone over a task set (no model), a submission written as it goes
and scored when solutions are known.

Owns only this command's body and its loop over the tasks (search_each, which `bench search` times too): the search
is solver.search, the submission solver.submission, the scoring solver.score.
"""
from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from pathlib import Path

from solver.score import print_score, score_table
from solver.search import SearchResult, answers, search_task
from solver.submission import Attempts, fallback_attempts, fill_attempts, write_submission
from solver.tasks import Task, load_tasks
from solver.workers import spawn_pool

log = logging.getLogger(__name__)

DEFAULT_TASK_S = 30.0  # per-task cap without a budget


def attempts_of(task: Task, result: SearchResult) -> list[Attempts]:
    """Two attempts per test input: the two best distinct answers, then the fallbacks."""
    return [fill_attempts([g for g, _ in answers(result, i)][:2], test_in)
            for i, test_in in enumerate(task.test_inputs[:task.num_tests])]


def search_one(task: Task, depth: int, seconds: float) -> tuple[SearchResult | None, float]:
    """One task's search within `seconds` from now, and its core-seconds; None when it raised (logged)."""
    start = time.process_time()
    try:
        result = search_task(task, time.monotonic() + seconds, depth)
    except Exception:  # one task's failure must not end the run: it gets fallback attempts
        log.exception("search: task %s raised; fallback attempts", task.id)
        result = None
    return result, time.process_time() - start


def search_each(tasks: dict[str, Task], depth: int, budget_s: float | None, desc: str, workers: int = 1):
    """Search every task (in `workers` processes, each task's limit its share of the budget times `workers`), tqdm
    with an ETA; yields (task, result or None when it raised, core-seconds) in the tasks' order."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm
    todo = list(tasks.values())
    per_task = budget_s * workers / max(len(tasks), 1) if budget_s is not None else DEFAULT_TASK_S
    with ExitStack() as stack, logging_redirect_tqdm(), tqdm(total=len(todo), desc=desc, unit="task") as bar:
        if workers <= 1:
            done = (search_one(t, depth, per_task) for t in todo)
        else:  # the pool is shut down however the loop ends, tasks not yet started dropped first
            pool = stack.enter_context(spawn_pool(workers))
            stack.callback(pool.shutdown, wait=False, cancel_futures=True)
            done = pool.map(search_one, todo, [depth] * len(todo), [per_task] * len(todo))
        for task, (result, seconds) in zip(todo, done):
            bar.update()
            yield task, result, seconds


def search_command(tasks_spec: str, out: str, depth: int = 2, budget_s: float | None = None,
                   limit: int | None = None, workers: int = 1) -> int:
    """Run the search alone over a task set and write a submission to `out` (a .json file, or else a folder's
    submission.json), fallbacks first, rewritten as each task finishes; print the score when solutions are known.
    Returns 0, or 1 when some task raised."""
    tasks = load_tasks(tasks_spec, limit)
    if Path(out).is_dir() or Path(out).suffix != ".json":  # a folder (e.g. /kaggle/working), made when missing
        Path(out).mkdir(parents=True, exist_ok=True)
        out = str(Path(out) / "submission.json")
    # a valid submission on disk before the first task is searched: fallbacks, replaced as tasks finish
    attempts: dict[str, list[Attempts]] = {tid: fallback_attempts(t) for tid, t in tasks.items()}
    write_submission(out, tasks, attempts)
    failed = found = 0
    for task, result, _ in search_each(tasks, depth, budget_s, "search", workers):
        if result is None:  # it keeps its fallbacks
            failed += 1
            continue
        found += bool(result.programs)
        attempts[task.id] = attempts_of(task, result)
        write_submission(out, tasks, attempts)
    write_submission(out, tasks, attempts)
    print(f"search: {len(tasks)} tasks, {found} with a fitting program, {failed} raised; submission {out}")
    solutions = {t.id: t.test_outputs for t in tasks.values() if t.test_outputs is not None}
    if solutions:
        print_score(score_table(attempts, solutions), show_table=False)
    return 1 if failed else 0
