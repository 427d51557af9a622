"""check_rule: every built-in rule passes, and each check catches the fault it is about."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from optizoo.rules import SGD, Adam, LSTMRule, Momentum, RMSprop, UpdateRule
from optizoo.testing import RULE_CHECKS, ConformanceError, check_rule, run_rule_check

BUILTIN = {
    "lstm": lambda: LSTMRule(hidden_size=4),
    "lstm-nominal": lambda: LSTMRule(
        hidden_size=4, parameterization="nominal", weight_decay=0.01, features={"progress": [10]}
    ),
    "lstm-mlp-cell": lambda: LSTMRule(hidden_size=4, cell="mlp", parameterization="nominal"),
    "sgd": lambda: SGD(lr=0.1, weight_decay=0.01),
    "momentum": lambda: Momentum(lr=0.1, momentum=0.9, nesterov=True),
    "rmsprop": lambda: RMSprop(centered=True, momentum=0.5),
    "adam": lambda: Adam(amsgrad=True),
}


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_rules_pass(name: str) -> None:
    report = check_rule(BUILTIN[name]())
    assert report.passed == list(RULE_CHECKS)


class _Plain(UpdateRule):
    """``update = -0.1 * (grad + m)``, ``m <- grad``: a conforming rule the faults below break."""

    rule_name = "plain-test"

    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.lr = torch.nn.Parameter(torch.tensor(lr))

    def init_state(self, flat: Tensor) -> dict[str, Tensor]:
        return {"m": torch.zeros_like(flat)}

    def forward(self, grad, state, *, param=None, step: int):
        return -self.lr.to(grad.dtype) * (grad + state["m"]), {"m": grad.clone()}

    def config(self) -> dict[str, Any]:
        return {"lr": float(self.lr.detach())}


class _Mutating(_Plain):
    def forward(self, grad, state, *, param=None, step: int):
        state["m"].add_(grad)  # in place: not pure
        return -self.lr.to(grad.dtype) * state["m"], dict(state)


class _Mixing(_Plain):
    def forward(self, grad, state, *, param=None, step: int):
        update, new = super().forward(grad, state, param=param, step=step)
        return update - grad.cumsum(0) * 1e-3, new  # coordinate i sees coordinates < i


class _BadState(_Plain):
    def init_state(self, flat: Tensor) -> dict[str, Tensor]:
        return {"m": torch.zeros_like(flat), "count": torch.zeros(1, dtype=flat.dtype)}

    def forward(self, grad, state, *, param=None, step: int):
        update, new = super().forward(grad, state, param=param, step=step)
        return update, {**new, "count": state["count"] + 1}


class _BadConfig(_Plain):
    """Its ``width`` changes the architecture, but ``config()`` forgets it."""

    def __init__(self, lr: float = 0.1, width: int = 2) -> None:
        super().__init__(lr)
        self.mix = torch.nn.Parameter(torch.zeros(width))

    def config(self) -> dict[str, Any]:
        return {"lr": float(self.lr.detach())}


def test_the_plain_rule_conforms() -> None:
    check_rule(_Plain())


@pytest.mark.parametrize(
    ("rule", "check", "message"),
    [
        (_Mutating(), "pure", "modified the input state"),
        (_Mixing(), "permutation", "not coordinate-wise"),
        (_BadState(), "state", "leading dimension"),
        (_BadConfig(width=3), "config", "rebuilt rule has tensors"),
    ],
)
def test_each_check_catches_its_fault(rule: UpdateRule, check: str, message: str) -> None:
    with pytest.raises(ConformanceError, match=message):
        run_rule_check(check, rule)
    with pytest.raises(ConformanceError, match=f"FAILED {check}"):
        check_rule(rule)


def test_skip_and_bad_arguments() -> None:
    report = check_rule(_Mixing(), skip=("permutation",))
    assert report.skipped == ["permutation"] and "permutation" not in report.failed
    with pytest.raises(TypeError, match="UpdateRule instance"):
        check_rule(_Plain)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown rule check"):
        run_rule_check("nope", _Plain())
