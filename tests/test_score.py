import pytest

from solver.score import print_score, score_table, summary
from solver.submission import write_submission
from solver.tasks import to_grid

G = to_grid
A, B, C, D = G([[1]]), G([[2]]), G([[3]]), G([[4, 4]])


def test_hand_computed_cases_with_two_and_three_test_inputs():
    solutions = {"one": [A], "two": [A, B], "three": [A, B, D]}
    attempts = {
        "one": [(C, A)],                        # right in attempt_2: 1/1
        "two": [(A, C), (C, C)],                # 1/2
        "three": [(C, A), (C, C), (G([[4], [4]]), C)],  # test 3: same cells, other shape: 1/3
    }
    table = score_table(attempts, solutions).set_index("task_id")
    assert table.loc["one", "hits"] == "2" and table.loc["two", "hits"] == "1x"
    assert table.loc["three", "hits"] == "2xx"
    s = summary(table.reset_index())
    assert (s["correct"], s["total"]) == (3, 6)
    assert s["score"] == pytest.approx(0.5)
    assert s["task_mean"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    assert s["tasks_solved"] == 1


def test_missing_task_and_missing_tests_count_as_wrong(capsys):
    table = score_table({"two": [(A, A)]}, {"one": [A], "two": [A, B]})
    assert table["hits"].tolist() == ["-", "1-"]
    s = print_score(table)
    assert capsys.readouterr().out.strip().splitlines()[-1] == "score: 0.3333 (1/3 test outputs)"
    assert s["task_mean"] == pytest.approx(0.25)


def test_truth_in_attempt_2_for_every_other_task(tmp_path, arc1_eval):
    from solver.score import score_file
    attempts, expected = {}, 0
    for i, task in enumerate(arc1_eval.values()):
        if i % 2:
            attempts[task.id] = [(g, out) for g, out in zip(task.test_inputs, task.test_outputs)]
            expected += task.num_tests
    write_submission(tmp_path / "s.json", arc1_eval, attempts)
    s = summary(score_file(tmp_path / "s.json", "arc1:eval"))
    assert s["correct"] == expected and s["total"] == 419
    assert s["score"] == pytest.approx(expected / 419)
