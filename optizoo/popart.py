"""Pop-Art: adaptive target normalization that preserves outputs (van Hasselt et al. 2016).

"Learning values across many orders of magnitude" (NeurIPS 2016) trains a network whose last
layer predicts *normalized* targets ``(Y - mu) / sigma``, where ``mu`` and ``sigma`` are running
statistics of the targets, one pair per output (task). Two pieces:

- **ART** (adaptively rescaling targets): with step size ``beta``, per task,
  ``mu <- (1 - beta) mu + beta Y``, ``nu <- (1 - beta) nu + beta Y**2`` and
  ``sigma = sqrt(max(nu - mu**2, eps))``.
- **POP** (preserving outputs precisely): when ``(mu, sigma)`` become ``(mu', sigma')`` the last
  linear layer is rescaled in place, ``W' = (sigma / sigma') W`` and
  ``b' = (sigma b + mu - mu') / sigma'``, so that the *unnormalized* output
  ``sigma (W h + b) + mu`` is unchanged for every input ``h``.

This module provides

- :class:`PopArtHead`, the normalized linear layer with its statistics (Algorithm 1 of the paper
  when trained with plain SGD), and
- :func:`normalized_sgd_step` / :func:`normalized_sgd_gradients`, Algorithm 2 of the paper
  ("SGD on squared loss with normalized updates"): an *unnormalized* linear last layer trained by
  plain SGD while the lower layers' update is rescaled by ``Sigma^-2``. With plain SGD both
  algorithms make identical lower-layer updates and identical unnormalized predictions
  (Proposition 3); with momentum or Adam they do not.

Numerics. The second moment ``nu`` is not stored: the head tracks the variance
``var = nu - mu**2`` directly with the exact recursion
``var' = (1 - beta) var + beta s2 + beta (1 - beta) (m1 - mu)**2`` (``m1``, ``s2``: mean and
variance of the targets of one update), a sum of non-negative terms, so that float32 statistics
of targets far from zero do not lose the variance to the cancellation in ``nu - mu**2``.
``nu`` is available as a derived property.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optizoo._validate import learning_rate

__all__ = ["PopArtHead", "normalized_sgd_gradients", "normalized_sgd_step"]

TaskArg = int | Tensor | None


def _acc_dtype(t: Tensor) -> torch.dtype:
    """float64 for statistics arithmetic where the device supports it."""
    return torch.float32 if t.device.type == "mps" else torch.float64


class PopArtHead(nn.Module):
    """A linear layer predicting normalized targets, with Pop-Art running statistics per output.

    Each of the ``out_features`` outputs is an independent *task* with its own statistics
    ``mu``, ``sigma`` (a single-output regression is the case ``out_features=1``).

    Args:
        in_features: size ``H`` of the features ``h`` from the lower layers.
        out_features: number of outputs (tasks), ``K``.
        beta: step size of the running statistics, ``0 < beta <= 1``. One call to
            :meth:`update_stats` is one step (see there for batches).
        eps: floor on the variance (squared target units): ``sigma = sqrt(max(var, eps))``.
        debias: use the step size ``beta_t = beta / (1 - (1 - beta)**t)`` for a task's ``t``-th
            update (``t`` counted per task in :attr:`count`), like Adam's bias correction. The
            first update then sets ``mu`` to the targets' mean exactly, and ``mu``, ``nu`` are
            at all times the normalized exponentially weighted averages of the targets seen, so
            the initial statistics do not linger for ``~1/beta`` updates. Off by default, as in
            the paper, where ``mu = 0``, ``sigma = 1`` initially.
        device, dtype: of the parameters and statistics.

    Parameters and buffers (all in ``state_dict``):
        weight ``[K, H]``, bias ``[K]``: the normalized layer ``g(h) = W h + b``.
        mu ``[K]``: running mean of each task's targets (initially 0).
        var ``[K]``: running variance ``nu - mu**2`` (initially 1, so ``sigma = 1``).
        count ``[K]`` (int64): number of updates each task's statistics received.

    Training (Algorithm 1: update statistics first, then predict with the rescaled layer)::

        head.update_stats(y)                       # ART + POP, in place
        pred = head(lower(x))                      # normalized prediction, [B, K]
        loss = F.mse_loss(pred, head.normalize(y)) # target normalized with the NEW statistics
        opt.zero_grad(); loss.backward(); opt.step()
        value = head.denormalize(pred.detach())    # unnormalized, same as head(h, normalized=False)

    A prediction computed *before* :meth:`update_stats` belongs to the old statistics: do not
    put it in a loss against targets normalized afterwards (autograd refuses to backpropagate
    through it when the features require grad, since ``weight`` was changed in place).

    Optimizer state is not rescaled by POP: momentum buffers, Adam moments and a learned
    optimizer's hidden state keep the values they had in the old normalized units. With plain
    SGD this is exact (Proposition 3); with stateful optimizers the first steps after a large
    change of the statistics carry stale state. See ``docs/popart.md``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int = 1,
        *,
        beta: float = 3e-4,
        eps: float = 1e-4,
        debias: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(beta, (int, float)) or not (0.0 < float(beta) <= 1.0):
            raise ValueError(
                f"beta must be a float in (0, 1] (the statistics' step size), got {beta!r}"
            )
        if not isinstance(eps, (int, float)) or not (float(eps) > 0.0 and math.isfinite(eps)):
            raise ValueError(f"eps must be a positive finite float (variance floor), got {eps!r}")
        factory = {"device": device, "dtype": dtype}
        self.in_features = in_features
        self.out_features = out_features
        self.beta = float(beta)
        self.eps = float(eps)
        self.debias = bool(debias)
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory))
        # statistics live in float64 whatever the layer's dtype (float32 on MPS, which has no
        # float64): the variance of float32 targets near 1e20 overflows float32
        probe = torch.empty(0, device=device)
        stats = {"device": probe.device, "dtype": _acc_dtype(probe)}
        self.register_buffer("mu", torch.zeros(out_features, **stats))
        self.register_buffer("var", torch.ones(out_features, **stats))
        self.register_buffer("count", torch.zeros(out_features, dtype=torch.int64, device=device))
        self.reset_parameters()

    # ------------------------------------------------------------------ set-up
    def reset_parameters(self) -> None:
        """Initialize ``weight``, ``bias`` like ``nn.Linear`` and reset the statistics."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1.0 / math.sqrt(self.in_features)
        nn.init.uniform_(self.bias, -bound, bound)
        self.reset_stats()

    @torch.no_grad()
    def reset_stats(self) -> None:
        """Statistics back to ``mu = 0``, ``sigma = 1``, ``count = 0`` (weights untouched)."""
        self.mu.zero_()
        self.var.fill_(1.0)
        self.count.zero_()

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"beta={self.beta:g}, eps={self.eps:g}, debias={self.debias}"
        )

    # ------------------------------------------------------------------ statistics
    @property
    def sigma(self) -> Tensor:
        """Scale per task, ``sqrt(max(var, eps))``, shape ``[K]`` (target units)."""
        return self.var.clamp_min(self.eps).sqrt()

    @property
    def nu(self) -> Tensor:
        """Running second moment per task, ``var + mu**2``, shape ``[K]`` (derived, not stored)."""
        return self.var + self.mu * self.mu

    # ------------------------------------------------------------------ forward
    def forward(self, features: Tensor, *, normalized: bool = True, task: TaskArg = None) -> Tensor:
        """Predict from ``features`` of shape ``[..., H]``.

        Args:
            features: output of the lower layers, ``[..., H]``.
            normalized: ``True`` (default) gives ``W h + b``, the normalized prediction that is
                trained against :meth:`normalize` targets; ``False`` gives the unnormalized
                ``sigma * (W h + b) + mu`` in target units.
            task: ``None`` returns all ``K`` outputs, shape ``[..., K]``. An int ``k`` returns
                output ``k``, shape ``[...]``; an integer tensor of shape ``[...]`` returns each
                row's own task's output, shape ``[...]``.
        """
        if features.shape[-1:] != (self.in_features,):
            raise ValueError(
                f"features must have shape [..., {self.in_features}], got {tuple(features.shape)}"
            )
        out = F.linear(features, self.weight, self.bias)
        if task is not None:
            out = self._select(out, task)
        return out if normalized else self.denormalize(out, task=task)

    def _select(self, out: Tensor, task: int | Tensor) -> Tensor:
        if isinstance(task, int) and not isinstance(task, bool):
            self._check_task_int(task)
            return out[..., task]
        task = self._check_task_tensor(task, out.shape[:-1], "features.shape[:-1]")
        return out.gather(-1, task.unsqueeze(-1)).squeeze(-1)

    # ------------------------------------------------------------------ (de)normalization
    def normalize(self, targets: Tensor, task: TaskArg = None) -> Tensor:
        """``(targets - mu) / sigma`` with the current statistics; same shape as ``targets``.

        ``task=None``: ``targets`` is ``[..., K]``. An int ``k``: every element belongs to task
        ``k``. An integer tensor of ``targets``' shape: per-element task ids.
        """
        mu, sigma = self._stats_for(targets, task, "targets")
        return (targets - mu) / sigma

    def denormalize(self, outputs: Tensor, task: TaskArg = None) -> Tensor:
        """``sigma * outputs + mu``: normalized predictions back in target units.

        Shapes and ``task`` as in :meth:`normalize`.
        """
        mu, sigma = self._stats_for(outputs, task, "outputs")
        return outputs * sigma + mu

    def _stats_for(self, values: Tensor, task: TaskArg, what: str) -> tuple[Tensor, Tensor]:
        if not isinstance(values, Tensor):
            raise TypeError(f"{what} must be a Tensor, got {type(values).__name__}")
        sigma = self.sigma
        if task is None:
            if values.shape[-1:] != (self.out_features,):
                raise ValueError(
                    f"{what} must have shape [..., {self.out_features}] (one column per task) "
                    f"when task is None, got {tuple(values.shape)}"
                    + ("; add a trailing dim with .unsqueeze(-1)" if self.out_features == 1 else "")
                )
            return self._cast(self.mu, values), self._cast(sigma, values)
        if isinstance(task, int) and not isinstance(task, bool):
            self._check_task_int(task)
            return self._cast(self.mu[task], values), self._cast(sigma[task], values)
        task = self._check_task_tensor(task, values.shape, f"{what}.shape")
        return self._cast(self.mu[task], values), self._cast(sigma[task], values)

    def _cast(self, stat: Tensor, values: Tensor) -> Tensor:
        """The float64 statistic in the dtype of ``values`` (the layer's dtype for integers)."""
        return stat.to(values.dtype if values.is_floating_point() else self.weight.dtype)

    def _check_task_int(self, task: int) -> None:
        if not 0 <= task < self.out_features:
            raise ValueError(f"task {task} out of range for {self.out_features} task(s)")

    def _check_task_tensor(self, task: Tensor, shape: torch.Size, what: str) -> Tensor:
        if not isinstance(task, Tensor):
            raise TypeError(
                f"task must be None, an int or an integer Tensor of task ids, got "
                f"{type(task).__name__}"
            )
        if task.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise TypeError(f"task ids must be an integer tensor, got dtype {task.dtype}")
        if task.shape != shape:
            raise ValueError(
                f"task ids must have the shape of {what} {tuple(shape)} (one id per element), "
                f"got {tuple(task.shape)}"
            )
        task = task.to(device=self.mu.device, dtype=torch.int64)
        if task.numel() and not torch.compiler.is_compiling():
            lo, hi = int(task.min()), int(task.max())
            if lo < 0 or hi >= self.out_features:
                raise ValueError(
                    f"task ids must lie in [0, {self.out_features}), got values in [{lo}, {hi}]"
                )
        return task

    # ------------------------------------------------------------------ ART + POP
    @torch.no_grad()
    def update_stats(
        self, targets: Tensor, task: TaskArg = None, *, preserve_outputs: bool = True
    ) -> None:
        """Move the statistics towards ``targets`` (ART) and rescale the layer in place (POP).

        One call is one step of size ``beta`` per task that has samples in ``targets``, taken
        towards the batch's mean ``m1`` and second moment (``mu <- mu + beta (m1 - mu)``, the
        variance by the exact recursion in the module docstring). Pass one sample per call for
        the per-sample updates of the paper's Algorithm 1. Tasks without samples are left
        exactly as they were (statistics, count, weights), never ``nan``.

        Args:
            targets: unnormalized targets. ``task=None``: shape ``[..., K]``, every task gets
                all rows. An int ``k``: any shape, all elements belong to task ``k``. An integer
                tensor of ``targets``' shape: the task id of each element.
            task: see ``targets``.
            preserve_outputs: ``True`` (Pop-Art) rescales ``weight`` and ``bias`` in place so that
                ``sigma * (W h + b) + mu`` is unchanged for every ``h``; ``False`` is ART alone
                (the normalized layer is left as is, so unnormalized outputs jump).

        ``weight`` and ``bias`` are modified in place (``mul_``/``copy_``): the Parameter objects
        stay the same, so optimizers holding them keep working; their ``.grad`` is untouched.
        Non-finite targets are refused with a ``ValueError`` (one ``nan`` would poison a task's
        statistics for good); that check, like the task-id range check, is skipped while
        compiling.
        """
        if not isinstance(targets, Tensor):
            raise TypeError(f"targets must be a Tensor, got {type(targets).__name__}")
        if not (targets.is_floating_point() or targets.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"targets must be a real tensor, got dtype {targets.dtype}")
        acc = _acc_dtype(self.mu)
        y, mask = self._rows_and_mask(targets, task, acc)  # [N, K] each
        if not torch.compiler.is_compiling() and not bool(torch.isfinite(y).all()):
            raise ValueError(
                "targets contain nan or inf; drop those samples before update_stats "
                "(they would make the statistics nan)"
            )
        n = mask.sum(0)  # [K] samples per task
        has = n > 0
        n_safe = n.clamp_min(1.0)
        m1 = (mask * y).sum(0) / n_safe
        dev = torch.where(mask > 0, y - m1, torch.zeros((), dtype=acc, device=y.device))
        s2 = (dev * dev).sum(0) / n_safe  # population variance of the batch, >= 0

        mu_old = self.mu.to(acc)
        var_old = self.var.to(acc)
        count_new = self.count + has.to(torch.int64)
        beta = torch.full_like(mu_old, self.beta)
        if self.debias:
            # beta_t = beta / (1 - (1 - beta)^t); t >= 1 where the task has samples
            t = count_new.clamp_min(1).to(acc)
            beta = beta / -torch.expm1(t * math.log1p(-self.beta)) if self.beta < 1 else beta
        beta = torch.where(has, beta, torch.zeros_like(beta))
        diff = m1 - mu_old
        mu_new = mu_old + beta * diff
        var_new = (1.0 - beta) * var_old + beta * s2 + beta * (1.0 - beta) * diff * diff
        if not torch.compiler.is_compiling():
            self._check_representable(mu_new, var_new)

        if preserve_outputs:
            sigma_old = var_old.clamp_min(self.eps).sqrt()
            sigma_new = var_new.clamp_min(self.eps).sqrt()
            ratio = sigma_old / sigma_new  # exactly 1 for tasks without samples
            shift = (mu_old - mu_new) / sigma_new  # exactly 0 for tasks without samples
            self.weight.mul_(ratio.to(self.weight.dtype).unsqueeze(-1))
            new_bias = self.bias.to(acc) * ratio + shift
            self.bias.copy_(new_bias)
        self.mu.copy_(mu_new)
        self.var.copy_(var_new)
        self.count.copy_(count_new)

    def _check_representable(self, mu: Tensor, var: Tensor) -> None:
        """Refuse (before anything changes) statistics that would overflow the buffers' dtype or
        the layer's dtype (the unnormalized output ``sigma * g + mu`` is computed in it)."""
        sigma = var.clamp_min(self.eps).sqrt()
        for dtype, what in ((self.var.dtype, "statistics"), (self.weight.dtype, "layer")):
            ok = (
                bool(torch.isfinite(mu.to(dtype)).all())
                and bool(torch.isfinite(sigma.to(dtype)).all())
                and (what == "layer" or bool(torch.isfinite(var.to(dtype)).all()))
            )
            if not ok:
                raise ValueError(
                    f"targets this large (running mean up to {float(mu.abs().max()):.3g}, scale "
                    f"{float(sigma.max()):.3g}) overflow the head's {what} dtype {dtype}; nothing "
                    "was updated. Use a wider dtype (PopArtHead(..., dtype=torch.float32 or "
                    "torch.float64)) or rescale the targets"
                )

    def _rows_and_mask(
        self, targets: Tensor, task: TaskArg, acc: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        """Targets as ``[N, K]`` rows plus a 0/1 mask of which (row, task) entries are samples."""
        K = self.out_features
        dev = self.mu.device
        y = targets.to(device=dev, dtype=acc)
        if task is None:
            if y.shape[-1:] != (K,):
                raise ValueError(
                    f"targets must have shape [..., {K}] (one column per task) when task is None, "
                    f"got {tuple(targets.shape)}"
                    + ("; add a trailing dim with .unsqueeze(-1)" if K == 1 else "")
                    + " — or pass per-element task ids with task="
                )
            y = y.reshape(-1, K)
            return y, torch.ones_like(y)
        if isinstance(task, int) and not isinstance(task, bool):
            self._check_task_int(task)
            ids = torch.full(y.shape, task, dtype=torch.int64, device=dev)
        else:
            ids = self._check_task_tensor(task, targets.shape, "targets.shape")
        y = y.reshape(-1, 1)
        ids = ids.reshape(-1, 1)
        mask = (ids == torch.arange(K, device=dev)).to(acc)  # [N, K] one-hot
        return y.expand(-1, K), mask


# ---------------------------------------------------------------------- Algorithm 2


def normalized_sgd_gradients(
    lower_params: Iterable[Tensor],
    weight: Tensor,
    bias: Tensor | None,
    hidden: Tensor,
    targets: Tensor,
    sigma: Tensor,
    *,
    reduction: str = "mean",
) -> tuple[list[Tensor | None], Tensor, Tensor | None]:
    """The gradients of Algorithm 2 (SGD on squared loss with normalized updates).

    The last layer is an ordinary *unnormalized* linear layer ``f(h) = W h + b`` (target units).
    With ``delta = W h + b - Y`` and ``L`` the squared error (``F.mse_loss`` with
    ``reduction``):

    - the upper layer gets the plain gradient of ``L(delta)`` with respect to ``W`` and ``b``;
    - the lower layers get the gradient of ``L(Sigma^-1 delta)`` with respect to their
      parameters with ``W`` held constant, i.e. ``J^T (Sigma^-1 W)^T Sigma^-1 dL/ddelta``: the
      backpropagated error is scaled by ``Sigma^-2``.

    Args:
        lower_params: parameters of the lower layers (the ``theta`` of ``h = h_theta(x)``).
        weight: ``[K, H]`` and bias ``[K]`` (or ``None``) of the unnormalized last layer.
        hidden: ``h_theta(x)``, shape ``[B, H]`` (or ``[..., H]``), still attached to the graph
            of ``lower_params``.
        targets: unnormalized targets ``Y``, shape ``[..., K]`` matching the predictions.
        sigma: the *new* scale ``Sigma_t`` per output, shape ``[K]`` (e.g. a
            :class:`PopArtHead`'s :attr:`~PopArtHead.sigma` after
            ``update_stats(y, preserve_outputs=False)``), target units.
        reduction: ``"mean"`` or ``"sum"``, as in ``F.mse_loss``; use the same in Algorithm 1.

    Returns:
        ``(lower_grads, weight_grad, bias_grad)``: one gradient per lower parameter (``None``
        where a parameter does not influence ``hidden``), and the upper layer's gradients.
        Nothing is written to ``.grad``.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    lower = list(lower_params)
    if not isinstance(sigma, Tensor) or sigma.shape != weight.shape[:1]:
        raise ValueError(
            f"sigma must be a Tensor of shape [{weight.shape[0]}] (one scale per output), got "
            f"{tuple(sigma.shape) if isinstance(sigma, Tensor) else type(sigma).__name__}"
        )
    if hidden.shape[-1:] != weight.shape[1:]:
        raise ValueError(
            f"hidden must have shape [..., {weight.shape[1]}], got {tuple(hidden.shape)}"
        )
    expected = (*hidden.shape[:-1], weight.shape[0])
    if tuple(targets.shape) != expected:
        raise ValueError(
            f"targets must have the predictions' shape {expected}, got {tuple(targets.shape)}"
        )
    sigma = sigma.to(dtype=weight.dtype, device=weight.device)
    targets = targets.to(dtype=weight.dtype, device=weight.device)
    with torch.enable_grad():
        # lower layers: error scaled by Sigma^-1 through Sigma^-1 W (W constant here)
        b_const = None if bias is None else bias.detach()
        pred_lower = F.linear(hidden, weight.detach(), b_const)
        loss_lower = F.mse_loss(
            (pred_lower - targets) / sigma, torch.zeros_like(targets), reduction=reduction
        )
        wanted = [p for p in lower if p.requires_grad]
        grads = torch.autograd.grad(loss_lower, wanted, allow_unused=True) if wanted else ()
        by_id = {id(p): g for p, g in zip(wanted, grads)}
        lower_grads = [by_id.get(id(p)) for p in lower]
        # upper layer: plain gradient of the unnormalized squared error
        upper = [weight] if bias is None else [weight, bias]
        pred_upper = F.linear(hidden.detach(), weight, bias)
        loss_upper = F.mse_loss(pred_upper, targets, reduction=reduction)
        upper_grads = torch.autograd.grad(loss_upper, upper)
    return lower_grads, upper_grads[0], (None if bias is None else upper_grads[1])


def normalized_sgd_step(
    lower_params: Iterable[Tensor] | Sequence[Tensor],
    weight: Tensor,
    bias: Tensor | None,
    hidden: Tensor,
    targets: Tensor,
    sigma: Tensor,
    lr: float,
    *,
    reduction: str = "mean",
) -> Tensor:
    """One step of Algorithm 2 with plain SGD: ``p <- p - lr * grad`` in place, for all params.

    Arguments as in :func:`normalized_sgd_gradients` (``lr >= 0``). With the same ``lr``,
    ``reduction``, data and statistics, this makes exactly the lower-layer updates and
    unnormalized predictions of Algorithm 1 (:class:`PopArtHead` + ``torch.optim.SGD`` without
    momentum) when ``weight = Sigma W_popart`` and ``bias = Sigma b_popart + mu`` initially
    (Proposition 3). For momentum or other optimizers, feed :func:`normalized_sgd_gradients`
    into their ``.grad``; the equivalence then no longer holds.

    Returns:
        The unnormalized squared-error loss before the step (detached scalar).
    """
    lr = learning_rate(lr)
    lower = list(lower_params)
    lower_grads, gw, gb = normalized_sgd_gradients(
        lower, weight, bias, hidden, targets, sigma, reduction=reduction
    )
    with torch.no_grad():
        loss = F.mse_loss(F.linear(hidden, weight, bias), targets.to(weight), reduction=reduction)
        for p, g in zip(lower, lower_grads):
            if g is not None:
                p.sub_(g, alpha=lr)
        weight.sub_(gw, alpha=lr)
        if bias is not None and gb is not None:
            bias.sub_(gb, alpha=lr)
    return loss.detach()
