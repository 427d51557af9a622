"""Parts that learned update rules are composed from (DESIGN.md, "Rules from parts").

A rule is **inputs** → **cell** → **head** → **update transforms**. Every part is a small
``nn.Module`` that declares its :attr:`~optizoo.rules.parts.base.Part.scope`:

- ``"coordinate"``: coordinate ``i``'s output depends only on coordinate ``i`` (any chunk of
  coordinates may be processed on its own);
- ``"tensor"``: the part reduces over whole tensors (per-tensor statistics, a per-tensor LSTM, RMS
  normalization, Newton–Schulz orthogonalization), so a caller must hand it whole tensors and
  their :class:`~optizoo.rules.segments.Segments`.

Modules:

- :mod:`~optizoo.rules.parts.inputs`: :class:`Preprocessed` (a gradient preprocessor such as the
  paper's log-and-sign), :class:`Features` (momenta at several decays, second moment, progress),
  :class:`TensorStats` (scale-free per-tensor statistics for a per-tensor cell).
- :mod:`~optizoo.rules.parts.cells`: :func:`lstm_layer` (the LSTM gate math, in one place),
  :class:`CoordinateLSTM`, :class:`TensorLSTM`, :class:`MLP`.
- :mod:`~optizoo.rules.parts.heads`: :class:`LinearHead`.
- :mod:`~optizoo.rules.parts.transforms`: :class:`OutputScale`, :class:`NominalStep`,
  :class:`DecoupledWeightDecay`, :class:`RMSNormalize`, :class:`NewtonSchulz`.
"""

from __future__ import annotations

from optizoo.rules.parts.base import Part
from optizoo.rules.parts.cells import MLP, CoordinateLSTM, TensorLSTM, lstm_layer
from optizoo.rules.parts.heads import LinearHead
from optizoo.rules.parts.inputs import Features, Moments, Preprocessed, TensorStats
from optizoo.rules.parts.transforms import (
    DecoupledWeightDecay,
    NewtonSchulz,
    NominalStep,
    OutputScale,
    RMSNormalize,
)
from optizoo.rules.segments import Segments

__all__ = [
    "MLP",
    "CoordinateLSTM",
    "DecoupledWeightDecay",
    "Features",
    "LinearHead",
    "Moments",
    "NewtonSchulz",
    "NominalStep",
    "OutputScale",
    "Part",
    "Preprocessed",
    "RMSNormalize",
    "Segments",
    "TensorLSTM",
    "TensorStats",
    "lstm_layer",
]
