"""Update transforms: what turns a head's outputs (and a nominal direction) into the update.

- :class:`OutputScale`: the paper's ``update = output_scale · head`` (coordinate-wise).
- :class:`NominalStep`: a nominal descent direction (Adam's ``m̂/(√v̂+ε)``) that the head corrects
  within bounds, times a learned step size (Harrison et al. 2022; coordinate-wise).
- :class:`DecoupledWeightDecay`: a learned decoupled weight decay (Loshchilov & Hutter 2019),
  optionally modulated per coordinate (coordinate-wise).
- :class:`RMSNormalize`: divide each tensor's update by its RMS (Celo2; per tensor).
- :class:`NewtonSchulz`: orthogonalize each matrix's update with the quintic Newton–Schulz
  iteration of Muon (per tensor; vectors pass through).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from optizoo.rules.parts.base import Part
from optizoo.rules.segments import Segments

__all__ = ["DecoupledWeightDecay", "NewtonSchulz", "NominalStep", "OutputScale", "RMSNormalize"]


def _non_negative(value: Any, name: str) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")
    return float(value)


class OutputScale(Part):
    """``update = scale · out[:, 0]`` (the paper's output scale, 0.1)."""

    def __init__(self, scale: float = 0.1) -> None:
        super().__init__()
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"output_scale must be positive and finite, got {scale!r}")
        self.scale = float(scale)

    def forward(self, out: Tensor) -> Tensor:
        return out.squeeze(-1) * self.scale

    def config(self) -> dict[str, Any]:
        return {"scale": self.scale}


class NominalStep(Part):
    """A nominal direction ``d`` corrected by two head outputs, times a learned step size::

        direction = d · exp(s_max · tanh(o₁)) + a_max · tanh(o₂)
        update    = −exp(log_lr) · direction

    With ``o₁ = o₂ = 0`` (a zero head) it is the nominal rule at ``lr``; whatever the head
    outputs, ``|update| ≤ exp(log_lr) · (|d| e^{s_max} + a_max)``.

    Args:
        lr: initial value of the learned step size ``exp(log_lr)``.
        max_log_scale: ``s_max``. additive_scale: ``a_max`` (in units of the step size).
    """

    def __init__(self, lr: float = 1e-2, max_log_scale: float = 2.0, additive_scale: float = 0.1):
        super().__init__()
        from optizoo.rules.base import log_learning_rate

        log_lr = log_learning_rate(lr, "nominal_lr")  # lr = 0: a rule that never steps
        self.lr = float(lr)
        self.max_log_scale = _non_negative(max_log_scale, "max_log_scale")
        self.additive_scale = _non_negative(additive_scale, "additive_scale")
        self.log_lr = nn.Parameter(torch.tensor(log_lr))

    def direction(self, d: Tensor, o1: Tensor, o2: Tensor) -> Tensor:
        """The corrected direction (before the step size)."""
        scale = torch.exp(self.max_log_scale * torch.tanh(o1))
        return torch.addcmul(self.additive_scale * torch.tanh(o2), d, scale)

    def forward(self, direction: Tensor) -> Tensor:
        """``−exp(log_lr) · direction``."""
        return -torch.exp(self.log_lr.to(direction.dtype)) * direction

    def config(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "max_log_scale": self.max_log_scale,
            "additive_scale": self.additive_scale,
        }


class DecoupledWeightDecay(Part):
    """Adds a learned decoupled weight decay to a direction::

        direction + exp(log_wd + s_max · tanh(o)) · θ      (o: an optional head output)

    ``exp(log_wd)`` starts at ``weight_decay``; the step size multiplies it afterwards, so with
    :class:`NominalStep` and ``o = 0`` this is exactly ``torch.optim.AdamW``'s decay.
    """

    def __init__(self, weight_decay: float = 0.01, max_log_scale: float = 2.0) -> None:
        super().__init__()
        self.weight_decay = _non_negative(weight_decay, "weight_decay")
        if self.weight_decay <= 0:
            raise ValueError(f"weight_decay must be positive, got {weight_decay!r}")
        self.max_log_scale = _non_negative(max_log_scale, "max_log_scale")
        self.log_wd = nn.Parameter(torch.tensor(math.log(self.weight_decay)))

    def forward(self, direction: Tensor, param: Tensor | None, o: Tensor | None = None) -> Tensor:
        if param is None:
            raise ValueError(
                "this rule has a learned weight decay and needs param= (the flat "
                "parameter values); LearnedOptimizer and unroll pass it"
            )
        log_wd = self.log_wd.to(direction.dtype)
        decay = torch.exp(log_wd if o is None else log_wd + self.max_log_scale * torch.tanh(o))
        return torch.addcmul(direction, decay, param.to(direction.dtype))

    def config(self) -> dict[str, Any]:
        return {"weight_decay": self.weight_decay, "max_log_scale": self.max_log_scale}


