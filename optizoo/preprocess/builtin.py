"""optizoo's built-in gradient preprocessors: the identity and log-and-sign (p = 10)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from optizoo.preprocess.base import Preprocessor

__all__ = ["Identity", "LogSign", "log_and_sign"]


def log_and_sign(grad: Tensor, p: float = 10.0) -> tuple[Tensor, Tensor]:
    """The two log-and-sign features of each coordinate of ``grad`` (any shape), each shaped
    like ``grad``: ``(log|g| / p, sign g)`` for ``|g| >= e^-p``, else ``(-1, e^p g)``."""
    big = grad.abs() >= math.exp(-p)
    # clamp_min keeps log finite on the branch that is discarded (no NaN in gradients)
    log_part = torch.where(big, grad.abs().clamp_min(math.exp(-p)).log() / p, -1.0)
    sign_part = torch.where(big, torch.sign(grad), grad * math.exp(p))
    return log_part, sign_part


class Identity(Preprocessor):
    """The raw gradient times ``scale`` as a single feature: ``[n] -> [n, 1]``."""

    out_features = 1

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"scale must be a positive finite number, got {scale!r}")
        self.scale = float(scale)

    def forward(self, grad: Tensor) -> Tensor:
        return (grad * self.scale).unsqueeze(-1)

    def config(self) -> dict[str, Any]:
        return {"scale": self.scale}


class LogSign(Preprocessor):
    """Log-and-sign preprocessing of Andrychowicz et al. (2016), appendix A.

    For ``|g| >= e^-p``: ``(log|g| / p, sign g)``; otherwise ``(-1, e^p g)``. Both features lie in
    ``[-1, 1]`` for gradients below ``e^p`` in magnitude, whatever the gradient's scale. ``p`` is
    10 in the paper.
    """

    out_features = 2

    def __init__(self, p: float = 10.0) -> None:
        super().__init__()
        if not math.isfinite(p) or p <= 0:
            raise ValueError(f"p must be a positive finite number, got {p!r}")
        self.p = float(p)

    def forward(self, grad: Tensor) -> Tensor:
        return torch.stack(log_and_sign(grad, self.p), dim=-1)

    def config(self) -> dict[str, Any]:
        return {"p": self.p}
