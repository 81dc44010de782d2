"""Honest statistics over seeds: computing only, no drawing (rliable style).

Runs of one suite are paired by seed (same initial weights, same batches), so
losses are compared to the baseline with paired tests on per-seed values,
Holm-corrected across losses, and every mean comes with a bootstrap interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float  # NaN when there are too few values for an interval
    high: float
    n: int


def bootstrap_ci(values: Sequence[float], *, confidence: float = 0.95,
                 n_resamples: int = 9999, seed: int = 0) -> Interval:
    """Mean with a percentile bootstrap CI (scipy.stats.bootstrap); NaN bounds below 2 values.

    Non-finite values (a diverged run's final loss) are dropped first.
    """
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(x) == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    if len(x) < 2 or np.all(x == x[0]):
        return Interval(float(x.mean()), math.nan if len(x) < 2 else float(x[0]),
                        math.nan if len(x) < 2 else float(x[0]), len(x))
    res = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                          method="percentile", rng=np.random.default_rng(seed))
    return Interval(float(x.mean()), float(res.confidence_interval.low),
                    float(res.confidence_interval.high), len(x))


@dataclass(frozen=True)
class PairedComparison:
    n_pairs: int
    mean_difference: float  # other - baseline (negative: other is lower, i.e. better for losses)
    p_value: float  # raw, two-sided; NaN when no test could be run
    test: str  # the test used, named
    note: str  # plain words when seeds are too few for the test to mean anything


def min_wilcoxon_p(n: int) -> float:
    """The smallest two-sided p-value an exact Wilcoxon signed-rank test can give with n pairs."""
    return 2.0 / 2**n if n > 0 else math.nan


def paired_comparison(baseline: dict[int, float], other: dict[int, float], *,
                      alpha: float = 0.05) -> PairedComparison:
    """Exact Wilcoxon signed-rank test on per-seed values paired by seed.

    Wilcoxon (not a paired t-test) because final losses across seeds are few
    and not known to be normal. With n pairs its smallest two-sided p-value is
    2 / 2^n, so with fewer than 6 seeds no difference can reach alpha = 0.05:
    that is said in ``note`` instead of pretending.
    """
    seeds = sorted(s for s in set(baseline) & set(other)
                   if math.isfinite(baseline[s]) and math.isfinite(other[s]))
    n = len(seeds)
    if n == 0:
        return PairedComparison(0, math.nan, math.nan, "none", "no paired seeds")
    diff = np.array([other[s] - baseline[s] for s in seeds])
    mean = float(diff.mean())
    if n < 2:
        return PairedComparison(n, mean, math.nan, "none", "one seed: no test possible")
    if np.all(diff == 0):
        return PairedComparison(n, mean, 1.0, "wilcoxon signed-rank (exact)",
                                "identical results on every seed")
    p = float(stats.wilcoxon(diff, alternative="two-sided", method="exact").pvalue)
    note = ""
    if min_wilcoxon_p(n) > alpha:
        note = (f"{n} seeds: the smallest possible p-value is {min_wilcoxon_p(n):.3g} > {alpha}, "
                f"so no difference can be significant; run at least 6 seeds")
    return PairedComparison(n, mean, p, "wilcoxon signed-rank (exact)", note)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaNs stay NaN."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    running = 0.0
    for rank, idx in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        adjusted[idx] = running
    return adjusted.tolist()


def steps_to_target(steps: Sequence[int], values: Sequence[float], target: float) -> float:
    """First evaluated step whose value is <= target; inf when never reached (AlgoPerf)."""
    for step, value in zip(steps, values):
        if value is not None and math.isfinite(value) and value <= target:
            return float(step)
    return math.inf


def curve_auc(steps: Sequence[int], values: Sequence[float]) -> float:
    """Mean value over training: trapezoid area under the curve divided by the step span."""
    s, v = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    if len(s) < 2 or not np.all(np.isfinite(v)):
        return math.nan
    return float(np.trapezoid(v, s) / (s[-1] - s[0]))


def ema(values: Sequence[float], alpha: float = 0.1) -> list[float]:
    """Exponential moving average (bias-corrected, like TensorBoard's smoothing)."""
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = (1 - alpha) * avg + alpha * v
        out.append(avg / (1 - (1 - alpha) ** i))
    return out


def mean_ranks(table: dict[str, dict[int, float]]) -> dict[str, float]:
    """Average rank of each loss across seeds (1 = lowest value; ties share the mean rank).

    ``table`` maps loss -> seed -> value; only seeds every loss has are used.
    """
    losses = sorted(table)
    seeds = sorted(set.intersection(*(set(table[k]) for k in losses))) if losses else []
    if not seeds:
        return {k: math.nan for k in losses}
    matrix = np.array([[table[k][s] for k in losses] for s in seeds], dtype=float)
    matrix = np.where(np.isfinite(matrix), matrix, np.inf)  # diverged ranks last
    ranks = np.vstack([stats.rankdata(row) for row in matrix])
    return dict(zip(losses, ranks.mean(axis=0).tolist()))
