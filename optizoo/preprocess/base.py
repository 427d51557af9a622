"""The gradient-preprocessor base class (a leaf: imports only torch).

A preprocessor maps a flat gradient ``[n]`` to per-coordinate features ``[n, k]``; ``k`` is the
class attribute ``out_features``. The contract is checked by
:func:`optizoo.testing.check_preprocessor`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

__all__ = ["Preprocessor"]


class Preprocessor(nn.Module):
    """Base class: ``forward(grad[n]) -> features[n, out_features]``."""

    #: Number of features per coordinate.
    out_features: ClassVar[int] = 1

    def forward(self, grad: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments."""
        return {}
