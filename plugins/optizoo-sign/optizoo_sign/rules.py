"""The ``signum`` update rule: sign descent on a momentum average (Bernstein et al., 2018).

``m_t = beta * m_{t-1} + (1 - beta) * g_t`` with ``m_0 = 0``; the update is ``-lr * sign(m_t)``
(``beta = 0`` is plain signSGD). Every coordinate moves by exactly ``lr`` (or 0 where ``m_t`` is
exactly 0), whatever the gradient's scale.

Meta-parameters: ``log_lr`` and ``beta_logit`` (float64 scalars, like optizoo's hand-designed
rules). Because ``sign`` is piecewise constant, a meta-loss has a gradient with respect to the
learning rate only; ``beta`` is a meta-parameter for completeness (it is saved and loaded with
the weights) but meta-training leaves it where it starts.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from optizoo.rules import State, UpdateRule
from optizoo.rules.base import as_meta_tensor, log_learning_rate

__all__ = ["Signum"]


class Signum(UpdateRule):
    """Signum: ``update = -lr * sign(beta * m + (1 - beta) * g)``.

    Args:
        lr: step size per coordinate (every coordinate moves by ``lr`` per step).
        beta: momentum of the gradient average, in ``[0, 1)``.
    """

    rule_name = "signum"

    def __init__(self, lr: float = 1e-3, beta: float = 0.9) -> None:
        super().__init__()
        if not (isinstance(beta, (int, float)) and 0 <= beta < 1):
            raise ValueError(f"beta must be in [0, 1), got {beta!r}")
        self.log_lr = nn.Parameter(as_meta_tensor(log_learning_rate(lr), "log_lr"))
        # beta = 0 has no finite logit; store -inf's stand-in so sigmoid() gives exactly 0.0
        logit = -1e4 if beta == 0 else math.log(beta) - math.log1p(-beta)
        self.beta_logit = nn.Parameter(as_meta_tensor(logit, "beta_logit"))

    @property
    def lr(self) -> Tensor:
        return self.log_lr.exp()

    @property
    def beta(self) -> Tensor:
        return torch.sigmoid(self.beta_logit)

    def init_state(self, flat: Tensor) -> State:
        """``{"m": zeros [n]}`` in the rule's state dtype."""
        return {"m": torch.zeros_like(flat, dtype=self.state_dtype(flat.dtype))}

    def forward(
        self, grad: Tensor, state: State, *, param: Tensor | None = None, step: int
    ) -> tuple[Tensor, State]:
        # 0-dim float64 meta-parameters do not promote the dtype of the tensors they multiply
        beta = self.beta
        m = beta * state["m"] + (1.0 - beta) * grad.to(state["m"].dtype)
        update = -self.lr * torch.sign(m).to(grad.dtype)
        return update, {"m": m}

    def config(self) -> dict[str, Any]:
        return {"lr": float(self.lr.detach()), "beta": float(self.beta.detach())}
