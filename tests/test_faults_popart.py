"""Pop-Art statistics cannot overflow: in a float32 or float16 head a finite
but huge target no longer turns the variance into inf and the weights into nan for good.

Reference: the same head in float64 (same initial weights) fed the same targets; and the closed
form of one update from ``mu = 0, var = 1``: ``mu' = beta y``, ``var' = (1 - beta) + beta (1 -
beta) y**2``.
"""

from __future__ import annotations

import pytest
import torch

from optizoo.popart import PopArtHead


def pair(dtype: torch.dtype, beta: float = 0.1) -> tuple[PopArtHead, PopArtHead]:
    torch.manual_seed(0)
    low = PopArtHead(3, 1, beta=beta, dtype=dtype)
    ref = PopArtHead(3, 1, beta=beta, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(low.weight.double())
        ref.bias.copy_(low.bias.double())
    return low, ref


def test_float32_head_survives_a_target_of_3e21():
    head, ref = pair(torch.float32)
    y = 3e21
    head.update_stats(torch.tensor([[y]], dtype=torch.float32))
    beta = 0.1
    y32 = float(torch.tensor(y, dtype=torch.float32))  # the target as float32 holds it
    assert head.mu.item() == pytest.approx(beta * y32, rel=1e-12)
    assert head.var.item() == pytest.approx((1 - beta) + beta * (1 - beta) * y32**2, rel=1e-12)
    assert torch.isfinite(head.var).all() and torch.isfinite(head.weight).all()
    ref.update_stats(torch.tensor([[y32]], dtype=torch.float64))
    for t in (1.0, -5.0, 2e21):  # and it keeps learning afterwards
        head.update_stats(torch.tensor([[t]], dtype=torch.float32))
        ref.update_stats(torch.tensor([[float(torch.tensor(t, dtype=torch.float32))]]).double())
    x = torch.randn(4, 3)
    out = head(x, normalized=False)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    # outputs are sums of terms of size sigma ~ 1e21: compare to float32 rounding of that scale
    scale = float(ref.sigma.max())
    torch.testing.assert_close(
        out.double(), ref(x.double(), normalized=False), rtol=0, atol=1e-5 * scale
    )
    torch.testing.assert_close(head.mu, ref.mu, rtol=1e-6, atol=0)
    torch.testing.assert_close(head.var, ref.var, rtol=1e-6, atol=0)
    assert torch.isfinite(head.normalize(torch.tensor([[1e21]]))).all()


def test_float16_head_keeps_a_variance_beyond_float16_range():
    head, ref = pair(torch.float16)
    for y in (3e4, -2e4, 6e4):  # each representable in float16; their variance (~1e9) is not
        head.update_stats(torch.tensor([[y]], dtype=torch.float16))
        ref.update_stats(torch.tensor([[y]], dtype=torch.float64))
    assert torch.isfinite(head.var).all() and torch.isfinite(head.weight).all()
    assert head.var.item() == pytest.approx(ref.var.item(), rel=1e-3)


def test_targets_beyond_the_layer_dtype_are_refused_and_change_nothing():
    head, _ = pair(torch.float16)
    before = {k: v.clone() for k, v in head.state_dict().items()}
    with pytest.raises(ValueError, match="float16"):
        head.update_stats(torch.tensor([[3e21]], dtype=torch.float32))
    for k, v in head.state_dict().items():
        assert torch.equal(v, before[k]), k
    # a head converted with .half() stores float16 statistics: refused too, never inf
    half = PopArtHead(3, 1, beta=0.1).half()
    with pytest.raises(ValueError, match="overflow"):
        half.update_stats(torch.tensor([[3e4]], dtype=torch.float16))
    assert torch.isfinite(half.var).all()
