"""optizoo.compare: specs, paired runs, learning-rate tuning, tables, figures and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from optizoo import cli
from optizoo.compare import (
    Comparison,
    OptimizerSpec,
    compare,
    log_grid,
    parse_spec,
    problem_seeds,
    run_trajectories,
    tune_lr,
)
from optizoo.tasks.base import Problem, Task

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class HalfSquareProblem(Problem):
    """f(x) = ½·a·‖x‖², x0 drawn from the generator; SGD gives x_t = (1 − lr·a)^t x0."""

    def __init__(self, a: float, x0: Tensor) -> None:
        self.a, self.x0 = a, x0

    def params(self) -> dict[str, Tensor]:
        return {"x": self.x0.clone()}

    def loss(self, params: dict[str, Tensor], step: int) -> Tensor:
        return 0.5 * self.a * params["x"].square().sum()


class HalfSquareTask(Task):
    name = "half-square"

    def __init__(self, a: float = 4.0, dtype: torch.dtype = torch.float64) -> None:
        self.a, self.dtype = a, dtype

    def sample(self, generator: torch.Generator, device: object = None) -> HalfSquareProblem:
        return HalfSquareProblem(self.a, torch.randn(3, generator=generator, dtype=self.dtype))


def closed_form_curve(task: HalfSquareTask, seed: int, lr: float, steps: int) -> np.ndarray:
    """f(θ_t) for t = 0..steps under SGD, computed without running an optimizer."""
    x0 = task.sample(torch.Generator().manual_seed(seed)).x0.double()
    f0 = 0.5 * task.a * float(x0.square().sum())
    return f0 * (1 - lr * task.a) ** (2 * np.arange(steps + 1))


# --------------------------------------------------------------------------- seeds and specs


def test_problem_seeds_are_reproducible_and_streams_disjoint() -> None:
    ev = problem_seeds(0, 50, "eval")
    assert ev == problem_seeds(0, 50, "eval") and len(set(ev)) == 50
    tu = problem_seeds(0, 50, "tune", exclude=ev)
    assert not set(ev) & set(tu)
    assert problem_seeds(1, 5) != problem_seeds(0, 5)
    assert (
        problem_seeds(0, 3, "tune", exclude=problem_seeds(0, 3, "tune")[:1])[0]
        not in (problem_seeds(0, 3, "tune")[:1])
    )
    with pytest.raises(ValueError, match="stream"):
        problem_seeds(0, 3, "bogus")


def test_parse_spec_grammar(tmp_path: Path) -> None:
    s = parse_spec("adam")
    assert (s.kind, s.name, s.label, s.needs_tuning) == ("torch", "adam", "adam", True)
    s = parse_spec("adam:lr=0.01,betas=(0.9,0.99)")
    assert s.options == {"lr": 0.01, "betas": (0.9, 0.99)} and not s.needs_tuning
    assert parse_spec("momentum").build(0.1)([torch.nn.Parameter(torch.zeros(1))]).defaults[
        "momentum"
    ] == pytest.approx(0.9)
    s = parse_spec("lstm")
    assert (s.kind, s.name) == ("learned", "default")
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"x")  # existence is all parse_spec checks
    s = parse_spec(f"mine={weights}:lr=0.5")
    assert (s.kind, s.label, s.name, s.options) == ("learned", "mine", str(weights), {"lr": 0.5})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("adamx", "unknown optimizer spec 'adamx'; accepted optimizer specs: adagrad, adam"),
        ("", "empty optimizer spec"),
        ("adam:lr", "options are KEY=VALUE"),
        ("x=/no/such/file.safetensors", "no weight file at"),
        ("adam=/no/such.safetensors", "names a torch.optim baseline"),
        ("1bad=foo", "NAME a plain word"),
    ],
)
def test_bad_specs_say_what_is_accepted(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_spec(spec)


def test_unknown_option_lists_accepted_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown option\(s\) foo; accepted: lr, betas"):
        parse_spec("adam:foo=1").validate()
    with pytest.raises(ValueError, match="Invalid learning rate"):
        parse_spec("sgd:lr=-1").validate()
    with pytest.raises(TypeError, match="must be a string"):
        parse_spec(3)  # type: ignore[arg-type]


def test_duplicate_labels_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate optimizer label"):
        compare(HalfSquareTask(), ["sgd:lr=0.1", "sgd:lr=0.1"], steps=2, problems=1)


# --------------------------------------------------------------------------- running


def test_trajectories_follow_closed_form_sgd() -> None:
    # pins the curve convention: train[i, t] = f(θ_t), t = 0..steps (steps + 1 values)
    task, lr, steps = HalfSquareTask(a=4.0), 0.1, 6
    seeds = [11, 12]
    traj = run_trajectories(
        task, lambda p: torch.optim.SGD(p, lr=lr), seeds, steps, test_steps=[0, steps]
    )
    assert traj.train.shape == (2, steps + 1) and traj.test is None and traj.test_steps == []
    for i, seed in enumerate(seeds):
        # float64 throughout: 1e-12 relative
        np.testing.assert_allclose(
            traj.train[i], closed_form_curve(task, seed, lr, steps), rtol=1e-12
        )


def test_divergence_fills_inf_and_stops_early() -> None:
    # float32 with |1 − lr·a| = 15: f grows 225× per step and overflows near step 16
    task = HalfSquareTask(a=4.0, dtype=torch.float32)
    traj = run_trajectories(task, lambda p: torch.optim.SGD(p, lr=4.0), [0], 100)
    row = traj.train[0]
    first = int(np.flatnonzero(~np.isfinite(row))[0])
    assert 10 < first < 32 and np.isinf(row[first:]).all() and np.isfinite(row[:first]).all()


def test_tuning_finds_one_over_curvature() -> None:
    # the best constant SGD lr on ½·a·x² is 1/a (x reaches 0 in one step); the grid of powers
    # of two 2^-6 .. 2^2 contains 1/4
    task = HalfSquareTask(a=4.0)
    grid = log_grid(2**-6, 2**2, 9)
    seeds = [1, 2, 3]
    for criterion in ("final", "sum"):
        result = tune_lr(task, "sgd", 5, seeds, grid=grid, criterion=criterion)
        assert result.lr == pytest.approx(0.25)
        assert not result.at_edge
        # scores against the closed form (float64: 1e-9 relative; lr=1/a gives exactly ~0)
        for lr, score in zip(result.grid, result.scores):
            curves = [closed_form_curve(task, s, lr, 5) for s in seeds]
            want = np.mean([c[5] if criterion == "final" else c[:5].sum() for c in curves])
            assert score == pytest.approx(want, rel=1e-9, abs=1e-20)


def test_tuning_ranks_diverged_runs_last() -> None:
    task = HalfSquareTask(a=4.0, dtype=torch.float32)
    result = tune_lr(task, "sgd", 40, [0, 1], grid=[1e-4, 4.0])
    assert result.lr == 1e-4 and math.isinf(result.scores[1]) and result.at_edge


def test_compare_quadratic_table_plot_json(tmp_path: Path) -> None:
    result = compare(
        "quadratic",
        ["adam", "sgd:lr=0.01", "momentum"],
        task_args={"batch": 2},
        steps=8,
        problems=3,
        tune_problems=1,
        tune_steps=4,
        grid=[1e-3, 1e-2, 1e-1],
        verbose=False,
    )
    table = result.table()
    assert table.splitlines()[0].startswith("| optimizer | lr | final loss (step 8)")
    assert "| sgd:lr=0.01 | 0.01 |" in table and "(tuned" in table
    assert "over 3 problems" in table and "3-point log grid" in table and "of 4 steps" in table
    assert result["adam"].tuning is not None and result["adam"].tuning.steps == 4
    assert result["adam"].lr in (1e-3, 1e-2, 1e-1)
    assert "final loss (step 4)" in result.table(at=4)
    # all three start from θ0 = 0 on the same problems: identical initial losses
    np.testing.assert_array_equal(result["adam"].train[:, 0], result["momentum"].train[:, 0])
    png = result.plot(tmp_path / "figs" / "q.png")
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert result.plot(tmp_path / "q_iqr.png", band="iqr").stat().st_size > 1000
    path = result.save_json(tmp_path / "q.json")
    back = Comparison.from_json(path)
    assert back.table() == table
    np.testing.assert_array_equal(back["adam"].train, result["adam"].train)
    data = json.loads(path.read_text())
    assert data["optimizers"]["adam"]["final_loss"]["n"] == 3
    assert data["task_args"]["batch"] == 2


def test_identical_optimizers_see_identical_problems_and_batches() -> None:
    # stochastic task (minibatches) with a test split: pairing must hold for both curves
    result = compare(
        "mlp",
        {"a": "adam:lr=0.01", "b": "adam:lr=0.01", "c": "sgd:lr=0.1"},
        task_args={"hidden": [8], "batch_size": 16},
        steps=4,
        problems=2,
        verbose=False,
    )
    a, b = result["a"], result["b"]
    np.testing.assert_array_equal(a.train, b.train)
    assert a.test is not None and b.test is not None
    np.testing.assert_array_equal(a.test, b.test)
    assert a.train[0, -1] != a.train[1, -1]  # two different problems
    diff = result.paired("a", "b")
    assert diff.mean == 0.0 and diff.half_width == 0.0
    assert result.paired("a", "c", "test").n == 2
    assert "test loss (step 4)" in result.table()


def test_custom_factory_and_learned_spec(tmp_path: Path) -> None:
    import optizoo
    from optizoo.rules import LSTMRule

    torch.manual_seed(0)
    weights = optizoo.save_rule(LSTMRule(hidden_size=4, num_layers=1), tmp_path / "l.safetensors")
    result = compare(
        HalfSquareTask(),
        {"lstm": f"lstm={weights}", "mine": lambda p: torch.optim.SGD(p, lr=0.25)},
        steps=3,
        problems=2,
        verbose=False,
    )
    assert result["lstm"].lr == 1.0 and result["mine"].lr is None
    assert np.isfinite(result["lstm"].train).all()
    assert result["mine"].train[:, 1:].max() < 1e-20  # lr = 1/a: exact minimum after one step
    spec = parse_spec(f"x={weights}:lr=0.0")
    flat = run_trajectories(HalfSquareTask(), spec.build(), [5], 3).train[0]
    assert (flat == flat[0]).all()  # lr = 0: the learned update is scaled away


def test_package_exposes_compare_and_evaluate_modules() -> None:
    import optizoo

    assert optizoo.compare.compare is compare
    assert callable(optizoo.compare.evaluate.evaluate)
    assert optizoo.evaluate is optizoo.compare.evaluate  # the former top-level module


def test_from_factory_rejects_non_callables() -> None:
    with pytest.raises(TypeError, match="callable"):
        OptimizerSpec.from_factory("x", 3)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- CLI


def test_cli_compare_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png, js = tmp_path / "c.png", tmp_path / "c.json"
    rc = cli.main(
        [
            "compare", "--task", "quadratic", "--task-args", '{"batch": 2}',
            "--optimizers", "adam", "sgd:lr=0.01", "--steps", "5", "--problems", "2",
            "--tune-problems", "1", "--grid", "1e-3:1e-1:3", "--at", "3",
            "--plot", str(png), "--json", str(js), "--quiet",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    assert "| adam |" in out and "final loss (step 3)" in out
    assert png.read_bytes()[:8] == PNG_MAGIC and json.loads(js.read_text())["steps"] == 5


def test_cli_compare_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["compare", "--task", "quadratic", "--optimizers", "adamx", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "optizoo compare: error: unknown optimizer spec 'adamx'" in err
    assert "NAME=PATH.safetensors" in err
    rc = cli.main(["compare", "--task", "nosuch", "--optimizers", "adam", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "no task named 'nosuch'" in err and "quadratic" in err
    with pytest.raises(SystemExit):
        cli.main(["compare", "--task", "quadratic", "--optimizers", "adam", "--task-args", "[1]"])
    assert "JSON object" in capsys.readouterr().err
