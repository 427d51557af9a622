"""``optizoo train``: a run, its resume to a larger total, --config files and bad options."""

from __future__ import annotations

import json

import torch

from optizoo.cli import main
from optizoo.meta.checkpoint import read_metrics

ARGS = [
    "train", "--task", "quadratic", "--task-args", '{"dim": 5, "batch": 4}', "--rule", "lstm",
    "--unroll", "5", "--horizon", "10", "--eval-every", "2", "--eval-problems", "2", "--quiet",
]  # fmt: skip


def test_train_then_resume_to_a_larger_total(tmp_path):
    out = str(tmp_path / "run")
    assert main([*ARGS, "--meta-steps", "3", "--out", out]) == 0
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["meta_step"] == 3 and ckpt["rule_name"] == "lstm"
    # the same command with --resume and a larger total continues from the checkpoint
    assert main(["train", "--out", out, "--meta-steps", "5", "--resume", "--quiet"]) == 0
    train_steps = [r["meta_step"] for r in read_metrics(tmp_path / "run") if r["kind"] == "train"]
    assert train_steps == [1, 2, 3, 4, 5]
    # reaching the total again is a no-op run
    assert main(["train", "--out", out, "--meta-steps", "5", "--resume", "--quiet"]) == 0
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["meta_step"] == 5
    for name in (
        "best_rule.safetensors",
        "final_rule.safetensors",
        "learning_curve.png",
        "metrics.jsonl",
    ):
        assert (tmp_path / "run" / name).is_file()


def test_config_file_and_flag_override(tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({
        "task": "quadratic", "task_args": {"dim": 3, "batch": 2}, "rule": "lstm",
        "rule_config": {"hidden_size": 8}, "unroll": 2, "horizon": 4, "meta_steps": 2,
        "eval_problems": 1, "seed": 7,
    }))  # fmt: skip
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--unroll", "4", "--out", str(out), "--quiet"]) == 0
    data = torch.load(out / "checkpoint.pt", weights_only=True)
    config = json.loads(data["config"])
    assert config["unroll"] == 4 and config["horizon"] == 4 and config["seed"] == 7
    assert json.loads(data["rule_config"])["hidden_size"] == 8
    assert data["meta_step"] == 2


def test_bad_options_exit_with_a_message(tmp_path, capsys):
    cases = [
        (["train", "--out", str(tmp_path)], "--meta-steps"),
        (["train", "--meta-steps", "1"], "--out"),
        (
            [
                "train",
                "--unroll",
                "20",
                "--horizon",
                "10",
                "--meta-steps",
                "1",
                "--out",
                str(tmp_path),
            ],
            "cannot exceed horizon",
        ),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
