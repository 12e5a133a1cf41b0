"""Initial fine-tuning on whole ARC task sets (`python -m solver pretrain`), and the held-out slice of ARC-AGI-1 training.

Data: every training task becomes leave-one-out sequences over all its pairs (demos and tests with outputs: each pair
in turn is the query, the others its context), under one random augmentation per task drawn fresh each epoch; the
per-sequence token budget is kept as in TTT (solver.ttt.fit_budget); batches are length-bucketed under a token budget.
The loss is TTT's masked loss (output cells, row ends, EOS). Full fine-tuning for `scratch` models, LoRA (merged at the
end) otherwise; bf16 autocast and gradient accumulation on a GPU; a cosine schedule with warm-up over steps or time,
whichever binds; periodic greedy one-view evaluation on the held-out slice; resumable checkpoints.

The held-out slice (HELDOUT_*) is defined here once: pretraining never trains on it (whatever the data spec, by task
id), and `bench ablation` measures on it. The evaluation splits stay for the final measurement.

Output directory: the model (an ordinary HF directory + arc_codec.json, loadable with `--model DIR`), curve.csv (one
row per evaluation), pretrain.json (the config), checkpoint/ (resume state; removed by nothing, ignored by loading).
Knows nothing of the run's budget rules, decoding strategies or selection.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from solver.augment import sample_transforms
from solver.codec import IGNORE, Codec, Encoded
from solver.config import Config, PretrainConfig, TTTConfig
from solver.tasks import Task, load_tasks
from solver.ttt import AUGMENTATIONS, fit_budget, leave_one_out

log = logging.getLogger(__name__)

HELDOUT_SOURCE = "arc1:train"
HELDOUT_SALT = "arc-solver-heldout-v1"
HELDOUT_PERMILLE = 125  # ~12.5% of ARC-AGI-1 training (45 of 400 tasks)
CHECKPOINT, CURVE, META = "checkpoint", "curve.csv", "pretrain.json"


# the held-out slice -------------------------------------------------------------------------------------------------
def is_heldout(task_id: str) -> bool:
    """Whether a task id belongs to the held-out slice (decided by a salted hash of its first 8 characters, so
    re-ARC style generated variants named `<id>...` are held out with their task)."""
    digest = hashlib.sha256(f"{HELDOUT_SALT}:{task_id[:8]}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 1000 < HELDOUT_PERMILLE


def heldout_tasks(limit: int | None = None, max_tokens: int | None = None) -> dict[str, Task]:
    """The held-out ARC-AGI-1 training tasks, smallest first (prompt + answer tokens of the largest test), capped."""
    codec = Codec.compact()
    tasks = [t for tid, t in _heldout_source().items() if is_heldout(tid) and t.valid]
    sized = sorted((task_tokens(t, codec), t.id, t) for t in tasks)
    keep = [t for n, _, t in sized if max_tokens is None or n <= max_tokens]
    return {t.id: t for t in keep[:limit]}


@functools.lru_cache(maxsize=1)
def _heldout_source() -> dict[str, Task]:
    return load_tasks(HELDOUT_SOURCE)


def task_tokens(task: Task, codec: Codec) -> int:
    """Tokens of the task's longest test sequence (all demos as context, the test output as answer)."""
    outs = task.test_outputs or [q for q in task.test_inputs]
    return max(codec.num_tokens(task.train, q, a) for q, a in zip(task.test_inputs, outs))


def load_training(specs: list[str]) -> dict[str, Task]:
    """Valid tasks of every spec, the held-out slice removed; ids repeated across specs get the spec as a prefix."""
    out: dict[str, Task] = {}
    for spec in specs:
        tasks = load_tasks(spec)
        held = [tid for tid in tasks if is_heldout(tid)]
        kept = {tid: t for tid, t in tasks.items() if t.valid and not is_heldout(tid)}
        log.info("data %s: %d tasks, %d held out, %d invalid", spec, len(tasks), len(held),
                 len(tasks) - len(held) - len(kept))
        for tid, t in kept.items():
            out[tid if tid not in out else f"{spec}/{tid}"] = t
    if not out:
        raise ValueError(f"no training tasks in {specs} (after removing the held-out slice and invalid tasks)")
    return out


