"""Report statistics on small inputs whose answers can be checked by hand."""

import math

import numpy as np
import pytest
from scipy import stats

from lossbench.analysis.stats import (
    bootstrap_ci,
    curve_auc,
    ema,
    holm,
    interval,
    iqm,
    mean_ranks,
    min_wilcoxon_p,
    paired_comparison,
    paired_t_power,
    paired_t_seeds,
    probability_of_improvement,
    probability_of_improvement_ci,
    seeds_needed,
    steps_to_target,
)


def test_bootstrap_ci_brackets_the_mean_and_handles_small_n():
    ci = bootstrap_ci([1.0, 2.0, 3.0, 4.0])
    assert ci.mean == 2.5 and ci.n == 4
    assert 1.0 <= ci.low < 2.5 < ci.high <= 4.0
    one = bootstrap_ci([2.0])
    assert one.mean == 2.0 and math.isnan(one.low) and math.isnan(one.high)
    same = bootstrap_ci([3.0, 3.0, 3.0])
    assert (same.low, same.high) == (3.0, 3.0)
    assert bootstrap_ci([1.0, math.nan, 3.0]).n == 2  # a diverged run's NaN is dropped
    assert bootstrap_ci([]).n == 0


def test_wilcoxon_exact_p_values():
    base = {s: 2.0 for s in range(6)}
    lower = {s: 1.0 - 0.01 * s for s in range(6)}  # lower on all 6 seeds
    cmp = paired_comparison(base, lower)
    assert cmp.n_pairs == 6 and cmp.p_value == pytest.approx(2 / 64)  # exact: 2 / 2^6
    assert cmp.mean_difference == pytest.approx(-1.025)
    assert cmp.note == ""
    assert "wilcoxon" in cmp.test


def test_too_few_seeds_is_said_plainly():
    cmp = paired_comparison({0: 2.0, 1: 2.1, 2: 2.2}, {0: 1.0, 1: 1.1, 2: 1.2})
    assert cmp.p_value == pytest.approx(0.25) == min_wilcoxon_p(3)
    assert "no difference can be significant" in cmp.note
    assert math.isnan(paired_comparison({0: 1.0}, {0: 2.0}).p_value)
    assert paired_comparison({0: 1.0}, {1: 2.0}).n_pairs == 0  # no common seed


def test_pairs_only_matching_seeds_and_skips_non_finite():
    cmp = paired_comparison({0: 1.0, 1: 1.0, 2: 1.0}, {0: 2.0, 1: math.inf, 3: 0.0})
    assert cmp.n_pairs == 1 and cmp.mean_difference == 1.0


def test_holm_by_hand():
    # sorted p: 0.01, 0.02, 0.04 with m = 3 -> 0.03, 0.04, 0.04 (monotone)
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    out = holm([0.01, math.nan])
    assert out[0] == pytest.approx(0.01) and math.isnan(out[1])


def test_steps_to_target_and_infinity():
    assert steps_to_target([0, 100, 200, 300], [3.0, 2.5, 2.0, 1.9], 2.0) == 200
    assert steps_to_target([0, 100], [3.0, 2.5], 2.0) == math.inf
    assert steps_to_target([0, 100], [3.0, math.nan], 2.0) == math.inf


def test_curve_auc_is_the_mean_over_training():
    assert curve_auc([0, 10], [2.0, 2.0]) == 2.0
    assert curve_auc([0, 10, 20], [3.0, 1.0, 1.0]) == pytest.approx((20 + 10) / 20)
    assert math.isnan(curve_auc([0], [1.0]))


def test_ema_bias_corrected():
    assert ema([5.0, 5.0, 5.0], alpha=0.5) == pytest.approx([5.0, 5.0, 5.0])
    assert ema([0.0, 4.0], alpha=0.5) == pytest.approx([0.0, 2.0 / 0.75])


def test_mean_ranks_with_ties_and_divergence():
    table = {"a": {0: 1.0, 1: 2.0}, "b": {0: 2.0, 1: 2.0}, "c": {0: math.nan, 1: 3.0}}
    # seed 0: a=1, b=2, c=3 (NaN last); seed 1: a, b tie at 1.5, c=3
    assert mean_ranks(table) == pytest.approx({"a": 1.25, "b": 1.75, "c": 3.0})


def test_interval_is_a_range_below_five_seeds_and_a_bootstrap_ci_from_five():
    two = interval([1.8, 1.9])
    assert (two.low, two.high, two.kind, two.n) == (1.8, 1.9, "range", 2)
    assert interval([2.0]).kind == "range" and math.isnan(interval([2.0]).low)
    five = interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert five.kind == "95% CI" and 1.0 <= five.low < 3.0 < five.high <= 5.0
    assert interval([1.0, math.inf, 2.0]).n == 2  # not a result: the caller counts it


def test_paired_t_seeds_matches_the_closed_form_power_calculation():
    # G*Power 3.1, "t tests - means: difference from constant (one sample case)", two
    # tails, alpha 0.05, power 0.8: d = 0.5 -> 34, d = 0.8 -> 15, d = 1.0 -> 10, 0.2 -> 199
    assert [paired_t_seeds(d) for d in (0.5, 0.8, 1.0, 0.2)] == [34, 15, 10, 199]
    assert paired_t_seeds(-0.5) == 34 and paired_t_seeds(0.0) == 0
    # and the power itself against the noncentral t written out: P(|T| > t_crit | nc)
    n, d = 34, 0.5
    crit = stats.t.ppf(0.975, n - 1)
    expected = 1 - stats.nct.cdf(crit, n - 1, d * n ** 0.5) + stats.nct.cdf(-crit, n - 1, d * n ** 0.5)
    assert paired_t_power(n, d) == pytest.approx(expected)
    assert paired_t_power(33, d) < 0.8 <= paired_t_power(34, d)


def test_seeds_needed_from_observed_paired_differences():
    diffs = [0.1, 0.3, 0.2, 0.4, 0.0]  # mean 0.2, sd 0.158: d = 1.265 -> paired t needs 8
    d = np.mean(diffs) / np.std(diffs, ddof=1)
    assert seeds_needed(diffs) == max(6, paired_t_seeds(d)) == 8
    assert seeds_needed([0.1, 0.1]) == 6  # every seed agrees: the Wilcoxon floor
    assert seeds_needed([0.1, -0.1]) == 0  # no observed difference to resolve
    assert seeds_needed([0.01, 0.2, -0.15]) > 30  # noisy and small: many seeds


def test_probability_of_improvement_counts_pairs_and_ties():
    assert probability_of_improvement([1.0, 2.0], [3.0, 4.0]) == 1.0
    assert probability_of_improvement([1.0, 3.0], [2.0, 4.0]) == 0.75
    assert probability_of_improvement([1.0], [1.0]) == 0.5
    small = probability_of_improvement_ci([1.0, 2.0], [3.0, 4.0])
    assert math.isnan(small.low)  # two seeds: no interval
    ci = probability_of_improvement_ci([1, 2, 3, 4, 5.0], [2, 3, 4, 5, 6.0])
    assert ci.kind == "95% CI" and ci.mean == pytest.approx(0.68) and ci.low < 0.68 < ci.high
    assert iqm([1.0, 2.0, 3.0, 100.0]) == pytest.approx(2.5)
