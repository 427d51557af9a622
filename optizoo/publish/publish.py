"""Publishing: turn a meta-training run (or a rule in memory) into a weight file, card and figure.

>>> from optizoo.publish.publish import publish
>>> out = publish("runs/my-run", "my-lstm", "dist/")     # same as `optizoo publish ...`
>>> out.weights, out.card, out.figure
(PosixPath('dist/my-lstm.safetensors'), PosixPath('dist/my-lstm.md'), PosixPath('dist/my-lstm.png'))

What it does:

1. Reads the run directory written by :class:`optizoo.meta.MetaTrainer` (``optizoo train --out``):
   ``best_rule.safetensors`` (or ``final_rule.safetensors``; its ``optizoo.training`` metadata is
   the training record: task, unroll, horizon, meta-steps, meta-optimizer, seed, held-out
   selection) and ``metrics.jsonl`` (the meta-training log).
2. Compares the rule with **tuned** baselines (``adam``, ``rmsprop``, ``sgd`` by default) on
   held-out problems of the run's task with :func:`optizoo.compare.compare`: the problems come
   from compare's evaluation seed stream, which is disjoint from the meta-trainer's training and
   validation streams, and every baseline's learning rate is tuned on separate problems. The
   numbers are reported at the training horizon and at ``compare_steps`` (default: twice the
   horizon), with paired differences.
3. Optionally (``evaluate=True``) runs the held-out task suite of :func:`optizoo.compare.evaluate.evaluate`
   (MLPs and a conv net on digits against a tuned Adam): slow, but what a card for a
   general-purpose optimizer needs.
4. Writes, each atomically: ``OUT/NAME.safetensors`` (the weights; metadata = the training record
   plus ``evaluation``/``generalization``), ``OUT/NAME.png`` (loss curves of the comparison),
   ``OUT/NAME-meta-training.png`` (the run's learning curve), ``OUT/NAME-generalization.png``
   (with ``evaluate``) and ``OUT/NAME.md`` (the model card, :mod:`optizoo.publish.card`).

The published file loads by path (``LSTMOptimizer(params, weights="dist/my-lstm.safetensors")``);
ship it in a plugin (``optizoo_pretrained`` hook) or in optizoo itself
(:func:`optizoo.zoo.manifest.add_to_shipped`) to load it by name.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optizoo._io import FolderLocked, folder_lock, fsync_dir, remove_stale_temps
from optizoo.compare.records import EvaluationBlock, EvaluationEntry, EvaluationRecord
from optizoo.errors import WeightsError
from optizoo.rules.base import UpdateRule

__all__ = ["DEFAULT_BASELINES", "Published", "publish", "publish_rule", "read_run"]

#: baselines every publication is compared with (learning rates tuned)
DEFAULT_BASELINES: tuple[str, ...] = ("adam", "rmsprop", "sgd")


@dataclass
class Published:
    """What :func:`publish` wrote.

    Attributes:
        name: the optimizer's name.
        weights: ``OUT/NAME.safetensors``.
        card: ``OUT/NAME.md``.
        figure: ``OUT/NAME.png`` (loss curves), ``None`` without a comparison.
        figures: further figures: ``"meta-training"``, ``"generalization"``.
        metadata: the weight file's metadata as read back (JSON fields decoded).
        comparisons: tuning criterion -> :class:`~optizoo.compare.Comparison`.
        report: the :class:`~optizoo.compare.evaluate.EvalReport` with ``evaluate=True``.
    """

    name: str
    weights: Path
    card: Path
    figure: Path | None
    figures: dict[str, Path] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    comparisons: dict[str, Any] = field(default_factory=dict)
    report: Any = None


def _check_name(name: str) -> str:
    from optizoo.plugins import NAME_PATTERN

    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError(
            f"invalid optimizer name {name!r}: use letters, digits, '-', '_' and '.', starting "
            "with a letter or digit (e.g. 'my-lstm'); the name becomes the file name and the "
            "name it is loaded by"
        )
    return name


def _label(name: str) -> str:
    """The optimizer's label inside comparisons (a spec label: a plain word, not a baseline)."""
    from optizoo.compare.specs import _NAME_RE, BASELINES

    return name if _NAME_RE.match(name) and name.lower() not in BASELINES else "learned"


