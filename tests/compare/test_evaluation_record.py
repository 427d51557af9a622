"""The typed evaluation record (optizoo.compare.records.EvaluationRecord) that cards read.

The reference dicts are written out by hand in the stored layout that weight files carry (the
layout documented in optizoo/publish/card.py), and the shipped ``lstm-quadratic`` file's record
(written before the record type existed) must round-trip exactly.
"""

from __future__ import annotations

import copy
import io
import math
from pathlib import Path

import pytest

from optizoo.cli.zoo import _write_info
from optizoo.compare.records import EvaluationEntry, EvaluationRecord
from optizoo.compare.stats import Interval
from optizoo.publish.card import evaluation_record, model_card
from optizoo.zoo.format import read_metadata

SHIPPED = Path(__file__).resolve().parents[2] / "optizoo/zoo/pretrained/lstm-quadratic.safetensors"


def iv(mean, hw, n=10, bad=0):
    low = None if mean is None or hw is None else mean - hw
    high = None if mean is None or hw is None else mean + hw
    return {"mean": mean, "half_width": hw, "low": low, "high": high, "n": n,
            "confidence": 0.95, "n_nonfinite": bad}  # fmt: skip


STORED = {
    "task": "quadratic",
    "task_args": {"batch": 1},
    "held_out_problems": 10,
    "learned": "mine",
    "baselines": "learning rate tuned by a 4-point log grid",
    "steps": 20,
    "tune_steps": 10,
    "at_20_steps_tuned_for_sum": {
        "mine": {"lr": 1.0, "tuned": False, "final_loss": iv(0.5, 0.25)},
    },
    "at_20_steps_tuned_for_final": {
        "mine": {"lr": 1.0, "tuned": False, "final_loss": iv(0.5, 0.25), "sum_of_losses": iv(3.0, 0.5)},
        "adam": {
            "lr": 0.01, "tuned": True, "final_loss": iv(None, None, bad=2),
            "sum_of_losses": iv(2.0, 0.5), "grid_edge": True,
            "learned_minus_this": {"final_loss": iv(None, None, bad=2)},
        },
    },
    "at_10_steps_tuned_for_final": {"mine": {"lr": 1.0, "tuned": False, "final_loss": iv(0.75, 0.125)}},
}  # fmt: skip


def test_round_trip_and_typed_access() -> None:
    record = EvaluationRecord.from_dict(STORED)
    assert record.to_dict() == STORED
    assert [(b.steps, b.criterion) for b in record.blocks] == [
        (10, "final"),
        (20, "final"),
        (20, "sum"),
    ]
    assert record.blocks[1].key == "at_20_steps_tuned_for_final"
    assert record.learned == "mine" and record.task == "quadratic"
    adam = record.blocks[1].entries["adam"]
    assert (adam.lr, adam.tuned, adam.grid_edge) == (0.01, True, True)
    assert adam.metrics["sum_of_losses"] == Interval(2.0, 0.5, 10, 0.95, 0)
    diverged = adam.metrics["final_loss"]
    assert (
        math.isinf(diverged.mean) and math.isnan(diverged.half_width) and diverged.n_nonfinite == 2
    )
    assert record.blocks[1].entries["mine"].learned_minus_this is None
    assert EvaluationRecord.from_dict(record.to_dict()) == record


def test_learned_label_of_records_without_it() -> None:
    old = {k: v for k, v in STORED.items() if k != "learned"}
    assert EvaluationRecord.from_dict(old).learned == "mine"  # the untuned non-baseline entry


def test_the_shipped_record_round_trips_exactly() -> None:
    stored = read_metadata(SHIPPED)["optizoo.training"]["evaluation"]
    record = EvaluationRecord.from_dict(stored)
    assert record.to_dict() == stored
    assert {b.criterion for b in record.blocks} == {"final", "sum"} and record.learned == "lstm"


def test_an_entry_built_from_intervals_writes_interval_to_dict() -> None:
    a = Interval(0.25, 0.125, 5)
    entry = EvaluationEntry(lr=0.1, tuned=True, metrics={"final_loss": a}, grid_edge=False)
    assert entry.to_dict() == {
        "lr": 0.1,
        "tuned": True,
        "final_loss": a.to_dict(),
        "grid_edge": False,
    }


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.update(colour="blue"), "unknown key 'colour'"),
        (lambda d: d.update(at_20_steps_tuned_for_speed={"x": {}}), "criterion must be one of"),
        (lambda d: d.update(at_0_steps_tuned_for_final={"x": {}}), "steps >= 1"),
        (lambda d: d.update(at_30_steps_tuned_for_final={}), "non-empty dict"),
        (lambda d: d.update(at_30_steps_tuned_for_final=[1]), "non-empty dict"),
        (lambda d: d["at_10_steps_tuned_for_final"].update(x=3), r"\['x'\] must be a dict"),
        (lambda d: d["at_10_steps_tuned_for_final"]["mine"].update(lr="big"), "'lr'"),
        (lambda d: d["at_10_steps_tuned_for_final"]["mine"].update(tuned="yes"), "'tuned'"),
        (lambda d: d["at_10_steps_tuned_for_final"]["mine"].update(speed=1), "unknown keys"),
        (lambda d: d["at_10_steps_tuned_for_final"]["mine"].update(final_loss=0.3), "interval"),
        (lambda d: d["at_10_steps_tuned_for_final"]["mine"]["final_loss"].update(n=-1), "'n'"),
        (lambda d: d.update(held_out_problems="ten"), "'held_out_problems' must be int"),
    ],
)
def test_a_malformed_record_is_a_clear_value_error(mutate, match) -> None:
    data = copy.deepcopy(STORED)
    mutate(data)
    with pytest.raises(ValueError, match=match):
        EvaluationRecord.from_dict(data)


def test_a_foreign_record_in_a_card_or_info_is_named_not_guessed() -> None:
    with pytest.raises(ValueError, match="an evaluation record is a dict"):
        EvaluationRecord.from_dict(["not", "a", "record"])
    training = {"evaluation": {"accuracy": 0.9}}
    with pytest.raises(ValueError, match=r"optizoo.training\['evaluation'\] is not an optizoo"):
        evaluation_record(training)
    meta = {"optizoo.format": "1", "optizoo.rule": "lstm", "optizoo.training": training}
    with pytest.raises(ValueError, match="unknown key 'accuracy'"):
        model_card(meta, name="X")
    out = io.StringIO()
    info = {"name": "x", "path": "x", "source": "file", "manifest": None, "sha256": "0",
            "bytes": 1, "metadata": meta}  # fmt: skip
    _write_info(info, out)
    assert "comparison:   (unreadable: optizoo.training['evaluation'] is not" in out.getvalue()
    assert (
        evaluation_record({}) is None and evaluation_record({"evaluation": {"task": "q"}}) is None
    )
