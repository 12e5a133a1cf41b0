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


# backend choice -------------------------------------------------------------------------------------------------------
class _Refuse:
    """A meta-path finder that makes `import unsloth` raise the given exception (as it does without a GPU)."""

    def __init__(self, exc):
        self.exc = exc

    def find_spec(self, name, path=None, target=None):
        if name == "unsloth":
            raise self.exc
        return None


@pytest.fixture
def no_unsloth_module(monkeypatch):
    monkeypatch.delitem(sys.modules, "unsloth", raising=False)


def test_falls_back_to_peft_without_cuda(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.INFO, logger="solver.adapter"):
        assert A.select_backend("auto") == "peft"
        assert A.select_backend("unsloth") == "peft"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all("CUDA is not available" in m for m in lines)


@pytest.mark.parametrize("exc", [ImportError("No module named 'unsloth'"),
                                 NotImplementedError("Unsloth currently only works on NVIDIA GPUs")])
def test_falls_back_to_peft_when_unsloth_does_not_import(monkeypatch, caplog, no_unsloth_module, exc):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(sys, "meta_path", [_Refuse(exc)] + sys.meta_path)
    with caplog.at_level(logging.INFO, logger="solver.adapter"):
        assert A.select_backend("auto") == "peft"
    (line,) = [r.getMessage() for r in caplog.records]
    assert "unsloth does not import" in line and type(exc).__name__ in line


def test_peft_when_asked_even_with_unsloth(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "unsloth", types.ModuleType("unsloth"))
    assert A.select_backend("peft") == "peft"
    assert A.select_backend("auto") == "unsloth"
    with pytest.raises(ValueError, match="unknown adapter backend"):
        A.select_backend("lora")


def test_unsloth_path_goes_through_fast_language_model(monkeypatch):
    """The Unsloth path calls FastLanguageModel's API (a fake here, delegating to PEFT); unverified on a GPU."""
    calls = []

    class FastLanguageModel:
        @staticmethod
        def get_peft_model(model, **kw):
            calls.append(("get_peft_model", kw))
            from peft import LoraConfig, get_peft_model
            monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # PEFT itself must not touch CUDA here
            return get_peft_model(model, LoraConfig(r=kw["r"], lora_alpha=kw["lora_alpha"],
                                                    target_modules=kw["target_modules"], use_rslora=kw["use_rslora"]))

        @staticmethod
        def for_training(model):
            calls.append(("for_training", {}))
            model.train()

        @staticmethod
        def for_inference(model):
            calls.append(("for_inference", {}))
            model.eval()

    fake = types.ModuleType("unsloth")
    fake.FastLanguageModel = FastLanguageModel
    loaded = load_model("scratch:tiny")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "unsloth", fake)
    cfg = TTTConfig(rank=8, alpha=16, rslora=True, gradient_checkpointing=True, target_modules=["q_proj", "v_proj"])
    ad = A.attach(loaded.model, cfg, seed=7)
    assert ad.backend == "unsloth"
    name, kw = calls[0]
    assert name == "get_peft_model"
    assert kw == {"r": 8, "target_modules": ["q_proj", "v_proj"], "lora_alpha": 16, "lora_dropout": 0.0,
                  "bias": "none", "use_gradient_checkpointing": "unsloth", "random_state": 7, "use_rslora": True,
                  "loftq_config": None}
    ad.train_mode()
    ad.eval_mode()
    assert [c[0] for c in calls[1:]] == ["for_training", "for_inference"]
    _perturb(ad)
    ad.reset()
    assert all(torch.equal(ad.initial[n], p) for n, p in ad.trainable().items())
