"""Linear regression on the thermometer data: the smallest real optimizee.

Data (the thermometer linear-regression tutorial, solved by hand and with autograd):
11 paired readings of one temperature in unknown units ``t_x`` and in Celsius ``t_y``. The model is
``t_y ≈ w · x + b`` with ``x = 0.1 · t_x`` and the loss is the mean squared error over the 11
points. The factor 0.1 is the source's normalization ("multiply the input by 0.1"): on raw
``t_x`` plain gradient descent with lr 1e-2 diverges, on ``0.1 · t_x`` it converges; gradient
descent with lr 1e-2 from ``w = 1, b = 0`` reaches loss 2.927647 at ``w = 5.3671, b = −17.3012``
after 5000 steps in float32 (the source's printed run, which the tests reproduce).

Parameters are 0-dim tensors ``{"w": [], "b": []}``. The problem is deterministic (full batch:
``step`` is unused) and has no test split (``eval_loss`` returns ``None``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from optizoo.tasks.base import Problem, Task
from optizoo.tasks.datasets import check_dtype, check_generator, dtype_name, resolve_device

__all__ = ["THERMOMETER_X", "THERMOMETER_Y", "LinRegProblem", "LinRegTask", "LinearModel"]

#: readings in the unknown unit (the thermometer tutorial's ``t_x``)
THERMOMETER_X = (35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4)
#: the same readings in Celsius (the thermometer tutorial's ``t_y``)
THERMOMETER_Y = (0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0)

_INITS = ("reference", "random")


class LinearModel(nn.Module):
    """``w · x + b`` with scalar (0-dim) parameters ``w`` and ``b``."""

    def __init__(self, w: Tensor, b: Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)
        self.b = nn.Parameter(b)

    def forward(self, x: Tensor) -> Tensor:
        """Predictions ``[n]`` for inputs ``x`` ``[n]``."""
        return self.w * x + self.b


class LinRegProblem(Problem):
    """Mean squared error of ``w · x + b`` against ``y``.

    Attributes:
        x: ``[n]`` inputs (already scaled).
        y: ``[n]`` targets.
    """

    def __init__(self, x: Tensor, y: Tensor, w0: Tensor, b0: Tensor) -> None:
        self.x = x
        self.y = y
        self._w0 = w0
        self._b0 = b0
        self._model: nn.Module | None = None

    @property
    def model(self) -> nn.Module:  # type: ignore[override]
        """A :class:`LinearModel` holding the initial ``w``, ``b`` (built on first use)."""
        if self._model is None:
            p = self.params()
            self._model = LinearModel(p["w"], p["b"])
        return self._model

    def params(self) -> dict[str, Tensor]:
        """``{"w": 0-dim, "b": 0-dim}``: fresh copies of the initial values."""
        return {"w": self._w0.clone(), "b": self._b0.clone()}

    def loss(self, params: dict[str, Tensor], step: int = 0) -> Tensor:
        """``mean((w · x + b − y)²)`` over all points (full batch; ``step`` is unused)."""
        return torch.addcmul(params["b"] - self.y, params["w"], self.x).square().mean()


class LinRegTask(Task):
    """Fit ``y ≈ w · x + b`` by mean squared error on the thermometer data (or your own).

    Args:
        x_scale: factor applied to the inputs (default 0.1, the source's normalization).
        init: ``"reference"`` starts at ``w = 1, b = 0`` (the source's run; every sample is the
            same problem); ``"random"`` draws ``w`` then ``b`` i.i.d. N(0, 1) from the generator.
        dtype: floating dtype (or its name) of data and parameters; float32 reproduces the
            source's numbers.
        x, y: optional data of equal length (at least 2 points) replacing the thermometer data.
    """

    name: ClassVar[str] = "linreg"

    def __init__(
        self,
        x_scale: float = 0.1,
        init: str = "reference",
        dtype: torch.dtype | str = torch.float32,
        x: Sequence[float] | None = None,
        y: Sequence[float] | None = None,
    ) -> None:
        if isinstance(x_scale, bool) or not isinstance(x_scale, (int, float)):
            raise TypeError(f"x_scale must be a number, got {type(x_scale).__name__}")
        if not (math.isfinite(x_scale) and x_scale != 0):
            raise ValueError(f"x_scale must be finite and non-zero, got {x_scale!r}")
        if init not in _INITS:
            raise ValueError(f"init must be one of {list(_INITS)}, got {init!r}")
        if (x is None) != (y is None):
            raise ValueError("pass both x and y (or neither, for the thermometer data)")
        xs = tuple(float(v) for v in (THERMOMETER_X if x is None else x))
        ys = tuple(float(v) for v in (THERMOMETER_Y if y is None else y))
        if len(xs) != len(ys) or len(xs) < 2:
            raise ValueError(
                f"x and y must have the same length, at least 2; got {len(xs)} and {len(ys)}"
            )
        if not all(math.isfinite(v) for v in xs + ys):
            raise ValueError("x and y must be finite numbers")
        self.x_scale = float(x_scale)
        self.init = init
        self.dtype = check_dtype(dtype)
        self._custom = x is not None
        self._x = xs
        self._y = ys

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-friendly)."""
        cfg: dict[str, Any] = {
            "x_scale": self.x_scale,
            "init": self.init,
            "dtype": dtype_name(self.dtype),
        }
        if self._custom:
            cfg.update(x=list(self._x), y=list(self._y))
        return cfg

    def __repr__(self) -> str:
        return f"LinRegTask(x_scale={self.x_scale}, init={self.init!r}, dtype={self.dtype})"

    def sample(
        self, generator: torch.Generator, device: torch.device | str | None = None
    ) -> LinRegProblem:
        """The regression problem; with ``init="random"`` its start ``(w, b)`` comes from
        ``generator``."""
        g = check_generator(generator)
        dev = resolve_device(device)
        # scaled in dtype, as the source does (float32 ``t_x * 0.1``)
        x = torch.tensor(self._x, dtype=self.dtype) * self.x_scale
        y = torch.tensor(self._y, dtype=self.dtype)
        if self.init == "random":
            w0, b0 = torch.randn(2, generator=g).unbind()
        else:
            w0, b0 = torch.tensor(1.0), torch.tensor(0.0)
        opts = {"device": dev, "dtype": self.dtype}
        return LinRegProblem(x.to(**opts), y.to(**opts), w0.to(**opts), b0.to(**opts))
