"""The package's shape: imports flow one way through the declared stages, and functions stay short enough to read."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "solver"
BENCH = "bench"  # solver/bench/: the benches, check-gpu and gpu-session, off the solver's one-way stack

# Lowest first: a module may import only modules before it (lazy imports inside functions included).
# docs/architecture.md explains each stage; a new module must be placed here.
LAYERS = [
    # leaves: import nothing of the package
    "budget", "files", "measure", "threads", "compat", "ray_executor", "workers",
    "config",
    # data
    "tasks", "submission", "augment", "grids", "pieces", "transposition", "shapes", "local_rules", "assemble", "invariants", "search", "codec", "formats", "sources", "data", "plan",
    # models and training
    "shipped", "attached", "trimmed", "model", "adapter", "train", "precision", "ttt",
    # decoding, then what needs decoding or a trained model
    "generate", "pretrain", "embed", "reuse", "select", "program_source", "source_registry",
    # one task, then the run and its outputs
    "results", "pipeline", "search_pass", "score", "show", "report", "run",
    # the `search` command's body, the package's public face
    "search_alone", "__init__",
    # entry points: the command line, the one part of the solver above solver/bench/ (it dispatches to it: ORDER)
    "cli", "__main__",
]
COMMAND_LINE = ["cli", "__main__"]
# solver/bench/, lowest first: its modules may import any module of the stack, and one another only downwards
BENCH_LAYERS = ["plan", "search", "selection", "pretrain", "ttt", "infer", "ablation", "check_gpu", "session", "__init__"]
# the whole order: the stack, then the subpackage (as 'bench.NAME'), then the command line
ORDER = [n for n in LAYERS if n not in COMMAND_LINE] + [f"{BENCH}.{n}" for n in BENCH_LAYERS] + COMMAND_LINE
MAX_FUNCTION_LINES = 60


def module_name(dotted: str) -> str:
    """A module's name in ORDER: 'solver.X.y' -> 'X', 'solver.bench.Y.z' -> 'bench.Y', 'solver.bench' ->
    'bench.__init__'."""
    parts = dotted.split(".")[1:]
    if parts[0] != BENCH:
        return parts[0]
    return f"{BENCH}.{parts[1]}" if len(parts) > 1 else f"{BENCH}.__init__"


def package_imports(source: str) -> set[str]:
    """Names (as module_name gives them) of the package's modules that a module's source imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module in ("solver", f"solver.{BENCH}"):
            found.update(module_name(f"{node.module}.{a.name}") for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("solver."):
            found.add(module_name(node.module))
        elif isinstance(node, ast.Import):
            found.update(module_name(a.name) for a in node.names if a.name.startswith("solver."))
    return found


def back_edges(sources: dict[str, str], layers: list[str]) -> list[str]:
    """'a -> b' for every import of a module at or above the importer in `layers`, and every unplaced module."""
    rank = {name: i for i, name in enumerate(layers)}
    problems = [f"{name}: not placed in LAYERS" for name in sources if name not in rank]
    for name, source in sources.items():
        for dep in sorted(package_imports(source)):
            if name in rank and dep in rank and rank[dep] >= rank[name]:
                problems.append(f"{name} -> {dep}")
    return problems


def package_sources() -> dict[str, str]:
    """Every module's source by its name in ORDER: solver/*.py, then solver/bench/*.py as 'bench.NAME'."""
    sources = {p.stem: p.read_text() for p in sorted(PACKAGE.glob("*.py"))}
    return sources | {f"{BENCH}.{p.stem}": p.read_text() for p in sorted((PACKAGE / BENCH).glob("*.py"))}


def test_imports_flow_one_way():
    assert back_edges(package_sources(), ORDER) == []


def test_every_module_is_placed_and_exists():
    assert sorted(package_sources()) == sorted(ORDER) and len(set(ORDER)) == len(ORDER)
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__") == [BENCH]


def test_imports_are_absolute():
    """package_imports reads `solver.`-absolute imports only: a relative one would pass the checks unseen."""
    relative = [f"{name}:{n.lineno}" for name, source in package_sources().items() for n in ast.walk(ast.parse(source))
                if isinstance(n, ast.ImportFrom) and n.level]
    assert relative == []


def test_a_back_edge_is_caught_even_inside_a_function():
    sources = {"tasks": "def f():\n    from solver.ttt import train\n", "ttt": "from solver.tasks import Task\n",
               "stray": "import solver.tasks\n"}
    assert back_edges(sources, ["tasks", "ttt"]) == ["stray: not placed in LAYERS", "tasks -> ttt"]
    assert back_edges({"ttt": "from solver import tasks\n", "tasks": ""}, ["tasks", "ttt"]) == []


def test_a_solver_module_importing_the_bench_is_caught():
    """Every way of naming solver.bench or a module in it, from the stack; and a back-edge inside the subpackage."""
    sources = package_sources() | {
        "run": "def f():\n    from solver.bench.session import main\n", "tasks": "import solver.bench.plan as p\n",
        "plan": "from solver.bench import ablation\n", "ttt": "from solver import bench\n",
        "bench.plan": "from solver.bench.session import main\nfrom solver.cli import main\n"}
    assert sorted(back_edges(sources, ORDER)) == ["bench.plan -> bench.session", "bench.plan -> cli",
                                                  "plan -> bench.ablation", "run -> bench.session",
                                                  "tasks -> bench.plan", "ttt -> bench.__init__"]
    assert package_imports("from solver.bench.check_gpu import add_parser\nimport solver.tasks\n") == \
        {"bench.check_gpu", "tasks"}


@pytest.mark.parametrize("name", sorted(package_sources()))
def test_functions_fit_on_a_screen(name):
    long = [f"{n.name}: {n.end_lineno - n.lineno + 1} lines" for n in ast.walk(ast.parse(package_sources()[name]))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []


# The token layout ------------------------------------------------------------------------------------------------
FORMAT_MODULES = {"codec", "formats"}  # the only modules that know how a task is written in tokens
FORMAT_OBJECTS = {"codec", "fmt"}  # names a prompt format goes by: `codec`, `fmt`, `loaded.codec`, `self.fmt`, ...
INTERFACE_IMPORTS = {"Codec", "CodecError", "Encoded", "IGNORE", "PromptFormat", "CODEC_FILE",  # may be imported
                     "FormatError", "FORMATS", "detect_format", "load_format", "make_format"}


def interface_members(codec_source: str) -> set[str]:
    """Names declared in codec.PromptFormat's body (its attributes, properties and methods)."""
    cls = next(n for n in ast.walk(ast.parse(codec_source)) if isinstance(n, ast.ClassDef) and n.name == "PromptFormat")
    names = {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)}
    return names | {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}


def _names_format(node: ast.expr) -> bool:
    return (isinstance(node, ast.Name) and node.id in FORMAT_OBJECTS) or \
        (isinstance(node, ast.Attribute) and node.attr in FORMAT_OBJECTS)


def _plus_one(node: ast.AST) -> bool:
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add) and isinstance(node.right, ast.Constant) \
        and node.right.value == 1


