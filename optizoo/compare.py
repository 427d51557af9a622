"""Run optimizers side by side on a task: paired problems, tuned baselines, confidence intervals.

>>> from optizoo.compare import compare
>>> result = compare("quadratic", ["lstm", "adam", "rmsprop", "sgd"], steps=100, problems=100)
>>> print(result.table())
>>> result.plot("docs/quadratic.png")

Protocol (what makes the numbers trustworthy):

- **Paired problems.** Problem ``i`` is ``task.sample(torch.Generator().manual_seed(seeds[i]))``
  for every optimizer, so all optimizers see the same problems (and, for stochastic tasks, the
  same minibatches); differences can be tested pairwise (:meth:`Comparison.paired`).
- **Tuned baselines.** A ``torch.optim`` baseline without an explicit ``lr`` gets its learning rate
  from a log-grid search (:data:`DEFAULT_GRID`) on *separate* problems (a different seed stream,
  :func:`problem_seeds`); the criterion is the mean final loss (or mean sum of losses, or mean
  test loss); a diverged run (non-finite loss) ranks last. Nothing is cached across processes.
- **Curves.** ``train[i, t] = f_i(θ_t) / num_instances`` for ``t = 0 .. steps`` (``steps + 1``
  values: the loss at the initial point, at each point the optimizer stepped from, and at the
  final point). *Final loss* is ``train[:, steps]``; *sum of losses* is
  ``Σ_{t=0}^{steps-1} train[:, t]``, the per-step losses seen while optimizing (seed 003's
  metric). A run whose loss becomes non-finite is stopped and its remaining entries are ``inf``.
- **Intervals.** mean ± Student-t 95% half-width over problems (:mod:`optizoo.stats`).
"""

from __future__ import annotations

import ast
import inspect
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from optizoo._io import write_text_atomic
from optizoo.stats import Interval, format_interval, mean_ci, paired_difference
from optizoo.tasks.base import Problem, Task

__all__ = [
    "BASELINES",
    "DEFAULT_GRID",
    "Comparison",
    "OptimizerResult",
    "OptimizerSpec",
    "Trajectories",
    "TuneResult",
    "compare",
    "log_grid",
    "num_threads",
    "parse_spec",
    "problem_seeds",
    "resolve_task",
    "run_trajectories",
    "tune_lr",
]

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]

