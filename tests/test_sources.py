"""Pretraining data sources (solver.sources, data.load_training, data.mixture_stream) and the neighbour library:
protected splits never leak in by id or content, generated examples become tasks, weights set the mixture, large
sources are read as drawn, and the stream resumes where it stopped."""
import json
import logging
import re
from dataclasses import replace

import numpy as np
import pytest

from solver import data as D
from solver import sources as S
from solver.codec import Codec
from solver.config import PretrainConfig
from solver.tasks import HELDOUT, Task, content_key, is_heldout, load_tasks

CODEC = Codec.compact()
NEW = {"train": [{"input": [[1, 2, 3]], "output": [[3, 2, 1]]}, {"input": [[4, 5]], "output": [[5, 4]]}],
       "test": [{"input": [[6, 7]], "output": [[7, 6]]}]}


def examples(n, seed=0, side=3):
    """n re-ARC style {input, output} examples of one rule (output = input flipped left-right)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        g = rng.integers(0, 10, (side, side))
        out.append({"input": g.tolist(), "output": g[:, ::-1].tolist()})
    return out


@pytest.fixture(scope="module")
def arc2_train():
    return load_tasks("arc2:train")


# protected splits ---------------------------------------------------------------------------------------------------
def test_an_evaluation_task_under_a_new_id_is_dropped_by_content(tmp_path, arc1_eval, caplog):
    raw = arc1_eval["00576224"].to_json()
    raw["train"] = raw["train"][::-1]
    path = tmp_path / "mine_challenges.json"
    path.write_text(json.dumps({"zz000001": raw, "zz000002": NEW}))
    with caplog.at_level(logging.INFO, logger="solver.tasks"):
        kept = D.load_training([str(path)])
    assert list(kept) == ["zz000002"]
    assert re.search(r"dropped as protected: arc1:eval 1\b", caplog.text)
    assert sorted(D.load_training([str(path)], allow_eval=True)) == ["zz000001", "zz000002"]


def test_arc2_training_loses_every_arc1_evaluation_copy(arc2_train, arc1_eval, arc1_train, caplog):
    with caplog.at_level(logging.INFO, logger="solver.tasks"):
        kept = D.load_training(["arc2:train"])
    logged = int(re.search(r"data arc2:train: \d+ tasks, \d+ kept, dropped as protected: arc1:eval (\d+)",
                           caplog.text).group(1))
    assert logged >= 376
    eval_keys = {content_key(t) for t in arc1_eval.values()}
    assert not set(kept) & set(arc1_eval) and not {content_key(t) for t in kept.values()} & eval_keys
    held = {tid for tid in arc1_train if is_heldout(tid)}
    assert len(kept) <= len(arc2_train) - logged and not set(kept) & held


def test_the_neighbour_library_never_returns_the_content_being_solved(tmp_path, arc1_eval, arc1_train):
    import solver.embed as E
    solved = arc1_eval["00576224"]
    held = arc1_train[next(t for t in sorted(arc1_train) if is_heldout(t))]
    d = tmp_path / "lib"
    d.mkdir()
    (d / "copy0001.json").write_text(json.dumps(Task("x", solved.train[::-1], solved.test_inputs,
                                                     solved.test_outputs).to_json()))
    (d / "copy0002.json").write_text(json.dumps(held.to_json()))
    for tid in sorted(arc1_train)[:6]:
        (d / f"{tid}.json").write_text(json.dumps(arc1_train[tid].to_json()))
    lib = E.library(str(d))
    assert "copy0001" not in lib and "copy0002" not in lib and len(lib) >= 5
    neighbours = E.Neighbours(lib)
    for task in (solved, held):
        found = neighbours.find(task, k=len(lib))
        assert len(found) == len(lib) and content_key(task) not in {content_key(t) for t in found}


# SOURCE forms -------------------------------------------------------------------------------------------------------
def test_source_weights_and_counts_parse(tmp_path):
    assert S.parse_source("arc1:train:2") == S.SourceSpec("arc1:train", 2.0)
    assert S.parse_source("arc1:train") == S.SourceSpec("arc1:train", None)
    assert S.parse_source("gen/:0.5") == S.SourceSpec("gen/", 0.5)
    odd = tmp_path / "odd:3"
    odd.mkdir()
    assert S.parse_source(str(odd)) == S.SourceSpec(str(odd), None)  # an existing path is never split
    with pytest.raises(ValueError, match="not a positive number"):
        S.parse_source("arc1:train:0")
    assert S.parse_count("50M") == 50_000_000 and S.parse_count("2k") == 2000 and S.parse_count("") == 0
    with pytest.raises(ValueError, match="not a count"):
        S.parse_count("lots")


def test_shares_concatenate_without_weights_and_split_by_them():
    assert S.shares([343, 571], [None, None]) == [343, 571]
    assert S.shares([343, 5000], [1.0, 3.0]) == [1336, 4007]       # the sizes' sum, a quarter and three quarters
    assert S.shares([100, 100, 100], [1.0, None, 2.0], total=10) == [3, 2, 5]
    assert sum(S.shares([7, 9], [1.0, 1.0], total=11)) == 11


# generated examples -------------------------------------------------------------------------------------------------
def gen_dir(tmp_path, arc1_train):
    d = tmp_path / "gen"
    d.mkdir()
    (d / "aaaa0001.json").write_text(json.dumps(examples(40, 1)))
    (d / "aaaa0002.json").write_text(json.dumps(examples(9, 2)))
    held = next(t for t in sorted(arc1_train) if is_heldout(t))
    (d / f"{held}.json").write_text(json.dumps(examples(12, 3)))  # re-ARC examples of a held-out task
    (d / "single01.json").write_text(json.dumps(NEW))            # a task file among the lists
    return d


def test_generated_examples_become_tasks_of_k_demos_and_a_test(tmp_path, arc1_train):
    pc = PretrainConfig(data=[str(gen_dir(tmp_path, arc1_train))], generated_demos=3, generated_per_file=4)
    src = S.open_source(pc.data[0], pc)
    assert isinstance(src, S.FileSource) and src.dropped[HELDOUT] == 1 and len(src.files) == 3
    assert src.size == 4 + 4 + 1
    tasks = src.draw(0, src.size, seed=0)
    gen = [t for t in tasks if t.id.startswith("aaaa0001")]
    assert len(gen) == 4 and all(len(t.train) == 3 and len(t.test_inputs) == 1 for t in gen)
    for t in gen:
        for a, b in t.train + [(t.test_inputs[0], t.test_outputs[0])]:
            assert np.array_equal(b, a[:, ::-1])
    assert len({content_key(t) for t in gen}) == 4                       # distinct groups of the 40 examples
    assert sum(t.id.startswith("aaaa0002") for t in tasks) == 4           # 9 examples: 2 groups, drawn in turn
    assert any(t.id == "single01" for t in tasks)
    again = src.draw(0, src.size, seed=0)
    assert [content_key(t) for t in again] == [content_key(t) for t in tasks]   # a function of (seed, epoch)
    later = src.draw(1, src.size, seed=0)                                 # the next pass regroups the examples
    assert {content_key(t) for t in later if t.id.startswith("aaaa0001")} != {content_key(t) for t in gen}


def test_a_large_source_is_read_as_drawn_within_its_cache(tmp_path, arc1_train, arc1_eval):
    d = tmp_path / "big"
    d.mkdir()
    for i, task in enumerate(small(arc1_train, 12)):
        (d / f"t{i:07d}.json").write_text(json.dumps(task.to_json()))
    (d / "t9999999.json").write_text(json.dumps(arc1_eval["00576224"].to_json()))  # evaluation content, new id
    pc = PretrainConfig(data=[str(d)], stream_mb=0.0, cache_mb=0.001)
    src = S.open_source(str(d), pc)
    assert isinstance(src, S.FileSource) and not src.cache
    tasks = src.draw(0, src.size, seed=0)
    assert len(tasks) == src.size - 1 and "t9999999" not in {t.id for t in tasks} and src.content_dropped == 1
    assert len(src.cache) < len(src.files) and (src.cache_bytes <= src.cache_limit or len(src.cache) == 1)


def test_weights_set_each_sources_share_of_an_epoch(tmp_path, arc1_train):
    a = [Task(f"a{i:07d}", [(np.full((1, 1), i % 10, np.uint8),) * 2] * 2, [np.zeros((1, 1), np.uint8)])
         for i in range(10)]
    b = [Task(f"b{i:07d}", [(np.full((2, 1), i % 10, np.uint8),) * 2] * 2, [np.zeros((1, 1), np.uint8)])
         for i in range(40)]
    mix = S.Mixture([S.TaskSetSource("a", a, 1.0), S.TaskSetSource("b", b, 3.0)], seed=0, epoch_tasks=20)
    assert mix.draws == [5, 15]
    seen = [t.id[0] for e in range(4) for t in mix.epoch(e)]
    assert seen.count("a") == 20 and seen.count("b") == 60
    first_two = [t.id for e in range(2) for t in mix.epoch(e) if t.id[0] == "a"]
    assert sorted(first_two) == sorted(t.id for t in a)                   # a source cycles through all its tasks


# the stream ---------------------------------------------------------------------------------------------------------
def small(arc1_train, n):
    kept = [t for tid, t in sorted(arc1_train.items()) if not is_heldout(tid) and t.valid]
    kept.sort(key=lambda t: (D.task_tokens(t, CODEC), t.id))
    return kept[:n]


def ids(stream):
    return [(e, [x.ids.tolist() for x in b]) for e, b in stream]


def test_one_source_in_one_window_is_the_plain_stream(arc1_train):
    tasks = small(arc1_train, 4)
    pc = PretrainConfig(batch_tokens=600, epochs=2)
    plain = ids(D.batch_stream(tasks, CODEC, pc))
    assert ids(D.mixture_stream(S.Mixture.of_tasks(tasks), CODEC, pc)) == plain


def test_a_windowed_weighted_stream_resumes_in_the_same_order(arc1_train, tmp_path):
    tasks = small(arc1_train, 6)
    d = gen_dir(tmp_path, arc1_train)
    pc = PretrainConfig(data=[str(d) + ":2", "x"], batch_tokens=500, epochs=2, window_tasks=3, generated_per_file=2)
    mix = S.Mixture([S.open_source(pc.data[0], pc), S.TaskSetSource("x", tasks, 1.0)], seed=0)
    whole = ids(D.mixture_stream(mix, CODEC, pc))
    assert len({e for e, _ in whole}) == 2
    k = len(whole) // 2 + 1
    assert ids(D.mixture_stream(mix, CODEC, pc, start=k)) == whole[k:]
    one_epoch = replace(pc, epochs=1)
    windows = list(D.window_batches(mix.epoch(0), CODEC, one_epoch, 0))
    assert len(windows) == -(-len(mix.epoch(0)) // 3)                    # ceil(tasks / window_tasks)
