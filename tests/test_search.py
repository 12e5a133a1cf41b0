"""The program search on constructed tasks: finds known compositions, ranks by plausibility, stops when told."""
import time

import numpy as np
import pytest

from solver import grids as G
from solver.search import (Program, SearchResult, answers, learn_colour_map, plausible, search_task, views)
from solver.tasks import Task, load_tasks

FAR = float("inf")


def rand_grid(rng, h, w, colours=(1, 2, 3)):
    """A grid with a random blob of colours inside a zero margin (so cropping matters)."""
    g = np.zeros((h, w), np.uint8)
    inner = rng.choice([0, *colours], size=(h - 2, w - 3))
    inner[0, 0], inner[-1, -1] = colours[0], colours[-1]
    g[1:-1, 2:-1] = inner
    return g


def make_task(fn, sizes, seed=0, tid="constructed") -> Task:
    rng = np.random.default_rng(seed)
    grids = [rand_grid(rng, h, w) for h, w in sizes]
    pairs = [(g, fn(g)) for g in grids]
    return Task(tid, pairs[:-1], [pairs[-1][0]], [pairs[-1][1]])


def first_answer(result: SearchResult) -> np.ndarray:
    return answers(result, 0)[0][0]


def test_finds_a_depth_2_composition():
    def fn(g):
        return G.rot90(G.crop_bbox(g))
    task = make_task(fn, [(6, 7), (5, 8), (7, 6), (6, 6)])
    result = search_task(task, FAR, depth=2)
    np.testing.assert_array_equal(first_answer(result), task.test_outputs[0])
    assert result.programs[0].depth == 2 and result.stats["stopped"] == "done"
    assert result.stats["evaluated"] > 0 and result.stats["nodes"] > 1 and result.stats["depth_reached"] == 2


def test_finds_a_depth_3_composition():
    names = ["rot90", "flip_h", "crop_bbox", "scale_up2", "tile2x1", "gravity_down", "transpose", "hollow"]
    prims = [p for p in G.library([0, 1, 2, 3], [0, 1, 2, 3]) if p.name in names]

    def fn(g):
        return G.scale_up(G.flip_h(G.crop_bbox(g)), k=2)
    task = make_task(fn, [(6, 7), (5, 8), (7, 6), (6, 7)], seed=1)
    assert search_task(task, FAR, depth=2, prims=prims).programs == [] or \
        not np.array_equal(first_answer(search_task(task, FAR, depth=2, prims=prims)), task.test_outputs[0])
    result = search_task(task, FAR, depth=3, prims=prims)
    np.testing.assert_array_equal(first_answer(result), task.test_outputs[0])
    assert result.programs[0].depth == 3


def test_learns_a_final_colour_map():
    def fn(g):
        return np.array([0, 5, 6, 7, 4, 5, 6, 7, 8, 9], np.uint8)[G.flip_v(g)]
    task = make_task(fn, [(5, 6), (6, 6), (5, 7)])
    result = search_task(task, FAR, depth=1)
    np.testing.assert_array_equal(first_answer(result), task.test_outputs[0])
    assert "colour_map{1:5,2:6,3:7}" in result.programs[0].text


def test_lays_a_program_on_the_input_as_a_final_step():
    names = ["keep{2}", "rays_down", "flip_h", "crop_bbox", "rot90"]
    prims = [p for p in G.library([0, 1, 2, 3], [0, 1, 2, 3]) if p.name in names]

    def fn(g):
        painted = G.rays(G.keep(g, c=2), d="down")
        return np.where(painted != 0, painted, g).astype(np.uint8)
    task = make_task(fn, [(6, 7), (5, 8), (7, 6), (6, 7)], seed=2)
    result = search_task(task, FAR, depth=2, prims=prims)
    np.testing.assert_array_equal(first_answer(result), task.test_outputs[0])
    assert result.programs[0].text == "keep{2} | rays_down | over_input" and result.programs[0].size == 3


def test_lays_the_input_on_a_program_as_a_final_step():
    names = ["recolour{5}", "flip_h", "crop_bbox", "rot90", "keep{2}"]
    prims = [p for p in G.library([0, 1, 2, 3], [0, 1, 2, 3, 5]) if p.name in names]

    def fn(g):  # the mirror image drawn in 5 where the grid is empty, the grid itself kept
        mirrored = G.recolour(G.flip_h(g), c=5)
        return np.where(g != 0, g, mirrored).astype(np.uint8)
    task = make_task(fn, [(6, 7), (5, 8), (7, 6), (6, 7)], seed=3)
    result = search_task(task, FAR, depth=2, prims=prims)
    np.testing.assert_array_equal(first_answer(result), task.test_outputs[0])
    assert result.programs[0].text == "flip_h | recolour{5} | under_input"


def _marked(g):
    return sorted(g.shape) == [5, 6]  # only the constructed test input has this shape (in any view)


