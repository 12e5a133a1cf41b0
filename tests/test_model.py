"""Model loading: vocabulary reduction, self-describing reduced directories, the GGUF cache, spec errors.

Fast tests use a tiny random Llama on a 64-token word-level vocabulary whose symbol ids are scrambled; the real
SmolLM2 is loaded only by the test marked slow.
"""
import json
import os
import random
import time

import pytest
import torch
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

import solver.model as M
from solver.codec import SYMBOLS, Codec, CodecError
from solver.config import ModelConfig

VOCAB = 64


def make_tokenizer(split_digits: bool = False) -> PreTrainedTokenizerFast:
    """One token per character over a shuffled 64-word vocabulary; eos doubles as pad (as in SmolLM2)."""
    rng = random.Random(0)
    symbols = [str(d) for d in range(10)] + ["\n", "I", "O"]
    words = symbols + [f"w{i}" for i in range(VOCAB - 3 - len(symbols))]
    rng.shuffle(words)
    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>"] + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    if split_digits:  # a sentencepiece-like tokenizer: "7" becomes "▁", "7"
        tok.normalizer = normalizers.Prepend("▁")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="</s>")


def make_model(tied: bool, seed: int = 0) -> LlamaForCausalLM:
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2, unk_token_id=0, tie_word_embeddings=tied)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    if not tied:  # make sure the head differs from the embedding, so a mix-up would show
        with torch.no_grad():
            model.lm_head.weight.normal_()
    return model


def logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.as_tensor(ids).reshape(1, -1)).logits[0].float()


def prompt(codec: Codec) -> list[int]:
    """A short encoded ARC-like task in the codec's ids."""
    import numpy as np
    a = np.array([[1, 2], [3, 0]], np.uint8)
    return list(codec.encode([(a, a.T)], a[::-1]).ids)


@pytest.fixture
def hf_dir(tmp_path):
    """An untied tiny model saved with its tokenizer, as a competitor would attach it."""
    d = tmp_path / "hf"
    make_model(tied=False).save_pretrained(d)
    make_tokenizer().save_pretrained(d)
    return d


# vocabulary reduction -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tied", [True, False])
def test_reduced_logits_equal_full_logits_at_kept_ids(tied):
    model, codec = make_model(tied), Codec.for_tokenizer(make_tokenizer())
    assert codec.eos == codec.pad and codec.token_ids != tuple(range(16))
    ids = prompt(codec)
    full = logits(model, ids)
    compact = M.reduce_vocabulary(model, codec)
    assert compact == Codec.compact()
    reduced = logits(model, prompt(compact))
    assert reduced.shape == (len(ids), len(SYMBOLS))
    torch.testing.assert_close(reduced, full[:, list(codec.token_ids)], rtol=1e-5, atol=1e-5)
    assert model.get_input_embeddings().weight.shape == (16, 32)
    assert (model.get_output_embeddings().weight is model.get_input_embeddings().weight) == tied
    cfg, gen = model.config, model.generation_config
    assert (cfg.vocab_size, cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (16, 13, 14, 15)
    assert cfg.unk_token_id is None  # its old id 0 would now name the digit 0
    assert (gen.bos_token_id, gen.eos_token_id, gen.pad_token_id) == (13, 14, 15)


def test_reduced_model_trains():
    """Backward through the reduced head: the loss uses the 16-token vocabulary and gradients reach the rows."""
    model, codec = make_model(tied=True), Codec.for_tokenizer(make_tokenizer())
    compact = M.reduce_vocabulary(model, codec)
    ids = torch.as_tensor(prompt(compact)).reshape(1, -1)
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.get_input_embeddings().weight.grad.abs().sum() > 0


def test_compact_codec_is_left_alone():
    model = M.scratch_model("tiny")
    before = model.get_input_embeddings().weight.clone()
    assert M.reduce_vocabulary(model, Codec.compact()) == Codec.compact()
    assert torch.equal(model.get_input_embeddings().weight, before)


@pytest.mark.parametrize("tied", [True, False])
def test_saved_reduced_dir_reloads_plain_and_with_load_model(tmp_path, tied):
    model, codec = make_model(tied), Codec.for_tokenizer(make_tokenizer())
    compact = M.reduce_vocabulary(model, codec)
    expected = logits(model, prompt(compact))
    M.save_model(M.Loaded(model, compact, "test"), tmp_path / "r")
    meta = json.loads((tmp_path / "r" / M.CODEC_FILE).read_text())
    assert meta["reduced"] is True and meta["token_ids"] == list(range(16))
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "r").eval()
    torch.testing.assert_close(logits(plain, prompt(compact)), expected)
    loaded = M.load_model(str(tmp_path / "r"))
    assert loaded.codec == Codec.compact()
    assert loaded.model.config.tie_word_embeddings == tied
    torch.testing.assert_close(logits(loaded.model, prompt(compact)), expected)


