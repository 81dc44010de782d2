"""What every executor shares: the job a sweep's runs belong to, how a sweep stops, and the
protocol an executor implements. Import-light (no torch, no tqdm, no distributed): the
command line imports it for its exception types."""

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
