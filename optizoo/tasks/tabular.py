"""Tabular optimizees: an MLP on the bundled UCI wine data (classification) or on Friedman's
generated regression problem.

- ``dataset="wine"``: 178 wines, 13 chemical measurements, 3 cultivars (UCI Wine, bundled as
  ``optizoo/tasks/data/wine_data.csv.gz``; see that folder's README). Fixed split, no random
  numbers: every 4th row of each class in file order (the 4th, 8th, ...) is a test row (43
  test, 135 train). Features are standardized with the training rows' mean and standard
  deviation. Loss: mean cross-entropy.
- ``dataset="friedman"``: Friedman (1991)'s first problem: ``x ~ U[0, 1]^10`` and
  ``y = 10 sin(π x₁ x₂) + 20 (x₃ − ½)² + 10 x₄ + 5 x₅ + ε``, ``ε ~ N(0, 1)`` (five features
  are irrelevant), ``n_train`` + ``n_test`` rows drawn from ``data_seed``. Inputs are centred
  (``x − ½``) and targets standardized with the training rows' mean and standard deviation.
  Loss: mean squared error (1.0 is the loss of predicting the mean; the noise floor is about
  0.04).

The network is ``Linear → activation`` per hidden width, then a Linear output layer.
"""

from __future__ import annotations

import gzip
import hashlib
import math
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from optizoo._validate import nonnegative_int, positive_int
from optizoo.tasks.autoencoder import StackMLP
from optizoo.tasks.mlp import check_activation
from optizoo.tasks.supervised import LossFn, ModuleTask, SupervisedData, check_sizes

__all__ = ["TABULAR_DATASETS", "WINE_SHA256", "TabularTask", "friedman1", "load_wine"]

#: sha256 of ``optizoo/tasks/data/wine_data.csv.gz``
WINE_SHA256 = "f2909b6928f3a86c46442ba969b9e0a5b6bd6b1cf088adcfc10e38e6a739d665"
TABULAR_DATASETS = ("wine", "friedman")


@lru_cache(maxsize=1)
def load_wine() -> tuple[np.ndarray, np.ndarray]:
    """The bundled wine data: features ``[178, 13]`` float64 and labels ``[178]`` int64 (0..2)."""
    raw = resources.files("optizoo.tasks").joinpath("data", "wine_data.csv.gz").read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != WINE_SHA256:
        raise OSError(
            f"the bundled file optizoo/tasks/data/wine_data.csv.gz is corrupt (sha256 {digest}, "
            f"expected {WINE_SHA256}); reinstall optizoo"
        )
    lines = gzip.decompress(raw).decode("ascii").strip().splitlines()
    table = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    return table[:, :13], table[:, 13].astype(np.int64)


def wine_split(labels: np.ndarray) -> np.ndarray:
    """Boolean test mask: every 4th row of each class in file order."""
    test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        test[rows[3::4]] = True
    return test


def friedman1(n: int, seed: int, noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows of Friedman's first regression problem (``x [n, 10]``, ``y [n]``), float64."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 10))
    y = (
        10 * np.sin(math.pi * x[:, 0] * x[:, 1])
        + 20 * (x[:, 2] - 0.5) ** 2
        + 10 * x[:, 3]
        + 5 * x[:, 4]
        + noise * rng.standard_normal(n)
    )
    return x, y


def _standardize(train: np.ndarray, test: np.ndarray) -> tuple[Tensor, Tensor]:
    mean, std = train.mean(0), train.std(0)
    std = np.where(std > 0, std, 1.0)
    return (
        torch.from_numpy((train - mean) / std).float(),
        torch.from_numpy((test - mean) / std).float(),
    )


class TabularTask(ModuleTask):
    """An MLP on a small tabular data set (see the module docstring).

    Args:
        dataset: ``"wine"`` (classification, bundled) or ``"friedman"`` (regression, generated).
        hidden: hidden-layer widths (default ``(32,)``).
        activation: ``"relu"`` (default), ``"gelu"``, ``"tanh"`` or ``"sigmoid"``.
        batch_size: minibatch size, or ``None`` (default) for full-batch.
        train_size: train each problem on a random subset of this many training rows.
        n_train, n_test: rows of the generated data set (``"friedman"`` only).
        data_seed: seed of the generated data set (``"friedman"`` only).
        dtype: floating dtype of data and weights.

    ``params()`` keys: ``net.{j}.weight`` and ``net.{j}.bias`` of the Linear layers.
    """

    name: ClassVar[str] = "tabular"

    def __init__(
        self,
        dataset: str = "wine",
        hidden: int | Sequence[int] = (32,),
        activation: str = "relu",
        batch_size: int | None = None,
        train_size: int | None = None,
        n_train: int = 200,
        n_test: int = 1000,
        data_seed: int = 0,
        dtype: torch.dtype | str = torch.float32,
    ) -> None:
        super().__init__(batch_size, train_size, dtype)
        if dataset not in TABULAR_DATASETS:
            raise ValueError(f"dataset must be one of {list(TABULAR_DATASETS)}, got {dataset!r}")
        self.dataset = dataset
        self.hidden = check_sizes(hidden, "hidden")
        self.activation = check_activation(activation)
        self.n_train = positive_int(n_train, "n_train")
        self.n_test = positive_int(n_test, "n_test")
        self.data_seed = nonnegative_int(data_seed, "data_seed")
        if dataset == "wine":
            x, y = load_wine()
            test = wine_split(y)
            x_train, x_test = _standardize(x[~test], x[test])
            y_train, y_test = torch.from_numpy(y[~test]), torch.from_numpy(y[test])
            outputs = 3
        else:
            x, y = friedman1(self.n_train + self.n_test, data_seed)
            x = torch.from_numpy(x - 0.5).float()
            yt, yv = y[: self.n_train], y[self.n_train :]
            mean, std = yt.mean(), yt.std()
            y_train = torch.from_numpy((yt - mean) / std).float()
            y_test = torch.from_numpy((yv - mean) / std).float()
            x_train, x_test = x[: self.n_train], x[self.n_train :]
            outputs = 1
        self._cpu_data = SupervisedData(x_train, y_train, x_test, y_test)
        self._check_data(self._cpu_data)
        sizes = (int(x_train.shape[1]), *self.hidden, outputs)
        self._module = self._set_module(lambda: StackMLP(sizes, self.activation))

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-friendly)."""
        return {
            "dataset": self.dataset,
            "hidden": list(self.hidden),
            "activation": self.activation,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "data_seed": self.data_seed,
            **self._base_config(),
        }

    def __repr__(self) -> str:
        return f"TabularTask(dataset={self.dataset!r}, hidden={self.hidden})"

    def _loss_fn(self) -> LossFn:
        return F.cross_entropy if self.dataset == "wine" else _mse_1d


def _mse_1d(out: Tensor, y: Tensor) -> Tensor:
    return F.mse_loss(out.squeeze(-1), y)
