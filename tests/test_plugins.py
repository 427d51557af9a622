"""Tests of the plugin host (optizoo.plugins), ``optizoo plugins`` and the task/preprocessor
conformance checks (optizoo.testing).

Plugins come in three forms here: objects registered inline (``plugins.register``), fake
installed distributions written to a temporary directory on ``sys.path`` (real entry points,
loaded through ``importlib.metadata`` exactly like a pip-installed plugin, no pip needed), and
the two real plugin packages under ``plugins/`` when they are installed (the README's test
command installs them).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import torch

import optizoo
from optizoo import cli, plugins
from optizoo.errors import PluginError, UnknownNameError
from optizoo.preprocess import LogSign, Preprocessor
from optizoo.rules import LSTMRule
from optizoo.tasks.base import Problem, Task
from optizoo.testing import ConformanceError, check_preprocessor, check_task

#: every test starts and ends with a fresh plugin host and no blocked plugins
pytestmark = pytest.mark.usefixtures("fresh_plugins")


# ---------------------------------------------------------------------------------------------
# small plugin contributions


class TinyProblem(Problem):
    """``sum((w - target)^2)`` with a step-dependent target drawn from (seed, step)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def params(self) -> dict[str, torch.Tensor]:
        return {"w": torch.zeros(3)}

    def loss(self, params: dict[str, torch.Tensor], step: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1000 + step)
        return (params["w"] - torch.randn(3, generator=g)).square().sum()


class TinyTask(Task):
    name = "tiny"

    def sample(self, generator: torch.Generator, device: Any = None) -> TinyProblem:
        return TinyProblem(int(torch.randint(0, 2**31, (1,), generator=generator)))


class DoubleSign(Preprocessor):
    out_features = 2

    def forward(self, grad: torch.Tensor) -> torch.Tensor:
        return torch.stack((torch.sign(grad), 2 * torch.sign(grad)), dim=-1)


class TasksPlugin:
    @optizoo.hookimpl
    def optizoo_tasks(self) -> dict[str, Any]:
        return {"tiny": TinyTask}


def returning(hook: str, value: Any) -> object:
    """A plugin object whose hook ``hook`` returns ``value``."""

    def impl(self: object) -> Any:
        return value

    impl.__name__ = hook
    return type("Returning", (), {hook: optizoo.hookimpl(impl)})()


def raising(hook: str) -> object:
    def impl(self: object) -> Any:
        raise RuntimeError("boom in hook")

    impl.__name__ = hook
    return type("Raising", (), {hook: optizoo.hookimpl(impl)})()


# ---------------------------------------------------------------------------------------------
# built-ins and inline registration


def test_builtins_come_through_the_hooks() -> None:
    builtin = plugins.list_plugins()[0]
    assert (builtin.name, builtin.dist, builtin.version) == (
        "optizoo",
        "optizoo",
        optizoo.__version__,
    )
    assert builtin.status == "loaded"
    assert {"identity", "log_sign"} <= set(builtin.contributes["preprocessors"])
    assert {"lstm", "adam", "sgd"} <= set(builtin.contributes["rules"])
    assert plugins.get("preprocessors", "log_sign") is LogSign
    assert plugins.source_of("rules", "lstm") == "optizoo"


def test_inline_plugin_registers_and_unregisters() -> None:
    with plugins.registered(TasksPlugin(), name="tiny-plugin", dist="tiny-dist", version="9.9"):
        assert "tiny" in optizoo.tasks.available()
        assert isinstance(optizoo.tasks.build("tiny"), TinyTask)
        info = plugins.provider("tasks", "tiny")
        assert (info.name, info.dist, info.version) == ("tiny-plugin", "tiny-dist", "9.9")
        assert info.contributes == {"tasks": ["tiny"]}
    assert "tiny" not in optizoo.tasks.available()
    with pytest.raises(UnknownNameError, match="no task named 'tiny'"):
        optizoo.tasks.build("tiny")


def test_registry_returns_a_copy() -> None:
    reg = plugins.registry("preprocessors")
    reg["evil"] = LogSign
    assert "evil" not in plugins.registry("preprocessors")


def test_unknown_kind_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown registry kind 'optimizers'"):
        plugins.registry("optimizers")


