"""Pretraining data sources: task sets and generated examples, weighted, read from disk as drawn when large, every
protected split (evaluation splits and the held-out slice, solver.tasks) removed by id and by content.

SOURCE form: `SPEC[:WEIGHT]`, SPEC any task SPEC (solver.tasks) or generated data:
  path/to/dir/        JSON files, each one task ({"train", "test"}) or a list of {"input", "output"} examples of one
                      task (re-ARC's form: `<task id>.json` holding many examples); a list becomes tasks of
                      `generated_demos` demos + 1 test, regrouped at random each pass over the file
  path/to/file.json   one such list (or any task SPEC file)
WEIGHT: the source's share of the tasks drawn each epoch, relative to the other weights (a missing one counts 1).
Without any weight the sources are concatenated: each task once per epoch.

A task set loads whole (`TaskSetSource`). A directory with example lists, or one larger than `stream_mb`, is a
`FileSource`: files are read when drawn, parsed files kept up to `cache_mb` of JSON. An epoch is a pure function of
(seed, epoch): resuming rebuilds it without any saved data state. Knows nothing of tokens or models.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from solver.tasks import HELDOUT, ID_CHARS, EVAL_SPLITS, Task, drop_protected, load_tasks, protected_index, splits_of

log = logging.getLogger(__name__)


# the SOURCE form ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SourceSpec:
    spec: str
    weight: float | None = None  # None: not given


def parse_source(text: str) -> SourceSpec:
    """'arc1:train:2' -> (arc1:train, 2.0); 'gen/' -> (gen/, None). A trailing ':NUMBER' is a weight unless the whole
    text names an existing file; a weight must be positive."""
    spec, sep, tail = text.rpartition(":")
    if not sep or Path(text).exists():
        return SourceSpec(text)
    try:
        weight = float(tail)
    except ValueError:
        return SourceSpec(text)
    if not math.isfinite(weight) or weight <= 0:
        raise ValueError(f"data source '{text}': weight {tail} is not a positive number")
    return SourceSpec(spec, weight)


def parse_count(text: str | int | float) -> int:
    """'50M' -> 50_000_000 ('k', 'M', 'G', 'B', 'T' or 'P' suffixes; plain numbers and 2e14 too; '' or 0: none)."""
    if isinstance(text, (int, float)):
        return int(text)
    t = text.strip().upper()
    if not t:
        return 0
    scale = {"K": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9, "B": 10 ** 9, "T": 10 ** 12, "P": 10 ** 15}.get(t[-1], 1)
    try:
        value = float(t[:-1] if scale > 1 else t) * scale
    except ValueError:
        raise ValueError(f"'{text}' is not a count (e.g. 50M, 2G, 1000000)") from None
    if value < 0:
        raise ValueError(f"count '{text}' is negative")
    return int(value)


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "big")


def _cycled(size: int, start: int, n: int, seed: int, name: str) -> list[int]:
    """Items start..start+n of an endless walk through 0..size-1, one seeded permutation per pass."""
    out, pos = [], start
    while len(out) < n and size > 0:
        cycle, offset = divmod(pos, size)
        perm = np.random.default_rng(_seed(seed, name, cycle)).permutation(size)
        take = min(n - len(out), size - offset)
        out += perm[offset:offset + take].tolist()
        pos += take
    return out


# in-memory task sets ------------------------------------------------------------------------------------------------
class TaskSetSource:
    """Tasks held in memory; each epoch draws its share of them in turn (`load`: a task set less protected tasks)."""

    def __init__(self, name: str, tasks: list[Task], weight: float | None = None, keys: list[str] | None = None):
        self.name, self.weight, self.tasks = name, weight, list(tasks)
        self.keys = list(keys) if keys is not None else [t.id for t in self.tasks]
        self.dropped: dict[str, int] = {}
        self.invalid = 0

    @classmethod
    def load(cls, name: str, tasks: dict[str, Task], weight: float | None, allow_eval: bool) -> TaskSetSource:
        valid = {tid: t for tid, t in tasks.items() if t.valid and t.train}
        kept, dropped = drop_protected(valid, name, allow_eval)
        src = cls(name, list(kept.values()), weight, list(kept))
        src.dropped, src.invalid = dropped, len(tasks) - len(valid)
        return src

    @property
    def size(self) -> int:
        return len(self.tasks)

    def draw(self, epoch: int, n: int, seed: int) -> list[Task]:
        """The epoch's n tasks: every task in order when n is the set's size, else the next n of seeded passes."""
        if n == self.size:
            return list(self.tasks)
        return [self.tasks[i] for i in _cycled(self.size, epoch * n, n, seed, self.name)]

    def splits(self) -> list[str]:
        return splits_of(dict(zip(self.keys, self.tasks)))


# generated examples, read from disk as drawn ------------------------------------------------------------------------
def is_example_list(path: Path) -> bool:
    """Whether a JSON file holds a list (generated examples) rather than an object: its first character."""
    with open(path, "rb") as f:
        head = f.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"[")


def read_examples(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """The valid {"input", "output"} examples of a list file; bad ones skipped and counted in one warning."""
    from solver.tasks import BadGrid, to_grid
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot be read as JSON ({e})") from None
    if not isinstance(raw, list):
        raise ValueError(f"{path}: expected a list of {{'input', 'output'}} examples")
    out, bad = [], 0
    for i, ex in enumerate(raw):
        try:
            out.append((to_grid(ex["input"], f"[{i}].input"), to_grid(ex["output"], f"[{i}].output")))
        except (BadGrid, KeyError, TypeError):
            bad += 1
    if bad:
        log.warning("%s: %d of %d examples are not valid grid pairs; skipped", path, bad, len(raw))
    return out


def group_examples(stem: str, examples: list, demos: int, slots: list[int], cycle: int, seed: int) -> list[Task]:
    """Tasks of `demos` demos + 1 test from a file's examples: group j of a seeded shuffle per pass (`cycle`) for
    each slot j (modulo the number of groups); ids `<stem>_<cycle>_<j>`."""
    size = min(demos + 1, len(examples))
    if size < 2:
        return []
    groups = len(examples) // size
    perm = np.random.default_rng(_seed(seed, stem, cycle)).permutation(len(examples))
    tasks = []
    for j in slots:
        idx = perm[(j % groups) * size:(j % groups + 1) * size]
        pairs = [examples[i] for i in idx]
        tasks.append(Task(f"{stem}_{cycle}_{j}", pairs[:-1], [pairs[-1][0]], [pairs[-1][1]]))
    return tasks


class FileSource:
    """JSON files of single tasks or example lists, read when an epoch draws them (an LRU of parsed files up to
    `cache_mb` of JSON). A file named after a protected task is skipped unread; drawn tasks whose content is
    protected are dropped and counted."""

    def __init__(self, name: str, files: list[Path], weight: float | None, allow_eval: bool, demos: int,
                 per_file: int, cache_mb: float):
        self.name, self.weight, self.demos = name, weight, demos
        self.names = (HELDOUT,) if allow_eval else EVAL_SPLITS + (HELDOUT,)
        index = protected_index()
        self.dropped = dict.fromkeys(self.names, 0)
        self.files = []
        for f in files:
            hit = [n for n in self.names if f.stem[:ID_CHARS] in index.ids[n]]
            if hit:
                self.dropped[hit[0]] += 1
            else:
                self.files.append(f)
        self.lists = [is_example_list(f) for f in self.files]
        self.slots = [(i, j) for i, lst in enumerate(self.lists) for j in range(per_file if lst else 1)]
        self.cache: OrderedDict = OrderedDict()
        self.cache_bytes, self.cache_limit = 0, cache_mb * 2 ** 20
        self.content_dropped = 0
        log.info("data %s: %d files (%d of example lists), %d skipped as protected by id: %s", name, len(files),
                 sum(self.lists), len(files) - len(self.files),
                 ", ".join(f"{n} {c}" for n, c in self.dropped.items()))

    @property
    def size(self) -> int:
        return len(self.slots)

    def _read(self, i: int):
        if i in self.cache:
            self.cache.move_to_end(i)
            return self.cache[i]
        path = self.files[i]
        if self.lists[i]:
            value = read_examples(path)
        else:
            value = next(iter(load_tasks(path).values()))
        nbytes = path.stat().st_size
        self.cache[i] = value
        self.cache_bytes += nbytes
        while self.cache_bytes > self.cache_limit and len(self.cache) > 1:
            old, _ = self.cache.popitem(last=False)
            self.cache_bytes -= self.files[old].stat().st_size
        return value

    def draw(self, epoch: int, n: int, seed: int) -> list[Task]:
        """The epoch's n tasks: the next n slots of seeded passes over (file, group) slots, each file read once."""
        start = epoch * n
        picked = _cycled(self.size, start, n, seed, self.name)
        cycle = start // max(1, self.size)
        by_file: dict[int, list[int]] = {}
        for s in picked:
            i, j = self.slots[s]
            by_file.setdefault(i, []).append(j)
        tasks = []
        for i, js in by_file.items():
            value = self._read(i)
            if self.lists[i]:
                tasks += group_examples(self.files[i].stem, value, self.demos, js, cycle, seed)
            elif value.valid and value.train:
                tasks.append(value)
        return self._drop_by_content(tasks, epoch)

    def _drop_by_content(self, tasks: list[Task], epoch: int) -> list[Task]:
        index = protected_index()
        kept = [t for t in tasks if not index.matches(t.id, t, self.names)]
        if len(kept) < len(tasks):
            self.content_dropped += len(tasks) - len(kept)
            log.info("data %s, epoch %d: %d drawn tasks dropped as protected by content (%d in all)", self.name,
                     epoch, len(tasks) - len(kept), self.content_dropped)
        return kept

    def splits(self) -> list[str]:
        """The protected splits the kept files are named after (with allow_eval_data: evaluation ones)."""
        index = protected_index()
        found = {n for f in self.files for n in index.names if f.stem[:ID_CHARS] in index.ids[n]}
        return [n for n in index.names if n in found]


