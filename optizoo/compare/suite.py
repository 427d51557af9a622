"""The architecture suite: an optimizer against three tuned or default ``torch.optim`` baselines
on small networks of many kinds, at several budgets.

>>> from optizoo.compare.suite import evaluate_architectures
>>> report = evaluate_architectures("lstm-mlp", quick=True)
>>> print(report.table()); print("\\n".join(report.summary_lines()))
>>> report.plot("figures/")            # one figure per task

Protocol (``optizoo evaluate --suite architectures``):

- **Tasks** (:data:`ARCHITECTURE_TASKS`): conv nets with and without batch normalization, a
  deep ReLU and a wide GELU MLP and an MSE autoencoder on the bundled digits, a tiny causal
  transformer language model on the bundled corpus, a GRU on the adding problem, an MLP on the
  bundled wine data (classification) and on Friedman's regression problem. All data is bundled
  or generated.
- **Budgets**: ``multiples`` (1, 3, 10) × a base budget of ``base`` steps (30).
- **Baselines** (:data:`BASELINES`): Adam with its learning rate tuned per task and per budget
  over :data:`ADAM_GRID` (17 points, 4 per decade, 1e-4..1); AdamW with learning rate and weight
  decay tuned per task and budget over :data:`ADAMW_GRID` (6 learning rates, 2 per decade,
  3.2e-4..0.1, × weight decay 0.01, 0.1, 1); AdamW at torch's defaults (lr 1e-3, weight decay
  0.01). Tuning runs on ``tune_seeds`` problems of a separate seed stream; each configuration is
  run once to the longest budget and its test loss read at every budget; the configuration with
  the lowest mean test loss at a budget (a diverged run ranks last) is that budget's choice.
- **Evaluation**: the optimizer under test and every chosen baseline configuration run on the same
  ``seeds`` problems (same initial weights, same minibatches); the criterion is the test loss
  (``problem.eval_loss``, the held-out split) after each budget. Each *cell* (task, budget) gets
  the paired difference (optimizer − baseline) over seeds with its 95% Student-t interval and a
  verdict: better (interval below 0), worse (above 0; a divergence of the optimizer under test
  counts as worse), or no significant difference. :meth:`SuiteReport.summary_lines` prints
  "better in W of C cells, worse in L" per baseline.

The baseline runs do not depend on the optimizer under test: :class:`SuiteBaselines` holds them
as plain data (JSON), so that candidates can be evaluated against one saved set
(``baselines=FOLDER``, one file per task), which is recomputed only for tasks whose settings
differ. Tuning is two-staged to halve its cost: every configuration runs on the first tuning
seed, the 3 best of each budget on the others (:func:`_tune`). The runs use
:func:`optizoo.compare.runner.run_trajectories` (the same run, divergence and loss-scaling rules as
``optizoo compare``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from optizoo._io import write_text_atomic
from optizoo._validate import positive_int
from optizoo.compare.evaluate import (
    SUITES,
    EvalTask,
    _verdict,
    check_multiples,
    measurement_steps,
    select_tasks,
)
from optizoo.compare.runner import num_threads, problem_seeds, resolve_task, run_trajectories
from optizoo.compare.specs import OptimizerFactory, parse_spec
from optizoo.compare.stats import Interval, format_interval, mean_ci, paired_difference
from optizoo.compare.tuning import log_grid

__all__ = [
    "ADAMW_GRID",
    "ADAM_GRID",
    "ARCHITECTURE_TASKS",
    "BASELINES",
    "QUICK",
    "Baseline",
    "BaselineResult",
    "SuiteBaselines",
    "SuiteReport",
    "SuiteSettings",
    "baselines_for",
    "count_verdicts",
    "evaluate_architectures",
    "run_baselines",
]

#: Adam's learning rates: 4 points per decade from 1e-4 to 1 (17 points)
ADAM_GRID: tuple[float, ...] = tuple(log_grid(1e-4, 1.0, 17))
#: AdamW's (lr, weight_decay) pairs: 6 learning rates, 2 per decade from 10^-3.5 to 0.1, × weight
#: decay 0.01, 0.1, 1 (18 pairs; torch's AdamW decays by lr·wd per step)
ADAMW_GRID: tuple[tuple[float, float], ...] = tuple(
    (lr, wd) for lr in log_grid(10**-3.5, 0.1, 6) for wd in (0.01, 0.1, 1.0)
)

#: The suite's tasks (``optizoo.evaluate.SUITES["architectures"]``).
ARCHITECTURE_TASKS: tuple[EvalTask, ...] = SUITES["architectures"]


@dataclass(frozen=True)
class Baseline:
    """A ``torch.optim`` baseline of the suite.

    Attributes:
        name: key in results (``"adam"``, ``"adamw"``, ``"adamw-default"``).
        label: shown in tables and legends.
        optimizer: the :data:`optizoo.compare.BASELINES` name.
        configs: keyword arguments tried (one entry: not tuned).
    """

    name: str
    label: str
    optimizer: str
    configs: tuple[Mapping[str, float], ...]

    @property
    def tuned(self) -> bool:
        return len(self.configs) > 1

    def spec_text(self, config: Mapping[str, float]) -> str:
        """The optimizer spec of one configuration (``"adamw:lr=0.001,weight_decay=0.1"``)."""
        if not config:
            return f"{self.optimizer}:lr={_default_lr(self.optimizer)!r}"
        return self.optimizer + ":" + ",".join(f"{k}={v!r}" for k, v in config.items())

    def factory(self, config: Mapping[str, float]) -> OptimizerFactory:
        return parse_spec(self.spec_text(config)).build()


def _default_lr(name: str) -> float:
    import inspect

    from optizoo.compare.specs import BASELINES as TORCH

    return float(inspect.signature(TORCH[name][0].__init__).parameters["lr"].default)


def _baselines(
    adam_grid: Sequence[float], adamw_grid: Sequence[tuple[float, float]]
) -> tuple[Baseline, ...]:
    return (
        Baseline("adam", "Adam (tuned lr)", "adam", tuple({"lr": lr} for lr in adam_grid)),
        Baseline(
            "adamw",
            "AdamW (tuned lr, wd)",
            "adamw",
            tuple({"lr": lr, "weight_decay": wd} for lr, wd in adamw_grid),
        ),
        Baseline("adamw-default", "AdamW (torch defaults)", "adamw", ({},)),
    )


#: the full suite's baselines
BASELINES: tuple[Baseline, ...] = _baselines(ADAM_GRID, ADAMW_GRID)

#: the base budget (steps) of the full suite: budgets 30, 90, 300
DEFAULT_BASE = 30

#: ``quick=True``: a smoke test (2 seeds, 1 tuning seed, coarse grids, base budget 10 steps)
QUICK: dict[str, Any] = {
    "base": 10,
    "seeds": 2,
    "tune_seeds": 1,
    "adam_grid": tuple(log_grid(1e-4, 1.0, 5)),
    "adamw_grid": ((1e-3, 0.01), (1e-3, 1.0), (1e-2, 0.01), (1e-2, 1.0)),
}


@dataclass(frozen=True)
class SuiteSettings:
    """Everything the baseline runs depend on (two runs with equal settings are identical)."""

    tasks: tuple[EvalTask, ...]
    base: int
    multiples: tuple[int, ...]
    seeds: tuple[int, ...]
    tune_seeds: tuple[int, ...]
    adam_grid: tuple[float, ...]
    adamw_grid: tuple[tuple[float, float], ...]
    torch_version: str = torch.__version__

    @property
    def budgets(self) -> list[int]:
        return [m * self.base for m in self.multiples]

    @property
    def steps_measured(self) -> list[int]:
        return measurement_steps(self.base, self.multiples)

    @property
    def baselines(self) -> tuple[Baseline, ...]:
        return _baselines(self.adam_grid, self.adamw_grid)

    def to_json(self) -> dict[str, Any]:
        return {
            "tasks": [
                {"name": t.name, "task": t.task, "args": dict(t.args), "description": t.description}
                for t in self.tasks
            ],
            "base": self.base,
            "multiples": list(self.multiples),
            "seeds": list(self.seeds),
            "tune_seeds": list(self.tune_seeds),
            "adam_grid": list(self.adam_grid),
            "adamw_grid": [list(p) for p in self.adamw_grid],
            "torch_version": self.torch_version,
        }

    def matches(self, other: SuiteSettings) -> bool:
        """Equal settings, grid values compared to 1e-9 relative: a grid recomputed by another
        numpy (``np.logspace`` may differ in the last bit) still matches saved runs."""
        return _same(self.to_json(), other.to_json())

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SuiteSettings:
        return cls(
            tuple(EvalTask(t["name"], t["task"], t["args"], t["description"]) for t in d["tasks"]),
            int(d["base"]),
            tuple(int(m) for m in d["multiples"]),
            tuple(int(s) for s in d["seeds"]),
            tuple(int(s) for s in d["tune_seeds"]),
            tuple(float(g) for g in d["adam_grid"]),
            tuple((float(a), float(b)) for a, b in d["adamw_grid"]),
            str(d["torch_version"]),
        )


def _same(a: Any, b: Any) -> bool:
    """Structural equality of JSON-like values, floats equal to 1e-9 relative."""
    if isinstance(a, float) or isinstance(b, float):
        return (
            isinstance(a, (int, float))
            and isinstance(b, (int, float))
            and math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


@dataclass
class BaselineResult:
    """One baseline on one task.

    Attributes:
        baseline: the :class:`Baseline`'s name.
        configs: the configurations tried.
        scores: ``[len(configs), len(budgets)]`` mean tuning test loss over the tuning seeds the
            configuration ran on (all of them for the finalists; ``inf``: diverged).
        chosen: per budget, the index into ``configs`` of the configuration used.
        runs: ``config index -> test loss [seeds, len(steps)]`` on the evaluation seeds at the
            suite's measured steps (``inf`` after a divergence; steps past the longest budget
            that configuration was chosen for are not run and hold ``nan``).
        seconds: wall-clock time of tuning and evaluation.
    """

    baseline: str
    configs: list[dict[str, float]]
    scores: np.ndarray
    chosen: list[int]
    runs: dict[int, np.ndarray]
    seconds: float = 0.0

    def test_at(self, budget_index: int, step_index: int) -> np.ndarray:
        """Per-seed test loss of the configuration chosen for a budget, at a measured step."""
        return self.runs[self.chosen[budget_index]][:, step_index]

    def to_json(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "configs": self.configs,
            "scores": _encode(self.scores),
            "chosen": self.chosen,
            "runs": {str(k): _encode(v) for k, v in self.runs.items()},
            "seconds": self.seconds,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> BaselineResult:
        return cls(
            d["baseline"],
            [dict(c) for c in d["configs"]],
            _decode(d["scores"]),
            [int(c) for c in d["chosen"]],
            {int(k): _decode(v) for k, v in d["runs"].items()},
            float(d.get("seconds", 0.0)),
        )


def _encode(values: np.ndarray) -> list[Any]:
    """JSON-safe nested lists: ``nan`` (not run) → ``"nan"``, ``±inf`` (diverged) → ``None``."""
    arr = np.atleast_2d(np.asarray(values, dtype=np.float64))
    return [
        ["nan" if math.isnan(v) else (v if math.isfinite(v) else None) for v in row]
        for row in arr.tolist()
    ]


def _decode(rows: Any) -> np.ndarray:
    """Inverse of :func:`_encode`."""
    return np.asarray(
        [
            [math.nan if v == "nan" else (math.inf if v is None else float(v)) for v in r]
            for r in rows
        ],
        dtype=np.float64,
    )


@dataclass
class SuiteBaselines:
    """The baseline runs of a suite: ``results[task][baseline]`` for the given settings."""

    settings: SuiteSettings
    results: dict[str, dict[str, BaselineResult]]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "optizoo.suite.baselines/1",
            "settings": self.settings.to_json(),
            "results": {
                t: {b: r.to_json() for b, r in per.items()} for t, per in self.results.items()
            },
        }

    def save_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_json` atomically."""
        return write_text_atomic(path, json.dumps(self.to_json()))

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str | os.PathLike[str]) -> SuiteBaselines:
        if not isinstance(data, Mapping):
            data = json.loads(Path(data).read_text())
        if data.get("format") != "optizoo.suite.baselines/1":
            raise ValueError(
                "not a suite baselines file (expected format 'optizoo.suite.baselines/1', got "
                f"{data.get('format')!r})"
            )
        return cls(
            SuiteSettings.from_json(data["settings"]),
            {
                t: {b: BaselineResult.from_json(r) for b, r in per.items()}
                for t, per in data["results"].items()
            },
        )


