"""Contact history for the decision path: the same result as
:meth:`nba.log.store.DecisionLog.contact_history`, with the SQL text built once per IN-list size and
sent straight to the driver on one connection (the store builds SQLAlchemy expressions per call,
which costs about a millisecond a request on the service's hot path)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from nba.log.records import ContactHistory

ENGAGEMENTS = ("opened", "clicked", "converted")
CHUNK = 500


class HistoryReader:
    """Reads contacts and engagement events of a few customers from a :class:`DecisionLog`'s tables."""

    def __init__(self, decision_log) -> None:
        self.log = decision_log
        self.ph = "?" if decision_log.dialect == "sqlite" else "%s"
        self.dec, self.out = decision_log.decisions.name, decision_log.outcomes.name

    @lru_cache(maxsize=64)  # noqa: B019 (one reader per process)
    def _sql(self, k: int) -> tuple[str, str]:
        ids = ", ".join([self.ph] * k)
        ev = ", ".join(f"'{e}'" for e in ENGAGEMENTS)
        contacts = (f"SELECT customer_id, time, send_at, action FROM {self.dec} "
                    f"WHERE customer_id IN ({ids}) AND action > 0 AND send_at >= {self.ph}")
        events = (f"SELECT d.customer_id, o.event, o.time, o.value, d.action, d.send_at FROM {self.out} o "
                  f"JOIN {self.dec} d ON d.decision_id = o.decision_id "
                  f"WHERE d.customer_id IN ({ids}) AND o.event IN ({ev}) AND o.time >= {self.ph}")
        return contacts, events

    def __call__(self, customer_ids: Sequence[str], since: float) -> ContactHistory:
        ids = list(customer_ids)
        index = {c: i for i, c in enumerate(ids)}
        uniq = list(index)
        contacts: list = []
        events: list = []
        with self.log.engine.connect() as conn:
            for i in range(0, len(uniq), CHUNK):
                part = uniq[i: i + CHUNK]
                c_sql, e_sql = self._sql(len(part))
                params = (*part, float(since))
                contacts += conn.exec_driver_sql(c_sql, params).fetchall()
                events += conn.exec_driver_sql(e_sql, params).fetchall()
        contacts.sort(key=lambda r: (r[2], r[1]))
        events.sort(key=lambda r: r[2])
        cc = list(zip(*contacts, strict=True)) or [()] * 4
        ee = list(zip(*events, strict=True)) or [()] * 6

        def cust(col) -> np.ndarray:
            return np.fromiter((index[x] for x in col), np.int64, len(col))

        return ContactHistory(
            customer_ids=np.asarray(ids, dtype=object),
            contact_customer=cust(cc[0]),
            contact_time=np.array(cc[1], np.float64),
            contact_send_at=np.array(cc[2], np.float64),
            contact_action=np.array(cc[3], np.int64),
            event_customer=cust(ee[0]),
            event=np.array(ee[1], dtype=object),
            event_time=np.array(ee[2], np.float64),
            event_value=np.array(ee[3], np.float64),
            event_action=np.array(ee[4], np.int64),
            event_send_at=np.array(ee[5], np.float64),
        )
