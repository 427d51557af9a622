"""Where each tensor lies in a flat batch of coordinates, with per-tensor reductions.

Per-tensor parts receive the flat batch ``[n]`` of all coordinates of several tensors plus a
:class:`Segments` saying which coordinates belong to which tensor (in order). Reductions go
through ``torch._foreach_norm`` (one call for all tensors) and broadcasts back to coordinates
through one ``cat`` of expanded views, so the cost does not grow with a Python loop over
tensors; both are differentiable (meta-training backpropagates through them).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["Segments"]


class Segments:
    """The tensors of a flat batch.

    Args:
        shapes: the shape of each tensor, in the order their coordinates appear in the batch
            (``torch.Size`` or tuples; ``()`` is a scalar with one coordinate).
    """

    def __init__(self, shapes: Sequence[Sequence[int]]) -> None:
        self.shapes = [torch.Size(s) for s in shapes]
        if not self.shapes:
            raise ValueError("Segments needs at least one tensor shape")
        self.sizes = [s.numel() for s in self.shapes]
        self.numel = sum(self.sizes)
        self._lengths: dict[torch.device, Tensor] = {}

    @classmethod
    def single(cls, n: int) -> Segments:
        """One vector of ``n`` coordinates (what a per-tensor part assumes without shapes)."""
        return cls([(n,)])

    def __len__(self) -> int:
        return len(self.shapes)

    def __repr__(self) -> str:
        return f"Segments({len(self)} tensors, {self.numel} coordinates)"

    def check(self, x: Tensor) -> None:
        """Raise ``ValueError`` unless ``x``'s first dimension is this batch's ``numel``."""
        if x.shape[0] != self.numel:
            raise ValueError(
                f"a per-tensor part got {x.shape[0]} coordinates but its segments describe "
                f"{self.numel} ({len(self)} tensors); pass the shapes of exactly the tensors in "
                "the batch (LearnedOptimizer and unroll do)"
            )

    def lengths(self, device: torch.device) -> Tensor:
        """The tensor sizes as an int64 tensor on ``device`` (cached)."""
        t = self._lengths.get(device)
        if t is None:
            t = torch.tensor(self.sizes, dtype=torch.int64, device=device)
            self._lengths[device] = t
        return t

    def split(self, x: Tensor) -> list[Tensor]:
        """Views of ``x [n, ...]``, one per tensor."""
        return list(x.split(self.sizes)) if len(self.sizes) > 1 else [x]

    def sumsq(self, x: Tensor) -> Tensor:
        """``[T]``: the sum of squares of each tensor's coordinates of ``x [n]``."""
        return torch.stack(torch._foreach_norm(self.split(x))).square()

    def mean_square(self, x: Tensor) -> Tensor:
        """``[T]``: each tensor's mean of ``x²``."""
        return self.sumsq(x) / torch.tensor(self.sizes, dtype=x.dtype, device=x.device)

    def dot(self, x: Tensor, y: Tensor) -> Tensor:
        """``[T]``: each tensor's ``Σ x·y``."""
        return torch.stack([a.dot(b) for a, b in zip(self.split(x), self.split(y))])

    def expand(self, v: Tensor) -> Tensor:
        """Broadcast per-tensor values ``v [T, ...]`` to coordinates: ``[n, ...]``."""
        if len(self.sizes) == 1:
            return v.expand(self.numel, *v.shape[1:])
        return torch.repeat_interleave(v, self.lengths(v.device), dim=0, output_size=self.numel)

    def expand_rows(self, v: Tensor) -> Tensor:
        """Broadcast per-tensor rows ``v [R, T]`` to coordinates: ``[R, n]`` (each row
        contiguous, for element-wise passes over coordinates)."""
        if len(self.sizes) == 1:
            return v.expand(v.shape[0], self.numel)
        # concatenating expanded views writes each output once (no int64 index as
        # repeat_interleave's index_select needs: 4-8× faster on a CPU at 1e6 coordinates)
        cols = v.unbind(1)
        return torch.cat(
            [c.unsqueeze(1).expand(-1, size) for c, size in zip(cols, self.sizes)], dim=1
        )

    def numels(self, like: Tensor) -> Tensor:
        """``[T]``: the tensor sizes as floats of ``like``'s dtype and device."""
        return torch.tensor(self.sizes, dtype=like.dtype, device=like.device)