def _test_curves(
    task_def: EvalTask,
    factory: OptimizerFactory,
    seeds: Sequence[int],
    steps: int,
    measured: Sequence[int],
    device: torch.device | str | None,
    progress: Any,
) -> np.ndarray:
    """Test loss ``[seeds, len(measured)]``; steps past ``steps`` are ``nan`` (not run)."""
    task = resolve_task(task_def.task, dict(task_def.args))
    run_at = [s for s in measured if s <= steps]
    traj = run_trajectories(
        task, factory, seeds, steps, test_steps=run_at, device=device, progress=progress
    )
    if traj.test is None:
        raise ValueError(f"suite task {task_def.name!r} has no test split (eval_loss is None)")
    out = np.full((len(seeds), len(measured)), np.nan)
    out[:, : len(run_at)] = traj.test
    return out


#: configurations per budget that the first tuning seed passes on to the other tuning seeds
FINALISTS = 3


def _tune(
    task_def: EvalTask,
    baseline: Baseline,
    configs: list[dict[str, float]],
    settings: SuiteSettings,
    device: torch.device | str | None,
    progress: Any,
) -> tuple[np.ndarray, list[int]]:
    """Per-budget tuning in two stages: every configuration on the first tuning seed, then the
    :data:`FINALISTS` best of each budget (their union) on the other tuning seeds; a budget's
    choice is the finalist with the lowest mean test loss over all tuning seeds (a diverged run
    ranks last; ties go to the first). Returns the mean scores ``[configs, budgets]`` (over the
    seeds each configuration ran on) and the chosen index per budget."""
    budgets = settings.budgets
    seeds = list(settings.tune_seeds)

    def curves(config: Mapping[str, float], on: list[int]) -> np.ndarray:
        out = _test_curves(
            task_def, baseline.factory(config), on, budgets[-1], budgets, device, progress
        )
        return np.where(np.isfinite(out), out, np.inf)  # sums of inf stay inf

    totals = np.stack([curves(c, seeds[:1]).sum(axis=0) for c in configs])
    counts = np.ones(len(configs))
    finalists = sorted(
        {
            int(i)
            for b in range(len(budgets))
            for i in np.argsort(totals[:, b], kind="stable")[:FINALISTS]
        }
    )
    if len(seeds) > 1:
        for i in finalists:
            totals[i] += curves(configs[i], seeds[1:]).sum(axis=0)
            counts[i] = len(seeds)
    scores = totals / counts[:, None]
    chosen = []
    for b in range(len(budgets)):
        pool = finalists if len(seeds) > 1 else range(len(configs))
        chosen.append(min(pool, key=lambda i: (scores[i, b], i)))
    return scores, chosen


