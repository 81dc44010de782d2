"""Sweep a suite's runs over worker processes (or a Dask cluster), resumably.

Each run writes only inside its own folder (see :mod:`lossbench.store.runs`);
a finished run is skipped, an unfinished one resumes from its last
checkpoint, so killing a sweep at any moment loses at most the steps since
the last checkpoint and the final results equal an uninterrupted sweep's.
A run's thread count is part of its config, never derived from how many
workers share the machine, so results do not depend on ``--workers``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lossbench.core.config import RunConfig
from lossbench.core.schema import WEIGHTS
from lossbench.store.runs import (
    GIVE_UP_AFTER,
    check_run_folder,
    run_dir,
    same_failures_in_a_row,
    settled,
)
from lossbench.store.tables import read_experiment, write_tables
from lossbench.suite.load import Suite
from lossbench.sweep.executors import Job, make_executor


@dataclass(frozen=True)
class SweepOutcome:
    out: Path
    statuses: dict[str, str]  # run_id -> done | diverged | failed | interrupted
    skipped: int  # runs already finished before this invocation
    wall_s: float
    failures: dict[str, tuple[int, str]] = field(default_factory=dict)  # same error n times
    give_up_after: int = GIVE_UP_AFTER
    experiment: str = ""  # the id of the experiment this sweep recorded (lossbench.store.experiments)
    problems: tuple[str, ...] = ()  # stored results found unreadable or inconsistent: retrained

    @property
    def gave_up(self) -> dict[str, tuple[int, str]]:
        """Failed runs the next sweep will not retry: the same error too many times."""
        return {k: v for k, v in self.failures.items()
                if self.give_up_after and v[0] >= self.give_up_after}

    @property
    def exit_code(self) -> int:
        return 1 if "failed" in self.statuses.values() else 0


def auto_workers(suite: Suite) -> int:
    """As many one-run processes as the cores allow at each run's own thread count."""
    threads = max(r.train.threads for r in suite.runs)
    return max(1, (os.cpu_count() or 1) // threads)


def partition(configs: list[RunConfig], out: Path, *, retry: bool = True,
              give_up_after: int = GIVE_UP_AFTER, problems: list[str] | None = None
              ) -> tuple[dict[str, str], list[RunConfig]]:
    """Split runs into settled ones (run_id -> status) and those still to train: unfinished,
    unreadable or inconsistent (named in ``problems``), or failed and retried. Refuses
    unsafe run folders before anything runs."""
    settled_runs, pending = {}, []
    for r in configs:
        folder = run_dir(out, r.run_id())
        check_run_folder(out, folder)
        status = settled(folder, retry=retry, give_up_after=give_up_after, problems=problems)
        if status is None:
            pending.append(r)
        else:
            settled_runs[r.run_id()] = status
    return settled_runs, pending


def place_teacher(config: RunConfig, out: Path) -> RunConfig:
    """A student of a teacher run ([data] teacher_hash "run:<id>"), pointed at that run's
    model.pt in ``out``; its run id is unchanged (the teacher's id names the teacher)."""
    h = config.data.teacher_hash
    if config.data.teacher != "model" or not h or not h.startswith("run:"):
        return config
    weights = run_dir(out, h.split(":", 1)[1]) / WEIGHTS
    return dataclasses.replace(config, data=dataclasses.replace(config.data,
                                                                teacher_from=str(weights)))


def run_suite(suite: Suite, out: str | Path, *, workers: int | None = None,
              executor: str = "local", scheduler: str | None = None,
              plugins: tuple[str, ...] = (), show_progress: bool | str | None = None,
              retry: bool = True, give_up_after: int = GIVE_UP_AFTER,
              log: tuple[str, ...] = ()) -> SweepOutcome:
    """Execute every run of ``suite`` into ``out`` and rebuild the suite tables.

    The invocation is recorded as an experiment (:mod:`lossbench.store.experiments`) before any
    run starts, so `lossbench status` and `lossbench report` can follow it; an identical
    rerun reuses its experiment. Failed runs are retried from their last checkpoint unless
    ``retry`` is False or they failed the same way ``give_up_after`` times in a row (0:
    never give up). ``show_progress``: True a tqdm bar, "lines" plain lines for logs
    (see executors.progress), False nothing; None: a bar on a terminal, else lines.

    With a [tune] section the sweep has two phases: the tuning runs, then (once
    each contender's winner is known, see :mod:`lossbench.suite.tuning`) the final runs.
    Both phases resume and are reused like any run: same config, same run id.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if show_progress is None:
        show_progress = True if sys.stderr.isatty() else "lines"
    meta, first = _open(suite, out)
    phases = _Phases(suite, out, meta, retry=retry, give_up_after=give_up_after,
                     workers=workers or auto_workers(suite), executor=executor,
                     scheduler=scheduler, plugins=tuple(plugins),
                     show_progress=show_progress, log=tuple(log))
    start = time.perf_counter()
    if suite.teachers:  # ordinary runs, trained (or found done) before any student
        phases.execute(list(suite.teachers), "teacher")
    final = first if suite.tune is None else _tune(phases, suite, out, meta, first)
    phases.execute(final, "runs")
    write_tables(out)
    failures = {run_id: same_failures_in_a_row(run_dir(out, run_id))
                for run_id, status in phases.statuses.items() if status == "failed"}
    return SweepOutcome(out, phases.statuses, phases.skipped, time.perf_counter() - start,
                        failures, give_up_after, meta["id"], tuple(phases.problems))


def _open(suite: Suite, out: Path) -> tuple[dict, list[RunConfig]]:
    """The experiment's record, opened before any run starts (an identical rerun reopens
    its own), and the first phase's runs."""
    from lossbench.store.experiments import new_meta, open_experiment

    meta, first, identity = new_meta(suite)
    meta["claims"] = [c.to_dict() for c in suite.claims]  # not in the key: the report's
    meta["teacher_runs"] = [{"run_id": t.run_id(), "label": t.display_name, "seed": t.seed}
                            for t in suite.teachers]  # `lossbench status` lists them first
    meta["report"] = dataclasses.asdict(suite.report)  # [report]: how the report judges
    if suite.scale is not None:  # the ladder, and which size each final run is
        meta["scale"] = suite.scale.record(suite.runs if suite.tune is None else [])
    return open_experiment(out, meta, identity), first


