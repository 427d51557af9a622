"""Update rules: the differentiable core of every optizoo optimizer.

- :class:`UpdateRule`: the interface (``init_state``, ``forward``, ``config``).
- :class:`LSTMRule`: the coordinate-wise LSTM of Andrychowicz et al. (2016).
- :class:`HierarchicalRule`: a per-tensor LSTM steering a cheap Adam-like coordinate-wise update.
- :mod:`optizoo.rules.parts`: the parts rules are composed from (inputs, cells, heads, transforms).
- :class:`SGD`, :class:`Momentum`, :class:`RMSprop`, :class:`Adam`: hand-designed rules whose
  hyper-parameters are meta-parameters.
"""

from __future__ import annotations

from typing import Any

from optizoo.rules.base import State, UpdateRule
from optizoo.rules.handdesigned import SGD, Adam, Momentum, RMSprop
from optizoo.rules.hierarchical import HierarchicalRule
from optizoo.rules.lstm import LSTMRule

__all__ = [
    "SGD",
    "Adam",
    "HierarchicalRule",
    "LSTMRule",
    "Momentum",
    "RMSprop",
    "State",
    "UpdateRule",
    "available",
    "build",
    "get",
]


def get(name: str) -> type[UpdateRule]:
    """The update-rule class registered under ``name`` (``"lstm"``, ``"adam"``, a plugin's...)."""
    from optizoo import plugins

    return plugins.get("rules", name)


def available() -> list[str]:
    """Names of every registered update rule."""
    from optizoo import plugins

    return sorted(plugins.registry("rules"))


def build(name: str, config: dict[str, Any] | None = None) -> UpdateRule:
    """Instantiate the rule ``name`` with constructor arguments ``config``."""
    cls = get(name)
    try:
        return cls(**(config or {}))
    except TypeError as exc:
        raise ValueError(f"config {config!r} does not fit rule {name!r}: {exc}") from exc
