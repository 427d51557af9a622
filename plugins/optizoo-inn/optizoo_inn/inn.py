"""A small invertible network of affine coupling blocks, written functionally.

Each coupling block splits its input ``u = [u1, u2]`` (``d1 = dim // 2``, ``d2 = dim - d1``) and
computes (RealNVP / GLOW-style, both halves transformed)::

    s2, t2 = net2(u1);  v2 = u2 * exp(c(s2)) + t2
    s1, t1 = net1(v2);  v1 = u1 * exp(c(s1)) + t1
    output = [v1, v2]

with the soft clamp ``c(s) = clamp * (2/π) * atan(s / clamp)`` that keeps every scale factor in
``(exp(-clamp), exp(clamp))``. The inverse undoes the two steps in reverse order, so the network
is invertible exactly (up to floating-point rounding) for any parameter values. Between blocks
a fixed random permutation of the coordinates mixes the halves.

Every subnet is ``Linear(d_in, hidden) -> ReLU -> Linear(hidden, 2 * d_out)`` (scale and shift).
The parameters live in a flat ``dict[str, Tensor]`` whose names match :class:`INN`'s
``named_parameters()`` (``"blocks.0.net1.w1"``...), so the same functions serve functional
meta-training (tensors carrying a graph) and ``torch.optim`` on real ``nn.Parameter``\\ s.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["INN", "init_params", "inn_forward", "inn_inverse", "random_permutations"]


def _soft_clamp(s: Tensor, clamp: float) -> Tensor:
    return (2.0 * clamp / math.pi) * torch.atan(s / clamp)


def _subnet(params: dict[str, Tensor], prefix: str, u: Tensor) -> tuple[Tensor, Tensor]:
    """``[B, d_in] -> (scale [B, d_out], shift [B, d_out])``."""
    h = torch.relu(torch.addmm(params[prefix + "b1"], u, params[prefix + "w1"].t()))
    out = torch.addmm(params[prefix + "b2"], h, params[prefix + "w2"].t())
    s, t = out.chunk(2, dim=-1)
    return s, t


def _block_forward(params: dict[str, Tensor], i: int, u: Tensor, clamp: float) -> Tensor:
    d1 = u.shape[-1] // 2
    u1, u2 = u[:, :d1], u[:, d1:]
    s2, t2 = _subnet(params, f"blocks.{i}.net2.", u1)
    v2 = u2 * torch.exp(_soft_clamp(s2, clamp)) + t2
    s1, t1 = _subnet(params, f"blocks.{i}.net1.", v2)
    v1 = u1 * torch.exp(_soft_clamp(s1, clamp)) + t1
    return torch.cat((v1, v2), dim=-1)


def _block_inverse(params: dict[str, Tensor], i: int, v: Tensor, clamp: float) -> Tensor:
    d1 = v.shape[-1] // 2
    v1, v2 = v[:, :d1], v[:, d1:]
    s1, t1 = _subnet(params, f"blocks.{i}.net1.", v2)
    u1 = (v1 - t1) * torch.exp(-_soft_clamp(s1, clamp))
    s2, t2 = _subnet(params, f"blocks.{i}.net2.", u1)
    u2 = (v2 - t2) * torch.exp(-_soft_clamp(s2, clamp))
    return torch.cat((u1, u2), dim=-1)


def inn_forward(
    params: dict[str, Tensor], x: Tensor, perms: list[Tensor], clamp: float = 2.0
) -> Tensor:
    """Map inputs ``x`` ``[B, dim]`` to outputs ``[B, dim]``.

    ``perms`` holds one index permutation ``[dim]`` per gap between blocks (``num_blocks - 1``);
    it is applied to the coordinates after every block but the last.
    """
    out = x
    for i in range(len(perms) + 1):
        out = _block_forward(params, i, out, clamp)
        if i < len(perms):
            out = out[:, perms[i]]
    return out


def inn_inverse(
    params: dict[str, Tensor], y: Tensor, perms: list[Tensor], clamp: float = 2.0
) -> Tensor:
    """The exact inverse of :func:`inn_forward`: ``inn_inverse(p, inn_forward(p, x)) == x``."""
    out = y
    for i in reversed(range(len(perms) + 1)):
        if i < len(perms):
            out = out[:, torch.argsort(perms[i])]
        out = _block_inverse(params, i, out, clamp)
    return out


def random_permutations(num_blocks: int, dim: int, generator: torch.Generator) -> list[Tensor]:
    """``num_blocks - 1`` random permutations of ``range(dim)`` (int64, CPU)."""
    return [torch.randperm(dim, generator=generator) for _ in range(num_blocks - 1)]


def init_params(
    num_blocks: int, dim: int, hidden: int, generator: torch.Generator, out_scale: float = 0.1
) -> dict[str, Tensor]:
    """Initial parameters (float32, CPU) drawn from ``generator``.

    First layers: uniform ``±1/sqrt(fan_in)`` (PyTorch's ``nn.Linear`` default bound). Second
    layers: the same times ``out_scale``, so every block starts close to the identity map (a
    common choice for coupling networks; it keeps early MMD gradients well scaled).
    """
    d1 = dim // 2
    d2 = dim - d1
    params: dict[str, Tensor] = {}

    def uniform(shape: tuple[int, ...], bound: float) -> Tensor:
        return (torch.rand(shape, generator=generator) * 2.0 - 1.0) * bound

    for i in range(num_blocks):
        for net, d_in, d_out in (("net1", d2, d1), ("net2", d1, d2)):
            prefix = f"blocks.{i}.{net}."
            b1 = 1.0 / math.sqrt(d_in)
            b2 = out_scale / math.sqrt(hidden)
            params[prefix + "w1"] = uniform((hidden, d_in), b1)
            params[prefix + "b1"] = uniform((hidden,), b1)
            params[prefix + "w2"] = uniform((2 * d_out, hidden), b2)
            params[prefix + "b2"] = uniform((2 * d_out,), b2)
    return params


class _Subnet(nn.Module):
    def __init__(self, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> None:
        super().__init__()
        self.w1, self.b1 = nn.Parameter(w1), nn.Parameter(b1)
        self.w2, self.b2 = nn.Parameter(w2), nn.Parameter(b2)


class _Block(nn.Module):
    def __init__(self, params: dict[str, Tensor], i: int) -> None:
        super().__init__()
        for net in ("net1", "net2"):
            p = f"blocks.{i}.{net}."
            setattr(self, net, _Subnet(*(params[p + k] for k in ("w1", "b1", "w2", "b2"))))


class INN(nn.Module):
    """``nn.Module`` view of the network: parameters named exactly like :func:`init_params`.

    Args:
        params: initial values (copied into ``nn.Parameter``\\ s).
        perms: the fixed permutations between blocks (stored as buffers ``perm0``, ...).
        clamp: soft-clamp bound of the log-scales.
    """

    def __init__(self, params: dict[str, Tensor], perms: list[Tensor], clamp: float = 2.0) -> None:
        super().__init__()
        num_blocks = len(perms) + 1
        self.blocks = nn.ModuleList(_Block(params, i) for i in range(num_blocks))
        for i, perm in enumerate(perms):
            self.register_buffer(f"perm{i}", perm.clone())
        self.clamp = float(clamp)

    def _perms(self) -> list[Tensor]:
        return [getattr(self, f"perm{i}") for i in range(len(self.blocks) - 1)]

    def forward(self, x: Tensor) -> Tensor:
        """``[B, dim] -> [B, dim]``."""
        return inn_forward(dict(self.named_parameters()), x, self._perms(), self.clamp)

    def inverse(self, y: Tensor) -> Tensor:
        """``[B, dim] -> [B, dim]``, the exact inverse of :meth:`forward`."""
        return inn_inverse(dict(self.named_parameters()), y, self._perms(), self.clamp)
