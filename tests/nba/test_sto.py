"""The send-time model (nba.policies.sto) against customers whose hour curves are known.

Customers are drawn here with a response rate over the local send hour of
``p0 (1 + a cos(h - peak))``: their histories are recorded through :class:`nba.features.History`
and read back through :func:`nba.features.build_features`, as the simulator and the service do.
"""

from __future__ import annotations

import numpy as np
import pytest

from nba.actions import ActionSpace
from nba.features import TWO_PI_24, FeatureSpec, History, LifecycleRules, Profile, build_features
from nba.policies.sto import SendTime, SendTimeModel

SPACE = ActionSpace()
SEGMENTS = ("a", "b")
SPEC = FeatureSpec(SEGMENTS, SPACE.channels)
EMAIL = SPACE.channels.index("email")
P0, AMPLITUDE = 0.4, 0.9


def _features(hist: History, now: np.ndarray) -> np.ndarray:
    n = len(now)
    profile = Profile(
        segment=np.zeros(n, int),
        tz_offset=np.zeros(n),
        consent=np.ones((n, SPACE.n_channels), bool),
        stage=np.ones(n, np.int8),
        cart_active=np.zeros(n, bool),
        tenure_days=np.full(n, 100.0),
    )
    return build_features(SPEC, profile, hist, now, LifecycleRules())


def customers(seed: int, n: int, messages: int, peak_sd_h: float, peak_h: float = 12.0, design=None):
    """Contexts (segment "a") after ``messages`` emails each, at hours drawn from ``design`` (uniform by
    default); returns them, each customer's true peak hour, and every send as (hour, context) pairs."""
    rng = np.random.default_rng(seed)
    hist = History.empty(n, SPACE.n_channels)
    peak = peak_h + peak_sd_h * rng.standard_normal(n)
    rows, ch = np.arange(n), np.full(n, EMAIL)
    hours = []
    for j in range(messages):
        h = rng.uniform(0.0, 24.0, n) if design is None else design(rng, n)
        hours.append(h)
        p = P0 * (1.0 + AMPLITUDE * np.cos(TWO_PI_24 * (h - peak)))
        hist.record_contacts(rows, ch, np.full(n, float(j)), h)
        seen = np.flatnonzero(rng.uniform(size=n) < p)
        hist.record_engagements(seen, ch[seen], np.full(seen.size, float(j)), h[seen])
    return _features(hist, np.full(n, 1000.0)), peak, np.concatenate(hours)


