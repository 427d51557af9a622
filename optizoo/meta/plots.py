"""The learning-curve figure of a meta-training run, drawn from its metrics rows."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from optizoo._io import atomic_write

__all__ = ["learning_curve"]


def learning_curve(
    rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], *, title: str = ""
) -> Path:
    """Plot a metrics log: training meta-loss per meta-step and the held-out objective (PNG).

    ``rows`` are the trainer's metrics rows (``kind`` ``"train"`` and ``"eval"``). The y axis is
    logarithmic when every plotted value is positive. Written atomically with the Agg backend.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    train = [(r["meta_step"], r["meta_loss"]) for r in rows if r.get("kind") == "train"]
    evals = [(r["meta_step"], r["objective"]) for r in rows if r.get("kind") == "eval"]
    fig = Figure(figsize=(7, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    values: list[float] = []
    if train:
        x, y = np.array(train, dtype=float).T
        ax.plot(
            x, y, color="tab:blue", alpha=0.25, lw=0.8, label="training meta-loss (one truncation)"
        )
        if y.size >= 10:
            k = max(2, y.size // 50)
            finite = np.where(np.isfinite(y), y, np.nan)
            smooth = np.convolve(np.nan_to_num(finite, nan=0.0), np.ones(k) / k, mode="valid")
            ax.plot(x[k - 1 :], smooth, color="tab:blue", lw=1.5, label=f"training (mean of {k})")
        values += [v for v in y.tolist() if math.isfinite(v)]
    if evals:
        x, y = np.array(evals, dtype=float).T
        ax.plot(x, y, "o-", color="tab:orange", ms=3, label="held-out objective (full rollout)")
        values += [v for v in y.tolist() if math.isfinite(v)]
    if values and min(values) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("meta-step")
    ax.set_ylabel("Σ_t w_t f(θ_t) per instance")
    if title:
        ax.set_title(title)
    if train or evals:
        ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.11, right=0.97, top=0.91, bottom=0.12)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
