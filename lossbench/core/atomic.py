"""Atomic files: a reader sees the old version or the new one, never half of one.

Every file lossbench writes into a results directory or a report goes through
here: a temporary file in the same folder (named ``.<name>.<random>.tmp``, so
leftovers of a killed writer can be recognised and swept), fsync, rename over
the target, fsync the folder. The result honours the user's umask (mkstemp
alone would make it 0600, unreadable on a shared filesystem or web server).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it
    os.umask(mask)
    return mask


def _stage(path: Path, data: bytes) -> str:
    """Write ``data`` to a synced temp file beside ``path``; returns the temp file's name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
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


def atomic_write_many(files: dict[str | Path, bytes]) -> None:
    """Write several files so that none is replaced unless all were written in full: every
    temp file is staged (where a full disk or a kill would strike) before the first rename.
    Renames need no space, so tables written together (summary.csv and curves.csv) are
    replaced together."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, data in files.items():
            staged.append((_stage(Path(path), data), Path(path)))
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise
    for folder in {path.parent for _, path in staged}:
        _sync_folder(folder)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, rename over ``path``, fsync the folder."""
    atomic_write_many({path: data})


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


def sweep_temp_files(folder: str | Path) -> list[Path]:
    """Remove the temp files that killed atomic writes left in ``folder`` (not below it: each
    caller sweeps the folder whose writers it has excluded). Returns what was removed."""
    removed = sorted(Path(folder).glob(f".*{TMP_SUFFIX}"))
    for p in removed:
        p.unlink(missing_ok=True)
    return removed
