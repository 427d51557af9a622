"""Where each tensor lies in a flat batch of coordinates, with per-tensor reductions.

Per-tensor parts receive the flat batch ``[n]`` of all coordinates of several tensors plus a
:class:`Segments` saying which coordinates belong to which tensor (in order). Reductions go
through ``torch._foreach_norm`` (one call for all tensors) and broadcasts back to coordinates
through one ``cat`` of expanded views, so the cost does not grow with a Python loop over
tensors; both are differentiable (meta-training backpropagates through them).

A batch may hold only a *shard* of each tensor (FSDP2: every rank steps its local shard): then
``sizes`` are the local coordinate counts, ``shapes`` stay the whole tensors' shapes (what
per-tensor statistics describe) and :meth:`Segments.reduce` sums per-tensor partial sums over
the shards (an all-reduce over the shard group), so that every rank sees whole-tensor statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import torch
from torch import Tensor

__all__ = ["Segments"]


class Segments:
    """The tensors of a flat batch.

    Args:
        shapes: the shape of each tensor, in the order their coordinates appear in the batch
            (``torch.Size`` or tuples; ``()`` is a scalar with one coordinate).
        sizes: the coordinates of each tensor present in the batch, when it holds only a shard
            of each (default: whole tensors, ``shape.numel()`` each).
        reduce: with ``sizes``, a function summing per-tensor partial sums ``[T, ...]`` over the
            shards of every tensor (e.g. an all-reduce over the shard group); it must return
            the sums (it may work in place on its argument).
    """

    def __init__(
        self,
        shapes: Sequence[Sequence[int]],
        *,
        sizes: Sequence[int] | None = None,
        reduce: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        self.shapes = [torch.Size(s) for s in shapes]
        if not self.shapes:
            raise ValueError("Segments needs at least one tensor shape")
        #: the whole tensors' coordinate counts (what per-tensor means and statistics use)
        self.full_sizes = [s.numel() for s in self.shapes]
        if sizes is None:
            if reduce is not None:
                raise ValueError("Segments(reduce=...) needs sizes= (the shards' sizes)")
            self.sizes = list(self.full_sizes)
        else:
            self.sizes = [int(n) for n in sizes]
            if len(self.sizes) != len(self.shapes) or not all(
                0 <= n <= full for n, full in zip(self.sizes, self.full_sizes)
            ):
                raise ValueError(
                    f"sizes must give, for each of the {len(self.shapes)} tensors, how many of "
                    f"its coordinates the batch holds (0 to its numel {self.full_sizes}), got "
                    f"{list(sizes)}"
                )
        self.numel = sum(self.sizes)
        self._reduce = reduce
        self._lengths: dict[torch.device, Tensor] = {}
        self._memo: dict[Hashable, Tensor] = {}

    @property
    def sharded(self) -> bool:
        """Whether the batch holds shards whose partial sums :meth:`reduce` combines."""
        return self._reduce is not None

    def reduce(self, partial: Tensor) -> Tensor:
        """Whole-tensor sums ``[T, ...]`` from this batch's per-tensor partial sums (the shards'
        sums combined; ``partial`` itself when the batch holds whole tensors)."""
        return partial if self._reduce is None else self._reduce(partial)

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

    def memo(self, key: Hashable, build: Callable[[], Tensor]) -> Tensor:
        """``build()``, computed once per ``key`` for this batch (values that depend on the
        shapes only, e.g. per-tensor constants; callers must not modify the result in place).
        Not under ``torch.compile``, where it is rebuilt each call."""
        if torch.compiler.is_compiling():
            return build()
        value = self._memo.get(key)
        if value is None:
            value = self._memo[key] = build()
        return value

    def split(self, x: Tensor) -> list[Tensor]:
        """Views of ``x [n, ...]``, one per tensor."""
        return list(x.split(self.sizes)) if len(self.sizes) > 1 else [x]

    def sumsq(self, x: Tensor) -> Tensor:
        """``[T]``: the sum of squares of each tensor's coordinates of ``x [n]`` (in this batch:
        :meth:`reduce` makes whole-tensor sums of a shard's)."""
        return torch.stack(torch._foreach_norm(self.split(x))).square()

    def mean_square(self, x: Tensor) -> Tensor:
        """``[T]``: each (whole) tensor's mean of ``x²``."""
        return self.reduce(self.sumsq(x)) / self.numels(x)

    def dot(self, x: Tensor, y: Tensor) -> Tensor:
        """``[T]``: each tensor's ``Σ x·y`` (over this batch's coordinates)."""
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
        """``[T]``: the (whole) tensors' sizes as floats of ``like``'s dtype and device."""
        return self.memo(
            ("numels", like.dtype, like.device),
            lambda: torch.tensor(self.full_sizes, dtype=like.dtype, device=like.device),
        )
