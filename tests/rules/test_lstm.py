"""The coordinate-wise LSTM rule and the log-and-sign preprocessor."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from optizoo.preprocess import Identity, LogSign
from optizoo.rules import LSTMRule


def test_log_sign_closed_form():
    # Andrychowicz et al. appendix A with p=10: (log|g|/p, sign g) if |g| >= e^-p else (-1, e^p g)
    g = torch.tensor([1.0, math.exp(-5), -math.exp(3), 1e-6, 0.0, -1e-6], dtype=torch.float64)
    want = torch.tensor(
        [
            [0.0, 1.0],
            [-0.5, 1.0],
            [0.3, -1.0],
            [-1.0, math.exp(10) * 1e-6],
            [-1.0, 0.0],
            [-1.0, -math.exp(10) * 1e-6],
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(LogSign(p=10)(g), want, rtol=1e-12, atol=1e-12)


def test_log_sign_is_finite_and_differentiable_at_zero():
    g = torch.tensor([0.0, 1e-30, 3.0], requires_grad=True)
    out = LogSign()(g)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(g.grad).all()


def test_identity_preprocessor():
    g = torch.tensor([1.0, -2.0])
    torch.testing.assert_close(Identity(scale=2.0)(g), torch.tensor([[2.0], [-4.0]]))
    with pytest.raises(ValueError, match="scale"):
        Identity(scale=0.0)


def _reference_lstm(rule: LSTMRule, grad: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
    """The same network built from torch.nn.LSTMCell (gate order i, f, g, o) — an independent
    implementation of the LSTM equations."""
    H = rule.hidden_size
    x = rule.preprocess(grad)
    hs, cs = [], []
    for layer in range(rule.num_layers):
        w, b = rule.weights[layer].detach(), rule.biases[layer].detach()
        n_in = w.shape[1] - H
        # ours: rows [i, f, o, g]; torch: [i, f, g, o]
        perm = torch.cat(
            [torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H), torch.arange(2 * H, 3 * H)]
        )
        cell = torch.nn.LSTMCell(n_in, H).to(grad.dtype)
        with torch.no_grad():
            cell.weight_ih.copy_(w[perm, :n_in])
            cell.weight_hh.copy_(w[perm, n_in:])
            cell.bias_ih.copy_(b[perm])
            cell.bias_hh.zero_()
        x, cc = cell(x, (h[:, layer], c[:, layer]))
        hs.append(x)
        cs.append(cc)
    out = x @ rule.head_weight.detach().t().to(grad.dtype) + rule.head_bias.detach().to(grad.dtype)
    return out.squeeze(-1) * rule.output_scale, torch.stack(hs, 1), torch.stack(cs, 1)


@pytest.mark.parametrize("preprocessor", ["log_sign", "identity"])
def test_matches_torch_lstm_cell(preprocessor):
    torch.manual_seed(0)
    rule = LSTMRule(hidden_size=8, num_layers=3, preprocessor=preprocessor).double()
    g = torch.randn(50, dtype=torch.float64)
    state = rule.init_state(g)
    state = {k: torch.randn_like(v) for k, v in state.items()}
    upd, new = rule(g, state, step=1)
    ref_u, ref_h, ref_c = _reference_lstm(rule, g, state["h"], state["c"])
    # float64 throughout: agreement to 1e-12 relative
    torch.testing.assert_close(upd, ref_u, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(new["h"], ref_h, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(new["c"], ref_c, rtol=1e-12, atol=1e-14)


def test_permuting_coordinates_permutes_updates():
    torch.manual_seed(1)
    rule = LSTMRule()
    g = torch.randn(300) * torch.logspace(-6, 1, 300)
    state = {k: torch.randn_like(v) for k, v in rule.init_state(g).items()}
    perm = torch.randperm(300)
    with torch.no_grad():
        u, s = rule(g, state, step=3)
        up, sp = rule(g[perm], {k: v[perm] for k, v in state.items()}, step=3)
    torch.testing.assert_close(up, u[perm], rtol=1e-5, atol=1e-7)
    for k in s:
        torch.testing.assert_close(sp[k], s[k][perm], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [1, 7, 100_000])
def test_runs_on_any_size(n):
    rule = LSTMRule()
    g = torch.randn(n)
    with torch.no_grad():
        u, s = rule(g, rule.init_state(g), step=1)
    assert u.shape == (n,) and s["h"].shape == (n, 2, 20) and torch.isfinite(u).all()


class _CountMatmuls(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.bmm):
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("n", [10, 5000])
def test_one_matrix_product_per_layer_for_all_coordinates(n):
    rule = LSTMRule(num_layers=2)
    g = torch.randn(n)
    with torch.no_grad(), _CountMatmuls() as counter:
        rule(g, rule.init_state(g), step=1)
    assert counter.count == 2 + 1  # one per layer (all four gates) + the linear head


def test_gradients_reach_every_meta_parameter():
    rule = LSTMRule()
    g = torch.randn(20)
    state = rule.init_state(g)
    total = 0
    for t in range(3):
        u, state = rule(g, state, step=t + 1)
        total = total + u.pow(2).sum()
    total.backward()
    for name, p in rule.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_forget_bias_and_output_scale_initialisation():
    rule = LSTMRule(hidden_size=5, forget_bias=1.0, output_scale=0.1)
    b = rule.biases[0].detach()
    bound = 1 / math.sqrt(5)
    assert (b[5:10] >= 1 - bound).all() and (b[:5].abs() <= bound).all()
    assert rule.config()["output_scale"] == 0.1


def test_bfloat16_state_option_halves_state_and_stays_close():
    torch.manual_seed(0)
    rule32 = LSTMRule()
    rule16 = LSTMRule(state_dtype="bfloat16")
    rule16.load_state_dict(rule32.state_dict())
    g = torch.randn(1000) * 1e-2
    s32, s16 = rule32.init_state(g), rule16.init_state(g)
    assert (
        s16["h"].dtype == torch.bfloat16 and s16["h"].element_size() * 2 == s32["h"].element_size()
    )
    with torch.no_grad():
        for t in range(5):
            u32, s32 = rule32(g, s32, step=t + 1)
            u16, s16 = rule16(g, s16, step=t + 1)
    # bf16 keeps ~3 significant digits of the hidden state: updates agree to a few percent
    assert float((u32 - u16).norm() / u32.norm()) < 0.05


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(hidden_size=0), "hidden_size"),
        (dict(num_layers=0), "num_layers"),
        (dict(output_scale=-1.0), "output_scale"),
        (dict(state_dtype="float16"), "state_dtype"),
        (dict(preprocessor="nope"), "nope"),
    ],
)
def test_bad_configuration(kwargs, match):
    with pytest.raises((ValueError, KeyError), match=match):
        LSTMRule(**kwargs)
