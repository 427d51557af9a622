"""Cells: the recurrent or feed-forward core of a learned rule.

- :func:`lstm_layer`: one LSTM layer's gate math for a batch of rows. It is the ONLY place the
  gates are computed: :class:`CoordinateLSTM` (one row per coordinate) and :class:`TensorLSTM`
  (one row per tensor) both call it, so a fused kernel replaces it in one call.
- :class:`CoordinateLSTM`: the paper's coordinate-wise stacked LSTM (Andrychowicz et al. 2016),
  state ``h, c [n, L, H]``.
- :class:`TensorLSTM`: the same cell over per-tensor statistics ``[T, k]`` (one row per tensor, as
  in VeLO and the hierarchical RNN of Wichrowska et al. 2017), state ``tensor_h, tensor_c
  [T, L, H]``; its cost grows with the number of tensors, not of coordinates.
- :class:`MLP`: a per-coordinate ReLU MLP (no recurrent state).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from optizoo._validate import positive_int
from optizoo.rules.fused_lstm import lstm_layer as fused_lstm_layer
from optizoo.rules.fused_lstm import pack_weights
from optizoo.rules.parts.base import Part

__all__ = ["MLP", "CoordinateLSTM", "TensorLSTM", "lstm_layer"]


def lstm_layer(x: Tensor, h: Tensor, c: Tensor, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """One LSTM layer on a batch of rows.

    Args:
        x: inputs ``[B, k]``.
        h, c: previous hidden and cell states ``[B, H]``.
        w: gate weights ``[4H, k + H]`` over ``[x, h]``; gate order along dim 0: input, forget,
            output (sigmoid), cell candidate (tanh).
        b: gate biases ``[4H]``.

    Returns:
        ``(h_new, c_new)``, each ``[B, H]``.

    The weights are packed once (:func:`optizoo.rules.fused_lstm.pack_weights`: cell-candidate
    rows x 2, so a single sigmoid serves all gates) and the layer runs as the fused cell
    :func:`optizoo.rules.fused_lstm.lstm_layer` (in place without autograd, a hand-written
    backward with it).
    """
    w, b = pack_weights(w, b)
    return fused_lstm_layer(x, h, c, w, b)


class _StackedLSTM(Part):
    """A stack of LSTM layers whose rows are coordinates or tensors (see subclasses)."""

    #: names of the hidden and cell state entries
    state_keys: ClassVar[tuple[str, str]] = ("h", "c")

    def __init__(
        self, in_features: int, hidden_size: int = 20, num_layers: int = 2, forget_bias: float = 1.0
    ) -> None:
        super().__init__()
        positive_int(in_features, "in_features")
        positive_int(hidden_size, "hidden_size")
        positive_int(num_layers, "num_layers")
        if not (isinstance(forget_bias, (int, float)) and math.isfinite(forget_bias)):
            raise ValueError(f"forget_bias must be a finite number, got {forget_bias!r}")
        self.in_features = in_features
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.forget_bias = float(forget_bias)
        h = hidden_size
        bound = 1.0 / math.sqrt(h)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for layer in range(num_layers):
            fan_in = (in_features if layer == 0 else h) + h
            self.weights.append(nn.Parameter(torch.empty(4 * h, fan_in).uniform_(-bound, bound)))
            bias = torch.empty(4 * h).uniform_(-bound, bound)
            bias[h : 2 * h] += forget_bias
            self.biases.append(nn.Parameter(bias))

    @property
    def out_features(self) -> int:
        return self.hidden_size

    @property
    def state_floats(self) -> int:
        """Floats of state per row (h and c of every layer)."""
        return 2 * self.num_layers * self.hidden_size

    def init_state(self, rows: int, dtype: torch.dtype, device: torch.device) -> dict[str, Tensor]:
        """Zero ``h`` and ``c`` of shape ``[rows, num_layers, hidden_size]``."""
        shape = (rows, self.num_layers, self.hidden_size)
        kh, kc = self.state_keys
        return {
            kh: torch.zeros(shape, dtype=dtype, device=device),
            kc: torch.zeros(shape, dtype=dtype, device=device),
        }

    def forward(
        self, x: Tensor, state: dict[str, Tensor], compute: torch.dtype | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Inputs ``x [B, k]`` → top hidden state ``[B, H]`` and the new ``h, c`` (state dtype).

        ``compute`` is the arithmetic dtype (default: ``x``'s).
        """
        compute = compute or x.dtype
        kh, kc = self.state_keys
        h_prev = state[kh].to(compute).unbind(1)
        c_prev = state[kc].to(compute).unbind(1)
        hs, cs = [], []
        for layer in range(self.num_layers):
            w = self.weights[layer].to(compute)
            b = self.biases[layer].to(compute)
            x, c = lstm_layer(x, h_prev[layer], c_prev[layer], w, b)
            hs.append(x)
            cs.append(c)
        sdt = state[kh].dtype
        return x, {kh: torch.stack(hs, 1).to(sdt), kc: torch.stack(cs, 1).to(sdt)}

    def flops_per_row(self) -> int:
        """Multiply-add FLOPs (2 per MAC) of the gate products per row."""
        h, k = self.hidden_size, self.in_features
        return sum(2 * 4 * h * ((k if layer == 0 else h) + h) for layer in range(self.num_layers))

    def config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "forget_bias": self.forget_bias,
        }


class CoordinateLSTM(_StackedLSTM):
    """The coordinate-wise stacked LSTM: one row per coordinate, state ``h, c [n, L, H]``."""

    scope = "coordinate"
    state_keys = ("h", "c")


class TensorLSTM(_StackedLSTM):
    """The per-tensor stacked LSTM: one row per tensor, state ``tensor_h, tensor_c [T, L, H]``.

    Its input is per-tensor statistics (:class:`~optizoo.rules.parts.inputs.TensorStats`); its
    output is broadcast to the tensor's coordinates by a head.
    """

    scope = "tensor"
    state_keys = ("tensor_h", "tensor_c")


class MLP(Part):
    """Per-coordinate MLP: ``num_layers`` hidden layers of ``hidden_size`` ReLU units."""

    scope = "coordinate"

    def __init__(self, in_features: int, hidden_size: int = 20, num_layers: int = 2) -> None:
        super().__init__()
        positive_int(in_features, "in_features")
        positive_int(hidden_size, "hidden_size")
        positive_int(num_layers, "num_layers")
        self.in_features = in_features
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for layer in range(num_layers):
            fan_in = in_features if layer == 0 else hidden_size
            b = 1.0 / math.sqrt(fan_in)
            self.weights.append(nn.Parameter(torch.empty(hidden_size, fan_in).uniform_(-b, b)))
            self.biases.append(nn.Parameter(torch.empty(hidden_size).uniform_(-b, b)))

    @property
    def out_features(self) -> int:
        return self.hidden_size

    state_floats = 0

    def forward(self, x: Tensor, compute: torch.dtype | None = None) -> Tensor:
        """``x [B, k]`` → ``[B, hidden_size]``."""
        compute = compute or x.dtype
        for layer in range(self.num_layers):
            w = self.weights[layer].to(compute)
            x = torch.addmm(self.biases[layer].to(compute), x, w.t()).relu()
        return x

    def flops_per_row(self) -> int:
        h, k = self.hidden_size, self.in_features
        return sum(2 * h * (k if layer == 0 else h) for layer in range(self.num_layers))

    def config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
        }
