"""Atomic files: a reader sees the old version or the new one, never half of one.

Every file lossbench writes into a results directory or a report goes through
here: a temporary file in the same folder (named ``.<name>.<random>.tmp``, so
leftovers of a killed writer can be recognised and swept), fsync, rename over
the target, fsync the folder. The result honours the user's umask (mkstemp
alone would make it 0600, unreadable on a shared filesystem or web server).

Writes stay where they are meant to be (:func:`lossbench.core.paths.check_write`): the
target is never a symlink or special file, and with ``root`` (the results directory) its
folder must resolve inside it, so a symlinked ``runs/`` or ``experiments/`` in a directory
someone sent is refused instead of written through. An error names the target, never the
temp file.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from lossbench.core.paths import StoreError, check_write

TMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it
    os.umask(mask)
    return mask


def _root_exists(root: str | Path | None) -> None:
    """A write inside ``root`` never recreates it: a run folder deleted while its run
    trains stays deleted (FileNotFoundError naming it), instead of half a run reappearing."""
    if root is not None and not Path(root).is_dir():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(root))


def _named(exc: OSError, path: Path) -> OSError:
    """``exc`` naming ``path`` (the target) instead of a temp file, or no file at all."""
    if exc.errno is None:
        return exc
    return type(exc)(exc.errno, exc.strerror, str(path))


def _stage(path: Path, data: bytes) -> str:
    """Write ``data`` to a synced temp file beside ``path``; returns the temp file's name."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    except OSError as exc:
        raise _named(exc, path) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _named(exc, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def _sync_folder(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_many(files: dict[str | Path, bytes], root: str | Path | None = None) -> None:
    """Write several files so that none is replaced unless all were written in full: every
    temp file is staged (where a full disk or a kill would strike) before the first rename.
    Renames need no space, so tables written together (summary.csv and curves.csv) are
    replaced together. Each target is checked first (``root``: see the module's doc)."""
    _root_exists(root)
    for path in files:
        check_write(root, path)
    staged: list[tuple[str, Path]] = []
    try:
        for path, data in files.items():
            staged.append((_stage(Path(path), data), Path(path)))
        for tmp, path in staged:
            check_write(root, path)  # again: it may have changed while we staged
            try:
                os.replace(tmp, path)
            except OSError as exc:
                raise _named(exc, path) from None
    except BaseException:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise
    for folder in {path.parent for _, path in staged}:
        _sync_folder(folder)


def atomic_write_bytes(path: str | Path, data: bytes, root: str | Path | None = None) -> None:
    """Write to a temp file in the same folder, fsync, rename over ``path``, fsync the folder."""
    atomic_write_many({path: data}, root)


def atomic_write_text(path: str | Path, text: str, root: str | Path | None = None) -> None:
    atomic_write_bytes(path, text.encode(), root)


def atomic_write_json(path: str | Path, obj: Any, root: str | Path | None = None) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str), root)


def append_bytes(path: str | Path, data: bytes, root: str | Path | None = None) -> None:
    """Append ``data`` with one ``write`` to ``path`` (created if missing), opened O_APPEND:
    lines from concurrent writers never interleave. Never through a symlink (O_NOFOLLOW)
    and never blocking on a FIFO (O_NONBLOCK, then only a regular file is written)."""
    _root_exists(root)
    check_write(root, path)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        check_write(root, path)  # a symlink or FIFO put there since: say so
        raise _named(exc, Path(path)) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StoreError(f"{path}: not a regular file; refusing to write to it")
        os.write(fd, data)
    except OSError as exc:
        raise _named(exc, Path(path)) from None
    finally:
        os.close(fd)


def sweep_temp_files(folder: str | Path, root: str | Path | None = None) -> list[Path]:
    """Remove the temp files that killed atomic writes left in ``folder`` (not below it: each
    caller sweeps the folder whose writers it has excluded). Returns what was removed. With
    ``root``, ``folder`` must resolve inside it (a symlinked folder is not swept)."""
    if root is not None:
        check_write(root, Path(folder) / "x")
    removed = sorted(Path(folder).glob(f".*{TMP_SUFFIX}"))
    for p in removed:
        p.unlink(missing_ok=True)
    return removed
