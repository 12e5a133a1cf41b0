"""`python -m solver check-gpu`: the package's GPU path checked on a random model of SmolLM2-135M's exact shape.

No download: the model (576 wide, 30 layers, 9 query / 3 key-value heads, tied embeddings, the reduced 16-token
vocabulary) is initialised at random and saved as the package saves reduced models (solver.model.save_model), then
built into the run's `Solver` (solver.pipeline: loaded once, LoRA adapter attached). Then, one line per check ('ok'
or 'FAILED: reason', with seconds):
  load     the directory loads on the device, in the dtype asked for, reduced and tied
  ttt      Solver.train's TTT steps on a small task change the adapter; reset gives the initial state bit for bit
  decode   batched greedy decoding of several views equals decoding one view at a time
  dfs      DFS finds the greedy completion, best first, each above the threshold, with its teacher-forced score
  score    scores from the shared prefill equal scores from a prefill per view, and the decoded log-probs
  solve    the run's call (calibration, the work fitted, TTT, prediction, selection) answers every test input
  fp16     all of these again in fp16 (a GPU), and bf16 (a GPU with native bf16: sm80+)
On a CPU it runs in fp32 and says that it skips fp16 and bf16; `--tiny` checks a tiny model of the same kind (tests).
Exit status 1 when any check failed.
"""
from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SMOLLM2_SHAPE = (576, 30, 9, 3, 1536)  # hidden, layers, heads, kv heads, mlp (SmolLM2-135M)
TINY_SHAPE = (64, 2, 4, 2, 128)
SMOLLM2_ROPE = {"rope_theta": 100000.0, "rms_norm_eps": 1e-5}
TTT_STEPS = 4  # about: the examples are capped at twice this, two a step
VIEWS = 4
FAR = float("inf")  # no deadline


class CheckFailed(AssertionError):
    """A check whose result is wrong (as opposed to one that raised)."""


def expect(ok: bool, reason: str) -> None:
    if not ok:
        raise CheckFailed(reason)


@dataclass
class State:
    """What the checks share: the model directory, where and how to load it, and what earlier checks made."""
    directory: Path
    device: str
    dtype: str
    strict: bool = True     # fp32: batched and one-at-a-time decoding must agree exactly
    solver: object = None   # the run's Solver (solver.pipeline), built by check_load
    views: list = field(default_factory=list)
    greedy: list = field(default_factory=list)

    @property
    def loaded(self):
        return self.solver.loaded

    @property
    def adapter(self):
        return self.solver.adapter

    @property
    def tol(self) -> float:
        """Allowed difference of two log-probabilities of one token, computed two ways."""
        return 1e-3 if self.strict else 0.05


def swap_task():
    """Three 3x3 demos and a test pair of one rule: colours 1 and 2 swapped."""
    import numpy as np
    from solver.tasks import Task
    rng = np.random.default_rng(0)
    grids = [rng.integers(0, 4, size=(3, 3)).astype(np.uint8) for _ in range(4)]
    pairs = [(g, np.where(g == 1, 2, np.where(g == 2, 1, g)).astype(np.uint8)) for g in grids]
    return Task("check-gpu", pairs[:3], [pairs[3][0]], [pairs[3][1]])


def build(directory: Path, shape: tuple = SMOLLM2_SHAPE, seed: int = 0) -> Path:
    """A random tied Llama of `shape` on the compact vocabulary, saved as a reduced model directory."""
    from solver.codec import Codec
    from solver.model import Loaded, random_llama, save_model
    model = random_llama(*shape, tied=True, seed=seed, **SMOLLM2_ROPE)
    return save_model(Loaded(model, Codec.compact(), "check-gpu"), directory)


# the checks ---------------------------------------------------------------------------------------------------------
def check_config(st: State):
    """The run's config for the checks: the saved model on the device and dtype asked for, a small TTT (PEFT, rank 8,
    about TTT_STEPS steps), VIEWS views, the model the only source."""
    from solver.config import Config
    return Config().override(
        model={"spec": str(st.directory), "dtype": st.dtype, "device": st.device},
        ttt={"backend": "peft", "rank": 8, "num_transforms": 4, "max_examples": 2 * TTT_STEPS, "batch_size": 2,
             "lr": 1e-3},
        infer={"num_views": VIEWS, "score_views": VIEWS}, run={"sources": "model", "seed": 0})


