"""Per-task test-time training: the training sequences made from one task, and the loop that trains an adapter on them.

Data: leave-one-out tasks (each demo in turn is the query, the others its context) or, for the 'direct' ablation,
each demo alone; multiplied by sampled augmentations; duplicates removed; capped; a per-sequence token budget kept by
dropping context demos (never the query), then whole examples. The loss mask is the codec's.

Training: length-bucketed batches, AdamW with warm-up and a schedule, logits computed only at trained positions,
stopping cleanly before a caller's deadline (a `time.monotonic()` value). `loop="hf"` runs the same data through
`transformers.Trainer` instead (measured against the package's loop in `bench ttt`).

Knows nothing of decoding, voting or the run's budget rules; the adapter's state lives in solver/adapter.py.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np

from solver.augment import sample_transforms
from solver.codec import IGNORE, Codec, Encoded
from solver.config import TTTConfig
from solver.tasks import Grid, Task

log = logging.getLogger(__name__)

Pair = tuple[Grid, Grid]
Unit = tuple[list[Pair], Grid, Grid]  # context demos, query input, query output
AUGMENTATIONS = {"dihedral", "colors", "order"}  # the kinds sample_transforms can switch on and off


# data ---------------------------------------------------------------------------------------------------------------
def leave_one_out(train: list[Pair]) -> list[Unit]:
    """Each demo in turn as the query, the others (in order) as its context."""
    return [(train[:j] + train[j + 1:], a, b) for j, (a, b) in enumerate(train)]


def direct(train: list[Pair]) -> list[Unit]:
    """Each demo alone, without context (the 'direct input->output' ablation)."""
    return [([], a, b) for a, b in train]


def fit_budget(codec: Codec, unit: Unit, max_tokens: int) -> Unit | None:
    """The unit with the largest context demos dropped until it fits max_tokens; None if the query alone does not."""
    demos, q, a = unit
    demos = list(demos)
    while codec.num_tokens(demos, q, a) > max_tokens:
        if not demos:
            return None
        sizes = [x.size + y.size for x, y in demos]
        demos.pop(int(np.argmax(sizes)))
    return demos, q, a


def build_examples(task: Task, codec: Codec, cfg: TTTConfig, seed: int = 0) -> list[Encoded]:
    """The task's training sequences: unique, within the token budget, at most cfg.max_examples.

    The un-augmented sequences come first; the augmented ones are a seeded random choice among the rest.
    """
    if cfg.data_format not in ("loo", "direct"):
        raise ValueError(f"unknown TTT data_format '{cfg.data_format}' (choose loo or direct)")
    unknown = set(cfg.augmentations) - AUGMENTATIONS
    if unknown:
        raise ValueError(f"unknown TTT augmentations {sorted(unknown)} (choose from {sorted(AUGMENTATIONS)})")
    kinds = {k: k in cfg.augmentations for k in AUGMENTATIONS}
    n = cfg.num_transforms if cfg.augment else 1
    transforms = sample_transforms(task, n, seed, keep_background=cfg.keep_background, **kinds)
    make_units = leave_one_out if cfg.data_format == "loo" else direct
    first, rest, seen, dropped = [], [], set(), 0
    for k, t in enumerate(transforms):
        for unit in make_units(t.apply_task(task).train):
            fitted = fit_budget(codec, unit, cfg.max_tokens)
            if fitted is None:
                dropped += 1
                continue
            enc = codec.encode(*fitted, train_demo_outputs=cfg.train_demo_outputs)
            key = enc.ids.tobytes()
            if key not in seen:
                seen.add(key)
                (first if k == 0 and t.is_identity else rest).append(enc)
    if dropped:
        log.info("task %s: %d TTT examples over the %d-token budget even without context, dropped",
                 task.id, dropped, cfg.max_tokens)
    rng = np.random.default_rng(seed)
    rest = [rest[i] for i in rng.permutation(len(rest))]
    return (first + rest)[:cfg.max_examples]


def make_batches(lengths: list[int], batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """Index batches of similar lengths (sorted, ties broken at random), in random order: little padding."""
    order = np.lexsort((rng.random(len(lengths)), np.asarray(lengths)))
    batches = [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(examples: list[Encoded], pad_id: int) -> dict:
    """Right-padded input_ids, attention_mask and labels (IGNORE off the mask and on padding) as torch tensors."""
    import torch
    width = max(len(e) for e in examples)
    ids = np.full((len(examples), width), pad_id, dtype=np.int64)
    labels = np.full((len(examples), width), IGNORE, dtype=np.int64)
    attn = np.zeros((len(examples), width), dtype=np.int64)
    for i, e in enumerate(examples):
        ids[i, :len(e)], labels[i, :len(e)], attn[i, :len(e)] = e.ids, e.labels(), 1
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(attn),
            "labels": torch.from_numpy(labels)}


# training -----------------------------------------------------------------------------------------------------------
@dataclass
class TTTResult:
    """What one training call did."""
    steps: int = 0
    examples: int = 0          # sequences trained on (repeats across epochs counted)
    tokens: int = 0            # real tokens forwarded (padding excluded)
    padded_tokens: int = 0     # tokens forwarded including padding
    trained_tokens: int = 0    # tokens with loss
    loss: float = float("nan")  # mean loss of the last step
    first_loss: float = float("nan")
    seconds: float = 0.0
    stopped_by_deadline: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def masked_loss(model, batch: dict):
    """Mean next-token cross-entropy over the labelled positions, computing logits only there."""
    import torch.nn.functional as F
    labels = batch["labels"]
    keep = labels[:, 1:] != IGNORE                        # position t predicts token t+1
    keep = F.pad(keep, (0, 1), value=False)
    # Right padding: under the causal mask no real token sees a pad, so no padding mask is needed, and without one
    # attention takes the fused causal kernel instead of materialising a T x T mask and probabilities.
    out = model(input_ids=batch["input_ids"], logits_to_keep=keep, use_cache=False)
    targets = labels[:, 1:][keep[:, :-1]]
    return F.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]).float(), targets)


def make_optimizer(adapter, cfg: TTTConfig):
    """AdamW over the adapter's parameter groups; the fused kernel (one call for hundreds of LoRA tensors)."""
    import torch
    return torch.optim.AdamW(adapter.param_groups(cfg.lr, cfg.embedding_lr), weight_decay=cfg.weight_decay,
                             fused=True)


