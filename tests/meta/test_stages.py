"""Stages as part of MetaConfig (``MetaConfig.stages``, ``stage_configs``) and
``optizoo.meta.fit_stages``: validation, the per-stage configs, a 2-stage run against a plain
MetaTrainer loop, resume mid-stage-2, and ``optizoo train --config`` with a staged config."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

import optizoo
from optizoo.cli import main
from optizoo.errors import CheckpointError
from optizoo.meta import MetaConfig, MetaTrainer, fit_stages
from optizoo.meta.recipe import Recipe
from optizoo.zoo.format import read_metadata
from tests.helpers import ROOT

TASK_ARGS = {"dim": 3, "batch": 2}
RULE = {"hidden_size": 4}
#: two stages: a longer horizon first, then another meta-lr and horizon
STAGED = {
    "task": "quadratic",
    "task_args": TASK_ARGS,
    "eval_problems": 2,
    "eval_every": 1,
    "checkpoint_every": 1,
    "seed": 3,
    "stages": [
        {"unroll": 2, "horizon": 4, "meta_steps": 3},
        {"unroll": 3, "horizon": 3, "meta_steps": 3, "meta_lr": 0.01},
    ],
}


pytestmark = pytest.mark.usefixtures("one_thread")  # bit-for-bit comparisons: one thread


def fresh_rule(config: MetaConfig) -> optizoo.rules.LSTMRule:
    torch.manual_seed(config.initial_rule_seed)
    return optizoo.rules.LSTMRule(**RULE)


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bit for bit


# ---------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("stages", "error", "match"),
    [
        ([], ValueError, "at least one stage"),
        ("stage", TypeError, "list of stages"),
        ({"meta_steps": 1}, TypeError, "list of stages"),
        ([3], TypeError, "stage 0 must be a dict"),
        ([{"unroll": 2}], ValueError, "stage 0 needs 'meta_steps'"),
        ([{"meta_steps": 1}, {"meta_steps": -1}], ValueError, "stage 1: meta_steps"),
        ([{"meta_steps": True}], ValueError, "meta_steps must be a non-negative int"),
        ([{"meta_steps": 1.5}], ValueError, "meta_steps must be a non-negative int"),
        ([{"meta_steps": 1, "unrol": 2}], ValueError, r"unknown key\(s\) \['unrol'\]"),
        ([{"meta_steps": 1, "seed": 2}], ValueError, "top level"),
        ([{"meta_steps": 1, "task": "mlp"}], ValueError, "top level"),
        ([{"meta_steps": 1, "rule_seed": 1}], ValueError, "top level"),
        ([{"meta_steps": 1, "stages": []}], ValueError, "do not nest"),
        ([{"meta_steps": 1}, {"meta_steps": 1, "unroll": 9, "horizon": 4}], ValueError, "stage 1"),
        ([{"meta_steps": 1, "unroll": 200}], ValueError, "stage 0: unroll"),  # top horizon 100
        ([{"meta_steps": 1, "meta_lr": -1}], ValueError, "stage 0: meta_lr"),
        ([{"meta_steps": 1, "loss_weights": [1, 2]}], ValueError, "stage 0: loss_weights"),
        ([{"meta_steps": 1, "meta_objective": "x"}], TypeError, "stage 0: meta_objective"),
    ],
)
def test_bad_stages_are_refused(stages, error, match):
    with pytest.raises(error, match=match):
        MetaConfig(stages=stages)


def test_only_each_stages_merged_config_must_be_consistent():
    # unroll 50 > the top-level horizon 20, but every stage sets a longer horizon: accepted
    cfg = MetaConfig(unroll=50, horizon=20, stages=[{"horizon": 100, "meta_steps": 1}])
    assert [(c.unroll, c.horizon) for c in cfg.stage_configs()] == [(50, 100)]
    with pytest.raises(ValueError, match="unroll"):  # without stages the same values are refused
        MetaConfig(unroll=50, horizon=20)


def test_trainer_and_fit_stages_refuse_the_other_kind_of_config(tmp_path):
    staged = MetaConfig.from_dict(STAGED)
    with pytest.raises(ValueError, match="fit_stages"):
        MetaTrainer(fresh_rule(staged), "quadratic", config=staged, verbose=False)
    plain = staged.stage_configs()[0]
    with pytest.raises(ValueError, match="needs a MetaConfig with stages"):
        fit_stages(fresh_rule(plain), plain, tmp_path / "a")
    with pytest.raises(ValueError, match="no stages"):
        plain.stage_configs()
    with pytest.raises(ValueError, match="exclude"):
        fit_stages(fresh_rule(staged), staged, tmp_path / "b", resume=True, overwrite=True)
    with pytest.raises(TypeError, match="MetaConfig"):
        fit_stages(fresh_rule(staged), STAGED, tmp_path / "c")
    assert not any(tmp_path.iterdir())  # nothing ran


# ---------------------------------------------------------------------- the stage configs


def test_stage_configs_apply_the_overrides_and_the_seed_rule():
    cfg = MetaConfig.from_dict(STAGED)
    first, second = cfg.stage_configs()
    # written out independently: top-level fields, then the stage's; seed + 1000 * i
    common = dict(task="quadratic", task_args=TASK_ARGS, eval_problems=2, eval_every=1)
    common.update(checkpoint_every=1)
    assert first == MetaConfig(**common, unroll=2, horizon=4, seed=3, rule_seed=3)
    assert second == MetaConfig(**common, unroll=3, horizon=3, meta_lr=0.01, seed=1003)
    assert first.stages is None and second.rule_seed is None
    assert cfg.total_meta_steps == 6 and cfg.stage_meta_steps() == [3, 3]
    assert MetaConfig().total_meta_steps is None and MetaConfig().stage_meta_steps() == []
    # an explicit rule_seed is stage 0's
    assert MetaConfig.from_dict({**STAGED, "rule_seed": 9}).stage_configs()[0].rule_seed == 9
    # JSON round trip; a config written before stages existed still loads
    assert MetaConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    old = {k: v for k, v in first.to_dict().items() if k != "stages"}
    assert MetaConfig.from_dict(old) == first


def test_a_shipped_recipe_is_one_staged_meta_config():
    """lstm-mlp's recipe as a MetaConfig: its common fields, its stage, its top-level
    meta-objective, written out here from the JSON file by hand."""
    recipe = Recipe.from_file(ROOT / "configs" / "recipes" / "lstm-mlp.json")
    raw = json.loads((ROOT / "configs" / "recipes" / "lstm-mlp.json").read_text())
    stage = {k: v for k, v in raw["stages"][0].items() if k != "meta_steps"}
    expected = MetaConfig(
        task="mix",
        task_args=raw["task"]["args"],
        meta_objective={"validation_weight": 1.0, "train_weight": 0.0},
        seed=0,
        rule_seed=0,
        **raw["common"],
        **stage,
    )
    config = recipe.meta_config()
    assert config.stage_configs() == [expected] == [recipe.stage_config(0)]
    assert config.total_meta_steps == recipe.meta_steps == 150


# ---------------------------------------------------------------------- running the stages


def reference_run(config_dict: dict) -> dict[str, torch.Tensor]:
    """The stages run by hand: one plain MetaTrainer per stage (seed + 1000 * i), each started
    from the previous stage's best rule; the last stage's best weights."""
    top = {k: v for k, v in config_dict.items() if k not in ("stages", "task", "task_args")}
    torch.manual_seed(config_dict.get("seed", 0))
    rule = optizoo.rules.LSTMRule(**RULE)
    for i, stage in enumerate(config_dict["stages"]):
        options = {**top, **{k: v for k, v in stage.items() if k != "meta_steps"}}
        options.update(seed=config_dict["seed"] + 1000 * i, checkpoint_every=0)
        trainer = MetaTrainer(
            rule, "quadratic", task_args=TASK_ARGS, verbose=False, **options
        )  # fmt: skip
        trainer.fit(stage["meta_steps"])
        rule = trainer.best_rule()
    return rule.state_dict()


def test_two_stages_match_a_plain_trainer_loop(tmp_path):
    config = MetaConfig.from_dict(STAGED)
    result = fit_stages(fresh_rule(config), config, tmp_path / "run", verbose=False)
    assert_same_state(result.rule.state_dict(), reference_run(STAGED))
    training = result.training
    assert [s["seed"] for s in training["stages"]] == [3, 1003]
    assert [s["meta_steps"] for s in training["stages"]] == [3, 3]
    assert training["stages"][1]["meta_optimizer"]["lr"] == 0.01
    assert (training["seed"], training["rule_seed"], training["meta_steps"]) == (3, 3, 6)
    assert (training["unroll"], training["horizon"], training["task"]) == (3, 3, "quadratic")
    assert [r["meta_step"] for r in result.results] == [3, 3]
    # the run folder: the run's record and one MetaTrainer run per stage
    stored = json.loads((tmp_path / "run" / "stages.json").read_text())
    assert stored["rule"] == "lstm" and stored["config"]["stages"] == STAGED["stages"]
    assert (tmp_path / "run" / "stage1" / "best_rule.safetensors").is_file()
    path = result.save(tmp_path / "final.safetensors")
    assert_same_state(load_file(str(path)), result.rule.state_dict())
    assert read_metadata(path)["optizoo.training"]["stages"] == training["stages"]
    # an existing run folder is refused without resume, naming the way out
    with pytest.raises(CheckpointError, match="resume"):
        fit_stages(fresh_rule(config), config, tmp_path / "run", verbose=False)


class _Interrupt(Exception):
    pass


def _counting_step(monkeypatch, interrupt_after: int | None = None) -> dict[str, int]:
    original = MetaTrainer.step
    calls = {"n": 0}

    def step(self):
        calls["n"] += 1
        if interrupt_after is not None and calls["n"] > interrupt_after:
            raise _Interrupt
        return original(self)

    monkeypatch.setattr(MetaTrainer, "step", step)
    return calls


@pytest.mark.parametrize(("checkpoint_every", "rerun"), [(1, 1), (0, 3)])
def test_resume_mid_stage_two_gives_the_uninterrupted_result(
    tmp_path, monkeypatch, checkpoint_every, rerun
):
    """Killed after 3 meta-steps of stage 0 and 2 of stage 1: the resume does not rerun stage 0,
    continues stage 1 from its checkpoint (1 meta-step left) or, without one, from its start
    (3), and ends with the uninterrupted run's weights, bit for bit."""
    d = {**copy.deepcopy(STAGED), "checkpoint_every": checkpoint_every}
    config = MetaConfig.from_dict(d)
    plain = MetaConfig.from_dict({**d, "checkpoint_every": 0})
    ref = fit_stages(fresh_rule(plain), plain, tmp_path / "ref", verbose=False)
    _counting_step(monkeypatch, interrupt_after=5)
    with pytest.raises(_Interrupt):
        fit_stages(fresh_rule(config), config, tmp_path / "run", verbose=False)
    monkeypatch.undo()
    calls = _counting_step(monkeypatch)
    result = fit_stages(fresh_rule(config), config, tmp_path / "run", resume=True, verbose=False)
    assert calls["n"] == rerun
    assert_same_state(result.rule.state_dict(), ref.rule.state_dict())
    rows = [json.loads(x) for x in (tmp_path / "run" / "stage1" / "metrics.jsonl").open()]
    assert [r["meta_step"] for r in rows if r["kind"] == "train"] == [1, 2, 3]
    # a finished run resumes without training again, to the same weights
    calls["n"] = 0
    again = fit_stages(fresh_rule(config), config, tmp_path / "run", resume=True, verbose=False)
    assert calls["n"] == 0
    assert_same_state(again.rule.state_dict(), ref.rule.state_dict())


