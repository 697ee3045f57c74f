"""What a customer's history holds at a decision: exactly what had happened by then, in time order.

A step's sends, opens and purchases are queued with their times (``envs/dynamics.py``, :class:`Pending`)
and folded into the history once they happened by the customer's next decision; these tests follow
every event through :attr:`envs.simulation.StepResult.times` and check the history against them. The
decision log's side of it (features rebuilt from the log equal the observations) is
``tests/nba/test_decide_parity.py``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from envs.dynamics import Queue
from envs.scenario import Scenario
from envs.simulation import Simulation
from nba.features import NEVER
from nba.policies import act, create


def _queue(rows, times) -> Queue:
    q = Queue.empty()
    rows = np.asarray(rows, np.intp)
    q.add(rows, np.asarray(times, np.float64), np.arange(rows.size, dtype=np.intp), np.zeros(rows.size))
    return q


def test_queue_gives_what_is_due_in_time_order_each_row_once_a_round():
    # row 0: three entries due (one queued out of time order), row 1: one due and one not, row 2: none due
    q = _queue([0, 1, 0, 2, 0, 1], [5.0, 1.0, 3.0, 9.0, 3.0, 8.0])
    rounds = q.take_due(np.array([6.0, 2.0, 4.0]))
    assert [r.tolist() for r, *_ in rounds] == [[1, 0], [0], [0]]
    # row 0 in time order, the tie at 3.0 in the order queued (entries 2, then 4)
    assert [c.tolist() for *_, c, _ in rounds] == [[1, 2], [4], [0]]
    assert [t.tolist() for _, t, _, _ in rounds] == [[1.0, 3.0], [3.0], [5.0]]
    assert q.row.tolist() == [2, 1] and q.time.tolist() == [9.0, 8.0]  # the rest waits, in order
    assert q.take_due(np.array([6.0, 2.0, 4.0])) == []


def test_queue_forgets_the_rows_of_replaced_customers():
    q = _queue([0, 1, 2, 1], [1.0, 2.0, 3.0, 4.0])
    q.drop(np.array([False, True, False]))
    assert q.row.tolist() == [0, 2] and q.time.tolist() == [1.0, 3.0]


@pytest.mark.parametrize("window_h", [24.0, 6.0])
def test_history_holds_exactly_the_events_that_happened_by_each_decision(window_h):
    """Every send, first sight and purchase counts from its own time on, not from its decision's: at each
    decision, the counts and the latest times per channel equal those of the events at or before it."""
    sc = dataclasses.replace(Scenario.default(), decision_window_h=window_h)
    n, steps = 3_000, 12
    sim = Simulation(sc, 3, n, purpose="test/envs/dynamics", decision_hour=None, penalties=True)
    c = len(sc.channels)
    h = sim.history
    start_purchases, start_last = h.n_purchases.copy(), h.last_purchase.copy()
    sends, sights, buys = [], [], []  # (row, channel, time) of every event so far
    late = {"send": 0, "sight": 0, "purchase": 0}
    rows = np.arange(n)
    policy, rng = create("uniform_random", sim.space), np.random.default_rng(3)
    for _ in range(steps):
        actions = act(policy, sim.observe(), sim.action_mask(), rng).actions
        res = sim.step(actions)
        o, t, ch = res.outcome, res.times, np.maximum(sim.space.channel_of[actions], 0)
        sends.append((rows[o.sent], ch[o.sent], t.send_at[o.sent]))
        sights.append((rows[o.seen], ch[o.seen], t.seen_at[o.seen]))
        buys.append((rows[o.purchased], np.zeros(int(o.purchased.sum()), np.intp), t.bought_at[o.purchased]))
        now = sim.state.now
        for name, events in (("send", sends), ("sight", sights), ("purchase", buys)):
            r, k, when = (np.concatenate(x) for x in zip(*events, strict=True))
            late[name] += int((when > now[r]).sum())
            done = when <= now[r]
            count = np.zeros((n, c))
            np.add.at(count, (r[done], k[done]), 1.0)
            last = np.full((n, c), NEVER)
            np.maximum.at(last, (r[done], k[done]), when[done])
            if name == "send":
                np.testing.assert_array_equal(h.n_contacts, count)
                np.testing.assert_array_equal(h.last_contact, last)
                assert (h.last_contact <= now[:, None]).all()
            elif name == "sight":
                np.testing.assert_array_equal(h.n_engaged, count)
                np.testing.assert_array_equal(h.last_engaged, last)
            else:
                np.testing.assert_array_equal(h.n_purchases, start_purchases + count[:, 0])
                np.testing.assert_array_equal(h.last_purchase, np.maximum(start_last, last[:, 0]))
                assert (h.last_purchase <= now).all()
            assert (sim.state.last_any_contact <= now).all()
    # the cases exist: opens (direct mail) and purchases after the next decision, and at the short cadence
    # sends scheduled after it
    assert late["sight"] > 0 and late["purchase"] > 0, late
    if window_h < 24.0:
        assert late["send"] > 0, late


def test_a_purchase_closes_the_cart_when_it_happens():
    """The cart open at a purchase closes then; one opened after it (a later visit) stays open."""
    sc = dataclasses.replace(Scenario.default(), decision_window_h=6.0)
    sim = Simulation(sc, 4, 3_000, purpose="test/envs/dynamics", decision_hour=None)
    closed = 0
    for _ in range(10):
        before = sim.state.cart_until.copy()
        res = sim.step(np.zeros(sim.n, np.int64))
        bought = res.outcome.purchased & (before > res.times.bought_at) & (sim.state.now >= res.times.bought_at)
        # a cart open at the purchase (and not replaced by a visit since) now ends at the purchase
        same = bought & (sim.state.cart_until <= before)
        np.testing.assert_array_equal(sim.state.cart_until[same], res.times.bought_at[same])
        closed += int(same.sum())
    assert closed > 0
