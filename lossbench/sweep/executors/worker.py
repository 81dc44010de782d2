"""The worker side of the local process pool (see :mod:`lossbench.sweep.executors.pool`).

A worker is a spawned process talking to the parent over its own pipe: it
receives ``(run_id, config_dict)`` or ``None`` (quit), and sends
``("progress", run_id, done, total)`` and ``("result", run_id, status)``.

Workers never act on Ctrl-C themselves (the terminal sends SIGINT to the whole
process group; the parent decides and tells them through the shared stop flag),
and they never outlive the parent: a worker whose parent died (kill -9, the OOM
killer, a CI timeout) exits within a second.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
import traceback

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PROGRESS_EVERY_S = 0.25  # progress messages per worker: at most 4 a second


def main(conn, stop_flag, job, parent_pid: int) -> None:
    """The process target. Exits with os._exit: tearing down an interpreter that holds torch
    takes seconds on a loaded machine, and every file the runs wrote is closed already. With
    trackers, the exit handlers run first: W&B removes its temporary folders in them."""
    code = 0
    try:
        _serve(conn, stop_flag, job, parent_pid)
    except BaseException:  # a bug in this loop; the parent reports the run as failed
        traceback.print_exc()
        code = 1
    finally:
        if job.log:
            atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _serve(conn, stop_flag, job, parent_pid: int) -> None:
    """One run at a time until told to quit or the pipe closes."""
    terminated = _install_signal_handlers()
    _die_with_parent(parent_pid)
    progress = _Progress(conn)

    def stop() -> bool:
        return bool(stop_flag.value) or terminated.is_set()

    while True:
        try:
            while not conn.poll(0.5):  # a timeout, so that SIGTERM ends an idle worker too
                if terminated.is_set():
                    return
            task = conn.recv()
        except (EOFError, OSError):  # the parent is gone or closed our pipe
            return
        if task is None:
            return
        run_id, config_dict = task
        try:
            from lossbench.sweep.attempt import execute_run

            status = "interrupted" if stop() else execute_run(
                config_dict, job, progress, stop)[1]
        except OSError as exc:  # the results directory failed it (full, read-only): one line
            print(f"lossbench: run {run_id}: {_os_error_line(exc)}", file=sys.stderr, flush=True)
            status = "failed"
        except Exception:  # a bug, not a run's error (execute_run keeps those): the pool goes on
            print(f"lossbench: run {run_id}: unexpected error in the worker:\n"
                  f"{traceback.format_exc()}", file=sys.stderr, flush=True)
            status = "failed"
        try:
            conn.send(("result", run_id, status))
        except OSError:
            return
        if terminated.is_set():
            return


def _os_error_line(exc: OSError) -> str:
    """'PATH: cause' (the worker's copy of lossbench.cli.common.os_error_line: the sweep
    layer may not import the command line)."""
    if exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


def _install_signal_handlers() -> threading.Event:
    """Ignore SIGINT; SIGTERM (sent to this worker, or to the group) checkpoints the run and
    exits after it. The parent started us with both blocked: unblock once handled."""
    terminated = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: terminated.set())
    signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGINT, signal.SIGTERM))
    return terminated


def _die_with_parent(parent_pid: int) -> None:
    """Exit when the parent dies: at once on Linux (the kernel sends SIGKILL), otherwise
    within half a second (a thread notices that we were re-parented)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl: the thread below still works
    if os.getppid() != parent_pid:  # it died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="lossbench-parent-watch", daemon=True).start()


class _Progress:
    """execute_run's ``progress`` mapping, forwarded to the parent at a bounded rate."""

    def __init__(self, conn):
        self._conn = conn
        self._sent = 0.0

    def __setitem__(self, run_id: str, value: tuple[int, int]) -> None:
        now = time.monotonic()
        if now - self._sent >= PROGRESS_EVERY_S:
            self._sent = now
            try:
                self._conn.send(("progress", run_id, *value))
            except OSError:
                pass  # the parent is gone: the watchdog ends us
