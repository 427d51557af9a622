"""Recipes (optizoo.meta.recipe): short versions of the shipped recipes run through
``train_recipe`` and ``optizoo train --config``, resume after an interruption, bad recipes."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from safetensors.torch import load_file

import optizoo
from optizoo.cli import main
from optizoo.errors import CheckpointError
from optizoo.meta import MetaConfig, MetaTrainer
from optizoo.meta.recipe import (
    Recipe,
    load_recipe,
    shipped_recipe_path,
    shipped_recipes,
    train_recipe,
)
from optizoo.zoo.format import read_metadata
from tests.helpers import ROOT

NAMES = ["lstm-mlp", "lstm-quadratic", "lstm-hierarchical", "lstm-hierarchical-val"]
META_STEPS = {
    "lstm-mlp": 150,
    "lstm-quadratic": 3000,
    "lstm-hierarchical": 500,
    "lstm-hierarchical-val": 1000,
}


pytestmark = pytest.mark.usefixtures("one_thread")  # bit-for-bit comparisons: one thread


def short(name: str, **stage: object) -> dict:
    """The shipped recipe ``name`` cut to 2 meta-steps of 2-step truncations per stage."""
    d = json.loads((ROOT / "configs" / "recipes" / f"{name}.json").read_text())
    d = copy.deepcopy(d)
    if "problems_per_step" in d.get("common", {}):
        d["common"]["problems_per_step"] = 2
    for s in d["stages"]:
        s.update(meta_steps=2, unroll=2, horizon=4, eval_problems=2, eval_every=1)
        s.update(stage)
    return d


def tensors(path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def assert_same_weights(a, b) -> None:
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k  # bit for bit


# ---------------------------------------------------------------------- the shipped recipes


def test_configs_recipes_are_the_packaged_recipes():
    in_checkout = sorted(p.stem for p in (ROOT / "configs" / "recipes").glob("*.json"))
    assert in_checkout == shipped_recipes() and set(NAMES) <= set(in_checkout)
    for name in in_checkout:
        packaged = shipped_recipe_path(name).read_bytes()
        assert (ROOT / "configs" / "recipes" / f"{name}.json").read_bytes() == packaged


@pytest.mark.parametrize("name", NAMES)
def test_each_shipped_file_records_its_recipe(name):
    """The shipped weight file names its recipe file, and the recipe rebuilds its rule."""
    path = ROOT / "optizoo" / "zoo" / "pretrained" / f"{name}.safetensors"
    meta = read_metadata(path)
    training = meta["optizoo.training"]
    assert training["recipe_file"] == f"configs/recipes/{name}.json"
    recipe = load_recipe(ROOT / training["recipe_file"])
    assert training["recipe"] == recipe.to_dict() or training["recipe"] == recipe.raw
    assert recipe.rule_name == meta["optizoo.rule"]
    assert recipe.build_rule().config() == meta["optizoo.config"]
    assert recipe.meta_steps == META_STEPS[name]


# ---------------------------------------------------------------------- short versions


@pytest.mark.parametrize("name", NAMES)
def test_a_short_version_of_each_recipe_runs_and_records_it(name, tmp_path):
    file = tmp_path / f"{name}.json"
    file.write_text(json.dumps(short(name)))
    recipe = Recipe.from_file(file)
    path = train_recipe(recipe, tmp_path / "run", progress=False)
    assert path == tmp_path / "run" / f"{name}.safetensors"
    rule = optizoo.load_rule(path)  # loadable by the public API
    assert rule.rule_name == recipe.rule_name
    assert rule.config() == recipe.build_rule().config()
    training = read_metadata(path)["optizoo.training"]
    assert training["recipe_file"] == str(file)
    assert training["recipe"] == json.loads(file.read_text())  # the full contents
    assert training["meta_steps"] == 2 * len(recipe.stages)
    assert len(training["stages"]) == len(recipe.stages)
    # the final rule is the last stage's best, as the stage's own best_rule.safetensors holds
    last = tmp_path / "run" / f"stage{len(recipe.stages) - 1}" / "best_rule.safetensors"
    assert_same_weights(path, last)
    assert json.loads((tmp_path / "run" / "recipe.json").read_text()) == recipe.to_dict()


@pytest.mark.parametrize("name", NAMES)
def test_a_short_version_of_each_recipe_through_the_cli(name, tmp_path):
    file = tmp_path / f"{name}.json"
    file.write_text(json.dumps(short(name)))
    out = tmp_path / "cli"
    assert main(["train", "--config", str(file), "--out", str(out), "--quiet"]) == 0
    # the same recipe through the library gives the same weights, bit for bit
    ref = train_recipe(Recipe.from_file(file), tmp_path / "lib", progress=False)
    assert_same_weights(out / f"{name}.safetensors", ref)
    assert read_metadata(out / f"{name}.safetensors")["optizoo.training"]["recipe_file"] == str(
        file
    )


def test_cli_seed_overrides_the_recipe_seed(tmp_path):
    file = tmp_path / "q.json"
    file.write_text(json.dumps(short("lstm-quadratic", meta_steps=1)))
    out = tmp_path / "s7"
    assert main(["train", "--config", str(file), "--out", str(out), "--seed", "7", "--quiet"]) == 0
    training = read_metadata(out / "q.safetensors")["optizoo.training"]
    assert training["seed"] == 7 and training["rule_seed"] == 7
    assert training["recipe"]["seed"] == 7 and training["stages"][0]["seed"] == 7
    # seed 7 starts from torch.manual_seed(7)'s weights: unlike seed 0's
    assert main(["train", "--config", str(file), "--out", str(tmp_path / "s0"), "--quiet"]) == 0
    a, b = tensors(out / "q.safetensors"), tensors(tmp_path / "s0" / "q.safetensors")
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_shipped_recipes_resolve_by_name_without_a_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here: the package's copy is used
    for spec in ("lstm-quadratic", "configs/recipes/lstm-quadratic.json"):
        recipe = load_recipe(spec)
        assert recipe.source == "configs/recipes/lstm-quadratic.json"
        assert recipe.name == "lstm-quadratic" and recipe.meta_steps == 3000
    with pytest.raises(ValueError, match="no shipped recipe"):
        load_recipe("configs/recipes/nope.json")
    assert main(["train", "--recipe", "nope", "--out", str(tmp_path / "o")]) == 2


def test_stages_start_from_the_previous_best_with_their_own_seed(tmp_path):
    d = short("lstm-quadratic")
    d["stages"] = [dict(d["stages"][0]), {**d["stages"][0], "meta_lr": 0.01}]
    path = train_recipe(d, tmp_path / "run", progress=False)
    training = read_metadata(path)["optizoo.training"]
    assert [s["seed"] for s in training["stages"]] == [0, 1000]
    assert training["stages"][1]["meta_optimizer"]["lr"] == 0.01
    # stage 1's first evaluation (meta-step 0) is of stage 0's best rule: same objective
    rows1 = [json.loads(x) for x in (tmp_path / "run" / "stage1" / "metrics.jsonl").open()]
    first1 = next(r for r in rows1 if r["kind"] == "eval")
    assert first1["meta_step"] == 0
    # stage 1's first evaluation is of stage 0's best rule on stage 1's held-out problems (seed
    # 1000): recomputed independently from stage 0's best_rule.safetensors
    rule = optizoo.load_rule(tmp_path / "run" / "stage0" / "best_rule.safetensors")
    options = {k: v for k, v in d["stages"][0].items() if k != "meta_steps"}
    ref = MetaTrainer(rule, "quadratic", seed=1000, verbose=False, **options)
    assert first1["objective"] == pytest.approx(ref.evaluate()["objective"], rel=1e-12)
    # and it differs from stage 0's held-out problems' value (the seeds differ)
    rows0 = [json.loads(x) for x in (tmp_path / "run" / "stage0" / "metrics.jsonl").open()]
    assert first1["objective"] not in [r["objective"] for r in rows0 if r["kind"] == "eval"]


# ---------------------------------------------------------------------- resume


class _Interrupt(Exception):
    pass


def _interrupting_step(monkeypatch, after: int) -> None:
    original = MetaTrainer.step
    calls = {"n": 0}

    def step(self):
        calls["n"] += 1
        if calls["n"] > after:
            raise _Interrupt
        return original(self)

    monkeypatch.setattr(MetaTrainer, "step", step)


@pytest.mark.parametrize("checkpoint_every", [1, 0])
def test_resume_after_an_interruption_gives_the_uninterrupted_result(
    tmp_path, monkeypatch, checkpoint_every
):
    """Interrupted in stage 1 (after stage 0 finished): resuming reloads stage 0 and continues
    stage 1 from its last checkpoint (or from its start without one), bit for bit."""
    d = short("lstm-mlp", meta_steps=3, checkpoint_every=checkpoint_every)
    d["stages"] = [d["stages"][0], {**d["stages"][0], "meta_lr": 0.001, "horizon": 2}]
    # the reference writes no checkpoints: checkpointing itself changes nothing either
    plain = copy.deepcopy(d)
    for s in plain["stages"]:
        s["checkpoint_every"] = 0
    ref = train_recipe(plain, tmp_path / "ref", progress=False)
    _interrupting_step(monkeypatch, after=5)  # 3 of stage 0, then 2 of stage 1
    with pytest.raises(_Interrupt):
        train_recipe(d, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "lstm-mlp.safetensors").exists()
    # without resume the run folder is refused, naming the way out
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match="resume"):
        train_recipe(d, tmp_path / "run", progress=False)
    path = train_recipe(d, tmp_path / "run", resume=True, progress=False)
    assert_same_weights(path, ref)
    rows = [json.loads(x) for x in (tmp_path / "run" / "stage1" / "metrics.jsonl").open()]
    assert [r["meta_step"] for r in rows if r["kind"] == "train"] == [1, 2, 3]


def test_resume_with_another_recipe_is_refused(tmp_path):
    d = short("lstm-quadratic", meta_steps=1)
    train_recipe(d, tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match="another recipe"):
        train_recipe({**d, "seed": 5}, tmp_path / "run", resume=True, progress=False)
    # a finished run resumes to the same file
    again = train_recipe(d, tmp_path / "run", resume=True, progress=False)
    assert again.is_file()


# ---------------------------------------------------------------------- the validation objective


def test_validation_objective_adds_the_validation_loss_to_the_training_loss():
    """meta_loss = a * validation + b * training loss, checked against a default-objective
    trainer started from the same weights on the same problems."""
    task_args = {
        "tasks": [{"task": "mlp", "args": {"hidden": [4], "batch_size": 16}}],
        "validation": 50,
    }
    common = dict(
        task_args=task_args, unroll=3, horizon=6, eval_problems=2, problems_per_step=2, seed=4
    )
    torch.manual_seed(0)
    rule = optizoo.rules.LSTMRule(hidden_size=4)
    plain = MetaTrainer(copy.deepcopy(rule), "mix", verbose=False, **common)
    both = MetaTrainer(
        copy.deepcopy(rule),
        "mix",
        verbose=False,
        meta_objective={"validation_weight": 2.0, "train_weight": 0.5},
        **common,
    )
    a, b = plain.step(), both.step()
    assert "validation_loss" not in a and math.isfinite(b["validation_loss"])
    assert b["meta_loss"] == pytest.approx(2.0 * b["validation_loss"] + 0.5 * a["meta_loss"])
    assert both.training_record()["meta_objective"] == {
        "validation_weight": 2.0,
        "train_weight": 0.5,
    }
    assert "meta_objective" not in plain.training_record()  # defaults: today's record


def test_validation_objective_needs_a_validation_split():
    trainer = MetaTrainer(
        optizoo.rules.LSTMRule(hidden_size=4),
        "quadratic",
        task_args={"dim": 3, "batch": 2},
        unroll=2,
        horizon=2,
        verbose=False,
        meta_objective={"validation_weight": 1.0, "train_weight": 0.0},
    )
    with pytest.raises(ValueError, match="eval_loss"):
        trainer.step()


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("objective", "match"),
    [
        ({"validation_weight": 1.0}, "missing"),
        ({"validation_weight": 1.0, "train_weight": 0.0, "x": 1}, "unknown"),
        ({"validation_weight": -1.0, "train_weight": 0.0}, ">= 0"),
        ({"validation_weight": float("nan"), "train_weight": 0.0}, "finite"),
        ({"validation_weight": 0, "train_weight": 0}, "both 0"),
        ("validation", "dict"),
    ],
)
def test_bad_meta_objectives_are_refused(objective, match):
    with pytest.raises((ValueError, TypeError), match=match):
        MetaConfig(meta_objective=objective)


def test_meta_config_defaults_and_rule_seed():
    cfg = MetaConfig()
    assert cfg.meta_objective is None and cfg.rule_seed is None and cfg.initial_rule_seed == 0
    assert MetaConfig(seed=3).initial_rule_seed == 3
    assert MetaConfig(seed=3, rule_seed=9).initial_rule_seed == 9
    with pytest.raises(ValueError, match="rule_seed"):
        MetaConfig(rule_seed=-1)
    # a checkpoint's config written before these fields existed still loads
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("meta_objective", "rule_seed")}
    assert MetaConfig.from_dict(old) == cfg


GOOD = short("lstm-quadratic", meta_steps=1)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"learning_rate": 1}, ValueError, "unknown recipe key"),
        ({"stages": []}, ValueError, "at least one stage"),
        ({"stages": [{"unroll": 2, "horizon": 4}]}, ValueError, "meta_steps"),
        ({"stages": [{"meta_steps": 1, "unrol": 2}]}, ValueError, "unknown key"),
        ({"stages": [{"meta_steps": 1, "seed": 2}]}, ValueError, "top level"),
        ({"common": {"task": "mlp"}}, ValueError, "top level"),
        ({"stages": [{"meta_steps": 1, "unroll": 9, "horizon": 4}]}, ValueError, "stage 0"),
        ({"stages": [{"meta_steps": -1}]}, ValueError, "meta_steps"),
        ({"task": {"nam": "quadratic"}}, ValueError, "unknown key"),
        ({"task": 3}, TypeError, "task"),
        ({"rule": [1]}, TypeError, "rule"),
        ({"seed": -2}, ValueError, "seed"),
        ({"meta_objective": {"validation_weight": 1}}, ValueError, "missing"),
        (
            {
                "common": {"meta_objective": None},
                "meta_objective": {"validation_weight": 1, "train_weight": 0},
            },
            ValueError,
            "both",
        ),
    ],
)
def test_bad_recipes_are_refused(change, error, match):
    with pytest.raises(error, match=match):
        Recipe.from_dict({**GOOD, **change})


def test_unknown_rule_or_task_is_refused_before_training(tmp_path):
    with pytest.raises((KeyError, ValueError), match="nope"):
        train_recipe({**GOOD, "rule_name": "nope"}, tmp_path / "a", progress=False)
    with pytest.raises((KeyError, ValueError), match="hidden_sizes"):
        train_recipe({**GOOD, "rule": {"hidden_sizes": 3}}, tmp_path / "b", progress=False)
    with pytest.raises((KeyError, ValueError), match="nope"):
        train_recipe({**GOOD, "task": {"name": "nope"}}, tmp_path / "c", progress=False)
    assert not any(tmp_path.rglob("stage*"))  # nothing ran


def test_bad_recipe_files_and_cli_options(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Recipe.from_file(bad)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(GOOD))
    out = str(tmp_path / "o")
    assert main(["train", "--config", str(good), "--out", out, "--unroll", "3"]) == 2
    assert "--unroll cannot go with a recipe" in capsys.readouterr().err
    assert main(["train", "--config", str(good)]) == 2
    assert "--out" in capsys.readouterr().err
    bad.write_text(json.dumps({**GOOD, "stages": [{"meta_steps": 1, "seed": 1}]}))
    assert main(["train", "--config", str(bad), "--out", out]) == 2
    assert "top level" in capsys.readouterr().err
