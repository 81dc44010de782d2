"""The results store: one folder per run, written atomically, and one experiment's tables.

    DIR/runs/<run_id>/config.json  the run's resolved config
    DIR/runs/<run_id>/checkpoint.pt  while running (removed when finished)
    DIR/runs/<run_id>/metrics.jsonl  its evaluations as they happen (lossbench.store.metrics_log)
    DIR/runs/<run_id>/result.json  steps, evals and summary; written last, atomically
    DIR/runs/<run_id>/DONE         completion marker (status inside)
    DIR/runs/<run_id>/traceback.txt  for failed runs (the latest attempt's)
    DIR/runs/<run_id>/attempts.jsonl every attempt's start and end (status, error, host, pid)
    DIR/runs/<run_id>/.lock        held while a process trains the run (flock)
    DIR/experiments/<id>.json      one per suite invocation (see lossbench.store.experiments)
    DIR/suite.json                 the latest experiment (name, baseline, seeds, run ids)
    DIR/summary.csv                the latest experiment's runs, one row each
    DIR/curves.csv                 long form of the same runs: run_id, step, metric, value

The runs folder is a cache shared by every suite written into DIR (same config, same run);
``load(DIR)`` returns (summary, curves) of one experiment: the latest, or the one
``experiment=`` names; ``final_only=True`` keeps its final runs (not its tuning runs).
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from lossbench.core.atomic import (atomic_write_json, atomic_write_many, atomic_write_text,
                              sweep_temp_files)
from lossbench.train.checkpoint import CHECKPOINT
from lossbench.core.config import display_name
from lossbench.core.escaping import csv_text, csv_unescape_frame
from lossbench.core.locks import file_lock
from lossbench.core.paths import inside
from lossbench.core.schema import STEP_FIELDS

TABLES_LOCK = ".tables.lock"
# columns that hold names, never numbers (a label "1" or "NA" must read back as written)
TEXT_COLUMNS = ("run_id", "loss", "label", "status", "notes", "error", "metric")

DONE = "DONE"
ATTEMPTS = "attempts.jsonl"
STATUSES = ("done", "diverged", "failed")
SETTLED = ("done", "diverged")  # results; a failed run is retried by default
GIVE_UP_AFTER = 2  # a run that failed the same way this many times in a row is not retried


class StoreError(OSError):
    """A results directory that cannot be used as it is (one line, names the path)."""


class MalformedResult(ValueError):
    """A result.json that is not a lossbench result (garbage, ``{}``, wrong types)."""


def label_of(config: dict) -> str:
    """A stored run config's display name (``RunConfig.display_name``)."""
    return display_name(config.get("label", ""), config["loss"])


def run_dir(out: str | Path, run_id: str) -> Path:
    return Path(out) / "runs" / run_id


def check_run_folder(out: str | Path, folder: Path) -> None:
    """Refuse a run folder that is a symlink leading outside the results directory, or a
    file where a folder should be: a shared results directory must not make us read or
    write elsewhere."""
    if folder.is_symlink() and not inside(out, folder):
        raise StoreError(f"{folder}: a symlink pointing outside {out}; refusing to use it")
    if folder.exists() and not folder.is_dir():
        raise StoreError(f"{folder}: expected a run folder, found a file")


def write_result(folder: Path, config: dict, status: str, summary: dict,
                 steps: dict | None = None, evals: list | None = None,
                 traceback_text: str | None = None) -> None:
    """Persist a finished run: result first, marker last, so a kill leaves no half result.
    A failed run keeps its checkpoint: the retry resumes from it."""
    folder.mkdir(parents=True, exist_ok=True)
    if traceback_text is not None:
        atomic_write_text(folder / "traceback.txt", traceback_text)
    atomic_write_json(folder / "result.json", {"config": config, "status": status,
                                               "summary": summary, "steps": steps or {},
                                               "evals": evals or []})
    atomic_write_text(folder / DONE, status + "\n")
    if status != "failed":
        (folder / CHECKPOINT).unlink(missing_ok=True)


def read_result(folder: Path) -> dict[str, Any]:
    """A run's result.json, checked to have a result's shape (it may come from anyone)."""
    path = folder / "result.json"
    try:
        r = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedResult(f"{path}: not JSON ({exc})") from None
    problems = []
    if not isinstance(r, dict):
        raise MalformedResult(f"{path}: expected a JSON object")
    if r.get("status") not in STATUSES:
        problems.append(f"status {r.get('status')!r}")
    config, summary = r.get("config"), r.get("summary")
    if not isinstance(config, dict) or not isinstance(config.get("loss"), str) or \
            not isinstance(config.get("seed"), int):
        problems.append("config")
    if not isinstance(summary, dict):
        problems.append("summary")
    if not isinstance(r.get("steps", {}), dict) or not isinstance(r.get("evals", []), list):
        problems.append("steps/evals")
    if problems:
        raise MalformedResult(f"{path}: not a lossbench result (bad {', '.join(problems)})")
    return r


