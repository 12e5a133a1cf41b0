"""The command line, in-process through solver.cli.main (the same code `python -m solver` runs)."""
import json

from solver.cli import main
from solver.submission import write_submission


def test_score_prints_the_kaggle_line_last(tmp_path, capsys, arc1_eval):
    path = tmp_path / "truth.json"
    write_submission(path, arc1_eval, {t.id: list(zip(t.test_outputs, t.test_outputs)) for t in arc1_eval.values()})
    assert main(["score", str(path), "--solutions", "arc1:eval", "--csv", str(tmp_path / "t.csv")]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "score: 1.0000 (419/419 test outputs)"
    assert len((tmp_path / "t.csv").read_text().splitlines()) == 401
    write_submission(path, arc1_eval, {})
    assert main(["score", str(path), "--solutions", "arc1:eval", "-q"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "score: 0.0000 (0/419 test outputs)"


def test_validate_exit_codes(tmp_path, capsys):
    tasks = tmp_path / "t_challenges.json"
    tasks.write_text(json.dumps({"a": {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[1]]}]}}))
    sub = tmp_path / "s.json"
    sub.write_text(json.dumps({"a": [{"attempt_1": [[1]], "attempt_2": [[2]]}]}))
    assert main(["validate", str(sub), "--tasks", str(tasks)]) == 0
    sub.write_text(json.dumps({"a": [{"attempt_1": [[1]]}]}))
    assert main(["validate", str(sub), "--tasks", str(tasks)]) == 1
    assert "a test 0: attempt_2 missing" in capsys.readouterr().out


def test_bad_file_is_a_message_not_a_traceback(tmp_path, capsys):
    (tmp_path / "x.json").write_text("{")
    assert main(["score", str(tmp_path / "x.json"), "--solutions", "arc1:eval"]) == 2
    assert "x.json: not valid JSON" in capsys.readouterr().err


def test_set_and_config_reach_every_field_typed_and_checked(tmp_path, capsys):
    from solver.config import resolve
    cfg = resolve("cpu-demo", sets=["infer.strategy=dfs", "infer.dfs_threshold=0.15", "ttt.augmentations=dihedral,order",
                                    "run.retry=false", "ttt.rank=8"])
    assert (cfg.infer.strategy, cfg.infer.dfs_threshold, cfg.ttt.augmentations, cfg.run.retry, cfg.ttt.rank) == \
        ("dfs", 0.15, ["dihedral", "order"], False, 8)
    cfg.save(tmp_path / "config.json")
    again = resolve("default", str(tmp_path / "config.json"), ["infer.num_views=3"])
    assert again.infer.strategy == "dfs" and again.infer.num_views == 3  # a saved config, then --set on top
    tasks = tmp_path / "t_challenges.json"
    tasks.write_text(json.dumps({"a": {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[1]]}]}}))
    base = ["run", "--tasks", str(tasks), "--out", str(tmp_path / "s.json"), "--preset", "test"]
    assert main(base + ["--set", "infer.nope=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown field 'nope' in config section 'infer'" in err and "num_views" in err  # the valid names listed
    assert main(base + ["--set", "ttt.rank=eight"]) == 2 and "not a valid int" in capsys.readouterr().err
    assert main(base + ["--set", "nosection.x=1"]) == 2
    assert "unknown config section 'nosection' (choose from model, ttt, infer, run, search, pretrain)" in capsys.readouterr().err


def test_a_saved_config_with_a_retired_field_still_loads_and_an_unknown_one_does_not(caplog):
    import pytest

    from solver.config import Config, ConfigError
    old = Config().to_dict()
    old["ttt"]["loop"] = "hf"  # written by a version that had the Trainer loop
    assert Config.from_dict(old).ttt == Config().ttt and "retired keys ['loop']" in caplog.text
    old["ttt"]["no_such_field"] = 1
    with pytest.raises(ConfigError, match="no_such_field"):
        Config.from_dict(old)


def test_a_saved_config_with_a_renamed_field_reads_it_under_its_new_name():
    from solver.config import Config
    old = Config().to_dict()
    old["ttt"]["shared_adapter"] = old["ttt"].pop("use_shared_adapter") or True  # the name before the rename
    old["pretrain"]["bf16"] = False                                              # now pretrain.precision
    cfg = Config.from_dict(old)
    assert cfg.ttt.use_shared_adapter is True and cfg.pretrain.precision == "auto"


def test_ttt_and_pretraining_share_each_training_setting_and_only_the_defaults_differ():
    import dataclasses

    from solver.config import PretrainConfig, TrainingConfig, TTTConfig
    shared = {f.name: f for f in dataclasses.fields(TrainingConfig)}
    for section in (TTTConfig, PretrainConfig):
        fields = {f.name: f for f in dataclasses.fields(section)}
        for name, f in shared.items():  # every shared setting is there, with the one help text
            assert fields[name].metadata["help"] == f.metadata["help"], (section.__name__, name)
    ttt, pre = TTTConfig(), PretrainConfig()
    assert (ttt.lr, pre.lr) == (1e-4, 3e-4) and (ttt.adam_beta2, pre.adam_beta2) == (0.999, 0.95)
    own = lambda cls: {f.name for f in dataclasses.fields(cls)} - set(shared)
    assert not own(TTTConfig) & own(PretrainConfig)  # no setting declared twice outside the shared section


def test_bench_search_gets_30_s_a_task_unless_a_budget_is_given(monkeypatch):
    """The bench parser's --budget is the ablation's per-row time; it must not cap the search's tasks silently."""
    from solver import cli
    from solver.bench import search as bench_search
    seen = {}
    def bench(tasks, depth, limit, budget_s):
        seen["b"] = budget_s
        return 0
    monkeypatch.setattr(bench_search, "bench_command", bench)
    args = cli.make_parser().parse_args(["bench", "search", "--tasks", "heldout"])
    args.func(args)
    assert seen["b"] is None
    args = cli.make_parser().parse_args(["bench", "search", "--budget", "10m"])
    seen.clear()
    args.func(args)
    assert seen["b"] == 600.0
