"""Across suites: each suite is a workload (AlgoPerf). Computed tables only; no drawing.

For loss l on workload w, t(l, w) is the steps to reach the workload's target
val CE (the suite's `target_val_ce`, or by default the best loss's mean final
val CE x 1.05, among losses with every seed finished), averaged over seeds, and infinite when any seed never reaches it,
diverges or fails, or when the loss was not run on that workload. The ratio
r(l, w) = t(l, w) / min_l' t(l', w) (infinite when no loss reached the target),
the performance profile rho_l(tau) = fraction of workloads with r(l, w) <= tau,
and the score is its normalized area over [1, tau_max]:

    score_l = 1/(tau_max - 1) * integral_1^tau_max rho_l(tau) dtau
            = mean_w max(0, tau_max - r(l, w)) / (tau_max - 1)

so 1 means fastest on every workload and 0 means never within tau_max of the best.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from lossbench.report.tables import group_key, per_run_curve_metrics

TAU_MAX = 4.0


def best_loss_target(summary: pd.DataFrame, factor: float = 1.05) -> float:
    """The best label's mean final val CE x factor, among labels whose every seed finished
    (a loss that diverged on a seed cannot set a target the others must reach)."""
    ok = summary.assign(_key=group_key(summary)).groupby("_key").filter(
        lambda g: (g.status == "done").all())
    if not len(ok):
        return math.nan
    return float(ok.groupby("_key").final_val_ce.mean().min()) * factor


def workload_times(summary: pd.DataFrame, curves: pd.DataFrame,
                   target: float | None = None) -> tuple[pd.DataFrame, float]:
    """Per label: steps_to_target (seed mean; inf if any seed misses) and mean final val CE."""
    target = best_loss_target(summary) if target is None else float(target)
    runs = per_run_curve_metrics(summary, curves, target)
    rows = []
    for label, g in runs.groupby(group_key(runs), sort=False):
        done = g[g.status == "done"]
        steps = done.steps_to_target.astype(float)
        missed = len(done) < len(g) or not len(done) or not np.isfinite(steps).all()
        rows.append({"label": label, "runs": len(g),
                     "steps_to_target": math.inf if missed else float(steps.mean()),
                     "final_val_ce": float(done.final_val_ce.mean()) if len(done) else math.nan})
    return pd.DataFrame(rows), target


def ratios(times: pd.DataFrame) -> pd.DataFrame:
    """times: label x workload steps-to-target (NaN: not run) -> ratio to each workload's best."""
    t = times.astype(float).fillna(math.inf).to_numpy()
    best = t.min(axis=0)  # per workload
    reached = np.isfinite(best) & (best > 0)
    with np.errstate(invalid="ignore"):
        r = np.where(reached[None, :], t / np.where(reached, best, 1.0)[None, :], math.inf)
    # best == 0: the target holds at step 0, the initialization every loss shares
    r = np.where((best == 0)[None, :], np.where(t == 0, 1.0, math.inf), r)
    r[np.isnan(r)] = math.inf
    return pd.DataFrame(r, index=times.index, columns=times.columns)


def profile(ratio: pd.DataFrame, tau_max: float = TAU_MAX) -> pd.DataFrame:
    """Long table (label, tau, rho) at every breakpoint in [1, tau_max], for a step plot."""
    finite = ratio.to_numpy()[np.isfinite(ratio.to_numpy())]
    taus = sorted({1.0, tau_max, *(float(r) for r in finite if 1.0 <= r <= tau_max)})
    rows = [{"label": label, "tau": tau, "rho": float((ratio.loc[label] <= tau).mean())}
            for label in ratio.index for tau in taus]
    return pd.DataFrame(rows)


def profile_score(ratio: pd.DataFrame, tau_max: float = TAU_MAX) -> pd.Series:
    """Normalized area under rho over [1, tau_max] (closed form, see the module docstring)."""
    r = ratio.clip(lower=1.0)
    return ((tau_max - r).clip(lower=0.0) / (tau_max - 1.0)).mean(axis=1).rename("score")


@dataclass(frozen=True)
class RankResult:
    ranks: pd.DataFrame  # label x workload ranks (1 = best), plus mean_rank
    statistic: float
    p_value: float
    note: str


def rank_across_workloads(values: pd.DataFrame) -> RankResult:
    """values: label x workload, lower is better (NaN/inf rank last, ties averaged).

    Friedman's test (losses as treatments, workloads as blocks) over the losses run
    on every workload, when there are >= 3 workloads and >= 3 such losses.
    """
    filled = values.astype(float).replace(-math.inf, math.nan).fillna(math.inf)
    ranks = filled.apply(lambda col: pd.Series(stats.rankdata(col), index=col.index), axis=0)
    ranks["mean_rank"] = ranks.mean(axis=1)
    ranks = ranks.sort_values("mean_rank")
    complete = values.replace([math.inf, -math.inf], math.nan).dropna()
    n_work, n_loss = values.shape[1], len(complete)
    if n_work < 3 or n_loss < 3:
        return RankResult(ranks, math.nan, math.nan,
                          f"Friedman test not run: needs >= 3 workloads and >= 3 losses finished on "
                          f"all of them (have {n_work} workloads, {n_loss} losses)")
    res = stats.friedmanchisquare(*(complete.loc[label].to_numpy() for label in complete.index))
    return RankResult(ranks, float(res.statistic), float(res.pvalue),
                      f"Friedman χ² over {n_loss} losses × {n_work} workloads")
