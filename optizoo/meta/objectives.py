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
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from optizoo.meta.config import VALIDATION_KEYS, check_meta_objective
from optizoo.meta.unroll import Layout, unroll_flat
from optizoo.rules.base import UpdateRule
from optizoo.tasks.base import Problem

__all__ = [
    "LOG_FLOOR",
    "VALIDATION_KEYS",
    "check_meta_objective",
    "log_ratios",
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
    value = sum(values) / len(values)
    return value if math.isfinite(value) else math.inf
