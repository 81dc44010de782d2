"""Seeds needed, from the report's own procedure (analysis.inference).

Power of one comparison: the chance that the paired t-test rejects at Holm's first-step
level alpha / k (k: the family's size; later steps are less strict, so this is
conservative) **and** the mean Δ lands beyond the margin on the true side, for true mean
Δ = mu and per-seed sd sigma. With normal Δ, mean(Δ) ~ N(mu, sigma²/n) and the sample sd
S, sigma² χ²_{n−1}/(n−1), are independent, so

    power(n) = E_S[ P(mean(Δ) >= max(m, c S / sqrt(n))) ],  c = t_{1 − alpha/(2k), n−1},

integrated over the χ² quantiles (exact up to the quadrature). The seed count is the
fewest n >= MIN_SEEDS with power >= 0.8, at the observed |mean Δ| and at the end of its
95% t-interval nearest 0: a range, or "at least" when the interval reaches into the
margin (the effect may be too small ever to resolve). A mean Δ inside ±margin gets no
count: at that effect, more seeds would show it equivalent within the margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

from lossbench.analysis.inference import MIN_SEEDS
from lossbench.analysis.stats import ALPHA, t_interval

POWER = 0.8
LIMIT = 1000  # beyond this many seeds the advice says "more than"
_Q = (np.arange(400) + 0.5) / 400  # χ² quantile midpoints for the expectation over S


def power(n: int, mu: float, sigma: float, margin: float, *, level: float = ALPHA) -> float:
    """P(two-sided paired t at ``level`` rejects and mean Δ >= margin), true mean |mu|.

    >>> round(power(10, 1.0, 1.0, 0.0), 3)   # G*Power: d = 1, n = 10, two-sided 0.05
    0.803
    """
    mu = abs(mu)
    if n < 2:
        return 0.0
    if sigma <= 0:
        return 1.0 if mu >= margin and mu > 0 else 0.0
    df = n - 1
    c = stats.t.ppf(1 - level / 2, df)
    s = sigma * np.sqrt(stats.chi2.ppf(_Q, df) / df)
    edge = np.maximum(margin, c * s / math.sqrt(n))
    return float(np.mean(stats.norm.sf((edge - mu) / (sigma / math.sqrt(n)))))


def seeds_for(mu: float, sigma: float, margin: float, *, level: float,
              target: float = POWER) -> int | None:
    """The fewest seeds (>= MIN_SEEDS) reaching ``target`` power; None beyond ``LIMIT``
    or when |mu| < margin (then no n ever reaches it)."""
    if abs(mu) < margin or (abs(mu) == 0 and sigma <= 0):
        return None
    if power(LIMIT, mu, sigma, margin, level=level) < target:
        return None
    low, high = MIN_SEEDS - 1, MIN_SEEDS  # power(low) < target <= power(high)
    while power(high, mu, sigma, margin, level=level) < target:
        low, high = high, min(LIMIT, high * 2)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if power(mid, mu, sigma, margin, level=level) < target \
            else (low, mid)
    return high


@dataclass(frozen=True)
class SeedAdvice:
    """``kind``: "count" (low..high seeds; high None: "at least low"), "equivalent" (mean Δ
    inside the margin), "none" (too few seeds to say); ``low`` is the count at the
    observed effect."""

    kind: str
    low: int | None = None
    high: int | None = None

    def text(self, margin: float) -> str:
        if self.kind == "equivalent":
            return (f"Δ is within ±{margin:.2g}: at this effect, more seeds would show "
                    f"equivalence, not a difference")
        if self.kind != "count":
            return ""
        if self.low is None:
            return f"more than {LIMIT} seeds"
        if self.high is None:
            return f"at least {self.low} seeds"
        return (f"{self.low} seeds" if self.high == self.low
                else f"{self.low}–{self.high} seeds")


def seeds_needed(differences: Sequence[float], margin: float, family_size: int) -> SeedAdvice:
    """How many seeds the procedure needs to call this difference better or worse with
    power 0.8 (see the module docstring).

    >>> seeds_needed([-0.10, -0.12, -0.08, -0.11, -0.09], 0.005, 7).text(0.005)
    '4 seeds'
    """
    d = np.asarray([v for v in differences if math.isfinite(v)], dtype=float)
    if len(d) < 2:
        return SeedAdvice("none")
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if abs(mean) < margin:
        return SeedAdvice("equivalent")
    level = ALPHA / max(1, family_size)
    at_mean = seeds_for(mean, sd, margin, level=level)
    low, high = t_interval(d)
    edge = 0.0 if low <= 0 <= high else min(abs(low), abs(high))
    at_edge = seeds_for(edge, sd, margin, level=level) if edge >= margin else None
    if at_mean is None:
        return SeedAdvice("count", None, None)
    return SeedAdvice("count", at_mean, at_edge)
