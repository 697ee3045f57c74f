"""The one feature function: what a policy sees of a customer at a moment.

The simulator and the service both build observations here, from

* a :class:`Profile` — fields the caller knows (segment, time zone, consent, lifecycle stage, cart
  state, tenure), and
* a :class:`History` — a summary of the customer's own contacts and responses (recency and counts
  per channel, a decayed contact load as fatigue proxy, last engagement, purchases, site visits),

never from a simulated customer's latent traits. Times are hours since the Unix epoch (UTC), so a
customer's local hour is ``(now + tz_offset) mod 24``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any

import numpy as np

LIFECYCLE_STAGES: tuple[str, ...] = ("new", "active", "at_risk", "lapsed")
NEVER = -1e9  # time stamp of an event that never happened (hours)
TWO_PI_24 = 2.0 * np.pi / 24.0


def decay(elapsed_h: np.ndarray, half_life_h: float) -> np.ndarray:
    """float32 ``2 ** (-elapsed_h / half_life_h)`` for elapsed >= 0 (events at NEVER decay to ~1e-38).

    Computed in float32 with the exponent floored at -126, where the float64 path would spend
    most of its time in underflow handling for events that never happened.
    """
    x = (np.asarray(elapsed_h, np.float64) * (-1.0 / half_life_h)).astype(np.float32)
    np.clip(x, -126.0, 0.0, out=x)
    return np.exp2(x, out=x)


def hour_of_day(hours: np.ndarray) -> np.ndarray:
    """``hours mod 24`` for hour stamps (floor-based: several times faster than ``np.mod`` on floats)."""
    hours = np.asarray(hours, np.float64)
    return hours - 24.0 * np.floor(hours * (1.0 / 24.0))


def _log1p(x: np.ndarray) -> np.ndarray:
    """log(1 + x) for non-negative float32 counts (NumPy's float32 log1p is not vectorised; log is)."""
    return np.log(x + np.float32(1.0))


@dataclass(frozen=True)
class LifecycleRules:
    """Thresholds (days) that turn tenure and purchase recency into a lifecycle stage."""

    welcome_days: float = 14.0  # the welcome window after sign-up
    new_days: float = 30.0  # a customer who has not bought yet is "new" this long
    at_risk_days: float = 45.0  # days without purchase before "at risk"
    lapsed_days: float = 90.0  # days without purchase before "lapsed"
    post_purchase_days: float = 14.0  # the post-purchase window
    cart_days: float = 3.0  # an abandoned cart stays open this long

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"lifecycle.{f.name}: must be a positive number of days, got {v!r}")
        if not self.at_risk_days < self.lapsed_days:
            raise ValueError("lifecycle.at_risk_days: must be smaller than lifecycle.lapsed_days")


def lifecycle_stage(tenure_days: np.ndarray, days_since_purchase: np.ndarray, rules: LifecycleRules) -> np.ndarray:
    """Stage index into :data:`LIFECYCLE_STAGES` (int8), vectorised.

    ``days_since_purchase`` is ``inf`` for a customer who never bought; such a customer is *new*
    during ``new_days`` and then ages by tenure like any other.
    """
    tenure_days = np.asarray(tenure_days, dtype=np.float64)
    idle = np.minimum(np.asarray(days_since_purchase, dtype=np.float64), tenure_days)
    stage = np.where(idle < rules.at_risk_days, 1, np.where(idle < rules.lapsed_days, 2, 3)).astype(np.int8)
    stage[(tenure_days < rules.new_days) & ~np.isfinite(days_since_purchase)] = 0
    return stage


@dataclass
class Profile:
    """What the caller knows of each customer: arrays with one row per customer."""

    segment: np.ndarray  # (N,) int, index into the scenario's segments
    tz_offset: np.ndarray  # (N,) float hours east of UTC
    consent: np.ndarray  # (N, C) bool, opted in and reachable on the channel
    stage: np.ndarray  # (N,) int8, index into LIFECYCLE_STAGES
    cart_active: np.ndarray  # (N,) bool, an abandoned cart is open
    tenure_days: np.ndarray  # (N,) float days since sign-up


