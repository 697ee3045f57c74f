"""Customer response to a contact: the funnel, opt-outs, churn and the exact expected reward.

Pure vectorised functions of arrays. A :class:`Moment` holds what is true of each customer at the
decision time; :func:`contact_terms` gives the funnel probabilities of any actions for those
customers; :func:`expected_reward` turns them into the exact expected profit of each action;
:func:`sample_outcome` realises one action per customer from uniforms.

For a contact on channel ``c`` with content ``k`` sent at local hour ``h`` after waiting ``w`` hours::

    seen      = reachable * delivery_c * (1 - exp(-open_c * aff_nc * hour_nc(h) * fatigue_n))
    click     = 1 - exp(-click_c * content_aff_nk * relevance_nk * 2^(-w / urgency_k) * sqrt(hour_nc(h)))
    convert   = 1 - exp(-conversion_k * relevance_nk * (1 + synergy * breadth_n))
    organic   = 1 - exp(-organic_n * (1 + synergy * breadth_n) * window_days)
    E[revenue] = basket_n * [seen (1 - discount_k)(1 - (1 - organic)(1 - click convert)) + (1 - seen) organic]

so only the increment over no contact (``basket_n * organic``) is earned by the message, a
discount given to someone who would have bought anyway is a loss, and a badly timed, irrelevant or
too frequent message raises the chance of an opt-out (channel lost) or of churn (customer lost),
which the bandit view charges at their penalty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.population import State, Traits
from envs.random import normal
from envs.scenario import Scenario, ScenarioArrays
from nba.actions import ActionSpace
from nba.features import History, decay, hour_of_day, lifecycle_stage

TWO_PI_24 = 2.0 * np.pi / 24.0


@dataclass
class Moment:
    """What holds for each customer at the decision time, derived from state and history."""

    now: np.ndarray  # (N,) hours since epoch
    local_hour: np.ndarray  # (N,)
    tenure_days: np.ndarray  # (N,)
    stage: np.ndarray  # (N,) int8
    cart: np.ndarray  # (N,) bool
    welcome: np.ndarray  # (N,) bool
    post_purchase: np.ndarray  # (N,) bool
    reachable: np.ndarray  # (N, C) bool: consent and not opted out
    fatigue: np.ndarray  # (N, C) decayed channel fatigue
    fatigue_total: np.ndarray  # (N,)
    breadth: np.ndarray  # (N,) number of channels the customer is engaged on (soft count)
    relevance: np.ndarray  # (N, K) relevance of each content now
    synergy: np.ndarray  # (N,) 1 + synergy.conversion * breadth
    p_organic: np.ndarray  # (N,) P(organic purchase within the decision window)
    basket: np.ndarray  # (N,) expected basket of a purchase now


def moment(sc: Scenario, sa: ScenarioArrays, tr: Traits, st: State, hist: History) -> Moment:
    now = st.now
    lc = sc.lifecycle
    tenure_d = (now - st.signup) / 24.0
    since_purchase_d = np.where(hist.n_purchases > 0, (now - hist.last_purchase) / 24.0, np.inf)
    stage = lifecycle_stage(tenure_d, since_purchase_d, lc)
    cart = st.cart_until > now
    welcome = tenure_d < lc.welcome_days
    post = since_purchase_d < lc.post_purchase_days
    fz = sc.fatigue
    fatigue = st.fatigue * decay(now[:, None] - hist.last_contact, fz.channel_half_life_h)
    fatigue_total = st.fatigue_total * decay(now - st.last_any_contact, fz.total_half_life_h)
    engagement = st.engagement * decay(now[:, None] - hist.last_engaged, 24.0 * sc.synergy.engagement_half_life_d)
    breadth = np.minimum(engagement, 1.0).sum(axis=1)
    relevance = sa.relevance_table[((stage * 2 + cart) * 2 + post) * 2 + welcome]
    synergy = 1.0 + sc.synergy.conversion * breadth
    window_d = sc.decision_window_h / 24.0
    return Moment(
        now=now,
        local_hour=hour_of_day(now + tr.tz_offset),
        tenure_days=tenure_d,
        stage=stage,
        cart=cart,
        welcome=welcome,
        post_purchase=post,
        reachable=tr.consent & ~st.opted_out,
        fatigue=fatigue,
        fatigue_total=fatigue_total,
        breadth=breadth,
        relevance=relevance,
        synergy=synergy,
        p_organic=-np.expm1(-tr.organic_rate * synergy * window_d),
        basket=tr.basket * (1.0 + sc.synergy.revenue * breadth),
    )


@dataclass
class ContactTerms:
    """Funnel probabilities of actions, each shaped like the action array (N, A)."""

    is_contact: np.ndarray
    sent: np.ndarray  # the channel is reachable: the message goes out and costs
    p_deliver: np.ndarray
    p_open: np.ndarray  # given delivered
    p_click: np.ndarray  # given seen
    p_convert: np.ndarray  # given click
    p_optout: np.ndarray  # given seen
    p_churn: np.ndarray  # given seen
    cost: np.ndarray
    discount: np.ndarray
    wait_h: np.ndarray
    hour_mult: np.ndarray

    @property
    def p_seen(self) -> np.ndarray:
        return self.p_deliver * self.p_open


def _take(table: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """table[n, idx[n, a]] for a (N, X) table and (N or 1, A) indices."""
    n, x = table.shape
    if idx.shape[0] == 1:  # the same actions for every row: a column gather
        return table[:, idx[0]]
    flat = idx + (np.arange(n) * x)[:, None]  # row-major offsets: cheaper than take_along_axis
    return np.take(table, flat)


def contact_terms(
    sc: Scenario, sa: ScenarioArrays, space: ActionSpace, tr: Traits, m: Moment, actions: np.ndarray
) -> ContactTerms:
    """Funnel probabilities for ``actions`` of shape (N, A) or (1, A) (then the same for every row)."""
    is_contact = actions > 0
    ch = np.maximum(space.channel_of[actions], 0).astype(np.intp)
    ct = np.maximum(space.content_of[actions], 0).astype(np.intp)
    slot_h = sa.slot_hours[np.maximum(space.slot_of[actions], 0)]
    lh = m.local_hour[:, None]
    send_h = np.where(slot_h < 0, lh, slot_h)
    wait = np.where(slot_h < 0, 0.0, hour_of_day(slot_h - lh))
    hour_mult = sa.hour_norm[ch] * np.exp(sa.hour_kappa[ch] * np.cos(TWO_PI_24 * (send_h - _take(tr.peak_hour, ch))))
    fat_c = _take(m.fatigue, ch)
    fz = sc.fatigue
    load = fz.channel_weight * fat_c + fz.total_weight * m.fatigue_total[:, None]
    fat_mult = np.exp(-tr.sensitivity[:, None] * load)
    sent = _take(m.reachable, ch) & is_contact
    p_open = -np.expm1(-sa.open_rate[ch] * _take(tr.channel_affinity, ch) * hour_mult * fat_mult)
    rel = _take(m.relevance, ct)
    urgency = np.exp2(-wait / sa.urgency_h[ct])
    p_click = -np.expm1(-sa.click_rate[ch] * _take(tr.content_affinity, ct) * rel * urgency * np.sqrt(hour_mult))
    p_convert = -np.expm1(-sa.conversion_rate[ct] * rel * m.synergy[:, None])
    irrelevance = 1.0 + 2.0 * np.maximum(0.0, 1.0 - rel)
    bad_timing = 1.0 + 5.0 * np.maximum(0.0, 1.0 - hour_mult) ** 2
    p_optout = np.minimum(sa.optout[ch] * (1.0 + fz.optout_per_load * fat_c) * irrelevance * bad_timing, 1.0)
    p_churn = np.minimum(sc.churn.per_message * (1.0 + 0.3 * m.fatigue_total[:, None]) * irrelevance * bad_timing, 1.0)
    return ContactTerms(
        is_contact=is_contact,
        sent=sent,
        p_deliver=sent * sa.delivery[ch],
        p_open=p_open,
        p_click=p_click,
        p_convert=p_convert,
        p_optout=p_optout,
        p_churn=p_churn,
        cost=sent * sa.cost[ch],
        discount=np.where(is_contact, sa.discount[ct], 0.0),
        wait_h=wait,
        hour_mult=hour_mult,
    )


def expected_revenue(m: Moment, t: ContactTerms) -> np.ndarray:
    ps = t.p_seen
    po = m.p_organic[:, None]
    q = t.p_click * t.p_convert
    return m.basket[:, None] * (ps * (1.0 - t.discount) * (1.0 - (1.0 - po) * (1.0 - q)) + (1.0 - ps) * po)


def expected_penalty(sc: Scenario, sa: ScenarioArrays, space: ActionSpace, actions: np.ndarray, t: ContactTerms):
    ch = np.maximum(space.channel_of[actions], 0)
    return t.p_seen * (t.p_optout * sa.optout_penalty[ch] + t.p_churn * sc.churn.penalty)


def expected_reward(
    sc: Scenario,
    sa: ScenarioArrays,
    space: ActionSpace,
    tr: Traits,
    m: Moment,
    actions: np.ndarray,
    penalties: bool = True,
) -> np.ndarray:
    """Exact expected profit of ``actions`` (N, A) or (1, A): revenue - cost (- opt-out/churn penalties)."""
    t = contact_terms(sc, sa, space, tr, m, actions)
    r = expected_revenue(m, t) - t.cost
    if penalties:
        r = r - expected_penalty(sc, sa, space, actions, t)
    return r


def expected_attributed_reward(
    sc: Scenario,
    sa: ScenarioArrays,
    space: ActionSpace,
    tr: Traits,
    m: Moment,
    actions: np.ndarray,
    penalties: bool = True,
) -> np.ndarray:
    """Exact expectation of the attributed reward (see :func:`realised_rewards`) of ``actions``.

    ``basket * seen * click * convert * (1 - discount) - cost (- penalties)``: no contact earns 0.
    Against the true uplift over no contact it over-credits a message by
    ``basket * seen * p_organic * (click * convert * (1 - discount) + discount)``: the conversions of
    customers who would have bought anyway, and the discount they were given.
    """
    t = contact_terms(sc, sa, space, tr, m, actions)
    r = m.basket[:, None] * t.p_seen * t.p_click * t.p_convert * (1.0 - t.discount) - t.cost
    if penalties:
        r = r - expected_penalty(sc, sa, space, actions, t)
    return r


RESPONSE_WIDTH = 9  # uniforms one outcome consumes


@dataclass
class Outcome:
    """One realised decision per customer (all (N,))."""

    sent: np.ndarray
    delivered: np.ndarray
    seen: np.ndarray
    clicked: np.ndarray
    converted: np.ndarray  # a purchase caused by the message (its click)
    purchased: np.ndarray  # any purchase within the window (message or organic)
    opted_out: np.ndarray
    churned: np.ndarray
    revenue: np.ndarray
    cost: np.ndarray
    penalty: np.ndarray  # opt-out and churn penalties of the bandit view
    seen_delay_min: np.ndarray  # minutes from delivery to seen (where seen)


def delay_minutes(sa: ScenarioArrays, ch: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Minutes from delivery to seen on channels ``ch`` from uniforms ``u`` (inverse CDF)."""
    median = sa.delay_median_min[ch]
    expo = median * np.log(1.0 / (1.0 - u)) / np.log(2.0)
    return np.where(sa.delay_exponential[ch], expo, median * np.exp(sa.delay_sigma[ch] * normal(u)))


