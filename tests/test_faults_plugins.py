"""A broken plugin is never fatal: ``SystemExit``/``KeyboardInterrupt`` at
import or in a hook, a mapping whose iteration raises, a path whose ``__fspath__`` raises, a
plugin claiming a built-in name; and loading weights by path never consults plugins."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

import optizoo
from optizoo import plugins
from optizoo.rules import LSTMRule
from optizoo.zoo.format import save_rule

pytestmark = pytest.mark.usefixtures("fresh_plugins")  # conftest.py


def hook_plugin(hook: str, body) -> object:
    def impl(self: object) -> Any:
        return body()

    impl.__name__ = hook
    return type("P", (), {hook: optizoo.hookimpl(impl)})()


def _raise(exc: BaseException):
    def body():
        raise exc

    return body


class ExplodingMapping(Mapping):
    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[str]:
        raise SystemExit("iterating me exits")


class BadPath:
    def __fspath__(self) -> str:
        raise KeyboardInterrupt


@pytest.mark.parametrize(
    "hook, body, needle",
    [
        ("optizoo_tasks", _raise(SystemExit(3)), "SystemExit"),
        ("optizoo_rules", _raise(KeyboardInterrupt()), "KeyboardInterrupt"),
        ("optizoo_tasks", ExplodingMapping, "SystemExit"),
        ("optizoo_pretrained", lambda: {"w": BadPath()}, "KeyboardInterrupt"),
    ],
    ids=["hook-exit", "hook-interrupt", "mapping-iteration", "fspath"],
)
def test_a_faulty_hook_is_isolated_and_named(hook, body, needle):
    good = hook_plugin("optizoo_tasks", lambda: {"ok-task": optizoo.tasks.quadratic.QuadraticTask})
    with (
        plugins.registered(good, name="good"),
        plugins.registered(hook_plugin(hook, body), name="faulty", dist="faulty-dist"),
        pytest.warns(plugins.PluginWarning, match=needle),
    ):
        infos = {i.name: i for i in plugins.list_plugins()}
        assert infos["faulty"].status == "failed" and needle in infos["faulty"].error
        for kind in plugins.KINDS:  # every registry still builds
            plugins.registry(kind)
        assert "ok-task" in optizoo.tasks.available()


def _fake_dist(root: Path, dist: str, entry_points: dict[str, str]) -> None:
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[optizoo]\n{lines}")


def test_system_exit_and_keyboard_interrupt_at_import_are_isolated(tmp_path, monkeypatch):
    (tmp_path / "fz_exits.py").write_text("import sys\nsys.exit('plugin exits at import')\n")
    (tmp_path / "fz_interrupts.py").write_text("raise KeyboardInterrupt\n")
    _fake_dist(tmp_path, "fz-exits", {"exits": "fz_exits"})
    _fake_dist(tmp_path, "fz-interrupts", {"interrupts": "fz_interrupts"})
    monkeypatch.syspath_prepend(str(tmp_path))
    for mod in ("fz_exits", "fz_interrupts"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    with pytest.warns(plugins.PluginWarning) as record:
        assert "quadratic" in optizoo.tasks.available()
    text = " | ".join(str(w.message) for w in record)
    assert "fz-exits" in text and "SystemExit" in text
    assert "fz-interrupts" in text and "KeyboardInterrupt" in text


def test_a_plugin_claiming_a_builtin_name_loses_only_that_name():
    from optizoo.preprocess import LogSign, Preprocessor

    class Fake(Preprocessor):
        out_features = 1

        def forward(self, grad: torch.Tensor) -> torch.Tensor:
            return grad.unsqueeze(-1)

    plugin = hook_plugin("optizoo_preprocessors", lambda: {"log_sign": Fake, "fake-one": Fake})
    with (
        plugins.registered(plugin, name="squatter", dist="squatter-dist"),
        pytest.warns(plugins.PluginWarning, match="'log_sign'"),
    ):
        registry = plugins.registry("preprocessors")  # not a PluginError for everyone
        assert registry["log_sign"] is LogSign and registry["fake-one"] is Fake
        assert plugins.source_of("preprocessors", "fake-one") == "squatter-dist"
        assert plugins.source_of("preprocessors", "log_sign") == "optizoo"


def test_loading_weights_by_path_never_consults_the_plugin_registry(tmp_path, monkeypatch):
    torch.manual_seed(0)
    path = save_rule(LSTMRule(hidden_size=4), tmp_path / "w.safetensors")
    broken = hook_plugin("optizoo_pretrained", lambda: ["not", "a", "dict"])
    with plugins.registered(broken, name="broken"):
        with pytest.raises(optizoo.errors.PluginError):
            plugins.registry("pretrained")  # the pretrained registry is broken ...

        def no_registry(*args, **kwargs):
            raise AssertionError("the plugin registry was consulted")

        monkeypatch.setattr(plugins, "registry", no_registry)
        for spec in (path, str(path)):  # ... loading by path does not care
            assert optizoo.load_rule(spec).hidden_size == 4
        opt = optizoo.LSTMOptimizer([torch.nn.Parameter(torch.zeros(2))], weights=str(path))
        assert opt.rule.hidden_size == 4


def test_info_by_path_ignores_a_broken_plugin(tmp_path, capsys):
    import argparse

    from optizoo.cli.zoo import run_info

    torch.manual_seed(0)
    path = save_rule(LSTMRule(hidden_size=4), tmp_path / "w.safetensors")
    with plugins.registered(hook_plugin("optizoo_pretrained", lambda: 5), name="broken"):
        assert run_info(argparse.Namespace(target=str(path), json=True)) == 0
