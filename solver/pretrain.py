"""Initial fine-tuning on whole ARC task sets (`python -m solver pretrain`): the loop, its schedule, checkpoints,
exports and evaluation.

Data comes from solver.sources (weighted task sets and generated examples, every evaluation split and the held-out
slice removed by id and content unless `allow_eval_data`) through solver.data (every pair of a task in turn as the
query, a fresh augmentation per task each epoch, token-budgeted length-bucketed batches); each optimiser step is
solver.train's, in solver.precision's arithmetic (bf16 autocast on GPUs with native bf16, fp16 with loss scaling on
older ones, fp32 on CPUs; fused AdamW; CPU threads chosen by solver.threads). Full fine-tuning for `scratch` models,
LoRA otherwise; a cosine schedule with warm-up over steps, tokens (`target_tokens`, across sessions) or time,
whichever binds (a budgeted session's warm-up ends within a tenth of its time: session_lr_factor); periodic greedy
one-view evaluation on the held-out slice; resumable checkpoints. A `budget` ends the session with its export written
`budget_margin` before the budget's end.

Data-parallel under `torchrun --nproc_per_node N -m solver pretrain ...` (torch.distributed, initialised only when
torchrun's WORLD_SIZE > 1: nccl on GPUs, gloo on CPUs): each optimiser step takes grad_accum x N micro-batches of the
one deterministic stream, rank r those at r, r + N, ... (all ranks' together are the single-process stream);
gradients are averaged by DistributedDataParallel; rank 0 alone evaluates, decides the end of a budgeted session and
writes checkpoints, the curve and the model. The checkpoint counts micro-batches consumed, so a run resumes on any
number of ranks.

Output directory: LoRA: an adapter export (solver.shipped: small enough to commit, loadable as `--model DIR` or
`BASE+DIR`, recording data, splits, steps, tokens and the command; written with every checkpoint, and enough alone to
resume from); full training: an HF directory + arc_codec.json. Also curve.csv (one row per evaluation), pretrain.json
(the config), checkpoint/ (resume state with the optimiser; ignored by loading). Knows nothing of the run's budget
rules, decoding strategies (beyond greedy evaluation) or selection.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from solver.budget import parse_duration
from solver.codec import Codec
from solver.compat import set_checkpointing
from solver.config import Config, PretrainConfig
from solver.data import collate, heldout_tasks, mixture_stream, window_batches
from solver.files import write_atomic, write_text_atomic
from solver.shipped import export_adapter, is_export, load_into, read_meta, resolve_default
from solver.sources import Mixture, open_mixture, parse_count
from solver.tasks import Task
from solver.train import StepResult, lr_factor, make_optimizer, masked_loss, train_step

log = logging.getLogger(__name__)

CHECKPOINT, CURVE, META = "checkpoint", "curve.csv", "pretrain.json"


# schedule -----------------------------------------------------------------------------------------------------------
def budget_margin(pc: PretrainConfig) -> float:
    """Seconds before the end of `budget` by which the session's final export is written: budget_margin_s, or
    budget_margin_fraction of a short budget."""
    return min(pc.budget_margin_s, pc.budget_margin_fraction * parse_duration(pc.budget)) if pc.budget else 0.0


def schedule_seconds(pc: PretrainConfig) -> float:
    """Training seconds the schedule spans: the budget less its margin, unless a token target sets the schedule
    (then the budget limits each session alone); 0 when time does not drive it."""
    if not pc.budget or parse_count(pc.target_tokens) or parse_count(pc.target_flops):
        return 0.0
    return parse_duration(pc.budget) - budget_margin(pc)


SESSION_WARMUP_SHARE = 0.1  # a budgeted session's warm-up ends within this share of its training time at most


def session_lr_factor(pc: PretrainConfig, progress: float, elapsed: float) -> float:
    """The learning rate's multiplier at `progress` of the schedule after `elapsed` seconds of training (all
    sessions): lr_factor, except that under a budget the warm-up ends by SESSION_WARMUP_SHARE of the session's
    training time (the budget less its margin) at the latest. A token or FLOP target spans many short sessions (1G
    tokens: its 3% warm-up outlasts a GPU window), so the ramp runs on whichever of progress and time is further and
    the rate then stays at its peak until the schedule's own warm-up ends, the decay following as before. Time counts
    over resumed sessions, so a session resumed past its warm-up goes on at the rate it had."""
    span = SESSION_WARMUP_SHARE * (parse_duration(pc.budget) - budget_margin(pc)) if pc.budget else 0.0
    if pc.warmup <= 0 or progress >= pc.warmup or span <= 0:
        return lr_factor(progress, pc.warmup, pc.min_lr_ratio, pc.schedule)
    ramp = max(progress / pc.warmup, elapsed / span)
    return 1.0 if ramp >= 1.0 else max(ramp, 1e-3)


def progress_fraction(pc: PretrainConfig, step: int, elapsed: float, micro: int = 0,
                      micro_per_epoch: int = 0, tokens: int = 0, flops: float = 0.0) -> float:
    """How far training is, 0..1: the largest of steps, tokens, FLOPs, time and epochs used up (whichever limit
    binds)."""
    parts = [0.0]
    if pc.max_steps > 0:
        parts.append(step / pc.max_steps)
    if parse_count(pc.target_tokens):
        parts.append(tokens / parse_count(pc.target_tokens))
    if parse_count(pc.target_flops):
        parts.append(flops / parse_count(pc.target_flops))
    if schedule_seconds(pc) > 0:
        parts.append(elapsed / schedule_seconds(pc))
    if pc.epochs > 0 and micro_per_epoch > 0:
        parts.append(micro / (pc.epochs * micro_per_epoch))
    return min(1.0, max(parts))


# evaluation ---------------------------------------------------------------------------------------------------------
def evaluate(model, codec: Codec, tasks: list[Task]) -> dict:
    """Greedy one-view (identity) accuracy on the tasks' test outputs, and mean loss on their output tokens."""
    import torch

    from solver.augment import IDENTITY
    from solver.generate import decode_batch, make_view
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
                batch = collate([e], codec.pad, next(model.parameters()).device)
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
    flops: float = 0.0      # training FLOPs computed (solver.measure.FlopModel, padding included)
    elapsed: float = 0.0    # seconds of training, summed over resumed sessions
    curve: list = field(default_factory=list)  # one dict per evaluation


