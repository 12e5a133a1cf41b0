"""ARC solver built on test-time training, with a program search beside the model.

The public face: `Solver` (build once, then train/predict a task, or call it as the run's solve function),
`load_tasks` (any task SPEC), `Config` (and `resolve` for presets and --set), `run_tasks` (a whole task set inside a
budget, a submission always on disk) and `score_submission`. docs/architecture.md maps the modules.
"""
__version__ = "0.1.0"

__all__ = ["Solver", "load_tasks", "Config", "resolve", "run_tasks", "score_submission"]


def __getattr__(name: str):
    """The public names, imported when first asked for (so `import solver` stays light)."""
    if name == "Solver":
        from solver.pipeline import Solver
        return Solver
    if name == "load_tasks":
        from solver.tasks import load_tasks
        return load_tasks
    if name in ("Config", "resolve"):
        from solver import config
        return getattr(config, name)
    if name == "run_tasks":
        from solver.run import run_tasks
        return run_tasks
    if name == "score_submission":
        from solver.score import score_file
        return score_file
    raise AttributeError(f"module 'solver' has no attribute '{name}'")
