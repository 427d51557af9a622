"""A hierarchical learned rule: a per-tensor LSTM steering a cheap coordinate-wise update.

Built from :mod:`optizoo.rules.parts` for generalization and cost (issue 15). Per coordinate it
keeps only momenta at ``K`` decays and a second moment (``K + 1`` floats: 12 bytes in float32 with
the default ``K = 2``) and computes ``K + 1`` Adam-normalized directions
(:class:`~optizoo.rules.parts.Moments`)::

    d_k = m̂_k / (√v̂ + ε)  (momentum at betas[k]),   d_K = g / (√v̂ + ε)

Per tensor, scale-free statistics (:class:`~optizoo.rules.parts.TensorStats`: gradient/momentum
cosine, direction and parameter RMS, gradient trend, training progress, tensor kind) feed a small
:class:`~optizoo.rules.parts.TensorLSTM` (VeLO; Wichrowska et al. 2017) whose hidden state lives on
the parameters' device, one row per tensor; a zero-initialised
:class:`~optizoo.rules.parts.LinearHead` maps it to per-tensor coefficients ``o``::

    lr_T = exp(log_lr + s_max · tanh o₀)          per-tensor step size
    wd_T = exp(log_wd + s_max · tanh o₁)          per-tensor decoupled weight decay
    w_T  = e₀ + mix_scale · tanh(o₂…)              mixing weights over the K + 1 directions
    update_i = −lr_T · (Σ_k w_{T,k} · d_{k,i} / r_{T,k} + wd_T · θ_i)

with ``r_{T,k} = 1`` or, with ``normalize=True``, the RMS of direction ``k`` over the tensor
(per-tensor RMS normalization, Celo2). Untrained (zero head) and ``normalize=False`` the rule is
exactly ``torch.optim.AdamW(lr=nominal_lr, betas=(betas[0], beta2), weight_decay=weight_decay)``:
the learned part corrects a sound hand-designed rule. ``orthogonalize=True`` applies Muon's
Newton–Schulz orthogonalization (:class:`~optizoo.rules.parts.NewtonSchulz`) to each matrix's mixed
direction (costly: see ``docs/benchmarks.md``).

The per-coordinate work is a few element-wise passes; the LSTM runs on ``T`` rows (the number of
tensors), so the cost is close to Adam's. The rule is per-tensor: callers pass
``segments=Segments(shapes)`` (``LearnedOptimizer`` and ``unroll`` do). It also steps shards of
the tensors (FSDP2): with ``Segments(shapes, sizes=local_sizes, reduce=all_reduce)`` the
per-tensor sums of the statistics are one all-reduce of a ``[T, 5]`` tensor per call (with
``normalize``, one ``[T]`` more per direction), after which every shard runs the same LSTM on
the same inputs and updates its own coordinates (not with ``orthogonalize``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from optizoo.rules.base import State, StateDtypeOption, UpdateRule, check_state_dtype
from optizoo.rules.combine import combine_reference, segment_combine
from optizoo.rules.parts import (
    LinearHead,
    Moments,
    NewtonSchulz,
    RMSNormalize,
    Segments,
    TensorLSTM,
    TensorStats,
)

__all__ = ["HierarchicalRule"]


def _positive(value: Any, name: str) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _vector(values: Sequence[float | Tensor], dtype: torch.dtype, device: torch.device) -> Tensor:
    """``[len(values)]`` from Python numbers (eager: one ``torch.tensor``) or, when some are 0-d
    tensors (a compiled step's bias corrections), one ``stack`` (no host read)."""
    if not any(isinstance(v, Tensor) for v in values):
        return torch.tensor(values, dtype=dtype, device=device)
    return torch.stack([torch.as_tensor(v, dtype=dtype, device=device) for v in values])


def _combine(vectors: list[Tensor], coef: Tensor, segments: Segments) -> Tensor:
    """``Σ_k coef[T(i), k] · vectors[k][i]``: per-tensor coefficients ``[T, K]`` times
    per-coordinate vectors (each ``[n]``).

    Equivalent paths: under autograd (meta-training) eagerly, one autograd node
    (:func:`optizoo.rules.combine.segment_combine`: the coefficients broadcast once, a
    hand-written backward; bit for bit the loop over tensors of
    :func:`~optizoo.rules.combine.combine_reference`, which ran here before and still runs under
    ``torch.compile``); without autograd on the CPU, eagerly, the coefficients as Python numbers
    written straight into one buffer (fewest passes; ``tolist`` is free on a CPU); elsewhere, and
    under ``torch.compile`` (where ``tolist`` would break the graph), one broadcast of the
    coefficients (no host synchronisation).
    """
    if len(segments) == 1:
        rows = coef[0]
        out = vectors[0] * rows[0]
        for k in range(1, len(vectors)):
            out = out.addcmul(vectors[k], rows[k])
        return out
    if torch.is_grad_enabled():
        if torch.compiler.is_compiling():
            return combine_reference(vectors, coef, segments)
        return segment_combine(vectors, coef, segments)
    pieces = [segments.split(v) for v in vectors]
    if coef.device.type == "cpu" and not torch.compiler.is_compiling():
        out = torch.empty_like(vectors[0])
        views = segments.split(out)
        for i, c in enumerate(coef.tolist()):
            torch.mul(pieces[0][i], c[0], out=views[i])
            for k in range(1, len(vectors)):
                views[i].add_(pieces[k][i], alpha=c[k])
        return out
    e = segments.expand_rows(coef.t())
    out = vectors[0] * e[0]
    for k in range(1, len(vectors)):
        out = out.addcmul_(vectors[k], e[k])
    return out


class HierarchicalRule(StateDtypeOption, UpdateRule):
    """Per-tensor LSTM over per-tensor statistics steering an Adam-like coordinate-wise update.

    Args:
        betas: momentum decays (``betas[0]`` is the nominal Adam direction's β₁).
        beta2: second-moment decay. eps: Adam's ε.
        hidden_size, num_layers: the per-tensor LSTM.
        progress: time constants of the progress inputs ``tanh(t / T)``.
        nominal_lr: initial learned step size (the untrained rule's AdamW lr).
        weight_decay: initial learned decoupled weight decay (AdamW's; > 0).
        normalize: divide each direction by its per-tensor RMS.
        orthogonalize: Newton–Schulz-orthogonalize each matrix's mixed direction.
        max_log_scale: bound ``s_max`` of the per-tensor log step size and log decay corrections.
        mix_scale: bound of the mixing-weight corrections.
        state_dtype: ``"auto"`` (float64 for float64 parameters, float32 otherwise) or
            ``"float32"``.
    """

    rule_name = "hierarchical"
    per_tensor = True
    needs_param = True
    tensor_state_keys = ("tensor_h", "tensor_c", "tensor_lg")  # one row per tensor
    preferred_chunk = 1 << 24

    def __init__(
        self,
        betas: Sequence[float] = (0.9, 0.99),
        beta2: float = 0.999,
        eps: float = 1e-8,
        *,
        hidden_size: int = 16,
        num_layers: int = 1,
        progress: Sequence[float] = (30.0, 300.0, 3000.0),
        nominal_lr: float = 1e-3,
        weight_decay: float = 0.01,
        normalize: bool = False,
        orthogonalize: bool = False,
        max_log_scale: float = 2.0,
        mix_scale: float = 1.0,
        state_dtype: str = "auto",
    ) -> None:
        super().__init__()
        check_state_dtype(state_dtype)
        self.moments = Moments(betas, beta2, eps)
        self.stats = TensorStats(progress)
        self.cell = TensorLSTM(self.stats.out_features, hidden_size, num_layers)
        k = self.moments.out_features
        self.head = LinearHead(hidden_size, 2 + k, init="zero")
        self.nominal_lr = _positive(nominal_lr, "nominal_lr")
        self.weight_decay = _positive(weight_decay, "weight_decay")
        self.max_log_scale = _positive(max_log_scale, "max_log_scale")
        self.mix_scale = _positive(mix_scale, "mix_scale")
        self.log_lr = nn.Parameter(torch.tensor(math.log(self.nominal_lr)))
        self.log_wd = nn.Parameter(torch.tensor(math.log(self.weight_decay)))
        self.normalize = bool(normalize)
        self.orthogonalize = bool(orthogonalize)
        self.rms = RMSNormalize() if self.normalize else None
        self.ns = NewtonSchulz() if self.orthogonalize else None
        self.state_dtype_name = state_dtype

    def decay_lr(self) -> Tensor:
        """The nominal step size ``exp(log_lr)``: a param group's ``weight_decay`` decays
        ``p ← p · (1 − lr · weight_decay · exp(log_lr))`` (AdamW's rule at the nominal lr), on top
        of the rule's own learned decay."""
        return self.log_lr.detach().exp()

    def state_floats_per_coordinate(self) -> int:
        """Floats of per-coordinate state (the per-tensor state is a few dozen floats a tensor)."""
        return self.moments.state_floats

    def init_state(self, flat: Tensor, *, segments: Segments | None = None) -> State:
        segments = segments or Segments.single(flat.shape[0])
        segments.check(flat)
        dtype = self.state_dtype(flat.dtype)
        state = self.moments.init_state(flat, dtype)
        state.update(self.cell.init_state(len(segments), dtype, flat.device))
        state.update(self.stats.init_state(len(segments), dtype, flat.device))
        return state

    def coefficients(self, out: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-tensor ``(lr [T], wd [T], mixing weights [T, K + 1])`` from head outputs."""
        s = self.max_log_scale
        lr = torch.exp(self.log_lr.to(out.dtype) + s * torch.tanh(out[:, 0]))
        wd = torch.exp(self.log_wd.to(out.dtype) + s * torch.tanh(out[:, 1]))
        mix = self.mix_scale * torch.tanh(out[:, 2:])
        nominal = torch.zeros_like(mix[:1])
        nominal[0, 0] = 1.0
        return lr, wd, mix + nominal

    def forward(
        self,
        grad: Tensor,
        state: State,
        *,
        param: Tensor | None = None,
        step: int | Tensor,
        segments: Segments | None = None,
    ) -> tuple[Tensor, State]:
        """One step on a flat batch (differentiable: meta-training's path). ``step`` is the
        1-based step, a Python int or, under ``torch.compile(opt.step)``, the optimizer's 0-d
        step tensor: the compiled step then reads nothing on the host (no graph break, no
        recompile as the step grows) and matches the eager one to float rounding."""
        if param is None:
            raise ValueError(
                "HierarchicalRule needs param= (the flat parameter values) for its weight decay "
                "and statistics; LearnedOptimizer and unroll pass it"
            )
        segments = segments or Segments.single(grad.shape[0])
        segments.check(grad)
        compute = grad.dtype if grad.dtype == torch.float64 else torch.float32
        g = grad.to(compute)
        theta = param.to(compute)
        d, scales, new_state = self.moments.raw(g, state, step)  # d_k · scales[k]: directions
        sums = self.stats.reduce(
            segments.split(g),
            segments.split(new_state["m0"].to(compute)),
            segments.split(d[0]),
            segments.split(theta),
        )
        inv = None
        if self.rms is not None:
            inv = torch.stack([self.rms.inverse_rms(dk, segments) for dk in d], dim=1)
        lr, wd, mix, tensor_state = self._steer(sums, inv, state, step, segments, scales, g)
        new_state.update(tensor_state)
        if self.ns is None:  # −lr_T · (Σ_k w_Tk d_k + wd_T θ)
            coef = torch.cat([mix * lr.unsqueeze(1), (lr * wd).unsqueeze(1)], dim=1).neg()
            update = _combine([*d, theta], coef, segments)
        else:
            direction = self.ns(_combine(d, mix, segments), segments)
            coef = torch.stack([lr, lr * wd], dim=1).neg()
            update = _combine([direction, theta], coef, segments)
        return update.to(grad.dtype), new_state

    def _steer(
        self,
        sums: dict[str, Tensor],
        inv_rms: Tensor | None,
        state: State,
        step: int | Tensor,
        segments: Segments,
        scales: list[float | Tensor],
        like: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, State]:
        """The per-tensor part, shared by :meth:`forward` and :meth:`step_foreach`: statistics
        (from :meth:`TensorStats.reduce`'s sums) → LSTM → head → ``(lr [T], wd [T], mix [T, K+1],
        new per-tensor state)``; ``mix`` multiplies the *raw* directions (bias corrections and,
        with ``normalize``, the inverse RMS ``inv_rms [T, K+1]`` of the raw directions folded
        in)."""
        compute = like.dtype
        x, new_state = self.stats.from_sums(
            sums, segments, state, step=step, like=like, direction_scale=scales[0]
        )
        top, cell_state = self.cell(x, state, compute)
        new_state.update(cell_state)
        lr, wd, mix = self.coefficients(self.head(top, compute))  # [T], [T], [T, K+1]
        scale = _vector(scales, compute, mix.device)
        mix = mix * scale
        if inv_rms is not None:
            # RMS of the raw directions: the bias corrections cancel in d_k / rms(d_k)
            mix = mix * (inv_rms / scale)
        return lr, wd, mix, new_state

    def supports_sharding(self) -> bool:
        """Whether FSDP2 shards can be stepped: every option but ``orthogonalize`` (the
        per-tensor sums, and with ``normalize`` the directions' RMS, are reduced over the
        shards; Newton–Schulz needs whole matrices)."""
        return self.ns is None

    def supports_foreach(self) -> bool:
        """Whether :meth:`step_foreach` applies (every option but ``orthogonalize``)."""
        return self.ns is None

    def step_foreach(
        self,
        grads: list[Tensor],
        params: list[Tensor],
        state: dict[str, Any],
        *,
        step: int,
        segments: Segments,
        grad_norms: Sequence[Tensor] | None = None,
    ) -> tuple[list[Tensor], State]:
        """The optimizer's fast path: :meth:`forward`'s math, in place, one tensor per entry.

        No autograd (it mutates the state; meta-training differentiates :meth:`forward`), no
        flat concatenation: per-coordinate state is updated in place with ``torch._foreach_*``
        calls across the tensors, as ``torch.optim.Adam(foreach=True)`` does, and the per-tensor
        coefficients enter as scalar lists (one host read of ``[T, K + 2]`` numbers). The
        result equals :meth:`forward`'s to float rounding.

        Args:
            grads: one flat gradient ``[n_t]`` per tensor (the state dtype; finite).
            params: the tensors' flat parameter values ``[n_t]`` (read only).
            state: per-coordinate keys (``m0 … v``) → lists of flat views ``[n_t]``, updated in
                place; per-tensor keys (``tensor_*``) → ``[T, ...]`` tensors, read only.
            step: 1-based step number (a Python int).
            segments: the tensors' shapes (``Segments``), in order.
            grad_norms: ``torch._foreach_norm(grads)``, if the caller has it.

        Returns:
            ``(updates, new per-tensor state)``: one flat update ``[n_t]`` per tensor (to be
            *added* to the parameters) and the new ``tensor_*`` rows.
        """
        if torch.is_grad_enabled():
            raise RuntimeError(
                "HierarchicalRule.step_foreach mutates its state and runs without autograd; "
                "call it under torch.no_grad() (differentiate forward() instead)"
            )
        if not self.supports_foreach():
            raise ValueError("step_foreach does not support orthogonalize=True; use forward()")
        if isinstance(step, Tensor) or step < 1:
            raise ValueError(f"step must be a 1-based Python int, got {step!r}")
        mo = self.moments
        v = state["v"]
        torch._foreach_mul_(v, mo.beta2)  # v ← β₂ v + (1 − β₂) g²
        torch._foreach_addcmul_(v, grads, grads, value=1 - mo.beta2)
        ms = [state[f"m{k}"] for k in range(len(mo.betas))]
        for m, beta in zip(ms, mo.betas):
            torch._foreach_lerp_(m, grads, 1 - beta)  # m ← m + (1 − β)(g − m)
        denom = torch._foreach_sqrt(v)  # √v / √(1 − β₂ᵗ) + ε, as Moments.raw without autograd
        torch._foreach_mul_(denom, 1.0 / math.sqrt(1 - mo.beta2**step))
        torch._foreach_add_(denom, mo.eps)
        scales = [1.0 / (1 - beta**step) for beta in mo.betas] + [1.0]
        d0 = torch._foreach_div(ms[0], denom)  # the raw nominal direction
        sums = self.stats.reduce(grads, ms[0], d0, params, grad_norms)
        inv = None
        if self.rms is not None:  # RMS of every raw direction (materialised one at a time)
            inv_cols = [self.rms.inverse_rms_of(d0, segments)]
            for numerator in [*ms[1:], grads]:
                dk = torch._foreach_div(numerator, denom)
                inv_cols.append(self.rms.inverse_rms_of(dk, segments))
                del dk
            inv = torch.stack(inv_cols, dim=1)
        like = grads[0]
        lr, wd, mix, tensor_state = self._steer(sums, inv, state, step, segments, scales, like)
        coef = torch.cat([mix * lr.unsqueeze(1), (lr * wd).unsqueeze(1)], dim=1).neg()
        cols = coef.t().tolist()  # [K + 2] lists of T numbers
        update = d0  # reused: update = c₀ d₀ + Σ_k c_k m_k / denom + c_K g / denom + c_θ θ
        torch._foreach_mul_(update, cols[0])
        for numerator, c in zip([*ms[1:], grads], cols[1:-1]):
            torch._foreach_addcdiv_(update, numerator, denom, c)
        del denom
        torch._foreach_add_(update, torch._foreach_mul(params, cols[-1]))
        return update, tensor_state

    def config(self) -> dict[str, Any]:
        """The composition: every part's options (rebuilds the same architecture)."""
        return {
            **self.moments.config(),
            "hidden_size": self.cell.hidden_size,
            "num_layers": self.cell.num_layers,
            "progress": list(self.stats.progress),
            "nominal_lr": self.nominal_lr,
            "weight_decay": self.weight_decay,
            "normalize": self.normalize,
            "orthogonalize": self.orthogonalize,
            "max_log_scale": self.max_log_scale,
            "mix_scale": self.mix_scale,
            "state_dtype": self.state_dtype_name,
        }

    def flops_per_coordinate(self) -> int:
        """The per-coordinate work is element-wise (no matrix products): 0 matmul FLOPs."""
        return 0
