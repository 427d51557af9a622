"""Fixtures shared by the test modules under ``tests/`` (``fresh_plugins`` is in the root conftest)."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest

from tests.helpers import load_script_module


@pytest.fixture
def load_script() -> Callable[[str], ModuleType]:
    """``load_script("build_zoo_docs")``: a script of ``scripts/`` as a module."""
    return load_script_module
