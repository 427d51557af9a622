"""HierarchicalRule: a per-tensor LSTM steering an Adam-like update (and the adapter's support
for per-tensor rules)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import optizoo
from optizoo.rules import HierarchicalRule
from optizoo.rules.parts import Segments

D = torch.float64


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)
    ).double()


def _exact(rule: HierarchicalRule, lr: float, wd: float) -> HierarchicalRule:
    rule = rule.double()
    with torch.no_grad():  # float64 exactly (the float32 init rounds log lr)
        rule.log_lr.fill_(math.log(lr))
        rule.log_wd.fill_(math.log(wd))
    return rule


def _train(model, opt, steps=25, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(20, 5, dtype=D, generator=g)
    y = torch.randn(20, 3, dtype=D, generator=g)
    for _ in range(steps):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()


def test_untrained_rule_is_exactly_adamw():
    """Independent check: torch.optim.AdamW with the nominal settings."""
    a, b = _model(), _model()
    rule = _exact(HierarchicalRule(nominal_lr=0.01, weight_decay=0.05), 0.01, 0.05)
    _train(a, optizoo.LearnedOptimizer(a.parameters(), rule=rule))
    _train(b, torch.optim.AdamW(b.parameters(), lr=0.01, weight_decay=0.05))
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-13)


def test_normalized_rule_sees_tensor_boundaries():
    """With per-tensor RMS normalization the first update of every tensor has RMS lr (the
    direction at step 1 is ±1 per coordinate, so every tensor's RMS is 1 either way); a tensor
    whose gradient is far smaller still moves by lr: the update is per tensor, not global."""
    rule = _exact(
        HierarchicalRule(normalize=True, nominal_lr=0.01, weight_decay=1e-12), 0.01, 1e-12
    )
    seg = Segments([(3, 4), (5,)])
    g = torch.cat([torch.randn(12, dtype=D), 1e-6 * torch.randn(5, dtype=D)])
    g[12] = 0.0  # a zero coordinate inside the second tensor
    theta = torch.zeros(17, dtype=D)
    state = rule.init_state(theta, segments=seg)
    u, _ = rule(g, state, param=theta, step=2, segments=seg)
    a, b = u.split([12, 5])
    assert a.square().mean().sqrt().item() == pytest.approx(0.01, rel=1e-6)
    assert b.square().mean().sqrt().item() == pytest.approx(0.01, rel=1e-6)


def test_state_layout_and_bytes():
    m = _model()
    opt = optizoo.LearnedOptimizer(m.parameters(), rule=HierarchicalRule())
    _train(m, opt, steps=2)
    w = next(iter(m.parameters()))
    st = opt.state[w]
    assert (
        st["m0"].shape == st["m1"].shape == st["v"].shape == w.shape
    )  # per coordinate: the parameter's shape
    assert st["tensor_h"].shape == (1, 1, 16) and st["tensor_lg"].shape == (1,)
    assert HierarchicalRule().state_floats_per_coordinate() == 3  # 12 bytes in float32


def test_chunks_of_whole_tensors_give_the_same_updates():
    rule = HierarchicalRule(normalize=True).double()
    torch.manual_seed(0)
    with torch.no_grad():  # a non-trivial learned part
        for p in rule.parameters():
            p.add_(0.3 * torch.randn_like(p))
    a, b = _model(), _model()
    _train(a, optizoo.LearnedOptimizer(a.parameters(), rule=rule))
    _train(b, optizoo.LearnedOptimizer(b.parameters(), rule=copy.deepcopy(rule), max_chunk=8))
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-13)


def test_state_dict_resume_is_bit_identical():
    rule = HierarchicalRule()
    a, b = _model().float(), _model().float()
    x = torch.randn(20, 5)
    y = torch.randn(20, 3)

    def steps(model, opt, n):
        for _ in range(n):
            opt.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            opt.step()

    oa = optizoo.LearnedOptimizer(a.parameters(), rule=rule)
    steps(a, oa, 6)
    ob = optizoo.LearnedOptimizer(b.parameters(), rule=copy.deepcopy(rule))
    steps(b, ob, 3)
    sd = copy.deepcopy(ob.state_dict())
    b2 = copy.deepcopy(b)
    ob2 = optizoo.LearnedOptimizer(b2.parameters(), rule=copy.deepcopy(rule))
    ob2.load_state_dict(sd)
    steps(b2, ob2, 3)
    for p, q in zip(a.parameters(), b2.parameters()):
        assert torch.equal(p, q)


def test_nonfinite_gradients_skip_coordinates_not_tensors():
    p = torch.nn.Parameter(torch.ones(4))
    opt = optizoo.LearnedOptimizer([p], rule=HierarchicalRule(nominal_lr=0.1))
    p.grad = torch.tensor([1.0, float("nan"), -1.0, float("inf")])
    opt.step()
    assert torch.isfinite(p).all()
    assert p[1] == 1.0 and p[3] == 1.0  # masked coordinates do not move at all
    assert p[0] < 1.0 and p[2] > 1.0


def test_weight_file_round_trip(tmp_path):
    rule = HierarchicalRule(normalize=True, hidden_size=8, betas=[0.9, 0.99, 0.5])
    with torch.no_grad():
        rule.head.weight.add_(0.1)
    path = optizoo.save_rule(rule, tmp_path / "h.safetensors")
    again = optizoo.load_rule(path)
    assert isinstance(again, HierarchicalRule) and again.config() == rule.config()
    for (k, v), (k2, v2) in zip(rule.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


class _Regression(optizoo.tasks.Problem):
    """A float64 linear regression with a matrix and a bias (two tensors)."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(16, 4, dtype=D, generator=g)
        self.y = torch.randn(16, 3, dtype=D, generator=g)
        self.w0 = 0.3 * torch.randn(3, 4, dtype=D, generator=g)

    def params(self):
        return {"w": self.w0.clone(), "b": torch.zeros(3, dtype=D)}

    def loss(self, params, step):
        return ((self.x @ params["w"].T + params["b"] - self.y) ** 2).mean()


def test_meta_gradient_of_log_lr_matches_finite_differences():
    """Independent check: central differences of the unrolled loss in float64."""
    problem = _Regression()
    torch.manual_seed(0)
    rule = HierarchicalRule(normalize=True, nominal_lr=0.05).double()
    with torch.no_grad():
        for q in rule.parameters():
            q.add_(0.2 * torch.randn_like(q))

    def loss_at(delta: float):
        r = copy.deepcopy(rule)
        with torch.no_grad():
            r.log_lr.add_(delta)
        res = optizoo.unroll(r, problem, steps=6, second_order=True)
        return res.losses.sum(), r

    total, r = loss_at(0.0)
    total.backward()
    eps = 1e-6
    fd = (loss_at(eps)[0].item() - loss_at(-eps)[0].item()) / (2 * eps)
    assert r.log_lr.grad.item() == pytest.approx(fd, rel=1e-6)


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="nominal_lr"):
        HierarchicalRule(nominal_lr=-1.0)
    with pytest.raises(ValueError, match="beta"):
        HierarchicalRule(betas=[1.5])
    with pytest.raises(ValueError, match="param="):
        HierarchicalRule()(torch.ones(3), HierarchicalRule().init_state(torch.ones(3)), step=1)
