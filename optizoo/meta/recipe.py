"""Recipes: the whole meta-training of a weight file in one JSON file, rebuilt by one call.

A recipe names a registered rule and its arguments, a task, the :class:`MetaConfig` fields all
stages share, a curriculum of ``stages`` and a seed::

    {
      "rule_name": "lstm",                     # any registered rule (default "lstm")
      "rule": {"hidden_size": 20, ...},        # its keyword arguments
      "task": {"name": "mix", "args": {...}},  # a registered task and its arguments
      "common": {"clip": 1.0, ...},            # MetaConfig fields of every stage
      "stages": [{"unroll": 100, "horizon": 200, "meta_steps": 150, "meta_lr": 0.002}],
      "meta_objective": {"validation_weight": 1.0, "train_weight": 0.0},   # optional
      "seed": 0,                               # root seed
      "rule_seed": 0,                          # optional: seed of the initial weights (default: seed)
      "description": "..."                     # optional: the weight file's description
    }

A recipe is a :class:`MetaConfig` with ``stages`` plus its rule: ``common``, the top-level
``meta_objective``, the task, seeds and stages make one staged config (:meth:`Recipe.meta_config`).
:func:`train_recipe` seeds torch with ``rule_seed`` (``seed`` when unset), builds the rule, and
runs that config with :func:`~optizoo.meta.fit_stages`: one :class:`~optizoo.meta.MetaTrainer`
per stage in ``out_dir/stage{i}/`` (its progress bar, checkpoints, metrics and learning curve).
Stage ``i`` uses the seed ``seed + 1000 · i`` (so stages see different problems) and starts from
the previous stage's best rule (chosen on held-out problems) with a fresh meta-optimizer. The
final weight file's ``optizoo.training`` record names
the recipe (``recipe_file``) and holds its full contents (``recipe``) plus one training record per
stage. ``optizoo train --config configs/recipes/NAME.json --out DIR`` runs it from the shell; the
recipes of the shipped weight files ship inside the package too (:func:`shipped_recipes`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from optizoo._validate import nonnegative_int
from optizoo.meta.config import STAGE_KEYS, MetaConfig
from optizoo.meta.stages import fit_stages, prepare_run_folder

__all__ = [
    "RECIPE_FOLDER",
    "Recipe",
    "load_recipe",
    "shipped_recipe_path",
    "shipped_recipes",
    "train_recipe",
]

#: where a checkout keeps the recipes (the package holds the same files in ``optizoo/recipes``)
RECIPE_FOLDER = "configs/recipes"
#: the copy of the recipe a run folder keeps (a resume must run the same recipe)
RUN_RECIPE_NAME = "recipe.json"
#: MetaConfig fields a recipe sets once, at its top level
_TOP_LEVEL = ("task", "task_args", "seed", "rule_seed")


def _common_options(options: Any) -> dict[str, Any]:
    """The recipe's ``common`` entry: the per-stage MetaConfig fields every stage shares."""
    if not isinstance(options, Mapping):
        raise TypeError(f"recipe 'common' must be a JSON object, got {type(options).__name__}")
    options = dict(options)
    top = sorted(set(options) & set(_TOP_LEVEL))
    if top:
        raise ValueError(
            f"recipe 'common' sets {top}: the task, seed and rule_seed are set once, at the "
            "recipe's top level ('task': {'name', 'args'}, 'seed', 'rule_seed')"
        )
    allowed = STAGE_KEYS - {"meta_steps"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(
            f"recipe 'common' has unknown key(s) {unknown}; accepted: {sorted(allowed)}"
        )
    return options


@dataclass
class Recipe:
    """A meta-training recipe (see the module docstring for the JSON layout).

    Attributes:
        task: ``{"name": registry name, "args": keyword arguments}`` (``args`` optional).
        stages: the curriculum: per stage, :class:`MetaConfig` fields plus ``meta_steps``.
        rule_name: the registered rule (``optizoo.rules.build``), e.g. ``"lstm"``,
            ``"hierarchical"``.
        rule: the rule's keyword arguments.
        common: :class:`MetaConfig` fields shared by every stage (a stage's own value wins).
        meta_objective: the stages' meta-objective (``None``: the training loss; see
            :mod:`optizoo.meta.objectives`).
        seed: root seed; stage ``i`` runs with ``seed + 1000 · i``.
        rule_seed: seed of the rule's initial weights (``None``: ``seed``).
        description: the final weight file's description (default: one generated line).
        name: the final weight file is ``NAME.safetensors`` (from the recipe's file name; not
            part of the JSON).
        source: the recipe's file as given (``configs/recipes/NAME.json``), recorded in the
            weight file; not part of the JSON.
    """

    task: dict[str, Any]
    stages: list[dict[str, Any]]
    rule_name: str = "lstm"
    rule: dict[str, Any] = field(default_factory=dict)
    common: dict[str, Any] = field(default_factory=dict)
    meta_objective: dict[str, float] | None = None
    seed: int = 0
    rule_seed: int | None = None
    description: str = ""
    name: str = field(default="rule", compare=False)
    source: str | None = field(default=None, compare=False)
    #: the JSON object the recipe was read from, recorded verbatim in the weight file
    raw: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.task, str):
            self.task = {"name": self.task}
        if not isinstance(self.task, Mapping):
            raise TypeError(
                "recipe 'task' must be {'name': registry name, 'args': {...}}, got "
                f"{type(self.task).__name__}"
            )
        unknown = sorted(set(self.task) - {"name", "args"})
        if unknown or not isinstance(self.task.get("name"), str) or not self.task.get("name"):
            raise ValueError(
                "recipe 'task' must be {'name': registry name, 'args': {...}}"
                + (f"; unknown key(s) {unknown}" if unknown else "; 'name' is missing")
            )
        args = self.task.get("args", {})
        if not isinstance(args, Mapping):
            raise TypeError(f"recipe task 'args' must be a JSON object, got {type(args).__name__}")
        self.task = {"name": self.task["name"], "args": dict(args)}
        if not isinstance(self.rule_name, str) or not self.rule_name:
            raise TypeError(
                f"recipe 'rule_name' must be a rule's registry name, got {self.rule_name!r}"
            )
        if not isinstance(self.rule, Mapping):
            raise TypeError(
                f"recipe 'rule' must be a JSON object of the rule's arguments, got {type(self.rule).__name__}"
            )
        self.rule = dict(self.rule)
        if not isinstance(self.stages, list) or not self.stages:
            raise ValueError("recipe 'stages' must list at least one stage")
        self.common = _common_options(self.common)
        if self.meta_objective is not None and "meta_objective" in self.common:
            raise ValueError(
                "recipe sets meta_objective both at its top level and in 'common'; keep one"
            )
        self.seed = nonnegative_int(self.seed, "recipe 'seed'")
        if self.rule_seed is not None:
            self.rule_seed = nonnegative_int(self.rule_seed, "recipe 'rule_seed'")
        if not isinstance(self.description, str):
            raise TypeError("recipe 'description' must be a string")
        try:  # every stage's MetaConfig is valid now, not hours later
            config = self.meta_config()
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"recipe {exc}") from None
        assert config.stages is not None
        self.stages = config.stages

    # ------------------------------------------------------------------ (de)serialisation

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, name: str = "rule", source: str | None = None
    ) -> Recipe:
        """Build from a JSON object; unknown keys are an error naming the accepted ones."""
        if not isinstance(data, Mapping):
            raise TypeError(f"a recipe is a JSON object, got {type(data).__name__}")
        accepted = {f.name for f in dataclasses.fields(cls)} - {"name", "source", "raw"}
        unknown = sorted(set(data) - accepted)
        if unknown:
            raise ValueError(f"unknown recipe key(s) {unknown}; accepted: {sorted(accepted)}")
        missing = [k for k in ("task", "stages") if k not in data]
        if missing:
            raise ValueError(f"the recipe needs {' and '.join(repr(k) for k in missing)}")
        raw = json.loads(json.dumps(dict(data)))
        return cls(**copy.deepcopy(dict(data)), name=name, source=source, raw=raw)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, source: str | None = None) -> Recipe:
        """Read a recipe JSON file; the weight file it makes is named after it (``NAME.json`` ->
        ``NAME.safetensors``) and records ``source`` (default: ``path`` as given)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(f"cannot read the recipe {str(path)!r}: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise ValueError(f"the recipe {str(path)!r} is not valid JSON: {exc}") from exc
        try:
            return cls.from_dict(data, name=path.stem, source=source or str(path))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{path}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (optional entries only when set); ``from_dict`` inverts it."""
        out: dict[str, Any] = {"rule_name": self.rule_name, "rule": copy.deepcopy(self.rule)}
        out["task"] = copy.deepcopy(self.task)
        if self.common:
            out["common"] = copy.deepcopy(self.common)
        out["stages"] = copy.deepcopy(self.stages)
        if self.meta_objective is not None:
            obj = self.meta_objective
            out["meta_objective"] = obj if isinstance(obj, str) else dict(obj)
        out["seed"] = self.seed
        if self.rule_seed is not None:
            out["rule_seed"] = self.rule_seed
        if self.description:
            out["description"] = self.description
        return out

    # ------------------------------------------------------------------ derived values

    @property
    def initial_rule_seed(self) -> int:
        """The seed of the rule's initial weights: ``rule_seed``, or ``seed``."""
        return self.seed if self.rule_seed is None else self.rule_seed

    def with_seed(self, seed: int) -> Recipe:
        """The same recipe with another root seed (``optizoo train --seed``); an explicit
        ``rule_seed`` stays."""
        seed = nonnegative_int(seed, "seed")
        raw = None if self.raw is None else {**self.raw, "seed": seed}
        return dataclasses.replace(self, seed=seed, raw=raw)

    def meta_config(self) -> MetaConfig:
        """The recipe as one :class:`MetaConfig` with ``stages``: ``common`` and the top-level
        ``meta_objective`` are its fields, the task, seed and rule seed too (what
        :func:`~optizoo.meta.fit_stages` runs)."""
        options = dict(self.common)
        if self.meta_objective is not None:
            options["meta_objective"] = self.meta_objective
        options.update(
            task=self.task["name"],
            task_args=self.task["args"],
            seed=self.seed,
            rule_seed=self.rule_seed,
            stages=self.stages,
        )
        return MetaConfig.from_dict(options)

    def stage_config(self, i: int, *, device: str | None = None) -> MetaConfig:
        """The :class:`MetaConfig` of stage ``i`` (``device`` overrides the recipe's):
        :meth:`MetaConfig.stage_configs` of :meth:`meta_config`."""
        config = self.meta_config().stage_configs()[i]
        return config if device is None else dataclasses.replace(config, device=device)

    def build_rule(self) -> Any:
        """The rule's initial weights: ``torch.manual_seed(rule_seed)``, then build it."""
        from optizoo import rules

        torch.manual_seed(self.initial_rule_seed)
        return rules.build(self.rule_name, self.rule)

    def check(self) -> None:
        """Build the rule and the task once (torch's RNG is left as it was): an unknown name or
        argument is refused before any training starts."""
        from optizoo import tasks

        with torch.random.fork_rng(devices=[]):
            self.build_rule()
        tasks.build(self.task["name"], **self.task["args"])

    @property
    def meta_steps(self) -> int:
        """Meta-steps of all stages together."""
        return sum(self.meta_config().stage_meta_steps())