def sends_at(hours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contexts of new customers at local ``hours`` and an email sent "now" to each: what teaches the model
    the send hours' spread."""
    X = _features(History.empty(len(hours), SPACE.n_channels), np.asarray(hours, np.float64))
    return X, np.full(len(hours), SPACE.index("email", "promo", None))


def peak_of(vec: np.ndarray) -> float:
    return float(np.arctan2(vec[1], vec[0]) / TWO_PI_24 % 24.0)


def hours_apart(a: float, b: float) -> float:
    return abs((a - b + 12.0) % 24.0 - 12.0)


@pytest.mark.parametrize(("peak_sd_h", "low", "high"), [(1.0, 40.0, 80.0), (3.0, 7.5, 14.0)])
def test_estimated_prior_strength_matches_the_customers_spread(peak_sd_h, low, high):
    # theory: sigma^2 / tau^2 with sigma^2 = p0 (1 - p0) / 2 (uniform hours) and
    # tau^2 = (p0 a / 2)^2 E sin^2(peak - mean), E sin^2 = (1 - exp(-2 s^2)) / 2: 57.8 and 10.5
    X, _, _ = customers(0, 20_000, 40, peak_sd_h)
    model = SendTimeModel(SPEC, SPACE)
    model.update(X)
    s = np.deg2rad(15.0 * peak_sd_h)
    theory = (P0 * (1 - P0) / 2) / ((P0 * AMPLITUDE / 2) ** 2 * (1 - np.exp(-2 * s * s)) / 2)
    k = model.strength()[0, EMAIL]
    assert low < theory < high
    assert low < k < high, (k, theory)


def test_no_spread_between_customers_puts_all_weight_on_the_prior():
    X, _, _ = customers(1, 20_000, 40, 0.0)
    model = SendTimeModel(SPEC, SPACE)
    model.update(X)
    assert model.strength()[0, EMAIL] > 500.0  # customers differ only by noise: their own histories are ignored


def test_the_send_hours_spread_is_corrected_for():
    # every customer peaks at 15:00; half the emails go out at 9:00, the rest between 8:00 and 21:00
    # (quiet hours): the raw covariance leans towards the morning
    def design(rng, n):
        return np.where(rng.uniform(size=n) < 0.5, 9.0, rng.uniform(8.0, 21.0, n))

    X, _, hours = customers(2, 20_000, 10, 0.0, peak_h=15.0, design=design)
    model = SendTimeModel(SPEC, SPACE)
    model.update(X)
    new = np.zeros((1, SPEC.dim), np.float32)
    new[0, SPEC.index("segment=a")] = 1.0
    uncorrected = peak_of(model.posterior(new)[0, EMAIL])
    assert hours_apart(uncorrected, 15.0) > 1.0  # without the sends' spread the model is fooled
    model.update(*sends_at(hours))
    corrected = peak_of(model.posterior(new)[0, EMAIL])
    assert hours_apart(corrected, 15.0) < 0.5, corrected


def test_a_long_history_moves_the_choice_from_the_segments_hour():
    X, peak, hours = customers(3, 20_000, 40, 3.0)  # segment peak at 12:00, customers spread 3 h
    policy = SendTime(SPACE, SEGMENTS, first="no_contact", epsilon=0.0)
    policy.model.update(X)
    policy.model.update(*sends_at(hours[:20_000]))
    slots = list(SPACE.send_slots)
    best = np.argmax(policy.model.slot_scores(X)[:, EMAIL, 1:], axis=1)  # among the hours 9, 13, 19
    late = peak > 18.0  # 19:00 is their best slot (13:00 for the segment)
    assert late.sum() > 300
    assert np.mean(best[late] == slots.index(19) - 1) > 0.6  # the evening people, from their own history
    X_new = _features(History.empty(100, SPACE.n_channels), np.full(100, 1000.0))
    assert (np.argmax(policy.model.slot_scores(X_new)[:, EMAIL, 1:], axis=1) == slots.index(13) - 1).all()


def test_a_state_saved_before_the_spreads_were_kept_still_loads():
    X, _, _ = customers(4, 2_000, 5, 1.0)
    model = SendTimeModel(SPEC, SPACE)
    model.update(X)
    old = {k: v for k, v in model.arrays().items() if k in ("sto_prior_sum", "sto_prior_n")}
    restored = SendTimeModel(SPEC, SPACE)
    restored.restore(old)
    assert np.isfinite(restored.slot_scores(X)).all()
    assert (restored.design == 0).all() and (restored.spread == 0).all()


@pytest.mark.parametrize(
    ("kwargs", "field"), [({"prior_strength": -1.0}, "prior_strength"), ({"design_strength": 0.0}, "design_strength")]
)
def test_bad_settings_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        SendTimeModel(SPEC, SPACE, **kwargs)


def test_over_business_as_usual_it_keeps_whom_and_what_and_moves_only_the_send_slot(tmp_path):
    """The quickstart's send_time: business as usual's contacts and messages, each at the slot its model
    learns from the sends; exact on every row, and the same after a save and a load."""
    from envs.scenario import Scenario
    from envs.simulation import Simulation
    from nba import serialization
    from nba.policies import create

    sc = Scenario.default()
    sp, seg = sc.action_space, tuple(sc.segments)
    bau = create("business_as_usual", sp, seg)
    policy = SendTime(sp, seg, first="business_as_usual", epsilon=0.05)
    sim = Simulation(sc, seed=0, n=3000, purpose="tests/sto/over-bau", decision_hour=None, penalties=True)
    rng = np.random.default_rng(0)
    for _ in range(4):  # business as usual's sends teach the hours
        d = sim.decide(bau, rng)
        policy.update(d.context, d.action, sim.step(d.action).reward, d.propensity)
    d = sim.decide(bau, rng)
    p, q = bau.probabilities(d.context, d.eligible), policy.probabilities(d.context, d.eligible)
    n, c, k, s = len(p), sp.n_channels, sp.n_contents, sp.n_slots
    assert np.allclose(q.sum(axis=1), 1.0) and (q[~d.eligible] == 0).all()
    assert np.array_equal(q[:, 0], p[:, 0])  # whom: the same customers left alone
    by_message = [x[:, 1:].reshape(n, c, k, s).sum(axis=3) for x in (p, q)]
    assert np.allclose(by_message[0], by_message[1])  # what: the same channel and content
    contacted = p[:, 0] < 1
    moved = np.argmax(q[:, 1:], axis=1) != np.argmax(p[:, 1:], axis=1)
    assert contacted.sum() > 300 and 0.1 < moved[contacted].mean()  # when: another slot for many of them
    serialization.save(policy, tmp_path / "sto")
    assert np.array_equal(serialization.load(tmp_path / "sto").probabilities(d.context, d.eligible), q)
