"""The generalist recipe (scripts/train_lstm_generalist.py + configs/*.json) runs end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch

from optizoo.meta import MetaConfig
from optizoo.rules import LSTMRule
from tests.helpers import ROOT, load_script_module

recipe = load_script_module("train_lstm_generalist")

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


@pytest.mark.parametrize("name", ["generalist.json", "generalist_h100.json"])
def test_shipped_recipes_are_valid(name):
    cfg = recipe.load_config(ROOT / "configs" / name)
    LSTMRule(**cfg["rule"])
    for stage in cfg["stages"]:
        stage = {k: v for k, v in stage.items() if k != "meta_steps"}
        MetaConfig.from_dict({**cfg["common"], **stage})


def test_a_two_stage_recipe_runs_with_the_validation_objective(tmp_path):
    torch.set_num_threads(1)
    rule, training = recipe.run(TINY, tmp_path, verbose=False)
    assert isinstance(rule, LSTMRule) and rule.config()["weight_decay"] == 0.01
    assert [s["horizon"] for s in training["stages"]] == [6, 4]
    assert training["horizon"] == 4 and training["meta_steps"] == 3 and training["seed"] == 3
    assert training["stages"][0]["meta_optimizer"]["scalar_lr"] == 0.05
    for i in (0, 1):
        rows = [json.loads(line) for line in (tmp_path / f"stage{i}" / "metrics.jsonl").open()]
        train = [r for r in rows if r["kind"] == "train"]
        evals = [r for r in rows if r["kind"] == "eval"]
        # the meta-loss is the validation loss (train_weight 0), finite, at every truncation
        assert train and all(r["meta_loss"] == r["validation_loss"] for r in train)
        assert all(math.isfinite(r["meta_loss"]) for r in train)
        assert evals and all(math.isfinite(r["objective"]) for r in evals)
    # stage 0's 6-step episodes are 2 truncations of 3 steps, each ending on a validation loss
    rows = [json.loads(line) for line in (tmp_path / "stage0" / "metrics.jsonl").open()]
    assert [r["truncation"] for r in rows if r["kind"] == "train"] == [0, 1]


def test_bad_recipes_are_refused(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"rule": {}, "task": {"name": "mix"}, "stages": []}))
    with pytest.raises(ValueError, match="at least one stage"):
        recipe.load_config(path)
    path.write_text(json.dumps({"rule": {}, "stages": [{}]}))
    with pytest.raises(ValueError, match="'task'"):
        recipe.load_config(path)