# data ---------------------------------------------------------------------------------------------------------------
def all_pairs(task: Task) -> list[tuple]:
    """Demos and, where outputs are known, test pairs: the task's every input/output pair."""
    tests = list(zip(task.test_inputs, task.test_outputs)) if task.test_outputs is not None else []
    return list(task.train) + tests


def epoch_seed(seed: int, epoch: int, index: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{epoch}:{index}".encode()).digest()[:8], "big")


def task_sequences(task: Task, codec: Codec, pc: PretrainConfig, seed: int) -> list[Encoded]:
    """One random augmentation of the task (identity allowed), and every pair in turn as the query."""
    kinds = {k: k in pc.augmentations for k in AUGMENTATIONS}
    whole = Task(task.id, all_pairs(task), [])
    if len(whole.train) < 2:
        return []
    (t,) = sample_transforms(whole, 1, seed, include_identity=False, keep_background=pc.keep_background, **kinds) \
        or [sample_transforms(whole, 1, seed)[0]]
    out = []
    for unit in leave_one_out(t.apply_task(whole).train):
        fitted = fit_budget(codec, unit, pc.max_tokens)
        if fitted is not None:
            out.append(codec.encode(*fitted, train_demo_outputs=pc.train_demo_outputs))
    return out


def epoch_examples(tasks: list[Task], codec: Codec, pc: PretrainConfig, epoch: int) -> list[Encoded]:
    """The epoch's sequences: fresh augmentations, a function of (seed, epoch) only."""
    return [e for i, t in enumerate(tasks) for e in task_sequences(t, codec, pc, epoch_seed(pc.seed, epoch, i))]


def token_batches(lengths: list[int], batch_tokens: int, rng: np.random.Generator) -> list[list[int]]:
    """Length-bucketed batches: sorted by length (ties at random), filled while rows x longest <= batch_tokens,
    then shuffled. A sequence longer than batch_tokens gets a batch of its own."""
    order = np.lexsort((rng.random(len(lengths)), np.asarray(lengths)))
    batches, cur = [], []
    for i in order.tolist():
        if cur and (len(cur) + 1) * lengths[i] > batch_tokens:
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return [batches[i] for i in rng.permutation(len(batches))]


def epoch_batches(tasks: list[Task], codec: Codec, pc: PretrainConfig, epoch: int) -> list[list[Encoded]]:
    examples = epoch_examples(tasks, codec, pc, epoch)
    rng = np.random.default_rng(epoch_seed(pc.seed, epoch, -1))
    return [[examples[i] for i in b] for b in token_batches([len(e) for e in examples], pc.batch_tokens, rng)]


def batch_stream(tasks: list[Task], codec: Codec, pc: PretrainConfig, start: int = 0) -> Iterator[tuple[int, list]]:
    """(epoch, micro-batch) from micro-batch number `start` on; the same order whether started at 0 or resumed."""
    epoch, seen = 0, 0
    while pc.epochs <= 0 or epoch < pc.epochs:
        batches = epoch_batches(tasks, codec, pc, epoch)
        if not batches:
            raise ValueError("no training sequence fits max_tokens; raise pretrain.max_tokens")
        for b in batches[max(0, start - seen):]:
            yield epoch, b
        seen += len(batches)
        epoch += 1


# schedule -----------------------------------------------------------------------------------------------------------
def progress_fraction(pc: PretrainConfig, step: int, elapsed: float, micro: int = 0,
                      micro_per_epoch: int = 0) -> float:
    """How far training is, 0..1: the largest of steps, time and epochs used up (whichever limit binds)."""
    from solver.budget import parse_duration
    parts = [0.0]
    if pc.max_steps > 0:
        parts.append(step / pc.max_steps)
    if pc.budget:
        parts.append(elapsed / parse_duration(pc.budget))
    if pc.epochs > 0 and micro_per_epoch > 0:
        parts.append(micro / (pc.epochs * micro_per_epoch))
    return min(1.0, max(parts))


def lr_factor(p: float, warmup: float, min_ratio: float) -> float:
    """Linear warm-up to 1 over the first `warmup` of training, then cosine down to min_ratio."""
    if p < warmup:
        return max(p / warmup, 1e-3)
    q = (p - warmup) / max(1e-9, 1 - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(q, 1.0)))


