"""Protected splits: evaluation tasks and the held-out slice are recognised by id and by content."""
import json

import numpy as np
import pytest

from solver.tasks import (EVAL_SPLITS, HELDOUT, Task, content_key, drop_protected, is_heldout, load_tasks,
                          splits_of)

NEW = {"train": [{"input": [[1, 2, 3]], "output": [[3, 2, 1]]}, {"input": [[4, 5]], "output": [[5, 4]]}],
       "test": [{"input": [[6, 7]]}]}
ARC1_TRAIN_COPY_OF_EVAL = "40853293"  # an ARC-AGI-1 training task whose demos are those of evaluation task 070dd51e


@pytest.fixture(scope="session")
def arc2_train():
    return load_tasks("arc2:train")


def test_content_key_is_order_free_and_sees_one_cell(arc1_train):
    task = arc1_train["007bbfb7"]
    reordered = Task("other", task.train[::-1], task.test_inputs)
    assert len(task.train) > 2 and content_key(reordered) == content_key(task)
    changed = [(a.copy(), b.copy()) for a, b in task.train]
    changed[1][1][0, 0] = (changed[1][1][0, 0] + 1) % 10
    assert content_key(Task(task.id, changed, task.test_inputs)) != content_key(task)
    flat = [(a.reshape(1, -1), b) for a, b in task.train]  # same cells, other shape
    assert content_key(Task(task.id, flat, task.test_inputs)) != content_key(task)
    with pytest.raises(ValueError, match="t9 has no demonstration pairs"):
        content_key(Task("t9", [], task.test_inputs))


def test_evaluation_task_under_a_new_id_is_dropped_by_content(tmp_path, arc1_eval, caplog):
    raw = arc1_eval["00576224"].to_json()
    raw["train"] = raw["train"][::-1]
    path = tmp_path / "mine_challenges.json"
    path.write_text(json.dumps({"zz000001": raw, "zz000002": NEW}))
    tasks = load_tasks(path)
    assert splits_of(tasks) == ["arc1:eval", "kaggle2024:eval"]
    with caplog.at_level("INFO", logger="solver.tasks"):
        kept, counts = drop_protected(tasks, "mine")
    assert list(kept) == ["zz000002"] and counts["arc1:eval"] == 1 and sum(counts.values()) == 1
    assert "data mine: 2 tasks, 1 kept" in caplog.text and "arc1:eval 1" in caplog.text
    assert list(drop_protected(tasks, "mine", allow_eval=True)[0]) == ["zz000001", "zz000002"]
    assert splits_of(kept) == []


def test_arc2_training_loses_its_arc1_evaluation_overlap(arc2_train, arc1_eval):
    kept, counts = drop_protected(arc2_train, "arc2:train")
    assert counts["arc1:eval"] >= 376
    assert not set(kept) & set(arc1_eval)
    assert {"arc1:eval", HELDOUT} <= set(splits_of(arc2_train)) and splits_of(kept) == []
    assert set(counts) == set(EVAL_SPLITS) | {HELDOUT}
    assert len(kept) + sum(counts.values()) == len(arc2_train)


def test_heldout_slice_of_arc1_training(arc1_train):
    held = {tid for tid in arc1_train if is_heldout(tid)}
    assert len(held) == 57
    assert all(is_heldout(tid + "_variant3") for tid in held)
    kept, counts = drop_protected(arc1_train, "arc1:train", allow_eval=True)
    assert counts == {HELDOUT: 57} and set(arc1_train) - set(kept) == held
    kept, counts = drop_protected(arc1_train, "arc1:train")
    assert set(arc1_train) - set(kept) == held | {ARC1_TRAIN_COPY_OF_EVAL}
    assert counts[HELDOUT] == 57 and counts["arc1:eval"] == 1


def test_heldout_task_renamed_with_demos_reordered_is_dropped(arc1_train):
    tid = next(t for t in arc1_train if is_heldout(t))
    task = arc1_train[tid]
    copy = Task("renamed1", task.train[::-1], task.test_inputs, task.test_outputs)
    other = Task("renamed2", [(np.zeros((2, 2), np.uint8), np.ones((2, 2), np.uint8))], [np.zeros((1, 1), np.uint8)])
    kept, counts = drop_protected({"renamed1": copy, "renamed2": other}, "custom", allow_eval=True)
    assert list(kept) == ["renamed2"] and counts == {HELDOUT: 1}


def test_fresh2_is_arc2_training_new_to_arc2():
    from solver.tasks import load_tasks
    fresh = load_tasks("fresh2")
    arc1 = {tid[:8] for spec in ("arc1:train", "arc1:eval") for tid in load_tasks(spec)}
    assert len(fresh) == 233 and sum(len(t.test_outputs) for t in fresh.values()) == 274
    assert not {tid[:8] for tid in fresh} & arc1 and set(fresh) <= set(load_tasks("arc2:train"))
