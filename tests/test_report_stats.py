"""Report statistics on small inputs whose answers can be checked by hand."""

import math

import numpy as np
import pytest
from scipy import stats

from lossbench.analysis.stats import (
    curve_auc,
    ema,
    holm,
    interval,
    iqm,
    mean_ranks,
    steps_to_target,
    t_interval,
)


def test_t_interval_by_hand():
    x = [1.0, 2.0, 3.0, 4.0]  # mean 2.5, sd 1.291, t(0.975, 3) = 3.182
    half = stats.t.ppf(0.975, 3) * np.std(x, ddof=1) / 2
    assert t_interval(x) == pytest.approx((2.5 - half, 2.5 + half))
    assert all(math.isnan(v) for v in t_interval([2.0]))
    assert t_interval([3.0, 3.0, 3.0]) == (3.0, 3.0)


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


def test_interval_is_a_range_below_three_seeds_and_a_t_interval_from_three():
    two = interval([1.8, 1.9])
    assert (two.low, two.high, two.kind, two.n) == (1.8, 1.9, "range", 2)
    assert interval([2.0]).kind == "range" and math.isnan(interval([2.0]).low)
    five = interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert five.kind == "95% CI" and (five.low, five.high) == pytest.approx(
        t_interval([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert interval([1.0, math.inf, 2.0]).n == 2  # not a result: the caller counts it
    assert iqm([1.0, 2.0, 3.0, 100.0]) == pytest.approx(2.5)
