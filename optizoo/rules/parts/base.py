"""The :class:`Part` base class: a small module with a declared scope and a recorded config."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

__all__ = ["SCOPES", "Part"]

#: what a part may see: one coordinate at a time, or whole tensors
SCOPES = ("coordinate", "tensor")


class Part(nn.Module):
    """Base class of rule parts.

    Attributes:
        scope: ``"coordinate"`` (coordinate-wise: any chunk of coordinates can be processed on
            its own) or ``"tensor"`` (needs whole tensors: per-tensor reductions).
    """

    scope: ClassVar[str] = "coordinate"

    def config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments (``type(part)(**part.config())`` rebuilds it)."""
        return {}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config().items())
