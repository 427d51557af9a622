"""Record reference update trajectories of the shipped weight files (a test fixture).

Written once, BEFORE the update rules were refactored into parts (issue 15), so that
``tests/rules/test_reference_trajectory.py`` can check that every shipped file still produces the
same updates bit for bit::

    python scripts/record_rule_reference.py          # writes tests/rules/data/rule_reference.safetensors

For each shipped file (``lstm-quadratic``, ``lstm-mlp``) and each dtype (float64: the rule in
double precision called directly; float32: through ``LearnedOptimizer`` on two parameters), it runs
``STEPS`` updates on ``N`` coordinates whose gradients are fixed in advance (a seeded normal
sample with per-coordinate scales spanning 1e-8..10, and a few exact zeros, so that both branches
of the log-and-sign preprocessing are exercised); the parameters start at a seeded normal sample
and move by the updates (the learned weight decay reads them). It stores the gradients, the
initial parameters, every update and the final state.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

import optizoo

NAMES = ("lstm-quadratic", "lstm-mlp")
STEPS = 20
N = 48
OUT = (
    Path(__file__).resolve().parent.parent
    / "tests"
    / "rules"
    / "data"
    / "rule_reference.safetensors"
)


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """``(grads [STEPS, N], param0 [N])`` in float64, from a fixed seed."""
    g = torch.Generator().manual_seed(1234)
    scales = torch.logspace(-8, 1, N, dtype=torch.float64)
    grads = torch.randn(STEPS, N, generator=g, dtype=torch.float64) * scales
    grads[:, :3] = 0.0  # never-moving coordinates
    grads[5, 10:14] = 0.0
    param0 = torch.randn(N, generator=g, dtype=torch.float64)
    return grads, param0


def run_float64(rule: optizoo.rules.UpdateRule, grads, param0):
    rule = rule.double()
    param = param0.clone()
    state = rule.init_state(param)
    updates = []
    with torch.no_grad():
        for t in range(grads.shape[0]):
            u, state = rule(grads[t], state, param=param, step=t + 1)
            updates.append(u)
            param = param + u
    return torch.stack(updates), state


def run_float32(rule: optizoo.rules.UpdateRule, grads, param0):
    a = torch.nn.Parameter(param0[:20].float().view(4, 5).clone())
    b = torch.nn.Parameter(param0[20:].float().clone())
    opt = optizoo.LearnedOptimizer([a, b], rule=rule)
    traj = []
    for t in range(grads.shape[0]):
        g = grads[t].float()
        a.grad = g[:20].view(4, 5).clone()
        b.grad = g[20:].clone()
        opt.step()
        traj.append(torch.cat([a.detach().reshape(-1), b.detach()]).clone())
    return torch.stack(traj)


def main() -> int:
    grads, param0 = inputs()
    tensors = {"grads": grads, "param0": param0}
    for name in NAMES:
        rule = optizoo.load_rule(name)
        updates, state = run_float64(optizoo.load_rule(name), grads, param0)
        tensors[f"{name}/float64/updates"] = updates
        for k, v in state.items():
            tensors[f"{name}/float64/state/{k}"] = v.contiguous()
        tensors[f"{name}/float32/params"] = run_float32(rule, grads, param0)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        tensors,
        str(OUT),
        metadata={"made_by": "scripts/record_rule_reference.py", "torch": torch.__version__},
    )
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
