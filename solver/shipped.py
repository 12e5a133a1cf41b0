"""Adapter exports: a base model SPEC plus a small LoRA folder, the form a pretrained model ships in.

An export folder holds PEFT's adapter_config.json, the adapter's weights (LoRA matrices and the trained rows of the
codec's 16-token embedding and head) in safetensors files of at most SHARD_BYTES each, and arc_adapter.json: the base
SPEC and seed, the codec, what pretraining saw (data, protected splits, steps, tokens, the command) and the resumable
training state. A SPEC `BASE+DIR` (or `DIR` alone: its recorded base) loads the base, reduces its vocabulary and
merges the adapter for inference (solver.model calls `load_combined`). The SPEC `default` is `models/default/` of
the repository when it exists, else untouched `smollm2`.

`trained_on` names the protected splits a model's recorded training data overlapped, and `warn_if_trained_on` warns
when a model is measured on one of them. Knows nothing of training loops or decoding; imports nothing of the package
above the codec and the task sets (the base model is loaded by a function it is given).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

from solver.codec import Codec
from solver.files import read_format_json, write_atomic, write_text_atomic

log = logging.getLogger(__name__)

META = "arc_adapter.json"
CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model"         # adapter_model.safetensors, or adapter_model-0000k-of-0000n.safetensors
FORMAT = 1
SHARD_BYTES = 16 * 2 ** 20        # the largest file an export writes (a file a repository accepts without LFS)
COMMIT_BYTES = 20 * 2 ** 20       # an export larger than this in all is logged as too large to commit
DEFAULT = "default"
DEFAULT_DIR = Path(__file__).resolve().parents[1] / "models" / "default"
UNTOUCHED = "smollm2"


class AdapterError(ValueError):
    """An adapter folder or BASE+DIR SPEC that cannot be used (missing files, another base, a full vocabulary)."""


# SPECs --------------------------------------------------------------------------------------------------------------
def is_export(directory: str | Path) -> bool:
    return (Path(directory) / META).is_file()


def resolve_default(spec: str) -> str:
    """`default` -> the repository's models/default/ when it exists, else untouched smollm2 (logged once per
    load); any other SPEC unchanged."""
    if spec != DEFAULT:
        return spec
    chosen = str(DEFAULT_DIR) if DEFAULT_DIR.is_dir() else UNTOUCHED
    log.info("default model: %s", f"{chosen} (the shipped one)" if chosen != UNTOUCHED else
             f"{UNTOUCHED}, untouched ({DEFAULT_DIR} does not exist)")
    return chosen


def split_spec(spec: str) -> tuple[str, Path] | None:
    """(base SPEC, adapter folder) for `BASE+DIR` or an export folder alone (its recorded base); None for any other
    SPEC."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return (read_meta(path)["base"], path) if is_export(path) else None
    if path.exists():
        return None
    base, plus, folder = spec.rpartition("+")
    if not plus:
        return None
    folder_path = Path(folder).expanduser()
    if not is_export(folder_path):
        raise AdapterError(f"model SPEC '{spec}': {folder} is not an adapter export (no {META}); BASE+DIR needs a "
                           f"folder written by `python -m solver pretrain` in LoRA mode")
    return base, folder_path


def read_meta(directory: str | Path) -> dict:
    """The export's metadata file, checked for its format."""
    return read_format_json(Path(directory) / META, FORMAT, AdapterError, "export it again")


# writing ------------------------------------------------------------------------------------------------------------
def _shards(state: dict, limit: int) -> list[dict]:
    """The tensors in groups whose safetensors file stays within `limit` bytes (the data, and the header's entry of
    each tensor counted at its name + 128 bytes, + 1 KiB), a larger tensor alone in its group, in name order."""
    groups, cur, size = [], {}, 1024
    for name in sorted(state):
        n = state[name].numel() * state[name].element_size() + len(name) + 128
        if cur and size + n > limit:
            groups.append(cur)
            cur, size = {}, 1024
        cur[name], size = state[name], size + n
    return groups + [cur] if cur else groups


