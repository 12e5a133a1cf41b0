"""Task embeddings and a nearest-neighbour index over a library of solved tasks.

Two embeddings of a task: `features` (model-free: colour histograms of inputs and outputs, size ratios, how much a
same-shape output changes), and `model_embeddings` (the base model's mean last hidden state over the task's demos,
encoded by the codec; batched, cached on disk per model and task set). `Index` holds unit vectors and answers
nearest neighbours by cosine similarity with numpy; `library` loads a task set less every evaluation-split and
held-out task, by id or by content (solver.tasks.drop_protected), so neighbours never leak them into measurements.

The model embedding takes the model (and an adapter to switch off while embedding: the base model's view of a task);
it never trains one. Knows nothing of training loops, TTT data (solver.data builds neighbours' sequences) or the
run's budget.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from solver.codec import Codec
from solver.config import TTTConfig
from solver.data import fit_budget
from solver.files import write_atomic
from solver.tasks import NUM_COLORS, Task, content_key, drop_protected, load_tasks

log = logging.getLogger(__name__)

EMBEDDINGS = ("features", "model")
EMBED_MAX_TOKENS = 2048  # demos dropped (largest first) until a task's sequence fits, for the model embedding
CACHE_FORMAT = 1         # bump when what an embedding means changes; part of every cache key


# model-free features ------------------------------------------------------------------------------------------------
def _hist(grids: list[np.ndarray]) -> np.ndarray:
    """Share of cells of each colour over the grids (sums to 1)."""
    counts = sum(np.bincount(g.reshape(-1), minlength=NUM_COLORS) for g in grids)
    return counts / max(1, counts.sum())


def _present(grids: list[np.ndarray]) -> np.ndarray:
    """Fraction of the grids in which each colour appears."""
    return np.mean([np.bincount(g.reshape(-1), minlength=NUM_COLORS) > 0 for g in grids], axis=0)


def features(task: Task) -> np.ndarray:
    """A model-free float32 vector of a task's demos: colours, shapes, size ratios and changes in and out."""
    ins, outs = [a for a, _ in task.train], [b for _, b in task.train]
    same = [a.shape == b.shape for a, b in task.train]
    changed = [float(np.mean(a != b)) for (a, b), s in zip(task.train, same) if s]
    ratio = np.log2([[b.shape[0] / a.shape[0], b.shape[1] / a.shape[1]] for a, b in task.train])
    sizes = np.array([[a.shape[0], a.shape[1], b.shape[0], b.shape[1]] for a, b in task.train]) / 30.0
    ncol_in = np.mean([len(np.unique(a)) for a in ins]) / NUM_COLORS
    ncol_out = np.mean([len(np.unique(b)) for b in outs]) / NUM_COLORS
    new_colors = np.mean([len(set(np.unique(b)) - set(np.unique(a))) > 0 for a, b in task.train])
    scalars = [np.mean(same), np.mean(changed) if changed else 0.0, ncol_in, ncol_out, new_colors,
               float(all(b.shape == outs[0].shape for b in outs))]
    parts = [_hist(ins), _hist(outs), _present(ins), _present(outs), ratio.mean(0), np.abs(ratio).mean(0),
             sizes.mean(0), np.asarray(scalars)]
    return np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1) for p in parts]).astype(np.float32)


# model embeddings ---------------------------------------------------------------------------------------------------
def demo_sequence(task: Task, codec: Codec, max_tokens: int = EMBED_MAX_TOKENS) -> np.ndarray:
    """Token ids of all the task's demos (the last one as query and answer), largest demos dropped to fit."""
    *context, (q, a) = task.train
    unit = fit_budget(codec, (context, q, a), max_tokens)
    if unit is None:  # even the last demo alone is too long: its input only, cut
        return codec.encode([], q).ids[:max_tokens]
    return codec.encode(*unit).ids


