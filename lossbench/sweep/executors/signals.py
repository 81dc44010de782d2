"""SIGINT and SIGTERM as a flag the executor polls, not an exception thrown anywhere.

A KeyboardInterrupt can land in the middle of a pipe read or a checkpoint
write; while an executor runs, the signals only call ``on_signal`` and the
executor decides, between two steps of its own loop, how to stop.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def interrupts(on_signal: Callable[[int], None]) -> Iterator[None]:
    """Route SIGINT and SIGTERM to ``on_signal(signum)`` inside the block, then restore the
    previous handlers. Off the main thread (where Python allows no handlers) it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, lambda signum, frame: on_signal(signum))
    try:
        yield
    finally:
        for s, handler in previous.items():  # None: installed outside Python
            signal.signal(s, signal.SIG_DFL if handler is None else handler)


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """Hold SIGINT and SIGTERM pending in this thread inside the block.

    A spawned child inherits the blocked mask, so a Ctrl-C sent to the process
    group while it starts up waits until it has installed its own handlers
    (instead of a KeyboardInterrupt traceback from its import machinery); the
    parent gets its own copy of the signal as soon as the block ends.
    """
    old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
