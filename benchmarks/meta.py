"""Meta-training throughput and memory: optizoo's MetaTrainer against a reference-style loop.

Workload (Andrychowicz et al. 2016): the quadratic task, 128 problems ``||Wθ - y||²``
(``W`` 10×10) per batch, unroll 20, horizon 100, Adam meta-optimizer. The unit is the
**problem-step**: one of the 128 problems advanced by one optimizer step inside meta-training.

* ours: ``MetaTrainer.step()`` — the coordinate-wise ``LSTMRule`` (2×20, log-and-sign inputs) over
  all 1280 coordinates as one batch, optimizee gradients via ``autograd.grad`` on a flat vector,
  meta-gradient per truncation, graph cut at every truncation boundary.
* reference: a straightforward copy of the learning-to-learn re-implementation's loop, written here: an
  ``nn.LSTM(10, 20, 2)`` + ``Linear(20, 10)`` over each problem's whole 10-dim gradient vector
  (not coordinate-wise), per-step ``loss.backward(retain_graph=True)`` to get the optimizee
  gradient, per-step losses kept (with their graphs) for the whole horizon, meta-loss
  ``Σ f`` per truncation backpropagated with ``retain_graph=True``. Unlike the learning-to-learn re-implementation the optimizee
  parameters carry over from one truncation to the next (the learning-to-learn re-implementation restarts every truncation from
  θ0, a bug), and the gradient fed to the LSTM is cloned (modern autograd accumulates later
  backward passes into ``x.grad`` in place). Both run in the same process, interleaved, with the
  same thread count.

Memory: each (implementation, horizon) runs one episode in a fresh subprocess, which reports the
peak of the bytes held by the autograd graph (saved-tensor hooks; deterministic) and the growth of
the process's peak resident set.

Side by side, in the same process: ours with the **fused** LSTM cell (the default: hand-written
backward, ``optizoo.rules.fused_lstm``) and with the **unfused** composite cell (eager autograd,
``lstm_layer_reference``); and, on the digits MLP and the conv task (``problems_per_step``
problems per meta-step), the **batched** problems (one vmapped loss, the default) against the
per-problem loop.

The shipped default's recipe (``configs/recipes/lstm-hierarchical.json``, its stage 0: the
``HierarchicalRule`` on the 11-network ``mix`` task, 4 problems per meta-step, 30-step
truncations, first order; no evaluation or checkpoint): meta-steps/s of the current code against
the **pre-change** path of issue 16 (:func:`pre_change_path`: the per-tensor combination as a
loop of autograd ops, ``optizoo.rules.combine.combine_reference``, and the shape-only per-tensor
constants rebuilt every call), and against the opt-in ``reuse_gradients=True`` (first-order
meta-gradients from the optimizee gradients already computed: the same to float rounding, not bit
for bit); three trainers in one process, interleaved; current and pre-change train the same
weights bit for bit.

    python benchmarks/meta.py                 # table on stdout
    python benchmarks/meta.py --markdown      # the table for docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

import optizoo.rules.hierarchical as hierarchical_module
import optizoo.rules.lstm as lstm_module
from optizoo.meta.memory import GraphMeter
from optizoo.rules.combine import combine_reference
from optizoo.rules.fused_lstm import lstm_layer, lstm_layer_reference
from optizoo.rules.segments import Segments

unroll_module = sys.modules["optizoo.meta.unroll"]  # the package re-exports the function

PROBLEMS, DIM, UNROLL = 128, 10, 20


# ------------------------------------------------------------------ the reference-style reference


class ReferenceLSTM(nn.Module):
    """The PyTorch re-implementation of Andrychowicz et al. (2016)'s optimizer: one LSTM step over the whole 10-dim gradient of each problem."""

    def __init__(self, dim: int = DIM, hidden: int = 20, layers: int = 2) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, hidden, layers)
        self.linear = nn.Linear(hidden, dim)

    def forward(self, grad: torch.Tensor, state):
        out, state = self.lstm(grad.unsqueeze(0), state)
        return self.linear(out).squeeze(0), state


