"""Meta-train the generalist learned optimizer: a curriculum of MetaTrainer stages on a task mix.

The whole recipe lives in one JSON file (``configs/generalist.json``) plus a seed::

    python scripts/train_lstm_generalist.py configs/generalist.json --out /work/runs/generalist
    python scripts/train_lstm_generalist.py configs/generalist.json --seed 1 --out runs/g1

Config keys:

- ``rule``: keyword arguments of the rule (:class:`optizoo.rules.LSTMRule` by default: features,
  parameterization...).
- ``rule_name`` (optional): the registered rule to train (default ``"lstm"``; e.g.
  ``"hierarchical"`` for :class:`optizoo.rules.HierarchicalRule`).
- ``task``: ``{"name": "mix", "args": {...}}`` (see :mod:`optizoo.tasks.mix`).
- ``common``: :class:`optizoo.meta.MetaConfig` fields shared by every stage (``clip``,
  ``eval_problems``...).
- ``stages``: the curriculum, a list of :class:`~optizoo.meta.MetaConfig` fields plus
  ``meta_steps``; each stage starts from the previous stage's best rule (chosen on held-out
  problems) with a fresh meta-optimizer, and uses the seed ``seed + 1000 · stage`` so that
  stages see different problems.
- ``seed``: the root seed (``--seed`` overrides it).
- ``meta_objective`` (optional): ``{"validation_weight": a, "train_weight": b}``: each
  truncation's meta-loss is ``a · mean_p eval_loss_p(θ_end) + b · Σ_t w_t f(θ_t)`` (the task's
  ``eval_loss``, a validation split with ``mix``'s ``validation=k``), and the best rule is chosen
  on the held-out problems' validation loss after ``eval_horizon`` steps. Default: the
  MetaTrainer's training-loss objective. (:class:`ValidationMetaTrainer`; a candidate for an
  option of :class:`optizoo.meta.MetaConfig`.)
- ``evaluate`` (optional): keyword arguments of :func:`optizoo.compare.evaluate.evaluate` run on the final
  rule over the ``mlp-20-sigmoid`` task; the numbers go into the weight file's training record.

Output in ``--out``: ``stage{i}/`` (each stage's MetaTrainer run directory), ``generalist.safetensors``
(the final rule, with the full recipe and per-stage records in ``optizoo.training``),
``evaluation.json`` and ``evaluation.md`` when ``evaluate`` is set.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

import optizoo
from optizoo.meta import MetaTrainer
from optizoo.meta.unroll import Layout, unroll_flat
from optizoo.rules import UpdateRule, build


class ValidationMetaTrainer(MetaTrainer):
    """MetaTrainer whose meta-loss adds the problems' ``eval_loss`` (validation) at the end of
    every truncation, and which selects the best rule on that validation loss.

    Only the meta-loss (:meth:`MetaTrainer.meta_loss`) and the held-out selection metric differ
    from :class:`MetaTrainer`.
    """

    def __init__(self, *args, validation_weight: float = 1.0, train_weight: float = 0.0, **kw):
        super().__init__(*args, **kw)
        self.validation_weight = float(validation_weight)
        self.train_weight = float(train_weight)

    def _validation(self, problems, layout: Layout, flat: torch.Tensor) -> torch.Tensor:
        losses = [p.eval_loss(v) for p, v in zip(problems, layout.views(flat))]
        if any(v is None for v in losses):
            raise ValueError("a validation meta-objective needs problems with eval_loss")
        return torch.stack(losses).mean()

    def meta_loss(self, losses, problems, flat, t, steps):
        train_term, _ = super().meta_loss(losses, problems, flat, t, steps)
        val_term = self._validation(problems, self._layout, flat)
        loss = self.validation_weight * val_term + self.train_weight * train_term
        return loss, {"validation_loss": float(val_term.detach())}

    def evaluate(self) -> dict:
        """Validation loss of the held-out problems at the end of every truncation of an
        ``eval_horizon``-step rollout, averaged (no graph): the meta-loss, measured held out."""
        cfg = self.config
        horizon = cfg.eval_horizon or cfg.horizon
        start_time = time.perf_counter()
        problems = self.eval_set()
        plist = [p.params() for p in problems]
        layout = Layout(plist)
        flat = layout.flatten(plist).detach()
        state = None  # unroll_flat starts the rule's state (per-tensor rules need the layout)
        values = []
        for t in range(0, horizon, cfg.unroll):
            steps = min(cfg.unroll, horizon - t)
            _, flat, state = unroll_flat(
                self.rule, problems, layout, flat, state, steps=steps, start=t
            )
            flat = flat.detach()
            state = {k: v.detach() for k, v in state.items()}
            with torch.no_grad():  # the meta-loss's validation term at every truncation's end
                values.append(float(self._validation(problems, layout, flat)))
        value = sum(values) / len(values)
        value = value if math.isfinite(value) else math.inf
        return {
            "kind": "eval",
            "meta_step": self.meta_step,
            "objective": value,
            "final_loss": value,
            "seconds": time.perf_counter() - start_time,
        }


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and check a generalist recipe."""
    cfg = json.loads(Path(path).read_text())
    for key in ("rule", "task", "stages"):
        if key not in cfg:
            raise ValueError(f"{path}: the recipe needs a {key!r} entry")
    if not cfg["stages"]:
        raise ValueError(f"{path}: 'stages' must list at least one stage")
    return cfg


