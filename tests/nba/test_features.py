"""The one feature function: lifecycle stages, the contact-load arithmetic and build_features."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest

from nba.features import (
    LIFECYCLE_STAGES,
    NEVER,
    FeatureSpec,
    History,
    LifecycleRules,
    Profile,
    build_features,
    lifecycle_stage,
)

PURPOSE = "test/nba/features"  # this module's customers (envs.random)

RULES = LifecycleRules()  # new_days 30, at_risk_days 45, lapsed_days 90, welcome 14, post-purchase 14
NEW, ACTIVE, AT_RISK, LAPSED = (LIFECYCLE_STAGES.index(s) for s in ("new", "active", "at_risk", "lapsed"))
INF = np.inf


@pytest.mark.parametrize(
    ("tenure", "since_purchase", "stage"),
    [
        (5.0, INF, NEW),  # signed up 5 days ago, never bought
        (29.9, INF, NEW),  # still inside new_days
        (5.0, 2.0, ACTIVE),  # a new customer who already bought is active
        (400.0, 10.0, ACTIVE),
        (400.0, 44.9, ACTIVE),
        (400.0, 45.0, AT_RISK),  # at_risk_days is inclusive
        (400.0, 60.0, AT_RISK),
        (400.0, 89.9, AT_RISK),
        (400.0, 90.0, LAPSED),  # lapsed_days is inclusive
        (400.0, 120.0, LAPSED),
        # a never-purchased customer past new_days ages by tenure like any other
        (30.0, INF, ACTIVE),
        (40.0, INF, ACTIVE),
        (60.0, INF, AT_RISK),
        (200.0, INF, LAPSED),
        # inconsistent input (bought before signing up) is bounded by tenure
        (20.0, 100.0, ACTIVE),
    ],
)
def test_lifecycle_stage_hand_made_cases(tenure, since_purchase, stage):
    got = lifecycle_stage(np.array([tenure]), np.array([since_purchase]), RULES)
    assert got.dtype == np.int8
    assert got.tolist() == [stage], LIFECYCLE_STAGES[got[0]]


def test_lifecycle_stage_is_vectorised_and_follows_the_rules():
    rules = LifecycleRules(new_days=10.0, at_risk_days=20.0, lapsed_days=30.0)
    tenure = np.array([5.0, 5.0, 100.0, 100.0, 100.0, 15.0, 25.0, 35.0])
    since = np.array([INF, 1.0, 19.0, 20.0, 31.0, INF, INF, INF])
    np.testing.assert_array_equal(
        lifecycle_stage(tenure, since, rules), [NEW, ACTIVE, ACTIVE, AT_RISK, LAPSED, ACTIVE, AT_RISK, LAPSED]
    )


@pytest.mark.parametrize(
    "kwargs", [{"new_days": 0.0}, {"cart_days": -1.0}, {"lapsed_days": np.nan}, {"at_risk_days": 90.0}]
)
def test_lifecycle_rules_validate(kwargs):
    with pytest.raises(ValueError, match="lifecycle"):
        LifecycleRules(**kwargs)


def test_record_contacts_load_decay_arithmetic():
    h = History.empty(2, 3, half_life_h=168.0)
    row, ch = np.array([0]), np.array([1])
    h.record_contacts(row, ch, np.array([1000.0]))
    assert h.load[0, 1] == 1.0  # empty history: 0 * anything + 1
    h.record_contacts(row, ch, np.array([1000.0 + 168.0]))
    assert h.load[0, 1] == 1.5  # one half-life later: 1 * 2**-1 + 1 = 1.5
    h.record_contacts(row, ch, np.array([1168.0 + 336.0]))
    assert h.load[0, 1] == 1.375  # two half-lives later: 1.5 * 2**-2 + 1 = 0.375 + 1 = 1.375
    assert h.n_contacts[0, 1] == 3
    assert h.last_contact[0, 1] == 1504.0
    # decayed load, read without recording: 1.375 * 2**-(168 / 168) = 0.6875 (all exact in float32)
    now = np.array([1504.0 + 168.0, 1504.0 + 168.0])
    np.testing.assert_array_equal(h.load_at(now), [[0.0, 0.6875, 0.0], [0.0, 0.0, 0.0]])
    # load_at before the last contact does not grow the load (dt clipped at 0)
    assert h.load_at(np.array([1000.0, 1000.0]))[0, 1] == 1.375
    # a contact recorded "in the past" (dt < 0 clipped at 0): 1.375 * 2**0 + 1 = 2.375
    h.record_contacts(row, ch, np.array([1400.0]))
    assert h.load[0, 1] == 2.375
    # other rows and channels untouched
    assert h.n_contacts.sum() == 4 and h.load[1].sum() == 0 and h.load[0, [0, 2]].sum() == 0
    np.testing.assert_array_equal(h.last_contact[1], NEVER)


def test_record_contacts_many_rows_at_once_with_another_half_life():
    h = History.empty(3, 2, half_life_h=24.0)
    h.record_contacts(np.array([0, 1, 2]), np.array([0, 1, 0]), np.array([0.0, 0.0, 0.0]))
    h.record_contacts(np.array([0, 2]), np.array([0, 0]), np.array([48.0, 24.0]))
    # row 0: 1 * 2**-(48/24) + 1 = 1.25; row 2: 1 * 2**-(24/24) + 1 = 1.5; row 1 untouched: 1
    np.testing.assert_array_equal(h.load, [[1.25, 0.0], [0.0, 1.0], [1.5, 0.0]])
    np.testing.assert_array_equal(h.n_contacts, [[2, 0], [0, 1], [2, 0]])


def test_reset_rows_forgets_history():
    h = History.empty(2, 2)
    h.record_contacts(np.array([0, 1]), np.array([0, 0]), np.array([5.0, 5.0]), local_hour=np.array([9.0, 9.0]))
    h.record_contacts(np.array([0, 1]), np.array([1, 1]), np.array([5.0, 5.0]), local_hour=np.array([9.0, 9.0]))
    h.record_engagements(np.array([0, 1]), np.array([1, 1]), np.array([6.0, 6.0]), sent_local_hour=np.array([9.0, 9.0]))
    h.record_purchases(np.array([0, 1]), np.array([7.0, 7.0]))
    h.record_visits(np.array([0, 1]), np.array([8.0, 8.0]))
    h.reset_rows(np.array([1]))
    fresh = History.empty(1, 2)
    for f in dataclasses.fields(History):
        v = getattr(h, f.name)
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(v[1], getattr(fresh, f.name)[0], err_msg=f.name)
            assert not np.array_equal(v[0], getattr(fresh, f.name)[0]), f.name


# ---------------------------------------------------------------------------------- build_features
SPEC = FeatureSpec(segments=("a", "b", "c"), channels=("email", "sms"))


def _profile_history():
    """Four hand-made customers: a fresh sign-up, an engaged buyer, a lapsed one, a stranger."""
    n, c = 4, 2
    profile = Profile(
        segment=np.array([0, 1, 2, 1]),
        tz_offset=np.array([2.0, -5.0, 0.0, 8.0]),
        consent=np.array([[True, False], [True, True], [False, False], [False, True]]),
        stage=np.array([NEW, ACTIVE, LAPSED, AT_RISK], np.int8),
        cart_active=np.array([True, False, False, True]),
        tenure_days=np.array([3.0, 400.0, 800.0, 60.0]),
    )
    h = History.empty(n, c)
    now = 10_000.0
    h.record_contacts(np.array([1, 1, 2]), np.array([0, 1, 0]), np.array([now - 24, now - 48, now - 2400]))
    h.record_engagements(np.array([1]), np.array([0]), np.array([now - 20]))
    h.record_purchases(np.array([1, 2]), np.array([now - 72, now - 24 * 120]))
    h.record_visits(np.array([0, 1]), np.array([now - 1, now - 30]))
    return profile, h, now


def test_build_features_shape_names_finite():
    profile, history, now = _profile_history()
    x = build_features(SPEC, profile, history, np.full(4, now), RULES)
    assert x.shape == (4, SPEC.dim)
    assert x.dtype == np.float32
    assert len(set(SPEC.names)) == len(SPEC.names) == SPEC.dim
    assert np.isfinite(x).all()
    # an entirely empty history is finite too: NEVER time stamps give recency ~0 (nba.features.decay
    # floors the float32 exponent at -126, so "never" reads 2**-126 = 1.2e-38, not NaN or inf)
    x0 = build_features(SPEC, profile, History.empty(4, 2), now, RULES)
    assert np.isfinite(x0).all()
    for name in SPEC.names:
        if "recency" in name or name.startswith(("log_contacts", "contact_load", "log_engaged", "log_purchases")):
            np.testing.assert_allclose(x0[:, SPEC.index(name)], 0.0, rtol=0, atol=1e-30, err_msg=name)


def test_build_features_hand_made_values():
    profile, history, now = _profile_history()
    x = build_features(SPEC, profile, history, now, RULES)  # scalar now broadcasts

    def col(name):
        return x[:, SPEC.index(name)]

    np.testing.assert_array_equal(x[:, :3], np.eye(3)[profile.segment])
    np.testing.assert_allclose(col("tz_offset"), profile.tz_offset / 12.0)
    # now = 10000 h = 416 days + 16 h UTC; local hours 18, 11, 16, 0
    local = np.array([18.0, 11.0, 16.0, 0.0])
    np.testing.assert_allclose(col("local_hour_sin"), np.sin(2 * np.pi * local / 24), atol=1e-6)
    np.testing.assert_allclose(col("local_hour_cos"), np.cos(2 * np.pi * local / 24), atol=1e-6)
    np.testing.assert_allclose(col("log_tenure_days"), np.log1p(profile.tenure_days), rtol=1e-6)
    np.testing.assert_array_equal(x[:, [SPEC.index(f"stage={s}") for s in LIFECYCLE_STAGES]], np.eye(4)[profile.stage])
    np.testing.assert_array_equal(col("cart_active"), [1, 0, 0, 1])
    np.testing.assert_array_equal(col("welcome_window"), [1, 0, 0, 0])  # tenure < 14 days
    np.testing.assert_array_equal(col("post_purchase_window"), [0, 1, 0, 0])  # bought 3 days ago < 14
    np.testing.assert_array_equal(col("consent=sms"), [0, 1, 0, 1])
    np.testing.assert_allclose(col("log_contacts=email"), np.log1p([0, 1, 1, 0]), rtol=1e-6)
    # recencies are exp(-hours / 168) in float32 (rtol 1e-5: a few float32 ulps); "never" is ~0
    # (atol 1e-30: the float32 floor 2**-126 of nba.features.decay)
    tol = {"rtol": 1e-5, "atol": 1e-30}
    np.testing.assert_allclose(col("contact_recency=sms"), [0, np.exp(-48 / 168), 0, 0], **tol)
    # load decays with half-life 168 h: 24 h after one contact, 2**(-24/168)
    np.testing.assert_allclose(col("contact_load=email"), [0, 2 ** (-24 / 168), 2 ** (-2400 / 168), 0], **tol)
    np.testing.assert_allclose(col("engaged_recency=email"), [0, np.exp(-20 / 168), 0, 0], **tol)
    np.testing.assert_allclose(col("purchase_recency"), [0, np.exp(-72 / 168), np.exp(-2880 / 168), 0], **tol)
    np.testing.assert_allclose(col("visit_recency"), [np.exp(-1 / 168), np.exp(-30 / 168), 0, 0], **tol)
    # an event stamped in the future (a send slot later today) reads as "just now", never above 1
    h2 = History.empty(4, 2)
    h2.record_contacts(np.array([0]), np.array([0]), np.array([now + 5.0]))
    assert build_features(SPEC, profile, h2, now, RULES)[0, SPEC.index("contact_recency=email")] == 1.0


def test_build_features_signature_takes_only_observable_inputs():
    params = list(inspect.signature(build_features).parameters)
    assert params == ["spec", "profile", "history", "now", "rules"]
    profile_fields = {f.name for f in dataclasses.fields(Profile)}
    assert profile_fields == {"segment", "tz_offset", "consent", "stage", "cart_active", "tenure_days"}


def test_simulated_observation_ignores_latent_traits():
    """Two customers with equal profile and history but different latent traits look the same."""
    from envs.scenario import Scenario
    from envs.simulation import Simulation

    sim = Simulation(
        Scenario.default(), seed=11, n=64, decision_hour=None, replace_rate=0.0, penalties=True, purpose=PURPOSE
    )
    rng = np.random.default_rng(0)
    for _ in range(3):  # give them some contact history first
        sim.step(rng.integers(0, sim.space.n_actions, sim.n))
    before = sim.observe()
    er_before = sim.expected_rewards()
    tr = sim.traits
    # scramble every latent trait that is not part of the Profile
    for name in (
        "omni",
        "channel_affinity",
        "content_affinity",
        "peak_hour",
        "basket",
        "organic_rate",
        "visit_rate",
        "sensitivity",
    ):
        arr = getattr(tr, name)
        arr[...] = rng.permutation(arr.ravel()).reshape(arr.shape) * 1.7 + 0.3
    sim._moment = None  # the cached moment reads traits; recompute it
    after = sim.observe()
    np.testing.assert_array_equal(after, before)
    # the scramble did reach the simulator (so the test above could have failed)
    assert not np.allclose(sim.expected_rewards(), er_before)


def test_hour_preference_points_at_the_hours_that_respond():
    """Messages at 09:00 and 21:00 alike, only those at 21:00 seen: the preference points at 21:00."""
    h = History.empty(1, 1)
    row, ch = np.array([0]), np.array([0])
    for i, hour in enumerate([9.0, 21.0] * 5):
        h.record_contacts(row, ch, np.array([100.0 * i]), local_hour=np.array([hour]))
        if hour == 21.0:
            h.record_engagements(row, ch, np.array([100.0 * i + 1]), sent_local_hour=np.array([hour]))
    c, s = h.hour_preference()
    angle = np.arctan2(s[0, 0], c[0, 0]) % (2 * np.pi)
    assert abs(angle * 24 / (2 * np.pi) - 21.0) < 1e-4
    # sum(seen e^ih) - rate * sum(sent e^ih): 5 e^{i21} - 0.5 * 5 (e^{i9} + e^{i21}); 9 h and 21 h are
    # opposite, so this is 5 e^{i21}, of length 5, divided by n_sent + 1 = 11
    assert abs(np.hypot(c[0, 0], s[0, 0]) - 5.0 / 11.0) < 1e-5
