"""The fused LSTM cell against independent references: torch.nn.LSTMCell (forward), the plain
composite cell (eager autograd), and finite differences (gradcheck / gradgradcheck, float64)."""

from __future__ import annotations

import pytest
import torch

from optizoo.rules.fused_lstm import (
    LSTMCellFunction,
    lstm_layer,
    lstm_layer_reference,
    pack_weights,
)

#: state tolerance per dtype: float rounding of ~k+H-term dot products and a few nonlinearities
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-12, atol=1e-13)}


def _inputs(n=37, k=3, hidden=5, dtype=torch.float64, seed=0, strided=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, k, generator=g, dtype=dtype)
    if strided:  # state slices of a [n, L, H] buffer, as LSTMRule passes them
        h = torch.randn(n, 2, hidden, generator=g, dtype=dtype)[:, 1]
        c = torch.randn(n, 2, hidden, generator=g, dtype=dtype)[:, 1]
    else:
        h = torch.randn(n, hidden, generator=g, dtype=dtype)
        c = torch.randn(n, hidden, generator=g, dtype=dtype)
    w = torch.randn(4 * hidden, k + hidden, generator=g, dtype=dtype) * 0.5
    b = torch.randn(4 * hidden, generator=g, dtype=dtype) * 0.5
    return x, h, c, w, b


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("strided", [False, True])
def test_matches_torch_lstm_cell(dtype, grad, strided):
    """Both paths (no-grad in place, autograd Function) against torch.nn.LSTMCell, whose gate
    order is i, f, g, o and whose g uses tanh directly (no pre-scaling trick)."""
    x, h, c, w, b = _inputs(dtype=dtype, strided=strided)
    hidden = h.shape[1]
    cell = torch.nn.LSTMCell(x.shape[1], hidden, dtype=dtype)
    wi, wf, wo, wg = w.split(hidden)
    bi, bf, bo, bg = b.split(hidden)
    W = torch.cat([wi, wf, wg, wo])
    with torch.no_grad():
        cell.weight_ih.copy_(W[:, : x.shape[1]])
        cell.weight_hh.copy_(W[:, x.shape[1] :])
        cell.bias_ih.copy_(torch.cat([bi, bf, bg, bo]))
        cell.bias_hh.zero_()
        want_h, want_c = cell(x, (h, c))
    pw, pb = pack_weights(w, b)
    if grad:
        pw.requires_grad_(True)
        got_h, got_c = lstm_layer(x, h, c, pw, pb)
        assert got_h.grad_fn is not None and "LSTMCellFunction" in type(got_h.grad_fn).__name__
    else:
        with torch.no_grad():
            got_h, got_c = lstm_layer(x, h, c, pw, pb)
        assert got_h.grad_fn is None
    torch.testing.assert_close(got_h.detach(), want_h, **TOL[dtype])
    torch.testing.assert_close(got_c.detach(), want_c, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_backward_matches_eager_autograd(dtype):
    x, h, c, w, b = _inputs(n=200, k=2, hidden=20, dtype=dtype, strided=True)
    pw, pb = pack_weights(w, b)
    gen = torch.Generator().manual_seed(5)
    dh, dc = (
        torch.randn(200, 20, generator=gen, dtype=dtype),
        torch.randn(200, 20, generator=gen, dtype=dtype),
    )
    grads = []
    for fn in (LSTMCellFunction.apply, lstm_layer_reference):
        ins = [t.detach().clone().requires_grad_(True) for t in (x, h, c, pw, pb)]
        hn, cn = fn(*ins)
        grads.append(torch.autograd.grad((hn, cn), ins, (dh, dc)))
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else TOL[dtype]
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, **tol)


@pytest.mark.parametrize(
    "needs", [(True,) * 5, (False, True, False, True, False), (True, False, True, False, True)]
)
def test_gradcheck_float64(needs):
    ins = [t.requires_grad_(n) for t, n in zip(_inputs(n=6, k=2, hidden=3), needs)]
    assert torch.autograd.gradcheck(LSTMCellFunction.apply, ins)


def test_gradgradcheck_float64():
    """Second order (create_graph=True): gradients of the hand-written backward's gradients."""
    ins = [t.requires_grad_(True) for t in _inputs(n=5, k=2, hidden=3, seed=1)]
    assert torch.autograd.gradgradcheck(LSTMCellFunction.apply, ins)


def test_only_needed_gradients_are_formed():
    x, h, c, w, b = _inputs()
    w.requires_grad_(True)
    hn, cn = lstm_layer(x, h, c, w, b)
    (gw,) = torch.autograd.grad(hn.sum() + cn.sum(), [w])
    assert gw.shape == w.shape and torch.isfinite(gw).all()


@pytest.mark.parametrize(
    "shapes, match",
    [
        (((4, 2), (4, 3), (4, 3), (12, 4), (12,)), "packed weights"),
        (((4, 2), (4, 3), (4, 2), (12, 5), (12,)), "x \\[n, k\\]"),
        (((5, 2), (4, 3), (4, 3), (12, 5), (12,)), "x \\[n, k\\]"),
    ],
)
def test_bad_shapes_are_a_clear_error(shapes, match):
    with pytest.raises(ValueError, match=match):
        lstm_layer(*(torch.zeros(s) for s in shapes))


def test_pack_weights_rejects_non_lstm_shapes():
    with pytest.raises(ValueError, match="4H rows"):
        pack_weights(torch.zeros(6, 4), torch.zeros(6))
    with pytest.raises(ValueError, match="bias"):
        pack_weights(torch.zeros(8, 4), torch.zeros(7))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu_and_gradchecks(dtype):
    ins = _inputs(n=300, k=2, hidden=20, dtype=dtype, strided=True)
    pw, pb = pack_weights(*ins[3:])
    cpu = [t.requires_grad_(True) for t in (*ins[:3], pw, pb)]
    gpu = [t.detach().cuda().requires_grad_(True) for t in cpu]
    hc, cc = lstm_layer(*cpu)
    hg, cg = lstm_layer(*gpu)
    torch.testing.assert_close(hg.cpu(), hc.detach(), **TOL[dtype])
    torch.testing.assert_close(cg.cpu(), cc.detach(), **TOL[dtype])
    small = [t.detach().cuda().double().requires_grad_(True) for t in _inputs(n=5, k=2, hidden=3)]
    assert torch.autograd.gradcheck(LSTMCellFunction.apply, small)
    assert torch.autograd.gradgradcheck(LSTMCellFunction.apply, small)
