"""The evaluation suite the zoo's model cards report: held-out tasks against a tuned Adam.

>>> from optizoo.compare.evaluate import evaluate
>>> report = evaluate("lstm", horizon=100)
>>> print(report.table()); report.plot("card.png")

For each task of the suite (:data:`SUITES`), the optimizer under test and ``torch.optim.Adam`` run
on the same ``seeds`` problems for ``max(multiples) × horizon`` steps; Adam's learning rate is
tuned by a log-grid search on *separate* problems (another seed stream) for the lowest mean test
loss after ``horizon`` steps, the budget the learned optimizer was meta-trained for. The report
gives the mean **test** loss (``problem.eval_loss``, the held-out split) with 95% Student-t
intervals at ``1×, 2×, 10×`` the horizon, the paired difference (learned − Adam) with its
interval, and a figure with one panel per task.

The default suite follows the generalization experiments of Andrychowicz et al. (2016, §3.2) on
the bundled 8×8 digits: the paper's MLP (20 sigmoid units, minibatch 128), a wider (40) and a
deeper (2 × 20) ReLU variant, a different minibatch size (32), and a small convolutional network.
Which of them an optimizer was meta-trained on is recorded in its weight file; the report prints
that record so a card can say which tasks are truly held out.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from optizoo._io import write_text_atomic
from optizoo.compare.protocol import compare
from optizoo.compare.records import Comparison
from optizoo.compare.specs import parse_spec
from optizoo.compare.stats import Interval, format_interval, mean_ci
from optizoo.compare.tuning import DEFAULT_GRID, log_grid

__all__ = ["SUITES", "EvalReport", "EvalTask", "EvalTaskResult", "evaluate", "measurement_steps"]

#: label of the tuned baseline inside each task's comparison
ADAM_LABEL = "Adam (tuned lr)"


@dataclass(frozen=True)
class EvalTask:
    """One task of an evaluation suite.

    Attributes:
        name: short name shown in tables and panels.
        task: registry name (``optizoo.tasks.get``).
        args: keyword arguments of the task.
        description: one line for the model card.
    """

    name: str
    task: str
    args: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""


#: Named suites. ``"default"``: the paper's generalization experiments on the bundled digits;
#: ``"architectures"``: the architecture suite, run by :func:`optizoo.compare.suite.evaluate_architectures`
#: (three baselines, budgets 1×, 3×, 10×; run by ``optizoo.compare.suite.evaluate_architectures``).
SUITES: dict[str, tuple[EvalTask, ...]] = {
    "default": (
        EvalTask(
            "mlp-20-sigmoid",
            "mlp",
            {"hidden": [20], "activation": "sigmoid", "batch_size": 128},
            "paper's MLP: 1 hidden layer of 20 sigmoid units, minibatch 128, 8×8 digits",
        ),
        EvalTask(
            "mlp-40-relu",
            "mlp",
            {"hidden": [40], "activation": "relu", "batch_size": 128},
            "wider: 1 hidden layer of 40 ReLU units",
        ),
        EvalTask(
            "mlp-2x20-relu",
            "mlp",
            {"hidden": [20, 20], "activation": "relu", "batch_size": 128},
            "deeper: 2 hidden layers of 20 ReLU units",
        ),
        EvalTask(
            "mlp-20-sigmoid-b32",
            "mlp",
            {"hidden": [20], "activation": "sigmoid", "batch_size": 32},
            "the paper's MLP with minibatch 32 (noisier gradients)",
        ),
        EvalTask(
            "conv-8-16",
            "conv",
            {"channels": [8, 16], "activation": "relu", "batch_size": 128},
            "small conv net: 3×3 convs of 8 and 16 channels, global average pool, linear",
        ),
    ),
    # the architecture suite (optizoo.compare.suite): many kinds of small networks, all data bundled or
    # generated; every training step costs milliseconds on one CPU thread; base budget 30 steps
    "architectures": (
        EvalTask(
            "conv-bn",
            "conv",
            {"channels": [8, 16], "activation": "relu", "norm": "batch", "batch_size": 64},
            "conv net 8-16 channels with batch norm, ReLU, global pool, 8×8 digits",
        ),
        EvalTask(
            "conv-plain",
            "conv",
            {"channels": [8, 16], "activation": "relu", "batch_size": 64},
            "conv net 8-16 channels without normalization, ReLU, 8×8 digits",
        ),
        EvalTask(
            "mlp-deep-relu",
            "mlp",
            {"hidden": [64, 64, 64, 64], "activation": "relu", "batch_size": 128},
            "deep MLP: 4 hidden layers of 64 ReLU units, 8×8 digits",
        ),
        EvalTask(
            "mlp-wide-gelu",
            "mlp",
            {"hidden": [256], "activation": "gelu", "batch_size": 128},
            "wide MLP: 1 hidden layer of 256 GELU units, 8×8 digits",
        ),
        EvalTask(
            "autoencoder",
            "autoencoder",
            {"hidden": [32, 8, 32], "activation": "relu", "batch_size": 128},
            "MSE autoencoder 64-32-8-32-64 (ReLU) of the 8×8 digits",
        ),
        EvalTask(
            "transformer-lm",
            "transformer_lm",
            {"d_model": 32, "layers": 2, "heads": 2, "context": 16, "batch_size": 16},
            "causal transformer LM (2 layers, width 32, context 16) on the bundled Python docs",
        ),
        EvalTask(
            "gru-adding",
            "rnn",
            {"cell": "gru", "hidden": 32, "length": 8, "batch_size": 32},
            "GRU (32 units) on the adding problem, length 8, MSE",
        ),
        EvalTask(
            "wine-mlp",
            "tabular",
            {"dataset": "wine", "hidden": [32], "activation": "relu", "batch_size": None},
            "MLP (32 ReLU) on the UCI wine data, full batch (135 training rows)",
        ),
        EvalTask(
            "friedman-mlp",
            "tabular",
            {"dataset": "friedman", "hidden": [64, 64], "activation": "relu", "batch_size": 32},
            "MLP (2 × 64 ReLU) on Friedman's regression problem (200 training rows), MSE",
        ),
    ),
}

#: ``quick=True`` settings: few seeds, a coarse grid (for smoke tests and CI, not for cards)
QUICK = {"seeds": 3, "tune_seeds": 2, "grid": tuple(log_grid(1e-3, 1.0, 4))}


def measurement_steps(horizon: int, multiples: Sequence[int], points: int = 24) -> list[int]:
    """Steps where the test loss is measured: 0, ``points`` log-spaced steps up to the longest
    run, and every ``multiple × horizon``."""
    last = max(multiples) * horizon
    logs = np.unique(np.round(np.geomspace(1, last, points)).astype(int)).tolist()
    return sorted({0, *logs, *(m * horizon for m in multiples)})


def select_tasks(
    suite_tasks: Sequence[EvalTask], names: Sequence[str] | None
) -> tuple[EvalTask, ...]:
    """The suite tasks called ``names`` (all of them for ``None``), in the order given."""
    if names is None:
        return tuple(suite_tasks)
    known = {t.name: t for t in suite_tasks}
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ValueError(
            f"unknown suite task(s) {unknown or list(names)}; the suite has: {', '.join(known)}"
        )
    return tuple(known[name] for name in names)


def check_multiples(multiples: Sequence[int]) -> tuple[int, ...]:
    """Budget multiples as sorted distinct positive ints."""
    mults = tuple(sorted({int(m) for m in multiples}))
    if not mults or mults[0] < 1:
        raise ValueError(f"multiples must be positive ints such as (1, 2, 10), got {multiples!r}")
    return mults


def _resolve_suite(suite: str | Sequence[EvalTask]) -> tuple[EvalTask, ...]:
    if isinstance(suite, str):
        if suite not in SUITES:
            raise ValueError(f"unknown evaluation suite {suite!r}; available: {sorted(SUITES)}")
        return SUITES[suite]
    tasks = tuple(suite)
    if not tasks or not all(isinstance(t, EvalTask) for t in tasks):
        raise TypeError("suite must be a suite name or a non-empty sequence of EvalTask")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"evaluation task names must be unique, got {names}")
    return tasks


def _training_record(spec_text: str) -> dict[str, Any]:
    """The ``optizoo.training`` metadata of a learned spec's weight file (``{}`` if none)."""
    spec = parse_spec(spec_text)
    if spec.kind != "learned":
        return {}
    try:
        from optizoo.zoo import read_metadata
        from optizoo.zoo.registry import resolve

        path, _ = resolve(spec.name)
        return dict(read_metadata(path).get("optizoo.training", {}))
    except Exception:  # a missing record must not stop an evaluation
        return {}


