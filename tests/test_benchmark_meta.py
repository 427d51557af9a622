"""benchmarks/meta.py's row on the default's recipe: the pre-change path really is the old code
path (the loop over tensors, no Segments.memo cache), it is undone afterwards, and both paths
train the same weights bit for bit (so the row compares speed only)."""

from __future__ import annotations

import torch

import optizoo.rules.hierarchical as hierarchical
from optizoo.rules.combine import combine_reference, segment_combine
from optizoo.rules.segments import Segments
from tests.helpers import load_script_module


def _benchmark():
    return load_script_module("meta", "benchmarks")


def test_pre_change_path_swaps_in_the_loop_and_restores():
    bench = _benchmark()
    memo = Segments.memo
    with bench.pre_change_path():
        assert hierarchical.segment_combine is combine_reference
        seg = Segments([(2,)])
        assert seg.memo("k", lambda: torch.ones(1)) is not seg.memo("k", lambda: torch.ones(1))
    assert hierarchical.segment_combine is segment_combine and Segments.memo is memo


def test_both_paths_train_the_same_weights_on_the_recipe():
    """Stage 0 of lstm-hierarchical cut to 3-step truncations, 2 problems, 3 meta-steps; one
    thread (the recipe fixture's setting): torch.equal on every weight."""
    bench = _benchmark()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        states = []
        for pre in (False, True):
            run = bench.RecipeRun(pre, unroll=3, horizon=6, problems_per_step=2)
            assert run.meta_steps(3) > 0
            states.append(run.trainer.rule.state_dict())
    finally:
        torch.set_num_threads(threads)
    assert states[0].keys() == states[1].keys()
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