#: ``torch.optim`` baselines: spec name -> (class, default keyword arguments)
BASELINES: dict[str, tuple[type[torch.optim.Optimizer], dict[str, Any]]] = {
    "sgd": (torch.optim.SGD, {}),
    "momentum": (torch.optim.SGD, {"momentum": 0.9}),
    "nesterov": (torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
    "rmsprop": (torch.optim.RMSprop, {}),
    "adam": (torch.optim.Adam, {}),
    "adamw": (torch.optim.AdamW, {}),
    "adagrad": (torch.optim.Adagrad, {}),
}


def log_grid(low: float, high: float, num: int) -> list[float]:
    """``num`` learning rates spaced evenly in log10 from ``low`` to ``high`` (both included)."""
    if not (0 < low < high and math.isfinite(high)):
        raise ValueError(f"log grid needs 0 < low < high, got low={low!r}, high={high!r}")
    if not (isinstance(num, int) and num >= 2):
        raise ValueError(f"log grid needs num >= 2 points, got {num!r}")
    return [float(v) for v in np.logspace(math.log10(low), math.log10(high), num)]


#: the default learning-rate grid: 13 points from 1e-4 to 10^0.5 ≈ 3.16 (0.375 decades apart,
#: i.e. a factor 2.37 between neighbours)
DEFAULT_GRID: tuple[float, ...] = tuple(log_grid(1e-4, 10**0.5, 13))

_STREAMS = {"eval": 0, "tune": 1}


def problem_seeds(
    seed: int, n: int, stream: str = "eval", *, exclude: Iterable[int] = ()
) -> list[int]:
    """``n`` problem seeds for run seed ``seed`` from the named ``stream`` (``"eval"``/``"tune"``).

    Seeds are 32-bit words from ``numpy.random.SeedSequence(seed, spawn_key=(stream_id,))``, so the
    evaluation and tuning streams are independent and reproducible; values in ``exclude`` (and
    repeats) are skipped so that the streams never share a problem.
    """
    if stream not in _STREAMS:
        raise ValueError(f"unknown seed stream {stream!r}; expected one of {sorted(_STREAMS)}")
    if not (isinstance(seed, int) and seed >= 0):
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if not (isinstance(n, int) and n >= 0):
        raise ValueError(f"number of problems must be a non-negative int, got {n!r}")
    banned = set(exclude)
    out: list[int] = []
    extra = 0
    while len(out) < n:
        words = np.random.SeedSequence(seed, spawn_key=(_STREAMS[stream],)).generate_state(
            n + extra + 8
        )
        out = []
        for w in words.tolist():
            if w not in banned and w not in out:
                out.append(int(w))
            if len(out) == n:
                break
        extra += 8
    return out


# --------------------------------------------------------------------------- optimizer specs


def _split_options(text: str) -> list[str]:
    """Split ``a=1,b=(2,3)`` at top-level commas."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def _parse_options(text: str, spec: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in _split_options(text):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key.isidentifier():
            raise ValueError(
                f"bad option {item!r} in optimizer spec {spec!r}: options are KEY=VALUE pairs "
                "separated by commas, e.g. 'adam:lr=0.01,betas=(0.9,0.99)'"
            )
        try:
            options[key] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            options[key] = value.strip()
    return options


def _accepted_text() -> str:
    return (
        "accepted optimizer specs: "
        + ", ".join(sorted(BASELINES))
        + " (torch.optim baselines; lr tuned unless given, e.g. 'adam:lr=0.01,betas=(0.9,0.99)'), "
        "'lstm' (the shipped default learned optimizer), a pretrained name ("
        + (", ".join(_pretrained_names()) or "none installed")
        + "), 'NAME=PATH.safetensors' or 'NAME=PRETRAINED' (a learned optimizer labelled NAME); "
        "learned specs take options too, e.g. 'lstm:lr=0.5'"
    )


def _pretrained_names() -> list[str]:
    try:
        from optizoo.zoo.registry import all_pretrained

        return sorted(all_pretrained())
    except Exception:  # the zoo must never make spec errors unreadable
        return []


@dataclass
class OptimizerSpec:
    """A parsed optimizer spec.

    Attributes:
        label: the name shown in tables and legends (unique within a comparison).
        kind: ``"torch"`` (a :data:`BASELINES` entry), ``"learned"`` (an update rule from a weight
            file or pretrained name, run by :class:`optizoo.optim.LearnedOptimizer`), or
            ``"factory"`` (a user callable ``params -> Optimizer``).
        name: the baseline name, or the weights (``"default"``, a pretrained name or a path).
        options: keyword arguments for the optimizer (``lr`` included when given).
        text: the spec as written.
        factory: for ``kind="factory"``, the callable.
    """

    label: str
    kind: str
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    factory: OptimizerFactory | None = None
    _rule: Any = field(default=None, repr=False, compare=False)

    @property
    def needs_tuning(self) -> bool:
        """Whether the learning rate is to be tuned (a torch baseline without an explicit lr)."""
        return self.kind == "torch" and "lr" not in self.options

    @classmethod
    def from_factory(cls, label: str, factory: OptimizerFactory) -> OptimizerSpec:
        """Wrap a callable ``params -> torch.optim.Optimizer`` (used as is, never tuned)."""
        if not callable(factory):
            raise TypeError(f"optimizer factory for {label!r} must be callable, got {factory!r}")
        return cls(label=label, kind="factory", name=label, text=label, factory=factory)

    def build(self, lr: float | None = None) -> OptimizerFactory:
        """A factory ``params -> Optimizer``; ``lr`` overrides the spec's learning rate."""
        if self.kind == "factory":
            assert self.factory is not None
            return self.factory
        options = dict(self.options)
        if lr is not None:
            options["lr"] = float(lr)
        if self.kind == "torch":
            cls, defaults = BASELINES[self.name]
            kwargs = {**defaults, **options}
            if "lr" not in kwargs:
                raise ValueError(
                    f"{self.label}: no learning rate; tune it (compare does) or give one, "
                    f"e.g. '{self.name}:lr=0.01'"
                )
            return lambda params: cls(params, **kwargs)
        # learned: load the rule once per spec, share it (read-only) across problems
        from optizoo.optim import LearnedOptimizer

        rule = self.rule()
        options.setdefault("lr", 1.0)
        weights_name = self.name
        return lambda params: LearnedOptimizer(params, rule, weights_name=weights_name, **options)

    def rule(self) -> Any:
        """The learned :class:`~optizoo.rules.UpdateRule` (loaded once, cached on the spec)."""
        if self.kind != "learned":
            raise TypeError(f"{self.label} is not a learned optimizer")
        if self._rule is None:
            from optizoo import zoo

            expect = "lstm" if self.text.split(":")[0] == "lstm" else None
            self._rule = zoo.load_rule(self.name, expect_rule=expect)
        return self._rule

    def validate(self) -> None:
        """Build one optimizer on a dummy parameter, turning bad options into clear errors."""
        if self.kind == "factory":
            return
        if self.kind == "torch":
            cls, _ = BASELINES[self.name]
            accepted = [
                p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "params")
            ]
        else:
            from optizoo.optim import LearnedOptimizer

            accepted = [
                p
                for p in inspect.signature(LearnedOptimizer.__init__).parameters
                if p not in ("self", "params", "rule", "weights_name")
            ]
        unknown = sorted(set(self.options) - set(accepted))
        if unknown:
            raise ValueError(
                f"optimizer spec {self.text!r}: unknown option(s) {', '.join(unknown)}; "
                f"accepted: {', '.join(accepted)}"
            )
        dummy = [nn.Parameter(torch.zeros(2))]
        try:
            self.build(lr=None if "lr" in self.options or self.kind == "learned" else 1e-3)(dummy)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"optimizer spec {self.text!r}: {exc}") from exc


