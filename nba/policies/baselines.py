"""Baselines: uniform random, batch-and-blast, rule-based journeys, business as usual.

Rule-based policies read observations through :class:`nba.features.FeatureSpec` names, so they
run unchanged in the simulator and in the service. They are deterministic (propensity 1) unless
the rule's action is ineligible, in which case they fall back to no contact.

They, and batch-and-blast, decide channels and contents: on a plain action space
(:meth:`nba.actions.ActionSpace.plain`) they raise ``ValueError`` naming ``space``. Uniform random
runs on any space, no contact on any space that has a no-contact action.

:class:`BusinessAsUsual` is what a typical brand runs before it has a next-best-action engine,
and the behaviour the simulator is calibrated under: a welcome series by email, a weekly
promotional email (a win-back offer once the customer is at risk), a weekly push recommendation,
a monthly SMS offer, and a reminder when a cart is abandoned — always sent "now", one a day.

:class:`RuleBasedJourney` is the articles' AmeriCar re-engagement journey: after a site visit
without purchase, a web push, then a reminder on another device (email, or push), then a social
ad two days after the visit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from nba.actions import ActionSpace
from nba.features import FeatureSpec
from nba.policies.base import check_update, checked, require_no_contact, require_structured, uniform


class _Stateless:
    """Policies whose whole state is their constructor parameters (JSON)."""

    name: ClassVar[str]
    space: ActionSpace

    if TYPE_CHECKING:  # every subclass takes the space, then its parameters by name

        def __init__(self, space: ActionSpace, **params: Any) -> None: ...

    def _params(self) -> dict[str, Any]:
        return {}

    def update(self, X, actions, rewards, propensities):
        """Nothing to learn: checks the batch (ValueError naming the field) and returns self unchanged."""
        check_update(self.space, getattr(self, "dim", None), X, actions, rewards, propensities)
        return self

    def get_state(self):
        """(constructor parameters, no arrays, no models)."""
        return self._params(), {}, {}

    @classmethod
    def from_state(cls, space, params, arrays, models):
        """The policy built on ``space`` from its constructor parameters ``params``."""
        return cls(space, **params)


class NoContact(_Stateless):
    """Never contact: the control every uplift is measured against."""

    name = "no_contact"

    def __init__(self, space: ActionSpace) -> None:
        require_no_contact(space, f"policy {self.name!r}")
        self.space = space

    @checked
    def probabilities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(N, A) probability 1 on no contact (action 0) in every row."""
        out = np.zeros(mask.shape)
        out[:, 0] = 1.0
        return out


class UniformRandom(_Stateless):
    """Every eligible action with equal probability."""

    name = "uniform_random"

    def __init__(self, space: ActionSpace) -> None:
        self.space = space

    @checked
    def probabilities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(N, A) the same probability on every eligible action of each row."""
        return uniform(mask)


def _deterministic(actions: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """One-hot distribution on ``actions``, falling back to no contact where ineligible."""
    rows = np.arange(len(actions))
    actions = np.where(mask[rows, actions], actions, 0)
    out = np.zeros(mask.shape)
    out[rows, actions] = 1.0
    return out


class BatchAndBlast(_Stateless):
    """The same message to everyone it may reach, every time."""

    name = "batch_and_blast"

    def __init__(
        self, space: ActionSpace, channel: str = "email", content: str = "promo", send_hour: int | None = None
    ) -> None:
        require_structured(space, self.name)
        self.space = space
        self.channel, self.content, self.send_hour = channel, content, send_hour
        self.action = space.index(channel, content, send_hour)

    def _params(self):
        return {"channel": self.channel, "content": self.content, "send_hour": self.send_hour}

    @checked
    def probabilities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(N, A) probability 1 on the configured message where eligible, else on no contact."""
        return _deterministic(np.full(X.shape[0], self.action), mask)