def check_load(st: State) -> None:
    import torch
    from solver.model import resolve_dtype
    from solver.pipeline import Solver
    st.solver = Solver.build(check_config(st))
    model = st.loaded.model
    p = next(model.parameters())
    expect(p.device == torch.device(st.device) or (p.device.type == "cuda" and st.device == "cuda"),
           f"weights on {p.device}, not {st.device}")
    expect(p.dtype == resolve_dtype(st.dtype, st.device), f"weights in {p.dtype}, not {st.dtype}")
    emb = model.get_input_embeddings().weight
    expect(st.loaded.codec.is_compact and emb.shape[0] == 16, f"{emb.shape[0]} embedding rows, not 16")
    expect(model.get_output_embeddings().weight is emb, "input and output embeddings are not tied after loading")


def check_ttt(st: State) -> None:
    import torch
    initial = st.adapter.snapshot()
    res = st.solver.train(swap_task(), FAR)
    expect(res.steps >= TTT_STEPS // 2, f"{res.steps} TTT steps on {res.examples} examples")
    expect(math.isfinite(res.loss) and math.isfinite(res.first_loss), f"TTT loss {res.first_loss} -> {res.loss}")
    trained = st.adapter.snapshot()
    expect(any(not torch.equal(initial[n], t) for n, t in trained.items()), "TTT left the adapter unchanged")
    st.adapter.reset()
    changed = [n for n, t in st.adapter.snapshot().items() if not torch.equal(initial[n], t)]
    expect(not changed, f"reset is not bit-exact: {len(changed)} tensors differ, e.g. {changed[:1]}")
    st.adapter.restore(trained)  # decode with the trained adapter (LoRA weights not zero)


def check_decode(st: State) -> None:
    from solver.config import InferConfig
    from solver.generate import decode_batch, make_views
    codec, model = st.loaded.codec, st.adapter.model
    st.views = make_views(swap_task(), 0, codec, VIEWS, seed=0, icfg=InferConfig())
    st.greedy = decode_batch(model, codec, st.views, FAR)
    expect(len(st.greedy) == len(st.views), f"{len(st.greedy)} completions of {len(st.views)} views")
    alone = [d for i, v in enumerate(st.views) for d in decode_batch(model, codec, [v], FAR, view_offset=i)]
    for b, a in zip(st.greedy, alone):
        expect(math.isfinite(b.logp), f"view {b.view}: log-prob {b.logp}")
        if st.strict:
            expect(b.view == a.view and b.grid.shape == a.grid.shape and (b.grid == a.grid).all(),
                   f"view {b.view}: batched greedy decoding differs from decoding the view alone")
            expect(abs(b.logp - a.logp) <= st.tol * b.tokens, f"view {b.view}: log-prob {b.logp:.4f} batched, "
                                                                f"{a.logp:.4f} alone")


def check_dfs(st: State) -> None:
    from solver.generate import dfs_view, score_view
    codec, model, view, greedy = st.loaded.codec, st.adapter.model, st.views[0], st.greedy[0]
    threshold = math.exp(greedy.logp) / 4  # below the greedy path's probability: DFS must find it
    found = dfs_view(model, codec, view, FAR, threshold=threshold, max_candidates=4)
    expect(bool(found), "DFS found nothing above a threshold below the greedy completion's probability")
    logps = [d.logp for d in found]
    expect(logps == sorted(logps, reverse=True), f"DFS completions not best first: {logps}")
    expect(all(lp > math.log(threshold) for lp in logps), "a DFS completion below the threshold")
    expect(any(d.grid.shape == greedy.grid.shape and (d.grid == greedy.grid).all() for d in found) or not st.strict,
           "DFS did not find the greedy completion")
    scores = score_view(model, codec, view, [d.grid for d in found], FAR)
    for d, s in zip(found, scores):
        expect(abs(d.logp - s) <= st.tol * d.tokens, f"DFS log-prob {d.logp:.4f}, teacher-forced score {s:.4f}")


def check_score(st: State) -> None:
    import numpy as np
    from solver.generate import SharedViews, score_candidates
    from solver.tasks import grid_key
    codec, model = st.loaded.codec, st.adapter.model
    grids = list({grid_key(d.grid): d.grid for d in st.greedy}.values())
    separate = score_candidates(model, codec, st.views, grids, FAR)
    expect(separate.shape == (len(st.views), len(grids)), f"scores of shape {separate.shape}")
    expect(bool(np.isfinite(separate).all()), "a score is not finite")
    shared = SharedViews(model, codec, st.views, batch_size=VIEWS).score(grids, len(st.views), FAR)
    worst = float(np.abs(shared - separate).max())
    expect(worst <= st.tol * 20, f"shared-prefill scores differ from per-view scores by {worst:.4f}")
    index = {grid_key(g): i for i, g in enumerate(grids)}
    for d in st.greedy:
        s = separate[d.view, index[grid_key(d.grid)]]
        expect(abs(d.logp - s) <= st.tol * d.tokens, f"view {d.view}: decoded log-prob {d.logp:.4f}, score {s:.4f}")


SOLVE_SECONDS = 600  # the solve check's deadline: far (a random model rambles to the decoding cap), but finite


def check_solve(st: State) -> None:
    """The call the run's workers make: calibration (a first task), the work fitted to the deadline, TTT and
    prediction with selection, one answer per test input."""
    from solver.budget import Deadlines, Level
    task, now = swap_task(), time.monotonic()
    st.solver.calibrated = False  # a worker's first task: it calibrates
    res = st.solver(task, st.solver.cfg, Deadlines(now + SOLVE_SECONDS, now + SOLVE_SECONDS))
    expect(res.calibration_seconds > 0, "the first task did not calibrate")
    expect(res.level == Level.FULL and res.ttt_steps > 0, f"level {res.level}, {res.ttt_steps} TTT steps with "
                                                          f"{SOLVE_SECONDS} s to spend")
    expect(len(res.attempts) == task.num_tests and all(a is not None for a in res.attempts),
           f"attempts {res.attempts}: a test input without an answer")
    expect(res.candidates > 0 and res.views == VIEWS, f"{res.candidates} candidates from {res.views} views")


CHECKS = (("load", check_load), ("ttt", check_ttt), ("decode", check_decode), ("dfs", check_dfs),
          ("score", check_score), ("solve", check_solve))


# running them -------------------------------------------------------------------------------------------------------
def _timed(fn, *args) -> tuple[str | None, float]:
    """(None, seconds) when fn ran through, else (the reason it failed, seconds)."""
    t0 = time.perf_counter()
    try:
        fn(*args)
        return None, time.perf_counter() - t0
    except CheckFailed as e:
        return str(e), time.perf_counter() - t0
    except Exception as e:  # a check that raises has failed: say what it raised, and go on to the next
        return f"{type(e).__name__}: {e}", time.perf_counter() - t0


def run_all(st: State) -> str | None:
    """Every check in order, quietly; the first failure's reason, or None (for the fp16/bf16 lines)."""
    for name, check in CHECKS:
        reason, _ = _timed(check, st)
        if reason is not None:
            return f"{name}: {reason}"
    return None


def half_support(device: str) -> dict[str, str | None]:
    """dtype -> None when the device runs it, else why it is skipped."""
    import torch
    from solver.model import native_bf16
    if not device.startswith("cuda"):
        return {"fp16": f"skipped ({device}: fp32 only)", "bf16": f"skipped ({device}: fp32 only)"}
    cap = ".".join(map(str, torch.cuda.get_device_capability(torch.device(device))))
    return {"fp16": None,
            "bf16": None if native_bf16(device) else f"skipped (compute capability {cap}: no native bf16)"}


def run_checks(device: str = "auto", tiny: bool = False, out=print) -> int:
    """Build the model, run every check and print one line each; 0 when all passed, else 1."""
    from solver.model import resolve_device
    device = resolve_device(device)
    shape = TINY_SHAPE if tiny else SMOLLM2_SHAPE
    out(f"check-gpu: {_describe(device)}; random tied Llama {shape[0]} wide, {shape[1]} layers, {shape[2]}/{shape[3]} "
        f"heads, 16-token vocabulary")
    failed = 0
    with tempfile.TemporaryDirectory(prefix="check-gpu-") as tmp:
        reason, seconds = _timed(build, Path(tmp) / "model", shape)
        out(_line("build", reason, seconds))
        failed += reason is not None
        st = State(Path(tmp) / "model", device, "float32")
        for name, check in CHECKS:
            reason, seconds = _timed(check, st) if not failed else ("skipped: an earlier check failed", 0.0)
            out(_line(name, reason, seconds))
            failed += reason is not None
        for dtype, skip in half_support(device).items():
            if skip is not None:
                out(f"{dtype:<8} {skip}")
                continue
            reason, seconds = _timed(_half, Path(tmp) / "model", device, dtype)
            out(_line(dtype, reason, seconds))
            failed += reason is not None
    return 1 if failed else 0


def _half(directory: Path, device: str, dtype: str) -> None:
    reason = run_all(State(directory, device, dtype, strict=False))
    if reason is not None:
        raise CheckFailed(reason)


def _line(name: str, reason: str | None, seconds: float) -> str:
    return f"{name:<8} {'ok' if reason is None else 'FAILED: ' + reason} ({seconds:.1f} s)"


def _describe(device: str) -> str:
    import torch
    if not device.startswith("cuda"):
        return f"device {device}, fp32"
    d = torch.device(device)
    cap = ".".join(map(str, torch.cuda.get_device_capability(d)))
    return f"device {device} ({torch.cuda.get_device_name(d)}, compute capability {cap}), torch {torch.__version__}"


# the memory-and-speed probe ---------------------------------------------------------------------------------------
PROBE_STEPS = 2  # timed steps per row, after one untimed warm-up step
TINY_PROBE_SHAPES = [(2, 64), (1, 128)]  # (rows, tokens per row) with --tiny: tests on a CPU


def probe_shapes(ttt) -> list[tuple[int, int]]:
    """(rows, tokens per row) of a preset's largest TTT batches: batch_size rows at the checkpointing threshold (the
    longest rows trained without it), and the batch_tokens cap filled with max_tokens-long rows (checkpointed)."""
    cap = ttt.batch_tokens or ttt.batch_size * ttt.max_tokens
    first = min(ttt.checkpoint_above_tokens or ttt.max_tokens, ttt.max_tokens)
    shapes = {(max(1, min(ttt.batch_size, cap // first)), first),
              (max(1, min(ttt.batch_size, cap // ttt.max_tokens)), ttt.max_tokens)}
    return sorted(shapes)


def probe_kinds(device: str) -> list[str]:
    """The precisions probed: the device's autocast and none (fp32 arithmetic on the model's dtype: TTT's old way);
    on a CPU fp32 and bf16 autocast (CPU autocast runs bf16: the path, not its speed)."""
    from solver.precision import choose
    return [choose(device), "fp32"] if device.startswith("cuda") else ["fp32", "bf16"]


def probe_row(adapter, ttt, rows: int, tokens: int, checkpointing: bool, kind: str, device: str) -> dict:
    """One TTT step shape timed (PROBE_STEPS steps after a warm-up) with the package's step: seconds, tokens/s and
    the peak GPU memory (None on a CPU), or the error (out of memory) that stopped it."""
    import torch
    from dataclasses import replace
    from solver.codec import IGNORE
    from solver.measure import gpu_peak_mib, reset_gpu_peak
    from solver.train import train_step
    from solver.precision import make_precision
    from solver.ttt import adapter_optimizer
    cfg = replace(ttt, precision=kind)
    row = {"rows": rows, "tokens": tokens, "checkpointing": checkpointing, "precision": kind}
    adapter.reset()
    adapter.train_mode(checkpointing)
    opt = adapter_optimizer(adapter, cfg)
    params = [p for g in opt.param_groups for p in g["params"]]
    precision = make_precision(cfg, device, adapter.model, opt, params)
    ids = torch.randint(0, 16, (rows, tokens), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :tokens // 2] = IGNORE  # the loss on the second half, as an answer after its prompt
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    batch = {k: v.to(device) for k, v in batch.items()}
    step = lambda: train_step(adapter.model, [batch], precision.optimizer, params, cfg.max_grad_norm,  # noqa: E731
                              precision.autocast)
    try:
        step()
        _sync(device)
        reset_gpu_peak()
        t0 = time.perf_counter()
        for _ in range(PROBE_STEPS):
            step()
        _sync(device)
        seconds = (time.perf_counter() - t0) / PROBE_STEPS
        row.update(step_s=round(seconds, 4), tokens_per_s=round(rows * tokens / seconds), peak_mib=gpu_peak_mib())
    except torch.OutOfMemoryError:
        row.update(error="out of memory", peak_mib=gpu_peak_mib())
        opt.zero_grad(set_to_none=True)
    finally:
        if precision.loss_scale is not None:
            precision.loss_scale.remove()
        adapter.eval_mode()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return row


def _sync(device: str) -> None:
    import torch
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_probe(preset: str = "kaggle-4xl4", device: str = "auto", tiny: bool = False, out=print) -> int:
    """The memory-and-speed probe: a random base of SmolLM2's shape (tiny: scratch:tiny) with the preset's LoRA,
    every TTT batch shape of the preset with and without gradient checkpointing and autocast. One line per row, then
    one JSON line ({"probe": rows}); 0 when every row ran (an out-of-memory row is a figure, not a failure), else 1."""
    import json
    from solver.config import get_preset
    from solver.model import resolve_device
    from solver.pipeline import Solver
    device = resolve_device(device)
    spec = "scratch:tiny" if tiny else "scratch:smollm2"  # the preset's LoRA and shapes on a random base, its own
    cfg = get_preset(preset).override(model={"spec": spec, "device": device, "format": "auto", "load_in_4bit": False},
                                      ttt={"enabled": True}, run={"sources": "model", "seed": 0})
    ttt = cfg.ttt
    if tiny and device == "cpu":  # tiny matmuls on two shared threads wait on each other: 29 s against 1.8 s
        import torch
        torch.set_num_threads(1)
    solver = Solver.build(cfg)
    loaded, adapter = solver.loaded, solver.adapter
    shapes = TINY_PROBE_SHAPES if tiny else probe_shapes(ttt)
    out(f"probe: {preset}'s TTT batches on {loaded.spec} ({_describe(device)}), LoRA r={ttt.rank}")
    rows, failed = [], 0
    for rows_n, tokens in shapes:
        for checkpointing in (False, True):
            for kind in probe_kinds(device):
                try:
                    row = probe_row(adapter, ttt, rows_n, tokens, checkpointing, kind, device)
                except Exception as e:  # recorded, and the other rows go on
                    row, failed = {"rows": rows_n, "tokens": tokens, "checkpointing": checkpointing,
                                   "precision": kind, "error": f"{type(e).__name__}: {e}"}, failed + 1
                rows.append(row)
                out(" ".join(f"{k}={v}" for k, v in row.items()))
    out(json.dumps({"probe": rows, "preset": preset, "model": loaded.spec, "device": device}))
    return 1 if failed else 0


def add_parser(sub) -> None:
    """The `check-gpu` subcommand of `python -m solver`."""
    s = sub.add_parser("check-gpu", help="check TTT, reset, decoding, DFS and scoring on the GPU with a random model "
                                         "of SmolLM2's shape (no download); exit 1 if a check fails")
    s.add_argument("--device", default="auto", help="auto (cuda when a GPU is visible, else cpu) | cuda | cuda:<n> "
                                                    "| cpu")
    s.add_argument("--tiny", action="store_true", help="a tiny model of the same kind instead (seconds on a CPU)")
    s.add_argument("--probe", action="store_true", help="instead of the checks: time and measure the peak memory of "
                                                        "--preset's TTT batch shapes, with and without gradient "
                                                        "checkpointing and autocast (a random base of SmolLM2's shape)")
    s.add_argument("--preset", default="kaggle-4xl4", help="the preset whose batch shapes --probe measures")
    s.set_defaults(func=lambda args: run_probe(args.preset, args.device, args.tiny) if args.probe
                   else run_checks(args.device, args.tiny))
