"""Meta-objectives as objects (optizoo.meta.objectives): the factory, each objective's meta-loss
against a closed form computed here by hand, and the trainer calling the one its config names.
That the trainer's numbers did not change is pinned by tests/meta/test_recipe_reference.py (its
pre-change fixture covers the four objectives: none, validation, log_loss, log validation)."""

from __future__ import annotations

import math

import pytest
import torch

from optizoo.meta import MetaTrainer
from optizoo.meta.objectives import (
    LogLoss,
    TrainingLoss,
    ValidationObjective,
    make_objective,
)
from optizoo.meta.unroll import Layout, rollout
from optizoo.rules import Adam

LOSSES = torch.tensor([[4.0, 0.5], [2.0, 0.25], [1.0, 1.0]], dtype=torch.float64)  # [steps+1, P]
WEIGHTS = torch.tensor([1.0, 3.0], dtype=torch.float64)
SCALE = torch.tensor([0.5, 2.0], dtype=torch.float64)


class _Problem:
    """A problem whose validation loss is ``c * sum(x ** 2)``."""

    def __init__(self, c: float, x: list[float]) -> None:
        self.c, self.x = c, torch.tensor(x, dtype=torch.float64)

    def params(self) -> dict[str, torch.Tensor]:
        return {"x": self.x}

    def eval_loss(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.c * (params["x"] ** 2).sum()


PROBLEMS = [_Problem(1.0, [1.0, 2.0]), _Problem(10.0, [0.5])]  # validation losses 5 and 2.5
LAYOUT = Layout([p.params() for p in PROBLEMS])
FLAT = LAYOUT.flatten([p.params() for p in PROBLEMS])


def _train_by_hand() -> float:
    # (1 * 2 * 0.5 + 3 * 1 * 0.5 + 1 * 0.25 * 2 + 3 * 1 * 2) / 2 problems
    return (1.0 + 1.5 + 0.5 + 6.0) / 2


def _log_by_hand() -> float:
    p0 = 1 * math.log(2 / 4) + 3 * math.log(1 / 4)
    p1 = 1 * math.log(0.25 / 0.5) + 3 * math.log(1 / 0.5)
    return (p0 + p1) / 2 / 4  # mean over problems, divided by the weights' sum


def test_the_factory_builds_the_objective_a_config_value_names():
    assert type(make_objective(None)) is TrainingLoss
    assert type(make_objective("log_loss")) is LogLoss
    v = make_objective({"validation_weight": 2, "train_weight": 0.5, "log": True})
    assert isinstance(v, ValidationObjective) and (v.validation_weight, v.train_weight) == (
        2.0,
        0.5,
    )
    assert v.log and not make_objective({"validation_weight": 1, "train_weight": 0}).log
    with pytest.raises(ValueError, match="missing"):
        make_objective({"validation_weight": 1})
    with pytest.raises((TypeError, ValueError), match="log_loss"):
        make_objective("log")


def test_training_and_log_losses_match_their_closed_forms():
    loss, extra = TrainingLoss().meta_loss(LOSSES, WEIGHTS, SCALE, PROBLEMS, LAYOUT, FLAT)
    assert float(loss) == pytest.approx(_train_by_hand(), rel=1e-12) and extra == {}
    loss, _ = LogLoss().meta_loss(LOSSES, WEIGHTS, SCALE, PROBLEMS, LAYOUT, FLAT)
    assert float(loss) == pytest.approx(_log_by_hand(), rel=1e-12)


@pytest.mark.parametrize("log", [False, True])
def test_validation_objective_adds_the_weighted_validation_term(log):
    objective = ValidationObjective(2.0, 0.5, log=log)
    loss, extra = objective.meta_loss(LOSSES, WEIGHTS, SCALE, PROBLEMS, LAYOUT, FLAT)
    val = (math.log(5.0) + math.log(2.5)) / 2 if log else (5.0 + 2.5) / 2
    train = _log_by_hand() if log else _train_by_hand()
    assert float(loss) == pytest.approx(2.0 * val + 0.5 * train, rel=1e-12)
    assert extra == {"validation_loss": pytest.approx(3.75, rel=1e-12)}
    with pytest.raises(ValueError, match="layout"):
        objective.meta_loss(LOSSES, WEIGHTS, SCALE, PROBLEMS, None, FLAT)


def test_the_trainer_uses_the_objective_of_its_config():
    cfg = dict(task="quadratic", unroll=2, horizon=4, eval_problems=2, verbose=False)
    plain = MetaTrainer(Adam(lr=0.05), **cfg)
    assert type(plain.objective) is TrainingLoss
    assert type(MetaTrainer(Adam(lr=0.05), **cfg, meta_objective="log_loss").objective) is LogLoss
    # the default selection value: Σ_t w_t f_t over the held-out rollout, mean over problems
    row = plain.evaluate()
    curves = rollout(plain.rule, plain.eval_set(), 4)
    assert row["objective"] == pytest.approx(float(curves[1:].sum(0).mean()), rel=1e-12)
    assert row["final_loss"] == pytest.approx(float(curves[-1].mean()), rel=1e-12)
