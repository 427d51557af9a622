"""Data-parallel meta-training: 2 gloo processes equal 1 process over the same problems.

Each of the 2 ranks unrolls 1 of the 2 problems of every meta-step and the meta-gradients are
averaged; a single process unrolling both problems computes the same mean. The two differ only in
float32 summation order (per-rank means averaged vs one mean over both), ~1e-7 relative in the
meta-gradient; after 4 Adam steps of lr 1e-2 we require the rule weights to agree to 1e-5
absolute (Adam's normalised steps keep such differences at the rounding level). The run is also
checkpointed mid-episode by both ranks and resumed with 2 processes.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

OPTIONS = dict(
    unroll=5, horizon=10, problems_per_step=2, eval_problems=1, eval_every=0,
    checkpoint_every=0, meta_lr=1e-2, verbose=False,
)  # fmt: skip
TASK_ARGS = {"dim": 5, "batch": 4}


def _rule():
    from optizoo.rules import LSTMRule

    torch.manual_seed(0)
    return LSTMRule()


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(100 + rank)  # different global RNG per rank: the trainer must not care
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        from optizoo.meta import MetaTrainer

        run = os.path.join(out_dir, "run")
        tr = MetaTrainer(_rule(), "quadratic", task_args=TASK_ARGS, out_dir=run, **OPTIONS)
        tr.fit(3, restore_best=False)  # ends mid-episode (truncation 1 of episode 1 is next)
        del tr
        tr = MetaTrainer.resume(run, verbose=False)
        tr.fit(1)  # rank 0 selects the best weights; every rank must end with them
        torch.save(tr.rule.state_dict(), os.path.join(out_dir, f"best{rank}.pt"))
        torch.save(tr.training_state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_two_processes_equal_one_process_over_the_same_problems(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)

    from optizoo.meta import MetaTrainer

    single = MetaTrainer(_rule(), "quadratic", task_args=TASK_ARGS, **OPTIONS)
    single.fit(4, restore_best=False)
    initial = _rule().state_dict()
    for k, v in single.rule.state_dict().items():
        assert torch.equal(r0[k], r1[k]), k  # ranks stay identical (same averaged gradients)
        torch.testing.assert_close(r0[k], v, rtol=0, atol=1e-5)
    assert max((single.rule.state_dict()[k] - initial[k]).abs().max() for k in initial) > 1e-3
    b0 = torch.load(tmp_path / "best0.pt", weights_only=True)
    b1 = torch.load(tmp_path / "best1.pt", weights_only=True)
    assert all(torch.equal(b0[k], b1[k]) for k in b0)
