"""The hyper-parameters of a meta-training run (:class:`MetaConfig`) and their validation.

A config is plain data: JSON-serialisable through ``to_dict``/``from_dict`` and stored in every
checkpoint. Guide: ``docs/meta-training.md``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from optizoo._validate import is_int, nonnegative_int, positive_finite, positive_int

__all__ = [
    "LOG_LOSS",
    "STAGE_SEED_STRIDE",
    "VALIDATION_KEYS",
    "MetaConfig",
    "check_meta_objective",
]

#: the keys of a validation meta-objective
VALIDATION_KEYS = ("validation_weight", "train_weight")
#: ``meta_objective="log_loss"``: the mean log-ratio ``log(f_t / f_0)`` of the training loss,
#: scale-free, so that no task of a mixture dominates by the size of its loss
LOG_LOSS = "log_loss"
#: stage ``i`` of a staged config runs with the seed ``seed + STAGE_SEED_STRIDE * i``
STAGE_SEED_STRIDE = 1000
#: fields set once for all stages (a stage may not override them)
_RUN_FIELDS = ("task", "task_args", "seed", "rule_seed", "stages")


def check_meta_objective(value: Any) -> dict[str, Any] | str | None:
    """Validate a ``meta_objective`` option; returns ``None``, ``"log_loss"`` or a dict of the
    two weights (floats) and ``log`` (a bool, default ``False``).

    Raises:
        TypeError: not ``None`` or a mapping.
        ValueError: unknown or missing keys, negative or non-finite weights, both weights zero.
    """
    if value is None:
        return None
    if value == LOG_LOSS:
        return LOG_LOSS
    if not isinstance(value, Mapping):
        raise TypeError(
            'meta_objective must be None (the training loss), "log_loss" or a dict '
            f'{{"validation_weight": a, "train_weight": b}}, got {type(value).__name__}'
        )
    unknown = sorted(set(value) - set(VALIDATION_KEYS) - {"log"})
    missing = [k for k in VALIDATION_KEYS if k not in value]
    if unknown or missing:
        raise ValueError(
            f"meta_objective needs the keys {list(VALIDATION_KEYS)} (and optionally 'log')"
            + (f"; unknown: {unknown}" if unknown else "")
            + (f"; missing: {missing}" if missing else "")
        )
    out: dict[str, Any] = {}
    for key in VALIDATION_KEYS:
        v = value[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"meta_objective[{key!r}] must be a finite number >= 0, got {v!r}")
        out[key] = float(v)
    if out["validation_weight"] == 0 and out["train_weight"] == 0:
        raise ValueError("meta_objective: validation_weight and train_weight are both 0")
    log = value.get("log", False)
    if not isinstance(log, bool):
        raise ValueError(f"meta_objective['log'] must be true or false, got {log!r}")
    if log:  # recorded only when set, so that existing configs keep their exact form
        out["log"] = True
    return out


@dataclass
class MetaConfig:
    """Hyper-parameters of a meta-training run (JSON-serialisable; stored in checkpoints).

    Attributes:
        task: registry name of the task (``optizoo.tasks.get``), or the name of a task instance.
        task_args: keyword arguments of the task.
        unroll: steps per truncation (paper: 20).
        horizon: steps per episode before new problems are sampled (paper: 100).
        meta_lr: learning rate of the Adam meta-optimizer.
        scalar_meta_lr: learning rate for the rule's *scalar* (0-dim) meta-parameters, such as a
            learned log learning rate or log weight decay, which need larger steps than the
            network's weights to move within a run (default: ``meta_lr`` for all).
        clip: maximum global norm of the meta-gradient (``None``: no clipping).
        problems_per_step: problems unrolled together per meta-step, over all processes (the
            quadratic task already batches 128 quadratics into one problem).
        eval_problems: held-out problems of the validation seed stream.
        eval_every: evaluate every this many meta-steps (0: only at the start and the end of
            :meth:`MetaTrainer.fit`).
        eval_horizon: steps of each evaluation rollout (default: ``horizon``).
        seed: root of every seed stream.
        loss_weights: ``w_t`` of the meta-loss, one per step of a truncation (length ``unroll``)
            or per step of the episode (length ``horizon``); default all ones. ``[0, ..., 0, 1]``
            with ``unroll == horizon`` makes the meta-loss the loss after the unroll.
        second_order: differentiate through the optimizee gradients (default: treat them as
            constants, as Andrychowicz et al. 2016).
        reuse_gradients: first order only, opt-in speed-up: the meta-gradient takes the
            derivative of each loss before an update from the optimizee gradient the unroll
            computed anyway, instead of a second backward through the optimizee
            (:class:`optizoo.meta.unroll.KnownGradient`). The same meta-gradient
            mathematically, to float rounding numerically (so not bit for bit the default's
            weights); faster (1.2-1.3x on the ``lstm-hierarchical`` recipe) and the losses'
            graphs are freed at once.
        checkpoint_every: write ``checkpoint.pt`` every this many meta-steps (and at the end of
            every :meth:`~MetaTrainer.fit`); 0: only at the end.
        device: where problems and the rule live (``"cpu"``, ``"cuda"``...).
        meta_objective: ``None`` (default): the training loss above; or
            ``{"validation_weight": a, "train_weight": b}``: each truncation's meta-loss is
            ``a`` times the problems' validation loss (``eval_loss``) at its end plus ``b`` times
            the training loss, and the best rule is chosen on the held-out problems' validation
            loss (:mod:`optizoo.meta.objectives`); with ``"log": true`` both terms are
            scale-free: the mean over problems of ``log`` of the validation loss, and the
            ``"log_loss"`` training term below; or ``"log_loss"``: the weighted mean over a
            truncation's steps of ``log(f_t / f_0)`` (``f`` floored at 1e-6), scale-free across
            the tasks of a mixture, and the best rule is chosen on the mean of ``log(f_t / f_0)``
            over the held-out problems' ``eval_horizon``-step rollouts.
        rule_seed: seed of the rule's initial weights (``torch.manual_seed(rule_seed)`` before the
            rule is built, by ``optizoo train`` and :func:`optizoo.meta.recipe.train_recipe`);
            ``None``: ``seed``. The trainer itself gets a built rule: this field records the
            seed so that a run is rebuilt from its config alone (:attr:`initial_rule_seed`).
        stages: ``None`` (default): one run of :meth:`MetaTrainer.fit
            <optizoo.meta.MetaTrainer.fit>`; or a curriculum, a list of stages, each a dict of
            the fields above that the stage overrides plus ``meta_steps`` (its number of
            meta-steps), e.g. ``[{"unroll": 20, "horizon": 100, "meta_steps": 500},
            {"unroll": 50, "horizon": 500, "meta_steps": 200, "meta_lr": 1e-3}]``. The other
            fields are the stages' defaults; ``task``, ``task_args``, ``seed`` and ``rule_seed``
            are set once, at the top level. Stage ``i`` runs with the seed ``seed + 1000 · i``
            and starts from the previous stage's best rule with a fresh meta-optimizer
            (:meth:`stage_configs`; run by :func:`optizoo.meta.fit_stages`, ``optizoo train
            --config``). Every stage's config is validated when the config is built; the
            top-level ``unroll``/``horizon``/``loss_weights`` are only checked together in each
            stage (a stage may change the horizon the weights refer to).
    """

    task: str = "quadratic"
    task_args: dict[str, Any] = field(default_factory=dict)
    unroll: int = 20
    horizon: int = 100
    meta_lr: float = 3e-3
    scalar_meta_lr: float | None = None
    clip: float | None = 1.0
    problems_per_step: int = 1
    eval_problems: int = 8
    eval_every: int = 100
    eval_horizon: int | None = None
    seed: int = 0
    loss_weights: list[float] | None = None
    second_order: bool = False
    reuse_gradients: bool = False
    checkpoint_every: int = 100
    device: str = "cpu"
    meta_objective: dict[str, Any] | str | None = None
    rule_seed: int | None = None
    stages: list[dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        for name in ("unroll", "horizon", "problems_per_step", "eval_problems"):
            positive_int(getattr(self, name), name)
        for name in ("eval_every", "checkpoint_every", "seed"):
            nonnegative_int(getattr(self, name), name)
        self._check_fields()
        if self.stages is None:
            self._check_episode()
        else:
            self.stages = _check_stages(self.stages)
            for i in range(len(self.stages)):  # each stage's config is valid now, not hours later
                try:
                    self._stage_config(i)
                except (TypeError, ValueError) as exc:
                    raise type(exc)(f"stage {i}: {exc}") from None

    def _check_episode(self) -> None:
        """The checks that tie ``unroll``, ``horizon`` and ``loss_weights`` together."""
        if self.unroll > self.horizon:
            raise ValueError(
                f"unroll ({self.unroll}) cannot exceed horizon ({self.horizon}): a truncation is "
                "part of an episode"
            )
        if self.loss_weights is not None and len(self.loss_weights) not in (
            self.unroll,
            self.horizon,
        ):
            raise ValueError(
                f"loss_weights has {len(self.loss_weights)} entries; give one per step of a "
                f"truncation (unroll={self.unroll}) or of an episode (horizon={self.horizon})"
            )

    def _check_fields(self) -> None:
        """Every other field's own check (and normalization)."""
        if self.loss_weights is not None:
            w = list(self.loss_weights)
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in w):
                raise ValueError("loss_weights must be finite numbers")
            self.loss_weights = [float(v) for v in w]
        if self.eval_horizon is not None and not (
            is_int(self.eval_horizon) and self.eval_horizon >= 1
        ):
            raise ValueError(
                f"eval_horizon must be a positive int or None, got {self.eval_horizon!r}"
            )
        self.meta_lr = positive_finite(self.meta_lr, "meta_lr")
        self.scalar_meta_lr = positive_finite(self.scalar_meta_lr, "scalar_meta_lr", optional=True)
        self.clip = positive_finite(self.clip, "clip", optional=True)
        if not isinstance(self.task, str) or not self.task:
            raise TypeError(f"task must be a task name, got {self.task!r}")
        if not isinstance(self.task_args, Mapping):
            raise TypeError(f"task_args must be a dict, got {type(self.task_args).__name__}")
        self.task_args = dict(self.task_args)
        self.second_order = bool(self.second_order)
        if not isinstance(self.reuse_gradients, bool):
            raise TypeError(f"reuse_gradients must be True or False, got {self.reuse_gradients!r}")
        if self.reuse_gradients and self.second_order:
            raise ValueError(
                "reuse_gradients=True applies to first-order meta-gradients only; drop it or "
                "second_order=True"
            )
        self.device = str(self.device)
        self.meta_objective = check_meta_objective(self.meta_objective)
        if self.rule_seed is not None:
            nonnegative_int(self.rule_seed, "rule_seed")

    @property
    def initial_rule_seed(self) -> int:
        """The seed of the rule's initial weights: ``rule_seed``, or ``seed`` when unset."""
        return self.seed if self.rule_seed is None else int(self.rule_seed)

    @property
    def total_meta_steps(self) -> int | None:
        """Meta-steps of all stages together (``None`` without stages)."""
        return None if self.stages is None else sum(self.stage_meta_steps())

    def stage_meta_steps(self) -> list[int]:
        """The ``meta_steps`` of each stage (``[]`` without stages)."""
        return [int(stage["meta_steps"]) for stage in self.stages or ()]

    def stage_configs(self) -> list[MetaConfig]:
        """One plain :class:`MetaConfig` (no ``stages``) per stage: the top-level fields, then the
        stage's own values; stage ``i`` has the seed ``seed + 1000 · i``; stage 0 records the
        seed of the rule's initial weights (:attr:`initial_rule_seed`) as its ``rule_seed``,
        later stages start from the previous stage's best rule and record none.

        Raises:
            ValueError: the config has no stages.
        """
        if self.stages is None:
            raise ValueError(
                "this MetaConfig has no stages; run it with MetaTrainer(...).fit(meta_steps), "
                "or give stages=[{..., 'meta_steps': N}, ...]"
            )
        return [self._stage_config(i) for i in range(len(self.stages))]

    def _stage_config(self, i: int) -> MetaConfig:
        assert self.stages is not None
        options = {**self.to_dict(), **self.stages[i]}
        options.pop("meta_steps")
        options.update(
            stages=None,
            seed=self.seed + STAGE_SEED_STRIDE * i,
            rule_seed=self.initial_rule_seed if i == 0 else None,
        )
        return MetaConfig.from_dict(options)

    @property
    def truncations(self) -> int:
        """Meta-steps per episode: ``ceil(horizon / unroll)``."""
        return -(-self.horizon // self.unroll)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-serialisable dict (``from_dict`` inverts it)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetaConfig:
        """Build from a mapping; unknown keys are an error naming the accepted ones."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"unknown meta-training option(s) {unknown}; accepted: {sorted(names)}"
            )
        return cls(**dict(data))


#: the keys a stage accepts: the per-stage fields and ``meta_steps``
STAGE_KEYS = frozenset(
    {f.name for f in dataclasses.fields(MetaConfig)} - set(_RUN_FIELDS) | {"meta_steps"}
)


def _check_stages(stages: Any) -> list[dict[str, Any]]:
    """The stages as a list of plain dicts; their keys and ``meta_steps`` checked (the values
    are checked by building each stage's config)."""
    if isinstance(stages, (str, bytes, Mapping)) or not isinstance(stages, Sequence):
        raise TypeError(
            "stages must be a list of stages, each a dict of MetaConfig fields plus 'meta_steps', "
            f"got {type(stages).__name__}"
        )
    if not stages:
        raise ValueError("stages must list at least one stage (or be None: no stages)")
    out = []
    for i, stage in enumerate(stages):
        if not isinstance(stage, Mapping):
            raise TypeError(
                f"stage {i} must be a dict of MetaConfig fields plus 'meta_steps', got "
                f"{type(stage).__name__}"
            )
        run_level = sorted(set(stage) & set(_RUN_FIELDS))
        if run_level:
            raise ValueError(
                f"stage {i} sets {run_level}: the task, task_args, seed and rule_seed are set "
                "once, at the top level (stage i runs with seed + 1000 * i), and stages do not nest"
            )
        unknown = sorted(set(stage) - STAGE_KEYS)
        if unknown:
            raise ValueError(
                f"stage {i} has unknown key(s) {unknown}; accepted: {sorted(STAGE_KEYS)}"
            )
        if "meta_steps" not in stage:
            raise ValueError(f"stage {i} needs 'meta_steps' (its number of meta-steps)")
        nonnegative_int(stage["meta_steps"], f"stage {i}: meta_steps")
        out.append(copy.deepcopy(dict(stage)))
    return out
