"""A small process pool for sweeps that stops cleanly and leaves nothing behind.

Why not ProcessPoolExecutor: on Ctrl-C it keeps training the queued runs, its
shutdown prints tracebacks, and its progress dict needed a Manager process that
outlived a killed parent. Here each worker has its own pipe (so the parent
always knows which run a worker holds, and a worker that dies holds no shared
lock the others need), the parent hands out one run at a time (so stopping the
scheduling is just not handing out more), and a lock-free shared flag tells the
workers to checkpoint and stop.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection
import os
import time
from collections import deque

from lossbench.sweep.executors.base import Job
from lossbench.sweep.executors.progress import SweepBar
from lossbench.sweep.executors.signals import signals_blocked
from lossbench.sweep.executors.worker import main as worker_main

GRACE_S = 5.0  # how long stopped workers get to save their checkpoint before SIGKILL


class _Worker:
    def __init__(self, ctx, stop_flag, job: Job):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=worker_main, daemon=True, name="lossbench-worker",
                                   args=(child, stop_flag, job, os.getpid()))
        with signals_blocked():  # the child starts with them blocked: see signals_blocked
            self.process.start()
        child.close()
        self.run_id: str | None = None  # the run it trains

    def assign(self, run_id: str, config: dict) -> None:
        self.run_id = run_id
        try:
            self.conn.send((run_id, config))
        except OSError:
            pass  # it just died: the pool notices and fails the run (see Pool._lost)

    def quit(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass  # already gone


class Pool:
    """Run ``(run_id, config_dict)`` tasks on ``workers`` spawned processes."""

    def __init__(self, job: Job, workers: int, bar: SweepBar):
        self.ctx = mp.get_context("spawn")  # no forked torch thread pools
        self.job, self.n, self.bar = job, workers, bar
        self.stop_flag = self.ctx.RawValue("b", 0)  # no lock: a killed worker cannot hold it
        self.workers: list[_Worker] = []
        self.statuses: dict[str, str] = {}
        self.signals = 0  # SIGINT/SIGTERM received (set by the executor's handler)

    def run(self, tasks: list[tuple[str, dict]]) -> dict[str, str]:
        """Train every task unless a signal arrives; then stop (see :meth:`shutdown`)."""
        queue = deque(tasks)
        try:
            while not self.signals and (queue or any(w.run_id for w in self.workers)):
                while queue and len(self.workers) < min(self.n, len(queue) + self._busy()):
                    self.workers.append(_Worker(self.ctx, self.stop_flag, self.job))
                for w in self.workers:
                    if w.run_id is None and queue:
                        w.assign(*queue.popleft())
                self._poll(timeout=0.2)
                self.bar.refresh()
        finally:  # a signal, or an error here: no worker may outlive this call
            self.shutdown()
        return self.statuses

    def _busy(self) -> int:
        return sum(w.run_id is not None for w in self.workers)

    def _poll(self, timeout: float) -> None:
        """Read what the workers sent; forget the ones that exited."""
        waitables = [w.conn for w in self.workers] + [w.process.sentinel for w in self.workers]
        mp.connection.wait(waitables, timeout)
        for w in list(self.workers):
            alive = w.process.is_alive()  # before reading: a result sent just before exiting counts
            try:
                while w.conn.poll():
                    self._handle(w, w.conn.recv())
            except (EOFError, OSError):
                alive = False
            if not alive:
                self._lost(w)

    def _handle(self, w: _Worker, message: tuple) -> None:
        if message[0] == "progress":
            self.bar.step(*message[1:])
        elif message[0] == "result":
            _, run_id, status = message
            self.statuses[run_id] = status
            self.bar.finish(run_id, status)
            w.run_id = None

    def _lost(self, w: _Worker) -> None:
        """A worker exited. Unasked (a crash, the OOM killer) its run failed; the next sweep
        retries it from its last checkpoint. A replacement is started when runs remain."""
        w.process.join(1)
        w.conn.close()
        self.workers.remove(w)
        if w.run_id is not None and not self.signals:
            from lossbench.sweep.attempt import record_lost_run

            record_lost_run(self.job.out, w.run_id,
                            f"worker process died (exit code {w.process.exitcode})")
            self.statuses[w.run_id] = "failed"
            self.bar.finish(w.run_id, "failed")

    def shutdown(self) -> None:
        """Stop all workers. Busy ones (after a signal, or an error here) are told to
        checkpoint and get up to GRACE_S to do so; a further signal cuts that short.
        Idle ones quit at once. Whatever is left is killed."""
        signals = self.signals
        if self._busy():
            self.stop_flag.value = 1
        for w in self.workers:
            w.quit()  # a busy worker reads it after its run returns
        deadline = time.monotonic() + GRACE_S
        while self.workers and time.monotonic() < deadline and self.signals == signals:
            self._poll(timeout=0.1)
        for w in self.workers:
            w.process.kill()
        for w in self.workers:
            w.process.join(2)
            w.conn.close()
        self.workers = []
