"""The CLI package: a module per command group, and ``evaluate`` passing one set of options."""

from __future__ import annotations

import argparse

import pytest

import optizoo.compare.evaluate
import optizoo.compare.suite
from optizoo.cli import COMMAND_MODULES, build_parser, main

#: top-level command -> the module of optizoo/cli/ that implements it
GROUPS = {
    "plugins": "optizoo.cli.plugins",
    "compare": "optizoo.cli.compare",
    "evaluate": "optizoo.cli.compare",
    "train": "optizoo.cli.train",
    "list": "optizoo.cli.zoo",
    "info": "optizoo.cli.zoo",
    "publish": "optizoo.cli.publish",
}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_each_command_lives_in_the_module_of_its_group() -> None:
    commands = _subparsers(build_parser())
    assert set(commands) == set(GROUPS)
    for name, sub in commands.items():
        assert sub.get_default("func").__module__ == GROUPS[name], name
    assert set(COMMAND_MODULES) == set(GROUPS.values())


@pytest.mark.parametrize("suite", ["default", "architectures"])
def test_evaluate_passes_the_same_common_options_to_both_suites(monkeypatch, suite) -> None:
    seen: dict[str, dict] = {}

    class Report:
        def table(self) -> str:
            return "table\n"

    def fake(name):
        def run(*args, **kwargs):
            seen[name] = kwargs
            return Report()

        return run

    monkeypatch.setattr(optizoo.compare.evaluate, "evaluate", fake("default"))
    monkeypatch.setattr(optizoo.compare.suite, "evaluate_architectures", fake("architectures"))
    argv = [
        "evaluate",
        "--optimizer",
        "adam",
        "--suite",
        suite,
        "--seeds",
        "3",
        "--tune-seeds",
        "2",
    ]
    argv += ["--seed", "7", "--quick", "--quiet", "--tasks", "a", "b"]
    assert main(argv) == 0
    kwargs = seen[suite]
    expected = {
        "tasks": ["a", "b"],
        "seeds": 3,
        "tune_seeds": 2,
        "quick": True,
        "seed": 7,
        "device": None,
        "verbose": False,
    }
    assert {k: kwargs[k] for k in expected} == expected
    assert "baselines" in kwargs