# evaluation ---------------------------------------------------------------------------------------------------------
def evaluate(model, codec: Codec, tasks: list[Task]) -> dict:
    """Greedy one-view (identity) accuracy on the tasks' test outputs, and mean loss on their output tokens."""
    import torch

    from solver.augment import IDENTITY
    from solver.generate import decode_batch, make_view
    from solver.ttt import collate, masked_loss
    was = model.training
    model.eval()
    try:
        views, truths, seqs = [], [], []
        for t in tasks:
            for i, truth in enumerate(t.test_outputs or []):
                views.append(make_view(t, i, codec, IDENTITY))
                truths.append(truth)
                seqs.append(codec.encode(t.train, t.test_inputs[i], truth))
        correct, far = 0, time.monotonic() + 1e9
        for start in range(0, len(views), 4):
            for d in decode_batch(model, codec, views[start:start + 4], far):
                truth = truths[start + d.view]
                correct += int(d.grid.shape == truth.shape and np.array_equal(d.grid, truth))
        losses, weights = [], []
        with torch.no_grad():
            for e in seqs:
                batch = collate([e], codec.pad)
                batch = {k: v.to(next(model.parameters()).device) for k, v in batch.items()}
                losses.append(float(masked_loss(model, batch)))
                weights.append(int(e.mask.sum()))
        return {"accuracy": correct / max(1, len(truths)), "correct": correct, "outputs": len(truths),
                "loss": float(np.average(losses, weights=weights)) if losses else float("nan")}
    finally:
        model.train(was)


# state --------------------------------------------------------------------------------------------------------------
@dataclass
class State:
    """Where training stands; saved in every checkpoint."""
    step: int = 0           # optimiser steps done
    micro: int = 0          # micro-batches consumed from the stream
    epoch: int = 0
    tokens: int = 0         # real tokens forwarded
    trained_tokens: int = 0  # tokens with loss
    elapsed: float = 0.0    # seconds of training, summed over resumed sessions
    curve: list = field(default_factory=list)  # one dict per evaluation


def use_lora(pc: PretrainConfig, spec: str) -> bool:
    if pc.mode not in ("auto", "full", "lora"):
        raise ValueError(f"unknown pretrain mode '{pc.mode}' (choose auto, full or lora)")
    return pc.mode == "lora" or (pc.mode == "auto" and not spec.startswith("scratch"))


def lora_config(pc: PretrainConfig) -> TTTConfig:
    """The adapter settings of LoRA pretraining (solver.adapter reads a TTTConfig)."""
    return TTTConfig(rank=pc.rank, alpha=pc.alpha, rslora=True, train_embeddings=pc.train_embeddings,
                     gradient_checkpointing=pc.gradient_checkpointing)


def trainable_state(model) -> dict:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(directory: Path, model, optimizer, state: State) -> None:
    """Trainable weights, optimiser and State, written to a temporary file renamed into place."""
    import torch
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".state.pt.{os.getpid()}.tmp"
    torch.save({"weights": trainable_state(model), "optimizer": optimizer.state_dict(), "state": asdict(state)}, tmp)
    os.replace(tmp, directory / "state.pt")


def load_checkpoint(directory: Path, model, optimizer) -> State | None:
    import torch
    path = directory / "state.pt"
    if not path.is_file():
        return None
    ck = torch.load(path, map_location="cpu", weights_only=False)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(params) != set(ck["weights"]):
        raise ValueError(f"checkpoint {path} does not fit this model/mode; use another --out or delete it")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(ck["weights"][n])
    optimizer.load_state_dict(ck["optimizer"])
    return State(**ck["state"])


def export(model, codec: Codec, spec: str, directory: Path, lora: bool, source: dict) -> Path:
    """The final model as an HF directory + arc_codec.json (LoRA merged into a copy of the weights)."""
    import copy

    from solver.model import Loaded, save_model
    plain = copy.deepcopy(model).merge_and_unload() if lora else model
    return save_model(Loaded(plain, codec, spec), directory, source=source)


