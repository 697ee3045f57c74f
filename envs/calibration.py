"""Calibration targets, with their sources, and the simulation that measures them.

Each :class:`Target` states a fact from the marketing articles this project grew from (listed in
DESIGN.md) and the tolerance within which the default scenario must reproduce it. ``checked``
targets are measured by simulating customers under the business-as-usual schedule
(:class:`nba.policies.baselines.BusinessAsUsual`) and compared by ``tests/envs/test_calibration.py``
and ``nba scenario report``; ``input`` targets are facts about brands (not customers) that set how
the business-as-usual schedule and the scenario's inputs were chosen. The curves drawn beside the
targets (funnel, hour of day, delays, revenue concentration) are computed by
:mod:`envs.calibration_metrics`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from envs import response
from envs.calibration_metrics import SMS_MINUTES, TOP_SHARE, top_share
from envs.rollout import journeys, policy_rng
from envs.scenario import Scenario
from envs.simulation import Simulation
from nba.policies import Policy
from nba.policies.baselines import BusinessAsUsual

INSIDER = "Insider, 'Guide du marketing omnicanal et du marketing multicanal' (2021), citing Harvard Business Review"
ITERABLE = "Iterable, 'Le marketing multicanal' (citing its 2018 survey of brands)"
QUESTIONPRO = "QuestionPro, 'Omnichannel vs multichannel'"
HAPTIC = "Hapticmedia, 'Marketing omnicanal 101' (citing Global Commerce Review and Forrester)"
AGENCY = "French agency guide, 'Omnicanal, multicanal, cross canal'"


@dataclass(frozen=True)
class Target:
    name: str
    statement: str
    value: float
    low: float
    high: float
    source: str
    kind: str = "checked"  # "checked": measured on simulated customers; "input": sets an input

    def ok(self, measured: float) -> bool:
        return self.low <= measured <= self.high


TARGETS: tuple[Target, ...] = (
    Target("sms_read_3min", "90% of SMS are read within 3 minutes of receipt", 0.90, 0.88, 0.92, ITERABLE),
    Target(
        "touchpoints_per_purchase",
        "5 to 20 touchpoints before a purchase (median, messages + visits)",
        12.5,
        5.0,
        20.0,
        AGENCY + "; DESIGN.md",
    ),
    Target(
        "multichannel_buyers",
        "73% of shoppers used several channels (share of buyers on 2+ channels)",
        0.73,
        0.66,
        0.80,
        INSIDER,
    ),
    Target(
        "multichannel_spend_ratio",
        "multi-channel customers spend more (revenue per buyer, 2+ channels vs fewer)",
        1.5,
        1.15,
        4.0,
        INSIDER,
    ),
    Target(
        "omni_revenue_share",
        "the most omnichannel 7% of customers carry about 27% of revenue",
        0.27,
        0.20,
        0.34,
        HAPTIC,
    ),
    Target(
        "wrong_moment",
        "a message on the wrong channel or at the wrong moment has little effect or a "
        "negative one (share of (customer, wrong message) pairs - a cart reminder without a cart, an SMS "
        "at 03:00 - that earn less than no contact)",
        1.0,
        0.9,
        1.0,
        QUESTIONPRO,
    ),
    Target(
        "welcome_email_share",
        "welcome campaigns use email 98%, SMS 19%, push 17%, in-app 12%, web push "
        "10%, direct mail 10%: the business-as-usual welcome series is by email",
        0.98,
        0,
        1,
        ITERABLE,
        kind="input",
    ),
    Target(
        "welcome_series_length",
        "welcome series of 1-3 messages (41% of brands), 4-6 (41%), 7+ (18%): "
        "business-as-usual sends one every 3 days of the 14-day window (4-5)",
        5,
        0,
        10,
        ITERABLE,
        kind="input",
    ),
    Target(
        "promo_email_per_month",
        "a quarter of brands send fewer than 3 promotional emails a month, a "
        "quarter more than 10: business-as-usual sends one a week",
        4.3,
        3,
        10,
        ITERABLE,
        kind="input",
    ),
)
TARGETS_BY_NAME = {t.name: t for t in TARGETS}


@dataclass
class JourneyStats:
    """What a calibration run records, per customer over the measured days."""

    revenue: np.ndarray  # (N,)
    purchases: np.ndarray  # (N,)
    channels_used: np.ndarray  # (N,) outbound channels with a message seen, plus the site if visited
    engagements: np.ndarray  # (N,) messages seen + visits
    touchpoints_at_purchase: np.ndarray  # touchpoints since the previous purchase, at each purchase
    sms_delays_min: np.ndarray
    sent_per_channel: np.ndarray  # (C,)
    seen_per_channel: np.ndarray  # (C,)
    daily_revenue: np.ndarray  # (days,) mean revenue per customer
    churned: np.ndarray  # (N,) bool
    segment: np.ndarray  # (N,)
    extra: dict = field(default_factory=dict)


def simulate_journeys(
    sc: Scenario,
    n: int = 20_000,
    seed: int = 0,
    days: int = 180,
    warmup_days: int = 90,
    policy: Policy | None = None,
    progress: Callable[[int], None] | None = None,
) -> JourneyStats:
    """Run ``n`` customers for ``days`` under ``policy``; measure the days after ``warmup_days``.

    ``policy`` defaults to business as usual. Churned customers stop (they buy nothing more); the
    warm-up lets histories fill so that touchpoints before a purchase are not cut short by the start of the simulation.
    """
    sim = Simulation(sc, seed, n, purpose="calibration-journeys", decision_hour=sc.journey_decision_hour)
    c = len(sc.channels)
    revenue = np.zeros(n)
    purchases = np.zeros(n)
    used = np.zeros((n, c + 1), bool)
    engagements = np.zeros(n)
    touch = np.zeros(n)
    at_purchase: list[np.ndarray] = []
    sms_delays: list[np.ndarray] = []
    sent_c = np.zeros(c)
    seen_c = np.zeros(c)
    daily = np.zeros(days - warmup_days)
    sms = sim.space.channels.index("sms") if "sms" in sc.channels else -1
    last_visit = sim.history.last_visit.copy()
    policy = policy or BusinessAsUsual(sim.space, tuple(sc.segments))
    for step in journeys(sim, policy, days, policy_rng(seed, "calibration-journeys")):
        o, alive = step.result.outcome, step.alive
        visited = alive & (sim.history.last_visit != last_visit)
        last_visit = sim.history.last_visit.copy()
        ch = np.maximum(sim.space.channel_of[step.actions], 0)
        touch += (alive & o.delivered) + visited
        bought = alive & o.purchased
        if step.day >= warmup_days:
            seen = alive & o.seen
            gross = np.where(alive, o.revenue, 0.0)
            revenue += gross
            purchases += bought
            used[np.flatnonzero(seen), ch[seen]] = True
            used[visited, c] = True
            engagements += seen + visited
            at_purchase.append(touch[bought])
            np.add.at(sent_c, ch[alive & o.sent], 1)
            np.add.at(seen_c, ch[seen], 1)
            if sms >= 0:
                sms_delays.append(o.seen_delay_min[seen & (ch == sms)])
            daily[step.day - warmup_days] = gross.mean()
        touch[bought] = 0
        if progress is not None:
            progress(step.day)
    alive = step.alive & ~step.result.churned
    return JourneyStats(
        revenue=revenue,
        purchases=purchases,
        channels_used=used.sum(axis=1),
        engagements=engagements,
        touchpoints_at_purchase=np.concatenate(at_purchase),
        sms_delays_min=np.concatenate(sms_delays or [[]]),
        sent_per_channel=sent_c,
        seen_per_channel=seen_c,
        daily_revenue=daily,
        churned=~alive,
        segment=sim.traits.segment.copy(),
    )


def omni_rank(stats: JourneyStats) -> np.ndarray:
    """Customers ordered from most to least omnichannel (channels used, then engagements)."""
    return np.lexsort((-stats.engagements, -stats.channels_used))


def wrong_moment_share(sc: Scenario, n: int = 5_000, seed: int = 1) -> float:
    """Share of (customer, wrong action) pairs whose exact expected reward is below no contact.

    Wrong actions: a cart reminder by email when no cart is open, and an SMS promo at 03:00 local.
    This measures the customers' response, so it asks the response model directly: the contact
    policy (which would block the 03:00 SMS outright) is not consulted.
    """
    sim = Simulation(sc, seed, n, purpose="calibration-wrong-moment", decision_hour=3, penalties=True)
    space, m = sim.space, sim.moment

    def expected(action: int) -> np.ndarray:
        return response.expected_reward(sc, sim.arrays, space, sim.traits, m, np.array([[0, action]]))

    vals = []
    if "email" in sc.channels and "cart_reminder" in sc.contents:
        rows = ~m.cart & m.reachable[:, space.channels.index("email")]
        er = expected(space.index("email", "cart_reminder", None))[rows]
        vals.append(er[:, 1] < er[:, 0])
    if "sms" in sc.channels and "promo" in sc.contents:
        rows = m.reachable[:, space.channels.index("sms")]
        er = expected(space.index("sms", "promo", None))[rows]
        vals.append(er[:, 1] < er[:, 0])
    return float(np.concatenate(vals).mean()) if vals else float("nan")


def sms_read_within(sc: Scenario, minutes: float = SMS_MINUTES, n: int = 200_000, seed: int = 2) -> float:
    """P(an SMS is read within ``minutes`` of receipt) from the scenario's delay distribution."""
    from envs.random import Streams

    u = Streams.of(seed, 1, "calibration-sms").uniform(n)[0]
    ch = np.full(n, list(sc.channels).index("sms"))
    return float((response.delay_minutes(sc.arrays(), ch, u) <= minutes).mean())


def measure(sc: Scenario, stats: JourneyStats) -> dict[str, float]:
    """The checked targets' values for a calibration run."""
    buyers = stats.purchases > 0
    multi = stats.channels_used >= 2
    rev_multi = stats.revenue[buyers & multi].mean() if (buyers & multi).any() else np.nan
    rev_single = stats.revenue[buyers & ~multi].mean() if (buyers & ~multi).any() else np.nan
    out = {
        "touchpoints_per_purchase": float(np.median(stats.touchpoints_at_purchase)),
        "multichannel_buyers": float(multi[buyers].mean()),
        "multichannel_spend_ratio": float(rev_multi / rev_single),
        "omni_revenue_share": top_share(stats.revenue, omni_rank(stats), TOP_SHARE),
        "wrong_moment": wrong_moment_share(sc),
    }
    if "sms" in sc.channels:
        out["sms_read_3min"] = sms_read_within(sc)
    return out


@dataclass(frozen=True)
class Check:
    target: Target
    measured: float

    @property
    def ok(self) -> bool:
        return self.target.ok(self.measured)


def check(measured: dict[str, float]) -> list[Check]:
    return [Check(TARGETS_BY_NAME[k], v) for k, v in measured.items()]
