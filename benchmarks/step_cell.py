"""LSTM cell benchmark: the fused, unfused (and compiled) LSTM cell side by side, vs Adam.

(``benchmarks/step.py`` compares every rule, the new default included, against Adam; its rules
``lstm`` and ``lstm-unfused`` are these fused and unfused cells on model-shaped parameters. Both
scripts share its helpers: the interleaved timing, the cell swap, the temporaries subprocess.)

For 1e4, 1e5 and 1e6 parameters spread over many tensors (log-uniform sizes, like a real model)
it reports, per size:

- median time per ``step()`` of each optimizer and their ratio (same process, interleaved runs,
  so machine noise hits all alike): the LSTM with the **fused** cell (the default,
  ``optizoo.rules.fused_lstm.lstm_layer``), with the **unfused** composite cell
  (``lstm_layer_reference``, the eager cell before the fused one), optionally **compiled**
  (``--compile``: ``LSTMOptimizer(compile=True)``, inductor), and Adam;
- the time of the rule's matrix products alone (the same GEMMs, chunk by chunk, nothing else):
  the arithmetic limit of the rule at these skinny shapes;
- the LSTM's achieved GFLOP/s (``LSTMRule.flops_per_coordinate() * n / t``) against the machine's
  own dense fp32 matmul GFLOP/s measured in the same run (2048x2048 GEMM), as a fraction;
- optimizer-state bytes per parameter;
- the peak temporary memory of a step (chunking overhead) relative to the state size, measured
  as the growth of the process's peak RSS during steps, in a fresh subprocess per size.

Usage::

    python benchmarks/step_cell.py            # all sizes, markdown table on stdout
    python benchmarks/step_cell.py --sizes 1e4 1e5 --max-chunk 16384 --json out.json
    python benchmarks/step_cell.py --rule-config '{"parameterization": "nominal", "cell": "mlp"}'

``--rule-config`` measures ``LearnedOptimizer(rule=LSTMRule(**config))`` (an option of the LSTM
rule, random weights) in place of the default ``LSTMOptimizer``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

# the sibling benchmark (run as ``python benchmarks/step_cell.py``: benchmarks/ is on sys.path)
from step import interleaved, matmul_gflops, set_grads, state_bytes, temporaries, with_cell

from optizoo.optim import LSTMOptimizer

#: LSTMRule options to measure instead of the default rule (set by --rule-config)
RULE_CONFIG: dict | None = None


def make_learned(params: list[torch.nn.Parameter], **kwargs) -> torch.optim.Optimizer:
    """The optimizer under test: the default LSTMOptimizer, or the --rule-config option."""
    if RULE_CONFIG is None:
        return LSTMOptimizer(params, weights=None, **kwargs)
    from optizoo.optim import LearnedOptimizer
    from optizoo.rules import LSTMRule

    return LearnedOptimizer(params, rule=LSTMRule(**RULE_CONFIG), **kwargs)


def make_params(n: int, seed: int = 0) -> list[torch.nn.Parameter]:
    """``n`` coordinates split into tensors of log-uniform sizes between 64 and 65536."""
    g = torch.Generator().manual_seed(seed)
    sizes, total = [], 0
    while total < n:
        size = int(torch.exp(torch.empty(1).uniform_(4.2, 11.1, generator=g)).item())
        size = min(size, n - total)
        sizes.append(size)
        total += size
    return [torch.nn.Parameter(torch.randn(s, generator=g)) for s in sizes]


def gemm_time(rule: torch.nn.Module, n: int, chunk: int) -> float:
    """Seconds for the rule's matrix products alone on ``n`` coordinates in chunks: per layer the
    gates' ``addmm`` on ``[chunk, k+H]``, then the head's (no cat, no nonlinearity, no state)."""
    k, h = rule.in_features, rule.hidden_size
    ws = [w.detach() for w in rule.weights]
    bs = [b.detach() for b in rule.biases]
    head_w, head_b = rule.head_weight.detach(), rule.head_bias.detach()
    inputs = [torch.randn(min(chunk, n), (k if i == 0 else h) + h) for i in range(len(ws))]
    top = torch.randn(min(chunk, n), h)

    def run() -> None:
        for lo in range(0, n, chunk):
            m = min(chunk, n - lo)
            for w, b, x in zip(ws, bs, inputs):
                torch.addmm(b, x[:m], w.t())
            torch.addmm(head_b, top[:m], head_w.t())

    run()
    times = []
    for _ in range(5):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(n: int, repeats: int, max_chunk: int | None, compile: bool = False) -> dict[str, float]:
    params = make_params(n)
    set_grads(params)
    kwargs = {} if max_chunk is None else {"max_chunk": max_chunk}
    variants = ["fused", "unfused"] + (["compiled"] if compile else [])
    opts: dict[str, torch.optim.Optimizer] = {
        v: make_learned(params, **kwargs, compile=v == "compiled") for v in variants
    }
    with_cell(opts["unfused"], "unfused")  # the others run the fused cell (the default)
    opts["adam"] = torch.optim.Adam(params, lr=1e-3, foreach=True)
    med, first = interleaved(opts, repeats)  # the first steps create state (and compile)
    compile_s = first.get("compiled", 0.0)
    rule = opts["fused"].rule
    flops = rule.flops_per_coordinate() * n
    chunk = max_chunk or optim_chunk()
    gemm_s = gemm_time(rule, n, chunk) if hasattr(rule, "weights") else float("nan")
    out = {
        "n": n,
        "tensors": len(params),
        **{f"{name}_ms": t * 1e3 for name, t in med.items()},
        "gemm_only_ms": gemm_s * 1e3,
        "speedup_fused_vs_unfused": med["unfused"] / med["fused"],
        "ratio": med["fused"] / med["adam"],
        "ratio_unfused": med["unfused"] / med["adam"],
        "lstm_gflops": flops / med["fused"] / 1e9,
        "unfused_gflops": flops / med["unfused"] / 1e9,
        "gemm_only_gflops": flops / gemm_s / 1e9,
        "lstm_state_bytes_per_param": state_bytes(opts["fused"]) / n,
        "adam_state_bytes_per_param": state_bytes(opts["adam"]) / n,
    }
    if compile:
        out["compiled_gflops"] = flops / med["compiled"] / 1e9
        out["first_compiled_step_s"] = compile_s
    return out


def optim_chunk() -> int:
    """LearnedOptimizer's default CPU chunk size."""
    from optizoo.optim import _CPU_CHUNK

    return _CPU_CHUNK