def _shape_task_prims():
    def tricky(g):  # fits every demo, but gives an oversized grid on the test input
        return np.zeros((31, 31), np.uint8) if _marked(g) else G.flip_h(g)

    def mirror_a(g):
        return G.flip_v(g)

    def mirror_b(g):
        return G.rot180(g)
    return [G.Prim("tricky", tricky, None), G.Prim("mirror_a", mirror_a, None), G.Prim("mirror_b", mirror_b, None)]


def test_a_program_with_an_implausible_test_output_is_not_ranked_first():
    rng = np.random.default_rng(3)
    demos = [rand_grid(rng, 4, 5) for _ in range(3)]
    test_in = rand_grid(rng, 5, 6)
    task = Task("shape", [(g, g[:, ::-1].copy()) for g in demos], [test_in], [test_in[:, ::-1].copy()])
    result = search_task(task, FAR, depth=2, prims=_shape_task_prims())
    texts = [p.text for p in result.programs]
    assert "tricky" in texts  # it fits the demos, at depth 1 and size 1 (the best rank but for the shape check)...
    assert texts[0] != "tricky" and plausible(task, result.programs[0].outputs)  # ...yet a plausible one is first
    np.testing.assert_array_equal(first_answer(result), task.test_outputs[0])
    assert not plausible(task, result.programs[texts.index("tricky")].outputs)


def test_stops_at_its_deadline_with_what_it_found():
    task = make_task(lambda g: G.rot90(G.crop_bbox(g)), [(6, 7), (5, 8), (6, 6)])
    result = search_task(task, time.monotonic() - 1.0, depth=2)
    assert result.stats["stopped"] == "deadline" and result.stats["depth_reached"] == 0
    assert isinstance(result.programs, list)


def test_stops_under_its_memory_cap():
    task = make_task(lambda g: G.rot90(G.crop_bbox(g)), [(6, 7), (5, 8), (6, 6)])
    result = search_task(task, FAR, depth=3, max_memory_mb=0)
    assert result.stats["stopped"] == "memory"


def test_same_input_same_candidates():
    task = make_task(lambda g: G.flip_h(G.crop_bbox(g)), [(6, 7), (5, 8), (6, 6)], seed=5)

    lib = G.library([0, 1, 2, 3], [0, 1, 2, 3])  # a quarter of the library (and the two steps) keeps the test fast
    prims = [p for k, p in enumerate(lib) if k % 4 == 0 or p.name in ("flip_h", "crop_bbox")]

    def run():
        r = search_task(task, FAR, depth=2, prims=prims)
        return [(p.text, p.depth, p.size, tuple(g.tobytes() for g in p.outputs)) for p in r.programs]
    first = run()
    assert first and run() == first


def test_a_last_step_its_first_demo_grid_rejected_is_not_run_again_and_nothing_changes(monkeypatch):
    from solver import search as S
    task = load_tasks("arc1:train")["3bd67248"]
    remembering = search_task(task, FAR)
    assert remembering.stats["known_failures"] > 0
    try_final = S._Search._try_final
    monkeypatch.setattr(S._Search, "_try_final", lambda self, *a: try_final(self, *a) and False)  # nothing recalled
    running = search_task(task, FAR)
    assert running.stats["known_failures"] == 0
    assert [p.text for p in remembering.programs] == [p.text for p in running.programs]
    assert all(np.array_equal(a, b) for p, q in zip(remembering.programs, running.programs)
               for a, b in zip(p.outputs, q.outputs))


def test_an_invalid_task_gives_an_empty_result():
    bad = Task("bad", [], [np.zeros((2, 2), np.uint8)], problem="no demos")
    result = search_task(bad, FAR)
    assert result.programs == [] and result.stats["evaluated"] == 0


def test_views_map_test_grids_back_to_the_task_frame():
    rng = np.random.default_rng(7)
    demos = [(rand_grid(rng, 4, 6, (2, 4, 4)), rand_grid(rng, 4, 5)) for _ in range(2)]
    task = Task("v", demos, [rand_grid(rng, 5, 4, (6, 6, 1))])
    vs = views(task)
    assert [v.name for v in vs] == ["", "transposed", "colours"]
    for v in vs:
        np.testing.assert_array_equal(v.back(0, v.inputs[len(task.train)]), task.test_inputs[0])


def test_learn_colour_map():
    a, b = np.array([[1, 2], [2, 0]], np.uint8), np.array([[3, 4], [4, 0]], np.uint8)
    table = learn_colour_map([a], [b])
    assert table is not None and list(table[:5]) == [0, 3, 4, 3, 4]
    assert learn_colour_map([a], [np.array([[3, 4], [5, 0]], np.uint8)]) is None  # 2 would need two images
    assert learn_colour_map([a], [np.zeros((1, 2), np.uint8)]) is None  # shapes differ