def use_lora(pc: PretrainConfig, spec: str) -> bool:
    if pc.mode not in ("auto", "full", "lora"):
        raise ValueError(f"unknown pretrain mode '{pc.mode}' (choose auto, full or lora)")
    return pc.mode == "lora" or (pc.mode == "auto" and not spec.startswith("scratch"))


def trainable_state(model) -> dict:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(directory: Path, model, optimizer, state: State) -> None:
    """Trainable weights, optimiser and State, written atomically."""
    import torch
    ck = {"weights": trainable_state(model), "optimizer": optimizer.state_dict(), "state": asdict(state)}
    write_atomic(directory / "state.pt", lambda tmp: torch.save(ck, tmp))
    log.debug("checkpoint at step %d (%d micro-batches) in %s", state.step, state.micro, directory)


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


def export(s: Session, state: State) -> None:
    """The model as it stands, with what training saw: LoRA as an adapter export (solver.shipped: small, loadable as
    `BASE+DIR` or DIR, and enough to resume from), full training as an HF directory + arc_codec.json."""
    from solver.model import Loaded
    t0 = time.monotonic()
    pc = s.cfg.pretrain
    source = {"pretrain": {"data": list(pc.data), "splits": s.splits, "steps": state.step, "tokens": state.tokens,
                           "trained_tokens": state.trained_tokens, "flops": float(f"{state.flops:.4g}"),
                           "seconds": round(state.elapsed), "base": s.base,
                           "mode": "lora" if s.lora else "full", "allow_eval_data": pc.allow_eval_data,
                           "command": command_line()}}
    if s.lora:
        export_adapter(s.model, s.codec, s.out, s.base, {"base_seed": pc.seed, "source": source,
                                                         "state": asdict(state)}, pc.export_dtype)
    else:
        export_full(Loaded(s.model, s.codec, s.base), s.out, {**source, "state": asdict(state)}, pc.export_dtype)
    s.export_s = time.monotonic() - t0


