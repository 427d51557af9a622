"""Record the weights of short versions of the shipped recipes (a test fixture).

Written once, BEFORE the stages moved from the recipe into ``MetaConfig.stages`` (issue 15,
Deliver 5; the code of commit 281d41c), so that ``tests/meta/test_recipe_reference.py`` can check
that a recipe still trains exactly the same weights through ``optizoo.meta.fit_stages``::

    python scripts/record_recipe_reference.py    # writes tests/meta/data/recipe_reference.safetensors

Each shipped recipe (``configs/recipes/*.json``) is cut to two stages of 2-step truncations
(stage 0: 3 meta-steps, horizon 4; stage 1: 2 meta-steps, horizon 2, ``meta_lr`` 0.001; 2
held-out problems, evaluated every meta-step, ``problems_per_step`` at most 2), so that the
stage seeds and the hand-over of the best rule between stages are exercised; ``lstm-mlp`` also
runs with the scale-free validation objective (``"log": true``, train weight 0.5). One thread.
The fixture holds each run's final weights, as ``NAME/TENSOR``.

``lstm-hierarchical-val`` (shipped later the same day) was added to the fixture by running this
module's ``short_recipes``/``train`` on the same pre-change code (commit 281d41c, which already
had the validation splits and the log validation objective), the other entries left as recorded.
"""

from __future__ import annotations

import copy
import json
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "meta" / "data" / "recipe_reference.safetensors"
RECIPES = ("lstm-quadratic", "lstm-mlp", "lstm-hierarchical", "lstm-hierarchical-val")


def short_recipes() -> dict[str, dict]:
    """The short recipes, by fixture name."""
    out = {}
    for name in RECIPES:
        d = copy.deepcopy(json.loads((ROOT / "configs" / "recipes" / f"{name}.json").read_text()))
        if "problems_per_step" in d.get("common", {}):
            d["common"]["problems_per_step"] = 2
        first = {
            **d["stages"][0],
            "meta_steps": 3,
            "unroll": 2,
            "horizon": 4,
            "eval_problems": 2,
            "eval_every": 1,
            "checkpoint_every": 0,
        }
        d["stages"] = [first, {**first, "meta_lr": 0.001, "horizon": 2, "meta_steps": 2}]
        out[name] = d
    vlog = copy.deepcopy(out["lstm-mlp"])
    vlog["meta_objective"] = {"validation_weight": 1.0, "train_weight": 0.5, "log": True}
    out["lstm-mlp-validation-log"] = vlog
    return out


def train(recipe: dict, folder: Path) -> dict[str, torch.Tensor]:
    """Train ``recipe`` with ``train_recipe`` (one thread) in ``folder``; its final weights."""
    from optizoo.meta.recipe import train_recipe

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return load_file(str(train_recipe(recipe, folder, progress=False)))
    finally:
        torch.set_num_threads(threads)


def main() -> int:
    tensors = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, recipe in short_recipes().items():
            for key, value in train(recipe, Path(tmp) / name).items():
                tensors[f"{name}/{key}"] = value
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(OUT))
    print(f"wrote {OUT} ({len(tensors)} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
