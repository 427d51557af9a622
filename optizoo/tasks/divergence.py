"""Run an optimization until its horizon or until it diverges: the one loop behind every curve.

:func:`optizoo.compare.run_trajectories` (any ``torch.optim`` optimizer on real parameters) and
:func:`optizoo.meta.rollout` (a rule on a flat vector, no meta-graph) both record losses with
:func:`run_until_divergence`, so a diverged run looks the same everywhere: ``inf`` from its first
non-finite loss on, and the steps after a detected divergence are never run.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from optizoo._validate import nonnegative_int, positive_int

__all__ = ["run_until_divergence"]


def run_until_divergence(
    loss_at: Callable[[int], Tensor],
    update: Callable[[int], None],
    steps: int,
    *,
    check_every: int,
) -> Tensor:
    """Record ``loss_at(t)`` for ``t = 0..steps``, calling ``update(t)`` between, until divergence.

    The loop is ``row_t = loss_at(t)`` (the loss before update ``t``; a scalar or one value per
    problem, shape ``[]`` or ``[P]``), then ``update(t)`` for ``t < steps``. Every
    ``check_every`` steps the last ``check_every`` rows are checked; if one is non-finite the run
    stops there (before ``update(t)``), so a diverged run costs at most ``check_every`` wasted
    steps and no non-finite parameters are ever updated further.

    Args:
        loss_at: ``t -> loss`` (detached or not; only its values are kept). At ``t = steps`` it
            is the final loss, after the last update.
        update: ``t -> None``: apply update ``t`` (e.g. ``optimizer.step()``).
        steps: number of updates (an int >= 0).
        check_every: steps between divergence checks (an int >= 1).

    Returns:
        float64 CPU tensor ``[steps + 1, *row_shape]``; every entry from a column's first
        non-finite value on, and every step not run, is ``inf``.
    """
    nonnegative_int(steps, "steps")
    positive_int(check_every, "check_every")
    rows: list[Tensor] = []
    for t in range(steps + 1):
        rows.append(loss_at(t))
        if t == steps:
            break
        if (t + 1) % check_every == 0 and not bool(
            torch.isfinite(torch.stack(rows[-check_every:])).all()
        ):
            break  # diverged: the remaining steps stay inf
        update(t)
    out = torch.stack(rows).to("cpu", torch.float64)
    full = torch.full((steps + 1, *out.shape[1:]), math.inf, dtype=torch.float64)
    full[: out.shape[0]] = out
    bad = ~torch.isfinite(full)
    if bool(bad.any()):  # inf from the first non-finite value of each column on
        full[bad.cumsum(0) > 0] = math.inf
    return full