def test_hf_dir_full_and_reduced(hf_dir):
    full = M.load_model(str(hf_dir), reduce_vocab=False)
    assert full.codec == Codec.for_tokenizer(make_tokenizer()) and full.codec.vocab_size == VOCAB
    assert full.model.dtype == torch.float32 and full.model.device.type == "cpu"
    reduced = M.load_model(str(hf_dir))
    assert reduced.codec == Codec.compact()
    torch.testing.assert_close(logits(reduced.model, prompt(reduced.codec)),
                               logits(full.model, prompt(full.codec))[:, list(full.codec.token_ids)])
    assert M.num_params(full.model) - M.num_params(reduced.model) == 2 * (VOCAB - 16) * 32  # embedding + head


def test_dtype_option(hf_dir):
    assert M.load_model(str(hf_dir), dtype="bf16").model.dtype == torch.bfloat16
    assert M.load_model("scratch:tiny", dtype="float16").model.dtype == torch.float16


def test_scratch_unchanged():
    loaded = M.load_model("scratch:tiny", seed=3)
    assert loaded.codec == Codec.compact() and loaded.spec == "scratch:tiny"
    assert loaded.model.config.vocab_size == 16 and loaded.model.dtype == torch.float32
    ref = M.scratch_model("tiny", seed=3)
    assert all(torch.equal(a, b) for a, b in zip(loaded.model.parameters(), ref.parameters()))


def test_load_configured_reads_the_model_section(hf_dir):
    loaded = M.load_configured(ModelConfig(spec=str(hf_dir), reduce_vocab=False, dtype="bfloat16", device="cpu"))
    assert loaded.codec.vocab_size == VOCAB and loaded.model.dtype == torch.bfloat16


# the GGUF cache -------------------------------------------------------------------------------------------------------
@pytest.fixture
def fake_gguf(tmp_path, monkeypatch):
    """A .gguf source file whose conversion is a counted fake returning a tiny tied model (as SmolLM2 is tied)."""
    path = tmp_path / "src" / "tiny.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF fake weights")
    calls = []

    def convert(p):
        calls.append(p)
        return make_model(tied=True), make_tokenizer()
    monkeypatch.setattr(M, "convert_gguf", convert)
    return path, calls


def cache_entries(root):
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))


def test_second_load_hits_the_cache(fake_gguf, tmp_path):
    path, calls = fake_gguf
    cache = tmp_path / "cache"
    first = M.load_model(str(path), cache_dir=cache)
    second = M.load_model(str(path), cache_dir=cache)
    assert len(calls) == 1
    assert second.codec == Codec.compact() and second.model.config.vocab_size == 16
    torch.testing.assert_close(logits(second.model, prompt(second.codec)), logits(first.model, prompt(first.codec)))
    entries = cache_entries(cache)
    assert len(entries) == 1 and entries[0].startswith("tiny-reduced-")
    assert not (cache / entries[0] / "tokenizer.json").exists()  # a reduced model's ids are not the tokenizer's
    assert not list(cache.glob(".tmp-*"))
    source = json.loads((cache / entries[0] / M.CODEC_FILE).read_text())["source"]
    assert source["token_ids"] == list(Codec.for_tokenizer(make_tokenizer()).token_ids)
    assert source["size"] == path.stat().st_size
    expected = logits(make_model(tied=True), prompt(Codec.for_tokenizer(make_tokenizer())))
    torch.testing.assert_close(logits(second.model, prompt(second.codec)),
                               expected[:, list(Codec.for_tokenizer(make_tokenizer()).token_ids)])


def test_full_vocabulary_is_cached_separately(fake_gguf, tmp_path):
    path, calls = fake_gguf
    cache = tmp_path / "cache"
    M.load_model(str(path), cache_dir=cache)
    full = M.load_model(str(path), cache_dir=cache, reduce_vocab=False)
    again = M.load_model(str(path), cache_dir=cache, reduce_vocab=False)
    assert len(calls) == 2
    assert full.codec == again.codec == Codec.for_tokenizer(make_tokenizer())
    assert [e.split("-")[1] for e in cache_entries(cache)] == sorted(["reduced", "full"])


def test_changed_source_misses_the_cache(fake_gguf, tmp_path):
    path, calls = fake_gguf
    cache = tmp_path / "cache"
    M.load_model(str(path), cache_dir=cache)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # mtime changes
    M.load_model(str(path), cache_dir=cache)
    assert len(calls) == 2
    with open(path, "ab") as f:  # size changes
        f.write(b"!")
    M.load_model(str(path), cache_dir=cache)
    M.load_model(str(path), cache_dir=cache)
    assert len(calls) == 3 and len(cache_entries(cache)) == 3


def test_cache_dir_from_environment(fake_gguf, tmp_path, monkeypatch):
    path, calls = fake_gguf
    monkeypatch.setenv(M.CACHE_ENV, str(tmp_path / "env-cache"))
    M.load_model(str(path))
    M.load_model(str(path.parent / ".." / "src" / "tiny.gguf"))  # the same file by another name is the same entry
    assert len(calls) == 1 and len(cache_entries(tmp_path / "env-cache")) == 1


