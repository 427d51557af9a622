"""Binary regression benchmark of Pop-Art (van Hasselt et al. 2016, section 4.1).

Setup (paper section 4.1, as summarized in the project's reference notes): the input is a 16-bit
binary vector and the target is the integer it encodes. Targets are drawn uniformly from
0..1023, except that every 1000th sample (samples 1000, 2000, ...) is 65535. A small MLP
(16 -> 10 -> 10 -> 10 -> 10, tanh, as in the Pop-Art re-implementation the project started from)
feeds a linear output; it is trained online, one sample per step, with plain SGD for 5000
samples. Three methods:

- ``sgd``: plain SGD on the squared error of the unnormalized prediction;
- ``popart``: :class:`optizoo.PopArtHead` (ART + POP), loss against the target normalized with
  the new statistics (Algorithm 1);
- ``art``: the same, but ``update_stats(..., preserve_outputs=False)`` (ART without POP).

Metric: RMSE of the *unnormalized* predictions over the 1024 regular inputs 0..1023 (the bulk of
the target distribution; the question is how much the rare huge targets damage it), recorded
every ``eval_every`` samples.

Protocol. Every (learning rate, seed) pair is one member of an ensemble trained in lockstep
(batched matrix products; each member only sees its own loss). The learning rate of each method
(and ``beta`` for ``art`` and ``popart``) is chosen on *tuning* seeds (lowest geometric mean
RMSE over the last 1000 samples) and reported on separate *evaluation* seeds. The head holds
all members as independent tasks of one :class:`~optizoo.PopArtHead` (``task=`` ids), so the
multi-task path is exercised too; member ``m`` predicts with row ``m`` of the head. The ``sgd``
members use the same head class with its statistics never updated (``mu = 0``, ``sigma = 1``:
a plain linear layer).

Run ``python benchmarks/popart_binary.py`` (about 100 s on 2 CPU cores) to print the table
and write ``docs/figures/popart_binary.png``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from optizoo.popart import PopArtHead

METHODS = ("sgd", "art", "popart")
LABELS = {"sgd": "SGD", "art": "ART without POP", "popart": "Pop-Art"}
DEFAULT_LRS = {
    "sgd": (3e-6, 1e-5, 3e-5, 1e-4, 3e-4),
    "art": (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
    "popart": (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
}
#: statistics step sizes tried (jointly with the learning rate) for ``art`` and ``popart``
DEFAULT_BETAS = (1e-2, 3e-2, 1e-1, 3e-1)
BITS = 16
HIDDEN = 10
N_LAYERS = 4  # input layer + 3 hidden layers, all tanh


def encode(values: Tensor) -> Tensor:
    """Integers ``[...]`` -> their 16 bits ``[..., 16]`` (float, least significant first)."""
    return ((values.long().unsqueeze(-1) >> torch.arange(BITS)) & 1).float()


def make_stream(
    n_samples: int, seed: int, *, outlier_every: int = 1000, outlier: int = 65535
) -> tuple[Tensor, Tensor]:
    """One training stream: inputs ``[n, 16]`` and integer targets ``[n]`` (float)."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 1024, (n_samples,), generator=gen)
    y[outlier_every - 1 :: outlier_every] = outlier
    return encode(y), y.float()