def run(
    cfg: dict[str, Any],
    out: Path,
    *,
    seed: int | None = None,
    rule_init: str | None = None,
    verbose: bool = True,
) -> tuple[UpdateRule, dict[str, Any]]:
    """Run every stage of ``cfg``; returns the final rule and its training record."""
    seed = int(cfg.get("seed", 0) if seed is None else seed)
    if rule_init is None:
        torch.manual_seed(seed)  # the rule's random init
        rule = build(cfg.get("rule_name", "lstm"), cfg["rule"])
    else:
        rule = optizoo.zoo.load_rule(rule_init)
    task = cfg["task"]
    records = []
    start = time.perf_counter()
    for i, stage in enumerate(cfg["stages"]):
        stage = dict(stage)
        meta_steps = int(stage.pop("meta_steps"))
        options = {**cfg.get("common", {}), **stage, "seed": seed + 1000 * i}
        objective = cfg.get("meta_objective")
        extra = {} if objective is None else dict(objective)
        trainer = (MetaTrainer if objective is None else ValidationMetaTrainer)(
            rule,
            task["name"],
            task_args=task.get("args", {}),
            out_dir=out / f"stage{i}",
            verbose=verbose,
            **extra,
            **options,
        )
        result = trainer.fit(meta_steps)
        rule = trainer.best_rule()
        record = trainer.training_record()
        record["seconds"] = round(result["seconds"], 1)
        if objective is not None:
            record["meta_objective"] = dict(objective)
            record["selection"]["on"] = "validation loss of held-out problems after eval_horizon"
        records.append(record)
        if verbose:
            print(
                f"stage {i}: unroll {trainer.config.unroll}, horizon {trainer.config.horizon}, "
                f"{meta_steps} meta-steps in {result['seconds']:.0f} s, best held-out objective "
                f"{result['best_objective']:.4g} at meta-step {result['best_meta_step']}",
                flush=True,
            )
    training = {
        "recipe": cfg,
        "seed": seed,
        "task": task["name"],
        "task_args": task.get("args", {}),
        "stages": records,
        "horizon": records[-1]["horizon"],
        "unroll": records[-1]["unroll"],
        "meta_steps": sum(r["meta_steps"] for r in records),
        "seconds": round(time.perf_counter() - start, 1),
        "torch": torch.__version__,
    }
    return rule, training


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", help="the recipe (JSON)")
    ap.add_argument("--out", required=True, help="run directory")
    ap.add_argument("--seed", type=int, default=None, help="overrides the recipe's seed")
    ap.add_argument("--init", default=None, help="start from this weight file instead")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--no-evaluate", action="store_true", help="skip the final evaluation")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rule, training = run(cfg, out, seed=args.seed, rule_init=args.init)
    path = out / "generalist.safetensors"
    description = (
        f"{rule.rule_name} rule (options: "
        + json.dumps({k: v for k, v in rule.config().items() if k not in ("preprocessor_args",)})
        + ") meta-trained on a task mixture with a curriculum by scripts/train_lstm_generalist.py"
    )
    optizoo.save_rule(rule, path, training=training, description=description)
    if cfg.get("evaluate") and not args.no_evaluate:
        from optizoo.compare.evaluate import SUITES, evaluate

        opts = dict(cfg["evaluate"])
        names = opts.pop("tasks", ["mlp-20-sigmoid"])
        suite = [t for t in SUITES["default"] if t.name in names]
        report = evaluate(f"generalist={path}", suite=suite, **opts)
        report.save_json(out / "evaluation.json")
        table = report.table()
        (out / "evaluation.md").write_text(table)
        print(table)
        training["evaluation"] = report.rows()
        optizoo.save_rule(rule, path, training=training, description=description)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
