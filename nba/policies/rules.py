"""Rule-based campaign schedules, computed from observations alone.

:func:`business_as_usual` is what a typical brand runs before it has a next-best-action engine
(the behaviour the simulator is calibrated under): a welcome series by email, a weekly
promotional email (a win-back offer once the customer is at risk), a weekly push recommendation,
a monthly SMS offer, and a reminder when a cart is abandoned — always sent "now", with no
send-time optimisation, one message a day at most.
"""

from __future__ import annotations

import numpy as np

from nba.actions import ActionSpace
from nba.features import FeatureSpec


def hours_since_contact(obs: np.ndarray, spec: FeatureSpec, channel: str) -> np.ndarray:
    """Hours since the last contact on ``channel`` (inf if never), from the recency feature."""
    r = obs[:, spec.index(f"contact_recency={channel}")].astype(np.float64)
    with np.errstate(divide="ignore"):
        return -spec.recency_scale_h * np.log(r)


class BusinessAsUsual:
    """The business-as-usual schedule as a callable ``(obs, mask) -> actions``."""

    name = "business_as_usual"

    def __init__(self, spec: FeatureSpec, space: ActionSpace) -> None:
        self.spec, self.space = spec, space

    def __call__(self, obs: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        actions = business_as_usual(obs, self.spec, self.space)
        if mask is not None:
            actions = np.where(mask[np.arange(len(actions)), actions], actions, 0)
        return actions


def business_as_usual(obs: np.ndarray, spec: FeatureSpec, space: ActionSpace) -> np.ndarray:
    """(N,) actions of the business-as-usual schedule for observations ``obs`` (N, spec.dim)."""
    n = obs.shape[0]
    actions = np.zeros(n, np.int64)
    todo = np.ones(n, bool)

    def has(name: str) -> np.ndarray:
        return obs[:, spec.index(name)] > 0.5

    def consent(channel: str) -> np.ndarray:
        if channel not in spec.channels:
            return np.zeros(n, bool)
        return has(f"consent={channel}")

    def since(channel: str) -> np.ndarray:
        if channel not in spec.channels:
            return np.zeros(n)
        return hours_since_contact(obs, spec, channel)

    def rule(cond: np.ndarray, channel: str, content: str) -> None:
        nonlocal todo
        if channel not in space.channels or content not in space.contents:
            return
        hit = todo & cond
        actions[hit] = space.index(channel, content, None)
        todo &= ~hit

    at_risk = has("stage=at_risk") | has("stage=lapsed")
    cart = has("cart_active")
    rule(cart & consent("email") & (since("email") >= 20), "email", "cart_reminder")
    rule(cart & consent("push") & (since("push") >= 20), "push", "cart_reminder")
    rule(has("welcome_window") & consent("email") & (since("email") >= 68), "email", "welcome")
    rule(at_risk & consent("email") & (since("email") >= 164), "email", "winback")
    rule(consent("email") & (since("email") >= 164), "email", "promo")
    rule(consent("push") & (since("push") >= 164), "push", "product_reco")
    rule(consent("sms") & (since("sms") >= 716), "sms", "promo")
    return actions
