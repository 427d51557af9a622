"""A tiny causal transformer language model on a bundled text corpus (characters).

The corpus is ``optizoo/tasks/data/pydoc_topics.txt.gz``: the help topics of Python's own
documentation (module ``pydoc_data.topics`` of CPython 3.11.7, PSF licence; see that folder's
README), about 466 kB of English prose and code. Characters map to a vocabulary of
:data:`VOCAB_SIZE` = 97 tokens: printable ASCII (32..126) → 0..94, newline → 95, anything else →
96. The first 90% of the characters are the training text, the last 10% the test text; both
are cut into non-overlapping windows of ``context + 1`` characters (input: the first
``context``, target: the same shifted by one). ``eval_loss`` is the mean next-character
cross-entropy (nats) over the first ``eval_windows`` test windows.

Architecture (pre-norm GPT, default ``d_model=32, layers=2, heads=2, context=16``)::

    token embedding + position embedding
    layers × [x + proj(attention(ln1(x))), x + fc2(gelu(fc1(ln2(x))))]   (causal attention)
    ln_f → head (Linear d_model → 97)

Attention is written out (masked softmax), so second-order meta-gradients work on every device.
"""

from __future__ import annotations

import gzip
import hashlib
import math
from functools import lru_cache
from importlib import resources
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optizoo._validate import positive_int
from optizoo.tasks.supervised import LossFn, ModuleTask, SupervisedData, check_optional_size

__all__ = ["CORPUS_SHA256", "VOCAB_SIZE", "TinyGPT", "TransformerLMTask", "encode", "load_corpus"]

#: sha256 of ``optizoo/tasks/data/pydoc_topics.txt.gz``
CORPUS_SHA256 = "8b77748f51650b8f1292a2121113c9a12b54e782489d1210f0aacf764f2501a5"
VOCAB_SIZE = 97
#: fraction of the corpus (from its start) used for training
TRAIN_FRACTION = 0.9


def encode(text: str) -> np.ndarray:
    """Token ids ``[len(text)]`` int64: printable ASCII → 0..94, newline → 95, other → 96."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    out = np.full(codes.shape, 96, dtype=np.int64)
    printable = (codes >= 32) & (codes <= 126)
    out[printable] = codes[printable] - 32
    out[codes == 10] = 95
    return out


@lru_cache(maxsize=1)
def load_corpus() -> np.ndarray:
    """The bundled corpus as token ids (int64, about 466k tokens)."""
    raw = resources.files("optizoo.tasks").joinpath("data", "pydoc_topics.txt.gz").read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != CORPUS_SHA256:
        raise OSError(
            f"the bundled corpus optizoo/tasks/data/pydoc_topics.txt.gz is corrupt (sha256 "
            f"{digest}, expected {CORPUS_SHA256}); reinstall optizoo"
        )
    return encode(gzip.decompress(raw).decode("utf-8"))


def _windows(tokens: np.ndarray, size: int) -> Tensor:
    n = len(tokens) // size
    return torch.from_numpy(tokens[: n * size].reshape(n, size).copy())


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, mlp_ratio * d)
        self.fc2 = nn.Linear(mlp_ratio * d, d)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        shape = (b, t, self.heads, d // self.heads)
        q, k, v = (z.reshape(shape).transpose(1, 2) for z in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5
        att = torch.softmax(scores.masked_fill(mask, -math.inf), dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class TinyGPT(nn.Module):
    """A pre-norm causal transformer: tokens ``[B, T]`` → logits ``[B, T, vocab]``."""

    def __init__(
        self, vocab: int, d_model: int, layers: int, heads: int, context: int, mlp_ratio: int
    ) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(context, d_model)
        self.blocks = nn.ModuleList(_Block(d_model, heads, mlp_ratio) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, idx: Tensor) -> Tensor:
        """Next-token logits ``[B, T, vocab]`` for token ids ``[B, T]`` (``T <= context``)."""
        t = idx.shape[1]
        x = self.tok(idx) + self.pos.weight[:t]
        mask = torch.ones(t, t, dtype=torch.bool, device=idx.device).triu(1)
        for block in self.blocks:
            x = block(x, mask)
        return self.head(self.ln_f(x))


def _lm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


class TransformerLMTask(ModuleTask):
    """Next-character prediction on the bundled corpus with :class:`TinyGPT`.

    Args:
        d_model: embedding width (default 32); must be divisible by ``heads``.
        layers: transformer blocks (default 2).
        heads: attention heads (default 2).
        context: characters per training window (default 16).
        mlp_ratio: hidden width of each block's MLP, in multiples of ``d_model`` (default 4).
        batch_size: windows per minibatch (default 16), or ``None`` for full-batch.
        train_size: train each problem on a random subset of this many training windows.
        eval_windows: test windows in ``eval_loss`` (default 128; ``None``: all of them).
        dtype: floating dtype of the weights.

    ``params()`` keys: ``tok.weight`` ``[97, d]``, ``pos.weight`` ``[context, d]``,
    ``blocks.{i}.{ln1,qkv,proj,ln2,fc1,fc2}.{weight,bias}``, ``ln_f.*``, ``head.*``.
    """

    name: ClassVar[str] = "transformer_lm"

    def __init__(
        self,
        d_model: int = 32,
        layers: int = 2,
        heads: int = 2,
        context: int = 16,
        mlp_ratio: int = 4,
        batch_size: int | None = 16,
        train_size: int | None = None,
        eval_windows: int | None = 128,
        dtype: torch.dtype | str = torch.float32,
    ) -> None:
        super().__init__(batch_size, train_size, dtype)
        self.d_model = positive_int(d_model, "d_model")
        self.layers = positive_int(layers, "layers")
        self.heads = positive_int(heads, "heads")
        if d_model % heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads})")
        self.context = positive_int(context, "context")
        self.mlp_ratio = positive_int(mlp_ratio, "mlp_ratio")
        self.eval_windows = check_optional_size(eval_windows, "eval_windows")
        tokens = load_corpus()
        cut = int(len(tokens) * TRAIN_FRACTION)
        train = _windows(tokens[:cut], context + 1)
        test = _windows(tokens[cut:], context + 1)
        if self.eval_windows is not None:
            if self.eval_windows > test.shape[0]:
                raise ValueError(
                    f"eval_windows {self.eval_windows} exceeds the {test.shape[0]} test windows "
                    f"of context {context}; use at most {test.shape[0]}, or None for all"
                )
            test = test[: self.eval_windows]
        self._cpu_data = SupervisedData(train[:, :-1], train[:, 1:], test[:, :-1], test[:, 1:])
        self._check_data(self._cpu_data)
        self._module = self._set_module(
            lambda: TinyGPT(VOCAB_SIZE, d_model, layers, heads, context, mlp_ratio)
        )

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-friendly)."""
        return {
            "d_model": self.d_model,
            "layers": self.layers,
            "heads": self.heads,
            "context": self.context,
            "mlp_ratio": self.mlp_ratio,
            "eval_windows": self.eval_windows,
            **self._base_config(),
        }

    def __repr__(self) -> str:
        return (
            f"TransformerLMTask(d_model={self.d_model}, layers={self.layers}, "
            f"heads={self.heads}, context={self.context})"
        )

    def _loss_fn(self) -> LossFn:
        return _lm_loss
