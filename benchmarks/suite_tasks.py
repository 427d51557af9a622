"""Step cost of the architecture suite's tasks, relative to the paper's MLP, in one process.

For every task of ``optizoo.compare.evaluate.SUITES["architectures"]`` and for the reference task
(the paper's MLP: 20 sigmoid units, minibatch 128, digits), one ``torch.optim.Adam`` training step
(``zero_grad``, ``loss``, ``backward``, ``step``) is timed on one CPU thread; rounds interleave the
tasks so machine noise hits all alike. Reported: each task's parameter count, the median step time
in milliseconds and its ratio to the reference task's, and the parameter count of each problem.

Usage::

    python benchmarks/suite_tasks.py [--rounds 5] [--steps 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from optizoo import tasks
from optizoo.compare.evaluate import SUITES, EvalTask

REFERENCE = EvalTask("mlp-20-sigmoid (reference)", "mlp", {"hidden": [20], "activation": "sigmoid"})


def _stepper(t: EvalTask):
    problem = tasks.build(t.task, **dict(t.args)).sample(torch.Generator().manual_seed(0))
    params = {k: torch.nn.Parameter(v) for k, v in problem.params().items()}
    opt = torch.optim.Adam(params.values(), lr=1e-3)
    count = sum(p.numel() for p in params.values())
    state = {"step": 0}

    def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            problem.loss(params, state["step"]).backward()
            opt.step()
            state["step"] += 1
        return (time.perf_counter() - start) / n

    return run, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    suite = (REFERENCE, *SUITES["architectures"])
    steppers = {t.name: _stepper(t) for t in suite}
    for run, _ in steppers.values():  # warm-up
        run(3)
    times: dict[str, list[float]] = {name: [] for name in steppers}
    for _ in range(args.rounds):
        for name, (run, _) in steppers.items():
            times[name].append(run(args.steps))
    ref = statistics.median(times[REFERENCE.name])
    rows = []
    print("| task | parameters | ms / Adam step | ratio to the paper's MLP |")
    print("|---|---|---|---|")
    for name, (_, count) in steppers.items():
        ms = statistics.median(times[name]) * 1e3
        rows.append({"task": name, "parameters": count, "ms": ms, "ratio": ms / (ref * 1e3)})
        print(f"| {name} | {count} | {ms:.2f} | {ms / (ref * 1e3):.1f}× |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
