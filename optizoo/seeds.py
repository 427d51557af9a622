"""Problem seed streams: the seeds every comparison and every meta-training run draws problems from.

A problem is ``task.sample(torch.Generator().manual_seed(s))`` for a seed ``s``; this module
derives those seeds from one run seed, in named, independent streams (numpy ``SeedSequence``
spawn keys), so that no two uses ever share a problem:

============== ============================================ ==================================
stream         used by                                      words
============== ============================================ ==================================
``eval``       :mod:`optizoo.compare`: held-out problems    32-bit, ``spawn_key=(0,)``
``tune``       :mod:`optizoo.compare`: lr-tuning problems   32-bit, ``spawn_key=(1,)``
``train``      :class:`~optizoo.MetaTrainer`: episode ``e`` 63-bit, ``spawn_key=(TAG, 0, e)``
``validation`` :class:`~optizoo.MetaTrainer`: held-out      63-bit, ``spawn_key=(TAG, 1, 0)``
============== ============================================ ==================================

``TAG`` (:data:`META_TAG`) keeps the meta-trainer's streams apart from the comparison streams.
A leaf module (imports only numpy and :mod:`optizoo._validate`). See ``docs/architecture.md``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from optizoo._validate import is_int, nonnegative_int

__all__ = ["META_TAG", "STREAMS", "problem_seeds"]

#: first spawn-key word of the meta-trainer's streams ("oztm"), absent from the compare streams
META_TAG = 0x6F7A6D74


class _Stream(NamedTuple):
    key: tuple[int, ...]  # spawn key before the episode
    wide: bool  # 63-bit seeds (top 63 bits of uint64 words) instead of uint32 words
    episodic: bool  # the episode number is the last spawn-key word


_SPECS = {
    "eval": _Stream((0,), wide=False, episodic=False),
    "tune": _Stream((1,), wide=False, episodic=False),
    "train": _Stream((META_TAG, 0), wide=True, episodic=True),
    "validation": _Stream((META_TAG, 1), wide=True, episodic=True),
}
#: the stream names :func:`problem_seeds` accepts
STREAMS = tuple(_SPECS)


def _words(seed: int, spec: _Stream, episode: int, count: int) -> list[int]:
    key = (*spec.key, episode) if spec.episodic else spec.key
    ss = np.random.SeedSequence(seed, spawn_key=key)
    if spec.wide:
        return [int(w) >> 1 for w in ss.generate_state(count, dtype=np.uint64)]
    return [int(w) for w in ss.generate_state(count)]


def problem_seeds(
    seed: int,
    n: int,
    stream: str = "eval",
    *,
    episode: int = 0,
    exclude: Iterable[int] = (),
) -> list[int]:
    """``n`` problem seeds of ``stream`` (one of :data:`STREAMS`) for run seed ``seed``.

    Args:
        seed: the run seed (an int >= 0); every stream derives from it.
        n: how many seeds (an int >= 0).
        stream: ``"eval"``/``"tune"`` (comparisons) or ``"train"``/``"validation"``
            (meta-training); see the module docstring for the spawn keys.
        episode: meta-training episode (``"train"``; ``"validation"`` uses episode 0). Seed
            ``j`` of an episode is the same whatever the number of processes: rank ``r`` of
            ``R`` takes a contiguous block of ``n / R`` of them.
        exclude: seeds to skip (e.g. the evaluation seeds when drawing tuning seeds); repeats
            are skipped too, so the result has ``n`` distinct values. Skipping never changes
            the seeds before the first skipped one (the stream is a prefix-stable sequence).

    Returns:
        ``n`` ints: 32-bit for ``eval``/``tune``, 63-bit for ``train``/``validation``.
    """
    if isinstance(n, str):
        raise TypeError(
            f"problem_seeds(seed, n, stream): n must be an int, got the string {n!r}; "
            "the stream name comes after the count"
        )
    spec = _SPECS.get(stream) if isinstance(stream, str) else None
    if spec is None:
        raise ValueError(f"unknown seed stream {stream!r}; expected one of {sorted(_SPECS)}")
    nonnegative_int(seed, "seed")
    nonnegative_int(n, "number of problems")
    if not (is_int(episode) and episode >= 0):
        raise ValueError(f"episode must be a non-negative int, got {episode!r}")
    if episode and not spec.episodic:
        raise ValueError(
            f"the {stream!r} stream has no episodes (only 'train' does); drop episode={episode}"
        )
    banned = set(exclude)
    extra = 0
    while True:
        out: list[int] = []
        seen = set(banned)
        for w in _words(seed, spec, episode, n + extra):
            if len(out) == n:
                break
            if w not in seen:
                out.append(w)
                seen.add(w)
        if len(out) == n:
            return out
        extra += 8
