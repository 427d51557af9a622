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