def export_full(loaded, out: Path, source: dict, dtype: str) -> None:
    """A fully trained model as an HF directory in `out` (weights in `dtype`, files of at most 16 MiB), written
    beside it first and moved in file by file, arc_codec.json (which records the training state) last, so that a
    killed export leaves the previous one loadable; files of the previous export that the new one lacks go."""
    import shutil

    from solver.model import CODEC_FILE, save_model
    from solver.shipped import SHARD_BYTES
    tmp = out / ".export.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(loaded, tmp, source=source, dtype=dtype, shard_bytes=SHARD_BYTES - 2 ** 20)
    (tmp / "generation_config.json").unlink(missing_ok=True)  # decoding is the package's own: one file fewer
    names = sorted(p.name for p in tmp.iterdir() if p.name != CODEC_FILE) + [CODEC_FILE]
    for stale in out.glob("model*.safetensors*"):
        if stale.name not in names:
            stale.unlink()
    for name in names:
        os.replace(tmp / name, out / name)
    tmp.rmdir()


def command_line() -> str:
    """This process's command, as typed (`python -m solver ...` for the package's entry point)."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(os.path.join("solver", "__main__.py")):
        argv[0] = "python -m solver"
    return " ".join(argv)


def resume(s: Session) -> State:
    """Where a previous session stopped: the checkpoint (weights, optimiser, state), or a later export alone
    (weights and state; the optimiser starts afresh); a new State when there is neither."""
    state = load_checkpoint(checkpoint_dir(s), s.model, s.optimizer)
    saved = exported_state(s.out)
    if saved and saved["step"] > (state.step if state else -1):
        try:
            load_export(s)
        except (ValueError, RuntimeError, OSError) as e:
            raise ValueError(f"the export in {s.out} does not fit this model/config ({e}); use another --out or the "
                             f"settings it was trained with") from None
        s.optimizer.state.clear()
        state = State(**saved)
        log.info("resuming from the %s export %s (optimiser state starts afresh)", "adapter" if s.lora else "model",
                 s.out)
    if state and state.step:
        log.info("resuming from %s: step %d, epoch %d, %d micro-batches, %.1fM tokens", s.out, state.step,
                 state.epoch, state.micro, state.tokens / 1e6)
    return state or State()


def exported_state(out: Path) -> dict | None:
    """The training state an export in `out` records (adapter export or full model), or None."""
    from solver.model import CODEC_FILE
    if is_export(out):
        return read_meta(out).get("state")
    path = out / CODEC_FILE
    if path.is_file():
        return json.loads(path.read_text()).get("source", {}).get("state")
    return None


def load_export(s: Session) -> None:
    """The export's weights into the model being trained: LoRA's into the PEFT model, a full model's (any dtype)
    into every parameter."""
    if s.lora:
        load_into(s.model, s.out)
        return
    import torch
    from safetensors.torch import load_file
    weights = {}
    for f in sorted(s.out.glob("model*.safetensors")):
        weights.update(load_file(str(f)))
    own = s.model.state_dict()
    tied = getattr(s.model.config, "tie_word_embeddings", False)
    missing = sorted(k for k in own if k not in weights and not (tied and k == "lm_head.weight"))
    if missing or any(weights[k].shape != own[k].shape for k in own if k in weights):
        raise ValueError(f"{len(missing)} tensors missing or of another shape (first: {(missing or list(own))[0]})")
    with torch.no_grad():
        for k, v in own.items():
            if k in weights:
                v.copy_(weights[k].to(v.dtype))


# data parallelism ---------------------------------------------------------------------------------------------------
RANK_TIMEOUT_S = 3600.0  # how long ranks wait for each other in a collective (rank 0 evaluates while they wait)


@dataclass
class Ranks:
    """This process's place in a data-parallel run: its rank, the number of ranks, and its GPU ('' : the config's)."""
    rank: int = 0
    world: int = 1
    device: str = ""

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_ranks(device: str = "auto") -> Ranks:
    """torch.distributed from torchrun's environment when WORLD_SIZE > 1 (nccl and GPU LOCAL_RANK when GPUs are
    used, else gloo); a single process otherwise. Ranks other than 0 log warnings only (unless debugging)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    from datetime import timedelta

    import torch
    import torch.distributed as dist
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    gpu = ""
    if device != "cpu" and torch.cuda.is_available():
        gpu = f"cuda:{local}"
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if gpu else "gloo", timeout=timedelta(seconds=RANK_TIMEOUT_S))
    if rank != 0 and not logging.getLogger("solver").isEnabledFor(logging.DEBUG):
        logging.getLogger("solver").setLevel(logging.WARNING)
    log.info("data-parallel pretraining: %d ranks (%s)", world, "nccl" if gpu else "gloo")
    return Ranks(rank, world, gpu)


