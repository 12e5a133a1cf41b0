"""Device placement: TTT, decoding (greedy, DFS), scoring and the model embedding feed the model only tensors on its
device.

The CPU has one device, so a GPU is emulated: `FakeDevice` (a torch function mode) marks every tensor made on, or
moved to, the fake device (`FAKE`) as a `OnDevice` tensor (its data stays on the CPU), reports `.device` as `FAKE` for
those, and raises where a GPU would: an op mixing a device tensor with a CPU tensor that is not a 0-d scalar, a CPU
tensor indexed by a device tensor, a device tensor turned into numpy. `OnFakeDevice` wraps a model so that its
parameters report `FAKE` and every forward pass asserts that its tensor inputs (and its cache) are on it.
"""
import copy

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from solver import data, embed, generate, ttt
from solver.augment import IDENTITY, sample_transforms
from solver.adapter import attach
from solver.codec import Codec
from solver.config import InferConfig, TTTConfig
from solver.model import load_model
from solver.tasks import Task

FAKE = torch.device("meta")  # the name the fake device reports; no tensor is ever really made there
CPU = torch.device("cpu")
DEVICE_GET = torch.Tensor.device.__get__


class OnDevice(torch.Tensor):
    """A CPU tensor standing for one on the fake device (it behaves as a plain tensor; the mode gives it meaning)."""
    __torch_function__ = torch._C._disabled_torch_function_impl

    def __deepcopy__(self, memo):
        if id(self) not in memo:
            memo[id(self)] = on_device(plain(self).detach().clone())
        return memo[id(self)]


def on_device(x):
    return x.as_subclass(OnDevice) if isinstance(x, torch.Tensor) and not isinstance(x, OnDevice) else x


def plain(x):
    return x.as_subclass(torch.Tensor) if isinstance(x, OnDevice) else x


def _names_fake(d) -> bool:
    return d is not None and not isinstance(d, (torch.dtype, torch.Tensor, bool)) and torch.device(d) == FAKE


def _names_cpu(d) -> bool:
    return isinstance(d, (str, torch.device)) and torch.device(d).type == "cpu"


class FakeDevice(TorchFunctionMode):
    """Emulates a second device on the CPU (see the module docstring); `inside` > 0 while a wrapped model runs."""

    def __init__(self):
        super().__init__()
        self.inside = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if self.inside:
            return func(*args, **kwargs)
        if func == DEVICE_GET:
            return FAKE if isinstance(args[0], OnDevice) else func(*args)
        if _names_fake(kwargs.get("device")):  # a factory (or .to / new_*) asked for the device
            kwargs["device"] = CPU
            return pytree.tree_map(on_device, func(*args, **kwargs))
        if func is torch.Tensor.to:
            return self._to(args, kwargs)
        if func is torch.Tensor.cpu:
            return plain(func(*args, **kwargs))
        if func is torch.Tensor.numpy and isinstance(args[0], OnDevice):
            raise TypeError("can't convert a device tensor to numpy: call .cpu() first (as on a GPU)")
        tensors = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if func in (torch.Tensor.__setitem__, torch.Tensor.copy_):  # copies across devices are allowed
            return func(*args, **kwargs)
        if func is torch.Tensor.__getitem__ and not isinstance(args[0], OnDevice) and \
                any(isinstance(t, OnDevice) for t in tensors[1:]):
            raise RuntimeError("a CPU tensor indexed by a device tensor (as on a GPU: indices on another device)")
        on = any(isinstance(t, OnDevice) for t in tensors)
        if func is not torch.Tensor.__getitem__ and on and \
                any(not isinstance(t, OnDevice) and t.dim() > 0 for t in tensors):
            raise RuntimeError(f"{getattr(func, '__name__', func)}: a CPU tensor meets a device tensor "
                               f"(on a GPU: 'Expected all tensors to be on the same device')")
        out = func(*args, **kwargs)
        return pytree.tree_map(on_device, out) if on else out

    @staticmethod
    def _to(args, kwargs):
        """Tensor.to: the device named (or another tensor's) decides whether the result is on the fake device."""
        src, rest, dev = args[0], [], kwargs.pop("device", None)
        for a in args[1:]:
            if isinstance(a, torch.Tensor):  # .to(other): its device and dtype
                dev = FAKE if isinstance(a, OnDevice) else CPU
                rest.append(a.dtype)
            elif isinstance(a, (str, torch.device)):
                dev = a
            else:
                rest.append(a)
        out = torch.Tensor.to(src, *rest, **kwargs)
        if dev is None:
            return on_device(out) if isinstance(src, OnDevice) else plain(out)
        if _names_fake(dev):
            return on_device(out)
        if _names_cpu(dev):
            return plain(out)
        raise RuntimeError(f"no device {dev} in this emulation")


