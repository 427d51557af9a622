"""A task that samples from a weighted mixture of tasks, with random rescaling of objectives.

Meta-training on one task teaches a learned optimizer that task's scales; published optimizers
that generalise were trained on many tasks at once and on randomly rescaled objectives (RNNprop,
Lv et al. 2017; Metz et al. 2020)::

    task = optizoo.tasks.build("mix", tasks=[
        {"task": "mlp", "args": {"hidden": [20], "activation": "sigmoid"}, "weight": 2},
        {"task": "mlp", "args": {"hidden": [40], "activation": "relu", "batch_size": 64}},
        {"task": "quadratic"},
    ], rescale=[0.1, 10.0])

Each :meth:`MixTask.sample` draws, from the generator: the component (by ``weight``), a scale
``s`` log-uniform in ``rescale``, then the component's problem. The wrapped problem's ``loss``
is ``s · f`` (what the optimizer sees: the gradient is rescaled by ``s``), and its
``num_instances`` is ``s · n · f₀`` where ``n`` is the component's ``num_instances`` and ``f₀``
is the component's initial loss per instance when ``normalize=True`` (1 otherwise). The
meta-trainer and :func:`optizoo.meta.unroll.rollout` divide losses by ``num_instances``: the
meta-objective therefore sees the *unscaled* loss, relative to the initial loss with
``normalize`` (so that tasks of very different loss magnitudes weigh alike in one meta-batch).
``eval_loss`` (the test split) is never rescaled.

``validation=k`` (every supervised task: classifiers, autoencoder, transformer LM, RNN, tabular)
moves the last ``k`` training examples (or, for a float in (0, 1), that fraction) into the
problem's ``eval_loss`` split: the problem then trains on the remaining examples and its
``eval_loss`` is a *validation* loss. A meta-objective on it (see
``scripts/train_lstm_generalist.py``) rewards generalization without ever touching the test split
that :mod:`optizoo.compare.evaluate` reports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from optizoo.tasks.base import Problem, Task, instance_count

__all__ = ["MixTask", "ScaledProblem"]


class ScaledProblem(Problem):
    """A problem whose training loss is multiplied by ``scale`` (see the module docstring).

    Attributes:
        inner: the wrapped problem.
        scale: the factor ``s`` on the training loss.
        component: index of the mixture component it was drawn from.
    """

    def __init__(self, inner: Problem, scale: float, *, component: int, norm: float = 1.0) -> None:
        self.inner = inner
        self.scale = float(scale)
        self.component = int(component)
        self.norm = float(norm)
        self.num_instances = instance_count(inner) * self.scale * self.norm

    @property
    def model(self) -> nn.Module | None:  # type: ignore[override]
        return getattr(self.inner, "model", None)

    def params(self) -> dict[str, Tensor]:
        return self.inner.params()

    def loss(self, params: dict[str, Tensor], step: int) -> Tensor:
        return self.inner.loss(params, step) * self.scale

    def eval_loss(self, params: dict[str, Tensor]) -> Tensor | None:
        return self.inner.eval_loss(params)


class MixTask(Task):
    """Samples problems from a weighted mixture of registered tasks, randomly rescaled.

    Args:
        tasks: components, each ``{"task": NAME, "args": {...}, "weight": w}`` (``args`` and
            ``weight``, default 1, optional).
        rescale: ``[lo, hi]``: the training loss is multiplied by ``s ~ logUniform(lo, hi)``;
            ``[1, 1]`` disables rescaling.
        normalize: divide each problem's meta-objective by its initial loss (one forward pass
            at sampling time).
        validation: training examples moved into a validation split that replaces the test
            split of every supervised problem: a count, or a fraction in (0, 1) of each
            problem's training examples (0: keep the task's own split).
    """

    name: ClassVar[str] = "mix"

    def __init__(
        self,
        tasks: Sequence[Mapping[str, Any]],
        rescale: Sequence[float] = (1.0, 1.0),
        normalize: bool = False,
        validation: int | float = 0,
    ) -> None:
        from optizoo import tasks as registry

        if isinstance(tasks, (str, bytes)) or not isinstance(tasks, Sequence) or not tasks:
            raise ValueError(
                "tasks must be a non-empty list of {'task': NAME, 'args': {...}, 'weight': w}"
            )
        self.components: list[dict[str, Any]] = []
        self._tasks: list[Task] = []
        for i, spec in enumerate(tasks):
            if not isinstance(spec, Mapping) or "task" not in spec:
                raise ValueError(
                    f"mixture component {i} must be a dict with a 'task' name, got {spec!r}"
                )
            unknown = set(spec) - {"task", "args", "weight"}
            if unknown:
                raise ValueError(
                    f"mixture component {i}: unknown keys {sorted(unknown)}; accepted: task, args, weight"
                )
            if spec["task"] == "mix":
                raise ValueError("a mixture cannot contain another 'mix' task")
            weight = spec.get("weight", 1.0)
            if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight > 0):
                raise ValueError(f"mixture component {i}: weight must be positive, got {weight!r}")
            args = dict(spec.get("args") or {})
            self._tasks.append(registry.build(spec["task"], **args))
            self.components.append({"task": spec["task"], "args": args, "weight": float(weight)})
        if (
            isinstance(rescale, (str, bytes))
            or not isinstance(rescale, Sequence)
            or len(rescale) != 2
            or not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in rescale)
            or rescale[0] > rescale[1]
        ):
            raise ValueError(f"rescale must be [lo, hi] with 0 < lo <= hi, got {rescale!r}")
        self.rescale = (float(rescale[0]), float(rescale[1]))
        self.normalize = bool(normalize)
        fraction = isinstance(validation, float) and 0.0 < validation < 1.0
        count = isinstance(validation, int) and not isinstance(validation, bool) and validation >= 0
        if not (fraction or count):
            raise ValueError(
                "validation must be a non-negative int (examples) or a float in (0, 1) (a "
                f"fraction of each problem's training examples), got {validation!r}"
            )
        self.validation = validation
        w = torch.tensor([c["weight"] for c in self.components], dtype=torch.float64)
        self._cdf = (w.cumsum(0) / w.sum()).tolist()

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-friendly)."""
        return {
            "tasks": [dict(c) for c in self.components],
            "rescale": list(self.rescale),
            "normalize": self.normalize,
            "validation": self.validation,
        }

    def __repr__(self) -> str:
        names = ", ".join(c["task"] for c in self.components)
        return f"MixTask([{names}], rescale={list(self.rescale)})"

    def sample(
        self, generator: torch.Generator, device: torch.device | str | None = None
    ) -> ScaledProblem:
        """Draw the component, the scale, then the component's problem, all from ``generator``."""
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        u, v = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
        index = next(i for i, c in enumerate(self._cdf) if u <= c or i == len(self._cdf) - 1)
        lo, hi = self.rescale
        scale = math.exp(math.log(lo) + v * (math.log(hi) - math.log(lo)))
        inner = self._tasks[index].sample(generator, device)
        if self.validation:
            inner = _with_validation_split(inner, self.validation)
        norm = 1.0
        if self.normalize:
            with torch.no_grad():
                f0 = float(inner.loss(inner.params(), 0)) / instance_count(inner)
            norm = f0 if math.isfinite(f0) and f0 > 0 else 1.0
        return ScaledProblem(inner, scale, component=index, norm=norm)


def _with_validation_split(problem: Problem, validation: int | float) -> Problem:
    """``problem.validation_split(k)``: ``k = validation`` examples, or that fraction of the
    problem's training examples (at least 1) when ``validation`` is a float in (0, 1)."""
    split = getattr(problem, "validation_split", None)
    if split is None:
        raise ValueError(
            "validation splits need supervised problems (mlp, conv, autoencoder, transformer_lm, "
            f"rnn, tabular), got {type(problem).__name__}"
        )
    if isinstance(validation, float):
        n = int(problem.num_train)  # type: ignore[attr-defined]
        return split(max(1, round(validation * n)))  # type: ignore[no-any-return]
    return split(validation)  # type: ignore[no-any-return]
