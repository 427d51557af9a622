"""Atomic, unpickle-free files for the meta-trainer: checkpoints, metrics, best weights, plots.

A checkpoint is a ``torch.save`` of a dict holding only tensors, ints, floats, bools, strings,
``None``, lists and dicts (configurations are JSON strings, RNG states are uint8 tensors), so it is
read back with ``torch.load(weights_only=True)``: nothing is ever unpickled. Every file is written
to a temporary file in the destination directory and moved into place with ``os.replace``, so a
crash leaves either the old or the new file, never a torn one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from optizoo._io import (
    FolderLocked,
    atomic_write,
    folder_lock,
    remove_stale_temps,
)
from optizoo.errors import CheckpointError  # re-exported (optizoo.meta.checkpoint.CheckpointError)

if TYPE_CHECKING:
    from optizoo.rules.base import UpdateRule

__all__ = [
    "BEST_RULE_NAME",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "CURVE_NAME",
    "FINAL_RULE_NAME",
    "LOCK_NAME",
    "METRICS_NAME",
    "RUN_FILES",
    "CheckpointError",
    "atomic_write",
    "checkpoint_payload",
    "load_checkpoint",
    "payload_sha256",
    "read_metrics",
    "run_lock",
    "save_checkpoint",
    "write_metrics",
]

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.jsonl"
CURVE_NAME = "learning_curve.png"
BEST_RULE_NAME = "best_rule.safetensors"
FINAL_RULE_NAME = "final_rule.safetensors"
#: lock file held while a process writes into a run folder
LOCK_NAME = ".optizoo-run.lock"
#: the files of a run: a folder holding any of them holds a run
RUN_FILES = (CHECKPOINT_NAME, METRICS_NAME, CURVE_NAME, BEST_RULE_NAME, FINAL_RULE_NAME)
#: schema version of :data:`CHECKPOINT_NAME`
CHECKPOINT_FORMAT = 2


#: every key a checkpoint payload carries, with the type its value must have
_SCHEMA: dict[str, type | tuple[type, ...]] = {
    "config": str,
    "rule_name": str,
    "rule_config": str,
    "meta_step": int,
    "world_size": int,
    "rule": dict,
    "meta_opt": dict,
    "inner": (dict, type(None)),
    "best": dict,
    "rng": dict,
}


def checkpoint_payload(
    *,
    config: Mapping[str, Any],
    rule: UpdateRule,
    rule_state: Mapping[str, Tensor],
    meta_step: int,
    world_size: int,
    meta_opt: dict[str, Any],
    inner: dict[str, Any] | None,
    best_metric: float,
    best_step: int | None,
    best_state: Mapping[str, Tensor] | None,
    rng_state: Tensor,
    metrics_rows: int,
) -> dict[str, Any]:
    """The dict a meta-training checkpoint holds (format :data:`CHECKPOINT_FORMAT`, keys of
    ``_SCHEMA`` plus ``metrics_rows``), ready for :func:`save_checkpoint`.

    Args:
        config: :meth:`MetaConfig.to_dict` (stored as sorted JSON).
        rule: the rule (its ``rule_name`` and ``config()``, stored as sorted JSON).
        rule_state: the *training* weights (not the best ones), stored on the CPU.
        meta_step: meta-steps done; ``world_size``: processes that wrote it.
        meta_opt: the meta-optimizer's ``state_dict()``.
        inner: the mid-episode state from :func:`optizoo.meta.distributed.gather_episode`.
        best_metric, best_step, best_state: the held-out selection so far (``best_step``
            ``None`` and ``best_state`` ``None`` before the first evaluation; stored as ``-1``).
        rng_state: ``torch.get_rng_state()`` (uint8 tensor).
        metrics_rows: rows of ``metrics.jsonl`` the checkpoint covers (a resume drops the rest).
    """
    return {
        "config": json.dumps(dict(config), sort_keys=True),
        "rule_name": rule.rule_name,
        "rule_config": json.dumps(rule.config(), sort_keys=True),
        "meta_step": meta_step,
        "world_size": world_size,
        "rule": {k: v.detach().cpu() for k, v in rule_state.items()},
        "meta_opt": meta_opt,
        "inner": inner,
        "best": {
            "metric": best_metric,
            "meta_step": -1 if best_step is None else best_step,
            "rule": None if best_state is None else {k: v.cpu() for k, v in best_state.items()},
        },
        "rng": {"torch": rng_state},
        "metrics_rows": metrics_rows,
    }


def payload_sha256(payload: Any) -> str:
    """sha256 of a checkpoint payload: every key, type, number and tensor byte, in a canonical
    order (dict keys sorted), so that any bit flip inside tensor data changes it."""
    h = hashlib.sha256()

    def feed(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
            if t.numel():
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            h.update(f"D{len(value)}:".encode())
            for k in sorted(value, key=repr):
                feed(k)
                feed(value[k])
        elif isinstance(value, (list, tuple)):
            h.update(f"L{len(value)}:".encode())
            for v in value:
                feed(v)
        elif isinstance(value, float):
            h.update(b"F" + struct.pack("<d", value))
        elif value is None or isinstance(value, (bool, int, str)):
            h.update(f"{type(value).__name__}:{value!r};".encode())
        else:
            raise CheckpointError(f"cannot checksum a {type(value).__name__} in a checkpoint")

    feed(payload)
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus the format version and its sha256) to ``path`` atomically with
    ``torch.save`` (file and folder fsynced)."""
    data = {"format": CHECKPOINT_FORMAT, **payload}
    data["sha256"] = payload_sha256(data)
    return atomic_write(path, lambda tmp: torch.save(data, tmp))


