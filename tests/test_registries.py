"""``get`` means the same in every registry: the registered class (or factory); ``build`` makes
an instance (``optizoo.rules.build`` takes the config dict a weight file stores)."""

from __future__ import annotations

import pytest

from optizoo import plugins, preprocess, rules, tasks
from optizoo.errors import UnknownNameError
from optizoo.preprocess import LogSign
from optizoo.tasks import QuadraticTask

REGISTRIES = [(tasks, "tasks"), (preprocess, "preprocessors"), (rules, "rules")]


@pytest.mark.parametrize(("module", "kind"), REGISTRIES, ids=[k for _, k in REGISTRIES])
def test_get_returns_what_is_registered_in_every_registry(module, kind) -> None:
    names = module.available()
    assert names
    for name in names:
        got = module.get(name)
        assert got is plugins.get(kind, name), name
        assert isinstance(got, type) or callable(got), name
    with pytest.raises(UnknownNameError):
        module.get("no-such-name")


def test_get_is_the_class_build_is_an_instance() -> None:
    assert tasks.get("quadratic") is QuadraticTask
    task = tasks.build("quadratic", dim=3, batch=2)
    assert isinstance(task, QuadraticTask) and (task.dim, task.batch) == (3, 2)
    assert preprocess.get("log_sign") is LogSign
    pre = preprocess.build("log_sign", p=5.0)
    assert isinstance(pre, LogSign) and pre.config()["p"] == 5.0
    assert isinstance(rules.build("sgd", {"lr": 0.1}), rules.get("sgd"))
    with pytest.raises(UnknownNameError):
        tasks.build("no-such-task")


def test_get_with_task_arguments_points_to_build() -> None:
    with pytest.raises(TypeError, match=r"optizoo.tasks.build\('quadratic', dim=\.\.\.\)"):
        tasks.get("quadratic", dim=3)
