"""Runs on this machine: in this process (one worker) or on a pool of spawned processes.

The first SIGINT or SIGTERM stops the sweep: no new run starts, running runs save a
checkpoint and stop, and :class:`SweepInterrupted` is raised. In-process, a second
signal raises KeyboardInterrupt at once (for a run stuck before its first step);
with a pool, it kills the workers without waiting for their checkpoints.
"""

from __future__ import annotations

from lossbench.core.config import RunConfig
from lossbench.sweep.executors.base import Job, SweepInterrupted
from lossbench.sweep.executors.progress import SweepBar
from lossbench.sweep.executors.signals import interrupts


class LocalExecutor:
    def __init__(self, job: Job, *, workers: int = 1, show_progress: bool | str = False,
                 label: str = "runs"):
        self.job, self.workers = job, max(1, workers)
        self.show_progress, self.label = show_progress, label

    def run(self, pending: list[RunConfig]) -> dict[str, str]:
        tasks = [(r.run_id(), r.to_dict()) for r in pending]  # ids hash the config: once
        bar = SweepBar(pending, self.label, self.show_progress, self.job.out)
        try:
            if self.workers == 1:  # in-process: simplest to debug, same numbers
                return self._inline(tasks, bar)
            return self._pool(tasks, bar)
        finally:
            bar.close()

    def _inline(self, tasks: list[tuple[str, dict]], bar: SweepBar) -> dict[str, str]:
        from lossbench.sweep.attempt import execute_run  # lazily: the runner imports this package

        statuses: dict[str, str] = {}
        signals = 0

        def on_signal(signum: int) -> None:
            nonlocal signals
            signals += 1
            if signals > 1:
                raise KeyboardInterrupt

        with interrupts(on_signal):
            for run_id, config in tasks:
                if signals:
                    break
                statuses[run_id] = execute_run(config, self.job, bar.sink(),
                                               lambda: signals > 0)[1]
                bar.finish(run_id, statuses[run_id])
        if signals:
            raise SweepInterrupted(statuses)
        return statuses

    def _pool(self, tasks: list[tuple[str, dict]], bar: SweepBar) -> dict[str, str]:
        from lossbench.sweep.executors.pool import Pool

        pool = Pool(self.job, self.workers, bar)

        def on_signal(signum: int) -> None:
            pool.signals += 1

        with interrupts(on_signal):
            statuses = pool.run(tasks)
        if pool.signals:
            raise SweepInterrupted(statuses)
        return statuses
