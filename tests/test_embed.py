"""Task embeddings, the neighbour index over a library, and neighbours as TTT data (solver.embed, ttt.train_task)."""
import numpy as np
import pytest
import torch  # noqa: F401  (imported once per session: the model embedding and the TTT test use it)

import solver.embed as E
from solver.codec import Codec
from solver.config import TTTConfig
from solver.data import mix, neighbour_examples
from solver.tasks import Task, is_heldout


def grid(*rows):
    return np.array(rows, dtype=np.uint8)


def identity_task(tid="ident"):
    """Output = input, on inputs with no symmetry and several colours: any transform applied to the input alone, or
    differently to the output, breaks the equality."""
    a = grid([1, 2, 0], [0, 3, 0])
    b = grid([4, 0, 0, 0], [0, 5, 1, 0], [0, 0, 0, 2])
    c = grid([7, 0], [6, 8], [0, 9])
    return Task(tid, [(a, a), (b, b), (c, c)], [a], [a])


@pytest.fixture(scope="module")
def tiny():
    from solver.model import load_model
    return load_model("scratch:tiny", seed=0)


@pytest.fixture(scope="module")
def train_library(arc1_train):
    return E.library("arc1:train")


def test_features_are_deterministic_and_tell_tasks_apart(arc1_train):
    tasks = list(arc1_train.values())[:20]
    a, b = E.embed_tasks(tasks), E.embed_tasks(tasks)
    assert a.dtype == np.float32 and a.shape[0] == 20 and np.array_equal(a, b)
    assert len({v.tobytes() for v in a}) == 20  # no two tasks share a vector
    with pytest.raises(ValueError, match="unknown task embedding"):
        E.embed_tasks(tasks, "colour")


def test_model_embeddings_are_deterministic_and_cached(tiny, arc1_train, tmp_path, monkeypatch):
    tasks = list(arc1_train.values())[:5]
    first = E.model_embeddings(tiny, tasks, tmp_path)
    files = list((tmp_path / "embeddings").glob("*.npy"))
    assert first.shape == (5, tiny.model.config.hidden_size) and len(files) == 1
    # embedding the tasks one by one (other batches, other padding) gives the same vectors
    alone = np.concatenate([E.model_embeddings(tiny, [t], tmp_path / "other") for t in tasks])
    assert np.allclose(first, alone, atol=1e-4)

    def no_model(*a, **k):
        raise AssertionError("the model ran although the embeddings are cached")
    monkeypatch.setattr(E, "_embed_batch", no_model)
    assert np.array_equal(E.model_embeddings(tiny, tasks, tmp_path), first)
    with pytest.raises(AssertionError, match="cached"):  # another task set is another cache entry
        E.model_embeddings(tiny, tasks[:4], tmp_path)


def test_index_returns_a_task_itself_first(train_library):
    tasks = list(train_library.values())[:60]
    index = E.Index.build([t.id for t in tasks], E.embed_tasks(tasks))
    vectors = E.embed_tasks(tasks)
    for t, v in zip(tasks, vectors):
        (first, sim), *rest = index.nearest(v, 3)
        assert first == t.id and sim == pytest.approx(1.0, abs=1e-5)
        assert all(s <= sim + 1e-6 for _, s in rest) and len(rest) == 2
    assert index.nearest(vectors[0], 1, exclude={tasks[0].id})[0][0] != tasks[0].id


def test_library_never_yields_heldout_tasks(arc1_train, train_library):
    held = [t for tid, t in arc1_train.items() if is_heldout(tid) and t.valid]
    assert held and not any(is_heldout(tid) for tid in train_library)
    assert "40853293" not in train_library  # its demos are an evaluation task's (070dd51e): dropped by content
    assert len(train_library) + len(held) + 1 == sum(t.valid for t in arc1_train.values())
    neighbours = E.Neighbours(train_library)
    for task in held[:10]:
        found = neighbours.find(task, 5)
        assert len(found) == 5 and not any(is_heldout(t.id) for t in found)
    # the same library with the held-out slice kept finds a held-out task as its own nearest neighbour
    everything = E.Neighbours({t.id: t for t in arc1_train.values() if t.valid})
    assert everything.index.nearest(E.features(held[0]), 1)[0][0] == held[0].id


def test_neighbour_examples_transform_inputs_and_outputs_alike():
    codec = Codec.compact()
    cfg = TTTConfig(num_transforms=16, max_examples=1000)
    task = identity_task()
    examples = neighbour_examples([task], codec, cfg, seed=3)
    assert len(examples) > 3 * 8  # leave-one-out sequences under many transforms
    originals = {g.tobytes() for a, _ in task.train for g in [a]}
    augmented = 0
    for enc in examples:
        q_in, q_out = query_pair(enc.ids, codec)
        assert q_in.shape == q_out.shape and np.array_equal(q_in, q_out)
        augmented += q_in.tobytes() not in originals
    assert augmented > len(examples) // 2


def query_pair(ids, codec):
    """The last input grid and the answer grid of a training sequence."""
    ids = list(ids)
    start = len(ids) - 1 - ids[::-1].index(codec.inp)
    mid = ids.index(codec.out, start)
    return (codec.decode_grid(ids[start + 1:mid]), codec.decode_grid(ids[mid + 1:]))


def test_mix_gives_neighbours_their_share_of_the_cap():
    own, other = list(range(40)), list(range(100, 130))
    a, b = mix(own, other, 0.25, 36)
    assert (len(a), len(b)) == (27, 9) and a == own[:27] and b == other[:9]
    a, b = mix(own[:10], other, 0.25, 36)   # few own sequences: the neighbours fill the cap
    assert len(a) == 10 and len(b) == 26
    assert mix(own, [], 0.5, 36) == (own[:36], [])
    with pytest.raises(ValueError, match="share"):
        mix(own, other, 1.0, 10)


@pytest.mark.parametrize("order", ["first", "mixed"])
def test_train_task_with_neighbours(tiny, order):
    from solver.adapter import attach
    from solver.data import build_examples
    from solver.ttt import train_task
    cfg = TTTConfig(rank=2, num_transforms=2, max_examples=8, batch_size=2, neighbour_share=0.5,
                    neighbour_order=order)
    adapter = attach(tiny.model, cfg, tiny.codec.token_ids)
    try:
        task = Task("t", [(grid([1, 2]), grid([2, 1])), (grid([3, 4]), grid([4, 3]))], [grid([5, 6])])
        own = build_examples(task, tiny.codec, cfg)
        res = train_task(adapter, task, tiny.codec, cfg, extra=neighbour_examples([identity_task()], tiny.codec, cfg))
        assert len(own) == 4 and res.examples == 8  # the neighbour filled the other half of the cap
        assert res.steps == 4  # first: 2 batches of neighbour sequences, then 2 of own; mixed: 4 together
    finally:
        tiny.model = adapter.model.unload()


def test_neighbours_never_include_the_task_itself_under_another_id(train_library):
    task = next(iter(train_library.values()))
    copy = Task("copy-of-it", list(reversed(task.train)), task.test_inputs, task.test_outputs)  # demos reordered
    library = dict(train_library) | {copy.id: copy}
    found = E.Neighbours(library).find(task, 5)
    assert len(found) == 5 and all(t.id not in (task.id, copy.id) for t in found)
