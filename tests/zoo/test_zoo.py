"""The zoo's tooling: shipped-file manifest, list/info CLI, plugin-shipped weights, model cards
and publishing a meta-training run.

Independent references used here:
- sha256 digests recomputed with ``hashlib`` over the file bytes;
- tensor shapes from the LSTM's closed form (layer 0: ``[4h, k + h]``, k = 2 log-and-sign features);
- the published comparison numbers recomputed by a second implementation of the protocol: plain
  ``torch.optim.Adam`` / ``optizoo.LSTMOptimizer`` loops over the held-out problems whose seeds
  ``optizoo.compare.problem_seeds`` gives, and the 95% half-width from the Student t quantile for
  3 degrees of freedom (3.18244630528371, tables / scipy.stats.t.ppf(0.975, 3)).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import optizoo
from optizoo import cli, plugins
from optizoo.compare.stats import Interval, format_interval
from optizoo.errors import WeightsError
from optizoo.publish.card import model_card, where_it_loses
from optizoo.rules import Adam, LSTMRule
from optizoo.zoo import manifest, registry

ROOT = Path(__file__).resolve().parents[2]
T_975_DF3 = 3.18244630528371  # Student t quantile, 0.975, 3 degrees of freedom


pytestmark = pytest.mark.usefixtures("fresh_plugins")


@pytest.fixture
def shipped_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty shipped ``pretrained/`` folder that the registry uses instead of the package's."""
    d = tmp_path / "pretrained"
    d.mkdir()
    monkeypatch.setattr(registry, "PRETRAINED_DIR", d)
    monkeypatch.setattr(registry, "MANIFEST", d / "MANIFEST.json")
    monkeypatch.setattr(registry, "DEFAULT_NAME_FILE", d / "DEFAULT")
    plugins.reset()  # the shipped files are registered through the plugin host
    return d


def tiny_lstm(seed: int = 0) -> LSTMRule:
    torch.manual_seed(seed)
    return LSTMRule(hidden_size=4, num_layers=1)


def save_tiny(path: Path, seed: int = 0, **kw) -> tuple[LSTMRule, Path]:
    rule = tiny_lstm(seed)
    kw.setdefault("training", {"task": "quadratic", "tasks": ["quadratic"], "horizon": 100})
    kw.setdefault("description", f"tiny test LSTM {seed}")
    return rule, optizoo.save_rule(rule, path, **kw)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = cli.main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


# --------------------------------------------------------------------------- shipped folder


def test_list_pretrained_and_default_from_a_temporary_shipped_dir(tmp_path, shipped_dir):
    rule, src = save_tiny(tmp_path / "src" / "a.safetensors")
    adam = Adam(lr=0.0123)
    adam_src = optizoo.save_rule(adam, tmp_path / "src" / "b.safetensors", description="an adam")
    manifest.add_to_shipped(src, "tiny-a", default=True)
    manifest.add_to_shipped(adam_src, "adam-b")

    entries = json.loads((shipped_dir / "MANIFEST.json").read_text())
    assert entries == {
        "tiny-a.safetensors": hashlib.sha256(src.read_bytes()).hexdigest(),
        "adam-b.safetensors": hashlib.sha256(adam_src.read_bytes()).hexdigest(),
    }
    assert (shipped_dir / "DEFAULT").read_text().strip() == "tiny-a"
    listed = {e["name"]: e for e in optizoo.list_pretrained()}
    assert listed["tiny-a"]["source"] == "optizoo"
    assert listed["tiny-a"]["description"] == "tiny test LSTM 0"
    assert listed["tiny-a"]["trained_on"] == ["quadratic"]
    assert listed["adam-b"]["rule"] == "adam" and listed["adam-b"]["description"] == "an adam"
    assert "lstm-quadratic" not in listed  # the package's own folder is not consulted

    opt = optizoo.LSTMOptimizer([torch.nn.Parameter(torch.zeros(3))])  # weights="default"
    assert opt.weights_name == "tiny-a" and same_weights(opt.rule, rule)
    loaded = optizoo.load_rule("adam-b")
    assert isinstance(loaded, Adam) and float(loaded.lr.detach()) == pytest.approx(0.0123)
    assert manifest.verify() == []


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_altered_shipped_file_is_refused(tmp_path, shipped_dir, capsys, damage):
    _, src = save_tiny(tmp_path / "a.safetensors")
    shipped = manifest.add_to_shipped(src, "tiny-a")
    data = bytearray(shipped.read_bytes())
    if damage == "flip":
        data[-1] ^= 0xFF  # still a valid safetensors file, only the sha256 tells
    else:
        data = data[:-7]
    shipped.write_bytes(bytes(data))

    with pytest.raises(WeightsError, match="corrupt or altered"):
        optizoo.zoo.load_rule("tiny-a")
    with pytest.raises(WeightsError, match="corrupt or altered"):
        optizoo.LSTMOptimizer([torch.nn.Parameter(torch.zeros(2))], weights="tiny-a")
    problems = manifest.verify()
    assert len(problems) == 1 and "does not match" in problems[0]
    rc, out, err = run_cli(["info", "tiny-a"], capsys)
    assert rc == 1 and "DOES NOT match" in out and "refuses" in err
    assert hashlib.sha256(bytes(data)).hexdigest() in out


