"""Adapter reuse across the tasks of one run: the store of trained adapters, keyed by task embedding, and the rule.

`AdapterStore` keeps, in one folder, per trained task its adapter's trainable tensors (`Adapter.snapshot`, saved
exactly) beside its embedding; it rescans the folder on every look-up, so workers sharing the folder see each other's
adapters, and a resumed run sees the previous one's. `decide` is the rule: closer than `warm` starts the task's TTT
from the nearest trained task's adapter, closer than `reuse` uses that adapter outright (no training; the time saved
returns to the run's pool, which the planner hands to the tasks after it).

Knows nothing of how adapters are trained or how tasks are embedded (solver.embed).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from solver.files import write_atomic, write_json_atomic

log = logging.getLogger(__name__)

WEIGHTS, META = "adapter.pt", "meta.json"
FRESH, WARM, REUSE = "fresh", "warm", "reuse"


@dataclass(frozen=True)
class Decision:
    """What a task does with the store: train fresh, warm-start from `source`, or reuse `source`'s adapter."""
    action: str
    source: str = ""
    similarity: float = 0.0

    def describe(self) -> str:
        """The results record's words, e.g. 'reuse:007bbfb7@0.9999'; empty for a fresh adapter."""
        return "" if self.action == FRESH else f"{self.action}:{self.source}@{self.similarity:.4f}"


def decide(nearest: tuple[str, float] | None, warm: float, reuse: float) -> Decision:
    """The rule: reuse above `reuse`, warm start above `warm`, else fresh (None: nothing trained yet)."""
    if nearest is None:
        return Decision(FRESH)
    source, sim = nearest
    if sim >= reuse:
        return Decision(REUSE, source, sim)
    if sim >= warm:
        return Decision(WARM, source, sim)
    return Decision(FRESH, source, sim)


def _safe(task_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in task_id)


class AdapterStore:
    """Adapters trained in this run, on disk in `root/<task id>/` (adapter.pt + meta.json with the embedding)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def put(self, task_id: str, embedding: np.ndarray, state: dict) -> Path:
        """Save a task's adapter state and embedding (written aside, then renamed: never half a file)."""
        import torch
        d = self.root / _safe(task_id)
        weights = {k: v.detach().cpu() for k, v in state.items()}
        write_atomic(d / WEIGHTS, lambda tmp: torch.save(weights, tmp))
        meta = {"task_id": task_id, "embedding": np.asarray(embedding, dtype=np.float64).tolist()}
        write_json_atomic(d / META, meta)  # written last: a task is in the store once its meta is there
        return d

    def entries(self) -> dict[str, np.ndarray]:
        """Task id -> embedding of every complete entry in the folder."""
        out = {}
        for meta in sorted(self.root.glob(f"*/{META}")):
            try:
                m = json.loads(meta.read_text())
            except (OSError, json.JSONDecodeError) as e:
                log.warning("adapter store: %s unreadable, skipped (%s)", meta, e)
                continue
            if (meta.parent / WEIGHTS).is_file():
                out[m["task_id"]] = np.asarray(m["embedding"], dtype=np.float32)
        return out

    def nearest(self, embedding: np.ndarray, exclude: set[str] | frozenset = frozenset()) -> tuple[str, float] | None:
        """(task id, cosine similarity) of the closest stored task, or None when there is none."""
        from solver.embed import Index
        entries = {k: v for k, v in self.entries().items() if k not in exclude}
        if not entries:
            return None
        found = Index.build(list(entries), np.stack(list(entries.values()))).nearest(embedding, 1)
        return found[0] if found else None

    def load(self, task_id: str) -> dict:
        """The stored adapter state of a task, as saved (on the CPU; Adapter.restore copies it to the model)."""
        import torch
        path = self.root / _safe(task_id) / WEIGHTS
        if not path.is_file():
            raise FileNotFoundError(f"adapter store {self.root}: no adapter for task {task_id}")
        return torch.load(path, map_location="cpu", weights_only=True)


class Reuse:
    """What one worker needs: the store, how tasks are embedded (a function of a task), and the two thresholds."""

    def __init__(self, store: AdapterStore, embed, warm: float, reuse: float):
        if not warm <= reuse:
            raise ValueError(f"reuse thresholds: warm start {warm} must not exceed outright reuse {reuse}")
        self.store, self.embed, self.warm, self.reuse = store, embed, warm, reuse

    def decide(self, task) -> tuple[Decision, np.ndarray]:
        """The decision for a task (its own earlier adapter, from a resumed run, is not a source) and its embedding."""
        vec = np.asarray(self.embed(task), dtype=np.float32)
        return decide(self.store.nearest(vec, exclude={task.id}), self.warm, self.reuse), vec

    def keep(self, task_id: str, embedding: np.ndarray, state: dict) -> None:
        self.store.put(task_id, embedding, state)
