"""Image data for the classification optimizees: the bundled 8×8 digits and MNIST from IDX files.

Two sources, one shape (:class:`ImageDataset`):

- ``"digits"`` (bundled, works offline): the UCI *Optical Recognition of Handwritten Digits*
  test set (Alpaydin & Kaynak 1998, CC BY 4.0), 1797 images of 8×8 pixels with integer values
  0..16, as shipped by scikit-learn in ``sklearn/datasets/data/digits.csv.gz`` (copied byte for
  byte to ``optizoo/tasks/data/digits.csv.gz``; see that folder's README). Inputs are divided by
  16 (range [0, 1]). Fixed split: for every class, its **last 40 rows** in file order are the
  test set (400 images, 40 per class); the other 1397 rows are the training set.
- ``"mnist"``: read from a local directory holding the four IDX files
  (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte``, each optionally ``.gz``-compressed). Nothing is downloaded.
  Inputs are divided by 255. The standard 60000/10000 split.

:class:`EpochSampler` turns a problem's seed and an optimization step into minibatch indices
(shuffled epochs, remainder dropped) without any state that depends on call order. The small
argument checks every task's ``sample``/``loss`` share (generator, device, dtype, step) live here
too, next to the sampling they feed.
"""

from __future__ import annotations

import gzip
import hashlib
import operator
import os
import struct
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DIGITS_SHA256",
    "EpochSampler",
    "ImageDataset",
    "check_dtype",
    "check_generator",
    "check_step",
    "check_validation_split",
    "digits_split",
    "draw_seed",
    "dtype_name",
    "load_dataset",
    "load_digits",
    "load_mnist",
    "read_idx",
    "resolve_device",
]

#: sha256 of ``optizoo/tasks/data/digits.csv.gz`` (identical to scikit-learn 1.9.1's copy).
DIGITS_SHA256 = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"
#: test images per class in the digits split (10 classes → 400 test, 1397 train)
DIGITS_TEST_PER_CLASS = 40

DATASETS = ("digits", "mnist")

#: IDX element type code → big-endian numpy dtype (LeCun's IDX format description)
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class ImageDataset:
    """A train/test split of single-channel images with integer class labels.

    Attributes:
        name: ``"digits"`` or ``"mnist"``.
        x_train: ``[N, 1, H, W]`` float tensor, pixel intensities scaled to [0, 1].
        y_train: ``[N]`` int64 class labels in ``0 .. num_classes - 1``.
        x_test: ``[M, 1, H, W]``, like ``x_train``.
        y_test: ``[M]``, like ``y_train``.
        num_classes: number of classes (10 for both built-in sources).
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of one image."""
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> ImageDataset:
        """A copy with images in ``dtype`` and all tensors on ``device`` (labels stay int64)."""
        return ImageDataset(
            self.name,
            self.x_train.to(device=device, dtype=dtype),
            self.y_train.to(device=device),
            self.x_test.to(device=device, dtype=dtype),
            self.y_test.to(device=device),
            self.num_classes,
        )


# --------------------------------------------------------------------------- digits (bundled)


def _digits_bytes() -> bytes:
    raw = resources.files("optizoo.tasks").joinpath("data", "digits.csv.gz").read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != DIGITS_SHA256:
        raise OSError(
            f"the bundled digits file optizoo/tasks/data/digits.csv.gz is corrupt (sha256 "
            f"{digest}, expected {DIGITS_SHA256}); reinstall optizoo"
        )
    return raw


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    text = gzip.decompress(_digits_bytes())
    table = np.array(text.replace(b"\n", b",").split(b",")[:-1], dtype=np.int64).reshape(-1, 65)
    return table[:, :64].astype(np.uint8), table[:, 64]


def digits_split(labels: np.ndarray, test_per_class: int = DIGITS_TEST_PER_CLASS) -> np.ndarray:
    """Boolean test mask: for each class, its last ``test_per_class`` rows in file order."""
    test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        test[rows[-test_per_class:]] = True
    return test