def test_manifest_add_remove_and_verify_catch_mistakes(tmp_path, shipped_dir, capsys):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(WeightsError, match="not an optizoo weight file"):
        manifest.add_to_shipped(foreign, "foreign")
    assert not (shipped_dir / "foreign.safetensors").exists()

    _, a = save_tiny(tmp_path / "a.safetensors", seed=1)
    _, b = save_tiny(tmp_path / "b.safetensors", seed=2)
    manifest.add_to_shipped(a, "tiny", default=True)
    with pytest.raises(FileExistsError, match="overwrite"):
        manifest.add_to_shipped(b, "tiny")
    manifest.add_to_shipped(b, "tiny", overwrite=True)
    assert (shipped_dir / "tiny.safetensors").read_bytes() == b.read_bytes()
    with pytest.raises(ValueError, match="invalid name"):
        manifest.add_to_shipped(b, "no spaces please")
    with pytest.raises(ValueError, match="default"):
        manifest.remove_from_shipped("tiny")
    assert not list(shipped_dir.glob(".*"))  # atomic writes leave no temp files

    # a file dropped in without the manifest, and a DEFAULT naming nothing
    (shipped_dir / "stray.safetensors").write_bytes(a.read_bytes())
    (shipped_dir / "DEFAULT").write_text("gone\n")
    problems = manifest.verify()
    assert any("stray.safetensors" in p and "not in MANIFEST" in p for p in problems)
    assert any("DEFAULT names 'gone'" in p for p in problems)
    assert manifest.main(["verify"]) == 1
    assert "problem:" in capsys.readouterr().out


def test_the_package_shipped_folder_verifies():
    assert manifest.verify() == []


# --------------------------------------------------------------------------- CLI


def test_info_prints_metadata_sha256_and_tensor_shapes(tmp_path, capsys):
    rule, path = save_tiny(
        tmp_path / "mine.safetensors",
        training={"task": "quadratic", "unroll": 7, "horizon": 30},
        license="Apache-2.0",
    )
    rc, out, _ = run_cli(["info", str(path)], capsys)
    assert rc == 0
    assert hashlib.sha256(path.read_bytes()).hexdigest() in out
    assert "tiny test LSTM 0" in out and "Apache-2.0" in out and "rule:         lstm" in out
    assert '"unroll": 7' not in out and "unroll: 7" in out
    # LSTM closed form with h=4, k=2 inputs: gates [4h, k+h] = [16, 6], biases [16], head [1, 4]
    assert "weights.0    F32   [16, 6]" in out
    assert "head_weight  F32   [1, 4]" in out
    assert "no comparison against tuned baselines" in out  # honest about a missing record

    rc, out, _ = run_cli(["info", str(path), "--json"], capsys)
    info = json.loads(out)
    shapes = {k: info["tensors"][k]["shape"] for k in info["tensors"]}
    assert shapes == {k: list(v.shape) for k, v in rule.state_dict().items()}
    assert info["parameters"] == sum(v.numel() for v in rule.state_dict().values())

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    rc, _, err = run_cli(["info", str(foreign)], capsys)
    assert rc == 1 and "not an optizoo weight file" in err
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:-5])
    rc, _, err = run_cli(["info", str(truncated)], capsys)
    assert rc == 1 and "truncated or corrupt" in err
    rc, _, err = run_cli(["info", str(tmp_path / "missing.safetensors")], capsys)
    assert rc == 2 and "no pretrained optimizer named" in err


