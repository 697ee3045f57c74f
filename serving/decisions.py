"""One batch of validated requests through the library's decide path, into results and log records.

The engine (:mod:`serving.engine`) hands :func:`decide_batch` the requests of one batch and the
customers' contact history read from the decision log (or the write-behind cache). Rows are grouped by
the served version deciding them (champion, or challenger in its arm); each group goes through
:mod:`nba.decide`: :func:`nba.decide.history_from_log` rebuilds the customers' history and recent
contacts, then :func:`nba.decide.decide` (a deployment policy, on the declared attributes) or
:func:`nba.decide.decide_profiles` (a scenario policy, on the simulator's profile fields) builds the
features, the eligibility mask and the send times, and makes the choice with its exact propensity.
The same steps as the simulator's and the pyfunc model's, so what the log holds is what the policy saw.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from nba.decide import Decided, decide, decide_profiles, history_from_log
from nba.deployment import DAY_H, AttributeColumns, Deployment, Usage
from nba.eligibility import RecentContacts
from nba.features import Profile
from nba.log.records import DecisionRecords
from nba.serialization import Bundle
from serving.model_store import Served
from serving.requests import Rows


@dataclass(frozen=True)
class Result:
    """The decisions of one request, as arrays (the front end turns them into responses)."""

    decision_id: list[str]
    action: np.ndarray
    propensity: np.ndarray
    send_at: np.ndarray
    policy: list[str]
    version: list[str]
    alternatives: list[list[tuple[int, float]]]  # per row: (action, probability), best first
    bundles: list[Bundle]  # per row: the bundle that decided it


class UsageTracker:
    """What a deployment's offer budgets and channels' daily capacities have used (:class:`nba.deployment.Usage`),
    for the decider thread: counted from the decision log (:meth:`nba.log.store.DecisionLog.action_counts`,
    every send whoever decided it) at most every ``refresh_s`` seconds, plus this process's decisions since.

    Several processes over one log see each other's decisions at their next refresh: together they may
    exceed a budget or a day's capacity by what they send in between (a single process never does:
    :meth:`nba.deployment.Deployment.eligibility` gives what is left to a batch's first rows only). A
    deployment without budgets or capacities costs nothing (:meth:`usage` is None).
    """

    def __init__(self, log: Any, refresh_s: float = 10.0) -> None:
        self.log, self.refresh_s = log, refresh_s
        self._usage: Usage | None = None
        self._digest = ""
        self._read_at = -math.inf

    @staticmethod
    def needed(d: Deployment) -> bool:
        return any(o.budget is not None for o in d.offers) or any(c.capacity_per_day is not None for c in d.channels)

    def usage(self, d: Deployment, now: np.ndarray) -> Usage | None:
        """The usage to decide at ``now`` (N,) with, or None when ``d`` limits nothing."""
        if not self.needed(d) or len(now) == 0:
            return None
        first, last = int(np.floor(now.min() / DAY_H)), int(np.floor(now.max() / DAY_H))
        u = self._usage
        if (
            u is None
            or self._digest != d.digest
            or time.monotonic() - self._read_at > self.refresh_s
            or first < u.day
            or last + 1 >= u.day + u.channel_sends.shape[1]
        ):
            u = self._usage = self._read(d, first, last)
            self._digest, self._read_at = d.digest, time.monotonic()
        return u

    def _read(self, d: Deployment, first: int, last: int) -> Usage:
        space = d.action_space()
        offers = np.zeros(len(d.offers), np.int64)
        channels = np.zeros((len(d.channels), last - first + 2), np.int64)
        if any(o.budget is not None for o in d.offers):
            counts = self.log.action_counts(0.0)
            if counts.size == space.n_actions:
                offers += np.bincount(space.content_of[1:], weights=counts[1:], minlength=len(d.offers)).astype(
                    np.int64
                )
        if any(c.capacity_per_day is not None for c in d.channels):
            for j in range(channels.shape[1]):
                counts = self.log.action_counts((first + j) * DAY_H, (first + j + 1) * DAY_H)
                if counts.size == space.n_actions:
                    channels[:, j] = np.bincount(
                        space.channel_of[1:], weights=counts[1:], minlength=len(d.channels)
                    ).astype(np.int64)
        return Usage(offers, channels, first)

    def add(self, d: Deployment, actions: np.ndarray, send_at: np.ndarray) -> None:
        """Count a batch's decisions until the next read of the log."""
        if self._usage is not None and self._digest == d.digest:
            self._usage = self._usage.plus(d, actions, send_at)


