"""Re-create ``optizoo_sign/weights/signum-quadratic.safetensors``.

Meta-learns Signum's learning rate on optizoo's ``quadratic`` task (10-dimensional quadratics,
batches of 128): truncated unrolls of ``UNROLL`` steps up to a horizon of ``HORIZON`` steps, the
meta-loss being the mean per-problem loss over each truncation, Adam on ``log_lr``. Gradients
enter the rule as inputs (first-order, as in Andrychowicz et al. 2016). Then compares the
learned learning rate against the starting one on held-out problems and writes the file with
that record in its ``optizoo.training`` metadata.

Run from the repository root: ``python plugins/optizoo-sign/scripts/make_weights.py``
(about 15 s of CPU time).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from optizoo_sign.rules import Signum

import optizoo

UNROLL, HORIZON, META_STEPS, META_LR, LR0, BETA = 20, 100, 60, 0.1, 1e-3, 0.9
TRAIN_SEED, EVAL_SEED, EVAL_PROBLEMS = 0, 12345, 4


def run(rule: Signum, problem, horizon: int, train: bool, meta_opt=None) -> float:
    """Unroll ``rule`` on ``problem``; returns the mean per-problem loss at the horizon."""
    theta = problem.params()["theta"]
    state = rule.init_state(theta.reshape(-1))
    meta_loss = 0.0
    for step in range(horizon):
        # training keeps theta's graph (it depends on log_lr); evaluation cuts it every step
        leaf = theta if train and theta.requires_grad else theta.detach().requires_grad_(True)
        loss = problem.loss({"theta": leaf}, step)
        (grad,) = torch.autograd.grad(loss, leaf, retain_graph=train)
        with torch.set_grad_enabled(train):
            update, state = rule(grad.detach().reshape(-1), state, step=step + 1)
        theta = leaf + update.reshape(theta.shape)
        if train:
            meta_loss = meta_loss + problem.loss({"theta": theta}, step + 1) / problem.num_instances
            if (step + 1) % UNROLL == 0:
                meta_opt.zero_grad()
                (meta_loss / UNROLL).backward()
                meta_opt.step()
                meta_loss = 0.0
                theta = theta.detach()
                state = {k: v.detach() for k, v in state.items()}
    with torch.no_grad():
        return float(problem.loss({"theta": theta}, horizon)) / problem.num_instances


def main(out: Path) -> None:
    torch.manual_seed(0)
    task = optizoo.tasks.build("quadratic")
    rule = Signum(lr=LR0, beta=BETA)
    meta_opt = torch.optim.Adam([rule.log_lr], lr=META_LR)
    gen = torch.Generator().manual_seed(TRAIN_SEED)
    for _ in range(META_STEPS):
        run(rule, task.sample(gen), HORIZON, train=True, meta_opt=meta_opt)
    eval_gen = torch.Generator().manual_seed(EVAL_SEED)
    problems = [task.sample(eval_gen) for _ in range(EVAL_PROBLEMS)]
    learned = sum(run(rule, p, HORIZON, train=False) for p in problems) / EVAL_PROBLEMS
    start = sum(run(Signum(lr=LR0, beta=BETA), p, HORIZON, False) for p in problems) / EVAL_PROBLEMS
    lr = float(rule.lr.detach())
    print(f"learned lr {lr:.4g}; loss at step {HORIZON}: {learned:.4g} (lr={LR0}: {start:.4g})")
    training = {
        "task": "quadratic",
        "task_config": task.config(),
        "unroll": UNROLL,
        "horizon": HORIZON,
        "meta_steps": META_STEPS,
        "meta_optimizer": f"Adam(lr={META_LR}) on log_lr",
        "seeds": {"train": TRAIN_SEED, "eval": EVAL_SEED},
        "metrics": {
            f"mean_loss_at_step_{HORIZON}": learned,
            f"baseline_signum_lr_{LR0}": start,
            "eval_problems": EVAL_PROBLEMS,
        },
    }
    optizoo.save_rule(
        rule,
        out,
        training=training,
        description="Signum (sign descent with momentum 0.9), learning rate meta-learned on "
        "10-d quadratics",
        license="MIT",
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    default = Path(__file__).resolve().parents[1] / "optizoo_sign" / "weights"
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else default / "signum-quadratic.safetensors"
    main(target)
