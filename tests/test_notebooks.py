"""Both notebooks run top to bottom (nbclient, a real ipykernel) on the CPU with `scratch:tiny` and a tiny budget,
their settings injected as ARC_* environment variables, against a fake /kaggle/input built in a temporary folder.

The Kaggle notebook runs twice: on the public placeholder (test set == evaluation set: a few tasks in a short
budget) and as a hidden rerun whose attached model cannot be loaded (the run fails, the submission stays valid).
The explore notebook then studies the placeholder run's folder."""
import importlib.metadata
import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from solver.submission import validate_file
from solver.tasks import load_tasks

ROOT = Path(__file__).resolve().parent.parent
NUM_TASKS, PLACEHOLDER_TASKS = 3, 1


def fake_kaggle_input(root: Path, tasks) -> Path:
    """/kaggle/input as Kaggle mounts it: the competition folder (test == evaluation: the public placeholder) and a
    wheelhouse whose only wheel is already installed at its version."""
    comp = root / "input" / "arc-prize-2025"
    comp.mkdir(parents=True)
    challenges = {}
    for t in tasks:
        raw = t.to_json()
        for test in raw["test"]:
            test.pop("output")
        challenges[t.id] = raw
    (comp / "arc-agi_test_challenges.json").write_text(json.dumps(challenges))
    (comp / "arc-agi_evaluation_challenges.json").write_text(json.dumps(challenges))
    (comp / "arc-agi_evaluation_solutions.json").write_text(
        json.dumps({t.id: [g.tolist() for g in t.test_outputs] for t in tasks}))
    wheels = root / "input" / "arc-ttt-solver-wheels"
    wheels.mkdir()
    (wheels / f"tqdm-{importlib.metadata.version('tqdm')}-py3-none-any.whl").write_bytes(b"")
    (root / "working").mkdir()
    return comp


def execute(name: str, cwd: Path, env: dict, timeout: int = 120) -> nbformat.NotebookNode:
    """Run a notebook of notebooks/ with `env` added to the kernel's environment; raises on any cell error."""
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"PYTHONPATH": str(ROOT), **env}.items():
            mp.setenv(key, value)
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def text_of(nb) -> str:
    """Everything the notebook printed or displayed as text."""
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", "") or o.get("data", {}).get("text/plain", ""))
    return "\n".join(out)


@pytest.fixture(scope="module")
def tasks():
    found = [t for t in load_tasks("arc1:eval").values() if t.num_tests == 1]
    found.sort(key=lambda t: (sum(a.size + b.size for a, b in t.train), t.id))
    return {t.id: t for t in found[:NUM_TASKS]}


@pytest.fixture(scope="module")
def placeholder(tmp_path_factory, tasks):
    root = tmp_path_factory.mktemp("kaggle")
    comp = fake_kaggle_input(root, tasks.values())
    env = {"ARC_INPUT_ROOT": str(root / "input"), "ARC_WORKING": str(root / "working"), "ARC_MODEL": "scratch:tiny",
           "ARC_PLACEHOLDER_TASKS": str(PLACEHOLDER_TASKS), "ARC_PLACEHOLDER_BUDGET": "20s", "ARC_KILL_GRACE": "30s"}
    return root, comp, execute("kaggle_solver.ipynb", root, env)


def test_kaggle_notebook_on_the_placeholder_leaves_a_valid_submission(placeholder, tasks):
    root, comp, nb = placeholder
    text = text_of(nb)
    assert "0 wheel(s) to install" in text and "model: scratch:tiny" in text
    assert f"public placeholder test set: {PLACEHOLDER_TASKS} task(s)" in text
    assert "run exit code 0" in text
    submission = root / "working" / "submission.json"
    assert validate_file(submission, load_tasks(comp / "arc-agi_test_challenges.json")) == []
    assert set(json.loads(submission.read_text())) == set(tasks)
    report = pd.read_csv(root / "working" / "run" / "report.csv")
    assert list(report["task_id"]) == list(tasks)[:PLACEHOLDER_TASKS]  # the run was limited to the first tasks
    assert (root / "working" / "run" / "report.html").exists()


def test_kaggle_notebook_rerun_with_a_broken_model_still_leaves_a_valid_submission(tmp_path, tasks):
    comp = fake_kaggle_input(tmp_path, tasks.values())
    model = tmp_path / "input" / "arc-ttt-model" / "transformers" / "default" / "1"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"not a model")
    env = {"ARC_INPUT_ROOT": str(tmp_path / "input"), "ARC_WORKING": str(tmp_path / "working"),
           "KAGGLE_IS_COMPETITION_RERUN": "1", "ARC_TIME_LIMIT": "10m", "ARC_SAFETY_MARGIN": "9m"}
    nb = execute("kaggle_solver.ipynb", tmp_path, env)
    text = text_of(nb)
    assert f"model: {model}" in text  # found under the input root
    assert "hidden test set (rerun)" in text and "--limit" not in text
    assert "run exit code 1" in text  # the model does not load: the run says so and stops
    submission = tmp_path / "working" / "submission.json"
    assert validate_file(submission, load_tasks(comp / "arc-agi_test_challenges.json")) == []


def test_explore_notebook_draws_tasks_report_and_candidates(placeholder, tasks):
    root, comp, _ = placeholder
    env = {"ARC_RUN_DIR": str(root / "working" / "run"), "ARC_TASKS": str(comp / "arc-agi_evaluation_challenges.json"),
           "ARC_TASK_IDS": ",".join(list(tasks)[:2]), "ARC_CANDIDATES_SECONDS": "8"}
    nb = execute("explore.ipynb", root, env)
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 1 + 2 + 1  # the report plot, two tasks, the candidates of one test input
    text = text_of(nb)
    assert "score:" in text and f"{NUM_TASKS} tasks loaded" in text
    assert "votes" in text  # the candidate table
