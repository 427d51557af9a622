"""Staged meta-training: run the curriculum of a :class:`MetaConfig` with ``stages``.

>>> config = MetaConfig(task="quadratic", stages=[
...     {"unroll": 20, "horizon": 100, "meta_steps": 500},
...     {"unroll": 50, "horizon": 500, "meta_steps": 200, "meta_lr": 1e-3}])
>>> torch.manual_seed(config.initial_rule_seed)
>>> result = fit_stages(optizoo.rules.LSTMRule(), config, "runs/curriculum")
>>> result.save("runs/curriculum/best_rule.safetensors")

:func:`fit_stages` runs one :class:`~optizoo.meta.MetaTrainer` per stage in ``out_dir/stage{i}/``
(its progress bar, checkpoints, metrics and learning curve). Stage ``i`` uses the config
:meth:`MetaConfig.stage_configs` gives (seed ``seed + 1000 · i``) and starts from the previous
stage's best rule (chosen on held-out problems) with a fresh meta-optimizer. A killed run resumes
(``resume=True``): finished stages are reloaded from their checkpoints, not rerun, and the
interrupted stage continues from its last checkpoint, bit-identically to an uninterrupted run.
Recipes (:mod:`optizoo.meta.recipe`) are a thin layer over it.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from optizoo._io import write_text_atomic
from optizoo.meta.checkpoint import CHECKPOINT_NAME, CheckpointError
from optizoo.meta.config import MetaConfig
from optizoo.rules.base import UpdateRule

__all__ = ["RUN_CONFIG_NAME", "StagesResult", "fit_stages", "prepare_run_folder"]

#: the record of a staged run that its folder keeps (a resume must run the same config and rule)
RUN_CONFIG_NAME = "stages.json"


@dataclass
class StagesResult:
    """What :func:`fit_stages` returns.

    Attributes:
        rule: the last stage's best rule (chosen on its held-out problems).
        training: the ``optizoo.training`` record of the run: seed, rule seed, task, one
            :meth:`MetaTrainer.training_record <optizoo.meta.MetaTrainer.training_record>` per
            stage (``stages``, each with its ``seconds``), the last stage's ``horizon`` and
            ``unroll``, the total ``meta_steps``, ``seconds`` and the torch version.
        results: each stage's :meth:`MetaTrainer.fit <optizoo.meta.MetaTrainer.fit>` summary.
    """

    rule: UpdateRule
    training: dict[str, Any]
    results: list[dict[str, Any]]

    def save(
        self,
        path: str | os.PathLike[str],
        *,
        description: str | None = None,
        record: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write :attr:`rule` as an optizoo weight file whose training record is ``record``'s
        entries (e.g. the recipe that made it) followed by :attr:`training`'s."""
        from optizoo.zoo.format import save_rule

        rule = copy.deepcopy(self.rule).cpu()
        training = {**dict(record or {}), **self.training}
        if description is None:
            description = (
                f"{rule.rule_name} rule meta-trained on {training['task']} in "
                f"{len(training['stages'])} stage(s), {training['meta_steps']} meta-steps"
            )
        path = Path(path)
        save_rule(rule, path, training=training, description=description)
        return path


