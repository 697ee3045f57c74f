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
from the caller: the decision log's rows for these customers, or empty for customers never seen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nba.actions import NO_CONTACT
from nba.deployment import Deployment, Usage
from nba.eligibility import RecentContacts, send_time
from nba.features import History
from nba.policies import Policy, act


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


def decide(deployment: Deployment, policy: Policy, attributes: Sequence[Mapping[str, Any]], *,
           now: np.ndarray | float, tz_offset: np.ndarray | float, rng: np.random.Generator,
           history: History | None = None, recent: RecentContacts | None = None,
           allowed: np.ndarray | None = None, usage: Usage | None = None) -> Decided:
    """Decide for customers described by ``attributes`` (as :meth:`Deployment.check_attributes` returns
    them) at ``now`` (hours since the epoch) in their time zones ``tz_offset`` (hours east of UTC).

    ``history`` and ``recent`` default to customers without any contact yet; ``allowed`` (N, C)
    restricts the channels of each request. ValueError naming ``policy`` when the policy was not
    built for this deployment's actions and features.
    """
    space = deployment.action_space()
    layout = deployment.features()
    n, c = len(attributes), len(deployment.channels)
    if policy.space != space:
        raise ValueError(f"policy: decides over {policy.space.n_actions} actions, the deployment "
                         f"{deployment.name!r} has {space.n_actions} (channels x offers x slots differ)")
    dim = getattr(policy, "dim", None)
    if dim is not None and dim != layout.dim:
        raise ValueError(f"policy: expects {dim} features, the deployment {deployment.name!r} gives {layout.dim}")
    now_v = np.broadcast_to(np.asarray(now, np.float64), (n,)).copy()
    tz = np.broadcast_to(np.asarray(tz_offset, np.float64), (n,)).copy()
    if history is None:
        history = History.empty(n, c)
    if recent is None:
        recent = RecentContacts.for_rules(n, c, deployment.contact_rules())
    columns = deployment.columns(attributes)
    X = np.ascontiguousarray(layout.build(columns, history, now_v, tz))
    mask, reasons = deployment.eligibility(attributes, recent, now=now_v, tz_offset=tz, allowed=allowed, reasons=True,
                                           columns=columns, usage=usage)
    decisions = act(policy, X, mask, rng)
    slots = send_time(space, now_v, tz)
    slot = space.slot_of[decisions.actions]
    chosen = slots[np.arange(n), np.maximum(slot, 0)]
    send_at = np.where(decisions.actions == NO_CONTACT, now_v, chosen)
    return Decided(X, mask, reasons, decisions.actions, decisions.propensities, decisions.probabilities, send_at)
