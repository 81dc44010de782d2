"""Across suites: each suite is a workload (AlgoPerf). Computed tables only; no drawing.

For loss l on workload w, t(l, w) is the steps to reach the workload's target
val CE (the suite's `target_val_ce`, or by default its baseline's mean final val
CE x 1.05: the rule of lossbench.analysis.scores, the same as a suite's report),
averaged over seeds, and infinite when any seed never reaches it,
diverges or fails, or when the loss was not run on that workload. The ratio
r(l, w) = t(l, w) / min_l' t(l', w) (infinite when no loss reached the target),
the performance profile rho_l(tau) = fraction of workloads with r(l, w) <= tau,
and the score is its normalized area over [1, tau_max]:

    score_l = 1/(tau_max - 1) * integral_1^tau_max rho_l(tau) dtau
            = mean_w max(0, tau_max - r(l, w)) / (tau_max - 1)

so 1 means fastest on every workload and 0 means never within tau_max of the best.

Intervals (rliable): a stratified bootstrap redraws the seeds of each loss on each
workload, independently, and recomputes ratios, rho and scores from the redrawn means;
percentile intervals over the replicates. With fewer than 5 seeds a stratum has few
distinct means, so the result is a range, not a 95% interval (stats.MIN_SEEDS_FOR_CI).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from lossbench.analysis.scores import ScoreTable, build_scores
from lossbench.analysis.stats import MIN_SEEDS_FOR_CI

TAU_MAX = 4.0


def label_times(scores: ScoreTable) -> pd.DataFrame:
    """Per label of one workload: runs, steps_to_target (seed mean; inf if any seed misses,
    diverges or fails; NaN when the workload has no target) and final_val_ce (seed mean,
    NaN unless every seed finished: the mean of the seeds that survived would rank a loss
    that diverged on one seed by its lucky ones)."""
    rows = []
    for label, g in scores.runs.groupby("label", sort=False):
        steps, final = g.steps_to_target.astype(float), g.final_val_ce.astype(float)
        rows.append({"label": label, "runs": len(g),
                     "steps_to_target": float(steps.mean()) if np.isfinite(steps).all()
                     else (math.inf if steps.notna().any() else math.nan),
                     "final_val_ce": float(final.mean()) if final.notna().all() else math.nan})
    return pd.DataFrame(rows)


def workload_times(summary: pd.DataFrame, curves: pd.DataFrame, baseline: str,
                   target: float | None = None) -> tuple[pd.DataFrame, float]:
    """:func:`label_times` of the score table of ``summary`` (the same rule as a suite's
    report), and the target it used."""
    scores = build_scores(summary, curves, baseline, target)
    return label_times(scores), scores.target


def _ratio_array(t: np.ndarray) -> np.ndarray:
    """t: (..., label, workload) steps, inf where not reached -> ratio to each workload's
    best; one function for the point estimate and every bootstrap replicate."""
    best = t.min(axis=-2, keepdims=True)  # per workload
    reached = np.isfinite(best) & (best > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(reached, t / np.where(reached, best, 1.0), math.inf)
    # best == 0: the target holds at step 0, the initialization every loss shares
    r = np.where(best == 0, np.where(t == 0, 1.0, math.inf), r)
    r[np.isnan(r)] = math.inf
    return r


def _score_array(r: np.ndarray, tau_max: float) -> np.ndarray:
    """(..., label, workload) ratios -> (..., label) normalized areas (module docstring)."""
    return (np.clip(tau_max - np.maximum(r, 1.0), 0.0, None) / (tau_max - 1.0)).mean(axis=-1)


def ratios(times: pd.DataFrame) -> pd.DataFrame:
    """times: label x workload steps-to-target (NaN: not run) -> ratio to each workload's best."""
    r = _ratio_array(times.astype(float).fillna(math.inf).to_numpy())
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
    return pd.Series(_score_array(ratio.to_numpy(float), tau_max), index=ratio.index,
                     name="score")


def identical_profiles(prof: pd.DataFrame) -> list[list[str]]:
    """Groups (>= 2 labels, in table order) whose rho is the same at every tau of
    :func:`profile`'s table: lines a reader cannot tell apart on the plot. rho is a count
    over workloads divided by their number, so equal profiles compare equal exactly."""
    groups: dict[tuple, list[str]] = {}
    for label, g in prof.groupby("label", sort=False):
        groups.setdefault(tuple(g.sort_values("tau").rho), []).append(label)
    return [labels for labels in groups.values() if len(labels) > 1]


