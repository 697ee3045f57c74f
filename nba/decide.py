"""One decision for a deployment's customers: (attributes, history, now, deployment, policy) -> what a
policy saw, what it could choose and why not the rest, when each option would send, what it chose and
with which probability.

    >>> d = Deployment.load("examples/telecom/deployment.toml")             # doctest: +SKIP
    >>> policy = create("linucb", d.action_space(), dim=d.features().dim)   # doctest: +SKIP
    >>> people = [d.check_attributes({"plan_type": "prepaid", "tenure_days": 40})]   # doctest: +SKIP
    >>> out = decide(d, policy, people, now=490_000.0, tz_offset=2.0, rng=np.random.default_rng(0))  # doctest: +SKIP
    >>> out.action, out.propensity, out.send_at                             # doctest: +SKIP

The steps are the library's: :class:`nba.features.AttributeFeatures` for the context,
:meth:`nba.deployment.Deployment.eligibility` for the mask and its reasons (contact policy and the
offers' own rules), :func:`nba.eligibility.send_time` for the slots, :func:`nba.policies.act` for the
choice and its exact propensity. The history (contacts and responses) and the recent contacts come
from the caller: the decision log's rows for these customers (:func:`history_from_log` rebuilds both
from :meth:`nba.log.store.DecisionLog.contact_history`), or empty for customers never seen.

The simulator's own world (a scenario bundle: segments, lifecycle stage, cart, the scenario's features)
decides through :func:`decide_profiles`, with the same contact policy, send times and choice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nba.actions import NO_CONTACT, ActionSpace
from nba.deployment import Deployment, Usage
from nba.eligibility import ContactRules, RecentContacts, eligibility, fixed_offset, send_time, utc_offsets
from nba.features import (
    NEVER,
    FeatureSpec,
    History,
    LifecycleRules,
    Profile,
    build_features,
    hour_of_day,
    lifecycle_stage,
)
from nba.log.records import ContactHistory
from nba.policies import Policy, act
from nba.policies.base import Decisions


@dataclass(frozen=True)
class Decided:
    """The decisions of N customers, with everything a log or an explanation needs."""

    context: np.ndarray  # (N, d) float32: what the policy saw
    eligible: np.ndarray  # (N, A) bool
    reasons: np.ndarray  # (N, A) uint8 nba.eligibility.Reason bits, 0 exactly where eligible
    action: np.ndarray  # (N,) int64
    propensity: np.ndarray  # (N,) float64: the probability with which ``action`` was chosen
    probabilities: np.ndarray  # (N, A) float64
    send_at: np.ndarray  # (N,) hours since the epoch (the decision time for no contact)

    @property
    def decisions(self) -> Decisions:
        """The choice alone, as :func:`nba.policies.act` gives it."""
        return Decisions(self.action, self.propensity, self.probabilities)


def decide(
    deployment: Deployment,
    policy: Policy,
    attributes: Sequence[Mapping[str, Any]],
    *,
    now: np.ndarray | float,
    tz_offset: np.ndarray | float,
    rng: np.random.Generator,
    history: History | None = None,
    recent: RecentContacts | None = None,
    allowed: np.ndarray | None = None,
    offers: np.ndarray | None = None,
    usage: Usage | None = None,
) -> Decided:
    """Decide for customers described by ``attributes`` (as :meth:`Deployment.check_attributes` returns
    them) at ``now`` (hours since the epoch) in their time zones ``tz_offset`` (hours east of UTC).

    ``history`` and ``recent`` default to customers without any contact yet; ``allowed`` (N, C) and
    ``offers`` (N, n_offers) restrict the channels and the offers of each request (the others are
    ineligible with :attr:`nba.eligibility.Reason.RESTRICTED`). ValueError naming ``policy`` when the
    policy was not built for this deployment's actions and features.
    """
    check_world(policy, deployment, "policy")
    layout = deployment.features()
    n, c = len(attributes), len(deployment.channels)
    now_v = np.broadcast_to(np.asarray(now, np.float64), (n,)).copy()
    tz = np.broadcast_to(np.asarray(tz_offset, np.float64), (n,)).copy()
    if history is None:
        history = History.empty(n, c)
    if recent is None:
        recent = deployment.recent(n)  # sized for every cap, per offer included
    columns = deployment.columns(attributes)
    X = np.ascontiguousarray(layout.build(columns, history, now_v, tz))
    mask, reasons = deployment.eligibility(
        attributes,
        recent,
        now=now_v,
        tz_offset=tz,
        allowed=allowed,
        reasons=True,
        columns=columns,
        usage=usage,
        offers=offers,
    )
    return _choose(policy, X, mask, reasons, now_v, tz, rng)


def check_world(policy: Policy, deployment: Deployment, where: str) -> None:
    """ValueError ``"<where>: space: ..."`` or ``"<where>: dim: ..."`` unless ``policy`` was built for
    ``deployment``'s action space and features (a policy without ``dim`` reads no features)."""
    space = deployment.action_space()
    if policy.space != space:
        raise ValueError(
            f"{where}: space: the policy decides over {policy.space.n_actions} actions (channels "
            f"{list(policy.space.channels)}), not the {space.n_actions} of the deployment "
            f"{deployment.name!r} (channels x offers x send slots differ)"
        )
    dim, want = getattr(policy, "dim", None), deployment.features().dim
    if dim is not None and dim != want:
        raise ValueError(
            f"{where}: dim: the policy reads {dim} features, the deployment {deployment.name!r} gives {want}"
        )


