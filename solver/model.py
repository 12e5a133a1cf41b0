"""Models: loading from a SPEC, the codec that goes with them, vocabulary reduction and adapters.

SPEC forms:
  scratch:<size>   a small Llama-architecture model initialised at random on the codec's compact vocabulary
"""
from __future__ import annotations

from dataclasses import dataclass

from solver.codec import SYMBOLS, Codec

# name -> (hidden size, layers, heads, kv heads, mlp size); context length is 8192 for all.
SCRATCH_SIZES = {
    "tiny": (32, 2, 4, 2, 64),          # ~30k parameters: for tests
    "small": (256, 6, 8, 4, 768),       # ~4M
    "medium": (512, 8, 8, 4, 1536),     # ~23M
    "large": (768, 12, 12, 4, 2304),    # ~75M
}
MAX_CONTEXT = 8192


@dataclass
class Loaded:
    """A model ready to use: the torch module and the codec whose token ids it speaks."""
    model: object
    codec: Codec
    spec: str


def scratch_model(size: str, seed: int = 0):
    """A randomly initialised Llama on the compact vocabulary (len(SYMBOLS) tokens)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    if size not in SCRATCH_SIZES:
        raise ValueError(f"unknown scratch size '{size}' (choose from {', '.join(SCRATCH_SIZES)})")
    hidden, layers, heads, kv, mlp = SCRATCH_SIZES[size]
    codec = Codec.compact()
    cfg = LlamaConfig(vocab_size=len(SYMBOLS), hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=MAX_CONTEXT,
                      bos_token_id=codec.bos, eos_token_id=codec.eos, pad_token_id=codec.pad,
                      tie_word_embeddings=False, rope_theta=10000.0)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def load_model(spec: str, seed: int = 0) -> Loaded:
    """Load a model from its SPEC (see the module docstring)."""
    kind, _, arg = spec.partition(":")
    if kind == "scratch":
        return Loaded(scratch_model(arg or "tiny", seed), Codec.compact(), spec)
    raise ValueError(f"unknown model spec '{spec}'")
