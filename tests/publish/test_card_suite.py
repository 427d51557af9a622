"""Model cards of optimizers evaluated on the architecture suite."""

from __future__ import annotations

from optizoo.publish.card import model_card, summary_phrase, where_it_loses


def _iv(mean: float, hw: float) -> dict:
    return {
        "mean": mean,
        "half_width": hw,
        "low": mean - hw,
        "high": mean + hw,
        "n": 5,
        "confidence": 0.95,
        "n_nonfinite": 0,
    }


def _cell(task, budget, baseline, mine, theirs, verdict):
    return {
        "task": task,
        "budget": budget,
        "multiple": budget // 30,
        "baseline": baseline,
        "config": {},
        "optimizer": _iv(mine, 0.01),
        "baseline_loss": _iv(theirs, 0.01),
        "difference": _iv(mine - theirs, 0.005),
        "relative": (mine - theirs) / theirs,
        "verdict": verdict,
    }


def _training() -> dict:
    cells = [
        _cell("conv-bn", 30, "adam", 0.5, 0.8, "better"),
        _cell("conv-bn", 30, "adamw-default", 0.5, 2.0, "better"),
        _cell("mlp-wide-gelu", 300, "adam", 0.9, 0.3, "worse"),
        _cell("mlp-wide-gelu", 300, "adamw-default", 0.9, 0.4, "worse"),
    ]
    summary = [
        "vs Adam (tuned lr): better in 1 of 2 cells, worse in 1",
        "vs AdamW (torch defaults): better in 1 of 2 cells, worse in 1",
    ]
    return {"task": "mix", "architecture_suite": {"summary": summary, "cells": cells}}


def test_the_card_tabulates_the_suite_and_states_every_loss():
    meta = {"optizoo.training": _training(), "optizoo.rule": "hierarchical", "optizoo.config": {}}
    card = model_card(meta, name="g", sha256="0" * 64)
    assert "## Architecture suite" in card
    assert "| conv-bn | 30 | 0.5 ± 0.01 |" in card
    assert "(-38%, better)" in card  # (0.5 - 0.8) / 0.8
    assert "(+200%, worse)" in card  # (0.9 - 0.3) / 0.3
    loses = where_it_loses(_training(), "g")
    assert any("`mlp-wide-gelu` after 300 steps" in s and "significant at 95%" in s for s in loses)
    assert not any("`conv-bn`" in s for s in loses)


def test_summary_phrase_uses_the_suite():
    assert summary_phrase(_training()) == (
        "architecture suite vs Adam (tuned lr): better in 1 of 2 cells, worse in 1"
    )


def test_the_suite_figure_is_drawn_from_the_cells(tmp_path):
    import matplotlib.image as mpimg
    import pytest

    from optizoo.compare.plots import plot_suite_summary

    cells = _training()["architecture_suite"]["cells"]
    out = plot_suite_summary(cells, tmp_path / "s.png", title="g")
    image = mpimg.imread(out)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 300
    # one panel per baseline that has cells: two here, so narrower than with all three
    three = [*cells, dict(cells[0], baseline="adamw")]
    wide = mpimg.imread(plot_suite_summary(three, tmp_path / "w.png"))
    assert wide.shape[1] > image.shape[1] * 1.3
    with pytest.raises(ValueError, match="no suite cells"):
        plot_suite_summary(cells, tmp_path / "x.png", baselines=[("sgd", "SGD")])


def test_a_card_links_its_suite_figure_when_present(load_script, tmp_path):
    build_zoo_docs = load_script("build_zoo_docs")
    meta = {"optizoo.training": _training(), "optizoo.rule": "hierarchical", "optizoo.config": {}}
    card = model_card(
        meta, name="g", sha256="0" * 64, figures=[(build_zoo_docs.SUITE_CAPTION, "g-suite.png")]
    )
    assert "![Architecture suite" in card and "(g-suite.png)" in card


def test_a_suite_or_held_out_record_is_a_comparison_with_tuned_baselines():
    """'records no comparison' is said only of a file with no comparison of any kind."""
    none = "records no comparison against tuned baselines"
    assert any(none in s for s in where_it_loses({"task": "mix"}, "g"))
    assert not any(none in s for s in where_it_loses(_training(), "g"))
    held_out = {"generalization": {"rows": [{"task": "t", "steps": 10, "verdict": "better"}]}}
    assert not any(none in s for s in where_it_loses(held_out, "g"))