def read_run(
    run_dir: str | os.PathLike[str], *, weights: str = "best"
) -> tuple[UpdateRule, dict[str, Any], list[dict[str, Any]]]:
    """Read a meta-training run directory.

    Args:
        run_dir: the ``out_dir`` of a :class:`~optizoo.meta.MetaTrainer` run.
        weights: ``"best"`` (``best_rule.safetensors``, chosen on held-out problems) or
            ``"final"`` (``final_rule.safetensors``, the last training weights).

    Returns:
        ``(rule, training record, metrics rows)``; the record is the weight file's
        ``optizoo.training`` plus ``tasks`` and a ``run`` summary (total meta-steps of the run,
        evaluations, best held-out objective, which weights).
    """
    from optizoo.errors import WeightsError
    from optizoo.meta.checkpoint import BEST_RULE_NAME, FINAL_RULE_NAME, read_metrics
    from optizoo.zoo.format import read_metadata, rule_from_file

    files = {"best": BEST_RULE_NAME, "final": FINAL_RULE_NAME}
    if weights not in files:
        raise ValueError(f"weights must be 'best' or 'final', got {weights!r}")
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(
            f"no run directory at {str(run)!r}; pass the --out folder of `optizoo train`"
        )
    path = run / files[weights]
    if not path.is_file():
        found = sorted(p.name for p in run.iterdir())
        raise WeightsError(
            f"{str(run)!r} has no {files[weights]} (files: {found}); is it the output folder of "
            "`optizoo train` / MetaTrainer(out_dir=...) after at least one evaluation?"
        )
    meta = read_metadata(path)
    rule = rule_from_file(path)
    record = dict(meta.get("optizoo.training") or {})
    rows = read_metrics(run)
    if record.get("task") and "tasks" not in record:
        record["tasks"] = [record["task"]]
    train_steps = [int(r["meta_step"]) for r in rows if r.get("kind") == "train"]
    evals = [r for r in rows if r.get("kind") == "eval"]
    finite = [r for r in evals if isinstance(r.get("objective"), (int, float))]
    finite = [r for r in finite if math.isfinite(r["objective"])]
    best = min(finite, key=lambda r: r["objective"]) if finite else None
    record["run"] = {
        "weights": files[weights],
        "meta_steps_total": max(train_steps) if train_steps else record.get("meta_steps"),
        "evaluations": len(evals),
        "best_held_out_objective": None if best is None else float(best["objective"]),
        "best_meta_step": None if best is None else int(best["meta_step"]),
    }
    return rule, record, rows


