"""Ship a generalist learned optimizer: its architecture-suite report goes into the weight file's
training record, the file into the package (optionally as the default), the full report into
``benchmarks/results/architectures/``, and the zoo docs are regenerated.

    optizoo train --config configs/recipes/lstm-hierarchical.json --out runs/lstm-hierarchical
    optizoo evaluate --suite architectures --optimizers lstm-hierarchical=runs/.../final.safetensors \\
        --baselines benchmarks/results/architectures/baselines --json report.json
    python scripts/ship_generalist.py runs/.../final.safetensors --report report.json \\
        --name lstm-hierarchical --recipe configs/recipes/lstm-hierarchical.json --default
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

import optizoo
from optizoo.compare.suite import SuiteReport
from optizoo.zoo.format import read_metadata, rule_from_file
from optizoo.zoo.manifest import add_to_shipped

ROOT = Path(__file__).resolve().parent.parent
#: the parts of a suite report kept in the weight file (the curves stay in benchmarks/results)
RECORD_KEYS = ("format", "optimizer", "label", "confidence", "summary", "cells")


def description(rule_text: str, report: SuiteReport) -> str:
    summary = "; ".join(report.summary_lines())
    return f"{rule_text}. Architecture suite (test loss, 27 task x budget cells): {summary}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", help="the trained rule (.safetensors)")
    ap.add_argument("--report", required=True, help="its architecture-suite report (JSON)")
    ap.add_argument("--name", required=True, help="the zoo name")
    ap.add_argument("--recipe", required=True, help="the recipe file that rebuilds it")
    ap.add_argument("--text", required=True, help="one sentence saying what the rule is")
    ap.add_argument("--default", action="store_true", help="make it LSTMOptimizer's default")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    report = SuiteReport.from_json(args.report)
    full = report.to_json()
    meta = read_metadata(args.weights)
    rule = rule_from_file(args.weights)
    training = dict(meta.get("optizoo.training") or {})
    training["recipe_file"] = args.recipe
    training["recipe"] = json.loads((ROOT / args.recipe).read_text())
    training["architecture_suite"] = {k: full[k] for k in RECORD_KEYS if k in full}
    training["tasks"] = ["mix of the architecture families at other sizes (see the recipe)"]
    staged = Path(args.weights).with_name(f"{args.name}.safetensors")
    optizoo.save_rule(
        rule, staged, training=training, description=description(args.text, report), license="MIT"
    )
    add_to_shipped(staged, args.name, default=args.default, overwrite=True)
    out = ROOT / "benchmarks" / "results" / "architectures" / f"{args.name}.json"
    report.save_json(out)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_zoo_docs.py")], check=True)
    print(f"shipped {args.name} ({'default' if args.default else 'by name'}); report {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
