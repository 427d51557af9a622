"""Meta-objectives of :class:`~optizoo.meta.MetaTrainer`: what a truncation's meta-loss is and
what the best rule is chosen on.

Three objectives, selected by :attr:`MetaConfig.meta_objective <optizoo.meta.MetaConfig>`:

- ``None`` (the default): the **training loss** ``Σ_t w_t f(θ_t) / num_instances`` over each
  truncation (Andrychowicz et al. 2016); the best rule minimises the same sum over an
  ``eval_horizon``-step rollout of the held-out problems.
- ``"log_loss"``: the **log-ratio** ``log(f_t / f_0)`` of the training loss, weighted like the
  training loss and divided by the weights' sum: scale-free, so that in a mixture of tasks a
  language model's loss of 4 nats does not drown a regression's 0.01; the best rule minimises its
  mean over the held-out problems' ``eval_horizon``-step rollouts.
- ``{"validation_weight": a, "train_weight": b}``: a **validation** objective. Each
  truncation's meta-loss is ``a · mean_p eval_loss_p(θ_end) + b · (training loss above)``, where
  ``eval_loss`` is the problem's loss on its validation split (e.g. the ``mix`` task's
  ``validation=k``) at the parameters that end the truncation; the best rule minimises the
  held-out problems' validation loss at the end of every truncation of an ``eval_horizon``-step
  rollout, averaged over truncations. Meta-training for generalization: the rule is rewarded
  for a low held-out loss of the optimizee, not for fitting its training batches. With
  ``"log": true`` the validation term is the mean over problems of ``log eval_loss`` and the
  training term is the ``"log_loss"`` one: both scale-free, for mixtures of tasks.

Each is a small class (:class:`TrainingLoss`, :class:`LogLoss`, :class:`ValidationObjective`)
with ``meta_loss`` (one truncation, with the graph) and ``evaluate`` (the held-out selection
value); :func:`make_objective` builds the one a config value names, and the trainer calls it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from optizoo.meta.config import LOG_LOSS, VALIDATION_KEYS, check_meta_objective
from optizoo.meta.unroll import Layout, rollout, unroll_flat
from optizoo.rules.base import UpdateRule
from optizoo.tasks.base import Problem

__all__ = [
    "LOG_FLOOR",
    "VALIDATION_KEYS",
    "LogLoss",
    "MetaObjective",
    "TrainingLoss",
    "ValidationObjective",
    "check_meta_objective",
    "log_ratios",
    "make_objective",
    "validation_loss",
    "validation_losses",
    "validation_rollout",
    "validation_term",
]

#: losses are floored here before the log of the ``"log_loss"`` objective
LOG_FLOOR = 1e-6


def log_ratios(curves: Tensor) -> Tensor:
    """``log f_t − log f_0`` (``f`` floored at :data:`LOG_FLOOR`) of loss curves ``[T + 1, P]``:
    ``[T, P]``, what the ``"log_loss"`` objective averages."""
    logs = curves.clamp_min(LOG_FLOOR).log()
    return logs[1:] - logs[:1]


def validation_losses(problems: Sequence[Problem], layout: Layout, flat: Tensor) -> Tensor:
    """``problem.eval_loss`` of every problem at the parameters ``flat`` ``[n]``: ``[P]``
    (keeps the graph).

    Raises:
        ValueError: a problem has no validation split (``eval_loss`` returns ``None``).
    """
    losses = [p.eval_loss(v) for p, v in zip(problems, layout.views(flat))]
    if any(v is None for v in losses):
        raise ValueError(
            "a validation meta-objective needs problems with eval_loss (a validation split, e.g. "
            "the mix task's validation=k); use meta_objective=None for the training loss"
        )
    return torch.stack(losses)


def validation_loss(problems: Sequence[Problem], layout: Layout, flat: Tensor) -> Tensor:
    """Mean over problems of ``problem.eval_loss`` at the parameters ``flat`` ``[n]``
    (0-dim tensor, keeps the graph). Raises like :func:`validation_losses`."""
    return validation_losses(problems, layout, flat).mean()


def validation_term(losses: Tensor, log: bool) -> Tensor:
    """The validation term of the meta-loss from per-problem validation losses ``[P]``: their
    mean, or with ``log`` the mean of their logs (floored at :data:`LOG_FLOOR`): scale-free, so
    that a language model's 4 nats do not drown a regression's 0.01 in a mixture."""
    return losses.clamp_min(LOG_FLOOR).log().mean() if log else losses.mean()


def validation_rollout(
    rule: UpdateRule, problems: Sequence[Problem], horizon: int, unroll: int, log: bool = False
) -> float:
    """Roll ``rule`` out for ``horizon`` steps on ``problems`` (no meta-graph) and average the
    validation term (:func:`validation_term`) at the end of every ``unroll``-step truncation:
    the validation meta-loss, measured held out. ``inf`` if it is not finite."""
    problems = list(problems)
    plist = [p.params() for p in problems]
    layout = Layout(plist)
    flat = layout.flatten(plist).detach()
    state = None  # unroll_flat starts the rule's state (per-tensor rules need the layout)
    values = []
    for t in range(0, horizon, unroll):
        steps = min(unroll, horizon - t)
        _, flat, state = unroll_flat(rule, problems, layout, flat, state, steps=steps, start=t)
        flat = flat.detach()
        state = {k: v.detach() for k, v in state.items()}
        with torch.no_grad():
            values.append(float(validation_term(validation_losses(problems, layout, flat), log)))
    return _finite(sum(values) / len(values))


def _finite(value: float) -> float:
    return value if math.isfinite(value) else math.inf


class MetaObjective:
    """What a truncation's meta-loss is (:meth:`meta_loss`) and what the best rule is chosen on
    (:meth:`evaluate`). Subclasses implement both; :func:`make_objective` picks one."""

    def meta_loss(
        self,
        losses: Tensor,
        weights: Tensor,
        scale: Tensor,
        problems: Sequence[Problem],
        layout: Layout | None,
        flat: Tensor,
    ) -> tuple[Tensor, dict[str, float]]:
        """The meta-loss of one truncation (0-dim, with the graph) and extra values to log.

        Args:
            losses: ``[steps + 1, P]`` per-problem losses of the truncation (row 0 before its
                first update).
            weights: ``w_t`` of the truncation's steps ``[steps]`` (the dtype of ``losses``).
            scale: per-problem ``1 / num_instances`` factors ``[P]``.
            problems: the ``P`` problems; ``layout`` their parameters' layout (needed by the
                objectives that evaluate the problems, e.g. the validation one); ``flat`` the
                parameters after the truncation (with the graph).
        """
        raise NotImplementedError

    def evaluate(
        self,
        rule: UpdateRule,
        problems: Sequence[Problem],
        horizon: int,
        unroll: int,
        weights: Tensor,
    ) -> tuple[float, float]:
        """``(objective, final_loss)`` of ``rule`` rolled out for ``horizon`` steps on the
        held-out ``problems`` (no meta-graph); the best rule minimises ``objective``.
        ``weights``: ``w_t`` per step of the rollout ``[horizon]``; ``unroll``: the truncation
        length."""
        raise NotImplementedError


class TrainingLoss(MetaObjective):
    """``meta_objective=None``: ``Σ_t w_t f(θ_t) / num_instances`` over the truncation, mean over
    problems; selection on the same sum over the held-out rollout (``inf`` if it diverged)."""

    def train_term(self, losses: Tensor, weights: Tensor, scale: Tensor) -> Tensor:
        """The training-loss term of the meta-loss."""
        per_step = losses[1:] * scale.to(losses.dtype)  # [steps, P], per instance
        return (weights.unsqueeze(1) * per_step).sum(0).mean()

    def meta_loss(
        self,
        losses: Tensor,
        weights: Tensor,
        scale: Tensor,
        problems: Sequence[Problem],
        layout: Layout | None,
        flat: Tensor,
    ) -> tuple[Tensor, dict[str, float]]:
        return self.train_term(losses, weights, scale), {}

    def evaluate(
        self,
        rule: UpdateRule,
        problems: Sequence[Problem],
        horizon: int,
        unroll: int,
        weights: Tensor,
    ) -> tuple[float, float]:
        curves = rollout(rule, problems, horizon)  # [H + 1, P] float64
        objective = float((weights.unsqueeze(1) * curves[1:]).sum(0).mean())
        return _finite(objective), _finite(float(curves[-1].mean()))


class LogLoss(TrainingLoss):
    """``meta_objective="log_loss"``: the ``w_t``-weighted mean of ``log(f_t / f_0)`` over the
    truncation (``f`` floored at :data:`LOG_FLOOR`; ``f_0`` a constant), mean over problems;
    selection on the mean of ``log(f_t / f_0)`` over the held-out rollout (``inf`` if any loss
    is not finite), ``final_loss`` its last step's."""

    def train_term(self, losses: Tensor, weights: Tensor, scale: Tensor) -> Tensor:
        per = losses[1:].clamp_min(LOG_FLOOR).log() - losses[:1].detach().clamp_min(LOG_FLOOR).log()
        return (weights.unsqueeze(1) * per).sum(0).mean() / max(float(weights.sum()), 1e-12)

    def evaluate(
        self,
        rule: UpdateRule,
        problems: Sequence[Problem],
        horizon: int,
        unroll: int,
        weights: Tensor,
    ) -> tuple[float, float]:
        curves = rollout(rule, problems, horizon)  # [H + 1, P] float64
        rel = log_ratios(curves)
        bad = not bool(torch.isfinite(curves).all())
        value, final = float(rel.mean()), float(rel[-1].mean())
        return (math.inf if bad or not math.isfinite(value) else value), final