def main_rank() -> bool:
    """False in a torchrun rank other than 0 (which writes no files)."""
    return int(os.environ.get("RANK", "0")) == 0


def close_ranks(ranks: Ranks, together: bool = True) -> None:
    """Leave the process group. After a normal end every rank first waits for the others (rank 0 is still writing
    the export): a rank that tears gloo down while a peer is still connected can abort at exit (SIGABRT)."""
    if ranks.world > 1:
        import torch.distributed as dist
        if dist.is_initialized():
            if together:
                dist.barrier()
            dist.destroy_process_group()


def all_ranks(step: StepResult, elapsed: float, ranks: Ranks, stop: bool = False) -> tuple[StepResult, float, bool]:
    """The step as all ranks saw it together (tokens summed; loss and elapsed time averaged) and rank 0's wish to end
    the session: every rank then takes the same schedule decisions (learning rate, evaluation, the end)."""
    if ranks.world == 1:
        return step, elapsed, stop
    import torch
    import torch.distributed as dist
    t = torch.tensor([step.loss, step.tokens, step.padded_tokens, step.trained_tokens, elapsed,
                      float(stop and ranks.main)], dtype=torch.float64, device=ranks.device or "cpu")
    dist.all_reduce(t)
    loss, tokens, padded, trained, elapsed, stops = t.tolist()
    n = ranks.world
    return StepResult(loss / n, int(round(tokens)), int(round(padded)), int(round(trained))), elapsed / n, stops > 0


def fingerprint(batch: list) -> str:
    """A short hash of a micro-batch's token ids: the debug log names each rank's data by it."""
    h = hashlib.sha1()
    for e in batch:
        h.update(np.asarray(e.ids, dtype=np.int64).tobytes())
    return h.hexdigest()[:10]


# the loop -----------------------------------------------------------------------------------------------------------
@dataclass
class Session:
    """What one pretraining call trains: the model (LoRA-wrapped or not), its optimiser and the data."""
    cfg: Config
    out: Path
    model: object
    codec: Codec
    optimizer: object
    lora: bool
    mixture: Mixture
    evals: list[Task]
    precision: object = None  # solver.precision.Precision: autocast and the optimiser to step (loss-scaled in fp16)
    micro_per_epoch: int = 0
    ranks: Ranks = field(default_factory=Ranks)
    trainer: object = None  # what the training step calls: the model, or its DistributedDataParallel wrapper
    base: str = ""          # the model SPEC trained from (`default` resolved)
    splits: list = field(default_factory=list)  # protected splits the data overlaps (evaluation ones, if allowed)
    tuner: object = None    # solver.threads.ThreadTuner on a CPU with pretrain.threads 0
    deadline: float | None = None  # time.monotonic() by which the session's final export is written
    eval_s: float = 0.0     # how long the last evaluation took (what the end of a session keeps time for)
    export_s: float = 0.0   # how long the last checkpoint and export took
    step_s: float = 0.0     # how long the last optimiser step took
    flop_model: object = None  # solver.measure.FlopModel of the model as trained

    @property
    def params(self) -> list:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def reserve(self) -> float:
        """Seconds the end of a session needs after the last step: an evaluation and an export, with room."""
        return 1.5 * (self.eval_s + self.export_s) + self.step_s


