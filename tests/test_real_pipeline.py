"""The real model end to end: SmolLM2 (reduced vocabulary) trains a few TTT steps on a task, then predicts under
colour-permuted views with the default selection rule; every candidate is a grid mapped back to the task's frame."""
import time

import numpy as np
import pytest

from solver.config import get_preset
from solver.model import Loaded, load_model
from solver.pipeline import predict
from solver.tasks import Task


def swap_task() -> Task:
    rng = np.random.default_rng(5)
    pairs = []
    for _ in range(4):
        a = rng.choice([0, 1, 2], size=(3, 3)).astype(np.uint8)
        b = a.copy()
        b[a == 1], b[a == 2] = 2, 1
        pairs.append((a, b))
    return Task("swap", pairs[:3], [pairs[3][0]], [pairs[3][1]])


@pytest.mark.real  # the real SmolLM2 (converted once, then cached), 4 TTT steps, 4 views: about a minute on 2 cores
def test_smollm2_trains_then_predicts_under_colour_views_with_the_default_rule():
    from solver.adapter import attach
    from solver.ttt import train_task
    cfg = get_preset("cpu-demo").override(
        ttt={"backend": "peft", "rank": 8, "num_transforms": 2, "max_steps": 4, "batch_size": 1},
        infer={"num_views": 4, "score_views": 2, "view_colors": True, "view_dihedral": True})
    assert cfg.infer.rule == "combined"  # the default rule
    loaded = load_model("smollm2")
    task = swap_task()
    adapter = attach(loaded.model, cfg.ttt, loaded.codec.token_ids)
    res = train_task(adapter, task, loaded.codec, cfg.ttt)
    assert res.steps == 4 and np.isfinite(res.loss)
    adapter.eval_mode()
    stats = {}
    [choice] = predict(Loaded(adapter.model, loaded.codec, "smollm2"), task, cfg, time.monotonic() + 300, stats)
    assert choice.candidates and choice.rule == "combined"
    assert sum(len(c.views) for c in choice.candidates) == 4       # every view decoded a grid (the constraint ends it)
    assert all(len(c.scores) == 2 for c in choice.candidates)      # each scored under both scoring views
    assert all(np.isfinite(c.scores).all() for c in choice.candidates)
    colours = {int(x) for c in choice.candidates for x in np.unique(c.grid)}
    assert colours <= set(range(10)) and stats["tokens"] > 0
