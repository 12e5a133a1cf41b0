"""A trimmed model: the reduced SmolLM2 in one folder small enough to travel in a 64 MiB device call.

The reduced model keeps 16 rows of the GGUF's 49,152-row embedding (solver.model's vocabulary reduction). A trimmed
folder keeps the GGUF's own blocks of every other weight (Q4_1: 4-bit values and fp16 scales per 32 weights), so that
its dequantized weights are the reduced model's to the bit; the blocks' scales and their values are stored apart
(the scales compress to about half, the values hardly) in one xz stream, with the embedding's 16 rows (Q8_0) and the
norms (F32). About 57 MiB against the GGUF's 94.

Files: config.json, generation_config.json and arc_codec.json (the reduced model's, as solver.model saves them: the
codec and the tokenizer ids its 16 rows came from), trimmed.json (each tensor's name, shape, GGML type and parts of
the stream, the stream's sha256) and weights.xz. `trim` writes one from a GGUF and the reduced model converted from
it, checking every tensor equal; `expand` writes it out as an ordinary reduced HF folder (fp32 safetensors), which
solver.model caches and loads (`--model DIR`, or `smollm2` where $ARC_SOLVER_SMOLLM2_TRIMMED names the folder).
Imports nothing of the package but solver.files.
"""
from __future__ import annotations

import hashlib
import json
import lzma
import shutil
from pathlib import Path

from solver.files import read_format_json, write_atomic, write_text_atomic

META = "trimmed.json"
STREAM = "weights.xz"
FORMAT = 1
KEPT = ("config.json", "generation_config.json", "arc_codec.json")  # copied as they are from the reduced folder
EMBEDDING = "model.embed_tokens.weight"


class TrimmedError(ValueError):
    """A trimmed folder that cannot be read or built (missing file, damaged stream, a tensor that differs)."""


def is_trimmed(directory: str | Path) -> bool:
    return (Path(directory) / META).is_file()


def gguf_name(hf_name: str, layers: int) -> str:
    """The GGUF tensor a reduced Llama's HF tensor comes from (gguf's own name map)."""
    import gguf
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, layers)
    found = names.get_name(hf_name, try_suffixes=(".weight",))
    if found is None:
        raise TrimmedError(f"no GGUF tensor for {hf_name}: only Llama models can be trimmed")
    return found


def row_order(hf_name: str, rows: int, config: dict):
    """The GGUF rows in the HF tensor's row order: llama.cpp permutes q and k (undone as transformers' GGUF loader
    undoes it); the identity for every other tensor."""
    import numpy as np
    order = np.arange(rows)
    kind = "q" if ".q_proj." in hf_name else "k" if ".k_proj." in hf_name else None
    if kind is None:
        return order
    heads = config["num_attention_heads"] if kind == "q" else config["num_key_value_heads"]
    return order.reshape(heads, rows // heads // 2, 2).swapaxes(2, 1).reshape(rows)


def _tensor_bytes(reader, name: str):
    """A GGUF tensor's data as uint8 rows (one row of blocks per output row) and its GGML type name."""
    import numpy as np
    t = next((t for t in reader.tensors if t.name == name), None)
    if t is None:
        raise TrimmedError(f"the GGUF has no tensor {name}")
    rows = int(np.prod(t.shape[1:])) if len(t.shape) > 1 else 1
    return np.frombuffer(bytes(t.data), np.uint8).reshape(rows, -1), t.tensor_type.name


def _parts(name: str, data, kind: str, source_ids: list[int], config: dict) -> tuple[list, list]:
    """(parts, their sections): the bytes of one tensor as stored, in the HF tensor's row order."""
    if name == EMBEDDING:
        data = data[source_ids]  # the codec's 16 tokens, in its order (PAD's row is EOS's where they share one)
    else:
        data = data[row_order(name, data.shape[0], config)]
    if kind == "Q4_1":  # 20-byte blocks: 4 bytes of scales (d, m), 16 of 4-bit values
        blocks = data.reshape(-1, 20)
        return [blocks[:, :4].tobytes(), blocks[:, 4:].tobytes()], ["scales", "values"]
    if kind in ("Q8_0", "F32"):
        return [data.tobytes()], ["raw"]
    raise TrimmedError(f"tensor {name} is {kind}: a trimmed folder holds Q4_1, Q8_0 and F32 tensors only")


def trim(gguf_path: str | Path, reduced: str | Path, out: str | Path) -> dict:
    """Write the trimmed folder `out` of the GGUF whose reduced model (a folder solver.model saved) is `reduced`;
    every tensor is checked equal to the reduced model's. Returns {file: bytes}."""
    from gguf import GGUFReader
    from safetensors import safe_open
    gguf_path, reduced, out = Path(gguf_path), Path(reduced), Path(out)
    config = json.loads((reduced / "config.json").read_text())
    recorded = json.loads((reduced / "arc_codec.json").read_text())
    source_ids = recorded.get("source", {}).get("token_ids")
    if not recorded.get("reduced") or not source_ids:
        raise TrimmedError(f"{reduced} is not a reduced model converted from a GGUF (its arc_codec.json records no "
                           f"tokenizer ids): give the folder solver.model.cached_gguf(path, True) returns")
    reader = GGUFReader(str(gguf_path))
    sections: dict[str, list[bytes]] = {"scales": [], "values": [], "raw": []}
    tensors = []
    with safe_open(str(reduced / "model.safetensors"), "np") as f:
        for name in f.keys():
            data, kind = _tensor_bytes(reader, gguf_name(name, config["num_hidden_layers"]))
            parts, where = _parts(name, data, kind, source_ids, config)
            shape = list(f.get_slice(name).get_shape())
            tensors.append({"name": name, "shape": shape, "type": kind, "parts": list(zip(where, map(len, parts)))})
            for part, section in zip(parts, where):
                sections[section].append(part)
            check_equal(name, dequantize(kind, parts, shape), f.get_tensor(name))
    stream = b"".join(b"".join(sections[s]) for s in ("scales", "values", "raw"))
    _place(tensors, {s: sum(map(len, sections[s])) for s in sections})
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / STREAM, lambda tmp: tmp.write_bytes(lzma.compress(stream, preset=6)))
    for name in KEPT:
        shutil.copy2(reduced / name, out / name)
    meta = {"format": FORMAT, "tensors": tensors, "stream_bytes": len(stream),
            "sha256": hashlib.sha256(stream).hexdigest(),
            "source": {"gguf": gguf_path.name, "bytes": gguf_path.stat().st_size}}
    write_text_atomic(out / META, json.dumps(meta, indent=1) + "\n")
    return {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}


