"""benchmarks/step.py measures real step temporaries (an earlier version read ~0 for any step)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc/self/clear_refs"
)


def _benchmark():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "step.py"
    spec = importlib.util.spec_from_file_location("step_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["step_benchmark"] = module
    spec.loader.exec_module(module)
    return module


def test_temporaries_recover_a_known_allocation():
    """The probe optimizer allocates and touches K bytes a parameter (one tensor per parameter,
    as foreach steps do) on top of SGD's step: the measurement must find them (to page rounding
    and SGD's own few bytes; the old measurement read ~1 B/param for K = 8), and ~0 for K = 0."""
    bench = _benchmark()
    known = 16.0
    r = bench.temporaries(f"probe:{known}", 500_000, "model", None)
    assert known * 0.9 <= r["temp_bytes_per_param"] <= known * 1.1 + 1.0
    assert bench.temporaries("probe:0", 500_000, "model", None)["temp_bytes_per_param"] < 1.0
