"""Tests of the architecture suite (optizoo.compare.suite): protocol, verdict counting, JSON, CLI.

Each end-to-end run is tiny (one or two cheap tasks, base budget 2, quick grids). Reference
values come from independent runs of :func:`optizoo.compare.run_trajectories` with the chosen
configurations, from the tuning scores recomputed here, and from the identity "the same optimizer
on the same seeds gives a zero difference".
"""

from __future__ import annotations

import dataclasses
import io
import json
import math

import numpy as np
import pytest
import torch

from optizoo.cli import main
from optizoo.compare import run_trajectories
from optizoo.compare.evaluate import SUITES, evaluate
from optizoo.compare.stats import Interval
from optizoo.compare.suite import (
    ADAM_GRID,
    ADAMW_GRID,
    ARCHITECTURE_TASKS,
    QUICK,
    Cell,
    SuiteBaselines,
    SuiteReport,
    SuiteSettings,
    count_verdicts,
    evaluate_architectures,
)
from optizoo.tasks import build

TINY = {"quick": True, "base": 2, "tasks": ["wine-mlp"], "verbose": False}


@pytest.fixture(scope="module")
def report() -> SuiteReport:
    return evaluate_architectures("adamw", **TINY)


def test_suite_is_registered_with_seven_or_more_families() -> None:
    assert SUITES["architectures"] is ARCHITECTURE_TASKS
    families = {(t.task, t.args.get("norm"), t.args.get("dataset")) for t in ARCHITECTURE_TASKS}
    assert len(families) >= 7
    for t in ARCHITECTURE_TASKS:  # every task exists and has a held-out split
        problem = build(t.task, **t.args).sample(torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert problem.eval_loss(problem.params()) is not None


def test_grids_are_the_stated_ones() -> None:
    assert len(ADAM_GRID) == 17
    np.testing.assert_allclose(np.log10(ADAM_GRID), np.arange(-4, 0.01, 0.25))
    assert len(ADAMW_GRID) == 18
    assert sorted({wd for _, wd in ADAMW_GRID}) == [0.01, 0.1, 1.0]
    np.testing.assert_allclose(
        np.log10(sorted({lr for lr, _ in ADAMW_GRID})), [-3.5, -3, -2.5, -2, -1.5, -1]
    )


def test_count_verdicts() -> None:
    verdicts = ["better", "worse", "diverged", "no significant difference", "better", "n/a"]
    assert count_verdicts(verdicts) == (2, 6, 2)
    assert count_verdicts([]) == (0, 0, 0)


def _cell(opt: Interval, ref: Interval, diff: Interval) -> Cell:
    return Cell("t", 10, 1, "adam", opt, ref, diff, {"lr": 0.1})


def test_cell_verdicts() -> None:
    ok = Interval(1.0, 0.1, 5)
    assert _cell(ok, ok, Interval(-0.2, 0.1, 5)).verdict == "better"
    assert _cell(ok, ok, Interval(0.2, 0.1, 5)).verdict == "worse"
    assert _cell(ok, ok, Interval(0.05, 0.1, 5)).verdict == "no significant difference"
    inf = Interval(math.inf, math.nan, 5, n_nonfinite=1)
    assert _cell(inf, ok, inf).verdict == "diverged"
    assert _cell(ok, inf, Interval(-math.inf, math.nan, 5, n_nonfinite=1)).verdict == "better"
    assert _cell(ok, Interval(2.0, 0.1, 5), Interval(-1.0, 0.1, 5)).relative == pytest.approx(-0.5)


def test_quick_run_end_to_end(report: SuiteReport) -> None:
    s = report.settings
    assert s.budgets == [2, 6, 20]
    assert len(s.seeds) == QUICK["seeds"] and len(s.tune_seeds) == QUICK["tune_seeds"]
    assert not set(s.seeds) & set(s.tune_seeds)
    cells = report.cells()
    assert len(cells) == 1 * 3 * 3
    # the optimizer under test is AdamW at torch's defaults: identical to that baseline
    for c in cells:
        if c.baseline == "adamw-default":
            assert c.difference.mean == 0.0 and c.verdict == "no significant difference"
    lines = report.summary_lines()
    assert lines[2] == "vs AdamW (torch defaults): better in 0 of 3 cells, worse in 0"
    for line, (_name, (w, c, lost)) in zip(lines, report.counts().items()):
        assert line.endswith(f"better in {w} of {c} cells, worse in {lost}")
    assert "better in" in report.table()


def test_tuning_picks_the_best_config_per_budget(report: SuiteReport) -> None:
    s = report.settings
    adam = report.baselines.results["wine-mlp"]["adam"]
    assert [c["lr"] for c in adam.configs] == list(QUICK["adam_grid"])
    task = build("tabular", **ARCHITECTURE_TASKS[7].args)
    for b in range(len(s.budgets)):
        assert adam.chosen[b] == int(np.argmin(adam.scores[:, b]))
    # recompute one tuning score independently: mean test loss over the tuning seeds
    lr = adam.configs[0]["lr"]
    traj = run_trajectories(
        task, lambda p: torch.optim.Adam(p, lr=lr), list(s.tune_seeds), 20, test_steps=[2, 6, 20]
    )
    np.testing.assert_allclose(adam.scores[0], traj.test.mean(axis=0))
    # and the evaluation curve of the configuration chosen for the longest budget
    best = adam.configs[adam.chosen[-1]]["lr"]
    traj = run_trajectories(
        task, lambda p: torch.optim.Adam(p, lr=best), list(s.seeds), 20, test_steps=[20]
    )
    k = s.steps_measured.index(20)
    np.testing.assert_array_equal(adam.test_at(2, k), traj.test[:, 0])


def test_json_round_trip(report: SuiteReport) -> None:
    text = json.dumps(report.to_json())
    again = SuiteReport.from_json(json.loads(text))
    assert again.table() == report.table()
    assert again.summary_lines() == report.summary_lines()
    assert again.settings == report.settings
    for name, curves in report.learned.items():
        np.testing.assert_array_equal(again.learned[name], curves)
    with pytest.raises(ValueError, match="suite report"):
        SuiteReport.from_json({"format": "other"})


def _runs(report: SuiteReport) -> dict:
    out = report.baselines.to_json()["results"]
    return {t: {b: {**r, "seconds": 0} for b, r in per.items()} for t, per in out.items()}


def test_baselines_are_reused_per_task_when_settings_match(tmp_path, report: SuiteReport) -> None:
    folder = tmp_path / "baselines"
    first = evaluate_architectures("adam:lr=0.01", baselines=folder, **TINY)
    assert first.baseline_seconds > 0 and (folder / "wine-mlp.json").is_file()
    assert _runs(first) == _runs(report)  # deterministic
    again = evaluate_architectures("adamw", baselines=folder, **TINY)
    assert again.baseline_seconds == 0.0
    assert again.table() == report.table()
    # a second task joins the folder; the first is reused
    both = evaluate_architectures(
        "adam:lr=0.01", baselines=folder, **{**TINY, "tasks": ["wine-mlp", "friedman-mlp"]}
    )
    assert both.baselines.results["wine-mlp"]["adam"].to_json() == (
        again.baselines.results["wine-mlp"]["adam"].to_json()  # seconds included: reused
    )
    assert (folder / "friedman-mlp.json").is_file()
    # other settings: recomputed and written back
    other = evaluate_architectures("adam:lr=0.01", baselines=folder, seeds=3, **TINY)
    assert other.baseline_seconds > 0
    saved = SuiteBaselines.from_json(folder / "wine-mlp.json")
    assert len(saved.settings.seeds) == 3
    with pytest.raises(ValueError, match="other suite settings"):
        evaluate_architectures("adam:lr=0.01", baselines=report.baselines, seeds=3, **TINY)
    with pytest.raises(ValueError, match="folder"):
        evaluate_architectures("adam:lr=0.01", baselines=folder / "wine-mlp.json", **TINY)


def test_two_stage_tuning_with_several_tuning_seeds() -> None:
    r = evaluate_architectures("adamw", tune_seeds=2, **TINY)
    s = r.settings
    adam = r.baselines.results["wine-mlp"]["adam"]
    task = build("tabular", **ARCHITECTURE_TASKS[7].args)
    first = []
    for c in adam.configs:  # stage 1, recomputed here: every lr on the first tuning seed
        traj = run_trajectories(
            task,
            lambda p, lr=c["lr"]: torch.optim.Adam(p, lr=lr),
            [s.tune_seeds[0]],
            20,
            test_steps=[2, 6, 20],
        )
        first.append(np.where(np.isfinite(traj.test[0]), traj.test[0], np.inf))
    first = np.array(first)
    finalists = sorted(
        {int(i) for b in range(3) for i in np.argsort(first[:, b], kind="stable")[:3]}
    )
    for i in range(len(adam.configs)):
        if i not in finalists:
            np.testing.assert_allclose(adam.scores[i], first[i])
    for b in range(3):
        assert adam.chosen[b] in finalists
        assert adam.chosen[b] == min(finalists, key=lambda i: (adam.scores[i, b], i))
    # a finalist's score is the mean over both tuning seeds
    i = adam.chosen[-1]
    traj = run_trajectories(
        task,
        lambda p: torch.optim.Adam(p, lr=adam.configs[i]["lr"]),
        list(s.tune_seeds),
        20,
        test_steps=[2, 6, 20],
    )
    np.testing.assert_allclose(adam.scores[i], traj.test.mean(axis=0))


def test_merge_reports_of_task_subsets(report: SuiteReport) -> None:
    other = evaluate_architectures("adamw", **{**TINY, "tasks": ["friedman-mlp"]})
    merged = SuiteReport.merge([other, report])
    assert [t.name for t in merged.settings.tasks] == ["wine-mlp", "friedman-mlp"]  # suite order
    assert len(merged.cells()) == 2 * len(report.cells())
    assert merged.cells()[: len(report.cells())] == report.cells()
    assert merged.counts()["adam"][1] == 6
    with pytest.raises(ValueError, match="disjoint"):
        SuiteReport.merge([report, report])
    lstm = evaluate_architectures("adam:lr=0.01", **{**TINY, "tasks": ["friedman-mlp"]})
    with pytest.raises(ValueError, match="share optimizer"):
        SuiteReport.merge([report, lstm])


def test_one_figure_per_task(tmp_path, report: SuiteReport) -> None:
    paths = report.plot(tmp_path / "figs")
    assert [p.name for p in paths] == ["wine-mlp.png"]
    assert paths[0].stat().st_size > 1000


def test_evaluate_points_to_the_suite_runner_and_cli(tmp_path) -> None:
    with pytest.raises(ValueError, match="evaluate_architectures"):
        evaluate("adam:lr=0.01", 2, "architectures", tasks=["wine-mlp"], quick=True)
    via = evaluate_architectures(
        "adam:lr=0.01", tasks=["wine-mlp"], base=2, quick=True, verbose=False
    )
    assert isinstance(via, SuiteReport) and via.settings.base == 2
    out, err = io.StringIO(), io.StringIO()
    argv = [
        "evaluate", "--suite", "architectures", "--optimizer", "adam:lr=0.01", "--quick",
        "--horizon", "2", "--tasks", "wine-mlp", "--quiet",
        "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "f"),
    ]  # fmt: skip
    from contextlib import redirect_stderr, redirect_stdout

    with redirect_stdout(out), redirect_stderr(err):
        assert main(argv) == 0, err.getvalue()
    text = out.getvalue()
    assert "vs Adam (tuned lr): better in" in text and "wine-mlp.png" in text
    assert SuiteReport.from_json(tmp_path / "r.json").summary_lines() == via.summary_lines()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tasks": ["resnet"]}, "unknown suite task"),
        ({"base": 0}, "base"),
        ({"multiples": [0]}, "multiples"),
        ({"seeds": 0}, "seeds"),
    ],
)
def test_bad_arguments(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        evaluate_architectures("adam", **{**TINY, **kwargs})


def test_saved_baselines_match_a_grid_that_differs_in_the_last_bit(tmp_path) -> None:
    """np.logspace of another numpy may differ by an ulp: the saved runs are still reused; a
    grid that really differs is not."""
    folder = tmp_path / "baselines"
    first = evaluate_architectures("adam:lr=0.01", baselines=folder, **TINY)
    path = folder / "wine-mlp.json"
    data = json.loads(path.read_text())
    data["settings"]["adam_grid"] = [math.nextafter(g, 1.0) for g in data["settings"]["adam_grid"]]
    path.write_text(json.dumps(data))
    again = evaluate_architectures("adam:lr=0.01", baselines=folder, **TINY)
    assert again.baseline_seconds == 0.0 and again.table() == first.table()
    s = first.baselines.settings
    assert s.matches(SuiteSettings.from_json(data["settings"]))
    bumped = dict(
        data["settings"], adam_grid=[g * (1 + 1e-6) for g in data["settings"]["adam_grid"]]
    )
    assert not s.matches(SuiteSettings.from_json(bumped))
    assert not s.matches(dataclasses.replace(s, seeds=s.seeds[:1]))
