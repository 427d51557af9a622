"""Fixtures shared by the test modules under ``tests/`` (``fresh_plugins`` is in the root conftest)."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest
import torch

from tests.helpers import load_script_module


@pytest.fixture
def load_script() -> Callable[[str], ModuleType]:
    """``load_script("build_zoo_docs")``: a script of ``scripts/`` as a module."""
    return load_script_module


@pytest.fixture
def one_thread():
    """Run the test with one torch thread (bit-for-bit meta-training comparisons), then restore
    the previous count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
