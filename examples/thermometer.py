"""Fit the thermometer data (a linear-regression tutorial) with torch.optim.SGD and with optizoo.LSTMOptimizer.

The model is t_y ≈ w · (0.1 · t_x) + b with mean squared error. The only line that differs
between the runs is the optimizer's construction. The least-squares solution (numpy) is printed
as the reference. SGD and ``lstm-quadratic`` (meta-trained on least-squares problems) reach it;
the default ``lstm-hierarchical-val`` has a *learned weight decay* (an AdamW-like update
meta-trained for validation loss on networks), so it settles on a shrunk, regularized fit instead.

    python examples/thermometer.py
"""

from __future__ import annotations

import numpy as np
import torch

import optizoo

# The thermometer tutorial (linear regression by hand and with autograd): Celsius vs unknown units.
T_Y = [0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0]
T_X = [35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4]


def fit(make_optimizer, steps: int) -> tuple[float, float, float]:
    x = torch.tensor(T_X) * 0.1
    y = torch.tensor(T_Y)
    w = torch.nn.Parameter(torch.tensor(1.0))
    b = torch.nn.Parameter(torch.tensor(0.0))
    opt = make_optimizer([w, b])
    for _ in range(steps):
        opt.zero_grad()
        loss = ((w * x + b - y) ** 2).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(((w * x + b - y) ** 2).mean()), float(w), float(b)


def main(steps_sgd: int = 5000, steps_lstm: int = 2000) -> dict[str, tuple[float, float, float]]:
    a = np.stack([np.array(T_X) * 0.1, np.ones(len(T_X))], 1)
    (w_ls, b_ls), *_ = np.linalg.lstsq(a, np.array(T_Y), rcond=None)
    loss_ls = float(np.mean((a @ [w_ls, b_ls] - T_Y) ** 2))
    results = {
        "least squares": (loss_ls, float(w_ls), float(b_ls)),
        f"SGD lr=1e-2, {steps_sgd} steps": fit(lambda p: torch.optim.SGD(p, lr=1e-2), steps_sgd),
        f"lstm-quadratic, {steps_lstm} steps": fit(
            lambda p: optizoo.LSTMOptimizer(p, weights="lstm-quadratic"), steps_lstm
        ),
        f"default, {steps_lstm} steps": fit(lambda p: optizoo.LSTMOptimizer(p), steps_lstm),
    }
    for name, (loss, w, b) in results.items():
        print(f"{name:>32}: loss {loss:9.4f}   w {w:8.4f}   b {b:9.4f}")
    return results


if __name__ == "__main__":
    main()
