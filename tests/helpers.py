"""Helpers shared by the test modules (not fixtures: plain functions to import)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script_module(name: str, folder: str = "scripts") -> ModuleType:
    """Import ``FOLDER/NAME.py`` (``scripts/`` by default, or ``benchmarks/``) from its file,
    without putting the folder on ``sys.path``."""
    path = ROOT / folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"optizoo_{folder}_{name}", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look their module up here
    spec.loader.exec_module(module)
    return module
