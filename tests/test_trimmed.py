"""solver.trimmed: a reduced Llama kept in its GGUF's blocks, checked against transformers' own GGUF reading (q and k
un-permuted as its loader does), expanded back bit for bit, and loaded by `--model DIR` and by `smollm2`."""
import json
import lzma
import os
from pathlib import Path

import numpy as np
import pytest

from solver import trimmed as T

HIDDEN, MLP, HEADS, KV, VOCAB = 64, 96, 4, 2, 48
SOURCE_IDS = [20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 40, 31, 32, 1, 2, 2]  # the tokenizer's ids of the 16 symbols


def hf_tensors(rng) -> dict[str, tuple[np.ndarray, str]]:
    """A one-layer Llama's GGUF tensors (llama.cpp's names and row order), each with its GGML type."""
    w = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    return {"token_embd.weight": (w(VOCAB, HIDDEN), "Q8_0"), "output_norm.weight": (w(HIDDEN), "F32"),
            "blk.0.attn_norm.weight": (w(HIDDEN), "F32"), "blk.0.ffn_norm.weight": (w(HIDDEN), "F32"),
            "blk.0.attn_q.weight": (w(HIDDEN, HIDDEN), "Q4_1"), "blk.0.attn_k.weight": (w(32, HIDDEN), "Q4_1"),
            "blk.0.attn_v.weight": (w(32, HIDDEN), "Q4_1"), "blk.0.attn_output.weight": (w(HIDDEN, HIDDEN), "Q4_1"),
            "blk.0.ffn_gate.weight": (w(MLP, HIDDEN), "Q4_1"), "blk.0.ffn_up.weight": (w(MLP, HIDDEN), "Q4_1"),
            "blk.0.ffn_down.weight": (w(HIDDEN, MLP), "Q4_1")}


HF_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
            "blk.0.attn_norm.weight": "model.layers.0.input_layernorm.weight",
            "blk.0.ffn_norm.weight": "model.layers.0.post_attention_layernorm.weight",
            "blk.0.attn_q.weight": "model.layers.0.self_attn.q_proj.weight",
            "blk.0.attn_k.weight": "model.layers.0.self_attn.k_proj.weight",
            "blk.0.attn_v.weight": "model.layers.0.self_attn.v_proj.weight",
            "blk.0.attn_output.weight": "model.layers.0.self_attn.o_proj.weight",
            "blk.0.ffn_gate.weight": "model.layers.0.mlp.gate_proj.weight",
            "blk.0.ffn_up.weight": "model.layers.0.mlp.up_proj.weight",
            "blk.0.ffn_down.weight": "model.layers.0.mlp.down_proj.weight"}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[Path, Path]:
    return tiny_source(tmp_path_factory.mktemp("trim"))


def tiny_source(tmp: Path) -> tuple[Path, Path]:
    """(a GGUF of tensors only, the reduced model folder its conversion would give: transformers' un-permuting)."""
    import gguf
    from gguf.quants import dequantize, quantize
    from safetensors.numpy import save_file
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor
    writer = gguf.GGUFWriter(str(tmp / "tiny.gguf"), "llama")
    processor = LlamaTensorProcessor({"num_attention_heads": HEADS, "num_key_value_heads": KV})
    state = {}
    for name, (w, kind) in hf_tensors(np.random.default_rng(0)).items():
        qtype = gguf.GGMLQuantizationType[kind]
        data = w if kind == "F32" else quantize(w, qtype)
        writer.add_tensor(name, data, raw_dtype=None if kind == "F32" else qtype)
        value = w if kind == "F32" else dequantize(data, qtype)
        value = processor.process(value, name).weights  # what transformers' GGUF loader makes of it
        state[HF_NAMES[name]] = value[SOURCE_IDS] if name == "token_embd.weight" else np.ascontiguousarray(value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    reduced = tmp / "reduced"
    reduced.mkdir()
    save_file(state, str(reduced / "model.safetensors"), metadata={"format": "pt"})
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
              "intermediate_size": MLP, "num_hidden_layers": 1, "num_attention_heads": HEADS,
              "num_key_value_heads": KV, "vocab_size": 16, "tie_word_embeddings": True, "bos_token_id": 13,
              "eos_token_id": 14, "pad_token_id": 15, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5}
    (reduced / "config.json").write_text(json.dumps(config))
    (reduced / "generation_config.json").write_text(json.dumps({"bos_token_id": 13, "eos_token_id": 14}))
    (reduced / "arc_codec.json").write_text(json.dumps({"reduced": True, "token_ids": list(range(16)),
                                                         "vocab_size": 16, "source": {"token_ids": SOURCE_IDS}}))
    return tmp / "tiny.gguf", reduced


