"""Conformance checks for tasks (optimizees): the contract the meta-trainer, ``optizoo compare``
and plain ``torch.optim`` rely on.

    from optizoo.testing import check_task
    check_task(GaussianINNTask(batch_size=16))        # raises ConformanceError listing failures

With pytest, parametrize over :data:`TASK_CHECKS` to get one test per check::

    @pytest.mark.parametrize("name", optizoo.testing.TASK_CHECKS)
    def test_task_conformance(name):
        optizoo.testing.run_task_check(name, MyTask())

Every check samples its problems from ``torch.Generator().manual_seed(seed)`` and stays small
(a few loss evaluations). Guide: ``docs/plugins.md``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from optizoo.tasks.base import Problem, Task
from optizoo.testing.report import ConformanceError, ConformanceReport, require, run_checks

__all__ = ["TASK_CHECKS", "check_task", "run_task_check"]


def _sample(task: Task, seed: int, device: str | torch.device) -> Problem:
    problem = task.sample(torch.Generator().manual_seed(seed), device)
    require(
        isinstance(problem, Problem),
        f"task.sample() must return an optizoo.tasks.Problem, got {type(problem).__name__}",
    )
    return problem


def _leaf_params(problem: Problem) -> dict[str, Tensor]:
    return {k: v.detach().clone().requires_grad_(True) for k, v in problem.params().items()}


def _scalar(value: Any, what: str) -> Tensor:
    require(isinstance(value, Tensor), f"{what} must return a Tensor, got {type(value).__name__}")
    require(value.dim() == 0, f"{what} must be a 0-dim scalar, got shape {tuple(value.shape)}")
    require(value.is_floating_point(), f"{what} must be floating point, got {value.dtype}")
    if not bool(torch.isfinite(value.detach())):
        raise ConformanceError(f"{what} is not finite: {value.detach().item()}")
    return value


# ---------------------------------------------------------------------------------------------
# task checks: each takes the task and options; raises ConformanceError on failure


def check_task_params(
    task: Task, *, seed: int = 0, device: str | torch.device = "cpu", **_: Any
) -> None:
    """``params()`` is a non-empty ``{str: floating Tensor}`` on ``device``, fresh on every call."""
    problem = _sample(task, seed, device)
    n = problem.num_instances
    require(
        isinstance(n, int) and not isinstance(n, bool) and n > 0,
        f"num_instances must be a positive int, got {n!r}",
    )
    first = problem.params()
    require(isinstance(first, dict) and len(first) > 0, "params() must return a non-empty dict")
    dev = torch.device(device)
    for name, value in first.items():
        require(isinstance(name, str), f"parameter names must be str, got {name!r}")
        require(isinstance(value, Tensor), f"params()[{name!r}] is not a Tensor")
        require(value.is_floating_point(), f"params()[{name!r}] is not floating point")
        require(
            value.device.type == dev.type, f"params()[{name!r}] is on {value.device}, not {dev}"
        )
        require(bool(torch.isfinite(value).all()), f"params()[{name!r}] has non-finite values")
    snapshot = {k: v.clone() for k, v in first.items()}
    with torch.no_grad():
        for value in first.values():
            value.add_(1.0)
    second = problem.params()
    for name, value in snapshot.items():
        require(
            torch.equal(second[name], value),
            f"params() must return fresh tensors: changing one call's {name!r} changed the next",
        )


def check_task_sample_deterministic(
    task: Task, *, seed: int = 0, device: str | torch.device = "cpu", steps: int = 3, **_: Any
) -> None:
    """Two problems sampled from equally seeded generators are identical (params and losses)."""
    a, b = _sample(task, seed, device), _sample(task, seed, device)
    pa, pb = a.params(), b.params()
    require(set(pa) == set(pb), "equally seeded samples have different parameter names")
    for name in pa:
        require(torch.equal(pa[name], pb[name]), f"equally seeded samples differ in {name!r}")
    with torch.no_grad():
        for step in range(steps):
            la, lb = a.loss(pa, step), b.loss(pb, step)
            require(
                torch.equal(la, lb),
                f"equally seeded samples give different loss at step {step}: "
                f"{float(la)} vs {float(lb)} (draw all randomness from the generator and the step)",
            )


def check_task_loss(
    task: Task, *, seed: int = 0, device: str | torch.device = "cpu", steps: int = 3, **_: Any
) -> None:
    """``loss(params, step)`` is a finite scalar and the same on a repeated call with one step."""
    problem = _sample(task, seed, device)
    params = problem.params()
    with torch.no_grad():
        for step in range(steps):
            first = _scalar(problem.loss(params, step), f"loss(params, {step})")
            again = problem.loss(params, step)
            require(
                torch.equal(first, again),
                f"loss(params, {step}) is not deterministic: {float(first)} then {float(again)} "
                f"(seed minibatches from the problem's seed and the step, not a global RNG)",
            )


def check_task_gradients(
    task: Task, *, seed: int = 0, device: str | torch.device = "cpu", **_: Any
) -> None:
    """``loss.backward()`` gives every parameter a finite gradient, not all of them zero."""
    problem = _sample(task, seed, device)
    params = _leaf_params(problem)
    problem.loss(params, 0).backward()
    total = 0.0
    for name, value in params.items():
        require(value.grad is not None, f"parameter {name!r} gets no gradient from loss")
        require(bool(torch.isfinite(value.grad).all()), f"gradient of {name!r} is not finite")
        total += float(value.grad.double().square().sum())
    require(total > 0.0, "every gradient is exactly zero")


def check_task_functional(
    task: Task,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    steps: int = 3,
    second_order: bool = False,
    **_: Any,
) -> None:
    """The meta-trainer's path: an unroll on non-leaf tensors is differentiable end to end.

    Runs ``steps`` gradient steps ``θ ← θ − α ∇loss`` with a differentiable ``α`` on tensors
    that carry a graph and checks that ``d loss(θ_T) / d α`` is finite and non-zero. With
    ``second_order=True`` the inner gradients keep their graph (``create_graph=True``).
    """
    problem = _sample(task, seed, device)
    theta0 = next(iter(problem.params().values()))
    alpha = torch.tensor(1e-3, dtype=theta0.dtype, device=theta0.device, requires_grad=True)
    params = {k: v * 1.0 for k, v in _leaf_params(problem).items()}  # non-leaf, like an unroll
    for step in range(steps):
        loss = problem.loss(params, step)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=second_order)
        params = {k: v - alpha * g for (k, v), g in zip(params.items(), grads)}
    final = _scalar(problem.loss(params, steps), "loss after the unroll")
    (d_alpha,) = torch.autograd.grad(final, alpha)
    require(bool(torch.isfinite(d_alpha)), "meta-gradient through the unroll is not finite")
    require(float(d_alpha) != 0.0, "meta-gradient through the unroll is exactly zero")


def check_task_model(
    task: Task, *, seed: int = 0, device: str | torch.device = "cpu", **_: Any
) -> None:
    """If the problem has a ``model``, its parameters match ``params()`` and torch.optim runs it."""
    problem = _sample(task, seed, device)
    model = problem.model
    if model is None:
        return
    named = dict(model.named_parameters())
    reference = problem.params()
    require(
        set(named) == set(reference),
        f"model.named_parameters() names {sorted(named)} != params() names {sorted(reference)}",
    )
    for name, value in reference.items():
        require(named[name].shape == value.shape, f"model parameter {name!r} has another shape")
        require(torch.equal(named[name].detach(), value), f"model parameter {name!r} != params()")
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    opt.zero_grad()
    _scalar(problem.loss(named, 0), "loss(model parameters, 0)").backward()
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    moved = any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    require(moved, "a torch.optim.SGD step on problem.model changed no parameter")


def check_task_eval_loss(
    task: Task, *, seed: int = 0, device: str | torch.device = "cpu", **_: Any
) -> None:
    """``eval_loss(params)`` is ``None`` or a finite scalar, the same on a repeated call."""
    problem = _sample(task, seed, device)
    params = problem.params()
    with torch.no_grad():
        first = problem.eval_loss(params)
        if first is None:
            return
        _scalar(first, "eval_loss(params)")
        require(torch.equal(first, problem.eval_loss(params)), "eval_loss is not deterministic")


def check_task_config(task: Task, **_: Any) -> None:
    """If the task has ``config()``, it is JSON-serialisable and rebuilds an equal config."""
    config = getattr(task, "config", None)
    if config is None:
        return
    value = config()
    require(isinstance(value, dict), f"config() must return a dict, got {type(value).__name__}")
    try:
        json.dumps(value)
    except TypeError as exc:
        raise ConformanceError(f"config() is not JSON-serialisable: {exc}") from None
    try:
        rebuilt = type(task)(**value)
    except TypeError as exc:
        raise ConformanceError(f"type(task)(**task.config()) failed: {exc}") from None
    require(rebuilt.config() == value, "type(task)(**config()).config() differs from config()")


TASK_CHECKS: dict[str, Callable[..., None]] = {
    "params": check_task_params,
    "sample_deterministic": check_task_sample_deterministic,
    "loss": check_task_loss,
    "gradients": check_task_gradients,
    "functional": check_task_functional,
    "model": check_task_model,
    "eval_loss": check_task_eval_loss,
    "config": check_task_config,
}


def run_task_check(name: str, task: Task, **options: Any) -> None:
    """Run the single task check ``name``; raises :class:`ConformanceError` if it fails."""
    if name not in TASK_CHECKS:
        raise ValueError(f"unknown task check {name!r}; available: {', '.join(TASK_CHECKS)}")
    TASK_CHECKS[name](task, **options)


def check_task(task: Task, *, skip: tuple[str, ...] = (), **options: Any) -> ConformanceReport:
    """Run every task check on ``task``; raise :class:`ConformanceError` listing failures.

    Options (all optional): ``seed`` (generator seed, 0), ``device`` (``"cpu"``), ``steps``
    (loss evaluations per check, 3), ``second_order`` (differentiate through inner gradients in
    the ``functional`` check, ``False``).
    """
    if not isinstance(task, Task):
        raise TypeError(f"check_task needs an optizoo.tasks.Task instance, got {task!r}")
    report = run_checks(TASK_CHECKS, task, skip, options)
    if not report.ok:
        raise ConformanceError(str(report))
    return report
