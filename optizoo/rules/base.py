"""The :class:`UpdateRule` interface every optizoo optimizer implements.

An update rule is an ``nn.Module`` whose parameters are its *meta-parameters* (LSTM weights, or a
log learning rate and a momentum logit). It maps a flat batch of ``n`` gradient coordinates plus
per-coordinate state to an update of the same shape plus the new state::

    state = rule.init_state(flat_params)                     # {name: Tensor[n, ...]}
    update, state = rule(grad, state, param=flat_params, step=1)
    new_params = flat_params + update

Most rules are *coordinate-wise*: coordinate ``i``'s update depends only on coordinate ``i``'s
gradient history (and the step number), so any set of parameters can be flattened into one batch.
A rule with ``per_tensor = True`` (built from per-tensor parts: per-tensor statistics, a per-tensor
LSTM, RMS normalization, orthogonalization) needs whole tensors: callers then pass
``segments=Segments(shapes)`` (:class:`optizoo.rules.parts.Segments`, the shapes of the tensors
in the batch, in order) to :meth:`~UpdateRule.init_state` and :meth:`~UpdateRule.forward`, and
state entries named in ``tensor_state_keys`` have one row per tensor instead of per coordinate.
``forward`` is pure: it never mutates its inputs, so the same code is differentiated through by the
meta-trainer and run under ``torch.no_grad()`` by :class:`optizoo.optim.LearnedOptimizer`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from optizoo._validate import learning_rate
from optizoo.rules.segments import Segments

State = dict[str, Tensor]


class UpdateRule(nn.Module):
    """Base class of update rules (learned and hand-designed).

    Subclasses set :attr:`rule_name` (the registry name written into weight files), implement
    :meth:`init_state` and :meth:`forward`, and return their constructor arguments from
    :meth:`config` so that ``type(rule)(**rule.config())`` rebuilds the same architecture.
    """

    #: Registry name of the rule, recorded in weight files as ``optizoo.rule``.
    rule_name: ClassVar[str] = "rule"
    #: Whether :meth:`forward` reads ``param`` (the current parameter values).
    needs_param: ClassVar[bool] = False
    #: Whether the rule needs whole tensors (``segments=`` in init_state and forward). A rule
    #: with per-tensor statistics cannot step a subset of coordinates (a chunk) alone; it steps
    #: FSDP shards only if :meth:`supports_sharding` (its statistics are then reduced over the
    #: shards), else the optimizer refuses sharded (DTensor) parameters.
    per_tensor: ClassVar[bool] = False
    #: State keys with one row per tensor (per-tensor rules), not one per coordinate.
    tensor_state_keys: ClassVar[tuple[str, ...]] = ()
    #: Coordinates per call this rule runs best with (``None``: the optimizer's default chunk).
    #: Cheap rules set it high: each call has a fixed per-call cost.
    preferred_chunk: ClassVar[int | None] = None

    def supports_sharding(self) -> bool:
        """Whether the rule can step each tensor's local shard (FSDP2 ``DTensor`` parameters):
        every coordinate-wise rule can; a per-tensor rule only if all its per-tensor parts sum
        partial statistics over the shards through ``Segments.reduce`` (override to say so)."""
        return not self.per_tensor

    def init_state(self, flat: Tensor) -> State:
        """Fresh per-coordinate state for the coordinates ``flat`` (shape ``[n]``).

        Every returned tensor has leading dimension ``n`` and lives on ``flat``'s device.
        """
        return {}

    def state_dtype(self, param_dtype: torch.dtype) -> torch.dtype:
        """The dtype state (and the rule's arithmetic) uses for parameters of ``param_dtype``.

        float64 parameters keep float64 state; everything narrower (bf16, fp16) computes in
        float32 so that low-precision parameters do not degrade the optimizer's memory.
        """
        return torch.float64 if param_dtype == torch.float64 else torch.float32

    def decay_lr(self) -> Tensor | None:
        """The rule's own step size, which scales a param group's decoupled ``weight_decay``
        (AdamW's ``lr · weight_decay``), as a 0-d tensor; ``None`` if the rule has none (then
        a non-zero ``weight_decay`` is refused)."""
        return None

    def forward(
        self, grad: Tensor, state: State, *, param: Tensor | None = None, step: int
    ) -> tuple[Tensor, State]:
        """Compute the update for one step.

        Args:
            grad: flat gradient, shape ``[n]``.
            state: per-coordinate state from :meth:`init_state` or a previous call.
            param: flat current parameter values ``[n]`` (rules with ``needs_param``).
            step: 1-based index of this step (1 on the first update); a 0-d tensor when the
                optimizer step is being compiled (so that it is not a recompiling constant).

        Returns:
            ``(update, new_state)``; ``update`` has ``grad``'s shape and is *added* to the
            parameters (a descent rule returns ``-lr * direction``).
        """
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments that rebuild this architecture."""
        return {}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config().items())


