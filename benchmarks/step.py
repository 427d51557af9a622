"""Step benchmark: learned optimizers vs torch.optim.Adam(foreach=True), in one process.

For each rule and size (default 1e4, 1e5, 1e6 and 1e7 parameters) it reports:

- the median time per ``step()`` against ``torch.optim.Adam(foreach=True)`` on the same
  parameters, in the same process, interleaved (machine noise hits both alike): the ratio;
- optimizer-state bytes per parameter (Adam: 8);
- the step's temporary memory: the growth of the peak resident set during two steps, in a fresh
  subprocess with the state already allocated (and glibc's mmap threshold fixed, so freed
  temporaries leave the resident set: without it an earlier version read 0%), in bytes per
  parameter and relative to the state; ``probe:K`` (SGD allocating K bytes a parameter) checks it;
- for the coordinate-wise LSTM, its matmul GFLOP/s as a fraction of the machine's dense fp32
  GEMM rate (2048×2048) measured in the same run.

Parameters are shaped like a model (``--layout model``, the default): 4 blocks of a width-``w``
transformer-like layer (four ``[w, w]`` attention matrices, ``[4w, w]`` and ``[w, 4w]`` MLP
matrices, their biases and two norm vectors) plus a ``[r, w]`` output matrix filling the rest, so
matrices hold almost all coordinates and vectors are most of the tensors. ``--layout flat``
splits them into vectors of log-uniform sizes 64..65536 instead (the earlier benchmark).

Rules (``--rules``): ``lstm`` (the paper's 2×20 coordinate-wise LSTM, ``LSTMOptimizer(weights=
None)``, with the fused cell ``optizoo.rules.fused_lstm.lstm_layer``, the default), ``lstm-unfused``
(the same LSTM with the unfused composite cell ``lstm_layer_reference``), ``hierarchical``
(:class:`optizoo.rules.HierarchicalRule`), ``hierarchical-rms`` (``normalize=True``),
``hierarchical-ns`` (``orthogonalize=True``: Newton–Schulz on every matrix), or ``lstm:{JSON}`` /
``lstm-unfused:{JSON}`` for :class:`optizoo.rules.LSTMRule` options (``--rule-config JSON`` is
``lstm:JSON``). All rules at one size step the same parameters in one process, interleaved with
one ``torch.optim.Adam(foreach=True)``: the same baseline for every row of a size, and with
``lstm`` and ``lstm-unfused`` together the fused/unfused speed-up is printed under the table
(``benchmarks/step_cell.py`` adds the GEMM-only time and the compiled cell)::

    python benchmarks/step.py                                    # every rule, every size
    python benchmarks/step.py --rules hierarchical --sizes 1e6 --threads 1
    python benchmarks/step.py --rules lstm lstm-unfused --sizes 1e4 1e5
    python benchmarks/step.py --rules 'lstm:{"parameterization": "nominal", "cell": "mlp"}'
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

import optizoo
import optizoo.rules.parts.cells as cells_module
from optizoo.optim import LearnedOptimizer, LSTMOptimizer
from optizoo.rules import HierarchicalRule, LSTMRule
from optizoo.rules.fused_lstm import lstm_layer, lstm_layer_reference

DEFAULT_RULES = ["hierarchical", "hierarchical-rms", "hierarchical-ns", "lstm", "lstm-unfused"]
#: sizes above this are skipped for the coordinate-wise LSTM unless asked (minutes per step)
LSTM_MAX_DEFAULT = 10**6
#: the LSTM cell of each variant: the fused cell (the default) and the unfused composite one
CELLS: dict[str, Callable] = {"fused": lstm_layer, "unfused": lstm_layer_reference}
#: rule-name prefix of the coordinate-wise LSTM with the unfused cell
UNFUSED = "lstm-unfused"


@contextmanager
def using_cell(kind: str) -> Iterator[None]:
    """Run the LSTM layers of ``optizoo.rules.parts.cells`` with cell ``kind`` (a key of
    :data:`CELLS`) inside the block; the fused cell is restored after it."""
    if kind not in CELLS:
        raise ValueError(f"unknown LSTM cell {kind!r}; expected one of {sorted(CELLS)}")
    cells_module.fused_lstm_layer = CELLS[kind]
    try:
        yield
    finally:
        cells_module.fused_lstm_layer = lstm_layer


def with_cell(opt: torch.optim.Optimizer, kind: str) -> torch.optim.Optimizer:
    """``opt`` with every ``step()`` run under :func:`using_cell` ``(kind)`` (the swap is part of
    the timed step: a few attribute writes)."""
    step = opt.step

    def step_with_cell(closure=None):
        with using_cell(kind):
            return step(closure)

    opt.step = step_with_cell  # type: ignore[method-assign]
    return opt


def cell_of(name: str) -> str | None:
    """The LSTM cell a coordinate-wise LSTM rule name runs (``"fused"`` or ``"unfused"``);
    ``None`` for the other rules."""
    if name == UNFUSED or name.startswith(UNFUSED + ":"):
        return "unfused"
    return "fused" if name == "lstm" or name.startswith("lstm:") else None


def make_learned(name: str, params: list[torch.nn.Parameter], **kwargs) -> torch.optim.Optimizer:
    """The optimizer under test, by benchmark name."""
    if cell_of(name) == "unfused":
        fused = "lstm" + name[len(UNFUSED) :]  # lstm-unfused[:JSON] -> lstm[:JSON]
        return with_cell(make_learned(fused, params, **kwargs), "unfused")
    if name == "lstm":
        return LSTMOptimizer(params, weights=None, **kwargs)
    if name.startswith("lstm:"):
        return LearnedOptimizer(params, rule=LSTMRule(**json.loads(name[5:])), **kwargs)
    if name.startswith("hierarchical"):
        options = {
            "hierarchical": {},
            "hierarchical-rms": {"normalize": True},
            "hierarchical-ns": {"orthogonalize": True},
        }[name]
        return LearnedOptimizer(params, rule=HierarchicalRule(**options), **kwargs)
    if name.startswith("file:"):
        return LearnedOptimizer(params, rule=optizoo.load_rule(name[5:]), **kwargs)
    if name.startswith("probe:"):
        return TemporaryProbe(params, float(name[6:]))
    raise ValueError(f"unknown rule {name!r}")


class TemporaryProbe(torch.optim.SGD):
    """SGD whose step also allocates and touches ``bytes_per_param`` bytes of temporaries per
    parameter (a known answer for the temporaries measurement; ``--rules probe:8``)."""

    def __init__(self, params: list[torch.nn.Parameter], bytes_per_param: float) -> None:
        super().__init__(params, lr=1e-3, momentum=0.9, foreach=True)
        self.bytes_per_param = bytes_per_param

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        params = [p for g in self.param_groups for p in g["params"]]
        # one touched (resident) temporary per parameter, as a foreach step allocates them
        scratch = [torch.ones(int(p.numel() * self.bytes_per_param) // 4) for p in params]
        out = super().step(closure)
        del scratch
        return out


def model_shapes(n: int) -> list[tuple[int, ...]]:
    """Tensor shapes of a transformer-like stack with about ``n`` coordinates (see module doc)."""
    blocks = 4
    per_w2 = blocks * 12  # 4 w² attention + 8 w² MLP per block
    w = max(4, int(math.sqrt(n / per_w2)))
    shapes: list[tuple[int, ...]] = []
    for _ in range(blocks):
        shapes += [(w, w)] * 4 + [(w,)] * 4  # attention matrices and biases
        shapes += [(4 * w, w), (4 * w,), (w, 4 * w), (w,)]  # MLP
        shapes += [(w,), (w,)]  # norm weight and bias
    used = sum(math.prod(s) for s in shapes)
    rest = n - used
    if rest >= w:
        shapes.append((rest // w, w))
        rest -= (rest // w) * w
    if rest > 0:
        shapes.append((rest,))
    return shapes


def flat_shapes(n: int, seed: int = 0) -> list[tuple[int, ...]]:
    """``n`` coordinates split into vectors of log-uniform sizes between 64 and 65536."""
    g = torch.Generator().manual_seed(seed)
    sizes, total = [], 0
    while total < n:
        size = int(torch.exp(torch.empty(1).uniform_(4.2, 11.1, generator=g)).item())
        size = min(size, n - total)
        sizes.append((size,))
        total += size[0] if isinstance(size, tuple) else size
    return sizes


def make_params(n: int, layout: str = "model", seed: int = 0) -> list[torch.nn.Parameter]:
    shapes = model_shapes(n) if layout == "model" else flat_shapes(n, seed)
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g) * 0.05) for s in shapes]


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


def time_step(opt: torch.optim.Optimizer) -> float:
    t = time.perf_counter()
    opt.step()
    return time.perf_counter() - t


def interleaved(
    opts: dict[str, torch.optim.Optimizer], repeats: int, warmup: int = 2
) -> tuple[dict[str, float], dict[str, float]]:
    """``(median seconds per step, first step's seconds)`` of each optimizer: ``warmup`` steps
    each (state creation, compilation), then ``repeats`` rounds stepping every optimizer once in
    turn, so that machine noise hits all alike."""
    first: dict[str, float] = {}
    for name, opt in opts.items():
        first[name] = time_step(opt)
        for _ in range(warmup - 1):
            time_step(opt)
    times: dict[str, list[float]] = {name: [] for name in opts}
    for _ in range(repeats):
        for name, opt in opts.items():
            times[name].append(time_step(opt))
    return {name: statistics.median(t) for name, t in times.items()}, first


def measure(
    names: list[str],
    n: int,
    repeats: int,
    layout: str,
    max_chunk: int | None,
    compile: bool = False,
) -> list[dict[str, float]]:
    """One row per rule in ``names``: every rule and one ``torch.optim.Adam(foreach=True)`` step
    the same parameters, interleaved (:func:`interleaved`); each row's ratio is against that
    same Adam."""
    params = make_params(n, layout)
    set_grads(params)
    kwargs: dict = {"compile": compile}
    if max_chunk is not None:
        kwargs["max_chunk"] = max_chunk
    opts = {name: make_learned(name, params, **kwargs) for name in names}
    adam = torch.optim.Adam(params, lr=1e-3, foreach=True)
    med, _ = interleaved({**opts, " adam": adam}, repeats)  # (a key no rule name can be)
    ad = med[" adam"]
    rows = []
    for name, learned in opts.items():
        lo = med[name]
        flops = getattr(learned.rule, "flops_per_coordinate", lambda: 0)() * n
        rows.append(
            {
                "rule": name,
                "n": n,
                "tensors": len(params),
                "matrices": sum(p.dim() >= 2 for p in params),
                "learned_ms": lo * 1e3,
                "adam_ms": ad * 1e3,
                "ratio": lo / ad,
                "gflops": flops / lo / 1e9,
                "state_bytes_per_param": state_bytes(learned) / n,
                "adam_state_bytes_per_param": state_bytes(adam) / n,
            }
        )
    return rows


def cell_speedups(rows: list[dict]) -> list[tuple[str, int, float]]:
    """``(fused rule, n, unfused ms / fused ms)`` for every size where a coordinate-wise LSTM
    was measured with both cells (``lstm`` and ``lstm-unfused``, or the same ``:JSON``)."""
    by_key = {(r["rule"], r["n"]): r for r in rows}
    out = []
    for r in rows:
        if cell_of(r["rule"]) != "unfused":
            continue
        fused = by_key.get(("lstm" + r["rule"][len(UNFUSED) :], r["n"]))
        if fused is not None:
            out.append((fused["rule"], r["n"], r["learned_ms"] / fused["learned_ms"]))
    return out


def _peak_rss_child(name: str, n: int, layout: str, max_chunk: int | None) -> None:
    """Run in a subprocess: print state bytes and the peak-RSS growth caused by stepping."""
    params = make_params(n, layout)
    set_grads(params)
    kwargs = {} if max_chunk is None else {"max_chunk": max_chunk}
    opt = make_learned(name, params, **kwargs)
    opt.step()  # allocates the state (packed, as in real use)
    for st in opt.state.values():
        for v in st.values():
            if isinstance(v, torch.Tensor):
                v.fill_(0.0)  # touch the pages
    # reset the high-water mark to the current RSS (Linux), so that the growth below is the
    # working set of a step beyond the state, not the first step's allocations. The parent
    # starts this process with a fixed glibc mmap threshold (_CHILD_ENV): otherwise glibc raises
    # its threshold after the first large free and keeps later temporaries in heap pages that
    # stay resident, and the growth reads ~0 whatever the step allocates; malloc_trim returns
    # what the first step freed.
    _malloc_trim()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _vm_hwm()
    for _ in range(2):
        opt.step()
    after = _vm_hwm()
    print(json.dumps({"state": state_bytes(opt), "temporary": max(0, after - before)}))


#: environment of the temporaries subprocess: big allocations are mmapped (and unmapped when
#: freed) at a fixed threshold, so each step's temporaries show in the peak resident set
_CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}


def _malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def _vm_hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def temporaries(name: str, n: int, layout: str, max_chunk: int | None) -> dict[str, float]:
    """The step's temporary memory, measured in a fresh subprocess: the growth of the peak
    resident set over two steps beyond the allocated state, per parameter and over the state."""
    cmd = [
        sys.executable,
        __file__,
        "--_child",
        str(n),
        "--rules",
        name,
        "--layout",
        layout,
        "--max-chunk",
        str(max_chunk or 0),
    ]
    if os.environ.get("OMP_NUM_THREADS") is None:
        cmd += ["--threads", str(torch.get_num_threads())]
    env = {**os.environ, **_CHILD_ENV}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return {
        "temp_bytes_per_param": r["temporary"] / n,
        "temp_over_state": r["temporary"] / r["state"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", type=float, default=[1e4, 1e5, 1e6, 1e7])
    ap.add_argument("--rules", nargs="+", default=None, help=f"default: {DEFAULT_RULES}")
    ap.add_argument("--rule-config", default=None, help="JSON LSTMRule options (= lstm:JSON)")
    ap.add_argument("--layout", choices=["model", "flat"], default="model")
    ap.add_argument(
        "--lstm-max",
        type=float,
        default=LSTM_MAX_DEFAULT,
        help="largest size for coordinate-wise LSTM rules (they take seconds a step)",
    )
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--max-chunk", type=int, default=None, help="0 or unset: the default")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--compile", action="store_true", help="LearnedOptimizer(compile=True)")
    ap.add_argument("--no-memory", action="store_true", help="skip the temporaries subprocess")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--_child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rules = list(args.rules or DEFAULT_RULES)
    if args.rule_config:
        rules = (
            [f"lstm:{args.rule_config}"]
            if args.rules is None
            else [*rules, f"lstm:{args.rule_config}"]
        )
    max_chunk = args.max_chunk or None
    if args._child is not None:
        _peak_rss_child(rules[0], args._child, args.layout, max_chunk)
        return 0

    mm = matmul_gflops()
    rows = []
    for n in (int(s) for s in args.sizes):
        names = [r for r in rules if not (cell_of(r) is not None and n > args.lstm_max)]
        if not names:
            continue
        for r in measure(names, n, args.repeats, args.layout, max_chunk, args.compile):
            r["fraction_of_matmul"] = r["gflops"] / mm
            if not args.no_memory:
                r.update(temporaries(r["rule"], n, args.layout, max_chunk))
            rows.append(r)
            print(f"{r['rule']} n={n:.0e}: {r['ratio']:.2f}x Adam", file=sys.stderr, flush=True)
    mm_end = matmul_gflops()
    print(
        f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, threads "
        f"{torch.get_num_threads()}, layout {args.layout}"
    )
    print(f"dense fp32 matmul: {mm:.1f} GFLOP/s at start, {mm_end:.1f} at end\n")
    print(
        "| rule | params | tensors (matrices) | step ms | Adam ms | step / Adam | state B/param "
        "(Adam 8) | temporaries B/param | temporaries / state | matmul GFLOP/s (of peak) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        temp = (
            f"{r['temp_bytes_per_param']:.1f} | {r['temp_over_state']:.0%}"
            if "temp_bytes_per_param" in r
            else "– | –"
        )
        gf = f"{r['gflops']:.1f} ({r['fraction_of_matmul']:.0%})" if r["gflops"] else "–"
        print(
            f"| {r['rule']} | {r['n']:.0e} | {r['tensors']} ({r['matrices']}) | "
            f"{r['learned_ms']:.2f} | {r['adam_ms']:.2f} | {r['ratio']:.2f}× | "
            f"{r['state_bytes_per_param']:.1f} | {temp} | {gf} |"
        )
    speedups = cell_speedups(rows)
    if speedups:
        print(
            "\nfused vs unfused LSTM cell (unfused ms / fused ms, same process and Adam): "
            + ", ".join(f"{name} n={n:.0e}: {x:.2f}×" for name, n, x in speedups)
        )
    if args.json:
        with open(args.json, "w") as f:
            out = {"matmul_gflops": [mm, mm_end], "rows": rows}
            out["cell_speedups"] = [
                {"rule": a, "n": n, "unfused_over_fused": x} for a, n, x in speedups
            ]
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
