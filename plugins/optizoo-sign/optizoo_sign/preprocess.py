"""The ``sign_magnitude`` gradient preprocessor: ``[n] -> [n, 3]``.

Three features per coordinate, each in ``[-1, 1]``:

1. ``sign(g)`` (0 for an exact zero);
2. the log-magnitude ``clamp(log(|g| + e^-p) / p, -1, 1)``: ``-1`` for ``|g| << e^-p``, ``0`` at
   ``|g| = 1 - e^-p``, ``+1`` from ``|g| = e^p - e^-p`` on;
3. the squashed value ``tanh(scale * g)``, linear for small ``|scale * g|``.

Unlike the log-and-sign preprocessor of Andrychowicz et al. (2016), whose two features switch
formula at ``|g| = e^-p``, the log-magnitude here is continuous in ``g``; sign and magnitude are
separate inputs, and the third feature keeps the gradient's value where it is small.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from optizoo.preprocess import Preprocessor

__all__ = ["SignMagnitude"]


class SignMagnitude(Preprocessor):
    """Sign, log-magnitude and squashed value of the gradient: ``[n] -> [n, 3]``.

    Args:
        p: log-magnitude range: magnitudes in ``[e^-p, e^p]`` map to ``[-1, 1]`` (default 10, as
            in the paper's log-and-sign).
        scale: slope of the ``tanh`` feature (1/scale is the gradient size where it saturates).
    """

    out_features = 3

    def __init__(self, p: float = 10.0, scale: float = 1.0) -> None:
        super().__init__()
        for name, value in (("p", p), ("scale", scale)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        self.p = float(p)
        self.scale = float(scale)

    def forward(self, grad: Tensor) -> Tensor:
        """``grad`` ``[n]`` -> features ``[n, 3]`` in ``grad``'s dtype."""
        magnitude = torch.log(grad.abs() + math.exp(-self.p)) / self.p
        return torch.stack(
            (torch.sign(grad), magnitude.clamp(-1.0, 1.0), torch.tanh(grad * self.scale)), dim=-1
        )

    def config(self) -> dict[str, Any]:
        return {"p": self.p, "scale": self.scale}
