"""The coordinate-wise LSTM update rule of Andrychowicz et al. (2016).

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

import math
from typing import Any

import torch
from torch import Tensor, nn

from optizoo._validate import nonnegative_finite, positive_finite, positive_int
from optizoo.preprocess.base import Preprocessor
from optizoo.rules.base import State, UpdateRule, log_learning_rate
from optizoo.rules.fused_lstm import lstm_layer, pack_weights

__all__ = ["LSTMRule"]

_STATE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "auto": None}
_PARAMETERIZATIONS = ("direct", "nominal")
_CELLS = ("lstm", "mlp")


def _check_state_dtype(state_dtype: str) -> None:
    if state_dtype not in _STATE_DTYPES:
        raise ValueError(f"state_dtype must be one of {sorted(_STATE_DTYPES)}, got {state_dtype!r}")


class LSTMRule(UpdateRule):
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
        _check_state_dtype(state_dtype)
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
        log_nominal_lr = log_learning_rate(nominal_lr, "nominal_lr")
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
        from optizoo import preprocess
        from optizoo.rules.features import Features

        self.features: Features | None = None if features is None else Features(**features)
        self.parameterization = parameterization
        self.cell = cell
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
        self.preprocess: Preprocessor = preprocess.get(preprocessor)(**self.preprocessor_args)
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.output_scale = float(output_scale)
        self.forget_bias = float(forget_bias)
        self.state_dtype_name = state_dtype

        h = hidden_size
        k = self.in_features
        bound = 1.0 / math.sqrt(h)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for layer in range(num_layers):
            if cell == "mlp":
                fan_in = k if layer == 0 else h
                b = 1.0 / math.sqrt(fan_in)
                self.weights.append(nn.Parameter(torch.empty(h, fan_in).uniform_(-b, b)))
                self.biases.append(nn.Parameter(torch.empty(h).uniform_(-b, b)))
                continue
            fan_in = (k if layer == 0 else h) + h
            # gate order along dim 0: input, forget, output (sigmoid) | cell candidate (tanh)
            self.weights.append(nn.Parameter(torch.empty(4 * h, fan_in).uniform_(-bound, bound)))
            bias = torch.empty(4 * h).uniform_(-bound, bound)
            bias[h : 2 * h] += forget_bias
            self.biases.append(nn.Parameter(bias))
        if parameterization == "nominal":
            # zero head: the untrained rule is exactly Adam (AdamW with weight_decay) at nominal_lr
            outputs = 3 if self.weight_decay > 0 else 2
            self.head_weight = nn.Parameter(torch.zeros(outputs, h))
            self.head_bias = nn.Parameter(torch.zeros(outputs))
            self.log_lr = nn.Parameter(torch.tensor(log_nominal_lr))
            if self.weight_decay > 0:
                self.log_wd = nn.Parameter(torch.tensor(math.log(self.weight_decay)))
        else:
            self.head_weight = nn.Parameter(torch.empty(1, h).uniform_(-bound, bound))
            self.head_bias = nn.Parameter(torch.zeros(1))

    @property
    def in_features(self) -> int:
        """Inputs per coordinate of the first layer (features or preprocessor outputs)."""
        if self.features is not None:
            return self.features.out_features
        return self.preprocess.out_features

    def set_state_dtype(self, state_dtype: str) -> None:
        """Change the state dtype (``"auto"``, ``"float32"`` or ``"bfloat16"``); the weights,
        and so their sha256 identity, stay the same."""
        _check_state_dtype(state_dtype)
        self.state_dtype_name = state_dtype

    def decay_lr(self) -> Tensor | None:
        """The nominal step's learned learning rate ``exp(log_lr)`` (``None`` for the paper's
        direct parameterization, which has no step size)."""
        if self.parameterization != "nominal":
            return None
        return self.log_lr.detach().exp()

    def state_dtype(self, param_dtype: torch.dtype) -> torch.dtype:
        fixed = _STATE_DTYPES[self.state_dtype_name]
        return fixed if fixed is not None else super().state_dtype(param_dtype)

    def init_state(self, flat: Tensor) -> State:
        shape = (flat.shape[0], self.num_layers, self.hidden_size)
        dtype = self.state_dtype(flat.dtype)
        state: State = {}
        if self.cell == "lstm":
            state["h"] = torch.zeros(shape, dtype=dtype, device=flat.device)
            state["c"] = torch.zeros(shape, dtype=dtype, device=flat.device)
        if self.features is not None:
            state.update(self.features.init_state(flat, dtype))
        return state

    def state_floats_per_coordinate(self) -> int:
        """Floats of optimizer state per coordinate (times the state dtype's size: bytes)."""
        lstm = 2 * self.num_layers * self.hidden_size if self.cell == "lstm" else 0
        return lstm + (self.features.state_floats if self.features is not None else 0)

    def forward(
        self, grad: Tensor, state: State, *, param: Tensor | None = None, step: int
    ) -> tuple[Tensor, State]:
        if self.features is None and self.cell == "lstm":
            return self._forward_paper(grad, state)
        compute = grad.dtype if grad.dtype == torch.float64 else torch.float32
        assert self.features is not None or self.cell == "mlp"
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
            x = self.preprocess(grad.to(compute))
        if self.cell == "lstm":
            x, lstm_state = self._lstm(x, state, compute)
            new_state.update(lstm_state)
        else:
            for layer in range(self.num_layers):
                w = self.weights[layer].to(compute)
                x = torch.addmm(self.biases[layer].to(compute), x, w.t()).relu()
        out = torch.addmm(self.head_bias.to(compute), x, self.head_weight.to(compute).t())
        if self.parameterization == "nominal":
            assert normalized is not None
            d = normalized[:, self._nominal_index]
            scale = torch.exp(self.max_log_scale * torch.tanh(out[:, 0]))
            direction = torch.addcmul(self.additive_scale * torch.tanh(out[:, 1]), d, scale)
            if self.weight_decay > 0:
                if param is None:
                    raise ValueError(
                        "this rule has a learned weight decay and needs param= (the flat "
                        "parameter values); LearnedOptimizer and unroll pass it"
                    )
                decay = torch.exp(
                    self.log_wd.to(compute) + self.max_log_scale * torch.tanh(out[:, 2])
                )
                direction = torch.addcmul(direction, decay, param.to(compute))
            update = -torch.exp(self.log_lr.to(compute)) * direction
        else:
            update = out.squeeze(-1) * self.output_scale
        return update.to(grad.dtype), new_state

    def _lstm(self, x: Tensor, state: State, compute: torch.dtype) -> tuple[Tensor, State]:
        """The stacked LSTM on inputs ``x [n, k]``: top hidden state ``[n, H]`` and new h/c.

        Each layer is :func:`optizoo.rules.fused_lstm.lstm_layer`: one matrix product gives all
        four gates of every coordinate; the cell-candidate rows are pre-scaled by 2 so a single
        sigmoid serves all gates (tanh(z) = 2 sigmoid(2z) - 1), and the backward is hand-written.
        """
        h_prev = state["h"].to(compute).unbind(1)
        c_prev = state["c"].to(compute).unbind(1)
        hs, cs = [], []
        for layer in range(self.num_layers):
            w, b = self._fused(layer, compute)
            x, c = lstm_layer(x, h_prev[layer], c_prev[layer], w, b)
            hs.append(x)
            cs.append(c)
        sdt = state["h"].dtype
        return x, {"h": torch.stack(hs, 1).to(sdt), "c": torch.stack(cs, 1).to(sdt)}

    def _forward_paper(self, grad: Tensor, state: State) -> tuple[Tensor, State]:
        """The paper's rule (default options): preprocessed gradient → LSTM → scaled head."""
        compute = grad.dtype if grad.dtype == torch.float64 else torch.float32
        top, new_state = self._lstm(self.preprocess(grad.to(compute)), state, compute)
        out = torch.addmm(self.head_bias.to(compute), top, self.head_weight.to(compute).t())
        return (out.squeeze(-1) * self.output_scale).to(grad.dtype), new_state

    def _fused(self, layer: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Layer weights in ``dtype``, packed for the fused cell (cell-candidate rows x 2)."""
        return pack_weights(self.weights[layer].to(dtype), self.biases[layer].to(dtype))

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
        if self.cell != "lstm":
            cfg["cell"] = self.cell
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
        h, k = self.hidden_size, self.in_features
        total = 0
        for layer in range(self.num_layers):
            if self.cell == "mlp":
                total += 2 * h * (k if layer == 0 else h)
            else:
                fan_in = (k if layer == 0 else h) + h
                total += 2 * 4 * h * fan_in
        return total + 2 * h * int(self.head_weight.shape[0])
