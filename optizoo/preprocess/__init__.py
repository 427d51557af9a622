"""Gradient preprocessors: map a flat gradient ``[n]`` to per-coordinate features ``[n, k]``.

A preprocessor is an ``nn.Module`` with a class attribute ``out_features`` (``k``) and a
``config()`` returning its constructor arguments. Built-ins are registered by name through the
plugin hooks (``optizoo.plugins``), so third-party preprocessors are found the same way::

    pre = optizoo.preprocess.build("log_sign", p=10.0)   # get("log_sign") is the class
    features = pre(grad)          # [n, 2]
"""

from __future__ import annotations

from typing import Any

from optizoo import plugins
from optizoo.preprocess.base import Preprocessor
from optizoo.preprocess.builtin import Identity, LogSign

__all__ = ["Identity", "LogSign", "Preprocessor", "available", "build", "get"]


def get(name: str) -> type[Preprocessor]:
    """The preprocessor class registered under ``name`` (built-in or from a plugin); as in every
    registry, ``get`` returns what is registered and :func:`build` makes an instance."""
    return plugins.get("preprocessors", name)


def build(name: str, **kwargs: Any) -> Preprocessor:
    """A preprocessor instance: ``get(name)(**kwargs)``, e.g. ``build("log_sign", p=10.0)``."""
    return get(name)(**kwargs)


def available() -> list[str]:
    """Names of every registered preprocessor."""
    return sorted(plugins.registry("preprocessors"))
