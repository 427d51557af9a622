"""Batched problems (optizoo.meta.batched): the vmapped loss of P problems of one task against
the per-problem loop (an independent second implementation: each problem's own ``loss``)."""

from __future__ import annotations

import sys

import pytest
import torch

from optizoo import tasks
from optizoo.meta import MetaTrainer, unroll
from optizoo.meta.batched import stacked_loss
from optizoo.meta.unroll import Layout, rollout
from optizoo.rules import LSTMRule

unroll_module = sys.modules["optizoo.meta.unroll"]  # the package re-exports the function

#: float32 rounding of batched vs per-problem matrix products, compounded over a few steps
TOL = dict(rtol=2e-5, atol=2e-6)

CASES = [
    ("mlp", {}),
    ("mlp", {"batch_size": None, "hidden": [7], "activation": "relu"}),
    ("conv", {"channels": [4, 6]}),
    ("quadratic", {"batch": 8, "dim": 4}),
]


def _problems(name, args, count=3):
    task = tasks.build(name, **args)
    return [task.sample(torch.Generator().manual_seed(s)) for s in range(count)]


@pytest.mark.parametrize("name, args", CASES)
@pytest.mark.parametrize("second_order", [False, True])
def test_unroll_matches_the_per_problem_loop(name, args, second_order):
    problems = _problems(name, args)
    torch.manual_seed(0)
    rule = LSTMRule()
    results = []
    for batch in (True, False):
        rule.zero_grad()
        r = unroll(rule, problems, 4, second_order=second_order, batch_problems=batch)
        r.losses[1:].sum().backward()
        results.append((r.losses.detach(), r.flat.detach(), [p.grad for p in rule.parameters()]))
    (lb, fb, gb), (lu, fu, gu) = results
    assert lb.shape == (5, 3)
    torch.testing.assert_close(lb, lu, **TOL)
    torch.testing.assert_close(fb, fu, **TOL)
    for a, b in zip(gb, gu):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6 * float(b.abs().max()))


@pytest.mark.parametrize("name, args", CASES[:2])
def test_rollout_matches_the_per_problem_loop(name, args):
    problems = _problems(name, args, count=4)
    rule = LSTMRule()
    torch.testing.assert_close(
        rollout(rule, problems, 6), rollout(rule, problems, 6, batch_problems=False), **TOL
    )


def test_stacked_parameters_are_views_of_the_flat_vector():
    problems = _problems("mlp", {})
    plist = [p.params() for p in problems]
    layout = Layout(plist)
    flat = layout.flatten(plist)
    stacked = stacked_loss(problems, layout.names, layout.shapes)
    assert stacked is not None
    params = stacked.params(flat)
    for name, t in params.items():
        assert t.shape == (3, *plist[0][name].shape)
        assert t.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr()
        torch.testing.assert_close(t[1], plist[1][name], rtol=0, atol=0)
    per = stacked(flat, 0)
    want = torch.stack([p.loss(q, 0) for p, q in zip(problems, plist)])
    torch.testing.assert_close(per, want, **TOL)


def test_problems_that_do_not_stack_fall_back_to_the_loop():
    mixed = _problems("mlp", {}, 1) + _problems("mlp", {"hidden": [5]}, 1)
    layout = Layout([p.params() for p in mixed])
    assert stacked_loss(mixed, layout.names, layout.shapes) is None
    one = _problems("mlp", {}, 1)
    assert stacked_loss(one, [list(one[0].params())], [[]]) is None
    mix = tasks.build("mix", tasks=[{"task": "mlp"}], rescale=[0.5, 2.0])
    scaled = [mix.sample(torch.Generator().manual_seed(s)) for s in range(2)]
    layout = Layout([p.params() for p in scaled])
    assert stacked_loss(scaled, layout.names, layout.shapes) is None  # scaled losses: no protocol
    r = unroll(LSTMRule(), scaled, 2)  # and the loop still runs them
    assert r.losses.shape == (3, 2)


def test_meta_trainer_step_is_the_same_batched_or_not(monkeypatch):
    def run():
        torch.manual_seed(0)
        trainer = MetaTrainer(
            LSTMRule(), "mlp", unroll=3, horizon=6, problems_per_step=4, eval_every=0,
            checkpoint_every=0, verbose=False,
        )  # fmt: skip
        rows = [trainer.step()["meta_loss"] for _ in range(2)]
        return rows, [p.detach().clone() for p in trainer.rule.parameters()]

    calls = []
    real = unroll_module.stacked_loss
    monkeypatch.setattr(unroll_module, "stacked_loss", lambda *a: calls.append(1) or real(*a))
    batched = run()
    assert calls, "the trainer did not use the batched loss"
    monkeypatch.setattr(unroll_module, "stacked_loss", lambda *a: None)
    looped = run()
    torch.testing.assert_close(torch.tensor(batched[0]), torch.tensor(looped[0]), **TOL)
    for a, b in zip(batched[1], looped[1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batched_unroll_on_cuda_matches_the_loop():
    task = tasks.build("mlp")
    problems = [task.sample(torch.Generator().manual_seed(s), "cuda") for s in range(3)]
    rule = LSTMRule().cuda()
    a = unroll(rule, problems, 3).losses.detach()
    b = unroll(rule, problems, 3, batch_problems=False).losses.detach()
    assert a.device.type == "cuda"
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