def test_list_shows_pretrained_tasks_preprocessors_and_rules(capsys):
    rc, out, _ = run_cli(["list"], capsys)
    assert rc == 0
    sections = out.split("\n\n")
    assert sections[0].startswith("pretrained optimizers:")
    from optizoo.zoo.registry import default_name

    assert f"{default_name()} [default]" in sections[0]
    assert "lstm-quadratic" in sections[0] and "trained on quadratic" in sections[0]
    assert "tasks (optimizees):" in out and "  quadratic " in out and "  mlp " in out
    assert "log_sign" in out and "2 feature(s)" in out and "identity" in out
    assert "update rules:" in out and "  adam " in out
    rc, out, _ = run_cli(["list", "tasks", "--json"], capsys)
    data = json.loads(out)
    assert set(data) == {"tasks", "errors"}
    assert {"quadratic", "linreg", "mlp", "conv"} <= {r["name"] for r in data["tasks"]}
    assert run_cli(["list", "bogus"], capsys)[0] == 2


def test_plugin_ships_weights_by_name(tmp_path, capsys):
    rule, path = save_tiny(tmp_path / "w.safetensors", seed=3, description="from a plugin")

    class WeightsPlugin:
        @optizoo.hookimpl
        def optizoo_pretrained(self):
            return {"my-opt": str(path)}

    with plugins.registered(WeightsPlugin(), name="my-plugin", dist="my-dist", version="1.0"):
        listed = {e["name"]: e for e in optizoo.list_pretrained()}
        assert listed["my-opt"]["source"] == "my-dist"
        assert listed["my-opt"]["description"] == "from a plugin"
        opt = optizoo.LSTMOptimizer([torch.nn.Parameter(torch.ones(4))], weights="my-opt")
        assert opt.weights_name == "my-opt" and same_weights(opt.rule, rule)
        rc, out, _ = run_cli(["list", "pretrained"], capsys)
        assert rc == 0 and "my-opt" in out and "(my-dist)" in out
        rc, out, _ = run_cli(["info", "my-opt"], capsys)
        assert rc == 0 and "source:       my-dist" in out
    with pytest.raises(WeightsError, match="no pretrained optimizer named 'my-opt'"):
        optizoo.LSTMOptimizer([torch.nn.Parameter(torch.ones(4))], weights="my-opt")


# --------------------------------------------------------------------------- cards


def iv(mean: float, hw: float, n: int = 10, bad: int = 0) -> dict:
    return Interval(mean, hw, n, 0.95, bad).to_dict()


def record(learned: dict, adam: dict, diff: dict | None = None, steps: int = 200) -> dict:
    adam_entry = {"lr": 0.01, "tuned": True, "final_loss": adam}
    if diff is not None:
        adam_entry["learned_minus_this"] = {"final_loss": diff}
    return {
        "task": "quadratic",
        "horizon": 100,
        "evaluation": {
            "task": "quadratic",
            "held_out_problems": 10,
            "learned": "mine",
            f"at_{steps}_steps_tuned_for_final": {
                "mine": {"lr": 1.0, "tuned": False, "final_loss": learned},
                "adam": adam_entry,
            },
        },
    }


def card(training: dict) -> str:
    meta = {
        "optizoo.format": "1",
        "optizoo.rule": "lstm",
        "optizoo.config": {"hidden_size": 20},
        "optizoo.training": training,
        "optizoo.versions": {"optizoo": "0"},
        "license": "MIT",
        "description": "d",
    }
    return model_card(meta, name="X", sha256="ab" * 32, figure="X.png")