def chunk_overhead(n: int, max_chunk: int | None) -> float:
    """Step temporaries over state, measured by ``benchmarks/step.py``'s subprocess (flat layout,
    the same log-uniform tensor sizes as :func:`make_params`)."""
    name = "lstm" if RULE_CONFIG is None else "lstm:" + json.dumps(RULE_CONFIG)
    return temporaries(name, n, "flat", max_chunk)["temp_over_state"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", type=float, default=[1e4, 1e5, 1e6])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-chunk", type=int, default=None, help="0 or unset: the default")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument(
        "--compile", action="store_true", help="also LSTMOptimizer(compile=True), side by side"
    )
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--rule-config", default=None, help="JSON LSTMRule options to measure")
    args = ap.parse_args(argv)
    global RULE_CONFIG
    RULE_CONFIG = json.loads(args.rule_config) if args.rule_config else None
    if args.threads:
        torch.set_num_threads(args.threads)
    max_chunk = args.max_chunk or None

    # The machine's matmul rate, measured before, between and after the sizes: on a shared
    # machine a single probe can land in a load spike, so the fractions use the best probe.
    probes = [matmul_gflops()]
    rows = []
    for n in (int(s) for s in args.sizes):
        r = measure(n, args.repeats, max_chunk, args.compile)
        r["chunk_overhead"] = chunk_overhead(n, max_chunk)
        rows.append(r)
        probes.append(matmul_gflops())
        print(f"n={n:.0e} done", file=sys.stderr, flush=True)
    mm = max(probes)
    for r in rows:
        r["matmul_gflops"] = mm
        for key in ("lstm", "unfused", "compiled", "gemm_only"):
            if f"{key}_gflops" in r:
                r[f"{key}_fraction_of_matmul"] = r[f"{key}_gflops"] / mm
        r["fraction_of_matmul"] = r["lstm_gflops"] / mm
    print(
        f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print(
        "dense fp32 matmul (2048² GEMM) probes: "
        + ", ".join(f"{p:.1f}" for p in probes)
        + f" GFLOP/s; fractions use the best, {mm:.1f}\n"
    )
    if RULE_CONFIG is not None:
        print(f"learned rule: LSTMRule(**{json.dumps(RULE_CONFIG)})\n")
    comp = "compiled_ms" in rows[0] if rows else False
    print(
        "| params | tensors | fused ms | unfused ms | "
        + ("compiled ms | " if comp else "")
        + "GEMMs alone ms | Adam ms | fused/unfused speed-up | fused/Adam | unfused/Adam "
        "| of matmul: fused | unfused | "
        + ("compiled | " if comp else "")
        + "GEMMs alone | state B/param LSTM | Adam | step temporaries / state |"
    )
    print("|---" * (17 if comp else 15) + "|")
    for r in rows:
        c1 = f"{r['compiled_ms']:.1f} | " if comp else ""
        c2 = f"{r['compiled_fraction_of_matmul']:.0%} | " if comp else ""
        print(
            f"| {r['n']:.0e} | {r['tensors']} | {r['fused_ms']:.1f} | {r['unfused_ms']:.1f} | {c1}"
            f"{r['gemm_only_ms']:.1f} | {r['adam_ms']:.2f} | "
            f"{r['speedup_fused_vs_unfused']:.2f}x | {r['ratio']:.0f}x | {r['ratio_unfused']:.0f}x | "
            f"{r['lstm_fraction_of_matmul']:.0%} | {r['unfused_fraction_of_matmul']:.0%} | {c2}"
            f"{r['gemm_only_fraction_of_matmul']:.0%} | "
            f"{r['lstm_state_bytes_per_param']:.0f} | {r['adam_state_bytes_per_param']:.0f} | "
            f"{r['chunk_overhead']:.1%} |"
        )
    if comp:
        print(
            "\nfirst compiled step (compilation, inductor cache as found): "
            + ", ".join(f"{r['first_compiled_step_s']:.1f} s" for r in rows)
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"matmul_gflops": probes, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
