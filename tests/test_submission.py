import json

import numpy as np

from solver.submission import (build_submission, complete_attempts, read_submission, validate_file,
                               validate_submission, write_submission)
from solver.tasks import Task, parse_task, to_grid

G = to_grid


def two_tasks():
    return {"a": Task("a", [(G([[1]]), G([[2]]))], [G([[1, 1]]), G([[3]])]),
            "b": Task("b", [(G([[1]]), G([[2]]))], [G([[4]])])}


def test_every_task_and_test_input_is_present(arc1_eval):
    found = {tid: [(G([[1]]), G([[2]]))] for tid in list(arc1_eval)[:10]}  # one pair even for multi-test tasks
    sub = build_submission(arc1_eval, found)
    assert list(sub) == list(arc1_eval)
    for tid, task in arc1_eval.items():
        assert len(sub[tid]) == task.num_tests
        assert all(set(e) == {"attempt_1", "attempt_2"} for e in sub[tid])
    assert validate_submission(sub, arc1_eval) == []


def test_fallbacks_fill_missing_and_invalid_attempts():
    tasks = two_tasks()
    pairs = complete_attempts(tasks["a"], [(G([[7]]), np.zeros((0, 0), np.uint8))])
    assert pairs[0][0].tolist() == [[7]] and pairs[0][1].tolist() == [[1, 1]]  # bad attempt_2 -> the test input
    assert pairs[1][0].tolist() == [[3]] and pairs[1][1].tolist() == [[0]]     # missing test -> input, [[0]]
    pairs = complete_attempts(tasks["b"], [(G([[0]]), None)])
    assert pairs[0][1].tolist() == [[4]]  # attempt_2 differs from attempt_1 where the fallback allows


def test_malformed_task_still_gets_every_entry(tmp_path):
    bad = parse_task("bad", {"train": [], "test": [{"input": [[5]]}, {"input": "x"}]})
    tasks = {**two_tasks(), "bad": bad}
    path = tmp_path / "sub" / "submission.json"
    write_submission(path, tasks, {})
    sub = json.loads(path.read_text())
    assert sub["bad"] == [{"attempt_1": [[5]], "attempt_2": [[0]]}, {"attempt_1": [[0]], "attempt_2": [[0]]}]
    assert validate_file(path, tasks) == []
    assert [p[0].tolist() for p in read_submission(path)["a"]] == [[[1, 1]], [[3]]]
    assert not list(path.parent.glob(".*tmp"))  # the temporary file was renamed away


def test_validator_lists_every_problem(tmp_path):
    tasks = two_tasks()
    sub = {"a": [{"attempt_1": [[1]]}, {"attempt_1": [[1, 2], [3]], "attempt_2": [[1]]}], "zzz": []}
    problems = validate_submission(sub, tasks)
    assert "b: task missing" in problems
    assert "zzz: not in the task set" in problems
    assert "a test 0: attempt_2 missing" in problems
    assert any(p.startswith("a test 1: attempt_1 is not rectangular") for p in problems)
    sub["b"] = [{"attempt_1": [[1]], "attempt_2": [[1]]}] * 2
    assert "b: 2 attempt dicts for 1 test inputs" in validate_submission(sub, tasks)
    (tmp_path / "s.json").write_text("nope")
    assert "not valid JSON" in validate_file(tmp_path / "s.json", tasks)[0]
    assert validate_submission([], tasks) == ["submission is a list, not an object of task id -> list of attempts"]