_NAME_RE = re.compile(r"^[A-Za-z_][\w.+-]*$")


def parse_spec(spec: str | OptimizerSpec) -> OptimizerSpec:
    """Parse an optimizer spec string (see :func:`_accepted_text` for the grammar).

    - ``adam``, ``rmsprop``, ``sgd``, ``momentum`` (SGD, momentum 0.9), ``nesterov``, ``adamw``,
      ``adagrad``: ``torch.optim`` baselines; ``adam:lr=0.01,betas=(0.9,0.99)`` sets options (an
      explicit ``lr`` disables tuning).
    - ``lstm``: the shipped default learned optimizer (``weights="default"``).
    - ``lstm-quadratic``: any pretrained name (:func:`optizoo.list_pretrained`).
    - ``NAME=PATH.safetensors`` or ``NAME=PRETRAINED``: a learned optimizer labelled ``NAME``;
      ``lstm=runs/a.safetensors:lr=0.5`` adds options after the ``.safetensors`` suffix.
    """
    if isinstance(spec, OptimizerSpec):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"an optimizer spec must be a string, got {type(spec).__name__}")
    text = spec.strip()
    if not text:
        raise ValueError(f"empty optimizer spec; {_accepted_text()}")
    head, colon, _ = text.partition(":")
    if "=" in head:  # NAME=WEIGHTS[:options]
        label, _, weights = text.partition("=")
        label = label.strip()
        options: dict[str, Any] = {}
        m = re.match(r"^(.*\.safetensors):(.+)$", weights)
        if m:
            weights, options = m.group(1), _parse_options(m.group(2), text)
        weights = weights.strip()
        if not _NAME_RE.match(label) or not weights:
            raise ValueError(
                f"bad optimizer spec {text!r}: expected NAME=PATH.safetensors or NAME=PRETRAINED "
                f"with NAME a plain word; {_accepted_text()}"
            )
        if label in BASELINES:
            raise ValueError(
                f"optimizer spec {text!r}: {label!r} names a torch.optim baseline; label a weight "
                "file with another name (e.g. 'lstm=PATH')"
            )
        if not (
            Path(weights).expanduser().is_file()
            or weights in _pretrained_names()
            or weights == "default"
        ):
            raise ValueError(
                f"optimizer spec {text!r}: no weight file at {weights!r} and no pretrained "
                f"optimizer of that name; {_accepted_text()}"
            )
        return OptimizerSpec(label=label, kind="learned", name=weights, options=options, text=text)
    name = head.strip().lower()
    options = _parse_options(text.partition(":")[2], text) if colon else {}
    if name in BASELINES:
        return OptimizerSpec(label=text, kind="torch", name=name, options=options, text=text)
    if name == "lstm":
        return OptimizerSpec(label=text, kind="learned", name="default", options=options, text=text)
    if head.strip() in _pretrained_names():
        return OptimizerSpec(
            label=text, kind="learned", name=head.strip(), options=options, text=text
        )
    raise ValueError(f"unknown optimizer spec {text!r}; {_accepted_text()}")


def _as_specs(
    optimizers: Sequence[str | OptimizerSpec]
    | Mapping[str, str | OptimizerSpec | OptimizerFactory],
) -> list[OptimizerSpec]:
    specs: list[OptimizerSpec] = []
    if isinstance(optimizers, Mapping):
        for label, value in optimizers.items():
            if isinstance(value, (str, OptimizerSpec)):
                s = parse_spec(value)
                s = OptimizerSpec(str(label), s.kind, s.name, s.options, s.text, s.factory)
            else:
                s = OptimizerSpec.from_factory(str(label), value)
            specs.append(s)
    elif isinstance(optimizers, (str, OptimizerSpec)):
        specs = [parse_spec(optimizers)]
    else:
        specs = [parse_spec(o) for o in optimizers]
    if not specs:
        raise ValueError(f"no optimizers to compare; {_accepted_text()}")
    labels = [s.label for s in specs]
    dupes = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dupes:
        raise ValueError(
            f"duplicate optimizer label(s) {dupes}; give each a distinct NAME=... label"
        )
    return specs


# --------------------------------------------------------------------------- running


def resolve_task(task: str | Task, task_args: Mapping[str, Any] | None = None) -> Task:
    """A :class:`Task` from a registry name (with ``task_args``) or an instance (no args)."""
    if isinstance(task, Task):
        if task_args:
            raise ValueError("task_args only apply when the task is given by name")
        return task
    if isinstance(task, str):
        from optizoo import tasks

        return tasks.get(task, **dict(task_args or {}))
    if hasattr(task, "sample"):
        return task  # duck-typed task
    raise TypeError(
        f"task must be a registry name or an optizoo.tasks.Task, got {type(task).__name__}"
    )


