"""optizoo: learned optimizers for PyTorch.

Swap ``torch.optim.Adam(model.parameters())`` for ``optizoo.LSTMOptimizer(model.parameters())``.

Heavy sub-modules are imported lazily on first attribute access, so ``import optizoo`` stays fast
and a broken optional part (or plugin) never breaks the import.
"""

from __future__ import annotations

import importlib
from typing import Any

from optizoo._version import __version__
from optizoo.errors import (
    OptizooError,
    PluginError,
    StateMismatchError,
    UnknownNameError,
    WeightsError,
)
from optizoo.plugins import PluginWarning, hookimpl

#: public name -> module that defines it
_LAZY: dict[str, str] = {
    "LearnedOptimizer": "optizoo.optim",
    "LSTMOptimizer": "optizoo.optim",
    "PopArtHead": "optizoo.popart",
    "normalized_sgd_step": "optizoo.popart",
    "normalized_sgd_gradients": "optizoo.popart",
    "MetaTrainer": "optizoo.meta",
    "unroll": "optizoo.meta",
    "load_pretrained": "optizoo.zoo",
    "list_pretrained": "optizoo.zoo",
    "save_rule": "optizoo.zoo",
    "load_rule": "optizoo.zoo",
}
#: public sub-package or module -> its import path (the last three moved into optizoo.compare)
_SUBMODULES: dict[str, str] = {
    **{
        name: f"optizoo.{name}"
        for name in (
            "rules",
            "tasks",
            "preprocess",
            "optim",
            "meta",
            "zoo",
            "plugins",
            "testing",
            "popart",
            "compare",
            "publish",
        )
    },
    "evaluate": "optizoo.compare.evaluate",
    "stats": "optizoo.compare.stats",
    "plots": "optizoo.compare.plots",
}

__all__ = [
    "OptizooError",
    "PluginError",
    "PluginWarning",
    "StateMismatchError",
    "UnknownNameError",
    "WeightsError",
    "__version__",
    "hookimpl",
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(_SUBMODULES[name])
    raise AttributeError(f"module 'optizoo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))
