"""Run optimizers side by side on a task: paired problems, tuned baselines, confidence intervals.

>>> from optizoo.compare import compare
>>> result = compare("quadratic", ["lstm", "adam", "rmsprop", "sgd"], steps=100, problems=100)
>>> print(result.table())

Modules: :mod:`~optizoo.compare.specs` (the optimizer-spec language),
:mod:`~optizoo.compare.runner` (seeded runs), :mod:`~optizoo.compare.tuning` (lr grid search),
:mod:`~optizoo.compare.records` (results as plain data with JSON),
:mod:`~optizoo.compare.protocol` (:func:`compare`), :mod:`~optizoo.compare.evaluate` (named
suites), :mod:`~optizoo.compare.stats` (intervals), :mod:`~optizoo.compare.plots` (figures).
The protocol is described in ``docs/zoo.md``.
"""

from __future__ import annotations

from optizoo.compare import evaluate, plots, stats
from optizoo.compare.protocol import compare
from optizoo.compare.records import Comparison, OptimizerResult, Trajectories, TuneResult
from optizoo.compare.runner import num_threads, problem_seeds, resolve_task, run_trajectories
from optizoo.compare.specs import BASELINES, OptimizerSpec, parse_spec
from optizoo.compare.tuning import CRITERIA, DEFAULT_GRID, log_grid, tune_lr

__all__ = [
    "BASELINES",
    "CRITERIA",
    "DEFAULT_GRID",
    "Comparison",
    "OptimizerResult",
    "OptimizerSpec",
    "Trajectories",
    "TuneResult",
    "compare",
    "evaluate",
    "log_grid",
    "num_threads",
    "parse_spec",
    "plots",
    "problem_seeds",
    "resolve_task",
    "run_trajectories",
    "stats",
    "tune_lr",
]
