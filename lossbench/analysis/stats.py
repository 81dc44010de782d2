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

ALPHA = 0.05  # the significance level of every test the report states (family-wise, Holm)
MIN_SEEDS_FOR_CI = 5  # below this, a bootstrap interval is only the seeds' min and max
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


def bootstrap_ci(values: Sequence[float], *, confidence: float = 0.95,
                 n_resamples: int = 9999, seed: int = 0) -> Interval:
    """Mean with a percentile bootstrap CI (scipy.stats.bootstrap); NaN bounds below 2 values.

    Non-finite values (a diverged run's final loss) are dropped first. Prefer
    :func:`interval`, which does not call a 2-seed range a confidence interval.
    """
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    kind = f"{confidence:.0%} CI"
    if len(x) == 0:
        return Interval(math.nan, math.nan, math.nan, 0, kind)
    if len(x) < 2 or np.all(x == x[0]):
        return Interval(float(x.mean()), math.nan if len(x) < 2 else float(x[0]),
                        math.nan if len(x) < 2 else float(x[0]), len(x), kind)
    res = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                          method="percentile", rng=np.random.default_rng(seed))
    return Interval(float(x.mean()), float(res.confidence_interval.low),
                    float(res.confidence_interval.high), len(x), kind)


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean (rliable): the mean of the middle 50% of the finite values."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    return float(stats.trim_mean(x, 0.25)) if len(x) else math.nan


def probability_of_improvement(x: Sequence[float], y: Sequence[float]) -> float:
    """P(X < Y) + P(X = Y)/2 over every pair of a value of x and one of y (the
    Mann-Whitney U statistic / (n m), as rliable's probability of improvement): the chance
    that a run of x ends lower than a run of y. NaN when either side has no finite value."""
    a = np.asarray([v for v in x if math.isfinite(v)], dtype=float)
    b = np.asarray([v for v in y if math.isfinite(v)], dtype=float)
    if not len(a) or not len(b):
        return math.nan
    less = (a[:, None] < b[None, :]).mean()
    ties = (a[:, None] == b[None, :]).mean()
    return float(less + 0.5 * ties)


def probability_of_improvement_ci(x: Sequence[float], y: Sequence[float], *,
                                  n_resamples: int = 2000, seed: int = 0) -> Interval:
    """:func:`probability_of_improvement` with a bootstrap 95% CI (x and y resampled
    separately, as rliable's stratified bootstrap) when both have at least
    ``MIN_SEEDS_FOR_CI`` values; otherwise the point value with no interval."""
    a = np.asarray([v for v in x if math.isfinite(v)], dtype=float)
    b = np.asarray([v for v in y if math.isfinite(v)], dtype=float)
    point = probability_of_improvement(a, b)
    n = min(len(a), len(b))
    if n < MIN_SEEDS_FOR_CI:
        return Interval(point, math.nan, math.nan, n, "range")
    rng = np.random.default_rng(seed)
    draws = [probability_of_improvement(rng.choice(a, len(a)), rng.choice(b, len(b)))
             for _ in range(n_resamples)]
    low, high = np.percentile(draws, [2.5, 97.5])
    return Interval(point, float(low), float(high), n, "95% CI")


def paired_t_power(n: int, effect_size: float, alpha: float = 0.05) -> float:
    """Power of a two-sided paired t-test with n pairs at standardized effect
    d = mean difference / sd of the differences (noncentral t, as G*Power computes it)."""
    if n < 2:
        return 0.0
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)
    nc = abs(effect_size) * math.sqrt(n)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def paired_t_seeds(effect_size: float, *, alpha: float = 0.05, power: float = 0.8,
                   limit: int = 100_000) -> int:
    """The fewest pairs with which a two-sided paired t-test at ``alpha`` detects a true
    standardized effect ``effect_size`` with probability >= ``power``; 0 when there is no
    effect to detect, ``limit`` when more would be needed."""
    if not math.isfinite(effect_size) or effect_size == 0:
        return 0
    low, high = 1, 2  # power(low) < power <= power(high): double, then bisect
    while paired_t_power(high, effect_size, alpha) < power:
        if high >= limit:
            return limit
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if paired_t_power(mid, effect_size, alpha) < power else (low, mid)
    return high


def seeds_needed(differences: Sequence[float], *, alpha: float = 0.05,
                 power: float = 0.8) -> int:
    """Seeds that would resolve the observed mean paired difference at ``power``: the
    paired-t sample size for d = mean / sd of ``differences``, and never fewer than the
    6 seeds the exact Wilcoxon test (the report's test) needs to reach p < 0.05. Every seed
    agreeing exactly (sd = 0, mean != 0) needs just those 6; 0 when the mean is 0."""
    d = np.asarray([v for v in differences if math.isfinite(v)], dtype=float)
    if len(d) < 2 or d.mean() == 0:
        return 0
    sd = d.std(ddof=1)
    wilcoxon_floor = next(n for n in range(1, 64) if min_wilcoxon_p(n) <= alpha)
    if sd == 0:
        return wilcoxon_floor
    return max(wilcoxon_floor, paired_t_seeds(d.mean() / sd, alpha=alpha, power=power))


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
