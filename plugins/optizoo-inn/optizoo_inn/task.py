"""The ``inn-gaussian`` optimizee: train an invertible network on a Gaussian-bump inverse problem.

Toy data (after the *gaussian_INN* example of cINNamon, github.com/hagabbar/cINNamon; the
bump's exact form is our choice):

- ``x = pos ∈ [0, 1)²`` uniform: ``pos[0]`` is the bump's centre, ``pos[1]`` sets its width
  ``w = 0.1 + 0.2 * pos[1]``.
- The signal is sampled on the grid ``t_i = i / ndata`` (``i = 0 .. ndata-1``):
  ``sig_i = exp(-(t_i - pos[0])² / (2 w²))``; the observation is ``y = sig + noise`` with
  ``noise ~ N(0, noise_std²)`` per sample.

The network maps the padded input ``[x, pad]`` (``dim`` coordinates; ``pad`` is tiny Gaussian
noise of scale ``pad_noise``) to ``[z, y]`` with ``z`` of ``dim - ndata`` coordinates. It is
trained, as in the INN papers, with three weighted losses per minibatch:

1. ``L_y``: mean squared error between the predicted ``y`` and the observed ``y`` (supervised);
2. ``L_z``: MMD between the network's joint output ``(z, y)`` and ``(z ~ N(0, I), y)``;
3. ``L_x``: MMD between ``x`` and the inverse pass applied to ``(z ~ N(0, I), y)`` (its first
   two coordinates),

``loss = weights[0] * L_y + weights[1] * L_z + weights[2] * L_x``. MMD uses the multi-scale
inverse multiquadratic kernel (:mod:`optizoo_inn.mmd`).

Each step's minibatch is drawn from a generator seeded by ``(problem seed, step)`` only, so
``loss(params, step)`` is deterministic and two optimizers compared on one problem see the same
data.
"""

from __future__ import annotations

import hashlib
import math
import operator
from typing import Any, ClassVar

import torch
from torch import Tensor

from optizoo.tasks import Problem, Task
from optizoo_inn.inn import INN, init_params, inn_forward, inn_inverse, random_permutations
from optizoo_inn.mmd import mmd_multiscale

