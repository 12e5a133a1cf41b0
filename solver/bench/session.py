"""`python -m solver gpu-session --minutes M --out DIR [--resume EXPORT]`: one borrowed-GPU window, used in full.
`python -m solver gpu-session --plan BUDGET_LEFT_S`: the `timeout_s` and `--minutes` of the one call to make.

A short verification first, each step a subprocess with its own time limit, so that a failure or a hang is recorded
and never stops what follows; the checks that need no weights (check-gpu, probe) first and briefly:
  check-gpu   the package's GPU path on a random model of SmolLM2's shape (`--tiny` on a CPU)
  probe       the memory-and-speed probe (check-gpu --probe): the run preset's TTT batch shapes, with and without
              gradient checkpointing and autocast: seconds, tokens/s, peak GPU memory or out of memory
  bench-ttt   TTT step speed with PEFT: tokens/s, step time, peak memory, MFU against a matmul rate measured on the
              device in the training dtype; Unsloth in a step of its own (bench-ttt-unsloth) with --unsloth-site
  bench-infer prediction of one test input, one view at a time and batched across views
  run         a short `run --preset kaggle-4xl4` (--run-preset) on ARC-AGI-1 training tasks, with the report's
              per-stage times and the largest task's peak GPU memory
Then (unless --no-pretrain) pretraining of the base (`--model`, default smollm2; resumed from `--resume` or from
what DIR/model already holds, continuing its step count and token/FLOP schedule, whose warm-up ends within a tenth
of the first session) until one minute before M, exporting every `--export-every` seconds (60) and once at the end,
each export with an evaluation of `--eval-tasks` held-out tasks (4: small enough to fit). The checkpoint with
optimiser state stays outside DIR.

Every time limit, the window's included, is multiplied by $ARC_SESSION_SCALE (1 unless set: the CPU rehearsal,
tools/gpu_rehearse.sh, sets it), so that one command line serves the device and its rehearsal.

DIR ends with at most 8 files, none over 16 MiB: session.json (every figure, the versions of torch, transformers,
peft and unsloth, the device, each step's result or failure, the pretraining curve: loss against tokens seen) and
model/ (the export: config.json, arc_codec.json, safetensors shards of at most 15 MiB and their index, curve.csv,
pretrain.json). session.json is rewritten atomically the moment each step ends: a cut keeps every finished step's
figures, and the last export (written atomically, its metadata last) loads.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from solver.files import write_text_atomic

log = logging.getLogger(__name__)

SESSION = "session.json"
MODEL = "model"
MAX_FILES, MAX_FILE_BYTES = 8, 16 * 2 ** 20  # what one device call brings back
END_MARGIN_S = 60.0  # the session ends this long before its minutes are up
SCALE_ENV = "ARC_SESSION_SCALE"  # a factor on every time limit: the CPU rehearsal's; 1 on the device
STEP_LIMITS = {"check-gpu": 45, "probe": 60, "bench-ttt": 75, "bench-unsloth": 90, "bench-infer": 45}  # seconds
START_S = 150.0  # device time a call spends before its command runs: the machine's start and the upload
IDLE_S = 30.0    # device time after a call: the machine stays warm this long before it goes back
SETUP_S = 30.0   # the call's own time before the session starts: unpacking and installing what it carried
MAX_TIMEOUT_S = 600  # one command's limit
GPU_PRESET, CPU_PRESET = "pretrain-gpu", "pretrain-cpu"  # the pretraining preset when --preset is not given
DEFAULT_BASE = "smollm2"  # the base chosen by measurement (docs/measurements.md, "Which base")


def verification_steps(model: str, out_tmp: Path, gpu: bool, run_seconds: int, run_preset: str | None = None,
                       unsloth_site: str | None = None) -> list[tuple]:
    """(name, `python -m solver` arguments, time limit in seconds[, environment]) of each verification step. The run
    and the probe use `run_preset` (default kaggle-4xl4 on a GPU, test on a CPU). PEFT is benched on the session's
    own PYTHONPATH; Unsloth only with `unsloth_site`, in a step of its own that alone has that site on PYTHONPATH (its
    torchao must not reach PEFT's optional imports in the other steps)."""
    run_out, preset = out_tmp / "run", run_preset or ("kaggle-4xl4" if gpu else "test")
    bench = ["bench", "ttt", "--model", model, "--limit", "1", "--reduced-only", "--backends"]
    k, run_s = time_scale(), max(1, round(run_seconds * time_scale()))
    steps = [
        ("check-gpu", ["check-gpu"] + ([] if gpu else ["--tiny"]), STEP_LIMITS["check-gpu"] * k),
        ("probe", ["check-gpu", "--probe", "--preset", preset if preset != "test" else "kaggle-4xl4"]
         + ([] if gpu else ["--tiny"]), STEP_LIMITS["probe"] * k),
        ("bench-ttt", bench + ["peft"], STEP_LIMITS["bench-ttt"] * k),
        ("bench-infer", ["bench", "infer", "--model", model, "--limit", "1"], STEP_LIMITS["bench-infer"] * k),
        ("run", ["run", "--preset", preset, "--model", model, "--tasks", "arc1:train", "--limit",
                 "10", "--budget", f"{run_s}s", "--no-progress", "--out", str(run_out / "submission.json"),
                 "--workdir", str(run_out / "work")], run_s + 45 * k),
    ]
    if unsloth_site:
        path = os.pathsep.join(p for p in (unsloth_site, os.environ.get("PYTHONPATH", "")) if p)
        steps.insert(3, ("bench-ttt-unsloth", bench + ["unsloth"], STEP_LIMITS["bench-unsloth"] * k,
                         {**os.environ, "PYTHONPATH": path}))
    return steps


def time_scale() -> float:
    """$ARC_SESSION_SCALE: the factor on every time limit (1 unless set); a clear error when it is not positive."""
    raw = os.environ.get(SCALE_ENV, "1")
    try:
        k = float(raw)
    except ValueError:
        k = 0.0
    if not k > 0:
        raise ValueError(f"${SCALE_ENV}={raw!r}: give a positive number (1 on the device)")
    return k


def plan_window(budget_left_s: float) -> dict:
    """The one call a window of `budget_left_s` seconds of device time allows: its `timeout_s` (the machine's start,
    the upload and the warm wait after it left out, at most one command's limit) and the session's `--minutes`
    (the call's own set-up left out); an error naming the shortfall when too little is left."""
    timeout_s = int(min(MAX_TIMEOUT_S, budget_left_s - START_S - IDLE_S))
    minutes = int((timeout_s - SETUP_S) / 6) / 10
    if minutes < 3:
        need = START_S + IDLE_S + SETUP_S + 180
        raise ValueError(f"{budget_left_s:.0f} s of device time left: a session needs {need:.0f} s at least "
                         f"(the start, the upload, set-up and three minutes); keep the window for later")
    return {"budget_left_s": budget_left_s, "timeout_s": timeout_s, "minutes": minutes,
            "left_after_s": int(budget_left_s - START_S - timeout_s - IDLE_S)}


def run_step(args: list[str], limit_s: float, env: dict | None = None) -> dict:
    """`python -m solver ARGS` with a time limit: exit status, seconds, the last JSON line it printed (its figures)
    and, on a failure, the tail of its output. Never raises."""
    t0 = time.monotonic()
    cmd = [sys.executable, "-m", "solver", *args]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=max(1.0, limit_s), env=env)
        rc, stdout, stderr = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, stdout, stderr = "timeout", _text(e.stdout), _text(e.stderr) + f"\nstopped after {limit_s:.0f} s"
    except OSError as e:
        rc, stdout, stderr = "not started", "", str(e)
    return {"command": "python -m solver " + " ".join(args), "rc": rc, "seconds": round(time.monotonic() - t0, 1),
            "ok": rc == 0, "figures": last_json(stdout),
            "output_tail": (stdout if rc == 0 else stdout + "\n" + stderr)[-(1500 if rc == 0 else 3000):]}