def publish(
    run_dir: str | os.PathLike[str],
    name: str,
    out_dir: str | os.PathLike[str],
    *,
    weights: str = "best",
    description: str | None = None,
    license: str = "MIT",
    baselines: Sequence[str] = DEFAULT_BASELINES,
    compare_steps: int | None = None,
    compare_problems: int = 100,
    tune_problems: int = 20,
    criteria: Sequence[str] = ("final",),
    grid: Sequence[float] | None = None,
    seed: int = 0,
    task: Any = None,
    task_args: Mapping[str, Any] | None = None,
    evaluate: bool = False,
    evaluate_options: Mapping[str, Any] | None = None,
    threads: int | None = 1,
    device: Any = None,
    verbose: bool = True,
    overwrite: bool = False,
) -> Published:
    """Publish the rule of a meta-training run: weights, model card and figures in ``out_dir``.

    Args:
        run_dir: the run's output folder (``best_rule.safetensors``, ``metrics.jsonl``...).
        name: the optimizer's name (file stem; the name it loads by once shipped).
        out_dir: destination folder (created).
        weights: ``"best"`` (held-out selection) or ``"final"``.
        description: one line for ``optizoo list`` and the card (default: generated from the
            record, including the comparison's verdict).
        license: licence of the weights.
        baselines, compare_steps, compare_problems, tune_problems, criteria, grid, seed, task,
        task_args, evaluate, evaluate_options, threads, device, verbose, overwrite: see
            :func:`publish_rule`.
    """
    rule, record, rows = read_run(run_dir, weights=weights)
    return publish_rule(
        rule,
        name,
        out_dir,
        training=record,
        description=description,
        license=license,
        baselines=baselines,
        compare_steps=compare_steps,
        compare_problems=compare_problems,
        tune_problems=tune_problems,
        criteria=criteria,
        grid=grid,
        seed=seed,
        task=task,
        task_args=task_args,
        evaluate=evaluate,
        evaluate_options=evaluate_options,
        threads=threads,
        device=device,
        verbose=verbose,
        metrics_rows=rows,
        overwrite=overwrite,
    )


def _block(comparison: Any, at: int, learned: str, criterion: str) -> EvaluationBlock:
    """One recorded evaluation block: per label lr, tuned flag, intervals and paired diffs."""
    summary = comparison.summary(at=at)
    entries: dict[str, EvaluationEntry] = {}
    for label, r in comparison.results.items():
        s = summary[label]
        metrics = {"final_loss": s["final"], "sum_of_losses": s["sum"]}
        if s["test"] is not None:
            metrics["test_loss"] = s["test"]
        diffs = None
        if label != learned:
            diffs = {
                "final_loss": comparison.paired(learned, label, "final", at),
                "sum_of_losses": comparison.paired(learned, label, "sum", at),
            }
            if s["test"] is not None and summary[learned]["test"] is not None:
                diffs["test_loss"] = comparison.paired(learned, label, "test", at)
        entries[label] = EvaluationEntry(
            lr=r.lr,
            tuned=r.tuning is not None,
            metrics=metrics,
            learned_minus_this=diffs,
            grid_edge=r.tuning.at_edge if r.tuning is not None else None,
        )
    return EvaluationBlock(at, criterion, entries)


def _default_description(rule: UpdateRule, training: Mapping[str, Any]) -> str:
    from optizoo.publish.card import summary_phrase

    task = training.get("task") or "an unrecorded task"
    bits = [f"{k} {training[k]}" for k in ("unroll", "horizon", "meta_steps") if k in training]
    text = f"{rule.rule_name} rule meta-trained on {task}"
    if bits:
        text += " (" + ", ".join(b.replace("_", "-") for b in bits) + ")"
    verdict = summary_phrase(training)
    return text + (f"; {verdict}" if verdict else "; not compared with tuned baselines")


