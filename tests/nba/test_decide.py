"""The decide path of a deployment: features, mask with reasons, send time, choice and exact propensity,
on the telecom example; the caps hold over a day of repeated decisions; a policy built for another world
is refused naming ``policy``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nba.decide import decide
from nba.deployment import Deployment
from nba.eligibility import Reason, RecentContacts
from nba.policies import create

ROOT = Path(__file__).resolve().parents[2]
NOON_UTC = 486_012.0  # 2025-06-11 12:00 UTC


@pytest.fixture(scope="module")
def telecom() -> Deployment:
    return Deployment.load(ROOT / "examples" / "telecom" / "deployment.toml")


def _people(d: Deployment, n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    plans = ["prepaid", "postpaid", "business"]
    return [
        d.check_attributes(
            {
                "plan_type": plans[i % 3],
                "tenure_days": float(rng.integers(0, 2000)),
                "days_to_contract_end": None if i % 3 == 0 else float(rng.integers(0, 400)),
                "whatsapp_opt_in": bool(i % 2),
                "app_user": bool(i % 4 == 0),
            }
        )
        for i in range(n)
    ]


def test_decisions_are_eligible_with_exact_propensities(telecom):
    policy = create("linucb", telecom.action_space(), dim=telecom.features().dim)
    people = _people(telecom, 300)
    out = decide(telecom, policy, people, now=NOON_UTC, tz_offset=1.0, rng=np.random.default_rng(1))
    rows = np.arange(300)
    assert out.context.shape == (300, telecom.features().dim)
    assert out.eligible[rows, out.action].all()
    np.testing.assert_allclose(out.propensity, out.probabilities[rows, out.action])
    np.testing.assert_allclose(out.probabilities.sum(axis=1), 1.0)
    assert (out.probabilities[~out.eligible] == 0).all()
    space = telecom.action_space()
    contact = out.action != 0
    assert contact.any()
    slot_hour = np.array([np.nan if h is None else h for h in space.send_slots])[space.slot_of[out.action]]
    local = (out.send_at + 1.0) % 24
    now_slot = space.slot_of[out.action] == 0
    assert np.allclose(out.send_at[~contact | now_slot], NOON_UTC)
    assert np.allclose(local[contact & ~now_slot], slot_hour[contact & ~now_slot])
    offers = [o.name for o in telecom.offers]
    renewal = offers.index("contract_renewal_discount")
    prepaid = np.array([p["plan_type"] == "prepaid" for p in people])
    offered = space.content_of[np.arange(space.n_actions)] == renewal
    assert not out.eligible[np.ix_(prepaid, offered)].any()
    assert (out.reasons[np.ix_(prepaid, offered)] & Reason.OFFER).all()


def test_the_caps_hold_over_a_day_of_decisions(telecom):
    """Hourly decisions for a day, each contact recorded: no customer gets more than the deployment allows."""
    policy = create("uniform_random", telecom.action_space())
    people = _people(telecom, 50, seed=3)
    c = len(telecom.channels)
    recent = RecentContacts.empty(50, c, k=8, k_channel=2)
    rng = np.random.default_rng(4)
    sends = [[] for _ in range(50)]
    for hour in range(24):
        now = NOON_UTC + hour
        out = decide(telecom, policy, people, now=now, tz_offset=0.0, rng=rng, recent=recent)
        rows = np.flatnonzero(out.action != 0)
        channel = telecom.action_space().channel_of[out.action[rows]].astype(np.intp)
        recent.record(rows, channel, out.send_at[rows])
        for r, t in zip(rows.tolist(), out.send_at[rows].tolist(), strict=True):
            sends[r].append(t)
    for times in sends:
        times.sort()
        assert all(b - a >= telecom.min_gap_h - 1e-9 for a, b in zip(times, times[1:], strict=False))
        assert len(times) <= 3  # overall: 3 a week
    assert sum(map(len, sends)) > 0


def test_a_policy_for_another_world_is_refused(telecom):
    from envs.scenario import Scenario

    sc = Scenario.default()
    other = create("linucb", sc.action_space, dim=sc.feature_spec.dim)
    with pytest.raises(ValueError, match="^policy: space: the policy decides over 225 actions"):
        decide(telecom, other, _people(telecom, 2), now=NOON_UTC, tz_offset=0.0, rng=np.random.default_rng(0))
    wrong_dim = create("linucb", telecom.action_space(), dim=5)
    with pytest.raises(ValueError, match="^policy: dim: the policy reads 5 features"):
        decide(telecom, wrong_dim, _people(telecom, 2), now=NOON_UTC, tz_offset=0.0, rng=np.random.default_rng(0))