def stored_status(folder: Path) -> str | None:
    """The status of a finished run; None when unfinished, or when its result is unreadable
    (then the run is simply run again)."""
    if not (folder / DONE).exists():
        return None
    try:
        return read_result(folder)["status"]
    except (OSError, MalformedResult):
        return None


def record_attempt(folder: Path, event: dict[str, Any]) -> None:
    """Append one line to the run's attempt history (a single O_APPEND write: lines from
    concurrent writers never interleave)."""
    line = (json.dumps(event, sort_keys=True, default=str) + "\n").encode()
    fd = os.open(folder / ATTEMPTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def attempts(folder: Path) -> list[dict[str, Any]]:
    """The run's attempt history, oldest first; unreadable lines are skipped."""
    try:
        lines = (folder / ATTEMPTS).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    events = []
    for line in lines:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


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


def settled(folder: Path, *, retry: bool = True, give_up_after: int = GIVE_UP_AFTER) -> str | None:
    """The run's final status when it needs no (more) training, else None. A failed run is
    final without ``retry``, or once it failed the same way ``give_up_after`` times in a row."""
    status = stored_status(folder)
    if status == "failed" and retry and (
            not give_up_after or same_failures_in_a_row(folder)[0] < give_up_after):
        return None  # give_up_after 0: always retried, as --give-up-after 0 says
    return status


def _flatten_hparams(config: dict) -> dict[str, Any]:
    return {f"hp_{k}": v for k, v in config.get("hparams", {}).items()}


def summary_rows(results: list[dict]) -> pd.DataFrame:
    rows = []
    for r in results:
        row = {"run_id": r["summary"].get("run_id"), "loss": r["config"]["loss"],
               "label": label_of(r["config"]),
               "seed": r["config"]["seed"], "status": r["status"], **_flatten_hparams(r["config"])}
        row.update({k: v for k, v in r["summary"].items() if k not in row})
        if "final_val_ppl" not in row and "final_val_ce" in row:
            row["final_val_ppl"] = math.exp(min(row["final_val_ce"], 700.0))
        rows.append(row)
    first = ["run_id", "loss", "label", "seed", "status", "steps", "final_train_loss", "final_val_ce",
             "final_val_ppl", "wall_s", "tokens_per_s"]
    frame = pd.DataFrame(rows)
    for col in first:
        if col not in frame:
            frame[col] = math.nan
    return frame[first + [c for c in frame.columns if c not in first]]


def curve_rows(results: list[dict]) -> pd.DataFrame:
    """Long form: per-step metrics and every numeric eval metric, one row per value."""
    parts = []
    for r in results:
        run_id, steps = r["summary"].get("run_id"), r.get("steps") or {}
        if steps.get("step"):
            frame = pd.DataFrame({k: steps[k] for k in STEP_FIELDS if k in steps})
            parts.append(frame.melt(id_vars="step", var_name="metric").assign(run_id=run_id))
        # one frame per run, not per evaluation: load() builds these for every report
        evals = [(run_id, e["step"], k, float(v)) for e in r.get("evals", [])
                 for k, v in e.items()
                 if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)]
        if evals:
            parts.append(pd.DataFrame(evals, columns=["run_id", "step", "metric", "value"]))
    if not parts:
        return pd.DataFrame(columns=["run_id", "step", "metric", "value"])
    curves = pd.concat(parts, ignore_index=True)[["run_id", "step", "metric", "value"]]
    curves["value"] = curves["value"].astype(float)
    return curves


def finished_results(out: str | Path, problems: list[str] | None = None,
                     run_ids: list[str] | None = None) -> list[dict]:
    """The readable results under ``out``/runs (of ``run_ids`` only, when given: plain
    names, see experiments.run_ids_of). A run folder that is unsafe (a symlink out of
    ``out``) or whose result is malformed is left out and named in ``problems``."""
    runs = Path(out) / "runs"
    if not runs.is_dir():
        return []
    folders = sorted(runs.iterdir()) if run_ids is None else \
        [runs / run_id for run_id in sorted(set(run_ids))]
    results = []
    for folder in folders:
        if not (folder / DONE).exists():
            continue
        try:
            check_run_folder(out, folder)
            results.append(read_result(folder))
        except (OSError, MalformedResult) as exc:
            if problems is not None:
                problems.append(f"run {folder.name} skipped: {exc}")
    return results