def test_plugin_preprocessor_is_usable_by_the_lstm_rule() -> None:
    with plugins.registered(returning("optizoo_preprocessors", {"double_sign": DoubleSign})):
        rule = LSTMRule(hidden_size=4, num_layers=1, preprocessor="double_sign")
    # first layer input = out_features (2) + hidden (4)
    assert rule.weights[0].shape == (16, 6)
    update, _ = rule(torch.tensor([1.0, -2.0]), rule.init_state(torch.zeros(2)), step=1)
    assert update.shape == (2,)


# ---------------------------------------------------------------------------------------------
# errors: conflicts, malformed entries, raising hooks


def test_two_plugins_claiming_one_name_is_an_error_naming_both() -> None:
    first = returning("optizoo_preprocessors", {"double_sign": DoubleSign})
    clash = returning("optizoo_preprocessors", {"double_sign": DoubleSign})
    with (
        plugins.registered(first, name="first", dist="optizoo-first", version="0.1"),
        plugins.registered(clash, name="clash", dist="optizoo-clash", version="0.3"),
    ):
        with pytest.raises(PluginError) as err:
            plugins.registry("preprocessors")
        message = str(err.value)
        assert "'double_sign'" in message and "optizoo-first 0.1" in message
        assert "optizoo-clash 0.3" in message and f"{plugins.DISABLE_ENV}=clash" in message
        # other registries are unaffected
        assert "lstm" in plugins.registry("rules")
        assert plugins.problems() == {"preprocessors": [message.split("\n  ")[1]]}


def test_a_plugin_claiming_a_shipped_weights_name_follows_the_built_in_conflict_rule(
    tmp_path: Path,
) -> None:
    """Shipped weight files come through optizoo's own ``optizoo_pretrained`` hook, so a plugin
    offering a file under a shipped name is treated like one claiming any built-in name: it
    loses that entry with a warning naming it, keeps its other entries, and the name is never
    listed as the plugin's (it used to be)."""
    shipped = optizoo.zoo.registry.shipped()
    name = sorted(shipped)[0]
    fake = tmp_path / "impostor.safetensors"
    fake.write_bytes(shipped[name].read_bytes())
    own = tmp_path / "own.safetensors"
    own.write_bytes(shipped[name].read_bytes())
    assert plugins.source_of("pretrained", name) == "optizoo"
    clash = returning("optizoo_pretrained", {name: str(fake), "impostor-own": str(own)})
    with plugins.registered(clash, name="impostor", dist="optizoo-impostor", version="0.1"):
        with pytest.warns(
            optizoo.PluginWarning, match=f"claims the built-in pretrained optimizer name {name!r}"
        ):
            listed = {e["name"]: e for e in optizoo.list_pretrained()}
        assert listed[name]["source"] == "optizoo" and listed[name]["path"] == str(shipped[name])
        assert listed["impostor-own"]["source"] == "optizoo-impostor"
        assert plugins.source_of("pretrained", name) == "optizoo"
        assert optizoo.zoo.registry.resolve(name) == (shipped[name], name)


@pytest.mark.parametrize(
    ("hook", "value", "expected"),
    [
        ("optizoo_tasks", ["tiny"], "must return a dict"),
        ("optizoo_tasks", {"bad name!": TinyTask}, "malformed name 'bad name!'"),
        ("optizoo_tasks", {"": TinyTask}, "malformed name ''"),
        ("optizoo_tasks", {"t": TinyTask()}, "got a task instance"),
        ("optizoo_tasks", {"t": int}, "does not derive from optizoo.tasks.Task"),
        ("optizoo_tasks", {"t": 3}, "expected a Task subclass or a factory"),
        ("optizoo_preprocessors", {"p": LSTMRule}, "subclass of optizoo.preprocess.Preprocessor"),
        (
            "optizoo_preprocessors",
            {"p": type("K0", (DoubleSign,), {"out_features": 0})},
            "K0.out_features",
        ),
        ("optizoo_rules", {"r": LogSign}, "subclass of optizoo.rules.UpdateRule"),
        ("optizoo_pretrained", {"w": 42}, "expected a path"),
        ("optizoo_pretrained", {"w": "/nonexistent/x.safetensors"}, "does not exist"),
        ("optizoo_pretrained", {"w": __file__}, "does not end in .safetensors"),
    ],
)
def test_malformed_entries_are_clear_errors_naming_the_plugin(
    hook: str, value: Any, expected: str
) -> None:
    kind = {v: k for k, v in plugins.KINDS.items()}[hook]
    with plugins.registered(returning(hook, value), name="sloppy", dist="optizoo-sloppy"):
        with pytest.raises(PluginError, match="optizoo-sloppy") as err:
            plugins.registry(kind)
        assert expected in str(err.value)
        assert hook in str(err.value)


