"""The command line under bad input and its reproducibility.

Every bad value is one ``error:`` line on stderr and exit status 2, checked before any long
work starts; two identical ``optizoo train`` commands write bit-identical weight files.
"""

from __future__ import annotations

import pytest
import torch

import optizoo.compare
from optizoo.cli import main

TRAIN = [
    "train", "--task", "quadratic", "--task-args", '{"dim": 3, "batch": 2}', "--rule", "lstm",
    "--rule-config", '{"hidden_size": 4}', "--unroll", "2", "--horizon", "4",
    "--eval-problems", "1", "--eval-every", "0", "--quiet",
]  # fmt: skip
COMPARE = ["compare", "--task", "quadratic", "--steps", "2", "--problems", "2", "--quiet"]


def run(argv, capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse, or a message passed to SystemExit
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


def assert_one_line_error(argv, capsys, *needles: str) -> None:
    code, err = run(argv, capsys)
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "error:" in lines[0], err
    for needle in needles:
        assert needle in lines[0], err


# ------------------------------------------------------------------ 10. reproducible training


def test_two_identical_train_commands_write_identical_weight_files(tmp_path, capsys):
    files = ("final_rule.safetensors", "best_rule.safetensors")
    for name in ("a", "b"):
        torch.rand(7)  # the global RNG is wherever the process left it
        assert (
            main([*TRAIN, "--meta-steps", "3", "--seed", "5", "--out", str(tmp_path / name)]) == 0
        )
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    # and the seed is what decides: another seed, other initial (hence final) weights
    assert main([*TRAIN, "--meta-steps", "3", "--seed", "6", "--out", str(tmp_path / "c")]) == 0
    a = optizoo.load_rule(tmp_path / "a" / "final_rule.safetensors").state_dict()
    c = optizoo.load_rule(tmp_path / "c" / "final_rule.safetensors").state_dict()
    assert any(not torch.equal(a[k], c[k]) for k in a)


# ------------------------------------------------------------------ 1./2. through the CLI


def test_train_refuses_to_clobber_and_resume_refuses_other_settings(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main([*TRAIN, "--meta-steps", "2", "--out", out]) == 0
    assert_one_line_error([*TRAIN, "--meta-steps", "2", "--out", out], capsys, "already holds")
    assert_one_line_error(
        [*TRAIN, "--meta-steps", "4", "--out", out, "--resume", "--unroll", "1", "--seed", "3"],
        capsys,
        "unroll: checkpoint 2, given 1",
        "seed: checkpoint 0, given 3",
    )
    assert_one_line_error(
        ["train", "--out", out, "--meta-steps", "4", "--resume", "--rule", "adam"], capsys, "rule"
    )
    assert main([*TRAIN, "--meta-steps", "4", "--out", out, "--resume"]) == 0  # same settings
    assert main([*TRAIN, "--meta-steps", "1", "--out", out, "--overwrite"]) == 0


# ------------------------------------------------------------------ 11. one-line errors


@pytest.mark.parametrize("device", ["foo", "cuda:99", "mps:3"])
def test_unknown_or_unavailable_device(tmp_path, capsys, device):
    if device.startswith("mps") and torch.backends.mps.is_available():
        pytest.skip("MPS available")
    assert_one_line_error(
        [*TRAIN, "--meta-steps", "1", "--out", str(tmp_path / "r"), "--device", device],
        capsys,
        repr(device),
    )
    assert not (tmp_path / "r").exists()
    assert_one_line_error([*COMPARE, "--optimizers", "adam", "--device", device], capsys, device)


@pytest.mark.parametrize("flag", ["--plot", "--json"])
def test_unwritable_output_paths_are_refused_before_the_run(tmp_path, capsys, monkeypatch, flag):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    ran = []
    monkeypatch.setattr(optizoo.compare, "compare", lambda *a, **k: ran.append(1))
    for bad in (blocker / "out.png", tmp_path):  # under a file; a folder
        assert_one_line_error([*COMPARE, "--optimizers", "adam", flag, str(bad)], capsys, flag)
    assert ran == []  # nothing ran: the error comes first


def test_unknown_task_and_task_args(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert_one_line_error(
        ["train", "--task", "nosuch", "--meta-steps", "1", "--out", out], capsys, "nosuch"
    )
    assert_one_line_error(
        ["train", "--task-args", '{"bogus": 1}', "--meta-steps", "1", "--out", out],
        capsys,
        "bogus",
    )
    assert_one_line_error(
        ["train", "--task-args", "{oops", "--meta-steps", "1", "--out", out], capsys
    )
    assert_one_line_error([*COMPARE[:2], "nosuch", "--optimizers", "adam"], capsys, "nosuch")


def test_out_that_is_a_file_and_negative_meta_steps(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert_one_line_error([*TRAIN, "--meta-steps", "1", "--out", str(f)], capsys, "is a file")
    assert_one_line_error(
        [*TRAIN, "--meta-steps", "-3", "--out", str(tmp_path / "r")], capsys, "--meta-steps"
    )
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("spec", ["adam:lr=nan", "adam:lr=inf", "sgd:lr=-inf", "adam:lr=1e999"])
def test_non_finite_optimizer_options(capsys, spec):
    assert_one_line_error([*COMPARE, "--optimizers", spec], capsys, "finite")


def test_publish_baselines_none_publishes_without_a_comparison(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main([*TRAIN, "--meta-steps", "2", "--out", str(run_dir)]) == 0
    dist = tmp_path / "dist"
    argv = ["publish", str(run_dir), "--name", "tiny", "--out", str(dist), "--quiet"]
    code, err = run([*argv, "--baselines", "none"], capsys)
    assert code == 0, err
    card = (dist / "tiny.md").read_text()
    assert "No comparison against tuned baselines" in card
    assert not (dist / "tiny.png").exists()
    # publishing the same name again is refused (one line), unless asked
    assert_one_line_error([*argv, "--baselines", "none"], capsys, "already holds")
    assert run([*argv, "--baselines", "none", "--overwrite"], capsys)[0] == 0
    assert_one_line_error([*argv, "--baselines", "none", "--device", "cuda:99"], capsys, "cuda:99")
