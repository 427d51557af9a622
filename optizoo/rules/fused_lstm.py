"""One LSTM layer over a batch of coordinates, fused: the cell of :class:`~optizoo.rules.LSTMRule`.

A leaf module (it imports only torch). Every coordinate is a row: ``x [n, k]`` inputs,
``h, c [n, H]`` the previous hidden and cell state. One matrix product gives all four gates of
all rows, ``z = [x, h] Wᵀ + b`` (``[n, 4H]``, gate order input, forget, output | cell candidate),
and::

    i, f, o = σ(z_i), σ(z_f), σ(z_o)        g = tanh(z_g) = 2 σ(2 z_g) − 1
    c' = f ⊙ c + i ⊙ g                      h' = o ⊙ tanh(c')

:func:`pack_weights` scales the cell-candidate rows of ``W`` and ``b`` by 2 once, so a single
in-place sigmoid over the GEMM's output serves all four gates.

:func:`lstm_layer` picks one of two paths:

- **no autograd** (the optimizer step, under ``torch.no_grad``): the gate math runs in place on
  the GEMM output; no ``[n, 4H]`` temporary besides it is written.
- **autograd** (meta-training): :class:`LSTMCellFunction`, a custom ``autograd.Function`` whose
  backward is written by hand: it saves the gates ``σ(z)`` and ``tanh(c')`` and forms the
  gradient of all four gates as one ``[n, 4H]`` tensor, then two matrix products give the
  gradients of ``[x, h]`` and of ``W`` (no zero-fill-and-copy per gate slice as eager autograd
  of ``split`` does). Under ``create_graph=True`` (second-order meta-gradients) the backward
  recomputes the cell with differentiable ops, so gradients of gradients are exact.

Both paths agree with :func:`lstm_layer_reference` (plain composite PyTorch) to float rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["LSTMCellFunction", "lstm_layer", "lstm_layer_reference", "pack_weights"]


def pack_weights(weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """Scale the cell-candidate rows (the last quarter) of ``weight [4H, k+H]`` and ``bias
    [4H]`` by 2 (differentiably), so one sigmoid gives every gate: ``tanh(z) = 2σ(2z) − 1``."""
    if weight.dim() != 2 or bias.dim() != 1 or weight.shape[0] != bias.shape[0]:
        raise ValueError(
            f"weight must be [4H, k+H] and bias [4H], got {tuple(weight.shape)} and "
            f"{tuple(bias.shape)}"
        )
    if weight.shape[0] % 4:
        raise ValueError(f"weight has {weight.shape[0]} rows; an LSTM layer has 4H rows")
    hidden = weight.shape[0] // 4
    scale = torch.ones(4 * hidden, dtype=weight.dtype, device=weight.device)
    scale[3 * hidden :] = 2.0
    return weight * scale.unsqueeze(1), bias * scale


def _check(x: Tensor, h: Tensor, c: Tensor, w: Tensor, b: Tensor) -> int:
    hidden = h.shape[-1]
    if x.dim() != 2 or h.dim() != 2 or c.shape != h.shape or x.shape[0] != h.shape[0]:
        raise ValueError(
            f"lstm_layer needs x [n, k], h [n, H], c [n, H]; got {tuple(x.shape)}, "
            f"{tuple(h.shape)}, {tuple(c.shape)}"
        )
    if w.shape != (4 * hidden, x.shape[1] + hidden) or b.shape != (4 * hidden,):
        raise ValueError(
            f"packed weights must be [4H, k+H] = [{4 * hidden}, {x.shape[1] + hidden}] and bias "
            f"[{4 * hidden}], got {tuple(w.shape)} and {tuple(b.shape)}"
        )
    return hidden


def lstm_layer_reference(
    x: Tensor, h: Tensor, c: Tensor, w: Tensor, b: Tensor
) -> tuple[Tensor, Tensor]:
    """The same cell in plain composite PyTorch ops (eager autograd): the unfused baseline."""
    hidden = h.shape[-1]
    gates = torch.addmm(b, torch.cat((x, h), dim=1), w.t()).sigmoid()
    i, f, o, g = gates.split(hidden, dim=1)
    c_new = torch.addcmul(f * c, i, g.mul(2.0).sub(1.0))
    return o * torch.tanh(c_new), c_new


def _forward_inplace(
    x: Tensor, h: Tensor, c: Tensor, w: Tensor, b: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The cell without autograd: ``(h', c', σ(z), tanh(c'), [x, h])``; gate math in place on
    the GEMM output (the cell-candidate quarter of ``σ(z)`` is left holding ``σ(2 z_g)``)."""
    hidden = h.shape[-1]
    xh = torch.cat((x, h), dim=1)
    s = torch.addmm(b, xh, w.t()).sigmoid_()
    i, f, o, g = s.split(hidden, dim=1)
    c_new = torch.mul(f, c)
    c_new.addcmul_(i, g.mul(2.0).sub_(1.0))
    tc = torch.tanh(c_new)
    return torch.mul(o, tc), c_new, s, tc, xh