def _place(tensors: list[dict], section_bytes: dict[str, int]) -> None:
    """Turn each tensor's (section, length) parts into (offset, length) in the stream: sections scales, values, raw."""
    start = {"scales": 0, "values": section_bytes["scales"], "raw": section_bytes["scales"] + section_bytes["values"]}
    for t in tensors:
        placed = []
        for section, length in t["parts"]:
            placed.append([start[section], length])
            start[section] += length
        t["parts"] = placed


def dequantize(kind: str, parts: list[bytes], shape: list[int]):
    """The float32 array of one stored tensor."""
    import numpy as np
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize as gguf_dequantize
    if kind == "F32":
        return np.frombuffer(parts[0], np.float32).reshape(shape)
    if kind == "Q4_1":
        scales = np.frombuffer(parts[0], np.uint8).reshape(-1, 4)
        values = np.frombuffer(parts[1], np.uint8).reshape(-1, 16)
        data = np.concatenate([scales, values], axis=1).reshape(shape[0], -1)
    else:
        data = np.frombuffer(parts[0], np.uint8).reshape(shape[0], -1)
    return gguf_dequantize(data, GGMLQuantizationType[kind]).reshape(shape)


def check_equal(name: str, ours, theirs) -> None:
    """TrimmedError unless the trimmed tensor equals the reduced model's, bit for bit."""
    import numpy as np
    if ours.shape != theirs.shape or not np.array_equal(ours, theirs.astype(np.float32)):
        raise TrimmedError(f"tensor {name}: the trimmed weights differ from the reduced model's (shape "
                           f"{ours.shape} vs {theirs.shape}); this GGUF is not trimmed losslessly")


def read_meta(directory: str | Path) -> dict:
    """trimmed.json, checked for its format."""
    return read_format_json(Path(directory) / META, FORMAT, TrimmedError, "trim the model again "
                            "(python -m solver trim-model)")


def expand(directory: str | Path, dest: str | Path) -> Path:
    """Write the trimmed folder `directory` out as an ordinary reduced HF folder `dest` (fp32 safetensors and the
    kept JSON files); TrimmedError when a file is missing or the stream is damaged."""
    from safetensors.numpy import save_file
    directory, dest = Path(directory), Path(dest)
    meta = read_meta(directory)
    missing = [n for n in (*KEPT, STREAM) if not (directory / n).is_file()]
    if missing:
        raise TrimmedError(f"{directory}: {', '.join(missing)} missing (carry the whole folder)")
    try:
        stream = lzma.decompress((directory / STREAM).read_bytes())
    except lzma.LZMAError as e:
        raise TrimmedError(f"{directory / STREAM}: damaged ({e}); carry it again") from None
    if hashlib.sha256(stream).hexdigest() != meta["sha256"]:
        raise TrimmedError(f"{directory / STREAM}: its sha256 is not the one trimmed.json records; carry it again")
    state = {t["name"]: dequantize(t["type"], [stream[o:o + n] for o, n in t["parts"]], t["shape"])
             for t in meta["tensors"]}
    dest.mkdir(parents=True, exist_ok=True)
    save_file(state, str(dest / "model.safetensors"), metadata={"format": "pt"})
    for name in KEPT:
        shutil.copy2(directory / name, dest / name)
    return dest