@dataclass
class _Phases:
    """Runs a phase's runs (those not already settled) on the executor; collects every
    run's status, how many were found settled, and the store's warnings."""

    suite: Suite
    out: Path
    meta: dict
    retry: bool
    give_up_after: int
    workers: int
    executor: str
    scheduler: str | None
    plugins: tuple[str, ...]
    show_progress: bool | str
    log: tuple[str, ...]
    statuses: dict[str, str] = field(default_factory=dict)
    skipped: int = 0
    problems: list[str] = field(default_factory=list)

    def execute(self, configs: list[RunConfig], desc: str) -> None:
        configs = [place_teacher(r, self.out) for r in configs]
        done, pending = partition(configs, self.out, retry=self.retry,
                                  give_up_after=self.give_up_after, problems=self.problems)
        self.statuses.update(done)
        self.skipped += len(done)
        if not pending:
            return
        job = Job(str(self.out), self.plugins, self.log,
                  (("suite", self.suite.name), ("experiment", self.meta["id"])))
        runner = make_executor(self.executor, job=job, scheduler=self.scheduler,
                               workers=self.workers, show_progress=self.show_progress,
                               label=desc)
        self.statuses.update(runner.run(pending))  # SweepInterrupted propagates: nothing more


def _tune(phases: _Phases, suite: Suite, out: Path, meta: dict,
          first: list[RunConfig]) -> list[RunConfig]:
    """The tuning phase: its runs, each contender's winning setting (recorded in the
    experiment), and the final runs at those settings."""
    from lossbench.store.experiments import final_runs_of, save_experiment
    from lossbench.suite.tuning import final_runs, select, tuning_table

    phases.execute(first, "tuning")
    write_tables(out)
    summary, _, _ = read_experiment(out, meta)  # this experiment's, whatever is latest
    table = tuning_table(meta["tuning_runs"], summary, suite.tune)
    choices = select(table, suite.tune)
    meta["choices"] = {c.label: {"setting": c.setting, "score": c.score, "notes": list(c.notes)}
                       for c in choices.values()}
    final = final_runs(suite.entries, suite.seeds, choices)
    if suite.scale is not None:  # tuned at the smallest size, run at every size
        final = suite.scale.expand(final)
        meta["scale"] = suite.scale.record(final)
    meta.update(final_runs_of(final))
    save_experiment(out, meta)
    return final
