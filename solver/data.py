"""Training sequences: what TTT, pretraining and neighbour data train on, and how they are batched.

Owns the units of in-context training (leave-one-out over a task's pairs, or each demo alone), the per-sequence token
budget (context demos dropped, largest first, never the query), TTT's augmented and de-duplicated sequences of one
task, neighbours' sequences and their share, pretraining's epochs over whole task sets, the one length-bucketed
batching and the one collate. Pure functions over tasks and the codec (torch only inside `collate`).

Knows nothing of models, optimisers, decoding or the run's budget.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np

from solver.augment import sample_transforms
from solver.codec import IGNORE, Codec, Encoded, PromptFormat
from solver.config import PretrainConfig, TTTConfig
from solver.tasks import HELDOUT_SOURCE, Grid, Task, is_heldout, load_tasks

log = logging.getLogger(__name__)

Pair = tuple[Grid, Grid]
Unit = tuple[list[Pair], Grid, Grid]  # context demos, query input, query output
AUGMENTATIONS = {"dihedral", "colors", "order"}  # the kinds sample_transforms can switch on and off


# units and the token budget -----------------------------------------------------------------------------------------
def leave_one_out(pairs: list[Pair]) -> list[Unit]:
    """Each pair in turn as the query, the others (in order) as its context."""
    return [(pairs[:j] + pairs[j + 1:], a, b) for j, (a, b) in enumerate(pairs)]


def direct(pairs: list[Pair]) -> list[Unit]:
    """Each pair alone, without context (the 'direct input->output' ablation)."""
    return [([], a, b) for a, b in pairs]


def fit_budget(codec: PromptFormat, unit: Unit, max_tokens: int) -> Unit | None:
    """The unit with the largest context demos dropped until it fits max_tokens; None if the query alone does not."""
    demos, q, a = unit
    demos = list(demos)
    while codec.num_tokens(demos, q, a) > max_tokens:
        if not demos:
            return None
        sizes = [x.size + y.size for x, y in demos]
        demos.pop(int(np.argmax(sizes)))
    return demos, q, a


@dataclass
class Trimmed:
    """What the token budget cut from a set of units: units that lost demos (and how many), units dropped whole."""
    units: int = 0
    demos: int = 0
    dropped: int = 0

    def describe(self, max_tokens: int) -> str:
        return (f"{self.units} sequences lost {self.demos} context demos, {self.dropped} dropped whole "
                f"(budget {max_tokens} tokens)")


def fitted_sequences(codec: PromptFormat, units: list[Unit], max_tokens: int, train_demo_outputs: bool,
                     trimmed: Trimmed) -> list[Encoded]:
    """Each unit within the token budget, encoded; what was cut is counted in `trimmed`."""
    out = []
    for unit in units:
        fitted = fit_budget(codec, unit, max_tokens)
        if fitted is None:
            trimmed.dropped += 1
            continue
        if len(fitted[0]) < len(unit[0]):
            trimmed.units += 1
            trimmed.demos += len(unit[0]) - len(fitted[0])
        out.append(codec.encode(*fitted, train_demo_outputs=train_demo_outputs))
    return out


def fit_prompt(task: Task, test_index: int, codec: PromptFormat, max_tokens: int) -> tuple[Task, int]:
    """The task with the largest demos dropped until the prompt of test input `test_index` (every demo, the query)
    fits max_tokens: the same rule as training's (`fit_budget`), never the query; (task, demos dropped)."""
    fitted = fit_budget(codec, (list(task.train), task.test_inputs[test_index], None), max_tokens)
    kept = fitted[0] if fitted is not None else []
    if len(kept) == len(task.train):
        return task, 0
    return Task(task.id, kept, task.test_inputs, task.test_outputs), len(task.train) - len(kept)


def augmentation_kinds(names) -> dict[str, bool]:
    """sample_transforms' switches from a list of kind names; unknown names are an error."""
    unknown = set(names) - AUGMENTATIONS
    if unknown:
        raise ValueError(f"unknown augmentations {sorted(unknown)} (choose from {sorted(AUGMENTATIONS)})")
    return {k: k in names for k in AUGMENTATIONS}


