"""Maximum mean discrepancy with a multi-scale inverse multiquadratic kernel.

The kernel is ``k(u, v) = Σ_h h² / (h² + ||u − v||²)`` over the widths ``h`` in
:data:`IMQ_WIDTHS` (several scales, so both coarse and fine mismatches give a gradient). The
inverse multiquadratic kernel is positive definite, so the (biased, V-statistic) estimate

    MMD²(A, B) = mean k(A, A) + mean k(B, B) − 2 mean k(A, B)

is the squared RKHS distance between the two empirical mean embeddings: always ``>= 0`` and
``0`` when the two samples are equal as multisets.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

__all__ = ["IMQ_WIDTHS", "mmd_multiscale"]

#: Kernel widths ``h`` (in data units) summed by :func:`mmd_multiscale`.
IMQ_WIDTHS: tuple[float, ...] = (0.2, 0.5, 0.9, 1.3)


def _squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """``[N, d], [M, d] -> [N, M]`` of ``||a_i − b_j||²`` (clamped at 0 against rounding)."""
    sq = a.square().sum(-1, keepdim=True) + b.square().sum(-1).unsqueeze(0) - 2.0 * (a @ b.t())
    return sq.clamp_min(0.0)


def _imq(sq: Tensor, widths: Sequence[float]) -> Tensor:
    out = sq.new_zeros(())
    for h in widths:
        out = out + (h * h / (h * h + sq)).mean()
    return out


def mmd_multiscale(a: Tensor, b: Tensor, widths: Sequence[float] = IMQ_WIDTHS) -> Tensor:
    """Biased squared MMD between samples ``a`` ``[N, d]`` and ``b`` ``[M, d]`` (scalar, ``>= 0``).

    Differentiable with respect to both samples.
    """
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"mmd_multiscale needs [N, d] and [M, d] samples, got {a.shape}, {b.shape}"
        )
    kaa = _imq(_squared_distances(a, a), widths)
    kbb = _imq(_squared_distances(b, b), widths)
    kab = _imq(_squared_distances(a, b), widths)
    return kaa + kbb - 2.0 * kab
