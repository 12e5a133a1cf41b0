"""Models attached to a Kaggle notebook: which one a run uses and how it is loaded, found under a root folder
(/kaggle/input).

Four kinds, in the order one is chosen when several are attached: an adapter export of `pretrain` (arc_adapter.json
beside adapter_config.json: the package's own trained model), a Hugging Face folder (config.json with weights; its
prompt format is then detected by solver.formats when it loads), the same in 4 bits (bitsandbytes
quantization_config: loaded with model.load_in_4bit on a GPU), a GGUF file. Each carries the --set assignments it
needs and the preset made for it (a public checkpoint's own TTT and inference settings, solver.config). Reads only
small JSON files; knows nothing of models, tokenizers or runs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from solver.shipped import META, is_export

KINDS = ("adapter", "hf", "hf-4bit", "gguf")  # best first: the order in which an attached model is chosen
WEIGHTS = ("*.safetensors", "*.bin", "*.safetensors.index.json")
PRESET_OF_FORMAT = {"nvarc": "nvarc-4xl4", "architects": "architects-4xl4", "marc": "marc-4xl4"}
DEFAULT_PRESET = "kaggle-4xl4"


@dataclass
class Attached:
    """An attached model: the SPEC `--model` gets, its kind, the `--set` assignments it needs and why it was taken."""
    spec: str
    kind: str
    sets: list[str] = field(default_factory=list)
    why: str = ""


def _config(folder: Path) -> dict:
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return {}


def is_four_bit(config: dict) -> bool:
    """A bitsandbytes 4-bit checkpoint (its config.json's quantization_config)."""
    q = config.get("quantization_config") or {}
    return bool(q.get("load_in_4bit")) or (q.get("quant_method") == "bitsandbytes" and not q.get("load_in_8bit"))


def classify(path: Path) -> Attached | None:
    """What `path` is as a model (a folder or a .gguf file), or None."""
    if path.is_file():
        return Attached(str(path), "gguf", why=f"a GGUF file ({path.name})") if path.suffix == ".gguf" else None
    if is_export(path):
        base = _json(path / META).get("base", "its recorded base")
        return Attached(str(path), "adapter", why=f"an adapter export of pretrain ({META}) on {base}")
    if (path / "config.json").is_file() and any(any(path.glob(p)) for p in WEIGHTS):
        config = _config(path)
        kind = config.get("model_type", "unknown")
        if is_four_bit(config):
            return Attached(str(path), "hf-4bit", ["model.load_in_4bit=true"],
                            f"a 4-bit Hugging Face {kind} folder (bitsandbytes: loaded on a GPU)")
        return Attached(str(path), "hf", why=f"a Hugging Face {kind} folder (its prompt format detected when loaded)")
    return None


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def find_attached(root: str | Path, max_depth: int = 6) -> list[Attached]:
    """Every model under `root` (up to `max_depth` folders down), best kind first, then by path; a folder that is
    a model is not searched inside."""
    found, root = [], Path(root)
    level = [root] if root.is_dir() else []
    for _ in range(max_depth):
        below = []
        for folder in level:
            for path in sorted(folder.iterdir()):
                hit = classify(path)
                if hit is not None:
                    found.append(hit)
                elif path.is_dir() and not path.is_symlink():
                    below.append(path)
        level = below
    return sorted(found, key=lambda a: (KINDS.index(a.kind), a.spec))


def preset_for(attached: Attached | None) -> str:
    """The preset made for an attached model: a public checkpoint's own (by its detected prompt format), else the
    package's Kaggle preset."""
    if attached is None or attached.kind not in ("hf", "hf-4bit"):
        return DEFAULT_PRESET
    from transformers import AutoTokenizer
    from solver.formats import detect_format
    try:
        name, _ = detect_format(attached.spec, AutoTokenizer.from_pretrained(attached.spec))
    except (OSError, ValueError):  # FormatError is a ValueError: the run will say what it found
        return DEFAULT_PRESET
    return PRESET_OF_FORMAT.get(name, DEFAULT_PRESET)
