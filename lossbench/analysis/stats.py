"""Honest statistics over seeds: computing only, no drawing (rliable style).

Runs of one suite are paired by seed (same initial weights, same batches), so losses
are compared to the baseline on per-seed differences by the one procedure of
lossbench.analysis.inference, and every mean comes with a t-interval (``interval``).
The profiles' and fits' bootstraps keep ``MIN_SEEDS_FOR_CI``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

ALPHA = 0.05  # the significance level of every test the report states (family-wise, Holm)
MIN_SEEDS_FOR_CI = 5  # profiles/fits: below this, a bootstrap interval is a rough range
MIN_SEEDS_FOR_T = 3  # below this, a mean's bracket is the seeds' range, not a t-interval
CI_KIND = "95% CI"


@dataclass(frozen=True)
class Interval:
    """A mean over seeds with its spread: a 95% t-interval when there are at least
    ``MIN_SEEDS_FOR_T`` values, else the range (min, max) of the values, labelled as
    such: two seeds give a range, never a confidence interval."""

    mean: float
    low: float  # NaN when there is no spread to show (fewer than 2 values)
    high: float
    n: int
    kind: str = "range"  # "range" | CI_KIND

    def describe(self) -> str:
        """'range n=2' / '95% CI n=8' — what [low, high] is."""
        return f"{self.kind}, n={self.n}"


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """The t-interval of the mean, mean ± t_{(1+c)/2, n-1} sd / sqrt(n) (Student 1908):
    exact for normal values, and the report's interval for every mean over seeds (the
    percentile bootstrap covers only 0.83-0.89 at 5-8 seeds). NaN bounds below 2 values.

    >>> [round(v, 3) for v in t_interval([1.0, 2.0, 3.0])]
    [-0.484, 4.484]
    """
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n < 2:
        return math.nan, math.nan
    mean, sd = float(x.mean()), float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


def interval(values: Sequence[float], **_) -> Interval:
    """Mean and spread of the finite ``values`` (non-finite ones are not results: the
    caller counts them), honest about small n (see :class:`Interval`)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(x) < MIN_SEEDS_FOR_T:
        if len(x) == 0:
            return Interval(math.nan, math.nan, math.nan, 0)
        spread = len(x) >= 2
        return Interval(float(x.mean()), float(x.min()) if spread else math.nan,
                        float(x.max()) if spread else math.nan, len(x), "range")
    low, high = t_interval(x)
    return Interval(float(x.mean()), low, high, len(x), CI_KIND)


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean (rliable): the mean of the middle 50% of the finite values."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    return float(stats.trim_mean(x, 0.25)) if len(x) else math.nan


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
