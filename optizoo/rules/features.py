"""Moved to :mod:`optizoo.rules.parts.inputs` (rules are built from parts); kept for imports."""

from optizoo.rules.parts.inputs import FEATURE_STATE_KEYS, Features

__all__ = ["FEATURE_STATE_KEYS", "Features"]
