"""Advisory file locks between lossbench processes sharing a results directory.

``flock`` locks belong to an open file description: the kernel releases them
when the holder closes the file or dies (kill -9 included), so a crashed sweep
never leaves a run locked. Two ``lossbench run`` on one directory therefore
never train the same run twice: the second waits for the run's lock, then
finds the run finished (or resumes it, if the first stopped).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Callable, Iterator

LOCK = ".lock"


@contextlib.contextmanager
def file_lock(path: str | Path, *, wait: bool = True, poll_s: float = 0.2,
              stop: Callable[[], bool] | None = None) -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` (created if missing) inside the block.

    Yields True when held. With ``wait`` the lock is polled (so ``stop`` can end
    the wait: then it yields False); without, it yields False at once when held
    elsewhere.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
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
