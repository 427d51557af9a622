"""optizoo-sign: sign-based gradient tools for optizoo.

- preprocessor ``sign_magnitude`` (:class:`~optizoo_sign.preprocess.SignMagnitude`):
  ``LSTMRule(preprocessor="sign_magnitude")``;
- update rule ``signum`` (:class:`~optizoo_sign.rules.Signum`): ``optizoo.rules.build("signum")``;
- pretrained ``signum-quadratic``: ``optizoo.load_pretrained("signum-quadratic", params)``.

Names are imported lazily, so loading the plugin module does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {"SignMagnitude": "optizoo_sign.preprocess", "Signum": "optizoo_sign.rules"}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'optizoo_sign' has no attribute {name!r}")
