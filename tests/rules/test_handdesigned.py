"""Hand-designed rules match torch.optim step for step.

Reference: torch's own optimizers (an independent implementation). Tolerance: at every one of 50
float64 steps, ||ours - torch|| / ||torch|| <= 1e-12 over all parameters (hyper-parameters are
stored as log/logit, whose exp/sigmoid round-trip costs ~1e-16 relative per step).
"""

from __future__ import annotations

import pytest
import torch

from optizoo.optim import LearnedOptimizer
from optizoo.rules import SGD, Adam, Momentum, RMSprop

CASES = [
    ("sgd", dict(lr=0.05), SGD, dict(lr=0.05)),
    ("sgd-wd", dict(lr=0.05, weight_decay=0.1), SGD, dict(lr=0.05, weight_decay=0.1)),
    ("heavyball", dict(lr=0.05, momentum=0.9), Momentum, dict(lr=0.05, momentum=0.9)),
    (
        "heavyball-damp-wd",
        dict(lr=0.05, momentum=0.7, dampening=0.3, weight_decay=0.01),
        Momentum,
        dict(lr=0.05, momentum=0.7, dampening=0.3, weight_decay=0.01),
    ),
    (
        "nesterov",
        dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
        Momentum,
        dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    ),
    ("rmsprop", dict(lr=1e-2), RMSprop, dict(lr=1e-2)),
    (
        "rmsprop-all",
        dict(lr=1e-2, alpha=0.9, eps=1e-6, centered=True, momentum=0.5, weight_decay=0.01),
        RMSprop,
        dict(lr=1e-2, alpha=0.9, eps=1e-6, centered=True, momentum=0.5, weight_decay=0.01),
    ),
    ("rmsprop-mom", dict(lr=1e-2, momentum=0.8), RMSprop, dict(lr=1e-2, momentum=0.8)),
    ("adam", dict(lr=1e-2), Adam, dict(lr=1e-2)),
    (
        "adam-all",
        dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, amsgrad=True),
        Adam,
        dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, amsgrad=True),
    ),
]
TORCH = {
    SGD: torch.optim.SGD,
    Momentum: torch.optim.SGD,
    RMSprop: torch.optim.RMSprop,
    Adam: torch.optim.Adam,
}


def _problem(seed: int):
    g = torch.Generator().manual_seed(seed)
    params = [
        torch.randn(7, 5, generator=g, dtype=torch.float64),
        torch.randn(5, generator=g, dtype=torch.float64),
    ]
    a = torch.randn(40, 7, generator=g, dtype=torch.float64)
    y = torch.randn(40, 5, generator=g, dtype=torch.float64)

    def loss(w, b):
        return (torch.tanh(a @ w + b) - y).pow(2).mean()

    return params, loss


@pytest.mark.parametrize("name,torch_kw,cls,rule_kw", CASES, ids=[c[0] for c in CASES])
def test_matches_torch_step_for_step(name, torch_kw, cls, rule_kw):
    init, loss = _problem(seed=len(name))  # a different random problem per case
    ours = [p.clone().requires_grad_() for p in init]
    theirs = [p.clone().requires_grad_() for p in init]
    opt_ours = LearnedOptimizer(ours, cls(**rule_kw), max_chunk=16)  # chunking exercised too
    opt_theirs = TORCH[cls](theirs, **torch_kw)
    for step in range(50):
        for params, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad()
            loss(*params).backward()
            opt.step()
        a = torch.cat([p.detach().reshape(-1) for p in ours])
        b = torch.cat([p.detach().reshape(-1) for p in theirs])
        rel = float((a - b).norm() / b.norm())
        assert rel <= 1e-12, f"step {step}: relative difference {rel:.3e}"


def test_hyperparameters_receive_gradients():
    rule = Momentum(lr=0.1, momentum=0.5)
    g = torch.tensor([1.0, -2.0], dtype=torch.float64)
    state = rule.init_state(g)
    _, state = rule(g, state, step=1)
    u2, _ = rule(g, state, step=2)
    u2.sum().backward()
    assert rule.log_lr.grad is not None and rule.log_lr.grad != 0
    assert rule.momentum_logit.grad is not None and rule.momentum_logit.grad != 0
    # closed form: u2 = -lr * (mu*g + g) ; d/dlog_lr = u2 ; d/dmu = -lr*g
    lr, mu = 0.1, 0.5
    assert torch.allclose(rule.log_lr.grad, (-lr * (mu * g + g)).sum(), rtol=1e-12)
    assert torch.allclose(rule.momentum_logit.grad, (-lr * g).sum() * mu * (1 - mu), rtol=1e-12)


def test_forward_is_pure():
    rule = Adam(lr=0.1)
    g = torch.randn(5, dtype=torch.float64)
    state = rule.init_state(g)
    snapshot = {k: v.clone() for k, v in state.items()}
    rule(g, state, step=1)
    assert all(torch.equal(state[k], snapshot[k]) for k in state)


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: SGD(lr=-1.0), "lr"),
        (lambda: SGD(lr=float("nan")), "lr"),
        (lambda: Momentum(momentum=1.0), "momentum"),
        (lambda: Momentum(momentum=0.9, dampening=0.1, nesterov=True), "Nesterov"),
        (lambda: Adam(betas=(0.9,)), "betas"),
        (lambda: RMSprop(alpha=0.0), "alpha"),
        (lambda: SGD(weight_decay=-1.0), "weight_decay"),
    ],
)
def test_bad_hyperparameters_are_refused(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_config_rebuilds_the_rule():
    from optizoo import rules

    for rule in (
        SGD(lr=0.3),
        Momentum(lr=0.2, momentum=0.8, nesterov=True),
        RMSprop(centered=True),
        Adam(amsgrad=True),
    ):
        again = rules.build(rule.rule_name, rule.config())
        for (k, a), (_, b) in zip(rule.state_dict().items(), again.state_dict().items()):
            assert torch.allclose(a, b, rtol=1e-14), k
