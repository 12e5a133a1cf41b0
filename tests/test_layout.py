"""The package's shape: imports flow one way through the declared stages, and functions stay short enough to read."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "solver"

# Lowest first: a module may import only modules before it (lazy imports inside functions included).
# docs/architecture.md explains each stage; a new module must be placed here.
LAYERS = [
    # leaves: import nothing of the package
    "budget", "files", "measure", "threads", "compat", "ray_executor", "workers",
    "config",
    # data
    "tasks", "submission", "augment", "codec", "sources", "data", "plan",
    # models and training
    "shipped", "model", "adapter", "train", "precision", "ttt",
    # decoding, then what needs decoding or a trained model
    "generate", "pretrain", "embed", "reuse", "select",
    # one task, then the run and its outputs
    "results", "pipeline", "score", "show", "report", "run",
    # entry points
    "bench_plan", "bench_ttt", "bench_infer", "bench_ablation", "bench_pretrain", "check_gpu", "session", "cli", "__main__",
    "__init__",
]
MAX_FUNCTION_LINES = 60


def package_imports(source: str) -> set[str]:
    """Names of the package's modules that a module's source imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] == "solver" and len(parts) > 1:
                found.add(parts[1])
            elif node.module == "solver":
                found.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("solver."))
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
    return {p.stem: p.read_text() for p in sorted(PACKAGE.glob("*.py"))}


def test_imports_flow_one_way():
    assert back_edges(package_sources(), LAYERS) == []


def test_every_module_is_placed_and_exists():
    assert sorted(package_sources()) == sorted(LAYERS)


def test_a_back_edge_is_caught_even_inside_a_function():
    sources = {"tasks": "def f():\n    from solver.ttt import train\n", "ttt": "from solver.tasks import Task\n",
               "stray": "import solver.tasks\n"}
    assert back_edges(sources, ["tasks", "ttt"]) == ["stray: not placed in LAYERS", "tasks -> ttt"]
    assert back_edges({"ttt": "from solver import tasks\n", "tasks": ""}, ["tasks", "ttt"]) == []


@pytest.mark.parametrize("name", sorted(package_sources()))
def test_functions_fit_on_a_screen(name):
    long = [f"{n.name}: {n.end_lineno - n.lineno + 1} lines" for n in ast.walk(ast.parse(package_sources()[name]))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []
