"""The experiment recipes (configs/*.json, run by scripts/train_lstm_generalist.py, a thin wrapper
over optizoo.meta.recipe) are valid recipes; the wrapper runs one end to end."""

from __future__ import annotations

import json

import pytest
import torch

from optizoo.meta import MetaConfig
from optizoo.zoo.format import read_metadata
from tests.helpers import ROOT, load_script_module

script = load_script_module("train_lstm_generalist")

TINY = {
    "seed": 3,
    "rule": {"parameterization": "nominal", "hidden_size": 4, "weight_decay": 0.01,
             "features": {"progress": [10]}},
    "task": {"name": "mix", "args": {
        "tasks": [{"task": "mlp", "args": {"hidden": [4], "batch_size": 16}}],
        "rescale": [0.5, 2.0], "validation": 50}},
    "common": {"eval_problems": 2, "eval_every": 1, "problems_per_step": 2,
               "checkpoint_every": 0, "second_order": True, "scalar_meta_lr": 0.05},
    "stages": [{"unroll": 3, "horizon": 6, "meta_steps": 2, "meta_lr": 0.01},
               {"unroll": 4, "horizon": 4, "meta_steps": 1, "meta_lr": 0.005}],
    "meta_objective": {"validation_weight": 1.0, "train_weight": 0.0},
}  # fmt: skip


@pytest.mark.parametrize(
    "name",
    [
        "generalist.json",
        "generalist_curriculum.json",
        "generalist_h100.json",
        "experiments/hierarchical_a.json",
        "experiments/hierarchical_b.json",
    ],
)
def test_experiment_recipes_are_valid(name):
    recipe, evaluate = script.load_config(ROOT / "configs" / name)
    recipe.check()
    for i in range(len(recipe.stages)):
        assert isinstance(recipe.stage_config(i), MetaConfig)
    assert evaluate is None or isinstance(evaluate, dict)


def test_the_wrapper_runs_a_two_stage_recipe_with_the_validation_objective(tmp_path):
    torch.set_num_threads(1)
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    assert script.main([str(cfg), "--out", str(tmp_path / "run"), "--no-evaluate"]) == 0
    training = read_metadata(tmp_path / "run" / "tiny.safetensors")["optizoo.training"]
    assert [s["horizon"] for s in training["stages"]] == [6, 4]
    assert training["horizon"] == 4 and training["meta_steps"] == 3 and training["seed"] == 3
    assert training["stages"][0]["meta_optimizer"]["scalar_lr"] == 0.05
    assert training["recipe_file"] == str(cfg) and training["recipe"] == TINY
    for i in (0, 1):
        rows = [
            json.loads(line) for line in (tmp_path / "run" / f"stage{i}" / "metrics.jsonl").open()
        ]
        train = [r for r in rows if r["kind"] == "train"]
        # the meta-loss is the validation loss (train_weight 0) at every truncation
        assert train and all(r["meta_loss"] == r["validation_loss"] for r in train)


def test_bad_recipes_are_refused(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"rule": {}, "task": {"name": "mix"}, "stages": []}))
    with pytest.raises(ValueError, match="at least one stage"):
        script.load_config(path)
    path.write_text(json.dumps({"rule": {}, "stages": [{"meta_steps": 1}]}))
    with pytest.raises(ValueError, match="'task'"):
        script.load_config(path)
