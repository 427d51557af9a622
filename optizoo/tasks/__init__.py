"""Built-in optimizees and the task registry (fed by the plugin hooks)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from optizoo.tasks.base import Problem, Task
from optizoo.tasks.conv import ConvTask
from optizoo.tasks.linreg import LinRegProblem, LinRegTask
from optizoo.tasks.mlp import ClassifierProblem, MLPTask
from optizoo.tasks.quadratic import QuadraticProblem, QuadraticTask

__all__ = [
    "ClassifierProblem",
    "ConvTask",
    "LinRegProblem",
    "LinRegTask",
    "MLPTask",
    "Problem",
    "QuadraticProblem",
    "QuadraticTask",
    "Task",
    "available",
    "build",
    "get",
    "task_config",
]


def get(name: str, **kwargs: Any) -> Callable[..., Task]:
    """The task class (or factory) registered under ``name``, built-in or from a plugin.

    ``get`` means the same in every registry (:func:`optizoo.rules.get`,
    :func:`optizoo.preprocess.get`): it returns what is registered; :func:`build` makes an
    instance. Raises :class:`~optizoo.errors.UnknownNameError` for an unknown name.
    """
    if kwargs:
        raise TypeError(
            f"optizoo.tasks.get({name!r}) returns the task class and takes no task arguments; "
            f"build a task with optizoo.tasks.build({name!r}, {', '.join(f'{k}=...' for k in kwargs)})"
        )
    from optizoo import plugins

    return plugins.get("tasks", name)


def build(name: str, **kwargs: Any) -> Task:
    """A task instance: the class (or factory) registered under ``name`` called with ``kwargs``,
    e.g. ``optizoo.tasks.build("quadratic", dim=10, batch=128)``."""
    return get(name)(**kwargs)


def task_config(task: Task) -> dict[str, Any]:
    """A task's constructor arguments, from its ``config()`` method when it has one (``{}``
    otherwise, or when ``config()`` fails); used to record tasks in logs and weight files."""
    config = getattr(task, "config", None)
    if callable(config):
        try:
            return dict(config())
        except Exception:
            return {}
    return {}


def available() -> list[str]:
    """Names of every registered task (built-in and from plugins)."""
    from optizoo import plugins

    return sorted(plugins.registry("tasks"))
