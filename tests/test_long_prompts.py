"""Prompts longer than the model's context lose context demos (largest first, never the query), as training's do,
and the task's note (which the report shows) says so."""
import time

import numpy as np
from test_generate import CODEC, FakeModel, answer_policy

from solver.config import Config
from solver.data import fit_prompt
from solver.model import Loaded
from solver.pipeline import predict
from solver.tasks import Task


def big_task() -> Task:
    rng = np.random.default_rng(0)
    demos = [(rng.integers(0, 3, (s, s)).astype(np.uint8), rng.integers(0, 3, (s, s)).astype(np.uint8))
             for s in (3, 9, 4)]
    return Task("long", demos, [np.ones((3, 3), np.uint8)], [np.zeros((3, 3), np.uint8)])


def test_fit_prompt_drops_the_largest_demo_first_and_never_the_query():
    task = big_task()
    full = CODEC.num_tokens(task.train, task.test_inputs[0])
    same, dropped = fit_prompt(task, 0, CODEC, full)
    assert same is task and dropped == 0
    fitted, dropped = fit_prompt(task, 0, CODEC, full - 1)
    assert dropped == 1 and [a.shape for a, _ in fitted.train] == [(3, 3), (4, 4)]  # the 9x9 demo went
    bare, dropped = fit_prompt(task, 0, CODEC, 5)
    assert dropped == 3 and bare.train == [] and bare.test_inputs == task.test_inputs


def test_predict_trims_a_prompt_past_the_context_and_says_so():
    task = big_task()
    seen = []
    policy = answer_policy({}, np.append(CODEC.grid_ids(np.zeros((3, 3), np.uint8)), CODEC.eos))

    def spy(history):
        seen.append(len(history))
        return policy(history)
    limit = CODEC.num_tokens(task.train, task.test_inputs[0]) - 10 + 3 * 4 + 1  # prompt + answer cap, minus 10
    cfg = Config().override(infer={"num_views": 2, "score_views": 0, "view_colors": False,
                                   "max_prompt_tokens": limit})
    [choice] = predict(Loaded(FakeModel(spy), CODEC, "fake"), task, cfg, time.monotonic() + 60)
    assert "prompt trimmed" in choice.note and "1 of 3 demos dropped" in choice.note
    assert max(seen) <= limit
    assert np.array_equal(choice.attempt_1, np.zeros((3, 3), np.uint8))