def setup(cfg: Config, out: Path, ranks: Ranks = Ranks()) -> Session:
    """Load the data and the model (fp32 master weights for full training), attach LoRA where used, make AdamW and
    the step's precision; wrap the model in DistributedDataParallel on more than one rank (only rank 0 loads the
    evaluation tasks)."""
    from solver.measure import flop_model
    from solver.model import load_configured
    from solver.precision import make_precision
    from solver.threads import tuner_for
    pc = cfg.pretrain
    mixture = open_mixture(pc)
    evals = list(heldout_tasks(pc.eval_tasks, max_tokens=pc.max_tokens).values()) if ranks.main else []
    base = resolve_default(cfg.model.spec)
    lora = use_lora(pc, base)
    mc = replace(cfg.model, spec=base)
    mc = mc if lora or mc.dtype != "auto" else replace(mc, dtype="float32")
    mc = replace(mc, device=ranks.device) if ranks.device else mc
    loaded = load_configured(mc, pc.seed)
    model, groups = _trainable(loaded, pc, lora)
    opt = make_optimizer(groups, pc)
    device = next(model.parameters()).device
    params = [p for g in groups for p in g["params"]]
    precision = make_precision(pc, device, model, opt, params)
    micro = sum(len(b) for b in window_batches(mixture.epoch(0), loaded.codec, pc, 0)) if pc.epochs > 0 else 0
    log.info("pretrain %s (%s, %s) on %s, %d held-out tasks evaluated, %d trainable parameters", base,
             "LoRA" if lora else "full", precision.describe(), mixture.describe(), len(evals),
             sum(p.numel() for p in params))
    trainer = model
    if ranks.world > 1:
        from torch.nn.parallel import DistributedDataParallel
        trainer = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return Session(cfg, out, model, loaded.codec, opt, lora, mixture, evals, precision, micro, ranks, trainer, base,
                   mixture.splits(), tuner_for(pc.threads, device.type, ranks.world), flop_model=flop_model(model))


def _trainable(loaded, pc: PretrainConfig, lora: bool) -> tuple[object, list[dict]]:
    """(the model to train, its optimiser groups): LoRA attached, or every parameter of a full model."""
    if lora:
        from solver.adapter import attach
        adapter = attach(loaded.model, pc, loaded.codec.token_ids, pc.seed)
        return adapter.model, adapter.param_groups(pc.lr, pc.embedding_lr)
    model = loaded.model
    if pc.gradient_checkpointing:
        set_checkpointing(model, True)
    return model, [{"params": [p for p in model.parameters() if p.requires_grad], "lr": pc.lr}]


def record_eval(s: Session, state: State, train_loss: float) -> None:
    """Evaluate on the held-out tasks, append a row to the curve and rewrite curve.csv."""
    t0 = time.monotonic()
    res = evaluate(s.model, s.codec, s.evals) if s.evals else {"accuracy": float("nan"), "loss": float("nan")}
    row = {"step": state.step, "tokens": state.tokens, "flops": float(f"{state.flops:.4g}"),
           "elapsed_s": round(state.elapsed, 1),
           "train_loss": round(train_loss, 4), "heldout_loss": round(res["loss"], 4),
           "heldout_accuracy": round(res["accuracy"], 4)}
    state.curve.append(row)
    s.eval_s = time.monotonic() - t0
    log.info("eval step %d: %.2fM tokens, train loss %.3f, held-out loss %.3f, accuracy %.3f (%.0f s)", row["step"],
             row["tokens"] / 1e6, row["train_loss"], row["heldout_loss"], row["heldout_accuracy"], s.eval_s)
    write_curve(s.out / CURVE, state.curve)