class _Rules(_Stateless):
    """Rule-based policies: read features by name, pick one action per customer."""

    def __init__(self, space: ActionSpace, segments: list[str] | tuple[str, ...], channels=None) -> None:
        require_structured(space, self.name)
        self.space = space
        self.spec = FeatureSpec(tuple(segments), tuple(channels or space.channels))
        self.dim = self.spec.dim

    def _params(self):
        return {"segments": list(self.spec.segments), "channels": list(self.spec.channels)}

    @checked
    def probabilities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(N, A) probability 1 on the rules' action (:meth:`choose`) where eligible, else on no contact."""
        return _deterministic(self.choose(X), mask)

    def choose(self, X: np.ndarray) -> np.ndarray:
        """(N,) int64 the action the rules pick for each context (0: no contact), before eligibility."""
        raise NotImplementedError

    # helpers over named features
    def _has(self, X: np.ndarray, name: str) -> np.ndarray:
        return X[:, self.spec.index(name)] > 0.5

    def _consent(self, X: np.ndarray, channel: str) -> np.ndarray:
        if channel not in self.spec.channels or channel not in self.space.channels:
            return np.zeros(X.shape[0], bool)
        return self._has(X, f"consent={channel}")

    def _hours_since(self, X: np.ndarray, recency_feature: str) -> np.ndarray:
        """Hours since an event from its recency feature exp(-h / scale) (inf if never)."""
        r = X[:, self.spec.index(recency_feature)].astype(np.float64)
        with np.errstate(divide="ignore"):
            h = -self.spec.recency_scale_h * np.log(r)
        return np.where(r < 1e-30, np.inf, h)

    def _since_contact(self, X: np.ndarray, channel: str) -> np.ndarray:
        if channel not in self.spec.channels:
            return np.full(X.shape[0], np.inf)
        return self._hours_since(X, f"contact_recency={channel}")


class BusinessAsUsual(_Rules):
    """A brand's calendar before next-best-action (see the module's docstring): the first rule that applies."""

    name = "business_as_usual"

    def choose(self, X: np.ndarray) -> np.ndarray:
        """(N,) the first applicable rule's action, in priority order: cart reminder by email then push,
        welcome email, win-back email, weekly promo email, weekly push recommendation, monthly SMS promo;
        each only with consent on its channel and once its channel's last contact is old enough."""
        n = X.shape[0]
        actions = np.zeros(n, np.int64)
        todo = np.ones(n, bool)

        def rule(cond: np.ndarray, channel: str, content: str) -> None:
            nonlocal todo
            if channel not in self.space.channels or content not in self.space.contents:
                return
            hit = todo & cond & self._consent(X, channel)
            actions[hit] = self.space.index(channel, content, None)
            todo &= ~hit

        at_risk = self._has(X, "stage=at_risk") | self._has(X, "stage=lapsed")
        cart = self._has(X, "cart_active")
        email, push, sms = (self._since_contact(X, c) for c in ("email", "push", "sms"))
        rule(cart & (email >= 20), "email", "cart_reminder")
        rule(cart & (push >= 20), "push", "cart_reminder")
        rule(self._has(X, "welcome_window") & (email >= 68), "email", "welcome")
        rule(at_risk & (email >= 164), "email", "winback")
        rule(email >= 164, "email", "promo")
        rule(push >= 164, "push", "product_reco")
        rule(sms >= 716, "sms", "promo")
        return actions


class RuleBasedJourney(_Rules):
    """AmeriCar-style re-engagement after a site visit without purchase.

    Day after the visit: web push (or push); the next day, a reminder on another device (email);
    two to three days after the visit: a social ad. A cart left open gets the cart reminder
    wording, otherwise a product recommendation. Nothing once the customer has bought since.
    """

    name = "rule_based_journey"

    def choose(self, X: np.ndarray) -> np.ndarray:
        """(N,) the journey's step for each customer's time since the visit (web push or push, then email,
        then a social ad) on a channel not used since the visit and with consent; 0 where there is no step
        or the customer bought since the visit."""
        n = X.shape[0]
        actions = np.zeros(n, np.int64)
        todo = np.ones(n, bool)
        visit = self._hours_since(X, "visit_recency")
        bought_since = self._hours_since(X, "purchase_recency") <= visit
        fresh = ~bought_since
        content = np.where(self._has(X, "cart_active"), "cart_reminder", "product_reco")

        def rule(cond: np.ndarray, channel: str) -> None:
            nonlocal todo
            if channel not in self.space.channels:
                return
            for name in ("cart_reminder", "product_reco"):
                if name not in self.space.contents:
                    continue
                hit = todo & cond & (content == name) & self._consent(X, channel)
                actions[hit] = self.space.index(channel, name, None)
                todo &= ~hit

        step1 = fresh & (visit < 30)
        step2 = fresh & (visit >= 30) & (visit < 54)
        step3 = fresh & (visit >= 54) & (visit < 78)
        rule(step1 & (self._since_contact(X, "web_push") > visit), "web_push")
        rule(step1 & (self._since_contact(X, "push") > visit), "push")
        rule(step2 & (self._since_contact(X, "email") > visit), "email")
        rule(step3 & (self._since_contact(X, "social_ad") > visit), "social_ad")
        return actions
