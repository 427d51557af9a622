"""Batched problems: the losses of ``P`` problems of one task as one ``torch.func.vmap`` call.

The unroll keeps all problems' parameters in one flat vector, problem after problem. When the
problems share one loss function and one parameter layout (``P`` samples of one task), that
vector *is* a ``[P, per_problem]`` matrix, and each named parameter is a ``[P, *shape]`` view
of it, without a copy. The per-problem loss is then evaluated for all problems at once with
``vmap``: an MLP's ``P`` small ``addmm`` become one batched matrix product per layer, a conv
net's ``P`` small convolutions one grouped convolution, and autograd (first or second order)
runs through the batched ops.

A problem opts in by providing two methods (see :class:`~optizoo.tasks.mlp.ClassifierProblem`
and :class:`~optizoo.tasks.quadratic.QuadraticProblem`)::

    problem.stack_signature() -> Hashable      # equal for problems whose pure_loss is the same
    problem.loss_inputs(step) -> tuple[Tensor, ...]   # the data its loss reads at ``step``
    problem.pure_loss(params, *inputs) -> Tensor      # == problem.loss(params, step)

Inputs that are the same tensor object in every problem (a full-batch data set) are broadcast
(``in_dims=None``), the others stacked along a new leading dimension. A problem class may gather
the stacked inputs itself, faster, with a static ``stacked_loss_inputs(problems, step) ->
(inputs, in_dims)`` (classifiers: one ``index_select`` for all minibatches).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import torch
from torch import Tensor

__all__ = ["StackedLoss", "stacked_loss"]


def _signature(problem: object) -> Hashable | None:
    sig = getattr(problem, "stack_signature", None)
    if sig is None or not callable(getattr(problem, "pure_loss", None)):
        return None
    return sig()


class StackedLoss:
    """Per-problem losses ``[P]`` of ``P`` problems of one task from the flat vector ``[P·m]``.

    Build with :func:`stacked_loss` (which returns ``None`` for problems that cannot be
    stacked).
    """

    def __init__(
        self,
        problems: Sequence[object],
        names: Sequence[str],
        shapes: Sequence[torch.Size],
    ) -> None:
        self.problems = list(problems)
        self.names = list(names)
        self.shapes = [torch.Size(s) for s in shapes]
        self.sizes = [s.numel() for s in self.shapes]
        self.per_problem = sum(self.sizes)
        self._loss: Callable[..., Tensor] = self.problems[0].pure_loss  # type: ignore[attr-defined]

    def params(self, flat: Tensor) -> dict[str, Tensor]:
        """Each named parameter as a ``[P, *shape]`` view of ``flat``."""
        block = flat.view(len(self.problems), self.per_problem)
        return {
            name: piece.unflatten(1, shape) if len(shape) != 1 else piece
            for name, piece, shape in zip(self.names, block.split(self.sizes, dim=1), self.shapes)
        }

    def __call__(self, flat: Tensor, step: int) -> Tensor:
        """The ``P`` losses at ``step`` (``problem.loss(params, step)`` each), shape ``[P]``."""
        gather = getattr(self.problems[0], "stacked_loss_inputs", None)
        if gather is not None:
            inputs, dims = gather(self.problems, step)
        else:
            per = [p.loss_inputs(step) for p in self.problems]  # type: ignore[attr-defined]
            inputs, dims = [], []
            for column in zip(*per):
                if all(t is column[0] for t in column):
                    inputs.append(column[0])
                    dims.append(None)
                else:
                    inputs.append(torch.stack(column))
                    dims.append(0)
        fn = torch.func.vmap(self._loss, in_dims=(0, *dims))
        return fn(self.params(flat), *inputs)


def stacked_loss(
    problems: Sequence[object],
    names: Sequence[Sequence[str]],
    shapes: Sequence[Sequence[torch.Size]],
) -> StackedLoss | None:
    """A :class:`StackedLoss` for ``problems`` (with their parameter ``names``/``shapes`` per
    problem, in flat-vector order), or ``None`` when there is only one problem, when they do not
    all implement the protocol with one signature, or when their parameter layouts differ."""
    if len(problems) < 2:
        return None
    first = _signature(problems[0])
    if first is None or any(_signature(p) != first for p in problems[1:]):
        return None
    if any(list(n) != list(names[0]) for n in names) or any(
        list(s) != list(shapes[0]) for s in shapes
    ):
        return None
    return StackedLoss(problems, names[0], shapes[0])
