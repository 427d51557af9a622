"""Feature extractors, the LSTM rule's options (features, nominal Adam step, MLP cell), MixTask."""

from __future__ import annotations

import math

import pytest
import torch

import optizoo
from optizoo.rules import LSTMRule
from optizoo.rules.features import Features
from optizoo.tasks.mix import MixTask, ScaledProblem

OPTIONS = {
    "nominal-lstm": {
        "parameterization": "nominal",
        "hidden_size": 6,
        "features": {"progress": [10, 100], "param": True, "log_sign": True},
    },
    "nominal-mlp": {
        "parameterization": "nominal",
        "cell": "mlp",
        "hidden_size": 8,
        "features": {"progress": [10]},
    },
    "nominal-wd": {
        "parameterization": "nominal",
        "hidden_size": 5,
        "weight_decay": 0.02,
        "features": {"progress": [10]},
    },
    "direct-features": {"hidden_size": 5, "num_layers": 1, "features": {"betas": [0.9, 0.99]}},
    "mlp-log-sign": {"cell": "mlp", "hidden_size": 4, "num_layers": 2},
}


def _randomize(rule: LSTMRule, seed: int = 0) -> LSTMRule:
    """Non-zero heads, so the learned corrections are active."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in rule.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return rule


def _run(rule, grads, params, steps_from=1):
    state = rule.init_state(params)
    ups = []
    for t, g in enumerate(grads, start=steps_from):
        u, state = rule(g, state, param=params, step=t)
        ups.append(u)
    return torch.stack(ups), state


def test_features_closed_form():
    # independent recomputation of the Adam-style moments with python floats
    f = Features(
        betas=(0.5, 0.9), beta2=0.99, eps=1e-8, log_sign=True, param=True, progress=(10.0,)
    )
    gs = [[0.3, -2.0], [0.1, 1.0], [-0.4, 0.5]]
    state = f.init_state(torch.zeros(2, dtype=torch.float64))
    param = torch.tensor([0.7, -0.2], dtype=torch.float64)
    m = [[0.0, 0.0], [0.0, 0.0]]
    v = [0.0, 0.0]
    for t, g in enumerate(gs, start=1):
        x, state, _ = f(torch.tensor(g, dtype=torch.float64), state, param=param, step=t)
        for i in range(2):
            v[i] = 0.99 * v[i] + 0.01 * g[i] ** 2
            den = math.sqrt(v[i] / (1 - 0.99**t)) + 1e-8
            want = []
            for j, b in enumerate((0.5, 0.9)):
                m[i][j] = b * m[i][j] + (1 - b) * g[i]
                want.append(m[i][j] / (1 - b**t) / den)
            want.append(g[i] / den)
            want += [math.log(abs(g[i])) / 10, math.copysign(1.0, g[i])]
            want += [float(param[i]), math.tanh(t / 10)]
            # float64 arithmetic in a different order: agreement to 1e-12
            torch.testing.assert_close(
                x[i], torch.tensor(want, dtype=torch.float64), rtol=1e-12, atol=1e-12
            )
    assert f.out_features == 7 and x.shape == (2, 7)


def test_features_are_clamped_and_pure():
    f = Features(betas=(0.5,), beta2=0.999, clip=3.0)
    state = f.init_state(torch.zeros(4))
    state = {k: v + 0.1 for k, v in state.items()}
    before = {k: v.clone() for k, v in state.items()}
    g = torch.tensor([1e3, -1e3, 0.0, 1e-3])
    g0 = g.clone()
    x, new, _ = f(g, state, step=5)
    assert x.abs().max() <= 3.0
    assert all(torch.equal(state[k], before[k]) for k in state) and torch.equal(g, g0)
    assert new["m"] is not state["m"]


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_coordinate_wise_permutation(name):
    torch.manual_seed(0)
    rule = _randomize(LSTMRule(**OPTIONS[name]).double())
    n = 37
    params = torch.randn(n, dtype=torch.float64)
    grads = [torch.randn(n, dtype=torch.float64) * 10.0**k for k in (-3, 0, 2)]
    perm = torch.randperm(n)
    ups, state = _run(rule, grads, params)
    ups_p, state_p = _run(rule, [g[perm] for g in grads], params[perm])
    torch.testing.assert_close(ups_p, ups[:, perm], rtol=1e-12, atol=1e-14)
    for k in state:
        assert state[k].shape[0] == n
        torch.testing.assert_close(state_p[k], state[k][perm], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_forward_is_pure(name):
    rule = _randomize(LSTMRule(**OPTIONS[name]))
    params = torch.randn(11)
    state = {k: torch.randn_like(v) for k, v in rule.init_state(params).items()}
    if "v" in state:
        state["v"] = state["v"].abs()
    g = torch.randn(11)
    copies = {k: v.clone() for k, v in state.items()}
    g0, p0 = g.clone(), params.clone()
    update, new = rule(g, state, param=params, step=3)
    assert torch.equal(g, g0) and torch.equal(params, p0)
    assert all(torch.equal(state[k], copies[k]) for k in state)
    assert set(new) == set(state) and update.shape == g.shape
    assert torch.isfinite(update).all()


def test_state_size_matches_declaration():
    for cfg in OPTIONS.values():
        rule = LSTMRule(**cfg)
        state = rule.init_state(torch.zeros(10))
        floats = sum(v[0].numel() for v in state.values())
        assert floats == rule.state_floats_per_coordinate()
    # the MLP cell with Adam features keeps 5 floats (20 bytes fp32) a coordinate; Adam keeps 2
    assert LSTMRule(cell="mlp", parameterization="nominal").state_floats_per_coordinate() == 5


def test_default_config_is_the_papers():
    # weight files written before the options existed must keep loading to the same rule
    assert set(LSTMRule().config()) == {
        "hidden_size",
        "num_layers",
        "preprocessor",
        "preprocessor_args",
        "output_scale",
        "forget_bias",
        "state_dtype",
    }
    assert not LSTMRule().needs_param


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_config_round_trip_through_weight_file(name, tmp_path):
    rule = _randomize(LSTMRule(**OPTIONS[name]))
    path = optizoo.save_rule(rule, tmp_path / "r.safetensors", training={"note": name})
    back = optizoo.zoo.load_rule(path)
    assert back.config() == rule.config()
    assert back.needs_param == rule.needs_param
    params = torch.randn(9)
    grads = [torch.randn(9) for _ in range(3)]
    torch.testing.assert_close(
        _run(back, grads, params)[0], _run(rule, grads, params)[0], rtol=0, atol=0
    )


def test_nominal_with_zero_correction_is_adam():
    # the untrained nominal rule (zero head) must be torch.optim.Adam with lr = exp(log_lr)
    rule = LSTMRule(parameterization="nominal", nominal_lr=0.03, hidden_size=4).double()
    with torch.no_grad():  # random LSTM weights: only the (zero) head decides the correction
        for w in rule.weights:
            w.normal_()
    lr = float(torch.exp(rule.log_lr.detach()))
    A = torch.randn(20, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x0 = torch.randn(20, dtype=torch.float64)
    ref = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([ref], lr=lr, betas=(0.9, 0.999), eps=1e-8)
    x, state = x0.clone(), rule.init_state(x0)
    for t in range(1, 41):
        g = A.t() @ (A @ x) - 1.0
        u, state = rule(g, state, step=t)
        x = x + u
        ref.grad = A.t() @ (A @ ref.detach()) - 1.0
        opt.step()
    # same float64 formula, operations in a slightly different order: 1e-10 after 40 steps
    torch.testing.assert_close(x.detach(), ref.detach(), rtol=1e-10, atol=1e-10)


def test_nominal_weight_decay_with_zero_correction_is_adamw():
    # with a zero head the learned-weight-decay rule must be torch.optim.AdamW (decoupled decay)
    rule = LSTMRule(
        parameterization="nominal", nominal_lr=0.03, weight_decay=0.05, hidden_size=4
    ).double()
    with torch.no_grad():
        for w in rule.weights:
            w.normal_()
    assert rule.needs_param
    lr = float(torch.exp(rule.log_lr.detach()))
    wd = float(torch.exp(rule.log_wd.detach()))
    A = torch.randn(20, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x0 = torch.randn(20, dtype=torch.float64)
    ref = x0.clone().requires_grad_(True)
    opt = torch.optim.AdamW([ref], lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)
    x, state = x0.clone(), rule.init_state(x0)
    for t in range(1, 41):
        g = A.t() @ (A @ x) - 1.0
        u, state = rule(g, state, param=x, step=t)
        x = x + u
        ref.grad = A.t() @ (A @ ref.detach()) - 1.0
        opt.step()
    # AdamW shrinks θ by (1 − lr·wd) before the Adam step: the same update in another order
    torch.testing.assert_close(x.detach(), ref.detach(), rtol=1e-10, atol=1e-10)
    # and the decay matters: plain Adam ends elsewhere
    plain = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([plain], lr=lr)
    for _ in range(40):
        plain.grad = A.t() @ (A @ plain.detach()) - 1.0
        opt.step()
    assert (plain.detach() - x.detach()).abs().max() > 1e-4


def test_learned_weight_decay_gets_meta_gradients():
    rule = LSTMRule(parameterization="nominal", hidden_size=4, weight_decay=0.01)
    flat = torch.randn(16, requires_grad=True)
    state = rule.init_state(flat.detach())
    total = 0.0
    for t in range(1, 4):
        u, state = rule(2 * flat.detach(), state, param=flat, step=t)
        flat = flat + u
        total = total + (flat**2).sum()
    total.backward()
    assert rule.log_wd.grad is not None and rule.log_wd.grad.abs() > 0
    assert rule.head_weight.shape == (3, 4) and rule.head_weight.grad[2].abs().sum() > 0
    with pytest.raises(ValueError, match="param="):
        rule(torch.ones(3), rule.init_state(torch.ones(3)), step=1)


def test_second_order_meta_gradients_are_finite_with_zero_gradient_coordinates():
    # e.g. weights of always-black pixels: v stays 0; ∂√v/∂v must not turn into NaN
    rule = LSTMRule(parameterization="nominal", hidden_size=4, weight_decay=0.01)
    w = torch.tensor([1.0, -2.0, 0.5, 3.0], requires_grad=True)
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0])  # the last two coordinates never get a gradient
    flat, state = w, rule.init_state(w.detach())
    for t in range(1, 4):
        (g,) = torch.autograd.grad((mask * flat**2).sum(), flat, create_graph=True)
        u, state = rule(g, state, param=flat, step=t)
        flat = flat + u
    (mask * flat**2).sum().backward()
    grads = [p.grad for p in rule.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(gr).all() for gr in grads)
    assert torch.isfinite(w.grad).all()


def test_nominal_through_the_adapter_is_adam():
    torch.manual_seed(0)
    rule = LSTMRule(parameterization="nominal", nominal_lr=0.01, cell="mlp", hidden_size=4)
    lr = float(torch.exp(rule.log_lr.detach()))
    w1 = torch.nn.Parameter(torch.randn(5, 3))
    w2 = torch.nn.Parameter(w1.detach().clone())
    ours = optizoo.LearnedOptimizer([w1], rule=rule)
    ref = torch.optim.Adam([w2], lr=lr)
    for _ in range(10):
        for w, opt in ((w1, ours), (w2, ref)):
            opt.zero_grad()
            (w.sin() * torch.arange(15.0).view(5, 3)).sum().backward()
            opt.step()
    # float32: a few ulps of the parameters' size
    torch.testing.assert_close(w1.detach(), w2.detach(), rtol=1e-5, atol=1e-6)


def test_nominal_update_is_bounded():
    rule = LSTMRule(
        parameterization="nominal", hidden_size=6, max_log_scale=1.5, additive_scale=0.2
    )
    with torch.no_grad():
        for p in rule.parameters():
            p.normal_(0.0, 30.0)  # saturate the corrections
        rule.log_lr.fill_(math.log(0.02))
    n = 200
    g_all = [torch.randn(n) * 10.0 ** torch.empty(n).uniform_(-8, 8) for _ in range(6)]
    state = rule.init_state(torch.zeros(n))
    b1, b2 = 0.9, 0.999
    m = torch.zeros(n, dtype=torch.float64)
    v = torch.zeros(n, dtype=torch.float64)
    for t, g in enumerate(g_all, start=1):
        u, state = rule(g, state, step=t)
        gd = g.double()
        m = b1 * m + (1 - b1) * gd
        v = b2 * v + (1 - b2) * gd * gd
        d = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + 1e-8)
        bound = 0.02 * (d.abs() * math.exp(1.5) + 0.2)
        assert torch.isfinite(u).all()
        # float32 arithmetic: 1e-5 relative slack on the bound
        assert (u.double().abs() <= bound * (1 + 1e-5) + 1e-12).all()


def test_nominal_gradients_reach_head_and_lr():
    rule = LSTMRule(parameterization="nominal", hidden_size=4, features={"progress": [10]})
    x = torch.randn(16, requires_grad=True)
    state = rule.init_state(x.detach())
    total = 0.0
    flat = x
    for t in range(1, 4):
        g = 2 * flat.detach()
        u, state = rule(g, state, step=t)
        flat = flat + u
        total = total + (flat**2).sum()
    total.backward()
    assert rule.log_lr.grad is not None and rule.log_lr.grad.abs() > 0
    assert rule.head_weight.grad.abs().sum() > 0 and rule.head_bias.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"parameterization": "sideways"}, "parameterization"),
        ({"cell": "gru"}, "cell"),
        ({"parameterization": "nominal", "nominal_beta": 0.8}, "nominal_beta"),
        ({"features": {"betas": [1.5]}}, "beta"),
        ({"features": {"progress": [-1]}}, "progress"),
        ({"parameterization": "nominal", "nominal_lr": -1e-3}, "nominal_lr"),
        ({"weight_decay": 0.01}, "parameterization"),
        ({"parameterization": "nominal", "weight_decay": -1.0}, "weight_decay"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LSTMRule(**kwargs)


def test_param_feature_requires_param():
    rule = LSTMRule(features={"param": True}, hidden_size=3)
    assert rule.needs_param
    with pytest.raises(ValueError, match="param"):
        rule(torch.ones(3), rule.init_state(torch.ones(3)), step=1)


# ---------------------------------------------------------------- MixTask


def test_mix_is_registered_and_rescales():
    task = optizoo.tasks.build(
        "mix",
        tasks=[{"task": "quadratic", "args": {"batch": 2}}, {"task": "linreg"}],
        rescale=[0.1, 10.0],
    )
    assert isinstance(task, MixTask)
    seen = set()
    for s in range(40):
        p = task.sample(torch.Generator().manual_seed(s))
        assert isinstance(p, ScaledProblem) and 0.1 <= p.scale <= 10.0
        seen.add(p.component)
        params = p.params()
        # the optimizer sees s·f, the meta-objective (loss / num_instances) the unscaled mean
        inner = p.inner.loss(params, 0) / getattr(p.inner, "num_instances", 1)
        torch.testing.assert_close(p.loss(params, 0) / p.num_instances, inner, rtol=1e-6, atol=0)
    assert seen == {0, 1}
    # same generator seed, same problem
    a, b = (task.sample(torch.Generator().manual_seed(7)) for _ in range(2))
    assert a.scale == b.scale and a.component == b.component


def test_mix_weights_and_normalization():
    task = MixTask(
        [{"task": "linreg", "weight": 3.0}, {"task": "linreg", "weight": 1.0}], normalize=True
    )
    comps = [task.sample(torch.Generator().manual_seed(s)).component for s in range(400)]
    # binomial(400, 0.75): mean 300, sd 8.7; 5 sd either side
    assert 256 < comps.count(0) < 344
    p = task.sample(torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert float(p.loss(p.params(), 0) / p.num_instances) == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tasks": []}, "non-empty"),
        ({"tasks": [{"name": "mlp"}]}, "task"),
        ({"tasks": [{"task": "linreg", "weight": 0}]}, "weight"),
        ({"tasks": [{"task": "linreg"}], "rescale": [2.0, 1.0]}, "rescale"),
        ({"tasks": [{"task": "mix"}]}, "mix"),
    ],
)
def test_mix_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MixTask(**kwargs)


def test_mix_validation_split_replaces_the_test_split():
    task = MixTask([{"task": "mlp", "args": {"hidden": [4], "batch_size": 32}}], validation=50)
    p = task.sample(torch.Generator().manual_seed(0))
    full = optizoo.tasks.build("mlp", hidden=[4], batch_size=32).data
    n = int(full.y_train.shape[0])
    inner = p.inner
    # validation = the last 50 training examples; training uses only the first n - 50
    assert torch.equal(inner._y_test, full.y_train[n - 50 :])
    assert inner._y_train.shape[0] == n - 50
    params = p.params()
    with torch.no_grad():
        logits = inner.logits(params, full.x_train[n - 50 :].flatten(1))
        want = torch.nn.functional.cross_entropy(logits, full.y_train[n - 50 :])
        torch.testing.assert_close(p.eval_loss(params), want)
    with pytest.raises(ValueError, match="supervised problems"):
        MixTask([{"task": "linreg"}], validation=5).sample(torch.Generator().manual_seed(0))