def decide_batch(
    batch: list[tuple[Rows, int]],
    served: dict[str, Served],
    now: np.ndarray,
    history: Any,
    decision_ids: list[str],
    rng: np.random.Generator,
    *,
    channel_costs: dict[str, float],
    experiment: str,
    usage: UsageTracker | None = None,
) -> tuple[list[Result], DecisionRecords]:
    """Decide every row of ``batch`` (each request's rows with how many alternatives it asked for), at
    ``now`` (one time per row), from the contact ``history`` of all their customers; returns one
    Result per request and the records to log. ``usage``: the offer budgets and channel capacities
    used so far (a deployment's policy)."""
    columns = _Columns(batch)
    ids = columns.whole("ids")
    n = len(ids)
    alias = np.asarray(columns.whole("alias"), dtype=object)
    action = np.zeros(n, np.int64)
    propensity = np.ones(n)
    send_at = now.copy()
    policy = np.empty(n, object)
    version = np.empty(n, object)
    contexts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    alternatives: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    k_alt = np.repeat([k for _, k in batch], [len(rows.ids) for rows, _ in batch])
    bundles: list[Bundle] = [None] * n  # type: ignore[list-item]
    for name in sorted(set(alias.tolist())):
        rows = np.flatnonzero(alias == name)
        s = served[name]
        d = _decide_group(s.bundle, columns, rows, now[rows], history, rng, usage)
        action[rows], propensity[rows], send_at[rows] = d.action, d.propensity, d.send_at
        policy[rows] = s.bundle.policy.name
        version[rows] = s.version
        contexts[name] = (rows, d.context, d.eligible)
        _top(d.probabilities, rows, k_alt[rows], alternatives)
        if len(rows) == n:
            bundles = [s.bundle] * n
        else:
            for r in rows.tolist():
                bundles[r] = s.bundle
    records = _records(
        served,
        ids,
        now,
        contexts,
        decision_ids,
        action,
        propensity,
        send_at,
        policy,
        version,
        np.asarray(columns.whole("arm"), dtype=object),
        channel_costs,
        experiment,
    )
    out, start = [], 0
    policies, versions = policy.tolist(), version.tolist()
    for rows_, _ in batch:
        sl = slice(start, start + len(rows_.ids))
        start += len(rows_.ids)
        out.append(
            Result(
                decision_ids[sl],
                action[sl],
                propensity[sl],
                send_at[sl],
                policies[sl],
                versions[sl],
                alternatives[sl],
                bundles[sl],
            )
        )
    return out, records


class _Columns:
    """The rows of a batch's requests, column by column (taken whole when one request holds them all)."""

    def __init__(self, batch: list[tuple[Rows, int]]) -> None:
        self._batch = batch
        self._cache: dict[str, list[Any]] = {}

    def whole(self, name: str) -> Any:
        """The column ``name`` of every row of the batch (a list; the attributes as AttributeColumns)."""
        values = self._cache.get(name)
        if values is None:
            parts = [getattr(r, name) for r, _ in self._batch]
            if len(parts) == 1:
                values = parts[0]
            elif isinstance(parts[0], AttributeColumns):
                values = AttributeColumns.concat(parts)
            else:
                values = [x for part in parts for x in part]
            self._cache[name] = values
        return values

    def __call__(self, name: str, rows: np.ndarray) -> Any:
        values = self.whole(name)
        if len(rows) == len(values):
            return values
        if isinstance(values, AttributeColumns):
            return values.take(rows)
        return [values[r] for r in rows.tolist()]

    def flags(self, name: str, rows: np.ndarray, width: int) -> np.ndarray | None:
        """(len(rows), width) bool of a per-row flag column (None for a row: all true); None when no row has any."""
        values = self(name, rows)
        if values.count(None) == len(values):
            return None
        out = np.ones((len(rows), width), bool)
        for j, v in enumerate(values):
            if v is not None:
                out[j] = v
        return out


