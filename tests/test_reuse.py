"""Adapter reuse: the rule, the store (exact weights back), and the run's report naming a reused task's source."""
import csv
import time

import numpy as np
import pytest
import torch

from solver.reuse import FRESH, REUSE, WARM, AdapterStore, Decision, Reuse, decide
from solver.tasks import Task


def test_rule_thresholds():
    assert decide(None, 0.9, 0.99) == Decision(FRESH)
    assert decide(("a", 0.5), 0.9, 0.99).action == FRESH
    assert decide(("a", 0.95), 0.9, 0.99) == Decision(WARM, "a", 0.95)
    assert decide(("a", 0.99), 0.9, 0.99) == Decision(REUSE, "a", 0.99)
    assert Decision(REUSE, "a", 0.99999).describe() == "reuse:a@1.0000" and Decision(FRESH).describe() == ""
    with pytest.raises(ValueError, match="threshold"):
        Reuse(AdapterStore.__new__(AdapterStore), lambda t: np.ones(3), 0.99, 0.9)


@pytest.fixture(scope="module")
def adapter():
    from solver.adapter import attach
    from solver.config import TTTConfig
    from solver.model import load_model
    loaded = load_model("scratch:tiny")
    return attach(loaded.model, TTTConfig(rank=2, train_embeddings=True), loaded.codec.token_ids)


def test_store_loads_exactly_the_stored_weights(adapter, tmp_path):
    store = AdapterStore(tmp_path)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in adapter.trainable().values():
            p.add_(torch.randn_like(p))
    trained = adapter.snapshot()
    store.put("task/a", np.array([1.0, 0.0, 0.0]), trained)
    store.put("b", np.array([0.0, 1.0, 0.0]), adapter.initial)
    adapter.reset()
    assert not all(torch.equal(adapter.trainable()[n], t) for n, t in trained.items())
    assert store.nearest(np.array([0.9, 0.1, 0.0])) == ("task/a", pytest.approx(0.9 / np.hypot(0.9, 0.1)))
    assert store.nearest(np.array([0.9, 0.1, 0.0]), exclude={"task/a"})[0] == "b"
    adapter.restore(AdapterStore(tmp_path).load("task/a"))  # a second store on the folder (another worker)
    live = adapter.trainable()
    assert set(live) == set(trained) and all(torch.equal(live[n], t) for n, t in trained.items())
    adapter.reset()
    with pytest.raises(FileNotFoundError, match="no adapter for task c"):
        store.load("c")


def twin_tasks():
    """Two tasks with the same demos (a near-duplicate pair) and an unrelated one."""
    a, b = np.array([[1, 2], [0, 3]], np.uint8), np.array([[3, 0], [2, 1]], np.uint8)
    c, d = np.array([[5, 0, 6]], np.uint8), np.array([[6, 0, 5]], np.uint8)
    pairs = [(a, b), (c, d)]
    other = Task("zz", [(np.full((3, 3), 4, np.uint8), np.full((1, 1), 4, np.uint8)),
                        (np.full((2, 2), 7, np.uint8), np.full((1, 1), 7, np.uint8))],
                 [np.full((2, 3), 2, np.uint8)], [np.full((1, 1), 2, np.uint8)])
    return {"aa": Task("aa", pairs, [a], [b]), "bb": Task("bb", pairs, [c], [d]), "zz": other}


def test_a_reused_tasks_report_line_names_its_source(tmp_path):
    from solver.config import resolve
    from solver.report import REPORT_CSV
    from solver.results import RESULTS, read_results
    from solver.run import run_tasks
    cfg = resolve("test", run={"budget": "60s"}).override(
        ttt={"num_transforms": 2, "max_examples": 4, "batch_size": 2, "rank": 2},
        infer={"num_views": 1, "score_views": 0},
        run={"order": "given", "reuse_adapters": True, "train_tokens_per_s": 100.0})  # TTT gets seconds
    tasks = twin_tasks()
    report = run_tasks(tasks, cfg, tmp_path / "sub.json", tmp_path / "work", start=time.monotonic(), progress=False)
    assert report["error"] == ""
    results = read_results(tmp_path / "work" / RESULTS)
    assert results["aa"].ttt_steps > 0 and results["aa"].adapter_from == ""
    assert results["bb"].ttt_steps == 0 and results["bb"].adapter_from == "reuse:aa@1.0000"
    assert results["zz"].ttt_steps > 0 and not results["zz"].adapter_from.startswith("reuse")
    with open(tmp_path / "work" / REPORT_CSV) as f:
        rows = {r["task_id"]: r for r in csv.DictReader(f)}
    assert rows["bb"]["adapter_from"] == "reuse:aa@1.0000" and rows["aa"]["adapter_from"] == ""
    kept = sorted(p.name for p in (tmp_path / "work" / "adapters").iterdir())
    assert kept == ["aa", "zz"]  # trained adapters are kept; a reused one is not stored again


def test_warm_start_begins_from_the_stored_adapter(adapter, tmp_path, monkeypatch):
    """Between the two thresholds, TTT starts from the source's weights, not from the initial state."""
    import solver.ttt
    from solver.codec import Codec
    from solver.config import get_preset
    from solver.pipeline import _train_or_reuse
    from solver.budget import Deadlines
    from solver.model import Loaded
    cfg = get_preset("test").override(ttt={"num_transforms": 1, "max_examples": 2, "rank": 2},
                                      run={"reuse_warm_threshold": 0.5, "reuse_threshold": 0.999})
    store = AdapterStore(tmp_path)
    source = {n: t + 1.0 for n, t in adapter.initial.items()}
    store.put("src", np.array([1.0, 0.0]), source)
    seen = {}

    def fake_train(adapter_, examples, cfg_, pad, deadline=None, seed=0, progress=False, steps=0):
        seen.update(adapter_.snapshot())
        return solver.ttt.TTTResult(steps=1, loss=0.5)
    monkeypatch.setattr(solver.ttt, "train", fake_train)
    reuse = Reuse(store, lambda t: np.array([0.8, 0.6]), 0.5, 0.999)
    task = twin_tasks()["aa"]
    now = time.monotonic()
    res, source_name = _train_or_reuse(adapter, (None, reuse), Loaded(adapter.model, Codec.compact(), "x"), task, cfg,
                                       Deadlines(now + 30, now + 60))
    assert source_name == "warm:src@0.8000" and res.steps == 1
    assert all(torch.equal(seen[n], source[n]) for n in source)
    assert "aa" in store.entries()  # the warm-started task's adapter is kept too
    adapter.reset()