def _text(b) -> str:
    return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")


def last_json(text: str) -> dict | None:
    """The last line of `text` that parses as a JSON object, or None."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def run_report(workdir: Path) -> dict | None:
    """The figures of a run's report.json that say where the time went."""
    path = workdir / "report.json"
    if not path.is_file():
        return None
    r = json.loads(path.read_text())
    keep = ("tasks", "score", "levels", "failures", "budget_use", "seconds", "ttt_steps", "views", "speeds", "stages",
            "gpu_peak_mib")
    return {k: v for k, v in r.items() if k in keep or k.endswith("_s")}


def versions() -> dict:
    """Versions of what the session runs on, and the device."""
    import importlib.metadata as md

    import torch
    out = {"python": sys.version.split()[0]}
    for name in ("torch", "transformers", "peft", "accelerate", "unsloth", "trl"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    out["cuda"] = torch.version.cuda
    out["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return out


def read_curve(model_dir: Path) -> list[dict]:
    path = model_dir / "curve.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _number(v: str):
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return v


def out_files(out: Path) -> list[dict]:
    """Every file under `out` with its size, and whether it breaks the limits of what comes back."""
    files = sorted(p for p in out.rglob("*") if p.is_file())
    return [{"file": str(p.relative_to(out)), "bytes": p.stat().st_size,
             "too_large": p.stat().st_size > MAX_FILE_BYTES} for p in files]


class Session:
    """session.json as it grows: rewritten atomically after every step."""

    def __init__(self, out: Path, meta: dict):
        self.out, self.data = out, {**meta, "steps": {}}

    def record(self, name: str, result: dict) -> None:
        """The step's result into session.json, saved before the step is logged as done."""
        self.data["steps"][name] = result
        self.save()
        log.info("session step %s: %s in %.0f s", name, "ok" if result.get("ok") else f"FAILED ({result.get('rc')})",
                 result.get("seconds", 0))

    def save(self) -> None:
        write_text_atomic(self.out / SESSION, json.dumps(self.data, indent=1, default=str) + "\n")


def prepare_model_dir(model_dir: Path, resume: str | None) -> str | None:
    """Copy the export to resume from into model_dir unless model_dir already holds a later one; returns what the
    pretraining resumes from (a path) or None for a fresh start."""
    from solver.pretrain import exported_state
    model_dir.mkdir(parents=True, exist_ok=True)
    have = exported_state(model_dir)
    if resume:
        given = exported_state(Path(resume))
        if given is None:
            raise ValueError(f"--resume {resume}: not an export of `pretrain` (no recorded training state)")
        if have is None or given["step"] > have["step"]:
            for f in Path(resume).iterdir():
                if f.is_file() and f.name != "curve.png":
                    shutil.copy2(f, model_dir / f.name)
            have = given
    return str(model_dir) if have else None


def pretrain_args(args, model_dir: Path, seconds: float, checkpoint_dir: Path) -> list[str]:
    """The `pretrain` command of the session's training phase."""
    cmd = ["pretrain", "--preset", args.preset, "--model", args.model, "--out", str(model_dir), "--budget",
           f"{max(1, int(seconds))}s", "--no-progress", "--no-plot",
           "--set", f"pretrain.checkpoint_dir={checkpoint_dir}",
           "--set", f"pretrain.checkpoint_every_s={args.export_every * time_scale()}",
           "--set", f"pretrain.eval_tasks={args.eval_tasks}",
           "--set", "pretrain.export_dtype=bfloat16"]
    if args.data:
        cmd += ["--data", args.data]
    if args.tokens:
        cmd += ["--tokens", args.tokens]
    for s in args.set or []:
        cmd += ["--set", s]
    return cmd


def pretrain_phase(args, model_dir: Path, seconds: float, checkpoint_dir: Path) -> dict:
    """Pretraining until the session's end: its step's result, with the export's state and curve."""
    from solver.pretrain import exported_state
    res = run_step(pretrain_args(args, model_dir, seconds, checkpoint_dir), seconds + END_MARGIN_S / 2 * time_scale())
    state = exported_state(model_dir)
    res.update(state={k: v for k, v in (state or {}).items() if k != "curve"} or None, curve=read_curve(model_dir))
    return res


def main(args) -> int:
    """Entry point of `python -m solver gpu-session`."""
    if args.plan is not None:
        print(json.dumps(plan_window(args.plan)))
        return 0
    if args.minutes is None or args.out is None:
        raise SystemExit("gpu-session: --minutes and --out are needed (or --plan BUDGET_LEFT_S alone)")
    import torch
    start, k = time.monotonic(), time_scale()
    end = start + k * (60 * args.minutes - END_MARGIN_S)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = out / MODEL
    gpu = torch.cuda.is_available()
    args.preset = args.preset or (GPU_PRESET if gpu else CPU_PRESET)
    session = Session(out, {"minutes": args.minutes, "time_scale": k, "model": args.model, "gpu": gpu,
                            "figures_from": "gpu" if gpu else "cpu",
                            "preset": args.preset, "versions": versions(),
                            "started": time.strftime("%Y-%m-%d %H:%M:%S")})
    try:
        session.data["resumed_from"] = prepare_model_dir(model_dir, args.resume)
    except (ValueError, OSError) as e:  # recorded; the window goes on from a fresh start
        session.data["resumed_from"] = None
        session.record("resume", {"ok": False, "rc": "failed", "output_tail": str(e)})
    session.save()
    tmp = Path(tempfile.mkdtemp(prefix="gpu-session-"))
    verify_model = str(model_dir) if session.data["resumed_from"] else args.model
    steps = verification_steps(verify_model, tmp, gpu, args.run_seconds, args.run_preset, args.unsloth_site)
    wanted = [s for s in args.verify.split(",") if s] if args.verify != "all" else [s[0] for s in steps]
    reserve = 0.0 if args.no_pretrain else args.min_pretrain_s * k
    for name, cmd, limit, *env in steps:
        if name in wanted:
            room = end - time.monotonic() - reserve
            res = run_step(cmd, min(limit, room), *env) if room > 5 else {"ok": False, "rc": "skipped: no time left"}
            if name == "run":
                res["report"] = run_report(tmp / "run" / "work")
            session.record(name, res)
    res = {"ok": True, "rc": "skipped: --no-pretrain"} if args.no_pretrain else \
        pretrain_phase(args, model_dir, end - time.monotonic(), tmp / "checkpoint")
    session.record("pretrain", res)
    files = out_files(out)
    session.data.update(files=files, seconds=round(time.monotonic() - start, 1))
    session.save()
    problems = [f["file"] for f in files if f["too_large"]] + (["more than 8 files"] if len(files) > MAX_FILES else [])
    if problems:
        log.warning("gpu-session output breaks the limits of what comes back: %s", ", ".join(problems))
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"session": str(out / SESSION), "steps": {k: v.get("ok") for k, v in session.data["steps"].items()},
                      "files": len(files), "seconds": session.data["seconds"]}))
    return 0 if res["ok"] else 1