def test_card_states_a_loss_in_words_with_the_numbers():
    text = card(record(iv(0.5, 0.1), iv(0.2, 0.05), diff=iv(0.3, 0.08)))
    section = text.split("## Where it loses")[1]
    assert (
        "After 200 steps (baselines' learning rates tuned for final loss), tuned adam (lr 0.01) "
        "has a lower mean than X in final loss, 0.2 ± 0.05 against 0.5 ± 0.1 (paired "
        "difference X − adam: +0.3 ± 0.08, significant at 95%)."
    ) in section
    assert "| **X** | 1 (as trained) | 0.5 ± 0.1 |" in text  # the learned row leads the table
    assert "![Loss curves of X and the baselines](X.png)" in text
    assert "In every recorded comparison" not in text


def test_card_says_when_a_loss_is_not_significant_and_when_it_wins():
    loses = card(record(iv(0.5, 0.3), iv(0.45, 0.3), diff=iv(0.05, 0.2)))
    assert "not significant at 95%: the interval includes 0" in loses
    wins = card(record(iv(0.1, 0.01), iv(0.2, 0.05), diff=iv(-0.1, 0.03)))
    assert "has a lower mean" not in wins
    assert "In every recorded comparison (task `quadratic`) the mean of X is lower" in wins
    # only measured up to the horizon: the card says the rest is unknown
    short = card(record(iv(0.1, 0.01), iv(0.2, 0.05), steps=100))
    assert "behaviour past the 100-step training horizon is unknown" in short


def test_card_without_record_divergence_and_heldout_tasks():
    bare = card({"task": "quadratic"})
    assert "no evidence that it beats a hand-designed optimizer" in bare
    diverged = where_it_loses(record(iv(math.inf, math.nan, bad=3), iv(0.2, 0.05)), "X")
    assert any("X diverged (non-finite final loss) on 3 of 10" in s for s in diverged)
    gen = {
        "task": "quadratic",
        "horizon": 100,
        "generalization": {
            "rows": [
                {
                    "task": "mlp-20-sigmoid",
                    "multiple": 2,
                    "steps": 200,
                    "optimizer": iv(0.9, 0.1),
                    "adam": iv(0.4, 0.1),
                    "difference": iv(0.5, 0.1),
                    "adam_lr": 0.003,
                    "verdict": "worse",
                }
            ]
        },
    }
    sentences = where_it_loses(gen, "X")
    assert any(
        "On held-out task `mlp-20-sigmoid` after 200 steps (2× the training horizon): tuned "
        "Adam reaches a lower mean test loss than X: 0.4 ± 0.1 against 0.9 ± 0.1"
        in s
        and "significant" in s
        for s in sentences
    )
    assert "| mlp-20-sigmoid | 200 (2×) |" in card(gen)


# --------------------------------------------------------------------------- publishing


def final_losses(make_opt, seeds: list[int], task_args: dict, steps: int) -> list[float]:
    """Second implementation of compare's protocol: final loss per held-out problem."""
    task = optizoo.tasks.build("quadratic", **task_args)
    out = []
    for s in seeds:
        problem = task.sample(torch.Generator().manual_seed(s))
        params = {k: torch.nn.Parameter(v.detach().clone()) for k, v in problem.params().items()}
        opt = make_opt(list(params.values()))
        for t in range(steps):
            opt.zero_grad()
            problem.loss(params, t).backward()
            opt.step()
        with torch.no_grad():
            out.append(float(problem.loss(params, steps)) / problem.num_instances)
    return out