__all__ = ["GaussianINNProblem", "GaussianINNTask", "gaussian_bump_data"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _derived_seed(seed: int, tag: str) -> int:
    """A 63-bit seed that depends on ``(seed, tag)`` only (independent streams per step)."""
    digest = hashlib.blake2b(f"{seed}:{tag}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def gaussian_bump_data(
    n: int, ndata: int, noise_std: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """``n`` samples ``(x [n, 2], y [n, ndata])`` of the toy forward process (float32, CPU)."""
    pos = torch.rand(n, 2, generator=generator)
    t = torch.arange(ndata, dtype=torch.float32) / ndata
    width = 0.1 + 0.2 * pos[:, 1:2]
    sig = torch.exp(-0.5 * ((t - pos[:, 0:1]) / width).square())
    y = sig + noise_std * torch.randn(n, ndata, generator=generator)
    return pos, y


class GaussianINNProblem(Problem):
    """One INN (initial parameters, permutations) and its stream of minibatches.

    Attributes:
        seed: the problem's data seed (minibatch of step ``t`` depends on ``(seed, t)`` only).
        perms: fixed coordinate permutations between coupling blocks.
        num_instances: 1.
    """

    num_instances = 1

    def __init__(
        self,
        task: GaussianINNTask,
        init: dict[str, Tensor],
        perms: list[Tensor],
        seed: int,
        device: torch.device,
    ) -> None:
        self.task = task
        self.seed = int(seed)
        self.device = device
        self.perms = [p.to(device) for p in perms]
        self._init = {k: v.to(device, task.dtype) for k, v in init.items()}
        self._model: INN | None = None
        self._eval_batch: dict[str, Tensor] | None = None

    @property
    def model(self) -> INN:  # type: ignore[override]
        """An :class:`~optizoo_inn.inn.INN` whose ``named_parameters()`` match :meth:`params`."""
        if self._model is None:
            self._model = INN(self.params(), self.perms, self.task.clamp)
        return self._model

    def params(self) -> dict[str, Tensor]:
        """Fresh copies of the initial parameters (``4 * num_blocks`` tensors)."""
        return {k: v.clone() for k, v in self._init.items()}

    def batch(self, step: int | str, size: int | None = None) -> dict[str, Tensor]:
        """The minibatch of ``step``: padded input, observed ``y`` and two latent draws.

        Returns ``{"x": [B, dim], "y": [B, ndata], "z_prior": [B, nz], "z_rev": [B, nz]}``.
        """
        t = self.task
        g = torch.Generator().manual_seed(_derived_seed(self.seed, str(step)))
        n = size or t.batch_size
        pos, y = gaussian_bump_data(n, t.ndata, t.noise_std, g)
        pad = t.pad_noise * torch.randn(n, t.dim - 2, generator=g)
        nz = t.dim - t.ndata
        out = {
            "x": torch.cat((pos, pad), dim=1),
            "y": y,
            "z_prior": torch.randn(n, nz, generator=g),
            "z_rev": torch.randn(n, nz, generator=g),
        }
        return {k: v.to(self.device, t.dtype) for k, v in out.items()}

    def losses(self, params: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The three unweighted losses ``{"y": L_y, "z": L_z, "x": L_x}`` (scalars) on ``batch``."""
        t = self.task
        nz = t.dim - t.ndata
        x, y = batch["x"], batch["y"]
        out = inn_forward(params, x, self.perms, t.clamp)
        loss_y = (out[:, nz:] - y).square().mean()
        loss_z = mmd_multiscale(out, torch.cat((batch["z_prior"], y), dim=1))
        x_rev = inn_inverse(params, torch.cat((batch["z_rev"], y), dim=1), self.perms, t.clamp)
        loss_x = mmd_multiscale(x_rev[:, :2], x[:, :2])
        return {"y": loss_y, "z": loss_z, "x": loss_x}

    def _weighted(self, parts: dict[str, Tensor]) -> Tensor:
        wy, wz, wx = self.task.weights
        return wy * parts["y"] + wz * parts["z"] + wx * parts["x"]

    def loss(self, params: dict[str, Tensor], step: int = 0) -> Tensor:
        """Weighted training loss on the minibatch of ``step`` (0-based; deterministic)."""
        step = operator.index(step)
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return self._weighted(self.losses(params, self.batch(step)))

    def eval_loss(self, params: dict[str, Tensor]) -> Tensor:
        """Weighted loss on a fixed held-out batch of ``task.eval_batch_size`` samples."""
        if self._eval_batch is None:
            self._eval_batch = self.batch("eval", self.task.eval_batch_size)
        return self._weighted(self.losses(params, self._eval_batch))


class GaussianINNTask(Task):
    """Invertible networks of affine coupling blocks on the Gaussian-bump inverse problem.

    Args:
        num_blocks: affine coupling blocks (2-4 keeps a step fast).
        hidden: hidden units of every subnet.
        dim: padded width of the network (input ``x`` is 2-dimensional, padded to ``dim``).
        ndata: observed signal samples ``y``; the latent ``z`` gets ``dim - ndata`` coordinates.
        batch_size: samples per training minibatch.
        eval_batch_size: samples in the held-out batch of ``eval_loss``.
        noise_std: standard deviation of the observation noise on ``y``.
        pad_noise: standard deviation of the noise filling ``x``'s padding.
        weights: ``(w_y, w_z, w_x)``, weights of the supervised, latent-MMD and inverse-MMD
            losses.
        clamp: soft-clamp bound of the coupling blocks' log-scales.
        dtype: ``torch.float32`` or ``torch.float64`` (or its name). Data and initial values
            are always drawn in float32 on the CPU, so one seed gives the same problem for
            every dtype and device.
    """

    name: ClassVar[str] = "inn-gaussian"

    def __init__(
        self,
        num_blocks: int = 3,
        hidden: int = 32,
        dim: int = 8,
        ndata: int = 6,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        noise_std: float = 0.05,
        pad_noise: float = 1e-3,
        weights: tuple[float, float, float] | list[float] = (1.0, 10.0, 10.0),
        clamp: float = 2.0,
        dtype: torch.dtype | str = torch.float32,
    ) -> None:
        for name, value, low in (
            ("num_blocks", num_blocks, 1),
            ("hidden", hidden, 1),
            ("dim", dim, 3),
            ("ndata", ndata, 1),
            ("batch_size", batch_size, 2),
            ("eval_batch_size", eval_batch_size, 2),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if ndata > dim - 1:
            raise ValueError(
                f"ndata={ndata} leaves no latent coordinate in dim={dim}; use ndata <= dim - 1"
            )
        for name, value in (("noise_std", noise_std), ("pad_noise", pad_noise)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not (isinstance(clamp, (int, float)) and math.isfinite(clamp) and clamp > 0):
            raise ValueError(f"clamp must be a positive finite number, got {clamp!r}")
        weights = tuple(float(w) for w in weights)
        if len(weights) != 3 or not all(math.isfinite(w) and w >= 0 for w in weights):
            raise ValueError(f"weights must be three finite numbers >= 0, got {weights!r}")
        if isinstance(dtype, str):
            if dtype not in _DTYPES:
                raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
            dtype = _DTYPES[dtype]
        if dtype not in _DTYPES.values():
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
        self.num_blocks, self.hidden, self.dim, self.ndata = num_blocks, hidden, dim, ndata
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.noise_std, self.pad_noise = float(noise_std), float(pad_noise)
        self.weights: tuple[float, float, float] = weights  # type: ignore[assignment]
        self.clamp = float(clamp)
        self.dtype: torch.dtype = dtype

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-friendly), e.g. for weight-file metadata."""
        return {
            "num_blocks": self.num_blocks,
            "hidden": self.hidden,
            "dim": self.dim,
            "ndata": self.ndata,
            "batch_size": self.batch_size,
            "eval_batch_size": self.eval_batch_size,
            "noise_std": self.noise_std,
            "pad_noise": self.pad_noise,
            "weights": list(self.weights),
            "clamp": self.clamp,
            "dtype": str(self.dtype).removeprefix("torch."),
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"GaussianINNTask({args})"

    def sample(
        self, generator: torch.Generator, device: torch.device | str | None = None
    ) -> GaussianINNProblem:
        """Draw a problem: data seed, then initial parameters, then permutations."""
        if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
            raise TypeError(f"sample() needs a CPU torch.Generator, got {generator!r}")
        dev = torch.device(device) if device is not None else torch.device("cpu")
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        init = init_params(self.num_blocks, self.dim, self.hidden, generator)
        perms = random_permutations(self.num_blocks, self.dim, generator)
        return GaussianINNProblem(self, init, perms, seed, dev)