def _run_baseline(
    task_def: EvalTask,
    baseline: Baseline,
    settings: SuiteSettings,
    device: torch.device | str | None,
    progress: Any,
) -> BaselineResult:
    start = time.perf_counter()
    budgets = settings.budgets
    configs = [dict(c) for c in baseline.configs]
    if baseline.tuned:
        scores, chosen = _tune(task_def, baseline, configs, settings, device, progress)
    else:
        scores = np.full((1, len(budgets)), np.nan)
        chosen = [0] * len(budgets)
    measured = settings.steps_measured
    runs = {}
    for index in sorted(set(chosen)):
        longest = max(budgets[b] for b, c in enumerate(chosen) if c == index)
        runs[index] = _test_curves(
            task_def,
            baseline.factory(configs[index]),
            settings.seeds,
            longest,
            measured,
            device,
            progress,
        )
    return BaselineResult(baseline.name, configs, scores, chosen, runs, time.perf_counter() - start)


def _progress(total: int, desc: str, verbose: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="run", leave=False, disable=None if verbose else True)


def run_baselines(
    settings: SuiteSettings,
    *,
    device: torch.device | str | None = None,
    threads: int | None = 1,
    verbose: bool = True,
) -> SuiteBaselines:
    """Tune and run every baseline of ``settings`` on every task (see the module docstring)."""
    results: dict[str, dict[str, BaselineResult]] = {}
    baselines = settings.baselines
    per_task = sum(len(b.configs) * len(settings.tune_seeds) if b.tuned else 0 for b in baselines)
    with num_threads(threads):
        for t in settings.tasks:
            total = per_task + 3 * len(baselines) * len(settings.seeds)
            with _progress(total, f"baselines on {t.name}", verbose) as bar:
                results[t.name] = {
                    b.name: _run_baseline(t, b, settings, device, bar) for b in baselines
                }
    return SuiteBaselines(settings, results)


