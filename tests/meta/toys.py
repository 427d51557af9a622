"""Small optimizees shared by several test modules (not collected: no ``test_`` prefix)."""

from __future__ import annotations

import torch

from optizoo.tasks.base import Problem


class ToyRegression(Problem):
    """The `higher` toy's optimizee: mean squared error of ``x ↦ w x`` against ``y = 3.5 x`` (float64)."""

    def __init__(self, x: torch.Tensor, w0: torch.Tensor) -> None:
        self.x, self.y, self.w0 = x, 3.5 * x, w0

    def params(self) -> dict[str, torch.Tensor]:
        return {"weight": self.w0.clone()}

    def loss(self, params: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        return (self.x @ params["weight"].T - self.y).square().mean()
