"""Learning-rate tuning of baselines: a log-spaced grid searched on separate problems."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from optizoo.compare.records import Trajectories, TuneResult
from optizoo.compare.runner import run_trajectories
from optizoo.compare.specs import OptimizerFactory, OptimizerSpec, parse_spec
from optizoo.tasks.base import Task

__all__ = ["CRITERIA", "DEFAULT_GRID", "log_grid", "tune_lr"]


def log_grid(low: float, high: float, num: int) -> list[float]:
    """``num`` learning rates spaced evenly in log10 from ``low`` to ``high`` (both included)."""
    if not (0 < low < high and math.isfinite(high)):
        raise ValueError(f"log grid needs 0 < low < high, got low={low!r}, high={high!r}")
    if not (isinstance(num, int) and num >= 2):
        raise ValueError(f"log grid needs num >= 2 points, got {num!r}")
    return [float(v) for v in np.logspace(math.log10(low), math.log10(high), num)]


#: the default learning-rate grid: 13 points from 1e-4 to 10^0.5 ≈ 3.16 (0.375 decades apart,
#: i.e. a factor 2.37 between neighbours)
DEFAULT_GRID: tuple[float, ...] = tuple(log_grid(1e-4, 10**0.5, 13))

CRITERIA = ("final", "sum", "test")


def _score(traj: Trajectories, criterion: str, at: int) -> np.ndarray:
    """Per-problem criterion values ``[problems]`` (``inf`` when diverged)."""
    if criterion == "final":
        return traj.train[:, at]
    if criterion == "sum":
        return traj.train[:, :at].sum(axis=1)
    if criterion == "test":
        if traj.test is None or at not in traj.test_steps:
            raise ValueError(
                "tuning criterion 'test' needs a task with a test split (its eval_loss "
                "returned None); use criterion 'final' or 'sum'"
            )
        return traj.test[:, traj.test_steps.index(at)]
    raise ValueError(f"unknown tuning criterion {criterion!r}; expected one of {CRITERIA}")


def tune_lr(
    task: Task,
    build: Callable[[float], OptimizerFactory] | OptimizerSpec | str,
    steps: int,
    seeds: Sequence[int],
    *,
    grid: Sequence[float] = DEFAULT_GRID,
    criterion: str = "final",
    device: torch.device | str | None = None,
    progress: Any = None,
) -> TuneResult:
    """Pick the learning rate from ``grid`` minimizing the mean ``criterion`` over ``seeds``.

    Args:
        build: ``lr -> factory``, or an optimizer spec whose lr is tuned.
        criterion: ``"final"`` (mean loss after ``steps``), ``"sum"`` (mean sum of the losses at
            steps ``0..steps-1``) or ``"test"`` (mean held-out loss after ``steps``).
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown tuning criterion {criterion!r}; expected one of {CRITERIA}")
    grid = sorted(float(g) for g in grid)
    if not grid or any(not (math.isfinite(g) and g > 0) for g in grid):
        raise ValueError(f"the learning-rate grid must be positive finite numbers, got {grid}")
    if not seeds:
        raise ValueError("tuning needs at least one problem (tune_problems >= 1)")
    if isinstance(build, (str, OptimizerSpec)):
        spec = parse_spec(build)
        build = spec.build
    scores = []
    for lr in grid:
        traj = run_trajectories(
            task,
            build(lr),
            seeds,
            steps,
            test_steps=[steps] if criterion == "test" else (),
            device=device,
            progress=progress,
        )
        per_problem = _score(traj, criterion, steps)
        score = float(per_problem.mean()) if np.isfinite(per_problem).all() else math.inf
        scores.append(score)
    best = int(np.argmin(scores))  # first minimum: ties go to the smaller lr
    return TuneResult(grid[best], grid, scores, criterion, steps, [int(s) for s in seeds])
