"""The calibration figures (envs.calibration_metrics): each curve against a hand-computed value."""

from __future__ import annotations

import numpy as np
import pytest

from envs import calibration_metrics as cm
from envs.scenario import Scenario


def test_funnel_rates_are_cumulative_means_over_reachable():
    reachable = np.array([[True, False], [True, False], [False, False]])
    p = np.full((3, 2), 0.5)
    p[1] = 1.0
    f = cm.funnel_rates(("a", "b"), reachable, p, p, p, p)
    np.testing.assert_allclose(f.reach, [2 / 3, 0.0])
    np.testing.assert_allclose(
        [f.delivered[0], f.seen[0], f.clicked[0], f.converted[0]],
        [0.75, (0.25 + 1) / 2, (0.125 + 1) / 2, (0.0625 + 1) / 2],
    )
    assert np.isnan(f.delivered[1])


def test_hour_curves_average_one_over_the_day():
    from scipy.special import i0

    rng = np.random.default_rng(0)
    kappa = np.array([0.0, 0.8, 1.6])
    peak = rng.uniform(0, 24, (500, 3))
    seg = rng.integers(0, 2, 500)
    curves = cm.hour_curves(peak, seg, kappa, 1.0 / i0(kappa), 3)
    assert curves.shape == (3, 3, 24)
    np.testing.assert_allclose(curves[:2].mean(axis=2), 1.0, atol=1e-9)  # 24 points integrate cos exactly
    np.testing.assert_allclose(curves[:2, 0], 1.0)  # kappa 0 is flat
    assert np.isnan(curves[2]).all()  # empty segment


def test_revenue_concentration_and_top_share():
    revenue = np.array([0.0, 10.0, 30.0, 60.0])
    order = np.array([3, 2, 1, 0])
    x, y = cm.revenue_concentration(revenue, order)
    np.testing.assert_allclose(x, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(y, [0, 0.6, 0.9, 1.0, 1.0])
    assert cm.top_share(revenue, order, 0.25) == pytest.approx(0.6)


def test_revenue_per_buyer_by_channels_buckets_the_tail():
    labels, mean, count = cm.revenue_per_buyer_by_channels(
        revenue=np.array([5.0, 10.0, 20.0, 40.0, 99.0, 0.0]),
        purchases=np.array([1, 1, 2, 1, 3, 0]),
        channels_used=np.array([0, 1, 1, 4, 6, 2]),
    )
    assert labels == ["0", "1", "2", "3", "4+"]
    np.testing.assert_array_equal(count, [1, 2, 0, 0, 2])
    np.testing.assert_allclose(mean[[0, 1, 4]], [5.0, 15.0, 69.5])
    assert np.isnan(mean[2]) and np.isnan(mean[3])


def test_delay_quantiles_match_sms_target_definition():
    x, p = cm.delay_quantiles(Scenario.default(), "sms")
    assert np.all(np.diff(x) >= 0)
    assert np.interp(cm.SMS_MINUTES, x, p) == pytest.approx(0.90, abs=0.01)


def test_rolling_mean_is_trailing():
    np.testing.assert_allclose(cm.rolling_mean(np.array([1.0, 3.0, 5.0, 7.0]), 2), [1, 2, 4, 6])
