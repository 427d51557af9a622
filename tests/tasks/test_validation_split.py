"""Validation splits of every supervised task (``mix`` with ``validation=k`` or a fraction): the
problem trains on all but its last ``k`` training examples and its ``eval_loss`` is their loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from optizoo import tasks
from optizoo.tasks.supervised import ModuleProblem


def _problem(name: str, **args):
    return tasks.build(name, **args).sample(torch.Generator().manual_seed(3))


def test_a_module_problem_validates_on_its_last_training_rows():
    base = _problem("tabular", dataset="friedman", hidden=[4], batch_size=8)
    assert isinstance(base, ModuleProblem)
    n, k = base.num_train, 40
    split = base.validation_split(k)
    assert split.num_train == n - k
    params = base.params()
    x, y = base._x_train, base._y_train
    # by hand: the regression's mean squared error on the held-back rows
    out = functional_call(base._module, params, (x[n - k :],)).squeeze(-1)
    want = F.mse_loss(out, y[n - k :])
    assert float(split.eval_loss(params)) == pytest.approx(float(want), rel=1e-6)
    assert float(split.eval_loss(params)) != pytest.approx(float(base.eval_loss(params)))
    # its minibatches come only from the first n - k rows
    rows = {tuple(r.tolist()) for r in x[: n - k]}
    for step in range(12):
        xb, _ = split.batch(step)
        assert all(tuple(r.tolist()) in rows for r in xb)
    # same initial weights
    assert all(torch.equal(params[p], split.params()[p]) for p in params)


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("autoencoder", {"hidden": [8, 4, 8], "batch_size": 16, "train_size": 200}),
        ("transformer_lm", {"d_model": 8, "layers": 1, "heads": 2, "context": 4, "batch_size": 4}),
        ("rnn", {"cell": "gru", "hidden": 4, "length": 5, "batch_size": 8}),
        ("tabular", {"dataset": "wine", "hidden": [4]}),
        ("mlp", {"hidden": [4], "batch_size": 16}),
    ],
)
def test_mix_validation_fraction_applies_to_every_supervised_family(name, args):
    plain = tasks.build("mix", tasks=[{"task": name, "args": args}])
    split = tasks.build("mix", tasks=[{"task": name, "args": args}], validation=0.25)
    a = plain.sample(torch.Generator().manual_seed(5)).inner
    b = split.sample(torch.Generator().manual_seed(5)).inner
    k = round(0.25 * a.num_train)
    assert b.num_train == a.num_train - k
    with torch.no_grad():
        assert torch.isfinite(b.eval_loss(b.params()))
    assert split.config()["validation"] == 0.25


def test_bad_validation_splits_are_refused():
    base = _problem("tabular", dataset="friedman", hidden=[4], batch_size=8)
    with pytest.raises(ValueError, match="between 1 and"):
        base.validation_split(base.num_train)
    with pytest.raises(ValueError, match="batch size"):
        base.validation_split(base.num_train - 4)
    classifier = _problem("mlp", hidden=[4], batch_size=16)  # the same check for classifiers
    with pytest.raises(ValueError, match="batch size"):
        classifier.validation_split(classifier.num_train - 8)
    for bad in (1.5, -1, 0.0, True, "0.2"):
        with pytest.raises(ValueError, match="validation must be"):
            tasks.build("mix", tasks=[{"task": "quadratic"}], validation=bad)
    mix = tasks.build("mix", tasks=[{"task": "quadratic"}], validation=2)
    with pytest.raises(ValueError, match="supervised problems"):
        mix.sample(torch.Generator().manual_seed(0))
