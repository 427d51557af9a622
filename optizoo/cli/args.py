"""Checks of command-line values that must fail *before* a long run starts (one-line errors).

Each raises ``ValueError`` with a message that says what was wrong and what is accepted; the
commands print it as one ``optizoo COMMAND: error: ...`` line and exit with status 2.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TextIO

__all__ = ["SafeText", "check_device", "check_writable", "printable"]

#: ANSI/VT escape sequences (CSI, OSC, other ESC-x) and the remaining control characters
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?|\x9b[0-?]*[ -/]*[@-~]"
)
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` without terminal escape sequences and control characters (newlines and tabs
    kept): what a weight file's metadata may contain is shown, never executed by the terminal."""
    return _CONTROLS.sub("", _ESCAPES.sub("", text))


class SafeText:
    """A text stream wrapper whose ``write`` passes everything through :func:`printable`."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(printable(text))

    def flush(self) -> None:
        self._stream.flush()


def check_device(text: str | None) -> str | None:
    """``text`` if it names a torch device that exists on this machine (``None`` passes)."""
    if text is None:
        return None
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(
            f"unknown device {text!r}; give cpu, cuda, cuda:N or mps (torch device syntax)"
        ) from None
    kind = device.type
    if kind == "cpu":
        return text
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {text!r} is not available: this machine has no CUDA GPU")
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"device {text!r} is not available: this machine has {count} CUDA GPU(s) "
                f"(cuda:0 to cuda:{count - 1})"
            )
        return text
    if kind == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {text!r} is not available on this machine (no MPS)")
        return text
    backend = getattr(torch, kind, None)
    available = getattr(backend, "is_available", None)
    if callable(available) and available():
        return text
    raise ValueError(f"device {text!r} is not available on this machine; use cpu or cuda")


def check_writable(path: str | os.PathLike[str] | None, flag: str) -> None:
    """Refuse an output ``path`` that cannot be written: a folder, under a file, or in a
    folder this user may not write to (``None`` passes). Nothing is created."""
    if path is None:
        return
    p = Path(path).expanduser()
    if p.is_dir():
        raise ValueError(f"{flag} {str(path)!r} is a folder; give a file name")
    if p.exists() and not os.access(p, os.W_OK):
        raise ValueError(f"{flag} {str(path)!r} exists and is not writable")
    parent = p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{flag} {str(path)!r}: {str(parent)!r} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {str(path)!r}: folder {str(parent)!r} is not writable")
