"""Each part of optizoo.rules.parts on its own, against an independent computation."""

from __future__ import annotations

import math

import pytest
import torch

from optizoo.rules import parts
from optizoo.rules.parts import (
    MLP,
    CoordinateLSTM,
    DecoupledWeightDecay,
    LinearHead,
    Moments,
    NewtonSchulz,
    NominalStep,
    OutputScale,
    Preprocessed,
    RMSNormalize,
    Segments,
    TensorLSTM,
    TensorStats,
    lstm_layer,
)
from optizoo.rules.parts.base import SCOPES
from optizoo.rules.parts.inputs import one_minus_power, progress_features

D = torch.float64


def test_every_part_declares_its_scope():
    tensor_parts = {TensorLSTM, TensorStats, RMSNormalize, NewtonSchulz}
    for name in parts.__all__:
        obj = getattr(parts, name)
        if isinstance(obj, type) and issubclass(obj, parts.Part):
            assert obj.scope in SCOPES, name
            assert (obj.scope == "tensor") == (obj in tensor_parts), name


def test_lstm_layer_matches_torch_lstm_cell():
    """Independent check: torch.nn.LSTMCell (gate order i, f, g, o) with the same weights."""
    torch.manual_seed(0)
    k, h, b = 3, 5, 7
    w = torch.randn(4 * h, k + h, dtype=D)
    bias = torch.randn(4 * h, dtype=D)
    x, h0, c0 = torch.randn(b, k, dtype=D), torch.randn(b, h, dtype=D), torch.randn(b, h, dtype=D)
    order = torch.cat(
        [torch.arange(0, 2 * h), torch.arange(3 * h, 4 * h), torch.arange(2 * h, 3 * h)]
    )
    cell = torch.nn.LSTMCell(k, h).double()
    with torch.no_grad():
        cell.weight_ih.copy_(w[order, :k])
        cell.weight_hh.copy_(w[order, k:])
        cell.bias_ih.copy_(bias[order])
        cell.bias_hh.zero_()
    ref_h, ref_c = cell(x, (h0, c0))
    new_h, new_c = lstm_layer(x, h0, c0, w, bias)
    torch.testing.assert_close(new_h, ref_h, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(new_c, ref_c, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", [CoordinateLSTM, TensorLSTM])
def test_stacked_lstm_rows_are_independent_and_state_keys(cls):
    torch.manual_seed(1)
    cell = cls(4, hidden_size=6, num_layers=2).double()
    x = torch.randn(9, 4, dtype=D)
    state = cell.init_state(9, D, x.device)
    assert set(state) == set(cls.state_keys) and state[cls.state_keys[0]].shape == (9, 2, 6)
    top, _ = cell(x, state)
    top2, _ = cell(x[3:5], {k: v[3:5] for k, v in state.items()})
    torch.testing.assert_close(top[3:5], top2, rtol=1e-12, atol=1e-14)
    assert top.shape == (9, 6) and cell.state_floats == 24
    assert cell.flops_per_row() == 2 * 4 * 6 * (4 + 6) + 2 * 4 * 6 * 12


def test_mlp_cell_closed_form():
    torch.manual_seed(2)
    mlp = MLP(3, hidden_size=4, num_layers=2).double()
    x = torch.randn(5, 3, dtype=D)
    ref = x
    for w, b in zip(mlp.weights, mlp.biases):
        ref = torch.relu(ref @ w.T + b)
    torch.testing.assert_close(mlp(x), ref)


def test_linear_head_inits_and_errors():
    assert LinearHead(4, 3, init="zero").weight.abs().sum() == 0
    w = LinearHead(16, 1).weight
    assert w.abs().max() <= 0.25 and w.abs().sum() > 0
    with pytest.raises(ValueError, match="init"):
        LinearHead(4, 1, init="normal")
    with pytest.raises(ValueError, match="outputs"):
        LinearHead(4, 0)


def test_segments_reductions_match_loops():
    shapes = [(3, 4), (5,), (), (2, 2, 2)]
    seg = Segments(shapes)
    x = torch.randn(seg.numel, dtype=D)
    y = torch.randn(seg.numel, dtype=D)
    pieces = list(x.split([12, 5, 1, 8]))
    torch.testing.assert_close(seg.sumsq(x), torch.stack([p.square().sum() for p in pieces]))
    torch.testing.assert_close(
        seg.dot(x, y), torch.stack([a @ b for a, b in zip(pieces, y.split([12, 5, 1, 8]))])
    )
    v = torch.arange(4, dtype=D)
    assert seg.expand(v).tolist() == [0.0] * 12 + [1.0] * 5 + [2.0] + [3.0] * 8
    with pytest.raises(ValueError, match="coordinates"):
        seg.check(torch.zeros(7))


def test_rms_normalize_gives_unit_rms_per_tensor_and_keeps_zero_tensors():
    seg = Segments([(4, 3), (6,), (2,)])
    u = torch.cat(
        [torch.randn(12, dtype=D) * 100, torch.randn(6, dtype=D) * 1e-4, torch.zeros(2, dtype=D)]
    )
    out = RMSNormalize()(u, seg)
    a, b, c = out.split([12, 6, 2])
    assert a.square().mean().sqrt().item() == pytest.approx(1.0, rel=1e-9)
    assert b.square().mean().sqrt().item() == pytest.approx(1.0, rel=1e-6)
    assert torch.equal(c, torch.zeros(2, dtype=D))


def test_newton_schulz_approximates_the_polar_factor():
    """Independent check: U Vᵀ from an SVD. The quintic iteration is approximate by design
    (singular values end in about [0.7, 1.2]), so compare directions, not values."""
    torch.manual_seed(3)
    m = torch.randn(16, 8, dtype=D)
    ns = NewtonSchulz()
    o = ns.orthogonalize(m)
    u, _, vh = torch.linalg.svd(m, full_matrices=False)
    polar = u @ vh
    cos = (o * polar).sum() / (o.norm() * polar.norm())
    assert cos > 0.97
    sv = torch.linalg.svdvals(o)
    assert sv.min() > 0.6 and sv.max() < 1.25
    seg = Segments([(16, 8), (5,)])
    flat = torch.cat([m.reshape(-1), torch.arange(5, dtype=D)])
    out = ns(flat, seg)
    torch.testing.assert_close(out[:128], (o * 4.0).reshape(-1))  # √max(16, 8) = 4
    assert torch.equal(out[128:], torch.arange(5, dtype=D))  # vectors pass through
    assert ns.flops(seg) == 5 * 2 * (2 * 8 * 8 * 16 + 8**3)


def test_nominal_step_and_weight_decay_closed_form():
    d = torch.tensor([1.0, -2.0, 0.5], dtype=D)
    theta = torch.tensor([3.0, 0.0, -1.0], dtype=D)
    nom = NominalStep(lr=0.1, max_log_scale=2.0, additive_scale=0.1).double()
    wd = DecoupledWeightDecay(0.01).double()
    zero = torch.zeros(3, dtype=D)
    direction = wd(nom.direction(d, zero, zero), theta)
    lr = math.exp(float(nom.log_lr.detach()))
    decay = math.exp(float(wd.log_wd.detach()))
    torch.testing.assert_close(nom(direction), -lr * (d + decay * theta))
    big = torch.full((3,), 50.0, dtype=D)  # saturated outputs: the bound holds
    bound = lr * (d.abs() * math.exp(2.0) + 0.1)
    assert (nom(nom.direction(d, big, big)).abs() <= bound + 1e-12).all()
    with pytest.raises(ValueError, match="param="):
        wd(direction, None)
    with pytest.raises(ValueError, match="nominal_lr"):
        NominalStep(lr=-1.0)
    assert NominalStep(lr=0.0)(d).abs().max() == 0  # lr = 0: a rule that never steps
    torch.testing.assert_close(OutputScale(0.1)(d.unsqueeze(1)), 0.1 * d)


def test_moments_match_adam_state():
    """Independent check: torch.optim.Adam's exp_avg / exp_avg_sq and its update direction."""
    torch.manual_seed(4)
    p = torch.nn.Parameter(torch.randn(6, dtype=D))
    adam = torch.optim.Adam([p], lr=1.0, betas=(0.9, 0.999), eps=1e-8)
    mom = Moments(betas=(0.9, 0.5), beta2=0.999, eps=1e-8)
    state = mom.init_state(p.detach(), D)
    for t in range(1, 6):
        g = torch.randn(6, dtype=D)
        before = p.detach().clone()
        p.grad = g.clone()
        adam.step()
        d, state = mom(g, state, t)
        torch.testing.assert_close(state["m0"], adam.state[p]["exp_avg"])
        torch.testing.assert_close(state["v"], adam.state[p]["exp_avg_sq"])
        torch.testing.assert_close(-d[0], p.detach() - before, rtol=1e-10, atol=1e-12)
    assert len(d) == 3 and mom.state_floats == 3 and set(state) == {"m0", "m1", "v"}


def test_tensor_stats_are_scale_free():
    seg = Segments([(4, 5), (7,)])
    stats = TensorStats(progress=(10.0,))
    torch.manual_seed(5)
    g, m, d, theta = (torch.randn(27, dtype=D) for _ in range(4))
    state = stats.init_state(2, D, g.device)
    x1, s1 = stats(seg, state, grad=g, momentum=m, direction=d, param=theta, step=1)
    x2, _ = stats(seg, state, grad=7 * g, momentum=7 * m, direction=d, param=theta, step=1)
    assert x1.shape == (2, stats.out_features)
    torch.testing.assert_close(x1, x2)
    x3, _ = stats(seg, s1, grad=2 * g, momentum=m, direction=d, param=theta, step=2)
    torch.testing.assert_close(x3[:, 3], torch.full((2,), math.log(2.0), dtype=D))  # trend
    assert x1[:, -2].tolist() == [1.0, 0.0]  # matrix flag


def test_one_minus_power_is_accurate_in_float32():
    """``1 − βᵗ`` of a float32 step tensor against the same in Python's double precision: within
    2 float32 ulps (rtol 2.4e-7), where the direct float32 ``1 − β**t`` is off by up to 6e-5 at
    β = 0.999 (cancellation); β = 0 gives 1."""
    betas = [0.0, 0.5, 0.9, 0.99, 0.999, 0.9999]
    steps = [1, 2, 3, 10, 77, 1000, 12345]
    worst = naive_worst = 0.0
    for beta in betas:
        for t in steps:
            want = 1 - beta**t
            step = torch.tensor(float(t))
            got = one_minus_power(beta, step)
            assert got.dtype == torch.float32
            worst = max(worst, abs(got.item() - want) / want)
            naive = 1 - torch.tensor(beta, dtype=torch.float32) ** step
            naive_worst = max(naive_worst, abs(naive.item() - want) / want)
    assert worst <= 2.4e-7 and naive_worst > 1e-5


def test_progress_features_tensor_and_python_steps_agree():
    """tanh(t / T): a Python step (double precision, then rounded) and a tensor step (float32 on
    the device) agree to float32 rounding (rtol 2.4e-7, atol 1e-7 near 0)."""
    taus = (30.0, 300.0, 3000.0)
    like = torch.zeros(1)
    for t in (1, 29, 300, 5000):
        want = torch.tensor([math.tanh(t / tau) for tau in taus])
        assert torch.equal(progress_features(t, taus, like), want)
        got = progress_features(torch.tensor(float(t)), taus, like)
        torch.testing.assert_close(got, want, rtol=2.4e-7, atol=1e-7)


def test_moments_and_tensor_stats_take_a_tensor_step():
    """A 0-d tensor step (what a compiled optimizer step passes) gives the Python step's
    directions and statistics (float64: tolerance 1e-12), trend 0 at step 1 included."""
    seg = Segments([(4, 5), (7,)])
    mom, stats = Moments(betas=(0.9, 0.0)), TensorStats()
    torch.manual_seed(6)
    theta = torch.randn(27, dtype=D)

    def step(state, g, t):
        d, new = mom(g, state, t)
        x, st = stats(seg, state, grad=g, momentum=new["m0"], direction=d[0], param=theta, step=t)
        return d, x, {**new, **st}

    s_int = s_ten = {**mom.init_state(theta, D), **stats.init_state(2, D, theta.device)}
    for t in (1, 2, 3):
        g = torch.randn(27, dtype=D)
        d1, x1, s_int = step(s_int, g, t)
        d2, x2, s_ten = step(s_ten, g, torch.tensor(float(t)))
        for a, b in zip(d1, d2):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(x1, x2, rtol=1e-12, atol=1e-14)
        if t == 1:
            assert x2[:, 3].abs().max() == 0  # no trend at the first step
    with pytest.raises(ValueError, match="1-based"):
        mom(g, s_int, 0)


def test_preprocessed_wraps_the_registry():
    pre = Preprocessed("log_sign", {"p": 10.0})
    assert pre.out_features == 2 and pre.config() == {"name": "log_sign", "args": {"p": 10.0}}
    out = pre(torch.tensor([1.0, 0.0]))
    assert out.shape == (2, 2) and out[0, 1] == 1.0