def _spells_answer_length(node: ast.AST) -> bool:
    """`a * (b + 1) + 1`, or a product with a factor `(x.shape[...] + 1)`."""
    if _plus_one(node) and isinstance(node.left, ast.BinOp) and isinstance(node.left.op, ast.Mult):
        return any(_plus_one(side) for side in (node.left.left, node.left.right))
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult) and any(
        _plus_one(side) and any(isinstance(n, ast.Attribute) and n.attr == "shape" for n in ast.walk(side.left))
        for side in (node.left, node.right))


def layout_leaks(name: str, source: str, members: set[str]) -> list[str]:
    """Where a module outside the format modules reaches past the PromptFormat interface.

    Three rules, each exact on the syntax tree: (1) from solver.codec / solver.formats it imports only
    INTERFACE_IMPORTS (never SYMBOLS, DIGITS, NL, INP, OUT, EOS, ...); (2) on an object named as a format (a name or
    attribute in FORMAT_OBJECTS) it reads only PromptFormat's members (never .inp, .out, .nl, .eos, .bos, .grid_ids,
    .digit_ids); (3) it spells no answer length by hand: no `a * (b + 1) + 1` and no product with a
    `(x.shape[...] + 1)` factor (the package's own answer_length, rows * (cols + 1) + 1, and a grid's
    rows * (cols + 1)).
    """
    leaks = []
    nodes = sorted(ast.walk(ast.parse(source)), key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0)))
    for node in nodes:
        where = f"{name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.ImportFrom) and node.module in {f"solver.{m}" for m in FORMAT_MODULES}:
            leaks += [f"{where} imports {a.name}" for a in node.names if a.name not in INTERFACE_IMPORTS]
        elif isinstance(node, ast.Attribute) and _names_format(node.value) and node.attr not in members:
            leaks.append(f"{where} reads .{node.attr} of a format")
        elif _spells_answer_length(node):
            leaks.append(f"{where} spells an answer length: ask the format's answer_length")
    return leaks


def test_no_module_outside_the_formats_knows_the_token_layout():
    sources = package_sources()
    members = interface_members(sources["codec"])
    assert {"encode", "answer_length", "emit_ids", "decode_grid", "answer_ids"} <= members
    leaks = [leak for name, src in sources.items() if name not in FORMAT_MODULES
             for leak in layout_leaks(name, src, members)]
    assert leaks == []


def test_a_layout_leak_is_caught():
    source = ("from solver.codec import NL, Codec\n"
              "def f(loaded, codec, rows, cols, g, args):\n"
              "    a = loaded.codec.eos + codec.out + codec.answer_length(rows, cols) + args.out * (cols + 1)\n"
              "    return rows * (cols + 1) + 1, g.shape[0] * (g.shape[1] + 1)\n")
    assert layout_leaks("m", source, {"answer_length"}) == [
        "m:1 imports NL", "m:3 reads .eos of a format", "m:3 reads .out of a format",
        "m:4 spells an answer length: ask the format's answer_length",
        "m:4 spells an answer length: ask the format's answer_length"]
