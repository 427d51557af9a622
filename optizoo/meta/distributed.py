"""Data-parallel meta-training over ``torch.distributed`` (gloo on CPU, NCCL on GPU).

Each process (rank) unrolls its own share of the meta-batch of problems; after the meta-backward
the meta-gradients are averaged across ranks (one all-reduce per dtype), so every rank takes the
same meta-optimizer step and the rule's weights stay identical everywhere. Launch with
``torchrun --nproc-per-node N -m optizoo.cli train ...`` (or any script that builds a
:class:`~optizoo.meta.MetaTrainer`): :func:`init_from_env` joins the process group that
``torchrun``'s environment variables describe.

Without an initialized process group every function here is a cheap no-op (world size 1).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "all_gather",
    "average_gradients",
    "barrier",
    "broadcast_module",
    "gather_episode",
    "init_from_env",
    "is_main",
    "local_device",
    "world",
]


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` without a process group."""
    if not _active():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def is_main() -> bool:
    """Whether this process writes files and prints (rank 0)."""
    return world()[0] == 0


def local_device(device: str | torch.device | None) -> torch.device:
    """``device``, with a bare ``"cuda"`` mapped to ``cuda:LOCAL_RANK`` under ``torchrun``."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and dev.index is None and "LOCAL_RANK" in os.environ:
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return dev


def init_from_env(device: str | torch.device | None = None) -> bool:
    """Join the process group described by ``torchrun``'s environment, if any.

    Uses NCCL when ``device`` is a CUDA device, gloo otherwise. Returns ``True`` when this call
    created the group (the caller then destroys it), ``False`` when there is nothing to do (no
    ``WORLD_SIZE`` > 1 in the environment, or a group already exists).
    """
    if _active() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    dev = local_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return True


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy ``module``'s parameters and buffers from rank ``src`` to every rank (in place)."""
    if not _active():
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src)


def _by_dtype(tensors: Iterable[Tensor]) -> dict[torch.dtype, list[Tensor]]:
    groups: dict[torch.dtype, list[Tensor]] = {}
    for t in tensors:
        groups.setdefault(t.dtype, []).append(t)
    return groups


def average_gradients(params: Iterable[nn.Parameter], extra: Tensor | None = None) -> Tensor | None:
    """All-reduce-average the ``.grad`` of ``params`` (in place) across ranks.

    Missing gradients count as zeros. ``extra`` (e.g. the meta-loss, for logging) is averaged in
    the same collective and returned. One all-reduce per dtype; no-op at world size 1.
    """
    _, size = world()
    if size == 1:
        return extra
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    tensors: list[Tensor] = [p.grad for p in params]
    if extra is not None:
        extra = extra.detach().reshape(1).clone()
        tensors.append(extra)
    for group in _by_dtype(tensors).values():
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(size)
        offset = 0
        for t in group:
            n = t.numel()
            t.copy_(flat[offset : offset + n].view_as(t))
            offset += n
    return None if extra is None else extra.reshape(())


def all_gather(tensor: Tensor) -> list[Tensor]:
    """Every rank's ``tensor`` (same shape and dtype on every rank), in rank order."""
    _, size = world()
    if size == 1:
        return [tensor]
    out = [torch.empty_like(tensor) for _ in range(size)]
    dist.all_gather(out, tensor.contiguous())
    return out


def barrier() -> None:
    """Wait for every rank (no-op at world size 1)."""
    if _active():
        dist.barrier()


def gather_episode(
    inner: tuple[Tensor, dict[str, Tensor], int] | None, episode: int, device: torch.device
) -> dict[str, Any] | None:
    """Every rank's mid-episode state, gathered for a checkpoint (collective: all ranks call it).

    Args:
        inner: this rank's ``(flat, state, t)``: the optimizee parameters ``[n]`` of its share of
            the problems, the rule state (tensors ``[n, ...]``) and the episode step ``t``; or
            ``None`` between episodes.
        episode: the episode the parameters belong to.
        device: this rank's device (for the agreement flags).

    Returns:
        ``{"t", "episode", "flat": [per rank, CPU], "state": [per rank {name: CPU tensor}]}``, or
        ``None`` when the ranks are between episodes.

    Raises:
        RuntimeError: some ranks are mid-episode and others are not (a bug).
    """
    have = inner is not None
    flags = all_gather(torch.full((1,), 1.0 if have else 0.0, device=device))
    if not all(bool(f.item()) for f in flags):
        if have and len(flags) > 1:
            raise RuntimeError("ranks disagree on the episode state; this is a bug")
        return None
    assert inner is not None
    flat, state, t = inner
    return {
        "t": t,
        "episode": episode,
        "flat": [x.cpu() for x in all_gather(flat)],
        "state": [
            {k: x.cpu() for k, x in zip(sorted(state), parts)}
            for parts in zip(*(all_gather(state[k]) for k in sorted(state)))
        ],
    }