def test_publish_a_real_meta_training_run(tmp_path, capsys):
    from optizoo.compare import problem_seeds
    from optizoo.meta import MetaTrainer

    task_args = {"dim": 5, "batch": 4}
    torch.manual_seed(0)
    trainer = MetaTrainer(
        LSTMRule(), "quadratic", task_args=task_args, out_dir=tmp_path / "run", unroll=5,
        horizon=10, eval_problems=2, eval_every=1, meta_lr=1e-2, verbose=False,
    )  # fmt: skip
    trainer.fit(2)
    dist = tmp_path / "dist"
    rc, out, err = run_cli(
        ["publish", str(tmp_path / "run"), "--name", "tiny-lstm", "--out", str(dist),
         "--problems", "4", "--tune-problems", "2", "--grid", "0.001,0.01,0.1,1", "--quiet"],
        capsys,
    )  # fmt: skip
    assert rc == 0, err
    names = sorted(p.name for p in dist.iterdir())
    assert names == [  # and nothing else: no temporary files or folders left behind
        "tiny-lstm-meta-training.png",
        "tiny-lstm.md",
        "tiny-lstm.png",
        "tiny-lstm.safetensors",
    ]
    weights = dist / "tiny-lstm.safetensors"
    assert str(weights) in out

    # the training record of the run
    meta = optizoo.zoo.read_metadata(weights)
    training = meta["optizoo.training"]
    assert training["task"] == "quadratic" and training["task_args"] == task_args
    assert (training["unroll"], training["horizon"], training["seed"]) == (5, 10, 0)
    assert training["meta_steps"] == trainer.best_step
    assert training["meta_optimizer"]["lr"] == pytest.approx(1e-2)
    assert training["run"]["meta_steps_total"] == 2 and training["run"]["evaluations"] == 3

    # the metrics: recomputed by plain loops on the same held-out problems
    evaluation = training["evaluation"]
    assert (evaluation["steps"], evaluation["tune_steps"]) == (20, 10)  # 2 × horizon, horizon
    block = evaluation["at_20_steps_tuned_for_final"]
    assert set(block) == {"tiny-lstm", "adam", "rmsprop", "sgd"}
    assert all(block[b]["tuned"] for b in ("adam", "rmsprop", "sgd"))
    seeds = problem_seeds(0, 4, "eval")
    adam_lr = block["adam"]["lr"]
    assert adam_lr in (0.001, 0.01, 0.1, 1.0)
    adam = final_losses(lambda p: torch.optim.Adam(p, lr=adam_lr), seeds, task_args, 20)
    mine = final_losses(
        lambda p: optizoo.LSTMOptimizer(p, weights=str(weights)), seeds, task_args, 20
    )
    rec_adam, rec_mine = block["adam"]["final_loss"], block["tiny-lstm"]["final_loss"]
    assert rec_adam["mean"] == pytest.approx(sum(adam) / 4, rel=1e-6)
    assert rec_mine["mean"] == pytest.approx(sum(mine) / 4, rel=1e-6)
    sd = torch.tensor(adam, dtype=torch.float64).std().item()
    assert rec_adam["half_width"] == pytest.approx(T_975_DF3 * sd / 2, rel=1e-6)
    diff = block["adam"]["learned_minus_this"]["final_loss"]["mean"]
    assert diff == pytest.approx(sum(mine) / 4 - sum(adam) / 4, rel=1e-6)

    # loads by path and is the run's best rule
    opt = optizoo.LSTMOptimizer([torch.nn.Parameter(torch.zeros(3))], weights=str(weights))
    assert same_weights(opt.rule, optizoo.load_rule(tmp_path / "run" / "best_rule.safetensors"))

    # the card: the table, the figure, and the honest verdict
    text = (dist / "tiny-lstm.md").read_text()
    assert "| optimizer | lr | final loss (step 20) |" in text
    assert "![Loss curves of tiny-lstm and the baselines](tiny-lstm.png)" in text
    adam_iv = Interval(rec_adam["mean"], rec_adam["half_width"], 4)
    mine_iv = Interval(rec_mine["mean"], rec_mine["half_width"], 4)
    sentence = (
        f"tuned adam (lr {adam_lr:.3g}) has a lower mean than tiny-lstm in final loss, "
        f"{format_interval(adam_iv)} against {format_interval(mine_iv)}"
    )
    assert (sentence in text) == (rec_adam["mean"] < rec_mine["mean"])
    assert ("loses to tuned adam" in meta["description"]) == (rec_adam["mean"] < rec_mine["mean"])
    assert hashlib.sha256(weights.read_bytes()).hexdigest() in text