def prepare_run_folder(
    out: Path,
    name: str,
    record: Mapping[str, Any],
    *,
    kind: str,
    resume: bool,
    overwrite: bool,
) -> None:
    """Check the run folder ``out`` against the staged run it may hold, then write ``record``
    (JSON) to ``out/name``: a resume must continue the same run.

    Args:
        out: the run folder (need not exist).
        name: the record's file name in it (``stages.json``, a recipe's ``recipe.json``).
        record: what identifies the run (compared as JSON).
        kind: what the record is, for messages (``"config"``, ``"recipe"``).
        resume: continue the run ``out`` holds (refused when its record differs; a folder
            without a record, e.g. one killed before writing it, is accepted).
        overwrite: replace the run ``out`` holds.

    Raises:
        CheckpointError: ``out`` is a file or holds a MetaTrainer run (``checkpoint.pt``); it
            holds another staged run (without ``resume`` or ``overwrite``), or one with another
            record (with ``resume``).
    """
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"out_dir {str(out)!r} is a file; give a folder for the run")
    stored = out / name
    text = json.dumps(record, indent=1, sort_keys=True) + "\n"
    if (out / CHECKPOINT_NAME).is_file():
        raise CheckpointError(
            f"{str(out)!r} holds a MetaTrainer run ({CHECKPOINT_NAME}), not a staged one; "
            "continue it with MetaTrainer.resume, or choose another folder"
        )
    held = out.is_dir() and (stored.is_file() or any(out.glob("stage*/")))
    if resume and stored.is_file():
        try:
            before = json.loads(stored.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read {str(stored)!r} to resume: {exc}") from exc
        now = json.loads(text)
        if not isinstance(before, dict) or before != now:
            before = before if isinstance(before, dict) else {}
            keys = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            raise CheckpointError(
                f"cannot resume {str(out)!r}: it was started with another {kind} (differs in "
                f"{keys}); resume with the same {kind} and --seed, or start a new run in another "
                "folder (or overwrite it)"
            )
    elif held and not (resume or overwrite):
        raise CheckpointError(
            f"{str(out)!r} already holds a staged run ({name}, stage folders); continue it with "
            "resume=True "
            "(`optizoo train --resume`), replace it with overwrite=True (`--overwrite`), or "
            "choose another folder"
        )
    write_text_atomic(stored, text)


def fit_stages(
    rule: UpdateRule,
    config: MetaConfig,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    overwrite: bool = False,
    verbose: bool = True,
    device: str | None = None,
) -> StagesResult:
    """Meta-train ``rule`` through every stage of ``config`` (see the module docstring).

    Args:
        rule: the initial rule of stage 0, trained in place by it. To rebuild a run from its
            config alone, build it right after ``torch.manual_seed(config.initial_rule_seed)``
            (as ``optizoo train`` and recipes do); resuming needs the same initial rule when
            stage 0 had no checkpoint yet.
        config: a :class:`MetaConfig` with ``stages``.
        out_dir: run folder: ``stages.json`` (the config and rule of the run), ``stage{i}/``
            (each stage's :class:`~optizoo.meta.MetaTrainer` files: ``checkpoint.pt``,
            ``metrics.jsonl``, ``learning_curve.png``, ``best_rule.safetensors``...).
        resume: continue the run ``out_dir`` holds: finished stages are reloaded from their
            checkpoints, an interrupted stage continues from its last checkpoint (from its start
            when it had none), bit-identically to an uninterrupted run. The config (and seed),
            except its ``device``, and the rule's name and arguments must be the run's.
        overwrite: replace the run ``out_dir`` holds.
        verbose: show each stage's progress bar (on a terminal) and a line per stage on stderr.
        device: run on this device instead of the config's (``"cuda"``); may differ from a CPU
            run in the last bits. Not part of the run's identity: a resume may change it.

    Returns:
        A :class:`StagesResult`: the last stage's best rule, the training record, each stage's
        ``fit`` summary.

    Raises:
        ValueError: ``config`` has no stages; ``resume`` with ``overwrite``.
        TypeError: ``rule`` is not an UpdateRule or ``config`` not a MetaConfig.
        CheckpointError: ``out_dir`` holds another run (without ``resume``/``overwrite``), or a
            run of another config or rule, or a checkpoint that does not fit.
    """
    from optizoo.meta.trainer import MetaTrainer

    if not isinstance(rule, UpdateRule):
        raise TypeError(f"rule must be an optizoo UpdateRule, got {type(rule).__name__}")
    if not isinstance(config, MetaConfig):
        raise TypeError(f"config must be a MetaConfig, got {type(config).__name__}")
    if config.stages is None:
        raise ValueError(
            "fit_stages needs a MetaConfig with stages; run a config without stages with "
            "MetaTrainer(rule, config=config, ...).fit(meta_steps)"
        )
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other")
    out = Path(out_dir)
    identity = {
        "config": {k: v for k, v in config.to_dict().items() if k != "device"},  # where, not what
        "rule": rule.rule_name,
        "rule_config": rule.config(),
    }
    prepare_run_folder(
        out, RUN_CONFIG_NAME, identity, kind="config", resume=resume, overwrite=overwrite
    )
    configs = config.stage_configs()
    if device is not None:
        configs = [MetaConfig.from_dict({**c.to_dict(), "device": device}) for c in configs]
    records, results = [], []
    start = time.perf_counter()
    n = len(configs)
    for i, (stage_config, meta_steps) in enumerate(zip(configs, config.stage_meta_steps())):
        folder = out / f"stage{i}"
        if verbose:
            print(
                f"stage {i + 1}/{n}: {meta_steps} meta-steps, unroll {stage_config.unroll}, "
                f"horizon {stage_config.horizon} -> {folder}",
                file=sys.stderr,
                flush=True,
            )
        if resume and (folder / CHECKPOINT_NAME).is_file():
            trainer = MetaTrainer.resume(
                folder,
                verbose=verbose,
                device=device,
                expect={**stage_config.to_dict(), "rule": rule.rule_name},
            )
        else:
            trainer = MetaTrainer(
                rule, stage_config.task, config=stage_config, out_dir=folder, verbose=verbose,
                overwrite=resume or overwrite,  # a stage interrupted before its first checkpoint
            )  # fmt: skip
        result = trainer.fit(max(0, meta_steps - trainer.meta_step))
        rule = trainer.best_rule()
        record = trainer.training_record()
        record["seconds"] = round(result["seconds"], 1)
        records.append(record)
        results.append(result)
        if verbose:
            print(
                f"stage {i + 1}/{n}: best held-out objective {result['best_objective']:.6g} at "
                f"meta-step {result['best_meta_step']} ({result['seconds']:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    training = {
        "seed": config.seed,
        "rule_seed": config.initial_rule_seed,
        "task": config.task,
        "task_args": config.task_args,
        "stages": records,
        "horizon": records[-1]["horizon"],
        "unroll": records[-1]["unroll"],
        "meta_steps": sum(r["meta_steps"] for r in records),
        "seconds": round(time.perf_counter() - start, 1),
        "torch": torch.__version__,
    }
    return StagesResult(rule=rule, training=training, results=results)
