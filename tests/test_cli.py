"""The command line, in-process through solver.cli.main (the same code `python -m solver` runs)."""
import json

from solver.cli import main
from solver.submission import write_submission


def test_score_prints_the_kaggle_line_last(tmp_path, capsys, arc1_eval):
    path = tmp_path / "truth.json"
    write_submission(path, arc1_eval, {t.id: list(zip(t.test_outputs, t.test_outputs)) for t in arc1_eval.values()})
    assert main(["score", str(path), "--solutions", "arc1:eval", "--csv", str(tmp_path / "t.csv")]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "score: 1.0000 (419/419 test outputs)"
    assert len((tmp_path / "t.csv").read_text().splitlines()) == 401
    write_submission(path, arc1_eval, {})
    assert main(["score", str(path), "--solutions", "arc1:eval", "-q"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "score: 0.0000 (0/419 test outputs)"


def test_validate_exit_codes(tmp_path, capsys):
    tasks = tmp_path / "t_challenges.json"
    tasks.write_text(json.dumps({"a": {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[1]]}]}}))
    sub = tmp_path / "s.json"
    sub.write_text(json.dumps({"a": [{"attempt_1": [[1]], "attempt_2": [[2]]}]}))
    assert main(["validate", str(sub), "--tasks", str(tasks)]) == 0
    sub.write_text(json.dumps({"a": [{"attempt_1": [[1]]}]}))
    assert main(["validate", str(sub), "--tasks", str(tasks)]) == 1
    assert "a test 0: attempt_2 missing" in capsys.readouterr().out


def test_bad_file_is_a_message_not_a_traceback(tmp_path, capsys):
    (tmp_path / "x.json").write_text("{")
    assert main(["score", str(tmp_path / "x.json"), "--solutions", "arc1:eval"]) == 2
    assert "x.json: not valid JSON" in capsys.readouterr().err
