"""The program search (solver.search) as a candidate source: the answers of the programs that reproduce every demo of
a task, best first, each with its program's text as evidence.

The search runs once per task (its first `propose` call, with that call's deadline) and every test input reads its
answers from that result; its statistics are kept for the task's report. It runs ahead of the model (`ahead`): the
run's search pass (solver.search_pass) searches the whole set first where run.search_pass allows.
"""
from __future__ import annotations

import logging
import time

from solver.config import Config
from solver.select import Candidate, proposed
from solver.tasks import Task

log = logging.getLogger(__name__)

SEARCH = "search"


class SearchSource:
    """Candidates from the programs that fit a task's demos (solver.search.search_task)."""
    name = SEARCH
    ahead = True

    def __init__(self, cfg: Config):
        self.cfg = cfg.search
        self._task: Task | None = None
        self._result = None
        self.seconds = 0.0

    def propose(self, task: Task, test_index: int, deadline: float) -> list[Candidate]:
        from solver.search import answers
        if self._task is not task:
            self._run(task, deadline)
        # answers() is the search's own order (plausibility, colour-map evidence, depth, size): its score is that rank
        return proposed(self.name, [(grid, -float(i), p.text)
                                    for i, (grid, p) in enumerate(answers(self._result, test_index))])

    def _run(self, task: Task, deadline: float) -> None:
        from solver.search import search_task
        t0 = time.monotonic()
        self._task, self._result = None, None
        result = search_task(task, deadline, self.cfg.depth, self.cfg.max_memory_mb)
        self._task, self._result = task, result
        self.seconds = time.monotonic() - t0
        stats = self._result.stats
        log.info("task %s: search found %d programs in %.1fs (%s, depth %s, %s evaluated)", task.id,
                 len(self._result.programs), self.seconds, stats.get("stopped"), stats.get("depth_reached"),
                 stats.get("evaluated"))

    @property
    def fits(self) -> int:
        """Programs that fit every demo of the last task searched."""
        return len(self._result.programs) if self._result is not None else 0