def save_all(s: Session, state: State) -> None:
    """The checkpoint, and the export: always as recent as the checkpoint, and enough alone to resume from."""
    t0 = time.monotonic()
    save_checkpoint(checkpoint_dir(s), s.model, s.optimizer, state)
    export(s, state)
    s.export_s = time.monotonic() - t0


def checkpoint_dir(s: Session) -> Path:
    return Path(s.cfg.pretrain.checkpoint_dir) if s.cfg.pretrain.checkpoint_dir else s.out / CHECKPOINT


def pretrain(cfg: Config, out: str | Path, progress: bool = True, stop_at_step: int | None = None) -> State:
    """Train as cfg.pretrain says, resuming from out/checkpoint (or out's adapter export) when present; the model is
    written to `out`. With a budget, the session ends with its export written budget_margin before the budget.

    stop_at_step ends this session early (checkpoint and model written) without changing the schedule: a later call
    resumes where it stopped. Under torchrun (WORLD_SIZE > 1) every rank calls this; rank 0 writes the files.
    """
    started = time.monotonic()
    pc, out = cfg.pretrain, Path(out)
    if not (pc.budget or pc.max_steps > 0 or pc.epochs > 0 or parse_count(pc.target_tokens)
            or parse_count(pc.target_flops)):
        raise ValueError("pretrain needs a limit: --budget, pretrain.max_steps, pretrain.epochs, "
                         "pretrain.target_tokens or pretrain.target_flops")
    ranks = init_ranks(cfg.model.device)
    finished = False
    try:
        state = _pretrain(cfg, out, ranks, progress, stop_at_step, started)
        finished = True
        return state
    finally:
        close_ranks(ranks, together=finished)


def _pretrain(cfg: Config, out: Path, ranks: Ranks, progress: bool, stop_at_step: int | None,
              started: float) -> State:
    pc = cfg.pretrain
    out.mkdir(parents=True, exist_ok=True)
    if ranks.main:
        write_text_atomic(out / META, json.dumps(cfg.to_dict(), indent=2) + "\n")
    s = setup(cfg, out, ranks)
    if pc.budget:
        s.deadline = started + parse_duration(pc.budget) - budget_margin(pc)
    state = resume(s)
    if ranks.main and state.step == 0 and not state.curve and pc.eval_every > 0:
        record_eval(s, state, float("nan"))  # the starting point of the curve
    try:
        last_loss = train_steps(s, state, progress, stop_at_step)
    finally:
        if s.tuner is not None:
            s.tuner.close()
    if not ranks.main:
        return state
    if not state.curve or state.curve[-1]["step"] != state.step:
        record_eval(s, state, last_loss)
    save_all(s, state)
    log.info("pretrain done: %d steps, %.2fM tokens in %.0f s (%.0f tokens/s); model in %s", state.step,
             state.tokens / 1e6, state.elapsed, state.tokens / max(state.elapsed, 1e-9), out)
    return state