# --------------------------------------------------------------------------- the report


@dataclass
class Cell:
    """One (task, budget, baseline) comparison."""

    task: str
    budget: int
    multiple: int
    baseline: str
    optimizer: Interval
    reference: Interval
    difference: Interval
    config: dict[str, float]

    @property
    def verdict(self) -> str:
        """``better``, ``worse``, ``no significant difference``, ``diverged`` (the optimizer under
        test) or ``n/a``; a diverged baseline with a finite optimizer counts as better."""
        if self.optimizer.n_nonfinite:
            return "diverged"
        if self.reference.n_nonfinite:
            return "better"
        return _verdict(self.difference)

    @property
    def relative(self) -> float:
        """Mean difference as a fraction of the baseline's mean loss (``-0.1``: 10% lower)."""
        ref = self.reference.mean
        return self.difference.mean / ref if ref and math.isfinite(ref) else math.nan

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "budget": self.budget,
            "multiple": self.multiple,
            "baseline": self.baseline,
            "config": self.config,
            "optimizer": self.optimizer.to_dict(),
            "baseline_loss": self.reference.to_dict(),
            "difference": self.difference.to_dict(),
            "relative": None if math.isnan(self.relative) else self.relative,
            "verdict": self.verdict,
        }


def count_verdicts(verdicts: Sequence[str]) -> tuple[int, int, int]:
    """``(better, cells, worse)``: a divergence of the optimizer under test counts as worse."""
    better = sum(v == "better" for v in verdicts)
    worse = sum(v in ("worse", "diverged") for v in verdicts)
    return better, len(verdicts), worse


