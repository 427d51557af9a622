"""Atomic, unpickle-free files for the meta-trainer: checkpoints, metrics, best weights, plots.

A checkpoint is a ``torch.save`` of a dict holding only tensors, ints, floats, bools, strings,
``None``, lists and dicts (configurations are JSON strings, RNG states are uint8 tensors), so it is
read back with ``torch.load(weights_only=True)``: nothing is ever unpickled. Every file is written
to a temporary file in the destination directory and moved into place with ``os.replace``, so a
crash leaves either the old or the new file, never a torn one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from optizoo.errors import OptizooError

__all__ = [
    "BEST_RULE_NAME",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "CURVE_NAME",
    "FINAL_RULE_NAME",
    "METRICS_NAME",
    "CheckpointError",
    "atomic_write",
    "load_checkpoint",
    "read_metrics",
    "save_checkpoint",
    "write_metrics",
]

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.jsonl"
CURVE_NAME = "learning_curve.png"
BEST_RULE_NAME = "best_rule.safetensors"
FINAL_RULE_NAME = "final_rule.safetensors"
#: schema version of :data:`CHECKPOINT_NAME`
CHECKPOINT_FORMAT = 1


from optizoo._io import atomic_write  # noqa: E402 - re-exported


class CheckpointError(OptizooError, ValueError):
    """A meta-training checkpoint is missing, corrupt, or does not fit the trainer."""


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus the format version) to ``path`` atomically with ``torch.save``."""
    data = {"format": CHECKPOINT_FORMAT, **payload}
    return atomic_write(path, lambda tmp: torch.save(data, tmp))


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``, CPU tensors)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(
            f"no meta-training checkpoint at {str(path)!r}; pass the out_dir of a run started "
            "with MetaTrainer(..., out_dir=...) (or `optizoo train --out DIR`)"
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated / foreign files
        raise CheckpointError(f"cannot read checkpoint {str(path)!r} (corrupt?): {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(
            f"{str(path)!r} is not an optizoo meta-training checkpoint of format "
            f"{CHECKPOINT_FORMAT} (found {found!r})"
        )
    return data


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to the metrics log")


def metrics_line(row: dict[str, Any]) -> str:
    """One JSON line (non-finite floats written as ``Infinity``/``NaN``, as Python's json does)."""
    return json.dumps(row, default=_json_default) + "\n"


def write_metrics(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> Path:
    """Rewrite the JSON-lines metrics file with ``rows`` atomically."""
    text = "".join(metrics_line(r) for r in rows)

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, write)


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a JSON-lines metrics file (a torn last line from a crash is ignored)."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_NAME
    if not path.is_file():
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows
