"""One experiment's tables: summary.csv (one row per run) and curves.csv (long form), built
from the finished run folders, and :func:`load`, the Python entry point to a results directory.

    DIR/summary.csv   the latest experiment's runs, one row each
    DIR/curves.csv    long form of the same runs: run_id, step, metric, value
    DIR/suite.json    the latest experiment (name, baseline, seeds, run ids)

``load(DIR)`` returns (summary, curves) of one experiment: the latest, or the one
``experiment=`` names; ``final_only=True`` keeps its final runs (not its tuning runs).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import pandas as pd

from lossbench.core.atomic import (
    atomic_write_json,
    atomic_write_many,
    atomic_write_text,
    sweep_temp_files,
)
from lossbench.core.config import hparam_columns
from lossbench.core.escaping import csv_text, csv_unescape_frame
from lossbench.core.locks import file_lock
from lossbench.core.paths import StoreError, read_regular_text
from lossbench.core.schema import STEP_FIELDS, TABLES_LOCK
from lossbench.store.runs import (
    DONE,
    MalformedResult,
    check_run_folder,
    label_of,
    read_result,
)

# columns that hold names, never numbers (a label "1" or "NA" must read back as written)
TEXT_COLUMNS = ("run_id", "loss", "label", "status", "notes", "error", "metric")


def summary_rows(results: list[dict]) -> pd.DataFrame:
    rows = []
    for r in results:
        row = {"run_id": r["summary"].get("run_id"), "loss": r["config"]["loss"],
               "label": label_of(r["config"]),
               "seed": r["config"]["seed"], "status": r["status"], **hparam_columns(r["config"].get("hparams", {}))}
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
                problems.append(f"{exc}; skipped")
    return results


def finished_run_ids(out: str | Path, run_ids: list[str]) -> set[str]:
    """Which of ``run_ids`` have finished: those with a DONE marker, or, in a copy of the
    tables without runs/ (what people attach to an email), those summary.csv lists."""
    out = Path(out)
    if (out / "runs").is_dir():
        return {r for r in run_ids if (out / "runs" / r / DONE).exists()}
    if not (out / "summary.csv").exists():
        return set()
    return set(run_ids) & set(_read_csv_table(out / "summary.csv", [])["run_id"])


def write_tables(out: str | Path, problems: list[str] | None = None
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(Re)build summary.csv and curves.csv from the latest experiment's finished run
    folders, together: both are replaced or neither is. Holds the directory's table lock,
    so two sweeps sharing a directory never interleave their tables, and sweeps the temp
    files of killed writers. Returns the tables as :func:`load` reads them."""
    from lossbench.store.experiments import resolve_experiment

    out = Path(out)
    with file_lock(out / TABLES_LOCK, root=out):
        sweep_temp_files(out, root=out)
        results = finished_results(out, problems, _run_ids(resolve_experiment(out)))
        texts = csv_text(summary_rows(results)), csv_text(curve_rows(results))
        atomic_write_many({out / "summary.csv": texts[0].encode(),
                           out / "curves.csv": texts[1].encode()}, root=out)
    return read_table(texts[0]), read_table(texts[1])


def _run_ids(meta: dict, final_only: bool = False) -> list[str] | None:
    from lossbench.store.experiments import run_ids_of

    return run_ids_of(meta, final_only)


def write_store_files(out: str | Path, files: dict[str, Any]) -> None:
    """Write top-level files of the store (``suite.json``, ``tuning.csv``) under the table
    lock, so another sweep sweeping temp files never removes one being written. A dict
    or list is written as JSON, a string as text."""
    with file_lock(Path(out) / TABLES_LOCK, root=out):
        for name, content in files.items():
            if isinstance(content, str):
                atomic_write_text(Path(out) / name, content, root=out)
            else:
                atomic_write_json(Path(out) / name, content, root=out)


def read_table(source: Path | str) -> pd.DataFrame:
    """A table written by :func:`write_tables` (a path, or its CSV text): text columns stay
    text ("NA", "1" and "" included), and the spreadsheet-formula quoting is undone. A path
    must be a regular file (never a FIFO: lossbench.core.paths.read_regular)."""
    csv = read_regular_text(source) if isinstance(source, Path) else source

    def handle():
        return io.StringIO(csv)

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
    summary = _read_csv_table(out / "summary.csv", problems)
    curves = _read_csv_table(out / "curves.csv", problems) if (out / "curves.csv").exists() \
        else pd.DataFrame(columns=["run_id", "step", "metric", "value"])
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


_NEEDED = {"summary.csv": ("run_id", "loss", "seed", "status"),
           "curves.csv": ("run_id", "step", "metric", "value")}


def _read_csv_table(path: Path, problems: list[str] | None) -> pd.DataFrame:
    """summary.csv or curves.csv of a copy of the tables, checked like a run's record: the
    columns a report needs present (else StoreError naming the file), every other column
    numeric or text as written; a numeric column holding text is dropped with a problem."""
    try:
        frame = read_table(path)
    except (ValueError, pd.errors.ParserError) as exc:  # EmptyDataError is a ValueError
        raise StoreError(f"{path}: not a lossbench table ({str(exc).splitlines()[0][:200]})"
                         ) from None
    missing = [c for c in _NEEDED.get(path.name, ()) if c not in frame]
    if missing:
        raise StoreError(f"{path}: column {missing[0]}: missing")
    if "label" not in frame and path.name == "summary.csv":
        frame["label"] = frame["loss"]
    for column in [c for c in frame.columns if c not in TEXT_COLUMNS]:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            if column in _NEEDED.get(path.name, ()):
                raise StoreError(f"{path}: column {column}: expected numbers")
            frame = frame.drop(columns=[column])
            if problems is not None:
                problems.append(f"{path}: column {column}: expected numbers; skipped")
    return frame
