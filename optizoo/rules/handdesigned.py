"""Hand-designed update rules with differentiable hyper-parameters.

Each rule reproduces the corresponding ``torch.optim`` algorithm step for step (see the tests), but
its hyper-parameters are tensors: the learning rate is stored as ``log_lr`` and decay rates in
``(0, 1)`` as logits, all as ``nn.Parameter`` so that gradients of a meta-loss flow into them. This
is how a user meta-learns a learning rate or a momentum, and these rules are the baselines every
learned rule is compared against.

Meta-parameters are float64 scalars; 0-dim tensors do not promote the dtype of the gradients they
multiply, so the same rule serves float32, float64 and bfloat16 parameters.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from optizoo._validate import nonnegative_finite, unit_interval
from optizoo.rules.base import State, UpdateRule, as_meta_tensor, log_learning_rate

__all__ = ["SGD", "Adam", "Momentum", "RMSprop"]


def _f(t: Tensor) -> float:
    return float(t.detach())


def _logit(p: float) -> Tensor:
    return as_meta_tensor(math.log(p) - math.log1p(-p), "logit")


class _HandDesigned(UpdateRule):
    """Shared plumbing: a ``log_lr`` meta-parameter and fixed weight decay."""

    def __init__(self, lr: float, weight_decay: float) -> None:
        super().__init__()
        self.log_lr = nn.Parameter(as_meta_tensor(log_learning_rate(lr), "log_lr"))
        #: fixed (not meta-learned) and a Python float, so branching on it never syncs a device
        self.weight_decay = nonnegative_finite(weight_decay, "weight_decay")

    @property
    def lr(self) -> Tensor:
        """The learning rate ``exp(log_lr)`` as a differentiable tensor."""
        return self.log_lr.exp()

    def decay_lr(self) -> Tensor:
        """The learning rate, which scales a param group's decoupled ``weight_decay``."""
        return self.lr.detach()

    @property
    def needs_param(self) -> bool:  # type: ignore[override]
        return self.weight_decay != 0

    def _decayed(self, grad: Tensor, param: Tensor | None) -> Tensor:
        if self.weight_decay == 0:
            return grad
        if param is None:
            raise ValueError(f"{type(self).__name__} with weight_decay needs param= in forward")
        return grad + self.weight_decay * param

    def _base_config(self) -> dict[str, Any]:
        return {"lr": _f(self.lr), "weight_decay": self.weight_decay}


class SGD(_HandDesigned):
    """Plain gradient descent: ``update = -lr * (g + weight_decay * p)`` (``torch.optim.SGD``)."""

    rule_name = "sgd"

    def __init__(self, lr: float = 1e-3, weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)

    def forward(self, grad: Tensor, state: State, *, param: Tensor | None = None, step: int):
        return -self.lr * self._decayed(grad, param), {}

    def config(self) -> dict[str, Any]:
        return self._base_config()


class Momentum(_HandDesigned):
    """Heavy-ball or Nesterov momentum, exactly ``torch.optim.SGD(momentum>0)``.

    ``buf_1 = d_1``; ``buf_t = momentum * buf_{t-1} + (1 - dampening) * d_t``; the update is
    ``-lr * buf_t`` (heavy ball) or ``-lr * (d_t + momentum * buf_t)`` (Nesterov), with
    ``d_t = g_t + weight_decay * p_t``. ``momentum`` is meta-learned through its logit.
    """

    rule_name = "momentum"

    def __init__(
        self,
        lr: float = 1e-2,
        momentum: float = 0.9,
        *,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr, weight_decay)
        self.momentum_logit = nn.Parameter(_logit(unit_interval(momentum, "momentum")))
        dampening = nonnegative_finite(dampening, "dampening")
        if nesterov and dampening != 0:
            raise ValueError("Nesterov momentum requires dampening=0")
        self.register_buffer("dampening", as_meta_tensor(dampening, "dampening"))
        self.nesterov = bool(nesterov)

    @property
    def momentum(self) -> Tensor:
        """The momentum coefficient ``sigmoid(momentum_logit)``."""
        return torch.sigmoid(self.momentum_logit)

    def init_state(self, flat: Tensor) -> State:
        return {"momentum_buffer": torch.zeros_like(flat)}

    def forward(self, grad: Tensor, state: State, *, param: Tensor | None = None, step: int):
        d = self._decayed(grad, param)
        mu = self.momentum
        if isinstance(step, Tensor):  # compiled optimizer step: no host-side branch
            later = mu * state["momentum_buffer"] + (1 - self.dampening) * d
            buf = torch.where(step <= 1, d, later)
        elif step <= 1:
            buf = d
        else:
            buf = mu * state["momentum_buffer"] + (1 - self.dampening) * d
        direction = d + mu * buf if self.nesterov else buf
        return -self.lr * direction, {"momentum_buffer": buf}

    def config(self) -> dict[str, Any]:
        return {
            **self._base_config(),
            "momentum": _f(self.momentum),
            "dampening": _f(self.dampening),
            "nesterov": self.nesterov,
        }