# one task's TTT sequences -------------------------------------------------------------------------------------------
def build_examples(task: Task, codec: PromptFormat, cfg: TTTConfig, seed: int = 0) -> list[Encoded]:
    """The task's training sequences: unique, within the token budget, at most cfg.max_examples.

    The un-augmented sequences come first; the augmented ones are a seeded random choice among the rest. Trimming
    by the token budget is logged once per task.
    """
    if cfg.data_format not in ("loo", "direct"):
        raise ValueError(f"unknown TTT data_format '{cfg.data_format}' (choose loo or direct)")
    kinds = augmentation_kinds(cfg.augmentations)
    n = cfg.num_transforms if cfg.augment else 1
    transforms = sample_transforms(task, n, seed, keep_background=cfg.keep_background, **kinds)
    make_units = leave_one_out if cfg.data_format == "loo" else direct
    first, rest, seen, trimmed = [], [], set(), Trimmed()
    for k, t in enumerate(transforms):
        for enc in fitted_sequences(codec, make_units(t.apply_task(task).train), cfg.max_tokens,
                                    cfg.train_demo_outputs, trimmed):
            key = enc.ids.tobytes()
            if key not in seen:
                seen.add(key)
                (first if k == 0 and t.is_identity else rest).append(enc)
    if trimmed.units or trimmed.dropped:
        log.info("task %s: TTT data trimmed: %s", task.id, trimmed.describe(cfg.max_tokens))
    rng = np.random.default_rng(seed)
    rest = [rest[i] for i in rng.permutation(len(rest))]
    return (first + rest)[:cfg.max_examples]


def neighbour_examples(neighbours: list[Task], codec: PromptFormat, cfg: TTTConfig, seed: int = 0) -> list[Encoded]:
    """The neighbours' TTT sequences, built as a task's own (same augmentations, budget, de-duplication), interleaved
    task by task so that any prefix draws on every neighbour."""
    per_task = [build_examples(t, codec, replace(cfg, neighbours=0), seed + 1 + i) for i, t in enumerate(neighbours)]
    out = []
    for j in range(max((len(e) for e in per_task), default=0)):
        out += [e[j] for e in per_task if j < len(e)]
    return out


def mix(own: list[Encoded], others: list[Encoded], share: float, cap: int) -> tuple[list[Encoded], list[Encoded]]:
    """(own, others) cut so that others are `share` of at most `cap` sequences in all (own first to fill the rest)."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"neighbour share {share} is not in [0, 1)")
    total = min(cap, len(own) + len(others))
    n_other = min(len(others), int(round(share * total)))
    n_own = min(len(own), total - n_other)
    n_other = min(len(others), total - n_own)
    return own[:n_own], others[:n_other]


# pretraining data ---------------------------------------------------------------------------------------------------
def load_training(specs: list[str], allow_eval: bool = False) -> dict[str, Task]:
    """Valid tasks of every source (`SPEC[:WEIGHT]`, weights ignored here; generated example lists give one pass's
    tasks), less every evaluation-split and held-out task by id or content (solver.tasks.drop_protected, one log line
    per source; `allow_eval` keeps evaluation tasks); ids repeated across specs get the spec as a prefix."""
    from solver.sources import open_source
    pc = PretrainConfig(data=list(specs), allow_eval_data=allow_eval)
    out: dict[str, Task] = {}
    for text in specs:
        src = open_source(text, pc)
        keys = src.keys if hasattr(src, "keys") else None
        tasks = src.draw(0, src.size, pc.seed)
        for tid, t in zip(keys or [t.id for t in tasks], tasks):
            out[tid if tid not in out else f"{src.name}/{tid}"] = t
    if not out:
        raise ValueError(f"no training tasks in {specs} (after removing protected splits and invalid tasks)")
    return out


def mixture_stream(mixture, codec: PromptFormat, pc: PretrainConfig, start: int = 0) -> Iterator[tuple[int, list]]:
    """(epoch, micro-batch) of a solver.sources.Mixture from micro-batch number `start` on: each epoch's tasks in
    windows of `pc.window_tasks` (shuffled across sources first when there are several windows), each window's
    sequences length-bucketed. One source in one window is `batch_stream` over its tasks, batch for batch."""
    epoch, seen = 0, 0
    while pc.epochs <= 0 or epoch < pc.epochs:
        count = 0
        for batches in window_batches(mixture.epoch(epoch), codec, pc, epoch):
            count += len(batches)
            skip = max(0, start - seen)
            for b in batches[skip:]:
                yield epoch, b
            seen += len(batches)
        if not count:
            raise ValueError("no training sequence fits max_tokens; raise pretrain.max_tokens")
        epoch += 1


def window_batches(tasks: list[Task], codec: PromptFormat, pc: PretrainConfig, epoch: int) -> Iterator[list[list]]:
    """An epoch's micro-batches, window by window (the order and seeds of `epoch_batches` for a single window)."""
    size = max(1, pc.window_tasks)
    if len(tasks) > size:
        tasks = [tasks[i] for i in np.random.default_rng(epoch_seed(pc.seed, epoch, -2 ** 31)).permutation(len(tasks))]
    for w, first in enumerate(range(0, len(tasks), size)):
        examples = [e for i, t in enumerate(tasks[first:first + size], first)
                    for e in task_sequences(t, codec, pc, epoch_seed(pc.seed, epoch, i))]
        rng = np.random.default_rng(epoch_seed(pc.seed, epoch, -1 - w))
        yield [[examples[i] for i in b] for b in length_batches([len(e) for e in examples], rng,
                                                               tokens=pc.batch_tokens)]


