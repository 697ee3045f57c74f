"""Send-time optimisation: a per customer x channel hour model with a population prior.

:class:`SendTimeModel` reads the customer's hour preference on each channel from the
``hour_pref_cos/sin`` features (the first harmonic of their response rate over local send hours,
see :meth:`nba.features.History.hour_preference`) and shrinks it towards the mean preference of
their segment on that channel, learnt from the contexts it sees (empirical Bayes, with
``prior_strength`` messages' worth of weight on the prior). The score of sending at local hour
``h`` is the posterior harmonic evaluated at ``h`` — the log of a von Mises hour curve up to scale.

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


class SendTimeModel:
    def __init__(self, spec: FeatureSpec, space: ActionSpace, prior_strength: float = 3.0) -> None:
        if prior_strength < 0:
            raise ValueError(f"prior_strength: must be >= 0, got {prior_strength!r}")
        self.spec, self.space, self.prior_strength = spec, space, prior_strength
        s, c = len(spec.segments), len(space.channels)
        self.prior_sum = np.zeros((s, c, 2))  # sum over customers of their raw preference vectors
        self.prior_n = np.zeros((s, c))  # messages behind those sums
        names = spec.names
        self._seg = [names.index(f"segment={x}") for x in spec.segments]
        self._cols = {k: [names.index(f"{k}={ch}") for ch in space.channels]
                      for k in ("hour_pref_cos", "hour_pref_sin", "log_contacts")}
        self._hour = (names.index("local_hour_sin"), names.index("local_hour_cos"))

    def _raw(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-customer un-shrunk preference sums (N, C, 2), message counts (N, C), segments (N,)."""
        n = np.exp(X[:, self._cols["log_contacts"]].astype(np.float64)) - 1.0
        vec = np.stack([X[:, self._cols["hour_pref_cos"]], X[:, self._cols["hour_pref_sin"]]], axis=-1)
        return vec * (n + 1.0)[..., None], n, np.argmax(X[:, self._seg], axis=1)

    def update(self, X: np.ndarray) -> None:
        raw, n, seg = self._raw(X)
        np.add.at(self.prior_sum, seg, raw)
        np.add.at(self.prior_n, seg, n)

    def posterior(self, X: np.ndarray) -> np.ndarray:
        """(N, C, 2) posterior preference harmonic per customer and channel."""
        raw, n, seg = self._raw(X)
        prior = self.prior_sum[seg] / np.maximum(self.prior_n[seg], 1.0)[..., None]
        k = self.prior_strength
        return (raw + k * prior) / (n + k + 1e-12)[..., None]

    def slot_scores(self, X: np.ndarray) -> np.ndarray:
        """(N, C, S) score of each channel's send slots (higher: the customer responds more then)."""
        post = self.posterior(X)
        now = np.arctan2(X[:, self._hour[0]], X[:, self._hour[1]]).astype(np.float64)  # local hour angle
        angles = np.array([np.nan if h is None else TWO_PI_24 * h for h in self.space.send_slots])
        theta = np.where(np.isnan(angles)[None, :], now[:, None], angles[None, :])  # (N, S)
        return post[..., 0:1] * np.cos(theta)[:, None, :] + post[..., 1:2] * np.sin(theta)[:, None, :]

    def arrays(self) -> dict[str, np.ndarray]:
        return {"sto_prior_sum": self.prior_sum, "sto_prior_n": self.prior_n}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.prior_sum = np.array(arrays["sto_prior_sum"], np.float64)
        self.prior_n = np.array(arrays["sto_prior_n"], np.float64)


class SendTime:
    """Second-stage send-time optimisation over any first-stage policy."""

    name: ClassVar[str] = "send_time"

    def __init__(self, space: ActionSpace, segments: list[str] | tuple[str, ...], first: Any = "lints",
                 first_params: dict[str, Any] | None = None, epsilon: float = 0.05,
                 prior_strength: float = 3.0, dim: int | None = None) -> None:
        from nba.policies import LEARNERS, POLICIES, create

        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon: must be in [0, 1], got {epsilon!r}")
        self.space, self.epsilon = space, epsilon
        self.segments = tuple(segments)
        if isinstance(first, str):
            if first == self.name or first not in POLICIES:
                raise ValueError(f"first: unknown first-stage policy {first!r}; valid: "
                                 f"{sorted(set(POLICIES) - {self.name})}")
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

    def probabilities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
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
        self.first.update(X, actions, rewards, propensities, **extra)
        self.model.update(np.asarray(X))
        return self

    def get_state(self):
        fp, fa, fm = self.first.get_state()
        params = {"segments": list(self.segments), "first": self.first.name, "first_params": fp,
                  "epsilon": self.epsilon, "prior_strength": self.model.prior_strength}
        arrays = {**self.model.arrays(), **{f"first.{key}": v for key, v in fa.items()}}
        return params, arrays, {f"first.{key}": v for key, v in fm.items()}

    @classmethod
    def from_state(cls, space, params, arrays, models):
        from nba.policies import POLICIES

        params = dict(params)
        first_name, first_params = params.pop("first"), params.pop("first_params")
        first = POLICIES[first_name].from_state(
            space, first_params, {key[6:]: v for key, v in arrays.items() if key.startswith("first.")},
            {key[6:]: v for key, v in models.items() if key.startswith("first.")})
        policy = cls(space, first=first, **params)
        policy.model.restore(arrays)
        return policy
