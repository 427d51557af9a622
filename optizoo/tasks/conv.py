"""A small convolutional classifier as an optimizee (8×8 digits by default, or MNIST).

Architecture (default ``channels=(8, 16)``)::

    conv 3×3, 8 channels, stride 1, padding 1 → relu
    conv 3×3, 16 channels, stride 2, padding 1 → relu
    global average pool → linear 16 → 10

Every convolution after the first has stride 2 (8×8 → 8×8 → 4×4 on digits). With
``norm="batch"`` (batch statistics of the current batch, no running averages: ``loss`` and
``eval_loss`` normalize with the statistics of the batch they see) or ``norm="group"`` (4
groups, or 1 when the channels are not divisible by 4), a normalization layer with a learned
scale (initialized to 1) and shift (0) follows each convolution, before the activation. Same
conventions as
:class:`~optizoo.tasks.mlp.MLPTask`: minibatches of 128 drawn deterministically from the
problem's seed and the step, mean cross-entropy, ``eval_loss`` on the test split, weights
``U(−1/√fan_in, 1/√fan_in)`` from the generator.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optizoo._validate import positive_int
from optizoo.tasks.mlp import (
    ACTIVATIONS,
    ClassifierTask,
    Params,
    UninitializedLinear,
    check_activation,
)

__all__ = ["NORMS", "ConvNet", "ConvTask", "UninitializedConv2d", "norm_groups"]


class UninitializedConv2d(nn.Conv2d):
    """``nn.Conv2d`` that skips its random init (values are copied in afterwards)."""

    def reset_parameters(self) -> None:
        pass


NORMS = (None, "batch", "group")


def norm_groups(channels: int) -> int:
    """Groups of ``norm="group"``: 4 when ``channels`` is divisible by 4, else 1."""
    return 4 if channels % 4 == 0 else 1


def _normalize(h: Tensor, norm: str | None, weight: Tensor, bias: Tensor) -> Tensor:
    if norm == "batch":
        return F.batch_norm(h, None, None, weight, bias, training=True)
    return F.group_norm(h, norm_groups(h.shape[1]), weight, bias)


class ConvNet(nn.Module):
    """``convs.{i}`` (3×3, padding 1, stride 1 then 2) → ``norms.{i}`` (optional) → activation
    → mean pool → ``fc``."""

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        num_classes: int,
        activation: str = "relu",
        norm: str | None = None,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        ins = (in_channels, *channels[:-1])
        self.convs = nn.ModuleList(
            UninitializedConv2d(
                a, b, 3, stride=1 if i == 0 else 2, padding=1, device=device, dtype=dtype
            )
            for i, (a, b) in enumerate(zip(ins, channels))
        )
        self.norms: nn.ModuleList | None = None
        if norm == "batch":
            self.norms = nn.ModuleList(
                nn.BatchNorm2d(c, track_running_stats=False, device=device, dtype=dtype)
                for c in channels
            )
        elif norm == "group":
            self.norms = nn.ModuleList(
                nn.GroupNorm(norm_groups(c), c, device=device, dtype=dtype) for c in channels
            )
        self.act = ACTIVATIONS[activation][1]()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = UninitializedLinear(channels[-1], num_classes, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, classes]`` for images ``[B, C, H, W]``."""
        h = x
        for i, conv in enumerate(self.convs):
            h = conv(h)
            if self.norms is not None:
                h = self.norms[i](h)
            h = self.act(h)
        return self.fc(self.pool(h).flatten(1))


class ConvTask(ClassifierTask):
    """A small convnet on 8×8 digits (default) or MNIST.

    Args:
        channels: output channels of each 3×3 convolution (default ``(8, 16)``).
        activation: ``"relu"`` (default), ``"sigmoid"``, ``"tanh"`` or ``"gelu"``.
        norm: ``None`` (default), ``"batch"`` or ``"group"`` (see the module docstring).
        batch_size: minibatch size (default 128), or ``None`` for full-batch.
        dataset: ``"digits"`` (bundled) or ``"mnist"`` (with ``data_dir``).
        data_dir: directory of the MNIST IDX files (only with ``dataset="mnist"``).
        dtype: floating dtype (or its name) of data and weights.

    ``params()`` keys: ``convs.{i}.weight`` ``[out, in, 3, 3]``, ``convs.{i}.bias`` ``[out]``,
    ``fc.weight`` ``[classes, channels[-1]]``, ``fc.bias`` ``[classes]``; with ``norm``,
    ``norms.{i}.weight`` and ``norms.{i}.bias`` ``[out]``.
    """

    name: ClassVar[str] = "conv"
    _flatten: ClassVar[bool] = False

    def __init__(
        self,
        channels: Sequence[int] = (8, 16),
        activation: str = "relu",
        norm: str | None = None,
        batch_size: int | None = 128,
        dataset: str = "digits",
        data_dir: str | os.PathLike[str] | None = None,
        dtype: torch.dtype | str = torch.float32,
    ) -> None:
        if isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence) or not channels:
            raise ValueError(
                f"channels must be a non-empty sequence of positive ints such as (8, 16), "
                f"got {channels!r}"
            )
        self.channels = tuple(positive_int(c, "every entry of channels") for c in channels)
        self.activation = check_activation(activation)
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {list(NORMS)}, got {norm!r}")
        self.norm = norm
        super().__init__(batch_size, dataset, data_dir, dtype)
        self._act = ACTIVATIONS[self.activation][0]
        in_ch = self.data.image_shape[0]
        self._in = (in_ch, *self.channels[:-1])
        self._conv_keys = [
            (f"convs.{i}.weight", f"convs.{i}.bias", 1 if i == 0 else 2)
            for i in range(len(self.channels))
        ]

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-friendly)."""
        cfg = {"channels": list(self.channels), "activation": self.activation, "norm": self.norm}
        return {**cfg, **self._base_config()}

    def __repr__(self) -> str:
        return (
            f"ConvTask(channels={self.channels}, activation={self.activation!r}, norm={self.norm!r}, "
            f"batch_size={self.batch_size}, dataset={self.dataset!r})"
        )

    def _shapes(self) -> dict[str, tuple[tuple[int, ...], int]]:
        out: dict[str, tuple[tuple[int, ...], int]] = {}
        for (wk, bk, _), a, b in zip(self._conv_keys, self._in, self.channels):
            out[wk] = ((b, a, 3, 3), a * 9)
            out[bk] = ((b,), a * 9)
        k = self.channels[-1]
        out["fc.weight"] = ((self.data.num_classes, k), k)
        out["fc.bias"] = ((self.data.num_classes,), k)
        return out

    def _constants(self) -> dict[str, Tensor]:
        if self.norm is None:
            return {}
        out = {}
        for i, c in enumerate(self.channels):
            out[f"norms.{i}.weight"] = torch.ones(c)
            out[f"norms.{i}.bias"] = torch.zeros(c)
        return out

    def _forward(self, params: Params, x: Tensor) -> Tensor:
        h = x
        act = self._act
        for i, (wk, bk, stride) in enumerate(self._conv_keys):
            h = F.conv2d(h, params[wk], params[bk], stride=stride, padding=1)
            if self.norm is not None:
                h = _normalize(h, self.norm, params[f"norms.{i}.weight"], params[f"norms.{i}.bias"])
            h = act(h)
        return torch.addmm(params["fc.bias"], h.mean((2, 3)), params["fc.weight"].t())

    def _make_model(self, device: torch.device) -> nn.Module:
        return ConvNet(
            self._in[0],
            self.channels,
            self.data.num_classes,
            self.activation,
            self.norm,
            device=device,
            dtype=self.dtype,
        )
