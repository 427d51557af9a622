"""Conformance checks for gradient preprocessors (:class:`optizoo.preprocess.Preprocessor`).

    from optizoo.testing import check_preprocessor
    check_preprocessor(SignMagnitude)                 # raises ConformanceError listing failures

With pytest, parametrize over :data:`PREPROCESSOR_CHECKS` and call
:func:`run_preprocessor_check`. Guide: ``docs/plugins.md``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from optizoo.preprocess.base import Preprocessor
from optizoo.testing.report import ConformanceError, ConformanceReport, require, run_checks

__all__ = ["PREPROCESSOR_CHECKS", "check_preprocessor", "run_preprocessor_check"]


def _grads(dtype: torch.dtype = torch.float32) -> Tensor:
    """Gradients over many scales, both signs, and exact zeros: ``[13]``."""
    mags = [0.0, 1e-30, 1e-8, 1e-5, 1e-3, 0.1, 1.0, 30.0, 1e4, 1e8]
    return torch.tensor([*mags, *(-m for m in mags[1:4])], dtype=dtype)


def check_preprocessor_shape(cls: type[Preprocessor], **_: Any) -> None:
    """``forward(grad [n]) -> [n, out_features]`` in ``grad``'s dtype, finite for any scale."""
    pre = cls()
    for dtype in (torch.float32, torch.float64):
        g = _grads(dtype)
        out = pre(g)
        k = cls.out_features
        require(
            tuple(out.shape) == (g.shape[0], k),
            f"{cls.__name__}: grad {tuple(g.shape)} gave features {tuple(out.shape)}, "
            f"expected ({g.shape[0]}, {k}) (out_features={k})",
        )
        require(out.dtype == dtype, f"{cls.__name__}: features are {out.dtype} for {dtype} grads")
        require(bool(torch.isfinite(out).all()), f"{cls.__name__}: non-finite features")
        require(tuple(pre(g[:0]).shape) == (0, k), f"{cls.__name__}: empty input fails")


def check_preprocessor_pure(cls: type[Preprocessor], **_: Any) -> None:
    """``forward`` does not modify its input and is coordinate-wise (no mixing across ``n``)."""
    pre = cls()
    g = _grads()
    before = g.clone()
    out = pre(g)
    require(torch.equal(g, before), f"{cls.__name__}.forward modified its input")
    perm = torch.randperm(g.shape[0], generator=torch.Generator().manual_seed(0))
    require(
        torch.equal(pre(g[perm]), out[perm]),
        f"{cls.__name__} is not coordinate-wise: permuting coordinates changed the features",
    )


def check_preprocessor_differentiable(cls: type[Preprocessor], **_: Any) -> None:
    """Features are differentiable with finite gradients (the meta-trainer may need them)."""
    pre = cls()
    g = _grads(torch.float64).requires_grad_(True)
    out = pre(g)
    if not out.requires_grad:
        return  # a piecewise-constant preprocessor may legitimately cut the graph
    (dg,) = torch.autograd.grad(out.sum(), g)
    require(bool(torch.isfinite(dg).all()), f"{cls.__name__}: non-finite input gradient")


def check_preprocessor_config(cls: type[Preprocessor], **_: Any) -> None:
    """``cls(**pre.config())`` is JSON-serialisable and rebuilds an identical preprocessor."""
    pre = cls()
    config = pre.config()
    require(isinstance(config, dict), f"{cls.__name__}.config() must return a dict")
    try:
        json.dumps(config)
    except TypeError as exc:
        raise ConformanceError(f"{cls.__name__}.config() is not JSON-serialisable: {exc}") from None
    g = _grads()
    require(torch.equal(cls(**config)(g), pre(g)), f"{cls.__name__}(**config()) differs")


def check_preprocessor_lstm(cls: type[Preprocessor], **_: Any) -> None:
    """An :class:`~optizoo.rules.LSTMRule` built on it takes finite steps of the right shape."""
    from optizoo import plugins
    from optizoo.rules import LSTMRule

    name = f"conformance-{cls.__name__.lower()}"
    existing = {v: k for k, v in plugins.registry("preprocessors").items()}
    if cls in existing:
        rule = LSTMRule(hidden_size=4, num_layers=1, preprocessor=existing[cls])
    else:

        class _Inline:
            @plugins.hookimpl
            def optizoo_preprocessors(self) -> dict[str, Any]:
                return {name: cls}

        with plugins.registered(_Inline(), name=name):
            rule = LSTMRule(hidden_size=4, num_layers=1, preprocessor=name)
    flat = torch.zeros(7)
    state = rule.init_state(flat)
    update, state = rule(torch.linspace(-2.0, 2.0, 7), state, param=flat, step=1)
    require(tuple(update.shape) == (7,), f"LSTMRule on {cls.__name__} gave update {update.shape}")
    require(bool(torch.isfinite(update).all()), f"LSTMRule on {cls.__name__}: non-finite update")


PREPROCESSOR_CHECKS: dict[str, Callable[..., None]] = {
    "shape": check_preprocessor_shape,
    "pure": check_preprocessor_pure,
    "differentiable": check_preprocessor_differentiable,
    "config": check_preprocessor_config,
    "lstm": check_preprocessor_lstm,
}


def run_preprocessor_check(name: str, cls: type[Preprocessor], **options: Any) -> None:
    """Run the single preprocessor check ``name``; raises :class:`ConformanceError` on failure."""
    if name not in PREPROCESSOR_CHECKS:
        raise ValueError(
            f"unknown preprocessor check {name!r}; available: {', '.join(PREPROCESSOR_CHECKS)}"
        )
    PREPROCESSOR_CHECKS[name](cls, **options)


def check_preprocessor(
    cls: type[Preprocessor] | str, *, skip: tuple[str, ...] = (), **options: Any
) -> ConformanceReport:
    """Run every preprocessor check on a class (or registered name); raise on failures.

    The class must be constructible without arguments (give every option a default).
    """
    if isinstance(cls, str):
        from optizoo import preprocess

        cls = preprocess.get(cls)
    if not (isinstance(cls, type) and issubclass(cls, Preprocessor)):
        raise TypeError(f"check_preprocessor needs a Preprocessor subclass, got {cls!r}")
    k = getattr(cls, "out_features", None)
    if not (isinstance(k, int) and k > 0):
        raise ConformanceError(f"{cls.__name__}.out_features must be a positive int, got {k!r}")
    report = run_checks(PREPROCESSOR_CHECKS, cls, skip, options)
    if not report.ok:
        raise ConformanceError(str(report))
    return report
