"""Maintain the shipped weight files: ``optizoo/zoo/pretrained/`` and its ``MANIFEST.json``.

Used by release scripts (``scripts/ship_*.py``) and by hand::

    python -m optizoo.zoo.manifest add dist/my-lstm.safetensors [--name my-lstm] [--default]
    python -m optizoo.zoo.manifest remove my-lstm
    python -m optizoo.zoo.manifest verify          # exit status 1 when anything is wrong

``add`` refuses a file optizoo cannot load (wrong format, tensors not matching the config), copies
it in atomically, records its sha256 in ``MANIFEST.json`` (rewritten atomically, sorted) and,
with ``--default``, writes the ``DEFAULT`` file. ``verify`` checks that every manifest entry
exists, has the recorded sha256 and loads; that no ``.safetensors`` file in the folder is missing
from the manifest (it would never be listed nor verified); and that ``DEFAULT`` names an entry.

The folder and files are those of :mod:`optizoo.zoo.registry` (looked up at call time, so tests
can point them at a temporary folder) unless ``pretrained_dir`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from optizoo._io import write_bytes_atomic as _atomic_bytes
from optizoo.errors import WeightsError

__all__ = ["add_to_shipped", "main", "read_manifest", "remove_from_shipped", "verify"]


def _paths(pretrained_dir: str | os.PathLike[str] | None) -> tuple[Path, Path, Path]:
    from optizoo.zoo import registry

    if pretrained_dir is None:
        return registry.PRETRAINED_DIR, registry.MANIFEST, registry.DEFAULT_NAME_FILE
    d = Path(pretrained_dir)
    return d, d / "MANIFEST.json", d / "DEFAULT"


def _shipped_changed() -> None:
    """The shipped files are registered through the plugin host: rebuild its registries."""
    from optizoo import plugins

    plugins.invalidate()


def read_manifest(pretrained_dir: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """``{file name: sha256}`` of the shipped folder (``{}`` when there is no manifest)."""
    from optizoo.zoo.registry import parse_manifest

    _, manifest, _ = _paths(pretrained_dir)
    return parse_manifest(manifest)


def _write_manifest(manifest: Path, entries: dict[str, str]) -> None:
    text = json.dumps(dict(sorted(entries.items())), indent=1) + "\n"
    _atomic_bytes(manifest, text.encode("utf-8"))


def add_to_shipped(
    path: str | os.PathLike[str],
    name: str | None = None,
    *,
    default: bool = False,
    overwrite: bool = False,
    pretrained_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Copy a weight file into the shipped folder under ``NAME.safetensors`` and record it.

    Args:
        path: a weight file written by :func:`optizoo.save_rule` / ``optizoo publish``.
        name: the name it loads by (default: the file stem).
        default: also make it what ``weights="default"`` means (``DEFAULT`` file).
        overwrite: replace an existing entry of that name (otherwise refused).
        pretrained_dir: the folder (default: the package's ``optizoo/zoo/pretrained``).

    Returns:
        The path of the shipped copy.
    """
    from optizoo.plugins import NAME_PATTERN
    from optizoo.zoo.format import rule_from_file
    from optizoo.zoo.registry import sha256_file

    src = Path(path)
    name = name or src.stem
    if not NAME_PATTERN.match(name):
        raise ValueError(
            f"invalid name {name!r}: use letters, digits, '-', '_' and '.' (e.g. 'lstm-mlp')"
        )
    rule_from_file(src)  # refuses anything optizoo could not load back
    folder, manifest, default_file = _paths(pretrained_dir)
    entries = read_manifest(pretrained_dir)
    fname = f"{name}.safetensors"
    dest = folder / fname
    if (fname in entries or dest.exists()) and not overwrite:
        raise FileExistsError(
            f"{str(dest)!r} is already shipped; pass overwrite=True (--overwrite) to replace it"
        )
    data = src.read_bytes()
    _atomic_bytes(dest, data)
    digest = sha256_file(dest)
    entries[fname] = digest
    _write_manifest(manifest, entries)
    _shipped_changed()
    if default:
        _atomic_bytes(default_file, (name + "\n").encode("utf-8"))
    return dest


def remove_from_shipped(name: str, *, pretrained_dir: str | os.PathLike[str] | None = None) -> None:
    """Delete a shipped file and its manifest entry (refused for the current default)."""
    folder, manifest, default_file = _paths(pretrained_dir)
    entries = read_manifest(pretrained_dir)
    fname = f"{name}.safetensors"
    if fname not in entries:
        raise KeyError(f"{name!r} is not in {str(manifest)!r}; shipped: {sorted(entries)}")
    if default_file.is_file() and default_file.read_text().strip() == name:
        raise ValueError(f"{name!r} is the default optimizer; make another one the default first")
    del entries[fname]
    _write_manifest(manifest, entries)
    _shipped_changed()
    (folder / fname).unlink(missing_ok=True)


def verify(pretrained_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Problems with the shipped folder (``[]`` when every file is intact and loads)."""
    from optizoo.zoo.format import rule_from_file
    from optizoo.zoo.registry import sha256_file

    folder, _, default_file = _paths(pretrained_dir)
    try:
        entries = read_manifest(pretrained_dir)
    except WeightsError as exc:
        return [str(exc)]
    problems = []
    for fname, want in sorted(entries.items()):
        path = folder / fname
        if not path.is_file():
            problems.append(f"{fname}: listed in MANIFEST.json but missing")
            continue
        got = sha256_file(path)
        if got != want:
            problems.append(
                f"{fname}: sha256 {got} does not match the manifest's {want} (altered or "
                "truncated; re-add it with `python -m optizoo.zoo.manifest add`)"
            )
            continue
        try:
            rule_from_file(path)
        except WeightsError as exc:
            problems.append(f"{fname}: does not load: {exc}")
    if folder.is_dir():
        for path in sorted(folder.glob("*.safetensors")):
            if path.name not in entries:
                problems.append(f"{path.name}: in the folder but not in MANIFEST.json")
    if default_file.is_file():
        name = default_file.read_text().strip()
        if f"{name}.safetensors" not in entries:
            problems.append(f"DEFAULT names {name!r}, which is not in MANIFEST.json")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m optizoo.zoo.manifest {add,remove,verify}``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m optizoo.zoo.manifest", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--dir", type=Path, help="pretrained folder (default: the package's)")
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("add", help="ship a weight file (copy + manifest)")
    a.add_argument("file", type=Path)
    a.add_argument("--name", help="name it loads by (default: the file stem)")
    a.add_argument("--default", action="store_true", help="make it the default weights")
    a.add_argument("--overwrite", action="store_true", help="replace an entry of that name")
    r = sub.add_parser("remove", help="stop shipping a weight file")
    r.add_argument("name")
    sub.add_parser("verify", help="check sha256s, loading, and the DEFAULT file")
    args = parser.parse_args(argv)
    try:
        if args.command == "add":
            dest = add_to_shipped(
                args.file,
                args.name,
                default=args.default,
                overwrite=args.overwrite,
                pretrained_dir=args.dir,
            )
            print(f"shipped {dest}")
            return 0
        if args.command == "remove":
            remove_from_shipped(args.name, pretrained_dir=args.dir)
            print(f"removed {args.name}")
            return 0
    except (WeightsError, ValueError, KeyError, FileExistsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    problems = verify(args.dir)
    folder = _paths(args.dir)[0]
    for p in problems:
        print(f"problem: {p}")
    if not problems:
        print(f"ok: {len(read_manifest(args.dir))} shipped file(s) in {folder} verified")
    return 1 if problems else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
