"""The candidate sources a run can name in run.sources, besides the model: one line per source in `REGISTRY`.

A source is a class with a `name`, `ahead` (it runs ahead of the model over the whole task set, as the search does,
else inside each task's job), `fits`, and `propose(task, test_index, deadline)` (solver.select.CandidateSource),
built from the run's Config. The run's search pass (solver.search_pass) runs the sources that run ahead; the package's
solver (solver.pipeline) the others, and every source where no pass ran. Adding a source is its module and its line
here. A source registered at run time (a test's) reaches the workers that run in this process only.
"""
from __future__ import annotations

from solver.config import MODEL, Config, ConfigError, parse_sources
from solver.program_source import SearchSource
from solver.select import CandidateSource

REGISTRY: dict[str, type] = {
    SearchSource.name: SearchSource,
}


def source_names(cfg: Config) -> list[str]:
    """The names of run.sources, each the model or a registered source; an unknown name is a ConfigError."""
    names = parse_sources(cfg.run.sources)
    unknown = [n for n in names if n != MODEL and n not in REGISTRY]
    if unknown:
        raise ConfigError(f"run.sources='{cfg.run.sources}': no source named {', '.join(unknown)} (expected names "
                          f"from {', '.join([*REGISTRY, MODEL])})")
    return names


def build_sources(cfg: Config, ahead: bool | None = None) -> list[CandidateSource]:
    """The sources of run.sources other than the model, in their order, built from `cfg`; with `ahead`, only those
    that run ahead of the model (True) or only those that run inside a task's job (False)."""
    return [REGISTRY[n](cfg) for n in source_names(cfg)
            if n != MODEL and (ahead is None or REGISTRY[n].ahead == ahead)]


def runs_ahead(cfg: Config) -> bool:
    """Whether a source of run.sources runs ahead of the model (the search pass has work)."""
    return any(n != MODEL and REGISTRY[n].ahead for n in source_names(cfg))