def _shard_names(n: int) -> list[str]:
    return [f"{WEIGHTS}.safetensors"] if n == 1 else [f"{WEIGHTS}-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]


def export_adapter(peft_model, codec: Codec, directory: str | Path, base: str, meta: dict,
                   dtype: str = "float32") -> dict:
    """Write the adapter of a PEFT model (LoRA and trained token rows, cast to `dtype`) and arc_adapter.json
    (`meta` plus base, codec and file list) into `directory`; returns {file: bytes}. Every file is written
    atomically and the metadata last, so a killed export leaves the previous one loadable."""
    import torch
    from peft import get_peft_model_state_dict
    if not codec.is_compact:
        raise AdapterError("an adapter export needs a reduced model (codec of 16 tokens)")
    directory = Path(directory)
    cast = getattr(torch, dtype)
    state = {k: v.detach().to("cpu", cast).contiguous() for k, v in get_peft_model_state_dict(peft_model).items()}
    cfg = peft_model.peft_config["default"].to_dict()
    cfg["base_model_name_or_path"] = base
    full = {**meta, "format": FORMAT, "base": base, "dtype": dtype,
            "codec": {"token_ids": list(codec.token_ids), "vocab_size": codec.vocab_size}}
    return _write(directory, state, cfg, full)


def _write(directory: Path, state: dict, config: dict, meta: dict) -> dict:
    """The weights in shards, adapter_config.json, then arc_adapter.json (naming the shards) last; stale shards go."""
    from safetensors.torch import save_file
    groups = _shards(state, SHARD_BYTES)
    names = _shard_names(len(groups))
    for name, group in zip(names, groups):
        write_atomic(directory / name, lambda tmp, g=group: save_file(g, str(tmp), metadata={"format": "pt"}))
    write_text_atomic(directory / CONFIG, json.dumps(config, indent=1, default=list) + "\n")
    write_text_atomic(directory / META, json.dumps({**meta, "files": names}, indent=1) + "\n")
    for stale in directory.glob(f"{WEIGHTS}*.safetensors"):
        if stale.name not in names:
            stale.unlink()
    sizes = {n: (directory / n).stat().st_size for n in names + [CONFIG, META]}
    _check_size(directory, sizes)
    return sizes


def cast_export(directory: str | Path, dtype: str) -> dict:
    """Rewrite an adapter export's weights in `dtype` in place (bfloat16 halves a float32 export: what a GPU window
    carries); returns {file: bytes}."""
    import torch
    directory = Path(directory)
    meta = read_meta(directory)
    state = {k: v.to(getattr(torch, dtype)).contiguous() for k, v in load_weights(directory).items()}
    config = json.loads((directory / CONFIG).read_text())
    return _write(directory, state, config, {**meta, "dtype": dtype})


def _check_size(directory: Path, sizes: dict) -> None:
    total = sum(sizes.values())
    level = logging.WARNING if total > COMMIT_BYTES else logging.INFO
    log.log(level, "adapter export %s: %.1f MiB in %d files (largest %.1f MiB)%s", directory, total / 2 ** 20,
            len(sizes), max(sizes.values()) / 2 ** 20,
            f"; more than {COMMIT_BYTES / 2 ** 20:.0f} MiB to commit: lower pretrain.rank or target_modules, or "
            f"pretrain.export_dtype=bfloat16" if total > COMMIT_BYTES else "")


# reading ------------------------------------------------------------------------------------------------------------
def load_weights(directory: str | Path) -> dict:
    """Every tensor of an export's weight files."""
    from safetensors.torch import load_file
    directory = Path(directory)
    state = {}
    for name in read_meta(directory)["files"]:
        if not (directory / name).is_file():
            raise AdapterError(f"{directory}: weight file {name} is missing")
        state.update(load_file(str(directory / name)))
    return state


def lora_config(directory: str | Path):
    from peft import LoraConfig
    return LoraConfig.from_pretrained(str(directory))


def attach_export(model, directory: str | Path):
    """The model wrapped in the export's LoRA configuration with the export's weights (a PEFT model)."""
    from peft import get_peft_model
    cfg = lora_config(directory)
    cfg.base_model_name_or_path = getattr(getattr(model, "config", None), "name_or_path", None) or None
    peft_model = get_peft_model(model, cfg)
    load_into(peft_model, directory)
    return peft_model


def load_into(peft_model, directory: str | Path) -> None:
    """Copy an export's weights into a PEFT model of the same configuration; AdapterError naming what misfits."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    weights = load_weights(directory)
    expected = {k: tuple(v.shape) for k, v in get_peft_model_state_dict(peft_model).items()}
    misfit = sorted(k for k in set(expected) | set(weights)
                    if k not in weights or k not in expected or tuple(weights[k].shape) != expected[k])
    if misfit:
        raise AdapterError(f"adapter {directory} does not fit this model: {len(misfit)} tensors missing, unexpected "
                           f"or of another shape (first: {misfit[0]})")
    set_peft_model_state_dict(peft_model, weights)


def load_combined(spec: str, load_base: Callable, seed: int = 0):
    """A `BASE+DIR` (or export folder) SPEC: `load_base(base_spec, seed)` (a reduced solver.model.Loaded), then the
    adapter attached and merged into its weights. Returns (model, codec, base SPEC)."""
    base, directory = split_spec(spec)
    meta = read_meta(directory)
    if base != meta["base"]:
        log.warning("adapter %s was trained on base %s; loading it on %s as asked", directory, meta["base"], base)
    loaded = load_base(base, meta.get("base_seed", seed) if base == meta["base"] else seed)
    if not loaded.codec.is_compact:
        raise AdapterError(f"adapter {directory} needs the reduced vocabulary of {base} (model.reduce_vocab true)")
    model = attach_export(loaded.model, directory).merge_and_unload()
    log.info("adapter %s merged into %s (%s steps, %s tokens of pretraining)", directory, base,
             meta.get("source", {}).get("pretrain", {}).get("steps", "?"),
             meta.get("source", {}).get("pretrain", {}).get("tokens", "?"))
    return model, loaded.codec, base


# what a model was trained on ----------------------------------------------------------------------------------------
def _recorded_splits(directory: Path) -> list[str]:
    for name in (META, "arc_codec.json"):
        path = directory / name
        if path.is_file():
            meta = json.loads(path.read_text())
            return list(meta.get("source", {}).get("pretrain", {}).get("splits", []))
    return []


def trained_on(spec: str | Path) -> list[str]:
    """The protected splits (solver.tasks.EVAL_SPLITS names) a model's recorded pretraining data overlapped: those of
    an export or a saved model folder, and of the base under a `BASE+DIR` SPEC; [] for models without a record."""
    spec = resolve_default(str(spec)) if str(spec) == DEFAULT else str(spec)
    found: list[str] = []
    combo = split_spec(spec) if "+" in spec or Path(spec).expanduser().is_dir() else None
    folders = [Path(spec).expanduser()] if combo is None else [combo[1], Path(combo[0]).expanduser()]
    for folder in folders:
        if folder.is_dir():
            found += [s for s in _recorded_splits(folder) if s not in found]
    return found


def warn_if_trained_on(spec: str, tasks: dict) -> list[str]:
    """The protected splits that both the model `spec` was trained on and `tasks` overlap, with one WARNING line
    when there are any (a measurement on data the model saw)."""
    seen = trained_on(spec)
    if not seen:
        return []
    from solver.tasks import splits_of
    both = [s for s in splits_of(tasks) if s in seen]
    if both:
        log.warning("model %s was pretrained on %s, which these %d tasks overlap: scores on them measure memory, "
                    "not solving", spec, ", ".join(both), len(tasks))
    return both
