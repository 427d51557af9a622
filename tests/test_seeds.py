"""optizoo.seeds: one seed-stream module for compare and meta, every stream as it was.

Two independent references:

- literal values printed by the two functions this module replaced (``optizoo.compare.runner``'s
  ``problem_seeds(seed, n, stream, exclude=...)`` and ``optizoo.meta.trainer``'s
  ``problem_seeds(seed, stream, count, episode)``), run before they were removed;
- a direct recomputation with numpy's ``SeedSequence`` from the documented spawn keys.

Exact equality (integers): shipped weights, benchmark results and resumed runs depend on them.
"""

from __future__ import annotations

import numpy as np
import pytest

import optizoo.compare
import optizoo.meta
from optizoo.seeds import META_TAG, STREAMS, problem_seeds

# printed by the old functions (compare: 32-bit words; meta: 63-bit words)
OLD_COMPARE = {
    (0, 5, "eval"): [3757552657, 2018376492, 1456443223, 3395645823, 2612339235],
    (0, 4, "tune"): [673228719, 1136656250, 1681278441, 3264002610],
    (123, 2, "eval"): [1514383052, 2054712063],
}
OLD_COMPARE_TUNE_EXCLUDING_EVAL = (7, 3, [3618983171, 941218350, 283231612])
OLD_META = {
    (0, 3, "train", 0): [3549080522320422998, 1075066492240322125, 4992597768171239837],
    (0, 2, "train", 5): [8784698579249904990, 7149938517924404503],
    (0, 3, "validation", 0): [697371850970147974, 7174452283942473607, 6958180124876726029],
    (42, 2, "validation", 1): [4310012754328134525, 4185265589923487000],
}


@pytest.mark.parametrize(("args", "expected"), list(OLD_COMPARE.items()))
def test_the_compare_streams_are_unchanged(args, expected) -> None:
    seed, n, stream = args
    assert problem_seeds(seed, n, stream) == expected
    key = {"eval": 0, "tune": 1}[stream]
    direct = np.random.SeedSequence(seed, spawn_key=(key,)).generate_state(n).tolist()
    assert problem_seeds(seed, n, stream) == direct


def test_the_tuning_stream_skips_the_evaluation_seeds_as_before() -> None:
    seed, n, expected = OLD_COMPARE_TUNE_EXCLUDING_EVAL
    assert problem_seeds(seed, n, "tune", exclude=problem_seeds(seed, n, "eval")) == expected
    words = np.random.SeedSequence(seed, spawn_key=(1,)).generate_state(3 * n).tolist()
    banned = set(problem_seeds(seed, n, "eval"))
    assert expected == [w for w in words if w not in banned][:n]


@pytest.mark.parametrize(("args", "expected"), list(OLD_META.items()))
def test_the_meta_training_streams_are_unchanged(args, expected) -> None:
    seed, n, stream, episode = args
    assert problem_seeds(seed, n, stream, episode=episode) == expected
    key = (META_TAG, {"train": 0, "validation": 1}[stream], episode)
    words = np.random.SeedSequence(seed, spawn_key=key).generate_state(n, dtype=np.uint64)
    assert expected == [int(w) >> 1 for w in words]


def test_compare_and_meta_use_the_one_function() -> None:
    assert optizoo.compare.problem_seeds is problem_seeds
    assert optizoo.meta.problem_seeds is problem_seeds
    assert set(STREAMS) == {"eval", "tune", "train", "validation"}


def test_the_streams_are_disjoint_and_prefix_stable() -> None:
    drawn = {s: set(problem_seeds(3, 200, s)) for s in STREAMS}
    for a in STREAMS:
        for b in STREAMS:
            if a < b:
                assert not drawn[a] & drawn[b], (a, b)
    assert problem_seeds(3, 5, "train", episode=2) == problem_seeds(3, 9, "train", episode=2)[:5]
    assert problem_seeds(3, 5, "train", episode=1) != problem_seeds(3, 5, "train", episode=2)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: problem_seeds(0, 3, "bogus"), ValueError, "unknown seed stream 'bogus'"),
        (lambda: problem_seeds(-1, 3), ValueError, "seed must be a non-negative int"),
        (lambda: problem_seeds(0, -2), ValueError, "number of problems"),
        (lambda: problem_seeds(0, "train", 3), TypeError, "stream name comes after the count"),
        (lambda: problem_seeds(0, 3, "eval", episode=1), ValueError, "has no episodes"),
        (lambda: problem_seeds(0, 3, "train", episode=-1), ValueError, "episode"),
    ],
)
def test_bad_arguments_get_a_clear_error(call, error, match) -> None:
    with pytest.raises(error, match=match):
        call()
