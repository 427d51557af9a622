"""Meta-training runs under faults: clobbered folders, resumes of another experiment, corrupt
checkpoints, interrupted writes and duplicated metrics rows.

References: the checkpoint's own tensors (a bit flipped in their bytes in the file must be
refused); the rows a run logs without interruption (a resumed or re-run run logs the same ones).
"""

from __future__ import annotations

import multiprocessing
import os

import pytest
import torch

from optizoo import _io
from optizoo.errors import CheckpointError, OptizooError
from optizoo.meta import MetaTrainer
from optizoo.meta import checkpoint as ckpt
from optizoo.rules import LSTMRule

SMALL = {"dim": 5, "batch": 4}


def trainer(out_dir, rule=None, **kw) -> MetaTrainer:
    options = dict(
        unroll=5, horizon=15, eval_problems=2, eval_every=3, checkpoint_every=2,
        meta_lr=1e-2, verbose=False,
    )  # fmt: skip
    options.update(kw)
    if rule is None:
        torch.manual_seed(0)
        rule = LSTMRule(hidden_size=4)
    return MetaTrainer(rule, "quadratic", task_args=SMALL, out_dir=out_dir, **options)


def rows_key(out_dir) -> list[tuple]:
    return [(r["kind"], r["meta_step"]) for r in ckpt.read_metrics(out_dir)]


# ------------------------------------------------------------------ 1. no clobbering


def test_a_fresh_run_refuses_a_folder_that_holds_a_run(tmp_path):
    trainer(tmp_path).fit(2)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(CheckpointError, match="already holds a meta-training run") as info:
        trainer(tmp_path)
    assert "resume" in str(info.value) and "overwrite" in str(info.value)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


def test_overwrite_replaces_the_old_run_and_its_log(tmp_path):
    trainer(tmp_path).fit(4)
    trainer(tmp_path, overwrite=True).fit(2)
    # the log is the new run's only: no rows of the old run appended to
    assert [s for k, s in rows_key(tmp_path) if k == "train"] == [1, 2]
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["meta_step"] == 2


def test_out_dir_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        trainer(f)


# ------------------------------------------------------------------ 2. resume = same experiment


def test_resume_with_other_options_is_refused_naming_them(tmp_path):
    trainer(tmp_path).fit(2)
    with pytest.raises(CheckpointError) as info:
        MetaTrainer.resume(
            tmp_path, verbose=False, expect={"unroll": 3, "meta_lr": 0.5, "seed": 9, "task": "mlp"}
        )
    msg = str(info.value)
    for field in ("unroll", "meta_lr", "seed", "task"):
        assert f"{field}: checkpoint" in msg
    # the same values (or none) are fine, and the device may change
    same = {"unroll": 5, "meta_lr": 1e-2, "task": "quadratic", "device": "cpu", "rule": "lstm"}
    assert MetaTrainer.resume(tmp_path, verbose=False, expect=same).meta_step == 2


def test_resume_with_a_rule_of_another_config_is_refused(tmp_path):
    trainer(tmp_path).fit(2)
    with pytest.raises(CheckpointError, match="hidden_size: checkpoint 4, given 8"):
        MetaTrainer.resume(tmp_path, rule=LSTMRule(hidden_size=8), verbose=False)
    with pytest.raises(CheckpointError, match="rule: checkpoint 'lstm'"):
        MetaTrainer.resume(tmp_path, verbose=False, expect={"rule": "adam"})
    with pytest.raises(CheckpointError, match=r"rule_config\.hidden_size"):
        MetaTrainer.resume(tmp_path, verbose=False, expect={"rule_config": {"hidden_size": 8}})
    assert MetaTrainer.resume(tmp_path, rule=LSTMRule(hidden_size=4), verbose=False).meta_step == 2


# ------------------------------------------------------------------ 3. integrity


def _flip_a_bit_in(path, tensor: torch.Tensor) -> None:
    raw = bytearray(path.read_bytes())
    needle = tensor.contiguous().view(torch.uint8).numpy().tobytes()
    at = raw.find(needle)
    assert at >= 0, "tensor bytes not found in the file"
    raw[at + len(needle) // 2] ^= 0x40
    path.write_bytes(bytes(raw))


def test_a_bit_flip_inside_tensor_data_is_refused(tmp_path):
    trainer(tmp_path).fit(2)
    path = tmp_path / "checkpoint.pt"
    data = torch.load(path, weights_only=True)
    key = max(data["rule"], key=lambda k: data["rule"][k].numel())
    _flip_a_bit_in(path, data["rule"][key])
    # the file still loads with torch (its zip container does not notice) ...
    flipped = torch.load(path, weights_only=True)
    copies = [flipped["rule"][key]] + (
        [flipped["best"]["rule"][key]] if data["best"]["rule"] else []
    )
    assert not all(torch.equal(c, data["rule"][key]) for c in copies)
    # ... but optizoo refuses it
    with pytest.raises(CheckpointError, match="sha256"):
        MetaTrainer.resume(tmp_path, verbose=False)


def _rewrite(path, mutate) -> None:
    """Change a checkpoint's payload and re-sign it, as a buggy or hostile writer would."""
    data = torch.load(path, weights_only=True)
    data.pop("sha256")
    mutate(data)
    data["sha256"] = ckpt.payload_sha256(data)
    torch.save(data, path)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("meta_opt"),
        lambda d: d.update(config="{not json"),
        lambda d: d.update(config="[1, 2]"),
        lambda d: d.update(rule_config=7),
        lambda d: d["rule"].update({"weights.0": torch.zeros(3)}),
        lambda d: d["rule"].update({"bogus": torch.zeros(1)}),
        lambda d: d.update(meta_opt={"state": {}, "param_groups": []}),
        lambda d: d["best"].update(metric="x"),
        lambda d: d["rng"].update(torch=torch.zeros(3)),
        lambda d: d.update(inner={"t": 1, "episode": 0, "flat": [torch.zeros(2)], "state": [{}]}),
    ],
    ids=[
        "missing-key", "bad-json", "json-not-object", "wrong-type", "wrong-shape",
        "unexpected-tensor", "foreign-optimizer", "bad-best", "bad-rng", "bad-inner",
    ],
)  # fmt: skip
def test_every_malformed_payload_is_a_checkpoint_error(tmp_path, mutate):
    trainer(tmp_path, checkpoint_every=3).fit(4)  # a checkpoint mid-episode
    _rewrite(tmp_path / "checkpoint.pt", mutate)
    with pytest.raises(CheckpointError) as info:
        MetaTrainer.resume(tmp_path, verbose=False)
    assert "weights_only" not in str(info.value)


