"""The shipped optimizers: integrity, the default, and that they still do what their cards say."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import optizoo
from optizoo.compare import compare
from optizoo.zoo.registry import MANIFEST, default_name, sha256_file, shipped

ROOT = Path(__file__).resolve().parent.parent


def test_every_shipped_file_matches_the_manifest_and_loads():
    files = shipped()
    assert "lstm-quadratic" in files
    for name, path in files.items():
        assert sha256_file(path) in MANIFEST.read_text(), name
        meta = optizoo.zoo.read_metadata(path)
        assert meta["description"] and meta["license"]
        training = meta["optizoo.training"]
        for key in ("task", "unroll", "horizon", "meta_steps", "seed"):
            assert key in training, (name, key)
        # every shipped optimizer carries a measured comparison against tuned baselines
        assert "evaluation" in training or "generalization" in training, name
        optizoo.zoo.load_rule(name)


def test_default_weights_load_into_lstm_optimizer():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = optizoo.LSTMOptimizer([p])
    assert opt.weights_name == default_name()


def test_lstm_quadratic_beats_tuned_adam_on_fresh_quadratics():
    # Independent re-check of the card's claim on problems the card did not use (seed 7):
    # 30 held-out 10-dim quadratics, Adam's lr tuned on 8 separate problems, 100 steps.
    c = compare(
        "quadratic",
        ["lstm-quadratic", "adam"],
        steps=100,
        problems=30,
        tune_problems=8,
        task_args={"batch": 1},
        seed=7,
        verbose=False,
    )
    s = c.summary()
    assert s["lstm-quadratic"]["final"].mean < s["adam"]["final"].mean
    assert s["lstm-quadratic"]["sum"].mean < s["adam"]["sum"].mean


def test_thermometer_example_fits_with_sgd_and_lstm():
    spec = importlib.util.spec_from_file_location(
        "thermometer", ROOT / "examples" / "thermometer.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main()
    (ls_loss, ls_w, ls_b), *fits = results.values()
    a = np.stack([np.array(module.T_X) * 0.1, np.ones(len(module.T_X))], 1)
    # least squares is the independent reference; both optimizers get within 1% of its loss
    assert np.isclose(ls_loss, np.mean((a @ [ls_w, ls_b] - module.T_Y) ** 2))
    for loss, _, _ in fits:
        assert loss <= ls_loss * 1.01


@pytest.mark.parametrize("name", sorted(shipped()))
def test_shipped_weights_are_refused_when_altered(name, tmp_path, monkeypatch):
    import shutil

    from optizoo.errors import WeightsError
    from optizoo.zoo import registry

    d = tmp_path / "pretrained"
    shutil.copytree(registry.PRETRAINED_DIR, d)
    data = bytearray((d / f"{name}.safetensors").read_bytes())
    data[-1] ^= 0xFF  # flip bits in the last tensor byte: still a valid safetensors file
    (d / f"{name}.safetensors").write_bytes(bytes(data))
    monkeypatch.setattr(registry, "PRETRAINED_DIR", d)
    monkeypatch.setattr(registry, "MANIFEST", d / "MANIFEST.json")
    with pytest.raises(WeightsError, match="corrupt or altered"):
        optizoo.zoo.load_rule(name)