@dataclass
class History:
    """Per-customer summary of contacts and responses, updated in place by row indices.

    ``load`` is the contact load per channel at the time of the last contact on that channel; it
    decays with ``half_life_h``: ``load(t) = load * 2 ** (-(t - last_contact) / half_life_h)``.
    """

    n_contacts: np.ndarray  # (N, C) float32
    last_contact: np.ndarray  # (N, C) float64 hours
    load: np.ndarray  # (N, C) float32
    n_engaged: np.ndarray  # (N, C) float32 opens/clicks
    last_engaged: np.ndarray  # (N, C) float64 hours
    n_purchases: np.ndarray  # (N,) float32
    last_purchase: np.ndarray  # (N,) float64 hours
    last_visit: np.ndarray  # (N,) float64 hours
    # first harmonic of the local send hour of messages sent and of those seen, per channel: what
    # the send-time model reads the customer's preferred hours from (see hour_preference)
    sent_cos: np.ndarray  # (N, C) float32
    sent_sin: np.ndarray  # (N, C) float32
    seen_cos: np.ndarray  # (N, C) float32
    seen_sin: np.ndarray  # (N, C) float32
    half_life_h: float = 168.0

    @classmethod
    def empty(cls, n: int, n_channels: int, half_life_h: float = 168.0) -> History:
        """The history of ``n`` customers never contacted on any of ``n_channels`` channels."""
        return cls(
            n_contacts=np.zeros((n, n_channels), np.float32),
            last_contact=np.full((n, n_channels), NEVER),
            load=np.zeros((n, n_channels), np.float32),
            n_engaged=np.zeros((n, n_channels), np.float32),
            last_engaged=np.full((n, n_channels), NEVER),
            n_purchases=np.zeros(n, np.float32),
            last_purchase=np.full(n, NEVER),
            last_visit=np.full(n, NEVER),
            sent_cos=np.zeros((n, n_channels), np.float32),
            sent_sin=np.zeros((n, n_channels), np.float32),
            seen_cos=np.zeros((n, n_channels), np.float32),
            seen_sin=np.zeros((n, n_channels), np.float32),
            half_life_h=half_life_h,
        )

    def reset_rows(self, rows: np.ndarray) -> None:
        """Forget the history of ``rows`` (a customer replaced by a new one)."""
        for name in ("n_contacts", "load", "n_engaged", "n_purchases", "sent_cos", "sent_sin", "seen_cos", "seen_sin"):
            getattr(self, name)[rows] = 0
        for name in ("last_contact", "last_engaged", "last_purchase", "last_visit"):
            getattr(self, name)[rows] = NEVER

    def load_at(self, now: np.ndarray, since_contact: np.ndarray | None = None) -> np.ndarray:
        """(N, C) decayed contact load at ``now`` (N,); ``since_contact`` (hours since each channel's
        last contact) may be passed when the caller has it already."""
        if since_contact is None:
            since_contact = np.asarray(now, np.float64)[:, None] - self.last_contact
        return self.load * decay(since_contact, self.half_life_h)

    def record_contacts(
        self, rows: np.ndarray, channels: np.ndarray, when: np.ndarray, local_hour: np.ndarray | None = None
    ) -> None:
        """A message on ``channels[i]`` to customer ``rows[i]`` at ``when[i]`` (rows unique), sent at
        ``local_hour[i]`` in the customer's time zone (when known)."""
        dt = np.maximum(when - self.last_contact[rows, channels], 0.0)
        self.load[rows, channels] = self.load[rows, channels] * np.exp2(-dt / self.half_life_h) + 1.0
        self.last_contact[rows, channels] = when
        self.n_contacts[rows, channels] += 1.0
        if local_hour is not None:
            angle = TWO_PI_24 * np.asarray(local_hour, np.float64)
            self.sent_cos[rows, channels] += np.cos(angle)
            self.sent_sin[rows, channels] += np.sin(angle)

    def record_engagements(
        self, rows: np.ndarray, channels: np.ndarray, when: np.ndarray, sent_local_hour: np.ndarray | None = None
    ) -> None:
        """Customer ``rows[i]`` saw a message on ``channels[i]`` at ``when[i]``, one that had been sent at
        ``sent_local_hour[i]`` local time (when known)."""
        self.last_engaged[rows, channels] = when
        self.n_engaged[rows, channels] += 1.0
        if sent_local_hour is not None:
            angle = TWO_PI_24 * np.asarray(sent_local_hour, np.float64)
            self.seen_cos[rows, channels] += np.cos(angle)
            self.seen_sin[rows, channels] += np.sin(angle)

    def hour_preference(self, prior_weight: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """(N, C) x2: first harmonic of the customer's response rate over the local send hour.

        ``sum(seen e^{i h}) - rate * sum(sent e^{i h})`` over the customer's messages, divided by
        ``n_sent + prior_weight``: it points towards the hours at which messages were seen more often
        than the customer's average — the peak of a von Mises-shaped hour curve — and shrinks to 0
        with little data. Unlike the times messages were opened, it does not simply echo the hours
        the sender chose.
        """
        n = self.n_contacts
        rate = self.n_engaged / np.maximum(n, 1.0)
        denom = n + np.float32(prior_weight)
        return ((self.seen_cos - rate * self.sent_cos) / denom, (self.seen_sin - rate * self.sent_sin) / denom)

    def record_purchases(self, rows: np.ndarray, when: np.ndarray) -> None:
        """Customer ``rows[i]`` purchased at ``when[i]`` (rows unique)."""
        self.last_purchase[rows] = when
        self.n_purchases[rows] += 1.0

    def record_visits(self, rows: np.ndarray, when: np.ndarray) -> None:
        """Customer ``rows[i]`` visited the site at ``when[i]`` (rows unique)."""
        self.last_visit[rows] = when


@dataclass(frozen=True)
class FeatureSpec:
    """Layout of the observation vector for a given set of segments and channels."""

    segments: tuple[str, ...]
    channels: tuple[str, ...]
    recency_scale_h: float = 168.0  # recency features are exp(-hours / scale)

    @cached_property
    def names(self) -> tuple[str, ...]:
        """The feature names in column order: segment one-hot, time, lifecycle, consent, then history."""
        out = [f"segment={s}" for s in self.segments]
        out += ["tz_offset", "local_hour_sin", "local_hour_cos", "log_tenure_days"]
        out += [f"stage={s}" for s in LIFECYCLE_STAGES]
        out += ["cart_active", "welcome_window", "post_purchase_window"]
        out += [f"consent={c}" for c in self.channels]
        return tuple(out + _history_names(self.channels))

    @cached_property
    def dim(self) -> int:
        """The length of the observation vector."""
        return len(self.names)

    @cached_property
    def _positions(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.names)}

    def index(self, name: str) -> int:
        """The column of feature ``name``; ``ValueError`` when this layout has no such feature."""
        try:
            return self._positions[name]
        except KeyError:
            raise ValueError(f"{name!r} is not a feature of this layout") from None


