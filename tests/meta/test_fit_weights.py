"""Which weights the rule holds after ``MetaTrainer.fit`` (stated in the MetaTrainer docstring).

The references are independent runs: a trainer doing ``fit(a + b)`` in one go gives the
training weights that ``fit(a); fit(b)`` must continue to; ``best_rule.safetensors`` (written
when the best evaluation happened) gives the best weights. Exact equality: the same float ops.
"""

from __future__ import annotations

import pytest
import torch

from optizoo.zoo.format import rule_from_file
from tests.meta.test_trainer import small_trainer


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _trainer(out_dir=None):
    # eval_every=2: the best evaluation is not the last one on this run (asserted below)
    return small_trainer(out_dir, eval_every=2, meta_lr=0.3)


def test_fit_twice_best_in_the_rule_training_continues_from_the_training_weights(tmp_path):
    reference = _trainer()
    reference.fit(4, restore_best=False)
    after_4 = reference.training_state_dict()
    reference.fit(4, restore_best=False)
    after_8 = reference.training_state_dict()

    tr = _trainer(tmp_path)
    tr.fit(4)
    # after fit: the rule holds the best weights, the training weights are kept aside
    assert _equal(tr.rule.state_dict(), tr.best_state)
    assert _equal(tr.best_state, rule_from_file(tmp_path / "best_rule.safetensors").state_dict())
    assert _equal(tr.training_state_dict(), after_4)
    assert _equal(rule_from_file(tmp_path / "final_rule.safetensors").state_dict(), after_4)
    assert tr.best_step != tr.meta_step  # so best and training weights really differ here
    assert not _equal(tr.rule.state_dict(), after_4)

    tr.fit(4)  # continues from the training weights, not from the best ones
    assert tr.meta_step == 8
    assert _equal(tr.training_state_dict(), after_8)
    assert _equal(tr.rule.state_dict(), tr.best_state)
    assert _equal(tr.best_state, rule_from_file(tmp_path / "best_rule.safetensors").state_dict())


def test_restore_best_false_leaves_the_training_weights(tmp_path):
    tr = _trainer(tmp_path)
    tr.fit(4, restore_best=False)
    assert _equal(tr.rule.state_dict(), tr.training_state_dict())
    assert _equal(
        tr.rule.state_dict(), rule_from_file(tmp_path / "final_rule.safetensors").state_dict()
    )
    assert not _equal(tr.rule.state_dict(), tr.best_state)


def test_changing_the_rule_between_fits_is_refused_not_discarded():
    tr = _trainer()
    tr.fit(2)
    with torch.no_grad():
        next(tr.rule.parameters()).add_(1.0)
    with pytest.raises(ValueError, match="rule's weights changed after fit"):
        tr.fit(1)
    with pytest.raises(ValueError, match="rule's weights changed after fit"):
        tr.step()
    tr.rule.load_state_dict(tr.best_state)  # what the message says to do
    tr.fit(1)
    assert tr.meta_step == 3


def test_best_state_is_a_copy():
    tr = _trainer()
    assert tr.best_state is None
    tr.fit(2)
    state = tr.best_state
    next(iter(state.values())).add_(1.0)
    assert not _equal(state, tr.best_state)