def task_files(path: Path) -> list[Path]:
    """The JSON files of a generated-data SPEC: a directory's (sorted) or the file itself."""
    return sorted(path.glob("*.json")) if path.is_dir() else [path]


def open_source(text: str, pc) -> TaskSetSource | FileSource:
    """One SOURCE (`SPEC[:WEIGHT]`) with the settings of a PretrainConfig."""
    s = parse_source(text)
    path = Path(s.spec)
    if path.exists():
        files = task_files(path)
        large = sum(f.stat().st_size for f in files) > pc.stream_mb * 2 ** 20
        if files and (large or any(is_example_list(f) for f in files)):
            return FileSource(s.spec, files, s.weight, pc.allow_eval_data, pc.generated_demos,
                              pc.generated_per_file, pc.cache_mb)
    return TaskSetSource.load(s.spec, load_tasks(s.spec), s.weight, pc.allow_eval_data)


# the mixture --------------------------------------------------------------------------------------------------------
def shares(sizes: list[int], weights: list[float | None], total: int = 0) -> list[int]:
    """Tasks drawn from each source per epoch: the sizes when no weight is given (concatenation); else `total` (or
    the sizes' sum) split by the weights (a missing one counts 1), largest remainders rounded up."""
    if all(w is None for w in weights):
        return list(sizes)
    w = np.array([1.0 if x is None else x for x in weights])
    exact = (total or sum(sizes)) * w / w.sum()
    out = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - out), kind="stable")[:int(round(exact.sum())) - int(out.sum())]:
        out[i] += 1
    return [int(x) if sizes[i] else 0 for i, x in enumerate(out)]


