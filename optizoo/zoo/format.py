"""Weight files: any update rule as safetensors with self-describing metadata.

Tensors are the rule's ``state_dict()``. Metadata (``str -> str``; nested values as JSON):

========================  ==============================================================
``optizoo.format``        schema version (:data:`FORMAT_VERSION`)
``optizoo.rule``          registry name of the rule class (``"lstm"``, ``"adam"``...)
``optizoo.config``        JSON constructor arguments (architecture, preprocessor, scale)
``optizoo.training``      JSON training record: tasks, unroll, horizon, meta-steps, seeds,
                          final metrics against tuned baselines
``optizoo.versions``      JSON versions of optizoo and torch that wrote the file
``license``               licence of the weights
``description``           one line saying what the optimizer is for
========================  ==============================================================

Loading checks the schema version, that the rule is known, and that every tensor matches the
configured architecture, and refuses otherwise with a :class:`~optizoo.errors.WeightsError`.
Nothing is ever unpickled. Saving is atomic (temp file + ``os.replace``).
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from optizoo._io import atomic_write
from optizoo._version import __version__
from optizoo.errors import WeightsError
from optizoo.rules.base import UpdateRule

__all__ = ["FORMAT_VERSION", "read_metadata", "rule_from_file", "save_rule"]

FORMAT_VERSION = "1"
_JSON_KEYS = ("optizoo.config", "optizoo.training", "optizoo.versions")
#: deepest JSON nesting accepted in metadata (a hostile file could nest thousands of levels)
MAX_JSON_DEPTH = 32
#: most tensor elements a weight file's config may imply (checked before any module is built)
MAX_ELEMENTS = 1 << 27
#: largest int a config may hold when a rule cannot be built on the meta device
_MAX_CONFIG_INT = 1 << 16


def _versions() -> dict[str, str]:
    return {"optizoo": __version__, "torch": torch.__version__.split("+")[0]}


def save_rule(
    rule: UpdateRule,
    path: str | os.PathLike[str],
    *,
    training: dict[str, Any] | None = None,
    description: str = "",
    license: str = "MIT",
    extra: dict[str, str] | None = None,
) -> Path:
    """Write ``rule`` to ``path`` as a safetensors weight file with optizoo metadata (atomically).

    Args:
        rule: any :class:`~optizoo.rules.UpdateRule`.
        path: destination ``.safetensors`` file; parent directories are created.
        training: JSON-serialisable training record (tasks, unroll, horizon, meta_steps,
            seeds, metrics...).
        description: one line for ``optizoo list`` and the model card.
        license: licence of the weights.
        extra: additional ``str -> str`` metadata.

    Returns:
        The written path.
    """
    if not isinstance(rule, UpdateRule):
        raise TypeError(f"save_rule needs an optizoo UpdateRule, got {type(rule).__name__}")
    path = Path(path)
    metadata = {
        "optizoo.format": FORMAT_VERSION,
        "optizoo.rule": rule.rule_name,
        "optizoo.config": json.dumps(rule.config(), sort_keys=True),
        "optizoo.training": json.dumps(training or {}, sort_keys=True),
        "optizoo.versions": json.dumps(_versions(), sort_keys=True),
        "license": license,
        "description": description,
        **(extra or {}),
    }
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in rule.state_dict().items()}
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(_canonical(save(tensors, metadata))))
    return path


def _canonical(data: bytes) -> bytes:
    """The safetensors bytes ``data`` with a canonical header (keys sorted): safetensors writes
    its metadata in hash order, so the same rule would otherwise give different bytes."""
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    raw = text.encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # safetensors aligns the data start to 8 bytes
    return struct.pack("<Q", len(raw)) + raw + data[8 + n :]


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The optizoo metadata of a weight file, JSON fields decoded. Raises ``WeightsError``."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weight file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(
            f"{str(path)!r} is not a readable safetensors file (truncated or corrupt?): {exc}"
        ) from exc
    if "optizoo.format" not in raw:
        raise WeightsError(
            f"{str(path)!r} is a safetensors file but not an optizoo weight file "
            "(no 'optizoo.format' metadata); save rules with optizoo.save_rule"
        )
    if raw["optizoo.format"] != FORMAT_VERSION:
        raise WeightsError(
            f"{str(path)!r} has optizoo weight format {raw['optizoo.format']!r}; this optizoo "
            f"reads format {FORMAT_VERSION!r} (upgrade optizoo or re-publish the file)"
        )
    if not isinstance(raw.get("optizoo.rule"), str) or not raw["optizoo.rule"]:
        raise WeightsError(
            f"{str(path)!r} names no update rule (no 'optizoo.rule' metadata); it was not "
            "written by optizoo.save_rule"
        )
    meta: dict[str, Any] = dict(raw)
    for key in _JSON_KEYS:
        text = raw.get(key, "{}")
        if _json_depth(text) > MAX_JSON_DEPTH:
            raise WeightsError(
                f"{str(path)!r}: metadata {key!r} nests deeper than {MAX_JSON_DEPTH} levels; "
                "refused (not written by optizoo)"
            )
        try:
            meta[key] = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise WeightsError(
                f"{str(path)!r}: metadata {key!r} is not valid JSON: {exc}"
            ) from None
        if not isinstance(meta[key], dict):
            raise WeightsError(
                f"{str(path)!r}: metadata {key!r} must be a JSON object, got "
                f"{type(meta[key]).__name__}"
            )
    return meta


def _json_depth(text: str) -> int:
    """Deepest ``[``/``{`` nesting of JSON ``text`` (brackets inside strings ignored), in one
    pass without parsing."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _file_shapes(path: Path) -> dict[str, tuple[str, list[int]]]:
    """``{key: (dtype, shape)}`` of a safetensors file, from its header only."""
    try:
        with safe_open(str(path), framework="pt") as f:
            out = {}
            for k in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                sl = f.get_slice(k)
                out[k] = (sl.get_dtype(), list(sl.get_shape()))
            return out
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{str(path)!r}: cannot read tensors (corrupt file?): {exc}") from exc


def _check_keys(path: str | os.PathLike[str], name: str, expected: Any, found: Any) -> None:
    """Refuse a file whose tensor names differ from those the config of rule ``name`` needs."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise WeightsError(
            f"{str(path)!r} does not match its config for rule {name!r}: "
            f"missing tensors {missing}, unexpected tensors {unexpected}"
        )


def _build_checked(path: Path, cls: type, name: str, config: dict[str, Any]) -> UpdateRule:
    """Build ``cls(**config)`` only once the shapes it implies match the file and are capped.

    The rule is first built on the ``meta`` device (no memory); rules that cannot be built
    there get a cap on the ints of their config instead."""
    shapes = _file_shapes(path)
    try:
        with torch.device("meta"):
            probe = cls(**config)
        implied: dict[str, list[int]] | None = {
            k: list(v.shape) for k, v in probe.state_dict().items()
        }
    except (TypeError, ValueError, KeyError) as exc:
        raise WeightsError(f"{str(path)!r}: config does not fit rule {name!r}: {exc}") from None
    except Exception:  # e.g. .item() on a meta tensor: check the config instead
        implied = None
        big = [k for k, v in config.items() if isinstance(v, int) and abs(v) > _MAX_CONFIG_INT]
        if big:
            raise WeightsError(
                f"{str(path)!r}: config value(s) {big} exceed {_MAX_CONFIG_INT}; refused"
            ) from None
    if implied is not None:
        total = sum(math.prod(s) for s in implied.values())
        if total > MAX_ELEMENTS:
            raise WeightsError(
                f"{str(path)!r}: its config implies {total} weights (more than the cap of "
                f"{MAX_ELEMENTS}); refused before building the rule"
            )
        _check_keys(path, name, implied, shapes)
        for key, shape in implied.items():
            if shapes[key][1] != shape:
                raise WeightsError(
                    f"{str(path)!r}: tensor {key!r} has shape {shapes[key][1]}, the config "
                    f"needs {shape}"
                )
    try:
        return cls(**config)
    except Exception as exc:  # a rule's constructor may raise anything for a hostile config
        raise WeightsError(
            f"{str(path)!r}: config does not fit rule {name!r}: {type(exc).__name__}: {exc}"
        ) from None


def rule_from_file(
    path: str | os.PathLike[str], *, expect_rule: str | tuple[str, ...] | None = None
) -> UpdateRule:
    """Rebuild the rule a weight file describes and load its tensors.

    Args:
        path: a ``.safetensors`` file written by :func:`save_rule`.
        expect_rule: if given, the rule name (or one of the names) the file must hold (e.g.
            ``"lstm"``).
    """
    from optizoo import rules

    meta = read_metadata(path)
    name = meta["optizoo.rule"]
    allowed = (expect_rule,) if isinstance(expect_rule, str) else expect_rule
    if allowed is not None and name not in allowed:
        wanted = " or ".join(repr(a) for a in allowed)
        raise WeightsError(f"{str(path)!r} holds a {name!r} rule, but a {wanted} rule was expected")
    try:
        cls = rules.get(name)
    except KeyError as exc:
        raise WeightsError(
            f"{str(path)!r} needs update rule {name!r}, which is not installed "
            f"(available: {', '.join(rules.available())}); install the plugin that provides it"
        ) from exc
    rule = _build_checked(Path(path), cls, name, meta["optizoo.config"])
    expected = rule.state_dict()
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{str(path)!r}: cannot read tensors (corrupt file?): {exc}") from exc
    _check_keys(path, name, expected, tensors)
    for key, want in expected.items():
        got = tensors[key]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise WeightsError(
                f"{str(path)!r}: tensor {key!r} is {got.dtype}{list(got.shape)}, the config "
                f"needs {want.dtype}{list(want.shape)}"
            )
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise WeightsError(f"{str(path)!r}: tensor {key!r} has non-finite values")
    rule.load_state_dict(tensors)
    return rule
