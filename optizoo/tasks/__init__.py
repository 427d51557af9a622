"""Built-in optimizees and the task registry (fed by the plugin hooks)."""

from __future__ import annotations

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
    "get",
    "task_config",
]


def get(name: str, **kwargs: Any) -> Task:
    """Instantiate the task registered under ``name`` with ``kwargs``."""
    from optizoo import plugins

    factory = plugins.get("tasks", name)
    return factory(**kwargs)


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
