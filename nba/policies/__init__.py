"""Policies: one interface (:mod:`nba.policies.base`), baselines, bandits, send-time and offline RL.

:data:`POLICIES` maps every policy's name to its class; :func:`create` builds one by name.
"""

from __future__ import annotations

from typing import Any

from nba.actions import ActionSpace
from nba.policies.base import Decisions, Policy, act
from nba.policies.baselines import BatchAndBlast, BusinessAsUsual, NoContact, RuleBasedJourney, UniformRandom

POLICIES: dict[str, type] = {
    cls.name: cls for cls in (NoContact, UniformRandom, BatchAndBlast, BusinessAsUsual, RuleBasedJourney)
}
RULE_BASED = (BusinessAsUsual.name, RuleBasedJourney.name)


def create(name: str, space: ActionSpace, segments: tuple[str, ...] = (), **params: Any) -> Policy:
    """A new policy by name; rule-based ones also need the scenario's segment names."""
    if name not in POLICIES:
        raise ValueError(f"policy: unknown policy {name!r}; valid: {sorted(POLICIES)}")
    if name in RULE_BASED:
        params.setdefault("segments", tuple(segments))
    return POLICIES[name](space, **params)


__all__ = ["POLICIES", "Decisions", "Policy", "act", "create"]
