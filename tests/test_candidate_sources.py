"""The candidate-source seam: a source added through the protocol alone reaches the attempts and the report; sources
merge by grid; the model scores the other sources' candidates; the mixes place one source's answers; a raising source
is loud and the task goes on."""
import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
from test_generate import CODEC, FakeModel, answer_ids, answer_policy, colour_swap_task

from solver.config import ConfigError, parse_sources, resolve
from solver.model import Loaded
from solver.pipeline import gather, pipeline, predict
from solver.budget import Deadlines
from solver.results import read_candidates
from solver.run import run_tasks
from solver.source_registry import source_names
from solver.select import MODEL, Candidate, candidate_table, choose_attempts, merge_tables, mix_sources, proposed
from solver.tasks import Task

TESTS = Path(__file__).resolve().parent
FAR = 120.0


class UpsideDown:
    """A toy source: the test input turned upside down, as the only answer."""
    name, ahead, fits = "upside_down", False, 0

    def propose(self, task: Task, test_index: int, deadline: float) -> list[Candidate]:
        return proposed(self.name, [(np.flipud(task.test_inputs[test_index]), 1.0, "flipud")])


class Raising:
    name, ahead, fits = "raising", False, 0

    def propose(self, task, test_index, deadline):
        raise RuntimeError("this source always fails")


def upside_down_factory(cfg):
    return pipeline(cfg, sources=[UpsideDown()])


def g(*rows) -> np.ndarray:
    return np.array(rows, dtype=np.uint8)


def test_a_toy_source_through_the_protocol_reaches_the_attempts_and_the_report(monkeypatch, tmp_path, arc1_eval):
    monkeypatch.syspath_prepend(str(TESTS))
    tasks = dict(list(arc1_eval.items())[:3])
    cfg = resolve("test", run={"budget": "60s", "workers": 0, "sources": "search",
                               "solver": "test_candidate_sources:upside_down_factory"})
    out, work = tmp_path / "sub.json", tmp_path / "work"
    report = run_tasks(tasks, cfg, out, work, progress=False)
    sub = json.loads(out.read_text())
    for tid, task in tasks.items():
        for entry, x in zip(sub[tid], task.test_inputs):
            assert np.array_equal(entry["attempt_1"], np.flipud(x))
    rows = list(csv.DictReader((work / "report.csv").open()))
    assert all(r["origins"].split("; ")[0].startswith("upside_down[flipud]|fallback") for r in rows)
    assert report["attempt_1_from"] == {"upside_down": sum(t.num_tests for t in tasks.values())}
    assert report["no_candidate"] == 0
    kept = read_candidates(work)  # every test input's table, with the source's evidence, beside results.jsonl
    assert sorted(kept) == sorted(tasks)
    first = Candidate.from_json(kept[next(iter(tasks))][0][0])
    assert first.sources == ["upside_down"] and first.evidence["upside_down"]["text"] == "flipud"
    assert "tables" not in (work / "results.jsonl").read_text().replace('"tables":[]', "")


def test_bench_selection_replays_every_rule_and_mix_on_kept_tables(tmp_path, capsys):
    from argparse import Namespace
    from solver.bench.selection import main as replay
    from solver.results import CANDIDATES
    task = colour_swap_task()
    truth, wrong = task.test_outputs[0], np.full((3, 3), 7, np.uint8)
    table = merge_tables([proposed("search", [(truth, 0.0, "swap")]),
                          candidate_table([(0, "id", wrong, -0.1), (1, "x", wrong, -0.1), (2, "y", g([1]), -0.2)])])
    (tmp_path / CANDIDATES).write_text(json.dumps({"id": task.id, "tables": [[c.to_json() for c in table]]}) + "\n")
    challenges = tmp_path / "tasks.json"
    challenges.write_text(json.dumps({task.id: task.to_json()}))
    assert replay(Namespace(workdir=str(tmp_path), tasks=str(challenges))) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["outputs"] == 1 and figures["any candidate (ceiling)"] == 1
    assert figures["search alone (its own order)"] == 1 and figures["model alone, vote"] == 0
    assert figures["vote + search first"] == 1 and figures["vote + search fill"] == 0  # the model's two come first


def test_sources_merge_by_grid_keeping_each_sources_evidence():
    a, b = g([1, 2]), g([3, 4])
    search = proposed("search", [(a, -2.0, "p1"), (b, -3.0, "p2"), (a, -9.0, "p3")])
    model = candidate_table([(0, "id", b, -0.1), (1, "rot", b, -0.2), (2, "id", g([5]), -0.3)])
    table = merge_tables([search, model])
    assert [c.key for c in table] == [search[0].key, search[1].key, model[1].key]
    assert table[0].sources == ["search"] and table[0].evidence["search"]["text"] == "p1"
    assert table[1].sources == ["search", MODEL] and table[1].votes == 2 and table[1].source_rank("search") == 1
    assert table[2].sources == [MODEL] and table[2].source_rank("search") == float("inf")


def test_mixes_place_the_search_first_after_the_model_or_pooled():
    a, b, c = g([1]), g([2]), g([3])
    table = merge_tables([proposed("search", [(a, 0.0, "p1"), (b, 0.0, "p2")]),
                          candidate_table([(0, "id", c, -0.1), (1, "x", c, -0.1), (2, "y", b, -0.5)])])
    ranking = [2, 1, 0]  # what a rule said: c, b, a
    assert mix_sources(table, ranking, "search", "pool") == ranking
    assert mix_sources(table, ranking, "search", "first") == [0, 2, 1]
    assert mix_sources(table, ranking, "search", "fill") == [2, 1, 0]  # b was the model's too: it keeps its place
    choice = choose_attempts(table, "vote", g([0]), mix="first")
    assert np.array_equal(choice.attempt_1, a) and np.array_equal(choice.attempt_2, c)
    assert choice.origins() == ["search[p1]", MODEL]
    with pytest.raises(ValueError, match="source mix"):
        mix_sources(table, ranking, "search", "best")


