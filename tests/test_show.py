"""Pictures: grid pixels, task figures and their PNG size, attempt marks, defensive reading of run outputs, the
HTML report, and the `show` command."""
import json
import struct

import numpy as np
import pandas as pd
import pytest

from solver import show
from solver.cli import main
from solver.submission import write_submission
from solver.tasks import Task


def png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG file's IHDR chunk."""
    data = open(path, "rb").read(24)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def tiny_task(with_truth: bool = True) -> Task:
    a = np.array([[1, 0], [3, 2]], dtype=np.uint8)
    return Task("tiny", [(a, a.T), (a[:1], a[:1].T)], [a, a[:, :1]],
                [a.T, a[:, :1].T] if with_truth else None)


def test_grid_image_cells_have_palette_colours_and_lines():
    g = np.array([[0, 1, 2], [9, 8, 7]], dtype=np.uint8)
    img = show.grid_image(g, cell=4, line=1)
    assert img.shape == (2 * 5 + 1, 3 * 5 + 1, 3) and img.dtype == np.uint8
    for r in range(2):
        for c in range(3):
            assert tuple(img[1 + r * 5 + 2, 1 + c * 5 + 2]) == tuple(show.PALETTE[g[r, c]])
    assert tuple(img[0, 0]) == show.LINE_RGB and tuple(img[5, 3]) == show.LINE_RGB


def test_attempt_marks_follow_the_truth():
    task = tiny_task()
    right, wrong = task.test_outputs[0], task.test_inputs[0]
    rows = show.task_panels(task, [(right, wrong), (wrong, None)])
    assert len(rows) == 2 + 2  # two demos, two tests
    first, second = rows[2], rows[3]
    assert [p.frame for p in first[2:]] == [show.RIGHT, show.WRONG]
    assert "right" in first[2].caption and "wrong" in first[3].caption
    assert [p.frame for p in second[2:]] == [show.WRONG, show.WRONG] and second[3].grid is None
    unknown = show.task_panels(tiny_task(with_truth=False), [(right, wrong), (wrong, wrong)])
    assert len(unknown[2]) == 3 and {p.frame for p in unknown[2][1:]} == {show.UNKNOWN}


def test_save_task_png_has_the_computed_size(tmp_path):
    task = tiny_task()
    path = show.save_task_png(task, tmp_path / "t.png", [(task.test_outputs[0], task.test_inputs[0])])
    # 2 demos + 2 tests = 4 rows; input, truth and two attempts = 4 columns
    assert png_size(path) == (4 * show.PANEL_PX, 4 * show.PANEL_PX + show.HEADER_PX)
    path = show.save_task_png(tiny_task(with_truth=False), tmp_path / "u.png", max_demos=1)
    assert png_size(path) == (2 * show.PANEL_PX, 3 * show.PANEL_PX + show.HEADER_PX)


def test_show_command_writes_png_of_the_right_size(tmp_path, capsys, arc1_train):
    task = arc1_train["a1570a43"]
    sub = tmp_path / "sub.json"
    write_submission(sub, {task.id: task}, {task.id: [(task.test_outputs[0], task.test_inputs[0])]})
    out = tmp_path / "pic.png"
    assert main(["show", task.id, "--tasks", "arc1:train", "--submission", str(sub), "--out", str(out)]) == 0
    rows, cols = len(task.train) + task.num_tests, 4
    assert png_size(out) == (cols * show.PANEL_PX, rows * show.PANEL_PX + show.HEADER_PX)
    assert str(out) in capsys.readouterr().out


def test_show_command_names_an_unknown_task(capsys):
    assert main(["show", "nope", "--tasks", "arc1:train", "--out", "/nonexistent/x.png"]) == 2
    assert "task nope is not in arc1:train" in capsys.readouterr().err


