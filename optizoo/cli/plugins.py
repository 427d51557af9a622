"""The ``optizoo plugins`` sub-command: which plugins are loaded, from where, and what they add.

Output (one block per plugin, built-ins first)::

    optizoo 0.1.0  [loaded]  optizoo._builtins
      preprocessors: identity, log_sign
      rules: adam, lstm, momentum, rmsprop, sgd
    optizoo-inn 0.1.0 (plugin 'inn')  [loaded]  optizoo_inn.plugin
      tasks: inn-gaussian
    optizoo-broken 0.0.1 (plugin 'broken')  [failed]  broken.plugin
      error: import failed: ModuleNotFoundError: No module named 'nothere'

``--json`` prints the same as a JSON list (:meth:`optizoo.plugins.PluginInfo.as_dict`, plus a
``problems`` mapping). The exit status is 0, or 1 when a registry cannot be built (malformed
entries or a name claimed twice: those make the affected commands fail, so they are errors here).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from optizoo import plugins


def register(subparsers: Any) -> None:
    """Add ``optizoo plugins`` to the CLI's sub-parsers."""
    parser = subparsers.add_parser(
        "plugins",
        help="list installed plugins and what they contribute",
        description=(
            "List optizoo plugins (built-ins and entry points in the group 'optizoo'): "
            "distribution, version, the names each contributes, and why any failed. "
            f"Block plugins with {plugins.DISABLE_ENV}=name1,name2 (or 'all')."
        ),
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print the plugin listing; return 1 when a registry has malformed or conflicting names."""
    out = out if out is not None else sys.stdout
    infos = plugins.list_plugins()
    found = plugins.problems()
    if getattr(args, "json", False):
        payload = {"plugins": [i.as_dict() for i in infos], "problems": found}
        out.write(json.dumps(payload, indent=2) + "\n")
        return 1 if found else 0
    for info in infos:
        out.write(f"{info.label()}  [{info.status}]  {info.module}\n")
        for kind in plugins.KINDS:
            names = info.contributes.get(kind)
            if names:
                out.write(f"  {kind}: {', '.join(names)}\n")
        if info.error:
            out.write(f"  error: {info.error}\n")
        if info.status == "disabled":
            out.write(f"  (blocked by {plugins.DISABLE_ENV})\n")
    if found:
        out.write("\nproblems:\n")
        for kind, messages in found.items():
            for message in messages:
                out.write(f"  {kind}: {message}\n")
    return 1 if found else 0
