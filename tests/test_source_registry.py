"""The source registry: a source registered by name alone (here a toy that reads its answers from a JSON file) is
run by the package's own pass or solver, and its answers reach the submission and the report."""
import csv
import json

import numpy as np
import pytest

from solver import source_registry as SR
from solver.config import ConfigError, resolve
from solver.run import run_tasks
from solver.select import Candidate, proposed
from solver.tasks import Task


def answer_file_source(path, ahead: bool) -> type:
    """A toy source: each test input's answer read from `path` ({task id: [grid per test input]})."""
    class AnswerFile:
        name, fits = "answer_file", 0

        def __init__(self, cfg):
            self.answers = json.loads(path.read_text())

        def propose(self, task: Task, test_index: int, deadline: float) -> list[Candidate]:
            grids = self.answers.get(task.id, [])
            if test_index >= len(grids):
                return []
            return proposed(self.name, [(np.array(grids[test_index], dtype=np.uint8), 1.0, "from the file")])
    AnswerFile.ahead = ahead
    return AnswerFile


@pytest.mark.parametrize("ahead", [True, False], ids=["ahead-of-the-model", "inside-the-task"])
def test_a_registered_source_reaches_the_submission_and_the_report(monkeypatch, tmp_path, arc1_eval, ahead):
    tasks = dict(list(arc1_eval.items())[:3])
    answers = {tid: [np.rot90(x).tolist() for x in t.test_inputs] for tid, t in list(tasks.items())[:2]}
    path = tmp_path / "answers.json"
    path.write_text(json.dumps(answers))
    monkeypatch.setitem(SR.REGISTRY, "answer_file", answer_file_source(path, ahead))
    cfg = resolve("test", run={"budget": "60s", "workers": 0, "sources": "answer_file", "search_pass": "before"})
    out, work = tmp_path / "sub.json", tmp_path / "work"
    report = run_tasks(tasks, cfg, out, work, progress=False)
    sub = json.loads(out.read_text())
    for tid, grids in answers.items():
        assert [entry["attempt_1"] for entry in sub[tid]] == grids
    unanswered = list(tasks)[2]
    assert [e["attempt_1"] for e in sub[unanswered]] == [x.tolist() for x in tasks[unanswered].test_inputs]
    rows = {r["task_id"]: r for r in csv.DictReader((work / "report.csv").open())}
    for tid in answers:
        assert rows[tid]["origins"].split("; ")[0] == "answer_file[from the file]|fallback"
        assert rows[tid]["level"] == ("SEARCH_ONLY" if ahead else "FULL")
    assert report["attempt_1_from"]["answer_file"] == sum(len(g) for g in answers.values())
    assert (work / "search.jsonl").exists() == ahead  # the pass ran the source ahead of the model, or the job did


def test_an_unknown_source_is_named_with_the_registered_ones():
    with pytest.raises(ConfigError, match="no source named oracle.*search, model"):
        SR.source_names(resolve("test", run={"sources": "oracle,model"}))