# the loop -----------------------------------------------------------------------------------------------------------
def pretrain(cfg: Config, out: str | Path, progress: bool = True, stop_at_step: int | None = None) -> State:
    """Train as cfg.pretrain says, resuming from out/checkpoint when present; the model is written to `out`.

    stop_at_step ends this session early (checkpoint and model written) without changing the schedule: a later call
    resumes where it stopped.
    """
    import torch
    from tqdm import tqdm

    from solver.model import load_configured
    from solver.ttt import collate, masked_loss
    pc, out = cfg.pretrain, Path(out)
    if not (pc.budget or pc.max_steps > 0 or pc.epochs > 0):
        raise ValueError("pretrain needs a limit: --budget, pretrain.max_steps or pretrain.epochs")
    out.mkdir(parents=True, exist_ok=True)
    (out / META).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    tasks = list(load_training(pc.data).values())
    evals = list(heldout_tasks(pc.eval_tasks, max_tokens=pc.max_tokens).values())
    lora = use_lora(pc, cfg.model.spec)
    mc = cfg.model if lora or cfg.model.dtype != "auto" else replace(cfg.model, dtype="float32")  # fp32 master weights
    loaded = load_configured(mc, pc.seed)
    codec = loaded.codec
    if lora:
        from solver.adapter import attach
        adapter = attach(loaded.model, lora_config(pc), codec.token_ids, pc.seed)
        model = adapter.model
        groups = adapter.param_groups(pc.lr, pc.lr)
    else:
        model = loaded.model
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": pc.lr}]
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(groups, lr=pc.lr, weight_decay=pc.weight_decay, betas=(0.9, 0.95))
    for g in opt.param_groups:
        g["base_lr"] = g["lr"]
    state = load_checkpoint(out / CHECKPOINT, model, opt) or State()
    if state.step:
        log.info("resuming from %s: step %d, epoch %d, %.1fM tokens", out / CHECKPOINT, state.step, state.epoch,
                 state.tokens / 1e6)
    micro_per_epoch = len(epoch_batches(tasks, codec, pc, 0)) if pc.epochs > 0 else 0
    log.info("pretrain %s (%s) on %d tasks (%s), %d held-out tasks evaluated, %d trainable parameters",
             cfg.model.spec, "LoRA" if lora else "full", len(tasks), ",".join(pc.data), len(evals),
             sum(p.numel() for g in groups for p in g["params"]))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and pc.bf16 else None
    if pc.gradient_checkpointing and not lora:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    stream = batch_stream(tasks, codec, pc, state.micro)
    model.train()
    session_start, last_ck = time.monotonic(), time.monotonic()
    base_elapsed = state.elapsed
    bar = tqdm(total=1000, desc="pretrain", unit="‰", disable=not progress,
               bar_format="{l_bar}{bar}| {n}/{total}‰ [{elapsed}<{remaining}{postfix}]")
    loss_sum, loss_n, done = 0.0, 0, False

    def record_eval() -> None:
        res = evaluate(model, codec, evals) if evals else {"accuracy": float("nan"), "loss": float("nan")}
        row = {"step": state.step, "tokens": state.tokens, "elapsed_s": round(state.elapsed, 1),
               "train_loss": round(loss_sum / loss_n, 4) if loss_n else float("nan"),
               "heldout_loss": round(res["loss"], 4), "heldout_accuracy": round(res["accuracy"], 4)}
        state.curve.append(row)
        log.info("eval step %d: %.2fM tokens, train loss %.3f, held-out loss %.3f, accuracy %.3f", row["step"],
                 row["tokens"] / 1e6, row["train_loss"], row["heldout_loss"], row["heldout_accuracy"])
        write_curve(out / CURVE, state.curve)

    if state.step == 0 and not state.curve and pc.eval_every > 0:
        record_eval()  # the starting point of the curve
    while not done:
        p = progress_fraction(pc, state.step, state.elapsed, state.micro, micro_per_epoch)
        if p >= 1.0 or (stop_at_step is not None and state.step >= stop_at_step):
            break
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * lr_factor(p, pc.warmup, pc.min_lr_ratio)
        for _ in range(pc.grad_accum):
            try:
                state.epoch, micro = next(stream)
            except StopIteration:
                done = True
                break
            batch = {k: v.to(device) for k, v in collate(micro, codec.pad).items()}
            with autocast if autocast is not None else torch.enable_grad():
                loss = masked_loss(model, batch) / pc.grad_accum
            loss.backward()
            state.micro += 1
            state.tokens += int(batch["attention_mask"].sum())
            state.trained_tokens += int((batch["labels"] != IGNORE).sum())
            loss_sum, loss_n = loss_sum + float(loss.detach()) * pc.grad_accum, loss_n + 1
        if done and loss_n == 0:
            break
        if pc.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], pc.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        state.step += 1
        state.elapsed = base_elapsed + time.monotonic() - session_start
        rate = state.tokens / max(state.elapsed, 1e-9)
        bar.n = int(1000 * progress_fraction(pc, state.step, state.elapsed, state.micro, micro_per_epoch))
        bar.set_postfix_str(f"step {state.step} loss {loss_sum / max(loss_n, 1):.3f} {rate:,.0f} tok/s "
                            f"lr {opt.param_groups[0]['lr']:.2e} ep {state.epoch}", refresh=True)
        if pc.eval_every > 0 and state.step % pc.eval_every == 0:
            record_eval()
            loss_sum, loss_n = 0.0, 0
        if time.monotonic() - last_ck >= pc.checkpoint_every_s:
            save_checkpoint(out / CHECKPOINT, model, opt, state)
            last_ck = time.monotonic()
    bar.close()
    state.elapsed = base_elapsed + time.monotonic() - session_start
    if not state.curve or state.curve[-1]["step"] != state.step:
        record_eval()
    save_checkpoint(out / CHECKPOINT, model, opt, state)
    source = {"pretrain": {"data": pc.data, "steps": state.step, "tokens": state.tokens,
                           "seconds": round(state.elapsed), "base": cfg.model.spec, "mode": "lora" if lora else "full"}}
    export(model, codec, cfg.model.spec, out, lora, source)
    log.info("pretrain done: %d steps, %.2fM tokens in %.0f s; model in %s", state.step, state.tokens / 1e6,
             state.elapsed, out)
    return state


