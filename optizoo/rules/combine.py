"""Per-tensor linear combinations of per-coordinate vectors, differentiable in one autograd node.

A per-tensor rule (:class:`~optizoo.rules.HierarchicalRule`) forms its update as
``out_i = Σ_k coef[T(i), k] · vectors[k][i]``: per-tensor coefficients ``[T, K]`` times ``K``
flat vectors ``[n]`` whose coordinates belong to ``T`` tensors (:class:`~optizoo.rules.Segments`).

:func:`combine_reference` is the plain autograd form: a loop over tensors, one ``mul`` and
``K − 1`` ``addcmul`` per tensor, then one ``cat``. Under autograd that records ``~(K + 1)·T``
nodes per call (selects of the coefficients, the products, the split of every vector), and their
backward dominated a meta-step of the hierarchical recipe (issue 16).

:class:`SegmentCombine` computes the same values with ``K`` passes over all coordinates (the
coefficients broadcast to coordinates once) and ONE autograd node whose backward forms the same
gradients as the loop's autograd does, with the same arithmetic:

- ``∂out/∂vectors[k] = grad · coef[T(i), k]`` (a product: identical whether the coefficient is
  broadcast per tensor or per coordinate);
- ``∂out/∂coef[t, k] = Σ_{i ∈ t} grad_i · vectors[k]_i``: the products, then one ``sum`` per
  tensor over that tensor's contiguous coordinates, as the loop's ``sum_to_size`` does.

So the two are equal bit for bit on a CPU (``tests/rules/test_combine.py`` checks values and
gradients with ``torch.equal``), and the shipped recipes train the same weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from optizoo.rules.segments import Segments

__all__ = ["SegmentCombine", "combine_reference", "segment_combine"]


def _check(vectors: list[Tensor], coef: Tensor, segments: Segments) -> None:
    if not vectors:
        raise ValueError("combine needs at least one vector")
    if coef.dim() != 2 or coef.shape != (len(segments), len(vectors)):
        raise ValueError(
            f"coef must be [tensors, vectors] = [{len(segments)}, {len(vectors)}], got "
            f"{tuple(coef.shape)}"
        )
    for v in vectors:
        if v.dim() != 1 or v.shape[0] != segments.numel:
            raise ValueError(
                f"every vector must be flat [{segments.numel}] (the segments' coordinates), got "
                f"{tuple(v.shape)}"
            )


def combine_reference(vectors: list[Tensor], coef: Tensor, segments: Segments) -> Tensor:
    """``Σ_k coef[T(i), k] · vectors[k][i]`` as a loop over tensors (the plain autograd form
    :class:`SegmentCombine` reproduces)."""
    _check(vectors, coef, segments)
    pieces = [segments.split(v) for v in vectors]
    outs = []
    for i, c in enumerate(coef.unbind(0)):
        out = pieces[0][i] * c[0]
        for k in range(1, len(vectors)):
            out = out.addcmul(pieces[k][i], c[k])
        outs.append(out)
    return torch.cat(outs) if len(outs) > 1 else outs[0]


def _expanded_sum(vectors: list[Tensor], e: Tensor) -> Tensor:
    """The forward values: ``K`` passes over all coordinates with the coefficients broadcast to
    coordinates (``e [K, n]``)."""
    out = vectors[0] * e[0]
    for k in range(1, len(vectors)):
        out = out.addcmul_(vectors[k], e[k])
    return out


class SegmentCombine(torch.autograd.Function):
    """``Σ_k coef[T(i), k] · vectors[k][i]`` as one autograd node (see the module docstring).

    ``SegmentCombine.apply(segments, coef, *vectors)``; prefer :func:`segment_combine`.
    """

    @staticmethod
    def forward(ctx: Any, segments: Segments, coef: Tensor, *vectors: Tensor) -> Tensor:
        ctx.segments = segments
        e = segments.expand_rows(coef.t())  # [K, n], kept for the backward
        ctx.save_for_backward(coef, e, *vectors)
        return _expanded_sum(list(vectors), e)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        coef, e, *vectors = ctx.saved_tensors
        segments: Segments = ctx.segments
        if torch.is_grad_enabled():  # create_graph: gradients differentiable in coef too
            e = segments.expand_rows(coef.t())
        need_coef, need_vectors = ctx.needs_input_grad[1], ctx.needs_input_grad[2:]
        grads: list[Tensor | None] = [None, None]
        if need_coef:  # [K, n] products, then per tensor one sum over its coordinates
            prods = torch.stack([grad * v for v in vectors])
            sizes = segments.sizes
            grads[1] = torch.stack([p.sum(dim=1) for p in prods.split(sizes, dim=1)])
        grads += [grad * e[k] if need else None for k, need in enumerate(need_vectors)]
        return tuple(grads)


def segment_combine(vectors: list[Tensor], coef: Tensor, segments: Segments) -> Tensor:
    """``out_i = Σ_k coef[T(i), k] · vectors[k][i]`` with one autograd node.

    Args:
        vectors: ``K`` flat vectors ``[n]`` (one dtype and device).
        coef: per-tensor coefficients ``[T, K]``.
        segments: the ``T`` tensors the ``n`` coordinates belong to, in order.

    Returns:
        ``[n]``, equal bit for bit (values and gradients) to :func:`combine_reference`.
    """
    _check(vectors, coef, segments)
    return SegmentCombine.apply(segments, coef, *vectors)