def _schedule(cfg: TTTConfig, optimizer, total_steps: int):
    from transformers import get_scheduler
    return get_scheduler(cfg.schedule, optimizer, num_warmup_steps=int(cfg.warmup * total_steps),
                         num_training_steps=max(total_steps, 1))


def _time_left(deadline: float | None, step_seconds: float) -> bool:
    """Whether one more step (as long as the slowest so far) ends before the deadline."""
    return deadline is None or time.monotonic() + step_seconds < deadline


def train(adapter, examples: list[Encoded], cfg: TTTConfig, pad_id: int, deadline: float | None = None,
          seed: int = 0, progress: bool = False) -> TTTResult:
    """Train the adapter on the examples (no reset here); stop before the deadline; the model ends in eval mode."""
    if deadline is not None and time.monotonic() >= deadline:
        return TTTResult(stopped_by_deadline=True)
    if cfg.loop == "hf":
        return train_hf(adapter, examples, cfg, pad_id, deadline, seed)
    if cfg.loop != "manual":
        raise ValueError(f"unknown TTT loop '{cfg.loop}' (choose manual or hf)")
    import torch
    from tqdm import tqdm
    res, start = TTTResult(), time.monotonic()
    if not examples:
        return res
    rng = np.random.default_rng(seed)
    epochs = [make_batches([len(e) for e in examples], cfg.batch_size, rng) for _ in range(cfg.epochs)]
    total = sum(len(b) for b in epochs)
    opt = make_optimizer(adapter, cfg)
    sched = _schedule(cfg, opt, total)
    adapter.train_mode(cfg.gradient_checkpointing)
    params = [p for g in opt.param_groups for p in g["params"]]
    slowest = 0.0
    try:
        with tqdm(total=total, desc="ttt", disable=not progress, leave=False) as bar:
            for batch_idx in (b for epoch in epochs for b in epoch):
                if not _time_left(deadline, slowest):
                    res.stopped_by_deadline = True
                    break
                t0 = time.monotonic()
                batch = collate([examples[i] for i in batch_idx], pad_id)
                loss = masked_loss(adapter.model, batch)
                loss.backward()
                if cfg.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                res.loss = float(loss.detach())
                res.first_loss = res.loss if res.steps == 0 else res.first_loss
                res.steps += 1
                res.examples += len(batch_idx)
                res.tokens += int(batch["attention_mask"].sum())
                res.padded_tokens += batch["input_ids"].numel()
                res.trained_tokens += int((batch["labels"] != IGNORE).sum())
                slowest = max(slowest, time.monotonic() - t0)
                bar.update(1)
                bar.set_postfix(loss=f"{res.loss:.3f}")
    finally:
        adapter.eval_mode()
    res.seconds = time.monotonic() - start
    return res


