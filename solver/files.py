"""Writing files so that a reader never sees half of one, and the process's one logging set-up.

`write_atomic` is the one temp-file-then-rename in the package: every file a killed process could leave half-written
(submission, reports, checkpoints, caches, kept adapters) goes through it. Knows nothing of what the files hold.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Callable

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, flush it to disk, then rename it onto `path`.

    The temporary name starts with '.' and ends with '.tmp' (`stale_temporaries` finds those a kill left behind).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def write_json_atomic(path: str | Path, obj, indent: int | None = None) -> Path:
    """JSON (compact unless `indent`) written atomically."""
    separators = None if indent else (",", ":")
    return write_text_atomic(path, json.dumps(obj, indent=indent, separators=separators) + ("\n" if indent else ""))


def stale_temporaries(folder: str | Path, name: str = "*") -> list[Path]:
    """Temporary files `write_atomic` left in `folder` when a process was killed mid-write (for `name`, or all)."""
    return sorted(Path(folder).glob(f".{name}.*.tmp"))


def setup_logging(verbose: bool = False) -> None:
    """One line per event on stderr, the same format in every process (the CLI, spawned workers, ablation rows).
    Does nothing when logging is already set up."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT, datefmt="%H:%M:%S")


def read_format_json(path: str | Path, fmt, error: type[Exception], again: str) -> dict:
    """A JSON file whose "format" field must be `fmt`; `error` naming the file when it cannot be read or is of
    another format (`again` says how to write it anew)."""
    path = Path(path)
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise error(f"{path}: cannot be read ({e})") from None
    if meta.get("format") != fmt:
        raise error(f"{path}: format {meta.get('format')} is not {fmt}; {again}")
    return meta

