"""Advisory file locks between lossbench processes sharing a results directory.

``flock`` locks belong to an open file description: the kernel releases them
when the holder closes the file or dies (kill -9 included), so a crashed sweep
never leaves a run locked. Two ``lossbench run`` on one directory therefore
never train the same run twice: the second waits for the run's lock, then
finds the run finished (or resumes it, if the first stopped).

A lock file is opened like every file lossbench writes (:mod:`lossbench.core.atomic`):
never through a symlink, never blocking on a FIFO, inside ``root`` when given.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import time
from pathlib import Path
from typing import Callable, Iterator

from lossbench.core.paths import StoreError, check_write


@contextlib.contextmanager
def file_lock(path: str | Path, *, wait: bool = True, poll_s: float = 0.2,
              stop: Callable[[], bool] | None = None,
              root: str | Path | None = None) -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` (created if missing) inside the block.

    Yields True when held. With ``wait`` the lock is polled (so ``stop`` can end
    the wait: then it yields False); without, it yields False at once when held
    elsewhere.
    """
    fd = _open_lock(path, root)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
                break
            except BlockingIOError:
                if not wait or (stop is not None and stop()):
                    held = False
                    break
                time.sleep(poll_s)
        yield held
    finally:
        os.close(fd)  # releases the lock


def _open_lock(path: str | Path, root: str | Path | None) -> int:
    """The lock file, opened for the lock (see the module's doc on what is refused)."""
    check_write(root, path)
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        check_write(root, path)  # a symlink or FIFO put there since: say so
        raise type(exc)(exc.errno, exc.strerror, str(path)) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StoreError(f"{path}: not a regular file; refusing to use it as a lock")
    return fd
