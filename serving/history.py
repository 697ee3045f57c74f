"""Customers' contact history in memory, for the write-behind decider (``NBA_SPOOL_DIR``).

In write-behind mode the decision log lags the spool by a few milliseconds, so the decider cannot
read history from the log alone; and reading it for every request is what made a batch slow. This
cache is the decider's own record: every customer it has decided for or read, with their contacts
(decisions with an action) and engagement events (``opened``, ``clicked``, ``converted``), and the
set of customers the log held at start. A customer neither cached nor in that set has no history, so
a first decision reads nothing; a customer in the set is read from the log once, whole.

Only the decider thread reads and changes the entries. Feedback arrives on other threads: once an
outcome is committed to the log it is queued (:meth:`HistoryCache.add_event`) and the decider applies
it before its next read, skipping one it already holds (an entry read from the log after that
commit). Entries leave least recently used first, beyond ``max_customers``, but never while one of
their decisions is still only in the spool.

It is exact only while this process is the log's one decider: the service refuses write-behind with
several workers, and the spool's lock keeps two processes off one spool directory.
"""

from __future__ import annotations

import queue
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from nba.log.records import ContactHistory, DecisionRecords
from nba.log.store import ENGAGEMENTS, DecisionLog

_ALL = -1e18  # read a customer's whole history from the log


# An entry is a tuple, replaced whole on change: tuples of numbers and strings are untracked by the
# cyclic garbage collector, so a cache of 200,000 customers costs no collection time (as objects with
# lists inside, it made every decision batch several milliseconds slower as the cache grew).
# (pending, contacts, events):
#   pending: spool position just past the customer's latest decision;
#   contacts: ((time, send_at, action > 0), ...);
#   events: ((event, time, value, action, send_at, decision_id), ...) with the decision's action and send time.
_Entry = tuple[int, tuple, tuple]
_EMPTY: tuple = ()


class HistoryCache:
    """See the module docstring. ``log``: the decision log; ``max_customers``: entries kept."""

    def __init__(self, log: DecisionLog, max_customers: int = 200_000) -> None:
        if max_customers < 1:
            raise ValueError(f"max_customers: must be >= 1, got {max_customers!r}")
        self.log = log
        self.max_customers = int(max_customers)
        self._known = log.customer_ids()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._inbox: queue.SimpleQueue[tuple] = queue.SimpleQueue()

    def __len__(self) -> int:
        return len(self._entries)

    # ------------------------------------------------------------------ decider thread
    def history(self, customer_ids: Sequence[str], since: float) -> ContactHistory:
        """As :meth:`nba.log.DecisionLog.contact_history`, from memory (customers first seen in the log
        are read from it once)."""
        self._drain()
        entries = self._entries
        missing = [c for c in customer_ids if c not in entries and c in self._known]
        if missing:
            self._load(missing)
        c_idx: list[int] = []
        contacts: list[tuple[float, float, int]] = []
        e_idx: list[int] = []
        events: list[tuple] = []
        for i, c in enumerate(customer_ids):
            e = entries.get(c)
            if e is None:
                continue
            entries.move_to_end(c)
            if e[1]:
                c_idx += [i] * len(e[1])
                contacts += e[1]
            if e[2]:
                e_idx += [i] * len(e[2])
                events += e[2]
        return ContactHistory.from_rows(
            np.asarray(list(customer_ids), dtype=object), c_idx, contacts, e_idx, events, since
        )

    def add_decisions(self, records: DecisionRecords, position: int, replayed: int) -> None:
        """Record decisions just spooled up to ``position``; evict beyond the bound (``replayed``: how far
        the log has caught up, so which entries may go)."""
        entries = self._entries
        get = entries.get
        for c, t, s, a in zip(
            records.customer_id.tolist(),
            records.time.tolist(),
            records.send_at.tolist(),
            records.action.tolist(),
            strict=True,
        ):  # one pass, one new tuple per customer
            e = get(c)
            if e is None:  # a customer new to the cache
                entries[c] = (position, ((t, s, a),) if a > 0 else _EMPTY, _EMPTY)
            else:
                entries[c] = (position, (*e[1], (t, s, a)) if a > 0 else e[1], e[2])
        self._evict(replayed)

    def _evict(self, replayed: int) -> None:
        entries = self._entries
        for _ in range(len(entries) - self.max_customers):
            c, e = next(iter(entries.items()))
            if e[0] > replayed:  # the oldest still waits for the log: keep everyone newer too
                return
            del entries[c]
            self._known.add(c)  # in the log now: read it back from there when it returns

    def _load(self, customer_ids: list[str]) -> None:
        h = self.log.contact_history(customer_ids, _ALL)
        contacts: list[list] = [[] for _ in customer_ids]
        events: list[list] = [[] for _ in customer_ids]
        for i, t, s, a in zip(
            h.contact_customer.tolist(),
            h.contact_time.tolist(),
            h.contact_send_at.tolist(),
            h.contact_action.tolist(),
            strict=True,
        ):
            contacts[i].append((t, s, a))
        for row in zip(
            h.event_customer.tolist(),
            h.event.tolist(),
            h.event_time.tolist(),
            h.event_value.tolist(),
            h.event_action.tolist(),
            h.event_send_at.tolist(),
            h.event_decision.tolist(),
            strict=True,
        ):
            events[row[0]].append(row[1:])
        for c, cs, es in zip(customer_ids, contacts, events, strict=True):
            self._entries[c] = (0, tuple(cs), tuple(es))

    def _drain(self) -> None:
        while True:
            try:
                customer, event, t, value, action, send_at, decision_id = self._inbox.get_nowait()
            except queue.Empty:
                return
            e = self._entries.get(customer)
            if e is not None and not any(x[5] == decision_id and x[0] == event for x in e[2]):
                self._entries[customer] = (e[0], e[1], (*e[2], (event, t, value, action, send_at, decision_id)))

    # ------------------------------------------------------------------ any thread
    def add_event(self, decision_id: str, event: str, time: float, value: float) -> None:
        """An outcome just committed to the log (engagements only matter; the decider applies it)."""
        if event not in ENGAGEMENTS:
            return
        info = self.log.decisions_of([decision_id]).get(decision_id)
        if info is not None:
            customer, action, send_at = info
            self._inbox.put((customer, event, float(time), float(value), action, send_at, decision_id))
