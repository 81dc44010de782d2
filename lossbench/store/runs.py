"""The results store: one folder per run, written atomically, and one experiment's tables.

    DIR/runs/<run_id>/             one run's files (named in lossbench.core.schema)
    DIR/experiments/<id>.json      one per suite invocation (see lossbench.store.experiments)
    DIR/suite.json                 the latest experiment (name, baseline, seeds, run ids)
    DIR/summary.csv                the latest experiment's runs, one row each
    DIR/curves.csv                 long form of the same runs: run_id, step, metric, value

The runs folder is a cache shared by every suite written into DIR (same config, same run);
``load(DIR)`` returns (summary, curves) of one experiment: the latest, or the one
``experiment=`` names; ``final_only=True`` keeps its final runs (not its tuning runs).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lossbench.core.atomic import append_bytes, atomic_write_json, atomic_write_text
from lossbench.core.config import display_name
from lossbench.core.paths import StoreError, check_target, inside
from lossbench.core.schema import (ATTEMPTS, CHECKPOINT, CONFIG, DONE, LOCK, METRICS, RESULT,
                                   TRACEBACK, WEIGHTS)
from lossbench.store.records import (
    ExperimentRecord,
    MalformedRecord,
    RunRecord,
    attempt_line,
    json_lines,
)
from lossbench.train.result import stored_result_problems

__all__ = ["StoreError", "MalformedResult"]  # re-exported: callers catch them from here

TABLES_LOCK = ".tables.lock"
# columns that hold names, never numbers (a label "1" or "NA" must read back as written)
TEXT_COLUMNS = ("run_id", "loss", "label", "status", "notes", "error", "metric")

STATUSES = ("done", "diverged", "failed")
SETTLED = ("done", "diverged")  # results; a failed run is retried by default
GIVE_UP_AFTER = 2  # a run that failed the same way this many times in a row is not retried


MalformedResult = MalformedRecord  # a result.json that is not a lossbench result
# the files lossbench writes in a run folder: each must be a plain file (or absent)
RUN_FILES = (CONFIG, RESULT, DONE, LOCK, ATTEMPTS, METRICS, WEIGHTS, CHECKPOINT, TRACEBACK)


def label_of(config: dict) -> str:
    """A stored run config's display name (``RunConfig.display_name``)."""
    return display_name(config.get("label", ""), config["loss"])


def run_dir(out: str | Path, run_id: str) -> Path:
    return Path(out) / "runs" / run_id


def check_run_folder(out: str | Path, folder: Path) -> None:
    """Refuse a run folder that resolves outside the results directory (itself a symlink,
    or ``runs/`` one), a file where a folder should be, or one whose files are symlinks or
    special files: a shared results directory must not make us read or write elsewhere."""
    if not inside(out, folder):
        raise StoreError(f"{folder}: a symlink pointing outside {out}; refusing to use it")
    if folder.exists() and not folder.is_dir():
        raise StoreError(f"{folder}: expected a run folder, found a file")
    if folder.is_dir():
        for name in RUN_FILES:
            check_target(folder / name)


def write_result(folder: Path, config: dict, status: str, summary: dict,
                 steps: dict | None = None, evals: list | None = None,
                 traceback_text: str | None = None) -> None:
    """Persist a finished run: result first, marker last, so a kill leaves no half result.
    A failed run keeps its checkpoint: the retry resumes from it."""
    folder.mkdir(parents=True, exist_ok=True)
    if traceback_text is not None:
        atomic_write_text(folder / TRACEBACK, traceback_text, root=folder)
    atomic_write_json(folder / RESULT, {"config": config, "status": status,
                                               "summary": summary, "steps": steps or {},
                                               "evals": evals or []}, root=folder)
    atomic_write_text(folder / DONE, status + "\n", root=folder)
    if status != "failed":
        (folder / CHECKPOINT).unlink(missing_ok=True)


def read_result(folder: Path) -> dict[str, Any]:
    """A run's result.json, every field checked (it may come from anyone: see
    :class:`lossbench.store.records.RunRecord`); MalformedResult or OSError when it is not
    a lossbench result."""
    return RunRecord.read(folder).as_dict()


def stored_status(folder: Path, problems: list[str] | None = None) -> str | None:
    """The status of a finished run; None when unfinished, or when its result is unreadable
    or inconsistent (a step count its curves do not show, evaluation records of another
    shape: :func:`lossbench.train.result.stored_result_problems`): then the run is simply
    run again, and ``problems`` says why."""
    if not (folder / DONE).exists():
        return None
    try:
        record = read_result(folder)
    except (OSError, MalformedResult) as exc:
        if problems is not None:
            problems.append(f"{exc}; the run is trained again")
        return None
    if record["status"] in SETTLED:
        found = stored_result_problems(record)
        if found:
            if problems is not None:
                problems.append(f"{folder / 'result.json'}: {found[0]}; the run is trained "
                                f"again")
            return None
    return record["status"]


def record_attempt(folder: Path, event: dict[str, Any]) -> None:
    """Append one line to the run's attempt history (a single O_APPEND write: lines from
    concurrent writers never interleave)."""
    line = (json.dumps(event, sort_keys=True, default=str) + "\n").encode()
    append_bytes(folder / ATTEMPTS, line, root=folder)


def attempts(folder: Path) -> list[dict[str, Any]]:
    """The run's attempt history, oldest first; unreadable lines (and lines with a field of
    the wrong type) are skipped."""
    return json_lines(folder / ATTEMPTS, attempt_line)


def same_failures_in_a_row(folder: Path) -> tuple[int, str]:
    """How many of the latest finished attempts failed with the same error, and that error."""
    ends = [e for e in attempts(folder) if e.get("event") == "end"]
    ends = [e for e in ends if e.get("status") != "interrupted"]
    if not ends or ends[-1].get("status") != "failed":
        return 0, ""
    error, n = ends[-1].get("error", ""), 0
    for e in reversed(ends):
        if e.get("status") != "failed" or e.get("error", "") != error:
            break
        n += 1
    return n, error


def settled(folder: Path, *, retry: bool = True, give_up_after: int = GIVE_UP_AFTER,
            problems: list[str] | None = None) -> str | None:
    """The run's final status when it needs no (more) training, else None. A failed run is
    final without ``retry``, or once it failed the same way ``give_up_after`` times in a row.
    A stored result that is unreadable or inconsistent is named in ``problems``."""
    status = stored_status(folder, problems)
    if status == "failed" and retry and (
            not give_up_after or same_failures_in_a_row(folder)[0] < give_up_after):
        return None  # give_up_after 0: always retried, as --give-up-after 0 says
    return status


def read_json_object(path: Path) -> dict[str, Any]:
    """An experiment record or suite.json: a JSON object whose fields have their types
    (:class:`lossbench.store.records.ExperimentRecord`); StoreError naming the file and
    field when it is not."""
    try:
        return ExperimentRecord.read(path)
    except MalformedRecord as exc:
        raise StoreError(str(exc).replace(": the file: expected an object",
                                          ": expected a JSON object")) from None


