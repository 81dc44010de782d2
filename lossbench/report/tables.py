"""Computed tables of a report, from the results store (pandas in, pandas out; no drawing).

Runs are grouped by ``label`` (the loss name unless the suite gave one), so a
hyperparameter grid or a fine-tuned variant is its own row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from lossbench.report.stats import (bootstrap_ci, curve_auc, holm, mean_ranks, paired_comparison,
                                    steps_to_target)

# (column in summary.csv, header, lower is better?)
HEADLINE = [
    ("final_val_ce", "val CE", True),
    ("final_val_ce_full", "val CE (whole split)", True),
    ("final_val_ppl", "perplexity", True),
    ("final_val_ce_calibrated", "calibrated CE", True),
    ("final_val_acc", "accuracy", False),
    ("final_ece", "ECE", True),
    ("final_excess_ce", "excess over floor", True),
    ("final_seq_rep_4", "seq-rep-4", True),
    ("final_rep", "rep", True),
    ("final_wrep", "wrep", True),
    ("final_uniq", "uniq", False),
    ("steps_to_target", "steps to target", True),
    ("val_ce_auc", "AUC val CE", True),
    ("tokens_per_s", "tokens/s", False),
]


def group_key(summary: pd.DataFrame) -> pd.Series:
    return summary["label"] if "label" in summary else summary["loss"]


def _diverged_as(runs: pd.DataFrame, metric: str, value: float) -> pd.DataFrame:
    """Diverged runs get ``value`` for ``metric``: their last evaluation is not a final result."""
    runs = runs.copy()
    runs.loc[runs.status == "diverged", metric] = value
    return runs


def default_target(summary: pd.DataFrame, baseline: str, factor: float = 1.05) -> float:
    """AlgoPerf-style target: the baseline's mean final val CE x 1.05."""
    base = summary[(group_key(summary) == baseline) & summary.final_val_ce.notna()]
    return float(base.final_val_ce.mean()) * factor if len(base) else math.nan


def per_run_curve_metrics(summary: pd.DataFrame, curves: pd.DataFrame,
                          target: float) -> pd.DataFrame:
    """Adds steps_to_target and val_ce_auc columns, computed from each run's val CE curve."""
    val = curves[curves.metric == "val_ce"].sort_values("step")
    by_run = {rid: g for rid, g in val.groupby("run_id")}
    out = summary.copy()
    out["steps_to_target"] = [
        steps_to_target(by_run[r].step.tolist(), by_run[r].value.tolist(), target)
        if r in by_run and s != "failed" else math.nan
        for r, s in zip(out.run_id, out.status)]
    out["val_ce_auc"] = [curve_auc(by_run[r].step.tolist(), by_run[r].value.tolist())
                         if r in by_run else math.nan for r in out.run_id]
    return out


@dataclass(frozen=True)
class Headline:
    table: pd.DataFrame  # one row per label: for each metric mean, low, high; plus n, status
    best: dict[str, str]  # column -> label with the best mean
    target: float


def headline(summary: pd.DataFrame, curves: pd.DataFrame, baseline: str,
             target: float | None = None) -> Headline:
    """Per label: mean and bootstrap CI of each metric; ``target`` defaults to baseline x 1.05."""
    target = default_target(summary, baseline) if target is None else float(target)
    runs = per_run_curve_metrics(summary, curves, target)
    rows = []
    for label, group in runs.groupby(group_key(runs), sort=False):
        usable = group[group.status == "done"]  # a diverged run's last eval is no final result
        row = {"label": label, "runs": len(group),
               "diverged": int((group.status == "diverged").sum()),
               "failed": int((group.status == "failed").sum())}
        for col, _, _ in HEADLINE:
            if col not in usable:
                continue
            values = usable[col].astype(float).tolist()
            if col == "steps_to_target" and any(v == math.inf for v in values):
                # a seed that never reached the target makes the loss's count infinite (AlgoPerf)
                row.update({col: math.inf, f"{col}_low": math.nan, f"{col}_high": math.nan})
                continue
            ci = bootstrap_ci(values)
            row.update({col: ci.mean, f"{col}_low": ci.low, f"{col}_high": ci.high})
        rows.append(row)
    table = pd.DataFrame(rows)
    best = {}
    for col, _, lower in HEADLINE:
        if col in table and table[col].notna().any():
            series = table[col].replace([math.inf, -math.inf], math.nan)
            if series.notna().any():
                best[col] = table.loc[series.idxmin() if lower else series.idxmax(), "label"]
    return Headline(table, best, target)


def baseline_comparisons(summary: pd.DataFrame, baseline: str,
                         metric: str = "final_val_ce") -> pd.DataFrame:
    """Each label vs the baseline on ``metric``, paired by seed, Holm-corrected across labels."""
    runs = _diverged_as(summary[summary.status != "failed"], metric, math.nan)
    keyed = runs.assign(_key=group_key(runs))
    per_seed = {label: dict(zip(g.seed, g[metric].astype(float)))
                for label, g in keyed.groupby("_key", sort=False)}
    if baseline not in per_seed:
        return pd.DataFrame(columns=["label", "n_pairs", "mean_difference", "p_value",
                                     "p_holm", "test", "note"])
    rows = []
    for label, values in per_seed.items():
        if label == baseline:
            continue
        c = paired_comparison(per_seed[baseline], values)
        rows.append({"label": label, "n_pairs": c.n_pairs, "mean_difference": c.mean_difference,
                     "p_value": c.p_value, "test": c.test, "note": c.note})
    table = pd.DataFrame(rows)
    if len(table):
        table.insert(4, "p_holm", holm(table.p_value.tolist()))
    return table


def rank_table(summary: pd.DataFrame, metric: str = "final_val_ce") -> pd.DataFrame:
    """Mean rank across seeds (1 = best), failed runs excluded, diverged ranked last."""
    runs = _diverged_as(summary[summary.status != "failed"], metric, math.inf)
    keyed = runs.assign(_key=group_key(runs))
    table = {label: dict(zip(g.seed, g[metric].astype(float).fillna(math.inf)))
             for label, g in keyed.groupby("_key", sort=False)}
    ranks = mean_ranks(table)
    return (pd.DataFrame({"label": list(ranks), "mean_rank": list(ranks.values())})
            .sort_values("mean_rank").reset_index(drop=True))
