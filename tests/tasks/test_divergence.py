"""The one run-until-divergence loop (optizoo.tasks.divergence) and that compare and meta use it.

References are closed forms: gradient descent on ``f(x) = x²`` with step ``lr`` gives
``x_t = (1 - 2 lr)^t x_0``, so ``f(x_t) = (1 - 2 lr)^{2t} x_0²`` (float64, rel. tol. 1e-12); with
``lr = 2`` the loss grows by 9 per step and float32 overflows at a step computed below.
"""

from __future__ import annotations

import importlib
import math

import pytest
import torch

import optizoo.compare.runner as runner
from optizoo import rules
from optizoo.tasks.divergence import run_until_divergence
from optizoo.tasks.quadratic import QuadraticTask

# the module (``optizoo.meta.unroll`` as an attribute is the function of that name)
unroll_module = importlib.import_module("optizoo.meta.unroll")


def _gradient_descent(lr: float, x0: float, dtype: torch.dtype):
    x = torch.tensor(x0, dtype=dtype)
    updates: list[int] = []

    def loss_at(t: int) -> torch.Tensor:
        return x * x

    def update(t: int) -> None:
        nonlocal x
        updates.append(t)
        x = x - lr * 2 * x

    return loss_at, update, updates


def test_a_converging_run_is_recorded_in_full() -> None:
    loss_at, update, updates = _gradient_descent(0.1, 3.0, torch.float64)
    out = run_until_divergence(loss_at, update, 40, check_every=8)
    assert out.shape == (41,) and out.dtype == torch.float64
    expected = torch.tensor([9.0 * 0.8 ** (2 * t) for t in range(41)], dtype=torch.float64)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=0)
    assert updates == list(range(40))


def test_a_diverging_run_stops_at_the_next_check_and_reads_inf_from_the_first_overflow() -> None:
    loss_at, update, updates = _gradient_descent(2.0, 1.0, torch.float32)
    # f(x_t) = 9^t (x_t = (-3)^t) overflows float32 from t = ceil(log(3.4e38) / log(9)) on
    first_inf = math.ceil(math.log(torch.finfo(torch.float32).max) / math.log(9.0))
    out = run_until_divergence(loss_at, update, 100, check_every=8)
    assert out.shape == (101,)
    assert torch.isfinite(out[:first_inf]).all() and torch.isinf(out[first_inf:]).all()
    torch.testing.assert_close(
        out[:first_inf], torch.tensor([9.0**t for t in range(first_inf)], dtype=torch.float64),
        rtol=1e-5, atol=0,
    )  # fmt: skip
    stop = (first_inf // 8 + 1) * 8  # the first check that sees the overflow, after row stop-1
    assert updates == list(range(stop - 1))


def test_nan_then_finite_still_counts_as_diverged_per_column() -> None:
    rows = [torch.tensor([1.0, 1.0]), torch.tensor([float("nan"), 2.0]), torch.tensor([3.0, 3.0])]
    out = run_until_divergence(lambda t: rows[t], lambda t: None, 2, check_every=5)
    assert out[:, 1].tolist() == [1.0, 2.0, 3.0]
    assert out[0, 0] == 1.0 and math.isinf(out[1, 0]) and math.isinf(out[2, 0])


@pytest.mark.parametrize(("steps", "every"), [(-1, 1), (3, 0)])
def test_bad_arguments(steps: int, every: int) -> None:
    with pytest.raises(ValueError, match=r"steps|check_every"):
        run_until_divergence(lambda t: torch.zeros(()), lambda t: None, steps, check_every=every)


def test_compare_and_meta_record_curves_through_it(monkeypatch) -> None:
    calls: list[str] = []

    def spy(name):
        def wrapped(*args, **kwargs):
            calls.append(name)
            return run_until_divergence(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(runner, "run_until_divergence", spy("compare"))
    monkeypatch.setattr(unroll_module, "run_until_divergence", spy("meta"))
    task = QuadraticTask(dim=3, batch=1)
    runner.run_trajectories(task, lambda p: torch.optim.SGD(p, lr=0.01), [1, 2], 5)
    problems = [task.sample(torch.Generator().manual_seed(s)) for s in (1, 2)]
    unroll_module.rollout(rules.build("sgd", {"lr": 0.01}), problems, 5)
    assert calls == ["compare", "compare", "meta"]


def test_compare_and_meta_agree_on_a_diverging_sgd_run() -> None:
    """The same problems, plain SGD through torch.optim (compare) and as a rule (meta)."""
    task = QuadraticTask(dim=3, batch=1)
    seeds = [1, 2]
    lr = 50.0  # diverges within a few dozen steps on these quadratics
    steps = 100
    curves = runner.run_trajectories(task, lambda p: torch.optim.SGD(p, lr=lr), seeds, steps)
    problems = [task.sample(torch.Generator().manual_seed(s)) for s in seeds]
    meta = unroll_module.rollout(
        rules.build("sgd", {"lr": lr}), problems, steps, check_every=32
    ).T.numpy()
    assert not torch.isfinite(torch.as_tensor(curves.train[:, -1])).any()
    finite = torch.isfinite(torch.as_tensor(meta))
    assert (finite.numpy() == (curves.train < math.inf)).all()  # inf at the same steps
    torch.testing.assert_close(
        torch.as_tensor(meta)[finite], torch.as_tensor(curves.train)[finite], rtol=1e-4, atol=0
    )  # float32 losses, two implementations of the same update
