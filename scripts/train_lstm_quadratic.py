"""Meta-train the shipped ``lstm-quadratic`` optimizer (reproducible: fixed seed, recorded config).

Recipe (Andrychowicz et al. 2016, with the stabilisers of ``../docs/meta-training.md``): a 2×20
coordinate-wise LSTM with log-and-sign inputs (p=10), output scale 0.1, forget-gate bias +1;
first-order meta-gradients; truncations of 20 steps over a 100-step horizon; 128 quadratics per
problem; Adam meta-optimizer (lr 3e-3) with meta-gradient clipping at 1.0; best weights chosen
on held-out problems.

    python scripts/train_lstm_quadratic.py --out runs/lstm-quadratic [--meta-steps 3000]
"""

from __future__ import annotations

import argparse

import torch

import optizoo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/lstm-quadratic")
    ap.add_argument("--meta-steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)  # the LSTM's initial weights
    rule = optizoo.rules.LSTMRule(
        hidden_size=20,
        num_layers=2,
        preprocessor="log_sign",
        preprocessor_args={"p": 10.0},
        output_scale=0.1,
        forget_bias=1.0,
    )
    trainer = optizoo.MetaTrainer(
        rule,
        task="quadratic",
        unroll=20,
        horizon=100,
        meta_lr=3e-3,
        clip=1.0,
        eval_problems=4,
        eval_every=100,
        seed=args.seed,
        out_dir=args.out,
    )
    trainer.fit(meta_steps=args.meta_steps)


if __name__ == "__main__":
    main()
