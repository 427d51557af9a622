"""optizoo-inn: an invertible-network optimizee for optizoo.

Installs the task ``inn-gaussian`` (``optizoo.tasks.build("inn-gaussian")``): a small invertible
network of affine coupling blocks trained on a Gaussian-bump inverse problem with a supervised
loss on ``y`` and MMD losses on ``(y, z)`` and on ``x`` through the inverse.

Names are imported lazily, so loading the plugin module does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "INN": "optizoo_inn.inn",
    "inn_forward": "optizoo_inn.inn",
    "inn_inverse": "optizoo_inn.inn",
    "mmd_multiscale": "optizoo_inn.mmd",
    "GaussianINNProblem": "optizoo_inn.task",
    "GaussianINNTask": "optizoo_inn.task",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'optizoo_inn' has no attribute {name!r}")