class RMSNormalize(Part):
    """Divide every tensor's update by its root-mean-square: each tensor's update has RMS 1
    (``eps`` guards all-zero tensors, which stay zero)."""

    scope = "tensor"

    def __init__(self, eps: float = 1e-12) -> None:
        super().__init__()
        self.eps = _non_negative(eps, "eps")

    def inverse_rms(self, u: Tensor, segments: Segments) -> Tensor:
        """``[T]``: ``1 / (rms + eps)`` of each tensor of ``u [n]``."""
        return self.inverse_rms_of(segments.split(u), segments)

    def inverse_rms_of(self, pieces: list[Tensor], segments: Segments) -> Tensor:
        """``[T]``: ``1 / (rms + eps)`` of each tensor, given as one flat piece per tensor (a
        shard's pieces when ``segments.sharded``: their sums are reduced to whole tensors')."""
        sumsq = segments.reduce(torch.stack(torch._foreach_norm(pieces)).square())
        mean_square = sumsq / segments.numels(pieces[0])
        return 1.0 / (mean_square.sqrt() + self.eps)

    def forward(self, u: Tensor, segments: Segments) -> Tensor:
        segments.check(u)
        return u * segments.expand(self.inverse_rms(u, segments))

    def config(self) -> dict[str, Any]:
        return {"eps": self.eps}


#: Muon's quintic Newton–Schulz coefficients (Jordan et al. 2024)
_NS = (3.4445, -4.7750, 2.0315)


class NewtonSchulz(Part):
    """Orthogonalize each matrix's update (Muon): ``U ← orth(U) · √max(rows, cols)``.

    Tensors with two or more dimensions are viewed as ``[shape[0], -1]``; the quintic iteration
    (``steps`` times, coefficients 3.4445, −4.775, 2.0315) drives their singular values toward 1,
    and the result is scaled by ``√max(rows, cols)`` so that its RMS is about 1, like an Adam
    direction's. Vectors and scalars pass through unchanged. Cost: about
    ``steps · (4·rows·cols·min + 2·min³)`` FLOPs per matrix (``min = min(rows, cols)``).
    """

    scope = "tensor"

    def __init__(self, steps: int = 5, eps: float = 1e-7) -> None:
        super().__init__()
        if not (isinstance(steps, int) and not isinstance(steps, bool) and steps > 0):
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        self.steps = steps
        self.eps = _non_negative(eps, "eps")

    def orthogonalize(self, m: Tensor) -> Tensor:
        """The Newton–Schulz approximation of ``U Vᵀ`` for ``m = U Σ Vᵀ`` (``[rows, cols]``)."""
        a, b, c = _NS
        x = m / (m.norm() + self.eps)
        transpose = x.shape[0] > x.shape[1]
        if transpose:
            x = x.t()
        for _ in range(self.steps):
            gram = x @ x.t()
            x = a * x + (b * gram + c * (gram @ gram)) @ x
        return x.t() if transpose else x

    def forward(self, u: Tensor, segments: Segments) -> Tensor:
        segments.check(u)
        if segments.sharded:
            raise ValueError(
                "NewtonSchulz orthogonalizes whole matrices and cannot step shards of them "
                "(FSDP2-sharded parameters); use orthogonalize=False or leave these parameters "
                "unsharded"
            )
        pieces = []
        for piece, shape in zip(segments.split(u), segments.shapes):
            if len(shape) >= 2 and shape[0] > 1 and piece.numel() // shape[0] > 1:
                rows = shape[0]
                cols = piece.numel() // rows
                o = self.orthogonalize(piece.view(rows, cols)) * math.sqrt(max(rows, cols))
                pieces.append(o.reshape(-1))
            else:
                pieces.append(piece)
        return torch.cat(pieces) if len(pieces) > 1 else pieces[0]

    def flops(self, segments: Segments) -> int:
        """Multiply-add FLOPs of one call on these tensors (2 per MAC)."""
        total = 0
        for shape in segments.shapes:
            if len(shape) >= 2 and shape[0] > 1 and shape.numel() // shape[0] > 1:
                r, c = shape[0], shape.numel() // shape[0]
                lo, hi = min(r, c), max(r, c)
                total += self.steps * 2 * (2 * lo * lo * hi + lo**3)
        return total

    def config(self) -> dict[str, Any]:
        return {"steps": self.steps, "eps": self.eps}
