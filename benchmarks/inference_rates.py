"""Simulated error rates of the report's one procedure (lossbench.analysis.inference), for
BENCHMARKS.md and docs/statistics.md.

    python benchmarks/inference_rates.py            # 100k suites per cell (~20 s)
    python benchmarks/inference_rates.py --reps 20000

Prints: the family-wise rate of false "better"/"worse" calls with 7 comparisons against a
shared baseline when no loss makes a difference (margin 0, the worst case), for normal,
lognormal and one-outlier runs at 3, 5, 8 and 10 seeds, with the percentile bootstrap of
the old procedure beside it for the intervals; the coverage of the 95% t-interval of mean
Δ; the power at the seeds the report recommends; and, as a stated limitation, the rate
when Δ itself is skewed with mean 0 (not exchangeable runs: a loss that helps most seeds
a little and hurts one a lot), where no test with 3-8 seeds can hold its level.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lossbench.analysis.power import seeds_for  # noqa: E402
from lossbench.analysis.simulation import (  # noqa: E402
    RUNS,
    coverage,
    fwer,
    mc_error,
    power_at,
    vectorized,
)
from lossbench.analysis.stats import ALPHA  # noqa: E402


def percentile_bootstrap_coverage(n: int, reps: int, seed: int = 0) -> float:
    """The old intervals (percentile bootstrap of the mean, normal Δ), for comparison."""
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(reps, n))
    idx = rng.integers(0, n, size=(reps, 2000, n))
    means = np.take_along_axis(d[:, None, :].repeat(2000, 1), idx, -1).mean(-1)
    low, high = np.percentile(means, [2.5, 97.5], axis=1)
    return float(((low <= 0) & (0 <= high)).mean())


def skewed_mean_zero_fwer(n: int, reps: int, k: int = 7, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    d = rng.lognormal(0.0, 1.0, size=(reps, k, n)) - np.exp(0.5)
    r = vectorized(d, 0.0)
    return float((r["better"] | r["worse"]).any(-1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=100_000)
    reps = parser.parse_args().reps
    seeds = (3, 5, 8, 10)
    print(f"family-wise error, 7 comparisons, no effect, margin 0 ({reps} suites per cell; "
          f"MC error ±{mc_error(ALPHA, reps):.4f} at 0.05)")
    print("runs         " + "".join(f"n={n:<8}" for n in seeds))
    for kind in RUNS:
        print(f"{kind:<13}" + "".join(f"{fwer(kind, n, reps=reps, seed=n):<10.4f}"
                                       for n in seeds))
    print(f"\ncoverage of the 95% t-interval of mean Δ ({reps} per cell)")
    print("runs         " + "".join(f"n={n:<8}" for n in seeds))
    for kind in RUNS:
        print(f"{kind:<13}" + "".join(f"{coverage(kind, n, reps=reps, seed=n):<10.4f}"
                                       for n in seeds))
    boot = min(reps, 2000)
    print(f"old: percentile bootstrap, normal Δ ({boot} per cell)    "
          + "".join(f"n={n}: {percentile_bootstrap_coverage(n, boot, n):.3f}  "
                    for n in (5, 8)))
    print("\npower at the recommended seeds (normal Δ, 7 comparisons, margin 0.005)")
    for mu, sigma in ((-0.05, 0.04), (-0.02, 0.03), (-0.01, 0.02), (-0.5, 0.2)):
        n = seeds_for(mu, sigma, 0.005, level=ALPHA / 7)
        print(f"  mean Δ {mu:+}, sd {sigma}: {n} seeds -> power "
              f"{power_at(n, mu, sigma, 0.005, reps=reps, seed=n):.3f}")
    print("\nlimitation: Δ itself lognormal with mean 0 (not a no-effect null), 7 comparisons")
    print("  " + "  ".join(f"n={n}: {skewed_mean_zero_fwer(n, reps, seed=n):.3f}"
                           for n in seeds))


if __name__ == "__main__":
    main()