def _decide_group(
    bundle: Bundle,
    col: _Columns,
    rows: np.ndarray,
    now: np.ndarray,
    h: Any,
    rng: np.random.Generator,
    usage: UsageTracker | None,
) -> Decided:
    """The decisions of ``rows`` (indices into the batch) by ``bundle``'s policy, through :mod:`nba.decide`."""
    space = bundle.policy.space
    tz = np.asarray(col("tz", rows), np.float64)
    zones = col("zones", rows)  # a contact's send hour is local at its own time (summer or winter)
    allowed = col.flags("allowed", rows, space.n_channels)
    d = bundle.deployment
    if d is not None:
        recent = d.recent(len(rows))  # sized for every cap, per offer included
        history = history_from_log(h, rows, space, recent, now=now, tz_offset=tz, zones=zones)
        used = None if usage is None else usage.usage(d, now)
        out = decide(
            d,
            bundle.policy,
            col("attributes", rows),
            now=now,
            tz_offset=tz,
            rng=rng,
            history=history,
            recent=recent,
            allowed=allowed,
            offers=col.flags("offers", rows, len(d.offers)),
            usage=used,
        )
        if used is not None:
            usage.add(d, out.action, out.send_at)
        return out
    recent = RecentContacts.for_rules(len(rows), space.n_channels, bundle.rules)
    history = history_from_log(h, rows, space, recent, now=now, tz_offset=tz, zones=zones)
    # what the caller knows of purchases and visits completes what the log holds
    np.maximum(history.last_purchase, np.asarray(col("last_purchase", rows), np.float64), out=history.last_purchase)
    np.maximum(history.n_purchases, np.asarray(col("n_purchases", rows), np.float32), out=history.n_purchases)
    history.last_visit[:] = np.asarray(col("last_visit", rows), np.float64)
    consent = col.flags("consent", rows, space.n_channels)
    profile = Profile(
        segment=np.asarray(col("segment", rows), np.int64),
        tz_offset=tz,
        consent=np.ones((len(rows), space.n_channels), bool) if consent is None else consent,
        stage=np.asarray(col("stage", rows), np.int8),
        cart_active=np.asarray(col("cart", rows), bool),
        tenure_days=np.asarray(col("tenure", rows), np.float64),
    )
    return decide_profiles(
        bundle.policy,
        bundle.spec,
        bundle.rules,
        bundle.lifecycle,
        profile,
        history,
        recent,
        now=now,
        rng=rng,
        allowed=allowed,
    )


def _top(probs: np.ndarray, rows: np.ndarray, k: np.ndarray, out: list[list[tuple[int, float]]]) -> None:
    """The ``k[i]`` likeliest actions of each row (with a positive probability), best first, into ``out``."""
    kmax = int(k.max()) if len(k) else 0
    if kmax <= 0:
        return
    kk = min(kmax, probs.shape[1])
    top = np.argpartition(-probs, kk - 1, axis=1)[:, :kk]
    at = np.arange(len(rows))[:, None]  # row index for gathering along axis 1
    ptop = probs[at, top]
    order = np.argsort(-ptop, axis=1, kind="stable")
    top_l, ptop_l = top[at, order].tolist(), ptop[at, order].tolist()  # Python numbers from here
    for r, kr, ts, ps in zip(rows.tolist(), k.tolist(), top_l, ptop_l, strict=True):
        out[r] = [(a, p) for a, p in zip(ts[:kr], ps[:kr], strict=True) if p > 0]


def _records(
    served: dict[str, Served],
    ids: list[str],
    now: np.ndarray,
    contexts: dict,
    decision_id: list[str],
    action: np.ndarray,
    propensity: np.ndarray,
    send_at: np.ndarray,
    policy: np.ndarray,
    version: np.ndarray,
    arm: np.ndarray,
    channel_costs: dict[str, float],
    experiment: str,
) -> DecisionRecords:
    """The whole batch as log records (all aliases share the log's layout: :mod:`serving.model_store` serves
    one world). A deployment's channels cost what it declares; a scenario's what ``channel_costs`` says."""
    n = len(ids)
    first = next(iter(contexts.values()))
    X = np.empty((n, first[1].shape[1]), np.float32)
    mask = np.empty((n, first[2].shape[1]), bool)
    cost = np.zeros(n)
    for name, (rows, Xg, mg) in contexts.items():  # one layout: serving.model_store.World serves no other
        X[rows], mask[rows] = Xg, mg
        bundle = served[name].bundle  # no contact's channel index is -1: the cost array's first entry, 0
        cost[rows] = _channel_cost(bundle, channel_costs)[bundle.policy.space.channel_of[action[rows]] + 1]
    return DecisionRecords(
        decision_id=np.asarray(decision_id, dtype=object),
        time=now,
        customer_id=np.asarray(ids, dtype=object),
        context=X,
        eligible=mask,
        action=action,
        send_at=send_at,
        propensity=propensity,
        policy=policy,
        policy_version=version,
        experiment=np.full(n, experiment, dtype=object),
        arm=arm,
        cost=cost,
    )


def _channel_cost(bundle: Bundle, channel_costs: dict[str, float]) -> np.ndarray:
    """(1 + C,) cost of a send on each channel, no contact first."""
    if bundle.deployment is not None:
        return np.array([0.0] + [c.cost for c in bundle.deployment.channels])
    return np.array([0.0] + [channel_costs.get(ch, 0.0) for ch in bundle.policy.space.channels])
