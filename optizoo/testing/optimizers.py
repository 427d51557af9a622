"""Conformance checks any ``torch.optim``-style optimizer can run: ours, a plugin's, torch's own.

The checks pin the contract a drop-in optimizer must keep (param groups, ``add_param_group``,
skipping parameters without gradients, closures, ``zero_grad``, ``lr`` as a pure scale, every
``lr``-only scheduler, ``maximize``, bit-identical ``state_dict`` resume, ``deepcopy``/``pickle``,
``GradScaler``) plus optional ones for learned optimizers (non-finite gradients, sparse
gradients refused, float32 state for bf16 parameters).

>>> from optizoo.testing import check_optimizer
>>> check_optimizer(lambda params, **kw: torch.optim.Adam(params, **{"lr": 1e-2, **kw}))

The factory takes ``(params, **overrides)`` where ``overrides`` may hold ``lr`` and ``maximize``.
With pytest, parametrize over :data:`CHECKS` to get one test per check::

    @pytest.mark.parametrize("name", optizoo.testing.CHECKS)
    def test_conformance(name):
        optizoo.testing.run_check(name, my_factory)
"""

from __future__ import annotations

import copy
import io
import pickle
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from optizoo.testing.report import ConformanceError, ConformanceReport, require, run_checks

__all__ = [
    "CHECKS",
    "CORE_CHECKS",
    "LEARNED_CHECKS",
    "check_optimizer",
    "run_check",
    "run_conformance",
]

Factory = Callable[..., torch.optim.Optimizer]


# ---------------------------------------------------------------------------------------------
# A small deterministic problem


def _model(dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    m = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return m.to(dtype)


def _data(dtype: torch.dtype = torch.float32, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 6, generator=g)
    y = torch.randn(64, 3, generator=g)
    return x.to(dtype), y.to(dtype)


def _loss(m: nn.Module, data, sign: float = 1.0) -> torch.Tensor:
    x, y = data
    return sign * ((m(x) - y) ** 2).mean()


def _train(m: nn.Module, opt: torch.optim.Optimizer, data, steps: int, sign: float = 1.0) -> None:
    for _ in range(steps):
        opt.zero_grad()
        _loss(m, data, sign).backward()
        opt.step()


def _flat(m: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).double() for p in m.parameters()])


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.equal(a, b))


# ---------------------------------------------------------------------------------------------
# Checks: each takes the factory and options; raises ConformanceError on failure.


def check_descent(factory: Factory, steps: int = 40, **_: Any) -> None:
    """Training the small regression for ``steps`` steps lowers its loss."""
    m, data = _model(), _data()
    before = float(_loss(m, data).detach())
    _train(m, factory(m.parameters()), data, steps)
    after = float(_loss(m, data).detach())
    require(after < before, f"loss did not decrease: {before:.4g} -> {after:.4g}")


def check_param_groups(factory: Factory, **_: Any) -> None:
    """Per-group options: a group with ``lr=0`` stays bit-identical while the other moves."""
    m, data = _model(), _data()
    first, second = list(m[0].parameters()), list(m[2].parameters())
    opt = factory([{"params": first}, {"params": second, "lr": 0.0}])
    require(len(opt.param_groups) == 2, "expected two param groups")
    frozen = [p.detach().clone() for p in second]
    moving = [p.detach().clone() for p in first]
    _train(m, opt, data, 3)
    require(all(_same(a, p) for a, p in zip(frozen, second)), "a group with lr=0 changed")
    require(any(not _same(a, p) for a, p in zip(moving, first)), "the group with lr>0 did not move")


def check_add_param_group(factory: Factory, **_: Any) -> None:
    """Parameters added with ``add_param_group`` after some steps are optimized from then on."""
    m, data = _model(), _data()
    first, second = list(m[0].parameters()), list(m[2].parameters())
    opt = factory(first)
    _train(m, opt, data, 2)
    before = [p.detach().clone() for p in second]
    opt.add_param_group({"params": second})
    require(len(opt.param_groups) == 2, "add_param_group did not add a group")
    _train(m, opt, data, 2)
    require(any(not _same(a, p) for a, p in zip(before, second)), "added parameters did not move")


