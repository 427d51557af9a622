"""Ship ``lstm-mlp`` (the generalist of docs/generalization.md) as the default optimizer.

Runs the held-out evaluation suite (5 neural-network tasks on the bundled digits, each against
Adam with a tuned learning rate, at 1x, 2x and 10x the rule's training horizon), records it in the
weight file's training record, copies the file into the package, marks it as the default and
regenerates the zoo docs.

    optizoo train --config configs/recipes/lstm-mlp.json --out runs/lstm-mlp
    python scripts/ship_lstm_mlp.py runs/lstm-mlp/lstm-mlp.safetensors [--report eval.json]

The weight file comes from the recipe, so its training record names the recipe file
(``recipe_file``) and holds its contents (``recipe``); the shipped file keeps both.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch

# a sibling script (run as ``python scripts/ship_lstm_mlp.py``, scripts/ is on sys.path)
from ship_lstm_quadratic import evaluate_suite, generalization_record

import optizoo
from optizoo.compare.evaluate import EvalReport
from optizoo.zoo.format import read_metadata, rule_from_file
from optizoo.zoo.manifest import add_to_shipped

ROOT = Path(__file__).resolve().parent.parent

NAME = "lstm-mlp"
DESCRIPTION = (
    "Coordinate-wise 2x20 LSTM correcting a nominal AdamW step (learned lr and weight decay), on "
    "Adam-normalized momenta and progress features, meta-trained with second-order meta-gradients "
    "on a mixture of digits MLPs for validation loss over 200-step episodes; beats tuned Adam on "
    "the paper's MLP at 1x, 2x and 10x its horizon"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights")
    ap.add_argument("--report", help="reuse a saved `optizoo evaluate --json` report")
    ap.add_argument(
        "--paper-report",
        help="a saved 10-seed paper-MLP report (`optizoo evaluate --tasks mlp-20-sigmoid --json`) "
        "for a run trained with --no-evaluate",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    meta = read_metadata(args.weights)
    if meta["optizoo.training"].get("recipe_file") is None:
        raise SystemExit(f"{args.weights} was not made by a recipe (no recipe_file in its record)")
    rule = rule_from_file(args.weights)
    if args.report:
        report = EvalReport.from_json(args.report)
    else:
        report = evaluate_suite(f"{NAME}={args.weights}", int(meta["optizoo.training"]["horizon"]))
    training = dict(meta["optizoo.training"])
    paper = training.pop("evaluation", None)  # 10-seed paper-MLP rows of the training script
    if args.paper_report:
        paper = EvalReport.from_json(args.paper_report).rows()
    training["paper_mlp_evaluation"] = paper
    training["generalization"] = generalization_record(report)
    training["tasks"] = ["mix of digits MLPs (see task_args)"]
    staged = Path(args.weights).parent / "ship" / f"{NAME}.safetensors"
    optizoo.save_rule(rule, staged, training=training, description=DESCRIPTION, license="MIT")
    add_to_shipped(staged, NAME, default=True, overwrite=True)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_zoo_docs.py")], check=True)


if __name__ == "__main__":
    main()