def test_answers_are_distinct_and_best_first():
    g1, g2 = np.ones((1, 1), np.uint8), np.zeros((1, 1), np.uint8)
    progs = [Program("a", 1, 1, (g1,)), Program("b", 1, 1, (None,)), Program("c", 2, 2, (g1,)),
             Program("d", 2, 2, (g2,))]
    got = answers(SearchResult(progs, {}), 0)
    assert [p.text for _, p in got] == ["a", "d"]


@pytest.mark.parametrize("outputs, ok", [((np.ones((2, 3), np.uint8),), True), ((None,), False),
                                         ((np.ones((2, 2), np.uint8),), False),
                                         ((np.full((2, 3), 7, np.uint8),), False)])  # a colour no grid shows
def test_plausible_wants_the_shape_the_demos_imply(outputs, ok):
    same = np.ones((2, 3), np.uint8)
    task = Task("p", [(same, same), (same, same)], [same])
    assert plausible(task, outputs) == ok


def _write_task_dir(tmp_path, tasks):
    import json
    for task in tasks:
        raw = task.to_json()
        (tmp_path / f"{task.id}.json").write_text(json.dumps(raw))
    return str(tmp_path)


def test_search_command_writes_a_scored_submission_and_survives_a_raising_task(tmp_path, monkeypatch, capsys):
    from solver import search_alone
    from solver.submission import read_submission, validate_file
    from solver.tasks import load_tasks
    good = make_task(G.flip_v, [(5, 6), (6, 6), (5, 7)], tid="good")
    bad = make_task(G.flip_h, [(5, 6), (6, 6), (5, 7)], tid="boom")
    (tmp_path / "tasks").mkdir()
    spec = _write_task_dir(tmp_path / "tasks", [good, bad])
    real = search_alone.search_task

    def flaky(task, deadline, depth=2, max_memory_mb=2048):
        if task.id == "boom":
            raise RuntimeError("injected")
        return real(task, deadline, 1, max_memory_mb)
    monkeypatch.setattr(search_alone, "search_task", flaky)
    out = tmp_path / "sub.json"
    assert search_alone.search_command(spec, str(out), depth=1, budget_s=20) == 1
    assert validate_file(out, load_tasks(spec)) == []
    sub = read_submission(out)
    np.testing.assert_array_equal(sub["good"][0][0], good.test_outputs[0])
    np.testing.assert_array_equal(sub["boom"][0][0], bad.test_inputs[0])  # fallback: the test input
    assert "score: 0.5000 (1/2 test outputs)" in capsys.readouterr().out


def test_search_command_writes_fallbacks_first_and_into_a_folder_it_is_given(tmp_path, monkeypatch):
    from solver import search_alone
    from solver.submission import read_submission, validate_file
    tasks = [make_task(G.flip_v, [(5, 6), (6, 6), (5, 7)], tid=t) for t in ("first", "second")]
    (tmp_path / "tasks").mkdir()
    spec = _write_task_dir(tmp_path / "tasks", tasks)
    out = tmp_path / "working"  # not there yet: a path without .json is a folder, made for the submission
    seen = []

    def watching(task, deadline, depth=2, max_memory_mb=2048):  # what is on disk when each task starts
        seen.append(read_submission(out / "submission.json"))
        return search_task(task, deadline, 1, max_memory_mb)
    monkeypatch.setattr(search_alone, "search_task", watching)
    assert search_alone.search_command(spec, str(out), depth=1, budget_s=20) == 0
    assert sorted(seen[0]) == ["first", "second"]  # every task's fallback before the first search
    np.testing.assert_array_equal(seen[0]["first"][0][0], tasks[0].test_inputs[0])
    assert validate_file(out / "submission.json", load_tasks(spec)) == []
    np.testing.assert_array_equal(read_submission(out / "submission.json")["second"][0][0], tasks[1].test_outputs[0])


def test_bench_command_ends_with_a_json_line(tmp_path, capsys):
    import json
    from solver.bench import search as bench_search
    (tmp_path / "tasks").mkdir()
    spec = _write_task_dir(tmp_path / "tasks", [make_task(G.flip_v, [(5, 6), (6, 6), (5, 7)], tid="t1")])
    assert bench_search.bench_command(spec, depth=1, limit=None, budget_s=20) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["top1"] == figures["top2"] == figures["test_outputs"] == 1 and figures["evaluated"] > 0
    assert figures["core_s_min"] <= figures["core_s_median"] <= figures["core_s_max"]


def test_a_colour_map_that_memorises_each_demo_ranks_after_one_that_does_not():
    from solver.search import rank_key
    task = Task("r", [(np.ones((1, 1), np.uint8), np.ones((1, 1), np.uint8))] * 2, [np.ones((1, 1), np.uint8)])
    one = (np.ones((1, 1), np.uint8),)
    memorised, plain = Program("a | colour_map{1:2}", 1, 2, one), Program("b | c", 2, 2, one)
    assert rank_key(task, plain) < rank_key(task, memorised, weak=True)
    assert rank_key(task, memorised) < rank_key(task, plain)
