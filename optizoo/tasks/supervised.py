"""Optimizees defined by an ``nn.Module`` and a supervised data set (the architecture families).

The autoencoder, the transformer language model, the recurrent sequence model and the tabular
networks share one mechanism: the task builds its network once (a *template* ``nn.Module``
without buffers), and a problem's ``loss(params, step)`` runs the template with the given
tensors in place of its parameters (``torch.func.functional_call``), so one forward serves
meta-training (tensors that carry a graph), evaluation with ``torch.optim`` (``problem.model``,
a copy of the template with the initial weights) and plain functional use.

Every :meth:`ModuleTask.sample` draws, from the generator: a 63-bit seed for the minibatch order,
then (with ``train_size``) the subset of training examples the problem trains on, then the
initial weights (:func:`init_module_params`). Minibatch ``s`` depends only on ``(seed, s)``
(:class:`~optizoo.tasks.datasets.EpochSampler`); ``eval_loss`` is the loss on the whole test split,
which no problem ever trains on.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.func import functional_call

from optizoo._validate import positive_int
from optizoo.tasks.base import Problem, Task
from optizoo.tasks.datasets import (
    EpochSampler,
    check_dtype,
    check_generator,
    check_step,
    check_validation_split,
    draw_seed,
    dtype_name,
    resolve_device,
)

__all__ = [
    "ModuleProblem",
    "ModuleTask",
    "SupervisedData",
    "check_optional_size",
    "check_sizes",
    "init_module_params",
]

Params = dict[str, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]

_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d)
_RNNS = (nn.GRU, nn.LSTM, nn.RNN)


@dataclass(frozen=True)
class SupervisedData:
    """A train/test split: inputs ``x_*`` ``[N, ...]`` and targets ``y_*`` ``[N, ...]``."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor

    def to(self, device: torch.device, dtype: torch.dtype) -> SupervisedData:
        """A copy on ``device``; floating tensors in ``dtype`` (integer targets/tokens stay)."""

        def move(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)

        return SupervisedData(
            *(move(t) for t in (self.x_train, self.y_train, self.x_test, self.y_test))
        )

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])


def init_module_params(module: nn.Module, generator: torch.Generator) -> Params:
    """Initial values for every parameter of ``module``, drawn from ``generator`` (float32, CPU).

    PyTorch's default initializations, made reproducible: ``nn.Linear``/``nn.Conv*`` weights and
    biases ``U(−1/√fan_in, 1/√fan_in)``; recurrent layers (``nn.GRU``/``nn.LSTM``/``nn.RNN``)
    ``U(−1/√hidden, 1/√hidden)``; ``nn.Embedding`` ``N(0, 1)``; normalization layers weight 1,
    bias 0. Drawn in ``module.named_parameters()`` order. Any other parameter is an error.
    """
    out: Params = {}
    for mod_name, mod in module.named_modules():
        own = list(mod.named_parameters(recurse=False))
        if not own:
            continue
        prefix = f"{mod_name}." if mod_name else ""
        for pname, p in own:
            shape = tuple(p.shape)
            if isinstance(mod, _NORMS):
                value = torch.ones(shape) if pname == "weight" else torch.zeros(shape)
            elif isinstance(mod, nn.Embedding):
                value = torch.randn(shape, generator=generator)
            elif isinstance(mod, _RNNS):
                bound = mod.hidden_size**-0.5
                value = (torch.rand(shape, generator=generator) * 2 - 1) * bound
            elif isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                fan_in = mod.weight[0].numel()
                value = (torch.rand(shape, generator=generator) * 2 - 1) * fan_in**-0.5
            else:
                raise TypeError(
                    f"no initialization rule for parameter {prefix}{pname} of "
                    f"{type(mod).__name__}; use Linear, Conv, Embedding, GRU/LSTM or norm layers"
                )
            out[prefix + pname] = value
    return out


