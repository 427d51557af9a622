"""Exceptions raised by optizoo. All derive from :class:`OptizooError`."""

from __future__ import annotations


class OptizooError(Exception):
    """Base class of every optizoo-specific error."""


class WeightsError(OptizooError, ValueError):
    """A weight file is missing, corrupt, foreign, or does not match the rule it is loaded into."""


class StateMismatchError(OptizooError, ValueError):
    """An optimizer ``state_dict`` was made with other rule weights than the optimizer has."""


class PluginError(OptizooError):
    """A plugin returned something malformed, or two plugins claim the same name."""


class UnknownNameError(OptizooError, KeyError):
    """A registry lookup (task, preprocessor, rule, pretrained optimizer) found no such name."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class CheckpointError(OptizooError, ValueError):
    """A meta-training checkpoint or run folder is missing, corrupt, locked, or does not fit."""
