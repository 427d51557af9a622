"""Image classifiers as optimizees: the paper's small MLP, and the plumbing the conv task shares.

Andrychowicz et al. (2016), section 3.2: an MLP with one hidden layer of 20 sigmoid units trained
on MNIST with minibatches of 128 and cross-entropy loss; the generalization experiments change
the width (40 units), depth (2 hidden layers) and activation (ReLU). :class:`MLPTask` covers all
of these with ``hidden`` and ``activation``. By default it runs offline on the bundled 8×8 digits
(64 inputs; see :mod:`optizoo.tasks.datasets`); ``dataset="mnist", data_dir=...`` reads MNIST
(784 inputs) from local IDX files.

Every :meth:`~ClassifierTask.sample` draws a new problem: a 63-bit seed for its minibatch order,
then fresh initial weights (each weight and bias ~ U(−1/√fan_in, 1/√fan_in), PyTorch's default
for ``nn.Linear``/``nn.Conv2d``, drawn in float32 on the CPU from the generator). Minibatch ``s``
depends only on ``(seed, s)`` (:class:`~optizoo.tasks.datasets.EpochSampler`), so two optimizers
run on one problem see the same batches. ``loss`` is the mean cross-entropy over the minibatch;
``eval_loss`` is the mean cross-entropy over the whole test split.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optizoo._validate import positive_int
from optizoo.tasks.base import Problem, Task
from optizoo.tasks.datasets import (
    DATASETS,
    EpochSampler,
    ImageDataset,
    check_dtype,
    check_generator,
    check_step,
    check_validation_split,
    draw_seed,
    dtype_name,
    load_dataset,
    resolve_device,
)

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "ClassifierProblem",
    "ClassifierTask",
    "MLPTask",
    "UninitializedLinear",
]

Params = dict[str, Tensor]
ForwardFn = Callable[[Params, Tensor], Tensor]

#: activation name → (function used by ``loss``, module used by ``problem.model``)
ACTIVATIONS: dict[str, tuple[Callable[[Tensor], Tensor], type[nn.Module]]] = {
    "sigmoid": (torch.sigmoid, nn.Sigmoid),
    "relu": (torch.relu, nn.ReLU),
    "tanh": (torch.tanh, nn.Tanh),
    "gelu": (F.gelu, nn.GELU),
}


def uniform_init(
    generator: torch.Generator, shapes: dict[str, tuple[int, ...]], fan_ins: dict[str, int]
) -> Params:
    """``U(−1/√fan_in, 1/√fan_in)`` float32 CPU tensors, drawn in ``shapes``' order."""
    out = {}
    for name, shape in shapes.items():
        bound = fan_ins[name] ** -0.5
        out[name] = (torch.rand(shape, generator=generator) * 2 - 1) * bound
    return out