@dataclass(frozen=True)
class ProfileBootstrap:
    """Stratified-bootstrap intervals of the scores and the profile curves (rliable's
    ``get_interval_estimates`` / ``create_performance_profile``)."""

    scores: pd.DataFrame    # label, score, score_low, score_high
    profiles: pd.DataFrame  # label, tau, rho, rho_low, rho_high (rho: the point profile)
    strata: pd.DataFrame    # label, workload, seeds, p_unreached (share of resampled means = inf)
    samples: np.ndarray     # (n_resamples, label) bootstrap scores, labels in scores' order
    min_seeds: int          # fewest seeds in any (label, workload) that was run
    interval: str           # "95% CI", or "bootstrap range (n<5 seeds)" when min_seeds < 5
    n_resamples: int


def band_taus(prof: pd.DataFrame, tau_max: float = TAU_MAX, points: int = 121) -> np.ndarray:
    """The point profile's breakpoints plus an even grid: a resampled profile steps
    between the point one's breakpoints, and its band must show those steps too."""
    return np.union1d(prof.tau.to_numpy(float), np.linspace(1.0, tau_max, points))


def bootstrap_profiles(per_seed: pd.DataFrame, labels: list[str], workloads: list[str], *,
                       tau_max: float = TAU_MAX, taus: np.ndarray | None = None,
                       n_resamples: int = 2000, confidence: float = 0.95,
                       seed: int = 0) -> ProfileBootstrap:
    """Percentile intervals of each label's score and of rho(tau), by stratified bootstrap.

    ``per_seed``: one row per run (label, workload, steps_to_target; NaN, no target, counts
    as inf as in :func:`ratios`). Each replicate redraws every (label, workload) stratum's
    seeds with replacement, independently (the seeds of a loss on a workload are its only
    repeats; workloads are fixed, as in rliable), takes the stratum's mean (inf if a drawn
    seed is inf) and recomputes ratios, profiles and scores from those means. A label not
    run on a workload is inf there in every replicate. ``taus``: default :func:`band_taus`.
    """
    rng = np.random.default_rng(seed)
    t = np.full((n_resamples, len(labels), len(workloads)), math.inf)
    point = np.full((len(labels), len(workloads)), math.inf)
    strata = []
    for j, w in enumerate(workloads):  # fixed order, so a seed gives the same draws
        for i, label in enumerate(labels):
            rows = per_seed[(per_seed.workload == w) & (per_seed.label == label)]
            v = rows.steps_to_target.to_numpy(float)
            v = np.where(np.isnan(v), math.inf, v)  # (nan_to_num would make inf finite)
            if not len(v):
                continue
            t[:, i, j] = v[rng.integers(0, len(v), size=(n_resamples, len(v)))].mean(axis=1)
            point[i, j] = v.mean()
            strata.append({"label": label, "workload": w, "seeds": len(v),
                           "p_unreached": float(np.isinf(t[:, i, j]).mean())})
    r_point, r_boot = _ratio_array(point), _ratio_array(t)
    alpha = 100 * (1 - confidence) / 2
    samples = _score_array(r_boot, tau_max)
    low, high = np.percentile(samples, [alpha, 100 - alpha], axis=0)
    scores = pd.DataFrame({"label": labels, "score": _score_array(r_point, tau_max),
                           "score_low": low, "score_high": high})
    if taus is None:
        taus = band_taus(profile(pd.DataFrame(r_point, index=labels), tau_max), tau_max)
    taus = np.asarray(taus, dtype=float)
    rho_point = (r_point[..., None] <= taus).mean(axis=-2)  # (label, tau)
    rho_low, rho_high = np.percentile((r_boot[..., None] <= taus).mean(axis=-2),
                                      [alpha, 100 - alpha], axis=0)
    profiles = pd.DataFrame({"label": np.repeat(labels, len(taus)),
                             "tau": np.tile(taus, len(labels)), "rho": rho_point.ravel(),
                             "rho_low": rho_low.ravel(), "rho_high": rho_high.ravel()})
    min_seeds = min((s["seeds"] for s in strata), default=0)
    interval = (f"{confidence:.0%} CI" if min_seeds >= MIN_SEEDS_FOR_CI
                else f"bootstrap range (n<{MIN_SEEDS_FOR_CI} seeds)")
    return ProfileBootstrap(scores, profiles, pd.DataFrame(strata, columns=[
        "label", "workload", "seeds", "p_unreached"]), samples, min_seeds, interval,
        n_resamples)


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
