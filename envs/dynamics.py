"""State transitions: what a decision's outcome leaves behind, and what time does between decisions.

Pure vectorised functions that update :class:`envs.population.State` and the observable
:class:`nba.features.History` in place: fatigue builds with every message and decays; engagement
(the source of cross-channel synergy) builds with every message seen; purchases close the cart and
open the post-purchase window; opt-outs close a channel; churn ends the customer; site visits
happen and leave abandoned carts; lifecycle stages follow from the purchase history.

A decision's message goes out at its send slot (up to a day later), is seen after the channel's
delay (direct mail: days) and may lead to a purchase at that moment: often after the customer's
next decision. So :func:`apply_outcome` only queues a step's sends, engagements and purchases, with
their times, in :class:`Pending`; :func:`settle` folds into the history (and the fatigue and
engagement stocks that go with it) those that happened by each customer's next decision, in time
order. At every decision the history then holds exactly what had happened by then, as the decision
service rebuilds it from the log (:func:`nba.decide.history_from_log`: contacts sent by now, in
order of send time; the first open of each message; purchases when they happened).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from envs.population import State, Traits
from envs.response import ContactTerms, Moment, Outcome
from envs.scenario import Scenario, ScenarioArrays
from nba.actions import ActionSpace
from nba.features import History, hour_of_day

ADVANCE_WIDTH = 4  # uniforms one advance consumes


@dataclass(frozen=True)
class EventTimes:
    """When a step's events happen (hours since the epoch, all (N,)): what the history and the log
    both stamp them with."""

    send_at: np.ndarray  # the message goes out (the decision time for no contact); delivered
    seen_at: np.ndarray  # seen (opened, clicked; an opt-out or churn it caused), NaN where not seen
    bought_at: np.ndarray  # a purchase: at the click when the message caused it, else at send_at; NaN if none


def event_times(st: State, t: ContactTerms, out: Outcome) -> EventTimes:
    """The times of the outcome ``out`` of decisions taken at ``st.now`` (``t`` of (N, 1) actions)."""
    send_at = st.now + t.wait_h[:, 0]
    seen_at = send_at + out.seen_delay_min / 60.0  # NaN where not seen
    bought_at = np.where(out.purchased, np.where(out.converted, seen_at, send_at), np.nan)
    return EventTimes(send_at, seen_at, bought_at)


@dataclass
class Queue:
    """Events of one kind not yet in the history, one entry each (flat arrays, in the order queued)."""

    row: np.ndarray  # (K,) intp
    time: np.ndarray  # (K,) float64 hours
    channel: np.ndarray  # (K,) intp (0 for purchases)
    hour: np.ndarray  # (K,) float64: the local hour the message was sent at (0 for purchases)

    @classmethod
    def empty(cls) -> Queue:
        return cls(np.zeros(0, np.intp), np.zeros(0), np.zeros(0, np.intp), np.zeros(0))

    def add(self, rows: np.ndarray, time: np.ndarray, channel: np.ndarray, hour: np.ndarray) -> None:
        if rows.size:
            for f, x in zip(fields(self), (rows, time, channel, hour), strict=True):
                setattr(self, f.name, np.concatenate([getattr(self, f.name), x]))

    def drop(self, flagged: np.ndarray) -> None:
        """Forget the entries of the rows where ``flagged`` (bool (N,)) is set."""
        if self.row.size:
            self._keep(~flagged[self.row])

    def _keep(self, keep: np.ndarray) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name)[keep])

    def take_due(self, now: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Remove the entries at or before their row's ``now`` (N,) and return them as rounds of
        ``(rows, time, channel, hour)``, each row at most once a round, each row's entries in time
        order across rounds (ties in the order queued)."""
        if self.row.size == 0:
            return []
        due = self.time <= now[self.row]
        idx = np.flatnonzero(due)
        if idx.size == 0:
            return []
        rows = self.row[idx]
        many = np.bincount(rows, minlength=now.shape[0])[rows] > 1
        if not many.any():
            rounds = [idx]
        else:  # a row with several due entries: the earliest first (lexsort is stable)
            single, multi = idx[~many], idx[many]
            multi = multi[np.lexsort((self.time[multi], self.row[multi]))]
            r = self.row[multi]
            start = np.r_[0, np.flatnonzero(r[1:] != r[:-1]) + 1]
            rank = np.arange(r.size) - np.repeat(start, np.diff(np.r_[start, r.size]))
            rounds = [np.concatenate([single, multi[rank == 0]])]
            rounds += [multi[rank == k] for k in range(1, int(rank.max()) + 1)]
        out = [(self.row[k], self.time[k], self.channel[k], self.hour[k]) for k in rounds]
        if idx.size == self.row.size:
            self._keep(np.zeros(0, np.intp))
        else:
            self._keep(~due)
        return out


