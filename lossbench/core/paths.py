"""Names and paths that come from other people's files: checked, never trusted.

A suite name, or the name read back from a results directory's ``suite.json``,
becomes part of output paths (``results/<name>``, report folders). It must be a
safe slug, and every path built from untrusted parts must stay inside its root,
symlinks resolved.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

# letters, digits, '.', '_', '-'; starts with a letter or digit (no '.', '..', hidden names)
_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class UnsafePathError(ValueError):
    """A name or path that would escape its root or is not a plain name."""


def name_problem(name: object) -> str | None:
    """Why ``name`` is not a safe slug (None when it is): 1-100 characters of letters,
    digits, '.', '_' and '-', starting with a letter or digit."""
    if not isinstance(name, str) or not name:
        return "expected a non-empty string"
    if not _SLUG.fullmatch(name):
        return (f"{name!r} is not a safe name: use 1-100 letters, digits, '.', '_' or '-', "
                f"starting with a letter or digit")
    return None


def safe_name(name: object, what: str = "name") -> str:
    """``name`` if it is a safe slug, else UnsafePathError naming ``what``."""
    problem = name_problem(name)
    if problem:
        raise UnsafePathError(f"{what}: {problem}")
    return name  # type: ignore[return-value]


def inside(root: str | Path, path: str | Path) -> bool:
    """Does ``path`` (symlinks resolved) lie inside ``root`` (symlinks resolved)?"""
    root_r = Path(root).resolve()
    path_r = Path(path).resolve()
    return path_r == root_r or root_r in path_r.parents


def contained(root: str | Path, path: str | Path, what: str = "path") -> Path:
    """``path`` if it stays inside ``root`` once symlinks are resolved, else UnsafePathError."""
    if not inside(root, path):
        raise UnsafePathError(f"{what}: {path} resolves outside {root}")
    return Path(path)


# ---- files inside a results directory: writes stay inside, reads never block ------------
# A results directory may come from someone else. A symlink in it (runs/ -> ../elsewhere, a
# lock file -> ~/.bashrc) must not make a write land outside it, and a FIFO or device named
# result.json must not hang a reader. Writers (core.atomic, core.locks) call check_write;
# readers read through read_regular.

MAX_READ_BYTES = 1 << 30  # no file lossbench writes comes near; a larger one is not ours


class StoreError(OSError):
    """A results directory that cannot be used as it is (one line, names the path)."""


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_target(path: str | Path) -> None:
    """StoreError unless ``path`` is absent or a regular file (not a symlink: a write would
    follow it; not a folder, FIFO, device or socket: a write would fail or block)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError:
        return  # ENOTDIR, EACCES: the write itself fails and names the path
    if not stat.S_ISREG(mode):
        raise StoreError(f"{path}: {_kind(mode)} where a file should be; refusing to write "
                         f"through it")


def check_write(root: str | Path | None, path: str | Path) -> Path:
    """``path`` if a write to it stays inside ``root``: its folder, symlinks resolved, lies
    inside ``root`` (no symlink on the way leads out), and ``path`` itself is no symlink or
    special file (:func:`check_target`). ``root`` None: only the second check."""
    path = Path(path)
    if root is not None and not inside(root, path.parent):
        raise StoreError(f"{path}: its folder resolves outside {root} (a symlink on the "
                         f"way); refusing to write there")
    check_target(path)
    return path


def check_regular(path: str | Path) -> None:
    """StoreError unless ``path`` (symlinks followed: reading is harmless) is a regular file;
    FileNotFoundError when it is absent. Never opens it."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise StoreError(f"{path}: {_kind(mode)}, not a file; refusing to read it")


def read_regular(path: str | Path, limit: int = MAX_READ_BYTES) -> bytes:
    """The bytes of the regular file ``path``: anything else (FIFO, device, folder) is
    StoreError without a blocking open (checked by stat, opened O_NONBLOCK, checked again
    on the open file), and so is a file over ``limit`` bytes."""
    check_regular(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # swapped since the stat
            raise StoreError(f"{path}: {_kind(info.st_mode)}, not a file; refusing to read it")
        if info.st_size > limit:
            raise StoreError(f"{path}: {info.st_size} bytes, more than the {limit} a "
                             f"lossbench file can have; refusing to read it")
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise StoreError(f"{path}: more than {limit} bytes; refusing to read it")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_regular_text(path: str | Path, limit: int = MAX_READ_BYTES) -> str:
    """:func:`read_regular` decoded as UTF-8 (undecodable bytes shown as U+FFFD)."""
    return read_regular(path, limit).decode("utf-8", errors="replace")
