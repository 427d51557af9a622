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


class _Scaled(torch.nn.Module):
    """A linear layer times a learned scalar: the scalar's shard is empty on rank 1 of 2."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(4, 3)
        self.scale = torch.nn.Parameter(torch.full((1,), 0.7))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * self.scale


def _train_default(model: torch.nn.Module, steps: int = 4) -> dict[str, torch.Tensor]:
    from optizoo.optim import LSTMOptimizer

    # the scalar in a param group of its own: on rank 1 its bucket holds no coordinates at all
    opt = LSTMOptimizer([{"params": [model.lin.weight, model.lin.bias]}, {"params": [model.scale]}])
    g = torch.Generator().manual_seed(5)
    for _ in range(steps):
        x, y = torch.randn(16, 4, generator=g), torch.randn(16, 3, generator=g)
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
    return {name: p.detach() for name, p in model.named_parameters()}


def _fsdp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import datetime

    torch.set_num_threads(1)
    dist.init_process_group(  # a rank left waiting in a collective fails in 60 s, not 30 min
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        model = fully_shard(_Scaled(), mesh=init_device_mesh("cpu", (world,)))
        sizes = {name: p.to_local().numel() for name, p in model.named_parameters()}
        params = {name: p.full_tensor() for name, p in _train_default(model).items()}
        torch.save({"params": params, "sizes": sizes}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_fsdp2_default_with_an_empty_local_shard_matches_unsharded(tmp_path):
    """The default (per-tensor) optimizer under fully_shard over 2 gloo processes, where one
    rank's bucket has no coordinates: that rank still joins the statistics' all-reduce (no
    hang), and both ranks end with the unsharded run's parameters (rtol 1e-5, atol 1e-6:
    partial sums added in another order)."""
    want = _train_default(_Scaled())
    mp.spawn(_fsdp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[1]["sizes"]["scale"] == 0  # the scalar's shard on rank 1 is empty
    assert set(ranks[0]["params"]) == set(want) == {"lin.weight", "lin.bias", "scale"}
    for r in ranks:
        for name, ref in want.items():
            torch.testing.assert_close(r["params"][name], ref, rtol=1e-5, atol=1e-6)
    assert not torch.equal(want["scale"], torch.full((1,), 0.7))  # the scalar was stepped
