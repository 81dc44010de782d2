"""One attempt at one run, in the process that trains it: lock the run's folder, train (or
resume) it, and record how the attempt ended. Never raises for an error in the run itself.

Each run writes only inside its own folder (:mod:`lossbench.store.runs`): a finished run is
skipped, an unfinished one resumes from its last checkpoint, a failure is kept with its
traceback for the next sweep to retry or give up on (:mod:`lossbench.sweep.sweep`).
"""

from __future__ import annotations

import os
import re
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from lossbench.core.atomic import atomic_write_json, atomic_write_text, sweep_temp_files
from lossbench.core.config import RunConfig
from lossbench.core.locks import file_lock
from lossbench.core.schema import LOCK
from lossbench.core.schema import CONFIG
from lossbench.store.metrics_log import MetricsFile
from lossbench.store.records import MalformedRecord, run_config
from lossbench.store.runs import (
    SETTLED,
    attempts,
    check_run_folder,
    record_attempt,
    run_dir,
    stored_status,
    write_result,
)
from lossbench.sweep.executors.base import Job
from lossbench.sweep.trackers import make_trackers
from lossbench.train.observers import Observer


def execute_run(config_dict: dict[str, Any], job: Job | str, progress=None,
                stop=None) -> tuple[str, str]:
    """Run (or resume, or skip) one run; never raises for an error in the run itself.

    Returns (run_id, status). Exceptions from the loss or the data become status
    ``failed`` with the traceback saved; the sweep goes on, and the next sweep
    retries the run from its last checkpoint (see :func:`partition`: the caller
    decides whether a failed run is tried again). ``stop`` (a zero-argument callable) is
    polled after every step: when it returns True the run checkpoints and returns
    status ``interrupted`` (nothing is marked finished). Another process training
    the same run holds its lock: this one waits, then finds it finished.
    """
    from lossbench.losses import load_plugins

    job = Job(str(job)) if not isinstance(job, Job) else job  # a bare results folder
    out = job.out
    load_plugins(job.plugins)
    config = RunConfig.from_dict(config_dict)
    run_id = config.run_id()
    folder = run_dir(out, run_id)
    check_run_folder(out, folder)
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder / LOCK, stop=stop, root=folder) as held:
        if not held:
            return run_id, "interrupted"
        status = stored_status(folder)
        if status in SETTLED:  # finished meanwhile, by the process we waited for
            return run_id, status
        return run_id, _attempt(config, config_dict, folder, job, progress, stop)


def _attempt(config: RunConfig, config_dict: dict, folder: Path, job: Job, progress,
             stop) -> str:
    """One training attempt of a run whose lock we hold; its start and end are recorded."""
    from lossbench.train.loop import Interrupted, train_run

    run_id = config.run_id()
    sweep_temp_files(folder)  # a killed writer's leftovers (we hold the lock: none is live)
    n = 1 + sum(e.get("event") == "start" for e in attempts(folder))
    record_attempt(folder, {"event": "start", "attempt": n, "host": socket.gethostname(),
                            "pid": os.getpid(), "time": time.time()})
    atomic_write_json(folder / CONFIG, config_dict, root=folder)

    class Progress(Observer):  # the executor's shared progress table, by run id
        def on_start(self, start):
            self.total = start.total_steps

        def on_step(self, record):
            if progress is not None:
                progress[run_id] = (record["step"], self.total)

    end = {"event": "end", "attempt": n}
    try:
        trackers = make_trackers(job.log, config=config_dict, run_id=run_id, folder=folder,
                                 tags={**dict(job.tags), "run_id": run_id})
        result = train_run(config, checkpoint_dir=folder,
                           observers=[Progress(), MetricsFile(folder), *trackers],
                           should_stop=stop)
    except Interrupted as exc:
        record_attempt(folder, {**end, "status": "interrupted", "step": exc.step})
        return "interrupted"
    except Exception as exc:  # a failing user loss, a full disk: the sweep goes on
        if not folder.is_dir():
            return _folder_gone(folder)
        _record_failure(folder, config_dict, n, _error_signature(exc), traceback.format_exc())
        return "failed"
    summary = {**result.summary(), "attempts": n}
    try:
        write_result(folder, config_dict, result.status, summary, result.steps, result.evals)
        record_attempt(folder, {**end, "status": result.status})
    except FileNotFoundError:
        if not folder.is_dir():
            return _folder_gone(folder)
        raise
    return result.status


def _folder_gone(folder: Path) -> str:
    """The run's folder was deleted while it trained: nothing can be recorded there. One
    line says so; the run is failed for this sweep, and the next one trains it anew."""
    print(f"lossbench: run {folder.name}: its folder {folder} was removed while it trained; "
          f"rerun the command to train it again", file=sys.stderr, flush=True)
    return "failed"


def record_lost_run(out: str | Path, run_id: str, error: str) -> None:
    """The process training ``run_id`` died without a word (the OOM killer, a segfault): mark
    the run failed with ``error``, like any failure, so reruns retry it and give up on a run
    that keeps dying. Skipped when another process already holds the run again."""
    folder = run_dir(out, run_id)
    if not (folder / CONFIG).exists():
        return  # the folder is gone, or never got a config: nothing to mark
    check_run_folder(out, folder)
    with file_lock(folder / LOCK, wait=False, root=folder) as held:
        try:
            config = run_config(folder) if held else None
        except MalformedRecord:
            config = None
        if config is not None:
            n = sum(e.get("event") == "start" for e in attempts(folder))
            _record_failure(folder, config, n, error, error + "\n")


def _record_failure(folder: Path, config_dict: dict, attempt: int, error: str, text: str) -> None:
    """Mark the run failed by ``attempt``: its traceback kept per attempt, the result, and the
    history line, which is written even when the disk is full (so the history says why)."""
    summary = {"run_id": folder.name, "loss": config_dict.get("loss"),
               "seed": config_dict.get("seed"), "status": "failed", "attempts": attempt,
               "error": error}
    try:
        atomic_write_text(folder / f"traceback-{attempt}.txt", text, root=folder)
        write_result(folder, config_dict, "failed", summary, traceback_text=text)
    finally:
        record_attempt(folder, {"event": "end", "attempt": attempt, "status": "failed",
                                "error": error})


def _error_signature(exc: BaseException) -> str:
    """What tells two failures apart: the exception's type and message, minus the random
    names of temp files (a full disk fails on a new temp file each time)."""
    text = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    return re.sub(r"\.[\w.-]+\.tmp", ".<tmp>", text)
