"""CUDA path of the optimizer: state on the parameter's device, no host synchronisation in step.

Skipped when no CUDA device is present (CI has none; run on a GPU machine).
"""

from __future__ import annotations

import pytest
import torch

from optizoo.optim import LearnedOptimizer, LSTMOptimizer
from optizoo.rules import Adam

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _params(dtype=torch.float32):
    torch.manual_seed(0)
    return [
        torch.nn.Parameter(torch.randn(n, device="cuda", dtype=dtype)) for n in (1000, 37, 4096)
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_state_lives_on_device_with_right_dtype(dtype):
    ps = _params(dtype)
    opt = LSTMOptimizer(ps, weights=None)
    sum(p.float().pow(2).sum() for p in ps).backward()
    opt.step()
    want = torch.float64 if dtype == torch.float64 else torch.float32
    for p in ps:
        for k in ("h", "c"):
            assert opt.state[p][k].device == p.device and opt.state[p][k].dtype == want


def test_no_host_synchronisation_inside_step():
    ps = _params()
    opt = LSTMOptimizer(ps, weights=None)
    for step in range(3):
        opt.zero_grad()
        sum(p.pow(2).sum() for p in ps).backward()
        torch.cuda.synchronize()
        if step == 0:  # the first step copies the rule's weights to the device once
            opt.step()
            continue
        torch.cuda.set_sync_debug_mode("error")
        try:
            opt.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")


def test_cpu_rule_is_used_on_cuda_params_and_matches_cpu():
    torch.manual_seed(0)
    cpu = [torch.nn.Parameter(torch.randn(300, dtype=torch.float64))]
    gpu = [torch.nn.Parameter(cpu[0].detach().cuda())]
    oc, og = LearnedOptimizer(cpu, Adam(lr=0.1)), LearnedOptimizer(gpu, Adam(lr=0.1))
    for _ in range(5):
        for ps, o in ((cpu, oc), (gpu, og)):
            o.zero_grad()
            (ps[0] ** 2).sum().backward()
            o.step()
    torch.testing.assert_close(gpu[0].detach().cpu(), cpu[0].detach(), rtol=1e-12, atol=1e-12)