def test_the_model_scores_the_other_sources_candidates_under_its_views():
    task = colour_swap_task()
    # the verifier off: the fake model's all-zero answer breaks the task's invariants, and this is about scoring
    cfg = resolve("test", infer={"num_views": 3, "score_views": 3, "mix": "pool", "rule": "poe", "verify": False})
    model = FakeModel(answer_policy({}, default=answer_ids(np.zeros((3, 3)))))
    known = [proposed("search", [(task.test_outputs[0], 0.0, "swap"), (np.ones((3, 3), np.uint8), 0.0, "ones")])]
    [choice] = predict(Loaded(model, CODEC, "fake"), task, cfg, time.monotonic() + FAR, known=known[:1])
    assert [c.sources for c in choice.candidates] == [["search"], ["search"], [MODEL]]
    assert all(len(c.scores) == 3 for c in choice.candidates)
    assert np.array_equal(choice.attempt_1, np.zeros((3, 3)))  # the fake model is sure of its own answer


def test_a_raising_source_is_logged_named_and_the_others_still_answer(caplog):
    task = colour_swap_task()
    found = gather([Raising(), UpsideDown()], task, time.monotonic() + FAR)
    assert found.errors == ["raising: RuntimeError: this source always fails"]
    assert [c.sources for c in found.tables[0]] == [["upside_down"]]
    assert "Traceback" in caplog.text or any(r.exc_info for r in caplog.records)


def test_without_the_model_as_a_source_no_model_is_loaded():
    solve = pipeline(resolve("test", run={"sources": "search"}), sources=[UpsideDown()])
    assert solve.loaded is None
    result = solve(colour_swap_task(), resolve("test"), Deadlines(time.monotonic(), time.monotonic() + FAR))
    assert result.origins == "upside_down[flipud]|fallback" and result.attempts[0] is not None


def test_run_sources_are_checked_by_name():
    assert parse_sources("search, model") == ["search", "model"]
    for bad in ("", "model,model"):
        with pytest.raises(ConfigError, match="run.sources"):
            parse_sources(bad)
    with pytest.raises(ConfigError, match="no source named oracle"):
        source_names(resolve("test", sets=["run.sources=search,oracle"]))
    assert source_names(resolve("test")) == ["search", "model"]


# every task that trains answers --------------------------------------------------------------------------------------
class Slowed(FakeModel):
    """A fake model that costs `per_token` seconds of the fake clock for every token it processes (prefill rows x
    length, one token a row when decoding)."""

    def __init__(self, policy, clock, per_token: float):
        super().__init__(policy)
        self.clock, self.per_token = clock, per_token

    def forward(self, input_ids, **kw):
        self.clock.advance(self.per_token * input_ids.numel())
        return super().forward(input_ids, **kw)


def predict_slowed(fake_clock, slowdown: float, decode_share: float):
    """(the task, its one Choice) when the time is what 8 views take at one speed and the model runs `slowdown` times
    slower."""
    import solver.generate as G
    import solver.pipeline as P
    fake_clock.install(G, P)
    task = colour_swap_task()
    cfg = resolve("test", infer={"num_views": 8, "score_views": 0, "batch_size": 8, "rule": "vote",
                                 "decode_share": decode_share})
    views = G.make_views(task, 0, CODEC, 8, 0, cfg.infer)
    answer = answer_ids(task.test_outputs[0])
    per_token = 0.005
    planned = per_token * (sum(len(v.prompt) for v in views) + len(answer) * (1 + 7))  # prefills, 1 + 7 decode rows
    model = Slowed(answer_policy({}, default=answer), fake_clock, per_token * slowdown)
    [choice] = predict(Loaded(model, CODEC, "fake"), task, cfg, fake_clock.monotonic() + planned)
    return task, choice


@pytest.mark.parametrize("slowdown", [1.0, 3.0])
def test_prediction_planned_at_one_speed_still_answers_when_the_model_runs_3x_slower(fake_clock, slowdown):
    """The time is what 8 views take at the speed the task measured; the model then runs 3x slower (a busy machine,
    a cold cache). The first view is prefilled and decoded alone before the others, so the deadline keeps a candidate
    (prefilling every view first, then decoding them in one batch, left none: their batch ended after the deadline)."""
    task, choice = predict_slowed(fake_clock, slowdown, decode_share=1.0)
    assert choice.candidates and np.array_equal(choice.attempt_1, task.test_outputs[0])
    decoded = sum(len(c.views) for c in choice.candidates)
    assert decoded == 8 if slowdown == 1.0 else 1 <= decoded < 8


def test_the_first_view_may_use_the_scoring_time_when_it_is_the_only_answer(fake_clock):
    """decode_share keeps part of a test input's time for decoding (30% here), the rest for scoring; a model slow
    enough that its first view takes 38% of the time must still answer (held-out run: two tasks that trained answered
    nothing this way): the first view decodes until the test input's deadline."""
    task, choice = predict_slowed(fake_clock, 3.0, decode_share=0.3)
    assert choice.candidates and np.array_equal(choice.attempt_1, task.test_outputs[0])
    assert sum(len(c.views) for c in choice.candidates) == 1  # the others had only the decoding share