def test_run_table_reads_csv_with_odd_columns_and_skips_bad_jsonl(tmp_path):
    (tmp_path / "report.csv").write_text("task,wall_s,weird\nb,1.5,x\na,2.0,y\na,3.0,z\n")
    table = show.run_table(tmp_path)
    assert list(table["task_id"]) == ["b", "a"] and table.loc[1, "wall_s"] == 3.0  # last row of a task wins
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.jsonl").write_text('{"id": "t1", "seconds": 4, "attempts": [[1]]}\nnot json\n'
                                         '{"id": "t2", "seconds": 1}\n')
    table = show.run_table(other)
    assert list(table["task_id"]) == ["t1", "t2"] and "attempts" not in table.columns
    empty = tmp_path / "empty"
    empty.mkdir()
    assert list(show.run_table(empty).columns) == ["task_id"]


def test_accuracy_is_unknown_without_solutions_and_time_parts_do_not_double_count():
    table = pd.DataFrame({"task_id": ["a", "b"], "tests": [1, 2], "correct": [np.nan, np.nan],
                          "seconds": [10.0, 4.0], "ttt_seconds": [6.0, 1.0], "predict_seconds": [3.0, 1.0]})
    assert show.accuracy(table) is None
    parts = show.time_parts(table)
    assert list(parts) == ["ttt_seconds", "predict_seconds", "other"]
    assert np.allclose(sum(parts.values()), [10.0, 4.0]) and np.allclose(parts["other"], [1.0, 2.0])
    table["correct"] = [1, 1]
    assert list(show.accuracy(table)) == [1.0, 0.5]
    assert show.figure_png(show.report_figure(table))[:4] == b"\x89PNG"


def test_html_report_draws_every_task_and_marks_attempts(tmp_path):
    task = tiny_task()
    tasks = {"tiny": task, "other": Task("other", task.train, [task.test_inputs[0]])}
    write_submission(tmp_path / "submission.json", tasks, {"tiny": [(task.test_outputs[0], task.test_inputs[0])]})
    (tmp_path / "report.csv").write_text("task_id,status,seconds,tests,correct\ntiny,ok,2.5,2,\nother,skipped,,1,\n")
    (tmp_path / "config.json").write_text(json.dumps({"model": {"spec": "scratch:tiny"}}))
    page = show.write_html_report(tmp_path, tasks).read_text()
    assert (tmp_path / "report.html").exists()
    assert 'id="tiny"' in page and 'id="other"' in page and "scratch:tiny" in page
    assert page.count('class="right"') == 1 and page.count('class="wrong"') >= 2  # scored from the submission
    assert "test outputs right: <b>1/2</b>" in page  # "other" has no solution and "1 ok, 1 skipped" in page
    assert page.count("data:image/png;base64,") >= 2 + 2 * 3
    bare = show.html_report(tmp_path)  # no tasks: no truth, the report says so
    assert "accuracy: <b>unknown</b>" in bare and 'class="right"' not in bare


def test_candidates_figure_marks_the_expected_grid():
    a, b = np.zeros((2, 2), np.uint8), np.ones((2, 3), np.uint8)
    fig = show.candidates_figure([{"grid": a, "votes": 3, "score": -1.5}, {"grid": b, "votes": 1}], "t", b)
    captions = [ax.get_title() for ax in fig.axes]
    assert captions == ["#1 votes 3 score -1.50", "#2 votes 1"]
    assert [ax.spines["top"].get_edgecolor() for ax in fig.axes][1][:3] == pytest.approx((46 / 255, 204 / 255,
                                                                                          64 / 255))


def test_show_report_command_writes_the_page(tmp_path, capsys):
    challenges = tmp_path / "t_challenges.json"
    challenges.write_text(json.dumps({"a": {"train": [{"input": [[1]], "output": [[2]]}],
                                            "test": [{"input": [[1]], "output": [[2]]}]}}))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "submission.json").write_text(json.dumps({"a": [{"attempt_1": [[2]], "attempt_2": [[1]]}]}))
    assert main(["show", "--report", str(tmp_path / "run"), "--tasks", str(challenges)]) == 0
    page = (tmp_path / "run" / "report.html").read_text()
    assert "test outputs right: <b>1/1</b>" in page and "attempt 1 ✓" in page
    assert main(["show", "--tasks", str(challenges)]) == 2 and "needs TASK_ID" in capsys.readouterr().err
