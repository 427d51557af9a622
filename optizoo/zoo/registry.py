"""Names of pretrained optimizers: the ones shipped in the package and those from plugins.

Shipped files live in ``optizoo/zoo/pretrained/`` with a ``MANIFEST.json`` mapping each file name
to its sha256; a shipped file whose bytes differ from the manifest is refused. Plugins register
``name -> path`` through the ``optizoo_pretrained`` hook.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optizoo.errors import WeightsError

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
MANIFEST = PRETRAINED_DIR / "MANIFEST.json"
#: what ``weights="default"`` means
DEFAULT_NAME_FILE = PRETRAINED_DIR / "DEFAULT"


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parse_manifest(manifest: Path) -> dict[str, str]:
    """``{file name: sha256}`` read from a ``MANIFEST.json`` (``{}`` when there is none).

    Raises:
        WeightsError: the file is not JSON, not a mapping of strings, or names a file outside
            the folder or without the ``.safetensors`` suffix.
    """
    if not manifest.is_file():
        return {}
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{str(manifest)!r} is not valid JSON: {exc}") from exc
    except (OSError, UnicodeDecodeError, RecursionError) as exc:
        raise WeightsError(f"{str(manifest)!r} cannot be read: {type(exc).__name__}") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise WeightsError(f"{str(manifest)!r} must map file names to sha256 strings")
    bad = [k for k in data if Path(k).name != k or not k.endswith(".safetensors")]
    if bad:
        raise WeightsError(
            f"{str(manifest)!r} lists {bad[:3]}: entries must be plain .safetensors file names "
            "in the pretrained folder"
        )
    return data


def _manifest() -> dict[str, str]:
    return parse_manifest(PRETRAINED_DIR / "MANIFEST.json")


def shipped() -> dict[str, Path]:
    """``{name: path}`` of the weight files shipped inside the package (name = file stem)."""
    return {Path(f).stem: PRETRAINED_DIR / f for f in sorted(_manifest())}


def verify_shipped(path: Path) -> None:
    """Refuse a shipped file whose sha256 differs from the manifest (truncated or altered)."""
    want = _manifest().get(path.name)
    if want is None:
        raise WeightsError(f"{path.name!r} is not listed in the shipped MANIFEST.json")
    got = sha256_file(path)
    if got != want:
        raise WeightsError(
            f"shipped weight file {path.name!r} is corrupt or altered: sha256 {got[:16]}… does "
            f"not match the manifest's {want[:16]}…; reinstall optizoo"
        )


def default_name() -> str:
    if DEFAULT_NAME_FILE.is_file():
        return DEFAULT_NAME_FILE.read_text().strip()
    raise WeightsError(
        "this optizoo build ships no default weights; pass weights=None for a fresh LSTM or a "
        "path to a .safetensors file"
    )


@dataclass(frozen=True)
class Pretrained:
    """One named pretrained optimizer."""

    name: str
    path: Path
    source: str  # "optizoo" for shipped files, else the plugin's distribution

    def metadata(self) -> dict[str, Any]:
        from optizoo.zoo.format import read_metadata

        return read_metadata(self.path)


def all_pretrained() -> dict[str, Pretrained]:
    """Every named pretrained optimizer, shipped files (source ``"optizoo"``) first.

    Both come from the ``pretrained`` plugin registry (the shipped files through optizoo's own
    ``optizoo_pretrained`` hook), under the registry's conflict rules: a plugin claiming a
    shipped name loses that entry (with a :class:`~optizoo.plugins.PluginWarning`), two plugins
    claiming one name raise :class:`~optizoo.errors.PluginError` naming both.
    """
    from optizoo import plugins

    entries = [
        Pretrained(name, Path(value), plugins.source_of("pretrained", name))
        for name, value in plugins.registry("pretrained").items()
    ]
    entries.sort(key=lambda e: e.source != "optizoo")  # stable: shipped first, then plugins
    return {e.name: e for e in entries}


def looks_like_path(spec: str | os.PathLike[str]) -> bool:
    """Whether ``spec`` names a file rather than a pretrained name: a ``PathLike``, or a string
    with a folder separator or the ``.safetensors`` suffix (names have neither)."""
    if not isinstance(spec, str):
        return True
    seps = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return any(sep in spec for sep in seps) or spec.endswith(".safetensors") or spec.startswith("~")


def resolve(spec: str | os.PathLike[str]) -> tuple[Path, str]:
    """Map ``"default"``, a pretrained name or a path to ``(path, name)``; verify shipped files.

    A path (see :func:`looks_like_path`) is used as is: loading by path never consults the
    plugin registry, so a broken plugin cannot stop it."""
    if looks_like_path(spec):
        path = Path(spec).expanduser()
        if path.is_file():
            return path, path.stem
        raise WeightsError(
            f"no pretrained optimizer named {str(spec)!r} and no file at that path (a path: "
            "pretrained names have no folder separator and no .safetensors suffix)"
        )
    spec_s = str(spec)
    if spec_s == "default":
        spec_s = default_name()
    ours = shipped()  # what optizoo's own optizoo_pretrained hook returns: no plugin consulted
    if spec_s in ours:
        verify_shipped(ours[spec_s])
        return ours[spec_s], spec_s
    known = all_pretrained()
    if spec_s in known:
        entry = known[spec_s]
        if entry.source == "optizoo":
            verify_shipped(entry.path)
        return entry.path, spec_s
    path = Path(spec_s).expanduser()
    if path.is_file():
        return path, path.stem
    names = ", ".join(sorted(known)) or "none"
    raise WeightsError(
        f"no pretrained optimizer named {spec_s!r} and no file at that path; "
        f"pretrained names: {names}"
    )
