"""Argument validators shared by every public constructor (a leaf: imports only the stdlib).

Each returns the normalized value or raises ``ValueError`` with one message style:
``"{name} must be <what>, got {value!r}"``. ``bool`` never counts as a number here.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "is_int",
    "learning_rate",
    "nonnegative_finite",
    "nonnegative_int",
    "positive_finite",
    "positive_int",
    "unit_interval",
]


def is_int(value: object) -> bool:
    """``value`` is an ``int`` and not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def positive_int(value: Any, name: str) -> int:
    """``value`` if it is an int >= 1."""
    if not (is_int(value) and value >= 1):
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def nonnegative_int(value: Any, name: str) -> int:
    """``value`` if it is an int >= 0."""
    if not (is_int(value) and value >= 0):
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return int(value)


def positive_finite(value: Any, name: str, *, optional: bool = False) -> Any:
    """``float(value)`` if it is a positive finite number (``None`` passes when ``optional``)."""
    if optional and value is None:
        return None
    if not (_is_real(value) and math.isfinite(value) and value > 0):
        allowed = "a positive finite number" + (" or None" if optional else "")
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return float(value)


def nonnegative_finite(value: Any, name: str) -> float:
    """``float(value)`` if it is a finite number >= 0."""
    if not (_is_real(value) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")
    return float(value)


def unit_interval(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """``float(value)`` if it lies in ``(0, 1)`` (``[0, 1)`` with ``allow_zero``)."""
    low_ok = _is_real(value) and (value >= 0 if allow_zero else value > 0)
    if not (low_ok and value < 1):
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return float(value)


def learning_rate(value: Any, name: str = "lr") -> float:
    """``float(value)`` if it is a finite number >= 0: the one learning-rate rule of optizoo.

    ``lr = 0`` is allowed everywhere (it changes nothing, as in ``torch.optim``). A one-element
    tensor is accepted (schedulers may store tensors).
    """
    if hasattr(value, "numel") and hasattr(value, "item"):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        value = float(value.item())
    if not (_is_real(value) and math.isfinite(value) and value >= 0):
        raise ValueError(f"Invalid learning rate: {value!r} ({name} must be a finite number >= 0)")
    return float(value)