def train_hf(adapter, examples: list[Encoded], cfg: TTTConfig, pad_id: int, deadline: float | None = None,
             seed: int = 0) -> TTTResult:
    """The same training through transformers.Trainer (its loss: logits at every position)."""
    import tempfile

    import torch
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    res, start = TTTResult(), time.monotonic()
    if not examples:
        return res
    rows = [{"input_ids": e.ids, "labels": e.labels(), "length": len(e)} for e in examples]

    class Stop(TrainerCallback):
        slowest, t0 = 0.0, 0.0

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.monotonic()

        def on_step_end(self, args, state, control, **kw):
            self.slowest = max(self.slowest, time.monotonic() - self.t0)
            if not _time_left(deadline, self.slowest):
                res.stopped_by_deadline = control.should_training_stop = True

    def collator(items):
        batch = collate([Encoded(np.asarray(r["input_ids"]), np.asarray(r["labels"]) != IGNORE) for r in items],
                        pad_id)
        res.examples += len(items)
        res.tokens += int(batch["attention_mask"].sum())
        res.padded_tokens += batch["input_ids"].numel()
        res.trained_tokens += int((batch["labels"] != IGNORE).sum())
        return batch

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=cfg.batch_size, num_train_epochs=cfg.epochs,
            learning_rate=cfg.lr, weight_decay=cfg.weight_decay, lr_scheduler_type=cfg.schedule,
            warmup_steps=cfg.warmup, max_grad_norm=cfg.max_grad_norm or 1e9,
            train_sampling_strategy="group_by_length",  # checkpointing is the adapter's (train_mode)
            logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, seed=seed,
            use_cpu=not torch.cuda.is_available(), remove_unused_columns=False, dataloader_num_workers=0)
        opt = make_optimizer(adapter, cfg)
        trainer = Trainer(model=adapter.model, args=args, train_dataset=rows, data_collator=collator,
                          optimizers=(opt, None), callbacks=[Stop()])
        trainer.remove_callback(PrinterCallback)  # one log line per task is ours to write
        adapter.train_mode(cfg.gradient_checkpointing)
        try:
            trainer.train()
        finally:
            adapter.eval_mode()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    res.steps = trainer.state.global_step
    if losses:
        res.first_loss, res.loss = float(losses[0]), float(losses[-1])
    res.seconds = time.monotonic() - start
    return res


def train_task(adapter, task: Task, codec: Codec, cfg: TTTConfig, deadline: float | None = None, seed: int = 0,
               progress: bool = False, neighbours: list[Task] = (), start: dict | None = None) -> TTTResult:
    """Reset the adapter (or restore `start`, a warm start) and train it on one task.

    TTT off: nothing (the caller decodes with the adapter disabled). Shared adapter: no training; the adapter is put
    in the state `train_shared` left (the initial state if it never ran). `neighbours`: similar solved tasks whose
    sequences take cfg.neighbour_share of the data (solver.embed.mix), trained first or mixed in (cfg.neighbour_order).
    """
    if not cfg.enabled:
        return TTTResult()
    if cfg.shared_adapter:
        adapter.use_shared()
        return TTTResult()
    adapter.reset() if start is None else adapter.restore(start)
    examples = build_examples(task, codec, cfg, seed)
    if neighbours:
        res = _train_with_neighbours(adapter, examples, list(neighbours), codec, cfg, deadline, seed, progress)
    else:
        res = train(adapter, examples, cfg, codec.pad, deadline, seed, progress)
    log.info("task %s: TTT %d steps on %d examples, %d tokens, loss %.3f -> %.3f, %.1fs%s", task.id, res.steps,
             res.examples, res.tokens, res.first_loss, res.loss, res.seconds,
             " (stopped by deadline)" if res.stopped_by_deadline else "")
    return res


def _train_with_neighbours(adapter, own: list[Encoded], neighbours: list[Task], codec: Codec, cfg: TTTConfig,
                           deadline: float | None, seed: int, progress: bool) -> TTTResult:
    """Own and neighbour sequences at cfg.neighbour_share: one pass on both, or the neighbours' first (in their
    share of the time left), then the task's own."""
    from solver.embed import mix, neighbour_examples
    if cfg.neighbour_order not in ("first", "mixed"):
        raise ValueError(f"unknown neighbour_order '{cfg.neighbour_order}' (choose first or mixed)")
    own, extra = mix(own, neighbour_examples(neighbours, codec, cfg, seed), cfg.neighbour_share, cfg.max_examples)
    if cfg.neighbour_order == "mixed" or not extra:
        return train(adapter, own + extra, cfg, codec.pad, deadline, seed, progress)
    cut = None if deadline is None else \
        time.monotonic() + max(0.0, deadline - time.monotonic()) * len(extra) / (len(extra) + len(own))
    a = train(adapter, extra, cfg, codec.pad, cut, seed, progress)
    b = train(adapter, own, cfg, codec.pad, deadline, seed, progress)
    return TTTResult(a.steps + b.steps, a.examples + b.examples, a.tokens + b.tokens, a.padded_tokens + b.padded_tokens,
                     a.trained_tokens + b.trained_tokens, b.loss, a.first_loss, a.seconds + b.seconds,
                     b.stopped_by_deadline)


def train_shared(adapter, tasks: list[Task], codec: Codec, cfg: TTTConfig, deadline: float | None = None,
                 seed: int = 0, progress: bool = False) -> TTTResult:
    """The 'shared adapter' ablation: one training run on every task's examples together (call once, up front)."""
    if not cfg.enabled:
        return TTTResult()
    adapter.reset()
    examples = [e for t in tasks if t.valid for e in build_examples(t, codec, cfg, seed)]
    res = train(adapter, examples, cfg, codec.pad, deadline, seed, progress)
    adapter.shared = adapter.snapshot()
    log.info("shared adapter: %d steps on %d examples of %d tasks, loss %.3f -> %.3f, %.1fs", res.steps,
             res.examples, len(tasks), res.first_loss, res.loss, res.seconds)
    return res
