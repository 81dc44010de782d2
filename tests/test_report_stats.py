"""Report statistics on small inputs whose answers can be checked by hand."""

import math

import pytest

from lossbench.report.stats import (bootstrap_ci, curve_auc, ema, holm, mean_ranks,
                                    min_wilcoxon_p, paired_comparison, steps_to_target)


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