# ---------------------------------------------------------------------- shipped recipes


def _package_folder() -> Any:
    return resources.files("optizoo") / "recipes"


def shipped_recipes() -> list[str]:
    """Names of the recipes that ship with the package (``optizoo/recipes/NAME.json``)."""
    folder = _package_folder()
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def shipped_recipe_path(name: str) -> Path:
    """The packaged file of the recipe ``name`` (``"lstm-mlp"``).

    Raises:
        KeyError: no shipped recipe has that name (the message lists them).
    """
    if name in shipped_recipes():
        return Path(str(_package_folder() / f"{name}.json"))
    raise KeyError(f"no shipped recipe {name!r}; shipped: {shipped_recipes()}")


def load_recipe(spec: str | os.PathLike[str]) -> Recipe:
    """A recipe from a file path, or from the package by name.

    ``spec`` is a JSON file (``configs/recipes/lstm-mlp.json`` in a checkout); when no such file
    exists, a shipped recipe of that name (``lstm-mlp``, or ``configs/recipes/lstm-mlp.json``
    without a checkout) is used and recorded as ``configs/recipes/NAME.json``.
    """
    path = Path(spec)
    if path.is_file():
        return Recipe.from_file(path)
    stem = path.name[: -len(".json")] if path.name.endswith(".json") else path.name
    if stem in shipped_recipes():
        return Recipe.from_file(shipped_recipe_path(stem), source=f"{RECIPE_FOLDER}/{stem}.json")
    raise ValueError(
        f"no recipe file {str(spec)!r} and no shipped recipe of that name; shipped: "
        f"{shipped_recipes()}"
    )


