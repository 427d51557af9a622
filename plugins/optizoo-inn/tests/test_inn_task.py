"""Tests of the optizoo-inn plugin: the invertible network, the MMD, the task contract.

References: the inverse checked against the forward map in float64; the MMD against a
double loop over sample pairs in numpy float64; the toy data against the closed-form bump
recomputed with numpy from the sampled ``x``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("optizoo_inn", reason="install the plugin: pip install -e plugins/optizoo-inn")

from optizoo_inn.inn import (
    INN,
    init_params,
    inn_forward,
    inn_inverse,
    random_permutations,
)
from optizoo_inn.mmd import IMQ_WIDTHS, mmd_multiscale
from optizoo_inn.task import GaussianINNTask, gaussian_bump_data

import optizoo
from optizoo.rules import LSTMRule
from optizoo.testing import check_task


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The network's matrices are tiny: intra-op threads only add overhead and contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _network(dim: int = 8, blocks: int = 3, out_scale: float = 1.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    params = {k: v.double() for k, v in init_params(blocks, dim, 16, g, out_scale).items()}
    return params, random_permutations(blocks, dim, g)


@pytest.mark.parametrize(("dim", "blocks"), [(8, 3), (7, 2), (8, 4)])
def test_inverse_undoes_forward_to_float64_precision(dim: int, blocks: int) -> None:
    # out_scale=1 makes every block far from the identity (scales up to e^±2 after clamping)
    params, perms = _network(dim, blocks)
    x = torch.randn(200, dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = inn_forward(params, x, perms)
    assert (y - x).abs().max() > 0.5  # the map is far from the identity
    # tolerance 1e-12: a few dozen float64 operations per coordinate, each ~1e-16 relative
    assert (inn_inverse(params, y, perms) - x).abs().max() < 1e-12
    assert (inn_forward(params, inn_inverse(params, x, perms), perms) - x).abs().max() < 1e-12


def test_inn_module_matches_the_functional_network() -> None:
    params, perms = _network()
    model = INN(params, perms).double()
    assert set(dict(model.named_parameters())) == set(params)
    x = torch.randn(5, 8, dtype=torch.float64)
    torch.testing.assert_close(model(x), inn_forward(params, x, perms), rtol=0, atol=0)
    torch.testing.assert_close(model.inverse(model(x)), x, rtol=0, atol=1e-12)


def _mmd_reference(a: np.ndarray, b: np.ndarray) -> float:
    def k(u: np.ndarray, v: np.ndarray) -> float:
        d = float(((u - v) ** 2).sum())
        return sum(h * h / (h * h + d) for h in IMQ_WIDTHS)

    def mean_k(p: np.ndarray, q: np.ndarray) -> float:
        return sum(k(u, v) for u in p for v in q) / (len(p) * len(q))

    return mean_k(a, a) + mean_k(b, b) - 2 * mean_k(a, b)


def test_mmd_matches_a_double_loop_reference() -> None:
    g = torch.Generator().manual_seed(3)
    a = torch.randn(12, 3, generator=g, dtype=torch.float64)
    b = torch.randn(9, 3, generator=g, dtype=torch.float64) + 0.5
    # tolerance: float64 sums of ~400 terms, different order of operations
    assert float(mmd_multiscale(a, b)) == pytest.approx(
        _mmd_reference(a.numpy(), b.numpy()), rel=1e-12
    )
    assert abs(float(mmd_multiscale(a, a))) < 1e-12
    assert float(mmd_multiscale(a, b)) > 0
    with pytest.raises(ValueError, match=r"\[N, d\] and \[M, d\]"):
        mmd_multiscale(a, b[:, :2])


def test_toy_data_is_the_gaussian_bump() -> None:
    x, y = gaussian_bump_data(50, 6, 0.0, torch.Generator().manual_seed(0))
    xn = x.double().numpy()
    t = np.arange(6) / 6
    width = 0.1 + 0.2 * xn[:, 1:2]
    expected = np.exp(-((t - xn[:, 0:1]) ** 2) / (2 * width**2))
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5, atol=1e-6)  # float32 data
    assert x.min() >= 0 and x.max() < 1


def test_registered_through_the_entry_point() -> None:
    assert "inn-gaussian" in optizoo.tasks.available()
    task = optizoo.tasks.build("inn-gaussian", num_blocks=2)
    assert isinstance(task, GaussianINNTask) and task.num_blocks == 2
    assert optizoo.plugins.source_of("tasks", "inn-gaussian") == "optizoo-inn"


def test_conformance() -> None:
    assert check_task(GaussianINNTask(batch_size=16, eval_batch_size=16)).ok


def test_loss_is_deterministic_per_problem_seed_and_step() -> None:
    task = GaussianINNTask(batch_size=16)
    a = task.sample(torch.Generator().manual_seed(5))
    b = task.sample(torch.Generator().manual_seed(5))
    c = task.sample(torch.Generator().manual_seed(6))
    params = a.params()
    with torch.no_grad():
        assert torch.equal(a.loss(params, 7), b.loss(params, 7))
        assert not torch.equal(a.loss(params, 7), a.loss(params, 8))  # a new minibatch per step
        assert not torch.equal(a.loss(params, 7), c.loss(params, 7))  # a new stream per problem
    assert torch.equal(a.batch(3)["x"], b.batch(3)["x"])


def test_float64_problem_matches_float32_up_to_rounding() -> None:
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    p32 = GaussianINNTask(batch_size=16).sample(gen())
    p64 = GaussianINNTask(batch_size=16, dtype="float64").sample(gen())
    assert p64.params()["blocks.0.net1.w1"].dtype == torch.float64
    with torch.no_grad():
        l32, l64 = float(p32.loss(p32.params(), 0)), float(p64.loss(p64.params(), 0))
    assert l64 == pytest.approx(l32, rel=1e-4)  # float32 rounding over ~100 ops


def test_three_losses_are_weighted() -> None:
    problem = GaussianINNTask(batch_size=16, weights=(2.0, 3.0, 5.0)).sample(
        torch.Generator().manual_seed(0)
    )
    params = problem.params()
    with torch.no_grad():
        parts = problem.losses(params, problem.batch(4))
        total = problem.loss(params, 4)
    expected = 2.0 * parts["y"] + 3.0 * parts["z"] + 5.0 * parts["x"]
    torch.testing.assert_close(total, expected)
    assert all(float(v) > 0 for v in parts.values())


def test_adam_decreases_the_loss() -> None:
    problem = GaussianINNTask(batch_size=32, eval_batch_size=128).sample(
        torch.Generator().manual_seed(0)
    )
    params = {k: torch.nn.Parameter(v) for k, v in problem.params().items()}
    with torch.no_grad():
        before = float(problem.eval_loss(params))
    opt = torch.optim.Adam(params.values(), lr=1e-2)
    for step in range(40):
        opt.zero_grad()
        problem.loss(params, step).backward()
        opt.step()
    with torch.no_grad():
        after = float(problem.eval_loss(params))
    # measured: ~25 -> ~5 in 40 steps; demand at least a halving of the held-out loss
    assert after < 0.5 * before, (before, after)


def test_lstm_rule_meta_gradient_flows_through_an_unroll() -> None:
    problem = GaussianINNTask(batch_size=16).sample(torch.Generator().manual_seed(0))
    rule = LSTMRule(hidden_size=8, num_layers=1)
    names = list(problem.params())
    flat = torch.cat([v.reshape(-1) for v in problem.params().values()])
    shapes = [v.shape for v in problem.params().values()]
    state = rule.init_state(flat)

    def unflatten(vec: torch.Tensor) -> dict[str, torch.Tensor]:
        out, i = {}, 0
        for name, shape in zip(names, shapes):
            n = math.prod(shape)
            out[name] = vec[i : i + n].reshape(shape)
            i += n
        return out

    meta_loss = torch.zeros(())
    for step in range(4):
        leaf = flat.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(problem.loss(unflatten(leaf), step), leaf)
        update, state = rule(grad, state, param=flat, step=step + 1)
        flat = flat + update
        meta_loss = meta_loss + problem.loss(unflatten(flat), step + 1)
    meta_loss.backward()
    grads = [p.grad for p in rule.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ndata": 8}, "no latent coordinate"),
        ({"num_blocks": 0}, "num_blocks must be an int >= 1"),
        ({"weights": (1.0, 2.0)}, "weights must be three"),
        ({"noise_std": -1.0}, "noise_std must be"),
        ({"dtype": "float16"}, "dtype must be one of"),
    ],
)
def test_bad_arguments_are_value_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GaussianINNTask(**kwargs)


def test_config_round_trips() -> None:
    task = GaussianINNTask(num_blocks=2, weights=[1, 2, 3], dtype=torch.float64)
    assert GaussianINNTask(**task.config()).config() == task.config()
    assert "num_blocks=2" in repr(task)


def test_meta_trains_and_compares_through_the_ordinary_commands(tmp_path, capsys) -> None:
    from optizoo import cli

    task_args = '{"batch_size": 16, "num_blocks": 2, "hidden": 8}'
    out = tmp_path / "run"
    code = cli.main(
        [
            "train", "--task", "inn-gaussian", "--task-args", task_args,
            "--rule-config", '{"hidden_size": 4, "num_layers": 1}',
            "--unroll", "3", "--horizon", "6", "--meta-steps", "2",
            "--eval-problems", "1", "--eval-every", "2", "--eval-horizon", "6",
            "--out", str(out), "--quiet",
        ]
    )  # fmt: skip
    assert code == 0 and (out / "final_rule.safetensors").is_file()
    code = cli.main(
        [
            "compare", "--task", "inn-gaussian", "--task-args", task_args,
            "--optimizers", "adam:lr=0.01", f"inn={out / 'final_rule.safetensors'}",
            "--steps", "5", "--problems", "2", "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    table = capsys.readouterr().out
    assert "| adam:lr=0.01 |" in table and "| inn |" in table