def task_tokens(task: Task, codec: PromptFormat) -> int:
    """Tokens of the task's longest test sequence (all demos as context, the test output as answer)."""
    outs = task.test_outputs or [q for q in task.test_inputs]
    return max(codec.num_tokens(task.train, q, a) for q, a in zip(task.test_inputs, outs))


def heldout_tasks(limit: int | None = None, max_tokens: int | None = None) -> dict[str, Task]:
    """The held-out ARC-AGI-1 training tasks, smallest first (prompt + answer tokens of the largest test), capped."""
    codec = Codec.compact()
    tasks = [t for tid, t in load_tasks(HELDOUT_SOURCE).items() if is_heldout(tid) and t.valid]
    sized = sorted((task_tokens(t, codec), t.id, t) for t in tasks)
    keep = [t for n, _, t in sized if max_tokens is None or n <= max_tokens]
    return {t.id: t for t in keep[:limit]}


def all_pairs(task: Task) -> list[Pair]:
    """Demos and, where outputs are known, test pairs: the task's every input/output pair."""
    tests = list(zip(task.test_inputs, task.test_outputs)) if task.test_outputs is not None else []
    return list(task.train) + tests


def epoch_seed(seed: int, epoch: int, index: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{epoch}:{index}".encode()).digest()[:8], "big")


def task_sequences(task: Task, codec: PromptFormat, pc: PretrainConfig, seed: int) -> list[Encoded]:
    """One random augmentation of the task (identity allowed), and every pair in turn as the query."""
    kinds = augmentation_kinds(pc.augmentations)
    whole = Task(task.id, all_pairs(task), [])
    if len(whole.train) < 2:
        return []
    (t,) = sample_transforms(whole, 1, seed, include_identity=False, keep_background=pc.keep_background, **kinds) \
        or [sample_transforms(whole, 1, seed)[0]]
    return fitted_sequences(codec, leave_one_out(t.apply_task(whole).train), pc.max_tokens, pc.train_demo_outputs,
                            Trimmed())


def epoch_examples(tasks: list[Task], codec: PromptFormat, pc: PretrainConfig, epoch: int) -> list[Encoded]:
    """The epoch's sequences: fresh augmentations, a function of (seed, epoch) only."""
    return [e for i, t in enumerate(tasks) for e in task_sequences(t, codec, pc, epoch_seed(pc.seed, epoch, i))]


def epoch_batches(tasks: list[Task], codec: PromptFormat, pc: PretrainConfig, epoch: int) -> list[list[Encoded]]:
    examples = epoch_examples(tasks, codec, pc, epoch)
    rng = np.random.default_rng(epoch_seed(pc.seed, epoch, -1))
    return [[examples[i] for i in b] for b in length_batches([len(e) for e in examples], rng, tokens=pc.batch_tokens)]


def batch_stream(tasks: list[Task], codec: PromptFormat, pc: PretrainConfig, start: int = 0) -> Iterator[tuple[int, list]]:
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


# batching -----------------------------------------------------------------------------------------------------------
def length_batches(lengths: list[int], rng: np.random.Generator, *, rows: int | None = None,
                   tokens: int | None = None) -> list[list[int]]:
    """Index batches of similar lengths, in random order: little padding.

    Sorted by length (ties at random), a batch is filled while it has fewer than `rows` sequences and
    (sequences + 1) x the newest length stays within `tokens` (padding included); a sequence longer than `tokens`
    gets a batch of its own.
    """
    order = np.lexsort((rng.random(len(lengths)), np.asarray(lengths)))
    batches, cur = [], []
    for i in order.tolist():
        if cur and ((rows is not None and len(cur) >= rows)
                    or (tokens is not None and (len(cur) + 1) * lengths[i] > tokens)):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(examples: list[Encoded], pad_id: int, device=None) -> dict:
    """Right-padded input_ids, attention_mask and labels (IGNORE off the mask and on padding) as torch tensors, on
    `device` when given."""
    import torch
    width = max(len(e) for e in examples)
    ids = np.full((len(examples), width), pad_id, dtype=np.int64)
    labels = np.full((len(examples), width), IGNORE, dtype=np.int64)
    attn = np.zeros((len(examples), width), dtype=np.int64)
    for i, e in enumerate(examples):
        ids[i, :len(e)], labels[i, :len(e)], attn[i, :len(e)] = e.ids, e.labels(), 1
    batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(attn),
             "labels": torch.from_numpy(labels)}
    return batch if device is None else {k: v.to(device) for k, v in batch.items()}
