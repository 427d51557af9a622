"""The optimizer-spec language of ``optizoo compare``: ``adam``, ``adam:lr=0.01``, ``lstm``,
``NAME=PATH.safetensors``, a pretrained name. :func:`parse_spec` turns a spec into an
:class:`OptimizerSpec` that builds optimizers; :data:`BASELINES` lists the ``torch.optim`` ones.
"""

from __future__ import annotations

import ast
import inspect
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["BASELINES", "OptimizerFactory", "OptimizerSpec", "parse_spec"]

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]

#: ``torch.optim`` baselines: spec name -> (class, default keyword arguments)
BASELINES: dict[str, tuple[type[torch.optim.Optimizer], dict[str, Any]]] = {
    "sgd": (torch.optim.SGD, {}),
    "momentum": (torch.optim.SGD, {"momentum": 0.9}),
    "nesterov": (torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
    "rmsprop": (torch.optim.RMSprop, {}),
    "adam": (torch.optim.Adam, {}),
    "adamw": (torch.optim.AdamW, {}),
    "adagrad": (torch.optim.Adagrad, {}),
}


def _split_options(text: str) -> list[str]:
    """Split ``a=1,b=(2,3)`` at top-level commas."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def _parse_options(text: str, spec: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in _split_options(text):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key.isidentifier():
            raise ValueError(
                f"bad option {item!r} in optimizer spec {spec!r}: options are KEY=VALUE pairs "
                "separated by commas, e.g. 'adam:lr=0.01,betas=(0.9,0.99)'"
            )
        try:
            options[key] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            options[key] = value.strip()
        parsed = options[key]
        if isinstance(parsed, str) and parsed.lower().lstrip("+-") in ("nan", "inf", "infinity"):
            parsed = float(parsed)  # numbers literal_eval does not read
        if isinstance(parsed, float) and not math.isfinite(parsed):
            raise ValueError(
                f"option {key}={value.strip()} in optimizer spec {spec!r} is not a finite number; "
                f"give a finite value, e.g. '{key}=0.01'"
            )
    return options


def _accepted_text() -> str:
    return (
        "accepted optimizer specs: "
        + ", ".join(sorted(BASELINES))
        + " (torch.optim baselines; lr tuned unless given, e.g. 'adam:lr=0.01,betas=(0.9,0.99)'), "
        "'lstm' (the shipped default learned optimizer), a pretrained name ("
        + (", ".join(_pretrained_names()) or "none installed")
        + "), 'NAME=PATH.safetensors' or 'NAME=PRETRAINED' (a learned optimizer labelled NAME); "
        "learned specs take options too, e.g. 'lstm:lr=0.5'"
    )


def _pretrained_names() -> list[str]:
    try:
        from optizoo.zoo.registry import all_pretrained

        return sorted(all_pretrained())
    except Exception:  # the zoo must never make spec errors unreadable
        return []


@dataclass
class OptimizerSpec:
    """A parsed optimizer spec.

    Attributes:
        label: the name shown in tables and legends (unique within a comparison).
        kind: ``"torch"`` (a :data:`BASELINES` entry), ``"learned"`` (an update rule from a weight
            file or pretrained name, run by :class:`optizoo.optim.LearnedOptimizer`), or
            ``"factory"`` (a user callable ``params -> Optimizer``).
        name: the baseline name, or the weights (``"default"``, a pretrained name or a path).
        options: keyword arguments for the optimizer (``lr`` included when given).
        text: the spec as written.
        factory: for ``kind="factory"``, the callable.
    """

    label: str
    kind: str
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    factory: OptimizerFactory | None = None
    _rule: Any = field(default=None, repr=False, compare=False)

    @property
    def needs_tuning(self) -> bool:
        """Whether the learning rate is to be tuned (a torch baseline without an explicit lr)."""
        return self.kind == "torch" and "lr" not in self.options

    @classmethod
    def from_factory(cls, label: str, factory: OptimizerFactory) -> OptimizerSpec:
        """Wrap a callable ``params -> torch.optim.Optimizer`` (used as is, never tuned)."""
        if not callable(factory):
            raise TypeError(f"optimizer factory for {label!r} must be callable, got {factory!r}")
        return cls(label=label, kind="factory", name=label, text=label, factory=factory)

    def build(self, lr: float | None = None) -> OptimizerFactory:
        """A factory ``params -> Optimizer``; ``lr`` overrides the spec's learning rate."""
        if self.kind == "factory":
            assert self.factory is not None
            return self.factory
        options = dict(self.options)
        if lr is not None:
            options["lr"] = float(lr)
        if self.kind == "torch":
            cls, defaults = BASELINES[self.name]
            kwargs = {**defaults, **options}
            if "lr" not in kwargs:
                raise ValueError(
                    f"{self.label}: no learning rate; tune it (compare does) or give one, "
                    f"e.g. '{self.name}:lr=0.01'"
                )
            return lambda params: cls(params, **kwargs)
        # learned: load the rule once per spec, share it (read-only) across problems
        from optizoo.optim import LearnedOptimizer

        rule = self.rule()
        options.setdefault("lr", 1.0)
        weights_name = self.name
        return lambda params: LearnedOptimizer(params, rule, weights_name=weights_name, **options)

    def rule(self) -> Any:
        """The learned :class:`~optizoo.rules.UpdateRule` (loaded once, cached on the spec)."""
        if self.kind != "learned":
            raise TypeError(f"{self.label} is not a learned optimizer")
        if self._rule is None:
            from optizoo import zoo
            from optizoo.optim import LSTM_RULES

            expect = LSTM_RULES if self.text.split(":")[0] == "lstm" else None
            self._rule = zoo.load_rule(self.name, expect_rule=expect)
        return self._rule

    def validate(self) -> None:
        """Build one optimizer on a dummy parameter, turning bad options into clear errors."""
        if self.kind == "factory":
            return
        if self.kind == "torch":
            cls, _ = BASELINES[self.name]
            accepted = [
                p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "params")
            ]
        else:
            from optizoo.optim import LearnedOptimizer

            accepted = [
                p
                for p in inspect.signature(LearnedOptimizer.__init__).parameters
                if p not in ("self", "params", "rule", "weights_name")
            ]
        unknown = sorted(set(self.options) - set(accepted))
        if unknown:
            raise ValueError(
                f"optimizer spec {self.text!r}: unknown option(s) {', '.join(unknown)}; "
                f"accepted: {', '.join(accepted)}"
            )
        dummy = [nn.Parameter(torch.zeros(2))]
        try:
            self.build(lr=None if "lr" in self.options or self.kind == "learned" else 1e-3)(dummy)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"optimizer spec {self.text!r}: {exc}") from exc


