"""The score table: one row per run (label x seed), built once from the results store.

Every number a report, ``lossbench compare`` and the CLI's end-of-run summary show is
read from this table (rliable's shape: runs x metrics, grouped by label), so they
cannot disagree. Rules decided here, once:

- **Status is kept.** A diverged or failed run stays in the table with its status;
  its final metrics are NaN (a diverged run's last evaluation is not a final result).
  Nothing downstream drops a seed silently: counts of diverged and failed seeds travel
  with every aggregate.
- **Steps to target** (AlgoPerf): the first evaluated step whose val CE (the fixed
  evaluation windows every eval uses) is <= the target; inf when a run never gets
  there, diverged or failed. A label's value is inf when any seed's is.
- **The target**: the suite's ``target_val_ce`` when it names one, else the baseline's
  mean final val CE x 1.05, set only when every baseline seed finished.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lossbench.analysis.diagnostics import diagnose, late_drop
from lossbench.analysis.stats import curve_auc, steps_to_target

TARGET_FACTOR = 1.05
TEMPERATURE_BOUND = 6.0  # |log T| of train.evaluation.fit_temperature's search range
FINISHED = "done"


def default_target(runs: pd.DataFrame, baseline: str,
                   factor: float = TARGET_FACTOR) -> tuple[float, str]:
    """(target, how it was set): the baseline's mean final val CE x ``factor``, or NaN
    with the reason when the baseline is missing or did not finish every seed."""
    base = runs[runs.label == baseline]
    if not len(base):
        return math.nan, f"no target: the baseline {baseline} is not in these results"
    if (base.status != FINISHED).any() or base.final_val_ce.isna().any():
        return math.nan, f"no target: the baseline {baseline} did not finish every seed"
    return (float(base.final_val_ce.mean()) * factor,
            f"{baseline}'s mean final val CE × {factor:g}")


def resolve_target(runs: pd.DataFrame, baseline: str,
                   suite_target: float | None) -> tuple[float, str]:
    if suite_target is not None:
        return float(suite_target), "named by the suite (target_val_ce)"
    return default_target(runs, baseline)


@dataclass(frozen=True)
class ScoreTable:
    """``runs``: one row per run with label, seed, status, diverged_step, wall_s, every
    final_* and avg_* metric (NaN unless finished), steps_to_target, val_ce_auc and
    late_drop."""

    runs: pd.DataFrame
    baseline: str
    target: float
    target_rule: str  # how the target was set, in words

    @property
    def labels(self) -> list[str]:
        return list(dict.fromkeys(self.runs.label))

    def per_seed(self, metric: str) -> dict[str, dict[int, float]]:
        """label -> seed -> value (NaN for a run that did not finish)."""
        return {label: dict(zip(g.seed.astype(int), g[metric].astype(float)))
                for label, g in self.runs.groupby("label", sort=False)}

    def status_counts(self, label: str) -> dict[str, int]:
        g = self.runs[self.runs.label == label]
        return {"runs": len(g), "done": int((g.status == FINISHED).sum()),
                "diverged": int((g.status == "diverged").sum()),
                "failed": int((g.status == "failed").sum())}

    def only(self, labels: list[str]) -> "ScoreTable":
        """The same table restricted to ``labels`` (target and baseline unchanged)."""
        return ScoreTable(self.runs[self.runs.label.isin(labels)].reset_index(drop=True),
                          self.baseline, self.target, self.target_rule)

    @property
    def sizes(self) -> list[str]:
        """A scale ladder's size labels, smallest first ([] for one size)."""
        if "size" not in self.runs:
            return []
        order = self.runs.groupby("size", sort=False).n_params.first().sort_values()
        return list(order.index)

    def at_size(self, size: str) -> "ScoreTable":
        """The runs of one size of a ladder, with that size's own steps-to-target target."""
        runs = self.runs[self.runs["size"] == size].reset_index(drop=True)
        target = float(runs.target.iloc[0]) if len(runs) else math.nan
        rule = str(runs.target_rule.iloc[0]) if len(runs) else self.target_rule
        return ScoreTable(runs, self.baseline, target, rule)