def add_parser(sub) -> None:
    """The `gpu-session` subcommand."""
    s = sub.add_parser("gpu-session", help="one GPU window: a minute of verification, then pretraining to the end")
    s.add_argument("--minutes", type=float, help="length of the window (the session ends a minute before it)")
    s.add_argument("--out", help="output directory: session.json and model/ (at most 8 files)")
    s.add_argument("--plan", type=float, metavar="BUDGET_LEFT_S", help="print the timeout_s and --minutes of the one "
                                                                       "call that the device time left allows, and "
                                                                       "exit")
    s.add_argument("--resume", help="an export of `pretrain` to continue from (its step count and schedule go on)")
    s.add_argument("--model", default=DEFAULT_BASE, help=f"base SPEC to pretrain (default {DEFAULT_BASE})")
    s.add_argument("--data", default="arc1:train,arc2:train", help="pretraining data SPECs (evaluation splits and "
                                                                   "the held-out slice are always removed)")
    s.add_argument("--tokens", default="1G", help="tokens to train on in all, across sessions: the learning-rate "
                                                  "schedule follows tokens seen, so that each session continues the "
                                                  "last; its warm-up ends within the first session's first tenth "
                                                  "(solver.pretrain.session_lr_factor) (default 1G)")
    s.add_argument("--preset", help=f"pretraining preset (default {GPU_PRESET} on a GPU, {CPU_PRESET} on a CPU: "
                                    f"a step of the GPU's batch takes minutes there)")
    s.add_argument("--set", action="append", help="pretraining config fields, as `pretrain --set`")
    s.add_argument("--export-every", type=float, default=60.0, help="seconds between exports (default 60)")
    s.add_argument("--eval-tasks", type=int, default=4, help="held-out tasks of each export's evaluation (default 4)")
    s.add_argument("--verify", default="all", help="verification steps to run: all, none, or a comma-separated list "
                                                   "of check-gpu,bench-ttt,bench-infer,run")
    s.add_argument("--run-seconds", type=int, default=60, help="budget of the verification run")
    s.add_argument("--run-preset", help="preset of the verification run and of the memory-and-speed probe's batch "
                                        "shapes (default kaggle-4xl4 on a GPU: the competition's configuration; test "
                                        "on a CPU)")
    s.add_argument("--no-pretrain", action="store_true", help="verification only (a random base: nothing worth "
                                                              "pretraining, and its export would not come back)")
    s.add_argument("--unsloth-site", help="a folder holding Unsloth and its needs (tools/gpu_setup.sh unpacks it): "
                                          "benched in a step of its own, the only one with it on PYTHONPATH")
    s.add_argument("--min-pretrain-s", type=float, default=120.0, help="verification stops when less than this "
                                                                       "would be left for pretraining")
    s.set_defaults(func=main)