def decide_profiles(
    policy: Policy,
    spec: FeatureSpec,
    rules: ContactRules,
    lifecycle: LifecycleRules,
    profile: Profile,
    history: History,
    recent: RecentContacts,
    *,
    now: np.ndarray,
    rng: np.random.Generator,
    allowed: np.ndarray | None = None,
) -> Decided:
    """Decide for the simulator's customers (a scenario bundle's world).

    ``profile`` is what the caller knows; a ``stage`` of -1 is derived from the tenure and the
    purchases in ``history`` (:func:`nba.features.lifecycle_stage`). Features come from
    :func:`nba.features.build_features`, the contact policy from :func:`nba.eligibility.eligibility`
    with ``profile.consent`` and the channels ``allowed`` (N, C) to each request.
    """
    now = np.asarray(now, np.float64)
    stage = profile.stage
    derive = stage < 0
    if derive.any():
        bought = history.n_purchases > 0
        since_d = np.where(bought & (history.last_purchase > NEVER / 2), (now - history.last_purchase) / 24.0, np.inf)
        stage = stage.copy()
        stage[derive] = lifecycle_stage(profile.tenure_days, since_d, lifecycle)[derive]
        profile = Profile(
            profile.segment, profile.tz_offset, profile.consent, stage, profile.cart_active, profile.tenure_days
        )
    X = np.ascontiguousarray(build_features(spec, profile, history, now, lifecycle))
    mask, reasons = eligibility(
        policy.space,
        rules,
        recent,
        now=now,
        tz_offset=profile.tz_offset,
        consent=profile.consent,
        allowed=allowed,
        reasons=True,
    )
    return _choose(policy, X, mask, reasons, now, profile.tz_offset, rng)


def _choose(
    policy: Policy,
    X: np.ndarray,
    mask: np.ndarray,
    reasons: np.ndarray,
    now: np.ndarray,
    tz: np.ndarray,
    rng: np.random.Generator,
) -> Decided:
    """The policy's choice among the eligible actions, its propensity, and when it sends."""
    space = policy.space
    decisions = act(policy, X, mask, rng)
    slots = send_time(space, now, tz)
    slot = space.slot_of[decisions.actions]
    chosen = slots[np.arange(len(now)), np.maximum(slot, 0)]
    send_at = np.where(decisions.actions == NO_CONTACT, now, chosen)
    return Decided(X, mask, reasons, decisions.actions, decisions.propensities, decisions.probabilities, send_at)