class LSTMCellFunction(torch.autograd.Function):
    """``(x, h, c, W, b) -> (h', c')`` with a hand-written backward (see the module docstring).

    Saves ``x, h, c, W, b`` (already alive in the caller's graph), ``[x, h] [n, k+H]`` (the
    GEMM's input, as eager autograd would), the gates ``σ(z) [n, 4H]`` and ``tanh(c') [n, H]``.
    """

    @staticmethod
    def forward(ctx, x: Tensor, h: Tensor, c: Tensor, w: Tensor, b: Tensor):  # type: ignore[override]
        h_new, c_new, s, tc, xh = _forward_inplace(x, h, c, w, b)
        ctx.save_for_backward(x, h, c, w, b, s, tc, xh)
        return h_new, c_new

    @staticmethod
    def backward(ctx, dh_new: Tensor, dc_new: Tensor):  # type: ignore[override]
        x, h, c, w, b, s, tc, xh = ctx.saved_tensors
        needs = ctx.needs_input_grad
        if torch.is_grad_enabled():
            # create_graph=True: differentiate a differentiable recomputation, so that the
            # returned gradients carry their own graph (second-order meta-gradients)
            wanted = [t for t, n in zip((x, h, c, w, b), needs) if n]
            outs = lstm_layer_reference(x, h, c, w, b)
            grads = iter(
                torch.autograd.grad(
                    outs, wanted, (dh_new, dc_new), create_graph=True, allow_unused=True
                )
            )
            return tuple(next(grads) if n else None for n in needs)
        hidden = tc.shape[1]
        i, f, o, g2 = s.split(hidden, dim=1)  # g2 = σ(2 z_g): g = 2 g2 − 1
        # dL/dc' in total: the direct gradient plus the path through h' = o tanh(c')
        dh_o = dh_new * o
        dc_total = torch.addcmul(dc_new, dh_o, tc.square(), value=-1.0).add_(dh_o)
        dz = torch.empty_like(s)
        dzi, dzf, dzo, dzg = dz.split(hidden, dim=1)
        torch.mul(dc_total, g2, out=dzi)
        dzi.mul_(2.0).sub_(dc_total)  # dc_total * g
        torch.mul(dc_total, c, out=dzf)
        torch.mul(dh_new, tc, out=dzo)
        torch.mul(dc_total, i, out=dzg)
        dzg.mul_(2.0)  # d g / d z_g = 2 σ'(2 z_g) with the packed (pre-scaled) weights
        dz.mul_(torch.addcmul(s, s, s, value=-1.0))  # σ'(z) = σ(z) (1 − σ(z))
        dx = dh = dc = dw = db = None
        k = x.shape[1]
        if needs[0] or needs[1]:
            dxh = dz @ w
            dx, dh = dxh[:, :k], dxh[:, k:]
        if needs[2]:
            dc = dc_total.mul_(f)
        if needs[3]:
            dw = dz.t() @ xh
        if needs[4]:
            db = dz.sum(0)
        return dx, dh, dc, dw, db


def lstm_layer(x: Tensor, h: Tensor, c: Tensor, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """One fused LSTM layer over ``n`` coordinates.

    Args:
        x: inputs ``[n, k]``.
        h, c: previous hidden and cell state ``[n, H]`` (views such as ``state[:, layer]`` are
            fine).
        w, b: packed weights ``[4H, k+H]`` and bias ``[4H]`` from :func:`pack_weights` (gate order
            input, forget, output, cell candidate; the last quarter pre-scaled by 2).

    Returns:
        ``(h', c')``, each ``[n, H]``, in the dtype of the inputs (all must share one dtype).

    Differentiable (hand-written backward) when autograd is recording and an input requires
    grad; otherwise the in-place path with no autograd bookkeeping.
    """
    _check(x, h, c, w, b)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, h, c, w, b)):
        return LSTMCellFunction.apply(x, h, c, w, b)
    h_new, c_new, *_ = _forward_inplace(x, h, c, w, b)
    return h_new, c_new
