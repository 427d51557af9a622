"""The ``optizoo`` command: one module of this package per command group.

Each module exposes ``register(subparsers)``, which adds its sub-parsers and sets ``func`` (a
callable taking the parsed ``argparse.Namespace`` and returning an exit code).
:data:`COMMAND_MODULES` lists them. No library module imports this package.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

#: Modules that contribute sub-commands, each with ``register(subparsers)``.
COMMAND_MODULES: tuple[str, ...] = (
    "optizoo.cli.plugins",
    "optizoo.cli.compare",
    "optizoo.cli.train",
    "optizoo.cli.zoo",
    "optizoo.cli.publish",
)


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (no usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="optizoo", description="Learned optimizers for PyTorch.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from optizoo._version import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
