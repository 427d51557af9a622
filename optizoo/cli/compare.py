"""The ``optizoo compare`` and ``optizoo evaluate`` sub-commands.

::

    optizoo compare --task quadratic --optimizers lstm=runs/q.safetensors adam rmsprop sgd \\
        --steps 100 --problems 100 --plot quadratic.png --json quadratic.json
    optizoo evaluate --optimizer lstm --horizon 100 --plot card.png --json card.json

Both print a markdown table to stdout (progress bars go to stderr on a terminal). Bad input
(an unknown optimizer spec or task, malformed ``--task-args``) prints one ``error:`` line saying
what is accepted, and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from optizoo.errors import OptizooError

__all__ = ["register", "run_compare", "run_evaluate"]

_SPEC_HELP = (
    "optimizer specs: adam, rmsprop, sgd, momentum, nesterov, adamw, adagrad (torch.optim; lr "
    "tuned unless given as e.g. adam:lr=0.01), lstm (shipped default weights), a pretrained "
    "name, or NAME=PATH.safetensors"
)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _grid(text: str) -> list[float]:
    """``LOW:HIGH:NUM`` (log-spaced) or a comma list of learning rates."""
    from optizoo.compare import log_grid

    try:
        if ":" in text:
            low, high, num = text.split(":")
            return log_grid(float(low), float(high), int(num))
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"bad --grid {text!r}: give LOW:HIGH:NUM (e.g. 1e-4:3:13) or a comma list ({exc})"
        ) from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"bad --grid {text!r}: learning rates must be positive")
    return values


def _task_args(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"--task-args must be a JSON object such as '{{\"batch\": 1}}': {exc}"
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"--task-args must be a JSON object such as '{{\"batch\": 1}}', got {text!r}"
        )
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    parser.add_argument(
        "--grid",
        type=_grid,
        default=None,
        help="learning-rate grid for tuning: LOW:HIGH:NUM log-spaced or a comma list "
        "(default 13 points from 1e-4 to 10^0.5)",
    )
    parser.add_argument(
        "--plot",
        metavar="PATH",
        help="write the figure here (.png, .pdf, .svg); for the architecture suite a folder "
        "(one figure per task)",
    )
    parser.add_argument("--json", metavar="PATH", help="write the full results as JSON here")
    parser.add_argument(
        "--band", choices=("ci", "iqr"), default="ci", help="figure band: 95%% CI or IQR"
    )
    parser.add_argument("--device", default=None, help="torch device, e.g. cuda (default cpu)")
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="torch CPU threads (default 1: small optimizees run fastest on one thread)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def register(subparsers: Any) -> None:
    """Add ``optizoo compare`` and ``optizoo evaluate`` to the CLI's sub-parsers."""
    p = subparsers.add_parser(
        "compare",
        help="run optimizers side by side on a task (tuned baselines, 95%% CIs)",
        description=(
            "Run optimizers on the same problems of a task, tune the learning rate of baselines "
            "without one by a log-grid search on separate problems, and print mean final loss, "
            "mean sum of losses and test loss with 95% confidence intervals. " + _SPEC_HELP + "."
        ),
    )
    p.add_argument("--task", required=True, help="task name (optizoo.tasks.available())")
    p.add_argument(
        "--task-args", type=_task_args, default=None, help="task keyword arguments as JSON"
    )
    p.add_argument("--optimizers", nargs="+", required=True, metavar="SPEC", help=_SPEC_HELP)
    p.add_argument("--steps", type=_positive_int, default=100, help="steps per problem (100)")
    p.add_argument("--problems", type=_positive_int, default=100, help="evaluation problems (100)")
    p.add_argument(
        "--tune-problems", type=_positive_int, default=10, help="problems per grid point (10)"
    )
    p.add_argument(
        "--tune-steps",
        type=_positive_int,
        default=None,
        help="horizon of the tuning runs (default --steps)",
    )
    p.add_argument(
        "--criterion",
        choices=("final", "sum", "test"),
        default="final",
        help="tuning criterion: mean final loss, mean sum of losses, or mean final test loss",
    )
    p.add_argument(
        "--at",
        type=_positive_int,
        nargs="*",
        default=[],
        help="also tabulate the losses after these step counts (e.g. the training horizon)",
    )
    _common(p)
    p.set_defaults(func=run_compare)

    e = subparsers.add_parser(
        "evaluate",
        help="evaluate an optimizer on a held-out suite against tuned baselines",
        description=(
            "Run an evaluation suite. 'default': MLP 20 sigmoid, 40 ReLU, 2x20 ReLU, minibatch "
            "32 and a conv net on the bundled digits, against torch.optim.Adam with a learning "
            "rate tuned on separate seeds, at 1x, 2x, 10x the horizon. 'architectures': conv "
            "nets with and without batch norm, deep and wide MLPs, an autoencoder, a transformer "
            "language model, a GRU and two tabular networks, against Adam (lr tuned), AdamW (lr "
            "and weight decay tuned) and AdamW at torch's defaults, tuned per task and budget, at "
            "1x, 3x, 10x a base budget (--horizon, 30). Reports mean test loss with 95% CIs and "
            "paired differences."
        ),
    )
    e.add_argument(
        "--suite",
        choices=("default", "architectures"),
        default="default",
        help="which suite (default: the paper's generalization experiments)",
    )
    e.add_argument(
        "--baselines",
        metavar="FOLDER",
        default=None,
        help="architecture suite: folder of baseline runs (TASK.json per task), reused where "
        "the settings match, else computed and written there",
    )
    e.add_argument("--optimizer", required=True, metavar="SPEC", help=_SPEC_HELP)
    e.add_argument(
        "--horizon",
        type=_positive_int,
        default=None,
        help="meta-training horizon, or the architecture suite's base budget (default: the "
        "weight file's training record, else 100)",
    )
    e.add_argument(
        "--multiples",
        type=_positive_int,
        nargs="+",
        default=None,
        help="report at these multiples of the horizon (1 2 10; architectures: 1 3 10)",
    )
    e.add_argument("--seeds", type=_positive_int, default=None, help="seeds per task (10)")
    e.add_argument(
        "--tune-seeds", type=_positive_int, default=None, help="seeds per grid point (5)"
    )
    e.add_argument(
        "--tasks", nargs="+", default=None, metavar="NAME", help="only these suite tasks"
    )
    e.add_argument(
        "--quick",
        action="store_true",
        help="a smoke test, not numbers for a card (default suite: 3 seeds, 2 tuning seeds, "
        "4-point grid; architectures: base 10 steps, 2 seeds, 1 tuning seed, coarse grids)",
    )
    _common(e)
    e.set_defaults(func=run_evaluate)


