"""The ``"log_loss"`` meta-objective: scale-free across the tasks of a mixture."""

from __future__ import annotations

import math

import pytest
import torch

from optizoo.meta import MetaConfig, MetaTrainer
from optizoo.meta.objectives import LOG_FLOOR, log_ratios
from optizoo.meta.unroll import rollout
from optizoo.rules import Adam


def _trainer(**kw) -> MetaTrainer:
    cfg = dict(task="quadratic", unroll=4, horizon=8, eval_problems=2, eval_every=0, seed=3)
    cfg.update(kw)
    return MetaTrainer(Adam(lr=0.05), **cfg, meta_objective="log_loss", checkpoint_every=0)


def test_meta_loss_is_the_weighted_mean_log_ratio():
    trainer = _trainer()
    losses = torch.tensor([[4.0, 0.5], [2.0, 0.25], [1.0, 0.5], [1e-9, 0.5]], dtype=torch.float64)
    trainer._scale = torch.ones(2, dtype=torch.float64)
    loss, _ = trainer.meta_loss(losses, [], torch.zeros(1), t=0, steps=3)
    # by hand: problem 0: log(2/4), log(1/4), log(1e-6/4) (floored); problem 1: log(1/2), 0, 0
    p0 = (math.log(0.5) + math.log(0.25) + math.log(LOG_FLOOR / 4)) / 3
    p1 = math.log(0.5) / 3
    assert float(loss) == pytest.approx((p0 + p1) / 2, rel=1e-12)


def test_meta_loss_ignores_the_scale_of_each_problem():
    trainer = _trainer()
    trainer._scale = torch.ones(2, dtype=torch.float64)
    losses = torch.rand(5, 2, dtype=torch.float64) + 0.1
    a, _ = trainer.meta_loss(losses, [], torch.zeros(1), t=0, steps=4)
    b, _ = trainer.meta_loss(losses * torch.tensor([100.0, 0.01]), [], torch.zeros(1), 0, 4)
    assert float(a) == pytest.approx(float(b), rel=1e-12)


def test_selection_uses_the_mean_log_ratio_of_the_held_out_rollouts():
    trainer = _trainer()
    row = trainer.evaluate()
    curves = rollout(trainer.rule, trainer.eval_set(), 8)
    logs = curves.clamp_min(LOG_FLOOR).log()
    assert row["objective"] == pytest.approx(float((logs[1:] - logs[:1]).mean()), rel=1e-12)
    assert torch.equal(log_ratios(curves), logs[1:] - logs[:1])


def test_a_short_fit_with_the_log_objective_runs_and_records_it():
    trainer = _trainer(meta_lr=0.05)
    result = trainer.fit(6)
    assert math.isfinite(result["best_objective"])
    assert trainer.training_record()["meta_objective"] == "log_loss"


def test_unknown_objective_names_are_refused():
    with pytest.raises((TypeError, ValueError), match="log_loss"):
        MetaConfig(meta_objective="log")
