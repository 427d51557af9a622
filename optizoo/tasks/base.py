"""The optimizee contract: a :class:`Task` samples :class:`Problem` instances.

A problem is a loss over a dict of named parameter tensors. The same ``loss`` serves
meta-training (functional tensors that carry a graph) and evaluation (real ``nn.Parameter``s
driven by any ``torch.optim`` optimizer)::

    problem = task.sample(torch.Generator().manual_seed(0))
    params = {k: torch.nn.Parameter(v) for k, v in problem.params().items()}
    opt = torch.optim.Adam(params.values(), lr=1e-2)
    for step in range(100):
        opt.zero_grad()
        loss = problem.loss(params, step)
        loss.backward()
        opt.step()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn


class Problem:
    """One optimizee instance (or a batch of independent instances).

    Attributes:
        num_instances: how many independent problems ``loss`` sums over (the quadratic task
            batches many; most tasks have 1). Report ``loss / num_instances`` as the mean loss.
        model: optionally an ``nn.Module`` whose ``named_parameters()`` match :meth:`params`.
    """

    num_instances: int = 1
    model: nn.Module | None = None

    def params(self) -> dict[str, Tensor]:
        """Fresh initial parameters (new tensors on every call, same values)."""
        raise NotImplementedError

    def loss(self, params: dict[str, Tensor], step: int) -> Tensor:
        """Scalar training loss at optimization step ``step`` (0-based).

        Stochastic problems draw their minibatch deterministically from ``step`` and the
        problem's own seed, so two optimizers compared on one problem see the same batches.
        """
        raise NotImplementedError

    def eval_loss(self, params: dict[str, Tensor]) -> Tensor | None:
        """Held-out (test) loss, where the task has a test split; ``None`` otherwise."""
        return None


class Task:
    """A distribution over problems. Subclasses set ``name`` and implement :meth:`sample`."""

    name: ClassVar[str] = "task"

    def sample(
        self, generator: torch.Generator, device: torch.device | str | None = None
    ) -> Problem:
        """Draw one problem using ``generator`` (a CPU ``torch.Generator``) for all randomness."""
        raise NotImplementedError


def instance_count(problem: object) -> float:
    """How many independent problems ``problem.loss`` sums over (``num_instances``; 1 when the
    problem does not say). Reports and meta-objectives divide losses by it."""
    return float(getattr(problem, "num_instances", 1) or 1)


def per_instance_scale(problems: Sequence[object]) -> Tensor:
    """``1 / num_instances`` of each problem: float64 ``[len(problems)]``."""
    return torch.tensor([1.0 / instance_count(p) for p in problems], dtype=torch.float64)
