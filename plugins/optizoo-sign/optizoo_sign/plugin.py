"""optizoo plugin module (entry point ``sign`` in the group ``optizoo``).

Contributes one entry to three registries: the ``sign_magnitude`` preprocessor, the ``signum``
update rule, and the pretrained ``signum-quadratic`` weight file. Heavy imports happen inside
the hooks.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import optizoo

#: the shipped weight file (made by ``scripts/make_weights.py`` in the source tree)
WEIGHTS_FILE = "signum-quadratic.safetensors"


@optizoo.hookimpl
def optizoo_preprocessors() -> dict[str, Any]:
    """``sign_magnitude``: sign, log-magnitude and tanh of the gradient (3 features)."""
    from optizoo_sign.preprocess import SignMagnitude

    return {"sign_magnitude": SignMagnitude}


@optizoo.hookimpl
def optizoo_rules() -> dict[str, Any]:
    """``signum``: sign descent on a momentum average (Bernstein et al., 2018)."""
    from optizoo_sign.rules import Signum

    return {"signum": Signum}


@optizoo.hookimpl
def optizoo_pretrained() -> dict[str, Any]:
    """``signum-quadratic``: Signum with its learning rate meta-learned on ``quadratic``."""
    path = resources.files("optizoo_sign") / "weights" / WEIGHTS_FILE
    return {"signum-quadratic": str(path)}
