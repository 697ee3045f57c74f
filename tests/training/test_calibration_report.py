"""The calibration report: every plot written and valid, every checked target reported, HTML complete."""

from __future__ import annotations

import re

import numpy as np
import pytest

from envs.calibration import TARGETS
from envs.scenario import Scenario
from training import calibration_report as cr

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("calibration") / "report"  # does not exist yet: write_report creates it
    days: list[int] = []
    md = cr.write_report(Scenario.default(), out, n=2000, seed=0, progress=days.append)
    return out, md, days


def test_returns_markdown_path_and_reports_progress(report):
    out, md, days = report
    assert md == out / "report.md"
    assert md.is_file() and (out / "report.html").is_file()
    assert days == list(range(cr.DAYS))


@pytest.mark.parametrize("name", cr.IMAGES)
def test_every_png_exists_and_is_valid(report, name):
    out, _, _ = report
    data = (out / name).read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 400 and height >= 300
    assert data.rstrip(b"\x00")[-8:-4] == b"IEND"


def test_markdown_reports_every_target_with_status(report):
    _, md, _ = report
    text = md.read_text()
    assert "nba scenario report --out" in text and "--n 2000 --seed 0" in text
    for t in TARGETS:
        assert t.name in text
        rows = [line for line in text.splitlines() if line.startswith(f"| {t.name} |")]
        assert len(rows) == 1, t.name
        if t.kind == "checked":
            assert re.search(r"\| (PASS|FAIL) \|", rows[0]), rows[0]
        else:
            assert "PASS" not in rows[0] and "FAIL" not in rows[0]
    used = text.index("Used to set inputs")
    for t in TARGETS:
        assert (text.index(f"| {t.name} |") > used) == (t.kind == "input")
    for name in cr.IMAGES:
        assert f"]({name})" in text


def test_html_references_every_image_and_target(report):
    out, _, _ = report
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for name in cr.IMAGES:
        assert f'<img src="{name}"' in page
    for t in TARGETS:
        assert t.name in page
    assert re.search(r'class="(PASS|FAIL)"', page)


# ---------------------------------------------------------------------------- array functions
def test_funnel_rates_are_cumulative_means_over_reachable():
    reachable = np.array([[True, False], [True, False], [False, False]])
    p = np.full((3, 2), 0.5)
    p[1] = 1.0
    f = cr.funnel_rates(("a", "b"), reachable, p, p, p, p)
    np.testing.assert_allclose(f.reach, [2 / 3, 0.0])
    np.testing.assert_allclose([f.delivered[0], f.seen[0], f.clicked[0], f.converted[0]],
                               [0.75, (0.25 + 1) / 2, (0.125 + 1) / 2, (0.0625 + 1) / 2])
    assert np.isnan(f.delivered[1])


def test_hour_curves_average_one_over_the_day():
    from scipy.special import i0

    rng = np.random.default_rng(0)
    kappa = np.array([0.0, 0.8, 1.6])
    peak = rng.uniform(0, 24, (500, 3))
    seg = rng.integers(0, 2, 500)
    curves = cr.hour_curves(peak, seg, kappa, 1.0 / i0(kappa), 3)
    assert curves.shape == (3, 3, 24)
    np.testing.assert_allclose(curves[:2].mean(axis=2), 1.0, atol=1e-9)  # 24 points integrate cos exactly
    np.testing.assert_allclose(curves[:2, 0], 1.0)  # kappa 0 is flat
    assert np.isnan(curves[2]).all()  # empty segment


def test_revenue_concentration_and_top_share():
    revenue = np.array([0.0, 10.0, 30.0, 60.0])
    order = np.array([3, 2, 1, 0])
    x, y = cr.revenue_concentration(revenue, order)
    np.testing.assert_allclose(x, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(y, [0, 0.6, 0.9, 1.0, 1.0])
    assert cr.top_share(revenue, order, 0.25) == pytest.approx(0.6)


def test_revenue_per_buyer_by_channels_buckets_the_tail():
    labels, mean, count = cr.revenue_per_buyer_by_channels(
        revenue=np.array([5.0, 10.0, 20.0, 40.0, 99.0, 0.0]), purchases=np.array([1, 1, 2, 1, 3, 0]),
        channels_used=np.array([0, 1, 1, 4, 6, 2]))
    assert labels == ["0", "1", "2", "3", "4+"]
    np.testing.assert_array_equal(count, [1, 2, 0, 0, 2])
    np.testing.assert_allclose(mean[[0, 1, 4]], [5.0, 15.0, 69.5])
    assert np.isnan(mean[2]) and np.isnan(mean[3])


def test_delay_quantiles_match_sms_target_definition():
    x, p = cr.delay_quantiles(Scenario.default(), "sms")
    assert np.all(np.diff(x) >= 0)
    assert np.interp(cr.SMS_MINUTES, x, p) == pytest.approx(0.90, abs=0.01)


def test_rolling_mean_is_trailing():
    np.testing.assert_allclose(cr.rolling_mean(np.array([1.0, 3.0, 5.0, 7.0]), 2), [1, 2, 4, 6])