def model_fingerprint(loaded) -> str:
    """Names a model's weights: its spec, and a checksum of every parameter tensor."""
    import torch
    h = hashlib.sha256(loaded.spec.encode())
    with torch.no_grad():
        for name, p in loaded.model.named_parameters():
            if "lora_" in name:
                continue  # an attached adapter does not change what the base model embeds (it is disabled)
            h.update(name.encode())
            h.update(np.float64(p.double().sum().item()).tobytes())
    return h.hexdigest()[:16]


def taskset_fingerprint(tasks: list[Task]) -> str:
    """Names a task set by its ids and demos."""
    h = hashlib.sha256(str(CACHE_FORMAT).encode())
    for t in tasks:
        h.update(t.id.encode())
        for a, b in t.train:
            h.update(bytes(a.shape) + a.tobytes() + bytes(b.shape) + b.tobytes())
    return h.hexdigest()[:16]


def _embed_batch(model, seqs: list[np.ndarray], pad: int) -> np.ndarray:
    """Mean last hidden state over each sequence's real tokens."""
    import torch
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad, dtype=np.int64)
    attn = np.zeros((len(seqs), width), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, :len(s)], attn[i, :len(s)] = s, 1
    device = next(model.parameters()).device
    ids_t, attn_t = torch.from_numpy(ids).to(device), torch.from_numpy(attn).to(device)
    out = model(input_ids=ids_t, attention_mask=attn_t, output_hidden_states=True, use_cache=False)
    h = out.hidden_states[-1].float()
    m = attn_t.unsqueeze(-1).float()
    return ((h * m).sum(1) / m.sum(1)).cpu().numpy()


def model_embeddings(loaded, tasks: list[Task], cache_dir: str | Path | None = None, batch_tokens: int = 8192,
                     max_tokens: int = EMBED_MAX_TOKENS, adapter=None) -> np.ndarray:
    """[len(tasks), hidden] float32: each task's mean hidden state under the base model; cached on disk.

    The cache file is named by the model's fingerprint and the task set's; a hit returns the stored array. With an
    attached adapter, pass it: it is disabled while embedding (the base model embeds).
    """
    import contextlib

    import torch
    from solver.model import cache_root
    if not tasks:
        return np.zeros((0, 0), dtype=np.float32)
    path = cache_root(cache_dir) / "embeddings" / \
        f"{model_fingerprint(loaded)}-{taskset_fingerprint(tasks)}-{max_tokens}.npy"
    if path.is_file():
        return np.load(path)
    seqs = [demo_sequence(t, loaded.codec, max_tokens) for t in tasks]
    order = np.argsort([len(s) for s in seqs], kind="stable")
    rows: dict[int, np.ndarray] = {}
    batch: list[int] = []
    was_training = loaded.model.training
    loaded.model.eval()
    ctx = adapter.disabled() if adapter is not None else contextlib.nullcontext()
    with torch.no_grad(), ctx:
        for i in list(order) + [None]:
            if i is not None and (not batch or (len(batch) + 1) * len(seqs[i]) <= batch_tokens):
                batch.append(int(i))
                continue
            if batch:
                for j, v in zip(batch, _embed_batch(loaded.model, [seqs[j] for j in batch], loaded.codec.pad)):
                    rows[j] = v
            batch = [int(i)] if i is not None else []
    if was_training:
        loaded.model.train()
    out = np.stack([rows[i] for i in range(len(tasks))]).astype(np.float32)
    write_atomic(path, partial(_save_npy, out))
    return out


def _save_npy(array: np.ndarray, path: Path) -> None:
    with open(path, "wb") as f:  # a file object: np.save would add '.npy' to a path's name
        np.save(f, array)


