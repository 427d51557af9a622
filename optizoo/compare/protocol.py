"""Run optimizers side by side on a task: paired problems, tuned baselines, confidence intervals.

>>> from optizoo.compare import compare
>>> result = compare("quadratic", ["lstm", "adam", "rmsprop", "sgd"], steps=100, problems=100)
>>> print(result.table())
>>> result.plot("docs/quadratic.png")

Protocol (what makes the numbers trustworthy):

- **Paired problems.** Problem ``i`` is ``task.sample(torch.Generator().manual_seed(seeds[i]))``
  for every optimizer, so all optimizers see the same problems (and, for stochastic tasks, the
  same minibatches); differences can be tested pairwise (:meth:`Comparison.paired`).
- **Tuned baselines.** A ``torch.optim`` baseline without an explicit ``lr`` gets its learning rate
  from a log-grid search (:data:`DEFAULT_GRID`) on *separate* problems (a different seed stream,
  :func:`problem_seeds`); the criterion is the mean final loss (or mean sum of losses, or mean
  test loss); a diverged run (non-finite loss) ranks last. Nothing is cached across processes.
- **Curves.** ``train[i, t] = f_i(θ_t) / num_instances`` for ``t = 0 .. steps`` (``steps + 1``
  values: the loss at the initial point, at each point the optimizer stepped from, and at the
  final point). *Final loss* is ``train[:, steps]``; *sum of losses* is
  ``Σ_{t=0}^{steps-1} train[:, t]``, the per-step losses seen while optimizing (the learning-to-learn re-implementation's
  metric). A run whose loss becomes non-finite is stopped and its remaining entries are ``inf``.
- **Intervals.** mean ± Student-t 95% half-width over problems (:mod:`optizoo.compare.stats`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from optizoo.compare.records import Comparison, OptimizerResult
from optizoo.compare.runner import (
    _check_steps,
    _task_name,
    num_threads,
    problem_seeds,
    resolve_task,
    run_trajectories,
)
from optizoo.compare.specs import OptimizerFactory, OptimizerSpec, _as_specs
from optizoo.compare.tuning import CRITERIA, DEFAULT_GRID, tune_lr
from optizoo.tasks import task_config
from optizoo.tasks.base import Task

__all__ = ["compare"]


def _progress(total: int, desc: str, verbose: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="run", leave=False, disable=None if verbose else True)


def compare(
    task: str | Task,
    optimizers: Sequence[str | OptimizerSpec]
    | Mapping[str, str | OptimizerSpec | OptimizerFactory],
    *,
    steps: int = 100,
    problems: int = 100,
    task_args: Mapping[str, Any] | None = None,
    tune_problems: int = 10,
    tune_steps: int | None = None,
    grid: Sequence[float] = DEFAULT_GRID,
    criterion: str = "final",
    seed: int = 0,
    test_steps: Iterable[int] | None = None,
    confidence: float = 0.95,
    device: torch.device | str | None = None,
    threads: int | None = None,
    verbose: bool = True,
) -> Comparison:
    """Run each optimizer on the same ``problems`` problems of ``task`` for ``steps`` steps.

    Args:
        task: a registry name (``"quadratic"``, ``"mlp"``, a plugin's) or a :class:`Task`.
        optimizers: spec strings (see :func:`parse_spec`), parsed specs, or a mapping
            ``label -> spec or factory`` (a factory is ``params -> torch.optim.Optimizer``).
        steps: optimization steps per problem.
        problems: evaluation problems (seeds from the ``"eval"`` stream of ``seed``).
        task_args: keyword arguments for a task given by name.
        tune_problems: problems (``"tune"`` stream, disjoint from evaluation) per grid point.
        tune_steps: horizon of the tuning runs (default ``steps``; e.g. tune at the training
            horizon 100 and evaluate over 200 steps).
        grid: learning rates tried for baselines without an explicit ``lr``.
        criterion: ``"final"``, ``"sum"`` or ``"test"`` (see :func:`tune_lr`).
        seed: run seed; problem seeds derive from it (:func:`problem_seeds`).
        test_steps: steps at which to measure the held-out loss (tasks with ``eval_loss``);
            default: ``tune_steps`` and ``steps``.
        confidence: interval coverage.
        device: where problems (and optimizers) live.
        threads: torch intra-op CPU threads during the runs (restored afterwards); ``None`` leaves
            the setting alone. Small optimizees run fastest on 1 thread, and on a busy machine
            several threads can be tens of times slower.
        verbose: show progress bars (only on a terminal).

    Returns:
        A :class:`Comparison` (``.table()``, ``.plot(path)``, ``.to_json()``).
    """
    specs = _as_specs(optimizers)
    for s in specs:
        s.validate()
    task_obj = resolve_task(task, task_args)
    if not (isinstance(problems, int) and problems >= 1):
        raise ValueError(f"problems must be a positive int, got {problems!r}")
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    tune_steps = steps if tune_steps is None else tune_steps
    if not (isinstance(tune_steps, int) and tune_steps >= 1):
        raise ValueError(f"tune_steps must be a positive int, got {tune_steps!r}")
    if criterion not in CRITERIA:
        raise ValueError(f"unknown tuning criterion {criterion!r}; expected one of {CRITERIA}")
    seeds = problem_seeds(seed, problems, "eval")
    needs_tuning = any(s.needs_tuning for s in specs)
    if needs_tuning and not (isinstance(tune_problems, int) and tune_problems >= 1):
        raise ValueError(f"tune_problems must be a positive int, got {tune_problems!r}")
    tune_seeds = problem_seeds(seed, tune_problems, "tune", exclude=seeds) if needs_tuning else []
    default_tsteps = {s for s in (tune_steps, steps) if s <= steps}
    tsteps = sorted(default_tsteps if test_steps is None else set(test_steps))
    _check_steps(tsteps, steps)

    with num_threads(threads):
        results = _run_all(
            specs,
            task_obj,
            task,
            steps,
            problems,
            seeds,
            tune_seeds,
            tune_steps,
            tsteps,
            grid,
            criterion,
            device,
            verbose,
        )
    return Comparison(
        task=_task_name(task_obj, task),
        task_args=task_config(task_obj) or dict(task_args or {}),
        steps=steps,
        tune_steps=tune_steps,
        seeds=seeds,
        tune_seeds=tune_seeds,
        criterion=criterion,
        confidence=confidence,
        results=results,
    )


def _run_all(
    specs: list[OptimizerSpec],
    task_obj: Task,
    task: str | Task,
    steps: int,
    problems: int,
    seeds: list[int],
    tune_seeds: list[int],
    tune_steps: int,
    tsteps: list[int],
    grid: Sequence[float],
    criterion: str,
    device: torch.device | str | None,
    verbose: bool,
) -> dict[str, OptimizerResult]:
    results: dict[str, OptimizerResult] = {}
    n_tuned = sum(s.needs_tuning for s in specs)
    total = len(specs) * problems + n_tuned * len(grid) * len(tune_seeds)
    with _progress(total, f"compare on {_task_name(task_obj, task)}", verbose) as bar:
        for spec in specs:
            tuning = None
            lr: float | None = spec.options.get("lr")
            if spec.needs_tuning:
                bar.set_postfix_str(f"tuning {spec.label}")
                tuning = tune_lr(
                    task_obj,
                    spec.build,
                    tune_steps,
                    tune_seeds,
                    grid=grid,
                    criterion=criterion,
                    device=device,
                    progress=bar,
                )
                lr = tuning.lr
            bar.set_postfix_str(spec.label)
            traj = run_trajectories(
                task_obj,
                spec.build(lr if spec.needs_tuning else None),
                seeds,
                steps,
                test_steps=tsteps,
                device=device,
                progress=bar,
            )
            if lr is None and spec.kind == "learned":
                lr = 1.0  # the rule as meta-trained
            results[spec.label] = OptimizerResult(
                spec.label, spec.text, None if lr is None else float(lr), tuning, traj
            )
    return results
