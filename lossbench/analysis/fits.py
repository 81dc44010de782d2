"""What a report states about a scale ladder, computed from arrays (no drawing, no wording).

- **The fit**: per loss, the saturating power law L(N) = E + A N^(-alpha) (Kaplan et al.
  2020; Hoffmann et al. 2022) by least squares on the seed means at each size
  (scipy.optimize.curve_fit, started from a profile over alpha: for fixed alpha the law is
  linear in E and A, so the start is the best alpha on a grid; where curve_fit does not
  converge in 100 evaluations, a flat valley of nearly linear-in-log-N data, that start).
  E >= 0 (a cross-entropy), A >= 0 and 0 <= alpha <= 4. Refused with fewer than ``MIN_SIZES_FOR_FIT`` sizes: three
  parameters through three points always fit, and say nothing.
- **Intervals**: a bootstrap over seeds (each size's seeds redrawn with replacement, the
  same draw for every loss: the runs are paired by seed), refitted per replicate, 2.5 and
  97.5 percentiles. With fewer than 5 seeds per size it is a rough interval, named so.
- **Rank agreement**: Kendall's tau (scipy.stats.kendalltau) between the losses' mean values
  at two sizes; a loss with a diverged or failed seed at a size ranks last there.
- **Crossovers**: where two fitted curves cross, searched over a hundred times below and
  above the measured sizes; the interval comes from the same bootstrap replicates (each
  replicate's crossing nearest the point estimate), with the share of replicates whose
  curves cross at all.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
from scipy import optimize, stats

from lossbench.analysis.stats import CI_KIND, MIN_SEEDS_FOR_CI
from lossbench.suite.scale import MIN_SIZES_FOR_FIT

ALPHA_MAX = 4.0
SEARCH_FACTOR = 100.0  # crossovers are looked for this far beyond the measured sizes
PARAMS = ("E", "A", "alpha")


@dataclass(frozen=True)
class PowerLaw:
    E: float
    A: float
    alpha: float

    def __call__(self, n):
        return self.E + self.A * np.asarray(n, dtype=float) ** -self.alpha


@dataclass(frozen=True)
class Fit:
    law: PowerLaw | None  # None when refused or when no fit converged
    refused: str = ""  # why there is no fit, in words ("" when there is one)
    sizes_used: int = 0
    low: dict[str, float] = field(default_factory=dict)  # per parameter, E / A / alpha
    high: dict[str, float] = field(default_factory=dict)
    kind: str = CI_KIND
    at_bound: tuple[str, ...] = ()  # parameters the fit pushed against a bound
    replicates: list[PowerLaw | None] = field(default_factory=list)  # paired across losses


def fit_power_law(n, y) -> tuple[PowerLaw, tuple[str, ...]] | None:
    """Least-squares E + A n^-alpha through (n, y) (module docstring): the law and the
    parameters at a bound, or None when curve_fit fails. ``n`` in parameters."""
    n, y = np.asarray(n, dtype=float), np.asarray(y, dtype=float)
    ref = float(n.min())
    x = n / ref  # conditioning: A is scaled back to parameters at the end

    def law(x, E, a, alpha):
        return E + a * x ** -alpha

    def jac(x, E, a, alpha):  # (sizes, 3): d/dE, d/da, d/dalpha
        p = x ** -alpha
        return np.column_stack([np.ones_like(x), p, -a * p * np.log(x)])

    alphas = np.geomspace(1e-3, ALPHA_MAX, 200)  # the profile: for each alpha, linear in E, a
    z = x[None, :] ** -alphas[:, None]  # (alphas, sizes)
    zc = z - z.mean(axis=1, keepdims=True)
    a = np.maximum((zc * (y - y.mean())).sum(axis=1) / np.maximum((zc ** 2).sum(axis=1),
                                                                  1e-300), 0.0)
    E = np.maximum(y.mean() - a * z.mean(axis=1), 0.0)
    i = int(np.argmin((((E[:, None] + a[:, None] * z) - y) ** 2).sum(axis=1)))
    eps = 1e-9
    p0 = np.clip([E[i], a[i], alphas[i]], [eps, eps, eps], [np.inf, np.inf, ALPHA_MAX - eps])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an undetermined covariance is not used here
            (E, a, alpha), _ = optimize.curve_fit(law, x, y, p0=p0, bounds=(
                [0.0, 0.0, 0.0], [np.inf, np.inf, ALPHA_MAX]), jac=jac, max_nfev=100)
    except RuntimeError:  # a flat valley (alpha -> 0 with A -> inf): the profile's best
        E, a, alpha = p0
    except ValueError:
        return None
    bound = tuple(name for name, v, lo, hi in zip(PARAMS, (E, a, alpha), (0, 0, 0),
                                                  (math.inf, math.inf, ALPHA_MAX))
                  if abs(v - lo) < 1e-6 or abs(v - hi) < 1e-6)
    return PowerLaw(float(E), float(a * ref ** alpha), float(alpha)), bound


def fit_ladder(n, values: dict[str, np.ndarray], *, n_boot: int = 500,
               seed: int = 0) -> dict[str, Fit]:
    """Per label, the fit of ``values[label]`` (sizes x seeds, NaN for a seed that did not
    finish) against ``n`` (parameters per size), with bootstrap intervals. A size where a
    label has an unfinished seed is left out of that label's fit (its mean would be of the
    survivors)."""
    n = np.asarray(n, dtype=float)
    fits = {}
    rng = np.random.default_rng(seed)
    any_values = next(iter(values.values()), np.zeros((len(n), 0)))
    n_seeds = any_values.shape[1]
    draws = rng.integers(0, max(n_seeds, 1), size=(n_boot, len(n), n_seeds))  # shared: paired
    for label, v in values.items():
        v = np.asarray(v, dtype=float)
        ok = np.isfinite(v).all(axis=1) & (v.shape[1] > 0)
        used = int(ok.sum())
        if used < MIN_SIZES_FOR_FIT:
            why = (f"{used} size{'s' if used != 1 else ''} with every seed finished; a fit of "
                   f"E, A and alpha needs at least {MIN_SIZES_FOR_FIT}")
            fits[label] = Fit(None, why, used)
            continue
        point = fit_power_law(n[ok], v[ok].mean(axis=1))
        if point is None:
            fits[label] = Fit(None, "the least-squares fit did not converge", used)
            continue
        reps = []
        for d in draws:
            means = np.take_along_axis(v, d, axis=1).mean(axis=1)
            r = fit_power_law(n[ok], means[ok])
            reps.append(None if r is None else r[0])
        got = [r for r in reps if r is not None]
        low, high = {}, {}
        for p in PARAMS:
            vals = np.array([getattr(r, p) for r in got])
            low[p], high[p] = (np.percentile(vals, [2.5, 97.5]) if len(vals)
                               else (math.nan, math.nan))
        kind = CI_KIND if n_seeds >= MIN_SEEDS_FOR_CI else \
            f"rough bootstrap interval ({n_seeds} seeds per size)"
        fits[label] = Fit(point[0], "", used, low, high, kind, point[1], reps)
    return fits


def ranks(means: dict[str, float]) -> dict[str, float]:
    """1 = lowest mean; a NaN (a seed that did not finish) ranks last; ties averaged."""
    labels = list(means)
    keys = [means[k] if math.isfinite(means[k]) else math.inf for k in labels]
    return dict(zip(labels, stats.rankdata(keys).tolist()))


@dataclass(frozen=True)
class Agreement:
    size_a: str
    size_b: str
    tau: float
    p_value: float
    n: int  # losses ranked at both sizes

    @property
    def min_p(self) -> float:
        """The smallest two-sided p an exact Kendall test on n items can give: 2 / n!."""
        return 2.0 / math.factorial(self.n) if self.n > 1 else math.nan


def rank_agreement(means: dict[str, dict[str, float]], a: str, b: str) -> Agreement:
    """Kendall's tau between the losses' means at size ``a`` and size ``b``
    (``means[size][label]``; a NaN ranks last, as in :func:`ranks`)."""
    labels = [k for k in means[a] if k in means[b]]
    x = [ranks(means[a])[k] for k in labels]
    y = [ranks(means[b])[k] for k in labels]
    if len(labels) < 2:
        return Agreement(a, b, math.nan, math.nan, len(labels))
    res = stats.kendalltau(x, y)
    return Agreement(a, b, float(res.statistic), float(res.pvalue), len(labels))


def crossings(f: PowerLaw, g: PowerLaw, lo: float, hi: float) -> list[float]:
    """Every N in [lo, hi] where f(N) = g(N) (sign changes of f - g on a log grid, refined
    by brentq); two saturating power laws cross at most twice."""
    grid = np.geomspace(lo, hi, 2000)
    d = f(grid) - g(grid)
    out = []
    for i in np.flatnonzero(np.sign(d[:-1]) * np.sign(d[1:]) < 0):
        out.append(float(optimize.brentq(lambda t: float(f(t) - g(t)), grid[i], grid[i + 1])))
    return out


@dataclass(frozen=True)
class Crossover:
    a: str
    b: str
    n: float  # parameters where the fitted curves cross
    low: float  # interval from the bootstrap replicates (NaN when none crosses)
    high: float
    share: float  # fraction of replicates whose curves cross at all in the search range
    extrapolated: bool  # outside the measured sizes
    better_above: str  # the label lower beyond the crossing


def crossovers(fits: dict[str, Fit], n_min: float, n_max: float) -> list[Crossover]:
    """Crossings of every pair of fitted curves within SEARCH_FACTOR of the measured sizes."""
    lo, hi = n_min / SEARCH_FACTOR, n_max * SEARCH_FACTOR
    out = []
    fitted = [k for k, f in fits.items() if f.law is not None]
    for a, b in combinations(fitted, 2):
        fa, fb = fits[a], fits[b]
        pairs = [(x, y) for x, y in zip(fa.replicates, fb.replicates)
                 if x is not None and y is not None]
        rep = [crossings(x, y, lo, hi) for x, y in pairs]
        for c in crossings(fa.law, fb.law, lo, hi):
            near = [min(r, key=lambda t: abs(math.log(t / c))) for r in rep if r]
            low, high = (np.exp(np.percentile(np.log(near), [2.5, 97.5])) if near
                         else (math.nan, math.nan))
            above = a if fa.law(c * 1.01) < fb.law(c * 1.01) else b
            out.append(Crossover(a, b, c, float(low), float(high),
                                 len(near) / len(pairs) if pairs else math.nan,
                                 not (n_min <= c <= n_max), above))
    return out