def test_resume_with_another_config_or_rule_is_refused(tmp_path):
    config = MetaConfig.from_dict({**STAGED, "stages": [{"meta_steps": 1, "unroll": 2}]})
    fit_stages(fresh_rule(config), config, tmp_path / "run", verbose=False)
    other = MetaConfig.from_dict({**config.to_dict(), "meta_lr": 0.01})
    with pytest.raises(CheckpointError, match=r"another config \(differs in \['config'\]\)"):
        fit_stages(fresh_rule(other), other, tmp_path / "run", resume=True, verbose=False)
    torch.manual_seed(3)
    wider = optizoo.rules.LSTMRule(hidden_size=5)
    with pytest.raises(CheckpointError, match="rule_config"):
        fit_stages(wider, config, tmp_path / "run", resume=True, verbose=False)
    # a MetaTrainer run's folder is not a staged run's
    MetaTrainer(
        fresh_rule(config), config=config.stage_configs()[0], out_dir=tmp_path / "plain",
        verbose=False,
    ).fit(1)  # fmt: skip
    with pytest.raises(CheckpointError, match="MetaTrainer run"):
        fit_stages(fresh_rule(config), config, tmp_path / "plain", resume=True, verbose=False)


# ---------------------------------------------------------------------- optizoo train --config