@dataclass
class SuiteReport:
    """Outcome of :func:`evaluate_architectures` (plain data; :meth:`to_json`/:meth:`from_json`).

    Attributes:
        optimizer: the spec evaluated.
        settings: the suite's settings (tasks, budgets, seeds, grids).
        confidence: interval coverage.
        learned: ``task -> test loss [seeds, len(settings.steps_measured)]`` of the optimizer.
        baselines: the baseline runs.
        seconds: wall-clock time of the optimizer's own runs.
        baseline_seconds: wall-clock time spent computing baselines in this call (0 if reused).
    """

    optimizer: str
    settings: SuiteSettings
    confidence: float
    learned: dict[str, np.ndarray]
    baselines: SuiteBaselines
    seconds: float = 0.0
    baseline_seconds: float = 0.0
    label: str = ""

    def cells(self) -> list[Cell]:
        """Every (task, budget, baseline) cell, task-major."""
        s = self.settings
        measured = s.steps_measured
        out = []
        for t in s.tasks:
            ours = self.learned[t.name]
            for b_index, budget in enumerate(s.budgets):
                k = measured.index(budget)
                for base in s.baselines:
                    r = self.baselines.results[t.name][base.name]
                    ref = r.test_at(b_index, k)
                    out.append(
                        Cell(
                            t.name,
                            budget,
                            s.multiples[b_index],
                            base.name,
                            mean_ci(ours[:, k], self.confidence),
                            mean_ci(ref, self.confidence),
                            paired_difference(ours[:, k], ref, self.confidence),
                            r.configs[r.chosen[b_index]],
                        )
                    )
        return out

    def counts(self) -> dict[str, tuple[int, int, int]]:
        """``baseline -> (better, cells, worse)``."""
        cells = self.cells()
        return {
            b.name: count_verdicts([c.verdict for c in cells if c.baseline == b.name])
            for b in self.settings.baselines
        }

    def summary_lines(self) -> list[str]:
        """One line per baseline: "vs LABEL: better in W of C cells, worse in L"."""
        labels = {b.name: b.label for b in self.settings.baselines}
        out = []
        for name, (w, c, lost) in self.counts().items():
            out.append(f"vs {labels[name]}: better in {w} of {c} cells, worse in {lost}")
        return out

    def table(self, digits: int = 3) -> str:
        """Markdown: per task and budget, the optimizer's test loss and each baseline's, the
        paired difference with its interval, the relative difference and the verdict."""
        labels = {b.name: b.label for b in self.settings.baselines}
        head = ["task", "steps", self.label or self.optimizer, "baseline", "its loss", "config"]
        head += ["difference", "rel.", "verdict"]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for c in self.cells():
            rel = "—" if math.isnan(c.relative) else f"{c.relative:+.0%}"
            config = ", ".join(f"{k} {v:.2g}" for k, v in c.config.items()) or "defaults"
            cells = [
                c.task,
                f"{c.budget} ({c.multiple}×)",
                format_interval(c.optimizer, digits),
                labels[c.baseline],
                format_interval(c.reference, digits),
                config,
                format_interval(c.difference, digits),
                rel,
                c.verdict,
            ]
            lines.append("| " + " | ".join(cells) + " |")
        s = self.settings
        pct = f"{round(self.confidence * 100)}%"
        caption = (
            f"Mean test loss (held-out split) ± {pct} half-width (Student t) over {len(s.seeds)} "
            f"seeds, the same problems for every optimizer; difference = optimizer − baseline, "
            f"paired by seed; rel. = difference / baseline loss. Baselines tuned per task and "
            f"budget on {len(s.tune_seeds)} separate seeds: Adam over {len(s.adam_grid)} "
            f"learning rates ({s.adam_grid[0]:.2g}–{s.adam_grid[-1]:.2g}), AdamW over "
            f"{len(s.adamw_grid)} (lr, weight decay) pairs."
        )
        return "\n".join(lines) + "\n\n" + caption + "\n\n" + "\n".join(self.summary_lines()) + "\n"

    def plot(self, directory: str | os.PathLike[str], *, band: str = "ci") -> list[Path]:
        """One figure per task (``DIRECTORY/TASK.png``): test loss over steps, the optimizer and
        each baseline's configuration chosen for the longest budget."""
        from optizoo.compare.plots import plot_suite_task

        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        return [
            plot_suite_task(self, t.name, folder / f"{t.name}.png", band=band)
            for t in self.settings.tasks
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "optizoo.suite.report/1",
            "optimizer": self.optimizer,
            "label": self.label,
            "confidence": self.confidence,
            "seconds": self.seconds,
            "baseline_seconds": self.baseline_seconds,
            "summary": self.summary_lines(),
            "cells": [c.to_json() for c in self.cells()],
            "learned": {k: _encode(v) for k, v in self.learned.items()},
            "baselines": self.baselines.to_json(),
        }

    def save_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_json` atomically."""
        return write_text_atomic(path, json.dumps(self.to_json()))

    @classmethod
    def merge(cls, reports: Sequence[SuiteReport]) -> SuiteReport:
        """One report from reports of one optimizer on disjoint task subsets (e.g. run in
        parallel processes), tasks in the suite's order; seconds add up."""
        if not reports:
            raise ValueError("merge needs at least one report")
        first = reports[0]
        names = [t.name for r in reports for t in r.settings.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"reports to merge must cover disjoint tasks, got {names}")
        for r in reports[1:]:
            same = dataclasses.replace(r.settings, tasks=first.settings.tasks)
            if same != first.settings or (r.optimizer, r.confidence) != (
                first.optimizer,
                first.confidence,
            ):
                raise ValueError("reports to merge must share optimizer and suite settings")
        order = {t.name: i for i, t in enumerate(ARCHITECTURE_TASKS)}
        tasks = sorted(
            (t for r in reports for t in r.settings.tasks),
            key=lambda t: order.get(t.name, len(order)),
        )
        settings = dataclasses.replace(first.settings, tasks=tuple(tasks))
        learned = {
            t.name: next(r.learned[t.name] for r in reports if t.name in r.learned) for t in tasks
        }
        results = {
            t.name: next(r.baselines.results[t.name] for r in reports if t.name in r.learned)
            for t in tasks
        }
        return cls(
            first.optimizer,
            settings,
            first.confidence,
            learned,
            SuiteBaselines(settings, results),
            sum(r.seconds for r in reports),
            sum(r.baseline_seconds for r in reports),
            first.label,
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str | os.PathLike[str]) -> SuiteReport:
        if not isinstance(data, Mapping):
            data = json.loads(Path(data).read_text())
        if data.get("format") != "optizoo.suite.report/1":
            raise ValueError(
                f"not a suite report (expected format 'optizoo.suite.report/1', got "
                f"{data.get('format')!r})"
            )
        baselines = SuiteBaselines.from_json(data["baselines"])
        return cls(
            data["optimizer"],
            baselines.settings,
            float(data["confidence"]),
            {k: _decode(v) for k, v in data["learned"].items()},
            baselines,
            float(data["seconds"]),
            float(data["baseline_seconds"]),
            data.get("label", ""),
        )


def _optimizer_factory(optimizer: str) -> tuple[OptimizerFactory, str]:
    spec = parse_spec(optimizer)
    spec.validate()
    if spec.kind == "torch" and "lr" not in spec.options:  # untuned: torch's default lr
        spec.options["lr"] = _default_lr(spec.name)
    return spec.build(), spec.label


def evaluate_architectures(
    optimizer: str,
    *,
    tasks: Sequence[str] | None = None,
    base: int | None = None,
    multiples: Sequence[int] = (1, 3, 10),
    seeds: int | None = None,
    tune_seeds: int | None = None,
    quick: bool = False,
    seed: int = 0,
    baselines: SuiteBaselines | str | os.PathLike[str] | None = None,
    confidence: float = 0.95,
    device: torch.device | str | None = None,
    threads: int | None = 1,
    verbose: bool = True,
) -> SuiteReport:
    """Evaluate ``optimizer`` on the architecture suite against the three baselines.

    Args:
        optimizer: an optimizer spec (:func:`optizoo.compare.parse_spec`): ``"lstm"``, a
            pretrained name, ``"NAME=PATH.safetensors"``, or a torch baseline (run with the
            options given, at torch's default lr when none is given; never tuned).
        tasks: only the suite tasks with these names.
        base: the base budget in steps (30; 10 with ``quick``); budgets are ``multiples × base``.
        seeds: evaluation problems per task (5; 2 with ``quick``).
        tune_seeds: tuning problems per configuration (2; 1 with ``quick``).
        quick: a smoke test (:data:`QUICK`): coarse grids and few seeds, not numbers for a card.
        seed: run seed; problem seeds derive from it (:func:`optizoo.compare.problem_seeds`).
        baselines: reuse baseline runs: a :class:`SuiteBaselines`, or a folder of per-task JSON
            files, where tasks run with other settings (or missing) are computed and written
            (:func:`baselines_for`).
        threads: torch CPU threads during the runs (1: the fastest for these small networks).
    """
    chosen = select_tasks(ARCHITECTURE_TASKS, tasks)
    base = base if base is not None else (QUICK["base"] if quick else DEFAULT_BASE)
    base = positive_int(base, "base (steps)")
    mults = check_multiples(multiples)
    n_seeds = seeds if seeds is not None else (QUICK["seeds"] if quick else 5)
    n_tune = tune_seeds if tune_seeds is not None else (QUICK["tune_seeds"] if quick else 2)
    n_seeds, n_tune = positive_int(n_seeds, "seeds"), positive_int(n_tune, "tune_seeds")
    eval_seeds = problem_seeds(seed, n_seeds, "eval")
    settings = SuiteSettings(
        chosen,
        base,
        mults,
        tuple(eval_seeds),
        tuple(problem_seeds(seed, n_tune, "tune", exclude=eval_seeds)),
        QUICK["adam_grid"] if quick else ADAM_GRID,
        QUICK["adamw_grid"] if quick else ADAMW_GRID,
    )
    factory, label = _optimizer_factory(optimizer)
    start = time.perf_counter()
    ref, computed = baselines_for(
        settings, baselines, device=device, threads=threads, verbose=verbose
    )
    baseline_seconds = time.perf_counter() - start if computed else 0.0
    start = time.perf_counter()
    learned: dict[str, np.ndarray] = {}
    with num_threads(threads):
        for t in settings.tasks:
            with _progress(len(settings.seeds), f"{label} on {t.name}", verbose) as bar:
                learned[t.name] = _test_curves(
                    t,
                    factory,
                    settings.seeds,
                    settings.budgets[-1],
                    settings.steps_measured,
                    device,
                    bar,
                )
    return SuiteReport(
        optimizer=optimizer,
        settings=settings,
        confidence=confidence,
        learned=learned,
        baselines=ref,
        seconds=time.perf_counter() - start,
        baseline_seconds=baseline_seconds,
        label=label,
    )


def baselines_for(
    settings: SuiteSettings,
    baselines: SuiteBaselines | str | os.PathLike[str] | None = None,
    *,
    device: torch.device | str | None = None,
    threads: int | None = 1,
    verbose: bool = True,
) -> tuple[SuiteBaselines, bool]:
    """The baseline runs for ``settings``: given, reused from a folder, or computed.

    ``baselines`` is a :class:`SuiteBaselines` (must match ``settings``), ``None`` (compute), or a
    folder holding one ``TASK.json`` per task: a task whose file holds runs of the same settings
    is reused, any other is computed and its file (re)written as soon as it is done (so an
    interrupted run keeps its finished tasks, and several processes can fill one folder with
    different ``tasks``). Returns the baselines and whether any task was computed.
    """
    if isinstance(baselines, SuiteBaselines):
        if not baselines.settings.matches(settings):
            raise ValueError(
                "the given baselines were run with other suite settings (tasks, budgets, seeds, "
                "grids or torch version); run them again for these settings"
            )
        return baselines, False
    folder = None if baselines is None else Path(baselines)
    if folder is not None and folder.exists() and not folder.is_dir():
        raise ValueError(
            f"baselines={str(folder)!r} must be a folder (one TASK.json per task), not a file"
        )
    results: dict[str, dict[str, BaselineResult]] = {}
    computed = False
    for t in settings.tasks:
        single = dataclasses.replace(settings, tasks=(t,))
        path = None if folder is None else folder / f"{t.name}.json"
        if path is not None and path.is_file():
            saved = SuiteBaselines.from_json(path)
            if saved.settings.matches(single):
                results[t.name] = saved.results[t.name]
                continue
        fresh = run_baselines(single, device=device, threads=threads, verbose=verbose)
        computed = True
        if path is not None:
            folder.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
            fresh.save_json(path)
        results[t.name] = fresh.results[t.name]
    return SuiteBaselines(settings, results), computed
