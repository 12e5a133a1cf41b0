"""LoRA adapters: reset to the initial state bit for bit, save/load, parameter groups, and the backend choice."""
import logging
import sys
import types

import pytest
import torch

from solver import adapter as A
from solver.config import TTTConfig
from solver.model import load_model


def _fresh(**cfg):
    loaded = load_model("scratch:tiny")
    return loaded, A.attach(loaded.model, TTTConfig(backend="peft", rank=4, **cfg), loaded.codec.token_ids, seed=0)


def _perturb(adapter):
    with torch.no_grad():
        for p in adapter.trainable().values():
            p.add_(torch.randn_like(p))


def _logits(model):
    ids = torch.arange(16)[None]
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_reset_restores_initial_weights_bit_for_bit():
    loaded, ad = _fresh()
    before = {n: p.detach().clone() for n, p in ad.trainable().items()}
    out0 = _logits(ad.model)
    _perturb(ad)
    assert not all(torch.equal(before[n], p) for n, p in ad.trainable().items())
    assert not torch.equal(out0, _logits(ad.model))
    ad.reset()
    assert all(torch.equal(before[n], p) for n, p in ad.trainable().items())
    assert torch.equal(out0, _logits(ad.model))


def test_lora_b_starts_at_zero_so_the_fresh_adapter_is_the_base_model():
    loaded, ad = _fresh()
    with ad.disabled():
        base = _logits(ad.model)
    assert torch.equal(base, _logits(ad.model))
    _perturb(ad)
    with ad.disabled():
        assert torch.equal(base, _logits(ad.model))
    assert not torch.equal(base, _logits(ad.model))


def test_rank_alpha_and_rslora_set_the_scale():
    loaded = load_model("scratch:tiny")
    ad = A.attach(loaded.model, TTTConfig(backend="peft", rank=4, alpha=8, rslora=True, target_modules=["q_proj"]))
    layers = [m for m in ad.model.modules() if hasattr(m, "scaling") and isinstance(m.scaling, dict) and m.scaling]
    assert layers and all(m.scaling["default"] == pytest.approx(8 / 4 ** 0.5) for m in layers)
    assert all("q_proj" in n for n in ad.trainable())


def test_save_and_load_round_trip(tmp_path):
    loaded, ad = _fresh()
    _perturb(ad)
    trained = ad.snapshot()
    ad.save(tmp_path / "a")
    ad.reset()
    ad.load(tmp_path / "a")
    assert all(torch.equal(trained[n], p) for n, p in ad.trainable().items())


def test_trained_embeddings_get_their_own_learning_rate():
    loaded, ad = _fresh(train_embeddings=True)
    names = list(ad.trainable())
    assert any("embed_tokens" in n for n in names) and any("lm_head" in n for n in names)
    groups = ad.param_groups(1e-3, 1e-5)
    assert [g["lr"] for g in groups] == [1e-3, 1e-5]
    emb = {id(p) for p in groups[1]["params"]}
    assert all((id(p) in emb) == ("lora_" not in n) for n, p in ad.trainable().items())
    _perturb(ad)
    ad.reset()  # embeddings copies reset too
    assert all(torch.equal(ad.initial[n], p) for n, p in ad.trainable().items())


def test_shared_state_is_used_when_present():
    loaded, ad = _fresh()
    ad.use_shared()
    assert all(torch.equal(ad.initial[n], p) for n, p in ad.trainable().items())
    _perturb(ad)
    ad.shared = ad.snapshot()
    ad.reset()
    ad.use_shared()
    assert all(torch.equal(ad.shared[n], p) for n, p in ad.trainable().items())


# backend choice: PEFT unless Unsloth is asked for by name and works -----------------------------------------------
class _Refuse:
    """A meta-path finder that makes `import unsloth` raise the given exception (as it does without a GPU)."""

    def __init__(self, exc):
        self.exc = exc

    def find_spec(self, name, path=None, target=None):
        if name == "unsloth":
            raise self.exc
        return None


@pytest.fixture
def gpu_without_unsloth(monkeypatch):
    """CUDA reported present to the backend choice (not to PEFT or torch), no unsloth module imported."""
    monkeypatch.setattr(A, "_cuda_available", lambda: True)
    monkeypatch.delitem(sys.modules, "unsloth", raising=False)
    return monkeypatch


def _fake_unsloth(monkeypatch, get_peft_model):
    """Install a fake `unsloth` whose FastLanguageModel.get_peft_model is the given function; returns its call log."""
    calls = []

    class FastLanguageModel:
        @staticmethod
        def get_peft_model(model, **kw):
            calls.append("get_peft_model")
            return get_peft_model(model, **kw)

        @staticmethod
        def for_training(model):
            calls.append("for_training")
            model.train()

        @staticmethod
        def for_inference(model):
            calls.append("for_inference")
            model.eval()

    fake = types.ModuleType("unsloth")
    fake.FastLanguageModel = FastLanguageModel
    monkeypatch.setitem(sys.modules, "unsloth", fake)
    return calls


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "solver.adapter"]


def _works_and_resets(ad):
    before = _logits(ad.model)
    _perturb(ad)
    assert not torch.equal(before, _logits(ad.model))
    ad.reset()
    assert torch.equal(before, _logits(ad.model))