@dataclass
class Pending:
    """Sends, engagements (first sight of a message) and purchases queued until they happen."""

    contacts: Queue
    engagements: Queue
    purchases: Queue

    @classmethod
    def empty(cls) -> Pending:
        return cls(Queue.empty(), Queue.empty(), Queue.empty())

    def drop_rows(self, rows: np.ndarray, n: int) -> None:
        """Forget what is pending for ``rows`` (a customer replaced by a new one); ``n``: the rows in all."""
        if self.contacts.row.size or self.engagements.row.size or self.purchases.row.size:
            flagged = np.zeros(n, bool)
            flagged[rows] = True
            for q in (self.contacts, self.engagements, self.purchases):
                q.drop(flagged)


def apply_outcome(
    sc: Scenario,
    space: ActionSpace,
    tr: Traits,
    st: State,
    pending: Pending,
    actions: np.ndarray,
    t: ContactTerms,
    out: Outcome,
) -> EventTimes:
    """Queue the sends, engagements and purchases of each row's decision (``actions`` (N,)) in
    ``pending`` with their times, until :func:`settle`; opt-outs and churn take effect at once (the
    contact policy reads them from the consent the caller sends). Returns the events' times."""
    times = event_times(st, t, out)
    tz = tr.tz_offset.astype(np.float64)
    ch = np.maximum(space.channel_of[actions], 0).astype(np.intp)
    sent = np.flatnonzero(out.sent)
    if sent.size:
        when = times.send_at[sent]
        pending.contacts.add(sent, when, ch[sent], hour_of_day(when + tz[sent]))
    seen = np.flatnonzero(out.seen)
    if seen.size:
        pending.engagements.add(seen, times.seen_at[seen], ch[seen], hour_of_day(times.send_at[seen] + tz[seen]))
    bought = np.flatnonzero(out.purchased)
    if bought.size:
        pending.purchases.add(bought, times.bought_at[bought], np.zeros(bought.size, np.intp), np.zeros(bought.size))
    oo = np.flatnonzero(out.opted_out)
    st.opted_out[oo, ch[oo]] = True
    st.churned |= out.churned
    return times


def settle(sc: Scenario, st: State, hist: History, pending: Pending) -> None:
    """Fold into ``hist`` every pending event that happened at or before its row's ``st.now``, in time
    order: a send raises the channel's and the overall fatigue and the contact load; a first sight
    raises the channel's engagement; a purchase closes the cart open at that moment."""
    fz, c = sc.fatigue, st.fatigue.shape[1]
    fatigue, last_contact = _flat(st.fatigue), _flat(hist.last_contact)  # (row, channel) at row * c + channel
    for rows, when, ch, hour in pending.contacts.take_due(st.now):
        at = rows * c + ch
        dt = np.maximum(when - last_contact[at], 0.0)
        fatigue[at] = fatigue[at] * np.exp2(-dt / fz.channel_half_life_h) + 1.0
        total_dt = np.maximum(when - st.last_any_contact[rows], 0.0)
        st.fatigue_total[rows] = st.fatigue_total[rows] * np.exp2(-total_dt / fz.total_half_life_h) + 1.0
        st.last_any_contact[rows] = when
        hist.record_contacts(rows, ch, when, hour)
    hl = 24.0 * sc.synergy.engagement_half_life_d
    engagement, last_engaged = _flat(st.engagement), _flat(hist.last_engaged)
    for rows, when, ch, hour in pending.engagements.take_due(st.now):
        at = rows * c + ch
        dt = np.maximum(when - last_engaged[at], 0.0)
        engagement[at] = engagement[at] * np.exp2(-dt / hl) + 1.0
        hist.record_engagements(rows, ch, when, hour)
    for rows, when, _, _ in pending.purchases.take_due(st.now):
        hist.record_purchases(rows, when)
        until = st.cart_until[rows]
        open_then = (until - 24.0 * sc.lifecycle.cart_days <= when) & (when < until)
        st.cart_until[rows] = np.where(open_then, when, until)


def _flat(x: np.ndarray) -> np.ndarray:
    """A 1-D view of the (N, C) array ``x`` (ValueError rather than a copy that writes would miss)."""
    if not x.flags.c_contiguous:
        raise ValueError("simulation state: expected C-contiguous (N, C) arrays")
    return x.reshape(-1)


def advance(
    sc: Scenario, sa: ScenarioArrays, tr: Traits, st: State, hist: History, m: Moment, dt_h: np.ndarray, u: np.ndarray
) -> np.ndarray:
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
