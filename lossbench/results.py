"""The results store: one folder per run, written atomically, and the suite tables.

    DIR/suite.json                 the suite as resolved (name, baseline, seeds, path)
    DIR/runs/<run_id>/config.json  the run's resolved config
    DIR/runs/<run_id>/checkpoint.pt  while running (removed when finished)
    DIR/runs/<run_id>/result.json  steps, evals and summary; written last, atomically
    DIR/runs/<run_id>/DONE         completion marker (status inside)
    DIR/runs/<run_id>/traceback.txt  for failed runs
    DIR/summary.csv                one row per run
    DIR/curves.csv                 long form: run_id, step, metric, value

``load(DIR)`` returns (summary, curves) as pandas DataFrames, every finished run
in the folder; ``load(DIR, final_only=True)`` keeps the suite's final runs (those
listed in suite.json: not the tuning runs, not runs of an earlier suite version).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from lossbench.atomic import atomic_write_json, atomic_write_text
from lossbench.checkpoint import CHECKPOINT

DONE = "DONE"
STEP_METRICS = ("train_loss", "train_ce", "grad_norm", "clipped", "lr", "tokens", "wall_s")


def label_of(config: dict) -> str:
    """A stored run config's display name (``RunConfig.display_name``): its label, else its loss."""
    return config.get("label") or config["loss"]


def run_dir(out: str | Path, run_id: str) -> Path:
    return Path(out) / "runs" / run_id


def is_finished(folder: Path) -> bool:
    return (folder / DONE).exists() and (folder / "result.json").exists()


def write_result(folder: Path, config: dict, status: str, summary: dict,
                 steps: dict | None = None, evals: list | None = None,
                 traceback_text: str | None = None) -> None:
    """Persist a finished run: result first, marker last, so a kill leaves no half result."""
    folder.mkdir(parents=True, exist_ok=True)
    if traceback_text is not None:
        atomic_write_text(folder / "traceback.txt", traceback_text)
    atomic_write_json(folder / "result.json", {"config": config, "status": status,
                                               "summary": summary, "steps": steps or {},
                                               "evals": evals or []})
    atomic_write_text(folder / DONE, status + "\n")
    (folder / CHECKPOINT).unlink(missing_ok=True)


def read_result(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "result.json").read_text())


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
            frame = pd.DataFrame({k: steps[k] for k in ("step", *STEP_METRICS) if k in steps})
            parts.append(frame.melt(id_vars="step", var_name="metric").assign(run_id=run_id))
        for e in r.get("evals", []):
            vals = [(k, float(v)) for k, v in e.items()
                    if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)]
            parts.append(pd.DataFrame(vals, columns=["metric", "value"]).assign(
                step=e["step"], run_id=run_id))
    if not parts:
        return pd.DataFrame(columns=["run_id", "step", "metric", "value"])
    curves = pd.concat(parts, ignore_index=True)[["run_id", "step", "metric", "value"]]
    curves["value"] = curves["value"].astype(float)
    return curves


def finished_results(out: str | Path) -> list[dict]:
    runs = Path(out) / "runs"
    if not runs.is_dir():
        return []
    return [read_result(d) for d in sorted(runs.iterdir()) if is_finished(d)]


def write_tables(out: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(Re)build summary.csv and curves.csv from the finished run folders, atomically."""
    results = finished_results(out)
    summary, curves = summary_rows(results), curve_rows(results)
    atomic_write_text(Path(out) / "summary.csv", summary.to_csv(index=False))
    atomic_write_text(Path(out) / "curves.csv", curves.to_csv(index=False))
    return summary, curves


def suite_meta(out: str | Path) -> dict[str, Any]:
    """suite.json: the suite as resolved, its final run ids and, if tuned, the tuning."""
    path = Path(out) / "suite.json"
    return json.loads(path.read_text()) if path.exists() else {}


def load(out: str | Path, *, final_only: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary, curves) DataFrames of a results directory."""
    out = Path(out)
    if not (out / "summary.csv").exists():
        raise FileNotFoundError(f"{out}: no summary.csv (not a lossbench results directory?)")
    summary, curves = pd.read_csv(out / "summary.csv"), pd.read_csv(out / "curves.csv")
    if "label" not in summary:
        summary["label"] = summary["loss"]
    run_ids = suite_meta(out).get("run_ids")
    if final_only and run_ids:
        keep = set(run_ids)
        summary = summary[summary.run_id.isin(keep)].reset_index(drop=True)
        curves = curves[curves.run_id.isin(keep)].reset_index(drop=True)
    return summary, curves