def history_from_log(
    h: ContactHistory,
    rows: np.ndarray,
    space: ActionSpace,
    recent: RecentContacts,
    *,
    now: np.ndarray,
    tz_offset: np.ndarray,
    zones: Sequence[str] | None = None,
) -> History:
    """The :class:`~nba.features.History` of the customers ``rows`` (their indices into
    ``h.customer_ids``) rebuilt from the decision log's contact history ``h``; ``recent`` (sized for
    those customers, e.g. :meth:`nba.eligibility.RecentContacts.for_rules`, or
    :meth:`nba.deployment.Deployment.recent` to keep the offers its caps name) is filled with their
    contacts.

    ``recent`` gets every contact, scheduled ones too; the history the ones already sent at ``now``.
    Engagements are the first open or click of each contact; conversions are purchases
    (``n_purchases``, ``last_purchase``). A contact or event whose action lies outside ``space`` is
    left out.

    The send hours are local: each customer's ``tz_offset`` (hours east of UTC, as at ``now``), or with
    ``zones`` (each customer's time zone, an IANA name or a fixed offset, that ``tz_offset`` was read
    from), a named zone's offset at each contact's own send time (:func:`nba.eligibility.utc_offsets`):
    a contact sent at 10:00 in Paris before the switch to summer time keeps its hour 10 after it.
    """
    n, c = len(rows), space.n_channels
    tz_offset = np.asarray(tz_offset, np.float64)
    if zones is not None and len(zones) != n:
        raise ValueError(f"zones: expected one time zone per customer ({n}), got {len(zones)}")
    local = np.full(int(rows.max()) + 1 if n else 0, -1, np.int64)
    local[rows] = np.arange(n)
    hist = History.empty(n, c)
    cust = h.contact_customer
    keep = (cust < len(local)) & (h.contact_action < space.n_actions)
    keep[keep] &= local[cust[keep]] >= 0
    r, send_at, a = local[cust[keep]], h.contact_send_at[keep], h.contact_action[keep]
    ch = space.channel_of[a].astype(np.intp)
    offer = None if recent.offer_times is None else space.content_of[a].astype(np.intp)  # per-offer caps
    offset = _offsets(tz_offset, zones, r, send_at)  # each contact's UTC offset at its send time
    for sel in _rounds(r):
        recent.record(r[sel], ch[sel], send_at[sel], None if offer is None else offer[sel])
        past = sel[send_at[sel] <= now[r[sel]]]
        if past.size:
            hist.record_contacts(r[past], ch[past], send_at[past], hour_of_day(send_at[past] + offset[past]))
    cust = h.event_customer
    keep = (cust < len(local)) & (h.event_action < space.n_actions)
    keep[keep] &= local[cust[keep]] >= 0
    r, ev, t = local[cust[keep]], h.event[keep], h.event_time[keep]
    ea, es = h.event_action[keep], h.event_send_at[keep]
    bought = ev == "converted"
    hist.n_purchases[:] = np.bincount(r[bought], minlength=n).astype(np.float32)
    np.maximum.at(hist.last_purchase, r[bought], t[bought])
    seen = (ev != "converted") & (ea > 0)
    if seen.any():
        idx = np.flatnonzero(seen)
        key = np.stack([r[idx].astype(np.float64), es[idx], ea[idx].astype(np.float64)], axis=1)
        _, first = np.unique(key, axis=0, return_index=True)  # events are sorted by time: first = earliest
        idx = np.sort(idx[first])
        rr, cc = r[idx], space.channel_of[ea[idx]].astype(np.intp)
        hour = hour_of_day(es[idx] + _offsets(tz_offset, zones, rr, es[idx]))  # the engaged contact's send hour
        for sel in _rounds(rr):
            hist.record_engagements(rr[sel], cc[sel], t[idx][sel], hour[sel])
    return hist


def _offsets(tz_offset: np.ndarray, zones: Sequence[str] | None, r: np.ndarray, when: np.ndarray) -> np.ndarray:
    """The UTC offset of each element (customer ``r``, time ``when``): ``tz_offset[r]``, or with the customers'
    ``zones`` a named zone's offset at ``when`` (fixed offsets as they are). Only the zones of the customers
    ``r`` are looked at: a batch's contacts are few beside its customers."""
    out = tz_offset[r] if tz_offset.ndim else np.full(r.shape, float(tz_offset))
    if zones is None or r.size == 0:
        return out
    zone_of = list(map(zones.__getitem__, r.tolist()))
    names = list(dict.fromkeys(zone_of))  # in order of first appearance
    code = {z: k for k, z in enumerate(names)}
    codes = np.array(list(map(code.__getitem__, zone_of)), np.int64)
    for k, name in enumerate(names):
        if fixed_offset(name) is not None:
            continue
        sel = np.flatnonzero(codes == k)
        if sel.size:
            out[sel] = utc_offsets(name, when[sel])
    return out


def _rounds(rows: np.ndarray) -> list[np.ndarray]:
    """Split positions of ``rows`` into rounds with each row at most once, keeping each row's order."""
    if rows.size == 0:
        return []
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    start = np.r_[0, np.flatnonzero(sorted_rows[1:] != sorted_rows[:-1]) + 1]
    rank = np.empty(rows.size, np.int64)
    rank[order] = np.arange(rows.size) - np.repeat(start, np.diff(np.r_[start, rows.size]))
    return [np.flatnonzero(rank == k) for k in range(int(rank.max()) + 1)]