def train_steps(s: Session, state: State, progress: bool, stop_at_step: int | None) -> float:
    """Optimiser steps until the schedule's end, the data's end, the session's deadline or `stop_at_step`;
    evaluations and checkpoints on their periods (rank 0). `state` is updated in place; returns the mean training
    loss since the last evaluation."""
    from tqdm import tqdm
    pc, ranks = s.cfg.pretrain, s.ranks
    stream = mixture_stream(s.mixture, s.codec, pc, state.micro)
    group_size = pc.grad_accum * ranks.world  # micro-batches per optimiser step, all ranks together
    s.model.train()
    session_start = last_ck = time.monotonic()
    base_elapsed = state.elapsed
    bar = tqdm(total=1000, desc="pretrain", unit="‰", disable=not progress or not ranks.main,
               bar_format="{l_bar}{bar}| {n}/{total}‰ [{elapsed}<{remaining}{postfix}]")
    losses, stop = [], ranks.world == 1 and _too_late(s, 0.0)  # (ranks decide together, after each step)
    late = stop
    while not stop:
        p = progress_of(s, state)
        if p >= 1.0 or (stop_at_step is not None and state.step >= stop_at_step):
            break
        for g in s.optimizer.param_groups:
            g["lr"] = g["base_lr"] * session_lr_factor(pc, p, state.elapsed)
        group = _take(stream, group_size)
        if len(group) < ranks.world:  # the data's end: not a micro-batch left for every rank
            break
        step, want = _step(s, state, group)
        step, state.elapsed, late = all_ranks(step, base_elapsed + time.monotonic() - session_start, ranks, want)
        state.step, state.micro = state.step + 1, state.micro + len(group)
        state.tokens, state.trained_tokens = state.tokens + step.tokens, state.trained_tokens + step.trained_tokens
        state.flops += s.flop_model.flops([max(len(e) for e in b) for _, b in group for _ in b], step.trained_tokens)
        losses.append(step.loss)
        _show(bar, s, state, losses)
        if pc.eval_every > 0 and state.step % pc.eval_every == 0:
            if ranks.main and _too_late(s, s.eval_s):
                log.info("eval step %d skipped: the budget's end is near (the final evaluation follows)", state.step)
            elif ranks.main:
                record_eval(s, state, float(np.mean(losses)))
            losses = []
        if ranks.main and time.monotonic() - last_ck >= pc.checkpoint_every_s:
            save_all(s, state)
            last_ck = time.monotonic()
        stop = late or len(group) < group_size
    bar.close()
    state.elapsed = base_elapsed + time.monotonic() - session_start
    if late:
        log.info("pretrain: the budget's end is near; this session stops at step %d (resume with the same --out)",
                 state.step)
    return float(np.mean(losses)) if losses else float("nan")


def _step(s: Session, state: State, group: list) -> tuple[StepResult, bool]:
    """One optimiser step on this rank's share of the group; (its result, whether rank 0 wants the session to end:
    the next step and the session's end would not fit before the deadline)."""
    ranks = s.ranks
    device = next(s.model.parameters()).device
    micro = group[ranks.rank::ranks.world]  # this rank's share of the step's micro-batches
    state.epoch = group[-1][0]
    if log.isEnabledFor(logging.DEBUG):
        log.debug("rank %d step %d micro-batches %s", ranks.rank, state.step + 1,
                  " ".join(fingerprint(b) for _, b in micro))
    t0 = time.monotonic()
    if s.tuner is not None:
        s.tuner.before()
    step = train_step(s.trainer or s.model, [collate(b, s.codec.pad, device) for _, b in micro],
                      s.precision.optimizer, s.params, s.cfg.pretrain.max_grad_norm, s.precision.autocast)
    if s.tuner is not None:
        s.tuner.after(step.tokens)
    s.step_s = time.monotonic() - t0
    return step, _too_late(s, 0.0)


def progress_of(s: Session, state: State) -> float:
    """progress_fraction of the session's schedule where `state` stands."""
    return progress_fraction(s.cfg.pretrain, state.step, state.elapsed, state.micro, s.micro_per_epoch, state.tokens,
                             state.flops)


def _too_late(s: Session, extra: float) -> bool:
    """Whether `extra` seconds of work, then a step and the session's end, would pass the deadline."""
    return s.deadline is not None and time.monotonic() + extra + s.reserve() >= s.deadline


def _show(bar, s: Session, state: State, losses: list[float]) -> None:
    """The progress bar after a step: how far, loss, speed, learning rate, epoch."""
    bar.n = int(1000 * progress_of(s, state))
    bar.set_postfix_str(f"step {state.step} loss {np.mean(losses):.3f} "
                        f"{state.tokens / max(state.elapsed, 1e-9):,.0f} tok/s "
                        f"lr {s.optimizer.param_groups[0]['lr']:.2e} ep {state.epoch}", refresh=True)


def _take(stream, n: int) -> list:
    """Up to n items of an iterator (fewer at its end)."""
    out = []
    for item in stream:
        out.append(item)
        if len(out) == n:
            break
    return out

def write_curve(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, list(dict.fromkeys(k for r in rows for k in r)))  # rows of older sessions may lack some
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(path, text.getvalue())


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
