"""optizoo's own built-ins, registered through the same hooks as third-party plugins.

The plugin host imports this module by name (:data:`optizoo.plugins.BUILTIN_MODULE`); each hook
imports what it contributes only when called. The weight files shipped in
``optizoo/zoo/pretrained/`` come through :func:`optizoo_pretrained`, so a plugin claiming one of
their names is a conflict like any other.
"""

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
    from optizoo.tasks.autoencoder import AutoencoderTask
    from optizoo.tasks.conv import ConvTask
    from optizoo.tasks.linreg import LinRegTask
    from optizoo.tasks.mix import MixTask
    from optizoo.tasks.mlp import MLPTask
    from optizoo.tasks.quadratic import QuadraticTask
    from optizoo.tasks.sequence import RNNTask
    from optizoo.tasks.tabular import TabularTask
    from optizoo.tasks.transformer import TransformerLMTask

    return {
        "quadratic": QuadraticTask,
        "linreg": LinRegTask,
        "mlp": MLPTask,
        "conv": ConvTask,
        "mix": MixTask,
        "autoencoder": AutoencoderTask,
        "transformer_lm": TransformerLMTask,
        "rnn": RNNTask,
        "tabular": TabularTask,
    }


@hookimpl
def optizoo_pretrained() -> dict[str, Any]:
    from optizoo.zoo.registry import shipped

    return dict(shipped())