#: ``log_lr`` stored for ``lr = 0``: finite (weight files refuse non-finite tensors) and
#: ``exp(-1e4)`` is exactly 0 in float32 and float64
LOG_LR_OF_ZERO = -1e4


def log_learning_rate(lr: float, name: str = "lr") -> float:
    """``log(lr)`` for a learned log learning rate, after checking ``lr >= 0`` (finite).

    ``lr = 0`` maps to :data:`LOG_LR_OF_ZERO`, so such a rule takes no steps and its meta-gradient
    with respect to ``log_lr`` is 0.
    """
    lr = learning_rate(lr, name)
    return math.log(lr) if lr > 0 else LOG_LR_OF_ZERO


def rule_kwargs(rule: UpdateRule, shapes: Any) -> dict[str, Any]:
    """``{"segments": Segments(shapes)}`` for a per-tensor rule, ``{}`` otherwise: the extra
    keyword arguments of :meth:`UpdateRule.init_state` and :meth:`UpdateRule.forward`.
    ``shapes`` is a sequence of tensor shapes or a callable returning one (called only when
    needed)."""
    if not getattr(rule, "per_tensor", False):
        return {}
    shapes = shapes() if callable(shapes) else shapes
    return {"segments": shapes if isinstance(shapes, Segments) else Segments(shapes)}


def as_meta_tensor(value: float | Tensor, name: str) -> Tensor:
    """Convert a hyper-parameter to a float64 scalar tensor, validating it is finite."""
    t = torch.as_tensor(value, dtype=torch.float64).detach().clone()
    if t.numel() != 1:
        raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(t.shape)}")
    if not torch.isfinite(t):
        raise ValueError(f"{name} must be finite, got {float(t)}")
    return t.reshape(())


def weights_sha256(module: nn.Module) -> str:
    """sha256 over a module's ``state_dict`` (names, dtypes, shapes and raw bytes, sorted by name).

    Identifies the weights an optimizer state was made with, independent of file format.
    """
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


#: the ``state_dtype`` options of the learned rules: a fixed dtype, or ``None`` for ``"auto"``
STATE_DTYPES: dict[str, torch.dtype | None] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "auto": None,
}


def check_state_dtype(state_dtype: Any) -> str:
    """``state_dtype`` if it is one of :data:`STATE_DTYPES`' names, else a ``ValueError``."""
    if not isinstance(state_dtype, str) or state_dtype not in STATE_DTYPES:
        raise ValueError(f"state_dtype must be one of {sorted(STATE_DTYPES)}, got {state_dtype!r}")
    return state_dtype


class StateDtypeOption:
    """The ``state_dtype`` option of a learned rule (mixed into an :class:`UpdateRule`):
    ``"auto"`` (:meth:`UpdateRule.state_dtype`'s choice), ``"float32"`` or ``"bfloat16"`` (half
    the per-coordinate state; the arithmetic stays float32), kept in ``state_dtype_name``."""

    state_dtype_name: str = "auto"

    def set_state_dtype(self, state_dtype: str) -> None:
        """Change the state dtype; the weights, and so their sha256 identity, stay the same."""
        self.state_dtype_name = check_state_dtype(state_dtype)

    def state_dtype(self, param_dtype: torch.dtype) -> torch.dtype:
        fixed = STATE_DTYPES[self.state_dtype_name]
        return fixed if fixed is not None else super().state_dtype(param_dtype)  # type: ignore[misc]