def _init_member(seed: int) -> tuple[list[Tensor], list[Tensor], Tensor, Tensor]:
    """nn.Linear-style initial weights of one member's network, a function of its seed only."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    weights, biases = [], []
    fan_in = BITS
    for _ in range(N_LAYERS):
        bound = 1.0 / math.sqrt(fan_in)
        weights.append((torch.rand(fan_in, HIDDEN, generator=gen) * 2 - 1) * bound)
        biases.append((torch.rand(HIDDEN, generator=gen) * 2 - 1) * bound)
        fan_in = HIDDEN
    bound = 1.0 / math.sqrt(HIDDEN)
    head_w = (torch.rand(HIDDEN, generator=gen) * 2 - 1) * bound
    head_b = (torch.rand((), generator=gen) * 2 - 1) * bound
    return weights, biases, head_w, head_b


@dataclass
class Ensemble:
    """``M`` independent MLPs (stacked weights ``[M, in, out]``) and one head with M tasks."""

    weights: list[Tensor]
    biases: list[Tensor]
    head: PopArtHead
    lrs: Tensor  # [M]
    ids: Tensor = field(init=False)  # [M] task id of each member = its index

    def __post_init__(self) -> None:
        self.ids = torch.arange(len(self.lrs))

    @classmethod
    def build(cls, lrs: list[float], seeds: list[int], beta: float, debias: bool) -> Ensemble:
        members = [_init_member(s) for s in seeds]
        weights = [
            torch.stack([m[0][i] for m in members]).requires_grad_() for i in range(N_LAYERS)
        ]
        biases = [torch.stack([m[1][i] for m in members]).requires_grad_() for i in range(N_LAYERS)]
        head = PopArtHead(HIDDEN, len(seeds), beta=beta, debias=debias)
        with torch.no_grad():
            head.weight.copy_(torch.stack([m[2] for m in members]))
            head.bias.copy_(torch.stack([m[3] for m in members]))
        return cls(weights, biases, head, torch.tensor(lrs))

    def features(self, x: Tensor) -> Tensor:
        """``x [M, B, 16]`` -> features ``[M, B, 10]``."""
        h = x
        for w, b in zip(self.weights, self.biases):
            h = torch.tanh(torch.baddbmm(b.unsqueeze(1), h, w))
        return h

    def predict(self, h: Tensor, *, normalized: bool = True) -> Tensor:
        """Each member's own output: features ``[M, ..., 10]`` -> predictions ``[M, ...]``.

        Member ``m`` uses row ``m`` of the head (task ``m``). This is the diagonal of
        ``head(h)``, computed without the ``M x M`` cross terms, which would let one diverged
        member's ``inf`` features turn every member's weight gradient into ``nan`` (``0 * inf``).
        """
        w = self.head.weight.view(len(self.ids), *([1] * (h.dim() - 2)), -1)
        b = self.head.bias.view(len(self.ids), *([1] * (h.dim() - 2)))
        out = (h * w).sum(-1) + b
        if normalized:
            return out
        ids = self.ids.view(-1, *([1] * (out.dim() - 1))).expand_as(out)
        return self.head.denormalize(out, task=ids)

    def params(self) -> list[Tensor]:
        return [*self.weights, *self.biases, self.head.weight, self.head.bias]

    @torch.no_grad()
    def sgd_step(self) -> None:
        """Plain SGD with each member's own learning rate: ``p -= lr_m * grad``."""
        for p in self.params():
            p.sub_(self.lrs.view(-1, *([1] * (p.dim() - 1))) * p.grad)
            p.grad = None


