"""Measure the autograd graph's memory: bytes of tensors saved for backward, via saved-tensor
hooks. Used to show that meta-training memory does not grow with the horizon.

>>> with GraphMeter() as m:
...     trainer.step()
>>> m.peak, m.live, m.saved      # peak bytes, bytes still alive, tensors saved
"""

from __future__ import annotations

import weakref
from typing import Any

import torch

__all__ = ["GraphMeter"]


class _Box:
    __slots__ = ("__weakref__", "t")

    def __init__(self, t: torch.Tensor) -> None:
        self.t = t


class GraphMeter:
    """Bytes of tensors saved for backward that are alive (``live``), their peak (``peak``) and
    how many tensors were saved (``saved``). Use as a context manager, or pass ``pack``/``unpack``
    to ``torch.autograd.graph.saved_tensors_hooks`` yourself."""

    def __init__(self) -> None:
        self.live = self.peak = self.saved = 0

    def pack(self, t: torch.Tensor) -> _Box:
        n = t.numel() * t.element_size()
        self.live += n
        self.saved += 1
        self.peak = max(self.peak, self.live)
        box = _Box(t)
        weakref.finalize(box, self._free, n)
        return box

    def _free(self, n: int) -> None:
        self.live -= n

    def unpack(self, box: _Box) -> torch.Tensor:
        return box.t

    def __enter__(self) -> GraphMeter:
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._ctx.__exit__(*exc)
