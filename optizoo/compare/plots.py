"""Figures for comparisons and evaluations: log-scale mean loss curves with a band.

Drawn with matplotlib's object API on an Agg canvas (no global backend switch, no display
needed) and saved atomically. The band is either the Student-t confidence interval of the mean
(``band="ci"``) or the inter-quartile range over problems (``band="iqr"``); the legend title says
which.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from optizoo._io import atomic_write
from optizoo.compare.stats import mean_ci_along, quartiles_along

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from optizoo.compare.evaluate import EvalReport
    from optizoo.compare.records import Comparison
    from optizoo.compare.suite import SuiteReport

__all__ = [
    "band_text",
    "curve_with_band",
    "plot_comparison",
    "plot_evaluation",
    "plot_suite_summary",
    "plot_suite_task",
    "save_figure",
]

BANDS = ("ci", "iqr", "none")


def band_text(band: str, confidence: float = 0.95) -> str:
    """Legend caption for a band kind."""
    if band == "ci":
        return f"mean, band: {round(confidence * 100)}% CI of the mean"
    if band == "iqr":
        return "mean, band: inter-quartile range"
    return "mean"


def _new_figure(ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (6.4, 4.4)) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 120) -> Path:
    """Save ``fig`` to ``path`` atomically (temp file in the same folder, then ``os.replace``).

    The format follows the suffix (``.png``, ``.pdf``, ``.svg``).
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi))


def curve_with_band(
    ax: Axes,
    x: np.ndarray,
    curves: np.ndarray,
    *,
    label: str,
    band: str = "ci",
    confidence: float = 0.95,
    color: Any = None,
    **line_kwargs: Any,
) -> None:
    """Plot the mean over rows of ``curves`` ``[runs, len(x)]`` and a band around it.

    Runs that diverged hold ``inf``: the mean is not drawn where any run diverged (the label
    says how many did); the IQR band still is, since quartiles tolerate a few ``inf``.
    """
    if band not in BANDS:
        raise ValueError(f"band must be one of {BANDS}, got {band!r}")
    curves = np.asarray(curves, dtype=np.float64)
    finite_rows = np.isfinite(curves).all(axis=1)
    n_bad = int((~finite_rows).sum())
    if n_bad:
        label = f"{label} ({n_bad}/{curves.shape[0]} diverged)"
    with np.errstate(invalid="ignore", over="ignore"):
        mean, half = mean_ci_along(curves, axis=0, confidence=confidence)
    mean = np.where(np.isfinite(mean), mean, np.nan)
    (line,) = ax.plot(x, mean, label=label, color=color, **line_kwargs)
    if band == "none":
        return
    if band == "ci":
        lo, hi = mean - half, mean + half
    else:
        lo, _, hi = quartiles_along(curves, axis=0)
    lo = np.where(np.isfinite(lo), lo, np.nan)
    hi = np.where(np.isfinite(hi), hi, np.nan)
    if ax.get_yscale() == "log":
        positive = mean[np.isfinite(mean) & (mean > 0)]
        floor = positive.min() * 1e-2 if positive.size else 1e-12
        lo = np.where(lo > 0, lo, floor)  # a CI reaching below zero runs off the log axis
    ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)


