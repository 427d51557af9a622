"""LearnedOptimizer(compile=True) is optional: with no C++ compiler, or when compilation fails,
it warns once and steps exactly like the eager optimizer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import optizoo.optim as optim_module
from optizoo.optim import LearnedOptimizer
from optizoo.rules import LSTMRule


def _run(opt_kwargs, steps=3):
    torch.manual_seed(0)
    rule = LSTMRule()
    ps = [nn.Parameter(torch.randn(50, 3))]
    opt = LearnedOptimizer(ps, rule, **opt_kwargs)
    for _ in range(steps):
        opt.zero_grad()
        ps[0].pow(2).sum().backward()
        opt.step()
    return ps[0].detach(), opt


def test_no_compiler_falls_back_to_eager(monkeypatch):
    monkeypatch.setattr(optim_module.shutil, "which", lambda name: None)
    called = []
    monkeypatch.setattr(torch, "compile", lambda *a, **k: called.append(1))
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        got, opt = _run({"compile": True})
    assert not called and opt.compile is False
    want, _ = _run({})
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_failed_compilation_falls_back_to_eager(monkeypatch):
    def broken(module, **kwargs):
        def fn(*args, **kw):
            raise RuntimeError("simulated inductor failure")

        return fn

    monkeypatch.setattr(optim_module, "_have_cpp_compiler", lambda: True)
    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(RuntimeWarning, match="simulated inductor failure"):
        got, opt = _run({"compile": True})
    assert opt.compile is False
    want, _ = _run({})
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_errors_of_an_eager_rule_are_not_swallowed():
    class Broken(LSTMRule):
        def forward(self, grad, state, *, param=None, step):
            raise ValueError("a real bug")

    opt = LearnedOptimizer([nn.Parameter(torch.ones(3))], Broken())
    opt.param_groups[0]["params"][0].grad = torch.ones(3)
    with pytest.raises(ValueError, match="a real bug"):
        opt.step()
