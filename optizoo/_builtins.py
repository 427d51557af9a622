"""optizoo's own built-ins, registered through the same hooks as third-party plugins."""

from __future__ import annotations

from typing import Any

from optizoo.plugins import hookimpl


@hookimpl
def optizoo_preprocessors() -> dict[str, Any]:
    from optizoo.preprocess import Identity, LogSign

    return {"identity": Identity, "log_sign": LogSign}


@hookimpl
def optizoo_rules() -> dict[str, Any]:
    from optizoo.rules import HierarchicalRule, LSTMRule
    from optizoo.rules.handdesigned import SGD, Adam, Momentum, RMSprop

    return {
        "lstm": LSTMRule,
        "hierarchical": HierarchicalRule,
        "sgd": SGD,
        "momentum": Momentum,
        "rmsprop": RMSprop,
        "adam": Adam,
    }


@hookimpl
def optizoo_tasks() -> dict[str, Any]:
    from optizoo.tasks.conv import ConvTask
    from optizoo.tasks.linreg import LinRegTask
    from optizoo.tasks.mix import MixTask
    from optizoo.tasks.mlp import MLPTask
    from optizoo.tasks.quadratic import QuadraticTask

    return {
        "quadratic": QuadraticTask,
        "linreg": LinRegTask,
        "mlp": MLPTask,
        "conv": ConvTask,
        "mix": MixTask,
    }


@hookimpl
def optizoo_pretrained() -> dict[str, Any]:
    return {}
