"""Tests of the built-in optimizees: quadratic, linreg, mlp, conv, and their data.

Reference values come from independent computations: closed-form gradients and least squares in
numpy float64, the linear-regression source's printed float32 run (the thermometer linear-regression tutorial), a second parse of
the bundled CSV with the ``csv`` module, IDX files written here with ``struct``, and ``nn.Module``
forwards (``nn.Linear``/``nn.Conv2d``) compared with the tasks' hand-written functional forwards.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import pickle
import struct
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import optizoo.tasks as tasks
from optizoo.errors import UnknownNameError
from optizoo.tasks.conv import ConvTask
from optizoo.tasks.datasets import EpochSampler, load_digits, read_idx
from optizoo.tasks.linreg import LinRegTask
from optizoo.tasks.mlp import MLPTask
from optizoo.tasks.quadratic import QuadraticTask
from optizoo.testing import check_task


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def as_parameters(problem) -> dict[str, torch.nn.Parameter]:
    return {k: torch.nn.Parameter(v) for k, v in problem.params().items()}


# --------------------------------------------------------------------------- registry


def test_registry_lists_and_builds_every_builtin() -> None:
    assert {"quadratic", "linreg", "mlp", "conv"} <= set(tasks.available())
    task = tasks.build("mlp", hidden=(40,), activation="relu")
    assert isinstance(task, MLPTask)
    assert task.hidden == (40,) and task.activation == "relu"
    assert isinstance(tasks.build("quadratic"), QuadraticTask)
    assert isinstance(tasks.build("linreg"), LinRegTask)
    assert isinstance(tasks.build("conv"), ConvTask)


def test_unknown_task_lists_available_names() -> None:
    with pytest.raises(UnknownNameError) as err:
        tasks.build("cifar_resnet")
    msg = str(err.value)
    assert "cifar_resnet" in msg
    for name in ("quadratic", "linreg", "mlp", "conv"):
        assert name in msg


@pytest.mark.parametrize(
    "task",
    [
        QuadraticTask(dim=4, batch=3, dtype="float64"),
        LinRegTask(init="random"),
        MLPTask(hidden=(7, 5), activation="tanh", batch_size=32),
        ConvTask(channels=(4,), batch_size=None),
    ],
    ids=repr,
)
def test_config_rebuilds_the_same_task(task) -> None:
    twin = type(task)(**task.config())
    a, b = task.sample(gen(3)), twin.sample(gen(3))
    pa, pb = a.params(), b.params()
    assert pa.keys() == pb.keys()
    for k in pa:
        assert torch.equal(pa[k], pb[k])
    assert torch.equal(a.loss(pa, 5), b.loss(pb, 5))


def test_pickled_task_is_small_and_samples_the_same_problem() -> None:
    task = MLPTask(hidden=(5,))
    blob = pickle.dumps(task)
    assert len(blob) < 10_000  # the dataset is reloaded by name, not pickled
    twin = pickle.loads(blob)
    a, b = task.sample(gen(4)), twin.sample(gen(4))
    assert torch.equal(a.loss(a.params(), 9), b.loss(b.params(), 9))


# --------------------------------------------------------------------------- common behaviour

ALL_TASKS = [
    QuadraticTask(),
    LinRegTask(init="random"),
    MLPTask(),
    ConvTask(),
]


@pytest.mark.parametrize("task", ALL_TASKS, ids=repr)
def test_builtin_tasks_pass_the_task_conformance_suite(task) -> None:
    report = check_task(task, second_order=True)  # raises listing any failure
    assert not report.failed and not report.skipped


@pytest.mark.parametrize("task", ALL_TASKS, ids=repr)
def test_sampling_uses_only_the_given_generator(task) -> None:
    before = torch.get_rng_state()
    problem = task.sample(gen(0))
    problem.model  # building the nn.Module must not touch the global RNG either
    problem.loss(problem.params(), 3)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("task", ALL_TASKS, ids=repr)
def test_same_seed_same_problem_different_seed_different(task) -> None:
    a, b, c = task.sample(gen(7)), task.sample(gen(7)), task.sample(gen(8))
    pa, pb, pc = a.params(), b.params(), c.params()
    for k in pa:
        assert torch.equal(pa[k], pb[k])
    # another seed: other weights, or (quadratic, whose θ0 is always 0) another W, y
    differs = any(not torch.equal(pa[k], pc[k]) for k in pa)
    assert differs or not torch.equal(a.loss(pa, 0), c.loss(pc, 0))
    for step in (0, 1, 11, 40):
        assert torch.equal(a.loss(pa, step), b.loss(pb, step))
    # params() hands out fresh tensors with the same values
    p1, p2 = a.params(), a.params()
    for k in p1:
        assert p1[k] is not p2[k] and torch.equal(p1[k], p2[k])
        p1[k].add_(1.0)
        assert torch.equal(a.params()[k], p2[k])


@pytest.mark.parametrize("task", ALL_TASKS, ids=repr)
def test_model_parameters_match_params_and_loss(task) -> None:
    problem = task.sample(gen(1))
    named = dict(problem.model.named_parameters())
    init = problem.params()
    assert named.keys() == init.keys()
    for k in init:
        assert torch.equal(named[k].detach(), init[k])
    assert problem.model is problem.model
    assert torch.equal(problem.loss(named, 2).detach(), problem.loss(init, 2))


@pytest.mark.parametrize(
    ("task", "lr", "steps", "factor"),
    [
        # bounds far from the measured outcome (measured in the comment) so noise cannot flip them
        (QuadraticTask(), 0.1, 100, 0.2),  # mean loss 10.4 → 0.37
        (LinRegTask(), 0.1, 200, 0.2),  # 80.4 → 8.2
        (MLPTask(), 1e-2, 100, 0.5),  # test cross-entropy 2.36 → 0.64
        (ConvTask(), 1e-2, 100, 0.8),  # test cross-entropy 2.31 → 1.35
    ],
    ids=lambda v: repr(v) if isinstance(v, tasks.Task) else None,
)
def test_torch_adam_decreases_the_loss(task, lr, steps, factor) -> None:
    problem = task.sample(gen(0))
    params = as_parameters(problem)
    opt = torch.optim.Adam(params.values(), lr=lr)

    def score() -> float:
        with torch.no_grad():
            ev = problem.eval_loss(params)
            if ev is None:
                return float(problem.loss(params, 0)) / problem.num_instances
            return float(ev)

    start = score()
    per_instance = problem.losses(params).detach() if hasattr(problem, "losses") else None
    for step in range(steps):
        opt.zero_grad()
        problem.loss(params, step).backward()
        opt.step()
    end = score()
    assert np.isfinite(end) and end < factor * start, (start, end)
    if per_instance is not None:  # quadratic: every one of the 128 problems improved
        assert bool((problem.losses(params).detach() < per_instance).all())


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: QuadraticTask(dim=0), ValueError),
        (lambda: QuadraticTask(batch=2.5), ValueError),
        (lambda: QuadraticTask(batch=True), ValueError),
        (lambda: QuadraticTask(dtype=torch.int64), TypeError),
        (lambda: QuadraticTask(dtype="float99"), TypeError),
        (lambda: LinRegTask(init="zeros"), ValueError),
        (lambda: LinRegTask(x_scale=0.0), ValueError),
        (lambda: LinRegTask(x=[1.0, 2.0]), ValueError),
        (lambda: LinRegTask(x=[1.0, 2.0], y=[1.0]), ValueError),
        (lambda: MLPTask(hidden=(20, 0)), ValueError),
        (lambda: MLPTask(hidden="20"), ValueError),
        (lambda: MLPTask(activation="swish"), ValueError),
        (lambda: MLPTask(batch_size=0), ValueError),
        (lambda: MLPTask(batch_size=1398), ValueError),  # 1397 training images
        (lambda: MLPTask(dataset="cifar10"), ValueError),
        (lambda: MLPTask(dataset="mnist"), ValueError),  # no data_dir
        (lambda: MLPTask(data_dir="/tmp"), ValueError),  # data_dir with bundled digits
        (lambda: ConvTask(channels=()), ValueError),
        (lambda: ConvTask(channels=(8, -1)), ValueError),
        (lambda: QuadraticTask().sample(0), TypeError),
        (lambda: MLPTask().sample(gen(0)).loss(MLPTask().sample(gen(0)).params(), -1), ValueError),
        (lambda: MLPTask().sample(gen(0)).loss(MLPTask().sample(gen(0)).params(), 1.5), TypeError),
        (lambda: MLPTask().sample(gen(0)).accuracy({}, split="val"), ValueError),
    ],
)
def test_bad_arguments_raise_clear_errors(make, error) -> None:
    with pytest.raises(error, match=r"\w+ .*"):
        make()


def test_bad_argument_messages_say_what_to_do() -> None:
    with pytest.raises(ValueError, match="at most 1397"):
        MLPTask(batch_size=5000)
    with pytest.raises(ValueError, match="data_dir"):
        MLPTask(dataset="mnist")
    with pytest.raises(ValueError, match="sigmoid"):
        MLPTask(activation="swish")
    with pytest.raises(TypeError, match=r"torch.Generator\(\).manual_seed"):
        QuadraticTask().sample(0)


# --------------------------------------------------------------------------- quadratic


def test_quadratic_shapes_start_and_num_instances() -> None:
    problem = QuadraticTask(dim=10, batch=128).sample(gen(0))
    assert problem.W.shape == (128, 10, 10) and problem.y.shape == (128, 10)
    assert problem.num_instances == 128
    theta = problem.params()["theta"]
    assert theta.shape == (128, 10) and not theta.any()  # θ0 = 0
    # at θ = 0 the loss is Σ_b ||y_b||²
    assert torch.allclose(problem.loss(problem.params(), 0), problem.y.square().sum())
    assert problem.eval_loss(problem.params()) is None
    # W is i.i.d. standard normal: 12,800 draws, so 0.05 is > 5 standard errors of mean and std
    assert abs(float(problem.W.mean())) < 0.05 and abs(float(problem.W.std()) - 1) < 0.05


def test_quadratic_gradient_is_the_closed_form_per_instance() -> None:
    problem = QuadraticTask(dim=10, batch=16, dtype=torch.float64).sample(gen(2))
    theta = torch.randn(16, 10, generator=gen(9), dtype=torch.float64).requires_grad_()
    (grad,) = torch.autograd.grad(problem.loss({"theta": theta}, 0), [theta])
    W, y, t = problem.W.numpy(), problem.y.numpy(), theta.detach().numpy()
    residual = np.einsum("bij,bj->bi", W, t) - y
    expected = 2 * np.einsum("bji,bj->bi", W, residual)  # 2 W_bᵀ (W_b θ_b − y_b)
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-12, atol=1e-12)  # float64 exact
    value = float(problem.loss({"theta": theta.detach()}, 0))
    np.testing.assert_allclose(value, (residual**2).sum(), rtol=1e-12)
    # the mean over instances is the learning-to-learn re-implementation's f: ((W θ − y)²).sum(dim=1).mean(dim=0)
    np.testing.assert_allclose(
        value / problem.num_instances,
        (residual**2).sum(1).mean(),
        rtol=1e-12,
    )


def test_quadratic_instances_are_independent() -> None:
    problem = QuadraticTask(dim=5, batch=4, dtype=torch.float64).sample(gen(4))
    theta = torch.randn(4, 5, generator=gen(1), dtype=torch.float64).requires_grad_()
    (g1,) = torch.autograd.grad(problem.loss({"theta": theta}, 0), [theta])
    moved = theta.detach().clone()
    moved[2] += 3.0
    moved.requires_grad_()
    (g2,) = torch.autograd.grad(problem.loss({"theta": moved}, 0), [moved])
    unchanged = [0, 1, 3]
    assert torch.equal(g1[unchanged], g2[unchanged])
    assert not torch.allclose(g1[2], g2[2])
    # each instance alone (batch of one, same W_b, y_b) has the same gradient row
    solo = QuadraticTask(dim=5, batch=1, dtype=torch.float64).sample(gen(0))
    solo.W, solo.y, solo._neg_y = problem.W[1:2], problem.y[1:2], -problem.y[1:2].unsqueeze(-1)
    t1 = theta.detach()[1:2].clone().requires_grad_()
    (gs,) = torch.autograd.grad(solo.loss({"theta": t1}, 0), [t1])
    torch.testing.assert_close(gs[0], g1[1], rtol=1e-12, atol=1e-12)


def test_quadratic_solution_has_zero_loss() -> None:
    problem = QuadraticTask(dim=6, batch=8, dtype=torch.float64).sample(gen(5))
    theta = problem.solution()
    assert float(problem.loss({"theta": theta}, 0)) < 1e-12  # 0 up to float64 rounding


# --------------------------------------------------------------------------- linreg

# the thermometer tutorial's data, typed in again here (independent of the package's copy)
T_Y = [0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0]
T_X = [35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4]


def _gradient_descent(problem, lr: float, steps: int) -> tuple[dict, list[float]]:
    params = {k: v.requires_grad_() for k, v in problem.params().items()}
    losses = []
    for step in range(steps):
        loss = problem.loss(params, step)
        gw, gb = torch.autograd.grad(loss, [params["w"], params["b"]])
        with torch.no_grad():
            params["w"] -= lr * gw
            params["b"] -= lr * gb
        losses.append(loss.item())
    return params, losses


def test_linreg_gradient_descent_reaches_least_squares() -> None:
    problem = LinRegTask(dtype=torch.float64).sample(gen(0))
    x = 0.1 * np.asarray(T_X)
    A = np.stack([x, np.ones_like(x)], axis=1)
    (w_star, b_star), *_ = np.linalg.lstsq(A, np.asarray(T_Y), rcond=None)
    mse_star = float(np.mean((A @ [w_star, b_star] - T_Y) ** 2))
    # Hessian eigenvalues 0.170 and 60.6: lr 0.03 < 2 / 60.6 = 0.033 is stable, the slow mode
    # contracts by 1 − 0.03·0.170 per step, so 5000 steps leave 8e-12 of the initial error
    # (|Δb| ≤ 17 → ≤ 1.4e-10): agreement to 1e-8 is float64 rounding, not luck
    params, losses = _gradient_descent(problem, lr=0.03, steps=5000)
    assert abs(params["w"].item() - w_star) < 1e-8
    assert abs(params["b"].item() - b_star) < 1e-8
    assert abs(losses[-1] - mse_star) < 1e-10


def test_linreg_reproduces_the_reference_float32_run() -> None:
    problem = LinRegTask().sample(gen(0))
    assert problem.x.dtype == torch.float32
    params, losses = _gradient_descent(problem, lr=1e-2, steps=5000)
    # printed by the source (the thermometer linear-regression tutorial): epoch 1 80.36434173583984, epoch 2 37.57491683959961,
    # epoch 5000 2.927647590637207, then w 5.367083549499512, b -17.301189422607422.
    # Tolerances: a few float32 ulps of accumulated rounding (ulp(2.9) = 2.4e-7, ulp(17) = 1.9e-6)
    # because autograd sums the gradient in another order than the source's hand-written one.
    assert losses[0] == pytest.approx(80.36434173583984, abs=1e-5)
    assert losses[1] == pytest.approx(37.57491683959961, abs=1e-5)
    assert losses[-1] == pytest.approx(2.927647590637207, abs=2e-6)
    assert params["w"].item() == pytest.approx(5.367083549499512, abs=1e-5)
    assert params["b"].item() == pytest.approx(-17.301189422607422, abs=1e-5)


def test_linreg_start_and_random_init() -> None:
    ref = LinRegTask().sample(gen(0)).params()
    assert float(ref["w"]) == 1.0 and float(ref["b"]) == 0.0 and ref["w"].shape == ()
    torch.testing.assert_close(LinRegTask().sample(gen(0)).x, torch.tensor(T_X) * 0.1)
    a = LinRegTask(init="random").sample(gen(1)).params()
    b = LinRegTask(init="random").sample(gen(2)).params()
    assert float(a["w"]) != float(b["w"])
    expected = torch.randn(2, generator=gen(1))  # documented: w then b ~ N(0, 1)
    assert float(a["w"]) == float(expected[0]) and float(a["b"]) == float(expected[1])


def test_linreg_custom_data() -> None:
    problem = LinRegTask(x=[0.0, 10.0, 20.0], y=[1.0, 3.0, 5.0], dtype="float64").sample(gen(0))
    exact = {
        "w": torch.tensor(2.0, dtype=torch.float64),
        "b": torch.tensor(1.0, dtype=torch.float64),
    }
    assert float(problem.loss(exact, 0)) == 0.0  # y = 2·(0.1 x) + 1


# --------------------------------------------------------------------------- digits data

# sha256 of sklearn/datasets/data/digits.csv.gz inside the scikit-learn 1.9.1 wheel
# (scikit_learn-1.9.1-cp311-cp311-manylinux_2_27_x86_64...whl), hashed there, not from our copy
SKLEARN_DIGITS_SHA256 = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"
# per-class counts of the UCI optdigits test set (optdigits.names: 178 182 177 183 181 182 181
# 179 174 180)
CLASS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def _bundled_bytes() -> bytes:
    return resources.files("optizoo.tasks").joinpath("data", "digits.csv.gz").read_bytes()


def test_bundled_digits_file_is_the_upstream_file() -> None:
    assert hashlib.sha256(_bundled_bytes()).hexdigest() == SKLEARN_DIGITS_SHA256
    readme = resources.files("optizoo.tasks").joinpath("data", "README.md").read_text()
    assert "CC BY 4.0" in readme and "Alpaydin" in readme


def test_digits_split_shapes_counts_and_scaling() -> None:
    data = load_digits()
    assert data.x_train.shape == (1397, 1, 8, 8) and data.x_test.shape == (400, 1, 8, 8)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.num_classes == 10
    assert torch.bincount(data.y_test, minlength=10).tolist() == [40] * 10
    train_counts = torch.bincount(data.y_train, minlength=10).tolist()
    assert train_counts == [c - 40 for c in CLASS_COUNTS]
    for x in (data.x_train, data.x_test):
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
        assert torch.equal(x * 16, (x * 16).round())  # integers 0..16 divided by 16


def test_digits_split_is_last_forty_rows_per_class() -> None:
    # second parser: the csv module on the raw bundled bytes
    rows = list(csv.reader(io.StringIO(gzip.decompress(_bundled_bytes()).decode())))
    assert len(rows) == 1797 and all(len(r) == 65 for r in rows)
    labels = [int(r[64]) for r in rows]
    test_rows = set()
    for c in range(10):
        test_rows |= set([i for i, lab in enumerate(labels) if lab == c][-40:])
    order_test = [i for i in range(len(rows)) if i in test_rows]
    order_train = [i for i in range(len(rows)) if i not in test_rows]
    pix = np.array([[int(v) for v in r[:64]] for r in rows], dtype=np.float32) / 16
    data = load_digits()
    np.testing.assert_array_equal(data.x_test.reshape(400, 64).numpy(), pix[order_test])
    np.testing.assert_array_equal(data.x_train.reshape(1397, 64).numpy(), pix[order_train])
    np.testing.assert_array_equal(data.y_test.numpy(), np.array(labels)[order_test])


# --------------------------------------------------------------------------- minibatches


def test_epoch_sampler_covers_each_epoch_without_repeats() -> None:
    sampler = EpochSampler(n=50, batch_size=8, seed=123, device=torch.device("cpu"))
    assert sampler.per_epoch == 6  # 48 of 50 examples per epoch, the last 2 dropped
    for epoch in range(3):
        idx = torch.cat([sampler(epoch * 6 + k) for k in range(6)])
        assert idx.shape == (48,) and len(set(idx.tolist())) == 48
        assert torch.equal(idx, sampler.permutation(epoch)[:48])
    assert not torch.equal(sampler.permutation(0), sampler.permutation(1))


def test_minibatches_depend_only_on_seed_and_step() -> None:
    task = MLPTask()
    a, b = task.sample(gen(0)), task.sample(gen(0))
    late = [200, 3, 57, 0, 11]  # a asks out of order (and beyond the permutation cache)
    xs_a = {s: a.batch(s)[1] for s in late}
    for s in sorted(late):
        assert torch.equal(b.batch(s)[1], xs_a[s])
    c = task.sample(gen(1))
    assert not torch.equal(c.batch(0)[1], a.batch(0)[1])
    x, y = a.batch(0)
    assert x.shape == (128, 64) and y.shape == (128,)
    assert not torch.equal(a.batch(0)[1], a.batch(1)[1])


def test_full_batch_ignores_step() -> None:
    problem = MLPTask(batch_size=None).sample(gen(0))
    params = problem.params()
    assert problem.batch(0)[0].shape == (1397, 64)
    assert torch.equal(problem.loss(params, 0), problem.loss(params, 9))


# --------------------------------------------------------------------------- mlp and conv


@pytest.mark.parametrize(
    "task",
    [
        MLPTask(),
        MLPTask(hidden=(40,), activation="relu"),
        MLPTask(hidden=(20, 20), activation="relu", dtype=torch.float64),
        MLPTask(hidden=()),
        ConvTask(),
        ConvTask(channels=(4, 6, 8), activation="tanh", dtype=torch.float64),
    ],
    ids=repr,
)
def test_functional_loss_equals_module_loss(task) -> None:
    problem = task.sample(gen(3))
    model = problem.model
    params = dict(model.named_parameters())
    tol = 1e-12 if task.dtype == torch.float64 else 1e-5  # same math, other kernels
    for step in (0, 13):
        x, y = problem.batch(step)
        images = x.reshape(-1, *task.data.image_shape)  # the module takes images
        ref = F.cross_entropy(model(images), y)
        ours = problem.loss(params, step)
        torch.testing.assert_close(ours, ref, rtol=tol, atol=tol)
        g_ours = torch.autograd.grad(ours, list(params.values()))
        g_ref = torch.autograd.grad(ref, list(params.values()))
        for a, b in zip(g_ours, g_ref):
            torch.testing.assert_close(a, b, rtol=10 * tol, atol=10 * tol)
    # eval_loss: the whole 400-image test split through the module
    with torch.no_grad():
        expected = F.cross_entropy(model(task.data.x_test.to(task.dtype)), task.data.y_test)
        torch.testing.assert_close(problem.eval_loss(params), expected, rtol=tol, atol=tol)


def test_mlp_shapes_and_init_scale() -> None:
    problem = MLPTask().sample(gen(0))
    shapes = {k: tuple(v.shape) for k, v in problem.params().items()}
    assert shapes == {
        "layers.0.weight": (20, 64),
        "layers.0.bias": (20,),
        "layers.1.weight": (10, 20),
        "layers.1.bias": (10,),
    }
    w = problem.params()["layers.0.weight"]
    bound = 64**-0.5  # U(−1/√fan_in, 1/√fan_in)
    assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.9 * bound


def test_conv_shapes() -> None:
    problem = ConvTask().sample(gen(0))
    shapes = {k: tuple(v.shape) for k, v in problem.params().items()}
    assert shapes == {
        "convs.0.weight": (8, 1, 3, 3),
        "convs.0.bias": (8,),
        "convs.1.weight": (16, 8, 3, 3),
        "convs.1.bias": (16,),
        "fc.weight": (10, 16),
        "fc.bias": (10,),
    }
    x, _ = problem.batch(0)
    assert x.shape == (128, 1, 8, 8)
    assert problem.logits(problem.params(), x).shape == (128, 10)


def test_accuracy_of_a_trained_mlp() -> None:
    problem = MLPTask(hidden=(40,), activation="relu").sample(gen(0))
    params = as_parameters(problem)
    opt = torch.optim.Adam(params.values(), lr=3e-2)
    for step in range(150):
        opt.zero_grad()
        problem.loss(params, step).backward()
        opt.step()
    # digits are easy: 150 Adam steps give 0.915 test accuracy (train 0.99) as measured
    assert problem.accuracy(params) > 0.85
    assert 0.0 <= problem.accuracy(params, split="train") <= 1.0


# --------------------------------------------------------------------------- MNIST from IDX


def _write_idx(path: Path, array: np.ndarray, code: int, compress: bool) -> None:
    big = array.astype(array.dtype.newbyteorder(">"))
    payload = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    payload += big.tobytes()
    if compress:
        payload = gzip.compress(payload)
    path.write_bytes(payload)


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_roundtrip(tmp_path: Path, compress: bool) -> None:
    rng = np.random.default_rng(0)
    cases = [
        (rng.integers(0, 256, size=(3, 4, 5)).astype(np.uint8), 0x08),
        (rng.integers(-100, 100, size=(7,)).astype(np.int32), 0x0C),
        (rng.standard_normal((2, 3)).astype(np.float32), 0x0D),
        (rng.integers(-30000, 30000, size=(2, 2)).astype(np.int16), 0x0B),
    ]
    for i, (array, code) in enumerate(cases):
        path = tmp_path / f"f{i}"
        _write_idx(path, array, code, compress)
        out = read_idx(path)
        assert out.shape == array.shape
        np.testing.assert_array_equal(out, array)


def test_read_idx_rejects_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(bad)
    short = tmp_path / "short"
    _write_idx(short, np.zeros((4, 2), np.uint8), 0x08, False)
    short.write_bytes(short.read_bytes()[:-1])
    with pytest.raises(ValueError, match="holds 7 bytes"):
        read_idx(short)
    code = tmp_path / "code"
    code.write_bytes(bytes([0, 0, 0x07, 1, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="type code"):
        read_idx(code)


def _fake_mnist(root: Path, n_train: int = 40, n_test: int = 12, side: int = 6) -> None:
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, side, side)).astype(np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, side, side)).astype(np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for i, (name, array) in enumerate(files.items()):
        compress = i % 2 == 0  # mix plain and .gz files
        _write_idx(root / (name + (".gz" if compress else "")), array, 0x08, compress)


def test_mlp_and_conv_on_mnist_idx_files(tmp_path: Path) -> None:
    _fake_mnist(tmp_path / "MNIST" / "raw")  # torchvision's layout is found too
    task = MLPTask(dataset="mnist", data_dir=tmp_path, batch_size=8)
    assert task.data.x_train.shape == (40, 1, 6, 6) and task.data.x_test.shape == (12, 1, 6, 6)
    assert float(task.data.x_train.max()) <= 1.0  # uint8 / 255
    raw = read_idx(next((tmp_path / "MNIST" / "raw").glob("train-images*")))
    np.testing.assert_allclose(task.data.x_train[:, 0].numpy(), raw / 255.0, rtol=1e-6)
    problem = task.sample(gen(0))
    assert problem.params()["layers.0.weight"].shape == (20, 36)
    assert problem.batch(4)[0].shape == (8, 36)
    assert problem.eval_loss(problem.params()).shape == ()
    conv = ConvTask(dataset="mnist", data_dir=tmp_path / "MNIST" / "raw", batch_size=8)
    cp = conv.sample(gen(0))
    assert torch.isfinite(cp.loss(cp.params(), 0))


def test_mnist_missing_files_are_named(tmp_path: Path) -> None:
    _fake_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        MLPTask(dataset="mnist", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        MLPTask(dataset="mnist", data_dir=tmp_path / "nope")


# --------------------------------------------------------------------------- devices


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("task", ALL_TASKS, ids=repr)
def test_same_problem_on_cuda(task) -> None:
    cpu, gpu = task.sample(gen(5)), task.sample(gen(5), device="cuda")
    pc, pg = cpu.params(), gpu.params()
    for k in pc:
        assert pg[k].device.type == "cuda"
        torch.testing.assert_close(pg[k].cpu(), pc[k])
    torch.testing.assert_close(gpu.loss(pg, 7).cpu(), cpu.loss(pc, 7), rtol=1e-4, atol=1e-4)


def test_instance_count_and_per_instance_scale() -> None:
    from optizoo.tasks.base import instance_count, per_instance_scale

    quad = tasks.build("quadratic", batch=7).sample(torch.Generator().manual_seed(0))

    class Bare:  # a duck-typed problem that does not declare num_instances
        pass

    assert instance_count(quad) == 7.0 and instance_count(Bare()) == 1.0
    scale = per_instance_scale([quad, Bare()])
    assert scale.dtype == torch.float64 and scale.tolist() == [1 / 7, 1.0]
