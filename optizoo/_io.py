"""Atomic, durable file writes: every file optizoo writes (weights, checkpoints, cards, figures,
JSON) goes to a temporary file in the destination folder, is flushed to disk (``fsync``), moved
into place with ``os.replace``, and the folder entry is flushed too, so a crash or power loss
never leaves a half-written file under the final name. Temporary files are named
``.NAME.XXXXXXXX.tmp``; :func:`remove_stale_temps` deletes those an interrupted write left."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = [
    "TEMP_SUFFIX",
    "FolderLocked",
    "atomic_write",
    "folder_lock",
    "fsync_dir",
    "remove_stale_temps",
    "write_bytes_atomic",
    "write_text_atomic",
]

#: suffix of the temporary files of :func:`atomic_write`
TEMP_SUFFIX = ".tmp"


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be
    opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then ``os.replace`` it.

    Parent folders are created. The temporary file is fsynced before the rename and the folder
    after it. The file gets the usual ``0644`` permissions (``mkstemp`` creates ``0600``). On
    any error (or ``KeyboardInterrupt``) the temporary file is removed and the old file, if any,
    is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def remove_stale_temps(folder: str | os.PathLike[str], names: tuple[str, ...] = ()) -> list[Path]:
    """Delete the temporary files that interrupted :func:`atomic_write` calls left in ``folder``.

    Only files named like ``.NAME.XXXXXXXX.tmp`` are touched; with ``names``, only those whose
    ``NAME`` is one of them. Call it while holding the folder's lock (no write in progress).
    Returns the removed paths.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        n = p.name
        if not (n.startswith(".") and n.endswith(TEMP_SUFFIX) and p.is_file()):
            continue
        stem = n[1:].rsplit(".", 2)[0] if n.count(".") >= 3 else ""
        if names and stem not in names:
            continue
        if not stem:
            continue
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


class FolderLocked(OSError):
    """Another process holds the lock of a folder (see :func:`folder_lock`)."""


@contextlib.contextmanager
def folder_lock(lock_path: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold an exclusive, non-blocking lock on ``lock_path`` (created) for the block.

    POSIX ``flock``: the lock dies with its process, so a killed run never leaves a stale lock
    behind (the file itself is removed on release). Raises :class:`FolderLocked` at once when another process (or another open file in
    this one) holds it. Where ``fcntl`` is unavailable, an ``O_EXCL`` lock file is used instead
    (removed on exit).
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        try:
            fd = os.open(lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError as exc:
            raise FolderLocked(f"{str(lock_path)!r} exists: another process holds it") from exc
        try:
            yield lock_path
        finally:
            os.close(fd)
            lock_path.unlink(missing_ok=True)
        return
    while True:
        fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise FolderLocked(f"{str(lock_path)!r} is held by another process") from exc
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed that file as we opened it: take the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield lock_path
    finally:
        lock_path.unlink(missing_ok=True)  # while still held: nobody else can own this file
        os.close(fd)  # releases the flock
