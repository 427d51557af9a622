"""Comparison results as plain data: loss curves, tuning outcomes and their JSON form.

:class:`Comparison` (from :func:`optizoo.compare.compare`) holds one :class:`OptimizerResult`
per optimizer; ``to_json``/``from_json`` round-trip it (figures: :mod:`optizoo.compare.plots`).
:class:`EvaluationRecord` is the comparison as recorded in a weight file (``to_dict``/
``from_dict``), which model cards read.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optizoo._io import write_text_atomic
from optizoo.compare.stats import Interval, format_interval, mean_ci, paired_difference

__all__ = [
    "EVALUATION_CRITERIA",
    "EVALUATION_METRICS",
    "Comparison",
    "EvaluationBlock",
    "EvaluationEntry",
    "EvaluationRecord",
    "OptimizerResult",
    "Trajectories",
    "TuneResult",
]


@dataclass
class Trajectories:
    """Loss curves of one optimizer on a list of problems.

    Attributes:
        train: ``[problems, steps + 1]`` float64: ``f(θ_t) / num_instances`` for ``t = 0..steps``;
            ``inf`` after a divergence.
        test: ``[problems, len(test_steps)]`` float64 held-out loss at ``test_steps``, or ``None``
            when the task has no test split.
        test_steps: the step counts (0..steps) where the test loss was measured.
        seconds: wall-clock time of the runs (evaluation included).
    """

    train: np.ndarray
    test: np.ndarray | None
    test_steps: list[int]
    seconds: float


@dataclass
class TuneResult:
    """Outcome of a learning-rate grid search.

    Attributes:
        lr: the chosen learning rate (lowest mean criterion; diverged runs rank last).
        grid: the learning rates tried (ascending).
        scores: mean criterion per grid point (``inf`` = at least one run diverged).
        criterion: ``"final"``, ``"sum"`` or ``"test"``.
        steps: the horizon the runs used.
        seeds: the tuning problems' seeds (disjoint from the evaluation seeds).
    """

    lr: float
    grid: list[float]
    scores: list[float]
    criterion: str
    steps: int
    seeds: list[int]

    @property
    def at_edge(self) -> bool:
        """The chosen lr is the smallest or largest of the grid: widen the grid to be sure."""
        return self.lr in (self.grid[0], self.grid[-1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "grid": self.grid,
            "scores": [s if math.isfinite(s) else None for s in self.scores],
            "criterion": self.criterion,
            "steps": self.steps,
            "seeds": self.seeds,
            "at_edge": self.at_edge,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TuneResult:
        scores = [math.inf if s is None else float(s) for s in d["scores"]]
        return cls(
            float(d["lr"]),
            [float(g) for g in d["grid"]],
            scores,
            d["criterion"],
            int(d["steps"]),
            list(d["seeds"]),
        )


@dataclass
class OptimizerResult:
    """One optimizer's runs in a :class:`Comparison`.

    Attributes:
        label: display name.
        spec: the spec text (``"adam"``, ``"lstm=runs/a.safetensors"``...).
        lr: the learning rate used: tuned, given, ``1.0`` for a learned rule run as meta-trained,
            ``None`` for a custom factory.
        tuning: the grid search, when the lr was tuned.
        trajectories: the loss curves.
    """

    label: str
    spec: str
    lr: float | None
    tuning: TuneResult | None
    trajectories: Trajectories

    @property
    def train(self) -> np.ndarray:
        return self.trajectories.train

    @property
    def test(self) -> np.ndarray | None:
        return self.trajectories.test

    def final(self, at: int | None = None) -> np.ndarray:
        """Per-problem train loss after ``at`` steps (default: all), ``[problems]``."""
        return self.train[:, self._at(at)]

    def sum_losses(self, at: int | None = None) -> np.ndarray:
        """Per-problem sum of the train losses at steps ``0..at-1``, ``[problems]``."""
        with np.errstate(over="ignore", invalid="ignore"):
            return self.train[:, : self._at(at)].sum(axis=1)

    def final_test(self, at: int | None = None) -> np.ndarray | None:
        """Per-problem test loss after ``at`` steps, or ``None`` (no test split / not measured)."""
        at = self._at(at)
        if self.test is None or at not in self.trajectories.test_steps:
            return None
        return self.test[:, self.trajectories.test_steps.index(at)]

    def _at(self, at: int | None) -> int:
        steps = self.train.shape[1] - 1
        if at is None:
            return steps
        if not (isinstance(at, int) and 1 <= at <= steps):
            raise ValueError(f"at must be an int in 1..{steps}, got {at!r}")
        return at


def _clean(values: np.ndarray) -> list[Any]:
    """JSON-safe nested lists (non-finite -> None)."""
    arr = np.asarray(values, dtype=np.float64)
    out = np.where(np.isfinite(arr), arr, np.nan).tolist()

    def fix(x: Any) -> Any:
        if isinstance(x, list):
            return [fix(v) for v in x]
        return None if x != x else x

    return fix(out)


def _unclean(values: Any) -> np.ndarray:
    def fix(x: Any) -> Any:
        if isinstance(x, list):
            return [fix(v) for v in x]
        return math.inf if x is None else float(x)

    return np.asarray(fix(values), dtype=np.float64)


@dataclass
class Comparison:
    """The outcome of :func:`compare`: per-optimizer curves over the same problems.

    Attributes:
        task: the task's name; ``task_args`` its arguments (or its ``config()``).
        steps: optimization steps per run; ``tune_steps`` the horizon used for tuning.
        seeds: evaluation problem seeds; ``tune_seeds`` the tuning ones (disjoint).
        criterion: the tuning criterion.
        confidence: coverage of the reported intervals (0.95).
        results: ``label -> OptimizerResult`` in the order given.
    """

    task: str
    task_args: dict[str, Any]
    steps: int
    tune_steps: int
    seeds: list[int]
    tune_seeds: list[int]
    criterion: str
    confidence: float
    results: dict[str, OptimizerResult]

    def __getitem__(self, label: str) -> OptimizerResult:
        return self.results[label]

    @property
    def test_steps(self) -> list[int]:
        for r in self.results.values():
            if r.test is not None:
                return r.trajectories.test_steps
        return []

    def summary(self, at: int | None = None) -> dict[str, dict[str, Interval | None]]:
        """``label -> {"final", "sum", "test"}`` intervals (test ``None`` without a test split)."""
        out: dict[str, dict[str, Interval | None]] = {}
        for label, r in self.results.items():
            test = r.final_test(at)
            out[label] = {
                "final": mean_ci(r.final(at), self.confidence),
                "sum": mean_ci(r.sum_losses(at), self.confidence),
                "test": None if test is None else mean_ci(test, self.confidence),
            }
        return out

    def paired(self, a: str, b: str, metric: str = "final", at: int | None = None) -> Interval:
        """Mean over problems of ``metric(a) - metric(b)`` with its CI (negative: ``a`` lower).

        ``metric`` is ``"final"``, ``"sum"`` or ``"test"``. Problems are the same for both, so this
        paired interval is tighter than comparing the two separate intervals.
        """
        ra, rb = self.results[a], self.results[b]
        if metric == "final":
            xa, xb = ra.final(at), rb.final(at)
        elif metric == "sum":
            xa, xb = ra.sum_losses(at), rb.sum_losses(at)
        elif metric == "test":
            xa, xb = ra.final_test(at), rb.final_test(at)
            if xa is None or xb is None:
                raise ValueError(f"no test loss measured at step {at or self.steps}")
        else:
            raise ValueError(f"metric must be 'final', 'sum' or 'test', got {metric!r}")
        return paired_difference(xa, xb, self.confidence)

    def table(self, at: int | None = None, digits: int = 3) -> str:
        """A markdown table: mean final loss, mean sum of losses and mean test loss (± CI), lr.

        ``at`` reports the losses after ``at`` steps instead of ``steps`` (e.g. the training
        horizon inside a longer run).
        """
        at_ = self.steps if at is None else at
        summary = self.summary(at)
        has_test = any(s["test"] is not None for s in summary.values())
        pct = f"{round(self.confidence * 100)}%"
        head = ["optimizer", "lr", f"final loss (step {at_})", f"sum of losses (steps 0–{at_ - 1})"]
        if has_test:
            head.append(f"test loss (step {at_})")
        rows = []
        for label, r in self.results.items():
            s = summary[label]
            lr = "—" if r.lr is None else f"{r.lr:.3g}"
            if r.tuning is not None:
                lr += " (tuned" + (", grid edge!" if r.tuning.at_edge else "") + ")"
            row = [
                label,
                lr,
                format_interval(s["final"], digits),
                format_interval(s["sum"], digits),
            ]
            if has_test:
                row.append("—" if s["test"] is None else format_interval(s["test"], digits))
            rows.append(row)
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        n = len(self.seeds)
        caption = (
            f"Task `{self.task}`{_args_text(self.task_args)}: mean ± {pct} confidence half-width "
            f"(Student t) over {n} problems, the same problems for every optimizer. "
        )
        if any(r.tuning is not None for r in self.results.values()):
            tuned = next(r.tuning for r in self.results.values() if r.tuning is not None)
            assert tuned is not None
            caption += (
                f"Learning rates marked tuned: best mean {_CRITERION_TEXT[self.criterion]} over a "
                f"{len(tuned.grid)}-point log grid ({tuned.grid[0]:.2g}–{tuned.grid[-1]:.2g}) on "
                f"{len(self.tune_seeds)} separate problems of {self.tune_steps} steps."
            )
        return "\n".join(lines) + "\n\n" + caption.strip() + "\n"

    def plot(
        self,
        path: str | os.PathLike[str],
        *,
        band: str = "ci",
        metric: str = "train",
        title: str | None = None,
    ) -> Path:
        """Draw the log-scale mean loss curves with a band (``"ci"`` or ``"iqr"``) to ``path``."""
        from optizoo.compare.plots import plot_comparison

        return plot_comparison(self, path, band=band, metric=metric, title=title)

    def to_json(self, *, include_curves: bool = True) -> dict[str, Any]:
        """A JSON-safe dict: settings, per-optimizer summaries (and raw curves, for re-plotting)."""
        out: dict[str, Any] = {
            "task": self.task,
            "task_args": self.task_args,
            "steps": self.steps,
            "tune_steps": self.tune_steps,
            "seeds": self.seeds,
            "tune_seeds": self.tune_seeds,
            "criterion": self.criterion,
            "confidence": self.confidence,
            "optimizers": {},
        }
        summary = self.summary()
        for label, r in self.results.items():
            entry: dict[str, Any] = {
                "spec": r.spec,
                "lr": r.lr,
                "tuning": None if r.tuning is None else r.tuning.to_dict(),
                "final_loss": summary[label]["final"].to_dict(),  # type: ignore[union-attr]
                "sum_of_losses": summary[label]["sum"].to_dict(),  # type: ignore[union-attr]
                "test_loss": None
                if summary[label]["test"] is None
                else summary[label]["test"].to_dict(),  # type: ignore[union-attr]
                "test_steps": r.trajectories.test_steps,
                "seconds": r.trajectories.seconds,
            }
            if include_curves:
                entry["train"] = _clean(r.train)
                entry["test"] = None if r.test is None else _clean(r.test)
            out["optimizers"][label] = entry
        return out

    def save_json(self, path: str | os.PathLike[str], *, include_curves: bool = True) -> Path:
        """Write :meth:`to_json` to ``path`` atomically."""
        return write_text_atomic(
            path, json.dumps(self.to_json(include_curves=include_curves), indent=1)
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str | os.PathLike[str]) -> Comparison:
        """Rebuild a comparison saved with ``include_curves=True`` (e.g. to re-plot it)."""
        if not isinstance(data, Mapping):
            data = json.loads(Path(data).read_text())
        results = {}
        for label, e in data["optimizers"].items():
            if "train" not in e:
                raise ValueError("this JSON was saved without curves (include_curves=False)")
            traj = Trajectories(
                _unclean(e["train"]),
                None if e["test"] is None else _unclean(e["test"]),
                list(e["test_steps"]),
                float(e["seconds"]),
            )
            tuning = None if e["tuning"] is None else TuneResult.from_dict(e["tuning"])
            results[label] = OptimizerResult(label, e["spec"], e["lr"], tuning, traj)
        return cls(
            data["task"],
            dict(data["task_args"]),
            int(data["steps"]),
            int(data["tune_steps"]),
            list(data["seeds"]),
            list(data["tune_seeds"]),
            data["criterion"],
            float(data["confidence"]),
            results,
        )


_CRITERION_TEXT = {"final": "final loss", "sum": "sum of losses", "test": "final test loss"}


def _args_text(args: Mapping[str, Any]) -> str:
    if not args:
        return ""
    return " (" + ", ".join(f"{k}={v}" for k, v in args.items()) + ")"


# --------------------------------------------------------------------------- evaluation record

#: tuning criteria of a recorded comparison block, in the order cards show them
EVALUATION_CRITERIA = ("final", "sum", "test")
#: metrics of a recorded entry (``Interval.to_dict`` form)
EVALUATION_METRICS = ("final_loss", "sum_of_losses", "test_loss")
#: the recorded fields of an evaluation besides its blocks, with the types they may have
_RECORD_FIELDS: dict[str, tuple[type, ...]] = {
    "task": (str,),
    "task_args": (dict, type(None)),
    "held_out_problems": (int,),
    "steps": (int,),
    "tune_steps": (int,),
    "tune_problems": (int,),
    "seed": (int,),
    "criteria": (list,),
    "grid": (list, type(None)),
    "learned": (str, type(None)),
    "baselines": (str,),
    "seed_streams": (str,),
}
_ENTRY_KEYS = {"lr", "tuned", "grid_edge", "learned_minus_this", *EVALUATION_METRICS}


def _block_key(steps: int, criterion: str) -> str:
    return f"at_{steps}_steps_tuned_for_{criterion}"


def _parse_block_key(key: str) -> tuple[int, str] | None:
    """``(steps, criterion)`` of ``"at_<steps>_steps_tuned_for_<criterion>"``, else ``None``."""
    head, sep, criterion = key.partition("_steps_tuned_for_")
    digits = head[3:] if head.startswith("at_") else ""
    if not (sep and digits.isdigit() and digits == str(int(digits))):
        return None
    return int(digits), criterion


def _intervals(value: Any, where: str) -> dict[str, Interval]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a dict of intervals, got {type(value).__name__}")
    unknown = sorted(set(value) - set(EVALUATION_METRICS))
    if unknown:
        raise ValueError(f"{where} has unknown metrics {unknown}; expected {EVALUATION_METRICS}")
    out = {}
    for metric in EVALUATION_METRICS:
        if metric in value:
            try:
                out[metric] = Interval.from_dict(value[metric])
            except ValueError as exc:
                raise ValueError(f"{where}[{metric!r}]: {exc}") from None
    return out


@dataclass(frozen=True)
class EvaluationEntry:
    """One optimizer in a recorded comparison block.

    Attributes:
        lr: its learning rate (tuned, given, or the learned rule's own scale); ``None`` if none.
        tuned: whether ``lr`` was chosen on the tuning problems.
        metrics: ``"final_loss"``, ``"sum_of_losses"``, ``"test_loss"`` (those recorded) ->
            mean ± CI over the held-out problems, per instance.
        learned_minus_this: paired differences ``learned − this`` per metric (baselines only).
        grid_edge: the tuned lr sits at an edge of the grid (``None``: not recorded).
    """

    lr: float | None
    tuned: bool
    metrics: dict[str, Interval]
    learned_minus_this: dict[str, Interval] | None = None
    grid_edge: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"lr": self.lr, "tuned": self.tuned}
        out.update({m: iv.to_dict() for m, iv in self.metrics.items()})
        if self.grid_edge is not None:
            out["grid_edge"] = self.grid_edge
        if self.learned_minus_this is not None:
            out["learned_minus_this"] = {
                m: iv.to_dict() for m, iv in self.learned_minus_this.items()
            }
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "entry") -> EvaluationEntry:
        if not isinstance(data, Mapping):
            raise ValueError(f"{where} must be a dict, got {type(data).__name__}")
        unknown = sorted(set(data) - _ENTRY_KEYS)
        if unknown:
            raise ValueError(f"{where} has unknown keys {unknown}; expected {sorted(_ENTRY_KEYS)}")
        lr = data.get("lr")
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float))):
            raise ValueError(f"{where}['lr'] must be a number or null, got {lr!r}")
        tuned, edge = data.get("tuned", False), data.get("grid_edge")
        if not isinstance(tuned, bool) or not isinstance(edge, (bool, type(None))):
            raise ValueError(f"{where}['tuned'] and ['grid_edge'] must be true/false")
        diffs = data.get("learned_minus_this")
        return cls(
            lr=None if lr is None else float(lr),
            tuned=tuned,
            metrics=_intervals({m: data[m] for m in EVALUATION_METRICS if m in data}, where),
            learned_minus_this=None
            if diffs is None
            else _intervals(diffs, f"{where}['learned_minus_this']"),
            grid_edge=edge,
        )


@dataclass(frozen=True)
class EvaluationBlock:
    """The recorded comparison after ``steps`` steps, baselines tuned for ``criterion``.

    Attributes:
        steps: optimization steps of every run.
        criterion: ``"final"``, ``"sum"`` or ``"test"`` (see :data:`EVALUATION_CRITERIA`).
        entries: label -> :class:`EvaluationEntry`, in the recorded order.
    """

    steps: int
    criterion: str
    entries: dict[str, EvaluationEntry]

    @property
    def key(self) -> str:
        """The block's key in the stored dict: ``"at_<steps>_steps_tuned_for_<criterion>"``."""
        return _block_key(self.steps, self.criterion)


@dataclass(frozen=True)
class EvaluationRecord:
    """A comparison of a learned optimizer with baselines, as recorded in a weight file
    (``optizoo.training["evaluation"]``, written by :func:`optizoo.publish.publish.publish_rule`
    and read by the model cards).

    Attributes:
        blocks: one :class:`EvaluationBlock` per (steps, tuning criterion), in card order
            (criterion ``final``, ``sum``, ``test``, then steps).
        fields: the other recorded fields (``task``, ``task_args``, ``held_out_problems``,
            ``steps``, ``tune_steps``, ``tune_problems``, ``seed``, ``criteria``, ``grid``,
            ``learned``, ``baselines``, ``seed_streams``); all optional.

    The stored form (:meth:`to_dict`) keeps one key per block,
    ``"at_<steps>_steps_tuned_for_<criterion>"``, next to the fields; :meth:`from_dict` reads it
    back and refuses anything else with a ``ValueError`` that names the key.
    """

    blocks: tuple[EvaluationBlock, ...]
    fields: dict[str, Any]

    def __post_init__(self) -> None:
        order = {c: i for i, c in enumerate(EVALUATION_CRITERIA)}
        ordered = tuple(sorted(self.blocks, key=lambda b: (order[b.criterion], b.steps)))
        object.__setattr__(self, "blocks", ordered)

    @property
    def task(self) -> str | None:
        return self.fields.get("task")

    @property
    def learned(self) -> str | None:
        """The learned optimizer's label: ``fields["learned"]`` when recorded, else the one
        untuned entry that is not a ``torch.optim`` baseline name (older records)."""
        if isinstance(self.fields.get("learned"), str):
            return self.fields["learned"]
        from optizoo.compare.specs import BASELINES

        for block in self.blocks:
            for label, entry in block.entries.items():
                if not entry.tuned and label.split(":")[0] not in BASELINES:
                    return label
        return None

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.fields)
        out.update({b.key: {k: e.to_dict() for k, e in b.entries.items()} for b in self.blocks})
        return out

    @classmethod
    def from_dict(cls, data: Any) -> EvaluationRecord:
        """Read the stored form; ``ValueError`` for a foreign or malformed dict."""
        if not isinstance(data, Mapping):
            raise ValueError(
                f"an evaluation record is a dict (optizoo.training['evaluation']), got "
                f"{type(data).__name__}"
            )
        fields: dict[str, Any] = {}
        blocks = []
        for key, value in data.items():
            if not isinstance(key, str):
                raise ValueError(f"evaluation record keys are strings, got {key!r}")
            parsed = _parse_block_key(key)
            if parsed is not None:
                steps, criterion = parsed
                if criterion not in EVALUATION_CRITERIA or steps < 1:
                    raise ValueError(
                        f"evaluation block {key!r}: criterion must be one of "
                        f"{EVALUATION_CRITERIA} and steps >= 1"
                    )
                if not isinstance(value, Mapping) or not value:
                    raise ValueError(f"evaluation block {key!r} must be a non-empty dict")
                entries = {
                    str(label): EvaluationEntry.from_dict(entry, f"{key}[{label!r}]")
                    for label, entry in value.items()
                }
                blocks.append(EvaluationBlock(steps, criterion, entries))
            elif key in _RECORD_FIELDS:
                kinds = _RECORD_FIELDS[key]
                if not isinstance(value, kinds) or isinstance(value, bool):
                    names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
                    raise ValueError(f"evaluation field {key!r} must be {names}, got {value!r}")
                fields[key] = value
            else:
                raise ValueError(
                    f"unknown key {key!r} in an evaluation record; expected the fields "
                    f"{sorted(_RECORD_FIELDS)} and blocks 'at_<steps>_steps_tuned_for_"
                    f"<{'|'.join(EVALUATION_CRITERIA)}>'"
                )
        return cls(tuple(blocks), fields)