@dataclass
class EvalTaskResult:
    """One task's outcome: the underlying :class:`~optizoo.compare.Comparison` plus views."""

    task: EvalTask
    comparison: Comparison
    label: str

    @property
    def name(self) -> str:
        return self.task.name

    @property
    def steps_measured(self) -> list[int]:
        return self.comparison.test_steps

    @property
    def adam_lr(self) -> float:
        lr = self.comparison[ADAM_LABEL].lr
        assert lr is not None
        return lr

    def curves(self) -> dict[str, np.ndarray]:
        """``label -> test loss [seeds, len(steps_measured)]`` for the optimizer and tuned Adam."""
        out = {}
        for label, r in self.comparison.results.items():
            assert r.test is not None
            shown = f"Adam (lr {r.lr:.2g}, tuned)" if label == ADAM_LABEL else label
            out[shown] = r.test
        return out

    def at(self, steps: int) -> tuple[Interval, Interval, Interval]:
        """Test-loss intervals after ``steps``: (optimizer, tuned Adam, paired optimizer − Adam)."""
        learned = self.comparison[self.label].final_test(steps)
        adam = self.comparison[ADAM_LABEL].final_test(steps)
        if learned is None or adam is None:
            raise ValueError(f"no test loss was measured at step {steps}")
        conf = self.comparison.confidence
        return (
            mean_ci(learned, conf),
            mean_ci(adam, conf),
            self.comparison.paired(self.label, ADAM_LABEL, "test", steps),
        )