def build_features(
    spec: FeatureSpec, profile: Profile, history: History, now: np.ndarray, rules: LifecycleRules
) -> np.ndarray:
    """(N, spec.dim) float32 observation for each customer at ``now`` (N,) hours since epoch.

    Built feature-major, one contiguous row per feature, and returned as its transpose: an
    (N, dim) array in Fortran order (``np.ascontiguousarray`` makes a C-ordered copy if needed).
    """
    n = profile.segment.shape[0]
    now = np.broadcast_to(np.asarray(now, np.float64), (n,))
    s, c = len(spec.segments), len(spec.channels)
    out = np.zeros((spec.dim, n), np.float32)
    rows = np.arange(n)
    out[profile.segment, rows] = 1.0
    j = s
    out[j] = profile.tz_offset / 12.0
    angle = (2 * np.pi / 24.0) * hour_of_day(now + profile.tz_offset)
    out[j + 1] = np.sin(angle)
    out[j + 2] = np.cos(angle)
    out[j + 3] = np.log1p(np.maximum(profile.tenure_days, 0.0))
    j += 4
    out[j + profile.stage, rows] = 1.0
    j += len(LIFECYCLE_STAGES)
    since_purchase_h = now - history.last_purchase
    out[j] = profile.cart_active
    out[j + 1] = profile.tenure_days < rules.welcome_days
    out[j + 2] = since_purchase_h < 24.0 * rules.post_purchase_days
    j += 3
    out[j : j + c] = profile.consent.T
    j += c
    _history_rows(out[j:], history, now, spec.recency_scale_h)
    return out.T


HISTORY_STATS = (
    "log_contacts",
    "contact_recency",
    "contact_load",
    "log_engaged",
    "engaged_recency",
    "hour_pref_cos",
    "hour_pref_sin",
)


def _history_names(channels: tuple[str, ...]) -> list[str]:
    out = [f"{stat}={c}" for stat in HISTORY_STATS for c in channels]
    return out + ["log_purchases", "purchase_recency", "visit_recency"]


