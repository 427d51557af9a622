"""The functional unroll: step numbering, graph, first/second order, and hypergradients.

Independent references:
- the ``higher`` toy (a published hyper-gradient example, its printed output): N=100 points x ~ U[0,1) from
  ``numpy.random.seed(1)``, y = 3.5x, ``Linear(1, 1, bias=False)`` initialised after
  ``torch.manual_seed(3)``, SGD lr 0.3 momentum 0.5 given as float32 tensors, 5 inner steps,
  meta-loss (w_5 - 3.5)². The document prints the weights, the meta-loss to 17 digits and the
  hypergradients to 4 digits.
- central finite differences in float64 (h = 1e-5; truncation error ~h² ≈ 1e-10, rounding
  ~eps/h ≈ 1e-11, so agreement to 1e-7 relative is required).
- a closed-form recursion for SGD on the 1-D quadratic a(θ-c)² (first and second order).
- the ``higher`` library itself, when installed (the test skips otherwise).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import optizoo
from optizoo.meta import unroll
from optizoo.rules import SGD, LSTMRule, Momentum, UpdateRule
from optizoo.tasks.base import Problem
from tests.meta.toys import ToyRegression

HIGHER_TOY_WEIGHTS = [-0.9915, -0.1217, 1.0145, 2.0640, 2.8668, 3.3908]  # printed, 4 decimals
HIGHER_TOY_META_LOSS = 0.011927987982895929  # printed with 17 significant digits
HIGHER_TOY_DLR, HIGHER_TOY_DMOM, HIGHER_TOY_DW0 = -1.6295, -0.9496, -0.0053  # printed, 4 decimals
# the ``higher`` toy passes lr as a float32 tensor
LR32 = float(torch.tensor(0.3, dtype=torch.float32))


def higher_toy_data() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.tensor(np.random.RandomState(1).random_sample((100, 1)), dtype=torch.float64)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        w0 = torch.nn.Linear(1, 1, bias=False).double().weight.detach().clone()
    return x, w0


def test_reproduces_the_higher_toys_trajectory_meta_loss_and_hypergradients():
    x, w0 = higher_toy_data()
    assert w0.item() == pytest.approx(HIGHER_TOY_WEIGHTS[0], abs=5e-5)
    rule = Momentum(lr=LR32, momentum=0.5)
    w = w0.clone().requires_grad_(True)  # copy_initial_weights=False: gradient reaches w0
    res = unroll(rule, ToyRegression(x, w0), 5, params={"weight": w}, second_order=True)
    meta_loss = (res.params["weight"] - 3.5).square().sum()
    # every printed weight (4 decimals): check the final one; the rest via a 1-step-at-a-time run
    assert res.params["weight"].item() == pytest.approx(HIGHER_TOY_WEIGHTS[-1], abs=5e-5)
    # the meta-loss agrees with the printed 17 digits up to float64 rounding of the 5 steps
    assert meta_loss.item() == pytest.approx(HIGHER_TOY_META_LOSS, rel=1e-12)
    meta_loss.backward()
    lr, mom = rule.lr.item(), rule.momentum.item()
    d_lr = rule.log_lr.grad.item() / lr  # chain rule: d/d log_lr = lr · d/d lr
    d_mom = rule.momentum_logit.grad.item() / (mom * (1 - mom))
    assert d_lr == pytest.approx(HIGHER_TOY_DLR, abs=5e-5)
    assert d_mom == pytest.approx(HIGHER_TOY_DMOM, abs=5e-5)
    assert w.grad.item() == pytest.approx(HIGHER_TOY_DW0, abs=5e-5)

    state, params = None, {"weight": w0.clone()}
    for t, expected in enumerate(HIGHER_TOY_WEIGHTS[1:]):
        r = unroll(rule, ToyRegression(x, w0), 1, params=params, state=state, start=t)
        params, state = r.params, r.state
        assert params["weight"].item() == pytest.approx(expected, abs=5e-5)


def _mse_after_unroll(log_lr: float, logit: float, w0: torch.Tensor, x: torch.Tensor) -> float:
    rule = Momentum(lr=1.0, momentum=0.5)
    with torch.no_grad():
        rule.log_lr.fill_(log_lr)
        rule.momentum_logit.fill_(logit)
    problem = ToyRegression(x, w0)
    res = unroll(rule, problem, 5, params={"weight": w0.clone()}, second_order=True)
    return problem.loss(res.params, 5).item()


def test_hypergradients_match_float64_central_differences():
    x, w0 = higher_toy_data()
    rule = Momentum(lr=0.3, momentum=0.5)
    w = w0.clone().requires_grad_(True)
    problem = ToyRegression(x, w0)
    res = unroll(rule, problem, 5, params={"weight": w}, second_order=True)
    meta_loss = problem.loss(res.params, 5)  # the loss after the unroll
    meta_loss.backward()
    analytic = [rule.log_lr.grad.item(), rule.momentum_logit.grad.item(), w.grad.item()]
    base = [rule.log_lr.item(), rule.momentum_logit.item(), w0.item()]
    h = 1e-5
    numeric = []
    for i in range(3):
        hi, lo = list(base), list(base)
        hi[i] += h
        lo[i] -= h
        f_hi = _mse_after_unroll(hi[0], hi[1], torch.full_like(w0, hi[2]), x)
        f_lo = _mse_after_unroll(lo[0], lo[1], torch.full_like(w0, lo[2]), x)
        numeric.append((f_hi - f_lo) / (2 * h))
    for a, n in zip(analytic, numeric):
        assert a == pytest.approx(n, rel=1e-7, abs=1e-12)
    assert all(abs(a) > 1e-4 for a in analytic)  # non-trivial gradients


def test_agrees_with_the_higher_library():
    higher = pytest.importorskip("higher")
    x, w0 = higher_toy_data()
    model = torch.nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(w0)
    lr = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    mom = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.5)
    override = {"lr": [lr], "momentum": [mom]}
    with higher.innerloop_ctx(model, opt, copy_initial_weights=False, override=override) as (f, d):
        for _ in range(5):
            d.step((f(x) - 3.5 * x).square().mean())
        (f(x) - 3.5 * x).square().mean().backward()

    rule = Momentum(lr=0.3, momentum=0.5)
    w = w0.clone().requires_grad_(True)
    problem = ToyRegression(x, w0)
    res = unroll(rule, problem, 5, params={"weight": w}, second_order=True)
    problem.loss(res.params, 5).backward()
    m = rule.momentum.item()
    # both float64 implementations of the same arithmetic: agreement to 1e-10 relative
    assert rule.log_lr.grad.item() / rule.lr.item() == pytest.approx(lr.grad.item(), rel=1e-10)
    assert rule.momentum_logit.grad.item() / (m * (1 - m)) == pytest.approx(
        mom.grad.item(), rel=1e-10
    )
    assert w.grad.item() == pytest.approx(model.weight.grad.item(), rel=1e-10)


class Quadratic1D(Problem):
    """f(θ) = a (θ - c)², gradient 2a(θ - c), Hessian 2a."""

    def __init__(self, a: float, c: float, theta0: float) -> None:
        self.a, self.c, self.theta0 = a, c, theta0

    def params(self) -> dict[str, torch.Tensor]:
        return {"theta": torch.tensor([self.theta0], dtype=torch.float64)}

    def loss(self, params: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        return self.a * (params["theta"] - self.c).square().sum()


@pytest.mark.parametrize("second_order", [False, True])
def test_first_and_second_order_against_closed_form_recursion(second_order):
    a, c, theta0, lr, steps = 0.7, 2.0, -1.0, 0.2, 4
    rule = SGD(lr=lr)
    res = unroll(rule, Quadratic1D(a, c, theta0), steps, second_order=second_order)
    res.losses[1:].sum().backward()
    # θ_{k+1} = θ_k - lr g_k with g_k = 2a(θ_k - c); dθ_{k+1}/dlr = (1 - 2a lr·[2nd]) dθ_k/dlr - g_k
    theta, dtheta, dmeta = theta0, 0.0, 0.0
    for _ in range(steps):
        g = 2 * a * (theta - c)
        dtheta = (1 - (2 * a * lr if second_order else 0.0)) * dtheta - g
        theta = theta - lr * g
        dmeta += 2 * a * (theta - c) * dtheta  # d f(θ_{k+1}) / d lr
    assert rule.log_lr.grad.item() == pytest.approx(dmeta * lr, rel=1e-12)


class Recorder(Problem):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def params(self) -> dict[str, torch.Tensor]:
        return {"a": torch.ones(2, 3), "b": torch.full((4,), 2.0)}

    def loss(self, params: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        self.steps.append(step)
        return params["a"].square().sum() + (params["b"] - 1).square().sum()


class RecordingSGD(SGD):
    def __init__(self) -> None:
        super().__init__(lr=0.1)
        self.calls: list[tuple[int, int]] = []

    def forward(self, grad, state, *, param=None, step):
        self.calls.append((step, grad.numel()))
        return super().forward(grad, state, param=param, step=step)


def test_step_numbering_flat_batch_and_result_structure():
    problem, rule = Recorder(), RecordingSGD()
    res = unroll(rule, problem, 3, start=4)
    # losses at problem steps 4..7 (before each of the 3 updates, and after the last)
    assert problem.steps == [4, 5, 6, 7]
    # one rule call per step over all 10 coordinates, 1-based steps continuing from start
    assert rule.calls == [(5, 10), (6, 10), (7, 10)]
    assert res.losses.shape == (4,) and res.losses.requires_grad
    assert res.step == 7
    assert set(res.params) == {"a", "b"}
    assert res.params["a"].shape == (2, 3) and res.params["b"].shape == (4,)
    # plain gradient descent, lr 0.1: a ← 0.8 a, b - 1 ← 0.8 (b - 1)
    torch.testing.assert_close(res.params["a"], torch.full((2, 3), 0.8**3), rtol=1e-6, atol=0)
    torch.testing.assert_close(res.params["b"], torch.full((4,), 1 + 0.8**3), rtol=1e-6, atol=0)
    flat, _ = res.detached()
    assert not flat.requires_grad and flat.shape == (10,)


def test_sequence_of_problems_equals_separate_unrolls():
    task = optizoo.tasks.build("quadratic", dim=4, batch=3, dtype=torch.float64)
    problems = [task.sample(torch.Generator().manual_seed(s)) for s in (1, 2)]
    torch.manual_seed(0)
    rule = LSTMRule().double()
    joint = unroll(rule, problems, 6)
    assert joint.losses.shape == (7, 2)
    for i, p in enumerate(problems):
        alone = unroll(rule, p, 6)
        # coordinate-wise rule: the batch is n independent computations (float64 GEMM rounding)
        torch.testing.assert_close(joint.losses[:, i], alone.losses, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(
            joint.params[i]["theta"], alone.params["theta"], rtol=1e-12, atol=1e-12
        )


def test_first_order_treats_optimizee_gradients_as_constants():
    """Reference: a loop computing each gradient on a detached copy of θ_t (∂∇f/∂φ = 0)."""
    task = optizoo.tasks.build("quadratic", dim=3, batch=2, dtype=torch.float64)
    problem = task.sample(torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    rule = LSTMRule().double()
    res = unroll(rule, problem, 4)
    first = torch.autograd.grad(res.losses[1:].sum(), list(rule.parameters()))

    theta = problem.params()["theta"].reshape(-1)
    state = rule.init_state(theta)
    meta = 0.0
    for t in range(4):
        x = theta.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(problem.loss({"theta": x.view(2, 3)}, t), x)
        update, state = rule(g, state, step=t + 1)
        theta = theta + update
        meta = meta + problem.loss({"theta": theta.view(2, 3)}, t + 1)
    reference = torch.autograd.grad(meta, list(rule.parameters()))
    for a, b in zip(first, reference):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)

    second = torch.autograd.grad(
        unroll(rule, problem, 4, second_order=True).losses[1:].sum(), list(rule.parameters())
    )
    diff = max((a - b).abs().max().item() for a, b in zip(first, second))
    assert diff > 1e-6  # second order really differs: the Hessian terms are kept


def test_bad_inputs_are_rejected_with_clear_errors():
    problem = Quadratic1D(1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        unroll(SGD(), problem, 0)
    with pytest.raises(ValueError, match="start must be"):
        unroll(SGD(), problem, 1, start=-1)
    with pytest.raises(TypeError, match="UpdateRule"):
        unroll(torch.nn.Linear(1, 1), problem, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="one dtype and device"):
        unroll(
            SGD(),
            problem,
            1,
            params={"a": torch.zeros(2), "b": torch.zeros(2, dtype=torch.float64)},
        )
    with pytest.raises(TypeError, match="loss"):
        unroll(SGD(), object(), 1)  # type: ignore[arg-type]
    assert isinstance(SGD(), UpdateRule)
    assert math.isfinite(unroll(SGD(), problem, 1).losses[-1].item())
