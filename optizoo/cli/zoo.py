"""The ``optizoo list`` and ``optizoo info`` sub-commands (``publish``: :mod:`optizoo.cli.publish`).

::

    optizoo list                                   # pretrained optimizers, tasks, preprocessors, rules
    optizoo list pretrained --json
    optizoo info lstm-quadratic                    # a pretrained name ...
    optizoo info dist/my-lstm.safetensors          # ... or a file: what it says about itself

``info`` prints the file's metadata (description, licence, rule and config, training record,
recorded comparison), its sha256 (and, for files shipped with optizoo, whether it matches the
manifest) and every tensor's dtype and shape; it exits with status 1 when the file is refused
(not an optizoo weight file, truncated, altered). Bad input prints one ``error:`` line and
exits with status 2.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from optizoo.cli.args import SafeText, printable
from optizoo.errors import OptizooError, WeightsError

__all__ = ["register", "run_info", "run_list"]

_LIST_KINDS = ("pretrained", "tasks", "preprocessors", "rules")


def register(subparsers: Any) -> None:
    """Add ``list`` and ``info`` to the CLI's sub-parsers."""
    p = subparsers.add_parser(
        "list",
        help="list pretrained optimizers, tasks, preprocessors and update rules",
        description="List what is installed: pretrained optimizers (shipped and from plugins) "
        "with what each was trained on, tasks (optimizees), gradient preprocessors and update "
        "rules, each with the distribution that provides it.",
    )
    p.add_argument(
        "kinds", nargs="*", metavar="KIND",
        help=f"what to list: {', '.join(_LIST_KINDS)} (default: all)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_list)

    i = subparsers.add_parser(
        "info",
        help="show what a weight file (or pretrained name) says about itself",
        description="Print a weight file's metadata, sha256 and tensor shapes. FILE_OR_NAME is a "
        "path to a .safetensors file, a pretrained name, or 'default'.",
    )
    i.add_argument("target", metavar="FILE_OR_NAME")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=run_info)


# --------------------------------------------------------------------------- list


def _first_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _source(kind: str, name: str) -> str:
    from optizoo import plugins

    try:
        return plugins.source_of(kind, name)
    except Exception:
        return "?"


def _pretrained_rows() -> list[dict[str, Any]]:
    """:func:`optizoo.zoo.list_pretrained` with a ``default`` flag after each row's path."""
    from optizoo.zoo import list_pretrained
    from optizoo.zoo.registry import default_name

    try:
        default = default_name()
    except WeightsError:
        default = None
    rows = []
    for entry in list_pretrained():
        head = {k: entry.pop(k) for k in ("name", "source", "path")}
        rows.append({**head, "default": head["name"] == default, **entry})
    return rows


def _registry_rows(kind: str) -> list[dict[str, Any]]:
    from optizoo import plugins

    rows = []
    for name, value in sorted(plugins.registry(kind).items()):
        row = {"name": name, "source": _source(kind, name), "description": _first_line(value)}
        if kind == "preprocessors":
            row["features"] = getattr(value, "out_features", None)
        rows.append(row)
    return rows