class ClassifierProblem(Problem):
    """One classification optimizee: a network's initial weights, a minibatch order, the data.

    Args:
        data: the dataset, already on the problem's device and dtype.
        forward: ``forward(params, x) -> logits [B, classes]``, pure in ``params``.
        init: initial parameters (on the device); :meth:`params` returns copies.
        make_model: builds an uninitialized ``nn.Module`` whose ``named_parameters`` have the
            keys and shapes of ``init`` and whose ``forward(x)`` gives logits.
        batch_size: minibatch size, or ``None`` for full-batch training (``step`` unused).
        seed: the problem's minibatch-order seed.
        flatten: feed ``[B, C·H·W]`` vectors (MLP) instead of ``[B, C, H, W]`` images.
    """

    def __init__(
        self,
        data: ImageDataset,
        forward: ForwardFn,
        init: Params,
        make_model: Callable[[], nn.Module],
        batch_size: int | None,
        seed: int,
        *,
        flatten: bool,
    ) -> None:
        self.data = data
        self.seed = seed
        self.batch_size = batch_size
        self._forward = forward
        self._init = init
        self._make_model = make_model
        self._model: nn.Module | None = None
        shape = (lambda t: t.flatten(1)) if flatten else (lambda t: t)
        self._x_train, self._y_train = shape(data.x_train), data.y_train
        self._x_test, self._y_test = shape(data.x_test), data.y_test
        n = int(self._y_train.shape[0])
        self._sampler = (
            None if batch_size is None else EpochSampler(n, batch_size, seed, data.y_train.device)
        )

    @property
    def model(self) -> nn.Module:  # type: ignore[override]
        """An ``nn.Module`` with the initial weights; ``dict(model.named_parameters())`` is a
        valid ``params`` argument of :meth:`loss`. Built on first use, then the same object."""
        if self._model is None:
            model = self._make_model()
            own = dict(model.named_parameters())
            if {k: tuple(v.shape) for k, v in own.items()} != {
                k: tuple(v.shape) for k, v in self._init.items()
            }:
                raise RuntimeError("internal error: model parameters do not match params()")
            with torch.no_grad():
                for name, value in self._init.items():
                    own[name].copy_(value)
            self._model = model
        return self._model

    def params(self) -> Params:
        """Fresh copies of the initial weights (same values on every call)."""
        return {k: v.clone() for k, v in self._init.items()}

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        """Minibatch of ``step``: inputs (``[B, C·H·W]`` for the MLP, ``[B, C, H, W]`` for conv
        nets) and int64 labels ``[B]``; the whole training split when ``batch_size`` is None."""
        if self._sampler is None:
            check_step(step)
            return self._x_train, self._y_train
        idx = self._sampler(check_step(step))
        return self._x_train.index_select(0, idx), self._y_train.index_select(0, idx)

    def logits(self, params: Params, x: Tensor) -> Tensor:
        """Network outputs ``[B, classes]`` for inputs ``x`` (shaped as :meth:`batch` gives)."""
        return self._forward(params, x)

    def loss(self, params: Params, step: int) -> Tensor:
        """Mean cross-entropy on minibatch ``step`` (0-dim tensor)."""
        x, y = self.batch(step)
        return F.cross_entropy(self._forward(params, x), y)

    # -- the stacking protocol of optizoo.meta.batched (many problems as one vmapped loss)
    def stack_signature(self) -> tuple[Any, ...]:
        """Problems with equal signatures share :meth:`pure_loss` (same network, batch size)."""
        return (self._forward, self.batch_size, id(self.data), tuple(self._x_train.shape[1:]))

    def loss_inputs(self, step: int) -> tuple[Tensor, Tensor]:
        """What :meth:`loss` reads at ``step``: the minibatch ``(x, y)`` (see :meth:`batch`)."""
        return self.batch(step)

    @staticmethod
    def stacked_loss_inputs(
        problems: Sequence[ClassifierProblem], step: int
    ) -> tuple[tuple[Tensor, Tensor], tuple[int | None, int | None]]:
        """The minibatches of problems with one signature, gathered with one ``index_select``:
        ``((x [P, B, ...], y [P, B]), in_dims)``; the shared full batch when ``batch_size`` is
        None."""
        first = problems[0]
        if first._sampler is None:
            x, y = first.batch(step)
            return (x, y), (None, None)
        idx = torch.stack([p._sampler(check_step(step)) for p in problems])
        x = first._x_train.index_select(0, idx.reshape(-1))
        y = first._y_train.index_select(0, idx.reshape(-1))
        return (x.unflatten(0, idx.shape), y.view(idx.shape)), (0, 0)

    def pure_loss(self, params: Params, x: Tensor, y: Tensor) -> Tensor:
        """:meth:`loss` as a pure function of the parameters and the minibatch."""
        return F.cross_entropy(self._forward(params, x), y)

    def eval_loss(self, params: Params) -> Tensor:
        """Mean cross-entropy over the whole test split (gradients flow; wrap in no_grad)."""
        return F.cross_entropy(self._forward(params, self._x_test), self._y_test)

    @property
    def num_train(self) -> int:
        """Training examples this problem draws its minibatches from."""
        return int(self._y_train.shape[0])

    def validation_split(self, k: int) -> ClassifierProblem:
        """This problem trained on all but its last ``k`` training examples, with those ``k`` as
        its ``eval_loss`` split (same initial weights and minibatch seed).

        Raises:
            ValueError: ``k`` leaves no training example, or fewer than a minibatch.
        """
        data = self.data
        n = int(data.y_train.shape[0])
        check_validation_split(k, n, self.batch_size)
        split = dataclasses.replace(
            data,
            x_train=data.x_train[: n - k],
            y_train=data.y_train[: n - k],
            x_test=data.x_train[n - k :],
            y_test=data.y_train[n - k :],
        )
        return ClassifierProblem(
            split,
            self._forward,
            self._init,
            self._make_model,
            self.batch_size,
            self.seed,
            flatten=self._x_train.dim() == 2,
        )

    def accuracy(self, params: Params, split: str = "test") -> float:
        """Fraction of ``split`` (``"test"`` or ``"train"``) classified correctly."""
        if split not in ("test", "train"):
            raise ValueError(f"split must be 'test' or 'train', got {split!r}")
        x, y = (self._x_test, self._y_test) if split == "test" else (self._x_train, self._y_train)
        with torch.no_grad():
            return float((self._forward(params, x).argmax(1) == y).float().mean())


