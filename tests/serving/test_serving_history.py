"""The write-behind history cache on its own: an event both read from the log and queued counts once."""

from __future__ import annotations

import numpy as np

from nba.log.records import DecisionRecords, OutcomeRecords
from nba.log.store import DecisionLog
from serving.history import HistoryCache


def _decision(did: str, customer: str, t: float) -> DecisionRecords:
    one = lambda v: np.array([v], dtype=object)  # noqa: E731
    return DecisionRecords(
        decision_id=one(did),
        time=np.array([t]),
        customer_id=one(customer),
        context=np.zeros((1, 2), np.float32),
        eligible=np.ones((1, 3), bool),
        action=np.array([2]),
        send_at=np.array([t + 1]),
        propensity=np.array([0.5]),
        policy=one("p"),
        policy_version=one("1"),
        experiment=one(""),
        arm=one(""),
        cost=np.zeros(1),
    )


def test_an_event_read_with_its_customer_and_also_queued_counts_once(tmp_path):
    with DecisionLog(f"sqlite:///{tmp_path}/l.db") as log:
        log.log_decisions(_decision("d1", "x", 100.0))
        cache = HistoryCache(log)  # "x" is known from the log
        log.log_outcomes(
            OutcomeRecords(
                decision_id=np.array(["d1"], object),
                event=np.array(["opened"], object),
                time=np.array([102.0]),
                value=np.array([0.0]),
            )
        )
        h = cache.history(["x"], 0.0)  # read from the log, the event with it
        assert h.event.tolist() == ["opened"] and h.contact_action.tolist() == [2]
        cache.add_event("d1", "opened", 102.0, 0.0)  # the feedback thread queues the same event
        log.log_outcomes(
            OutcomeRecords(
                decision_id=np.array(["d1"], object),
                event=np.array(["clicked"], object),
                time=np.array([103.0]),
                value=np.array([0.0]),
            )
        )
        cache.add_event("d1", "clicked", 103.0, 0.0)  # and a new one, committed after the read
        h = cache.history(["x"], 0.0)
        assert h.event.tolist() == ["opened", "clicked"] and h.event_decision.tolist() == ["d1", "d1"]
        assert cache.history(["x"], 102.5).event.tolist() == ["clicked"]  # the window applies


def test_a_read_mixes_cached_logged_and_new_customers_and_refreshes_the_cached_in_order(tmp_path):
    with DecisionLog(f"sqlite:///{tmp_path}/l.db") as log:
        log.log_decisions(_decision("d1", "logged", 100.0))
        cache = HistoryCache(log, max_customers=3)
        cache.add_decisions(_decision("d2", "a", 101.0), 1, 1)
        cache.add_decisions(_decision("d3", "b", 102.0), 2, 2)
        # a new customer has nothing, a logged one is read once (twice asked), the cached from memory
        h = cache.history(["new", "b", "logged", "a", "logged"], 0.0)
        assert h.customer_ids.tolist() == ["new", "b", "logged", "a", "logged"]
        assert h.contact_customer.tolist() == [2, 4, 3, 1] and h.contact_time.tolist() == [100, 100, 101, 102]
        assert "new" not in cache._entries and list(cache._entries) == ["b", "a", "logged"]  # read last, kept last
        cache.add_decisions(_decision("d4", "c", 103.0), 3, 3)  # "b", the least recently read, leaves
        assert list(cache._entries) == ["a", "logged", "c"]