def _task_name(task: Task, given: str | Task) -> str:
    return given if isinstance(given, str) else getattr(task, "name", type(task).__name__)


from optizoo.tasks import task_config as _task_config  # noqa: E402


@dataclass
class Trajectories:
    """Loss curves of one optimizer on a list of problems.

    Attributes:
        train: ``[problems, steps + 1]`` float64: ``f(θ_t) / num_instances`` for ``t = 0..steps``;
            ``inf`` after a divergence.
        test: ``[problems, len(test_steps)]`` float64 held-out loss at ``test_steps``, or ``None``
            when the task has no test split.
        test_steps: the step counts (0..steps) where the test loss was measured.
        seconds: wall-clock time of the runs (evaluation included).
    """

    train: np.ndarray
    test: np.ndarray | None
    test_steps: list[int]
    seconds: float


def _check_steps(test_steps: Iterable[int], steps: int) -> list[int]:
    out = sorted({int(s) for s in test_steps})
    bad = [s for s in out if not 0 <= s <= steps]
    if bad:
        raise ValueError(f"test steps {bad} are outside 0..{steps}")
    return out


def run_trajectories(
    task: Task,
    factory: OptimizerFactory,
    seeds: Sequence[int],
    steps: int,
    *,
    test_steps: Iterable[int] = (),
    device: torch.device | str | None = None,
    progress: Any = None,
) -> Trajectories:
    """Optimize problem ``task.sample(Generator().manual_seed(s))`` for each ``s`` in ``seeds``.

    Each run builds real ``nn.Parameter``s from ``problem.params()``, then repeats
    ``zero_grad; loss = problem.loss(params, t); backward; step`` for ``t = 0..steps-1``, and finally
    evaluates ``problem.loss(params, steps)`` without a step. ``problem.eval_loss`` is measured at
    ``test_steps`` (before the step of that index). ``progress`` (a tqdm bar) is advanced once
    per problem.
    """
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    tsteps = _check_steps(test_steps, steps)
    t_index = {s: i for i, s in enumerate(tsteps)}
    n = len(seeds)
    train = np.full((n, steps + 1), np.inf)
    test = np.full((n, len(tsteps)), np.inf) if tsteps else None
    has_test = bool(tsteps)
    start = time.perf_counter()
    for i, seed in enumerate(seeds):
        problem: Problem = task.sample(torch.Generator().manual_seed(int(seed)), device)
        params = {k: nn.Parameter(v.detach().clone()) for k, v in problem.params().items()}
        opt = factory(list(params.values()))
        scale = 1.0 / float(getattr(problem, "num_instances", 1) or 1)
        losses: list[Tensor] = []
        for t in range(steps + 1):
            if has_test and t in t_index:
                with torch.no_grad():
                    value = problem.eval_loss(params)
                if value is None:
                    if i == 0 and t == tsteps[0]:
                        has_test, test = False, None
                else:
                    assert test is not None
                    test[i, t_index[t]] = float(value) * scale
            if t == steps:
                with torch.no_grad():
                    losses.append(problem.loss(params, t).detach())
                break
            opt.zero_grad(set_to_none=True)
            loss = problem.loss(params, t)
            loss.backward()
            losses.append(loss.detach())
            if (t + 1) % 32 == 0 and not bool(torch.isfinite(torch.stack(losses[-32:])).all()):
                break  # diverged: the remaining entries stay inf
            opt.step()
        curve = torch.stack(losses).to("cpu", torch.float64).numpy() * scale
        bad = np.flatnonzero(~np.isfinite(curve))
        first_bad = int(bad[0]) if bad.size else None  # a stopped run always has one
        train[i, : curve.size if first_bad is None else first_bad] = curve[:first_bad]
        if test is not None:
            row = np.where(np.isfinite(test[i]), test[i], np.inf)
            if first_bad is not None:
                row[[j for j, s in enumerate(tsteps) if s >= first_bad]] = np.inf
            test[i] = row
        if progress is not None:
            progress.update(1)
    return Trajectories(
        train, test, tsteps if test is not None else [], time.perf_counter() - start
    )


# --------------------------------------------------------------------------- tuning

CRITERIA = ("final", "sum", "test")


def _score(traj: Trajectories, criterion: str, at: int) -> np.ndarray:
    """Per-problem criterion values ``[problems]`` (``inf`` when diverged)."""
    if criterion == "final":
        return traj.train[:, at]
    if criterion == "sum":
        return traj.train[:, :at].sum(axis=1)
    if criterion == "test":
        if traj.test is None or at not in traj.test_steps:
            raise ValueError(
                "tuning criterion 'test' needs a task with a test split (its eval_loss "
                "returned None); use criterion 'final' or 'sum'"
            )
        return traj.test[:, traj.test_steps.index(at)]
    raise ValueError(f"unknown tuning criterion {criterion!r}; expected one of {CRITERIA}")