def test_a_raising_hook_skips_the_whole_plugin_and_is_reported() -> None:
    class Mixed:
        @optizoo.hookimpl
        def optizoo_tasks(self) -> dict[str, Any]:
            return {"tiny": TinyTask}

        @optizoo.hookimpl
        def optizoo_rules(self) -> dict[str, Any]:
            raise RuntimeError("boom in hook")

    with plugins.registered(Mixed(), name="mixed", dist="optizoo-mixed", version="1.0"):
        with pytest.warns(plugins.PluginWarning, match=r"optizoo-mixed 1\.0.*boom in hook"):
            tasks = plugins.registry("tasks")
        assert "tiny" not in tasks  # its other contributions are dropped too
        info = next(i for i in plugins.list_plugins() if i.name == "mixed")
        assert info.status == "failed"
        assert "optizoo_rules() raised RuntimeError: boom in hook" in info.error
        with pytest.raises(UnknownNameError, match=r"1 plugin\(s\) failed to load: optizoo-mixed"):
            plugins.get("tasks", "tiny")


def test_a_hook_that_uses_a_registry_while_loading_fails_cleanly() -> None:
    class Reentrant:
        @optizoo.hookimpl
        def optizoo_tasks(self) -> dict[str, Any]:
            return {"x": plugins.get("tasks", "quadratic")}

    with (
        plugins.registered(Reentrant(), name="reentrant"),
        pytest.warns(plugins.PluginWarning, match="while plugins were being loaded"),
    ):
        assert "x" not in plugins.registry("tasks")


def test_unknown_hook_and_bad_signature_are_refused_at_registration() -> None:
    class Typo:
        @optizoo.hookimpl
        def optizoo_task(self) -> dict[str, Any]:  # missing "s"
            return {}

    with pytest.raises(PluginError, match=r"unknown hook\(s\) \['optizoo_task'\]"):
        plugins.register(Typo(), name="typo")

    class BadArgs:
        @optizoo.hookimpl
        def optizoo_tasks(self, config: dict) -> dict[str, Any]:
            return {}

    with pytest.raises(PluginError, match="registration failed"):
        plugins.register(BadArgs(), name="badargs")

    class Optional:
        @optizoo.hookimpl(optionalhook=True)
        def optizoo_future_hook(self) -> dict[str, Any]:
            return {}

    with plugins.registered(Optional(), name="optional"):
        assert plugins.registry("tasks")  # accepted


def test_register_refuses_a_taken_name_and_the_builtins_cannot_be_removed() -> None:
    with pytest.raises(PluginError, match="already registered"):
        plugins.register(TasksPlugin(), name="optizoo")
    from optizoo import _builtins

    with pytest.raises(
        PluginError,
        match=rf"already registered as optizoo {re.escape(optizoo.__version__)}.*=optizoo",
    ):
        plugins.register(_builtins, name="again")
    with pytest.raises(ValueError, match="cannot be unregistered"):
        plugins.unregister("optizoo")


# ---------------------------------------------------------------------------------------------
# real entry points from fake installed distributions


def _fake_dist(root: Path, dist: str, version: str, entry_points: dict[str, str]) -> None:
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[optizoo]\n{lines}")


