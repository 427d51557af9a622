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


# ---------------------------------------------------------------------- the log validation objective


def _validation_trainer(**objective):
    task_args = {
        "tasks": [
            {"task": "tabular", "args": {"dataset": "friedman", "hidden": [4], "batch_size": 8}},
            {"task": "mlp", "args": {"hidden": [4], "batch_size": 16}},
        ],
        "validation": 0.2,
    }
    return MetaTrainer(
        Adam(lr=0.01),
        "mix",
        task_args=task_args,
        unroll=3,
        horizon=6,
        eval_problems=2,
        problems_per_step=2,
        seed=4,
        eval_every=0,
        checkpoint_every=0,
        verbose=False,
        meta_objective=objective,
    )


def test_log_validation_meta_loss_is_the_mean_log_validation_loss():
    """train_weight 0: the meta-loss is mean_p log eval_loss_p at the truncation's end, which a
    rollout of the same problems from the same start recomputes."""
    trainer = _validation_trainer(validation_weight=1.0, train_weight=0.0, log=True)
    row = trainer.step()
    # by hand: the same 2 problems, 3 steps of Adam(lr=0.01), then the log of each eval_loss
    problems = trainer._problems
    logs = []
    for p in problems:
        params = {k: v.clone().requires_grad_(True) for k, v in p.params().items()}
        opt = torch.optim.Adam(params.values(), lr=0.01)
        for s in range(3):
            opt.zero_grad()
            p.loss(params, s).backward()
            opt.step()
        with torch.no_grad():
            logs.append(math.log(float(p.eval_loss(params))))
    assert row["meta_loss"] == pytest.approx(sum(logs) / len(logs), rel=1e-4)
    assert trainer.training_record()["meta_objective"]["log"] is True


def test_log_validation_is_scale_free_and_plain_validation_is_not():
    a = _validation_trainer(validation_weight=1.0, train_weight=1.0, log=True)
    a.step()
    problems = a._problems
    flat = a._layout.flatten([p.params() for p in problems])
    losses = torch.rand(4, 2, dtype=torch.float64) + 0.5
    a._scale = torch.ones(2, dtype=torch.float64)
    base, _ = a.meta_loss(losses, problems, flat, t=0, steps=3)
    scaled, _ = a.meta_loss(losses * torch.tensor([10.0, 0.1]), problems, flat, t=0, steps=3)
    assert float(base) == pytest.approx(float(scaled), rel=1e-12)


def test_the_log_key_is_checked():
    with pytest.raises(ValueError, match="true or false"):
        MetaConfig(meta_objective={"validation_weight": 1.0, "train_weight": 0.0, "log": 1})
    plain = MetaConfig(meta_objective={"validation_weight": 1.0, "train_weight": 0.0, "log": False})
    assert plain.meta_objective == {"validation_weight": 1.0, "train_weight": 0.0}
