"""Meta-training: functional unrolls of update rules and the truncated-BPTT meta-trainer.

- :func:`unroll`: run a rule for ``steps`` updates on a problem, keeping the graph (differentiate
  anything with respect to the rule's meta-parameters or the initial parameters).
- :class:`MetaTrainer` and its :class:`MetaConfig`: truncated BPTT with Adam, held-out selection,
  atomic checkpoints and bit-identical :meth:`MetaTrainer.resume`, data-parallel under
  ``torchrun``.
- :func:`fit_stages`: a :class:`MetaConfig` with ``stages`` (a curriculum), one MetaTrainer run
  per stage, with the same checkpoints and resume.
"""

from __future__ import annotations

from optizoo.meta.checkpoint import CheckpointError
from optizoo.meta.config import MetaConfig
from optizoo.meta.plots import learning_curve
from optizoo.meta.stages import StagesResult, fit_stages
from optizoo.meta.trainer import MetaTrainer
from optizoo.meta.unroll import Layout, UnrollResult, rollout, unroll
from optizoo.seeds import problem_seeds

__all__ = [
    "CheckpointError",
    "Layout",
    "MetaConfig",
    "MetaTrainer",
    "StagesResult",
    "UnrollResult",
    "fit_stages",
    "learning_curve",
    "problem_seeds",
    "rollout",
    "unroll",
]
