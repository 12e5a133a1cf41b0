"""Shared fixtures. Tests run on the CPU with tiny models; torch is imported only by tests that need it.

Every test starts from the same process state and leaves none behind (`isolated_state`): torch's thread count,
default dtype, grad mode, deterministic-algorithm flags, matmul precision and random generators, numpy's and Python's
random generators, the levels of the package's loggers, the environment and the working directory.

Tests run torch on one thread (ARC_TEST_THREADS=N for N, 0 for torch's default): on a shared 2-core machine two
threads of tiny matmuls wait on each other (scratch:mini's TTT + 8-view test: 327 s on two threads, 55 s on one, at a
load average of 9; the whole suite 17 min against 11).

`ARC_TEST_ORDER=reverse` runs the collected tests in reverse order, to check that no test depends on what another left
(`ARC_TEST_ORDER=shuffle:SEED` shuffles them). Deadline tests use `fake_clock` instead of the wall clock.
"""
import logging
import os
import random
import sys
import time as _time

import numpy as np
import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ORDER_ENV = "ARC_TEST_ORDER"
THREADS_ENV = "ARC_TEST_THREADS"  # torch threads in the test process: 1 unless set (0: torch's own default)


def pytest_collection_modifyitems(session, config, items):
    """Opt-in order check: ARC_TEST_ORDER=reverse reverses the collected tests; shuffle:SEED shuffles them."""
    order = os.environ.get(ORDER_ENV, "")
    if order == "reverse":
        items.reverse()
    elif order.startswith("shuffle"):
        random.Random(int(order.partition(":")[2] or 0)).shuffle(items)
    elif order:
        raise pytest.UsageError(f"{ORDER_ENV}={order!r}: use 'reverse' or 'shuffle:SEED'")


def pytest_report_header(config):
    order = os.environ.get(ORDER_ENV)
    return f"test order: {order} ({ORDER_ENV})" if order else None


# process state ------------------------------------------------------------------------------------------------------
_TORCH_BASELINE: dict = {}  # torch's settings when this process first saw torch imported


def _torch_baseline(torch) -> dict:
    """The settings every test starts from: torch's at first sight, with the test thread count."""
    state = _torch_state(torch)
    threads = int(os.environ.get(THREADS_ENV, "1"))
    return {**state, "threads": threads} if threads > 0 else state


def _torch_state(torch) -> dict:
    return {"threads": torch.get_num_threads(), "dtype": torch.get_default_dtype(),
            "grad": torch.is_grad_enabled(), "deterministic": torch.are_deterministic_algorithms_enabled(),
            "deterministic_warn": torch.is_deterministic_algorithms_warn_only_enabled(),
            "matmul": torch.get_float32_matmul_precision(), "rng": torch.get_rng_state()}


def _set_torch_state(torch, state: dict) -> None:
    if torch.get_num_threads() != state["threads"]:
        torch.set_num_threads(state["threads"])
    torch.set_default_dtype(state["dtype"])
    torch.set_grad_enabled(state["grad"])
    torch.use_deterministic_algorithms(state["deterministic"], warn_only=state["deterministic_warn"])
    torch.set_float32_matmul_precision(state["matmul"])
    torch.set_rng_state(state["rng"])


@pytest.fixture(autouse=True)
def isolated_state():
    """Each test sees the same seeded generators and torch settings, whatever ran before it, and leaves them as found.

    The generators are seeded (not only restored) so that a test which draws without seeding draws the same numbers
    in any order. Changes a test makes to the environment or the working directory are undone too.
    """
    torch = sys.modules.get("torch")
    if torch is not None and not _TORCH_BASELINE:
        _TORCH_BASELINE.update(_torch_baseline(torch))
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    saved_levels = _logger_levels()
    saved_np, saved_py = np.random.get_state(), random.getstate()
    np.random.seed(0)
    random.seed(0)
    if torch is not None:
        _set_torch_state(torch, _TORCH_BASELINE)
        torch.manual_seed(0)
    try:
        yield
    finally:
        torch = sys.modules.get("torch")
        if torch is not None:
            if not _TORCH_BASELINE:  # imported by this test: its import-time settings are the baseline
                _TORCH_BASELINE.update(_torch_baseline(torch))
            _set_torch_state(torch, _TORCH_BASELINE)
        np.random.set_state(saved_np)
        random.setstate(saved_py)
        _restore_env(saved_env, saved_cwd)
        for name, level in saved_levels.items():
            logging.getLogger(name or None).setLevel(level)


@pytest.fixture(autouse=True, scope="module")
def isolated_module_env():
    """What a module's own fixtures change in the environment (e.g. a Ray cluster's variables) ends with the module."""
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    yield
    _restore_env(saved_env, saved_cwd)


def _restore_env(saved_env: dict, saved_cwd: str) -> None:
    for key in set(os.environ) - set(saved_env) - {"PYTEST_CURRENT_TEST"}:
        del os.environ[key]
    for key, value in saved_env.items():
        if key != "PYTEST_CURRENT_TEST" and os.environ.get(key) != value:
            os.environ[key] = value
    if os.getcwd() != saved_cwd:
        os.chdir(saved_cwd)


def _logger_levels() -> dict[str, int]:
    """The levels of the root logger ('') and the package's loggers."""
    names = [n for n in logging.root.manager.loggerDict if n == "solver" or n.startswith("solver.")]
    return {"": logging.getLogger().level, **{n: logging.getLogger(n).level for n in names}}


# a clock for deadline tests -----------------------------------------------------------------------------------------
class FakeClock:
    """Stands in for the `time` module of the modules under test: time moves only when the test (or a fake model it
    drives) says so, so deadline behaviour is asserted exactly, however busy the machine. Other `time` functions pass
    through."""

    def __init__(self, start: float = 1000.0):
        self.now = start

    def monotonic(self) -> float:
        return self.now

    perf_counter = time = monotonic

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)

    advance = sleep

    def __getattr__(self, name):
        return getattr(_time, name)


@pytest.fixture
def fake_clock(monkeypatch):
    """A FakeClock; `fake_clock.install(module, ...)` makes it those modules' `time`, until the test ends."""
    clock = FakeClock()

    def install(*modules):
        for module in modules:
            monkeypatch.setattr(module, "time", clock)
        return clock
    clock.install = install
    return clock


# data ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def arc1_eval():
    from solver.tasks import load_tasks
    return load_tasks("arc1:eval")


@pytest.fixture(scope="session")
def arc1_train():
    from solver.tasks import load_tasks
    return load_tasks("arc1:train")