def _refuse(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {str(path)!r} is corrupt or was not written by optizoo ({why}); it cannot be "
        "resumed: restore it from a backup or start the run again in a new folder"
    )


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and verify a checkpoint written by :func:`save_checkpoint`.

    ``torch.load(weights_only=True)`` (nothing is unpickled), CPU tensors. The stored sha256 is
    recomputed over the payload and every key's type is checked; anything else (a truncated or
    foreign file, a bit flip in tensor data, a missing key) is a :class:`CheckpointError`.
    """
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
        # torch's own message advises weights_only=False, i.e. running the file's code: never
        raise _refuse(path, f"cannot read it: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise _refuse(path, f"holds a {type(data).__name__}, not a dict")
    if data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is not an optizoo meta-training checkpoint of format "
            f"{CHECKPOINT_FORMAT} (found {data.get('format')!r}); checkpoints of format 1 carry "
            "no checksum and cannot be verified: start the run again"
        )
    stored = data.pop("sha256", None)
    if not isinstance(stored, str):
        raise _refuse(path, "no sha256")
    actual = payload_sha256(data)
    if actual != stored:
        raise _refuse(
            path, f"sha256 {actual[:12]}… of its contents does not match the stored {stored[:12]}…"
        )
    for key, kind in _SCHEMA.items():
        if key not in data:
            raise _refuse(path, f"no {key!r} entry")
        if not isinstance(data[key], kind) or isinstance(data[key], bool):
            raise _refuse(path, f"{key!r} is a {type(data[key]).__name__}")
    for key in ("config", "rule_config"):
        try:
            decoded = json.loads(data[key])
        except json.JSONDecodeError:
            raise _refuse(path, f"{key!r} is not valid JSON") from None
        if not isinstance(decoded, dict):
            raise _refuse(path, f"{key!r} is not a JSON object")
    if not all(isinstance(v, torch.Tensor) for v in data["rule"].values()):
        raise _refuse(path, "'rule' holds non-tensor values")
    return data


@contextlib.contextmanager
def run_lock(out_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the run folder's lock (``out_dir/.optizoo-run.lock``) for the block; a second process
    writing into the same folder gets a :class:`CheckpointError` at once. Temporary files that
    interrupted writes left in the folder are removed once the lock is held."""
    try:
        with folder_lock(Path(out_dir) / LOCK_NAME):
            remove_stale_temps(out_dir, RUN_FILES)
            yield
    except FolderLocked as exc:
        raise CheckpointError(
            f"another process is writing into the run folder {str(out_dir)!r} ({exc}); wait for "
            "it to finish (or stop it) before resuming, or use another --out folder"
        ) from None


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