def publish_rule(
    rule: UpdateRule,
    name: str,
    out_dir: str | os.PathLike[str],
    *,
    training: Mapping[str, Any] | None = None,
    description: str | None = None,
    license: str = "MIT",
    baselines: Sequence[str] = DEFAULT_BASELINES,
    compare_steps: int | None = None,
    compare_problems: int = 100,
    tune_problems: int = 20,
    criteria: Sequence[str] = ("final",),
    grid: Sequence[float] | None = None,
    seed: int = 0,
    task: Any = None,
    task_args: Mapping[str, Any] | None = None,
    evaluate: bool = False,
    evaluate_options: Mapping[str, Any] | None = None,
    threads: int | None = 1,
    device: Any = None,
    verbose: bool = True,
    metrics_rows: Sequence[Mapping[str, Any]] | None = None,
    overwrite: bool = False,
) -> Published:
    """Publish a rule already in memory: compare it, write weights, figures and card.

    Args:
        rule: the update rule (e.g. ``trainer.best_rule()``).
        name: the optimizer's name.
        out_dir: destination folder (created).
        training: the training record (``MetaTrainer.training_record()``; task, unroll,
            horizon, meta_steps, seed...). ``evaluation``/``generalization`` keys are replaced.
        description: one line (default: generated, with the comparison's verdict).
        license: licence of the weights.
        baselines: optimizer specs compared against (``"adam"``: lr tuned; ``"adam:lr=0.01"``:
            fixed). Empty: no comparison (the card then says there is no evidence).
        compare_steps: steps per comparison run (default: twice the training horizon, or 100).
            Numbers are recorded at the horizon and at ``compare_steps``.
        compare_problems: held-out problems (compare's evaluation seed stream).
        tune_problems: separate problems per grid point for the baselines' learning rates.
        criteria: tuning criteria, one comparison each (``"final"``, ``"sum"``, ``"test"``).
        grid: learning-rate grid (default :data:`optizoo.compare.DEFAULT_GRID`, 13 points).
        seed: comparison seed (problem seeds derive from it).
        task, task_args: the task to compare on (default: the record's ``task``/``task_args``;
            needed when the run used a task instance that is not in the registry).
        evaluate: also run the held-out suite (:func:`optizoo.compare.evaluate.evaluate`); slow.
        evaluate_options: keyword arguments for :func:`optizoo.compare.evaluate.evaluate` (``suite``,
            ``seeds``, ``multiples``, ``quick``...).
        threads: torch CPU threads during the comparison (``None``: unchanged).
        device: where comparison problems live.
        verbose: progress bars (on a terminal).
        metrics_rows: the run's metrics log, drawn as ``NAME-meta-training.png``.
        overwrite: replace a publication of the same name in ``out_dir`` (default: refuse).

    Safety: non-finite weights are refused before anything is written; every file is staged in
    a temporary folder and moved into place at the end, under a lock
    (``out_dir/.NAME.publish.lock``: a second publication of the same name at the same time is
    refused), the old card removed first and the new card last, so a card beside a weight file
    always names that file's sha256.

    Raises:
        WeightsError: the rule has non-finite weights.
        FileExistsError: ``out_dir`` holds a publication of ``name`` and ``overwrite`` is off.
    """
    from optizoo.compare import DEFAULT_GRID

    if not isinstance(rule, UpdateRule):
        raise TypeError(f"rule must be an optizoo UpdateRule, got {type(rule).__name__}")
    name = _check_name(name)
    bad = [
        k for k, v in rule.state_dict().items() if v.is_floating_point() and not v.isfinite().all()
    ]
    if bad:
        raise WeightsError(
            f"cannot publish {name!r}: tensor(s) {bad} hold nan or inf (a diverged run?); "
            "publish the best weights (weights='best') or an earlier checkpoint"
        )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"out_dir {str(out)!r} is a file; give a folder")
    existing = [p.name for p in _outputs(out, name) if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{str(out)!r} already holds a publication named {name!r} ({', '.join(existing)}); "
            "pass overwrite=True (`--overwrite`) to replace it, or choose another name"
        )
    record: dict[str, Any] = {
        k: v for k, v in dict(training or {}).items() if k not in ("evaluation", "generalization")
    }
    if record.get("task") and "tasks" not in record:
        record["tasks"] = [record["task"]]
    horizon = record.get("horizon") if isinstance(record.get("horizon"), int) else None
    steps = compare_steps if compare_steps is not None else (2 * horizon if horizon else 100)
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"compare_steps must be a positive int, got {compare_steps!r}")
    tune_steps = horizon if horizon and horizon <= steps else steps
    criteria = tuple(criteria)
    task = task if task is not None else record.get("task")
    if task_args is None and isinstance(task, str) and task == record.get("task"):
        task_args = record.get("task_args") or record.get("task_config") or {}
    baselines = tuple(baselines)
    if baselines and task is None:
        raise ValueError(
            "no task to compare on: the training record names none; pass task= (a registry "
            "name or a Task), or baselines=() to publish without a comparison"
        )
    if baselines and not criteria:
        raise ValueError("criteria must name at least one tuning criterion, e.g. ('final',)")
    lr_grid = tuple(DEFAULT_GRID if grid is None else grid)
    out.mkdir(parents=True, exist_ok=True)
    try:
        with folder_lock(out / f".{name}.publish.lock"):
            return _publish_locked(
                rule=rule,
                name=name,
                out=out,
                record=record,
                description=description,
                license=license,
                baselines=baselines,
                steps=steps,
                tune_steps=tune_steps,
                compare_problems=compare_problems,
                tune_problems=tune_problems,
                criteria=criteria,
                lr_grid=lr_grid,
                seed=seed,
                task=task,
                task_args=task_args,
                evaluate=evaluate,
                evaluate_options=evaluate_options,
                threads=threads,
                device=device,
                verbose=verbose,
                metrics_rows=metrics_rows,
                overwrite=overwrite,
                horizon=horizon,
            )
    except FolderLocked:
        raise FileExistsError(
            f"another process is publishing {name!r} into {str(out)!r}; wait for it to finish"
        ) from None


