"""Conformance checks for update rules (:class:`optizoo.rules.UpdateRule`).

    from optizoo.testing import check_rule
    check_rule(Signum(lr=0.01))                 # raises ConformanceError listing failures

The checks pin the rule contract the optimizer adapter and the meta-trainer rely on: ``forward``
is pure (no input mutated), coordinate-wise (permuting coordinates permutes updates and state),
its state has leading dimension ``n`` and the dtype :meth:`~UpdateRule.state_dtype` promises,
updates are finite and shaped like the gradient, and ``type(rule)(**rule.config())`` rebuilds the
same architecture (same parameter names and shapes). A rule that mixes coordinates on purpose
(a per-tensor part) skips ``"permutation"``. With pytest, parametrize over :data:`RULE_CHECKS`
and call :func:`run_rule_check`. Guide: ``docs/plugins.md``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from optizoo.rules.base import UpdateRule
from optizoo.testing.report import ConformanceError, ConformanceReport, require, run_checks

__all__ = ["RULE_CHECKS", "check_rule", "run_rule_check"]

_N = 13


def _inputs(dtype: torch.dtype, n: int = _N, seed: int = 0) -> tuple[list[Tensor], Tensor]:
    """Gradients over several scales and a parameter vector, ``[n]`` each."""
    g = torch.Generator().manual_seed(seed)
    grads = [torch.randn(n, generator=g, dtype=dtype) * 10.0**k for k in (-3, 0, 1)]
    return grads, torch.randn(n, generator=g, dtype=dtype)


def _run(rule: UpdateRule, grads: list[Tensor], param: Tensor) -> tuple[list[Tensor], dict]:
    with torch.no_grad():
        state = rule.init_state(param)
        updates = []
        for step, grad in enumerate(grads, start=1):
            update, state = rule(grad, state, param=param, step=step)
            updates.append(update)
            param = param + update
    return updates, state


def check_rule_pure(rule: UpdateRule, **_: Any) -> None:
    """``forward`` modifies neither the gradient, the parameter, nor the state it is given."""
    grads, param = _inputs(torch.float64)
    rule = copy.deepcopy(rule).double()
    with torch.no_grad():
        state = rule.init_state(param)
        _, state = rule(grads[0], state, param=param, step=1)  # a non-trivial state
        before = {k: v.clone() for k, v in state.items()}
        g0, p0 = grads[1].clone(), param.clone()
        _, new = rule(grads[1], state, param=param, step=2)
    require(torch.equal(grads[1], g0), f"{type(rule).__name__}.forward modified the gradient")
    require(torch.equal(param, p0), f"{type(rule).__name__}.forward modified the parameter")
    for k in before:
        require(torch.equal(state[k], before[k]), f"forward modified the input state {k!r}")
    require(set(new) == set(before), f"the state keys changed: {sorted(before)} -> {sorted(new)}")


def check_rule_permutation(rule: UpdateRule, **_: Any) -> None:
    """Permuting the coordinates permutes the updates and the state (float64, to rounding)."""
    grads, param = _inputs(torch.float64)
    rule = copy.deepcopy(rule).double()
    perm = torch.randperm(_N, generator=torch.Generator().manual_seed(1))
    ups, state = _run(rule, grads, param)
    ups_p, state_p = _run(rule, [g[perm] for g in grads], param[perm])
    for t, (a, b) in enumerate(zip(ups, ups_p), start=1):
        require(
            torch.allclose(b, a[perm], rtol=1e-10, atol=1e-12),
            f"step {t}: permuting the coordinates did not permute the updates (the rule is not "
            "coordinate-wise; skip 'permutation' if it mixes coordinates on purpose)",
        )
    for k in state:
        require(
            torch.allclose(state_p[k], state[k][perm], rtol=1e-10, atol=1e-12),
            f"permuting the coordinates did not permute state {k!r}",
        )


def check_rule_state(rule: UpdateRule, **_: Any) -> None:
    """State tensors have leading dimension ``n`` and the dtype ``state_dtype`` promises;
    updates are finite, shaped and typed like the gradient."""
    for dtype in (torch.float32, torch.float64):
        r = copy.deepcopy(rule).to(dtype)
        grads, param = _inputs(dtype)
        want = r.state_dtype(dtype)
        ups, state = _run(r, grads, param)
        for k, v in state.items():
            require(isinstance(v, Tensor), f"state {k!r} is a {type(v).__name__}, not a Tensor")
            require(
                v.dim() >= 1 and v.shape[0] == _N,
                f"state {k!r} has shape {tuple(v.shape)}; the leading dimension must be n={_N}",
            )
            if v.is_floating_point():
                require(v.dtype == want, f"state {k!r} is {v.dtype}; state_dtype says {want}")
        for u in ups:
            require(tuple(u.shape) == (_N,), f"update shape {tuple(u.shape)} != grad's ({_N},)")
            require(u.dtype == dtype, f"update is {u.dtype} for {dtype} gradients")
            require(bool(torch.isfinite(u).all()), f"non-finite update for {dtype} gradients")
        empty = r.init_state(param[:0])
        require(
            all(v.shape[0] == 0 for v in empty.values()), "init_state of 0 coordinates is not empty"
        )


def check_rule_config(rule: UpdateRule, **_: Any) -> None:
    """``config()`` is JSON and ``type(rule)(**config)`` has the same parameters and buffers."""
    config = rule.config()
    require(isinstance(config, dict), f"{type(rule).__name__}.config() must return a dict")
    try:
        json.loads(json.dumps(config))
    except (TypeError, ValueError) as exc:
        raise ConformanceError(f"config() is not JSON-serialisable: {exc}") from None
    again = type(rule)(**config)
    require(again.config() == config, "type(rule)(**config()).config() differs from config()")
    shapes = {k: tuple(v.shape) for k, v in rule.state_dict().items()}
    shapes_again = {k: tuple(v.shape) for k, v in again.state_dict().items()}
    require(shapes == shapes_again, f"rebuilt rule has tensors {shapes_again}, expected {shapes}")
    again.load_state_dict(rule.state_dict())
    grads, param = _inputs(torch.float32)
    ups, _ = _run(rule, grads, param)
    ups_again, _ = _run(again, grads, param)
    require(
        all(torch.equal(a, b) for a, b in zip(ups, ups_again)),
        "the rebuilt rule with the same weights gives other updates",
    )


RULE_CHECKS: dict[str, Callable[..., None]] = {
    "pure": check_rule_pure,
    "permutation": check_rule_permutation,
    "state": check_rule_state,
    "config": check_rule_config,
}


def run_rule_check(name: str, rule: UpdateRule, **options: Any) -> None:
    """Run the single rule check ``name``; raises :class:`ConformanceError` if it fails."""
    if name not in RULE_CHECKS:
        raise ValueError(f"unknown rule check {name!r}; available: {', '.join(RULE_CHECKS)}")
    RULE_CHECKS[name](rule, **options)


def check_rule(
    rule: UpdateRule, *, skip: tuple[str, ...] = (), **options: Any
) -> ConformanceReport:
    """Run every rule check on ``rule`` (an instance; it is copied, never changed).

    Raises:
        TypeError: ``rule`` is not an :class:`~optizoo.rules.UpdateRule` instance.
        ConformanceError: a check failed (the message lists every failure).
    """
    if not isinstance(rule, UpdateRule):
        raise TypeError(f"check_rule needs an optizoo.rules.UpdateRule instance, got {rule!r}")
    report = run_checks(RULE_CHECKS, rule, skip, options)
    if not report.ok:
        raise ConformanceError(str(report))
    return report
