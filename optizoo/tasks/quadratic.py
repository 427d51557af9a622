"""The quadratic optimizee of *Learning to learn by gradient descent by gradient descent*.

Andrychowicz et al. (2016), section 3.1: ``f(θ) = ||Wθ − y||²`` with ``W ∈ R^{d×d}`` and
``y ∈ R^d`` drawn i.i.d. standard normal, ``d = 10``, ``θ0 = 0``. As in the usual PyTorch
re-implementation of the paper, a problem is a **batch** of independent quadratics, 128 by
default.

``loss`` is the **sum** of the per-problem losses, so the gradient with respect to ``θ_b`` is
exactly problem ``b``'s own gradient ``2 W_bᵀ (W_b θ_b − y_b)``; ``num_instances = batch``, and
``loss / num_instances`` (the mean) is that re-implementation's ``f`` and what reports show.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from optizoo._validate import positive_int
from optizoo.tasks.base import Problem, Task
from optizoo.tasks.datasets import (
    check_dtype,
    check_generator,
    dtype_name,
    resolve_device,
)

__all__ = ["QuadraticProblem", "QuadraticTask"]


class _ThetaModel(nn.Module):
    """Holds ``theta`` ``[batch, dim]`` as an ``nn.Parameter`` so ``torch.optim`` can drive it."""

    def __init__(self, theta: Tensor) -> None:
        super().__init__()
        self.theta = nn.Parameter(theta)


class QuadraticProblem(Problem):
    """``batch`` independent quadratics ``||W_b θ_b − y_b||²``.

    Attributes:
        W: ``[batch, dim, dim]``.
        y: ``[batch, dim]``.
        num_instances: ``batch``.
    """

    def __init__(self, W: Tensor, y: Tensor) -> None:
        self.W = W
        self.y = y
        self._neg_y = (-y).unsqueeze(-1)  # [batch, dim, 1], for one fused baddbmm
        self.num_instances = int(W.shape[0])
        self._model: nn.Module | None = None

    @property
    def model(self) -> nn.Module:  # type: ignore[override]
        """An ``nn.Module`` with one parameter ``theta`` ``[batch, dim]`` (built on first use)."""
        if self._model is None:
            self._model = _ThetaModel(self.params()["theta"])
        return self._model

    def params(self) -> dict[str, Tensor]:
        """``{"theta": zeros [batch, dim]}`` (θ0 = 0, as in the paper)."""
        return {"theta": torch.zeros_like(self.y)}

    def residual(self, params: dict[str, Tensor]) -> Tensor:
        """``W θ − y`` per problem, ``[batch, dim]``."""
        theta = params["theta"]
        return torch.baddbmm(self._neg_y, self.W, theta.unsqueeze(-1)).squeeze(-1)

    def losses(self, params: dict[str, Tensor]) -> Tensor:
        """Per-problem losses ``||W_b θ_b − y_b||²``, ``[batch]``."""
        return self.residual(params).square().sum(-1)

    def loss(self, params: dict[str, Tensor], step: int = 0) -> Tensor:
        """Sum over the batch of ``||W_b θ_b − y_b||²`` (deterministic: ``step`` is unused)."""
        return torch.baddbmm(self._neg_y, self.W, params["theta"].unsqueeze(-1)).square().sum()

    # -- the stacking protocol of optizoo.meta.batched (many problems as one vmapped loss)
    def stack_signature(self) -> tuple[Any, ...]:
        """Quadratics of one shape and dtype stack."""
        return ("quadratic", tuple(self.W.shape), self.W.dtype, self.W.device)

    def loss_inputs(self, step: int = 0) -> tuple[Tensor, Tensor]:
        """What :meth:`loss` reads: ``W`` and ``−y`` (``[batch, dim, 1]``)."""
        return self.W, self._neg_y

    @staticmethod
    def pure_loss(params: dict[str, Tensor], W: Tensor, neg_y: Tensor) -> Tensor:
        """:meth:`loss` as a pure function of ``θ``, ``W`` and ``−y``."""
        return torch.baddbmm(neg_y, W, params["theta"].unsqueeze(-1)).square().sum()

    def solution(self) -> Tensor:
        """The minimizer ``θ* = W⁻¹ y`` per problem, ``[batch, dim]`` (loss 0 when W is regular)."""
        return torch.linalg.solve(self.W, self.y)


class QuadraticTask(Task):
    """Batches of random quadratics ``||Wθ − y||²`` (``W``, ``y`` i.i.d. N(0, 1), ``θ0 = 0``).

    Args:
        dim: dimension ``d`` of ``θ`` (paper: 10).
        batch: independent problems per sample (the learning-to-learn re-implementation: 128); ``params()["theta"]`` is
            ``[batch, dim]`` and ``loss`` sums over them.
        dtype: floating dtype (or its name) of ``W``, ``y`` and ``θ``. Sampling always happens
            in float32 on the CPU from the given generator, so one seed gives the same problem (up
            to rounding) for every dtype and device.
    """

    name: ClassVar[str] = "quadratic"

    def __init__(
        self, dim: int = 10, batch: int = 128, dtype: torch.dtype | str = torch.float32
    ) -> None:
        self.dim = positive_int(dim, "dim")
        self.batch = positive_int(batch, "batch")
        self.dtype = check_dtype(dtype)

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-friendly), e.g. for weight-file metadata."""
        return {"dim": self.dim, "batch": self.batch, "dtype": dtype_name(self.dtype)}

    def __repr__(self) -> str:
        return f"QuadraticTask(dim={self.dim}, batch={self.batch}, dtype={self.dtype})"

    def sample(
        self, generator: torch.Generator, device: torch.device | str | None = None
    ) -> QuadraticProblem:
        """Draw ``W`` ``[batch, dim, dim]`` then ``y`` ``[batch, dim]`` from ``generator``."""
        g = check_generator(generator)
        dev = resolve_device(device)
        W = torch.randn(self.batch, self.dim, self.dim, generator=g)
        y = torch.randn(self.batch, self.dim, generator=g)
        return QuadraticProblem(W.to(dev, self.dtype), y.to(dev, self.dtype))
