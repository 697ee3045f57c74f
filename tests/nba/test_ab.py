"""A/B statistics: stable hashing assignment, Welch/CUPED intervals, mSPRT under peeking, power planning.

Stochastic checks use fixed seeds and tolerances of three Monte Carlo standard errors.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from nba import ab
from nba.log.records import LoggedBatch

SPLITS = {"control": 0.5, "treatment": 0.5}


# ====================================================================================== assignment
def test_assignment_is_stable_across_processes():
    ids = [f"cust-{i}" for i in range(200)] + [12345, "é"]
    here = ab.assign("exp-stable", ids, {"a": 1, "b": 2, "c": 1})
    code = (
        "import sys, json; from nba import ab; ids = json.loads(sys.argv[1]); "
        "print(','.join(ab.assign('exp-stable', ids, {'c': 1, 'b': 2, 'a': 1})))"
    )
    import json

    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(ids)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
    )
    assert out.stdout.strip().split(",") == list(here)


def test_assignment_pinned_values():
    # blake2b("exp\x00c1", digest_size=16): pinned so that a change of hashing is never silent
    import hashlib

    h = hashlib.blake2b(b"exp\x00c1", digest_size=16).digest()[:8]
    expected = (int.from_bytes(h, "big") >> 11) * 2.0**-53
    assert ab.hash_unit("exp", ["c1"])[0] == expected
    assert 0 <= expected < 1


@pytest.mark.parametrize(
    "splits", [{"control": 0.5, "treatment": 0.5}, {"a": 0.1, "b": 0.3, "c": 0.6}, {"champion": 9, "challenger": 1}]
)
def test_splits_respected_within_binomial_tolerance(splits):
    n = 40_000
    arm = ab.assign("exp-splits", np.arange(n), splits)
    total = sum(splits.values())
    for a, w in splits.items():
        p = w / total
        assert abs((arm == a).mean() - p) < 4 * np.sqrt(p * (1 - p) / n), a


def test_assignment_independent_across_experiments_and_order_free():
    ids = np.arange(20_000)
    a1 = ab.assign("exp-1", ids, SPLITS)
    a2 = ab.assign("exp-2", ids, SPLITS)
    agree = (a1 == a2).mean()
    assert abs(agree - 0.5) < 4 * np.sqrt(0.25 / ids.size)
    assert np.array_equal(a1, ab.assign("exp-1", ids, {"treatment": 0.5, "control": 0.5}))
    assert ab.assign_one("exp-1", 7, SPLITS) == a1[7]
    # ramping the treatment from 10% to 50% keeps every treated customer treated
    small = ab.assign("exp-1", ids, {"control": 0.9, "treatment": 0.1})
    assert np.all(a1[small == "treatment"] == "treatment")


@pytest.mark.parametrize(
    "splits, match",
    [
        ({}, "splits"),
        ({"a": 0}, "weight of arm 'a'"),
        ({"a": -1, "b": 1}, "weight"),
        ({"": 1}, "non-empty"),
        ({"a": float("nan")}, "weight"),
        ({"a": True}, "weight"),
    ],
)
def test_bad_splits(splits, match):
    with pytest.raises(ValueError, match=match):
        ab.assign("e", ["x"], splits)


def test_bad_experiment_and_ids():
    with pytest.raises(ValueError, match="experiment"):
        ab.assign("", ["x"], SPLITS)
    with pytest.raises(ValueError, match="experiment"):
        ab.assign("a\x00b", ["x"], SPLITS)
    with pytest.raises(ValueError, match="customer_ids"):
        ab.assign("e", ["x", ""], SPLITS)


# ====================================================================================== Welch, lift
def test_welch_matches_scipy():
    rng = np.random.default_rng(0)
    yt, yc = rng.normal(1.2, 3.0, 300), rng.normal(1.0, 1.0, 500)
    c = ab.compare(yt, yc, level=0.9)
    ref = stats.ttest_ind(yt, yc, equal_var=False)
    assert c.statistic == pytest.approx(ref.statistic)
    assert c.p_value == pytest.approx(ref.pvalue)
    assert c.df == pytest.approx(ref.df)
    se = np.sqrt(yt.var(ddof=1) / 300 + yc.var(ddof=1) / 500)
    half = stats.t.ppf(0.95, ref.df) * se
    assert c.diff == pytest.approx(yt.mean() - yc.mean())
    assert (c.ci_low, c.ci_high) == pytest.approx((c.diff - half, c.diff + half))
    assert c.lift == pytest.approx(yt.mean() / yc.mean() - 1)


def test_compare_validates_inputs():
    with pytest.raises(ValueError, match="treatment"):
        ab.compare([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="control"):
        ab.compare([1.0, 2.0], [1.0, np.nan])
    with pytest.raises(ValueError, match="level"):
        ab.compare([1.0, 2.0], [1.0, 2.0], level=1.0)
    with pytest.raises(ValueError, match=r"^treatment: expected one value per customer .* shape \(2, 2\)"):
        ab.compare([[1.0, 2.0], [3.0, 4.0]], [1.0, 2.0])  # a table is not read as its flattened cells
    with pytest.raises(ValueError, match="^covariate_control: expected one value per customer"):
        ab.cuped([1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [[1.0], [2.0]])


def test_interval_coverage_of_known_difference():
    """95% Welch intervals for the difference and delta-method intervals for the lift cover ≥ 93%."""
    rng = np.random.default_rng(1)
    reps, nt, nc = 2000, 200, 300
    # skewed, unequal variances: exponential rewards with different means
    mt, mc = 1.3, 1.0
    hit_diff = hit_lift = 0
    for _ in range(reps):
        c = ab.compare(rng.exponential(mt, nt), rng.exponential(mc, nc))
        hit_diff += c.ci_low <= mt - mc <= c.ci_high
        hit_lift += c.lift_ci_low <= mt / mc - 1 <= c.lift_ci_high
    assert hit_diff / reps >= 0.93
    assert hit_lift / reps >= 0.93


# ====================================================================================== CUPED
def test_cuped_reduces_variance_and_stays_unbiased():
    rng = np.random.default_rng(2)
    reps, n, rho, effect = 600, 400, 0.7, 0.25
    raw, adj, cover, reductions = [], [], 0, []
    for _ in range(reps):
        x = rng.normal(size=2 * n)
        y = rho * x + np.sqrt(1 - rho**2) * rng.normal(size=2 * n)
        y[:n] += effect
        r = ab.cuped(y[:n], y[n:], x[:n], x[n:])
        raw.append(r.raw.diff)
        adj.append(r.adjusted.diff)
        cover += r.adjusted.ci_low <= effect <= r.adjusted.ci_high
        reductions.append(r.variance_reduction)
    raw, adj = np.array(raw), np.array(adj)
    se_true = np.sqrt(2 / n)
    assert abs(adj.mean() - effect) < 4 * se_true * np.sqrt(1 - rho**2) / np.sqrt(reps)
    assert abs(raw.mean() - effect) < 4 * se_true / np.sqrt(reps)
    # the empirical variance of the estimates falls by about rho² = 49%
    assert 1 - adj.var() / raw.var() == pytest.approx(rho**2, abs=0.08)
    assert np.mean(reductions) == pytest.approx(rho**2, abs=0.03)
    assert cover / reps >= 0.93


def test_cuped_with_useless_covariate_changes_little():
    rng = np.random.default_rng(3)
    y, x = rng.normal(size=1000), rng.normal(size=1000)
    r = ab.cuped(y[:500], y[500:], x[:500], x[500:])
    assert abs(r.variance_reduction) < 0.02
    r0 = ab.cuped(y[:500], y[500:], np.zeros(500), np.zeros(500))
    assert r0.theta == 0 and r0.adjusted.diff == pytest.approx(r0.raw.diff)
    with pytest.raises(ValueError, match="covariate_control"):
        ab.cuped(y[:500], y[500:], x[:500], x[:10])


# ====================================================================================== mSPRT
def _stream_looks(rng, reps, looks, per_look, effect=0.0):
    """Per-replication running means and standard errors as customers keep arriving (both arms)."""
    ns = np.arange(1, looks + 1) * per_look
    out = []
    for shift in (effect, 0.0):
        y = rng.normal(shift, 1.0, (reps, looks * per_look))
        c1, c2 = np.cumsum(y, 1)[:, ns - 1], np.cumsum(y**2, 1)[:, ns - 1]
        mean = c1 / ns
        out.append((mean, (c2 - ns * mean**2) / (ns - 1)))
    (mt, vt), (mc, vc) = out
    return mt - mc, np.sqrt(vt / ns + vc / ns)


def test_msprt_formula_matches_johari_equal_arms():
    n, sigma, tau, d = 500, 2.0, 0.3, 0.25
    s = ab.msprt(np.array([d]), np.array([np.sqrt(2 * sigma**2 / n)]), tau=tau)
    johari = np.sqrt(2 * sigma**2 / (2 * sigma**2 + n * tau**2)) * np.exp(
        n**2 * tau**2 * d**2 / (4 * sigma**2 * (2 * sigma**2 + n * tau**2))
    )
    assert s.likelihood_ratio[0] == pytest.approx(johari)
    assert s.p_value[0] == pytest.approx(min(1, 1 / johari))
    # the confidence sequence is exactly where the likelihood ratio against theta stays below 1/alpha
    for theta in (s.cs_low[0], s.cs_high[0]):
        at = ab.msprt(np.array([d]), s.se, tau=tau, theta0=theta)
        assert at.likelihood_ratio[0] == pytest.approx(1 / 0.05)


def test_msprt_aa_peeking_keeps_false_positives_below_alpha():
    """A/A with 20 daily peeks: mSPRT stays ≤ alpha (+3 MC s.e.); the naive repeated t-test does not."""
    rng = np.random.default_rng(4)
    reps, alpha = 2000, 0.05
    diff, se = _stream_looks(rng, reps, looks=20, per_look=50)
    msprt_fp = naive_fp = 0
    for r in range(reps):
        s = ab.msprt(diff[r], se[r], tau=0.1, alpha=alpha)
        msprt_fp += s.rejected
        naive_fp += bool((s.naive_p <= alpha).any())
    margin = 3 * np.sqrt(alpha * (1 - alpha) / reps)
    assert msprt_fp / reps <= alpha + margin
    assert naive_fp / reps > alpha + 2 * margin  # about 0.25 with 20 looks


def test_msprt_aa_cumulative_totals_of_fixed_population():
    """Fixed population accumulating reward day by day (what the simulated job looks at) stays valid."""
    rng = np.random.default_rng(5)
    reps, days, n, alpha = 1000, 14, 200, 0.05
    fp = 0
    for _ in range(reps):
        daily = rng.exponential(1.0, (2 * n, days)) * (rng.random((2 * n, days)) < 0.3)
        arm = np.repeat(np.array(["t", "c"], dtype=object), n)
        s = ab.sequential_test(ab.looks_from_daily(daily, arm), "t", "c", tau=0.3, alpha=alpha)
        fp += s.rejected
    assert fp / reps <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / reps)


def test_confidence_sequence_covers_effect_at_every_look_and_detects_it():
    rng = np.random.default_rng(6)
    reps, effect = 500, 0.15
    diff, se = _stream_looks(rng, reps, looks=20, per_look=50, effect=effect)
    miss = detected = 0
    for r in range(reps):
        s = ab.msprt(diff[r], se[r], tau=effect, intersect=True)
        assert np.all(np.diff(s.p_value) <= 0) and np.all(np.diff(s.cs_high - s.cs_low) <= 1e-12)
        miss += bool(np.any((s.cs_low > effect) | (s.cs_high < effect)))
        detected += s.rejected
    assert miss / reps <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / reps)
    assert detected / reps > 0.5  # 1000 customers an arm, effect 0.15 sd: detected most of the time


def test_msprt_validates():
    with pytest.raises(ValueError, match="tau"):
        ab.msprt(np.zeros(3), np.ones(3), tau=0.0)
    with pytest.raises(ValueError, match="se"):
        ab.msprt(np.zeros(3), np.array([1.0, 0.0, 1.0]), tau=1.0)
    with pytest.raises(ValueError, match="se"):
        ab.msprt(np.zeros(3), np.ones(2), tau=1.0)


# ====================================================================================== planning
def test_sample_size_closed_form():
    # two-sided alpha 0.05, power 0.8, d = 0.2: n = (1.959964 + 0.841621)² · 2 / 0.04 = 392.44 -> 393
    s = ab.sample_size(mde=0.2, sd=1.0)
    assert (s.n_control, s.n_treatment) == (393, 393)
    assert s.power >= 0.8 and ab.power(392, 0.2, 1.0) < 0.8
    # unequal allocation: n_c = (z_a + z_b)² sd² (1 + 1/k) / mde²
    k = 2.0
    closed = (stats.norm.isf(0.025) + stats.norm.ppf(0.9)) ** 2 * 4.0 * (1 + 1 / k) / 0.5**2
    s = ab.sample_size(mde=0.5, sd=2.0, power=0.9, ratio=k)
    assert s.n_control == int(np.ceil(closed)) or s.n_control == int(np.ceil(closed)) + 1
    assert s.n_treatment == int(np.ceil(k * s.n_control))
    one = ab.sample_size(mde=0.2, sd=1.0, alternative="larger")
    assert one.n_control == int(np.ceil((stats.norm.isf(0.05) + stats.norm.ppf(0.8)) ** 2 * 2 / 0.04))
    assert ab.power(100, 0.0, 1.0) == pytest.approx(0.05)


def test_power_matches_simulation():
    rng = np.random.default_rng(7)
    mde, sd = 0.3, 1.5
    plan = ab.sample_size(mde, sd, power=0.7)
    reps = 1500
    yt = rng.normal(mde, sd, (reps, plan.n_treatment))
    yc = rng.normal(0.0, sd, (reps, plan.n_control))
    p = stats.ttest_ind(yt, yc, axis=1, equal_var=False).pvalue
    rate = (p < 0.05).mean()
    assert rate == pytest.approx(plan.power, abs=3 * np.sqrt(0.7 * 0.3 / reps))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mde": 0.0, "sd": 1.0}, "mde"),
        ({"mde": 0.1, "sd": -1.0}, "sd"),
        ({"mde": 0.1, "sd": 1.0, "power": 1.2}, "power"),
        ({"mde": 0.1, "sd": 1.0, "alpha": 0.0}, "alpha"),
        ({"mde": 0.1, "sd": 1.0, "ratio": 0.0}, "ratio"),
        ({"mde": -0.1, "sd": 1.0, "alternative": "larger"}, "mde"),
        ({"mde": 0.1, "sd": 1.0, "alternative": "both"}, "alternative"),
    ],
)
def test_sample_size_validates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ab.sample_size(**kwargs)


# ====================================================================================== from the decision log
def _batch(customer, arm, time, reward, experiment="exp"):
    n = len(customer)
    s = lambda v: np.asarray(v, dtype=object)  # noqa: E731
    return LoggedBatch(
        decision_id=s([f"d{i}-{c}-{t}" for i, (c, t) in enumerate(zip(customer, time, strict=True))]),
        time=np.asarray(time, np.float64),
        customer_id=s(customer),
        context=np.zeros((n, 2), np.float32),
        eligible=np.ones((n, 3), bool),
        action=np.zeros(n, np.int64),
        send_at=np.asarray(time, np.float64),
        propensity=np.ones(n),
        policy=s(["p"] * n),
        policy_version=s(["1"] * n),
        experiment=s([experiment] * n),
        arm=s(arm),
        cost=np.zeros(n),
        reward=np.asarray(reward, np.float64),
    )


def test_customer_totals_from_batches():
    b1 = _batch(["a", "b", "a"], ["t", "c", "t"], [0.0, 1.0, 30.0], [1.0, 2.0, 3.0])
    b2 = _batch(["c", "b"], ["t", "c"], [5.0, 50.0], [4.0, 5.0])
    pre = _batch(["a", "b"], ["", ""], [-10.0, -5.0], [7.0, 8.0], experiment="")
    t = ab.customer_totals(iter([b1, pre, b2]), experiment="exp")
    assert list(t.customer_id) == ["a", "b", "c"]
    np.testing.assert_array_equal(t.total, [4.0, 7.0, 4.0])
    np.testing.assert_array_equal(t.n_decisions, [2, 2, 1])
    np.testing.assert_array_equal(t.first_time, [0.0, 1.0, 5.0])
    assert list(t.arm) == ["t", "c", "t"]
    np.testing.assert_array_equal(t.values("t"), [4.0, 4.0])
    before = ab.customer_totals([b1, pre, b2], end=0.0)
    np.testing.assert_array_equal(before.lookup(t.customer_id), [7.0, 8.0, 0.0])
    with pytest.raises(ValueError, match="arm"):
        ab.customer_totals(_batch(["a", "a"], ["t", "c"], [0, 1], [1, 1]))


def test_daily_looks_match_looks_from_daily():
    rng = np.random.default_rng(8)
    n, days = 300, 6
    cust = rng.integers(0, n, 3000)
    ids = np.array([f"u{i}" for i in range(n)], dtype=object)
    arm_of = ab.assign("exp", ids, SPLITS)
    time = rng.uniform(0, 24 * days, cust.size)
    reward = rng.exponential(1.0, cust.size)
    looks = ab.daily_looks(_batch(ids[cust], arm_of[cust], time, reward), experiment="exp", start=0.0, days=days)
    # the same from a dense per-customer daily matrix with each customer's enrolment day
    seen = np.unique(cust)
    daily = np.zeros((n, days))
    np.add.at(daily, (cust, (time // 24).astype(int)), reward)
    enrol = np.full(n, days)
    np.minimum.at(enrol, cust, (time // 24).astype(int))
    ref = ab.looks_from_daily(daily[seen], arm_of[seen], enrol[seen])
    assert looks.arms == ref.arms == ("control", "treatment")
    np.testing.assert_array_equal(looks.n, ref.n)
    np.testing.assert_allclose(looks.mean, ref.mean)
    np.testing.assert_allclose(looks.var, ref.var)
    # the last look is the plain per-customer comparison
    totals = ab.customer_totals(_batch(ids[cust], arm_of[cust], time, reward))
    last = ab.compare(totals.values("treatment"), totals.values("control"))
    seq = ab.sequential_test(looks, "treatment", "control", tau=0.5)
    assert seq.diff[-1] == pytest.approx(last.diff) and seq.se[-1] == pytest.approx(last.se)


def test_looks_from_daily_blocks_agree(monkeypatch):
    rng = np.random.default_rng(9)
    daily = rng.normal(size=(1000, 5))
    arm = np.where(rng.random(1000) < 0.5, "a", "b").astype(object)
    whole = ab.looks_from_daily(daily, arm)
    monkeypatch.setattr(ab, "BLOCK", 37)
    blocks = ab.looks_from_daily(daily, arm)
    np.testing.assert_allclose(blocks.mean, whole.mean)
    np.testing.assert_allclose(blocks.var, whole.var)
    np.testing.assert_allclose(whole.var[0, -1], np.cumsum(daily, 1)[arm == "a", -1].var(ddof=1))


def test_analyse_bundles_everything():
    rng = np.random.default_rng(10)
    n = 2000
    arm = ab.assign("exp", np.arange(n), SPLITS)
    x = rng.normal(size=n)
    daily = rng.normal(0.1 * (arm == "treatment")[:, None] + 0.5 * x[:, None], 1.0, (n, 7))
    a = ab.analyse(
        daily.sum(1), arm, "treatment", "control", covariate=x, looks=ab.looks_from_daily(daily, arm), tau=0.5
    )
    assert a.cuped is not None and a.cuped.variance_reduction > 0.3
    assert a.sequential is not None and a.sequential.n_looks == 7
    assert a.sequential.diff[-1] == pytest.approx(a.comparison.diff)
    with pytest.raises(ValueError, match="tau"):
        ab.analyse(daily.sum(1), arm, "treatment", "control", looks=ab.looks_from_daily(daily, arm))


def test_analysis_through_the_decision_log_store(tmp_path):
    """Decisions and conversions written to a DecisionLog, read back chunk by chunk, give the same totals."""
    from nba.log import DecisionLog, DecisionRecords, OutcomeRecords, RewardRule

    rng = np.random.default_rng(11)
    n, per = 120, 4
    ids = np.array([f"k{i}" for i in range(n)], dtype=object)
    arm_of = ab.assign("exp-store", ids, SPLITS)
    cust = np.repeat(np.arange(n), per)
    m = cust.size
    time = rng.uniform(0, 24 * 3, m)
    cost = np.full(m, 0.01)
    dec_ids = np.array([f"x{i}" for i in range(m)], dtype=object)
    obj = lambda v: np.full(m, v, dtype=object)  # noqa: E731
    decisions = DecisionRecords(
        decision_id=dec_ids,
        time=time,
        customer_id=ids[cust],
        context=np.zeros((m, 2), np.float32),
        eligible=np.ones((m, 3), bool),
        action=np.ones(m, np.int64),
        send_at=time,
        propensity=np.ones(m),
        policy=obj("p"),
        policy_version=obj("1"),
        experiment=obj("exp-store"),
        arm=arm_of[cust],
        cost=cost,
    )
    bought = rng.random(m) < 0.3
    value = np.round(rng.exponential(20.0, m), 2)
    outcomes = OutcomeRecords(
        decision_id=dec_ids[bought],
        event=np.full(bought.sum(), "converted", dtype=object),
        time=time[bought] + 1.0,
        value=value[bought],
    )
    log = DecisionLog(f"sqlite:///{tmp_path / 'log.db'}")
    try:
        log.log_decisions(decisions)
        log.log_outcomes(outcomes)
        rule = RewardRule(window_h=72.0, events=("converted",))
        totals = ab.customer_totals(
            log.iter_batches(rule, chunk_rows=50, experiment="exp-store"), experiment="exp-store"
        )
        looks = ab.daily_looks(
            log.iter_batches(rule, chunk_rows=70, experiment="exp-store"), experiment="exp-store", start=0.0, days=3
        )
    finally:
        log.close()
    expected = np.bincount(cust, weights=np.where(bought, value, 0.0) - cost, minlength=n)
    order = np.argsort(ids)
    np.testing.assert_array_equal(totals.customer_id, ids[order])
    np.testing.assert_allclose(totals.total, expected[order])
    np.testing.assert_array_equal(totals.arm, arm_of[order])
    last = ab.compare(totals.values("treatment"), totals.values("control"))
    seq = ab.sequential_test(looks, "treatment", "control", tau=5.0)
    assert seq.diff[-1] == pytest.approx(last.diff) and seq.se[-1] == pytest.approx(last.se)


# ====================================================================================== guardrails
def test_one_sided_mixture_matches_its_integral():
    """Λ⁻ in closed form equals the half-normal mixture of Gaussian likelihood ratios, integrated numerically."""
    from scipy import integrate

    for s, v, tau in ((-0.3, 0.04, 0.2), (0.1, 0.01, 0.5), (-1.2, 0.25, 0.1)):

        def integrand(u, s=s, v=v, tau=tau):
            return np.exp(u * s / v - u**2 / (2 * v)) * 2 * stats.norm.pdf(u, scale=tau)

        ref, _ = integrate.quad(integrand, -np.inf, 0.0)
        assert np.exp(ab._one_sided_log_lr(np.array(s), np.array(v), tau)) == pytest.approx(ref, rel=1e-7)


def test_noninferiority_fixed_horizon_known_case():
    rng = np.random.default_rng(20)
    yt, yc = rng.binomial(1, 0.03, 4000).astype(float), rng.binomial(1, 0.02, 5000).astype(float)
    g = ab.Guardrail("opt-outs", "opted_out", 0.02)
    t = ab.noninferiority(yt, yc, g, alpha=0.05)
    se = np.sqrt(yt.var(ddof=1) / yt.size + yc.var(ddof=1) / yc.size)
    w = yt.mean() - yc.mean()
    assert t.worsening == pytest.approx(w) and t.se == pytest.approx(se)
    assert t.p_value == pytest.approx(stats.norm.cdf((w - 0.02) / se))
    assert t.bound == pytest.approx(w + stats.norm.ppf(0.95) * se)
    assert t.passed == (t.bound < 0.02) and t.passed and t.status == "holds"  # +1 point, 2-point margin
    assert t.lower == pytest.approx(w - stats.norm.ppf(0.95) * se)
    assert t.power() == pytest.approx(stats.norm.cdf((0.02 - stats.norm.ppf(0.95) * se) / se))
    tight = ab.noninferiority(yt, yc, ab.Guardrail("tight", "opted_out", 0.005))
    assert not tight.passed and tight.status == "breached"  # at least +0.5 point: shown worse than the margin
    few = ab.noninferiority(yt[:300], yc[:300], g)
    assert (
        few.status == "inconclusive"
        and "more customers would tell" in ab.decide(ab.msprt(np.array([1.0]), np.array([0.1]), tau=1.0), [few]).reason
    )
    # relative, higher is better: revenue may fall at most 10%
    rt, rc = rng.gamma(2.0, 5.0, 3000), rng.gamma(2.0, 5.0, 3000) * 1.05
    r = ab.noninferiority(rt, rc, ab.Guardrail("revenue", "revenue", 0.10, better="higher", relative=True))
    lift, lift_se = ab.lift_delta(rt.mean(), rt.var(ddof=1) / rt.size, rc.mean(), rc.var(ddof=1) / rc.size)
    assert r.worsening == pytest.approx(-lift) and r.se == pytest.approx(lift_se)
    assert r.p_value == pytest.approx(stats.norm.cdf((-lift - 0.10) / lift_se))


def _ni_looks(rng, n, days, harm):
    """A fixed population accumulating a per-day metric; the treatment worse by ``harm`` from day 0 on."""
    daily = rng.exponential(1.0, (2 * n, days)) * (rng.random((2 * n, days)) < 0.3)
    daily[:n, 0] += harm
    arm = np.repeat(np.array(["t", "c"], dtype=object), n)
    return ab.looks_from_daily(daily, arm)


def test_sequential_noninferiority_at_the_margin_passes_at_most_alpha_at_any_look():
    """A treatment exactly ``margin`` worse at every look: the always-valid test declares it non-inferior
    at some look in at most alpha of the runs (+3 MC s.e.); the fixed-horizon test read daily does not."""
    rng = np.random.default_rng(21)
    reps, n, days, margin, alpha = 600, 300, 10, 0.15, 0.05
    g = ab.Guardrail("g", "m", margin)
    valid = naive = 0
    for _ in range(reps):
        looks = _ni_looks(rng, n, days, margin)
        t = ab.noninferiority_sequential(looks, "t", "c", g, alpha=alpha)
        valid += bool((t.p_values <= alpha).any())
        se = np.sqrt(looks.var[1] / looks.n[1] + looks.var[0] / looks.n[0])  # arms sorted: c, t
        naive += bool((stats.norm.cdf((looks.mean[1] - looks.mean[0] - margin) / se) <= alpha).any())
    bound = alpha + 3 * np.sqrt(alpha * (1 - alpha) / reps)
    assert valid / reps <= bound
    assert naive / reps > bound  # one-sided at each of ten looks: about 0.15


def test_sequential_noninferiority_passes_a_harmless_treatment_and_bounds_where_it_crosses():
    rng = np.random.default_rng(22)
    g = ab.Guardrail("g", "m", 0.3)
    passed = 0
    for _ in range(100):
        t = ab.noninferiority_sequential(_ni_looks(rng, 1500, 7, 0.0), "t", "c", g)
        passed += t.passed
        assert t.always_valid and t.p_values.shape == t.bounds.shape == (7,)
        assert t.passed == (t.bound < g.margin)
        # the bound is where the one-sided mixture against it reaches 1/alpha
        lr = np.exp(ab._one_sided_log_lr(np.array(t.worsening - t.bound), np.array(t.se**2), g.margin))
        assert lr == pytest.approx(1 / 0.05, rel=1e-6)
    assert passed >= 80
    # the always-valid bound is wider than the fixed-horizon one on the same data
    looks = _ni_looks(rng, 1500, 7, 0.0)
    seq = ab.noninferiority_sequential(looks, "t", "c", g)
    assert seq.bound > seq.worsening + stats.norm.ppf(0.95) * seq.se


def test_guardrail_declarations_are_validated():
    assert ab.Guardrail.parse("sends per customer=sent:100%") == ab.Guardrail(
        "sends per customer", "sent", 1.0, relative=True
    )
    assert ab.Guardrail.parse("opted_out:0.005") == ab.Guardrail("opted_out", "opted_out", 0.005)
    assert ab.Guardrail.parse("revenue:5%:higher").better == "higher"
    g = ab.Guardrail.parse('{"name": "churn", "metric": "churned", "margin": 0.01}')
    assert ab.Guardrail.from_dict(g.to_dict()) == g
    for bad, match in (
        ("sent", "expected"),
        ("sent:abc", "'sent': margin"),
        ("sent:-1", "margin"),
        ("sent:1:sideways", "better"),
        ('{"metric": "x"}', "margin: required"),
        ('{"metric": "x", "margin": 1, "limit": 2}', "unknown field"),
    ):
        with pytest.raises(ValueError, match=match):
            ab.Guardrail.parse(bad)
    with pytest.raises(ValueError, match="guardrail.name"):
        ab.Guardrail("", "sent", 1.0)
    with pytest.raises(ValueError, match="'x': relative"):
        ab.Guardrail("x", "sent", 1.0, relative="yes")
    with pytest.raises(ValueError, match=r"guardrails\[1\]: name: 'opt-out rate' is declared twice"):
        ab.check_guardrails([ab.DEFAULT_GUARDRAILS[0], ab.DEFAULT_GUARDRAILS[0]])
    with pytest.raises(ValueError, match="guardrail 'clicks': metric: 'clicks' is not measured; valid: sent"):
        ab.check_guardrails(["clicks:1"], ["sent"])


def test_verdict_needs_a_better_primary_and_every_guardrail():
    rng = np.random.default_rng(23)
    better = ab.msprt(np.array([0.5, 0.6]), np.array([0.1, 0.1]), tau=0.5)
    flat = ab.msprt(np.array([0.0, 0.01]), np.array([0.1, 0.1]), tau=0.5)
    worse = ab.msprt(np.array([-0.5, -0.6]), np.array([0.1, 0.1]), tau=0.5)
    yc = rng.binomial(1, 0.01, 5000).astype(float)
    ok = ab.noninferiority(rng.binomial(1, 0.01, 5000).astype(float), yc, ab.Guardrail("opt-outs", "o", 0.01))
    bad = ab.noninferiority(rng.binomial(1, 0.05, 5000).astype(float), yc, ab.Guardrail("churn", "c", 0.01))
    assert ok.passed and not bad.passed
    v = ab.decide(better, [ok])
    assert v.promote and v.primary == "better" and v.failed == () and "every guardrail holds" in v.reason
    v = ab.decide(better, [ok, bad])
    assert not v.promote and v.failed == ("churn",) and "churn breached" in v.reason
    assert not ab.decide(flat, [ok]).promote and ab.decide(flat, [ok]).primary == "inconclusive"
    assert ab.decide(worse, []).primary == "worse" and not ab.decide(worse, []).promote
    # "not_worse": an inconclusive primary passes, a worse one never does, the guardrails still decide
    assert ab.decide(flat, [ok], require="not_worse").promote
    assert "required: not significantly worse" in ab.decide(flat, [ok], require="not_worse").reason
    assert not ab.decide(flat, [ok, bad], require="not_worse").promote
    assert not ab.decide(worse, [ok], require="not_worse").promote
    assert ab.decide(better, [ok], require="not_worse").promote
    with pytest.raises(ValueError, match="require"):
        ab.decide(flat, [ok], require="maybe")


def test_noninferiority_power_and_sample_size():
    # fixed horizon: the closed form n = 2 sd² (z_{1-α} + z_power)² / (margin - worsening)²
    sd, margin, w = 1.3, 0.2, 0.05
    ss = ab.noninferiority_sample_size(sd, margin, power=0.9, worsening=w, always_valid=False)
    closed = 2 * sd**2 * (stats.norm.isf(0.05) + stats.norm.ppf(0.9)) ** 2 / (margin - w) ** 2
    assert ss.n_control == ss.n_treatment == int(np.ceil(closed)) and ss.power >= 0.9
    # the always-valid test pays for peeking with more customers
    assert ab.noninferiority_sample_size(sd, margin, power=0.9, worsening=w).n_control > ss.n_control
    # the predicted power matches how often the always-valid test passes a harmless treatment
    rng = np.random.default_rng(24)
    g = ab.Guardrail("g", "m", 0.3)
    runs = [ab.noninferiority_sequential(_ni_looks(rng, 600, 5, 0.0), "t", "c", g) for _ in range(200)]
    predicted = ab.noninferiority_power(float(np.mean([t.se for t in runs])), 0.3)
    rate = np.mean([t.passed for t in runs])
    assert abs(rate - predicted) < 3 * np.sqrt(predicted * (1 - predicted) / 200) + 0.02  # about 0.68
    with pytest.raises(ValueError, match="worsening"):
        ab.noninferiority_sample_size(sd, margin, worsening=margin)
    with pytest.raises(ValueError, match="se"):
        ab.noninferiority_power(0.0, margin)