@lru_cache(maxsize=1)
def load_digits() -> ImageDataset:
    """The bundled 8×8 digits: 1397 training and 400 test images (float32, CPU), ``x / 16``.

    Returns an :class:`ImageDataset` with ``x_*`` of shape ``[N, 1, 8, 8]``. Cached: every call
    returns the same tensors (treat them as read-only).
    """
    pixels, labels = _digits_arrays()
    test = digits_split(labels)
    x = torch.from_numpy(pixels.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = torch.from_numpy(labels)
    mask = torch.from_numpy(test)
    return ImageDataset("digits", x[~mask], y[~mask], x[mask], y[mask], 10)


# --------------------------------------------------------------------------- MNIST (IDX files)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (``.gz``-compressed or not) into a numpy array of native byte order.

    The IDX format: two zero bytes, a type code (0x08 ubyte, 0x09 byte, 0x0B short, 0x0C int,
    0x0D float, 0x0E double), the number of dimensions, then each dimension as a big-endian
    int32, then the data in row-major big-endian order.

    Raises:
        ValueError: the file is not IDX, or its size does not match its header.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (it must start with two zero bytes)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02X}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({ndim} dimensions announced)")
    shape = struct.unpack(f">{ndim}i", raw[4:header])
    if any(d < 0 for d in shape):
        raise ValueError(f"{path}: negative dimension in IDX header {shape}")
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: IDX header announces shape {shape} ({expected} bytes of data) but the file "
            f"holds {len(raw) - header} bytes after the header"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _find_idx(directory: Path, stem: str) -> Path:
    for folder in (directory, directory / "raw", directory / "MNIST" / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    raise FileNotFoundError(
        f"no {stem}[.gz] in {directory} (also looked in raw/ and MNIST/raw/); data_dir must hold "
        f"the four MNIST IDX files: {', '.join(_MNIST_FILES.values())}"
    )


def _images(arr: np.ndarray, path: str) -> Tensor:
    if arr.ndim != 3:
        raise ValueError(f"{path}: expected images of shape [N, H, W], got {arr.shape}")
    scale = 255.0 if arr.dtype == np.uint8 else 1.0
    return torch.from_numpy(arr.astype(np.float32) / scale).unsqueeze(1)


def _labels(arr: np.ndarray, path: str, n: int) -> Tensor:
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{path}: expected {n} labels of shape [{n}], got {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() > 9):
        raise ValueError(f"{path}: labels must lie in 0..9, found {arr.min()}..{arr.max()}")
    return torch.from_numpy(arr.astype(np.int64))


@lru_cache(maxsize=2)
def _load_mnist_cached(directory: str) -> ImageDataset:
    root = Path(directory)
    paths = {key: _find_idx(root, stem) for key, stem in _MNIST_FILES.items()}
    x_train = _images(read_idx(paths["x_train"]), str(paths["x_train"]))
    x_test = _images(read_idx(paths["x_test"]), str(paths["x_test"]))
    y_train = _labels(read_idx(paths["y_train"]), str(paths["y_train"]), x_train.shape[0])
    y_test = _labels(read_idx(paths["y_test"]), str(paths["y_test"]), x_test.shape[0])
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"MNIST train images are {tuple(x_train.shape[2:])} but test images are "
            f"{tuple(x_test.shape[2:])}"
        )
    return ImageDataset("mnist", x_train, y_train, x_test, y_test, 10)


def load_mnist(data_dir: str | os.PathLike[str]) -> ImageDataset:
    """MNIST from the IDX files in ``data_dir`` (or its ``raw/`` or ``MNIST/raw/`` subfolder).

    Returns float32 CPU tensors ``x_*`` of shape ``[N, 1, 28, 28]`` in [0, 1] (uint8 / 255) and
    int64 labels. Cached per resolved directory.

    Raises:
        FileNotFoundError: ``data_dir`` or one of the four files is missing.
        ValueError: a file is not valid IDX or shapes/labels disagree.
    """
    directory = Path(data_dir).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(f"MNIST data_dir {str(directory)!r} is not a directory")
    return _load_mnist_cached(str(directory.resolve()))


def load_dataset(name: str, data_dir: str | os.PathLike[str] | None = None) -> ImageDataset:
    """Load ``"digits"`` (bundled) or ``"mnist"`` (needs ``data_dir``)."""
    if name == "digits":
        if data_dir is not None:
            raise ValueError("data_dir is only used with dataset='mnist'; digits are bundled")
        return load_digits()
    if name == "mnist":
        if data_dir is None:
            raise ValueError(
                "dataset='mnist' needs data_dir=, a directory with the MNIST IDX files "
                "(train-images-idx3-ubyte[.gz], ...); optizoo downloads nothing"
            )
        return load_mnist(data_dir)
    raise ValueError(f"unknown dataset {name!r}; expected one of {list(DATASETS)}")


