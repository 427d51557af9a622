"""Inputs of learned update rules: preprocessors, accumulated features, per-tensor statistics.

- :class:`Preprocessed`: a registered gradient preprocessor (the paper's log-and-sign) as a part.
- :class:`Features`: per-coordinate accumulated features with their own state (below).
- :class:`TensorStats`: scale-free statistics of each whole tensor, the input of a per-tensor cell.


The paper's LSTM sees only the (log-and-sign preprocessed) raw gradient. Learned optimizers that
generalise feed richer, scale-free inputs (RNNprop, Lv et al. 2017; the per-parameter MLP
optimizers of google/learned_optimization; Harrison et al. 2022). :class:`Features` computes,
coordinate by coordinate:

- momenta ``m_i ← β_i m_i + (1 − β_i) g`` at several decays ``β_i`` (default 0.5, 0.9, 0.99,
  0.999) and a second moment ``v ← β₂ v + (1 − β₂) g²``, both bias-corrected like Adam;
- the Adam-normalized momenta ``m̂_i / (√v̂ + ε)`` and gradient ``g / (√v̂ + ε)`` (invariant to
  rescaling the objective, up to ``ε``);
- optionally the log-and-sign pair of the raw gradient (Andrychowicz et al. appendix A, p = 10),
  the parameter value, and training-progress features ``tanh(step / T)`` for several ``T``.

Every feature is clamped to ``[−clip, clip]``. State: ``{"m": [n, len(betas)], "v": [n]}``
(``4·(len(betas) + 1)`` bytes per coordinate in float32). :meth:`Features.forward` is pure: it
never mutates the state it is given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from optizoo._validate import nonnegative_finite, positive_finite, unit_interval
from optizoo.preprocess.builtin import log_and_sign
from optizoo.rules.parts.base import Part
from optizoo.rules.segments import Segments

__all__ = [
    "FEATURE_STATE_KEYS",
    "Features",
    "Moments",
    "Preprocessed",
    "TensorStats",
    "one_minus_power",
    "progress_features",
]

#: floor of ``v`` under the square root (keeps ∂√v/∂v finite for coordinates with zero gradient)
_V_FLOOR = 1e-30

#: state keys owned by :class:`Features` (rules that embed it must not reuse them)
FEATURE_STATE_KEYS = ("m", "v")


def _progress(progress: Sequence[float]) -> tuple[float, ...]:
    """Checked time constants ``T`` of progress features ``tanh(step / T)``."""
    if isinstance(progress, (str, bytes)) or not isinstance(progress, Sequence):
        raise ValueError(f"progress must be a list of positive time constants, got {progress!r}")
    if not all(isinstance(t, (int, float)) and math.isfinite(t) and t > 0 for t in progress):
        raise ValueError(f"progress time constants must be positive, got {list(progress)!r}")
    return tuple(float(t) for t in progress)


def _check_step(step: int | Tensor) -> bool:
    """Validate a 1-based step number; ``True`` when it is a tensor (a compiled optimizer step
    passes its 0-d float step count, so that no step is read on the host: no graph break, no
    recompile per step), ``False`` for a Python int (checked ``>= 1``)."""
    if isinstance(step, Tensor):
        return True
    if step < 1:
        raise ValueError(f"step is 1-based, got {step}")
    return False


def _step_as(step: Tensor, like: Tensor) -> Tensor:
    """A tensor step count in ``like``'s dtype and on its device."""
    return step.to(device=like.device, dtype=like.dtype)


def one_minus_power(beta: float, step: Tensor) -> Tensor:
    """``1 − βᵗ`` for a tensor step ``t`` (a bias correction of a compiled step), in ``step``'s
    dtype, as ``−expm1(t · ln β)`` with ``ln β`` in double precision: accurate to float32
    rounding even where ``1 − βᵗ`` is small (at ``β = 0.999, t = 1`` the direct float32 form
    loses four digits to cancellation), so the compiled step stays close to the eager one (which
    computes the corrections in double precision); ``β = 0`` gives 1."""
    log_beta = math.log(beta) if beta > 0 else -math.inf  # expm1(−inf) = −1
    return -torch.expm1(step * log_beta)


def progress_features(step: int | Tensor, taus: Sequence[float], like: Tensor) -> Tensor:
    """``[len(taus)]``: training-progress features ``tanh(step / T)``, one per time constant
    ``T``, in ``like``'s dtype and on its device. A Python step is computed on the host in double
    precision (then rounded); a tensor step (compiled) on the device, without a host read."""
    if isinstance(step, Tensor):
        t = torch.tensor(taus, dtype=like.dtype, device=like.device)
        return torch.tanh(_step_as(step, like) / t)
    return torch.tensor([math.tanh(step / t) for t in taus], dtype=like.dtype, device=like.device)