class ClassifierTask(Task):
    """Shared part of the image-classification tasks: data, batch size, dtype, sampling.

    Subclasses implement :meth:`_shapes` (parameter name → (shape, fan_in), in init order),
    :meth:`_forward`, :meth:`_make_model` and set ``_flatten``.
    """

    _flatten: ClassVar[bool] = True

    def __init__(
        self,
        batch_size: int | None,
        dataset: str,
        data_dir: str | os.PathLike[str] | None,
        dtype: torch.dtype | str,
    ) -> None:
        if dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {list(DATASETS)}, got {dataset!r}")
        self.data = load_dataset(dataset, data_dir)
        self.dataset = dataset
        self.data_dir = None if data_dir is None else os.fspath(data_dir)
        n = int(self.data.y_train.shape[0])
        if batch_size is not None:
            positive_int(batch_size, "batch_size")
            if batch_size > n:
                raise ValueError(
                    f"batch_size {batch_size} exceeds the {n} training examples of "
                    f"{dataset!r}; use at most {n}, or None for full-batch"
                )
        self.batch_size = batch_size
        self.dtype = check_dtype(dtype)
        self._on_device: dict[torch.device, ImageDataset] = {}

    def __getstate__(self) -> dict[str, Any]:
        # pickles (multiprocessing workers) carry the dataset's name, not its tensors
        state = self.__dict__.copy()
        state["data"] = None
        state["_on_device"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.data = load_dataset(self.dataset, self.data_dir)

    @property
    def num_inputs(self) -> int:
        """Pixels per image (64 for digits, 784 for MNIST)."""
        c, h, w = self.data.image_shape
        return c * h * w

    def _base_config(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "dataset": self.dataset,
            "data_dir": self.data_dir,
            "dtype": dtype_name(self.dtype),
        }

    def _data_on(self, device: torch.device) -> ImageDataset:
        data = self._on_device.get(device)
        if data is None:
            data = self.data.to(device, self.dtype)
            self._on_device[device] = data
        return data

    def _shapes(self) -> dict[str, tuple[tuple[int, ...], int]]:
        raise NotImplementedError

    def _constants(self) -> Params:
        """Parameters with a constant initial value (e.g. normalization scales): name → value.
        Drawn after (and without consuming) the generator's random weights."""
        return {}

    def _forward(self, params: Params, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _make_model(self, device: torch.device) -> nn.Module:
        raise NotImplementedError

    def sample(
        self, generator: torch.Generator, device: torch.device | str | None = None
    ) -> ClassifierProblem:
        """Draw the minibatch-order seed, then the initial weights, from ``generator``."""
        g = check_generator(generator)
        dev = resolve_device(device)
        seed = draw_seed(g)
        spec = self._shapes()
        shapes = {k: s for k, (s, _) in spec.items()}
        fan_ins = {k: f for k, (_, f) in spec.items()}
        init = {k: v.to(dev, self.dtype) for k, v in uniform_init(g, shapes, fan_ins).items()}
        init.update({k: v.to(dev, self.dtype) for k, v in self._constants().items()})
        return ClassifierProblem(
            self._data_on(dev),
            self._forward,
            init,
            functools.partial(self._make_model, dev),
            self.batch_size,
            seed,
            flatten=self._flatten,
        )


class UninitializedLinear(nn.Linear):
    """``nn.Linear`` that skips its random init (values are copied in afterwards).

    Unlike ``nn.utils.skip_init`` (which goes through the meta device and costs ~1 s on first
    use) this is free, and it leaves the global RNG untouched.
    """

    def reset_parameters(self) -> None:
        pass


class MLP(nn.Module):
    """Fully connected classifier: flatten → (Linear → activation)* → Linear.

    Parameter names: ``layers.{i}.weight`` ``[out, in]`` and ``layers.{i}.bias`` ``[out]``.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str = "sigmoid",
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            UninitializedLinear(a, b, device=device, dtype=dtype)
            for a, b in itertools.pairwise(sizes)
        )
        self.act = ACTIVATIONS[activation][1]()

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, classes]`` for inputs ``[B, ...]`` (flattened here)."""
        h = x.flatten(1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = self.act(h)
        return h


def _check_hidden(hidden: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(hidden, int) and not isinstance(hidden, bool):
        hidden = (hidden,)
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise ValueError(
            f"hidden must be a sequence of positive ints such as (20,), got {hidden!r}"
        )
    return tuple(positive_int(h, "every hidden width") for h in hidden)


def check_activation(activation: str) -> str:
    """``activation`` if it names a known activation."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    return activation


class MLPTask(ClassifierTask):
    """A fully connected classifier on 8×8 digits (default) or MNIST.

    Args:
        hidden: widths of the hidden layers (paper: ``(20,)``; ``(40,)``, ``(20, 20)`` for the
            generalization runs; ``()`` is multinomial logistic regression). An int means one
            layer.
        activation: ``"sigmoid"`` (paper), ``"relu"``, ``"tanh"`` or ``"gelu"``.
        batch_size: minibatch size (paper: 128), or ``None`` for full-batch.
        dataset: ``"digits"`` (bundled, 1397 train / 400 test) or ``"mnist"``.
        data_dir: directory of the MNIST IDX files (only with ``dataset="mnist"``).
        dtype: floating dtype (or its name) of data and weights.

    ``params()`` keys: ``layers.{i}.weight`` ``[out, in]``, ``layers.{i}.bias`` ``[out]``.
    """

    name: ClassVar[str] = "mlp"
    _flatten: ClassVar[bool] = True

    def __init__(
        self,
        hidden: int | Sequence[int] = (20,),
        activation: str = "sigmoid",
        batch_size: int | None = 128,
        dataset: str = "digits",
        data_dir: str | os.PathLike[str] | None = None,
        dtype: torch.dtype | str = torch.float32,
    ) -> None:
        self.hidden = _check_hidden(hidden)
        self.activation = check_activation(activation)
        super().__init__(batch_size, dataset, data_dir, dtype)
        self.sizes = (self.num_inputs, *self.hidden, self.data.num_classes)
        self._act = ACTIVATIONS[self.activation][0]
        self._keys = [
            (f"layers.{i}.weight", f"layers.{i}.bias") for i in range(len(self.sizes) - 1)
        ]

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-friendly)."""
        return {"hidden": list(self.hidden), "activation": self.activation, **self._base_config()}

    def __repr__(self) -> str:
        return (
            f"MLPTask(hidden={self.hidden}, activation={self.activation!r}, "
            f"batch_size={self.batch_size}, dataset={self.dataset!r})"
        )

    def _shapes(self) -> dict[str, tuple[tuple[int, ...], int]]:
        out: dict[str, tuple[tuple[int, ...], int]] = {}
        for (wk, bk), a, b in zip(self._keys, self.sizes[:-1], self.sizes[1:]):
            out[wk] = ((b, a), a)
            out[bk] = ((b,), a)
        return out

    def _forward(self, params: Params, x: Tensor) -> Tensor:
        h = x
        last = len(self._keys) - 1
        act = self._act
        for i, (wk, bk) in enumerate(self._keys):
            h = torch.addmm(params[bk], h, params[wk].t())
            if i < last:
                h = act(h)
        return h

    def _make_model(self, device: torch.device) -> nn.Module:
        return MLP(self.sizes, self.activation, device=device, dtype=self.dtype)