class ValidationObjective(MetaObjective):
    """``meta_objective={"validation_weight": a, "train_weight": b, "log": ...}``: ``a`` times the
    problems' validation term at the truncation's end (:func:`validation_term`) plus ``b`` times
    the training term (:class:`LogLoss`'s with ``log``, else :class:`TrainingLoss`'s); logs the
    mean ``validation_loss``. Selection on :func:`validation_rollout` (both values)."""

    def __init__(self, validation_weight: float, train_weight: float, log: bool = False) -> None:
        self.validation_weight = validation_weight
        self.train_weight = train_weight
        self.log = bool(log)
        self._train: TrainingLoss = LogLoss() if self.log else TrainingLoss()

    def meta_loss(
        self,
        losses: Tensor,
        weights: Tensor,
        scale: Tensor,
        problems: Sequence[Problem],
        layout: Layout | None,
        flat: Tensor,
    ) -> tuple[Tensor, dict[str, float]]:
        train_term = self._train.train_term(losses, weights, scale)
        if layout is None:
            raise ValueError("the validation meta-objective needs the problems' layout")
        per_problem = validation_losses(problems, layout, flat)
        val_term = validation_term(per_problem, self.log)
        loss = self.validation_weight * val_term + self.train_weight * train_term
        return loss, {"validation_loss": float(per_problem.detach().mean())}

    def evaluate(
        self,
        rule: UpdateRule,
        problems: Sequence[Problem],
        horizon: int,
        unroll: int,
        weights: Tensor,
    ) -> tuple[float, float]:
        value = validation_rollout(rule, problems, horizon, unroll, log=self.log)
        return value, value


def make_objective(value: Any) -> MetaObjective:
    """The objective a ``MetaConfig.meta_objective`` value names (validated like the config:
    ``None``, ``"log_loss"`` or a validation dict)."""
    value = check_meta_objective(value)
    if value is None:
        return TrainingLoss()
    if value == LOG_LOSS:
        return LogLoss()
    assert isinstance(value, dict)
    return ValidationObjective(
        value["validation_weight"], value["train_weight"], log=bool(value.get("log"))
    )
