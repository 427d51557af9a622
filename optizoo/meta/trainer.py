"""Meta-training of update rules by truncated backpropagation through time.

>>> rule = optizoo.rules.LSTMRule()
>>> trainer = optizoo.MetaTrainer(rule, task="quadratic", unroll=20, horizon=100, out_dir="runs/q")
>>> trainer.fit(meta_steps=2000)       # progress bar, held-out evaluation, best checkpoint
>>> opt = optizoo.LearnedOptimizer(model.parameters(), rule=rule)

Vocabulary. An **episode** samples ``problems_per_step`` fresh problems (optimizees) from the task
and trains them for ``horizon`` steps with the rule. The horizon is cut into **truncations** of
``unroll`` steps. One **meta-step** = one truncation: unroll the rule for ``unroll`` steps from
where the previous truncation stopped, take the meta-loss ``Σ_t w_t f(θ_t) / num_instances``
(``θ_t`` after each update of the truncation; mean over problems), backpropagate into the rule's
meta-parameters, clip the meta-gradient norm, step the meta-optimizer (Adam), then **detach** the
optimizee parameters and the rule state: graphs never cross a truncation boundary, so memory and
time per meta-step do not depend on the horizon. After ``ceil(horizon / unroll)`` meta-steps the
next episode samples new problems.

Problems are drawn from seed streams derived from ``seed`` (numpy ``SeedSequence``): the training
stream gives episode ``e`` its own problems, and a separate validation stream gives the
``eval_problems`` held-out problems on which the rule is evaluated every ``eval_every`` meta-steps
(a full ``eval_horizon`` rollout without meta-graph); the best rule is chosen on those held-out
problems, never on training problems. Because every problem is a pure function of its seed,
resuming needs no RNG state: :meth:`MetaTrainer.resume` continues bit-identically.

Files in ``out_dir`` (written by rank 0, atomically): ``checkpoint.pt`` (``torch.load`` with
``weights_only=True``), ``metrics.jsonl`` (one JSON object per meta-step and per evaluation),
``learning_curve.png``, ``best_rule.safetensors`` and ``final_rule.safetensors`` (optizoo weight
files, readable by :func:`optizoo.load_rule`).
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import Tensor, nn

from optizoo._validate import nonnegative_int
from optizoo.meta import checkpoint as ckpt
from optizoo.meta import distributed as ddp
from optizoo.meta import objectives
from optizoo.meta.config import MetaConfig
from optizoo.meta.plots import learning_curve
from optizoo.meta.unroll import Layout, unroll_flat
from optizoo.rules.base import State, UpdateRule, rule_kwargs
from optizoo.seeds import problem_seeds
from optizoo.tasks import task_config
from optizoo.tasks.base import Problem, Task, per_instance_scale

__all__ = ["MetaConfig", "MetaTrainer", "learning_curve", "problem_seeds"]

#: redraw the learning curve at an evaluation at most this often (drawing costs ~0.3 s)
_PLOT_INTERVAL_S = 60.0


def _meta_param_groups(rule: nn.Module, config: MetaConfig) -> list[dict[str, Any]]:
    """The meta-optimizer's parameter groups: one, or two when ``scalar_meta_lr`` is set (the
    0-dim meta-parameters, e.g. a learned log learning rate, get their own learning rate)."""
    params = [p for p in rule.parameters() if p.requires_grad]
    if config.scalar_meta_lr is None:
        return [{"params": params}]
    scalars = [p for p in params if p.ndim == 0]
    others = [p for p in params if p.ndim != 0]
    groups = [{"params": others}] if others else []
    if scalars:
        groups.append({"params": scalars, "lr": config.scalar_meta_lr})
    return groups


def _resolve_task(
    task: str | Task, task_args: Mapping[str, Any] | None
) -> tuple[Task, str, dict[str, Any]]:
    if isinstance(task, str):
        from optizoo import tasks

        args = dict(task_args or {})
        return tasks.build(task, **args), task, args
    if callable(getattr(task, "sample", None)):
        if task_args:
            raise ValueError("task_args only apply when the task is given by name")
        return task, str(getattr(task, "name", type(task).__name__)), task_config(task)
    raise TypeError(
        f"task must be a registry name or an optizoo.tasks.Task, got {type(task).__name__}"
    )


def _run_files(folder: Path) -> list[str]:
    """The run files (checkpoint, metrics, plot, weight files) present in ``folder``."""
    if folder.exists() and not folder.is_dir():
        raise ckpt.CheckpointError(
            f"out_dir {str(folder)!r} is a file, not a folder; choose a folder for the run"
        )
    return [name for name in ckpt.RUN_FILES if (folder / name).exists()]


def _differences(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> list[str]:
    """``"key: checkpoint X, given Y"`` for every key whose values differ (JSON-normalized)."""
    a = json.loads(json.dumps(ours, sort_keys=True, default=str))
    b = json.loads(json.dumps(theirs, sort_keys=True, default=str))
    return [
        f"{k}: checkpoint {a.get(k)!r}, given {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]


def _clone_state_dict(module: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class MetaTrainer:
    """Meta-trains an :class:`~optizoo.rules.UpdateRule` on a task (truncated BPTT, Adam).

    Args:
        rule: the rule to train, in place (its ``parameters()`` are the meta-parameters). It is
            moved to ``device``.
        task: a task registry name (``"quadratic"``) or a :class:`~optizoo.tasks.Task`.
        task_args: keyword arguments of the task when given by name.
        out_dir: directory for checkpoint, metrics, plot and weight files (``None``: keep
            everything in memory).
        verbose: show a progress bar (only when stderr is a terminal).
        config: a :class:`MetaConfig` instead of the keyword arguments below.
        overwrite: allow ``out_dir`` to hold another run already: its files (checkpoint, metrics,
            plot, weight files) are deleted when :meth:`fit` starts. Without it such a folder is
            refused (:class:`~optizoo.errors.CheckpointError`); continue a run with
            :meth:`resume` instead.
        **options: the fields of :class:`MetaConfig` (``unroll``, ``horizon``, ``meta_lr``,
            ``clip``, ``problems_per_step``, ``eval_problems``, ``eval_every``,
            ``eval_horizon``, ``seed``, ``loss_weights``, ``second_order``, ``reuse_gradients``,
            ``checkpoint_every``, ``device``).

    Under ``torch.distributed`` (e.g. ``torchrun``), each rank unrolls
    ``problems_per_step / world_size`` of the problems and meta-gradients are averaged; rank 0
    evaluates and writes files.

    **Which weights the rule holds.** ``trainer.rule`` is the rule given, trained in place:

    - while :meth:`fit` or :meth:`step` runs it holds the *training* weights (the ones the
      meta-optimizer steps, saved in ``checkpoint.pt`` and ``final_rule.safetensors``);
    - when ``fit(restore_best=True)`` (the default) returns it holds the *best* weights so far,
      chosen on the held-out problems (:attr:`best_state`, ``best_rule.safetensors``; on every
      rank), and the training weights are kept aside (:meth:`training_state_dict`). With
      ``restore_best=False``, or before any finite evaluation, it keeps the training weights;
    - the next :meth:`fit` or :meth:`step` puts the training weights back first and continues
      from them, so ``fit(a); fit(b)`` trains exactly as ``fit(a + b)`` and as
      :meth:`resume` from the checkpoint. If the rule's weights were changed in between, that
      change would be lost: :meth:`fit`/:meth:`step` raise ``ValueError`` instead.

    :meth:`best_rule` returns a copy with the best weights at any time.
    """

    def __init__(
        self,
        rule: UpdateRule,
        task: str | Task = "quadratic",
        *,
        task_args: Mapping[str, Any] | None = None,
        out_dir: str | os.PathLike[str] | None = None,
        verbose: bool = True,
        config: MetaConfig | None = None,
        overwrite: bool = False,
        _resuming: bool = False,
        **options: Any,
    ) -> None:
        if not isinstance(rule, UpdateRule):
            raise TypeError(f"rule must be an optizoo UpdateRule, got {type(rule).__name__}")
        if config is not None and isinstance(task, str) and task_args is None:
            if task != config.task:
                raise ValueError(f"task {task!r} differs from config.task {config.task!r}")
            task_args = config.task_args
        self.task, task_name, resolved_args = _resolve_task(task, task_args)
        if config is None:
            config = MetaConfig.from_dict(
                {"task": task_name, "task_args": resolved_args, **options}
            )
        elif options:
            raise TypeError(
                f"pass either config= or keyword options, not both (got {sorted(options)})"
            )
        if config.stages is not None:
            raise ValueError(
                "this config has stages (a curriculum of runs); run it with "
                "optizoo.meta.fit_stages(rule, config, out_dir), or give one stage's config "
                "(config.stage_configs()[i])"
            )
        self.config = config
        self.rank, self.world_size = ddp.world()
        if config.problems_per_step % self.world_size:
            raise ValueError(
                f"problems_per_step={config.problems_per_step} is not divisible by the "
                f"{self.world_size} processes; each process unrolls an equal share"
            )
        self.device = ddp.local_device(config.device)
        self.rule = rule.to(self.device)
        ddp.broadcast_module(self.rule)
        if not any(p.requires_grad for p in self.rule.parameters()):
            raise ValueError(f"{type(rule).__name__} has no trainable meta-parameters")
        self.meta_opt = torch.optim.Adam(_meta_param_groups(self.rule, config), lr=config.meta_lr)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self._clear_out_dir = False
        if self.out_dir is not None and not _resuming:
            # rank 0 decides (it is the only writer) and every rank learns the verdict together
            held: list[str] = []
            refusal = None
            if self.rank == 0:
                try:
                    held = _run_files(self.out_dir)
                except ckpt.CheckpointError as exc:
                    refusal = str(exc)
                if held and not overwrite:
                    refusal = (
                        f"{str(self.out_dir)!r} already holds a meta-training run "
                        f"({', '.join(held)}); continue it with MetaTrainer.resume(out_dir) "
                        "(`optizoo train --resume`), replace it with overwrite=True "
                        "(`--overwrite`), or choose another folder"
                    )
            flag = torch.tensor([0.0 if refusal is None else 1.0], device=self.device)
            if any(bool(f.item()) for f in ddp.all_gather(flag)):
                raise ckpt.CheckpointError(refusal or f"rank 0 refused out_dir {str(out_dir)!r}")
            self._clear_out_dir = bool(held)
        self.verbose = bool(verbose)
        self.meta_step = 0
        self.best_metric = math.inf
        self.best_step: int | None = None
        self.history: list[dict[str, Any]] = []
        self._best_state: dict[str, Tensor] | None = None
        self._training_state: dict[str, Tensor] | None = None  # kept aside while best is loaded
        self._left_in_rule: dict[str, Tensor] | None = None  # what fit() loaded into the rule
        self._problems: list[Problem] = []
        self._problems_episode = -1
        self._layout: Layout | None = None
        self._scale: Tensor | None = None
        self._inner: tuple[Tensor, State, int] | None = None
        self._eval_set: list[Problem] | None = None
        self._metrics_file: TextIO | None = None
        self._weights = self._full_weights(config.horizon)
        #: the meta-objective (:mod:`optizoo.meta.objectives`): meta-loss and selection value
        self.objective = objectives.make_objective(config.meta_objective)

    # ------------------------------------------------------------------ construction helpers

    @classmethod
    def resume(
        cls,
        out_dir: str | os.PathLike[str],
        *,
        rule: UpdateRule | None = None,
        task: str | Task | None = None,
        verbose: bool = True,
        device: str | None = None,
        expect: Mapping[str, Any] | None = None,
    ) -> MetaTrainer:
        """Continue the run saved in ``out_dir`` exactly where its last checkpoint stopped.

        The rule is rebuilt from the checkpoint (registry name + config) unless ``rule`` is given;
        a given rule must have the checkpoint's name and config. The task is rebuilt from its
        registry name unless ``task`` is given (needed for task instances that are not in the
        registry). ``expect`` holds the options of the command that resumes (fields of
        :class:`MetaConfig`, plus ``"rule"`` and ``"rule_config"``): resuming means the same
        experiment, so any that differ from the checkpoint's are refused, naming them
        (``device`` and ``checkpoint_every`` may change). Metrics logged after the checkpoint
        (by a run that crashed later) are dropped, so the log continues without duplicates.

        Raises:
            CheckpointError: no, a corrupt or a foreign checkpoint; a rule, config or option that
                differs from the checkpoint's; another process writing into ``out_dir``.
        """
        from optizoo import rules

        data = ckpt.load_checkpoint(Path(out_dir) / ckpt.CHECKPOINT_NAME)
        config_dict = json.loads(data["config"])
        rule_name, rule_config = data["rule_name"], json.loads(data["rule_config"])
        given = dict(expect or {})
        given_rule = given.pop("rule", None)
        given_rule_config = given.pop("rule_config", None)
        for operational in ("device", "checkpoint_every"):  # where and how often, not what
            given.pop(operational, None)
        diffs: list[str] = []
        if given:
            try:
                merged = MetaConfig.from_dict({**config_dict, **given}).to_dict()
            except (TypeError, ValueError) as exc:
                raise ckpt.CheckpointError(f"cannot resume {str(out_dir)!r}: {exc}") from exc
            stored = {k: v for k, v in MetaConfig.from_dict(config_dict).to_dict().items()}
            diffs += _differences({k: stored[k] for k in given}, {k: merged[k] for k in given})
        if given_rule is not None and given_rule != rule_name:
            diffs.append(f"rule: checkpoint {rule_name!r}, given {given_rule!r}")
        elif given_rule_config is not None:
            try:
                built = rules.build(rule_name, given_rule_config).config()
            except (TypeError, ValueError, KeyError) as exc:
                raise ckpt.CheckpointError(f"cannot resume {str(out_dir)!r}: {exc}") from exc
            diffs += [f"rule_config.{d}" for d in _differences(rule_config, built)]
        if rule is not None:
            if rule.rule_name != rule_name:
                diffs.append(f"rule: checkpoint {rule_name!r}, given {rule.rule_name!r}")
            else:
                diffs += [f"rule_config.{d}" for d in _differences(rule_config, rule.config())]
        if diffs:
            raise ckpt.CheckpointError(
                f"cannot resume {str(out_dir)!r} with other settings than the run was started "
                "with (resuming continues the same experiment): " + "; ".join(diffs) + ". Drop "
                "those options, or start a new run in another folder (or with --overwrite)"
            )
        if device is not None:
            config_dict["device"] = device
        config = MetaConfig.from_dict(config_dict)
        if rule is None:
            rule = rules.build(rule_name, rule_config)
        if task is None:
            try:
                task, task_args = config.task, config.task_args
                trainer = cls(
                    rule, task, task_args=task_args, out_dir=out_dir, verbose=verbose,
                    config=config, _resuming=True,
                )  # fmt: skip
            except (KeyError, TypeError, ValueError) as exc:
                raise ckpt.CheckpointError(
                    f"cannot rebuild task {config.task!r} from the checkpoint ({exc}); pass task= "
                    "to MetaTrainer.resume"
                ) from exc
        else:
            trainer = cls(
                rule, task, out_dir=out_dir, verbose=verbose, config=config, _resuming=True
            )
        trainer._load(data)
        return trainer

    def _full_weights(self, length: int) -> Tensor:
        """``w_t`` for ``t = 0..length-1`` (per step of an episode), float64."""
        w = self.config.loss_weights
        if w is None:
            return torch.ones(length, dtype=torch.float64)
        base = torch.tensor(w, dtype=torch.float64)
        reps = -(-length // base.numel())
        return base.repeat(reps)[:length]

    # ------------------------------------------------------------------ problems

    def _sample(self, seeds: Sequence[int]) -> list[Problem]:
        return [self.task.sample(torch.Generator().manual_seed(s), self.device) for s in seeds]

    def _episode_problems(self, episode: int) -> list[Problem]:
        if episode != self._problems_episode:
            share = self.config.problems_per_step // self.world_size
            seeds = problem_seeds(
                self.config.seed, self.config.problems_per_step, "train", episode=episode
            )
            self._problems = self._sample(seeds[self.rank * share : (self.rank + 1) * share])
            self._problems_episode = episode
            self._layout = None
        return self._problems

    def _fresh_inner(self, problems: list[Problem]) -> tuple[Tensor, State, int]:
        plist = [p.params() for p in problems]
        layout = Layout(plist)
        if self._layout is None or layout.sizes != self._layout.sizes:
            self._layout = layout
        self._scale = per_instance_scale(problems)
        flat = layout.flatten(plist).detach()
        with torch.no_grad():
            state = self.rule.init_state(flat, **rule_kwargs(self.rule, lambda: layout.segments))
        return flat, state, 0

    def eval_set(self) -> list[Problem]:
        """The held-out problems (validation seed stream), sampled once."""
        if self._eval_set is None:
            seeds = problem_seeds(self.config.seed, self.config.eval_problems, "validation")
            self._eval_set = self._sample(seeds)
        return self._eval_set

    # ------------------------------------------------------------------ one meta-step

    def _ensure_training_weights(self) -> None:
        """Put the training weights back into the rule (after ``fit`` left the best ones)."""
        if self._training_state is None:
            return
        left = self._left_in_rule or {}
        current = self.rule.state_dict()
        if current.keys() != left.keys() or not all(torch.equal(current[k], left[k]) for k in left):
            raise ValueError(
                "the rule's weights changed after fit() left the best weights in it; training "
                "continues from the training weights (trainer.training_state_dict()) and would "
                "discard that change. To continue this run, put the best weights back "
                "(rule.load_state_dict(trainer.best_state)); to train other weights, start a new "
                "MetaTrainer with them"
            )
        self.rule.load_state_dict(self._training_state)
        self._training_state = None
        self._left_in_rule = None

    def step(self) -> dict[str, Any]:
        """One meta-step (one truncation); returns its metrics row."""
        self._ensure_training_weights()
        cfg = self.config
        start_time = time.perf_counter()
        episode, truncation = divmod(self.meta_step, cfg.truncations)
        problems = self._episode_problems(episode)
        if truncation == 0 or self._inner is None:
            self._inner = self._fresh_inner(problems)
        if self._scale is None or self._layout is None:  # after resume
            self._fresh_inner(problems)
        flat, state, t = self._inner
        steps = min(cfg.unroll, cfg.horizon - t)
        assert self._layout is not None and self._scale is not None
        losses, flat, state = unroll_flat(
            self.rule, problems, self._layout, flat, state,
            steps=steps, start=t, second_order=cfg.second_order,
            reuse_gradients=cfg.reuse_gradients,
        )  # fmt: skip
        meta_loss, extra = self.meta_loss(losses, problems, flat, t, steps)
        self.meta_opt.zero_grad(set_to_none=True)
        meta_loss.backward()
        params = [p for p in self.rule.parameters() if p.requires_grad]
        logged_loss = ddp.average_gradients(params, meta_loss.detach())
        assert logged_loss is not None
        norm = torch.nn.utils.clip_grad_norm_(
            params, cfg.clip if cfg.clip is not None else math.inf
        )
        skipped = not bool(torch.isfinite(norm))
        if skipped:  # a diverged unroll: keep the meta-parameters, go on
            self.meta_opt.zero_grad(set_to_none=True)
        else:
            self.meta_opt.step()
        flat = flat.detach()
        t_next = t + steps
        if t_next >= cfg.horizon or not bool(torch.isfinite(flat).all()):
            self._inner = None  # episode over (or this problem diverged: restart it)
        else:
            self._inner = (flat, {k: v.detach() for k, v in state.items()}, t_next)
        self.meta_step += 1
        return {
            "kind": "train",
            "meta_step": self.meta_step,
            "episode": episode,
            "truncation": truncation,
            "meta_loss": float(logged_loss),
            **extra,
            "grad_norm": float(norm),
            "skipped": skipped,
            "seconds": time.perf_counter() - start_time,
        }

    def meta_loss(
        self, losses: Tensor, problems: list[Problem], flat: Tensor, t: int, steps: int
    ) -> tuple[Tensor, dict[str, float]]:
        """The meta-loss of one truncation, and extra values to log with it.

        Args:
            losses: ``[steps + 1, P]`` per-problem losses of the truncation (with the graph);
                row 0 is before the first update.
            problems: the ``P`` problems being unrolled.
            flat: the parameters after the truncation (with the graph), one flat vector.
            t: episode step at which the truncation started; ``steps``: its length.

        The trainer's :attr:`objective` computes it (:mod:`optizoo.meta.objectives`, built from
        ``config.meta_objective``; the default is the weighted sum of the per-instance losses
        after each update, averaged over problems, Andrychowicz et al. 2016). Subclasses may
        override this to change the meta-objective; truncation, clipping, gradient averaging
        across processes and detaching stay in :meth:`step`.
        """
        assert self._scale is not None
        w = self._weights[t : t + steps].to(losses.dtype)
        return self.objective.meta_loss(losses, w, self._scale, problems, self._layout, flat)

    # ------------------------------------------------------------------ evaluation

    def evaluate(self) -> dict[str, Any]:
        """Roll the current rule out on the held-out problems (no meta-graph).

        Returns a row with ``objective`` (mean over problems of ``Σ_t w_t f(θ_t) / num_instances``
        over ``eval_horizon`` steps, the quantity the best rule is chosen on; ``inf`` if any
        problem diverged) and ``final_loss`` (mean ``f(θ_T) / num_instances``). Under
        ``"log_loss"`` they are the mean of ``log(f_t / f_0)`` and its last step's; under a
        validation ``meta_objective`` both are the held-out problems' validation loss at the end
        of every truncation, averaged over truncations
        (:func:`optizoo.meta.objectives.validation_rollout`). The trainer's :attr:`objective`
        computes them.
        """
        cfg = self.config
        horizon = cfg.eval_horizon or cfg.horizon
        start_time = time.perf_counter()
        objective, final = self.objective.evaluate(
            self.rule, self.eval_set(), horizon, cfg.unroll, self._full_weights(horizon)
        )
        return {
            "kind": "eval",
            "meta_step": self.meta_step,
            "objective": objective,
            "final_loss": final,
            "seconds": time.perf_counter() - start_time,
        }

    def _eval_and_select(self) -> dict[str, Any]:
        row = self.evaluate()
        row["best"] = row["objective"] < self.best_metric
        if row["best"]:
            self.best_metric = row["objective"]
            self.best_step = self.meta_step
            self._best_state = _clone_state_dict(self.rule)
            if self.out_dir is not None:
                self._save_rule(
                    self.out_dir / ckpt.BEST_RULE_NAME, self._best_state, self.best_step
                )
        return row

    # ------------------------------------------------------------------ files

    def training_record(self, meta_step: int | None = None) -> dict[str, Any]:
        """The ``optizoo.training`` metadata of weight files written by this trainer."""
        cfg = self.config
        record = {
            "task": cfg.task,
            "task_args": cfg.task_args,
            "unroll": cfg.unroll,
            "horizon": cfg.horizon,
            "meta_steps": self.meta_step if meta_step is None else meta_step,
            "meta_optimizer": {
                "name": "Adam",
                "lr": cfg.meta_lr,
                "scalar_lr": cfg.scalar_meta_lr,
                "clip": cfg.clip,
            },
            "problems_per_step": cfg.problems_per_step,
            "second_order": cfg.second_order,
            "loss_weights": cfg.loss_weights,
            "seed": cfg.seed,
            "selection": {
                "on": "held-out problems (validation seed stream)",
                "eval_problems": cfg.eval_problems,
                "eval_horizon": cfg.eval_horizon or cfg.horizon,
                "best_objective": self.best_metric if math.isfinite(self.best_metric) else None,
                "best_meta_step": self.best_step,
            },
        }
        if cfg.meta_objective is not None:
            obj = cfg.meta_objective
            record["meta_objective"] = obj if isinstance(obj, str) else dict(obj)
            record["selection"]["on"] = "validation loss of held-out problems after eval_horizon"
        if cfg.rule_seed is not None:
            record["rule_seed"] = cfg.rule_seed
        if cfg.reuse_gradients:
            record["reuse_gradients"] = True
        return record

    def _save_rule(self, path: Path, state: dict[str, Tensor], meta_step: int | None) -> None:
        from optizoo.zoo.format import save_rule

        rule = copy.deepcopy(self.rule).cpu()
        rule.load_state_dict(state)
        save_rule(
            rule,
            path,
            training=self.training_record(meta_step),
            description=f"{rule.rule_name} rule meta-trained on {self.config.task} by optizoo.MetaTrainer",
        )

    def save_checkpoint(self) -> Path | None:
        """Write ``out_dir/checkpoint.pt`` (collective under torch.distributed; rank 0 writes)."""
        if self.out_dir is None:
            return None
        inner = ddp.gather_episode(self._inner, self._problems_episode, self.device)
        if self.rank != 0:
            return None
        training = (
            self._training_state if self._training_state is not None else self.rule.state_dict()
        )
        payload = ckpt.checkpoint_payload(
            config=self.config.to_dict(),
            rule=self.rule,
            rule_state=training,
            meta_step=self.meta_step,
            world_size=self.world_size,
            meta_opt=self.meta_opt.state_dict(),
            inner=inner,
            best_metric=self.best_metric,
            best_step=self.best_step,
            best_state=self._best_state,
            rng_state=torch.get_rng_state(),
            metrics_rows=len(self.history),
        )
        return ckpt.save_checkpoint(self.out_dir / ckpt.CHECKPOINT_NAME, payload)

    def _load(self, data: dict[str, Any]) -> None:
        where = str(self.out_dir) if self.out_dir is not None else "the checkpoint"
        try:
            self._load_payload(data)
        except ckpt.CheckpointError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise ckpt.CheckpointError(
                f"the checkpoint in {where!r} does not fit this trainer ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else 'malformed entry'}); was it written "
                "for another rule or task? Start a new run in another folder"
            ) from None
        if self.out_dir is not None and self.rank == 0:
            covered = data.get("metrics_rows")
            with ckpt.run_lock(self.out_dir):
                rows = ckpt.read_metrics(self.out_dir)
                if isinstance(covered, int) and not isinstance(covered, bool):
                    rows = rows[:covered]
                else:  # older checkpoints: by meta-step
                    rows = [r for r in rows if r.get("meta_step", 0) <= self.meta_step]
                ckpt.write_metrics(self.out_dir / ckpt.METRICS_NAME, rows)
            self.history = rows

    def _load_payload(self, data: dict[str, Any]) -> None:
        if data["inner"] is not None and data["world_size"] != self.world_size:
            raise ckpt.CheckpointError(
                f"the checkpoint was written mid-episode by {data['world_size']} process(es); resume "
                f"it with the same number of processes (got {self.world_size})"
            )
        self.rule.load_state_dict({k: v.to(self.device) for k, v in data["rule"].items()})
        self.meta_opt.load_state_dict(data["meta_opt"])
        self.meta_step = int(data["meta_step"])
        best = data["best"]
        self.best_metric = float(best["metric"])
        self.best_step = None if best["meta_step"] < 0 else int(best["meta_step"])
        self._best_state = (
            None
            if best["rule"] is None
            else {k: v.to(self.device) for k, v in best["rule"].items()}
        )
        if self._best_state is not None:  # the best weights must fit the rule too
            copy.deepcopy(self.rule).load_state_dict(self._best_state)
        torch.set_rng_state(data["rng"]["torch"])
        inner = data["inner"]
        if inner is not None:
            problems = self._episode_problems(int(inner["episode"]))
            self._fresh_inner(problems)  # layout and scales
            state = inner["state"][self.rank]
            flat = inner["flat"][self.rank].to(self.device)
            assert self._layout is not None
            if flat.shape != (sum(self._layout.sizes),):
                raise ValueError(
                    f"episode parameters of shape {tuple(flat.shape)} do not fit the task's "
                    f"{sum(self._layout.sizes)} coordinates"
                )
            self._inner = (flat, {k: v.to(self.device) for k, v in state.items()}, int(inner["t"]))

    def _log(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        if self._metrics_file is not None:
            self._metrics_file.write(ckpt.metrics_line(row))
            self._metrics_file.flush()

    def plot(self, path: str | os.PathLike[str] | None = None) -> Path | None:
        """Draw the learning curve (training meta-loss, held-out objective) as a PNG."""
        if path is None:
            if self.out_dir is None:
                return None
            path = self.out_dir / ckpt.CURVE_NAME
        return learning_curve(
            self.history, path, title=f"{self.rule.rule_name} on {self.config.task}"
        )

    # ------------------------------------------------------------------ the loop

    def fit(self, meta_steps: int, *, restore_best: bool = True) -> dict[str, Any]:
        """Run ``meta_steps`` more meta-steps (truncations).

        Evaluates on the held-out problems before the first meta-step of a run, every
        ``eval_every`` meta-steps and at the end; checkpoints every ``checkpoint_every`` meta-steps
        and at the end. With ``restore_best`` the rule holds the best weights (chosen on held-out
        problems) when this returns; the last training weights are kept aside and training
        continues from them on the next :meth:`fit` or :meth:`step` (see the class docstring,
        "Which weights the rule holds").

        Raises:
            ValueError: the rule's weights were changed since the previous ``fit`` left the best
                weights in it (continuing would silently discard that change).

        Returns:
            ``{"meta_step", "best_meta_step", "best_objective", "last_eval", "seconds"}``.
        """
        nonnegative_int(meta_steps, "meta_steps")
        self._ensure_training_weights()
        main = self.rank == 0
        if self.out_dir is None or not main:
            return self._fit(meta_steps, restore_best)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with ckpt.run_lock(self.out_dir):
            if self._clear_out_dir:  # overwrite=True: the old run's files go first
                for name in ckpt.RUN_FILES:
                    (self.out_dir / name).unlink(missing_ok=True)
                self._clear_out_dir = False
            self._metrics_file = open(self.out_dir / ckpt.METRICS_NAME, "a", encoding="utf-8")  # noqa: SIM115
            return self._fit(meta_steps, restore_best)

    def _fit(self, meta_steps: int, restore_best: bool) -> dict[str, Any]:
        cfg = self.config
        main = self.rank == 0
        start = last_plot = time.perf_counter()
        last_eval: dict[str, Any] | None = None
        try:
            if main and not any(r.get("kind") == "eval" for r in self.history):
                last_eval = self._eval_and_select()
                self._log(last_eval)
            from tqdm.auto import tqdm

            bar = tqdm(
                total=meta_steps,
                desc="meta-training",
                unit="step",
                disable=not (self.verbose and main and sys.stderr.isatty()),
                dynamic_ncols=True,
            )
            with bar:
                for _ in range(meta_steps):
                    row = self.step()
                    if main:
                        self._log(row)
                    if main and cfg.eval_every and self.meta_step % cfg.eval_every == 0:
                        last_eval = self._eval_and_select()
                        self._log(last_eval)
                        if time.perf_counter() - last_plot > _PLOT_INTERVAL_S:
                            self.plot()
                            last_plot = time.perf_counter()
                    if cfg.checkpoint_every and self.meta_step % cfg.checkpoint_every == 0:
                        self.save_checkpoint()
                    bar.set_postfix(
                        meta_loss=f"{row['meta_loss']:.4g}",
                        best=f"{self.best_metric:.4g}",
                        refresh=False,
                    )
                    bar.update(1)
            if main and last_eval is None:  # e.g. a finished run resumed: evaluated already?
                last_eval = next(
                    (
                        r
                        for r in reversed(self.history)
                        if r.get("kind") == "eval" and r.get("meta_step") == self.meta_step
                    ),
                    None,
                )
            if main and (last_eval is None or last_eval["meta_step"] != self.meta_step):
                last_eval = self._eval_and_select()
                self._log(last_eval)
            self.save_checkpoint()
            if main and self.out_dir is not None:
                self._save_rule(
                    self.out_dir / ckpt.FINAL_RULE_NAME, self.rule.state_dict(), self.meta_step
                )
                self.plot()
        finally:
            if self._metrics_file is not None:
                self._metrics_file.close()
                self._metrics_file = None
        ddp.barrier()
        if restore_best and (self._best_state is not None or self.world_size > 1):
            # rank 0 selected the best weights; every rank ends with them
            self._training_state = _clone_state_dict(self.rule)
            if self._best_state is not None:
                self.rule.load_state_dict(self._best_state)
            ddp.broadcast_module(self.rule)
            self._left_in_rule = _clone_state_dict(self.rule)
        return {
            "meta_step": self.meta_step,
            "best_meta_step": self.best_step,
            "best_objective": self.best_metric,
            "last_eval": last_eval,
            "seconds": time.perf_counter() - start,
        }

    def best_rule(self) -> UpdateRule:
        """A copy of the rule with the best weights found so far (held-out selection)."""
        rule = copy.deepcopy(self.rule)
        if self._best_state is not None:
            rule.load_state_dict(self._best_state)
        return rule

    @property
    def best_state(self) -> dict[str, Tensor] | None:
        """A copy of the best weights found so far (held-out selection), or ``None`` before the
        first finite evaluation (and on ranks other than 0 under torch.distributed)."""
        if self._best_state is None:
            return None
        return {k: v.detach().clone() for k, v in self._best_state.items()}

    def training_state_dict(self) -> dict[str, Tensor]:
        """A copy of the rule's current *training* weights (not the best ones ``fit`` loads)."""
        state = self._training_state if self._training_state is not None else self.rule.state_dict()
        return {k: v.detach().clone() for k, v in state.items()}

    def __repr__(self) -> str:
        cfg = self.config
        return (
            f"MetaTrainer(rule={self.rule.rule_name}, task={cfg.task}, unroll={cfg.unroll}, "
            f"horizon={cfg.horizon}, meta_step={self.meta_step}, world_size={self.world_size})"
        )
