"""Both notebooks run top to bottom (nbclient, a real ipykernel) on the CPU with `scratch:tiny` and a tiny budget,
their settings injected as ARC_* environment variables, against a fake /kaggle/input built in a temporary folder.

The Kaggle notebook runs twice: on the public placeholder (test set == evaluation set: a few tasks in a short
budget) and as a hidden rerun whose attached model cannot be loaded (the run fails, the submission stays valid).
Its first cells (fallback submission, install) run once more against a wheelhouse of broken wheels, with pip in
dry-run mode (PIP_DRY_RUN) so that this environment never changes. The explore notebook then studies the placeholder
run's folder."""
import importlib.metadata
import json
import zipfile
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


def make_wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A minimal valid pure-Python wheel: one module and the dist-info pip reads."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}.py", "")
        z.writestr(f"{info}/METADATA", metadata)
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return path


def execute(name: str, cwd: Path, env: dict, timeout: int = 120, until: str | None = None) -> nbformat.NotebookNode:
    """Run a notebook of notebooks/ with `env` added to the kernel's environment; raises on any cell error. With
    `until`, only the cells up to the one tagged so."""
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    if until is not None:
        tagged = [i for i, c in enumerate(nb.cells) if until in c.metadata.get("tags", [])]
        assert tagged, f"no cell of {name} is tagged {until!r}"
        nb.cells = nb.cells[:tagged[0] + 1]
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
    assert f"fallback submission: {root / 'working' / 'submission.json'}, {NUM_TASKS} tasks" in text
    assert "0 wheel(s) to install" in text and "1 wheel(s) already installed" in text and "model: scratch:tiny" in text
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
    other = tmp_path / "input" / "smollm2-gguf" / "SmolLM2.gguf"  # a GGUF too: the HF folder is the better kind
    other.parent.mkdir(parents=True)
    other.write_bytes(b"GGUF")
    env = {"ARC_INPUT_ROOT": str(tmp_path / "input"), "ARC_WORKING": str(tmp_path / "working"),
           "KAGGLE_IS_COMPETITION_RERUN": "1", "ARC_TIME_LIMIT": "10m", "ARC_SAFETY_MARGIN": "9m"}
    nb = execute("kaggle_solver.ipynb", tmp_path, env)
    text = text_of(nb)
    assert f"attached model: {model}: a Hugging Face" in text and f"attached model: {other}: a GGUF file" in text
    assert f"model: {model} (a Hugging Face" in text and "; preset kaggle-4xl4" in text  # found under the input root
    assert "hidden test set (rerun)" in text and "--limit" not in text
    assert "run exit code 1" in text  # the model does not load: the run says so and stops
    submission = tmp_path / "working" / "submission.json"
    assert validate_file(submission, load_tasks(comp / "arc-agi_test_challenges.json")) == []


def test_kaggle_notebook_writes_the_fallback_before_an_install_that_fails(tmp_path, tasks):
    """Wheels that cannot install (a dependency missing from the wheelhouse, a file that is no zip, a name that is no
    wheel, a numpy that would replace the installed one) cost only themselves: the install cell reports each and does
    not raise, and the fallback submission written before it is on disk, valid."""
    comp = fake_kaggle_input(tmp_path, tasks.values())
    challenges = json.loads((comp / "arc-agi_test_challenges.json").read_text())
    challenges["bad00000"] = {"train": [], "test": [{"input": "not a grid"}]}
    (comp / "arc-agi_test_challenges.json").write_text(json.dumps(challenges))
    wheels = tmp_path / "input" / "arc-ttt-solver-wheels"
    make_wheel(wheels, "arc_test_needs_missing", "1.0", ("arc-test-absent-dep",))
    make_wheel(wheels, "arc_test_good", "1.0")
    (wheels / "arc_test_broken-1.0-py3-none-any.whl").write_bytes(b"not a zip file")
    (wheels / "numpy-1.0.0-cp311-cp311-manylinux_2_17_x86_64.whl").write_bytes(b"")
    (wheels / "notes.whl").write_text("not a wheel name")
    env = {"ARC_INPUT_ROOT": str(tmp_path / "input"), "ARC_WORKING": str(tmp_path / "working"), "PIP_DRY_RUN": "1"}
    text = text_of(execute("kaggle_solver.ipynb", tmp_path, env, until="install"))

    assert text.index("fallback submission:") < text.index("wheelhouse ")
    assert "3 wheel(s) to install" in text and "1 wheel(s) already installed at their version" in text
    assert f"kept numpy {importlib.metadata.version('numpy')} (the image's core stack)" in text
    assert "skipped notes.whl: not a wheel file name" in text
    assert "one pip call for 3 wheel(s) failed" in text
    assert "installed arc_test_good-1.0-py3-none-any.whl" in text
    lines = text.splitlines()
    missing = next(line for line in lines if "FAILED arc_test_needs_missing-1.0" in line)
    assert "arc-test-absent-dep" in missing
    assert any("FAILED arc_test_broken-1.0" in line for line in lines)
    assert not any("numpy-1.0.0" in line and ("installed" in line or "FAILED" in line) for line in lines)
    assert f"torch {importlib.metadata.version('torch')}, transformers {importlib.metadata.version('transformers')}, " \
           f"peft {importlib.metadata.version('peft')}" in text
    assert "solver from" in text
    for name in ("arc_test_good", "arc_test_needs_missing"):  # pip only said what it would do
        with pytest.raises(importlib.metadata.PackageNotFoundError):
            importlib.metadata.version(name)

    submission = tmp_path / "working" / "submission.json"
    sub = json.loads(submission.read_text())
    assert validate_file(submission, load_tasks(comp / "arc-agi_test_challenges.json")) == []
    for tid, task in tasks.items():
        assert sub[tid] == [{"attempt_1": g.tolist(), "attempt_2": [[0]]} for g in task.test_inputs]
    assert sub["bad00000"] == [{"attempt_1": [[0]], "attempt_2": [[0]]}]


def test_explore_notebook_draws_tasks_report_and_candidates(placeholder, tasks):
    root, comp, _ = placeholder
    env = {"ARC_RUN_DIR": str(root / "working" / "run"), "ARC_TASKS": str(comp / "arc-agi_evaluation_challenges.json"),
           "ARC_TASK_IDS": ",".join(list(tasks)[:2]), "ARC_CANDIDATES_SECONDS": "30"}  # half of it TTT
    nb = execute("explore.ipynb", root, env)
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 1 + 2 + 1  # the report plot, two tasks, the candidates of one test input
    text = text_of(nb)
    assert "score:" in text and f"{NUM_TASKS} tasks loaded" in text
    assert "votes" in text  # the candidate table
