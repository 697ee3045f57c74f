"""Policies: one interface (:mod:`nba.policies.base`), baselines, bandits, send-time and offline RL.

:data:`POLICIES` maps every policy's name to its class; :func:`create` builds one by name.
"""

from __future__ import annotations

from typing import Any

from nba.actions import ActionSpace
from nba.log.records import FunnelEvents
from nba.policies.base import Decisions, Explore, Policy, act
from nba.policies.baselines import BatchAndBlast, BusinessAsUsual, NoContact, RuleBasedJourney, UniformRandom
from nba.policies.fqi import FittedQ, TwoStageValue
from nba.policies.funnel import LGBMFunnel
from nba.policies.lgbm import LGBMEpsilonGreedy, LGBMSquareCB
from nba.policies.linear import LinTS, LinUCB
from nba.policies.safe import SPIBB
from nba.policies.sto import SendTime

POLICIES: dict[str, type] = {
    cls.name: cls
    for cls in (NoContact, UniformRandom, BatchAndBlast, BusinessAsUsual, RuleBasedJourney,
                LinUCB, LinTS, LGBMEpsilonGreedy, LGBMSquareCB, LGBMFunnel, SendTime, FittedQ,
                TwoStageValue, SPIBB)
}
RULE_BASED = (BusinessAsUsual.name, RuleBasedJourney.name, SendTime.name, SPIBB.name)  # need the segment names
LEARNERS = (LinUCB.name, LinTS.name, LGBMEpsilonGreedy.name, LGBMSquareCB.name, LGBMFunnel.name, FittedQ.name,
            SendTime.name, TwoStageValue.name, SPIBB.name)


def create(name: str, space: ActionSpace, segments: tuple[str, ...] = (), dim: int | None = None,
           **params: Any) -> Policy:
    """A new policy by name; rule-based ones need the segment names, learners the context size."""
    if name not in POLICIES:
        raise ValueError(f"policy: unknown policy {name!r}; valid: {sorted(POLICIES)}")
    if name in RULE_BASED:
        params.setdefault("segments", tuple(segments))
    if name in LEARNERS:
        if dim is None:
            raise ValueError(f"dim: policy {name!r} needs the number of context features")
        params.setdefault("dim", dim)
    return POLICIES[name](space, **params)


__all__ = ["POLICIES", "Decisions", "Explore", "FunnelEvents", "Policy", "act", "create"]
