"""Per-coordinate input features for learned update rules, with their own state.

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
from torch import Tensor, nn

from optizoo._validate import nonnegative_finite, positive_finite, unit_interval
from optizoo.preprocess.builtin import log_and_sign

__all__ = ["FEATURE_STATE_KEYS", "Features"]

#: floor of ``v`` under the square root (keeps ∂√v/∂v finite for coordinates with zero gradient)
_V_FLOOR = 1e-30

#: state keys owned by :class:`Features` (rules that embed it must not reuse them)
FEATURE_STATE_KEYS = ("m", "v")


class Features(nn.Module):
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
        if isinstance(progress, (str, bytes)) or not isinstance(progress, Sequence):
            raise ValueError(
                f"progress must be a list of positive time constants, got {progress!r}"
            )
        if not all(isinstance(t, (int, float)) and math.isfinite(t) and t > 0 for t in progress):
            raise ValueError(f"progress time constants must be positive, got {list(progress)!r}")
        self.progress = tuple(float(t) for t in progress)
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
        self, grad: Tensor, state: dict[str, Tensor], *, param: Tensor | None = None, step: int
    ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """One step of the feature state.

        Args:
            grad: flat gradient ``[n]`` (the compute dtype).
            state: ``{"m": [n, B], "v": [n]}`` from :meth:`init_state` or a previous call.
            param: flat parameter values ``[n]`` (required when ``param=True``).
            step: 1-based step number.

        Returns:
            ``(features [n, k], new_state, normalized)`` where ``normalized [n, B]`` holds the
            unclamped Adam-normalized momenta ``m̂_i / (√v̂ + ε)`` (the nominal directions).
        """
        tensor_step = isinstance(step, Tensor)  # a compiled optimizer step passes a 0-d tensor
        if not tensor_step and step < 1:
            raise ValueError(f"step is 1-based, got {step}")
        dt = grad.dtype
        betas = torch.tensor(self.betas, dtype=dt, device=grad.device)
        m_prev = state["m"].to(dt)
        v_prev = state["v"].to(dt)
        g = grad.unsqueeze(1)
        m = m_prev + (1 - betas) * (g - m_prev)
        v = self.beta2 * v_prev + (1 - self.beta2) * grad * grad
        bc1 = 1 - betas**step  # [B]
        if tensor_step:
            bc2_sqrt = (1 - self.beta2 ** step.to(dt)).sqrt()
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
            if tensor_step:
                taus = torch.tensor(self.progress, dtype=dt, device=grad.device)
                prog = torch.tanh(step.to(device=grad.device, dtype=dt) / taus)
            else:
                prog = torch.tensor([math.tanh(step / t) for t in self.progress], dtype=dt)
            feats.append(prog.to(grad.device).expand(grad.shape[0], -1))
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

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config().items())
