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
]


def get(name: str, **kwargs: Any) -> Task:
    """Instantiate the task registered under ``name`` with ``kwargs``."""
    from optizoo import plugins

    factory = plugins.get("tasks", name)
    return factory(**kwargs)


def available() -> list[str]:
    """Names of every registered task (built-in and from plugins)."""
    from optizoo import plugins

    return sorted(plugins.registry("tasks"))
