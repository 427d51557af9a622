"""``optizoo train``: meta-train an update rule from the shell.

::

    optizoo train --task quadratic --rule lstm --unroll 20 --horizon 100 --meta-steps 2000 --out runs/q
    optizoo train --out runs/q --meta-steps 4000 --resume        # continue (same command after a crash)
    torchrun --nproc-per-node 2 -m optizoo.cli train --task quadratic --problems-per-step 2 --out runs/q2

``--meta-steps`` is the total number of meta-steps of the run: with ``--resume`` the run continues
from its checkpoint until it reaches that count (and starts fresh when ``--out`` holds no
checkpoint yet). ``--config FILE.json`` gives any option as a JSON object (keys as in
:class:`~optizoo.meta.MetaConfig` plus ``rule``, ``rule_config``, ``meta_steps``, ``out``);
flags given on the command line override it.

A ``--config`` with ``stages`` (a curriculum, :attr:`MetaConfig.stages
<optizoo.meta.MetaConfig>`) runs them one after the other (:func:`optizoo.meta.fit_stages`):
``stage{i}/`` in ``--out`` holds each stage's run, ``best_rule.safetensors`` the last stage's best
rule; the stages fix the meta-steps (no ``--meta-steps``), flags may set the top-level options no
stage sets, and ``--resume`` continues an interrupted stage.

A **recipe** (a JSON file with ``stages`` that names its rule by ``rule_name`` and ``rule`` and its
task by ``{"name", "args"}``, see :mod:`optizoo.meta.recipe`) rebuilds a weight file from its
seed: ``optizoo train --config configs/recipes/lstm-mlp.json --out runs/mlp [--resume]
[--seed N]`` (from a checkout), or ``optizoo train --recipe lstm-mlp --out runs/mlp`` (the copy
inside the installed package; ``--config configs/recipes/NAME.json`` falls back to it when no such
file exists). The recipe fixes every option: only ``--out``, ``--seed``, ``--device``,
``--resume``, ``--overwrite`` and ``--quiet`` go with it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

__all__ = ["register", "run"]

#: command-line flag (dest) -> MetaConfig field, for the options that map one to one
_CONFIG_FLAGS = (
    "task", "task_args", "unroll", "horizon", "meta_lr", "scalar_meta_lr", "clip", "problems_per_step",
    "eval_problems", "eval_every", "eval_horizon", "seed", "loss_weights", "second_order",
    "checkpoint_every", "device",
)  # fmt: skip
_EXTRA_KEYS = ("rule", "rule_config", "meta_steps", "out")
#: keys only a recipe has (a plain config names its rule by "rule" and its task by a string)
_RECIPE_ONLY = ("rule_name", "common", "description")


def _json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc


def _clip_arg(text: str) -> float | None:
    if text.lower() in ("none", "off", "0"):
        return None
    return float(text)


def register(subparsers: Any) -> None:
    """Add the ``train`` sub-command."""
    p = subparsers.add_parser(
        "train",
        help="meta-train an update rule (truncated BPTT; runs under torchrun too)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # every default is None so that --config values are only overridden by flags actually given
    p.add_argument("--task", help="task registry name (default: quadratic)")
    p.add_argument(
        "--task-args", type=_json_arg, help="task keyword arguments as JSON, e.g. '{\"batch\": 64}'"
    )
    p.add_argument("--rule", help="rule registry name (default: lstm)")
    p.add_argument("--rule-config", type=_json_arg, help="rule constructor arguments as JSON")
    p.add_argument("--unroll", type=int, help="steps per truncation (default: 20)")
    p.add_argument("--horizon", type=int, help="steps per episode (default: 100)")
    p.add_argument("--meta-steps", type=int, help="total meta-steps (truncations) of the run")
    p.add_argument("--meta-lr", type=float, help="Adam meta learning rate (default: 3e-3)")
    p.add_argument(
        "--scalar-meta-lr",
        type=float,
        help="meta learning rate of scalar meta-parameters such as log_lr (default: --meta-lr)",
    )
    p.add_argument(
        "--clip", type=_clip_arg, help="meta-gradient norm clip, or 'none' (default: 1.0)"
    )
    p.add_argument(
        "--problems-per-step", type=int, help="problems per meta-step, all processes (default: 1)"
    )
    p.add_argument("--eval-problems", type=int, help="held-out problems (default: 8)")
    p.add_argument("--eval-every", type=int, help="evaluate every N meta-steps (default: 100)")
    p.add_argument(
        "--eval-horizon", type=int, help="steps of an evaluation rollout (default: horizon)"
    )
    p.add_argument("--loss-weights", type=_json_arg, help="meta-loss weights as a JSON list")
    p.add_argument(
        "--second-order",
        action="store_true",
        default=None,
        help="differentiate through optimizee gradients",
    )
    p.add_argument(
        "--checkpoint-every", type=int, help="checkpoint every N meta-steps (default: 100)"
    )
    p.add_argument(
        "--seed",
        type=int,
        help="root seed of the problem streams and of the rule's initial weights (default: 0)",
    )
    p.add_argument("--device", help="cpu, cuda, cuda:1... (default: cpu)")
    p.add_argument("--out", help="output directory (checkpoint, metrics, plot, weight files)")
    p.add_argument(
        "--config",
        type=Path,
        help="JSON file with any of the options above, or a recipe (configs/recipes/NAME.json)",
    )
    p.add_argument("--recipe", help="a recipe shipped in the package, by name (e.g. lstm-mlp)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out if it has a checkpoint (options given must match it)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run that --out holds (default: refuse to touch it)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.set_defaults(func=run)


class _Refused(Exception):
    """A bad option: printed as one ``optizoo train: error:`` line, exit status 2."""


def _options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if args.config is not None:
        try:
            options = json.loads(Path(args.config).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise _Refused(f"cannot read --config {str(args.config)!r}: {exc}") from exc
        if not isinstance(options, dict):
            raise _Refused("--config must hold a JSON object")
    for key in (*_CONFIG_FLAGS, *_EXTRA_KEYS):
        value = getattr(args, key, None)
        if value is not None:
            options[key] = value
    if "clip" in options and options["clip"] is not None and math.isinf(float(options["clip"])):
        options["clip"] = None
    return options


def _given(args: argparse.Namespace) -> list[str]:
    """The options given as flags (their dests)."""
    return [key for key in (*_CONFIG_FLAGS, *_EXTRA_KEYS) if getattr(args, key, None) is not None]


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _is_recipe(data: Any) -> bool:
    """Whether a ``--config`` JSON object is a recipe (:mod:`optizoo.meta.recipe`) rather than
    MetaConfig options: it has ``stages`` and a recipe's own keys (``rule_name``, ``common``,
    ``description``), or gives ``task`` or ``rule`` as a JSON object."""
    if not isinstance(data, dict) or "stages" not in data:
        return False
    return (
        any(key in data for key in _RECIPE_ONLY)
        or isinstance(data.get("task"), dict)
        or isinstance(data.get("rule"), dict)
    )


def _recipe_spec(args: argparse.Namespace) -> str | None:
    """The recipe to run (a file or a shipped name), or ``None`` for a plain ``train``."""
    from optizoo.meta.recipe import shipped_recipes

    if getattr(args, "recipe", None) is not None:
        if args.config is not None:
            raise _Refused("give either --recipe NAME or --config FILE, not both")
        return str(args.recipe)
    if args.config is None:
        return None
    path = Path(args.config)
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None  # reported by _options
        return str(path) if _is_recipe(data) else None
    stem = path.name[: -len(".json")] if path.name.endswith(".json") else path.name
    return str(path) if stem in shipped_recipes() else None


def _run_recipe(args: argparse.Namespace, spec: str) -> int:
    from optizoo.cli.args import check_device
    from optizoo.meta.recipe import load_recipe, train_recipe

    fixed = [_flag(key) for key in _given(args) if key not in ("seed", "device", "out")]
    if fixed:
        raise _Refused(
            f"{', '.join(fixed)} cannot go with a recipe ({spec}): the recipe fixes them; edit a "
            "copy of the recipe instead"
        )
    if args.out is None:
        raise _Refused("give --out DIR for the recipe's run folder")
    check_device(args.device)
    recipe = load_recipe(spec)
    if args.seed is not None:
        recipe = recipe.with_seed(args.seed)
    path = train_recipe(
        recipe,
        args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet,
        device=args.device,
    )
    if not args.quiet:
        print(f"wrote {path} (recipe {recipe.source}, seed {recipe.seed})")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the ``train`` sub-command; returns the exit code (2: bad options, one line)."""
    from optizoo.errors import OptizooError

    try:
        return _run(args)
    except (_Refused, OptizooError, ValueError, TypeError, KeyError) as exc:
        text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"optizoo train: error: {' '.join(text.split())}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    import torch
    import torch.distributed as dist

    from optizoo import rules
    from optizoo.cli.args import check_device
    from optizoo.meta import distributed as ddp
    from optizoo.meta.checkpoint import CHECKPOINT_NAME
    from optizoo.meta.trainer import MetaConfig, MetaTrainer

    spec = _recipe_spec(args)
    if spec is not None:
        return _run_recipe(args, spec)
    options = _options(args)
    if options.get("stages") is not None:
        return _run_stages(args, options)
    given_rule = {k: options.pop(k) for k in ("rule", "rule_config") if k in options}
    meta_steps = options.pop("meta_steps", None)
    out = options.pop("out", None)
    if meta_steps is None:
        raise _Refused("give --meta-steps N (the run's total number of meta-steps)")
    if not (isinstance(meta_steps, int) and not isinstance(meta_steps, bool) and meta_steps >= 0):
        raise _Refused(f"--meta-steps must be a non-negative integer, got {meta_steps!r}")
    if out is None:
        raise _Refused("give --out DIR for the checkpoint, metrics and weight files")
    if Path(out).exists() and not Path(out).is_dir():
        raise _Refused(f"--out {out!r} is a file; give a folder for the run")
    if args.resume and args.overwrite:
        raise _Refused("--resume and --overwrite exclude each other")
    check_device(options.get("device"))
    resuming = args.resume and (Path(out) / CHECKPOINT_NAME).is_file()
    if not resuming:
        config = MetaConfig.from_dict(options)
        from optizoo import tasks

        tasks.build(config.task, **config.task_args)  # unknown task or arguments: refused now
    created = ddp.init_from_env(options.get("device"))
    try:
        verbose = not args.quiet
        if resuming:
            trainer = MetaTrainer.resume(
                out, verbose=verbose, device=options.get("device"), expect={**options, **given_rule}
            )
        else:
            # --seed seeds the rule's initial weights too (unless the config sets rule_seed)
            torch.manual_seed(config.initial_rule_seed)
            rule = rules.build(given_rule.get("rule", "lstm"), given_rule.get("rule_config") or {})
            trainer = MetaTrainer(
                rule, config.task, out_dir=out, verbose=verbose, config=config,
                overwrite=args.overwrite or args.resume,  # --resume of a run without checkpoint
            )  # fmt: skip
        remaining = max(0, int(meta_steps) - trainer.meta_step)
        summary = trainer.fit(remaining)
        if ddp.is_main() and verbose:
            best = summary["best_objective"]
            print(
                f"meta-step {summary['meta_step']}: best held-out objective {best:.6g} at meta-step "
                f"{summary['best_meta_step']}; files in {out}/ (best_rule.safetensors, "
                "metrics.jsonl, learning_curve.png, checkpoint.pt)"
            )
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()
    return 0