def _cache_tensors(cache):
    for layer in getattr(cache, "layers", ()):
        if getattr(layer, "is_initialized", False):
            yield layer, "keys"
            yield layer, "values"


class OnFakeDevice:
    """A model on the fake device: its parameters report FAKE, its forward asserts every tensor input (and every
    tensor of the cache passed in) is on the device, and what it returns is on the device."""

    def __init__(self, model, mode: FakeDevice):
        self.__dict__.update(inner=model, mode=mode, calls=0)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def parameters(self, *args, **kwargs):
        for p in self.inner.parameters(*args, **kwargs):
            yield on_device(p.detach())  # for `.device` only: the optimiser takes named_parameters

    def __call__(self, *args, **kwargs):
        assert not args, "the package calls models with keyword arguments"
        for name, value in kwargs.items():
            if isinstance(value, torch.Tensor):
                assert isinstance(value, OnDevice), f"model input '{name}' was made on the CPU, not on the device"
        for layer, attr in _cache_tensors(kwargs.get("past_key_values")):
            assert isinstance(getattr(layer, attr), OnDevice), "the cache passed to the model is not on the device"
        self.calls += 1
        self.mode.inside += 1
        try:
            out = self.inner(**kwargs)
        finally:
            self.mode.inside -= 1
        for name in ("logits", "loss"):
            if getattr(out, name, None) is not None:
                setattr(out, name, on_device(getattr(out, name)))
        if getattr(out, "hidden_states", None) is not None:
            out.hidden_states = tuple(on_device(h) for h in out.hidden_states)
        for layer, attr in _cache_tensors(getattr(out, "past_key_values", None)):
            setattr(layer, attr, on_device(getattr(layer, attr)))
        return out


# the emulation itself ---------------------------------------------------------------------------------------------
def test_the_fake_device_catches_what_a_gpu_would():
    with FakeDevice():
        a = torch.zeros(3, device=FAKE)
        assert a.device == FAKE and torch.ones(2).to(FAKE).device == FAKE
        assert (a + 1).device == FAKE and (a + torch.tensor(1.0)).device == FAKE  # a 0-d CPU tensor is a scalar
        with pytest.raises(RuntimeError, match="same device"):
            a + torch.ones(3)
        with pytest.raises(RuntimeError, match="indexed by a device tensor"):
            torch.arange(5)[torch.zeros(2, dtype=torch.long, device=FAKE)]
        with pytest.raises(TypeError, match="numpy"):
            a.numpy()
        assert a.cpu().device == CPU and a.to("cpu").device == CPU and a.cpu().numpy().tolist() == [0, 0, 0]
        assert copy.deepcopy(a).device == FAKE


def test_a_model_fed_a_cpu_tensor_fails():
    loaded = load_model("scratch:tiny")
    with FakeDevice() as mode:
        model = OnFakeDevice(loaded.model, mode)
        assert next(model.parameters()).device == FAKE
        model(input_ids=torch.arange(4)[None].to(FAKE))
        with pytest.raises(AssertionError, match="input_ids"):
            model(input_ids=torch.arange(4)[None])


# the package's paths ----------------------------------------------------------------------------------------------
def _task(seed=0) -> Task:
    rng = np.random.default_rng(seed)
    pairs = [(g, (g + 1) % 3) for g in (rng.integers(0, 3, size=(2, 2)).astype(np.uint8) for _ in range(3))]
    return Task("dev", pairs[:2], [pairs[2][0]], [pairs[2][1]])