@pytest.mark.parametrize("requested", ["auto", "peft"])
def test_auto_and_peft_never_import_unsloth(gpu_without_unsloth, caplog, requested):
    gpu_without_unsloth.setattr(sys, "meta_path", [_Refuse(AssertionError("unsloth imported"))] + sys.meta_path)
    loaded = load_model("scratch:tiny")
    with caplog.at_level(logging.INFO, logger="solver.adapter"):
        ad = A.attach(loaded.model, TTTConfig(backend=requested, rank=4))
    assert ad.backend == "peft" and "unsloth" not in sys.modules and _warnings(caplog) == []
    _works_and_resets(ad)


def test_auto_is_peft_even_with_unsloth_installed(gpu_without_unsloth):
    calls = _fake_unsloth(gpu_without_unsloth, lambda model, **kw: pytest.fail("Unsloth used without being asked"))
    ad = A.attach(load_model("scratch:tiny").model, TTTConfig(backend="auto", rank=4))
    assert ad.backend == "peft" and calls == []


def test_every_preset_and_the_default_use_peft():
    from solver.config import PRESETS
    assert TTTConfig().backend == "peft"
    assert {name: cfg.ttt.backend for name, cfg in PRESETS.items()} == {name: "peft" for name in PRESETS}


def test_unknown_backend_is_an_error():
    with pytest.raises(ValueError, match="unknown adapter backend 'lora'"):
        A.select_backend("lora")


def test_unsloth_without_cuda_falls_back_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(A, "_cuda_available", lambda: False)
    with caplog.at_level(logging.INFO, logger="solver.adapter"):
        ad = A.attach(load_model("scratch:tiny").model, TTTConfig(backend="unsloth", rank=4))
    assert ad.backend == "peft"
    (line,) = _warnings(caplog)
    assert "CUDA is not available" in line


@pytest.mark.parametrize("exc", [ImportError("No module named 'unsloth'"),
                                 NotImplementedError("Unsloth currently only works on NVIDIA GPUs"),
                                 RuntimeError("Unsloth: transformers was imported first")])
def test_unsloth_that_does_not_import_falls_back_with_one_warning(gpu_without_unsloth, caplog, exc):
    gpu_without_unsloth.setattr(sys, "meta_path", [_Refuse(exc)] + sys.meta_path)
    with caplog.at_level(logging.INFO, logger="solver.adapter"):
        ad = A.attach(load_model("scratch:tiny").model, TTTConfig(backend="unsloth", rank=4))
    assert ad.backend == "peft"
    (line,) = _warnings(caplog)
    assert "import unsloth raised" in line and type(exc).__name__ in line and str(exc) in line
    _works_and_resets(ad)


def test_unsloth_whose_attach_raises_falls_back_to_a_working_peft_adapter(gpu_without_unsloth, caplog):
    """What Unsloth 2026.10.7 does with a model transformers loaded: get_peft_model raises before adding LoRA."""
    def refuse(model, **kw):
        raise AttributeError("_saved_temp_tokenizer")

    calls = _fake_unsloth(gpu_without_unsloth, refuse)
    with caplog.at_level(logging.INFO, logger="solver.adapter"):
        ad = A.attach(load_model("scratch:tiny").model, TTTConfig(backend="unsloth", rank=4))
    assert calls == ["get_peft_model"] and ad.backend == "peft"
    (line,) = _warnings(caplog)
    assert "AttributeError" in line and "_saved_temp_tokenizer" in line
    assert all("lora_" in n for n in ad.trainable()) and hasattr(ad.model, "peft_config")
    ad.train_mode()
    ad.eval_mode()
    assert calls == ["get_peft_model"]  # PEFT's modes, not Unsloth's
    _works_and_resets(ad)


def test_unsloth_that_raises_after_adding_lora_is_an_error(gpu_without_unsloth):
    def half(model, **kw):
        from peft import LoraConfig, get_peft_model
        get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
        raise TypeError("patch_peft_model: Trainer is not patched")

    _fake_unsloth(gpu_without_unsloth, half)
    with pytest.raises(RuntimeError, match="after adding LoRA layers.*use ttt.backend=peft"):
        A.attach(load_model("scratch:tiny").model, TTTConfig(backend="unsloth", rank=4))


def test_unsloth_that_attaches_is_used_with_its_modes(gpu_without_unsloth):
    """A fake Unsloth that works (delegating to PEFT): its model is the adapter's, trained and evaluated through
    FastLanguageModel's modes, and reset bit for bit. The real one is unverified on a GPU."""
    def peft_lora(model, **kw):
        from peft import LoraConfig, get_peft_model
        return get_peft_model(model, LoraConfig(r=kw["r"], lora_alpha=kw["lora_alpha"],
                                                target_modules=kw["target_modules"]))

    calls = _fake_unsloth(gpu_without_unsloth, peft_lora)
    ad = A.attach(load_model("scratch:tiny").model, TTTConfig(backend="unsloth", rank=8, target_modules=["q_proj"]))
    assert ad.backend == "unsloth"
    assert {p.shape[0] for n, p in ad.trainable().items() if "lora_A" in n} == {8}
    ad.train_mode()
    assert ad.model.training
    ad.eval_mode()
    assert not ad.model.training and calls == ["get_peft_model", "for_training", "for_inference"]
    _works_and_resets(ad)


# activation checkpointing -------------------------------------------------------------------------------------------
def test_train_mode_switches_checkpointing_on_and_off():
    from solver.compat import is_checkpointing
    loaded, ad = _fresh()
    base = ad.model.get_base_model()
    ad.train_mode(gradient_checkpointing=True)
    assert is_checkpointing(base)
    ad.train_mode(gradient_checkpointing=False)
    assert not is_checkpointing(base) and ad.model.training