class RMSprop(_HandDesigned):
    """RMSprop, exactly ``torch.optim.RMSprop`` (``alpha``, ``eps``, ``centered``, ``momentum``).

    ``alpha`` (and ``momentum`` when > 0) are meta-learned through logits.
    """

    rule_name = "rmsprop"

    def __init__(
        self,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        *,
        momentum: float = 0.0,
        centered: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr, weight_decay)
        self.alpha_logit = nn.Parameter(_logit(unit_interval(alpha, "alpha")))
        self.register_buffer("eps", as_meta_tensor(nonnegative_finite(eps, "eps"), "eps"))
        momentum = unit_interval(momentum, "momentum", allow_zero=True)
        self.use_momentum = momentum > 0
        if self.use_momentum:
            self.momentum_logit = nn.Parameter(_logit(momentum))
        self.centered = bool(centered)

    @property
    def alpha(self) -> Tensor:
        return torch.sigmoid(self.alpha_logit)

    @property
    def momentum(self) -> Tensor:
        if not self.use_momentum:
            return torch.zeros((), dtype=torch.float64)
        return torch.sigmoid(self.momentum_logit)

    def init_state(self, flat: Tensor) -> State:
        state = {"square_avg": torch.zeros_like(flat)}
        if self.centered:
            state["grad_avg"] = torch.zeros_like(flat)
        if self.use_momentum:
            state["momentum_buffer"] = torch.zeros_like(flat)
        return state

    def forward(self, grad: Tensor, state: State, *, param: Tensor | None = None, step: int):
        g = self._decayed(grad, param)
        alpha = self.alpha
        new: State = {"square_avg": alpha * state["square_avg"] + (1 - alpha) * g * g}
        if self.centered:
            ga = state["grad_avg"]
            new["grad_avg"] = ga + (1 - alpha) * (g - ga)
            avg = (new["square_avg"] - new["grad_avg"] * new["grad_avg"]).sqrt() + self.eps
        else:
            avg = new["square_avg"].sqrt() + self.eps
        if self.use_momentum:
            new["momentum_buffer"] = self.momentum * state["momentum_buffer"] + g / avg
            return -self.lr * new["momentum_buffer"], new
        return -self.lr * (g / avg), new

    def config(self) -> dict[str, Any]:
        return {
            **self._base_config(),
            "alpha": _f(self.alpha),
            "eps": _f(self.eps),
            "momentum": _f(self.momentum),
            "centered": self.centered,
        }


class Adam(_HandDesigned):
    """Adam, exactly ``torch.optim.Adam`` (``betas``, ``eps``, ``weight_decay``, ``amsgrad``).

    ``beta1`` and ``beta2`` are meta-learned through logits.
    """

    rule_name = "adam"

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        *,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(lr, weight_decay)
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.beta1_logit = nn.Parameter(_logit(unit_interval(betas[0], "beta1")))
        self.beta2_logit = nn.Parameter(_logit(unit_interval(betas[1], "beta2")))
        self.register_buffer("eps", as_meta_tensor(nonnegative_finite(eps, "eps"), "eps"))
        self.amsgrad = bool(amsgrad)

    @property
    def betas(self) -> tuple[Tensor, Tensor]:
        return torch.sigmoid(self.beta1_logit), torch.sigmoid(self.beta2_logit)

    def init_state(self, flat: Tensor) -> State:
        state = {"exp_avg": torch.zeros_like(flat), "exp_avg_sq": torch.zeros_like(flat)}
        if self.amsgrad:
            state["max_exp_avg_sq"] = torch.zeros_like(flat)
        return state

    def forward(self, grad: Tensor, state: State, *, param: Tensor | None = None, step: int):
        g = self._decayed(grad, param)
        b1, b2 = self.betas
        m = state["exp_avg"]
        new: State = {
            "exp_avg": m + (1 - b1) * (g - m),
            "exp_avg_sq": b2 * state["exp_avg_sq"] + (1 - b2) * g * g,
        }
        bias_correction1 = 1 - b1**step
        bias_correction2_sqrt = (1 - b2**step).sqrt()
        second = new["exp_avg_sq"]
        if self.amsgrad:
            second = new["max_exp_avg_sq"] = torch.maximum(state["max_exp_avg_sq"], second)
        denom = second.sqrt() / bias_correction2_sqrt + self.eps
        return -(self.lr / bias_correction1) * new["exp_avg"] / denom, new

    def config(self) -> dict[str, Any]:
        b1, b2 = self.betas
        return {
            **self._base_config(),
            "betas": [_f(b1), _f(b2)],
            "eps": _f(self.eps),
            "amsgrad": self.amsgrad,
        }
