"""Plugin host: pluggy hook specifications, entry-point loading and the registries they feed.

optizoo finds tasks (optimizees), gradient preprocessors, update rules and pretrained weight
files through four registries, one per hook in :class:`HookSpecs`. optizoo's own built-ins
(:mod:`optizoo._builtins`) are registered through exactly the same hooks as third-party plugins.

Writing a plugin (full guide: ``docs/plugins.md``)::

    # pyproject.toml of the distribution "optizoo-inn"
    [project.entry-points.optizoo]
    inn = "optizoo_inn.plugin"

    # optizoo_inn/plugin.py
    import optizoo

    @optizoo.hookimpl
    def optizoo_tasks():
        return {"inn-gaussian": GaussianINNTask}

Loading rules:

- Entry points in the group ``optizoo`` are loaded lazily, on the first use of any registry
  (``import optizoo`` never imports a plugin).
- A plugin that fails to import, fails pluggy's validation, or whose hook raises is skipped as a
  whole (none of its names are registered) and reported with its distribution, version and error:
  a :class:`PluginWarning` at load time, and in :func:`list_plugins` / ``optizoo plugins``.
- A hook that returns something malformed (not a mapping, a bad name, a value of the wrong type)
  or two plugins claiming one name in one registry is a :class:`~optizoo.errors.PluginError`
  raised by :func:`registry` / :func:`get` for that registry, naming the plugin(s) and
  distribution(s) and how to fix or disable them.
- ``OPTIZOO_DISABLE_PLUGINS`` (comma-separated) blocks plugins by entry-point name or
  distribution name (``-``/``_`` and case do not matter); ``all`` blocks every third-party
  plugin. Built-ins cannot be blocked.

Tests register plugin objects inline, without installing anything::

    with optizoo.plugins.registered(MyPlugin()):
        assert "my-task" in optizoo.tasks.available()
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import threading
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import pluggy

from optizoo._version import __version__
from optizoo.errors import PluginError, UnknownNameError

__all__ = [
    "DISABLE_ENV",
    "ENTRY_POINT_GROUP",
    "KINDS",
    "PROJECT",
    "HookSpecs",
    "PluginInfo",
    "PluginWarning",
    "get",
    "hookimpl",
    "hookspec",
    "invalidate",
    "list_plugins",
    "plugin_manager",
    "problems",
    "provider",
    "register",
    "registered",
    "registry",
    "reset",
    "source_of",
    "unregister",
]

PROJECT = "optizoo"
#: Entry-point group a distribution declares its plugin module(s) in.
ENTRY_POINT_GROUP = "optizoo"
#: Environment variable: comma-separated plugin (entry-point) or distribution names to block.
DISABLE_ENV = "OPTIZOO_DISABLE_PLUGINS"
#: Name and distribution the built-ins are registered under.
BUILTIN_NAME = "optizoo"
#: The module holding optizoo's own hook implementations, imported by name when the plugin
#: manager is created (as pytest loads its ``default_plugins``): the host never imports what it
#: serves.
BUILTIN_MODULE = "optizoo._builtins"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Kind = Literal["tasks", "preprocessors", "pretrained", "rules"]

#: registry kind -> hook name
KINDS: dict[str, str] = {
    "tasks": "optizoo_tasks",
    "preprocessors": "optizoo_preprocessors",
    "pretrained": "optizoo_pretrained",
    "rules": "optizoo_rules",
}

#: registry kind -> what one entry is called in messages
_ENTRY: dict[str, str] = {
    "tasks": "task",
    "preprocessors": "preprocessor",
    "pretrained": "pretrained optimizer",
    "rules": "rule",
}

#: What a registry name may look like: ``inn-gaussian``, ``log_sign``, ``lstm.v1``.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")


class PluginWarning(UserWarning):
    """A plugin could not be loaded and was skipped (optizoo keeps working without it)."""


class HookSpecs:
    """The hooks an optizoo plugin can implement.

    Every hook takes no arguments and returns a mapping ``{name: value}`` (or ``None`` for
    nothing). Implement any subset of them as module-level functions (or methods of a plugin
    object) decorated with :data:`optizoo.hookimpl`; the function name selects the hook.

    Names must match ``[A-Za-z0-9][A-Za-z0-9_.-]*`` (at most 100 characters) and be unique
    across all installed plugins within one registry: prefix them with your project's name when
    in doubt (``"inn-gaussian"``, not ``"gaussian"``). Import heavy modules (torch, your model
    code) inside the hook, not at the top of the plugin module, so that ``optizoo plugins``
    stays fast and an import error is reported against your plugin.
    """

    @hookspec
    def optizoo_tasks(self) -> Mapping[str, Any] | None:
        """Contribute optimizees: ``{name: factory}``.

        ``factory(**kwargs)`` returns an :class:`optizoo.tasks.Task`. A factory is either a
        ``Task`` subclass (its constructor arguments become the task's options) or any other
        callable returning a ``Task``. The task then works everywhere a built-in one does::

            optizoo.tasks.build("inn-gaussian", batch_size=32)
            optizoo train --task inn-gaussian
            optizoo compare --task inn-gaussian

        Contract (checked by :func:`optizoo.testing.check_task`): ``task.sample(generator,
        device)`` draws all randomness from ``generator`` and returns a
        :class:`optizoo.tasks.Problem`; ``problem.params()`` returns fresh tensors;
        ``problem.loss(params, step)`` is a differentiable scalar that is deterministic given
        the problem and ``step`` (draw minibatches from a generator seeded by both).
        """

    @hookspec
    def optizoo_preprocessors(self) -> Mapping[str, Any] | None:
        """Contribute gradient preprocessors: ``{name: Preprocessor subclass}``.

        The class derives from :class:`optizoo.preprocess.Preprocessor`, declares the number of
        features per coordinate as the class attribute ``out_features`` (a positive int),
        maps a flat gradient ``[n]`` to features ``[n, out_features]`` in ``forward``, is pure
        (differentiable, no mutation of its input) and returns its constructor arguments from
        ``config()``. It can then be used by name::

            LSTMRule(preprocessor="sign_magnitude", preprocessor_args={"p": 10.0})
        """

    @hookspec
    def optizoo_pretrained(self) -> Mapping[str, Any] | None:
        """Contribute pretrained optimizers: ``{name: path to a .safetensors weight file}``.

        The value is a ``str`` or ``os.PathLike`` naming an existing file with the suffix
        ``.safetensors`` written by :func:`optizoo.save_rule` (ship it as package data and
        locate it with ``importlib.resources.files(__package__) / "weights.safetensors"``).
        Registered files are listed by ``optizoo.list_pretrained()`` and loaded by name with
        ``LSTMOptimizer(params, weights=name)`` / ``optizoo.load_pretrained(name, params)``.
        """

    @hookspec
    def optizoo_rules(self) -> Mapping[str, Any] | None:
        """Contribute update rules: ``{name: UpdateRule subclass}``.

        The class derives from :class:`optizoo.rules.UpdateRule`, sets ``rule_name`` to the
        registered name (it is written into weight files) and satisfies the rule contract:
        pure ``forward(grad, state, *, param, step) -> (update, new_state)``, ``init_state``,
        and ``config()`` returning constructor arguments. It can then be built by name
        (``optizoo.rules.build(name, config)``) and wrapped by
        :class:`optizoo.optim.LearnedOptimizer` or meta-trained by ``optizoo train``.
        """


@dataclass
class PluginInfo:
    """One plugin as the host sees it.

    Attributes:
        name: plugin name (the entry-point name; ``"optizoo"`` for the built-ins).
        dist: distribution that provides it (``"optizoo"`` for built-ins, ``"(inline)"`` for
            objects registered with :func:`register` without a distribution).
        version: that distribution's version, or ``None``.
        module: ``"package.module"`` the entry point names (or the object's module).
        status: ``"loaded"``, ``"failed"`` (import, validation or a hook raised) or
            ``"disabled"`` (blocked by ``OPTIZOO_DISABLE_PLUGINS``).
        error: what went wrong, for failed plugins.
        contributes: registry kind -> names this plugin registered there.
    """

    name: str
    dist: str
    version: str | None
    module: str
    status: str = "loaded"
    error: str | None = None
    contributes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def builtin(self) -> bool:
        return self.name == BUILTIN_NAME

    def label(self) -> str:
        """``"dist version"`` and, when it differs from the dist, the plugin name."""
        text = self.dist if self.version is None else f"{self.dist} {self.version}"
        if _normalize(self.name) != _normalize(self.dist):
            text += f" (plugin {self.name!r})"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dist": self.dist,
            "version": self.version,
            "module": self.module,
            "status": self.status,
            "error": self.error,
            "contributes": {k: list(v) for k, v in self.contributes.items()},
        }


class _Host:
    """All mutable plugin state; replaced wholesale by :func:`reset`."""

    def __init__(self) -> None:
        self.pm: pluggy.PluginManager | None = None
        self.infos: dict[str, PluginInfo] = {}
        self.registries: dict[str, dict[str, Any]] | None = None
        self.providers: dict[str, dict[str, str]] = {}
        self.problems: dict[str, list[str]] = {}
        self.loading_thread: int | None = None


_lock = threading.RLock()
_host = _Host()


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _disabled_names() -> tuple[set[str], bool]:
    raw = os.environ.get(DISABLE_ENV, "")
    names = {_normalize(n.strip()) for n in raw.split(",") if n.strip()}
    return names, bool(names & {"all", "*"})


#: what a plugin's code may raise and optizoo survives: a plugin calling ``sys.exit()`` or
#: raising ``KeyboardInterrupt`` at import or in a hook is a broken plugin, not a request to stop
_PLUGIN_FAULTS = (Exception, SystemExit, KeyboardInterrupt)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _warn_failed(info: PluginInfo) -> None:
    warnings.warn(
        f"optizoo plugin {info.label()} could not be loaded and is skipped: {info.error}. "
        f"Run `optizoo plugins` for details; set {DISABLE_ENV}={info.name} to silence this.",
        PluginWarning,
        stacklevel=4,
    )


def _guard_reentry() -> None:
    if _host.loading_thread == threading.get_ident():
        raise PluginError(
            "a plugin hook used an optizoo registry while plugins were being loaded; hooks must "
            "only return their {name: value} mapping (look names up later, at use time)"
        )


def plugin_manager() -> pluggy.PluginManager:
    """The pluggy ``PluginManager``, created on first use.

    Creating it registers the built-ins and loads every entry point in the group ``optizoo``
    (failures are recorded, warned about and skipped).
    """
    with _lock:
        _guard_reentry()
        if _host.pm is None:
            _host.loading_thread = threading.get_ident()
            try:
                _host.pm = _load_plugin_manager()
            finally:
                _host.loading_thread = None
        return _host.pm


def _load_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(HookSpecs)
    pm.register(importlib.import_module(BUILTIN_MODULE), name=BUILTIN_NAME)
    infos: dict[str, PluginInfo] = {
        BUILTIN_NAME: PluginInfo(BUILTIN_NAME, BUILTIN_NAME, __version__, BUILTIN_MODULE)
    }
    blocked, block_all = _disabled_names()
    eps = sorted(
        metadata.entry_points(group=ENTRY_POINT_GROUP),
        key=lambda ep: (_normalize(ep.dist.name) if ep.dist else "", ep.name),
    )
    for ep in eps:
        dist = ep.dist.name if ep.dist is not None else "(unknown distribution)"
        version = ep.dist.version if ep.dist is not None else None
        info = PluginInfo(ep.name, dist, version, ep.value)
        if ep.name in infos:
            other = infos[ep.name]
            info.status = "failed"
            info.error = (
                f"plugin name {ep.name!r} is already used by {other.label()}; one of the two "
                f"distributions must rename its entry point (or uninstall one of them)"
            )
            infos[f"{ep.name} ({dist})"] = info
            _warn_failed(info)
            continue
        infos[ep.name] = info
        if block_all or _normalize(ep.name) in blocked or _normalize(dist) in blocked:
            info.status = "disabled"
            pm.set_blocked(ep.name)
            continue
        try:
            plugin = ep.load()
        except _PLUGIN_FAULTS as exc:  # a broken plugin must never break optizoo
            info.status, info.error = "failed", f"import failed: {_describe(exc)}"
            _warn_failed(info)
            continue
        error = _register_checked(pm, plugin, ep.name)
        if error is not None:
            info.status, info.error = "failed", error
            _warn_failed(info)
    _host.infos = infos
    return pm


def _register_checked(pm: pluggy.PluginManager, plugin: object, name: str) -> str | None:
    """Register ``plugin`` under ``name``; return an error message instead of raising."""
    try:
        pm.register(plugin, name=name)
    except Exception as exc:  # PluginValidationError, ValueError (already registered)
        return f"registration failed: {_describe(exc)}"
    specs = set(KINDS.values())
    unknown = [
        hc.name
        for hc in pm.get_hookcallers(plugin) or []
        if not hc.has_spec()
        and any(i.plugin_name == name and not i.optionalhook for i in hc.get_hookimpls())
    ]
    if unknown:
        pm.unregister(name=name)
        return (
            f"implements unknown hook(s) {sorted(unknown)}; optizoo's hooks are "
            f"{sorted(specs)} (mark a hook for a newer optizoo with "
            f"@optizoo.hookimpl(optionalhook=True))"
        )
    return None


# ---------------------------------------------------------------------------------------------
# validation of returned entries


def _validate_value(kind: str, value: Any) -> tuple[Any, str | None]:
    """Return ``(normalized value, None)`` or ``(None, what is wrong)``."""
    if kind == "tasks":
        from optizoo.tasks.base import Task

        if isinstance(value, type):
            if not issubclass(value, Task):
                return None, f"class {value.__qualname__} does not derive from optizoo.tasks.Task"
            return value, None
        if isinstance(value, Task):
            return None, (
                f"got a task instance ({type(value).__qualname__}); return the class or a factory "
                f"function instead"
            )
        if not callable(value):
            return None, f"expected a Task subclass or a factory callable, got {value!r}"
        return value, None
    if kind == "preprocessors":
        from optizoo.preprocess.base import Preprocessor

        if not (isinstance(value, type) and issubclass(value, Preprocessor)):
            return None, (f"expected a subclass of optizoo.preprocess.Preprocessor, got {value!r}")
        k = getattr(value, "out_features", None)
        if not (isinstance(k, int) and not isinstance(k, bool) and k > 0):
            return None, f"{value.__qualname__}.out_features must be a positive int, got {k!r}"
        return value, None
    if kind == "rules":
        from optizoo.rules.base import UpdateRule

        if not (isinstance(value, type) and issubclass(value, UpdateRule)):
            return None, f"expected a subclass of optizoo.rules.UpdateRule, got {value!r}"
        return value, None
    if kind == "pretrained":
        if not isinstance(value, (str, os.PathLike)):
            return None, f"expected a path (str or PathLike) to a .safetensors file: {value!r}"
        path = Path(value)
        if path.suffix != ".safetensors":
            return None, f"weight file {str(path)!r} does not end in .safetensors"
        if not path.is_file():
            return None, f"weight file {str(path)!r} does not exist (is it in package data?)"
        return path, None
    raise ValueError(f"unknown registry kind {kind!r}; expected one of {sorted(KINDS)}")


def _collect() -> None:
    """Call every hook of every registered plugin and build all registries."""
    pm = _host.pm
    assert pm is not None
    results: dict[str, dict[str, Any]] = {}  # plugin name -> kind -> returned value
    for kind, hookname in KINDS.items():
        for impl in getattr(pm.hook, hookname).get_hookimpls():
            name = impl.plugin_name
            info = _host.infos.get(name)
            if info is None or info.status != "loaded":
                continue
            if impl.hookwrapper or impl.wrapper:
                info.status = "failed"
                info.error = f"{hookname}: hook wrappers are not supported by optizoo's hooks"
                _warn_failed(info)
                continue
            try:
                returned = impl.function()
                if isinstance(returned, Mapping):  # iterating a mapping runs the plugin's code too
                    returned = _Items(list(returned.items()))
                results.setdefault(name, {})[kind] = returned
            except _PLUGIN_FAULTS as exc:
                info.status, info.error = "failed", f"{hookname}() raised {_describe(exc)}"
                _warn_failed(info)
    registries: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
    providers: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}
    problems: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for info in _host.infos.values():
        info.contributes = {}
    # built-ins first: a plugin claiming a built-in name loses that name, nothing else
    order = sorted(results, key=lambda n: n != BUILTIN_NAME)
    for plugin_name in order:
        by_kind = results[plugin_name]
        info = _host.infos[plugin_name]
        if info.status != "loaded":
            continue
        try:
            staged, found = _validate_plugin(info, by_kind)
        except _PLUGIN_FAULTS as exc:  # e.g. a path whose __fspath__ raises
            info.status, info.error = "failed", f"an entry raised {_describe(exc)}"
            _warn_failed(info)
            continue
        for kind, messages in found.items():
            problems[kind].extend(messages)
        for kind, entries in staged.items():
            names = []
            for entry, normalized in entries:
                if entry in registries[kind]:
                    owner = providers[kind][entry]
                    other = _host.infos[owner]
                    if owner == BUILTIN_NAME:
                        warnings.warn(
                            f"optizoo plugin {info.label()} claims the built-in {_ENTRY[kind]} name "
                            f"{entry!r}; the built-in keeps it and only that entry of the plugin "
                            "is ignored (rename it in the plugin)",
                            PluginWarning,
                            stacklevel=4,
                        )
                        continue
                    problems[kind].append(
                        f"{_ENTRY[kind]} name {entry!r} is claimed by both {other.label()} and "
                        f"{info.label()}; uninstall one, or block it with "
                        f"{DISABLE_ENV}={info.name}"
                    )
                    continue
                registries[kind][entry] = normalized
                providers[kind][entry] = plugin_name
                names.append(entry)
            if names:
                info.contributes[kind] = sorted(names)
    _host.registries, _host.providers, _host.problems = registries, providers, problems


class _Items(list):
    """A hook's mapping, already iterated (``(name, value)`` pairs)."""


def _validate_plugin(
    info: PluginInfo, by_kind: Mapping[str, Any]
) -> tuple[dict[str, list[tuple[str, Any]]], dict[str, list[str]]]:
    """One plugin's valid ``(name, value)`` entries per kind, and messages about bad ones."""
    staged: dict[str, list[tuple[str, Any]]] = {}
    found: dict[str, list[str]] = {}
    who = f"plugin {info.label()}"
    for kind, returned in by_kind.items():
        hookname = KINDS[kind]
        if returned is None:
            continue
        if not isinstance(returned, _Items):
            found.setdefault(kind, []).append(
                f"{who}: {hookname}() must return a dict {{name: value}}, "
                f"got {type(returned).__name__}"
            )
            continue
        for entry, value in returned:
            if not (isinstance(entry, str) and NAME_PATTERN.match(entry)):
                found.setdefault(kind, []).append(
                    f"{who}: {hookname}() returned the malformed name {entry!r}; names match "
                    f"{NAME_PATTERN.pattern}"
                )
                continue
            normalized, why = _validate_value(kind, value)
            if why is not None:
                found.setdefault(kind, []).append(f"{who}: {hookname}() entry {entry!r}: {why}")
                continue
            staged.setdefault(kind, []).append((entry, normalized))
    return staged, found


def _ensure_collected() -> dict[str, dict[str, Any]]:
    with _lock:
        plugin_manager()  # loads entry points first (and guards against re-entry)
        if _host.registries is None:
            _host.loading_thread = threading.get_ident()
            try:
                _collect()
            finally:
                _host.loading_thread = None
        assert _host.registries is not None
        return _host.registries


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown registry kind {kind!r}; expected one of {sorted(KINDS)}")


def registry(kind: str) -> dict[str, Any]:
    """All entries of one registry: ``{name: value}`` for ``kind`` in :data:`KINDS`.

    Values: ``tasks`` -> task factory; ``preprocessors`` -> ``Preprocessor`` subclass;
    ``rules`` -> ``UpdateRule`` subclass; ``pretrained`` -> ``pathlib.Path`` of a weight file.

    Raises:
        ValueError: ``kind`` is not a registry kind.
        PluginError: a plugin returned a malformed entry for this registry, or two plugins
            claim one name in it (the message names them and says how to fix it).
    """
    _check_kind(kind)
    with _lock:
        registries = _ensure_collected()
        found = list(_host.problems.get(kind) or [])
    if found:
        raise PluginError(f"cannot build the {kind} registry:\n  " + "\n  ".join(found))
    return dict(registries[kind])


def _builtin(kind: str, name: str) -> Any:
    """The built-in entry ``name`` of ``kind``, or ``None``: found without loading any plugin."""
    hook = getattr(importlib.import_module(BUILTIN_MODULE), KINDS[kind], None)
    return (hook() or {}).get(name) if hook is not None else None


def get(kind: str, name: str) -> Any:
    """One registry entry, or :class:`~optizoo.errors.UnknownNameError` listing what exists.

    Built-in names are answered without consulting plugins (a broken or conflicting plugin can
    never hide a built-in)."""
    _check_kind(kind)
    with _lock:
        _guard_reentry()
    builtin = _builtin(kind, name) if isinstance(name, str) else None
    if builtin is not None:
        return builtin
    reg = registry(kind)
    if name not in reg:
        known = ", ".join(sorted(reg)) or "none"
        msg = f"no {_ENTRY[kind]} named {name!r}; available: {known}"
        failed = [i for i in _host.infos.values() if i.status == "failed"]
        if failed:
            msg += (
                f" ({len(failed)} plugin(s) failed to load: "
                + ", ".join(i.label() for i in failed)
                + "; run `optizoo plugins`)"
            )
        raise UnknownNameError(msg)
    return reg[name]


def provider(kind: str, name: str) -> PluginInfo:
    """The plugin that registered ``name`` in registry ``kind``."""
    get(kind, name)
    with _lock:
        _ensure_collected()
        return _host.infos[_host.providers[kind][name]]


def source_of(kind: str, name: str) -> str:
    """Distribution that registered ``name`` in registry ``kind`` (``"optizoo"`` for built-ins)."""
    return provider(kind, name).dist


def list_plugins() -> list[PluginInfo]:
    """Every plugin the host knows, built-ins first: loaded, failed and disabled ones.

    Loads plugins and calls their hooks if that has not happened yet. Never raises for a broken
    plugin: malformed entries and name conflicts are reported by :func:`problems`.
    """
    _ensure_collected()
    return list(_host.infos.values())


def problems() -> dict[str, list[str]]:
    """Registry kind -> messages about malformed entries and name conflicts (empty when fine)."""
    _ensure_collected()
    return {k: list(v) for k, v in _host.problems.items() if v}


def register(
    plugin: object, name: str | None = None, *, dist: str | None = None, version: str | None = None
) -> str:
    """Register a plugin object (a module, class or instance with hook functions) inline.

    This is how tests add a plugin without installing a distribution. Registries are rebuilt
    on next use. Returns the plugin name (``name``, or one derived from the object).

    Raises:
        PluginError: pluggy rejects the object (bad hook signature, unknown hook, name taken).
    """
    with _lock:
        pm = plugin_manager()
        if name is None:
            name = getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{id(plugin)}"
        if name in _host.infos:
            other = _host.infos[name].label()
            raise PluginError(f"a plugin named {name!r} is already registered ({other})")
        if pm.is_registered(plugin):
            other = _host.infos.get(pm.get_name(plugin) or "")
            where = other.label() if other else repr(pm.get_name(plugin))
            raise PluginError(
                f"this object is already registered as {where}; to test it inline, block the "
                f"installed copy ({DISABLE_ENV}={pm.get_name(plugin)}) and call "
                f"optizoo.plugins.reset() first"
            )
        error = _register_checked(pm, plugin, name)
        if error is not None:
            raise PluginError(f"plugin {name!r}: {error}")
        module = getattr(plugin, "__module__", None) or getattr(plugin, "__name__", "?")
        _host.infos[name] = PluginInfo(name, dist or "(inline)", version, str(module))
        _host.registries = None
        return name


def unregister(name: str) -> None:
    """Remove a plugin registered with :func:`register` (registries are rebuilt on next use)."""
    with _lock:
        if name == BUILTIN_NAME:
            raise ValueError("the built-in plugin cannot be unregistered")
        pm = plugin_manager()
        if pm.get_plugin(name) is not None:
            pm.unregister(name=name)
        _host.infos.pop(name, None)
        _host.registries = None


@contextlib.contextmanager
def registered(plugin: object, name: str | None = None, **kwargs: Any) -> Iterator[str]:
    """Context manager: :func:`register` ``plugin`` for the duration of the block."""
    plugin_name = register(plugin, name, **kwargs)
    try:
        yield plugin_name
    finally:
        unregister(plugin_name)


def invalidate() -> None:
    """Rebuild every registry on next use, calling the hooks again (plugins stay loaded).

    For when a hook's answer changed, e.g. a weight file was added to the shipped folder.
    """
    with _lock:
        _host.registries = None


def reset() -> None:
    """Forget every loaded plugin and cached registry (tests; after changing the environment).

    The next registry use re-reads ``OPTIZOO_DISABLE_PLUGINS`` and the installed entry points.
    """
    global _host
    with _lock:
        _host = _Host()
