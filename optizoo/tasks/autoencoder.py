"""An MSE autoencoder on the bundled 8×8 digits.

Architecture (default ``hidden=(32, 8, 32)``, ReLU)::

    64 → Linear 32 → relu → Linear 8 → relu → Linear 32 → relu → Linear 64

The loss is the mean squared reconstruction error per pixel, pixels in [0, 1]
(``F.mse_loss(net(x), x)``); ``eval_loss`` is that error on the 400 test digits (the split of
:func:`~optizoo.tasks.datasets.load_digits`). Minibatches, subsets and initialization as in
:mod:`optizoo.tasks.supervised`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from optizoo.tasks.datasets import load_digits
from optizoo.tasks.mlp import ACTIVATIONS, check_activation
from optizoo.tasks.supervised import LossFn, ModuleTask, SupervisedData, check_sizes

__all__ = ["AutoencoderTask", "StackMLP"]


class StackMLP(nn.Module):
    """``net``: ``Linear → activation`` between consecutive ``sizes``, none after the last."""

    def __init__(self, sizes: Sequence[int], activation: str) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(ACTIVATIONS[activation][1]())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs ``[B, sizes[-1]]`` for inputs ``[B, sizes[0]]``."""
        return self.net(x)


class AutoencoderTask(ModuleTask):
    """A fully connected autoencoder of the 8×8 digits (64 pixels), mean squared error.

    Args:
        hidden: widths of the hidden layers, the code layer among them (default ``(32, 8, 32)``).
        activation: ``"relu"`` (default), ``"gelu"``, ``"tanh"`` or ``"sigmoid"``.
        batch_size: minibatch size (default 128), or ``None`` for full-batch.
        train_size: train each problem on a random subset of this many of the 1397 training
            digits (``None``: all).
        dtype: floating dtype of data and weights.

    ``params()`` keys: ``net.{j}.weight`` ``[out, in]`` and ``net.{j}.bias`` ``[out]`` for the
    Linear layers ``j`` of the ``nn.Sequential`` (activations take the odd indices).
    """

    name: ClassVar[str] = "autoencoder"

    def __init__(
        self,
        hidden: int | Sequence[int] = (32, 8, 32),
        activation: str = "relu",
        batch_size: int | None = 128,
        train_size: int | None = None,
        dtype: torch.dtype | str = torch.float32,
    ) -> None:
        super().__init__(batch_size, train_size, dtype)
        self.hidden = check_sizes(hidden, "hidden", allow_empty=False)
        self.activation = check_activation(activation)
        digits = load_digits()
        x_train, x_test = digits.x_train.flatten(1), digits.x_test.flatten(1)
        self._cpu_data = SupervisedData(x_train, x_train, x_test, x_test)
        self._check_data(self._cpu_data)
        sizes = (64, *self.hidden, 64)
        self._module = self._set_module(lambda: StackMLP(sizes, self.activation))

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-friendly)."""
        return {"hidden": list(self.hidden), "activation": self.activation, **self._base_config()}

    def __repr__(self) -> str:
        return f"AutoencoderTask(hidden={self.hidden}, activation={self.activation!r})"

    def _loss_fn(self) -> LossFn:
        return F.mse_loss