def embed_tasks(tasks: list[Task], kind: str = "features", loaded=None, cache_dir: str | Path | None = None,
                adapter=None) -> np.ndarray:
    """[len(tasks), d] vectors of the named embedding ('features' or 'model', which needs the loaded model)."""
    if kind not in EMBEDDINGS:
        raise ValueError(f"unknown task embedding '{kind}' (choose from {', '.join(EMBEDDINGS)})")
    if kind == "model":
        if loaded is None:
            raise ValueError("the 'model' task embedding needs the loaded model")
        return model_embeddings(loaded, tasks, cache_dir, adapter=adapter)
    return np.stack([features(t) for t in tasks]) if tasks else np.zeros((0, 0), np.float32)


# index --------------------------------------------------------------------------------------------------------------
def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.atleast_2d(np.asarray(x, dtype=np.float32))
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclass
class Index:
    """Task ids and their unit-length embeddings; nearest neighbours by cosine similarity."""
    ids: list[str]
    vectors: np.ndarray  # [n, d], rows of unit length

    @classmethod
    def build(cls, ids: list[str], vectors: np.ndarray) -> Index:
        if len(ids) != len(vectors):
            raise ValueError(f"index: {len(ids)} ids for {len(vectors)} vectors")
        return cls(list(ids), unit_rows(vectors) if len(ids) else np.zeros((0, 0), np.float32))

    def __len__(self) -> int:
        return len(self.ids)

    def nearest(self, vector: np.ndarray, k: int = 1,
                exclude: set[str] | frozenset = frozenset()) -> list[tuple[str, float]]:
        """The k (id, cosine similarity) closest to vector, best first (ties by id), ids in exclude skipped."""
        if not self.ids or k <= 0:
            return []
        sims = self.vectors @ unit_rows(vector)[0]
        order = np.lexsort((np.array(self.ids), -sims))
        return [(self.ids[i], float(sims[i])) for i in order if self.ids[i] not in exclude][:k]


def library(spec: str, exclude_protected: bool = True) -> dict[str, Task]:
    """Valid tasks of a task SPEC (arc1:train, arc2:train, a directory), less every task of an evaluation split or
    the held-out slice, by id or by content (solver.tasks.drop_protected; one log line of what was dropped)."""
    tasks = {tid: t for tid, t in load_tasks(spec).items() if t.valid and t.train}
    if exclude_protected:
        tasks, _ = drop_protected(tasks, f"neighbour library {spec}")
    return tasks


class Neighbours:
    """A library of solved tasks indexed by one embedding: a task's k nearest library tasks (never itself)."""

    def __init__(self, tasks: dict[str, Task], kind: str = "features", loaded=None, adapter=None,
                 cache_dir: str | Path | None = None):
        self.tasks, self.kind, self.loaded, self.adapter, self.cache_dir = tasks, kind, loaded, adapter, cache_dir
        self.index = Index.build(list(tasks), self.embed(list(tasks.values())))

    @classmethod
    def from_config(cls, cfg: TTTConfig, loaded=None, adapter=None, cache_dir: str | Path | None = None) -> Neighbours:
        lib = library(cfg.neighbour_library)
        log.info("neighbour library %s: %d tasks (held-out slice removed), %s embedding", cfg.neighbour_library,
                 len(lib), cfg.neighbour_embedding)
        return cls(lib, cfg.neighbour_embedding, loaded, adapter, cache_dir)

    def embed(self, tasks: list[Task]) -> np.ndarray:
        return embed_tasks(tasks, self.kind, self.loaded, self.cache_dir, self.adapter)

    def find(self, task: Task, k: int) -> list[Task]:
        """The k library tasks nearest to task (its own id excluded), best first."""
        own = content_key(task) if task.train else None
        copies = {i for i, t in self.tasks.items() if own is not None and t.train and content_key(t) == own}
        hits = self.index.nearest(self.embed([task])[0], k, exclude={task.id} | copies)  # never its own copy
        log.info("task %s: neighbours %s", task.id, ", ".join(f"{i} ({s:.3f})" for i, s in hits))
        return [self.tasks[i] for i, _ in hits]
