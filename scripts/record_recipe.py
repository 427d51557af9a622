"""Record a shipped weight file's recipe in its training record (tensors untouched).

    python scripts/record_recipe.py lstm-mlp lstm-quadratic

Sets ``recipe_file`` to ``configs/recipes/NAME.json`` and ``recipe`` to that file's contents in
the shipped ``NAME.safetensors`` (``optizoo.training``), keeps every tensor, the description and
the licence, and updates the manifest (``add_to_shipped``). Run it only for a recipe that rebuilds
the shipped tensors (docs/recipes.md states how exactly); the ship scripts record it for new runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

import optizoo
from optizoo.meta.recipe import RECIPE_FOLDER, Recipe
from optizoo.zoo.format import read_metadata, rule_from_file
from optizoo.zoo.manifest import add_to_shipped

ROOT = Path(__file__).resolve().parent.parent
PRETRAINED = ROOT / "optizoo" / "zoo" / "pretrained"


def record(name: str, staging: Path) -> Path:
    shipped = PRETRAINED / f"{name}.safetensors"
    recipe_file = f"{RECIPE_FOLDER}/{name}.json"
    recipe = Recipe.from_file(ROOT / recipe_file, source=recipe_file)
    meta = read_metadata(shipped)
    if recipe.rule_name != meta["optizoo.rule"]:
        raise SystemExit(
            f"{recipe_file} trains {recipe.rule_name!r}, {name} is {meta['optizoo.rule']!r}"
        )
    training = {**meta["optizoo.training"], "recipe_file": recipe_file, "recipe": recipe.raw}
    staged = staging / f"{name}.safetensors"
    rule = rule_from_file(shipped)
    optizoo.save_rule(
        rule, staged, training=training, description=meta["description"], license=meta["license"]
    )
    before, after = load_file(str(shipped)), load_file(str(staged))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    default = (PRETRAINED / "DEFAULT").is_file() and (
        PRETRAINED / "DEFAULT"
    ).read_text().strip() == name
    return add_to_shipped(staged, name, default=default, overwrite=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="+")
    ap.add_argument("--staging", default="runs/record_recipe")
    args = ap.parse_args()
    for name in args.names:
        print(
            "recorded", record(name, Path(args.staging)), json.dumps(f"{RECIPE_FOLDER}/{name}.json")
        )


if __name__ == "__main__":
    main()
