"""Step benchmark: LSTMOptimizer vs torch.optim.Adam(foreach=True), in one process.

For 1e4, 1e5 and 1e6 parameters spread over many tensors (log-uniform sizes, like a real model)
it reports, per size:

- median time per ``step()`` of each optimizer and their ratio (same process, interleaved runs,
  so machine noise hits both alike);
- the LSTM's achieved GFLOP/s (``LSTMRule.flops_per_coordinate() * n / t``) against the machine's
  own dense fp32 matmul GFLOP/s measured in the same run (2048x2048 GEMM), as a fraction;
- optimizer-state bytes per parameter;
- the peak temporary memory of a step (chunking overhead) relative to the state size, measured
  as the growth of the process's peak RSS during steps, in a fresh subprocess per size.

Usage::

    python benchmarks/step.py                 # all sizes, markdown table on stdout
    python benchmarks/step.py --sizes 1e4 1e5 --max-chunk 16384 --json out.json
    python benchmarks/step.py --rule-config '{"parameterization": "nominal", "cell": "mlp"}'

``--rule-config`` measures ``LearnedOptimizer(rule=LSTMRule(**config))`` (an option of the LSTM
rule, random weights) in place of the default ``LSTMOptimizer``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

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


def set_grads(params: list[torch.nn.Parameter], seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 1e-3


def matmul_gflops(repeats: int = 5, size: int = 2048) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * size**3 / min(times) / 1e9


def state_bytes(opt: torch.optim.Optimizer) -> int:
    return sum(
        v.numel() * v.element_size()
        for st in opt.state.values()
        for v in st.values()
        if isinstance(v, torch.Tensor) and v.dim() > 0
    )


def time_steps(opt: torch.optim.Optimizer, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        opt.step()
        out.append(time.perf_counter() - t)
    return out


def measure(n: int, repeats: int, max_chunk: int | None, compile: bool = False) -> dict[str, float]:
    params = make_params(n)
    set_grads(params)
    kwargs = {} if max_chunk is None else {"max_chunk": max_chunk}
    kwargs["compile"] = compile
    lstm = make_learned(params, **kwargs)
    adam = torch.optim.Adam(params, lr=1e-3, foreach=True)
    lstm.step()  # initialise state (and compile, if asked)
    lstm.step()
    adam.step()
    t_lstm, t_adam = [], []
    for _ in range(repeats):  # interleave so that noise hits both
        t_lstm += time_steps(lstm, 1)
        t_adam += time_steps(adam, 1)
    lstm_s, adam_s = statistics.median(t_lstm), statistics.median(t_adam)
    flops = lstm.rule.flops_per_coordinate() * n
    return {
        "n": n,
        "tensors": len(params),
        "lstm_ms": lstm_s * 1e3,
        "adam_ms": adam_s * 1e3,
        "ratio": lstm_s / adam_s,
        "lstm_gflops": flops / lstm_s / 1e9,
        "lstm_state_bytes_per_param": state_bytes(lstm) / n,
        "adam_state_bytes_per_param": state_bytes(adam) / n,
    }


def _peak_rss_child(n: int, max_chunk: int | None) -> None:
    """Run in a subprocess: print state bytes and the peak-RSS growth caused by stepping."""
    params = make_params(n)
    set_grads(params)
    kwargs = {} if max_chunk is None else {"max_chunk": max_chunk}
    opt = make_learned(params, **kwargs)
    # allocate the state without stepping, so that the step's temporaries are what grows
    for p in params:
        st = opt.state[p]
        st["step"] = 0
        st.update(opt.rule.init_state(p.detach().reshape(-1)))
    for st in opt.state.values():
        for v in st.values():
            if isinstance(v, torch.Tensor):
                v.fill_(0.0)  # touch the pages
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for _ in range(2):
        opt.step()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"state": state_bytes(opt), "temporary": max(0, after - before)}))


def chunk_overhead(n: int, max_chunk: int | None) -> float:
    cmd = [sys.executable, __file__, "--_child", str(n), "--max-chunk", str(max_chunk or 0)]
    if RULE_CONFIG is not None:
        cmd += ["--rule-config", json.dumps(RULE_CONFIG)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return r["temporary"] / r["state"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", type=float, default=[1e4, 1e5, 1e6])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-chunk", type=int, default=None, help="0 or unset: the default")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--compile", action="store_true", help="LSTMOptimizer(compile=True)")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--rule-config", default=None, help="JSON LSTMRule options to measure")
    ap.add_argument("--_child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    global RULE_CONFIG
    RULE_CONFIG = json.loads(args.rule_config) if args.rule_config else None
    if args.threads:
        torch.set_num_threads(args.threads)
    max_chunk = args.max_chunk or None
    if args._child is not None:
        _peak_rss_child(args._child, max_chunk)
        return 0

    mm = matmul_gflops()
    rows = []
    for n in (int(s) for s in args.sizes):
        r = measure(n, args.repeats, max_chunk, args.compile)
        r["matmul_gflops"] = mm
        r["fraction_of_matmul"] = r["lstm_gflops"] / mm
        r["chunk_overhead"] = chunk_overhead(n, max_chunk)
        rows.append(r)
        print(f"n={n:.0e} done", file=sys.stderr, flush=True)
    mm_end = matmul_gflops()
    print(
        f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print(f"dense fp32 matmul: {mm:.1f} GFLOP/s at start, {mm_end:.1f} at end\n")
    if RULE_CONFIG is not None:
        print(f"learned rule: LSTMRule(**{json.dumps(RULE_CONFIG)})\n")
    print(
        "| params | tensors | LSTM step ms | Adam step ms | LSTM/Adam | LSTM GFLOP/s "
        "| of matmul | state B/param LSTM | Adam | step temporaries / state |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['n']:.0e} | {r['tensors']} | {r['lstm_ms']:.1f} | {r['adam_ms']:.2f} | "
            f"{r['ratio']:.0f}x | {r['lstm_gflops']:.1f} | {r['fraction_of_matmul']:.0%} | "
            f"{r['lstm_state_bytes_per_param']:.0f} | {r['adam_state_bytes_per_param']:.0f} | "
            f"{r['chunk_overhead']:.1%} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"matmul_gflops": [mm, mm_end], "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