def run_method(
    method: str,
    lrs: list[float],
    seeds: list[int],
    *,
    n_samples: int = 5000,
    beta: float = 3e-2,
    debias: bool = False,
    eval_every: int = 25,
) -> Tensor:
    """Train one method for every (lr, seed) pair; RMSE curves ``[len(lrs), len(seeds), T]``.

    ``T = n_samples // eval_every``; entry ``t`` is measured after ``(t + 1) * eval_every``
    samples. Diverged members read ``inf``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    member_lr = [lr for lr in lrs for _ in seeds]
    member_seed = [s for _ in lrs for s in seeds]
    ens = Ensemble.build(member_lr, member_seed, beta, debias)
    streams = [make_stream(n_samples, s) for s in seeds]
    xs = torch.stack([streams[i % len(seeds)][0] for i in range(len(member_seed))])  # [M, n, 16]
    ys = torch.stack([streams[i % len(seeds)][1] for i in range(len(member_seed))])  # [M, n]
    eval_y = torch.arange(1024).float()
    eval_x = encode(eval_y).expand(len(member_seed), -1, -1)

    curves = []
    for t in range(n_samples):
        y = ys[:, t]
        if method != "sgd":
            ens.head.update_stats(y, task=ens.ids, preserve_outputs=(method == "popart"))
            target = ens.head.normalize(y, task=ens.ids)
        else:
            target = y  # statistics never updated: mu = 0, sigma = 1, a plain linear layer
        pred = ens.predict(ens.features(xs[:, t : t + 1]).squeeze(1))
        F.mse_loss(pred, target, reduction="sum").backward()  # members' losses are independent
        ens.sgd_step()
        if (t + 1) % eval_every == 0:
            with torch.no_grad():
                f = ens.predict(ens.features(eval_x), normalized=False)
                rmse = (f - eval_y).pow(2).mean(-1).sqrt()
            curves.append(torch.nan_to_num(rmse, nan=math.inf))
    return torch.stack(curves, -1).view(len(lrs), len(seeds), -1)


def benchmark(
    *,
    n_samples: int = 5000,
    tune_seeds: tuple[int, ...] = (100, 101, 102),
    eval_seeds: tuple[int, ...] = tuple(range(10)),
    lrs: dict[str, tuple[float, ...]] | None = None,
    betas: tuple[float, ...] = DEFAULT_BETAS,
    debias: bool = False,
    eval_every: int = 25,
    verbose: bool = True,
) -> dict[str, dict]:
    """Tune each method's learning rate (and ``beta``) on ``tune_seeds``, report on ``eval_seeds``.

    The tuned values minimize the geometric mean RMSE over the last cycle (the last
    ``min(1000, n_samples)`` samples) on the tuning seeds; ``sgd`` has no ``beta``. Returns
    ``{method: {"lr", "beta", "curves" [len(eval_seeds), T], "final", "before_last_outlier",
    "last_cycle" (each [len(eval_seeds)]), "tuning" {(beta, lr): score}, "seconds"}}`` plus
    ``"steps"``: the sample count of each curve point. ``"final"`` is measured after the last
    sample, which is a 65535 when ``n_samples`` is a multiple of 1000;
    ``"before_last_outlier"`` one evaluation before the last 65535; ``"last_cycle"`` is the
    median RMSE over the last cycle.
    """
    lrs = {**DEFAULT_LRS, **(lrs or {})}
    seeds = [*tune_seeds, *eval_seeds]
    n_eval = n_samples // eval_every
    cycle = max(1, min(1000, n_samples) // eval_every)
    last_outlier = (n_samples // 1000) * 1000  # sample count at which the last outlier lands
    before = max(0, last_outlier // eval_every - 2)  # curve index of the evaluation before it
    results: dict[str, dict] = {}
    for method in METHODS:
        start = time.perf_counter()
        best_score, best = math.inf, None
        tuning: dict[tuple[float | None, float], float] = {}
        for beta in betas if method != "sgd" else (betas[0],):
            curves = run_method(
                method,
                list(lrs[method]),
                seeds,
                n_samples=n_samples,
                beta=beta,
                debias=debias,
                eval_every=eval_every,
            )
            tail = curves[:, : len(tune_seeds), -cycle:].clamp_max(1e30)
            scores = tail.log().mean(dim=(1, 2)).exp()  # [len(lrs)] geometric mean RMSE
            for i, lr in enumerate(lrs[method]):
                key = (None if method == "sgd" else beta, lr)
                tuning[key] = scores[i].item()
                if scores[i].item() < best_score:
                    best_score, best = scores[i].item(), (key, curves[i, len(tune_seeds) :])
        assert best is not None
        (beta_best, lr_best), ev = best
        results[method] = {
            "lr": lr_best,
            "beta": beta_best,
            "curves": ev,
            "final": ev[:, -1],
            "before_last_outlier": ev[:, before],
            "last_cycle": ev[:, -cycle:].median(dim=-1).values,
            "tuning": tuning,
            "seconds": time.perf_counter() - start,
        }
        if verbose:
            print(
                f"{LABELS[method]:>16}: lr {lr_best:g}, beta {beta_best} (tuned over lr "
                f"{', '.join(f'{v:g}' for v in lrs[method])}"
                + (f"; beta {', '.join(f'{v:g}' for v in betas)}" if method != "sgd" else "")
                + f"), median RMSE over the last cycle "
                f"{results[method]['last_cycle'].median().item():.4g}  "
                f"[{results[method]['seconds']:.1f} s]",
                file=sys.stderr,
            )
    results["steps"] = {"samples": [(i + 1) * eval_every for i in range(n_eval)]}
    return results


def tuning_table(results: dict[str, dict]) -> str:
    """Markdown: the tuning score (geometric mean RMSE, last cycle, tuning seeds) per setting."""
    lines = [
        "| method | β | lr: score (geometric mean RMSE over the last 1000 samples, tuning seeds) |",
        "|---|---|---|",
    ]
    for m in METHODS:
        by_beta: dict[float | None, list[str]] = {}
        for (beta, lr), score in results[m]["tuning"].items():
            by_beta.setdefault(beta, []).append(
                f"{lr:g}: " + ("diverged" if score >= 1e30 else f"{score:.3g}")
            )
        for beta, cells in by_beta.items():
            lines.append(
                f"| {LABELS[m]} | {'—' if beta is None else f'{beta:g}'} | {'; '.join(cells)} |"
            )
    return "\n".join(lines)


def summary_table(results: dict[str, dict]) -> str:
    """A markdown table: median (10th-90th percentile) RMSE over the evaluation seeds."""

    def cell(v: Tensor) -> str:
        q = torch.quantile(v.double(), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
        return f"{q[1]:.3g} ({q[0]:.3g}–{q[2]:.3g})"

    def ratio(m: str, key: str) -> str:
        return f"{(results[m][key].median() / results['sgd'][key].median()).item():.3g}"

    lines = [
        "| method | lr, β (tuned) | median RMSE, last 1000 samples | RMSE just before the last "
        "65535 | RMSE after the last sample (a 65535) | ratio to SGD (last 1000 / before / "
        "after) |",
        "|---|---|---|---|---|---|",
    ]
    for m in METHODS:
        r = results[m]
        lines.append(
            f"| {LABELS[m]} | {r['lr']:g}"
            + (f", {r['beta']:g}" if r["beta"] else "")
            + f" | {cell(r['last_cycle'])} | "
            f"{cell(r['before_last_outlier'])} | {cell(r['final'])} | "
            f"{ratio(m, 'last_cycle')} / {ratio(m, 'before_last_outlier')} / {ratio(m, 'final')} |"
        )
    return "\n".join(lines)


def plot(results: dict[str, dict], path: str | os.PathLike) -> None:
    """RMSE over time on a log scale, median and 10-90 percentile band (like the paper's Fig. 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = results["steps"]["samples"]
    fig, ax = plt.subplots(figsize=(7, 4))
    colors = {"sgd": "tab:red", "art": "tab:orange", "popart": "tab:blue"}
    for m in METHODS:
        c = results[m]["curves"].clamp_max(1e12).double()
        q = torch.quantile(c, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64), dim=0)
        beta = results[m]["beta"]
        label = f"{LABELS[m]} (lr {results[m]['lr']:g}" + (f", β {beta:g})" if beta else ")")
        ax.plot(steps, q[1], color=colors[m], label=label)
        ax.fill_between(steps, q[0], q[2], color=colors[m], alpha=0.2, linewidth=0)
    ax.set_yscale("log")
    ax.set_xlabel("samples")
    ax.set_ylabel("RMSE of unnormalized predictions (inputs 0..1023)")
    ax.set_title("Binary regression (van Hasselt et al. 2016, §4.1)")
    ax.legend()
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--eval-seeds", type=int, default=10)
    parser.add_argument(
        "--betas",
        default=",".join(f"{b:g}" for b in DEFAULT_BETAS),
        help="comma-separated statistics step sizes to tune over",
    )
    parser.add_argument("--debias", action="store_true")
    parser.add_argument("--figure", default="docs/figures/popart_binary.png")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = benchmark(
        n_samples=args.samples,
        eval_seeds=tuple(range(args.eval_seeds)),
        betas=tuple(float(b) for b in args.betas.split(",")),
        debias=args.debias,
    )
    print(summary_table(results))
    print()
    print(tuning_table(results))
    plot(results, args.figure)
    print(f"figure written to {args.figure}", file=sys.stderr)


if __name__ == "__main__":
    main()
