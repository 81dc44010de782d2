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
    """Start child processes inside the block that ignore SIGINT from their first instruction.

    A spawned worker imports for a second or more before it can install handlers; a Ctrl-C
    (sent by the terminal to the whole process group) in that time used to print a
    KeyboardInterrupt traceback from its imports. A blocked signal mask is not enough:
    multiprocessing's fork-exec clears it in the child. An ignored signal stays ignored
    across exec, and Python keeps it ignored at start-up, so SIGINT is set to SIG_IGN for
    the spawn: the worker then waits for the parent's stop flag. Meanwhile both signals are
    blocked in this thread, so one that arrives is held pending (Linux never discards a
    blocked signal) and reaches our handler as soon as the block ends.
    """
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    on_main = threading.current_thread() is threading.main_thread()
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN) if on_main else None
    try:
        yield
    finally:
        if on_main:
            signal.signal(signal.SIGINT, signal.SIG_DFL if handler is None else handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
