"""optizoo.rules.combine: the per-tensor combination as one autograd node is the loop over tensors
bit for bit (values, gradients of every input), double-differentiable, and checks its input; the
shape-only per-tensor constants are built once per Segments (Segments.memo)."""

from __future__ import annotations

import pytest
import torch

from optizoo.rules import HierarchicalRule
from optizoo.rules.combine import combine_reference, segment_combine
from optizoo.rules.parts import TensorStats
from optizoo.rules.segments import Segments


def _case(seed: int, dtype: torch.dtype, big: bool = False):
    g = torch.Generator().manual_seed(seed)
    tensors = int(torch.randint(2, 30, (), generator=g))
    hi = 300 if big else 40
    shapes = [
        tuple(int(x) for x in torch.randint(1, hi, (int(torch.randint(1, 3, (), generator=g)),), generator=g))
        for _ in range(tensors)
    ]  # fmt: skip
    seg = Segments(shapes)
    k = int(torch.randint(1, 5, (), generator=g))
    scale = 10.0 ** torch.randn((), generator=g, dtype=torch.float64).item()
    vectors = [
        (torch.randn(seg.numel, generator=g, dtype=dtype) * scale).requires_grad_()
        for _ in range(k)
    ]
    coef = torch.randn(tensors, k, generator=g, dtype=dtype).requires_grad_()
    upstream = torch.randn(seg.numel, generator=g, dtype=dtype)
    return seg, vectors, coef, upstream


def _value_and_grads(fn, seg, vectors, coef, upstream):
    out = fn(vectors, coef, seg)
    return out, torch.autograd.grad(out, [coef, *vectors], upstream)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", range(12))
def test_one_node_equals_the_loop_over_tensors_bit_for_bit(dtype, seed):
    """The reference is the plain autograd loop (independent arithmetic path: per-tensor scalar
    products and autograd's own backward); equality is exact (torch.equal)."""
    seg, vectors, coef, upstream = _case(seed, dtype, big=seed % 4 == 0)
    want, want_grads = _value_and_grads(combine_reference, seg, vectors, coef, upstream)
    got, got_grads = _value_and_grads(segment_combine, seg, vectors, coef, upstream)
    assert torch.equal(got, want)
    for a, b in zip(got_grads, want_grads):
        assert torch.equal(a, b)


def test_values_match_a_closed_form():
    """Σ_k coef[T(i), k] · v_k[i] written out by hand on two tensors (exact small integers)."""
    seg = Segments([(2,), (1, 3)])
    v0 = torch.tensor([1.0, 2, 3, 4, 5])
    v1 = torch.tensor([10.0, 20, 30, 40, 50])
    coef = torch.tensor([[2.0, 1.0], [-1.0, 3.0]])
    want = torch.tensor([2 + 10, 4 + 20, -3 + 90, -4 + 120, -5 + 150.0])
    assert torch.equal(segment_combine([v0, v1], coef, seg), want)


def test_only_the_inputs_that_need_gradients_get_them():
    seg, vectors, coef, upstream = _case(3, torch.float64)
    frozen = [v.detach() for v in vectors]
    out = segment_combine(frozen, coef, seg)
    (gc,) = torch.autograd.grad(out, [coef], upstream)
    _, (want, *_) = _value_and_grads(combine_reference, seg, vectors, coef, upstream)
    assert torch.equal(gc, want)


def test_second_order_gradients_match_the_loop():
    """create_graph through the node: gradients of gradients as the loop's (float64, 1e-12)."""
    seg, vectors, coef, upstream = _case(5, torch.float64)
    results = []
    for fn in (combine_reference, segment_combine):
        out = fn(vectors, coef, seg)
        gc, *gv = torch.autograd.grad(out, [coef, *vectors], upstream, create_graph=True)
        scalar = (gc**2).sum() + sum((g**2).sum() for g in gv)
        results.append(torch.autograd.grad(scalar, [coef, *vectors]))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_gradcheck():
    seg = Segments([(3,), (2, 2), (1,)])
    vectors = [torch.randn(8, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    coef = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    fn = lambda c, *v: segment_combine(list(v), c, seg)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (coef, *vectors))
    assert torch.autograd.gradgradcheck(fn, (coef, *vectors))


def test_bad_shapes_are_refused_with_what_was_expected():
    seg = Segments([(3,), (2,)])
    v = torch.zeros(5)
    with pytest.raises(ValueError, match=r"coef must be \[tensors, vectors\] = \[2, 1\]"):
        segment_combine([v], torch.zeros(3, 1), seg)
    with pytest.raises(ValueError, match=r"flat \[5\]"):
        segment_combine([torch.zeros(4)], torch.zeros(2, 1), seg)
    with pytest.raises(ValueError, match="at least one vector"):
        segment_combine([], torch.zeros(2, 0), seg)


def test_the_rule_under_autograd_uses_the_one_node(monkeypatch):
    """HierarchicalRule.forward with autograd on several tensors goes through segment_combine
    (and its meta-gradients equal the loop's: the recipe test pins whole runs)."""
    import optizoo.rules.hierarchical as hierarchical

    torch.manual_seed(0)
    rule = HierarchicalRule()
    seg = Segments([(4, 3), (3,)])
    theta = torch.randn(15, requires_grad=True)
    state = rule.init_state(theta.detach(), segments=seg)
    grad = torch.randn(15)
    calls = []
    real = hierarchical.segment_combine
    monkeypatch.setattr(hierarchical, "segment_combine", lambda *a: calls.append(1) or real(*a))
    fast, _ = rule(grad, state, param=theta, step=1, segments=seg)
    monkeypatch.setattr(hierarchical, "segment_combine", combine_reference)
    slow, _ = rule(grad, state, param=theta, step=1, segments=seg)
    assert calls == [1] and torch.equal(fast, slow)
    ga = torch.autograd.grad(fast.square().sum(), [theta, rule.log_lr])
    gb = torch.autograd.grad(slow.square().sum(), [theta, rule.log_lr])
    assert all(torch.equal(a, b) for a, b in zip(ga, gb))


def test_memo_builds_once_per_key_and_static_features_are_unchanged():
    seg = Segments([(4, 3), (7,), ()])
    built = []
    first = seg.memo("k", lambda: built.append(1) or torch.ones(2))
    again = seg.memo("k", lambda: built.append(1) or torch.zeros(2))
    assert built == [1] and again is first
    stats = TensorStats()
    like = torch.zeros(1)
    static = stats.static(seg, like)
    assert stats.static(seg, like) is static
    # log10(numel)/7, matrix flag, log10(fan_in)/4 (fan_in = numel / shape[0] for matrices)
    import math

    want = torch.tensor(
        [
            [math.log10(12) / 7, 1.0, math.log10(3) / 4],
            [math.log10(7) / 7, 0.0, 0.0],
            [0.0, 0.0, 0.0],
        ]
    )
    assert torch.equal(static, want)
    assert stats.static(seg, like.double()).dtype == torch.float64
    assert torch.equal(seg.numels(like), torch.tensor([12.0, 7.0, 1.0]))
