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

__all__ = ["num_threads", "problem_seeds", "resolve_task", "run_trajectories"]

def resolve_task(task: str | Task, task_args: Mapping[str, Any] | None = None) -> Task:
    """A :class:`Task` from a registry name (with ``task_args``) or an instance (no args)."""
    if isinstance(task, Task):
        if task_args:
            raise ValueError("task_args only apply when the task is given by name")
        return task
    if isinstance(task, str):
        from optizoo import tasks

        return tasks.get(task, **dict(task_args or {}))
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
    t_index = {s: i for i, s in enumerate(tsteps)}
    n = len(seeds)
    train = np.full((n, steps + 1), np.inf)
    test = np.full((n, len(tsteps)), np.inf) if tsteps else None
    has_test = bool(tsteps)
    start = time.perf_counter()
    for i, seed in enumerate(seeds):
        problem: Problem = task.sample(torch.Generator().manual_seed(int(seed)), device)
        params = {k: nn.Parameter(v.detach().clone()) for k, v in problem.params().items()}
        opt = factory(list(params.values()))
        scale = 1.0 / instance_count(problem)
        losses: list[Tensor] = []
        for t in range(steps + 1):
            if has_test and t in t_index:
                with torch.no_grad():
                    value = problem.eval_loss(params)
                if value is None:
                    if i == 0 and t == tsteps[0]:
                        has_test, test = False, None
                else:
                    assert test is not None
                    test[i, t_index[t]] = float(value) * scale
            if t == steps:
                with torch.no_grad():
                    losses.append(problem.loss(params, t).detach())
                break
            opt.zero_grad(set_to_none=True)
            loss = problem.loss(params, t)
            loss.backward()
            losses.append(loss.detach())
            if (t + 1) % 32 == 0 and not bool(torch.isfinite(torch.stack(losses[-32:])).all()):
                break  # diverged: the remaining entries stay inf
            opt.step()
        curve = torch.stack(losses).to("cpu", torch.float64).numpy() * scale
        bad = np.flatnonzero(~np.isfinite(curve))
        first_bad = int(bad[0]) if bad.size else None  # a stopped run always has one
        train[i, : curve.size if first_bad is None else first_bad] = curve[:first_bad]
        if test is not None:
            row = np.where(np.isfinite(test[i]), test[i], np.inf)
            if first_bad is not None:
                row[[j for j, s in enumerate(tsteps) if s >= first_bad]] = np.inf
            test[i] = row
        if progress is not None:
            progress.update(1)
    return Trajectories(
        train, test, tsteps if test is not None else [], time.perf_counter() - start
    )


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
