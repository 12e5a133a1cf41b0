"""transformers version differences (solver.compat): logits at chosen positions and activation checkpointing, on the
installed transformers and on fakes that behave as 5.17 does."""
import pytest
import torch

from solver import compat
from solver.model import load_model

VOCAB = 16


class Old:
    """The 5.17 way: `hidden[:, logits_to_keep, :]` (an int keeps the last ones); a 2-D mask raises there."""

    def __init__(self, ignore: bool = False):
        self.ignore = ignore  # a forward that ignores logits_to_keep (returns every position), as Unsloth's does

    def __call__(self, input_ids, logits_to_keep=0, **kwargs):
        full = torch.stack([input_ids.float() * (v + 1) for v in range(VOCAB)], dim=-1)  # [B, T, V], distinct rows
        if self.ignore:
            return type("Out", (), {"logits": full})()
        index = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        return type("Out", (), {"logits": full[:, index, :]})()


def _batch():
    ids = torch.tensor([[3, 1, 4, 1, 5, 9], [2, 6, 5, 3, 5, 8]])
    keep = torch.tensor([[0, 0, 1, 1, 0, 0], [0, 1, 0, 1, 1, 0]], dtype=torch.bool)
    return ids, keep


def test_a_2d_mask_fails_the_old_way_and_kept_logits_goes_round_it():
    ids, keep = _batch()
    with pytest.raises(IndexError):
        Old()(ids, logits_to_keep=keep)
    full = Old()(ids).logits
    assert torch.equal(compat.kept_logits(Old(), ids, keep), full[keep])


@pytest.mark.parametrize("takes_mask", [True, False])
def test_a_forward_that_ignores_logits_to_keep_still_gives_the_kept_rows(monkeypatch, takes_mask):
    monkeypatch.setattr(compat, "takes_mask", lambda model: takes_mask)
    ids, keep = _batch()
    assert torch.equal(compat.kept_logits(Old(ignore=True), ids, keep), Old()(ids).logits[keep])


@pytest.mark.parametrize("force_positions", [False, True])
def test_kept_logits_of_a_real_model_on_either_path(monkeypatch, force_positions):
    """As detected (the mask on 5.23, positions on 5.17), and forced onto the positions path."""
    model = load_model("scratch:tiny").model
    ids, keep = _batch()
    with torch.no_grad():
        full = model(input_ids=ids, use_cache=False).logits
    if force_positions:
        monkeypatch.setattr(compat, "takes_mask", lambda model: False)
    got = compat.kept_logits(model, ids, keep, use_cache=False)
    assert got.shape == (int(keep.sum()), full.shape[-1])
    assert torch.allclose(got, full[keep], atol=1e-5)
    got.float().logsumexp(-1).sum().backward()  # the kept logits carry gradients to the weights
    assert model.lm_head.weight.grad is not None


def test_takes_mask_looks_through_a_peft_wrapper():
    import transformers.modeling_utils as mu
    from solver.adapter import attach
    from solver.config import TTTConfig
    model = load_model("scratch:tiny").model
    expected = hasattr(mu, "slice_logits_to_keep")  # 5.23 slices with it; 5.17 has no such function
    assert compat.takes_mask(model) == expected
    assert compat.takes_mask(attach(model, TTTConfig(backend="peft", rank=2)).model) == expected
    assert compat.takes_mask(Old()) is False


class OldCheckpointing:
    """Only the 5.17 names: gradient_checkpointing_enable/_disable and is_gradient_checkpointing."""

    def __init__(self):
        self.on, self.kwargs = False, None

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
        self.on, self.kwargs = True, gradient_checkpointing_kwargs

    def gradient_checkpointing_disable(self):
        self.on = False

    @property
    def is_gradient_checkpointing(self):
        return self.on


def test_checkpointing_with_the_old_names():
    m = OldCheckpointing()
    compat.set_checkpointing(m, True)
    assert compat.is_checkpointing(m) and m.kwargs == {"use_reentrant": False}
    compat.set_checkpointing(m, False)
    assert not compat.is_checkpointing(m)


def test_checkpointing_on_the_installed_transformers():
    model = load_model("scratch:tiny").model
    assert not compat.is_checkpointing(model)
    compat.set_checkpointing(model, True)
    assert compat.is_checkpointing(model)
    compat.set_checkpointing(model, False)
    assert not compat.is_checkpointing(model)