_NAME_RE = re.compile(r"^[A-Za-z_][\w.+-]*$")


def parse_spec(spec: str | OptimizerSpec) -> OptimizerSpec:
    """Parse an optimizer spec string (see :func:`_accepted_text` for the grammar).

    - ``adam``, ``rmsprop``, ``sgd``, ``momentum`` (SGD, momentum 0.9), ``nesterov``, ``adamw``,
      ``adagrad``: ``torch.optim`` baselines; ``adam:lr=0.01,betas=(0.9,0.99)`` sets options (an
      explicit ``lr`` disables tuning).
    - ``lstm``: the shipped default learned optimizer (``weights="default"``).
    - ``lstm-quadratic``: any pretrained name (:func:`optizoo.list_pretrained`).
    - ``NAME=PATH.safetensors`` or ``NAME=PRETRAINED``: a learned optimizer labelled ``NAME``;
      ``lstm=runs/a.safetensors:lr=0.5`` adds options after the ``.safetensors`` suffix.
    """
    if isinstance(spec, OptimizerSpec):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"an optimizer spec must be a string, got {type(spec).__name__}")
    text = spec.strip()
    if not text:
        raise ValueError(f"empty optimizer spec; {_accepted_text()}")
    head, colon, _ = text.partition(":")
    if "=" in head:  # NAME=WEIGHTS[:options]
        label, _, weights = text.partition("=")
        label = label.strip()
        options: dict[str, Any] = {}
        m = re.match(r"^(.*\.safetensors):(.+)$", weights)
        if m:
            weights, options = m.group(1), _parse_options(m.group(2), text)
        weights = weights.strip()
        if not _NAME_RE.match(label) or not weights:
            raise ValueError(
                f"bad optimizer spec {text!r}: expected NAME=PATH.safetensors or NAME=PRETRAINED "
                f"with NAME a plain word; {_accepted_text()}"
            )
        if label in BASELINES:
            raise ValueError(
                f"optimizer spec {text!r}: {label!r} names a torch.optim baseline; label a weight "
                "file with another name (e.g. 'lstm=PATH')"
            )
        if not (
            Path(weights).expanduser().is_file()
            or weights in _pretrained_names()
            or weights == "default"
        ):
            raise ValueError(
                f"optimizer spec {text!r}: no weight file at {weights!r} and no pretrained "
                f"optimizer of that name; {_accepted_text()}"
            )
        return OptimizerSpec(label=label, kind="learned", name=weights, options=options, text=text)
    name = head.strip().lower()
    options = _parse_options(text.partition(":")[2], text) if colon else {}
    if name in BASELINES:
        return OptimizerSpec(label=text, kind="torch", name=name, options=options, text=text)
    if name == "lstm":
        return OptimizerSpec(label=text, kind="learned", name="default", options=options, text=text)
    if head.strip() in _pretrained_names():
        return OptimizerSpec(
            label=text, kind="learned", name=head.strip(), options=options, text=text
        )
    raise ValueError(f"unknown optimizer spec {text!r}; {_accepted_text()}")


def _as_specs(
    optimizers: Sequence[str | OptimizerSpec]
    | Mapping[str, str | OptimizerSpec | OptimizerFactory],
) -> list[OptimizerSpec]:
    specs: list[OptimizerSpec] = []
    if isinstance(optimizers, Mapping):
        for label, value in optimizers.items():
            if isinstance(value, (str, OptimizerSpec)):
                s = parse_spec(value)
                s = OptimizerSpec(str(label), s.kind, s.name, s.options, s.text, s.factory)
            else:
                s = OptimizerSpec.from_factory(str(label), value)
            specs.append(s)
    elif isinstance(optimizers, (str, OptimizerSpec)):
        specs = [parse_spec(optimizers)]
    else:
        specs = [parse_spec(o) for o in optimizers]
    if not specs:
        raise ValueError(f"no optimizers to compare; {_accepted_text()}")
    labels = [s.label for s in specs]
    dupes = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dupes:
        raise ValueError(
            f"duplicate optimizer label(s) {dupes}; give each a distinct NAME=... label"
        )
    return specs
