"""Meta-train a generalist from an experiment recipe, then evaluate it (a thin wrapper).

The training is the library's (:func:`optizoo.meta.recipe.train_recipe`, also
``optizoo train --config FILE.json --out DIR``); this script adds the recipe key ``evaluate``
(keyword arguments of :func:`optizoo.compare.evaluate.evaluate`, run on the final rule over the
``mlp-20-sigmoid`` task; the numbers go into the weight file's training record)::

    python scripts/train_lstm_generalist.py configs/generalist.json --out runs/generalist
    python scripts/train_lstm_generalist.py configs/generalist.json --seed 1 --out runs/g1

The recipes of shipped weight files live in ``configs/recipes/`` (no ``evaluate``: the ship
scripts evaluate). Output in ``--out``: ``stage{i}/`` (each stage's MetaTrainer run),
``NAME.safetensors`` (the final rule, its training record naming the recipe),
``evaluation.json`` and ``evaluation.md`` when ``evaluate`` is set.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

import optizoo
from optizoo.meta.recipe import Recipe, train_recipe
from optizoo.zoo.format import read_metadata


def load_config(path: str | Path) -> tuple[Recipe, dict[str, Any] | None]:
    """Read an experiment recipe: the :class:`Recipe` and its ``evaluate`` options (or None)."""
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    evaluate = data.pop("evaluate", None) if isinstance(data, dict) else None
    try:
        return Recipe.from_dict(data, name=path.stem, source=str(path)), evaluate
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{path}: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", help="the recipe (JSON)")
    ap.add_argument("--out", required=True, help="run directory")
    ap.add_argument("--seed", type=int, default=None, help="overrides the recipe's seed")
    ap.add_argument("--resume", action="store_true", help="continue the run in --out")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--no-evaluate", action="store_true", help="skip the final evaluation")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    recipe, evaluate_options = load_config(args.config)
    if args.seed is not None:
        recipe = recipe.with_seed(args.seed)
    out = Path(args.out)
    path = train_recipe(recipe, out, resume=args.resume)
    if evaluate_options and not args.no_evaluate:
        from optizoo.compare.evaluate import SUITES, evaluate

        opts = dict(evaluate_options)
        names = opts.pop("tasks", ["mlp-20-sigmoid"])
        suite = [t for t in SUITES["default"] if t.name in names]
        report = evaluate(f"{recipe.name}={path}", suite=suite, **opts)
        report.save_json(out / "evaluation.json")
        table = report.table()
        (out / "evaluation.md").write_text(table)
        print(table)
        meta = read_metadata(path)
        training = {**meta["optizoo.training"], "evaluation": report.rows()}
        optizoo.save_rule(
            optizoo.load_rule(path), path, training=training, description=meta["description"]
        )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