class Mixture:
    """The training sources and what each contributes per epoch; `epoch(e)` is a pure function of (seed, e)."""

    def __init__(self, sources: list, seed: int = 0, epoch_tasks: int = 0):
        self.sources, self.seed = sources, seed
        self.draws = shares([s.size for s in sources], [s.weight for s in sources], epoch_tasks)
        if not sum(self.draws):
            raise ValueError(f"no training tasks in {[s.name for s in sources]} (after removing protected splits "
                             f"and invalid tasks)")

    @classmethod
    def of_tasks(cls, tasks: list[Task], seed: int = 0) -> Mixture:
        """A single in-memory source of these tasks (nothing dropped: they are taken as given)."""
        return cls([TaskSetSource("tasks", tasks)], seed)

    def epoch(self, e: int) -> list[Task]:
        """The epoch's tasks, every source's draws in turn (interleaved at random when there are several)."""
        parts = [s.draw(e, n, self.seed) for s, n in zip(self.sources, self.draws) if n]
        tasks = [t for p in parts for t in p]
        if len(parts) > 1:
            tasks = [tasks[i] for i in np.random.default_rng(_seed(self.seed, "mix", e)).permutation(len(tasks))]
        return tasks

    def splits(self) -> list[str]:
        """The protected splits the training data overlaps (only evaluation splits, with allow_eval_data)."""
        found = {n for s in self.sources for n in s.splits()}
        return [n for n in protected_index().names if n in found]

    def describe(self) -> str:
        return ", ".join(f"{s.name} {n}/epoch" for s, n in zip(self.sources, self.draws))


def open_mixture(pc) -> Mixture:
    """The Mixture of a PretrainConfig's `data` sources."""
    return Mixture([open_source(text, pc) for text in pc.data], pc.seed, pc.epoch_tasks)