def write_tables(out: str | Path, problems: list[str] | None = None
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(Re)build summary.csv and curves.csv from the latest experiment's finished run
    folders, together: both are replaced or neither is. Holds the directory's table lock,
    so two sweeps sharing a directory never interleave their tables, and sweeps the temp
    files of killed writers. Returns the tables as :func:`load` reads them."""
    from lossbench.store.experiments import resolve_experiment

    out = Path(out)
    with file_lock(out / TABLES_LOCK):
        sweep_temp_files(out)
        results = finished_results(out, problems, _run_ids(resolve_experiment(out)))
        texts = csv_text(summary_rows(results)), csv_text(curve_rows(results))
        atomic_write_many({out / "summary.csv": texts[0].encode(),
                           out / "curves.csv": texts[1].encode()})
    return read_table(texts[0]), read_table(texts[1])


def _run_ids(meta: dict, final_only: bool = False) -> list[str] | None:
    from lossbench.store.experiments import run_ids_of

    return run_ids_of(meta, final_only)


def write_store_files(out: str | Path, files: dict[str, Any]) -> None:
    """Write top-level files of the store (``suite.json``, ``tuning.csv``) under the table
    lock, so another sweep sweeping temp files never removes one being written. A dict
    or list is written as JSON, a string as text."""
    with file_lock(Path(out) / TABLES_LOCK):
        for name, content in files.items():
            if isinstance(content, str):
                atomic_write_text(Path(out) / name, content)
            else:
                atomic_write_json(Path(out) / name, content)


def suite_meta(out: str | Path) -> dict[str, Any]:
    """suite.json: the suite as resolved, its final run ids and, if tuned, the tuning.
    ``{}`` when absent; StoreError when it is not a JSON object (it may come from anyone)."""
    path = Path(out) / "suite.json"
    return read_json_object(path) if path.exists() else {}


def read_json_object(path: Path) -> dict[str, Any]:
    """A store file that must hold a JSON object; StoreError naming it when it does not."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path}: not JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise StoreError(f"{path}: expected a JSON object")
    return meta


def read_table(source: Path | str) -> pd.DataFrame:
    """A table written by :func:`write_tables` (a path, or its CSV text): text columns stay
    text ("NA", "1" and "" included), and the spreadsheet-formula quoting is undone."""
    def handle():
        return io.StringIO(source) if isinstance(source, str) else source

    columns = pd.read_csv(handle(), nrows=0).columns
    text = [c for c in columns if c in TEXT_COLUMNS]
    missing = {c: [""] for c in columns if c not in TEXT_COLUMNS}  # how to_csv writes NaN
    frame = pd.read_csv(handle(), dtype={c: str for c in text}, keep_default_na=False,
                        na_values=missing)
    return csv_unescape_frame(frame)


def read_experiment(out: str | Path, meta: dict, *, final_only: bool = False,
                    problems: list[str] | None = None
                    ) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """(summary, curves, results) of the experiment ``meta``'s finished runs, read from
    their folders: so a sweep in progress shows the runs finished so far, and a run
    another suite finished since counts. A directory of tables only (copied without its
    runs, or hand-made) is read from summary.csv / curves.csv (no results then). The
    frames equal what :func:`read_table` gives for the tables written from them."""
    out = Path(out)
    run_ids = _run_ids(meta, final_only)
    if (out / "runs").is_dir():
        results = finished_results(out, problems, run_ids)
        summary = read_table(csv_text(summary_rows(results)))
        curves = read_table(csv_text(curve_rows(results)))
        return summary, curves, results
    if not (out / "summary.csv").exists():
        raise FileNotFoundError(f"{out}: no runs/ and no summary.csv "
                                f"(not a lossbench results directory?)")
    summary, curves = read_table(out / "summary.csv"), read_table(out / "curves.csv")
    if "label" not in summary:
        summary["label"] = summary["loss"]
    if run_ids is not None:
        summary = summary[summary.run_id.isin(set(run_ids))].reset_index(drop=True)
        curves = curves[curves.run_id.isin(set(run_ids))].reset_index(drop=True)
    return summary, curves, []


def load(out: str | Path, *, experiment: str | None = None, final_only: bool = False,
         problems: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary, curves) DataFrames of one experiment of a results directory: the latest,
    or the one ``experiment`` names (its id, or a unique start of it; `lossbench runs DIR`
    lists them). Its tuning runs are included unless ``final_only``. Runs left out (a
    malformed result, an unsafe folder) are named in ``problems``."""
    from lossbench.store.experiments import resolve_experiment

    meta = resolve_experiment(out, experiment)
    summary, curves, _ = read_experiment(out, meta, final_only=final_only, problems=problems)
    return summary, curves