def write_curve(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def plot_curve(csv_path: str | Path, png: str | Path) -> Path:
    """Training and held-out loss, and held-out accuracy, against tokens seen."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    d = pd.read_csv(csv_path)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(d["tokens"] / 1e6, d["train_loss"], marker=".", label="training (mean since last eval)")
    a.plot(d["tokens"] / 1e6, d["heldout_loss"], marker=".", label="held-out output tokens")
    a.set_xlabel("tokens seen (M)"), a.set_ylabel("loss"), a.legend()
    b.plot(d["tokens"] / 1e6, d["heldout_accuracy"], marker="o")
    b.set_ylim(-0.02, max(0.1, 1.2 * float(d["heldout_accuracy"].max())))
    b.set_xlabel("tokens seen (M)"), b.set_ylabel("held-out accuracy (greedy, 1 view)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return Path(png)


# command line -------------------------------------------------------------------------------------------------------
def add_parser(sub) -> None:
    """The `pretrain` subcommand of `python -m solver`."""
    s = sub.add_parser("pretrain", help="fine-tune a model on whole ARC task sets before TTT (resumable)")
    s.add_argument("--model", help="model SPEC to start from (default: the preset's)")
    s.add_argument("--data", help="comma-separated task SPECs (arc1:train, re-ARC style directories, ...); the "
                                  "held-out slice of arc1:train is always removed")
    s.add_argument("--out", required=True, help="output directory: the model, curve.csv, checkpoint/ (resumes)")
    s.add_argument("--budget", help="training wall time: 35m, 6h")
    s.add_argument("--steps", type=int, help="optimiser steps (cap)")
    s.add_argument("--preset", default="pretrain-cpu", help="named settings to start from (pretrain-cpu, "
                                                             "pretrain-gpu, ...)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    s.set_defaults(func=cmd_pretrain)


def resolve_config(preset: str, model: str | None = None, data: str | None = None, budget: str | None = None,
                   steps: int | None = None) -> Config:
    from solver.config import get_preset
    cfg = get_preset(preset)
    pre = {k: v for k, v in {"budget": budget, "max_steps": steps}.items() if v is not None}
    if data:
        pre["data"] = [d for d in data.split(",") if d]
    return cfg.override(model={"spec": model} if model else {}, pretrain=pre)


def cmd_pretrain(args) -> int:
    cfg = resolve_config(args.preset, args.model, args.data, args.budget, args.steps)
    pretrain(cfg, args.out, progress=not args.no_progress)
    if (Path(args.out) / CURVE).is_file():
        try:
            print(f"curve: {plot_curve(Path(args.out) / CURVE, Path(args.out) / 'curve.png')}")
        except ImportError:
            pass
    print(f"model: {args.out} (use it with --model {args.out})")
    return 0
