"""Where a sweep's pending runs execute: here (``local``) or on a Dask cluster (``dask``).

An executor takes the runs still to train and returns ``run_id -> status`` (the
status strings come from :func:`lossbench.sweep.sweep.execute_run` and are passed on
as they are). Interrupted by SIGINT or SIGTERM, it asks the running runs to
checkpoint, stops everything it started and raises :class:`SweepInterrupted`;
rerunning the sweep resumes from those checkpoints.

This module stays import-light (no torch, no tqdm, no distributed): the CLI
imports it for its exception types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from lossbench.core.config import RunConfig


@dataclass(frozen=True)
class Job:
    """What every run of a sweep shares, sent with each run to the process that trains it
    (picklable): where results go, the plugin files to import, and the experiment trackers
    to log to with the tags every tracker run carries."""

    out: str
    plugins: tuple[str, ...] = ()
    log: tuple[str, ...] = ()  # tracker names (lossbench.sweep.trackers)
    tags: tuple[tuple[str, str], ...] = ()  # e.g. (("suite", "quick"),)


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the sweep; running runs saved a checkpoint.

    A KeyboardInterrupt, so that ``except Exception`` never swallows it.
    ``statuses`` maps the runs that finished (or were interrupted) before the
    stop to their status; runs not in it never started.
    """

    def __init__(self, statuses: dict[str, str]):
        super().__init__("sweep interrupted")
        self.statuses = dict(statuses)


class ExecutorUnavailable(Exception):
    """The executor asked for cannot run here (a missing optional dependency)."""


class Executor(Protocol):
    def run(self, pending: list[RunConfig]) -> dict[str, str]:
        """Train ``pending``; return run_id -> status. Raises SweepInterrupted."""
        ...


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