def test_killed_write_leaves_no_cache_entry(fake_gguf, tmp_path, monkeypatch):
    path, calls = fake_gguf
    cache = tmp_path / "cache"
    real_save = M.save_model

    def dies_halfway(loaded, directory, **kw):
        directory.mkdir(parents=True)
        (directory / "config.json").write_text("{")
        raise KeyboardInterrupt
    monkeypatch.setattr(M, "save_model", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        M.load_model(str(path), cache_dir=cache)
    assert cache_entries(cache) == [] and len(list(cache.glob(".tmp-*"))) == 1
    monkeypatch.setattr(M, "save_model", real_save)
    loaded = M.load_model(str(path), cache_dir=cache)  # converts again and sweeps the half-written directory
    assert len(calls) == 2 and loaded.codec == Codec.compact()
    assert len(cache_entries(cache)) == 1 and not list(cache.glob(".tmp-*"))


def test_gguf_directory_spec(fake_gguf, tmp_path):
    path, calls = fake_gguf
    assert M.resolve_spec(str(path.parent)) == ("gguf", path.resolve())


# errors ---------------------------------------------------------------------------------------------------------------
def test_unknown_spec():
    with pytest.raises(M.ModelSpecError, match="unknown model spec 'gpt-7'.*smollm2.*scratch"):
        M.load_model("gpt-7")
    with pytest.raises(M.ModelSpecError, match="unknown scratch size 'huge'"):
        M.load_model("scratch:huge")


def test_missing_directory(tmp_path):
    with pytest.raises(M.ModelSpecError, match="does not exist"):
        M.load_model(str(tmp_path / "no-such-model"))
    with pytest.raises(M.ModelSpecError, match="does not exist"):
        M.load_model("models/absent.gguf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(M.ModelSpecError, match="no config.json"):
        M.load_model(str(tmp_path / "empty"))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(M.ModelSpecError, match="not a .gguf file"):
        M.load_model(str(tmp_path / "weights.bin"))


def test_tokenizer_with_split_digits(tmp_path):
    d = tmp_path / "sp"
    make_model(tied=False).save_pretrained(d)
    make_tokenizer(split_digits=True).save_pretrained(d)
    with pytest.raises(CodecError, match="splits '0' into 2 tokens"):
        M.load_model(str(d))


def test_bad_options(hf_dir):
    with pytest.raises(M.ModelSpecError, match="unknown dtype 'int3'"):
        M.load_model(str(hf_dir), dtype="int3")
    if not torch.cuda.is_available():
        with pytest.raises(M.ModelSpecError, match="load_in_4bit needs a CUDA GPU"):
            M.load_model(str(hf_dir), load_in_4bit=True)
        with pytest.raises(M.ModelSpecError, match="no CUDA GPU"):
            M.load_model(str(hf_dir), device="cuda")


def test_unwritable_cache(fake_gguf, tmp_path):
    path, calls = fake_gguf
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(M.ModelSpecError, match="cannot create the model cache.*ARC_SOLVER_CACHE"):
        M.load_model(str(path), cache_dir=tmp_path / "a-file" / "cache")
    assert calls == []


def test_codec_beyond_the_embedding():
    ids = tuple(range(50, 66))  # the model has 64 rows
    with pytest.raises(M.ModelSpecError, match="codec ids reach 65 but the model has 64 embedding rows"):
        M.reduce_vocabulary(make_model(tied=True), Codec(ids, 66))


# the real model -------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_smollm2_reduced_matches_full(tmp_path_factory, arc1_train):
    """Reduced SmolLM2 = full SmolLM2's next-token distribution renormalised over the kept tokens, on a real task."""
    cache = tmp_path_factory.mktemp("smollm2-cache")
    t0 = time.time()
    reduced = M.load_model("smollm2", cache_dir=cache)
    t1 = time.time()
    again = M.load_model("smollm2", cache_dir=cache)
    t2 = time.time()
    full = M.load_model("smollm2", cache_dir=cache, reduce_vocab=False)
    t3 = time.time()
    print(f"\nsmollm2 reduced: first load {t1 - t0:.1f} s, cached {t2 - t1:.1f} s; full: first load {t3 - t2:.1f} s; "
          f"parameters full {M.num_params(full.model):,}, reduced {M.num_params(reduced.model):,}")
    assert reduced.codec == again.codec == Codec.compact()
    assert full.codec.vocab_size == 49152 and full.model.config.tie_word_embeddings
    task = min(list(arc1_train.values())[:50], key=lambda t: full.codec.num_tokens(t.train[:2], t.test_inputs[0]))
    full_ids = full.codec.encode(task.train[:2], task.test_inputs[0]).ids
    compact_ids = reduced.codec.encode(task.train[:2], task.test_inputs[0]).ids
    full_logits = logits(full.model, full_ids)[:, list(full.codec.token_ids)]
    torch.testing.assert_close(logits(reduced.model, compact_ids), full_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(torch.softmax(logits(again.model, compact_ids)[-1], -1),
                               torch.softmax(full_logits[-1], -1), rtol=1e-4, atol=1e-5)
    assert M.num_params(full.model) - M.num_params(reduced.model) == (49152 - 16) * 576  # tied: one matrix