def _run_stages(args: argparse.Namespace, options: dict[str, Any]) -> int:
    """``--config`` with ``stages``: :func:`optizoo.meta.fit_stages`, the final rule in
    ``--out/best_rule.safetensors``."""
    import torch

    from optizoo import rules, tasks
    from optizoo.cli.args import check_device
    from optizoo.meta.checkpoint import BEST_RULE_NAME
    from optizoo.meta.config import MetaConfig
    from optizoo.meta.stages import fit_stages

    if "meta_steps" in options:
        raise _Refused(
            "a config with stages fixes the meta-steps of each stage (its 'meta_steps'); drop "
            "--meta-steps / 'meta_steps'"
        )
    stages = options["stages"]
    staged = (
        {k for s in stages if isinstance(s, dict) for k in s} if isinstance(stages, list) else set()
    )
    clash = [_flag(k) for k in _given(args) if k in staged and k != "device"]
    if clash:
        raise _Refused(
            f"{', '.join(clash)} would be overridden by the stages that set it; edit the stages "
            "of the config instead"
        )
    given_rule = {k: options.pop(k) for k in ("rule", "rule_config") if k in options}
    out = options.pop("out", None)
    if out is None:
        raise _Refused("give --out DIR for the stages' run folder")
    if args.resume and args.overwrite:
        raise _Refused("--resume and --overwrite exclude each other")
    check_device(args.device)
    config = MetaConfig.from_dict(options)
    tasks.build(config.task, **config.task_args)  # unknown task or arguments: refused now
    # the rule's initial weights come from the config's rule seed (--seed, unless rule_seed is set)
    torch.manual_seed(config.initial_rule_seed)
    rule = rules.build(given_rule.get("rule", "lstm"), given_rule.get("rule_config") or {})
    verbose = not args.quiet
    result = fit_stages(
        rule, config, out, resume=args.resume, overwrite=args.overwrite, verbose=verbose,
        device=args.device,
    )  # fmt: skip
    path = result.save(Path(out) / BEST_RULE_NAME)
    if verbose:
        last = result.results[-1]
        print(
            f"{len(result.results)} stage(s), {result.training['meta_steps']} meta-steps: the last "
            f"stage's best held-out objective {last['best_objective']:.6g} at its meta-step "
            f"{last['best_meta_step']}; wrote {path} (each stage's run in {out}/stage*/)"
        )
    return 0
