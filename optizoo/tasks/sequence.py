"""A recurrent network on a generated sequence task: the adding problem.

Hochreiter & Schmidhuber (1997), experiment 4: each input is a sequence of ``length`` pairs
``(v_t, m_t)`` with values ``v_t ~ U[0, 1]`` and markers ``m_t ∈ {0, 1}``, exactly two of which
are 1 (one in each half of the sequence); the target is the sum of the two marked values. A
``GRU`` (or ``LSTM``) reads the sequence and a Linear layer maps its last hidden state to the
prediction; the loss is the mean squared error. Predicting the mean (1.0) scores about 0.167.

The ``n_train`` + ``n_test`` sequences are generated from ``data_seed`` (numpy's PCG64); the
test sequences are never trained on.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optizoo._validate import nonnegative_int, positive_int
from optizoo.tasks.supervised import LossFn, ModuleTask, SupervisedData

__all__ = ["RNNTask", "adding_problem"]

_CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


def adding_problem(n: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` adding-problem sequences: inputs ``[n, length, 2]`` and targets ``[n]`` (float64)."""
    if length < 2:
        raise ValueError(f"length must be at least 2, got {length}")
    rng = np.random.default_rng(seed)
    values = rng.random((n, length))
    half = length // 2
    first = rng.integers(0, half, n)
    second = rng.integers(half, length, n)
    markers = np.zeros((n, length))
    rows = np.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    target = values[rows, first] + values[rows, second]
    return np.stack([values, markers], axis=-1), target


class _RecurrentRegressor(nn.Module):
    def __init__(self, cell: str, hidden: int) -> None:
        super().__init__()
        self.rnn = _CELLS[cell](2, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Predictions ``[B]`` for sequences ``[B, length, 2]``."""
        out, _ = self.rnn(x)
        return self.head(out[:, -1]).squeeze(-1)


class RNNTask(ModuleTask):
    """A GRU (default) or LSTM on the adding problem (see the module docstring).

    Args:
        cell: ``"gru"`` or ``"lstm"``.
        hidden: hidden units of the recurrent layer (default 32).
        length: sequence length (default 10; a step costs about 0.5 ms per time step on one
            CPU thread).
        n_train, n_test: generated training and test sequences (2000 and 500).
        data_seed: seed of the generated sequences.
        batch_size: minibatch size (default 64), or ``None`` for full-batch.
        train_size: train each problem on a random subset of this many training sequences.
        dtype: floating dtype of data and weights.

    ``params()`` keys: ``rnn.weight_ih_l0`` ``[G·hidden, 2]``, ``rnn.weight_hh_l0``
    ``[G·hidden, hidden]``, ``rnn.bias_ih_l0``, ``rnn.bias_hh_l0`` ``[G·hidden]`` (G = 3 gates
    for the GRU, 4 for the LSTM), ``head.weight`` ``[1, hidden]``, ``head.bias`` ``[1]``.
    """

    name: ClassVar[str] = "rnn"

    def __init__(
        self,
        cell: str = "gru",
        hidden: int = 32,
        length: int = 10,
        n_train: int = 2000,
        n_test: int = 500,
        data_seed: int = 0,
        batch_size: int | None = 64,
        train_size: int | None = None,
        dtype: torch.dtype | str = torch.float32,
    ) -> None:
        super().__init__(batch_size, train_size, dtype)
        if cell not in _CELLS:
            raise ValueError(f"cell must be one of {sorted(_CELLS)}, got {cell!r}")
        self.cell = cell
        self.hidden = positive_int(hidden, "hidden")
        self.length = positive_int(length, "length")
        self.n_train = positive_int(n_train, "n_train")
        self.n_test = positive_int(n_test, "n_test")
        self.data_seed = nonnegative_int(data_seed, "data_seed")
        x, y = adding_problem(self.n_train + self.n_test, self.length, data_seed)
        xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).float()
        n = self.n_train
        self._cpu_data = SupervisedData(xt[:n], yt[:n], xt[n:], yt[n:])
        self._check_data(self._cpu_data)
        self._module = self._set_module(lambda: _RecurrentRegressor(cell, self.hidden))

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-friendly)."""
        return {
            "cell": self.cell,
            "hidden": self.hidden,
            "length": self.length,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "data_seed": self.data_seed,
            **self._base_config(),
        }

    def __repr__(self) -> str:
        return f"RNNTask(cell={self.cell!r}, hidden={self.hidden}, length={self.length})"

    def _loss_fn(self) -> LossFn:
        return F.mse_loss
