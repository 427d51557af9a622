"""The CUDA check, in one short run (a few minutes on one GPU): timings and a meta-training run,
written to ``--out`` (markdown) and ``--json``.

1. Step time of the **paper LSTM** (``LSTMOptimizer(weights=None)``, 2×20) and of the **default**
   optimizer (``LSTMOptimizer()``, the shipped weights) at 1e6, 1e7 and 1e8 parameters against
   ``torch.optim.AdamW(fused=True)`` on the same GPU, medians of CUDA-event-timed steps,
   interleaved; each timed step runs under ``torch.cuda.set_sync_debug_mode("error")`` (a host
   synchronisation inside ``step`` raises). The paper LSTM is also timed with the unfused cell.
   ``--compile`` adds ``LSTMOptimizer(compile=True)`` (inductor → Triton) at 1e6 and 1e7.
2. The GPU's dense fp32 matmul rate (8192² GEMM, TF32 off) in the same run, and the fraction
   the LSTM step reaches.
3. A short meta-training run on the GPU: the quadratic (seed-003 workload) and the digits MLP
   with 8 batched problems; problem-steps/s and the meta-loss before/after.

Run ``benchmarks/cuda_check.sh`` (it also runs the CUDA tests).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

import optizoo.rules.lstm as lstm_module
from optizoo.optim import LSTMOptimizer
from optizoo.rules.fused_lstm import lstm_layer, lstm_layer_reference


def make_params(n: int, tensors: int = 64) -> list[torch.nn.Parameter]:
    """``n`` coordinates in ``tensors`` CUDA tensors of log-uniform sizes (seeded)."""
    g = torch.Generator().manual_seed(0)
    w = torch.exp(torch.empty(tensors).uniform_(0.0, 4.0, generator=g))
    sizes = (w / w.sum() * n).long().clamp(min=1)
    sizes[-1] += n - int(sizes.sum())
    return [torch.nn.Parameter(torch.randn(int(s), device="cuda")) for s in sizes]


def set_grads(params: list[torch.nn.Parameter]) -> None:
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3


#: optimizers whose step synchronised with the host (set_sync_debug_mode("error") raised)
SYNCED: set[str] = set()


def timed_step(name: str, opt: torch.optim.Optimizer, cell=lstm_layer) -> float:
    """Seconds of one ``opt.step()`` (CUDA events), under ``set_sync_debug_mode("error")``; a
    step that synchronises is recorded in :data:`SYNCED` and re-timed without the check."""
    lstm_module.lstm_layer = cell
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    mode = "default" if name in SYNCED else "error"
    torch.cuda.set_sync_debug_mode(mode)
    try:
        start.record()
        opt.step()
        end.record()
    except RuntimeError as exc:
        if mode != "error":
            raise
        SYNCED.add(name)
        print(f"HOST SYNC inside {name}.step(): {exc}", file=sys.stderr, flush=True)
        torch.cuda.set_sync_debug_mode("default")
        return timed_step(name, opt, cell)
    finally:
        torch.cuda.set_sync_debug_mode("default")
        lstm_module.lstm_layer = lstm_layer
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def matmul_tflops(size: int = 8192) -> float:
    torch.backends.cuda.matmul.allow_tf32 = False
    a, b = torch.randn(size, size, device="cuda"), torch.randn(size, size, device="cuda")
    a @ b
    torch.cuda.synchronize()
    times = []
    for _ in range(5):
        t = time.perf_counter()
        a @ b
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return 2 * size**3 / min(times) / 1e12


def step_rows(sizes: list[int], repeats: int, compile: bool) -> list[dict]:
    rows = []
    for n in sizes:
        params = make_params(n)
        set_grads(params)
        paper = LSTMOptimizer(params, weights=None)
        opts: dict[str, tuple[torch.optim.Optimizer, object]] = {
            "paper": (paper, lstm_layer),
            "paper_unfused": (paper, lstm_layer_reference),  # same state: memory for 1e8
            "default": (LSTMOptimizer(params), lstm_layer),
            "adamw_fused": (torch.optim.AdamW(params, lr=1e-3, fused=True), lstm_layer),
        }
        if compile and n <= 10**7:
            opts["paper_compiled"] = (LSTMOptimizer(params, weights=None, compile=True), lstm_layer)
        for opt, cell in opts.values():  # state, weight copies, compilation: outside the timing
            lstm_module.lstm_layer = cell
            opt.step()
            opt.step()
            lstm_module.lstm_layer = lstm_layer
        times: dict[str, list[float]] = {k: [] for k in opts}
        for _ in range(repeats):
            for name, (opt, cell) in opts.items():
                times[name].append(timed_step(name, opt, cell))
        med = {k: statistics.median(v) for k, v in times.items()}
        flops = paper.rule.flops_per_coordinate() * n
        row = {"n": n, **{f"{k}_ms": v * 1e3 for k, v in med.items()}}
        row["paper_tflops"] = flops / med["paper"] / 1e12
        for k in med:
            row[f"{k}_vs_adamw"] = med[k] / med["adamw_fused"]
        row["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
        row["host_sync_in_step"] = sorted(SYNCED)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        del opts, paper, params
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return rows


def meta_rows(meta_steps: int) -> list[dict]:
    from optizoo.meta import MetaTrainer
    from optizoo.rules import LSTMRule

    out = []
    for task, args, problems, count in (
        ("quadratic", {"dim": 10, "batch": 128}, 1, 128),
        ("mlp", {}, 8, 8),
    ):
        torch.manual_seed(0)
        trainer = MetaTrainer(
            LSTMRule(), task, task_args=args, unroll=20, horizon=100, problems_per_step=problems,
            eval_every=0, checkpoint_every=0, verbose=False, device="cuda",
        )  # fmt: skip
        first = trainer.step()["meta_loss"]
        torch.cuda.synchronize()
        start = time.perf_counter()
        rows = [trainer.step() for _ in range(meta_steps)]
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        out.append(
            {
                "task": task,
                "problems_per_step": problems,
                "problem_steps_per_s": meta_steps * 20 * count / seconds,
                "meta_loss_first": first,
                "meta_loss_last": rows[-1]["meta_loss"],
                "meta_steps": meta_steps + 1,
            }
        )
        print(json.dumps(out[-1]), file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", type=float, default=[1e6, 1e7, 1e8])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--meta-steps", type=int, default=20)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--out", default="cuda_check.md")
    ap.add_argument("--json", default="cuda_check.json")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    tflops = matmul_tflops()
    steps = step_rows([int(s) for s in args.sizes], args.repeats, args.compile)
    meta = meta_rows(args.meta_steps)
    name = torch.cuda.get_device_name()
    lines = [
        f"GPU: {name}, torch {torch.__version__}; dense fp32 matmul (TF32 off): {tflops:.1f} TFLOP/s",
        "",
        "| params | paper LSTM ms | unfused ms | default ms | AdamW(fused) ms | paper/AdamW "
        "| default/AdamW | paper fused/unfused | paper TFLOP/s | of matmul | peak GB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in steps:
        lines.append(
            f"| {r['n']:.0e} | {r['paper_ms']:.2f} | {r['paper_unfused_ms']:.2f} | "
            f"{r['default_ms']:.2f} | {r['adamw_fused_ms']:.3f} | {r['paper_vs_adamw']:.0f}× | "
            f"{r['default_vs_adamw']:.0f}× | {r['paper_unfused_ms'] / r['paper_ms']:.2f}× | "
            f"{r['paper_tflops']:.2f} | {r['paper_tflops'] / tflops:.0%} | {r['peak_memory_gb']:.1f} |"
        )
    if any("paper_compiled_ms" in r for r in steps):
        lines.append("")
        lines += [
            f"compiled paper LSTM at {r['n']:.0e}: {r['paper_compiled_ms']:.2f} ms "
            f"({r['paper_compiled_vs_adamw']:.0f}× AdamW)"
            for r in steps
            if "paper_compiled_ms" in r
        ]
    lines += [
        "",
        "| meta-training on the GPU | problems/step | problem-steps/s | meta-loss first → last |",
    ]
    lines.append("|---|---|---|---|")
    for r in meta:
        lines.append(
            f"| {r['task']} | {r['problems_per_step']} | {r['problem_steps_per_s']:,.0f} | "
            f"{r['meta_loss_first']:.4g} → {r['meta_loss_last']:.4g} ({r['meta_steps']} meta-steps) |"
        )
    lines += ["", f"host synchronisation inside step(): {sorted(SYNCED) or 'none'}"]
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.out, "w") as f:
        f.write(text)
    with open(args.json, "w") as f:
        json.dump({"gpu": name, "matmul_tflops": tflops, "steps": steps, "meta": meta}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