class Evil:
    """Not a type ``weights_only`` unpickling allows."""


def test_a_foreign_pickle_is_refused_without_suggesting_weights_only_false(tmp_path):
    trainer(tmp_path).fit(1)
    torch.save({"format": ckpt.CHECKPOINT_FORMAT, "x": Evil()}, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError) as info:
        MetaTrainer.resume(tmp_path, verbose=False)
    assert "weights_only" not in str(info.value)
    assert isinstance(info.value, OptizooError)
    for junk in (b"", b"PK\x03\x04garbage", os.urandom(64)):
        (tmp_path / "checkpoint.pt").write_bytes(junk)
        with pytest.raises(CheckpointError) as info:
            ckpt.load_checkpoint(tmp_path)
        assert "weights_only" not in str(info.value)


def test_temp_files_of_an_interrupted_write_are_cleaned_up(tmp_path):
    tr = trainer(tmp_path)
    tr.fit(1)

    def crash(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(b"half a checkpoint")
        os._exit(3)  # killed mid-write: no cleanup handler runs

    proc = multiprocessing.get_context("fork").Process(
        target=_io.atomic_write, args=(tmp_path / ckpt.CHECKPOINT_NAME, crash)
    )
    proc.start()
    proc.join()
    assert proc.exitcode == 3
    stale = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert stale, "the interrupted write should have left its temp file"
    MetaTrainer.resume(tmp_path, verbose=False).fit(1)
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_writes_fsync_the_file_and_its_folder(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    if not os.path.exists("/proc/self/fd"):
        pytest.skip("needs /proc to name file descriptors")
    monkeypatch.setattr(os, "fsync", spy)
    target = tmp_path / "sub" / "x.bin"
    _io.write_bytes_atomic(target, b"data")
    assert any(s.endswith(".tmp") for s in synced), synced  # the file, before the rename
    assert str(target.parent) in synced  # the folder, after it


# ------------------------------------------------------------------ 4. one row per event


def test_rerunning_a_finished_resume_adds_no_rows(tmp_path):
    trainer(tmp_path).fit(4)
    reference = rows_key(tmp_path)
    for _ in range(2):
        MetaTrainer.resume(tmp_path, verbose=False).fit(0)
    assert rows_key(tmp_path) == reference
    assert len(reference) == len(set(reference))


def test_a_kill_after_the_final_evaluation_duplicates_nothing(tmp_path):
    uninterrupted = tmp_path / "a"
    trainer(uninterrupted).fit(4)
    reference = rows_key(uninterrupted)

    killed = tmp_path / "b"
    tr = trainer(killed)
    real = tr.save_checkpoint
    calls = {"n": 0}

    def dies_at_the_last_checkpoint():
        calls["n"] += 1
        if tr.meta_step == 4 and calls["n"] > 2:  # the checkpoint after the final evaluation
            raise KeyboardInterrupt
        return real()

    tr.save_checkpoint = dies_at_the_last_checkpoint
    with pytest.raises(KeyboardInterrupt):
        tr.fit(4)
    assert rows_key(killed)[-1] == ("eval", 4)  # the final evaluation was logged
    resumed = MetaTrainer.resume(killed, verbose=False)
    resumed.fit(4 - resumed.meta_step)
    assert rows_key(killed) == reference


def _resume_and_report(out_dir, queue) -> None:
    try:
        MetaTrainer.resume(out_dir, verbose=False).fit(1)
        queue.put("ok")
    except CheckpointError as exc:
        queue.put(f"refused: {exc}")


def test_a_second_process_resuming_the_same_folder_is_refused(tmp_path):
    trainer(tmp_path).fit(2)
    before = rows_key(tmp_path)
    queue = multiprocessing.get_context("fork").SimpleQueue()
    with ckpt.run_lock(tmp_path):  # the first process is writing
        proc = multiprocessing.get_context("fork").Process(
            target=_resume_and_report, args=(tmp_path, queue)
        )
        proc.start()
        proc.join()
    answer = queue.get()
    assert answer.startswith("refused") and "another process" in answer
    assert rows_key(tmp_path) == before
    # once the lock is released (or its process dies), resuming works
    MetaTrainer.resume(tmp_path, verbose=False).fit(1)
    assert [s for k, s in rows_key(tmp_path) if k == "train"] == [1, 2, 3]


def test_checkpoint_error_lives_in_optizoo_errors():
    from optizoo import errors

    assert ckpt.CheckpointError is errors.CheckpointError
    assert issubclass(errors.CheckpointError, errors.OptizooError)
