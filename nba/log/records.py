"""The decision log's records: what every writer (simulator, service, importer) appends and every
reader (training, evaluation, A/B) gets back, as columnar batches of NumPy arrays.

Times are hours since the Unix epoch, UTC (float64), as everywhere in nba.

* A **decision**: who was decided for, when, on what context, among which eligible actions, which
  action with which send time and which propensity, by which policy (name and version), in which
  experiment arm, and what the action cost.
* An **outcome**: an event that followed a decision (``delivered``, ``opened``, ``clicked``,
  ``converted`` with its value, ``opted_out``, ``churned``), at some time, with a value.
* A decision's **reward** joins its outcomes within an attribution window
  (:class:`nba.log.rewards.RewardRule`).
* Every decision of one log shares a **layout** (:class:`LogLayout`): the context's dimension and the
  number of actions, and optionally the features' names and the action space.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

# ``churned``: the customer left after the message (the simulator charges its lost future value)
EVENTS: tuple[str, ...] = ("delivered", "opened", "clicked", "converted", "opted_out", "churned")
FUNNEL: tuple[str, ...] = ("opened", "clicked", "converted")  # each implies the one before it
SCHEMA_VERSION = "1"  # of a log's tables and of its Parquet export


@dataclass(frozen=True)
class LogLayout:
    """What every decision of one log shares."""

    context_dim: int
    n_actions: int
    feature_names: tuple[str, ...] | None = None
    action_space: dict[str, Any] | None = None  # JSON description of the action space, if given


@dataclass(frozen=True)
class DecisionRecords:
    """A batch of decisions (all arrays of length N)."""

    decision_id: np.ndarray  # (N,) str: unique; a retried write with the same id is not duplicated
    time: np.ndarray  # (N,) float64 hours: when the decision was made
    customer_id: np.ndarray  # (N,) str
    context: np.ndarray  # (N, d) float32: the features the policy saw
    eligible: np.ndarray  # (N, A) bool: the contact policy's mask
    action: np.ndarray  # (N,) int64: index into the action space (0 = no contact)
    send_at: np.ndarray  # (N,) float64 hours: when the message goes out (= time for no contact)
    propensity: np.ndarray  # (N,) float64 in (0, 1]: probability of the chosen action
    policy: np.ndarray  # (N,) str: policy name
    policy_version: np.ndarray  # (N,) str
    experiment: np.ndarray  # (N,) str, "" when none
    arm: np.ndarray  # (N,) str, "" when none
    cost: np.ndarray  # (N,) float64: what sending cost (0 for no contact)

    def __len__(self) -> int:
        return len(self.decision_id)


@dataclass(frozen=True)
class OutcomeRecords:
    """A batch of outcome events (all arrays of length M)."""

    decision_id: np.ndarray  # (M,) str: the decision the event follows
    event: np.ndarray  # (M,) str, one of EVENTS; (decision_id, event) is unique (idempotent writes)
    time: np.ndarray  # (M,) float64 hours
    value: np.ndarray  # (M,) float64: revenue of a conversion; 0 for other events unless given

    def __len__(self) -> int:
        return len(self.decision_id)


@dataclass(frozen=True)
class FunnelEvents:
    """What followed each decision of a batch: the funnel's events (bool, (N,)) and the conversion's
    value ((N,), 0 where there was none). Each event implies the one before it."""

    opened: np.ndarray
    clicked: np.ndarray
    converted: np.ndarray
    value: np.ndarray

    @classmethod
    def check(cls, events: Any, actions: np.ndarray) -> FunnelEvents:
        """Validated events for a batch of ``actions``; raise ValueError naming the field."""
        if not isinstance(events, FunnelEvents):
            raise ValueError(
                "events: a funnel learner needs the batch's funnel events: pass "
                f"events=FunnelEvents(opened, clicked, converted, value), got {type(events).__name__}"
            )
        n = len(actions)
        out = {}
        for name in FUNNEL:
            v = np.asarray(getattr(events, name))
            if v.shape != (n,) or v.dtype != bool:
                raise ValueError(f"events.{name}: expected a boolean array of shape ({n},), got {v.dtype} {v.shape}")
            out[name] = v
        value = np.asarray(events.value, np.float64)
        if value.shape != (n,) or not np.all(np.isfinite(value)):
            raise ValueError(f"events.value: expected {n} finite numbers")
        if np.any(out["opened"] & (actions == 0)):
            raise ValueError("events.opened: a no-contact decision cannot be opened")
        if np.any(out["clicked"] & ~out["opened"]) or np.any(out["converted"] & ~out["clicked"]):
            raise ValueError(
                "events.clicked/converted: each event must follow the one before it "
                "(opened, then clicked, then converted)"
            )
        if np.any(value[~out["converted"]] != 0):
            raise ValueError("events.value: must be 0 where there was no conversion")
        return cls(**out, value=value)


@dataclass(frozen=True)
class LoggedBatch:
    """Decisions read back from the log with their rewards (a chunk of an export)."""

    decision_id: np.ndarray  # (N,) object str
    time: np.ndarray  # (N,) float64
    customer_id: np.ndarray  # (N,) object str
    context: np.ndarray  # (N, d) float32
    eligible: np.ndarray  # (N, A) bool
    action: np.ndarray  # (N,) int64
    send_at: np.ndarray  # (N,) float64
    propensity: np.ndarray  # (N,) float64
    policy: np.ndarray  # (N,) object str
    policy_version: np.ndarray  # (N,) object str
    experiment: np.ndarray  # (N,) object str
    arm: np.ndarray  # (N,) object str
    cost: np.ndarray  # (N,) float64
    reward: np.ndarray  # (N,) float64 per the RewardRule of the read

    def __len__(self) -> int:
        return len(self.decision_id)

    @classmethod
    def concat(cls, batches: list[LoggedBatch]) -> LoggedBatch:
        """One batch of the rows of ``batches``, in order; ``ValueError`` when there are none."""
        if not batches:
            raise ValueError("batches: nothing to concatenate")
        return cls(**{f.name: np.concatenate([getattr(b, f.name) for b in batches]) for f in fields(cls)})

    @classmethod
    def empty(cls, context_dim: int = 0, n_actions: int = 0) -> LoggedBatch:
        """A batch of no decisions with the given layout."""
        s, f = np.empty(0, object), np.empty(0, np.float64)
        return cls(
            decision_id=s,
            time=f,
            customer_id=s.copy(),
            context=np.empty((0, context_dim), np.float32),
            eligible=np.empty((0, n_actions), bool),
            action=np.empty(0, np.int64),
            send_at=f.copy(),
            propensity=f.copy(),
            policy=s.copy(),
            policy_version=s.copy(),
            experiment=s.copy(),
            arm=s.copy(),
            cost=f.copy(),
            reward=f.copy(),
        )


@dataclass(frozen=True)
class ContactHistory:
    """Past contacts and engagements of some customers, as the decision service needs them to rebuild
    :class:`nba.features.History` and :class:`nba.eligibility.RecentContacts`.

    Every row points into ``customer_ids`` by its ``*_customer`` index; rows are sorted by time.
    Contacts are decisions with ``action > 0``; events are ``opened``, ``clicked`` and ``converted``
    outcomes of any decision of those customers (a ``converted`` of a no-contact decision, action 0,
    is an organic purchase).
    """

    customer_ids: np.ndarray  # (K,) object str: the customers asked for, in the order asked
    contact_customer: np.ndarray  # (P,) int64 index into customer_ids
    contact_time: np.ndarray  # (P,) float64 hours: when the decision was made
    contact_send_at: np.ndarray  # (P,) float64 hours: when the message was (or will be) sent
    contact_action: np.ndarray  # (P,) int64 action index (> 0)
    event_customer: np.ndarray  # (Q,) int64 index into customer_ids
    event: np.ndarray  # (Q,) object str: opened, clicked or converted
    event_time: np.ndarray  # (Q,) float64 hours
    event_value: np.ndarray  # (Q,) float64
    event_action: np.ndarray  # (Q,) int64: the action of the decision the event followed
    event_send_at: np.ndarray  # (Q,) float64: that decision's send time (for the send-hour features)
    event_decision: np.ndarray  # (Q,) object str: that decision's id

    @classmethod
    def from_rows(
        cls,
        customer_ids: np.ndarray,
        contact_customer: list[int],
        contacts: list[tuple],
        event_customer: list[int],
        events: list[tuple],
        since: float,
    ) -> ContactHistory:
        """From row lists, wherever they were read (the log's tables, the service's memory): ``contacts``
        as ``(time, send_at, action)`` and ``events`` as ``(event, time, value, action, send_at,
        decision_id)``, each row's customer an index into ``customer_ids``. Keeps the contacts sent from
        ``since`` on, sorted by (send time, decision time), and the events from ``since`` on, sorted by
        time (ties in the order given)."""
        cc = list(zip(*contacts, strict=True)) or [()] * 3
        ee = list(zip(*events, strict=True)) or [()] * 6
        ct, cs, ca = np.array(cc[0], np.float64), np.array(cc[1], np.float64), np.array(cc[2], np.int64)
        keep = np.flatnonzero(cs >= since)
        order = keep[np.lexsort((ct[keep], cs[keep]))]
        et = np.array(ee[1], np.float64)
        ekeep = np.flatnonzero(et >= since)
        eorder = ekeep[np.argsort(et[ekeep], kind="stable")]
        return cls(
            customer_ids=customer_ids,
            contact_customer=np.asarray(contact_customer, np.int64)[order],
            contact_time=ct[order],
            contact_send_at=cs[order],
            contact_action=ca[order],
            event_customer=np.asarray(event_customer, np.int64)[eorder],
            event=np.array(ee[0], dtype=object)[eorder],
            event_time=et[eorder],
            event_value=np.array(ee[2], np.float64)[eorder],
            event_action=np.array(ee[3], np.int64)[eorder],
            event_send_at=np.array(ee[4], np.float64)[eorder],
            event_decision=np.array(ee[5], dtype=object)[eorder],
        )