@pytest.fixture
def on_fake():
    """(loaded, adapter, mode): scratch:tiny with a PEFT adapter whose model is on the fake device."""
    loaded = load_model("scratch:tiny")
    adapter = attach(loaded.model, TTTConfig(backend="peft", rank=2, num_transforms=2, max_examples=4,
                                             batch_size=2, max_tokens=512))
    with FakeDevice() as mode:
        adapter.model = OnFakeDevice(adapter.model, mode)
        yield loaded, adapter, mode


def test_ttt_feeds_the_model_on_its_device(on_fake):
    loaded, adapter, _ = on_fake
    assert adapter.device == FAKE
    cfg = TTTConfig(backend="peft", rank=2, num_transforms=2, max_examples=4, batch_size=2, max_tokens=512)
    res = ttt.train_task(adapter, _task(), loaded.codec, cfg)
    assert res.steps >= 1 and np.isfinite(res.loss) and adapter.model.calls == res.steps


def test_decoding_and_scoring_feed_the_model_on_its_device(on_fake):
    loaded, adapter, _ = on_fake
    model, codec, task = adapter.model, loaded.codec, _task()
    views = [generate.make_view(task, 0, codec, t) for t in sample_transforms(task, 2, seed=0)]
    far = float("inf")
    greedy = generate.decode_batch(model, codec, views, far)
    calls = model.calls
    dfs = generate.dfs_view(model, codec, views[0], far, threshold=0.02, max_candidates=2)
    assert model.calls > calls
    grids = [d.grid for d in greedy + dfs] or [task.test_outputs[0]]
    scores = generate.score_view(model, codec, views[1], grids, far)
    assert scores is not None and scores.shape == (len(grids),) and np.all(scores <= 0)


@pytest.mark.parametrize("strategy", ["greedy", "dfs"])
def test_shared_views_feed_the_model_on_its_device(on_fake, strategy):
    """The pipeline's path: one prefill per view, decoding and scoring from the cached prompts."""
    loaded, adapter, _ = on_fake
    task = _task()
    views = [generate.make_view(task, 0, loaded.codec, t) for t in sample_transforms(task, 3, seed=0)]
    shared = generate.SharedViews(adapter.model, loaded.codec, views, batch_size=2)
    icfg = InferConfig(num_views=3, strategy=strategy, batch_size=2, dfs_threshold=0.05, dfs_max_candidates=2)
    found = shared.decode(icfg, float("inf"))
    grids = [d.grid for d in found] or [task.test_outputs[0]]
    assert shared.score(grids, 3, float("inf")).shape == (3, len(grids))


def test_model_embedding_feeds_the_model_on_its_device(on_fake, tmp_path):
    loaded, adapter, _ = on_fake
    vectors = embed.model_embeddings(loaded.__class__(adapter.model, loaded.codec, loaded.spec), [_task(0), _task(1)],
                                     cache_dir=tmp_path, adapter=adapter)
    assert vectors.shape[0] == 2 and np.isfinite(vectors).all()


def test_the_checks_catch_a_batch_left_on_the_cpu(on_fake, monkeypatch):
    """The tests above can fail: TTT batches collated without the device, or decoding told the model is on the CPU."""
    loaded, adapter, _ = on_fake
    cfg = TTTConfig(backend="peft", rank=2, num_transforms=2, max_examples=4, batch_size=2, max_tokens=512)
    monkeypatch.setattr(ttt, "collate", lambda examples, pad, device=None: data.collate(examples, pad))
    with pytest.raises(AssertionError, match="made on the CPU"):
        ttt.train_task(adapter, _task(), loaded.codec, cfg)
    monkeypatch.setattr(generate, "_device", lambda model: CPU)
    view = generate.make_view(_task(), 0, loaded.codec, IDENTITY)
    for run in (lambda: generate.decode_batch(adapter.model, loaded.codec, [view], float("inf")),
                lambda: generate.score_view(adapter.model, loaded.codec, view, [_task().test_outputs[0]],
                                            float("inf"))):
        with pytest.raises(AssertionError, match="made on the CPU"):
            run()
