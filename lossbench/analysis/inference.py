"""The report's one inference: every verdict, bold mark, claim, seed count and exit code
comes from here (computing only; report/ words it).

**The procedure.** Runs of a suite are paired by seed (same weights, same batches), so a
loss is judged on its per-seed differences from the baseline, Δ_s = loss_s − baseline_s
(analysis.paired builds them, scoring a seed the loss did not finish worst-case against
it). On Δ_1..Δ_n:

- a two-sided paired t-test of mean Δ = 0, t = mean(Δ) / (sd(Δ)/√n), n − 1 degrees of
  freedom (Student 1908); zeros are observations like any other value;
- the 95% t-interval mean(Δ) ± t_{0.975, n−1} sd(Δ)/√n for the mean difference;
- TOST against the practical margin ±m (Schuirmann 1987): equivalent when both
  one-sided tests, mean > −m and mean < +m, reject; its p is the larger of the two;
- Holm's step-down correction (Holm 1979) over one family: the baseline comparisons on
  the primary metric plus the suite's own [[claims]]; `--claim`s given at report time
  are a second, labelled family, so adding one never changes a verdict. TOST p-values
  form their own Holm family (a wrong "equivalent" and a wrong "better" are separate
  errors, each held at ``ALPHA``).

Why a t-test: with 3-10 seeds and up to ~10 comparisons, a rank or sign-flip test cannot
reach Holm's first-step level at all (its smallest p is 2/2^n: n >= 9 for 7 comparisons);
the t-test can from 3 seeds. Under the null that the loss makes no difference, the two
runs of a seed are exchangeable, so Δ is symmetric about 0, where the t-test keeps its
level even for heavy-tailed or skewed per-run values: simulated in
tests/test_inference_simulation.py and benchmarks/inference_rates.py (BENCHMARKS.md).

**Words** (``decide``): "untested" below ``MIN_SEEDS`` paired seeds; "identical" when
every Δ is exactly 0; "better"/"worse" when the Holm p < ``ALPHA`` **and** |mean Δ| >=
m (and "better" never for a loss with a seed that did not finish); "equivalent" when the
Holm-corrected TOST p < ``ALPHA`` (practically equivalent within ±m); "below margin"
when significant but |mean Δ| < m; otherwise "no difference" (no difference detected at
n seeds).

**Margin** (``default_margin``): the suite's ``[report] margin`` for the primary metric;
otherwise 0.005 nats/token on a metric in nats/token (0.5% of perplexity, a tenth of
what separates the quick suite's closest losses), and 0.5% of the baseline's mean on any
other metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

from lossbench.analysis.stats import ALPHA, holm, t_interval

MIN_SEEDS = 3  # a t-test on 2 pairs has 1 degree of freedom: called "untested"
CONFIDENCE = 0.95
NATS_MARGIN = 0.005  # nats/token
RELATIVE_MARGIN = 0.005  # of the baseline's mean, on a metric in another unit
PROCEDURE = "paired t-test, Holm over the report's family; TOST against ±margin"
WORDS = ("better", "worse", "different", "equivalent", "below margin", "no difference",
         "untested", "identical")


def default_margin(unit: str, baseline_mean: float) -> float:
    """The practical margin of a metric: 0.005 in nats/token, else 0.5% of |baseline mean|
    (NaN when the baseline has no mean)."""
    if unit == "nats/token":
        return NATS_MARGIN
    return RELATIVE_MARGIN * abs(baseline_mean) if math.isfinite(baseline_mean) else math.nan


def _no_spread(d: np.ndarray) -> bool:
    """Every Δ the same up to floating-point rounding (a − b of values near 2.0 differs in
    its last bits: a t of 1e15 where exact equality gives none)."""
    return float(np.ptp(d)) <= 1e-9 * max(float(np.abs(d).max()), 1e-300)


def _t_p(d: np.ndarray, at: float, alternative: str) -> float:
    """p of a one-sample t-test of mean(d) against ``at``. No spread: t is ±∞ (p 0 when
    every Δ is beyond ``at`` on the tested side, else 1)."""
    if _no_spread(d):
        mean = float(d.mean())
        if abs(mean - at) <= 1e-9 * max(abs(mean), abs(at), 1e-300):
            return 1.0  # on the boundary, up to rounding
        beyond = {"less": mean < at, "greater": mean > at, "two-sided": True}[alternative]
        return 0.0 if beyond else 1.0
    return float(stats.ttest_1samp(d, at, alternative=alternative).pvalue)


@dataclass(frozen=True)
class PairedTest:
    """The procedure on one set of per-seed differences (before Holm)."""

    n: int
    mean: float
    low: float  # 95% t-interval of mean Δ (NaN below 2 seeds)
    high: float
    sd: float
    p: float  # two-sided, mean Δ = 0; NaN below MIN_SEEDS
    p_equivalent: float  # TOST against ±margin; NaN below MIN_SEEDS
    margin: float
    identical: bool  # every Δ exactly 0


def paired_t(differences: Sequence[float], margin: float) -> PairedTest:
    """The paired t-test, t-interval and TOST of ``differences`` (finite values).

    >>> t = paired_t([-0.1, -0.12, -0.11, -0.09], margin=0.005)
    >>> round(t.mean, 3), t.p < 0.01, round(t.p_equivalent, 3)
    (-0.105, True, 1.0)
    """
    d = np.asarray(differences, dtype=float)
    n = len(d)
    if n == 0:
        return PairedTest(0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan,
                          margin, False)
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    low, high = t_interval(d, CONFIDENCE)
    identical = bool(np.all(d == 0))
    if n < MIN_SEEDS:
        return PairedTest(n, mean, low, high, sd, math.nan, math.nan, margin, identical)
    p = _t_p(d, 0.0, "two-sided")
    m = margin if math.isfinite(margin) else 0.0
    tost = max(_t_p(d, -m, "greater"), _t_p(d, m, "less")) if m > 0 else 1.0
    return PairedTest(n, mean, low, high, sd, p, tost, margin, identical)


def decide(test: PairedTest, p_holm: float, p_equivalent_holm: float,
           lower_is_better: bool | None, unfinished: int = 0) -> str:
    """The word for one comparison (one of ``WORDS``), from its test and its Holm-corrected
    p-values. A loss with a seed that did not finish (``unfinished``) is never "better"."""
    if test.n < MIN_SEEDS:
        return "untested"
    if test.identical:
        return "identical"
    if p_holm < ALPHA and abs(test.mean) >= test.margin:
        if lower_is_better is None:
            return "different"  # a metric with no better direction (temperature)
        good = (test.mean < 0) == lower_is_better
        if good and unfinished:
            return "no difference"
        return "better" if good else "worse"
    if p_equivalent_holm < ALPHA:
        return "equivalent"
    if p_holm < ALPHA:
        return "below margin"
    return "no difference"


def holm_family(*groups: Sequence[float]) -> list[list[float]]:
    """Holm over the concatenation of ``groups`` (one family), split back into groups."""
    flat = holm([p for g in groups for p in g])
    out, i = [], 0
    for g in groups:
        out.append(flat[i:i + len(g)])
        i += len(g)
    return out


@dataclass(frozen=True)
class Share:
    """P(better) paired by seed: the share of seeds on which the loss beats the baseline
    (a tie counts one half), with a 95% Wilson score interval (Wilson 1927)."""

    point: float
    low: float
    high: float
    n: int


def p_better_paired(differences: Sequence[float], lower_is_better: bool | None) -> Share:
    """P(better) over the paired seeds; NaN without a direction or a seed.

    >>> s = p_better_paired([-0.1, -0.2, 0.0, 0.3], lower_is_better=True)
    >>> s.point, s.n
    (0.625, 4)
    """
    d = np.asarray(differences, dtype=float)
    n = len(d)
    if n == 0 or lower_is_better is None:
        return Share(math.nan, math.nan, math.nan, n)
    wins = float(np.sum(d < 0 if lower_is_better else d > 0) + 0.5 * np.sum(d == 0))
    z = stats.norm.ppf(0.975)
    phat = wins / n
    centre = (phat + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n))
    return Share(phat, max(0.0, centre - half), min(1.0, centre + half), n)
