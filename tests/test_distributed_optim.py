"""LSTMOptimizer under DistributedDataParallel: 2 gloo processes, different data per rank.

DDP averages gradients, so every rank feeds the same gradients to the same rule: parameters and
optimizer state must stay bit-identical across ranks.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        from optizoo.optim import LSTMOptimizer

        torch.manual_seed(0)  # same model and rule weights on every rank
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        opt = LSTMOptimizer(ddp.parameters(), weights=None)
        g = torch.Generator().manual_seed(100 + rank)  # different data per rank
        for _ in range(5):
            x, y = torch.randn(32, 8, generator=g), torch.randn(32, 1, generator=g)
            opt.zero_grad()
            ((ddp(x) - y) ** 2).mean().backward()
            opt.step()
        flat_p = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        flat_s = torch.cat(
            [opt.state[p][k].reshape(-1) for p in model.parameters() for k in ("h", "c")]
        )
        torch.save({"p": flat_p, "s": flat_s}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_ddp_two_processes_keep_params_and_state_identical(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert torch.equal(r0["p"], r1["p"])
    assert torch.equal(r0["s"], r1["s"])
    assert r0["s"].abs().sum() > 0  # the optimizer really ran
