"""Functional unrolls of an update rule on one or more optimizees.

:func:`unroll` runs a rule for ``steps`` updates on a problem's parameters and returns the
per-step losses **with their graph**, so a caller can differentiate anything with respect to the
rule's meta-parameters (and, if the initial parameters require grad, with respect to those: the
``copy_initial_weights=False`` case of the ``higher`` library)::

    result = optizoo.unroll(rule, problem, steps=5, second_order=True)
    meta_loss = result.losses[-1]            # loss after the unroll
    meta_loss.backward()                      # gradients in rule.log_lr.grad, ...

Each step: the parameters live in ONE flat vector ``θ`` ``[n]`` (all tensors of all problems
concatenated), the problems' losses are evaluated on views of it, the optimizee gradient is
``autograd.grad(Σ loss, θ)`` (one call), the rule is called ONCE on all ``n`` coordinates, and
``θ ← θ + update``. Step numbering follows the rest of optizoo: before update ``t`` (0-based)
``problem.loss(params, t)`` is evaluated (``t`` picks the minibatch) and the rule is called with
``step = t + 1`` (1-based, as ``torch.optim`` counts).

First order (the default, Andrychowicz et al. 2016): the optimizee gradients are treated as
constants (``∂∇f/∂φ = 0``), so no second derivatives of the optimizee are taken.
``second_order=True`` builds the graph of the gradients too (``create_graph=True``).

:func:`rollout` runs a rule without any meta-graph (evaluation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from optizoo.meta.batched import StackedLoss, stacked_loss
from optizoo.rules.base import State, UpdateRule, rule_kwargs
from optizoo.tasks.base import Problem, per_instance_scale
from optizoo.tasks.divergence import run_until_divergence

__all__ = ["Layout", "UnrollResult", "rollout", "unroll"]

Params = dict[str, Tensor]


class Layout:
    """Where each named tensor of each problem lives in the flat parameter vector.

    Attributes:
        names: per problem, the parameter names in order.
        shapes: per problem, the shapes.
        sizes: the flat lengths of all tensors, problem after problem.
        numel: total number of coordinates ``n``.
    """

    def __init__(self, params: Sequence[Mapping[str, Tensor]]) -> None:
        if not params:
            raise ValueError("unroll needs at least one problem")
        self.names: list[list[str]] = []
        self.shapes: list[list[torch.Size]] = []
        self.sizes: list[int] = []
        ref: Tensor | None = None
        for i, p in enumerate(params):
            if not isinstance(p, Mapping) or not p:
                raise TypeError(
                    f"problem {i}: params must be a non-empty dict name -> Tensor, got {type(p).__name__}"
                )
            self.names.append(list(p))
            self.shapes.append([])
            for name, t in p.items():
                if not isinstance(t, Tensor) or not t.is_floating_point():
                    raise TypeError(
                        f"problem {i}: parameter {name!r} must be a floating-point Tensor"
                    )
                if ref is None:
                    ref = t
                elif t.dtype != ref.dtype or t.device != ref.device:
                    raise TypeError(
                        f"problem {i}: parameter {name!r} is {t.dtype} on {t.device}, but the first "
                        f"parameter is {ref.dtype} on {ref.device}; unroll needs one dtype and device "
                        "for all parameters (they are concatenated into one flat vector)"
                    )
                self.shapes[-1].append(t.shape)
                self.sizes.append(t.numel())
        self.numel = sum(self.sizes)
        self._single = len(self.sizes) == 1
        self._segments = None

    @property
    def segments(self):
        """:class:`optizoo.rules.parts.Segments` of every tensor, problem after problem (what a
        per-tensor rule needs to see tensor boundaries)."""
        if self._segments is None:
            from optizoo.rules.segments import Segments

            self._segments = Segments([s for shapes in self.shapes for s in shapes])
        return self._segments

    def flatten(self, params: Sequence[Mapping[str, Tensor]]) -> Tensor:
        """Concatenate ``params`` (same structure as the layout) into one vector ``[n]``."""
        tensors = [t.reshape(-1) for p in params for t in p.values()]
        return tensors[0] if self._single else torch.cat(tensors)

    def views(self, flat: Tensor) -> list[Params]:
        """Per problem, a dict of views of ``flat`` with the original names and shapes."""
        if self._single:
            return [{self.names[0][0]: flat.view(self.shapes[0][0])}]
        chunks = iter(flat.split(self.sizes))
        return [
            {n: next(chunks).view(s) for n, s in zip(names, shapes)}
            for names, shapes in zip(self.names, self.shapes)
        ]


@dataclass
class UnrollResult:
    """What :func:`unroll` returns.

    Attributes:
        losses: ``problem.loss`` at ``θ_start, θ_start+1, ..., θ_start+steps`` (the loss before each
            update and after the last one), with graph: shape ``[steps + 1]`` for one problem,
            ``[steps + 1, P]`` for a sequence of ``P`` problems. Raw losses, not divided by
            ``num_instances``.
        params: the final parameters (with graph), one dict per problem (a single dict when one
            problem was given).
        state: the rule's final state (with graph).
        flat: the final flat parameter vector ``[n]`` (``params`` are views of it).
        step: number of updates made so far (``start + steps``): pass it as ``start`` to continue.
        layout: how ``flat`` maps to the named parameters.
    """

    losses: Tensor
    params: Params | list[Params]
    state: State
    flat: Tensor
    step: int
    layout: Layout

    def detached(self) -> tuple[Tensor, State]:
        """``(flat, state)`` cut from the graph: the starting point of the next truncation."""
        return self.flat.detach(), {k: v.detach() for k, v in self.state.items()}


def _as_problems(problem: Problem | Sequence[Problem]) -> tuple[list[Problem], bool]:
    if isinstance(problem, (list, tuple)):
        problems = list(problem)
        single = False
    else:
        problems = [problem]
        single = True
    for i, p in enumerate(problems):
        if not callable(getattr(p, "loss", None)):
            raise TypeError(
                f"problem {i} ({type(p).__name__}) has no loss(params, step) method; "
                "pass optizoo.tasks.Problem instances (task.sample(generator))"
            )
    if not problems:
        raise ValueError("unroll needs at least one problem")
    return problems, single


def _check_steps(steps: object, start: object) -> tuple[int, int]:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(f"start must be a non-negative int (updates already made), got {start!r}")
    return steps, start


def _stacked(problems: list[Problem], layout: Layout, batch_problems: bool) -> StackedLoss | None:
    return stacked_loss(problems, layout.names, layout.shapes) if batch_problems else None


def _losses(
    problems: list[Problem], layout: Layout, flat: Tensor, t: int, stacked: StackedLoss | None
) -> tuple[Tensor, Tensor]:
    """``(Σ losses, per-problem losses [P])`` at ``flat``: one vmapped call when the problems
    stack (see :mod:`optizoo.meta.batched`), else one ``problem.loss`` per problem."""
    if stacked is not None:
        per = stacked(flat, t)
        return per.sum(), per
    total, losses = _total_loss(problems, layout.views(flat), t)
    return total, (total.unsqueeze(0) if len(problems) == 1 else torch.stack(losses))


def _total_loss(
    problems: list[Problem], views: list[Params], t: int
) -> tuple[Tensor, list[Tensor]]:
    if len(problems) == 1:
        loss = problems[0].loss(views[0], t)
        return loss, [loss]
    losses = [p.loss(v, t) for p, v in zip(problems, views)]
    return torch.stack(losses).sum(), losses


def _flat_grad(total: Tensor, flat: Tensor, *, create_graph: bool, retain_graph: bool) -> Tensor:
    if total.dim() != 0:
        raise ValueError(f"problem.loss must return a scalar, got shape {tuple(total.shape)}")
    (g,) = torch.autograd.grad(
        total, flat, retain_graph=retain_graph, create_graph=create_graph, allow_unused=True
    )
    return torch.zeros_like(flat) if g is None else g


class KnownGradient(torch.autograd.Function):
    """Per-problem losses ``[P]`` whose gradient with respect to the flat parameters is already
    known: the first-order optimizee gradient ``g`` that the unroll computed anyway.

    ``KnownGradient.apply(flat, losses, grad, sizes)`` returns ``losses`` (the values, without
    their graph) and backpropagates ``∂/∂flat = c_p · g`` on problem ``p``'s coordinates (``sizes``:
    the coordinates of each problem, in order) for an upstream gradient ``c [P]``. The meta-gradient
    then never runs the optimizee's backward a second time (and the losses' graphs are freed at
    once). Mathematically the same meta-gradient as backpropagating through the losses; in floating
    point it differs by rounding (the loss graph's backward with ``c`` at its top against ``c``
    times that backward with 1).
    """

    @staticmethod
    def forward(ctx: Any, flat: Tensor, losses: Tensor, grad: Tensor, sizes: list[int]) -> Tensor:
        ctx.sizes = sizes
        ctx.save_for_backward(grad)
        return losses.detach().clone()

    @staticmethod
    def backward(ctx: Any, upstream: Tensor) -> tuple[Tensor | None, ...]:
        (grad,) = ctx.saved_tensors
        sizes = ctx.sizes
        per = upstream.to(grad.dtype)
        if len(sizes) == 1:
            scale = per.expand(grad.shape[0])
        else:
            counts = torch.tensor(sizes, dtype=torch.int64, device=grad.device)
            scale = torch.repeat_interleave(per, counts, output_size=grad.shape[0])
        return grad * scale, None, None, None


def _problem_sizes(layout: Layout) -> list[int]:
    """Coordinates of each problem of ``layout``, in order."""
    out, i = [], 0
    for shapes in layout.shapes:
        out.append(sum(layout.sizes[i : i + len(shapes)]))
        i += len(shapes)
    return out


def unroll_flat(
    rule: UpdateRule,
    problems: list[Problem],
    layout: Layout,
    flat: Tensor,
    state: State | None,
    *,
    steps: int,
    start: int = 0,
    second_order: bool = False,
    batch_problems: bool = True,
    reuse_gradients: bool = False,
) -> tuple[Tensor, Tensor, State]:
    """The unroll loop on a flat vector (what :func:`unroll` and the trainer run).

    ``batch_problems``: evaluate the losses of problems that stack (``P`` samples of one task)
    as one vmapped call (:mod:`optizoo.meta.batched`); same results to float rounding.

    ``reuse_gradients`` (first order only; opt-in): the losses before each update carry the
    optimizee gradient the step computed as their gradient (:class:`KnownGradient`) instead of
    their graph, so the meta-backward does not run the optimizee's backward again and the
    losses' graphs are freed at once. The same meta-gradient mathematically; in floating point
    it differs by rounding (~1e-7 of the largest entry in float32; see ``docs/benchmarks.md``).

    Returns ``(losses [steps + 1, P], final flat [n], final state)``, all with graph.
    """
    if reuse_gradients and second_order:
        raise ValueError(
            "reuse_gradients applies to first-order meta-gradients only (the optimizee gradients "
            "are constants); with second_order=True the losses must keep their graphs"
        )
    if not flat.requires_grad:
        flat = flat.detach().requires_grad_(True)
    kw = rule_kwargs(rule, lambda: layout.segments)
    if state is None:
        state = rule.init_state(flat.detach(), **kw)
    needs_param = bool(getattr(rule, "needs_param", False))
    stacked = _stacked(problems, layout, batch_problems)
    sizes = _problem_sizes(layout) if reuse_gradients else []
    rows: list[Tensor] = []
    for t in range(start, start + steps):
        total, per = _losses(problems, layout, flat, t, stacked)
        g = _flat_grad(total, flat, create_graph=second_order, retain_graph=not reuse_gradients)
        rows.append(KnownGradient.apply(flat, per.detach(), g, sizes) if reuse_gradients else per)
        update, state = rule(g, state, param=flat if needs_param else None, step=t + 1, **kw)
        flat = flat + update
    rows.append(_losses(problems, layout, flat, start + steps, stacked)[1])
    return torch.stack(rows), flat, state


def unroll(
    rule: UpdateRule,
    problem: Problem | Sequence[Problem],
    steps: int,
    *,
    params: Mapping[str, Tensor] | Sequence[Mapping[str, Tensor]] | None = None,
    state: State | None = None,
    start: int = 0,
    second_order: bool = False,
    batch_problems: bool = True,
) -> UnrollResult:
    """Unroll ``rule`` for ``steps`` updates on ``problem``, keeping the whole graph.

    Args:
        rule: any :class:`~optizoo.rules.UpdateRule`; its meta-parameters receive gradients when a
            function of the result is backpropagated.
        problem: one :class:`~optizoo.tasks.Problem`, or a sequence of them (all their parameters
            are concatenated and the rule runs once per step over all coordinates).
        steps: number of updates.
        params: initial parameters (one dict, or one per problem); defaults to
            ``problem.params()``. Tensors that require grad receive gradients too (meta-learning
            an initialization). They are never modified in place.
        state: the rule's state from a previous truncation; ``None`` starts fresh
            (``rule.init_state``).
        start: updates already made before this call (continuing a truncated unroll): the first
            loss evaluated is ``problem.loss(params, start)`` and the rule sees ``step=start + 1``.
        second_order: differentiate through the optimizee gradients too (``create_graph=True``);
            needed when the meta-loss depends on the gradients' dependence on the meta-parameters
            (hand-designed rules' learning rate and momentum, exact hypergradients).
        batch_problems: evaluate problems of one task as one vmapped loss (faster; same results
            to float rounding); ``False`` calls each ``problem.loss`` in turn.

    Returns:
        An :class:`UnrollResult` (losses ``[steps + 1]`` before each update and after the last).
    """
    if not isinstance(rule, UpdateRule):
        raise TypeError(f"rule must be an optizoo UpdateRule, got {type(rule).__name__}")
    steps, start = _check_steps(steps, start)
    problems, single = _as_problems(problem)
    if params is None:
        plist = [p.params() for p in problems]
    elif isinstance(params, Mapping):
        plist = [params]
    else:
        plist = list(params)
    if len(plist) != len(problems):
        raise ValueError(f"got {len(plist)} parameter dicts for {len(problems)} problems")
    layout = Layout(plist)
    flat = layout.flatten(plist)
    losses, flat, state = unroll_flat(
        rule,
        problems,
        layout,
        flat,
        state,
        steps=steps,
        start=start,
        second_order=second_order,
        batch_problems=batch_problems,
    )
    views = layout.views(flat)
    return UnrollResult(
        losses=losses[:, 0] if single else losses,
        params=views[0] if single else views,
        state=state,
        flat=flat,
        step=start + steps,
        layout=layout,
    )


def rollout(
    rule: UpdateRule,
    problems: Sequence[Problem],
    steps: int,
    *,
    check_every: int = 16,
    batch_problems: bool = True,
) -> Tensor:
    """Run ``rule`` for ``steps`` updates on fresh ``problems`` without any meta-graph.

    The rule runs under ``torch.no_grad()``; only the optimizee loss is differentiated (for its
    gradient). All problems share one flat vector and one rule call per step.

    Returns:
        float64 CPU tensor ``[steps + 1, P]`` of losses divided by each problem's
        ``num_instances`` (``f(θ_0) ... f(θ_steps)``); ``inf`` from the first non-finite value on.
    """
    steps, _ = _check_steps(steps, 0)
    problems, _ = _as_problems(list(problems))
    plist = [p.params() for p in problems]
    layout = Layout(plist)
    flat = layout.flatten(plist).detach()
    scale = per_instance_scale(problems)
    needs_param = bool(getattr(rule, "needs_param", False))
    stacked = _stacked(problems, layout, batch_problems)
    kw = rule_kwargs(rule, lambda: layout.segments)
    with torch.no_grad():
        state = rule.init_state(flat, **kw)
    grad: Tensor | None = None

    def loss_at(t: int) -> Tensor:
        nonlocal grad
        with torch.enable_grad():
            x = flat.detach().requires_grad_(True)
            total, per = _losses(problems, layout, x, t, stacked)
            if t < steps:
                grad = _flat_grad(total, x, create_graph=False, retain_graph=False)
        return per.detach()

    def update(t: int) -> None:
        nonlocal flat, state
        with torch.no_grad():
            step, state = rule(grad, state, param=flat if needs_param else None, step=t + 1, **kw)
            flat = flat + step

    return run_until_divergence(loss_at, update, steps, check_every=check_every) * scale
