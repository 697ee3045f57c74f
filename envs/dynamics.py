"""State transitions: what a decision's outcome leaves behind, and what time does between decisions.

Pure vectorised functions that update :class:`envs.population.State` and the observable
:class:`nba.features.History` in place: fatigue builds with every message and decays; engagement
(the source of cross-channel synergy) builds with every message seen; purchases close the cart and
open the post-purchase window; opt-outs close a channel; churn ends the customer; site visits
happen and leave abandoned carts; lifecycle stages follow from the purchase history.
"""

from __future__ import annotations

import numpy as np

from envs.population import State, Traits
from envs.response import ContactTerms, Moment, Outcome
from envs.scenario import Scenario, ScenarioArrays
from nba.actions import ActionSpace
from nba.features import NEVER, History, hour_of_day

ADVANCE_WIDTH = 4  # uniforms one advance consumes


def apply_outcome(
    sc: Scenario, space: ActionSpace, tr: Traits, st: State, hist: History, m: Moment, actions: np.ndarray,
    t: ContactTerms, out: Outcome,
) -> None:
    """Record the decision of each row (``actions`` (N,)) and its outcome."""
    now = st.now
    tz = tr.tz_offset.astype(np.float64)
    ch = np.maximum(space.channel_of[actions], 0).astype(np.intp)
    sent = np.flatnonzero(out.sent)
    if sent.size:
        c = ch[sent]
        when = now[sent] + t.wait_h[sent, 0]
        st.fatigue[sent, c] = m.fatigue[sent, c] * np.exp2(-t.wait_h[sent, 0] / sc.fatigue.channel_half_life_h) + 1.0
        total_dt = np.maximum(when - st.last_any_contact[sent], 0.0)
        st.fatigue_total[sent] = st.fatigue_total[sent] * np.exp2(-total_dt / sc.fatigue.total_half_life_h) + 1.0
        st.last_any_contact[sent] = when
        hist.record_contacts(sent, c, when, hour_of_day(when + tz[sent]))
    seen = np.flatnonzero(out.seen)
    if seen.size:
        c = ch[seen]
        when = now[seen] + t.wait_h[seen, 0] + out.seen_delay_min[seen] / 60.0
        hl = 24.0 * sc.synergy.engagement_half_life_d
        dt = np.maximum(when - hist.last_engaged[seen, c], 0.0)
        st.engagement[seen, c] = st.engagement[seen, c] * np.exp2(-dt / hl) + 1.0
        sent_at = now[seen] + t.wait_h[seen, 0]
        hist.record_engagements(seen, c, when, hour_of_day(sent_at + tz[seen]))
    bought = np.flatnonzero(out.purchased)
    if bought.size:
        hist.record_purchases(bought, now[bought] + t.wait_h[bought, 0])
        st.cart_until[bought] = NEVER
    oo = np.flatnonzero(out.opted_out)
    st.opted_out[oo, ch[oo]] = True
    st.churned |= out.churned


def advance(sc: Scenario, sa: ScenarioArrays, tr: Traits, st: State, hist: History, m: Moment,
            dt_h: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Let ``dt_h`` hours pass for every row; ``u`` is (N, ADVANCE_WIDTH). Returns who churned now."""
    day = dt_h / 24.0
    p_leave = -np.expm1(-sa.churn_daily[m.stage] * day)
    leaves = ~st.churned & (u[:, 0] < p_leave)
    st.churned |= leaves
    visit = u[:, 1] < -np.expm1(-tr.visit_rate * day)
    rows = np.flatnonzero(visit)
    if rows.size:
        when = st.now[rows] + u[rows, 2] * dt_h[rows]
        hist.record_visits(rows, when)
        cart = rows[u[rows, 3] < sc.population.cart_per_visit]
        st.cart_until[cart] = st.now[cart] + u[cart, 2] * dt_h[cart] + 24.0 * sc.lifecycle.cart_days
    st.now += dt_h
    return leaves