def _config_file(tmp_path, **changes) -> str:
    path = tmp_path / "staged.json"
    path.write_text(json.dumps({**STAGED, "rule": "lstm", "rule_config": RULE, **changes}))
    return str(path)


def test_cli_runs_a_staged_config_and_resumes_it(tmp_path, monkeypatch):
    file = _config_file(tmp_path)
    out = tmp_path / "cli"
    _counting_step(monkeypatch, interrupt_after=4)
    with pytest.raises(_Interrupt):
        main(["train", "--config", file, "--out", str(out), "--quiet"])
    monkeypatch.undo()
    assert main(["train", "--config", file, "--out", str(out), "--quiet"]) == 2  # held: refused
    assert main(["train", "--config", file, "--out", str(out), "--resume", "--quiet"]) == 0
    weights = load_file(str(out / "best_rule.safetensors"))
    assert_same_state(weights, reference_run(STAGED))  # the same as uninterrupted, bit for bit
    training = read_metadata(out / "best_rule.safetensors")["optizoo.training"]
    assert [s["seed"] for s in training["stages"]] == [3, 1003] and training["meta_steps"] == 6


def test_cli_seed_and_flags_with_a_staged_config(tmp_path, capsys):
    short = {"stages": [{"unroll": 2, "horizon": 2, "meta_steps": 1}]}
    file = _config_file(tmp_path, **short)
    out = tmp_path / "s7"
    assert main(["train", "--config", file, "--out", str(out), "--seed", "7", "--quiet"]) == 0
    training = read_metadata(out / "best_rule.safetensors")["optizoo.training"]
    assert training["seed"] == 7 and training["rule_seed"] == 7
    assert training["stages"][0]["seed"] == 7
    refused = {
        ("--meta-steps", "3"): "fixes the meta-steps",
        ("--unroll", "3"): "--unroll would be overridden by the stages",
        ("--meta-steps", "3", "--resume", "--overwrite"): "fixes the meta-steps",
    }
    for flags, message in refused.items():
        capsys.readouterr()
        assert main(["train", "--config", file, "--out", str(tmp_path / "x"), *flags]) == 2
        assert message in capsys.readouterr().err
    assert main(["train", "--config", file]) == 2
    assert "--out" in capsys.readouterr().err
    bad = _config_file(tmp_path, stages=[{"meta_steps": 1, "seed": 1}])
    assert main(["train", "--config", bad, "--out", str(tmp_path / "y")]) == 2
    assert "top level" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
