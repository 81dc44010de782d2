"""Where a sweep's pending runs execute: here (``local``) or on a Dask cluster (``dask``).

An executor takes the runs still to train and returns ``run_id -> status`` (the
status strings come from :func:`lossbench.sweep.attempt.execute_run` and are passed on
as they are). Interrupted by SIGINT or SIGTERM, it asks the running runs to
checkpoint, stops everything it started and raises :class:`SweepInterrupted`;
rerunning the sweep resumes from those checkpoints.

This module stays import-light (no torch, no tqdm, no distributed): the CLI
imports it for its exception types.
"""

from __future__ import annotations

from lossbench.sweep.executors.base import Executor, ExecutorUnavailable, Job, SweepInterrupted

__all__ = ["Executor", "ExecutorUnavailable", "Job", "SweepInterrupted", "make_executor"]


def make_executor(kind: str, *, job: Job, workers: int = 1, scheduler: str | None = None,
                  show_progress: bool | str = False, label: str = "runs") -> Executor:
    """The executor called ``kind`` ("local" or "dask"); each uses the options it needs.
    ``show_progress``: True a bar, "lines" plain progress lines, False none (see
    executors.progress).

    Raises ExecutorUnavailable when ``kind`` needs a package that is not installed.
    """
    if kind == "local":
        from lossbench.sweep.executors.local import LocalExecutor

        return LocalExecutor(job, workers=workers, show_progress=show_progress, label=label)
    if kind == "dask":
        from lossbench.sweep.executors.dask import DaskExecutor

        return DaskExecutor(job, scheduler=scheduler, show_progress=show_progress, label=label)
    raise ValueError(f"unknown executor {kind!r}; known: local, dask")