def check_skips_params_without_grad(factory: Factory, **_: Any) -> None:
    """A parameter whose ``.grad`` is ``None`` is left bit-identical."""
    m, data = _model(), _data()
    unused = nn.Parameter(torch.randn(5))
    opt = factory([*m.parameters(), unused])
    before = unused.detach().clone()
    _train(m, opt, data, 3)
    require(unused.grad is None and _same(before, unused), "a parameter without grad changed")


def check_closure(factory: Factory, **_: Any) -> None:
    """``step(closure)`` calls the closure once and returns its loss."""
    m, data = _model(), _data()
    opt = factory(m.parameters())
    calls = []

    def closure():
        opt.zero_grad()
        loss = _loss(m, data)
        loss.backward()
        calls.append(float(loss.detach()))
        return loss

    out = opt.step(closure)
    require(len(calls) >= 1, "closure was not called")
    require(
        out is not None and float(out.detach()) == calls[0], "step(closure) did not return the loss"
    )


def check_zero_grad(factory: Factory, **_: Any) -> None:
    """``zero_grad()`` sets grads to ``None``; ``zero_grad(set_to_none=False)`` to zeros."""
    m, data = _model(), _data()
    opt = factory(m.parameters())
    _loss(m, data).backward()
    opt.zero_grad(set_to_none=False)
    require(
        all(p.grad is not None and not p.grad.any() for p in m.parameters()), "grads not zeroed"
    )
    opt.zero_grad()
    require(all(p.grad is None for p in m.parameters()), "zero_grad() did not set grads to None")


def check_lr_zero(factory: Factory, **_: Any) -> None:
    """``lr=0`` leaves every parameter bit-identical over several steps."""
    m, data = _model(), _data()
    before = _flat(m)
    _train(m, factory(m.parameters(), lr=0.0), data, 5)
    require(_same(before, _flat(m)), "lr=0 changed parameters")


def _schedulers(opt: torch.optim.Optimizer) -> dict[str, Any]:
    sched = torch.optim.lr_scheduler
    base = opt.param_groups[0]["lr"]
    return {
        "StepLR": lambda: sched.StepLR(opt, step_size=2, gamma=0.5),
        "LambdaLR": lambda: sched.LambdaLR(opt, lambda t: 1.0 / (1 + t)),
        "CosineAnnealingLR": lambda: sched.CosineAnnealingLR(opt, T_max=5),
        "OneCycleLR": lambda: sched.OneCycleLR(
            opt, max_lr=base, total_steps=12, cycle_momentum=False
        ),
        "ReduceLROnPlateau": lambda: sched.ReduceLROnPlateau(opt, patience=0, factor=0.5),
    }


def check_schedulers(factory: Factory, **_: Any) -> None:
    """Every lr-only scheduler runs, and a scheduler that drives lr to 0 stops all updates."""
    data = _data()
    names = list(_schedulers(factory(_model().parameters())))
    for name in names:
        m = _model()
        opt = factory(m.parameters())
        s = _schedulers(opt)[name]()
        for _ in range(6):
            opt.zero_grad()
            loss = _loss(m, data)
            loss.backward()
            opt.step()
            s.step(float(loss.detach())) if name == "ReduceLROnPlateau" else s.step()
        lrs = [g["lr"] for g in opt.param_groups]
        require(all(isinstance(lr, float) for lr in lrs), f"{name}: lr is not a float: {lrs}")
    # The optimizer must read group["lr"] at every step.
    m = _model()
    opt = factory(m.parameters())
    s = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 if t < 2 else 0.0)
    for _ in range(2):
        _train(m, opt, data, 1)
        s.step()
    before = _flat(m)
    _train(m, opt, data, 3)
    require(_same(before, _flat(m)), "updates continued after the scheduler set lr=0")