def _diagnoses(runs: pd.DataFrame, val: pd.DataFrame, train: pd.DataFrame) -> list[list[str]]:
    """diagnostics.diagnose of every finished run (the Runs section's notes)."""
    empty = pd.DataFrame({"step": [], "value": []})
    val_by, train_by = dict(list(val.groupby("run_id"))), dict(list(train.groupby("run_id")))
    return [diagnose(st, math.nan, val_by.get(r, empty), train_by.get(r, empty))
            if st == FINISHED else [] for r, st in zip(runs.run_id, runs.status)]


def build_scores(summary: pd.DataFrame, curves: pd.DataFrame, baseline: str,
                 suite_target: float | None = None) -> ScoreTable:
    """The score table of ``summary``'s runs (pass only the runs that count: a suite's
    final runs); ``curves`` supplies each run's val CE curve."""
    runs = summary.copy()
    if "label" not in runs:
        runs["label"] = runs["loss"]
    if "diverged_step" not in runs:
        runs["diverged_step"] = math.nan
    # a run's results: its last evaluation (final_*) and its averages over the run (avg_*)
    finals = [c for c in runs.columns if c.startswith(("final_", "avg_"))]
    unfinished = runs.status != FINISHED
    runs[finals] = runs[finals].astype(float)
    runs.loc[unfinished, finals] = math.nan
    target, rule = resolve_target(runs, baseline, suite_target)

    val = curves[curves.metric == "val_ce"].sort_values("step")
    by_run = {rid: (g.step.to_numpy(float), g.value.to_numpy(float))
              for rid, g in val.groupby("run_id")}
    empty = (np.array([]), np.array([]))
    curve = [by_run.get(r, empty) for r in runs.run_id]
    runs["steps_to_target"] = [
        steps_to_target(s, v, target) if status == FINISHED and math.isfinite(target)
        else (math.nan if not math.isfinite(target) else math.inf)
        for (s, v), status in zip(curve, runs.status)]
    runs["val_ce_auc"] = [curve_auc(s, v) if status == FINISHED else math.nan
                          for (s, v), status in zip(curve, runs.status)]
    runs["late_drop"] = [late_drop(s, v) if status == FINISHED else math.nan
                         for (s, v), status in zip(curve, runs.status)]
    if "final_temperature" in runs:  # a fit at the search's bound e^±6 is no fit
        t = runs.final_temperature.astype(float)
        runs["temperature_bound"] = np.abs(np.log(t.where(t > 0))) >= TEMPERATURE_BOUND - 1e-6
        runs.loc[runs.temperature_bound, "final_temperature"] = math.nan
    notes = _diagnoses(runs, val, curves[curves.metric == "train_ce"].sort_values("step"))
    for flag in ("plateau", "underfitting"):  # the Runs section's words, counted per run
        runs[flag] = [any(n.startswith(flag) for n in run) for run in notes]
    return ScoreTable(runs.reset_index(drop=True), baseline, target, rule)


def build_scale_scores(summary: pd.DataFrame, curves: pd.DataFrame, baseline: str,
                       suite_target: float | None, scale: dict) -> ScoreTable:
    """The score table of a scale ladder: every size's runs, each size scored on its own
    (its own target: the baseline of a 50k model is no target for a 2M one), with the
    columns a ladder adds: ``size`` (its label), ``n_params`` (``GPT.num_params``, the N of
    the FLOPs formula), ``train_flops`` (FLOPs per token x training tokens) and the
    size's ``target`` and ``target_rule``. ``scale``: the experiment record's ladder
    (lossbench.suite.scale.ScaleSpec.record). The table's own target is NaN: there is one per
    size (``at_size``)."""
    sizes = {s["label"]: s for s in scale.get("sizes", [])}
    of_run = scale.get("runs", {})
    parts = []
    for label, size in sizes.items():
        rows = summary[summary.run_id.map(of_run) == label]
        if not len(rows):
            continue
        part = build_scores(rows, curves, baseline, suite_target)
        parts.append(part.runs.assign(size=label, n_params=float(size["n_params"]),
                                      target=part.target, target_rule=part.target_rule))
    runs = pd.concat(parts, ignore_index=True) if parts else summary.iloc[:0].assign(
        size="", n_params=math.nan, target=math.nan, target_rule="")
    if "flops_per_token" in runs and "tokens" in runs:
        runs["train_flops"] = runs.flops_per_token.astype(float) * runs.tokens.astype(float)
    else:
        runs["train_flops"] = math.nan
    return ScoreTable(runs, baseline, math.nan, "one target per size")
