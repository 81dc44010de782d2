"""Run a sweep on an existing Dask cluster (``lossbench[dask]``).

Each pending run becomes one task calling :func:`lossbench.sweep.attempt.execute_run`
on a worker; the task writes into the shared results directory, so the
directory must be visible to every worker under the same path (a shared
filesystem on a cluster; the local disk for workers on this machine).
Start workers with ``--nthreads 1`` (a run sets its own intra-op thread
count; more Dask threads per worker would share cores between runs).

Dask cannot stop a task that is running: when the client cancels it (Ctrl-C)
or dies (the scheduler then releases its tasks), the worker only marks the task
"cancelled" and lets it run to the end. So a task's ``stop`` callable watches
its own state on the worker and the run checkpoints and returns within a step.
"""

from __future__ import annotations

import dataclasses
import sys
import time
import uuid
from pathlib import Path

from lossbench.core.config import RunConfig
from lossbench.sweep.executors.base import ExecutorUnavailable, Job, SweepInterrupted
from lossbench.sweep.executors.signals import interrupts

MISSING = 'the Dask executor needs distributed: pip install "lossbench[dask]"'


def require_distributed() -> None:
    """ExecutorUnavailable (naming the pip command) when ``distributed`` is not installed."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ExecutorUnavailable(MISSING) from None


class DaskExecutor:
    def __init__(self, job: Job, *, scheduler: str | None, show_progress: bool | str = False,
                 label: str = "runs"):
        require_distributed()
        # the workers' working directory is not ours
        self.job = dataclasses.replace(job, out=str(Path(job.out).resolve()))
        self.scheduler = scheduler
        self.show_progress, self.label = show_progress, label

    def run(self, pending: list[RunConfig]) -> dict[str, str]:
        from distributed import Client, as_completed

        from lossbench.sweep.executors.progress import SweepBar

        statuses: dict[str, str] = {}
        signals = 0

        def on_signal(signum: int) -> None:
            nonlocal signals
            signals += 1

        # A fresh key per sweep: a rerun must not attach to a cancelled task of a dead
        # client that is still checkpointing (the run's lock makes the new task wait for it).
        sweep = uuid.uuid4().hex[:8]
        try:
            client = Client(self.scheduler, timeout="30s")
        except Exception as exc:  # unreachable, refused, TLS not configured: one line
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise ExecutorUnavailable(f"cannot connect to the Dask scheduler at "
                                      f"{self.scheduler}: {type(exc).__name__}: {first}") from None
        # no step progress comes back from the cluster: the bar moves as runs finish
        bar = SweepBar(pending, f"{self.label} (dask)", self.show_progress, self.job.out)
        with client, interrupts(on_signal):
            # pure=False: a rerun of the same config after a crash must execute, not be deduplicated
            futures = {client.submit(_task, r.to_dict(), self.job, pure=False,
                                     key=f"lossbench-{run_id}-{sweep}"): run_id
                       for run_id, r in ((r.run_id(), r) for r in pending)}
            completed = as_completed(futures)
            try:
                while not completed.is_empty():
                    if signals:  # the tasks see they were cancelled and checkpoint
                        client.cancel(list(futures))
                        raise SweepInterrupted(statuses)
                    for future in completed.next_batch(block=False):
                        run_id = futures[future]
                        statuses[run_id] = _status(run_id, future)
                        bar.finish(run_id, statuses[run_id])
                    bar.refresh()
                    time.sleep(0.1)
            finally:
                bar.close()
        return statuses


def _status(run_id: str, future) -> str:
    """The task's status; a task that raised (a worker lost too often, a bug) failed."""
    if future.status == "finished":
        return future.result()[1]
    try:
        error = future.exception()
    except Exception as exc:  # cancelled by someone else
        error = exc
    print(f"lossbench: run {run_id} failed on the cluster: {type(error).__name__}: {error}",
          file=sys.stderr)
    return "failed"


def _task(config_dict: dict, job: Job) -> tuple[str, str]:
    """One run on a Dask worker; it stops (with a checkpoint) once its task is unwanted."""
    from distributed import get_worker
    from distributed.worker import thread_state

    from lossbench.sweep.attempt import execute_run

    worker, key = get_worker(), thread_state.key

    def unwanted() -> bool:
        # cancelled: released by the scheduler while running (client.cancel, or its client
        # disconnected); gone from the state: already forgotten. A plain dict read, no lock.
        task = worker.state.tasks.get(key)
        return task is None or task.state == "cancelled"

    return execute_run(config_dict, job, None, unwanted)