def _check_outputs(args: argparse.Namespace) -> None:
    """Device and output paths are checked before the run, not after hours of it."""
    from optizoo.cli.args import check_device, check_writable

    check_device(args.device)
    check_writable(args.plot, "--plot")
    check_writable(args.json, "--json")


def _fail(command: str, exc: BaseException, err: TextIO) -> int:
    err.write(f"optizoo {command}: error: {exc}\n")
    return 2


def run_compare(
    args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run ``optizoo compare``; return the exit status."""
    from optizoo.compare import DEFAULT_GRID, compare

    def run() -> Any:
        return compare(
            args.task,
            args.optimizers,
            steps=args.steps,
            problems=args.problems,
            task_args=args.task_args,
            tune_problems=args.tune_problems,
            tune_steps=args.tune_steps,
            grid=args.grid or DEFAULT_GRID,
            criterion=args.criterion,
            seed=args.seed,
            test_steps=None,
            device=args.device,
            threads=args.threads,
            verbose=not args.quiet,
        )

    return _run_and_report("compare", args, run, out, err, tables_at=args.at)


def run_evaluate(
    args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run ``optizoo evaluate``; return the exit status."""
    from optizoo.compare.evaluate import evaluate

    def run() -> Any:
        common: dict[str, Any] = {  # the options both suites take the same way
            "tasks": args.tasks,
            "seeds": args.seeds,
            "tune_seeds": args.tune_seeds,
            "quick": args.quick,
            "seed": args.seed,
            "baselines": args.baselines,
            "device": args.device,
            "verbose": not args.quiet,
        }
        if args.suite == "architectures":
            from optizoo.compare.suite import evaluate_architectures

            if args.grid is not None:
                raise ValueError(
                    "the architecture suite tunes over its own grids (optizoo.compare.suite."
                    "ADAM_GRID and ADAMW_GRID); leave --grid unset"
                )
            report = evaluate_architectures(
                args.optimizer,
                base=args.horizon,
                multiples=(1, 3, 10) if args.multiples is None else args.multiples,
                threads=1 if args.threads is None else args.threads,
                **common,
            )
        else:
            report = evaluate(
                args.optimizer,
                args.horizon,
                args.suite,
                multiples=args.multiples,
                grid=args.grid,
                threads=args.threads,
                **common,
            )
        return report

    return _run_and_report("evaluate", args, run, out, err)


def _run_and_report(
    command: str,
    args: argparse.Namespace,
    run: Callable[[], Any],
    out: TextIO | None,
    err: TextIO | None,
    *,
    tables_at: Sequence[int] = (),
) -> int:
    """Check the outputs, ``run()`` the comparison or evaluation, then print its table (and the
    tables at ``tables_at``), write the figure(s) and the JSON; a bad input is one line on
    ``err`` and exit status 2."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    try:
        _check_outputs(args)
        result = run()
        out.write(result.table())
        for at in tables_at:
            out.write("\n" + result.table(at=at))
        if args.plot:
            shown = result.plot(args.plot, band=args.band)
            paths = shown if isinstance(shown, list) else [shown]
            out.write("\n" + "".join(f"figure: {p}\n" for p in paths))
        if args.json:
            path = result.save_json(args.json)
            out.write(f"results: {path}\n")
    except (OptizooError, ValueError, TypeError, KeyError) as exc:
        return _fail(command, exc, err)
    return 0
