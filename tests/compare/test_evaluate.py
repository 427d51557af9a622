"""optizoo.compare.evaluate: the held-out suite against a tuned Adam, its report, figure and CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from optizoo import cli
from optizoo.compare.evaluate import (
    ADAM_LABEL,
    SUITES,
    EvalReport,
    EvalTask,
    _verdict,
    evaluate,
    measurement_steps,
)
from optizoo.compare.stats import Interval

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_default_suite_is_the_papers_generalization_set() -> None:
    suite = {t.name: t for t in SUITES["default"]}
    assert suite["mlp-20-sigmoid"].args == {
        "hidden": [20],
        "activation": "sigmoid",
        "batch_size": 128,
    }
    assert suite["mlp-40-relu"].args["hidden"] == [40]
    assert suite["mlp-2x20-relu"].args["hidden"] == [20, 20]
    assert suite["mlp-20-sigmoid-b32"].args["batch_size"] == 32
    assert suite["conv-8-16"].task == "conv"


def test_measurement_steps_cover_every_multiple() -> None:
    steps = measurement_steps(100, (1, 2, 10))
    assert steps[0] == 0 and steps[-1] == 1000 and {100, 200, 1000} <= set(steps)
    assert steps == sorted(set(steps)) and len(steps) < 40


def test_verdict_reads_the_paired_interval() -> None:
    assert _verdict(Interval(-0.2, 0.1, 5)) == "better"
    assert _verdict(Interval(0.2, 0.1, 5)) == "worse"
    assert _verdict(Interval(0.05, 0.1, 5)) == "no significant difference"
    assert _verdict(Interval(float("inf"), float("nan"), 5, n_nonfinite=1)) == "diverged"


def test_quick_evaluation_of_a_learned_optimizer(tmp_path: Path) -> None:
    import optizoo
    from optizoo.rules import LSTMRule

    torch.manual_seed(0)
    weights = optizoo.save_rule(
        LSTMRule(hidden_size=4, num_layers=1),
        tmp_path / "tiny.safetensors",
        training={"task": "quadratic", "horizon": 2},
    )
    report = evaluate(  # horizon: from the weight file's training record (2)
        f"tiny={weights}",
        multiples=(1, 2),
        seeds=2,
        tune_seeds=1,
        grid=[0.01, 0.1],
        verbose=False,
    )
    assert report.horizon == 2
    assert list(report.results) == [t.name for t in SUITES["default"]]
    rows = report.rows()
    assert len(rows) == 5 * 2 and {r["steps"] for r in rows} == {2, 4}
    for tr in report.results.values():
        c = tr.comparison
        assert c.criterion == "test" and c.tune_steps == 2 and c.steps == 4
        assert tr.adam_lr in (0.01, 0.1)
        assert not set(c.seeds) & set(c.tune_seeds)
        learned, adam = (c[lab].test for lab in ("tiny", ADAM_LABEL))
        assert learned is not None and adam is not None and learned.shape == (2, 5)
        # paired: both optimizers start from the same initial weights, so the step-0 test
        # losses are identical, and differ between the two seeds
        np.testing.assert_array_equal(learned[:, 0], adam[:, 0])
        assert learned[0, 0] != learned[1, 0]
    table = report.table()
    lines = table.splitlines()
    assert lines[0].startswith("| task | steps | tiny | Adam (tuned lr) | lr | difference |")
    assert sum(line.startswith("| mlp") or line.startswith("| conv") for line in lines) == 10
    assert "| mlp-2x20-relu | 4 (2×) |" in table
    assert "Meta-training record" in table and '"horizon": 2' in table
    assert report.training == {"task": "quadratic", "horizon": 2}
    assert report.plot(tmp_path / "eval.png").read_bytes()[:8] == PNG_MAGIC
    back = EvalReport.from_json(report.save_json(tmp_path / "eval.json"))
    assert back.table() == table


def test_tasks_without_test_split_and_bad_suites_are_refused() -> None:
    no_test = [EvalTask("q", "quadratic", {"batch": 1})]
    with pytest.raises(ValueError, match="no test split"):
        evaluate(
            "adam:lr=0.1",
            horizon=1,
            suite=no_test,
            seeds=2,
            tune_seeds=1,
            grid=[0.1, 1.0],
            verbose=False,
        )
    with pytest.raises(
        ValueError,
        match="unknown evaluation suite 'huge'; available: \\['architectures', 'default'\\]",
    ):
        evaluate("adam", suite="huge")
    with pytest.raises(ValueError, match="multiples"):
        evaluate("adam", multiples=(0,))
    with pytest.raises(ValueError, match="unknown optimizer spec"):
        evaluate("nope")


def test_cli_evaluate_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png, js = tmp_path / "e.png", tmp_path / "e.json"
    rc = cli.main(
        [
            "evaluate", "--optimizer", "rmsprop:lr=0.01", "--horizon", "2", "--multiples", "1", "2",
            "--tasks", "mlp-20-sigmoid", "--quick", "--seeds", "2", "--grid", "0.01,0.1",
            "--plot", str(png), "--json", str(js), "--quiet",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0 and "| mlp-20-sigmoid | 2 (1×) |" in out and "over 2 seeds" in out
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert json.loads(js.read_text())["tasks"]["mlp-20-sigmoid"]["comparison"]["tune_seeds"]
    rc = cli.main(["evaluate", "--optimizer", "adam", "--tasks", "mnist-huge", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown suite task(s) ['mnist-huge']" in err and "conv-8-16" in err


def test_tasks_argument_rejects_unknown_names() -> None:
    from optizoo.compare.evaluate import evaluate

    with pytest.raises(ValueError, match="unknown suite task"):
        evaluate("adam:lr=0.01", 2, tasks=["no-such-task"], quick=True, verbose=False)