# ---------------------------------------------------------------------- training


def _coerce(recipe: Recipe | Mapping[str, Any] | str | os.PathLike[str]) -> Recipe:
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, Mapping):
        return Recipe.from_dict(recipe)
    if isinstance(recipe, (str, os.PathLike)):
        return load_recipe(recipe)
    raise TypeError(
        f"recipe must be a Recipe, a JSON object or a file, got {type(recipe).__name__}"
    )


def train_recipe(
    recipe: Recipe | Mapping[str, Any] | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    device: str | None = None,
) -> Path:
    """Run every stage of ``recipe``; returns the path of the final weight file.

    Args:
        recipe: a :class:`Recipe`, its JSON object, or a file / shipped name (:func:`load_recipe`).
        out_dir: run folder: ``recipe.json`` (the recipe run), ``stages.json`` (its
            :class:`MetaConfig` and rule, :func:`~optizoo.meta.fit_stages`), ``stage{i}/`` (each stage's
            :class:`~optizoo.meta.MetaTrainer` files: ``checkpoint.pt``, ``metrics.jsonl``,
            ``learning_curve.png``, ``best_rule.safetensors``...) and ``NAME.safetensors``, the
            final rule (the last stage's best) with the recipe in its training record.
        resume: continue the run ``out_dir`` holds: finished stages are reloaded from their
            checkpoints, an interrupted stage continues from its last checkpoint (from its start
            when it had none), bit-identically to an uninterrupted run. The recipe (and seed) must
            be the run's.
        overwrite: replace the run ``out_dir`` holds.
        progress: show each stage's progress bar (on a terminal) and a line per stage.
        device: run on this device instead of the recipe's (``"cuda"``); the result may then
            differ from the CPU run in the last bits.

    Raises:
        CheckpointError: ``out_dir`` holds another run (without ``resume``/``overwrite``), or a
            run of another recipe, or a checkpoint that does not fit.
        ValueError, TypeError, KeyError: a bad recipe, an unknown rule or task.
    """
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other")
    recipe = _coerce(recipe)
    recipe.check()
    out = Path(out_dir)
    prepare_run_folder(
        out, RUN_RECIPE_NAME, recipe.to_dict(), kind="recipe", resume=resume, overwrite=overwrite
    )
    rule = recipe.build_rule()
    result = fit_stages(
        rule,
        recipe.meta_config(),
        out,
        resume=resume,
        overwrite=overwrite,
        verbose=progress,
        device=device,
    )
    record = {
        "recipe_file": recipe.source,
        "recipe": recipe.raw if recipe.raw is not None else recipe.to_dict(),
    }
    description = recipe.description or (
        f"{recipe.rule_name} rule meta-trained on {recipe.task['name']} by the recipe "
        f"{recipe.source or recipe.name} ({len(recipe.stages)} stage(s), {recipe.meta_steps} "
        "meta-steps)"
    )
    return result.save(out / f"{recipe.name}.safetensors", description=description, record=record)
