"""Run one optimizer on a list of seeded problems and record its loss curves.

Problem ``i`` is ``task.sample(torch.Generator().manual_seed(seeds[i]))``, so every optimizer
run on the same seeds sees the same problems (and minibatches). The evaluation and tuning seeds
come from :func:`optizoo.seeds.problem_seeds` (streams ``"eval"`` and ``"tune"``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from optizoo.compare.records import Trajectories
from optizoo.compare.specs import OptimizerFactory
from optizoo.seeds import problem_seeds  # re-exported: the seed streams live in optizoo.seeds
from optizoo.tasks.base import Problem, Task, instance_count
from optizoo.tasks.divergence import run_until_divergence

__all__ = ["num_threads", "problem_seeds", "resolve_task", "run_trajectories"]

#: steps between divergence checks of a run (a diverged run stops within this many steps)
_CHECK_EVERY = 32


def resolve_task(task: str | Task, task_args: Mapping[str, Any] | None = None) -> Task:
    """A :class:`Task` from a registry name (with ``task_args``) or an instance (no args)."""
    if isinstance(task, Task):
        if task_args:
            raise ValueError("task_args only apply when the task is given by name")
        return task
    if isinstance(task, str):
        from optizoo import tasks

        return tasks.build(task, **dict(task_args or {}))
    if hasattr(task, "sample"):
        return task  # duck-typed task
    raise TypeError(
        f"task must be a registry name or an optizoo.tasks.Task, got {type(task).__name__}"
    )


def _task_name(task: Task, given: str | Task) -> str:
    return given if isinstance(given, str) else getattr(task, "name", type(task).__name__)


def _check_steps(test_steps: Iterable[int], steps: int) -> list[int]:
    out = sorted({int(s) for s in test_steps})
    bad = [s for s in out if not 0 <= s <= steps]
    if bad:
        raise ValueError(f"test steps {bad} are outside 0..{steps}")
    return out


def run_trajectories(
    task: Task,
    factory: OptimizerFactory,
    seeds: Sequence[int],
    steps: int,
    *,
    test_steps: Iterable[int] = (),
    device: torch.device | str | None = None,
    progress: Any = None,
) -> Trajectories:
    """Optimize problem ``task.sample(Generator().manual_seed(s))`` for each ``s`` in ``seeds``.

    Each run builds real ``nn.Parameter``s from ``problem.params()``, then repeats
    ``zero_grad; loss = problem.loss(params, t); backward; step`` for ``t = 0..steps-1``, and finally
    evaluates ``problem.loss(params, steps)`` without a step. ``problem.eval_loss`` is measured at
    ``test_steps`` (before the step of that index). ``progress`` (a tqdm bar) is advanced once
    per problem.
    """
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    tsteps = _check_steps(test_steps, steps)
    n = len(seeds)
    train = np.full((n, steps + 1), np.inf)
    test = np.full((n, len(tsteps)), np.inf) if tsteps else None
    has_test = bool(tsteps)
    start = time.perf_counter()
    for i, seed in enumerate(seeds):
        problem: Problem = task.sample(torch.Generator().manual_seed(int(seed)), device)
        curve, row = _run_problem(
            problem, factory, steps, tsteps if has_test else [], probe=(i == 0)
        )
        train[i] = curve
        if i == 0 and has_test and row is None:  # the task has no test split
            has_test, test = False, None
        if test is not None and row is not None:
            bad = np.flatnonzero(~np.isfinite(curve))
            if bad.size:  # measured after the divergence: not a result
                row[[j for j, s in enumerate(tsteps) if s >= int(bad[0])]] = np.inf
            test[i] = row
        if progress is not None:
            progress.update(1)
    return Trajectories(
        train, test, tsteps if test is not None else [], time.perf_counter() - start
    )


def _run_problem(
    problem: Problem,
    factory: OptimizerFactory,
    steps: int,
    tsteps: list[int],
    *,
    probe: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One run of :func:`run_trajectories`: the per-instance loss curve ``[steps + 1]`` and the
    test losses at ``tsteps`` (``inf`` where not measured). With ``probe``, ``None`` instead of
    the test losses when ``eval_loss`` says the task has no test split at the first test step."""
    params = {k: nn.Parameter(v.detach().clone()) for k, v in problem.params().items()}
    opt = factory(list(params.values()))
    scale = 1.0 / instance_count(problem)
    t_index = {s: j for j, s in enumerate(tsteps)}
    test = np.full(len(tsteps), np.inf)
    measuring, no_split = bool(tsteps), False

    def loss_at(t: int) -> Tensor:
        nonlocal measuring, no_split
        if measuring and t in t_index:
            with torch.no_grad():
                value = problem.eval_loss(params)
            if value is None:
                if probe and t == tsteps[0]:
                    measuring, no_split = False, True
            else:
                test[t_index[t]] = float(value) * scale
        if t == steps:
            with torch.no_grad():
                return problem.loss(params, t).detach()
        opt.zero_grad(set_to_none=True)
        loss = problem.loss(params, t)
        loss.backward()
        return loss.detach()

    curve = run_until_divergence(loss_at, lambda t: opt.step(), steps, check_every=_CHECK_EVERY)
    test = np.where(np.isfinite(test), test, np.inf)
    return curve.numpy() * scale, None if no_split else test


@contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` (``None``: unchanged), then restore."""
    if n is None:
        yield
        return
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"threads must be a positive int or None, got {n!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