# --------------------------------------------------------------------------- minibatch order

_GOLDEN = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1


def check_validation_split(k: int, n: int, batch_size: int | None) -> None:
    """Check that holding back the last ``k`` of ``n`` training examples as a validation split
    leaves at least one example, and at least a minibatch of ``batch_size`` (``None``: full
    batch).

    Raises:
        ValueError: ``k`` is not between 1 and ``n − 1``, or leaves fewer than ``batch_size``.
    """
    if not 0 < k < n:
        raise ValueError(f"validation={k} must be between 1 and {n - 1} for this task's data")
    if batch_size is not None and batch_size > n - k:
        raise ValueError(
            f"validation={k} leaves {n - k} training examples, fewer than the batch size "
            f"{batch_size}; use a smaller validation split"
        )


class EpochSampler:
    """Deterministic minibatch indices: step → ``[batch_size]`` int64 indices on ``device``.

    Training examples are shuffled once per epoch with a permutation drawn from a generator seeded
    by ``(seed, epoch)``; step ``s`` takes the ``s % per_epoch``-th slice of epoch
    ``s // per_epoch``'s permutation, where ``per_epoch = n // batch_size`` (the last partial
    batch of each epoch is dropped, like ``DataLoader(shuffle=True, drop_last=True)``). The result
    depends only on ``(seed, step)``, never on call order; a few recent permutations are cached.
    """

    def __init__(self, n: int, batch_size: int, seed: int, device: torch.device) -> None:
        if not 1 <= batch_size <= n:
            raise ValueError(f"batch_size must be in 1..{n}, got {batch_size}")
        self.n = n
        self.batch_size = batch_size
        self.per_epoch = n // batch_size
        self.seed = seed & _MASK64
        self.device = device
        self._perms: OrderedDict[int, Tensor] = OrderedDict()

    def permutation(self, epoch: int) -> Tensor:
        """The ``[n]`` permutation used in ``epoch`` (on ``device``)."""
        perm = self._perms.get(epoch)
        if perm is None:
            g = torch.Generator()
            g.manual_seed((self.seed ^ ((epoch + 1) * _GOLDEN)) & _MASK64)
            perm = torch.randperm(self.n, generator=g).to(self.device)
            self._perms[epoch] = perm
            if len(self._perms) > 4:
                self._perms.popitem(last=False)
        return perm

    def __call__(self, step: int) -> Tensor:
        epoch, k = divmod(step, self.per_epoch)
        start = k * self.batch_size
        return self.permutation(epoch)[start : start + self.batch_size]


# --------------------------------------------------------------------------- argument checks


def check_generator(generator: object) -> torch.Generator:
    """``generator`` if it is a CPU ``torch.Generator``; ``TypeError``/``ValueError`` otherwise."""
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"sample() needs a torch.Generator, got {type(generator).__name__}; "
            "pass torch.Generator().manual_seed(seed)"
        )
    if generator.device.type != "cpu":
        raise ValueError(
            f"sample() needs a CPU torch.Generator (got one on {generator.device}) so that a seed "
            "gives the same problem on every device; the problem is moved to device= afterwards"
        )
    return generator


def resolve_device(device: torch.device | str | None) -> torch.device:
    """``torch.device(device)``, CPU when ``None``."""
    return torch.device("cpu") if device is None else torch.device(device)


def check_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """``dtype`` if it is a floating-point torch dtype (or its name, ``"float64"``)."""
    resolved = dtype
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype.removeprefix("torch."), None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise TypeError(
            f"dtype must be a floating-point torch.dtype such as torch.float32, got {dtype!r}"
        )
    return resolved


def dtype_name(dtype: torch.dtype) -> str:
    """``"float32"`` for ``torch.float32`` (JSON-friendly)."""
    return str(dtype).removeprefix("torch.")


def check_step(step: int) -> int:
    """``step`` as a non-negative Python int (optimization steps are 0-based)."""
    try:
        s = operator.index(step)
    except TypeError:
        raise TypeError(f"step must be an int, got {type(step).__name__}") from None
    if s < 0:
        raise ValueError(f"step must be >= 0 (steps are 0-based), got {s}")
    return s


def draw_seed(generator: torch.Generator) -> int:
    """A 63-bit problem seed drawn from ``generator`` (advances it by one draw)."""
    return int(torch.randint(0, 2**63 - 1, (1,), generator=generator).item())
