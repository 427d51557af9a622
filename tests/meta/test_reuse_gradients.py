"""reuse_gradients (opt-in, first order): the meta-gradient takes each loss's derivative from the
optimizee gradient the unroll computed, not from a second backward through the optimizee. The
same meta-gradient as the default path to float rounding: against a closed-form recursion, and
against the default path on the hierarchical rule over a mixture of networks."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from optizoo.meta import MetaConfig, MetaTrainer
from optizoo.meta.unroll import KnownGradient, Layout
from optizoo.rules import SGD, HierarchicalRule
from optizoo.tasks import build
from tests.meta.test_unroll import Quadratic1D

unroll_module = __import__("sys").modules["optizoo.meta.unroll"]


def _unroll(rule, problems, steps, **kw):
    plist = [p.params() for p in problems]
    layout = Layout(plist)
    return unroll_module.unroll_flat(
        rule, problems, layout, layout.flatten(plist), None, steps=steps, **kw
    )


def test_known_gradient_scales_each_problems_gradient_by_its_upstream():
    flat = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    grad = torch.tensor([1.0, 2, 3, 4, 5], dtype=torch.float64)
    losses = torch.tensor([7.0, 8.0], dtype=torch.float64)
    out = KnownGradient.apply(flat, losses, grad, [2, 3])
    assert torch.equal(out, losses)
    (g,) = torch.autograd.grad(out, flat, torch.tensor([10.0, -1.0], dtype=torch.float64))
    assert torch.equal(g, torch.tensor([10.0, 20, -3, -4, -5], dtype=torch.float64))


def test_first_order_meta_gradient_matches_the_closed_form_recursion():
    """f(θ) = a (θ − c)², SGD: dθ_{k+1}/dlr = dθ_k/dlr − g_k (first order); rel 1e-12."""
    a, c, theta0, lr, steps = 0.7, 2.0, -1.0, 0.2, 4
    rule = SGD(lr=lr)
    losses, _, _ = _unroll(rule, [Quadratic1D(a, c, theta0)], steps, reuse_gradients=True)
    losses[1:].sum().backward()
    theta, dtheta, dmeta = theta0, 0.0, 0.0
    for _ in range(steps):
        g = 2 * a * (theta - c)
        dtheta = dtheta - g
        theta = theta - lr * g
        dmeta += 2 * a * (theta - c) * dtheta
    assert rule.log_lr.grad.item() == pytest.approx(dmeta * lr, rel=1e-12)


def test_same_losses_and_meta_gradient_as_the_default_path_on_a_mixture():
    """The hierarchical rule on four problems of a mixture (MLP, conv, RNN), float32, 6 steps:
    the loss values are identical and the meta-gradients agree to rtol 1e-4 (measured: ~1e-7 of the largest entry)."""
    task = build(
        "mix",
        tasks=[
            {"task": "mlp", "args": {"hidden": [16], "batch_size": 16}},
            {"task": "conv", "args": {"channels": [4], "batch_size": 8}},
            {"task": "rnn", "args": {"cell": "gru", "hidden": 8, "length": 4, "batch_size": 8}},
        ],
        rescale=[0.3, 3.0],
    )
    problems = [task.sample(torch.Generator().manual_seed(s)) for s in range(4)]
    torch.manual_seed(0)
    rule = HierarchicalRule(nominal_lr=0.01)
    with torch.no_grad():  # a non-trivial head, so every meta-parameter gets a gradient
        rule.head.weight.normal_(0.0, 0.1)
    params = [p for p in rule.parameters() if p.requires_grad]
    results = []
    for reuse in (False, True):
        losses, _, _ = _unroll(rule, problems, 6, reuse_gradients=reuse)
        meta = losses.clamp_min(1e-6).log().mean()
        results.append((losses.detach(), torch.autograd.grad(meta, params)))
    (plain_losses, plain), (reuse_losses, reused) = results
    assert torch.equal(plain_losses, reuse_losses)
    for a, b in zip(plain, reused):
        assert a.abs().max() > 0
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-7)


def test_second_order_is_refused():
    with pytest.raises(ValueError, match="first-order meta-gradients only"):
        _unroll(SGD(), [Quadratic1D(1.0, 0.0, 1.0)], 2, second_order=True, reuse_gradients=True)
    with pytest.raises(ValueError, match="first-order meta-gradients only"):
        MetaConfig(second_order=True, reuse_gradients=True)
    with pytest.raises(TypeError, match="reuse_gradients must be True or False"):
        MetaConfig(reuse_gradients="yes")


def test_the_trainer_passes_the_option_and_records_it(monkeypatch):
    seen = []
    real = unroll_module.unroll_flat
    import optizoo.meta.trainer as trainer_module

    def spy(*args, **kw):
        seen.append(kw["reuse_gradients"])
        return real(*args, **kw)

    monkeypatch.setattr(trainer_module, "unroll_flat", spy)
    config = MetaConfig(unroll=2, horizon=4, eval_every=0, checkpoint_every=0)
    for reuse in (False, True):
        trainer = MetaTrainer(
            SGD(), "quadratic", config=dataclasses.replace(config, reuse_gradients=reuse),
            verbose=False,
        )  # fmt: skip
        trainer.step()
        assert trainer.training_record().get("reuse_gradients", False) is reuse
        assert MetaConfig.from_dict(trainer.config.to_dict()).reuse_gradients is reuse
    assert seen == [False, True]