def _trained_text(value: Any) -> str:
    if not value:
        return "unrecorded"
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def run_list(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print the listing; returns 1 when a registry cannot be built (plugin problems)."""
    from optizoo.errors import PluginError

    out = SafeText(out if out is not None else sys.stdout)  # descriptions come from files
    kinds = list(getattr(args, "kinds", None) or _LIST_KINDS)
    unknown = [k for k in kinds if k not in _LIST_KINDS]
    if unknown:
        print(
            f"error: cannot list {', '.join(unknown)}; choose from {', '.join(_LIST_KINDS)}",
            file=sys.stderr,
        )
        return 2
    data: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for kind in kinds:
        try:
            data[kind] = _pretrained_rows() if kind == "pretrained" else _registry_rows(kind)
        except (PluginError, WeightsError) as exc:
            errors[kind] = str(exc)
    if getattr(args, "json", False):
        out.write(json.dumps({**data, "errors": errors}, indent=2) + "\n")
        return 1 if errors else 0
    titles = {
        "pretrained": "pretrained optimizers",
        "tasks": "tasks (optimizees)",
        "preprocessors": "gradient preprocessors",
        "rules": "update rules",
    }
    for kind in kinds:
        out.write(f"{titles[kind]}:\n")
        if kind in errors:
            out.write(f"  error: {errors[kind]}\n\n")
            continue
        rows = data[kind]
        if not rows:
            out.write("  (none)\n\n")
            continue
        labels = {r["name"]: r["name"] + (" [default]" if r.get("default") else "") for r in rows}
        width = max(len(v) for v in labels.values())
        for r in rows:
            shown = labels[r["name"]]
            if kind == "pretrained":
                if "error" in r:
                    out.write(f"  {shown:<{width}}  ({r['source']})  unreadable: {r['error']}\n")
                    continue
                out.write(
                    f"  {shown:<{width}}  rule {r['rule']}, trained on "
                    f"{_trained_text(r['trained_on'])}  ({r['source']})\n"
                )
                if r["description"]:
                    out.write(f"  {'':<{width}}  {r['description']}\n")
            else:
                extra = f"{r['features']} feature(s); " if kind == "preprocessors" else ""
                desc = f"  {extra}{r['description']}".rstrip() if extra or r["description"] else ""
                out.write(f"  {shown:<{width}}  ({r['source']}){desc}\n")
        out.write("\n")
    return 1 if errors else 0


# --------------------------------------------------------------------------- info


def describe(target: str) -> dict[str, Any]:
    """Everything ``optizoo info`` shows about ``target`` (a path, pretrained name or
    ``"default"``), as a JSON-safe dict.

    Keys: ``name``, ``path``, ``source``, ``sha256``, ``bytes``, ``manifest`` (``"ok"``,
    ``"mismatch"`` or ``None`` when not a shipped file), ``expected_sha256`` (shipped only),
    ``metadata`` (decoded; absent when refused), ``tensors`` (``{key: {"dtype", "shape"}}``),
    ``parameters`` (total element count), ``error`` (why the file is refused, if it is).
    """
    from safetensors import SafetensorError, safe_open

    from optizoo.zoo import registry
    from optizoo.zoo.format import read_metadata

    spec = target
    if spec == "default":
        spec = registry.default_name()
    known = {} if registry.looks_like_path(spec) else registry.all_pretrained()
    if spec in known:
        entry = known[spec]
        path, name, source = entry.path, spec, entry.source
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            names = ", ".join(sorted(known)) or "none"
            raise WeightsError(
                f"no pretrained optimizer named {target!r} and no file at that path; "
                f"pretrained names: {names}"
            )
        name, source = path.stem, "file"
    info: dict[str, Any] = {
        "name": name,
        "path": str(path),
        "source": source,
        "sha256": registry.sha256_file(path),
        "bytes": path.stat().st_size,
        "manifest": None,
    }
    try:
        default = registry.default_name()
    except WeightsError:
        default = None
    info["default"] = source == "optizoo" and name == default
    if source == "optizoo":
        from optizoo.zoo.manifest import read_manifest

        want = read_manifest().get(path.name)
        info["expected_sha256"] = want
        info["manifest"] = "ok" if want == info["sha256"] else "mismatch"
        if info["manifest"] != "ok":
            info["error"] = (
                f"shipped weight file {path.name!r} is corrupt or altered: its sha256 does not "
                "match MANIFEST.json; optizoo refuses to load it (reinstall optizoo)"
            )
            return info
    try:
        info["metadata"] = read_metadata(path)
        tensors: dict[str, dict[str, Any]] = {}
        total = 0
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                sl = f.get_slice(key)
                shape = list(sl.get_shape())
                n = 1
                for s in shape:
                    n *= s
                total += n
                tensors[key] = {"dtype": sl.get_dtype(), "shape": shape}
        info["tensors"] = tensors
        info["parameters"] = total
    except (WeightsError, SafetensorError, OSError, ValueError) as exc:
        info["error"] = str(exc)
    return info


def _write_info(info: dict[str, Any], out: TextIO) -> None:
    from optizoo.compare.stats import format_interval
    from optizoo.publish.card import evaluation_record, summary_phrase, where_it_loses

    def line(key: str, value: Any) -> None:
        out.write(f"{key + ':':<13} {value}\n")

    line("name", info["name"] + (" [default]" if info.get("default") else ""))
    line("file", info["path"])
    src = info["source"]
    if info["manifest"] == "ok":
        src += " (shipped; sha256 matches MANIFEST.json)"
    elif info["manifest"] == "mismatch":
        src += " (shipped; sha256 DOES NOT match MANIFEST.json)"
    line("source", src)
    line("sha256", info["sha256"])
    if info.get("expected_sha256") and info["manifest"] != "ok":
        line("manifest", info["expected_sha256"])
    line("size", f"{info['bytes']} bytes")
    meta = info.get("metadata")
    if meta is None:
        return
    line("format", meta.get("optizoo.format"))
    line("rule", meta.get("optizoo.rule"))
    line("description", meta.get("description") or "(none)")
    line("license", meta.get("license") or "(not stated)")
    versions = meta.get("optizoo.versions") or {}
    line("written by", ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) or "?")
    out.write("config:\n")
    for k, v in sorted((meta.get("optizoo.config") or {}).items()):
        out.write(f"  {k}: {json.dumps(v)}\n")
    training = meta.get("optizoo.training") or {}
    out.write("training:\n" if training else "training:    (no record)\n")
    for k, v in sorted(training.items()):
        if k in ("evaluation", "generalization"):
            continue
        out.write(f"  {k}: {json.dumps(v, sort_keys=True)}\n")
    try:
        record = evaluation_record(training)
    except ValueError as exc:  # a foreign record: say so, show the rest
        line("comparison", f"(unreadable: {exc})")
        return
    if record is not None:
        learned = record.learned
        out.write(f"comparison on {record.task or '?'} (mean final loss ± 95% CI):\n")
        for block in record.blocks:
            cells = []
            for label, entry in sorted(block.entries.items(), key=lambda kv: kv[0] != learned):
                iv = entry.metrics.get("final_loss")
                text = "—" if iv is None else format_interval(iv)
                tuned = " (tuned)" if entry.tuned else ""
                cells.append(f"{label}{tuned} {text}")
            out.write(
                f"  {block.steps} steps, tuned for {block.criterion}: " + "; ".join(cells) + "\n"
            )
    verdict = summary_phrase(training)
    if verdict:
        line("verdict", verdict)
    losses = where_it_loses(training, info["name"])
    if losses:
        out.write("where it loses:\n")
        for s in losses:
            out.write(f"  - {s}\n")
    tensors = info.get("tensors") or {}
    out.write(f"tensors ({len(tensors)}, {info.get('parameters', 0)} values):\n")
    width = max((len(k) for k in tensors), default=0)
    for k, t in tensors.items():
        shape = "[" + ", ".join(map(str, t["shape"])) + "]"
        out.write(f"  {k:<{width}}  {t['dtype']:<5} {shape}\n")


def run_info(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print what a weight file says about itself; 1 if it is refused, 2 if not found.

    Terminal escape sequences and control characters in the file's metadata are stripped
    (``--json`` escapes them), so a hostile file cannot drive the terminal."""
    out = SafeText(out if out is not None else sys.stdout)
    try:
        info = describe(args.target)
    except (OptizooError, OSError) as exc:
        print(f"error: {printable(str(exc))}", file=sys.stderr)
        return 2
    if getattr(args, "json", False):
        out.write(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
    else:
        _write_info(info, out)
    if info.get("error"):
        print(f"error: {printable(info['error'])}", file=sys.stderr)
        return 1
    return 0