class ModuleProblem(Problem):
    """One optimizee: a template network, its initial weights, a minibatch order and the data.

    Args:
        module: the template ``nn.Module`` (parameters are replaced on every call; no buffers).
        init: initial parameters (on the problem's device); :meth:`params` returns copies.
        data: the split, on the problem's device.
        loss_fn: ``loss_fn(outputs, targets) -> scalar`` (mean over the batch).
        batch_size: minibatch size, or ``None`` for full-batch training.
        seed: the minibatch-order seed.
        train_index: rows of ``data.x_train`` this problem trains on (``None``: all).
    """

    def __init__(
        self,
        module: nn.Module,
        init: Params,
        data: SupervisedData,
        loss_fn: LossFn,
        batch_size: int | None,
        seed: int,
        train_index: Tensor | None = None,
    ) -> None:
        self._module = module
        self._init = init
        self._loss_fn = loss_fn
        self.seed = seed
        self.batch_size = batch_size
        x, y = data.x_train, data.y_train
        if train_index is not None:
            x, y = x.index_select(0, train_index), y.index_select(0, train_index)
        self._x_train, self._y_train = x, y
        self._x_test, self._y_test = data.x_test, data.y_test
        n = int(x.shape[0])
        self._sampler = None if batch_size is None else EpochSampler(n, batch_size, seed, x.device)
        self._model: nn.Module | None = None

    @property
    def num_train(self) -> int:
        """Training examples this problem draws its minibatches from."""
        return int(self._x_train.shape[0])

    @property
    def model(self) -> nn.Module:  # type: ignore[override]
        """A copy of the network with the initial weights (built on first use, then cached);
        ``dict(model.named_parameters())`` is a valid ``params`` argument of :meth:`loss`."""
        if self._model is None:
            model = copy.deepcopy(self._module)
            with torch.no_grad():
                for name, p in model.named_parameters():
                    p.copy_(self._init[name])
            self._model = model
        return self._model

    def params(self) -> Params:
        """Fresh copies of the initial weights (same values on every call)."""
        return {k: v.clone() for k, v in self._init.items()}

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        """Inputs and targets of minibatch ``step`` (the whole training set when full-batch)."""
        if self._sampler is None:
            check_step(step)
            return self._x_train, self._y_train
        idx = self._sampler(check_step(step))
        return self._x_train.index_select(0, idx), self._y_train.index_select(0, idx)

    def outputs(self, params: Params, x: Tensor) -> Tensor:
        """The network's outputs for inputs ``x`` with parameters ``params``."""
        return functional_call(self._module, params, (x,))

    def loss(self, params: Params, step: int) -> Tensor:
        """Mean training loss on minibatch ``step`` (0-dim tensor)."""
        x, y = self.batch(step)
        return self._loss_fn(self.outputs(params, x), y)

    def eval_loss(self, params: Params) -> Tensor:
        """Mean loss over the whole test split (gradients flow; wrap in no_grad)."""
        return self._loss_fn(self.outputs(params, self._x_test), self._y_test)

    def validation_split(self, k: int) -> ModuleProblem:
        """This problem trained on all but its last ``k`` training examples, with those ``k`` as
        its ``eval_loss`` split (same initial weights, loss and minibatch seed): a validation
        loss for meta-training that never touches the test split.

        Raises:
            ValueError: ``k`` leaves no training example, or fewer than a minibatch.
        """
        n = self.num_train
        check_validation_split(k, n, self.batch_size)
        x, y = self._x_train, self._y_train
        split = SupervisedData(x[: n - k], y[: n - k], x[n - k :], y[n - k :])
        return ModuleProblem(
            self._module, self._init, split, self._loss_fn, self.batch_size, self.seed
        )


def check_sizes(value: object, name: str, *, allow_empty: bool = True) -> tuple[int, ...]:
    """``value`` (an int or a sequence of positive ints) as a tuple of ints."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ValueError(f"{name} must be a sequence of positive ints such as (32,), got {value!r}")
    out = tuple(positive_int(v, f"every entry of {name}") for v in value)
    if not out and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    return out


def check_optional_size(value: object, name: str) -> int | None:
    """``None`` or a positive int."""
    return None if value is None else positive_int(value, name)


class ModuleTask(Task):
    """Shared part of the module-based tasks: data per device, batch size, subsets, sampling.

    Subclasses set ``name``, build ``self._module`` (via :meth:`_set_module`) and the CPU split
    ``self._cpu_data`` in ``__init__``, implement :meth:`_loss_fn` and :meth:`config`.

    Args:
        batch_size: minibatch size, or ``None`` for full-batch.
        train_size: train each problem on a random subset of this many training examples (drawn
            per problem from the generator; ``None``: all of them). Meta-training uses it to
            vary the data between problems.
        dtype: floating dtype of the data and weights.
    """

    name: ClassVar[str] = "module"

    def __init__(
        self, batch_size: int | None, train_size: int | None, dtype: torch.dtype | str
    ) -> None:
        self.batch_size = check_optional_size(batch_size, "batch_size")
        self.train_size = check_optional_size(train_size, "train_size")
        self.dtype = check_dtype(dtype)
        self._on_device: dict[torch.device, tuple[SupervisedData, nn.Module]] = {}

    def _check_data(self, data: SupervisedData) -> None:
        n = data.num_train
        if self.train_size is not None and self.train_size > n:
            raise ValueError(
                f"train_size {self.train_size} exceeds the {n} training examples of {self!r}; "
                f"use at most {n}, or None for all"
            )
        usable = self.train_size or n
        if self.batch_size is not None and self.batch_size > usable:
            raise ValueError(
                f"batch_size {self.batch_size} exceeds the {usable} training examples a problem "
                f"of {self!r} trains on; use at most {usable}, or None for full-batch"
            )

    def _set_module(self, build: Callable[[], nn.Module]) -> nn.Module:
        """Build the template with the global RNG untouched (its values are never used)."""
        with torch.random.fork_rng(devices=[]):
            module = build().to(self.dtype)
        if list(module.buffers()):
            raise TypeError("internal error: task modules must not have buffers")
        return module

    def _base_config(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "train_size": self.train_size,
            "dtype": dtype_name(self.dtype),
        }

    def _loss_fn(self) -> LossFn:
        raise NotImplementedError

    def _template(self) -> nn.Module:
        return self._module  # type: ignore[attr-defined,no-any-return]

    def _resources(self, device: torch.device) -> tuple[SupervisedData, nn.Module]:
        found = self._on_device.get(device)
        if found is None:
            data: SupervisedData = self._cpu_data  # type: ignore[attr-defined]
            found = (data.to(device, self.dtype), copy.deepcopy(self._template()).to(device))
            self._on_device[device] = found
        return found

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_on_device"] = {}
        return state

    def sample(
        self, generator: torch.Generator, device: torch.device | str | None = None
    ) -> ModuleProblem:
        """Draw the minibatch seed, the training subset (``train_size``), then the weights."""
        g = check_generator(generator)
        dev = resolve_device(device)
        seed = draw_seed(g)
        data, module = self._resources(dev)
        index = None
        if self.train_size is not None:
            index = torch.randperm(data.num_train, generator=g)[: self.train_size].to(dev)
        init = {
            k: v.to(dev, self.dtype) for k, v in init_module_params(self._template(), g).items()
        }
        return ModuleProblem(module, init, data, self._loss_fn(), self.batch_size, seed, index)
