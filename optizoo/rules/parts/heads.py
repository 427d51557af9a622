"""Heads: linear maps from a cell's output to one or more numbers per row."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from optizoo.rules.parts.base import Part

__all__ = ["LinearHead"]

_INITS = ("uniform", "zero")


class LinearHead(Part):
    """``x [B, in_features] -> [B, outputs]``.

    Args:
        in_features: inputs per row.
        outputs: outputs per row.
        init: ``"uniform"`` (weights ``U(±1/√in)``, zero bias: the paper's head) or ``"zero"``
            (all zero: a rule whose learned part starts as a no-op correction).

    The scope is the rows': a head on a coordinate-wise cell is coordinate-wise, on a per-tensor
    cell per-tensor; it only ever sees one row at a time.
    """

    scope = "coordinate"

    def __init__(self, in_features: int, outputs: int = 1, init: str = "uniform") -> None:
        super().__init__()
        if init not in _INITS:
            raise ValueError(f"init must be one of {list(_INITS)}, got {init!r}")
        for name, value in (("in_features", in_features), ("outputs", outputs)):
            if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.in_features = in_features
        self.outputs = outputs
        self.init = init
        if init == "zero":
            self.weight = nn.Parameter(torch.zeros(outputs, in_features))
        else:
            bound = 1.0 / math.sqrt(in_features)
            self.weight = nn.Parameter(torch.empty(outputs, in_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(outputs))

    def forward(self, x: Tensor, compute: torch.dtype | None = None) -> Tensor:
        compute = compute or x.dtype
        return torch.addmm(self.bias.to(compute), x, self.weight.to(compute).t())

    def flops_per_row(self) -> int:
        return 2 * self.in_features * self.outputs

    def config(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "outputs": self.outputs, "init": self.init}