def sample_outcome(
    sc: Scenario,
    sa: ScenarioArrays,
    space: ActionSpace,
    m: Moment,
    actions: np.ndarray,
    t: ContactTerms,
    u: np.ndarray,
) -> Outcome:
    """Realise one action per row: ``actions`` (N,), ``t`` from (N, 1) actions, ``u`` (N, RESPONSE_WIDTH)."""
    t1 = {k: v[:, 0] for k, v in vars(t).items()}
    delivered = u[:, 0] < t1["p_deliver"]
    seen = delivered & (u[:, 1] < t1["p_open"])
    clicked = seen & (u[:, 2] < t1["p_click"])
    converted = clicked & (u[:, 3] < t1["p_convert"])
    purchased = converted | (u[:, 4] < m.p_organic)
    opted_out = seen & (u[:, 5] < t1["p_optout"])
    churned = seen & (u[:, 6] < t1["p_churn"])
    s = sc.population.purchase_noise_sigma
    revenue = np.zeros(len(actions))
    rows = np.flatnonzero(purchased)
    basket = m.basket[rows] * np.exp(s * normal(u[rows, 7]) - s * s / 2)
    revenue[rows] = basket * (1.0 - t1["discount"][rows] * seen[rows])
    ch = np.maximum(space.channel_of[actions], 0)
    delay = np.full(len(actions), np.nan)
    rows = np.flatnonzero(seen)
    delay[rows] = delay_minutes(sa, ch[rows], u[rows, 8])
    penalty = opted_out * sa.optout_penalty[ch] + churned * sc.churn.penalty
    return Outcome(
        sent=t1["sent"],
        delivered=delivered,
        seen=seen,
        clicked=clicked,
        converted=converted,
        purchased=purchased,
        opted_out=opted_out,
        churned=churned,
        revenue=revenue,
        cost=t1["cost"],
        penalty=penalty,
        seen_delay_min=delay,
    )


def realised_rewards(out: Outcome, penalties: bool) -> tuple[np.ndarray, np.ndarray]:
    """(total, attributed) rewards of realised outcomes.

    *Total*: all revenue in the window less cost (and the opt-out and churn penalties when
    ``penalties``) — what the business earns. *Attributed*: only the revenue of purchases the
    message itself converted (a click, then a purchase: what a decision log's feedback reports
    with the decision id) less the same charges. Organic purchases, which no action causes, are
    left out: their noise, far larger than a message's effect, no longer drowns what a learner
    must find. Its expectation is :func:`expected_attributed_reward`.
    """
    charged = out.cost + (out.penalty if penalties else 0.0)
    return out.revenue - charged, np.where(out.converted, out.revenue, 0.0) - charged
