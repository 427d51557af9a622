"""Tests of the architecture-suite task families: conv nets with normalization, GELU MLPs, the
autoencoder, the transformer language model, the recurrent adding-problem model and the tabular
networks, with their bundled or generated data.

Reference values come from independent computations: the bundled files re-read with ``gzip`` and
``csv``, ``nn.Module`` forwards (``nn.BatchNorm2d``, ``nn.GroupNorm``, ``nn.GELU``,
``nn.MultiheadAttention``-free manual attention) against the tasks' functional losses, closed
forms (Friedman's function, the adding problem's target) computed here in numpy.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import math
from importlib import resources

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import optizoo.tasks as tasks
from optizoo.tasks.autoencoder import AutoencoderTask
from optizoo.tasks.conv import ConvTask
from optizoo.tasks.datasets import load_digits
from optizoo.tasks.mlp import MLPTask
from optizoo.tasks.sequence import RNNTask, adding_problem
from optizoo.tasks.tabular import TabularTask, friedman1, load_wine
from optizoo.tasks.transformer import TransformerLMTask, encode, load_corpus
from optizoo.testing import TASK_CHECKS, run_task_check


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def as_parameters(problem) -> dict[str, torch.nn.Parameter]:
    return {k: torch.nn.Parameter(v) for k, v in problem.params().items()}


#: one small instance of every new family (and the new options of the old ones)
CASES = {
    "conv-batchnorm": ("conv", {"channels": [4, 8], "norm": "batch", "batch_size": 32}),
    "conv-groupnorm": ("conv", {"channels": [4, 8], "norm": "group", "batch_size": 32}),
    "mlp-gelu": ("mlp", {"hidden": [16, 16], "activation": "gelu", "batch_size": 32}),
    "autoencoder": ("autoencoder", {"hidden": [16, 4, 16], "batch_size": 32}),
    "transformer_lm": ("transformer_lm", {"d_model": 8, "layers": 1, "heads": 2, "context": 8}),
    "rnn-gru": ("rnn", {"hidden": 8, "length": 6, "n_train": 64, "n_test": 32, "batch_size": 16}),
    "rnn-lstm": ("rnn", {"cell": "lstm", "hidden": 8, "length": 6, "n_train": 64, "n_test": 32}),
    "tabular-wine": ("tabular", {"dataset": "wine", "hidden": [8]}),
    "tabular-friedman": ("tabular", {"dataset": "friedman", "hidden": [8], "batch_size": 16}),
}


def make(case: str):
    name, args = CASES[case]
    return tasks.build(name, **args)


# --------------------------------------------------------------------------- registry, contract


def test_every_family_is_registered() -> None:
    assert {"autoencoder", "transformer_lm", "rnn", "tabular", "conv", "mlp"} <= set(
        tasks.available()
    )
    assert isinstance(tasks.build("autoencoder"), AutoencoderTask)
    assert isinstance(tasks.build("transformer_lm"), TransformerLMTask)
    assert isinstance(tasks.build("rnn"), RNNTask)
    assert isinstance(tasks.build("tabular"), TabularTask)


@pytest.mark.parametrize("check", list(TASK_CHECKS))
@pytest.mark.parametrize("case", list(CASES))
def test_conformance(case: str, check: str) -> None:
    run_task_check(check, make(case))


@pytest.mark.parametrize("case", list(CASES))
def test_second_order_unroll(case: str) -> None:
    """Meta-training with second-order meta-gradients works on every family."""
    run_task_check("functional", make(case), second_order=True, steps=2)


@pytest.mark.parametrize("case", list(CASES))
def test_seed_determines_the_problem(case: str) -> None:
    task = make(case)
    a, b, c = task.sample(gen(5)), task.sample(gen(5)), task.sample(gen(6))
    pa, pb, pc = a.params(), b.params(), c.params()
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert any(not torch.equal(pa[k], pc[k]) for k in pa if pa[k].std() > 0)
    with torch.no_grad():
        assert torch.equal(a.loss(pa, 7), b.loss(pb, 7))


@pytest.mark.parametrize("case", list(CASES))
def test_adam_lowers_the_test_loss(case: str) -> None:
    task = make(case)
    problem = task.sample(gen(0))
    params = as_parameters(problem)
    with torch.no_grad():
        before = float(problem.eval_loss(params))
    opt = torch.optim.Adam(params.values(), lr=2e-2)
    for step in range(60):
        opt.zero_grad()
        problem.loss(params, step).backward()
        opt.step()
    with torch.no_grad():
        after = float(problem.eval_loss(params))
    assert after < 0.9 * before, (before, after)


def test_sampling_leaves_the_global_rng_alone() -> None:
    state = torch.get_rng_state()
    for case in CASES:
        make(case).sample(gen(0))
    assert torch.equal(state, torch.get_rng_state())


# --------------------------------------------------------------------------- conv with norms, GELU


@pytest.mark.parametrize(
    "task",
    [
        ConvTask(channels=(4, 8), norm="batch", batch_size=16),
        ConvTask(channels=(4, 6), norm="group", activation="gelu", dtype=torch.float64),
        MLPTask(hidden=(12, 12), activation="gelu", dtype=torch.float64),
    ],
    ids=repr,
)
def test_functional_loss_equals_module_loss(task) -> None:
    """The functional forward (F.batch_norm / F.group_norm / F.gelu) matches the nn.Module
    built from nn.BatchNorm2d(track_running_stats=False) / nn.GroupNorm / nn.GELU."""
    problem = task.sample(gen(3))
    model = problem.model
    params = dict(model.named_parameters())
    tol = 1e-12 if task.dtype == torch.float64 else 1e-5
    for step in (0, 5):
        x, y = problem.batch(step)
        ref = F.cross_entropy(model(x.reshape(-1, 1, 8, 8)), y)
        torch.testing.assert_close(problem.loss(params, step), ref, rtol=tol, atol=tol)


def test_conv_norm_parameters_start_at_identity() -> None:
    problem = ConvTask(channels=(4, 8), norm="batch").sample(gen(0))
    p = problem.params()
    assert {k: tuple(v.shape) for k, v in p.items() if k.startswith("norms")} == {
        "norms.0.weight": (4,),
        "norms.0.bias": (4,),
        "norms.1.weight": (8,),
        "norms.1.bias": (8,),
    }
    assert torch.equal(p["norms.1.weight"], torch.ones(8))
    assert torch.equal(p["norms.1.bias"], torch.zeros(8))
    # the random weights are those of the same net without norms (norms draw nothing)
    plain = ConvTask(channels=(4, 8)).sample(gen(0)).params()
    assert all(torch.equal(plain[k], p[k]) for k in plain)


def test_group_norm_with_indivisible_channels_uses_one_group() -> None:
    task = ConvTask(channels=(6,), norm="group")
    problem = task.sample(gen(0))
    assert problem.model.norms[0].num_groups == 1


@pytest.mark.parametrize(
    "kwargs",
    [{"norm": "layer"}, {"activation": "swish"}],
)
def test_conv_rejects_unknown_options(kwargs) -> None:
    with pytest.raises(ValueError):
        ConvTask(**kwargs)


# --------------------------------------------------------------------------- autoencoder


def test_autoencoder_shapes_loss_and_split() -> None:
    task = AutoencoderTask(hidden=(32, 8, 32))
    problem = task.sample(gen(0))
    shapes = {k: tuple(v.shape) for k, v in problem.params().items()}
    assert shapes == {
        "net.0.weight": (32, 64),
        "net.0.bias": (32,),
        "net.2.weight": (8, 32),
        "net.2.bias": (8,),
        "net.4.weight": (32, 8),
        "net.4.bias": (32,),
        "net.6.weight": (64, 32),
        "net.6.bias": (64,),
    }
    x, y = problem.batch(3)
    assert x.shape == (128, 64) and torch.equal(x, y)
    # reference: the MSE of a hand-written forward with the same weights
    p = problem.params()
    h = x
    for i in (0, 2, 4, 6):
        h = h @ p[f"net.{i}.weight"].T + p[f"net.{i}.bias"]
        if i < 6:
            h = torch.relu(h)
    torch.testing.assert_close(problem.loss(p, 3), ((h - x) ** 2).mean())
    # eval_loss is over the 400 test digits, none of which is a training digit
    digits = load_digits()
    train = {tuple(r) for r in digits.x_train.flatten(1).tolist()}
    assert not any(tuple(r) in train for r in digits.x_test.flatten(1).tolist())
    with torch.no_grad():
        test = digits.x_test.flatten(1)
        expected = F.mse_loss(problem.model(test), test)
        torch.testing.assert_close(problem.eval_loss(p), expected)


def test_train_size_draws_a_subset_per_problem() -> None:
    task = AutoencoderTask(train_size=200, batch_size=50)
    a, b = task.sample(gen(0)), task.sample(gen(1))
    assert a.num_train == 200 and b.num_train == 200
    xa = {tuple(r) for r in a._x_train.tolist()}
    xb = {tuple(r) for r in b._x_train.tolist()}
    assert xa != xb
    all_train = {tuple(r) for r in load_digits().x_train.flatten(1).tolist()}
    assert xa <= all_train
    # every minibatch comes from the subset
    assert all(tuple(r) in xa for s in range(6) for r in a.batch(s)[0].tolist())


@pytest.mark.parametrize(
    "kwargs",
    [{"hidden": ()}, {"hidden": [0]}, {"train_size": 5000}, {"batch_size": 64, "train_size": 32}],
)
def test_autoencoder_rejects_bad_sizes(kwargs) -> None:
    with pytest.raises(ValueError):
        AutoencoderTask(**kwargs)


# --------------------------------------------------------------------------- transformer LM


def test_corpus_file_and_encoding() -> None:
    raw = resources.files("optizoo.tasks").joinpath("data", "pydoc_topics.txt.gz").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == (
        "8b77748f51650b8f1292a2121113c9a12b54e782489d1210f0aacf764f2501a5"
    )
    text = gzip.decompress(raw).decode("utf-8")
    assert 300_000 < len(text) < 600_000
    tokens = load_corpus()
    assert len(tokens) == len(text)
    # independent mapping, character by character
    sample = text[:2000]
    ref = [(ord(c) - 32) if 32 <= ord(c) <= 126 else (95 if c == "\n" else 96) for c in sample]
    assert tokens[:2000].tolist() == ref
    assert encode("A\n\té").tolist() == [33, 95, 96, 96]


def test_transformer_windows_and_split() -> None:
    task = TransformerLMTask(d_model=8, layers=1, heads=2, context=8, batch_size=4)
    problem = task.sample(gen(0))
    x, y = problem.batch(0)
    assert x.shape == (4, 8) and y.shape == (4, 8)
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one
    text = gzip.decompress(
        resources.files("optizoo.tasks").joinpath("data", "pydoc_topics.txt.gz").read_bytes()
    ).decode("utf-8")
    cut = int(len(text) * 0.9)
    tokens = encode(text)
    # test windows: the first 128 windows of 9 characters after the cut
    test = torch.from_numpy(tokens[cut : cut + 128 * 9].reshape(128, 9))
    assert torch.equal(problem._x_test, test[:, :-1]) and torch.equal(problem._y_test, test[:, 1:])
    assert int(problem.num_train) == cut // 9


def test_transformer_is_causal_and_matches_its_module() -> None:
    task = TransformerLMTask(d_model=8, layers=2, heads=2, context=8, batch_size=4)
    problem = task.sample(gen(1))
    params = problem.params()
    x, y = problem.batch(0)
    logits = problem.outputs(params, x)
    assert logits.shape == (4, 8, 97)
    changed = x.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 97  # the future must not change the past
    torch.testing.assert_close(problem.outputs(params, changed)[:, :5], logits[:, :5])
    assert not torch.allclose(problem.outputs(params, changed)[:, 5:], logits[:, 5:])
    ref = F.cross_entropy(problem.model(x).reshape(-1, 97), y.reshape(-1))
    torch.testing.assert_close(problem.loss(params, 0), ref)
    # an untrained model is near the uniform guess, log(97) nats
    with torch.no_grad():
        assert abs(float(problem.eval_loss(params)) - math.log(97)) < 2.0


def test_transformer_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="divisible"):
        TransformerLMTask(d_model=10, heads=4)
    with pytest.raises(ValueError, match="eval_windows"):
        TransformerLMTask(context=16, eval_windows=10**6)


# --------------------------------------------------------------------------- recurrent


def test_adding_problem_data() -> None:
    x, y = adding_problem(50, 10, seed=3)
    assert x.shape == (50, 10, 2) and y.shape == (50,)
    markers = x[:, :, 1]
    assert (markers.sum(1) == 2).all()
    assert (markers[:, :5].sum(1) == 1).all() and (markers[:, 5:].sum(1) == 1).all()
    np.testing.assert_allclose(y, (x[:, :, 0] * markers).sum(1))
    x2, _ = adding_problem(50, 10, seed=3)
    np.testing.assert_array_equal(x, x2)


def test_rnn_shapes_and_split() -> None:
    task = RNNTask(cell="gru", hidden=8, length=6, n_train=64, n_test=32, batch_size=16)
    problem = task.sample(gen(0))
    shapes = {k: tuple(v.shape) for k, v in problem.params().items()}
    assert shapes == {
        "rnn.weight_ih_l0": (24, 2),
        "rnn.weight_hh_l0": (24, 8),
        "rnn.bias_ih_l0": (24,),
        "rnn.bias_hh_l0": (24,),
        "head.weight": (1, 8),
        "head.bias": (1,),
    }
    bound = 8**-0.5
    assert float(problem.params()["rnn.weight_hh_l0"].abs().max()) <= bound
    x, y = problem.batch(0)
    assert x.shape == (16, 6, 2) and y.shape == (16,)
    ref_x, _ = adding_problem(96, 6, seed=0)
    train = {tuple(r) for r in ref_x[:64].reshape(64, -1).round(6).tolist()}
    test = {tuple(r) for r in ref_x[64:].reshape(32, -1).round(6).tolist()}
    assert not train & test
    assert problem.model.rnn.weight_hh_l0.shape == (24, 8)
    lstm = RNNTask(cell="lstm", hidden=8, length=6, n_train=64, n_test=32).sample(gen(0))
    assert tuple(lstm.params()["rnn.weight_hh_l0"].shape) == (32, 8)
    with pytest.raises(ValueError, match="cell"):
        RNNTask(cell="transformer")


# --------------------------------------------------------------------------- tabular


def test_wine_file_matches_a_csv_parse() -> None:
    raw = resources.files("optizoo.tasks").joinpath("data", "wine_data.csv.gz").read_bytes()
    rows = list(csv.reader(io.StringIO(gzip.decompress(raw).decode("ascii"))))
    assert rows[0][:2] == ["178", "13"]
    table = np.array(rows[1:], dtype=np.float64)
    x, y = load_wine()
    np.testing.assert_array_equal(x, table[:, :13])
    np.testing.assert_array_equal(y, table[:, 13].astype(int))
    assert np.bincount(y).tolist() == [59, 71, 48]


def test_wine_split_and_standardization() -> None:
    task = TabularTask("wine", hidden=(8,))
    problem = task.sample(gen(0))
    assert problem.num_train == 135 and problem._x_test.shape == (43, 13)
    xt = problem._x_train.double()
    torch.testing.assert_close(xt.mean(0), torch.zeros(13, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        xt.std(0, unbiased=False), torch.ones(13, dtype=torch.float64), atol=1e-5, rtol=0
    )
    x, y = load_wine()
    rows = np.flatnonzero(y == 0)
    assert 3 in rows and 0 in rows  # the 4th row of class 0 is a test row, the 1st is not
    mean, std = x[~_test_mask(y)].mean(0), x[~_test_mask(y)].std(0)
    np.testing.assert_allclose(
        problem._x_test.numpy()[0], ((x[rows[3]] - mean) / std).astype(np.float32), rtol=1e-5
    )
    full, batch = problem.batch(0), problem.batch(9)
    assert torch.equal(full[0], batch[0])  # full batch by default


def _test_mask(y: np.ndarray) -> np.ndarray:
    mask = np.zeros(len(y), dtype=bool)
    for c in range(3):
        rows = np.flatnonzero(y == c)
        mask[rows[3::4]] = True
    return mask


def test_friedman_closed_form_and_targets() -> None:
    x, y = friedman1(20, seed=1, noise=0.0)
    ref = [
        10 * math.sin(math.pi * r[0] * r[1]) + 20 * (r[2] - 0.5) ** 2 + 10 * r[3] + 5 * r[4]
        for r in x
    ]
    np.testing.assert_allclose(y, ref, rtol=1e-12)
    task = TabularTask("friedman", hidden=(8,), n_train=100, n_test=50, batch_size=10)
    problem = task.sample(gen(0))
    assert problem.num_train == 100 and problem._y_test.shape == (50,)
    assert abs(float(problem._y_train.mean())) < 1e-5
    assert abs(float(problem._y_train.std(unbiased=False)) - 1) < 1e-4
    other = TabularTask("friedman", hidden=(8,), n_train=100, n_test=50, data_seed=1)
    assert not torch.equal(other.sample(gen(0))._y_train, problem._y_train)


@pytest.mark.parametrize(
    "kwargs",
    [{"dataset": "iris"}, {"data_seed": -1}, {"n_train": 0}, {"batch_size": 1000}],
)
def test_tabular_rejects_bad_arguments(kwargs) -> None:
    with pytest.raises(ValueError):
        TabularTask(**kwargs)