def test_trim_then_expand_gives_the_reduced_model_bit_for_bit(source, tmp_path):
    from safetensors.numpy import load_file
    gguf_path, reduced = source
    sizes = T.trim(gguf_path, reduced, tmp_path / "t")
    assert set(sizes) == {*T.KEPT, T.META, T.STREAM} and T.is_trimmed(tmp_path / "t")
    meta = T.read_meta(tmp_path / "t")
    embedding = next(t for t in meta["tensors"] if t["name"] == T.EMBEDDING)
    assert embedding["shape"] == [16, HIDDEN] and embedding["type"] == "Q8_0"  # 16 rows of the 48 travel
    T.expand(tmp_path / "t", tmp_path / "x")
    ours, theirs = load_file(str(tmp_path / "x/model.safetensors")), load_file(str(reduced / "model.safetensors"))
    assert sorted(ours) == sorted(theirs)
    assert all(np.array_equal(ours[k], theirs[k]) for k in theirs)  # q and k un-permuted as transformers does


def test_a_tensor_that_differs_is_refused(source, tmp_path):
    from safetensors.numpy import load_file, save_file
    gguf_path, reduced = source
    other = tmp_path / "other"
    other.mkdir()
    for name in T.KEPT:
        (other / name).write_bytes((reduced / name).read_bytes())
    state = load_file(str(reduced / "model.safetensors"))
    state["model.layers.0.self_attn.k_proj.weight"][0, 0] += 1e-3
    save_file(state, str(other / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(T.TrimmedError, match="k_proj.*differ"):
        T.trim(gguf_path, other, tmp_path / "t")


def test_a_damaged_or_incomplete_folder_is_a_clear_error(source, tmp_path):
    gguf_path, reduced = source
    folder = tmp_path / "t"
    T.trim(gguf_path, reduced, folder)
    stream = bytearray(lzma.decompress((folder / T.STREAM).read_bytes()))
    stream[100] ^= 1
    (folder / T.STREAM).write_bytes(lzma.compress(bytes(stream)))
    with pytest.raises(T.TrimmedError, match="sha256"):
        T.expand(folder, tmp_path / "x")
    (folder / "config.json").unlink()
    with pytest.raises(T.TrimmedError, match="config.json missing"):
        T.expand(folder, tmp_path / "x")


def test_the_loader_reads_a_trimmed_folder_as_dir_and_as_smollm2(source, tmp_path, monkeypatch):
    import torch
    from solver import model as M
    gguf_path, reduced = source
    T.trim(gguf_path, reduced, tmp_path / "t")
    monkeypatch.setenv(M.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(M.SMOLLM2_ENV, raising=False)
    loaded = M.load_model(str(tmp_path / "t"))
    assert loaded.codec.is_compact and loaded.model.config.vocab_size == 16
    x = torch.tensor([[13, 3, 10, 14]])
    assert loaded.model(x).logits[0, -1, 15] == float("-inf")  # PAD's logit is dead, as every load makes it
    monkeypatch.setenv(M.TRIMMED_ENV, str(tmp_path / "t"))
    assert M.resolve_spec("smollm2") == ("trimmed", (tmp_path / "t").resolve())
    again = M.load_model("smollm2")
    assert all(torch.equal(a, b) for a, b in zip(again.model.parameters(), loaded.model.parameters()))
    with pytest.raises(M.ModelSpecError, match="reduced vocabulary only"):
        M.load_model("smollm2", reduce_vocab=False)
    monkeypatch.setenv(M.TRIMMED_ENV, str(tmp_path))
    with pytest.raises(M.ModelSpecError, match="not a trimmed folder"):
        M.resolve_spec("smollm2")
    assert len(os.listdir(tmp_path / "cache")) >= 1  # expanded once, into the cache