def test_publish_rule_in_memory_needs_a_task_or_no_baselines(tmp_path):
    from optizoo.publish.publish import publish_rule

    rule = tiny_lstm()
    with pytest.raises(ValueError, match="no task to compare on"):
        publish_rule(rule, "x", tmp_path)
    with pytest.raises(ValueError, match="invalid optimizer name"):
        publish_rule(rule, "bad name", tmp_path, baselines=())
    out = publish_rule(rule, "x", tmp_path, baselines=(), training={"horizon": 5})
    assert out.figure is None and "not compared with tuned baselines" in out.metadata["description"]
    assert "no evidence that it beats" in out.card.read_text()
    assert same_weights(optizoo.load_rule(out.weights), rule)


def test_publish_rule_with_the_held_out_suite(tmp_path):
    from optizoo.compare.evaluate import EvalTask
    from optizoo.publish.publish import publish_rule

    suite = [EvalTask("mlp-tiny", "mlp", {"hidden": [4], "batch_size": 32}, "a tiny MLP")]
    out = publish_rule(
        tiny_lstm(),
        "x",
        tmp_path,
        training={"task": "quadratic", "task_args": {"dim": 3, "batch": 2}, "horizon": 5},
        compare_problems=2,
        tune_problems=1,
        grid=[0.01, 0.1],
        evaluate=True,
        evaluate_options={
            "suite": suite, "seeds": 2, "tune_seeds": 1, "multiples": (1, 2), "grid": [0.01, 0.1]
        },
        verbose=False,
    )  # fmt: skip
    gen = out.metadata["optizoo.training"]["generalization"]
    assert [(r["task"], r["steps"]) for r in gen["rows"]] == [("mlp-tiny", 5), ("mlp-tiny", 10)]
    assert gen["tasks"] == {"mlp-tiny": "a tiny MLP"} and gen["suite"] == "custom"
    assert out.figures["generalization"].is_file()
    text = out.card.read_text()
    assert "## Held-out tasks" in text and "| mlp-tiny | 10 (2×) |" in text
    for r in gen["rows"]:  # every held-out row where Adam's mean is lower is stated
        if r["adam"]["mean"] < r["optimizer"]["mean"]:
            assert f"On held-out task `mlp-tiny` after {r['steps']} steps" in text


def test_publish_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc, _, err = run_cli(
        ["publish", str(tmp_path / "empty"), "--name", "x", "--out", str(tmp_path / "d")], capsys
    )
    assert rc == 2 and "has no best_rule.safetensors" in err


def test_docs_zoo_pages_are_up_to_date(load_script):
    """docs/zoo.md and docs/zoo/*.md are generated from the shipped files: regenerate them with
    ``python scripts/build_zoo_docs.py`` after shipping a file."""
    pages = load_script("build_zoo_docs").build(ROOT)
    assert ROOT / "docs" / "zoo.md" in pages
    for path, text in pages.items():
        assert path.is_file() and path.read_text() == text, f"{path} is stale"


def test_summary_phrase_counts_the_held_out_suite_without_a_training_comparison():
    from optizoo.publish.card import summary_phrase

    rows = [{"verdict": v} for v in ("better", "better", "worse", "no significant difference")]
    assert summary_phrase({"generalization": {"rows": rows}}) == (
        "held-out suite: better than tuned Adam in 2, worse in 1 of 4 task × budget cells"
    )
    rows.append({"verdict": "diverged"})
    assert summary_phrase({"generalization": {"rows": rows}}).endswith(", diverged in 1")
    assert summary_phrase({"generalization": {"rows": []}}) == ""
    assert summary_phrase({}) == ""


def test_load_pretrained_returns_an_optimizer_and_load_rule_a_rule():
    from optizoo.optim import LearnedOptimizer
    from optizoo.rules.base import UpdateRule

    p = torch.nn.Parameter(torch.zeros(3))
    opt = optizoo.load_pretrained("lstm-quadratic", [p], lr=0.5)
    assert type(opt) is LearnedOptimizer and opt.weights_name == "lstm-quadratic"
    assert opt.param_groups[0]["lr"] == 0.5
    rule = optizoo.load_rule("lstm-quadratic")
    assert isinstance(rule, UpdateRule) and same_weights(rule, opt.rule)
    with pytest.raises(
        TypeError, match=r"needs the parameters.*optizoo.load_rule\('lstm-quadratic'\)"
    ):
        optizoo.load_pretrained("lstm-quadratic")
