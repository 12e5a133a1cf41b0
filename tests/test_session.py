"""`gpu-session` on the CPU with a tiny base: every verification step recorded (figures or failure), pretraining to
the end, an export that loads and resumes with its step count continued, and what comes back within the limits."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from solver.bench import session as S
from solver.config import resolve
from solver.model import load_model
from solver.pretrain import exported_state, pretrain

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model", "scratch:tiny", "--preset", "pretrain-scratch", "--data", "arc1:train", "--set",
        "pretrain.eval_tasks=2", "--set", "pretrain.eval_every=4", "--set", "pretrain.batch_tokens=2048",
        "--export-every", "10", "--tokens", "5M"]


def gpu_session(out: Path, minutes: float, *extra: str) -> dict:
    p = subprocess.run([sys.executable, "-m", "solver", "gpu-session", "--minutes", str(minutes), "--out", str(out),
                        *TINY, *extra], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert (out / S.SESSION).is_file(), p.stderr[-3000:]
    return json.loads((out / S.SESSION).read_text())


def check_limits(out: Path) -> None:
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= S.MAX_FILES, files
    assert all(p.stat().st_size <= S.MAX_FILE_BYTES for p in files)


def test_a_session_verifies_trains_and_its_export_resumes(tmp_path):
    out = tmp_path / "out"
    d = gpu_session(out, 3, "--run-seconds", "10", "--min-pretrain-s", "60")
    assert d["versions"]["torch"] and d["versions"]["device"] == "cpu" and d["gpu"] is False
    assert list(d["steps"]) == ["check-gpu", "probe", "bench-ttt", "bench-infer", "run", "pretrain"]
    for name, step in d["steps"].items():  # each step: its figures, or why it failed
        assert step["ok"] or step.get("output_tail") or str(step["rc"]).startswith("skipped"), name
    check = d["steps"]["check-gpu"]  # its checks passing: test_check_gpu; here, passed or stopped at its time limit
    assert check["ok"] or (check["rc"] == "timeout" and "stopped after" in check["output_tail"]), check
    probe = d["steps"]["probe"]  # (on a loaded CPU it may run out of the verification's time: a recorded timeout)
    assert len(probe["figures"]["probe"]) == 8 if probe["ok"] else probe["rc"] in ("timeout", "skipped: no time left")
    if d["steps"]["run"].get("report"):  # the run ran (it is skipped when the verification's time is spent)
        assert d["steps"]["run"]["report"]["gpu_peak_mib"] is None  # a CPU: no GPU figure
    ttt = d["steps"]["bench-ttt"]
    if ttt["ok"]:  # PEFT measured; Unsloth (no GPU here) left out, not faked
        assert {r["backend"] for r in ttt["figures"]["rows"]} == {"peft"}
    pre = d["steps"]["pretrain"]
    assert pre["ok"] and pre["state"]["step"] > 0 and pre["state"]["flops"] > 0
    assert pre["curve"] and pre["curve"][-1]["tokens"] == pre["state"]["tokens"]
    check_limits(out)
    loaded = load_model(str(out / S.MODEL))  # the export loads as a model
    assert sum(p.numel() for p in loaded.model.parameters()) > 0

    # the next window resumes from the export alone (no checkpoint comes back): its step count goes on
    again = tmp_path / "again"
    assert S.prepare_model_dir(again, str(out / S.MODEL)) == str(again)
    cfg = resolve("pretrain-scratch", None, ["pretrain.eval_tasks=1", "pretrain.eval_every=0",
                                         "pretrain.batch_tokens=2048", "pretrain.target_tokens=5M"],
                  model={"spec": "scratch:tiny"}, pretrain={"data": ["arc1:train"]})
    state = pretrain(cfg, again, progress=False, stop_at_step=pre["state"]["step"] + 2)
    assert state.step == pre["state"]["step"] + 2 and state.tokens > pre["state"]["tokens"]
    assert exported_state(again)["step"] == state.step


def test_a_failed_or_hung_step_is_recorded_and_the_session_goes_on(tmp_path, monkeypatch):
    steps = [("broken", ["bench", "no-such-bench"], 30), ("hung", ["check-gpu", "--tiny"], 1)]
    real = S.run_step
    pretrain_calls = []

    def run_step(args, limit, env=None):  # the verification steps for real; pretraining only recorded
        if args[0] == "pretrain":
            pretrain_calls.append(args)
            return {"ok": True, "rc": 0, "seconds": 0.0, "figures": None}
        return real(args, limit, env)
    monkeypatch.setattr(S, "verification_steps", lambda *a: steps)
    monkeypatch.setattr(S, "run_step", run_step)
    assert S.main(session_args(tmp_path, minutes=5, verify="broken,hung")) == 0
    d = json.loads((tmp_path / S.SESSION).read_text())
    assert d["steps"]["broken"]["rc"] == 2 and "invalid choice" in d["steps"]["broken"]["output_tail"]
    assert d["steps"]["hung"]["rc"] == "timeout"
    assert d["steps"]["pretrain"]["ok"] and len(pretrain_calls) == 1


def session_args(out: Path, minutes: float, verify: str):
    import argparse
    p = argparse.ArgumentParser()
    S.add_parser(p.add_subparsers())
    return p.parse_args(["gpu-session", "--minutes", str(minutes), "--out", str(out), "--verify", verify,
                         "--model", "scratch:tiny"])


def test_resume_refuses_a_folder_that_is_not_an_export(tmp_path):
    with pytest.raises(ValueError, match="not an export"):
        S.prepare_model_dir(tmp_path / "model", str(tmp_path))


def test_the_gpu_run_uses_the_kaggle_preset_and_unsloth_is_on_the_path_of_its_own_step_alone(tmp_path):
    steps = {name: rest for name, *rest in S.verification_steps("smollm2", tmp_path, True, 60)}
    assert steps["run"][0][steps["run"][0].index("--preset") + 1] == "kaggle-4xl4"
    assert steps["probe"][0] == ["check-gpu", "--probe", "--preset", "kaggle-4xl4"]
    assert "unsloth" not in " ".join(steps["bench-ttt"][0]) and "bench-ttt-unsloth" not in steps
    assert all(len(rest) == 2 for rest in steps.values())  # no step has its own environment
    steps = {name: rest for name, *rest in S.verification_steps("smollm2", tmp_path, True, 60, "h100", "/tmp/g/u")}
    assert steps["run"][0][steps["run"][0].index("--preset") + 1] == "h100"
    args, _, env = steps["bench-ttt-unsloth"]
    assert args[-2:] == ["--backends", "unsloth"] and env["PYTHONPATH"].split(":")[0] == "/tmp/g/u"
    assert all(len(rest) == 2 for name, rest in steps.items() if name != "bench-ttt-unsloth")


def test_no_pretrain_verifies_only(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(S, "verification_steps", lambda *a: [("one", ["check-gpu", "--tiny"], 30)])
    monkeypatch.setattr(S, "run_step", lambda args, limit, env=None: calls.append(args) or {"ok": True, "rc": 0})
    args = session_args(tmp_path, minutes=5, verify="all")
    args.no_pretrain = True
    assert S.main(args) == 0
    d = json.loads((tmp_path / S.SESSION).read_text())
    assert calls == [["check-gpu", "--tiny"]] and d["steps"]["pretrain"]["rc"] == "skipped: --no-pretrain"


def test_the_plan_sizes_one_call_from_the_device_time_left():
    plan = S.plan_window(900)  # a fresh 15-minute lease
    assert plan["timeout_s"] == S.MAX_TIMEOUT_S and plan["minutes"] * 60 + S.SETUP_S <= plan["timeout_s"]
    assert plan["left_after_s"] >= 0
    short = S.plan_window(600)
    assert short["timeout_s"] == 600 - S.START_S - S.IDLE_S and short["minutes"] < plan["minutes"]
    with pytest.raises(ValueError, match="keep the window for later"):
        S.plan_window(300)
    p = subprocess.run([sys.executable, "-m", "solver", "gpu-session", "--plan", "900"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert json.loads(p.stdout.strip().splitlines()[-1]) == plan


def test_the_time_scale_multiplies_every_limit(tmp_path, monkeypatch):
    base = {name: rest[1] for name, *rest in S.verification_steps("m", tmp_path, True, 60)}
    monkeypatch.setenv(S.SCALE_ENV, "2.5")
    scaled = {name: rest for name, *rest in S.verification_steps("m", tmp_path, True, 60)}
    assert {name: rest[1] for name, rest in scaled.items()} == {name: 2.5 * v for name, v in base.items()}
    run = scaled["run"][0]
    assert run[run.index("--budget") + 1] == "150s"
    monkeypatch.setenv(S.SCALE_ENV, "-1")
    with pytest.raises(ValueError, match="positive number"):
        S.time_scale()


def test_a_session_cut_at_a_random_moment_keeps_every_finished_step_and_the_last_export(tmp_path):
    """Killed (its whole process group, as the device's limit kills a command) at a random moment once pretraining
    has exported: session.json parses and holds every step the session logged as done, and the export loads."""
    import os
    import random
    import signal
    import time
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "solver", "gpu-session", "--minutes", "3", "--out", str(out), *TINY,
           "--export-every", "2", "--verify", "check-gpu,bench-infer", "--min-pretrain-s", "60"]
    log = open(tmp_path / "stderr", "w+")
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    wait = random.Random().uniform(0, 4)  # after the first export: a moment of the pretraining, drawn at random
    try:
        deadline = time.monotonic() + 240
        while exported_state(out / S.MODEL) is None and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert p.poll() is None, "the session ended before its first export"
        time.sleep(wait)
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    log.seek(0)
    done = [line.split("session step ")[1].split(":")[0] for line in log.read().splitlines() if "session step " in line]
    d = json.loads((out / S.SESSION).read_text())  # whole: written atomically
    assert done and set(done) <= set(d["steps"]), (done, list(d["steps"]), wait)
    for name in done:
        assert "ok" in d["steps"][name] and "rc" in d["steps"][name], name
    state = exported_state(out / S.MODEL)
    assert state is not None and state["step"] > 0
    loaded = load_model(str(out / S.MODEL))  # the last export, intact
    assert sum(p.numel() for p in loaded.model.parameters()) > 0