def check_maximize(factory: Factory, **_: Any) -> None:
    """``maximize=True`` on ``f`` follows exactly the trajectory of minimizing ``-f``."""
    data = _data()
    m1, m2 = _model(), _model()
    _train(m1, factory(m1.parameters(), maximize=True), data, 5, sign=-1.0)
    _train(m2, factory(m2.parameters()), data, 5, sign=1.0)
    require(_same(_flat(m1), _flat(m2)), "maximize=True on -f differs from minimizing f")


def check_state_dict_resume(factory: Factory, steps: int = 6, **_: Any) -> None:
    """Stop at step k, save (``torch.save``/``weights_only`` load), reload into a fresh model and
    optimizer, continue: the result is bit-identical to an uninterrupted run."""
    data = _data()
    ref = _model()
    _train(ref, factory(ref.parameters()), data, 2 * steps)

    m = _model()
    opt = factory(m.parameters())
    _train(m, opt, data, steps)
    buf = io.BytesIO()
    torch.save({"model": m.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    m2 = _model(seed=123)
    m2.load_state_dict(saved["model"])
    opt2 = factory(m2.parameters())
    opt2.load_state_dict(saved["opt"])
    _train(m2, opt2, data, steps)
    require(_same(_flat(ref), _flat(m2)), "resumed run differs from the uninterrupted run")


def check_copy_and_pickle(factory: Factory, **_: Any) -> None:
    """``copy.deepcopy`` and ``pickle`` of (model, optimizer) continue exactly like the original."""
    data = _data()
    m = _model()
    opt = factory(m.parameters())
    _train(m, opt, data, 3)
    m_copy, opt_copy = copy.deepcopy((m, opt))
    m_pkl, opt_pkl = pickle.loads(pickle.dumps((m, opt)))
    for mm, oo in ((m, opt), (m_copy, opt_copy), (m_pkl, opt_pkl)):
        _train(mm, oo, data, 3)
    require(_same(_flat(m), _flat(m_copy)), "deepcopy continued differently")
    require(_same(_flat(m), _flat(m_pkl)), "pickle round-trip continued differently")


def check_float64(factory: Factory, **_: Any) -> None:
    """float64 parameters stay float64 and floating state is float64."""
    m, data = _model(torch.float64), _data(torch.float64)
    opt = factory(m.parameters())
    _train(m, opt, data, 2)
    require(all(p.dtype == torch.float64 for p in m.parameters()), "float64 params changed dtype")
    for st in opt.state.values():
        for k, v in st.items():
            if isinstance(v, torch.Tensor) and v.is_floating_point() and k != "step":
                require(v.dtype == torch.float64, f"state {k!r} is {v.dtype} for float64 params")


def check_grad_scaler(factory: Factory, **_: Any) -> None:
    """``torch.amp.GradScaler``: a step with inf gradients is skipped, a finite one is taken."""
    m, data = _model(), _data()
    opt = factory(m.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
    opt.zero_grad()
    scaler.scale(_loss(m, data)).backward()
    next(iter(m.parameters())).grad[0].fill_(float("inf"))
    before = _flat(m)
    scaler.step(opt)
    scaler.update()
    require(_same(before, _flat(m)), "GradScaler did not skip the step with inf gradients")
    opt.zero_grad()
    scaler.scale(_loss(m, data)).backward()
    scaler.step(opt)
    scaler.update()
    require(not _same(before, _flat(m)), "GradScaler step with finite gradients changed nothing")


def check_negative_lr_refused(factory: Factory, **_: Any) -> None:
    """A negative learning rate is refused with a ``ValueError``."""
    try:
        factory(_model().parameters(), lr=-1.0)
    except ValueError:
        return
    raise ConformanceError("lr=-1 was accepted")


def check_nonfinite_gradients(factory: Factory, **_: Any) -> None:
    """A non-finite gradient coordinate is left unchanged; the rest step; state stays finite."""
    m, data = _model(), _data()
    opt = factory(m.parameters())
    _train(m, opt, data, 2)
    w = m[0].weight
    before = w.detach().clone()
    opt.zero_grad()
    _loss(m, data).backward()
    w.grad[0, 0] = float("nan")
    w.grad[1, 1] = float("inf")
    opt.step()
    require(w[0, 0] == before[0, 0] and w[1, 1] == before[1, 1], "non-finite coordinates moved")
    require(bool((w != before).any()), "finite coordinates did not move")
    for st in opt.state.values():
        for k, v in st.items():
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                require(bool(torch.isfinite(v).all()), f"state {k!r} became non-finite")
    _train(m, opt, data, 2)
    require(bool(torch.isfinite(_flat(m)).all()), "parameters became non-finite after recovery")


def check_sparse_refused(factory: Factory, **_: Any) -> None:
    """Sparse gradients are refused with a clear ``TypeError``/``RuntimeError``/``ValueError``."""
    emb = nn.Embedding(10, 3, sparse=True)
    opt = factory(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    try:
        opt.step()
    except (TypeError, RuntimeError, ValueError) as exc:
        require("sparse" in str(exc).lower(), f"error does not mention sparse gradients: {exc}")
        return
    raise ConformanceError("sparse gradients were accepted silently")


def check_bf16_state_float32(factory: Factory, **_: Any) -> None:
    """bfloat16 parameters keep float32 optimizer state."""
    m, data = _model(torch.bfloat16), _data(torch.bfloat16)
    opt = factory(m.parameters())
    _train(m, opt, data, 2)
    for st in opt.state.values():
        for k, v in st.items():
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                require(v.dtype == torch.float32, f"state {k!r} is {v.dtype} for bf16 params")


#: Checks every drop-in optimizer should pass.
CORE_CHECKS: dict[str, Callable[..., None]] = {
    "descent": check_descent,
    "param_groups": check_param_groups,
    "add_param_group": check_add_param_group,
    "skips_params_without_grad": check_skips_params_without_grad,
    "closure": check_closure,
    "zero_grad": check_zero_grad,
    "lr_zero": check_lr_zero,
    "schedulers": check_schedulers,
    "maximize": check_maximize,
    "state_dict_resume": check_state_dict_resume,
    "copy_and_pickle": check_copy_and_pickle,
    "float64": check_float64,
    "grad_scaler": check_grad_scaler,
    "negative_lr_refused": check_negative_lr_refused,
}
#: Stronger guarantees optizoo's learned optimizers make (opt in with ``learned=True``).
LEARNED_CHECKS: dict[str, Callable[..., None]] = {
    "nonfinite_gradients": check_nonfinite_gradients,
    "sparse_refused": check_sparse_refused,
    "bf16_state_float32": check_bf16_state_float32,
}
CHECKS: dict[str, Callable[..., None]] = {**CORE_CHECKS, **LEARNED_CHECKS}


def run_check(name: str, factory: Factory, **options: Any) -> None:
    """Run the single check ``name``; raises :class:`ConformanceError` if it fails."""
    if name not in CHECKS:
        raise ValueError(f"unknown check {name!r}; available: {', '.join(CHECKS)}")
    CHECKS[name](factory, **options)


def run_conformance(
    factory: Factory, *, learned: bool = False, skip: tuple[str, ...] = (), **options: Any
) -> ConformanceReport:
    """Run every core check (plus the learned-optimizer checks if ``learned``) and report."""
    checks = {**CORE_CHECKS, **(LEARNED_CHECKS if learned else {})}
    unknown = set(skip) - set(CHECKS)
    if unknown:
        raise ValueError(
            f"unknown checks in skip: {sorted(unknown)}; available: {', '.join(CHECKS)}"
        )
    return run_checks(checks, factory, tuple(n for n in skip if n in checks), options)


def check_optimizer(factory: Factory, **kwargs: Any) -> ConformanceReport:
    """Run :func:`run_conformance` and raise :class:`ConformanceError` listing any failures."""
    report = run_conformance(factory, **kwargs)
    if not report.ok:
        raise ConformanceError(str(report))
    return report
