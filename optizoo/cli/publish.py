"""The ``optizoo publish`` sub-command: a meta-training run -> weight file, model card, figures.

::

    optizoo publish runs/my-run --name my-lstm --out dist/   # weights + model card + figures

It is :func:`optizoo.publish.publish.publish` from the command line (``docs/zoo.md``). Bad input
prints one ``error:`` line and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from optizoo.cli.args import check_device
from optizoo.errors import OptizooError

__all__ = ["register", "run_publish"]


def register(subparsers: Any) -> None:
    """Add ``publish`` to the CLI's sub-parsers."""
    from optizoo.cli.compare import _grid, _positive_int, _task_args

    pub = subparsers.add_parser(
        "publish",
        help="turn a meta-training run into a weight file, model card and figures",
        description="Compare the run's best rule with tuned baselines on held-out problems of "
        "its task, then write OUT/NAME.safetensors (weights + training record + metrics), "
        "OUT/NAME.md (model card), OUT/NAME.png (loss curves) and OUT/NAME-meta-training.png.",
    )
    pub.add_argument("run_dir", metavar="RUN_DIR", help="output folder of `optizoo train`")
    pub.add_argument("--name", required=True, help="optimizer name (file stem, load name)")
    pub.add_argument("--out", required=True, help="destination folder")
    pub.add_argument("--description", help="one line (default: generated, with the verdict)")
    pub.add_argument("--license", default="MIT", help="licence of the weights (default MIT)")
    pub.add_argument(
        "--weights", choices=("best", "final"), default="best",
        help="best (held-out selection, default) or final training weights",
    )  # fmt: skip
    pub.add_argument(
        "--baselines", nargs="*", default=None, metavar="SPEC",
        help="baselines to compare with (default: adam rmsprop sgd, lr tuned); none: no comparison",
    )  # fmt: skip
    pub.add_argument(
        "--overwrite", action="store_true",
        help="replace a publication of the same name in --out (default: refuse)",
    )  # fmt: skip
    pub.add_argument(
        "--steps", type=_positive_int, default=None,
        help="steps per comparison run (default: twice the training horizon)",
    )  # fmt: skip
    pub.add_argument(
        "--problems", type=_positive_int, default=100, help="held-out problems (default 100)"
    )
    pub.add_argument(
        "--tune-problems", type=_positive_int, default=20,
        help="separate problems per grid point for tuning (default 20)",
    )  # fmt: skip
    pub.add_argument(
        "--criterion", nargs="+", choices=("final", "sum", "test"), default=["final"],
        help="tuning criteria, one comparison each (default: final)",
    )  # fmt: skip
    pub.add_argument(
        "--grid", type=_grid, default=None,
        help="learning-rate grid: LOW:HIGH:NUM log-spaced or a comma list (default 1e-4:3.16:13)",
    )  # fmt: skip
    pub.add_argument("--seed", type=int, default=0, help="comparison seed (default 0)")
    pub.add_argument("--task", default=None, help="task to compare on (default: the run's)")
    pub.add_argument("--task-args", type=_task_args, default=None, help="task arguments (JSON)")
    pub.add_argument(
        "--evaluate", action="store_true",
        help="also run the held-out task suite against a tuned Adam (slow)",
    )  # fmt: skip
    pub.add_argument(
        "--quick", action="store_true", help="with --evaluate: small smoke-test settings"
    )
    pub.add_argument(
        "--threads", type=_positive_int, default=1, help="torch CPU threads (default 1)"
    )
    pub.add_argument("--device", default=None, help="torch device for the comparison")
    pub.add_argument("--quiet", action="store_true", help="no progress bars")
    pub.set_defaults(func=run_publish)


def run_publish(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run :func:`optizoo.publish.publish.publish` from parsed arguments."""
    from optizoo.publish.publish import DEFAULT_BASELINES, publish

    out = out if out is not None else sys.stdout
    if args.baselines is None:
        baselines: tuple[str, ...] = DEFAULT_BASELINES
    elif [b.lower() for b in args.baselines] in ([], ["none"]):
        baselines = ()  # `--baselines none` (or an empty list): publish without a comparison
    else:
        baselines = tuple(args.baselines)
    try:
        check_device(args.device)
        result = publish(
            args.run_dir,
            args.name,
            args.out,
            weights=args.weights,
            description=args.description,
            license=args.license,
            baselines=baselines,
            compare_steps=args.steps,
            compare_problems=args.problems,
            tune_problems=args.tune_problems,
            criteria=tuple(args.criterion),
            grid=args.grid,
            seed=args.seed,
            task=args.task,
            task_args=args.task_args,
            evaluate=args.evaluate,
            evaluate_options={"quick": True} if args.quick else None,
            threads=args.threads,
            device=args.device,
            verbose=not args.quiet,
            overwrite=args.overwrite,
        )
    except (
        OptizooError,
        ValueError,
        TypeError,
        KeyError,
        FileNotFoundError,
        FileExistsError,
    ) as exc:
        text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"optizoo publish: error: {' '.join(text.split())}", file=sys.stderr)
        return 2
    out.write(f"wrote {result.weights}\n      {result.card}\n")
    for path in ([result.figure] if result.figure else []) + list(result.figures.values()):
        out.write(f"      {path}\n")
    out.write(f"{result.metadata.get('description', '')}\n")
    out.write(
        f"load it with optizoo.LSTMOptimizer(params, weights={str(result.weights)!r})\n"
        if result.metadata.get("optizoo.rule") == "lstm"
        else f"load it with optizoo.load_pretrained({str(result.weights)!r}, params)\n"
    )
    return 0
