"""The coordinate-wise LSTM update rule of Andrychowicz et al. (2016), composed from parts.

The paper's rule is one composition of :mod:`optizoo.rules.parts`: log-and-sign inputs
(:class:`~optizoo.rules.parts.Preprocessed`) → a 2×20 :class:`~optizoo.rules.parts.CoordinateLSTM`
→ a :class:`~optizoo.rules.parts.LinearHead` → :class:`~optizoo.rules.parts.OutputScale` (0.1).
The options below swap parts in (features, the MLP cell, the nominal step, weight decay). Weight
files keep the flat tensor names they always had (``weights.0``, ``head_weight``, ``log_lr``...):
:meth:`LSTMRule.state_dict` and :meth:`LSTMRule.load_state_dict` translate them to the parts'.

One small LSTM (default 2 layers x 20 hidden units) is shared by every coordinate of every
parameter. All coordinates are processed as one batch ``[n, features]``: each layer's four gates
come from a single matrix product ``[x_t, h_{t-1}] @ W^T`` over all ``n`` coordinates. A linear
head maps the top hidden state to one number per coordinate, multiplied by ``output_scale``.

Per-coordinate state: ``h`` and ``c`` of shape ``[n, num_layers, hidden_size]``.

Options beyond the paper (all recorded by :meth:`LSTMRule.config`, so weight files rebuild them;
the defaults are the paper's rule, bit for bit):

- ``features``: instead of the preprocessed raw gradient, feed the scale-free features of
  :class:`optizoo.rules.features.Features` (Adam-normalized momenta at several decays, ``g/√v̂``,
  optionally the parameter value and training-progress features ``tanh(step/T)``). Adds the
  state ``m [n, B]`` and ``v [n]``.
- ``parameterization="nominal"`` (Harrison et al. 2022): the update is a nominal Adam step that
  the network *corrects*::

      update = −exp(log_lr) · (d · exp(s_max · tanh(o₁)) + a_max · tanh(o₂))

  with ``d = m̂/(√v̂ + ε)`` (Adam's direction at ``nominal_beta``), ``o₁, o₂`` the head's two
  outputs and ``log_lr`` a learned scalar (initialised at ``log(nominal_lr)``). The head starts
  at zero, so the untrained rule *is* Adam with learning rate ``nominal_lr``; the step is bounded
  by ``exp(log_lr) · (|d| e^{s_max} + a_max)`` whatever the network outputs.
- ``weight_decay > 0`` (with ``"nominal"``): a learned *decoupled* weight decay (Loshchilov &
  Hutter 2019) joins the nominal step, modulated per coordinate by a third head output::

      update = −exp(log_lr) · (d · e^{s_max tanh o₁} + a_max tanh o₂ + e^{log_wd + s_max tanh o₃} · θ)

  ``log_wd`` is a learned scalar initialised at ``log(weight_decay)``; the untrained rule is
  exactly ``torch.optim.AdamW(lr=nominal_lr, weight_decay=weight_decay)``. Meta-training on a
  validation objective then learns how much to regularize, not only how fast to descend.
- ``cell="mlp"``: a per-coordinate MLP (``num_layers`` hidden layers of ``hidden_size`` ReLU
  units) instead of the LSTM: no hidden state, only the features' state.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from optizoo._validate import nonnegative_finite, positive_finite, positive_int
from optizoo.preprocess.base import Preprocessor
from optizoo.rules.base import (
    State,
    StateDtypeOption,
    UpdateRule,
    check_state_dtype,
    log_learning_rate,
)
from optizoo.rules.parts import (
    MLP,
    CoordinateLSTM,
    DecoupledWeightDecay,
    Features,
    LinearHead,
    NominalStep,
    OutputScale,
    Preprocessed,
)

__all__ = ["LSTMRule"]

_PARAMETERIZATIONS = ("direct", "nominal")
_CELLS = ("lstm", "mlp")
#: the parts' tensor names -> the names weight files have always used
_LEGACY_NAMES = (
    ("cell.weights.", "weights."),
    ("cell.biases.", "biases."),
    ("head.weight", "head_weight"),
    ("head.bias", "head_bias"),
    ("nominal.log_lr", "log_lr"),
    ("decay.log_wd", "log_wd"),
    ("pre.preprocess.", "preprocess."),
)


def _rename(state_dict: dict[str, Any], prefix: str, pairs) -> None:
    for key in list(state_dict):
        if not key.startswith(prefix):
            continue
        local = key[len(prefix) :]
        for old, new in pairs:
            if local.startswith(old):
                state_dict[prefix + new + local[len(old) :]] = state_dict.pop(key)
                break


def _to_legacy(module, state_dict, prefix, local_metadata) -> None:
    _rename(state_dict, prefix, _LEGACY_NAMES)


def _from_legacy(module, state_dict, prefix, *args) -> None:
    _rename(state_dict, prefix, [(new, old) for old, new in _LEGACY_NAMES])


class LSTMRule(StateDtypeOption, UpdateRule):
    """Coordinate-wise LSTM optimizer.

    Args:
        hidden_size: LSTM units per layer (paper: 20).
        num_layers: stacked LSTM layers (paper: 2).
        preprocessor: registry name of the gradient preprocessor (``"log_sign"`` or
            ``"identity"``, or one from a plugin).
        preprocessor_args: keyword arguments of the preprocessor (``{"p": 10.0}``).
        output_scale: multiplies the linear head's output (paper: 0.1).
        forget_bias: initial bias of the forget gates (+1 keeps early memory).
        state_dtype: ``"auto"`` (float32 for low-precision parameters, the parameters' dtype
            otherwise) or ``"bfloat16"`` to halve the hidden state's memory (the arithmetic stays
            float32).
        features: ``None`` (the paper: preprocessed raw gradient) or the keyword arguments of
            :class:`~optizoo.rules.features.Features` (``{}`` for its defaults).
        parameterization: ``"direct"`` (the paper: ``output_scale · head``) or ``"nominal"``
            (a learned correction of Adam's step; needs ``features``, defaulted to ``{}``).
        cell: ``"lstm"`` (the paper) or ``"mlp"`` (per-coordinate MLP, no recurrent state).
        nominal_lr: initial learned learning rate of the nominal Adam step.
        nominal_beta: momentum decay of the nominal direction (must be one of the features'
            ``betas``; Adam's β₁ = 0.9 by default).
        max_log_scale: bound ``s_max`` of the multiplicative correction's log.
        additive_scale: bound ``a_max`` of the additive correction (in units of the lr).
        weight_decay: initial learned decoupled weight decay of the nominal step (``0``: none;
            ``0.01`` is ``torch.optim.AdamW``'s default). Needs ``parameterization="nominal"``.
    """

    rule_name = "lstm"

    def __init__(
        self,
        hidden_size: int = 20,
        num_layers: int = 2,
        *,
        preprocessor: str = "log_sign",
        preprocessor_args: dict[str, Any] | None = None,
        output_scale: float = 0.1,
        forget_bias: float = 1.0,
        state_dtype: str = "auto",
        features: dict[str, Any] | None = None,
        parameterization: str = "direct",
        cell: str = "lstm",
        nominal_lr: float = 1e-2,
        nominal_beta: float = 0.9,
        max_log_scale: float = 2.0,
        additive_scale: float = 0.1,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        positive_int(hidden_size, "hidden_size")
        positive_int(num_layers, "num_layers")
        positive_finite(output_scale, "output_scale")
        check_state_dtype(state_dtype)
        if parameterization not in _PARAMETERIZATIONS:
            raise ValueError(
                f"parameterization must be one of {list(_PARAMETERIZATIONS)}, got "
                f"{parameterization!r}"
            )
        if cell not in _CELLS:
            raise ValueError(f"cell must be one of {list(_CELLS)}, got {cell!r}")
        if features is not None and not isinstance(features, dict):
            raise TypeError(
                f"features must be a dict of Features options or None, got {features!r}"
            )
        if parameterization == "nominal" and features is None:
            features = {}
        log_learning_rate(
            nominal_lr, "nominal_lr"
        )  # validates (0 allowed: a rule that never steps)
        for name, value in (
            ("max_log_scale", max_log_scale),
            ("additive_scale", additive_scale),
            ("weight_decay", weight_decay),
        ):
            nonnegative_finite(value, name)
        if weight_decay > 0 and parameterization != "nominal":
            raise ValueError(
                "weight_decay (a learned decoupled weight decay) needs "
                f'parameterization="nominal", got parameterization={parameterization!r}'
            )
        self.features: Features | None = None if features is None else Features(**features)
        self.parameterization = parameterization
        self.cell_kind = cell
        self.nominal_lr = float(nominal_lr)
        self.nominal_beta = float(nominal_beta)
        self.max_log_scale = float(max_log_scale)
        self.additive_scale = float(additive_scale)
        self.weight_decay = float(weight_decay)
        self._nominal_index = 0
        if parameterization == "nominal":
            assert self.features is not None
            if self.nominal_beta not in self.features.betas:
                raise ValueError(
                    f"nominal_beta={nominal_beta!r} must be one of the features' betas "
                    f"{list(self.features.betas)}"
                )
            self._nominal_index = self.features.betas.index(self.nominal_beta)
        self.needs_param = bool(
            (self.features is not None and self.features.param) or self.weight_decay > 0
        )
        self.preprocessor_name = preprocessor
        self.preprocessor_args = dict(preprocessor_args or {})
        self.pre = Preprocessed(preprocessor, self.preprocessor_args)
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.output_scale = float(output_scale)
        self.forget_bias = float(forget_bias)
        self.state_dtype_name = state_dtype

        k = self.in_features
        self.cell: CoordinateLSTM | MLP = (
            MLP(k, hidden_size, num_layers)
            if cell == "mlp"
            else CoordinateLSTM(k, hidden_size, num_layers, forget_bias)
        )
        if parameterization == "nominal":
            # zero head: the untrained rule is exactly Adam (AdamW with weight_decay) at nominal_lr
            outputs = 3 if self.weight_decay > 0 else 2
            self.head = LinearHead(hidden_size, outputs, init="zero")
            self.nominal = NominalStep(nominal_lr, max_log_scale, additive_scale)
            if self.weight_decay > 0:
                self.decay = DecoupledWeightDecay(self.weight_decay, max_log_scale)
        else:
            self.head = LinearHead(hidden_size, 1, init="uniform")
            self.scale = OutputScale(output_scale)
        self.register_state_dict_post_hook(_to_legacy)
        self.register_load_state_dict_pre_hook(_from_legacy)

    # the flat names of the rule's tensors, as before it was built from parts
    @property
    def preprocess(self) -> Preprocessor:
        """The gradient preprocessor (the paper's log-and-sign by default)."""
        return self.pre.preprocess

    @property
    def weights(self) -> nn.ParameterList:
        """The cell's weight matrices, one per layer."""
        return self.cell.weights

    @property
    def biases(self) -> nn.ParameterList:
        """The cell's biases, one per layer."""
        return self.cell.biases

    @property
    def head_weight(self) -> nn.Parameter:
        return self.head.weight

    @property
    def head_bias(self) -> nn.Parameter:
        return self.head.bias

    @property
    def log_lr(self) -> nn.Parameter:
        """Learned log step size of the nominal step (``parameterization="nominal"``)."""
        return self.nominal.log_lr

    @property
    def log_wd(self) -> nn.Parameter:
        """Learned log weight decay (``weight_decay > 0``)."""
        return self.decay.log_wd

    @property
    def in_features(self) -> int:
        """Inputs per coordinate of the first layer (features or preprocessor outputs)."""
        if self.features is not None:
            return self.features.out_features
        return self.preprocess.out_features

    def decay_lr(self) -> Tensor | None:
        """The nominal step's learned learning rate ``exp(log_lr)`` (``None`` for the paper's
        direct parameterization, which has no step size)."""
        if self.parameterization != "nominal":
            return None
        return self.log_lr.detach().exp()

    def init_state(self, flat: Tensor) -> State:
        shape = (flat.shape[0], self.num_layers, self.hidden_size)
        dtype = self.state_dtype(flat.dtype)
        state: State = {}
        if self.cell_kind == "lstm":
            state.update(self.cell.init_state(shape[0], dtype, flat.device))
        if self.features is not None:
            state.update(self.features.init_state(flat, dtype))
        return state

    def state_floats_per_coordinate(self) -> int:
        """Floats of optimizer state per coordinate (times the state dtype's size: bytes)."""
        lstm = self.cell.state_floats
        return lstm + (self.features.state_floats if self.features is not None else 0)

    def forward(
        self, grad: Tensor, state: State, *, param: Tensor | None = None, step: int
    ) -> tuple[Tensor, State]:
        compute = grad.dtype if grad.dtype == torch.float64 else torch.float32
        new_state: State = {}
        normalized = None
        if self.features is not None:
            x, fstate, normalized = self.features(
                grad.to(compute),
                {k: state[k] for k in ("m", "v")},
                param=None if param is None else param.to(compute),
                step=step,
            )
            new_state.update(fstate)
        else:
            x = self.pre(grad.to(compute))
        if isinstance(self.cell, CoordinateLSTM):
            x, lstm_state = self.cell(x, state, compute)
            new_state.update(lstm_state)
        else:
            x = self.cell(x, compute)
        out = self.head(x, compute)
        if self.parameterization == "nominal":
            assert normalized is not None
            d = normalized[:, self._nominal_index]
            direction = self.nominal.direction(d, out[:, 0], out[:, 1])
            if self.weight_decay > 0:
                direction = self.decay(direction, param, out[:, 2])
            update = self.nominal(direction)
        else:
            update = self.scale(out)
        return update.to(grad.dtype), new_state

    def config(self) -> dict[str, Any]:
        """Constructor arguments; the options beyond the paper appear only when set, so the
        paper's rule keeps the config it always had."""
        cfg: dict[str, Any] = {
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "preprocessor": self.preprocessor_name,
            "preprocessor_args": self.preprocessor_args,
            "output_scale": self.output_scale,
            "forget_bias": self.forget_bias,
            "state_dtype": self.state_dtype_name,
        }
        if self.features is not None:
            cfg["features"] = self.features.config()
        if self.cell_kind != "lstm":
            cfg["cell"] = self.cell_kind
        if self.parameterization != "direct":
            cfg.update(
                parameterization=self.parameterization,
                nominal_lr=self.nominal_lr,
                nominal_beta=self.nominal_beta,
                max_log_scale=self.max_log_scale,
                additive_scale=self.additive_scale,
            )
            if self.weight_decay > 0:
                cfg["weight_decay"] = self.weight_decay
        return cfg

    def flops_per_coordinate(self) -> int:
        """Multiply-add FLOPs per coordinate per step (2 per MAC) of the network's matrix
        products (gates or MLP layers, and the head), for benchmarks. The features' and the
        nominal step's element-wise work (a few dozen FLOPs) is not counted."""
        return self.cell.flops_per_row() + self.head.flops_per_row()
