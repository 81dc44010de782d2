"""The report's one procedure, proved by simulation (analysis.simulation): family-wise error
<= 0.05 (+ Monte Carlo error) under the null with 7 comparisons at 3, 5 and 8 seeds for
normal, lognormal and one-outlier runs; t-interval coverage >= 0.93 at 5 and 8 seeds; the
seeds the report recommends reach power 0.8. Fast twins run by default; the large ones
are marked slow. Every simulation is seeded."""

import math

import numpy as np
import pytest

from lossbench.analysis.inference import decide, paired_t
from lossbench.analysis.power import power, seeds_for, seeds_needed
from lossbench.analysis.simulation import (
    RUNS,
    coverage,
    fwer,
    mc_error,
    null_differences,
    power_at,
    vectorized,
)
from lossbench.analysis.stats import ALPHA, holm


def test_the_vectorized_simulator_is_the_report_code():
    """What the simulations measure is the procedure the report runs: on random suites,
    the vectorized arithmetic gives the same p, Holm p, intervals and words as
    inference.paired_t + stats.holm + inference.decide."""
    for kind in RUNS:
        for n in (3, 5):
            d = null_differences(kind, 30, 4, n, seed=n) + np.array([0.0, -1.5, 2.0, 0.1])[:, None]
            sim = vectorized(d, margin=0.05)
            for i in range(len(d)):
                tests = [paired_t(row, 0.05) for row in d[i]]
                adjusted = holm([t.p for t in tests])
                assert [t.p for t in tests] == pytest.approx(sim["p"][i], rel=1e-9, abs=1e-300)
                assert adjusted == pytest.approx(sim["p_holm"][i], rel=1e-9, abs=1e-300)
                assert [t.low for t in tests] == pytest.approx(sim["low"][i])
                words = [decide(t, ph, 1.0, True) for t, ph in zip(tests, adjusted)]
                assert [w == "better" for w in words] == list(sim["better"][i])
                assert [w == "worse" for w in words] == list(sim["worse"][i])


def test_a_broken_procedure_fails_the_fwer_check():
    """The check can fail: without Holm (each of 7 comparisons at 0.05) the family-wise
    rate is far above 0.05."""
    d = null_differences("normal", 4000, 7, 5)
    r = vectorized(d, 0.0)
    unadjusted = float((r["p"] < ALPHA).any(-1).mean())
    assert unadjusted > 0.2
    assert float((r["better"] | r["worse"]).any(-1).mean()) <= 0.05 + 3 * mc_error(0.05, 4000)


def _fwer_ok(kind, n, reps):
    rate = fwer(kind, n, k=7, reps=reps, seed=n)
    assert rate <= ALPHA + 3 * mc_error(ALPHA, reps), (kind, n, rate)
    return rate


@pytest.mark.parametrize("kind", list(RUNS))
def test_family_wise_error_fast(kind):
    for n in (3, 5, 8):
        _fwer_ok(kind, n, 4000)


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(RUNS))
def test_family_wise_error(kind):
    for n in (3, 5, 8):
        _fwer_ok(kind, n, 100_000)


def _coverage_ok(kind, n, reps):
    rate = coverage(kind, n, reps=reps, seed=n)
    assert rate >= 0.93, (kind, n, rate)


@pytest.mark.parametrize("kind", list(RUNS))
def test_interval_coverage_fast(kind):
    for n in (5, 8):
        _coverage_ok(kind, n, 4000)


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(RUNS))
def test_interval_coverage(kind):
    for n in (5, 8):
        _coverage_ok(kind, n, 100_000)


def _recommended_n_has_power(mu, sigma, margin, reps):
    level = ALPHA / 7
    n = seeds_for(mu, sigma, margin, level=level)
    assert n is not None and n >= 3
    simulated = power_at(n, mu, sigma, margin, k=7, reps=reps, seed=n)
    assert simulated >= 0.8 - 3 * mc_error(0.8, reps), (mu, sigma, n, simulated)
    assert power(n - 1, mu, sigma, margin, level=level) < 0.8 or n == 3  # the fewest
    return n, simulated


@pytest.mark.parametrize("mu,sigma", [(-0.05, 0.04), (-0.02, 0.03), (-0.5, 0.2)])
def test_recommended_seeds_reach_power_fast(mu, sigma):
    _recommended_n_has_power(mu, sigma, 0.005, 4000)


@pytest.mark.slow
@pytest.mark.parametrize("mu,sigma", [(-0.05, 0.04), (-0.02, 0.03), (-0.01, 0.02),
                                      (-0.5, 0.2), (-0.008, 0.004)])
def test_recommended_seeds_reach_power(mu, sigma):
    _recommended_n_has_power(mu, sigma, 0.005, 50_000)


def test_seed_advice_is_a_range_at_least_or_equivalent():
    """The report's advice from observed Δ: a range from the observed effect to its
    interval's edge, "at least" when the edge reaches into the margin, and no count at all
    for a Δ inside the margin (no "2335 seeds" for a Δ of 3.7e-06)."""
    sure = seeds_needed([-0.10, -0.12, -0.08, -0.11, -0.09], 0.005, 7)
    assert sure.kind == "count" and sure.low is not None and sure.high is not None
    noisy = seeds_needed([-0.10, -0.02, -0.08, 0.01, -0.09], 0.005, 7)
    assert noisy.kind == "count" and noisy.high is None and noisy.text(0.005).startswith(
        "at least")
    tiny = seeds_needed([3.7e-6, 1e-6, 5e-6, 2e-6], 0.005, 7)
    assert tiny.kind == "equivalent" and "show equivalence" in tiny.text(0.005)
    # every count is one the procedure can honour: at least 3 seeds (a t-test can reach
    # any level from there), never a count whose power is below 0.8
    for advice in (sure, noisy):
        assert advice.low >= 3
        d = np.array([-0.10, -0.12, -0.08, -0.11, -0.09])
        if advice is sure:
            assert power(advice.low, d.mean(), d.std(ddof=1), 0.005,
                         level=ALPHA / 7) >= 0.8


def test_power_matches_gpower():
    """The exact power at margin 0 is the noncentral-t power G*Power prints (two-sided
    paired t, alpha 0.05): d = 0.5, n = 34: 0.808; d = 1, n = 10: 0.803."""
    assert power(34, 0.5, 1.0, 0.0) == pytest.approx(0.808, abs=0.002)
    assert power(10, 1.0, 1.0, 0.0) == pytest.approx(0.803, abs=0.002)
    assert math.isclose(power(1, 1.0, 1.0, 0.0), 0.0)