@dataclass
class EvalReport:
    """Outcome of :func:`evaluate`.

    Attributes:
        optimizer: the spec evaluated.
        horizon: the training horizon (steps) the multiples refer to.
        multiples: reported budgets as multiples of the horizon.
        confidence: interval coverage.
        training: the optimizer's meta-training record (from its weight file), if any.
        results: ``task name -> EvalTaskResult``.
    """

    optimizer: str
    horizon: int
    multiples: tuple[int, ...]
    confidence: float
    training: dict[str, Any]
    results: dict[str, EvalTaskResult]

    @property
    def seeds_count(self) -> int:
        return len(next(iter(self.results.values())).comparison.seeds)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per (task, multiple): intervals for the optimizer, Adam and the difference."""
        out = []
        for name, tr in self.results.items():
            for m in self.multiples:
                learned, adam, diff = tr.at(m * self.horizon)
                out.append(
                    {
                        "task": name,
                        "multiple": m,
                        "steps": m * self.horizon,
                        "optimizer": learned.to_dict(),
                        "adam": adam.to_dict(),
                        "adam_lr": tr.adam_lr,
                        "difference": diff.to_dict(),
                        "verdict": _verdict(diff),
                    }
                )
        return out

    def table(self, digits: int = 3) -> str:
        """Markdown: mean test loss ± CI per task and budget, tuned Adam alongside, and the paired
        difference with a verdict (better / worse / no significant difference)."""
        pct = f"{round(self.confidence * 100)}%"
        label = next(iter(self.results.values())).label
        head = ["task", "steps", label, "Adam (tuned lr)", "lr", "difference", "verdict"]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for name, tr in self.results.items():
            for m in self.multiples:
                steps = m * self.horizon
                learned, adam, diff = tr.at(steps)
                cells = [
                    name,
                    f"{steps} ({m}×)",
                    format_interval(learned, digits),
                    format_interval(adam, digits),
                    f"{tr.adam_lr:.2g}",
                    format_interval(diff, digits),
                    _verdict(diff),
                ]
                lines.append("| " + " | ".join(cells) + " |")
        n = self.seeds_count
        first = next(iter(self.results.values())).comparison
        tuning = first[ADAM_LABEL].tuning
        grid_text = f"a {len(tuning.grid)}-point log grid" if tuning else "a log grid"
        caption = (
            f"Mean test loss (held-out split) ± {pct} confidence half-width (Student t) over {n} "
            f"seeds, the same problems for both optimizers; difference = {label} − Adam, "
            f"paired by seed. Adam's learning rate: best mean test loss after {self.horizon} steps "
            f"over {grid_text} on {len(first.tune_seeds)} separate seeds, per task."
        )
        if self.training:
            caption += " Meta-training record: " + json.dumps(_short_training(self.training)) + "."
        return "\n".join(lines) + "\n\n" + caption + "\n"

    def plot(self, path: str | os.PathLike[str], *, band: str = "ci") -> Path:
        """One panel per task: test loss over steps (log-log), the optimizer vs tuned Adam."""
        from optizoo.compare.plots import plot_evaluation

        return plot_evaluation(self, path, band=band)

    def to_json(self, *, include_curves: bool = True) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer,
            "horizon": self.horizon,
            "multiples": list(self.multiples),
            "confidence": self.confidence,
            "training": self.training,
            "rows": self.rows(),
            "tasks": {
                name: {
                    "task": tr.task.task,
                    "args": dict(tr.task.args),
                    "description": tr.task.description,
                    "label": tr.label,
                    "comparison": tr.comparison.to_json(include_curves=include_curves),
                }
                for name, tr in self.results.items()
            },
        }

    def save_json(self, path: str | os.PathLike[str], *, include_curves: bool = True) -> Path:
        """Write :meth:`to_json` atomically."""
        return write_text_atomic(
            path, json.dumps(self.to_json(include_curves=include_curves), indent=1)
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str | os.PathLike[str]) -> EvalReport:
        """Rebuild a report saved with curves (to re-plot or re-tabulate it)."""
        if not isinstance(data, Mapping):
            data = json.loads(Path(data).read_text())
        results = {
            name: EvalTaskResult(
                EvalTask(name, t["task"], t["args"], t["description"]),
                Comparison.from_json(t["comparison"]),
                t["label"],
            )
            for name, t in data["tasks"].items()
        }
        return cls(
            data["optimizer"],
            int(data["horizon"]),
            tuple(data["multiples"]),
            float(data["confidence"]),
            dict(data["training"]),
            results,
        )


def _verdict(diff: Interval) -> str:
    if diff.n_nonfinite:
        return "diverged"
    if math.isnan(diff.half_width):
        return "n/a"
    if diff.high < 0:
        return "better"
    if diff.low > 0:
        return "worse"
    return "no significant difference"


def _short_training(record: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("task", "tasks", "horizon", "unroll", "meta_steps")
    return {k: record[k] for k in keys if k in record} or dict(record)


def _check_has_test_split(t: EvalTask, device: torch.device | str | None) -> None:
    from optizoo.tasks import build

    problem = build(t.task, **dict(t.args)).sample(torch.Generator().manual_seed(0), device)
    with torch.no_grad():
        has_test = problem.eval_loss(problem.params()) is not None
    if not has_test:
        raise ValueError(
            f"evaluation task {t.name!r} ({t.task}) has no test split (eval_loss returned None); "
            "the suite reports held-out loss, so use tasks with a test split"
        )


def evaluate(
    optimizer: str,
    horizon: int | None = None,
    suite: str | Sequence[EvalTask] = "default",
    *,
    tasks: Sequence[str] | None = None,
    seeds: int | None = None,
    tune_seeds: int | None = None,
    multiples: Sequence[int] | None = None,
    grid: Sequence[float] | None = None,
    quick: bool = False,
    seed: int = 0,
    confidence: float = 0.95,
    device: torch.device | str | None = None,
    threads: int | None = None,
    verbose: bool = True,
    baselines: str | os.PathLike[str] | None = None,
) -> EvalReport:
    """Evaluate ``optimizer`` on the held-out suite against ``torch.optim.Adam`` with a tuned lr.

    Args:
        optimizer: an optimizer spec (``"lstm"``, ``"lstm=path.safetensors"``, a pretrained name,
            or a baseline such as ``"rmsprop:lr=0.01"``; see :func:`optizoo.compare.parse_spec`).
        horizon: the steps the optimizer was meta-trained for; reports at ``multiples`` of it.
            Default: the ``horizon`` of the weight file's training record, else 100.
        suite: a name in :data:`SUITES` or a sequence of :class:`EvalTask`. ``"architectures"``
            is refused here: it has its own runner,
            :func:`optizoo.compare.suite.evaluate_architectures`.
        tasks: only the suite tasks with these names (e.g. ``["mlp-20-sigmoid"]``).
        seeds: evaluation problems per task (default 10; 3 with ``quick``).
        tune_seeds: separate problems per grid point for Adam's lr (default 5; 2 with ``quick``).
        multiples: budgets to report, as multiples of ``horizon`` (default ``(1, 2, 10)``;
            ``(1, 3, 10)`` for the architecture suite).
        grid: Adam's learning-rate grid (default :data:`~optizoo.compare.DEFAULT_GRID`; 4 points
            with ``quick``).
        quick: small settings for smoke tests (numbers not fit for a model card).
        seed: run seed; problem seeds derive from it.
        device, threads, verbose: as in :func:`optizoo.compare.compare`.
    """
    if isinstance(suite, str) and suite == "architectures":
        raise ValueError(
            "the architecture suite has its own runner (three baselines, budgets 1x, 3x, 10x): "
            "call optizoo.compare.suite.evaluate_architectures, or run "
            "`optizoo evaluate --suite architectures`"
        )
    if baselines is not None:
        raise ValueError("baselines= applies to the architecture suite only")
    multiples = (1, 2, 10) if multiples is None else multiples
    tasks = select_tasks(_resolve_suite(suite), tasks)
    spec = parse_spec(optimizer)
    training = _training_record(spec.text) if spec.text else {}
    if horizon is None:
        recorded = training.get("horizon")
        horizon = recorded if isinstance(recorded, int) and recorded >= 1 else 100
    if not (isinstance(horizon, int) and horizon >= 1):
        raise ValueError(f"horizon must be a positive int, got {horizon!r}")
    mults = check_multiples(multiples)
    n_seeds = seeds if seeds is not None else (QUICK["seeds"] if quick else 10)
    n_tune = tune_seeds if tune_seeds is not None else (QUICK["tune_seeds"] if quick else 5)
    lr_grid = tuple(grid) if grid is not None else (QUICK["grid"] if quick else DEFAULT_GRID)
    steps = max(mults) * horizon
    measured = measurement_steps(horizon, mults)
    label = spec.label if spec.label != ADAM_LABEL else f"{spec.label} (evaluated)"
    for t in tasks:  # fail before any long run: every task must exist and have a test split
        _check_has_test_split(t, device)
    results: dict[str, EvalTaskResult] = {}
    for t in tasks:
        comparison = compare(
            t.task,
            {label: spec, ADAM_LABEL: "adam"},
            steps=steps,
            problems=n_seeds,
            task_args=dict(t.args),
            tune_problems=n_tune,
            tune_steps=horizon,
            grid=lr_grid,
            criterion="test",
            seed=seed,
            test_steps=measured,
            confidence=confidence,
            device=device,
            threads=threads,
            verbose=verbose,
        )
        results[t.name] = EvalTaskResult(t, comparison, label)
    return EvalReport(
        optimizer=spec.text or spec.label,
        horizon=horizon,
        multiples=mults,
        confidence=confidence,
        training=training,
        results=results,
    )
