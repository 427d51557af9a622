"""benchmarks/step.py: real step temporaries (an earlier version read ~0 for any step), and the
coordinate-wise LSTM's fused and unfused cells side by side against one Adam baseline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import optizoo.rules.parts.cells as cells_module
from optizoo.rules.fused_lstm import lstm_layer, lstm_layer_reference
from tests.helpers import load_script_module

needs_clear_refs = pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc/self/clear_refs"
)


def _benchmark():
    return load_script_module("step", "benchmarks")


@needs_clear_refs
def test_temporaries_recover_a_known_allocation():
    """The probe optimizer allocates and touches K bytes a parameter (one tensor per parameter,
    as foreach steps do) on top of SGD's step: the measurement must find them (to page rounding
    and SGD's own few bytes; the old measurement read ~1 B/param for K = 8), and ~0 for K = 0."""
    bench = _benchmark()
    known = 16.0
    r = bench.temporaries(f"probe:{known}", 500_000, "model", None)
    assert known * 0.9 <= r["temp_bytes_per_param"] <= known * 1.1 + 1.0
    assert bench.temporaries("probe:0", 500_000, "model", None)["temp_bytes_per_param"] < 1.0


def _counting(monkeypatch, bench, kind):
    calls = []
    cell = bench.CELLS[kind]
    monkeypatch.setitem(bench.CELLS, kind, lambda *a: calls.append(1) or cell(*a))
    return calls


@pytest.mark.parametrize("config", ["", ':{"num_layers": 1}'])
def test_unfused_rule_steps_with_the_unfused_cell_and_matches_the_fused(monkeypatch, config):
    """``lstm-unfused`` runs the composite cell (``lstm_layer_reference``) in its steps, only
    there (the fused cell is back after each step), and, an independent implementation of the
    same LSTM, moves the parameters as ``lstm`` does to float32 rounding (rtol 1e-5, atol 1e-7)."""
    bench = _benchmark()
    assert {"fused": lstm_layer, "unfused": lstm_layer_reference} == bench.CELLS
    unfused_calls = _counting(monkeypatch, bench, "unfused")
    fused_calls = _counting(monkeypatch, bench, "fused")
    moved = []
    for name in (f"lstm{config}", f"lstm-unfused{config}"):
        params = bench.make_params(3000, "model")
        torch.manual_seed(0)  # the same random LSTM weights for both
        opt = bench.make_learned(name, params)
        for seed in range(3):
            bench.set_grads(params, seed)
            opt.step()
            assert cells_module.fused_lstm_layer is lstm_layer  # restored after the step
        moved.append(torch.cat([p.detach().reshape(-1) for p in params]))
        assert bench.cell_of(name) == ("unfused" if "unfused" in name else "fused")
    assert unfused_calls and not fused_calls  # "lstm" runs the module's fused cell directly
    torch.testing.assert_close(moved[1], moved[0], rtol=1e-5, atol=1e-7)
    assert bench.cell_of("hierarchical") is None
    with pytest.raises(ValueError, match="unknown LSTM cell"), bench.using_cell("turbo"):
        pass


def test_fused_and_unfused_rows_share_one_adam_baseline(tmp_path):
    """Every rule at a size is timed against the same Adam in the same process (identical Adam
    column), and the fused/unfused speed-up is the ratio of the two rows' step times."""
    bench = _benchmark()
    out = tmp_path / "step.json"
    argv = ["--rules", "hierarchical", "lstm", "lstm-unfused", "--sizes", "2e3", "4e3"]
    argv += ["--repeats", "1", "--no-memory", "--threads", "1", "--json", str(out)]
    assert bench.main(argv) == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [(r["rule"], r["n"]) for r in rows] == [
        (rule, n) for n in (2000, 4000) for rule in ("hierarchical", "lstm", "lstm-unfused")
    ]
    for n in (2000, 4000):
        at_n = [r for r in rows if r["n"] == n]
        assert len({r["adam_ms"] for r in at_n}) == 1
        for r in at_n:
            assert r["ratio"] == pytest.approx(r["learned_ms"] / r["adam_ms"], rel=1e-12)
    by = {(r["rule"], r["n"]): r for r in rows}
    assert [(s["rule"], s["n"]) for s in result["cell_speedups"]] == [
        ("lstm", 2000),
        ("lstm", 4000),
    ]
    for s in result["cell_speedups"]:
        want = by[("lstm-unfused", s["n"])]["learned_ms"] / by[("lstm", s["n"])]["learned_ms"]
        assert s["unfused_over_fused"] == pytest.approx(want, rel=1e-12)