@dataclass
class TuneResult:
    """Outcome of a learning-rate grid search.

    Attributes:
        lr: the chosen learning rate (lowest mean criterion; diverged runs rank last).
        grid: the learning rates tried (ascending).
        scores: mean criterion per grid point (``inf`` = at least one run diverged).
        criterion: ``"final"``, ``"sum"`` or ``"test"``.
        steps: the horizon the runs used.
        seeds: the tuning problems' seeds (disjoint from the evaluation seeds).
    """

    lr: float
    grid: list[float]
    scores: list[float]
    criterion: str
    steps: int
    seeds: list[int]

    @property
    def at_edge(self) -> bool:
        """The chosen lr is the smallest or largest of the grid: widen the grid to be sure."""
        return self.lr in (self.grid[0], self.grid[-1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "grid": self.grid,
            "scores": [s if math.isfinite(s) else None for s in self.scores],
            "criterion": self.criterion,
            "steps": self.steps,
            "seeds": self.seeds,
            "at_edge": self.at_edge,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TuneResult:
        scores = [math.inf if s is None else float(s) for s in d["scores"]]
        return cls(
            float(d["lr"]),
            [float(g) for g in d["grid"]],
            scores,
            d["criterion"],
            int(d["steps"]),
            list(d["seeds"]),
        )


def tune_lr(
    task: Task,
    build: Callable[[float], OptimizerFactory] | OptimizerSpec | str,
    steps: int,
    seeds: Sequence[int],
    *,
    grid: Sequence[float] = DEFAULT_GRID,
    criterion: str = "final",
    device: torch.device | str | None = None,
    progress: Any = None,
) -> TuneResult:
    """Pick the learning rate from ``grid`` minimizing the mean ``criterion`` over ``seeds``.

    Args:
        build: ``lr -> factory``, or an optimizer spec whose lr is tuned.
        criterion: ``"final"`` (mean loss after ``steps``), ``"sum"`` (mean sum of the losses at
            steps ``0..steps-1``) or ``"test"`` (mean held-out loss after ``steps``).
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown tuning criterion {criterion!r}; expected one of {CRITERIA}")
    grid = sorted(float(g) for g in grid)
    if not grid or any(not (math.isfinite(g) and g > 0) for g in grid):
        raise ValueError(f"the learning-rate grid must be positive finite numbers, got {grid}")
    if not seeds:
        raise ValueError("tuning needs at least one problem (tune_problems >= 1)")
    if isinstance(build, (str, OptimizerSpec)):
        spec = parse_spec(build)
        build = spec.build
    scores = []
    for lr in grid:
        traj = run_trajectories(
            task,
            build(lr),
            seeds,
            steps,
            test_steps=[steps] if criterion == "test" else (),
            device=device,
            progress=progress,
        )
        per_problem = _score(traj, criterion, steps)
        score = float(per_problem.mean()) if np.isfinite(per_problem).all() else math.inf
        scores.append(score)
    best = int(np.argmin(scores))  # first minimum: ties go to the smaller lr
    return TuneResult(grid[best], grid, scores, criterion, steps, [int(s) for s in seeds])


# --------------------------------------------------------------------------- results


@dataclass
class OptimizerResult:
    """One optimizer's runs in a :class:`Comparison`.

    Attributes:
        label: display name.
        spec: the spec text (``"adam"``, ``"lstm=runs/a.safetensors"``...).
        lr: the learning rate used: tuned, given, ``1.0`` for a learned rule run as meta-trained,
            ``None`` for a custom factory.
        tuning: the grid search, when the lr was tuned.
        trajectories: the loss curves.
    """

    label: str
    spec: str
    lr: float | None
    tuning: TuneResult | None
    trajectories: Trajectories

    @property
    def train(self) -> np.ndarray:
        return self.trajectories.train

    @property
    def test(self) -> np.ndarray | None:
        return self.trajectories.test

    def final(self, at: int | None = None) -> np.ndarray:
        """Per-problem train loss after ``at`` steps (default: all), ``[problems]``."""
        return self.train[:, self._at(at)]

    def sum_losses(self, at: int | None = None) -> np.ndarray:
        """Per-problem sum of the train losses at steps ``0..at-1``, ``[problems]``."""
        with np.errstate(over="ignore", invalid="ignore"):
            return self.train[:, : self._at(at)].sum(axis=1)

    def final_test(self, at: int | None = None) -> np.ndarray | None:
        """Per-problem test loss after ``at`` steps, or ``None`` (no test split / not measured)."""
        at = self._at(at)
        if self.test is None or at not in self.trajectories.test_steps:
            return None
        return self.test[:, self.trajectories.test_steps.index(at)]

    def _at(self, at: int | None) -> int:
        steps = self.train.shape[1] - 1
        if at is None:
            return steps
        if not (isinstance(at, int) and 1 <= at <= steps):
            raise ValueError(f"at must be an int in 1..{steps}, got {at!r}")
        return at


def _clean(values: np.ndarray) -> list[Any]:
    """JSON-safe nested lists (non-finite -> None)."""
    arr = np.asarray(values, dtype=np.float64)
    out = np.where(np.isfinite(arr), arr, np.nan).tolist()

    def fix(x: Any) -> Any:
        if isinstance(x, list):
            return [fix(v) for v in x]
        return None if x != x else x

    return fix(out)


def _unclean(values: Any) -> np.ndarray:
    def fix(x: Any) -> Any:
        if isinstance(x, list):
            return [fix(v) for v in x]
        return math.inf if x is None else float(x)

    return np.asarray(fix(values), dtype=np.float64)


@dataclass
class Comparison:
    """The outcome of :func:`compare`: per-optimizer curves over the same problems.

    Attributes:
        task: the task's name; ``task_args`` its arguments (or its ``config()``).
        steps: optimization steps per run; ``tune_steps`` the horizon used for tuning.
        seeds: evaluation problem seeds; ``tune_seeds`` the tuning ones (disjoint).
        criterion: the tuning criterion.
        confidence: coverage of the reported intervals (0.95).
        results: ``label -> OptimizerResult`` in the order given.
    """

    task: str
    task_args: dict[str, Any]
    steps: int
    tune_steps: int
    seeds: list[int]
    tune_seeds: list[int]
    criterion: str
    confidence: float
    results: dict[str, OptimizerResult]

    def __getitem__(self, label: str) -> OptimizerResult:
        return self.results[label]

    @property
    def test_steps(self) -> list[int]:
        for r in self.results.values():
            if r.test is not None:
                return r.trajectories.test_steps
        return []

    def summary(self, at: int | None = None) -> dict[str, dict[str, Interval | None]]:
        """``label -> {"final", "sum", "test"}`` intervals (test ``None`` without a test split)."""
        out: dict[str, dict[str, Interval | None]] = {}
        for label, r in self.results.items():
            test = r.final_test(at)
            out[label] = {
                "final": mean_ci(r.final(at), self.confidence),
                "sum": mean_ci(r.sum_losses(at), self.confidence),
                "test": None if test is None else mean_ci(test, self.confidence),
            }
        return out

    def paired(self, a: str, b: str, metric: str = "final", at: int | None = None) -> Interval:
        """Mean over problems of ``metric(a) - metric(b)`` with its CI (negative: ``a`` lower).

        ``metric`` is ``"final"``, ``"sum"`` or ``"test"``. Problems are the same for both, so this
        paired interval is tighter than comparing the two separate intervals.
        """
        ra, rb = self.results[a], self.results[b]
        if metric == "final":
            xa, xb = ra.final(at), rb.final(at)
        elif metric == "sum":
            xa, xb = ra.sum_losses(at), rb.sum_losses(at)
        elif metric == "test":
            xa, xb = ra.final_test(at), rb.final_test(at)
            if xa is None or xb is None:
                raise ValueError(f"no test loss measured at step {at or self.steps}")
        else:
            raise ValueError(f"metric must be 'final', 'sum' or 'test', got {metric!r}")
        return paired_difference(xa, xb, self.confidence)

    def table(self, at: int | None = None, digits: int = 3) -> str:
        """A markdown table: mean final loss, mean sum of losses and mean test loss (± CI), lr.

        ``at`` reports the losses after ``at`` steps instead of ``steps`` (e.g. the training
        horizon inside a longer run).
        """
        at_ = self.steps if at is None else at
        summary = self.summary(at)
        has_test = any(s["test"] is not None for s in summary.values())
        pct = f"{round(self.confidence * 100)}%"
        head = ["optimizer", "lr", f"final loss (step {at_})", f"sum of losses (steps 0–{at_ - 1})"]
        if has_test:
            head.append(f"test loss (step {at_})")
        rows = []
        for label, r in self.results.items():
            s = summary[label]
            lr = "—" if r.lr is None else f"{r.lr:.3g}"
            if r.tuning is not None:
                lr += " (tuned" + (", grid edge!" if r.tuning.at_edge else "") + ")"
            row = [
                label,
                lr,
                format_interval(s["final"], digits),
                format_interval(s["sum"], digits),
            ]
            if has_test:
                row.append("—" if s["test"] is None else format_interval(s["test"], digits))
            rows.append(row)
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        n = len(self.seeds)
        caption = (
            f"Task `{self.task}`{_args_text(self.task_args)}: mean ± {pct} confidence half-width "
            f"(Student t) over {n} problems, the same problems for every optimizer. "
        )
        if any(r.tuning is not None for r in self.results.values()):
            tuned = next(r.tuning for r in self.results.values() if r.tuning is not None)
            assert tuned is not None
            caption += (
                f"Learning rates marked tuned: best mean {_CRITERION_TEXT[self.criterion]} over a "
                f"{len(tuned.grid)}-point log grid ({tuned.grid[0]:.2g}–{tuned.grid[-1]:.2g}) on "
                f"{len(self.tune_seeds)} separate problems of {self.tune_steps} steps."
            )
        return "\n".join(lines) + "\n\n" + caption.strip() + "\n"

    def plot(
        self,
        path: str | os.PathLike[str],
        *,
        band: str = "ci",
        metric: str = "train",
        title: str | None = None,
    ) -> Path:
        """Draw the log-scale mean loss curves with a band (``"ci"`` or ``"iqr"``) to ``path``."""
        from optizoo.plots import plot_comparison

        return plot_comparison(self, path, band=band, metric=metric, title=title)

    def to_json(self, *, include_curves: bool = True) -> dict[str, Any]:
        """A JSON-safe dict: settings, per-optimizer summaries (and raw curves, for re-plotting)."""
        out: dict[str, Any] = {
            "task": self.task,
            "task_args": self.task_args,
            "steps": self.steps,
            "tune_steps": self.tune_steps,
            "seeds": self.seeds,
            "tune_seeds": self.tune_seeds,
            "criterion": self.criterion,
            "confidence": self.confidence,
            "optimizers": {},
        }
        summary = self.summary()
        for label, r in self.results.items():
            entry: dict[str, Any] = {
                "spec": r.spec,
                "lr": r.lr,
                "tuning": None if r.tuning is None else r.tuning.to_dict(),
                "final_loss": summary[label]["final"].to_dict(),  # type: ignore[union-attr]
                "sum_of_losses": summary[label]["sum"].to_dict(),  # type: ignore[union-attr]
                "test_loss": None
                if summary[label]["test"] is None
                else summary[label]["test"].to_dict(),  # type: ignore[union-attr]
                "test_steps": r.trajectories.test_steps,
                "seconds": r.trajectories.seconds,
            }
            if include_curves:
                entry["train"] = _clean(r.train)
                entry["test"] = None if r.test is None else _clean(r.test)
            out["optimizers"][label] = entry
        return out

    def save_json(self, path: str | os.PathLike[str], *, include_curves: bool = True) -> Path:
        """Write :meth:`to_json` to ``path`` atomically."""
        return write_text_atomic(
            path, json.dumps(self.to_json(include_curves=include_curves), indent=1)
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str | os.PathLike[str]) -> Comparison:
        """Rebuild a comparison saved with ``include_curves=True`` (e.g. to re-plot it)."""
        if not isinstance(data, Mapping):
            data = json.loads(Path(data).read_text())
        results = {}
        for label, e in data["optimizers"].items():
            if "train" not in e:
                raise ValueError("this JSON was saved without curves (include_curves=False)")
            traj = Trajectories(
                _unclean(e["train"]),
                None if e["test"] is None else _unclean(e["test"]),
                list(e["test_steps"]),
                float(e["seconds"]),
            )
            tuning = None if e["tuning"] is None else TuneResult.from_dict(e["tuning"])
            results[label] = OptimizerResult(label, e["spec"], e["lr"], tuning, traj)
        return cls(
            data["task"],
            dict(data["task_args"]),
            int(data["steps"]),
            int(data["tune_steps"]),
            list(data["seeds"]),
            list(data["tune_seeds"]),
            data["criterion"],
            float(data["confidence"]),
            results,
        )


_CRITERION_TEXT = {"final": "final loss", "sum": "sum of losses", "test": "final test loss"}


def _args_text(args: Mapping[str, Any]) -> str:
    if not args:
        return ""
    return " (" + ", ".join(f"{k}={v}" for k, v in args.items()) + ")"


@contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` (``None``: unchanged), then restore."""
    if n is None:
        yield
        return
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"threads must be a positive int or None, got {n!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _progress(total: int, desc: str, verbose: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="run", leave=False, disable=None if verbose else True)


def compare(
    task: str | Task,
    optimizers: Sequence[str | OptimizerSpec]
    | Mapping[str, str | OptimizerSpec | OptimizerFactory],
    *,
    steps: int = 100,
    problems: int = 100,
    task_args: Mapping[str, Any] | None = None,
    tune_problems: int = 10,
    tune_steps: int | None = None,
    grid: Sequence[float] = DEFAULT_GRID,
    criterion: str = "final",
    seed: int = 0,
    test_steps: Iterable[int] | None = None,
    confidence: float = 0.95,
    device: torch.device | str | None = None,
    threads: int | None = None,
    verbose: bool = True,
) -> Comparison:
    """Run each optimizer on the same ``problems`` problems of ``task`` for ``steps`` steps.

    Args:
        task: a registry name (``"quadratic"``, ``"mlp"``, a plugin's) or a :class:`Task`.
        optimizers: spec strings (see :func:`parse_spec`), parsed specs, or a mapping
            ``label -> spec or factory`` (a factory is ``params -> torch.optim.Optimizer``).
        steps: optimization steps per problem.
        problems: evaluation problems (seeds from the ``"eval"`` stream of ``seed``).
        task_args: keyword arguments for a task given by name.
        tune_problems: problems (``"tune"`` stream, disjoint from evaluation) per grid point.
        tune_steps: horizon of the tuning runs (default ``steps``; e.g. tune at the training
            horizon 100 and evaluate over 200 steps).
        grid: learning rates tried for baselines without an explicit ``lr``.
        criterion: ``"final"``, ``"sum"`` or ``"test"`` (see :func:`tune_lr`).
        seed: run seed; problem seeds derive from it (:func:`problem_seeds`).
        test_steps: steps at which to measure the held-out loss (tasks with ``eval_loss``);
            default: ``tune_steps`` and ``steps``.
        confidence: interval coverage.
        device: where problems (and optimizers) live.
        threads: torch intra-op CPU threads during the runs (restored afterwards); ``None`` leaves
            the setting alone. Small optimizees run fastest on 1 thread, and on a busy machine
            several threads can be tens of times slower.
        verbose: show progress bars (only on a terminal).

    Returns:
        A :class:`Comparison` (``.table()``, ``.plot(path)``, ``.to_json()``).
    """
    specs = _as_specs(optimizers)
    for s in specs:
        s.validate()
    task_obj = resolve_task(task, task_args)
    if not (isinstance(problems, int) and problems >= 1):
        raise ValueError(f"problems must be a positive int, got {problems!r}")
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    tune_steps = steps if tune_steps is None else tune_steps
    if not (isinstance(tune_steps, int) and tune_steps >= 1):
        raise ValueError(f"tune_steps must be a positive int, got {tune_steps!r}")
    if criterion not in CRITERIA:
        raise ValueError(f"unknown tuning criterion {criterion!r}; expected one of {CRITERIA}")
    seeds = problem_seeds(seed, problems, "eval")
    needs_tuning = any(s.needs_tuning for s in specs)
    if needs_tuning and not (isinstance(tune_problems, int) and tune_problems >= 1):
        raise ValueError(f"tune_problems must be a positive int, got {tune_problems!r}")
    tune_seeds = problem_seeds(seed, tune_problems, "tune", exclude=seeds) if needs_tuning else []
    default_tsteps = {s for s in (tune_steps, steps) if s <= steps}
    tsteps = sorted(default_tsteps if test_steps is None else set(test_steps))
    _check_steps(tsteps, steps)

    with num_threads(threads):
        results = _run_all(
            specs,
            task_obj,
            task,
            steps,
            problems,
            seeds,
            tune_seeds,
            tune_steps,
            tsteps,
            grid,
            criterion,
            device,
            verbose,
        )
    return Comparison(
        task=_task_name(task_obj, task),
        task_args=_task_config(task_obj) or dict(task_args or {}),
        steps=steps,
        tune_steps=tune_steps,
        seeds=seeds,
        tune_seeds=tune_seeds,
        criterion=criterion,
        confidence=confidence,
        results=results,
    )


def _run_all(
    specs: list[OptimizerSpec],
    task_obj: Task,
    task: str | Task,
    steps: int,
    problems: int,
    seeds: list[int],
    tune_seeds: list[int],
    tune_steps: int,
    tsteps: list[int],
    grid: Sequence[float],
    criterion: str,
    device: torch.device | str | None,
    verbose: bool,
) -> dict[str, OptimizerResult]:
    results: dict[str, OptimizerResult] = {}
    n_tuned = sum(s.needs_tuning for s in specs)
    total = len(specs) * problems + n_tuned * len(grid) * len(tune_seeds)
    with _progress(total, f"compare on {_task_name(task_obj, task)}", verbose) as bar:
        for spec in specs:
            tuning = None
            lr: float | None = spec.options.get("lr")
            if spec.needs_tuning:
                bar.set_postfix_str(f"tuning {spec.label}")
                tuning = tune_lr(
                    task_obj,
                    spec.build,
                    tune_steps,
                    tune_seeds,
                    grid=grid,
                    criterion=criterion,
                    device=device,
                    progress=bar,
                )
                lr = tuning.lr
            bar.set_postfix_str(spec.label)
            traj = run_trajectories(
                task_obj,
                spec.build(lr if spec.needs_tuning else None),
                seeds,
                steps,
                test_steps=tsteps,
                device=device,
                progress=bar,
            )
            if lr is None and spec.kind == "learned":
                lr = 1.0  # the rule as meta-trained
            results[spec.label] = OptimizerResult(
                spec.label, spec.text, None if lr is None else float(lr), tuning, traj
            )
    return results
