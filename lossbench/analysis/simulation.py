"""The report's procedure (analysis.inference) on simulated suites, vectorized: its
family-wise error rate, the coverage of its intervals and its power, for the tests
(tests/test_inference_simulation.py) and benchmarks/inference_rates.py (BENCHMARKS.md).

A simulated suite is k losses and a baseline on n seeds. Under the null that no loss makes
a difference the k + 1 runs of a seed are exchangeable: per-run values X (reps, k + 1, n)
are drawn i.i.d. from a distribution (``RUNS``) and Δ_j = X_j − X_0 (every comparison
shares the baseline's runs, as in a report). ``vectorized`` is the same arithmetic as
inference.paired_t + stats.holm + inference.decide (the tests check them equal on random
inputs), at ~10^5 suites per second.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from lossbench.analysis.inference import MIN_SEEDS
from lossbench.analysis.stats import ALPHA


def _normal(rng, shape):
    return rng.normal(size=shape)


def _lognormal(rng, shape):  # per-run values skewed to the right (sigma = 1)
    return rng.lognormal(0.0, 1.0, size=shape)


def _one_outlier(rng, shape):
    """Normal runs, one of which per suite (any loss, the baseline too) is 10 sd off."""
    x = rng.normal(size=shape)
    reps = np.arange(shape[0])
    x[reps, rng.integers(0, shape[1], shape[0]), rng.integers(0, shape[2], shape[0])] += 10.0
    return x


RUNS = {"normal": _normal, "lognormal": _lognormal, "one-outlier": _one_outlier}


def null_differences(kind: str, reps: int, k: int, n: int, seed: int = 0) -> np.ndarray:
    """Δ (reps, k, n) of k losses that make no difference, against a shared baseline."""
    x = RUNS[kind](np.random.default_rng(seed), (reps, k + 1, n))
    return x[:, 1:, :] - x[:, :1, :]


def holm_adjusted(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted p along the last axis (no NaNs), as stats.holm."""
    k = p.shape[-1]
    order = np.argsort(p, axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=-1) * (k - np.arange(k))
    ranked = np.minimum(1.0, np.maximum.accumulate(ranked, axis=-1))
    out = np.empty_like(ranked)
    np.put_along_axis(out, order, ranked, axis=-1)
    return out


def vectorized(d: np.ndarray, margin: float) -> dict[str, np.ndarray]:
    """The procedure on Δ (reps, k, n): mean, t-interval, raw and Holm p (two-sided
    paired t, Holm over the k comparisons), and "better" (lower is better) / "worse"
    calls (significant and |mean| >= margin)."""
    n = d.shape[-1]
    mean, sd = d.mean(-1), d.std(-1, ddof=1)
    se = sd / math.sqrt(n)
    half = stats.t.ppf(0.975, n - 1) * se
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 2 * stats.t.sf(np.abs(mean / se), n - 1)
    p = np.where(se > 0, p, np.where(mean != 0, 0.0, 1.0))
    if n < MIN_SEEDS:
        p = np.ones_like(p)
    adjusted = holm_adjusted(p)
    called = (adjusted < ALPHA) & (np.abs(mean) >= margin)
    return {"mean": mean, "low": mean - half, "high": mean + half, "p": p,
            "p_holm": adjusted, "better": called & (mean < 0), "worse": called & (mean > 0)}


def fwer(kind: str, n: int, k: int = 7, reps: int = 20000, margin: float = 0.0,
         seed: int = 0) -> float:
    """P(at least one "better" or "worse" call) when no loss makes a difference."""
    r = vectorized(null_differences(kind, reps, k, n, seed), margin)
    return float((r["better"] | r["worse"]).any(-1).mean())


def coverage(kind: str, n: int, reps: int = 20000, effect: float = 0.3,
             seed: int = 0) -> float:
    """How often the 95% t-interval of mean Δ holds the true mean ``effect``."""
    d = null_differences(kind, reps, 1, n, seed)[:, 0, :] + effect
    r = vectorized(d[:, None, :], 0.0)
    return float(((r["low"] <= effect) & (effect <= r["high"])).mean())


def power_at(n: int, mu: float, sigma: float, margin: float, k: int = 7,
             reps: int = 20000, seed: int = 0) -> float:
    """P(loss 0 called "better") with normal Δ, true mean ``mu`` < 0 and sd ``sigma``,
    among k comparisons of which the other k − 1 are null."""
    rng = np.random.default_rng(seed)
    d = rng.normal(0.0, sigma, size=(reps, k, n))
    d[:, 0, :] += mu
    return float(vectorized(d, margin)["better"][:, 0].mean())


def mc_error(rate: float, reps: int) -> float:
    """The Monte Carlo standard error of a simulated rate."""
    return math.sqrt(max(rate * (1 - rate), 1e-12) / reps)
