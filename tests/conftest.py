"""Shared fixtures. Tests run on the CPU with tiny models; torch is imported only by tests that need it."""
import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def arc1_eval():
    from solver.tasks import load_tasks
    return load_tasks("arc1:eval")


@pytest.fixture(scope="session")
def arc1_train():
    from solver.tasks import load_tasks
    return load_tasks("arc1:train")
