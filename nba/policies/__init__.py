"""Policies: one interface (:mod:`nba.policies.base`), baselines, bandits, send-time and offline RL.

:data:`POLICIES` maps every policy's name to its class; :func:`create` builds one by name, on a
structured action space (no contact, channels x contents x send slots) or a plain one of K actions
(:meth:`nba.actions.ActionSpace.plain`). A plain K-armed contextual bandit::

    import numpy as np
    from nba.policies import act, create

    policy = create("linucb", 10, dim=20)  # 10 actions "0".."9", 20 context features
    d = act(policy, X, mask, np.random.default_rng(0))  # X (N, 20) float, mask (N, 10) bool
    policy.update(X, d.actions, rewards, d.propensities)  # d.propensities: exact P(action | x)

:data:`PLAIN` names the policies that run on a plain space (``no_contact`` only where it has a
no-contact action); the others decide channels, contents and send slots, or read a scenario's named
features, and raise ``ValueError`` naming ``space`` on a plain space.

:data:`CATALOGUE` names the policies that score actions by their features (:mod:`nba.catalogue`), so that
an offer added to the catalogue is decided and explored without retraining::

    from nba.catalogue import Catalogue

    catalogue = Catalogue.of_deployment(deployment)  # or Catalogue.plain(names, features) for K actions
    policy = create("lints", catalogue.space, dim=20, catalogue=catalogue)
    ...
    policy = policy.with_catalogue(Catalogue.of_deployment(new_deployment))  # keeps what it learnt

The others refuse ``catalogue=`` (``ValueError`` naming it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from nba.actions import ActionSpace
from nba.catalogue import Catalogue
from nba.log.records import FunnelEvents
from nba.policies.base import Decisions, Explore, Policy, act
from nba.policies.baselines import BatchAndBlast, BusinessAsUsual, NoContact, RuleBasedJourney, UniformRandom
from nba.policies.fqi import FittedQ, TwoStageValue
from nba.policies.funnel import LGBMFunnel
from nba.policies.lgbm import LGBMEpsilonGreedy, LGBMSquareCB
from nba.policies.linear import LinTS, LinUCB
from nba.policies.safe import SPIBB
from nba.policies.sto import SendTime

POLICIES: dict[str, Any] = {  # name -> policy class (each with create-time parameters and from_state)
    cls.name: cls
    for cls in (
        NoContact,
        UniformRandom,
        BatchAndBlast,
        BusinessAsUsual,
        RuleBasedJourney,
        LinUCB,
        LinTS,
        LGBMEpsilonGreedy,
        LGBMSquareCB,
        LGBMFunnel,
        SendTime,
        FittedQ,
        TwoStageValue,
        SPIBB,
    )
}
SEGMENTED = (BusinessAsUsual.name, RuleBasedJourney.name, SendTime.name, SPIBB.name)  # read the scenario's segments
LEARNERS = (
    LinUCB.name,
    LinTS.name,
    LGBMEpsilonGreedy.name,
    LGBMSquareCB.name,
    LGBMFunnel.name,
    FittedQ.name,
    SendTime.name,
    TwoStageValue.name,
    SPIBB.name,
)
PLAIN = (
    NoContact.name,
    UniformRandom.name,
    LinUCB.name,
    LinTS.name,
    LGBMEpsilonGreedy.name,
    LGBMSquareCB.name,
    LGBMFunnel.name,
    FittedQ.name,
    TwoStageValue.name,
)  # run on a plain action space
CATALOGUE = (LinUCB.name, LinTS.name)  # take catalogue= (nba.catalogue) and move with with_catalogue


def as_space(space: ActionSpace | int | Iterable[str]) -> ActionSpace:
    """``space`` itself, or the plain space of ``space`` actions (a number, or their names)."""
    if isinstance(space, ActionSpace):
        return space
    try:
        return ActionSpace.plain(space)
    except ValueError as e:
        raise ValueError(f"space: expected an ActionSpace, a number of actions or the actions' names ({e})") from None


def create(
    name: str,
    space: ActionSpace | Catalogue | int | Iterable[str],
    segments: tuple[str, ...] = (),
    dim: int | None = None,
    **params: Any,
) -> Policy:
    """A new policy by name; rule-based ones need the segment names, learners the context size.

    ``space``: an :class:`~nba.actions.ActionSpace`, or a plain space's number of actions ``K`` (or
    their names): ``create("lints", 10, dim=20)`` is ``create("lints", ActionSpace.plain(10), dim=20)``.
    ``catalogue=`` (:class:`nba.catalogue.Catalogue` of ``space``), for the policies of :data:`CATALOGUE`:
    actions scored by their features; ``None`` is the same as leaving it out, for every policy. A catalogue
    given as ``space`` is its space, and, for those policies, ``catalogue=`` too:
    ``create("linucb", catalogue, dim=20)``.
    """
    if name not in POLICIES:
        raise ValueError(f"policy: unknown policy {name!r}; valid: {sorted(POLICIES)}")
    if isinstance(space, Catalogue):
        if name in CATALOGUE:
            params.setdefault("catalogue", space)
        space = space.space
    if params.get("catalogue", 0) is None:
        del params["catalogue"]
    if "catalogue" in params and name not in CATALOGUE:
        raise ValueError(
            f"catalogue: policy {name!r} does not score actions by their features; "
            f"the policies that take a catalogue: {list(CATALOGUE)}"
        )
    space = as_space(space)
    if name in SEGMENTED:
        params.setdefault("segments", tuple(segments))
    if name in LEARNERS:
        if dim is None:
            raise ValueError(f"dim: policy {name!r} needs the number of context features")
        params.setdefault("dim", dim)
    return POLICIES[name](space, **params)


__all__ = [
    "CATALOGUE",
    "PLAIN",
    "POLICIES",
    "Decisions",
    "Explore",
    "FunnelEvents",
    "Policy",
    "act",
    "as_space",
    "create",
]