def _f(W: torch.Tensor, Y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The PyTorch re-implementation of Andrychowicz et al. (2016)'s quadratic: mean over the 128 problems of ||W x - y||²."""
    return ((torch.matmul(W, x.unsqueeze(-1)).squeeze(-1) - Y) ** 2).sum(dim=1).mean(dim=0)


class Reference:
    """The PyTorch re-implementation of Andrychowicz et al. (2016)'s meta-training loop (see the module docstring for the two fixes)."""

    def __init__(self, meta_lr: float = 3e-3) -> None:
        torch.manual_seed(0)
        self.net = ReferenceLSTM()
        self.opt = torch.optim.Adam(self.net.parameters(), lr=meta_lr)
        self.gen = torch.Generator().manual_seed(0)

    def episode(self, horizon: int) -> int:
        """One batch of 128 problems trained for ``horizon`` steps; returns problem-steps."""
        W = torch.randn(PROBLEMS, DIM, DIM, generator=self.gen)
        Y = torch.randn(PROBLEMS, DIM, generator=self.gen)
        x = torch.zeros(PROBLEMS, DIM, requires_grad=True)
        state = None
        losses = []  # the learning-to-learn re-implementation keeps every loss, graph included, in Learner.losses
        for _ in range(horizon // UNROLL):
            x = x.detach().requires_grad_(True)
            global_loss = 0
            for _ in range(UNROLL):
                loss = _f(W, Y, x)
                global_loss = global_loss + loss
                losses.append(loss)
                loss.backward(retain_graph=True)
                update, state = self.net(x.grad.clone(), state)
                x = x + update
                x.retain_grad()
            self.opt.zero_grad()
            global_loss.backward(retain_graph=True)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
            self.opt.step()
            state = (state[0].detach(), state[1].detach())
        return horizon * PROBLEMS


class Ours:
    """optizoo's MetaTrainer on the same workload (``cell``: ``"fused"`` or ``"unfused"``)."""

    def __init__(self, horizon: int, cell: str = "fused") -> None:
        self.cell = lstm_layer if cell == "fused" else lstm_layer_reference
        from optizoo.meta import MetaTrainer
        from optizoo.rules import LSTMRule

        torch.manual_seed(0)
        self.trainer = MetaTrainer(
            LSTMRule(), "quadratic", task_args={"dim": DIM, "batch": PROBLEMS}, unroll=UNROLL,
            horizon=horizon, meta_lr=3e-3, clip=1.0, eval_every=0, checkpoint_every=0,
            verbose=False,
        )  # fmt: skip

    def episode(self, horizon: int) -> int:
        lstm_module.lstm_layer = self.cell
        try:
            for _ in range(horizon // UNROLL):
                self.trainer.step()
        finally:
            lstm_module.lstm_layer = lstm_layer
        return horizon * PROBLEMS


class TaskRun:
    """MetaTrainer on a task with several problems per meta-step, batched or looped."""

    def __init__(self, task: str, problems: int, unroll: int, batched: bool) -> None:
        from optizoo.meta import MetaTrainer
        from optizoo.rules import LSTMRule

        torch.manual_seed(0)
        self.batched = batched
        self.problems, self.unroll = problems, unroll
        self.trainer = MetaTrainer(
            LSTMRule(), task, unroll=unroll, horizon=10 * unroll, problems_per_step=problems,
            eval_every=0, checkpoint_every=0, verbose=False,
        )  # fmt: skip

    def meta_step(self) -> int:
        real = unroll_module.stacked_loss
        if not self.batched:
            unroll_module.stacked_loss = lambda *args: None
        try:
            self.trainer.step()
        finally:
            unroll_module.stacked_loss = real
        return self.problems * self.unroll


def task_throughput(task: str, problems: int, unroll: int, repeats: int) -> dict[str, list[float]]:
    """Problem-steps/s of batched and looped problems, interleaved, per repeat."""
    runs = {
        "batched": TaskRun(task, problems, unroll, True),
        "loop": TaskRun(task, problems, unroll, False),
    }
    for r in runs.values():
        r.meta_step()  # warm-up
    out: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for name, r in runs.items():
            start = time.perf_counter()
            steps = r.meta_step()
            out[name].append(steps / (time.perf_counter() - start))
    return out


# ------------------------------------------------------------------ the default's recipe

RECIPE = "lstm-hierarchical"


def _rebuild(self: Segments, key: object, build: Callable[[], torch.Tensor]) -> torch.Tensor:
    """:meth:`Segments.memo` without the cache (the pre-change path)."""
    return build()


@contextlib.contextmanager
def pre_change_path():
    """Run the hierarchical rule as before issue 16's meta-training changes: the per-tensor
    combination under autograd as a loop over tensors (``combine_reference``) and no
    :meth:`Segments.memo` cache (shape-only constants rebuilt each call). Same values."""
    combine, memo = hierarchical_module.segment_combine, Segments.memo
    hierarchical_module.segment_combine = combine_reference
    Segments.memo = _rebuild  # type: ignore[method-assign]
    try:
        yield
    finally:
        hierarchical_module.segment_combine = combine
        Segments.memo = memo  # type: ignore[method-assign]


class RecipeRun:
    """A ``MetaTrainer`` on stage 0 of a shipped recipe (no evaluation, no checkpoint), on the
    current code path or (``pre_change=True``) on :func:`pre_change_path`."""

    def __init__(self, pre_change: bool, name: str = RECIPE, **overrides: object) -> None:
        from optizoo.meta import MetaTrainer
        from optizoo.meta.recipe import load_recipe

        recipe = load_recipe(name)
        config = dataclasses.replace(
            recipe.stage_config(0), eval_every=0, checkpoint_every=0, **overrides
        )
        self.pre_change = pre_change
        self.trainer = MetaTrainer(recipe.build_rule(), config.task, config=config, verbose=False)

    def meta_steps(self, n: int) -> float:
        """Run ``n`` meta-steps; their meta-steps/s."""
        path = pre_change_path() if self.pre_change else contextlib.nullcontext()
        with path:
            start = time.perf_counter()
            for _ in range(n):
                self.trainer.step()
            return n / (time.perf_counter() - start)


def recipe_throughput(repeats: int, steps: int) -> dict[str, list[float]]:
    """Meta-steps/s on the default's recipe of the current path, the pre-change path and the
    opt-in ``reuse_gradients=True`` (the same meta-gradient to float rounding, not bit for bit),
    interleaved (all see the same episodes in the same order), per repeat."""
    runs = {
        "current": RecipeRun(False),
        "pre-change": RecipeRun(True),
        "reuse_gradients": RecipeRun(False, reuse_gradients=True),
    }
    for r in runs.values():
        r.meta_steps(1)  # warm-up
    out: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for name, r in runs.items():
            out[name].append(r.meta_steps(steps))
    return out


# ------------------------------------------------------------------ memory meter


def _status_bytes(field: str) -> int:
    """A memory field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in bytes (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> None:
    """Reset the peak-RSS mark to the current RSS (Linux ``clear_refs`` 5), where permitted.

    ``getrusage``'s ``ru_maxrss`` cannot be used: it survives ``fork``/``exec`` and so reports
    the parent's peak when that is larger.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def child(impl: str, horizon: int) -> dict[str, float]:
    """One episode of ``impl`` at ``horizon`` (run in a fresh process); memory and timing."""
    runner = Ours(horizon) if impl == "ours" else Reference()
    runner.episode(2 * UNROLL)  # warm-up allocations
    base = _status_bytes("VmRSS")
    _reset_peak_rss()
    meter = GraphMeter()
    with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
        start = time.perf_counter()
        steps = runner.episode(horizon)
        seconds = time.perf_counter() - start
    peak_rss = _status_bytes("VmHWM")
    return {
        "graph_peak_mb": meter.peak / 2**20,
        "rss_growth_mb": max(0, peak_rss - base) / 2**20,
        "seconds": seconds,  # slowed by the hooks: throughput is timed without them
        "problem_steps": steps,
    }


def memory_table(horizons: list[int], threads: int) -> dict[tuple[str, int], dict[str, float]]:
    out = {}
    for impl in ("ours", "reference"):
        for h in horizons:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                impl,
                "--horizon",
                str(h),
                "--threads",
                str(threads),
            ]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            out[(impl, h)] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


# ------------------------------------------------------------------ throughput


def throughput(repeats: int, episodes: int, horizon: int) -> dict[str, list[float]]:
    """Interleaved timing of both implementations in this process; problem-steps/s per repeat."""
    runners = {"ours": Ours(horizon), "unfused": Ours(horizon, "unfused"), "reference": Reference()}
    for runner in runners.values():
        runner.episode(horizon)  # warm-up
    result: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, runner in runners.items():
            start = time.perf_counter()
            steps = sum(runner.episode(horizon) for _ in range(episodes))
            result[name].append(steps / (time.perf_counter() - start))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--episodes", type=int, default=2, help="episodes (horizon 100) per round")
    parser.add_argument(
        "--horizons", type=int, nargs="+", default=[100, 1000], help="memory horizons"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both (default 1)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument(
        "--task-problems", type=int, default=8, help="problems per meta-step on mlp/conv"
    )
    parser.add_argument("--task-unroll", type=int, default=5, help="unroll on mlp/conv")
    parser.add_argument("--task-repeats", type=int, default=3, help="rounds on mlp/conv (0: skip)")
    parser.add_argument(
        "--recipe-repeats", type=int, default=3, help=f"rounds on the {RECIPE} recipe (0: skip)"
    )
    parser.add_argument(
        "--recipe-steps", type=int, default=10, help="meta-steps per round on the recipe"
    )
    parser.add_argument("--child", choices=["ours", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--horizon", type=int, default=100, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args.child, args.horizon)))
        return 0

    tp = throughput(args.repeats, args.episodes, 100)
    ratios = [o / r for o, r in zip(tp["ours"], tp["reference"])]
    unfused_ratios = [o / r for o, r in zip(tp["unfused"], tp["reference"])]
    fused_gain = [o / u for o, u in zip(tp["ours"], tp["unfused"])]
    tasks_tp = {
        t: task_throughput(t, args.task_problems, args.task_unroll, args.task_repeats)
        for t in (("mlp", "conv") if args.task_repeats else ())
    }
    recipe_tp = (
        recipe_throughput(args.recipe_repeats, args.recipe_steps) if args.recipe_repeats else None
    )
    h0, h1 = args.horizons[0], args.horizons[-1]
    tp_long = throughput(max(1, args.repeats // 2), 1, h1) if h1 != 100 else None
    mem = memory_table(args.horizons, args.threads)
    med = {k: statistics.median(v) for k, v in tp.items()}
    rows = [
        (
            f"problem-steps/s, horizon 100 (median of {args.repeats})",
            f"{med['ours']:,.0f}",
            f"{med['reference']:,.0f}",
            f"{statistics.median(ratios):.2f}× (range {min(ratios):.2f}–{max(ratios):.2f})",
        ),
        (
            f"problem-steps/s, horizon 100, unfused cell (median of {args.repeats})",
            f"{med['unfused']:,.0f}",
            f"{med['reference']:,.0f}",
            f"{statistics.median(unfused_ratios):.2f}×; fused/unfused "
            f"{statistics.median(fused_gain):.2f}× (range {min(fused_gain):.2f}–{max(fused_gain):.2f})",
        ),
    ]
    for t, res in tasks_tp.items():
        gain = [b / lp for b, lp in zip(res["batched"], res["loop"])]
        rows.append(
            (
                f"{t}: problem-steps/s, {args.task_problems} problems batched / looped "
                f"(median of {args.task_repeats})",
                f"{statistics.median(res['batched']):,.0f} / {statistics.median(res['loop']):,.0f}",
                "",
                f"batched/looped {statistics.median(gain):.2f}× (range {min(gain):.2f}–{max(gain):.2f})",
            )
        )
    if recipe_tp is not None:
        cur, pre = recipe_tp["current"], recipe_tp["pre-change"]
        reuse = recipe_tp["reuse_gradients"]
        gain = [c / p for c, p in zip(cur, pre)]
        reuse_gain = [r / p for r, p in zip(reuse, pre)]
        rows.append(
            (
                f"{RECIPE} recipe (mix, 4 problems, unroll 30): meta-steps/s current / "
                f"pre-change path / reuse_gradients, {args.recipe_steps} per round (median of "
                f"{args.recipe_repeats})",
                f"{statistics.median(cur):.2f} / {statistics.median(pre):.2f} / "
                f"{statistics.median(reuse):.2f}",
                "",
                f"current/pre-change {statistics.median(gain):.2f}× (range {min(gain):.2f}–"
                f"{max(gain):.2f}); reuse_gradients/pre-change "
                f"{statistics.median(reuse_gain):.2f}× (range {min(reuse_gain):.2f}–"
                f"{max(reuse_gain):.2f})",
            )
        )
    if tp_long is not None:
        o, r = statistics.median(tp_long["ours"]), statistics.median(tp_long["reference"])
        n = len(tp_long["ours"])
        rows.append(
            (
                f"problem-steps/s, horizon {h1} (median of {n})",
                f"{o:,.0f}",
                f"{r:,.0f}",
                f"{o / r:.2f}×",
            )
        )
    for key, label in (
        ("graph_peak_mb", "autograd graph peak, MB"),
        ("rss_growth_mb", "peak RSS growth, MB"),
    ):
        for h in args.horizons:
            rows.append(
                (
                    f"{label}, horizon {h}",
                    f"{mem[('ours', h)][key]:.1f}",
                    f"{mem[('reference', h)][key]:.1f}",
                    "",
                )
            )
        o = mem[("ours", h1)][key] / max(mem[("ours", h0)][key], 1e-9)
        r = mem[("reference", h1)][key] / max(mem[("reference", h0)][key], 1e-9)
        rows.append((f"{label}: horizon {h1} / horizon {h0}", f"{o:.2f}×", f"{r:.2f}×", ""))
    header = ("measure", "optizoo MetaTrainer", "reference-style loop", "ours / reference")
    info = (
        f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} CPU(s); "
        f"quadratic 128×(10×10), unroll {UNROLL}; per-round ratios: "
        + ", ".join(f"{x:.2f}" for x in ratios)
    )
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
        print(f"\n{info}")
    else:
        width = max(len(r[0]) for r in rows)
        print(f"{header[0]:<{width}}  {header[1]:>20}  {header[2]:>20}  {header[3]}")
        for row in rows:
            print(f"{row[0]:<{width}}  {row[1]:>20}  {row[2]:>20}  {row[3]}")
        print(info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
