"""The coordinate-wise LSTM update rule of Andrychowicz et al. (2016).

One small LSTM (default 2 layers x 20 hidden units) is shared by every coordinate of every
parameter. All coordinates are processed as one batch ``[n, features]``: each layer's four gates
come from a single matrix product ``[x_t, h_{t-1}] @ W^T`` over all ``n`` coordinates. A linear
head maps the top hidden state to one number per coordinate, multiplied by ``output_scale``.

Per-coordinate state: ``h`` and ``c`` of shape ``[n, num_layers, hidden_size]``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from optizoo.preprocess import Preprocessor
from optizoo.rules.base import State, UpdateRule

__all__ = ["LSTMRule"]

_STATE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "auto": None}


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
    ) -> None:
        super().__init__()
        if not (isinstance(hidden_size, int) and hidden_size > 0):
            raise ValueError(f"hidden_size must be a positive int, got {hidden_size!r}")
        if not (isinstance(num_layers, int) and num_layers > 0):
            raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
        if not (math.isfinite(output_scale) and output_scale > 0):
            raise ValueError(f"output_scale must be positive and finite, got {output_scale!r}")
        if state_dtype not in _STATE_DTYPES:
            raise ValueError(
                f"state_dtype must be one of {sorted(_STATE_DTYPES)}, got {state_dtype!r}"
            )
        from optizoo import preprocess

        self.preprocessor_name = preprocessor
        self.preprocessor_args = dict(preprocessor_args or {})
        self.preprocess: Preprocessor = preprocess.get(preprocessor)(**self.preprocessor_args)
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.output_scale = float(output_scale)
        self.forget_bias = float(forget_bias)
        self.state_dtype_name = state_dtype

        h = hidden_size
        k = self.preprocess.out_features
        bound = 1.0 / math.sqrt(h)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for layer in range(num_layers):
            fan_in = (k if layer == 0 else h) + h
            # gate order along dim 0: input, forget, output (sigmoid) | cell candidate (tanh)
            self.weights.append(nn.Parameter(torch.empty(4 * h, fan_in).uniform_(-bound, bound)))
            bias = torch.empty(4 * h).uniform_(-bound, bound)
            bias[h : 2 * h] += forget_bias
            self.biases.append(nn.Parameter(bias))
        self.head_weight = nn.Parameter(torch.empty(1, h).uniform_(-bound, bound))
        self.head_bias = nn.Parameter(torch.zeros(1))

    def state_dtype(self, param_dtype: torch.dtype) -> torch.dtype:
        fixed = _STATE_DTYPES[self.state_dtype_name]
        return fixed if fixed is not None else super().state_dtype(param_dtype)

    def init_state(self, flat: Tensor) -> State:
        shape = (flat.shape[0], self.num_layers, self.hidden_size)
        dtype = self.state_dtype(flat.dtype)
        return {
            "h": torch.zeros(shape, dtype=dtype, device=flat.device),
            "c": torch.zeros(shape, dtype=dtype, device=flat.device),
        }

    def forward(
        self, grad: Tensor, state: State, *, param: Tensor | None = None, step: int
    ) -> tuple[Tensor, State]:
        compute = grad.dtype if grad.dtype == torch.float64 else torch.float32
        h_prev = state["h"].to(compute)
        c_prev = state["c"].to(compute)
        x = self.preprocess(grad.to(compute))
        H = self.hidden_size
        hs, cs = [], []
        for layer in range(self.num_layers):
            w, b = self._fused(layer, compute)
            # one matrix product gives all four gates of every coordinate; the cell-candidate
            # rows are pre-scaled by 2 so a single sigmoid serves all gates:
            # tanh(z) = 2 * sigmoid(2 z) - 1
            gates = torch.addmm(b, torch.cat((x, h_prev[:, layer]), dim=1), w.t()).sigmoid_()
            i, f, o, g = gates[:, :H], gates[:, H : 2 * H], gates[:, 2 * H : 3 * H], gates[:, 3 * H :]
            c = torch.addcmul(f * c_prev[:, layer], i, g.mul(2.0).sub_(1.0))
            x = o * torch.tanh(c)
            hs.append(x)
            cs.append(c)
        out = torch.addmm(self.head_bias.to(compute), x, self.head_weight.to(compute).t())
        update = (out.squeeze(-1) * self.output_scale).to(grad.dtype)
        sdt = state["h"].dtype
        return update, {"h": torch.stack(hs, 1).to(sdt), "c": torch.stack(cs, 1).to(sdt)}

    def _fused(self, layer: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Layer weights in ``dtype`` with the cell-candidate rows scaled by 2 (see forward)."""
        H = self.hidden_size
        scale = torch.ones(4 * H, 1, dtype=dtype, device=self.head_bias.device)
        scale[3 * H :] = 2.0
        w = self.weights[layer].to(dtype) * scale
        b = self.biases[layer].to(dtype) * scale.squeeze(1)
        return w, b

    def config(self) -> dict[str, Any]:
        return {
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "preprocessor": self.preprocessor_name,
            "preprocessor_args": self.preprocessor_args,
            "output_scale": self.output_scale,
            "forget_bias": self.forget_bias,
            "state_dtype": self.state_dtype_name,
        }

    def flops_per_coordinate(self) -> int:
        """Multiply-add FLOPs per coordinate per step (2 per MAC), for benchmarks."""
        h, k = self.hidden_size, self.preprocess.out_features
        total = 0
        for layer in range(self.num_layers):
            fan_in = (k if layer == 0 else h) + h
            total += 2 * 4 * h * fan_in
        return total + 2 * h
