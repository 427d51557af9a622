"""Publishing: weight file, model card and figures from a meta-training run.

This layer sits on top of the zoo's weight files (:mod:`optizoo.zoo`) and of the comparisons
(:mod:`optizoo.compare`); nothing below imports it. :mod:`optizoo.publish.publish` writes a
publication (``optizoo publish``), :mod:`optizoo.publish.card` renders a card from a weight
file's metadata. Guide: ``docs/zoo.md``.
"""

from __future__ import annotations

from optizoo.publish.card import card_for_file, model_card
from optizoo.publish.publish import DEFAULT_BASELINES, Published, publish_rule, read_run

__all__ = [
    "DEFAULT_BASELINES",
    "Published",
    "card_for_file",
    "model_card",
    "publish_rule",
    "read_run",
]