def plot_comparison(
    comparison: Comparison,
    path: str | os.PathLike[str],
    *,
    band: str = "ci",
    metric: str = "train",
    title: str | None = None,
) -> Path:
    """Loss curves of every optimizer in ``comparison`` (log y), saved to ``path``.

    ``metric="train"`` draws ``f(θ_t)`` for ``t = 0..steps``; ``"test"`` the held-out loss at the
    measured test steps (needs a task with a test split).
    """
    fig = _new_figure()
    ax = fig.add_subplot()
    ax.set_yscale("log")
    for label, r in comparison.results.items():
        if metric == "train":
            x = np.arange(r.train.shape[1])
            curves = r.train
        elif metric == "test":
            if r.test is None:
                raise ValueError(f"{label}: no test loss was measured (task without a test split)")
            x = np.asarray(r.trajectories.test_steps)
            curves = r.test
        else:
            raise ValueError(f"metric must be 'train' or 'test', got {metric!r}")
        curve_with_band(ax, x, curves, label=label, band=band, confidence=comparison.confidence)
    if comparison.tune_steps != comparison.steps:
        ax.axvline(
            comparison.tune_steps,
            color="0.5",
            linestyle=":",
            linewidth=1,
            label=f"lr-tuning horizon ({comparison.tune_steps})",
        )
    ax.set_xlabel("step")
    ax.set_ylabel("test loss" if metric == "test" else "loss (per problem)")
    n = len(comparison.seeds)
    ax.set_title(title or f"{comparison.task}: {n} problems")
    ax.legend(
        title=band_text(band, comparison.confidence), fontsize="small", title_fontsize="small"
    )
    ax.grid(True, which="major", alpha=0.3)
    return save_figure(fig, path)


def plot_evaluation(
    report: EvalReport,
    path: str | os.PathLike[str],
    *,
    band: str = "ci",
    ncols: int = 3,
) -> Path:
    """One panel per evaluation task: test loss over steps, learned vs tuned Adam, log-log axes.

    Dotted vertical lines mark the multiples of the training horizon where the table reports.
    """
    tasks = list(report.results.values())
    ncols = max(1, min(ncols, len(tasks)))
    nrows = math.ceil(len(tasks) / ncols)
    fig = _new_figure(ncols, nrows, size=(4.6, 3.6))
    for k, tr in enumerate(tasks):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        ax.set_yscale("log")
        ax.set_xscale("symlog", linthresh=max(1, min(tr.steps_measured[1:] or [1])))
        x = np.asarray(tr.steps_measured)
        for label, curves in tr.curves().items():
            curve_with_band(ax, x, curves, label=label, band=band, confidence=report.confidence)
        for m in report.multiples:
            ax.axvline(m * report.horizon, color="0.5", linestyle=":", linewidth=1)
        ax.set_title(tr.name, fontsize="medium")
        ax.set_xlabel("step")
        ax.set_ylabel("test loss")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize="x-small")
    fig.suptitle(
        f"{tasks[0].label} vs tuned Adam, horizon {report.horizon} "
        f"({band_text(band, report.confidence)}, {report.seeds_count} seeds)",
        fontsize="medium",
    )
    return save_figure(fig, path)