def _history_rows(out: np.ndarray, history: History, now: np.ndarray, recency_scale_h: float) -> None:
    """Fill the first ``7 C + 3`` rows of ``out`` (feature-major) with the history's features (names:
    :func:`_history_names`)."""
    c = history.n_contacts.shape[1]
    half = recency_scale_h * np.log(2.0)  # exp(-h / scale) == 2 ** (-h / half)
    since_contact = now[:, None] - history.last_contact
    out[0:c] = _log1p(history.n_contacts).T
    out[c : 2 * c] = decay(since_contact, half).T
    out[2 * c : 3 * c] = history.load_at(now, since_contact).T
    out[3 * c : 4 * c] = _log1p(history.n_engaged).T
    out[4 * c : 5 * c] = decay((now[:, None] - history.last_engaged).T, half)
    pref_cos, pref_sin = history.hour_preference()
    out[5 * c : 6 * c] = pref_cos.T
    out[6 * c : 7 * c] = pref_sin.T
    j = 7 * c
    out[j] = _log1p(history.n_purchases)
    out[j + 1] = decay(now - history.last_purchase, half)
    out[j + 2] = decay(now - history.last_visit, half)


@dataclass(frozen=True)
class AttributeFeatures:
    """The observation of a deployment's customers (:mod:`nba.deployment`): its declared attributes,
    the local time, and the same contact-history summary per channel as :func:`build_features`.

    Attributes are encoded so that a linear model can use them as they come: a number with a range
    is scaled to [0, 1], one with only a minimum is ``log1p(x - min)``, an unbounded one
    ``sign(x) log1p(|x|)``; a category is one-hot; a boolean 0 or 1; a time is the signed
    ``log1p`` of the days since it (negative: still to come). An attribute that may be unknown (not
    required, no default) gets a ``<name>:missing`` indicator and 0 where unknown.
    """

    deployment: Any  # nba.deployment.Deployment
    recency_scale_h: float = 168.0

    @cached_property
    def names(self) -> tuple[str, ...]:
        """The feature names in column order: encoded attributes (and missing flags), time, then history."""
        out: list[str] = []
        for a in self.deployment.attributes:
            if a.type == "category":
                out += [f"{a.name}={v}" for v in a.values]
            elif a.type == "time":
                out.append(f"{a.name}:days_since")
            else:
                out.append(a.name)
            if _may_be_missing(a):
                out.append(f"{a.name}:missing")
        out += ["tz_offset", "local_hour_sin", "local_hour_cos"]
        return tuple(out + _history_names(tuple(c.name for c in self.deployment.channels)))

    @cached_property
    def dim(self) -> int:
        """The length of the observation vector."""
        return len(self.names)

    def build(
        self, columns: dict[str, np.ndarray], history: History, now: np.ndarray | float, tz_offset: np.ndarray | float
    ) -> np.ndarray:
        """(N, dim) float32 from attribute ``columns`` (:meth:`nba.deployment.Deployment.columns`), the
        customers' contact ``history``, ``now`` (hours since the epoch) and their time zones."""
        n = history.n_contacts.shape[0]
        now = np.broadcast_to(np.asarray(now, np.float64), (n,))
        tz = np.broadcast_to(np.asarray(tz_offset, np.float64), (n,))
        out = np.zeros((self.dim, n), np.float32)
        j = 0
        for a in self.deployment.attributes:
            col = columns[a.name]
            if a.type == "category":
                for v in a.values:
                    out[j] = col == v
                    j += 1
                known = out[j - len(a.values) : j].any(axis=0)  # one of the values (each row's one-hot)
            elif a.type == "boolean":
                out[j] = col == True  # noqa: E712 - elementwise on an object array: None is not
                known = col != None  # noqa: E711 - elementwise on an object array
                j += 1
            else:
                x = np.asarray(col, np.float64)
                known = ~np.isnan(x)
                if a.type == "time":
                    days = (now - x) / 24.0
                    value = np.sign(days) * np.log1p(np.abs(days))
                elif a.min is not None and a.max is not None and a.max > a.min:
                    value = (x - a.min) / (a.max - a.min)
                elif a.min is not None:
                    value = np.log1p(np.maximum(x - a.min, 0.0))
                else:
                    value = np.sign(x) * np.log1p(np.abs(x))
                out[j] = np.where(known, value, 0.0)
                j += 1
            if _may_be_missing(a):
                out[j] = ~known
                j += 1
        out[j] = tz / 12.0
        angle = TWO_PI_24 * hour_of_day(now + tz)
        out[j + 1] = np.sin(angle)
        out[j + 2] = np.cos(angle)
        _history_rows(out[j + 3 :], history, now, self.recency_scale_h)
        return out.T


def _may_be_missing(attribute: Any) -> bool:
    return not attribute.required and attribute.default is None