@pytest.fixture
def fake_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on sys.path holding plugin modules and dist-info folders."""
    (tmp_path / "fz_good.py").write_text(
        textwrap.dedent(
            """
            import optizoo

            @optizoo.hookimpl
            def optizoo_tasks():
                from optizoo.tasks.quadratic import QuadraticTask
                return {"fz-quadratic": QuadraticTask}
            """
        )
    )
    (tmp_path / "fz_raises.py").write_text(
        "import optizoo\n\n@optizoo.hookimpl\ndef optizoo_rules():\n    raise KeyError('nope')\n"
    )
    (tmp_path / "fz_clash.py").write_text(
        "import optizoo\n\n@optizoo.hookimpl\ndef optizoo_tasks():\n"
        "    from optizoo.tasks.linreg import LinRegTask\n"
        "    return {'fz-quadratic': LinRegTask}\n"
    )
    _fake_dist(tmp_path, "fz-good", "1.2.3", {"good": "fz_good"})
    _fake_dist(
        tmp_path, "fz-broken", "0.0.1", {"broken": "fz_missing_module", "raises": "fz_raises"}
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for mod in ("fz_good", "fz_raises", "fz_clash"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    return tmp_path


def _by_name() -> dict[str, plugins.PluginInfo]:
    return {i.name: i for i in plugins.list_plugins()}


def test_entry_points_load_lazily_and_failures_are_skipped(fake_site: Path) -> None:
    assert "fz_good" not in sys.modules  # nothing is imported before a registry is used
    with pytest.warns(plugins.PluginWarning) as record:
        task = optizoo.tasks.build("fz-quadratic", dim=3)
    assert task.dim == 3 and "fz_good" in sys.modules
    messages = " | ".join(str(w.message) for w in record)
    assert "fz-broken 0.0.1 (plugin 'broken')" in messages and "ModuleNotFoundError" in messages
    assert "fz-broken 0.0.1 (plugin 'raises')" in messages and "KeyError" in messages
    infos = _by_name()
    good = infos["good"]
    assert (good.dist, good.version, good.module, good.status) == (
        "fz-good",
        "1.2.3",
        "fz_good",
        "loaded",
    )
    assert good.contributes == {"tasks": ["fz-quadratic"]}
    assert infos["broken"].status == "failed" and "fz_missing_module" in infos["broken"].error
    assert infos["raises"].status == "failed"
    assert "optizoo_rules() raised KeyError" in infos["raises"].error
    assert plugins.source_of("tasks", "fz-quadratic") == "fz-good"
    assert "lstm" in plugins.registry("rules")  # optizoo still works


@pytest.mark.parametrize("blocked", ["broken,raises", "FZ_Broken", " fz-broken , x", "all"])
def test_disable_env_blocks_by_plugin_or_distribution_name(
    fake_site: Path, monkeypatch: pytest.MonkeyPatch, blocked: str
) -> None:
    monkeypatch.setenv(plugins.DISABLE_ENV, blocked)
    with warnings.catch_warnings():
        warnings.simplefilter("error", plugins.PluginWarning)  # blocked plugins never warn
        infos = _by_name()
    assert infos["broken"].status == infos["raises"].status == "disabled"
    assert "fz_raises" not in sys.modules
    assert infos["good"].status == ("disabled" if blocked == "all" else "loaded")
    assert infos["optizoo"].status == "loaded"  # built-ins cannot be blocked


def test_two_distributions_claiming_one_task_name(
    fake_site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(plugins.DISABLE_ENV, "fz-broken")
    _fake_dist(fake_site, "fz-clash", "2.0", {"clash": "fz_clash"})
    with pytest.raises(PluginError) as err:
        optizoo.tasks.build("fz-quadratic")
    assert (
        "'fz-quadratic' is claimed by both fz-clash 2.0 (plugin 'clash') and fz-good 1.2.3"
        in str(err.value)
    )
    code = cli.main(["plugins"])
    assert code == 1
    monkeypatch.setenv(plugins.DISABLE_ENV, "fz-broken,fz-clash")
    plugins.reset()
    assert optizoo.tasks.build("fz-quadratic").dim == 10


def test_two_distributions_with_one_entry_point_name(fake_site: Path) -> None:
    _fake_dist(fake_site, "fz-twin", "0.1", {"good": "fz_clash"})
    with pytest.warns(plugins.PluginWarning) as record:
        infos = plugins.list_plugins()
    assert any("plugin name 'good' is already used by fz-good" in str(w.message) for w in record)
    twin = next(i for i in infos if i.dist == "fz-twin")
    assert twin.status == "failed"


def test_import_optizoo_does_not_load_plugins_or_torch(fake_site: Path) -> None:
    code = (
        "import sys, optizoo\n"
        "assert 'torch' not in sys.modules and 'fz_good' not in sys.modules\n"
        "optizoo.plugins.plugin_manager()\n"
        "assert 'fz_good' in sys.modules\n"
        "print('ok')\n"
    )
    env = {"PYTHONPATH": str(fake_site), "PATH": "/usr/bin:/bin", "PYTHONWARNINGS": "ignore"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# ---------------------------------------------------------------------------------------------
# the CLI


def test_cli_lists_plugins_with_distribution_version_and_names(
    fake_site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.warns(plugins.PluginWarning):
        assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert f"optizoo {optizoo.__version__}  [loaded]  optizoo._builtins" in out
    assert "  preprocessors: identity, log_sign" in out
    assert "fz-good 1.2.3 (plugin 'good')  [loaded]  fz_good\n  tasks: fz-quadratic\n" in out
    assert "fz-broken 0.0.1 (plugin 'broken')  [failed]" in out
    assert "error: import failed: ModuleNotFoundError" in out


def test_cli_json(fake_site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.warns(plugins.PluginWarning):
        assert cli.main(["plugins", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    by_name = {p["name"]: p for p in payload["plugins"]}
    assert by_name["good"]["dist"] == "fz-good" and by_name["good"]["version"] == "1.2.3"
    assert by_name["good"]["contributes"] == {"tasks": ["fz-quadratic"]}
    assert by_name["raises"]["status"] == "failed" and payload["problems"] == {}


# ---------------------------------------------------------------------------------------------
# the real plugin packages under plugins/ (installed by the README's test command)


@pytest.mark.parametrize(
    ("dist", "kind", "name"),
    [
        ("optizoo-inn", "tasks", "inn-gaussian"),
        ("optizoo-sign", "preprocessors", "sign_magnitude"),
        ("optizoo-sign", "rules", "signum"),
        ("optizoo-sign", "pretrained", "signum-quadratic"),
    ],
)
def test_installed_plugin_packages_are_found_through_entry_points(
    dist: str, kind: str, name: str
) -> None:
    try:
        version = metadata.version(dist)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{dist} is not installed (pip install -e plugins/{dist})")
    info = plugins.provider(kind, name)
    assert (info.dist, info.version, info.status) == (dist, version, "loaded")
    assert name in info.contributes[kind]


# ---------------------------------------------------------------------------------------------
# conformance checks for plugin authors


def test_check_task_passes_a_conforming_task_and_builtins() -> None:
    report = check_task(TinyTask())
    assert report.ok and "functional" in report.passed
    assert check_task(optizoo.tasks.build("quadratic", dim=4, batch=2)).ok


class GlobalRNGProblem(TinyProblem):
    def loss(self, params: dict[str, torch.Tensor], step: int = 0) -> torch.Tensor:
        return (params["w"] - torch.randn(3)).square().sum()  # global RNG: not reproducible


class SharedParamsProblem(TinyProblem):
    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self._w = torch.zeros(3)

    def params(self) -> dict[str, torch.Tensor]:
        return {"w": self._w}  # the same tensor every call


class DetachedProblem(TinyProblem):
    def loss(self, params: dict[str, torch.Tensor], step: int = 0) -> torch.Tensor:
        return params["w"].detach().sum() + torch.ones((), requires_grad=True)


@pytest.mark.parametrize(
    ("problem_cls", "failing"),
    [
        (GlobalRNGProblem, "loss"),
        (SharedParamsProblem, "params"),
        (DetachedProblem, "gradients"),
    ],
)
def test_check_task_catches_broken_tasks(problem_cls: type, failing: str) -> None:
    class Broken(TinyTask):
        def sample(self, generator: torch.Generator, device: Any = None) -> Problem:
            return problem_cls(int(torch.randint(0, 2**31, (1,), generator=generator)))

    with pytest.raises(ConformanceError, match=f"FAILED {failing}:"):
        check_task(Broken())


def test_check_preprocessor_passes_builtins_and_catches_broken_ones() -> None:
    assert check_preprocessor("log_sign").ok
    assert check_preprocessor(DoubleSign).ok

    class WrongWidth(DoubleSign):
        out_features = 3

    class Mutating(DoubleSign):
        def forward(self, grad: torch.Tensor) -> torch.Tensor:
            grad.mul_(2.0)
            return super().forward(grad)

    with pytest.raises(ConformanceError, match=r"FAILED shape:.*expected \(13, 3\)"):
        check_preprocessor(WrongWidth)
    with pytest.raises(ConformanceError, match=r"FAILED pure:.*modified its input"):
        check_preprocessor(Mutating)
    assert "conformance-doublesign" not in plugins.registry("preprocessors")  # cleaned up
