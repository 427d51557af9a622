"""The zoo: pretrained optimizers as safetensors weight files, loaded by name or path.

>>> optizoo.list_pretrained()                        # names, descriptions, training
>>> rule = optizoo.load_rule("lstm-quadratic")         # an UpdateRule
>>> opt = optizoo.load_pretrained("default", model.parameters())
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from torch import Tensor

if TYPE_CHECKING:
    from optizoo.optim import LearnedOptimizer

from optizoo.rules.base import UpdateRule
from optizoo.zoo.format import FORMAT_VERSION, read_metadata, rule_from_file, save_rule
from optizoo.zoo.registry import all_pretrained, resolve

__all__ = [
    "FORMAT_VERSION",
    "list_pretrained",
    "load_pretrained",
    "load_rule",
    "read_metadata",
    "save_rule",
]


def load_rule(weights: str | os.PathLike[str], *, expect_rule: str | None = None) -> UpdateRule:
    """The update rule behind ``weights``: ``"default"``, a pretrained name, or a file path."""
    path, _ = resolve(weights)
    return rule_from_file(path, expect_rule=expect_rule)


def load_pretrained(
    weights: str | os.PathLike[str] = "default",
    params: Iterable[Tensor] | Iterable[dict[str, Any]] | None = None,
    **optimizer_kwargs: Any,
) -> LearnedOptimizer:
    """A ready ``LearnedOptimizer`` over ``params`` running the pretrained rule ``weights``.

    ``weights`` is ``"default"``, a pretrained name or a file path; ``optimizer_kwargs`` go to
    :class:`~optizoo.optim.LearnedOptimizer` (``lr``, ``max_chunk``...). Always returns an
    optimizer; the bare rule is :func:`load_rule`.

    Raises:
        TypeError: ``params`` is missing.
        WeightsError: ``weights`` names no pretrained optimizer or file, or the file is bad.
    """
    from optizoo.optim import LearnedOptimizer

    if params is None:
        raise TypeError(
            "load_pretrained returns an optimizer and needs the parameters to optimize: "
            f"load_pretrained({str(weights)!r}, model.parameters()); for the bare update rule "
            f"use optizoo.load_rule({str(weights)!r})"
        )
    path, name = resolve(weights)
    return LearnedOptimizer(params, rule_from_file(path), weights_name=name, **optimizer_kwargs)


def list_pretrained() -> list[dict[str, Any]]:
    """One dict per pretrained optimizer: name, source, rule, description, training record.

    An entry whose file cannot be read (e.g. a broken plugin file) is listed with an ``error``
    instead of hiding every other entry.
    """
    from optizoo.errors import WeightsError

    out = []
    for entry in all_pretrained().values():
        row: dict[str, Any] = {"name": entry.name, "source": entry.source, "path": str(entry.path)}
        try:
            meta = entry.metadata()
        except WeightsError as exc:
            row["error"] = str(exc)
            out.append(row)
            continue
        training = meta.get("optizoo.training") or {}
        row.update(
            rule=meta.get("optizoo.rule"),
            description=meta.get("description", ""),
            trained_on=training.get("tasks", training.get("task")),
        )
        out.append(row)
    return out