def plot_suite_task(
    report: SuiteReport, task: str, path: str | os.PathLike[str], *, band: str = "ci"
) -> Path:
    """One architecture-suite task: test loss over steps (log-log) of the optimizer under test
    and of each baseline's configuration chosen for the longest budget; dotted lines mark the
    budgets."""
    settings = report.settings
    x = np.asarray(settings.steps_measured)
    fig = _new_figure(1, 1, size=(5.6, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.set_yscale("log")
    ax.set_xscale("symlog", linthresh=max(1, min(settings.steps_measured[1:] or [1])))
    curve_with_band(
        ax,
        x,
        report.learned[task],
        label=report.label or report.optimizer,
        band=band,
        confidence=report.confidence,
    )
    for base in settings.baselines:
        r = report.baselines.results[task][base.name]
        config = r.configs[r.chosen[-1]]
        text = ", ".join(f"{k} {v:.2g}" for k, v in config.items()) or "defaults"
        shown = base.label if not base.tuned else f"{base.label.split(' (')[0]} ({text}, tuned)"
        curve_with_band(
            ax, x, r.runs[r.chosen[-1]], label=shown, band=band, confidence=report.confidence
        )
    for budget in settings.budgets:
        ax.axvline(budget, color="0.5", linestyle=":", linewidth=1)
    description = next(t.description for t in settings.tasks if t.name == task)
    ax.set_title(f"{task}: {description}", fontsize="small")
    ax.set_xlabel("step")
    ax.set_ylabel("test loss")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(
        title=f"{band_text(band, report.confidence)}, {len(settings.seeds)} seeds",
        fontsize="x-small",
        title_fontsize="x-small",
    )
    return save_figure(fig, path)


#: verdict colours of :func:`plot_suite_summary`
_VERDICT_COLOURS = {"better": "tab:green", "worse": "tab:red"}


def plot_suite_summary(
    cells: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    baselines: Sequence[tuple[str, str]] = (
        ("adam", "tuned Adam"),
        ("adamw", "tuned AdamW"),
        ("adamw-default", "AdamW at torch defaults"),
    ),
    title: str | None = None,
    limit: float = 3.0,
) -> Path:
    """A forest plot of architecture-suite verdicts: one panel per baseline, one row per
    (task, budget) cell, the paired difference of mean test loss relative to the baseline's
    ``(optimizer − baseline) / baseline`` with its 95% interval; green where better, red where
    worse, grey where the interval covers 0. Left of 0 is better. Relative values beyond
    ``±limit`` are drawn at the edge (arrow).

    Args:
        cells: suite cells as in :meth:`optizoo.compare.suite.SuiteReport.to_json` (``task``,
            ``budget``, ``baseline``, ``baseline_loss``, ``difference``, ``verdict``): a
            report's or a weight file's ``training["architecture_suite"]["cells"]``.
        path: where to write the figure.
        baselines: ``(key, label)`` of the panels, in order; keys without cells are skipped.

    Raises:
        ValueError: no cell belongs to any of ``baselines``.
    """
    panels = [(k, lab) for k, lab in baselines if any(c.get("baseline") == k for c in cells)]
    if not panels:
        raise ValueError(f"no suite cells for the baselines {[k for k, _ in baselines]}")
    rows = list(dict.fromkeys((str(c["task"]), int(c["budget"])) for c in cells))
    fig = _new_figure(len(panels), 1, size=(3.6, 0.9 + 0.22 * len(rows)))
    for i, (key, label) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        by = {(str(c["task"]), int(c["budget"])): c for c in cells if c.get("baseline") == key}
        for y, row in enumerate(rows):
            c = by.get(row)
            if c is None:
                continue
            base = float(c["baseline_loss"]["mean"])
            d = c["difference"]
            mid, lo, hi = (float(d[k]) / base for k in ("mean", "low", "high"))
            colour = _VERDICT_COLOURS.get(str(c.get("verdict")), "0.45")
            clipped = [min(max(v, -limit), limit) for v in (mid, lo, hi)]
            ax.plot(clipped[1:], [y, y], color=colour, linewidth=1.5)
            marker = ">" if mid > limit else "<" if mid < -limit else "o"
            ax.plot([clipped[0]], [y], marker=marker, color=colour, markersize=4)
        ax.axvline(0.0, color="0.3", linewidth=0.8)
        ax.set_xlim(-1.05, limit * 1.05)
        ax.set_xticks([-1.0, 0.0, *np.arange(1.0, limit + 0.5, 1.0)])
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([f"{t} {b}" for t, b in rows] if i == 0 else [], fontsize="x-small")
        ax.xaxis.set_major_formatter(_percent_formatter())
        ax.tick_params(axis="x", labelsize="x-small")
        verdicts = [str(c.get("verdict")) for c in by.values()]
        ax.set_title(
            f"vs {label}: better {verdicts.count('better')}, worse {verdicts.count('worse')}"
            f" of {len(verdicts)}",
            fontsize="small",
        )
        ax.set_xlabel("relative difference in test loss (left: better)", fontsize="x-small")
        ax.grid(True, axis="x", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize="small")
    return save_figure(fig, path)


def _percent_formatter() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _pos: f"{v:+.0%}" if v else "0")
