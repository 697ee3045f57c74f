"""Send-time optimisation: a per customer x channel hour model with a population prior.

:class:`SendTimeModel` reads the customer's hour preference on each channel from the
``hour_pref_cos/sin`` features (the first harmonic of their response rate over local send hours,
see :meth:`nba.features.History.hour_preference`) and shrinks it towards the mean preference of
their segment on that channel, learnt from the contexts it sees (empirical Bayes, with
``prior_strength`` messages' worth of weight on the prior). The score of sending at local hour
``h`` is the posterior harmonic evaluated at ``h`` — the log of a von Mises hour curve up to scale.

By default (``prior_strength=None``) that weight is estimated per segment and channel from the
same contexts, by the method of moments: a customer's sum ``R`` over ``n`` messages (a covariance
about the customer's own means: ``m = n - 1`` degrees of freedom) has, across the segment's mean
direction ``u``, ``E (R . u)^2 = m sigma^2 + m^2 tau^2``, where ``sigma^2``, one message's noise
there, is ``rate (1 - rate)`` times the spread of the send hours along ``u``, and ``tau^2`` is how
far customers' own preferences turn from their segment's; the weight is ``sigma^2 / tau^2``
messages. (Across, not along: customers' response rates differ several-fold, which scales ``R``
without moving its peak.) A response rate
of a few percent per message carries little of an hour curve: on the default scenario the weight
comes out in the hundreds, so a customer's own history moves the choice only after many messages.

The preference vector is a covariance, ``sum (seen - rate) e^{i h}`` over the customer's messages:
it points to the peak of the hour curve only when the send hours are spread evenly over the day.
They are not: quiet hours keep SMS and push out of the night, and the send slots are a few fixed
hours, so the raw vector leans towards the hours most messages went out at (by 1 to 3 hours on the
default scenario). The model therefore also keeps the moments of the send hours it is shown per
segment and channel (:meth:`SendTimeModel.update` with the actions) and turns the posterior
covariance into the coefficients of a least-squares first harmonic, ``Sigma^{-1} v``, where
``Sigma`` is the covariance of ``(cos h, sin h)`` over those sends, blended with the even spread's
``I / 2`` by ``design_strength`` sends' worth of weight (so no sends seen: no correction).

:class:`SendTime` is a second stage after any channel/content policy: it keeps the first stage's
probability of each (channel, content) — summed over send slots — and splits it over the eligible
slots: ``1 - epsilon`` on the best-scoring slot, ``epsilon`` uniformly. The probability of the full
action is the product of the two stages, exactly.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from nba.actions import ActionSpace
from nba.features import TWO_PI_24, FeatureSpec
from nba.policies.base import check_update, checked, require_structured

DESIGN_STRENGTH = 100.0  # sends' worth of weight on the even spread of send hours (SendTimeModel)


class SendTimeModel:
    """Each customer's preferred send hours per channel, shrunk towards their segment's (module docstring):
    learns from contexts and sends (:meth:`update`), scores the send slots (:meth:`slot_scores`)."""

    def __init__(
        self,
        spec: FeatureSpec,
        space: ActionSpace,
        prior_strength: float | None = None,
        design_strength: float = DESIGN_STRENGTH,
    ) -> None:
        if prior_strength is not None and not prior_strength >= 0:
            raise ValueError(f"prior_strength: must be >= 0 or None (estimated), got {prior_strength!r}")
        if not design_strength > 0:
            raise ValueError(f"design_strength: must be > 0, got {design_strength!r}")
        self.spec, self.space, self.prior_strength = spec, space, prior_strength
        self.design_strength = design_strength
        s, c = len(spec.segments), len(space.channels)
        self.prior_sum = np.zeros((s, c, 2))  # sum over customers of their raw preference vectors
        self.prior_n = np.zeros((s, c))  # messages behind those sums
        # moments of the local send hour h of the sends shown to update, per segment and channel:
        # count, sum cos h, sum sin h, sum cos^2 h, sum sin^2 h, sum cos h sin h
        self.design = np.zeros((s, c, 6))
        # moments of the preference sums R over the contexts, with m = n - 1, for the estimated prior
        # strength: sum m, sum R_cos^2, sum R_sin^2, sum R_cos R_sin, sum m^2, sum n rate (1 - rate)
        # (= m times an unbiased estimate of the response's variance)
        self.spread = np.zeros((s, c, 6))
        names = spec.names
        self._seg = [names.index(f"segment={x}") for x in spec.segments]
        self._cols = {
            k: [names.index(f"{k}={ch}") for ch in space.channels]
            for k in ("hour_pref_cos", "hour_pref_sin", "log_contacts", "log_engaged")
        }
        self._hour = (names.index("local_hour_sin"), names.index("local_hour_cos"))

    def _raw(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-customer un-shrunk preference sums (N, C, 2), message counts (N, C), segments (N,)."""
        n = np.exp(X[:, self._cols["log_contacts"]].astype(np.float64)) - 1.0
        vec = np.stack([X[:, self._cols["hour_pref_cos"]], X[:, self._cols["hour_pref_sin"]]], axis=-1)
        return vec * (n + 1.0)[..., None], n, np.argmax(X[:, self._seg], axis=1)

    def slot_angles(self, X: np.ndarray) -> np.ndarray:
        """(N, S) local send hour of each slot as an angle: the decision's own hour for "now"."""
        now = np.arctan2(X[:, self._hour[0]], X[:, self._hour[1]]).astype(np.float64)  # local hour angle
        angles = np.array([np.nan if h is None else TWO_PI_24 * h for h in self.space.send_slots])
        return np.where(np.isnan(angles)[None, :], now[:, None], angles[None, :])

    def update(self, X: np.ndarray, actions: np.ndarray | None = None) -> None:
        """Learn the population prior from contexts ``X``, and the send hours' spread from ``actions`` (when given)."""
        raw, n, seg = self._raw(X)
        np.add.at(self.prior_sum, seg, raw)
        np.add.at(self.prior_n, seg, n)
        engaged = np.exp(X[:, self._cols["log_engaged"]].astype(np.float64)) - 1.0
        rate = np.clip(engaged / np.maximum(n, 1.0), 0.0, 1.0)
        m = np.maximum(n - 1.0, 0.0)
        rc, rs = raw[..., 0], raw[..., 1]
        np.add.at(self.spread, seg, np.stack([m, rc * rc, rs * rs, rc * rs, m * m, n * rate * (1.0 - rate)], axis=-1))
        if actions is None:
            return
        actions = np.asarray(actions)
        rows = np.flatnonzero(actions > 0)
        a = actions[rows]
        theta = self.slot_angles(X[rows])[np.arange(rows.size), self.space.slot_of[a]]
        c, s = np.cos(theta), np.sin(theta)
        np.add.at(
            self.design,
            (seg[rows], self.space.channel_of[a]),
            np.stack([np.ones_like(c), c, s, c * c, s * s, c * s], axis=1),
        )

    def design_covariance(self) -> np.ndarray:
        """(S, C, 2, 2) covariance of ``(cos h, sin h)`` over the sends seen, blended with ``I / 2``."""
        m = self.design
        n = m[..., 0]
        mean = m[..., 1:3] / np.maximum(n, 1.0)[..., None]
        second = np.stack([np.stack([m[..., 3], m[..., 5]], -1), np.stack([m[..., 5], m[..., 4]], -1)], -2)
        cov = second - n[..., None, None] * mean[..., :, None] * mean[..., None, :]  # scatter about the mean
        return (cov + 0.5 * self.design_strength * np.eye(2)) / (n + self.design_strength)[..., None, None]

    def strength(self) -> np.ndarray:
        """(S, C) messages' worth of weight on the segment's prior: ``prior_strength``, or its estimate
        ``sigma^2 / tau^2`` (infinite where customers' preferences show no spread beyond noise)."""
        shape = self.prior_n.shape
        if self.prior_strength is not None:
            return np.full(shape, float(self.prior_strength))
        sp = self.spread
        sm, mm, var = sp[..., 0], sp[..., 4], sp[..., 5]
        u = np.stack([-self.prior_sum[..., 1], self.prior_sum[..., 0]], -1)  # across the segment's mean direction
        u = u / np.maximum(np.linalg.norm(u, axis=-1), 1e-300)[..., None]
        across = u[..., 0] ** 2 * sp[..., 1] + u[..., 1] ** 2 * sp[..., 2] + 2 * u[..., 0] * u[..., 1] * sp[..., 3]
        noise = var * np.einsum("sci,scij,scj->sc", u, self.design_covariance(), u)  # each message's noise there
        tau2 = (across - noise) / np.maximum(mm, 1.0)
        sigma2 = noise / np.maximum(sm, 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(tau2 > 0, sigma2 / tau2, np.inf)

    def posterior(self, X: np.ndarray) -> np.ndarray:
        """(N, C, 2) posterior first harmonic of each customer's response rate over the send hour, per channel."""
        raw, n, seg = self._raw(X)
        m = np.maximum(n - 1.0, 0.0)  # R is a covariance about the customer's own means: n - 1 degrees of freedom
        prior = self.prior_sum[seg] / np.maximum(self.spread[seg, :, 0], 1.0)[..., None]
        k = self.strength()[seg]
        w = np.where(np.isinf(k), 0.0, m / (m + np.where(np.isinf(k), 1.0, k) + 1e-12))  # weight on own history
        per_message = raw / np.maximum(m, 1.0)[..., None]
        cov_post = w[..., None] * per_message + (1.0 - w[..., None]) * prior
        return np.einsum("ncij,ncj->nci", np.linalg.inv(self.design_covariance())[seg], cov_post)

    def slot_scores(self, X: np.ndarray) -> np.ndarray:
        """(N, C, S) score of each channel's send slots (higher: the customer responds more then)."""
        post = self.posterior(X)
        theta = self.slot_angles(X)  # (N, S)
        return post[..., 0:1] * np.cos(theta)[:, None, :] + post[..., 1:2] * np.sin(theta)[:, None, :]

    def arrays(self) -> dict[str, np.ndarray]:
        """The learnt moments (prior sums and counts, send hours' design, preference spread), to save."""
        return {
            "sto_prior_sum": self.prior_sum,
            "sto_prior_n": self.prior_n,
            "sto_design": self.design,
            "sto_spread": self.spread,
        }

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Take back the moments :meth:`arrays` saved (a state saved before the design and spread: zeros)."""
        self.prior_sum = np.array(arrays["sto_prior_sum"], np.float64)
        self.prior_n = np.array(arrays["sto_prior_n"], np.float64)
        # a state saved before the send hours' spread was kept: no correction until sends are seen
        self.design = np.array(arrays.get("sto_design", np.zeros((*self.prior_n.shape, 6))), np.float64)
        self.spread = np.array(arrays.get("sto_spread", np.zeros((*self.prior_n.shape, 6))), np.float64)


class SendTime:
    """Second-stage send-time optimisation over any first-stage policy."""

    name: ClassVar[str] = "send_time"

    def __init__(
        self,
        space: ActionSpace,
        segments: list[str] | tuple[str, ...],
        first: Any = "lints",
        first_params: dict[str, Any] | None = None,
        epsilon: float = 0.05,
        prior_strength: float | None = None,
        dim: int | None = None,
    ) -> None:
        from nba.policies import LEARNERS, POLICIES, create

        require_structured(space, self.name)
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon: must be in [0, 1], got {epsilon!r}")
        self.space, self.epsilon = space, epsilon
        self.segments = tuple(segments)
        if isinstance(first, str):
            if first == self.name or first not in POLICIES:
                raise ValueError(
                    f"first: unknown first-stage policy {first!r}; valid: {sorted(set(POLICIES) - {self.name})}"
                )
            first_params = dict(first_params or {})
            if first in LEARNERS and dim is not None:
                first_params.setdefault("dim", dim)
            first = create(first, space, self.segments, **first_params)
        self.first = first
        spec = FeatureSpec(self.segments, space.channels)
        self.dim = spec.dim
        if dim is not None and dim != spec.dim:
            raise ValueError(f"dim: the send-time model reads {spec.dim} named features, got dim={dim}")
        self.model = SendTimeModel(spec, space, prior_strength)

    @checked
    def probabilities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(N, A) the first stage's probability of each (channel, content), split over its eligible send slots:
        ``1 - epsilon`` on the best-scoring slot, ``epsilon`` uniformly; no contact as the first stage has it."""
        sp = self.space
        n, c, k, s = X.shape[0], sp.n_channels, sp.n_contents, sp.n_slots
        p1 = self.first.probabilities(X, mask)
        group = p1[:, 1:].reshape(n, c, k, s).sum(axis=3)  # P(channel, content)
        slot_ok = mask[:, 1:].reshape(n, c, k, s)
        scores = self.model.slot_scores(X)[:, :, None, :]  # (N, C, 1, S)
        masked = np.where(slot_ok, scores, -np.inf)
        best = np.argmax(masked, axis=3)
        n_ok = slot_ok.sum(axis=3, keepdims=True)
        q = self.epsilon * slot_ok / np.maximum(n_ok, 1)
        np.put_along_axis(q, best[..., None], np.take_along_axis(q, best[..., None], 3) + (1 - self.epsilon), 3)
        q = np.where(slot_ok, q, 0.0)
        out = np.empty_like(p1)
        out[:, 0] = p1[:, 0]
        out[:, 1:] = (group[..., None] * q).reshape(n, -1)
        return out

    @property
    def learns_from_events(self) -> bool:
        """The first stage's: ``lgbm_funnel`` as the first stage takes the funnel's events."""
        return getattr(self.first, "learns_from_events", False)

    def update(self, X, actions, rewards, propensities=None, **extra) -> SendTime:
        """The first stage learns from the batch (``extra``: its funnel events), the send-time model from its
        contexts and sends. Returns self."""
        X, actions, _ = check_update(self.space, self.dim, X, actions, rewards, propensities)
        self.first.update(X, actions, rewards, propensities, **extra)
        self.model.update(X, actions)
        return self

    def get_state(self):
        """(parameters with the first stage's name and parameters; the send-time model's moments and the first
        stage's arrays; the first stage's models), the first stage's keys prefixed ``first.``."""
        fp, fa, fm = self.first.get_state()
        params = {
            "segments": list(self.segments),
            "first": self.first.name,
            "first_params": fp,
            "epsilon": self.epsilon,
            "prior_strength": self.model.prior_strength,
        }
        arrays = {**self.model.arrays(), **{f"first.{key}": v for key, v in fa.items()}}
        return params, arrays, {f"first.{key}": v for key, v in fm.items()}

    @classmethod
    def from_state(cls, space, params, arrays, models):
        """The two stages :meth:`get_state` described: the first rebuilt from its state, the model's moments."""
        from nba.policies import POLICIES

        params = dict(params)
        first_name, first_params = params.pop("first"), params.pop("first_params")
        first = POLICIES[first_name].from_state(
            space,
            first_params,
            {key[6:]: v for key, v in arrays.items() if key.startswith("first.")},
            {key[6:]: v for key, v in models.items() if key.startswith("first.")},
        )
        policy = cls(space, first=first, **params)
        policy.model.restore(arrays)
        return policy