def _outputs(out: Path, name: str) -> list[Path]:
    """Every file a publication of ``name`` may write into ``out``."""
    return [
        out / f"{name}.safetensors",
        out / f"{name}.md",
        out / f"{name}.png",
        out / f"{name}-meta-training.png",
        out / f"{name}-generalization.png",
    ]


def _publish_locked(
    *,
    rule: UpdateRule, name: str, out: Path, record: dict[str, Any], description: str | None,
    license: str, baselines: tuple[str, ...], steps: int, tune_steps: int, compare_problems: int,
    tune_problems: int, criteria: tuple[str, ...], lr_grid: tuple[float, ...], seed: int,
    task: Any, task_args: Any, evaluate: bool, evaluate_options: Any, threads: Any, device: Any,
    verbose: bool, metrics_rows: Any, overwrite: bool, horizon: int | None,
) -> Published:  # fmt: skip
    from optizoo._io import write_text_atomic
    from optizoo.compare import compare
    from optizoo.publish.card import model_card
    from optizoo.zoo.format import read_metadata, save_rule
    from optizoo.zoo.registry import sha256_file

    remove_stale_temps(out, tuple(p.name for p in _outputs(out, name)))
    for stale in out.glob(f".{name}.publish-*"):  # staging folders of interrupted publications
        shutil.rmtree(stale, ignore_errors=True)
    if not overwrite:  # checked again under the lock
        existing = [p.name for p in _outputs(out, name) if p.exists()]
        if existing:
            raise FileExistsError(
                f"{str(out)!r} already holds a publication named {name!r} ({', '.join(existing)})"
            )
    label = _label(name)
    figures: dict[str, Path] = {}
    comparisons: dict[str, Any] = {}
    report = None
    work = Path(tempfile.mkdtemp(dir=out, prefix=f".{name}.publish-"))
    try:
        # the comparison loads the rule from a file, exactly as users will
        tmp_weights = save_rule(
            rule, work / "compare" / f"{name}.safetensors", training=record, license=license
        )
        spec = f"{label}={tmp_weights}"
        if baselines:
            for criterion in criteria:
                comparisons[criterion] = compare(
                    task,
                    [spec, *baselines],
                    steps=steps,
                    problems=compare_problems,
                    task_args=task_args if isinstance(task, str) else None,
                    tune_problems=tune_problems,
                    tune_steps=tune_steps,
                    grid=lr_grid,
                    criterion=criterion,
                    seed=seed,
                    threads=threads,
                    device=device,
                    verbose=verbose,
                )
            first = comparisons[criteria[0]]
            tuned = [r for r in first.results.values() if r.tuning is not None]
            evaluation: dict[str, Any] = {
                "task": first.task,
                "task_args": first.task_args,
                "held_out_problems": compare_problems,
                "steps": steps,
                "tune_steps": tune_steps,
                "tune_problems": tune_problems if tuned else 0,
                "seed": seed,
                "criteria": list(criteria),
                "grid": list(lr_grid) if tuned else None,
                "learned": label,
                "baselines": (
                    f"learning rate tuned by a {len(lr_grid)}-point log grid "
                    f"({min(lr_grid):.2g}–{max(lr_grid):.2g}) on {tune_problems} separate "
                    f"problems of {tune_steps} steps"
                    if tuned
                    else "fixed learning rates (not tuned)"
                ),
                "seed_streams": "optizoo.compare eval/tune streams, disjoint from the "
                "meta-trainer's train/validation streams",
            }
            blocks = [
                _block(c, at, label, criterion)
                for criterion, c in comparisons.items()
                for at in sorted({tune_steps, steps})
            ]
            record["evaluation"] = EvaluationRecord(tuple(blocks), evaluation).to_dict()
            title = f"{name} vs {'tuned ' if tuned else ''}baselines on {first.task}"
            figures["loss-curves"] = first.plot(work / f"{name}.png", title=title)
        if evaluate:
            from optizoo.compare.evaluate import evaluate as run_suite

            options = dict(evaluate_options or {})
            options.setdefault("threads", threads)
            options.setdefault("verbose", verbose)
            options.setdefault("device", device)
            report = run_suite(spec, horizon or steps, **options)
            suite = options.get("suite", "default")
            record["generalization"] = {
                "suite": suite if isinstance(suite, str) else "custom",
                "horizon": report.horizon,
                "multiples": list(report.multiples),
                "seeds": report.seeds_count,
                "quick": bool(options.get("quick", False)),
                "tasks": {n: tr.task.description for n, tr in report.results.items()},
                "rows": report.rows(),
            }
            figures["generalization"] = report.plot(work / f"{name}-generalization.png")
        if metrics_rows:
            from optizoo.meta.trainer import learning_curve

            figures["meta-training"] = learning_curve(
                list(metrics_rows),
                work / f"{name}-meta-training.png",
                title=f"meta-training of {name}",
            )
        text = description if description is not None else _default_description(rule, record)
        staged = save_rule(
            rule, work / f"{name}.safetensors", training=record, description=text, license=license
        )
        metadata = read_metadata(staged)
        extra = []
        if "generalization" in figures:
            extra.append(("Held-out tasks (generalization)", figures["generalization"].name))
        if "meta-training" in figures:
            extra.append(("Meta-training learning curve", figures["meta-training"].name))
        card_text = model_card(
            metadata,
            name=name,
            sha256=sha256_file(staged),
            figure=figures["loss-curves"].name if "loss-curves" in figures else None,
            figures=extra,
            load_path=staged.name,
        )
        staged_card = write_text_atomic(work / f"{name}.md", card_text)
        # commit: the old card goes first, the new card comes last, so that a card beside a
        # weight file always names its sha256 (whatever moment a crash hits)
        card = out / f"{name}.md"
        card.unlink(missing_ok=True)
        weights_path = out / staged.name
        for p in _outputs(out, name):
            if p.name not in {f.name for f in figures.values()} and p not in (card, weights_path):
                p.unlink(missing_ok=True)  # an old publication's figure this one lacks
        os.replace(staged, weights_path)
        for key, fig in list(figures.items()):
            figures[key] = out / fig.name
            os.replace(fig, figures[key])
        os.replace(staged_card, card)
        fsync_dir(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    return Published(
        name=name,
        weights=weights_path,
        card=card,
        figure=figures.get("loss-curves"),
        figures={k: v for k, v in figures.items() if k != "loss-curves"},
        metadata=metadata,
        comparisons=comparisons,
        report=report,
    )