class Features(Part):
    """Coordinate-wise feature extractor: ``(grad [n], state) -> (features [n, k], state)``.

    Args:
        betas: momentum decays; one momentum (and one normalized momentum feature) per decay.
        beta2: decay of the second moment ``v`` used for normalization (Adam's ``β₂``).
        eps: added to ``√v̂`` before dividing (Adam's ``ε``).
        gradient: include ``g / (√v̂ + ε)``.
        log_sign: include the paper's log-and-sign pair of the raw gradient (``p = 10``); not
            scale-invariant.
        param: include the parameter value (the rule then needs ``param``).
        progress: time constants ``T`` of the progress features ``tanh(step / T)``.
        clip: every feature is clamped to ``[−clip, clip]``.
    """

    def __init__(
        self,
        betas: Sequence[float] = (0.5, 0.9, 0.99, 0.999),
        beta2: float = 0.999,
        eps: float = 1e-8,
        *,
        gradient: bool = True,
        log_sign: bool = False,
        param: bool = False,
        progress: Sequence[float] = (),
        clip: float = 10.0,
    ) -> None:
        super().__init__()
        if isinstance(betas, (str, bytes)) or not isinstance(betas, Sequence) or not betas:
            raise ValueError(f"betas must be a non-empty list of decays in [0, 1), got {betas!r}")
        self.betas = tuple(unit_interval(b, "every beta", allow_zero=True) for b in betas)
        self.beta2 = unit_interval(beta2, "beta2", allow_zero=True)
        self.eps = nonnegative_finite(eps, "eps")
        self.gradient = bool(gradient)
        self.log_sign = bool(log_sign)
        self.param = bool(param)
        self.progress = _progress(progress)
        self.clip = positive_finite(clip, "clip")

    @property
    def out_features(self) -> int:
        """Number of features per coordinate ``k``."""
        return (
            len(self.betas)
            + int(self.gradient)
            + 2 * int(self.log_sign)
            + int(self.param)
            + len(self.progress)
        )

    @property
    def state_floats(self) -> int:
        """Floats of state per coordinate (momenta and second moment)."""
        return len(self.betas) + 1

    def init_state(self, flat: Tensor, dtype: torch.dtype | None = None) -> dict[str, Tensor]:
        """Zero momenta ``m [n, len(betas)]`` and second moment ``v [n]``."""
        dtype = dtype or flat.dtype
        n = flat.shape[0]
        return {
            "m": torch.zeros(n, len(self.betas), dtype=dtype, device=flat.device),
            "v": torch.zeros(n, dtype=dtype, device=flat.device),
        }

    def forward(
        self,
        grad: Tensor,
        state: dict[str, Tensor],
        *,
        param: Tensor | None = None,
        step: int | Tensor,
    ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """One step of the feature state.

        Args:
            grad: flat gradient ``[n]`` (the compute dtype).
            state: ``{"m": [n, B], "v": [n]}`` from :meth:`init_state` or a previous call.
            param: flat parameter values ``[n]`` (required when ``param=True``).
            step: 1-based step number: a Python int, or a 0-d tensor (what a compiled
                optimizer step passes; then nothing is read on the host).

        Returns:
            ``(features [n, k], new_state, normalized)`` where ``normalized [n, B]`` holds the
            unclamped Adam-normalized momenta ``m̂_i / (√v̂ + ε)`` (the nominal directions).
        """
        tensor_step = _check_step(step)
        dt = grad.dtype
        betas = torch.tensor(self.betas, dtype=dt, device=grad.device)
        m_prev = state["m"].to(dt)
        v_prev = state["v"].to(dt)
        g = grad.unsqueeze(1)
        m = m_prev + (1 - betas) * (g - m_prev)
        v = self.beta2 * v_prev + (1 - self.beta2) * grad * grad
        bc1 = 1 - betas**step  # [B] (in the compute dtype, as eager)
        if tensor_step:
            bc2_sqrt = one_minus_power(self.beta2, _step_as(step, grad)).sqrt()
        else:
            bc2_sqrt = math.sqrt(1 - self.beta2**step)
        # √max(v, 1e-30): never-moving coordinates (v = 0) would give an infinite derivative of
        # √v, hence NaN second-order meta-gradients; 1e-15 is far below any useful ε
        denom = v.clamp_min(_V_FLOOR).sqrt() / bc2_sqrt + self.eps  # [n]
        normalized = m / bc1 / denom.unsqueeze(1)  # [n, B]
        feats = [normalized]
        if self.gradient:
            feats.append((grad / denom).unsqueeze(1))
        if self.log_sign:
            log_part, sign_part = log_and_sign(grad, p=10.0)
            feats += [log_part.unsqueeze(1), sign_part.unsqueeze(1)]
        if self.param:
            if param is None:
                raise ValueError("these features include the parameter value; pass param=")
            feats.append(param.to(dt).unsqueeze(1))
        if self.progress:
            prog = progress_features(step, self.progress, grad)
            feats.append(prog.expand(grad.shape[0], -1))
        x = torch.cat(feats, dim=1).clamp(-self.clip, self.clip)
        sdt = state["m"].dtype
        return x, {"m": m.to(sdt), "v": v.to(sdt)}, normalized

    def config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments."""
        return {
            "betas": list(self.betas),
            "beta2": self.beta2,
            "eps": self.eps,
            "gradient": self.gradient,
            "log_sign": self.log_sign,
            "param": self.param,
            "progress": list(self.progress),
            "clip": self.clip,
        }


class Preprocessed(Part):
    """A registered gradient preprocessor as a rule input: ``grad [n] -> [n, k]``.

    Args:
        name: registry name (``"log_sign"``, ``"identity"`` or a plugin's).
        args: the preprocessor's keyword arguments (``{"p": 10.0}``).
    """

    scope = "coordinate"

    def __init__(self, name: str = "log_sign", args: dict[str, Any] | None = None) -> None:
        super().__init__()
        from optizoo import preprocess

        self.name = name
        self.args = dict(args or {})
        self.preprocess = preprocess.get(name)(**self.args)

    @property
    def out_features(self) -> int:
        return self.preprocess.out_features

    def forward(self, grad: Tensor) -> Tensor:
        return self.preprocess(grad)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "args": dict(self.args)}


#: floor under per-tensor sums of squares before logs and divisions
_TINY = 1e-30


class TensorStats(Part):
    """Scale-free statistics of whole tensors, the inputs of a per-tensor cell: ``[T, k]``.

    Per tensor (``g`` the gradient, ``m`` a momentum, ``d`` the Adam direction ``m̂/(√v̂+ε)``,
    ``θ`` the parameters, all restricted to the tensor):

    1. ``cos(g, m)``: agreement of the gradient with its momentum (low when noise dominates);
    2. ``log rms(d) / 5``: size of the Adam direction (falls as gradients turn to noise);
    3. ``log rms(θ) / 5``: the parameters' scale;
    4. ``clamp(log rms(g_t) − log rms(g_{t−1}), ±5)``: gradient trend (0 at the first step);
    5. ``tanh(t / T)`` for every ``T`` in ``progress``: training progress;
    6. ``log10(numel) / 7``, ``1`` for matrices (ndim ≥ 2) else ``0``, ``log10(fan_in) / 4``
       (``numel / shape[0]`` for matrices, 0 otherwise): what kind of tensor it is.

    None of them changes when the objective is multiplied by a constant. State:
    ``tensor_lg [T]`` (the previous step's ``log rms(g)``).
    """

    scope = "tensor"
    state_keys = ("tensor_lg",)

    def __init__(self, progress: Sequence[float] = (30.0, 300.0, 3000.0)) -> None:
        super().__init__()
        self.progress = _progress(progress)

    @property
    def out_features(self) -> int:
        return 7 + len(self.progress)

    def init_state(self, rows: int, dtype: torch.dtype, device: torch.device) -> dict[str, Tensor]:
        return {"tensor_lg": torch.zeros(rows, dtype=dtype, device=device)}

    def static(self, segments: Segments, like: Tensor) -> Tensor:
        """``[T, 3]``: the features that depend on the shapes only (built once per segments,
        dtype and device: :meth:`Segments.memo`)."""
        return segments.memo(
            ("tensor_stats.static", like.dtype, like.device),
            lambda: self._static(segments, like),
        )

    @staticmethod
    def _static(segments: Segments, like: Tensor) -> Tensor:
        rows = []
        for shape in segments.shapes:
            numel = max(1, shape.numel())
            matrix = len(shape) >= 2
            fan_in = numel / shape[0] if matrix and shape[0] > 0 else 1.0
            rows.append(
                [math.log10(numel) / 7, 1.0 if matrix else 0.0, math.log10(max(fan_in, 1.0)) / 4]
            )
        return torch.tensor(rows, dtype=like.dtype, device=like.device)

    def forward(
        self,
        segments: Segments,
        state: dict[str, Tensor],
        *,
        grad: Tensor,
        momentum: Tensor,
        direction: Tensor,
        param: Tensor,
        step: int | Tensor,
        direction_scale: float | Tensor = 1.0,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Statistics ``[T, k]`` and the new ``tensor_lg``; every input is ``[n]``; the direction
        is ``direction · direction_scale``; ``step`` is a 1-based int or (compiled) a 0-d tensor."""
        sums = self.reduce(
            segments.split(grad),
            segments.split(momentum),
            segments.split(direction),
            segments.split(param),
        )
        return self.from_sums(
            sums, segments, state, step=step, like=grad, direction_scale=direction_scale
        )

    @staticmethod
    def reduce(
        grads: Sequence[Tensor],
        momenta: Sequence[Tensor],
        directions: Sequence[Tensor],
        params: Sequence[Tensor],
        grad_norms: Sequence[Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """The per-tensor sums the statistics need, from one tensor per entry of each list
        (flat views, ``[n_t]``): ``{"gg", "mm", "gm", "dd", "pp"}``, each ``[T]`` (``Σg²``,
        ``Σm²``, ``Σg·m``, ``Σd²``, ``Σθ²``). One ``torch._foreach_norm`` call per quantity;
        ``grad_norms`` (the gradients' ``_foreach_norm``, when the caller has it) saves one."""
        norms = torch._foreach_norm(list(grads)) if grad_norms is None else grad_norms
        return {
            "gg": torch.stack(list(norms)).square(),
            "mm": torch.stack(torch._foreach_norm(list(momenta))).square(),
            "gm": torch.stack([a.dot(b) for a, b in zip(grads, momenta)]),
            "dd": torch.stack(torch._foreach_norm(list(directions))).square(),
            "pp": torch.stack(torch._foreach_norm(list(params))).square(),
        }

    def from_sums(
        self,
        sums: dict[str, Tensor],
        segments: Segments,
        state: dict[str, Tensor],
        *,
        step: int | Tensor,
        like: Tensor,
        direction_scale: float | Tensor = 1.0,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Statistics ``[T, k]`` and the new ``tensor_lg`` from :meth:`reduce`'s sums (the
        direction's sum of squares is scaled by ``direction_scale²``); ``like`` gives the dtype
        and device. ``step`` is a 1-based int or, under ``torch.compile``, a 0-d tensor (then
        nothing is read on the host). When the batch holds shards (``segments.sharded``: FSDP2),
        the sums are a shard's: one :meth:`Segments.reduce` of all of them (``[T, 5]``, one
        all-reduce) makes them whole-tensor sums, the same on every shard."""
        if segments.sharded:
            keys = sorted(sums)
            whole = segments.reduce(torch.stack([sums[k] for k in keys], dim=1))
            sums = dict(zip(keys, whole.unbind(1)))
        numel = segments.numels(like)
        gg, mm, gm = sums["gg"], sums["mm"], sums["gm"]
        cos = gm / (gg * mm).clamp_min(_TINY).sqrt()
        dd = sums["dd"] * direction_scale**2
        log_d = (dd / numel).clamp_min(_TINY).log() / 10
        log_p = (sums["pp"] / numel).clamp_min(_TINY).log() / 10
        lg = (gg / numel).clamp_min(_TINY).log() / 2
        prev = state["tensor_lg"].to(like.dtype)
        if _check_step(step):  # compiled: no host read of the step
            first = _step_as(step, like) <= 1
            trend = torch.where(first, torch.zeros_like(lg), (lg - prev).clamp(-5.0, 5.0))
        else:
            trend = (lg - prev).clamp(-5.0, 5.0) if step > 1 else torch.zeros_like(lg)
        cols = [cos, log_d.clamp(-4.0, 2.0), log_p.clamp(-4.0, 2.0), trend]
        x = torch.stack(cols, dim=1)
        if self.progress:
            prog = progress_features(step, self.progress, like)
            x = torch.cat([x, prog.expand(len(segments), -1)], dim=1)
        x = torch.cat([x, self.static(segments, like)], dim=1)
        return x, {"tensor_lg": lg.to(state["tensor_lg"].dtype)}

    def config(self) -> dict[str, Any]:
        return {"progress": list(self.progress)}


def _is_one(c: float | Tensor) -> bool:
    """Whether a scale is the Python number 1 (a tensor scale is never skipped: comparing it
    would read it on the host)."""
    return not isinstance(c, Tensor) and c == 1.0


class Moments(Part):
    """Per-coordinate momenta at a few decays and a second moment, as Adam-normalized directions.

    State: ``m0 … m{K-1} [n]`` (one momentum per decay in ``betas``) and ``v [n]``: ``K + 1``
    floats a coordinate, each its own contiguous vector (element-wise passes stay contiguous).
    :meth:`forward` returns the ``K + 1`` directions, each ``[n]``::

        d_k = m̂_k / (√v̂ + ε)   (k < K),    d_K = g / (√v̂ + ε)

    with Adam's bias corrections; ``d_0`` at ``betas[0] = 0.9`` is Adam's direction. Pure: it
    never mutates the state it is given.
    """

    scope = "coordinate"

    def __init__(
        self, betas: Sequence[float] = (0.9, 0.99), beta2: float = 0.999, eps: float = 1e-8
    ) -> None:
        super().__init__()
        if isinstance(betas, (str, bytes)) or not isinstance(betas, Sequence) or not betas:
            raise ValueError(f"betas must be a non-empty list of decays in [0, 1), got {betas!r}")
        self.betas = tuple(unit_interval(b, "every beta", allow_zero=True) for b in betas)
        self.beta2 = unit_interval(beta2, "beta2", allow_zero=True)
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
            raise ValueError(f"eps must be a non-negative finite number, got {eps!r}")
        self.eps = float(eps)

    @property
    def state_keys(self) -> tuple[str, ...]:
        return (*(f"m{k}" for k in range(len(self.betas))), "v")

    @property
    def out_features(self) -> int:
        return len(self.betas) + 1

    @property
    def state_floats(self) -> int:
        return len(self.betas) + 1

    def init_state(self, flat: Tensor, dtype: torch.dtype) -> dict[str, Tensor]:
        n = flat.shape[0]
        return {k: torch.zeros(n, dtype=dtype, device=flat.device) for k in self.state_keys}

    def forward(
        self, grad: Tensor, state: dict[str, Tensor], step: int | Tensor
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """``(directions, new_state)``: ``K + 1`` directions ``[n]``; ``grad`` in the compute
        dtype; ``step`` as in :meth:`raw`."""
        raw, scales, new = self.raw(grad, state, step)
        return [r if _is_one(c) else r * c for r, c in zip(raw, scales)], new

    def raw(
        self, grad: Tensor, state: dict[str, Tensor], step: int | Tensor
    ) -> tuple[list[Tensor], list[float | Tensor], dict[str, Tensor]]:
        """``(raw directions, bias corrections, new_state)`` with ``d_k = raw_k · scales[k]``:
        a caller that multiplies the directions by per-tensor coefficients anyway folds the
        bias corrections into them and saves a pass over the coordinates per momentum.

        ``step`` is the 1-based step: a Python int (the corrections are Python floats, computed
        in double precision) or, under ``torch.compile``, a 0-d tensor (the corrections are 0-d
        tensors on ``grad``'s device, except the gradient's ``1.0``: nothing is read on the
        host, so the compiled step has no graph break)."""
        tensor_step = _check_step(step)
        t = _step_as(step, grad) if tensor_step else None
        dt = grad.dtype
        sdt = state["v"].dtype
        new: dict[str, Tensor] = {}
        v = torch.addcmul(state["v"].to(dt) * self.beta2, grad, grad, value=1 - self.beta2)
        new["v"] = v.to(sdt)
        if tensor_step:
            c2: float | Tensor = one_minus_power(self.beta2, t).rsqrt()
        else:
            c2 = 1.0 / math.sqrt(1 - self.beta2**step)
        if torch.is_grad_enabled():
            # √max(v, 1e-30): finite second-order meta-gradients for never-moving coordinates
            denom = v.clamp_min(_V_FLOOR).sqrt().mul(c2).add(self.eps)
        else:  # the same values in fewer passes
            denom = v.sqrt().mul_(c2).add_(self.eps)
        raw, scales = [], []
        for k, beta in enumerate(self.betas):
            m = torch.lerp(state[f"m{k}"].to(dt), grad, 1 - beta)
            new[f"m{k}"] = m.to(sdt)
            raw.append(m / denom)
            scales.append(
                one_minus_power(beta, t).reciprocal() if tensor_step else 1.0 / (1 - beta**step)
            )
        raw.append(grad / denom)
        scales.append(1.0)
        return raw, scales, new

    def config(self) -> dict[str, Any]:
        return {"betas": list(self.betas), "beta2": self.beta2, "eps": self.eps}
