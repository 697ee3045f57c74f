"""Scenario: every parameter of the simulated population, typed, validated, loadable from TOML/YAML.

The documented default lives in ``envs/scenarios/default.toml``: each parameter there carries a
comment saying where its value comes from (a calibration target in :mod:`envs.calibration`) or that
it is an assumption. A user file is merged over the default, so it names only what it changes::

    [channels.sms]
    cost = 0.08

    [segments.genz]
    share = 0.4

A bad value fails at load with a message naming the field, e.g.
``channels.sms.cost: must be >= 0, got -1.0``.
"""

from __future__ import annotations

import copy
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nba.actions import CHANNELS, CONTENTS, ActionSpace
from nba.eligibility import ContactRules
from nba.features import LIFECYCLE_STAGES, FeatureSpec, LifecycleRules

if typing.TYPE_CHECKING:
    from nba.deployment import Deployment

DEFAULT_PATH = Path(__file__).parent / "scenarios" / "default.toml"


class ScenarioError(ValueError):
    """An invalid scenario; the message starts with the dotted path of the offending field."""


def _check(cond: bool, path: str, msg: str) -> None:
    if not cond:
        raise ScenarioError(f"{path}: {msg}")


def _prob(path: str, v: float) -> None:
    _check(0.0 <= v <= 1.0, path, f"must be a probability in [0, 1], got {v!r}")


def _nonneg(path: str, v: float) -> None:
    _check(math.isfinite(v), path, f"must be finite, got {v!r}")
    _check(v >= 0.0, path, f"must be >= 0, got {v!r}")


def _pos(path: str, v: float, allow_inf: bool = False) -> None:
    _check(allow_inf or math.isfinite(v), path, f"must be finite, got {v!r}")
    _check(v > 0.0, path, f"must be > 0, got {v!r}")


@dataclass(frozen=True)
class ChannelSpec:
    """One outbound channel: cost, response funnel, delays, hour-of-day curve, opt-outs."""

    cost: float  # cost of one send (currency units)
    delivery: float  # P(delivered | sent to a consenting customer)
    open: float  # P(seen or opened | delivered) for affinity 1, an average hour, no fatigue
    click: float  # P(click | seen) for relevance and affinity 1
    optout: float  # P(opt out of the channel | seen), before fatigue, irrelevance and bad timing
    consent: float  # share of customers reachable on the channel (opted in / app installed)
    delay: str  # distribution of the time from delivery to seen: "exponential" or "lognormal"
    delay_median_min: float  # its median, minutes
    delay_sigma: float = 1.0  # lognormal shape (ignored for exponential)
    peak_hour: float = 12.0  # population mean local hour of peak engagement
    hour_kappa: float = 1.0  # concentration of the hour-of-day curve (0 = flat)
    optout_penalty: float = 2.0  # lost future value of an opt-out, charged in the bandit view

    def validate(self, path: str) -> None:
        _nonneg(f"{path}.cost", self.cost)
        for name in ("delivery", "open", "click", "optout", "consent"):
            _prob(f"{path}.{name}", getattr(self, name))
        _check(
            self.delay in ("exponential", "lognormal"),
            f"{path}.delay",
            f"must be 'exponential' or 'lognormal', got {self.delay!r}",
        )
        _pos(f"{path}.delay_median_min", self.delay_median_min)
        _pos(f"{path}.delay_sigma", self.delay_sigma)
        _check(0.0 <= self.peak_hour < 24.0, f"{path}.peak_hour", f"must be in [0, 24), got {self.peak_hour!r}")
        _nonneg(f"{path}.hour_kappa", self.hour_kappa)
        _nonneg(f"{path}.optout_penalty", self.optout_penalty)


@dataclass(frozen=True)
class ContentSpec:
    """One content of the catalogue: conversion, discount, urgency and when it is relevant."""

    conversion: float  # P(purchase | click) at relevance 1
    discount: float = 0.0  # share of the basket given away on a purchase after the message was seen
    urgency_h: float = math.inf  # value halves every urgency_h hours the send waits
    stage: dict[str, float] = field(default_factory=dict)  # relevance by lifecycle stage (default 1)
    cart: float = 1.0  # relevance multiplier while a cart is open
    no_cart: float = 1.0  # ... and while none is
    post_purchase: float = 1.0  # ... inside the post-purchase window
    welcome: float = 1.0  # ... inside the welcome window

    def validate(self, path: str) -> None:
        _prob(f"{path}.conversion", self.conversion)
        _prob(f"{path}.discount", self.discount)
        _pos(f"{path}.urgency_h", self.urgency_h, allow_inf=True)  # inf: no urgency
        for k, v in self.stage.items():
            _check(
                k in LIFECYCLE_STAGES,
                f"{path}.stage",
                f"unknown lifecycle stage {k!r}; valid: {list(LIFECYCLE_STAGES)}",
            )
            _nonneg(f"{path}.stage.{k}", v)
        for name in ("cart", "no_cart", "post_purchase", "welcome"):
            _nonneg(f"{path}.{name}", getattr(self, name))


@dataclass(frozen=True)
class SegmentSpec:
    """A customer segment: size, channel/content affinities, spend, organic behaviour."""

    share: float
    basket: float  # mean revenue of one purchase
    organic_per_day: float  # P(purchase on a day) without any contact, for an average customer
    visits_per_day: float  # mean site/app visits a day
    channel_affinity: dict[str, float] = field(default_factory=dict)  # default 1
    content_affinity: dict[str, float] = field(default_factory=dict)  # default 1
    peak_shift_h: float = 0.0  # shift of every channel's peak hour for this segment

    def validate(self, path: str) -> None:
        _prob(f"{path}.share", self.share)
        _pos(f"{path}.basket", self.basket)
        _prob(f"{path}.organic_per_day", self.organic_per_day)
        _nonneg(f"{path}.visits_per_day", self.visits_per_day)
        for name, valid in (("channel_affinity", CHANNELS), ("content_affinity", CONTENTS)):
            for k, v in getattr(self, name).items():
                kind = name.split("_")[0]
                _check(k in valid, f"{path}.{name}", f"unknown {kind} {k!r}; valid: {list(valid)}")
                _nonneg(f"{path}.{name}.{k}", v)


@dataclass(frozen=True)
class TimeZoneSpec:
    offset_h: float  # hours east of UTC (fixed; no daylight saving in the simulator)
    share: float

    def validate(self, path: str) -> None:
        _check(-12.0 <= self.offset_h <= 14.0, f"{path}.offset_h", f"must be in [-12, 14], got {self.offset_h!r}")
        _prob(f"{path}.share", self.share)


@dataclass(frozen=True)
class FatigueSpec:
    channel_half_life_h: float = 72.0
    total_half_life_h: float = 168.0
    channel_weight: float = 0.35  # open-rate log-decrease per unit of channel load
    total_weight: float = 0.12  # ... per unit of load over all channels
    optout_per_load: float = 0.5  # opt-out odds increase per unit of channel load
    sensitivity_sigma: float = 0.5  # lognormal spread of customers' sensitivity

    def validate(self, path: str) -> None:
        for f in fields(self):
            (_pos if f.name.endswith("half_life_h") else _nonneg)(f"{path}.{f.name}", getattr(self, f.name))


@dataclass(frozen=True)
class ChurnSpec:
    daily: dict[str, float] = field(default_factory=dict)  # daily hazard by lifecycle stage
    per_message: float = 0.0005  # P(leave the brand | seen message), before fatigue and irrelevance
    penalty: float = 40.0  # lost future value of a churned customer, charged in the bandit view

    def validate(self, path: str) -> None:
        for k, v in self.daily.items():
            _check(
                k in LIFECYCLE_STAGES,
                f"{path}.daily",
                f"unknown lifecycle stage {k!r}; valid: {list(LIFECYCLE_STAGES)}",
            )
            _prob(f"{path}.daily.{k}", v)
        _prob(f"{path}.per_message", self.per_message)
        _nonneg(f"{path}.penalty", self.penalty)


@dataclass(frozen=True)
class SynergySpec:
    engagement_half_life_d: float = 30.0  # memory of a channel's engagement
    conversion: float = 0.25  # conversion odds increase per extra engaged channel
    revenue: float = 0.15  # basket increase per extra engaged channel

    def validate(self, path: str) -> None:
        _pos(f"{path}.engagement_half_life_d", self.engagement_half_life_d)
        _nonneg(f"{path}.conversion", self.conversion)
        _nonneg(f"{path}.revenue", self.revenue)


@dataclass(frozen=True)
class PopulationSpec:
    """Heterogeneity of latent traits and the starting state of a customer."""

    affinity_sigma: float = 0.4  # lognormal spread of per-customer channel and content affinities
    peak_sigma_h: float = 2.0  # spread of per-customer peak hours
    basket_sigma: float = 0.5  # lognormal spread of per-customer mean basket
    purchase_noise_sigma: float = 0.3  # lognormal spread of one purchase around the customer's mean
    omni_organic: float = 0.8  # how strongly the latent omnichannel trait raises organic purchases
    omni_visits: float = 0.6  # ... site/app visits
    omni_consent: float = 1.0  # ... consent on each channel (logit shift)
    omni_basket: float = 0.25  # ... basket size
    cart_per_visit: float = 0.25  # P(a visit leaves an abandoned cart)
    new_share: float = 0.15  # share of customers starting in their first days
    tenure_mean_d: float = 400.0  # mean tenure of the others (exponential)
    purchase_gap_mean_d: float = 45.0  # mean days since the last purchase at the start (exponential)

    def validate(self, path: str) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("cart_per_visit", "new_share"):
                _prob(f"{path}.{f.name}", v)
            elif f.name.endswith("_d"):
                _pos(f"{path}.{f.name}", v)
            else:
                _nonneg(f"{path}.{f.name}", v)


@dataclass(frozen=True)
class Scenario:
    """Every parameter of a simulated population. Build with :meth:`default` or :meth:`load`."""

    name: str
    channels: dict[str, ChannelSpec]
    contents: dict[str, ContentSpec]
    segments: dict[str, SegmentSpec]
    time_zones: dict[str, TimeZoneSpec]
    send_slots: list[int]  # local hours offered besides "now"
    lifecycle: LifecycleRules = field(default_factory=LifecycleRules)
    fatigue: FatigueSpec = field(default_factory=FatigueSpec)
    churn: ChurnSpec = field(default_factory=ChurnSpec)
    synergy: SynergySpec = field(default_factory=SynergySpec)
    population: PopulationSpec = field(default_factory=PopulationSpec)
    contact: ContactRules = field(default_factory=ContactRules)  # the contact policy (nba.eligibility)
    decision_window_h: float = 24.0  # a decision is credited with what happens within this window
    horizon_days: int = 90  # Journey-v0 episode length
    journey_decision_hour: int = 8  # local hour of the daily Journey-v0 decision ("now")

    def __post_init__(self) -> None:
        for group, valid in (("channels", CHANNELS), ("contents", CONTENTS)):
            specs = getattr(self, group)
            _check(len(specs) > 0, group, "must not be empty")
            for k in specs:
                _check(k in valid, group, f"unknown {group[:-1]} {k!r}; valid: {list(valid)}")
        for group in ("channels", "contents", "segments", "time_zones"):
            specs = getattr(self, group)
            _check(len(specs) > 0, group, "must not be empty")
            for k, spec in specs.items():
                spec.validate(f"{group}.{k}")
        for group in ("segments", "time_zones"):
            total = sum(s.share for s in getattr(self, group).values())
            _check(abs(total - 1.0) < 1e-6, f"{group}.*.share", f"shares must sum to 1, got {total:.6f}")
        for i, h in enumerate(self.send_slots):
            _check(isinstance(h, int) and 0 <= h < 24, f"send_slots[{i}]", f"must be an hour in 0..23, got {h!r}")
        _check(len(set(self.send_slots)) == len(self.send_slots), "send_slots", "must not repeat an hour")
        for name in ("fatigue", "churn", "synergy", "population"):
            getattr(self, name).validate(name)
        _pos("decision_window_h", self.decision_window_h)
        _check(
            isinstance(self.horizon_days, int) and self.horizon_days > 0,
            "horizon_days",
            f"must be a positive integer, got {self.horizon_days!r}",
        )
        _check(
            isinstance(self.journey_decision_hour, int) and 0 <= self.journey_decision_hour < 24,
            "journey_decision_hour",
            f"must be an hour in 0..23, got {self.journey_decision_hour!r}",
        )

    # ------------------------------------------------------------------ derived views
    @property
    def action_space(self) -> ActionSpace:
        return ActionSpace(tuple(self.channels), tuple(self.contents), (None, *self.send_slots))

    @property
    def feature_spec(self) -> FeatureSpec:
        return FeatureSpec(tuple(self.segments), tuple(self.channels))

    def arrays(self) -> ScenarioArrays:
        return ScenarioArrays.build(self)

    # ------------------------------------------------------------------ loading
    @classmethod
    def default(cls) -> Scenario:
        return cls.load(DEFAULT_PATH)

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        """Load a TOML or YAML file, merged over the default scenario."""
        from nba.deployment import read_document

        path = Path(path)
        data = read_document(path, "scenario", ScenarioError)
        if path.resolve() == DEFAULT_PATH.resolve():
            return cls.from_dict(data)
        base = tomllib.loads(DEFAULT_PATH.read_text())
        return cls.from_dict(_merge(base, data))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scenario:
        data = copy.deepcopy(data)
        use = {g: data.pop(f"use_{g}", None) for g in ("channels", "contents")}
        for group, keep in use.items():
            if keep is None:
                continue
            known = data.get(group, {})
            for k in keep:
                _check(k in known, f"use_{group}", f"unknown {group[:-1]} {k!r}; valid: {list(known)}")
            data[group] = {k: known[k] for k in keep}
        for group, valid in (("channels", CHANNELS), ("contents", CONTENTS)):
            for k in data.get(group, {}) if isinstance(data.get(group), dict) else ():
                _check(k in valid, group, f"unknown {group[:-1]} {k!r}; valid: {list(valid)}")
        contact = data.pop("contact", {})
        _check(isinstance(contact, dict), "contact", f"must be a table, got {type(contact).__name__}")
        try:
            rules = ContactRules.from_dict(contact)
        except ValueError as e:
            raise ScenarioError(f"contact.{e}") from None
        scenario = _build(cls, data, "")
        object.__setattr__(scenario, "contact", rules)
        return scenario

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    def deployment(self) -> Deployment:
        """What a brand living in this scenario would declare (:mod:`nba.deployment`): the profile fields
        the service takes as attributes, the channels with their costs, delays, consent and quiet hours,
        the contents as offers described by their discount, the send slots, the contact policy and the
        reward. The latent population and response model stay in the scenario."""
        from nba.deployment import Deployment

        rules = self.contact
        attributes: dict[str, Any] = {
            "segment": {"type": "category", "values": list(self.segments), "required": True},
            "tenure_days": {"type": "number", "min": 0, "required": True},
            "stage": {"type": "category", "values": list(LIFECYCLE_STAGES)},
            "cart_active": {"type": "boolean", "default": False},
            "n_purchases": {"type": "number", "min": 0, "default": 0},
            "last_purchase_at": {"type": "time"},
            "last_visit_at": {"type": "time"},
        }
        channels: dict[str, Any] = {}
        for name, ch in self.channels.items():
            attributes[f"consent_{name}"] = {"type": "boolean", "default": True}
            channels[name] = {"cost": ch.cost, "delay_h": ch.delay_median_min / 60.0, "consent": f"consent_{name}"}
            if name in rules.quiet_hours:
                channels[name]["quiet_hours"] = list(rules.quiet_hours[name])
        caps = [{"channel": cap.channel or "*", "max": cap.max_count, "hours": cap.window_h} for cap in rules.caps]
        return Deployment.from_dict(
            {
                "deployment": {
                    "name": self.name,
                    "send_slots": ["now", *self.send_slots],
                    "description": "the simulator's world, as its brand would declare it",
                },
                "attributes": attributes,
                "channels": channels,
                "offers": {name: {"features": {"discount": c.discount}} for name, c in self.contents.items()},
                "contact_policy": {"min_gap_h": rules.min_gap_h, "caps": caps},
                "reward": {"events": {"converted": "value"}, "window_h": self.decision_window_h},
            }
        )


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, ContactRules):
        return obj.to_dict()
    if is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_plain(v) for v in obj]
    return obj


def _build(tp: Any, value: Any, path: str) -> Any:
    """Turn plain data into ``tp`` (dataclass, dict[str, X], list[X], float, int, str)."""
    where = path or "scenario"
    origin = typing.get_origin(tp)
    if is_dataclass(tp):
        _check(isinstance(value, dict), where, f"must be a table, got {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in fields(tp) if f.init}
        for k in value:
            _check(k in names, f"{path}.{k}".lstrip("."), f"unknown field; valid: {sorted(names)}")
        kwargs = {k: _build(hints[k], v, f"{path}.{k}".lstrip(".")) for k, v in value.items()}
        try:
            return tp(**kwargs)
        except ScenarioError:
            raise
        except TypeError as e:  # a required field is missing
            missing = sorted(n for n in names if n not in value)
            raise ScenarioError(f"{where}: missing field(s) {missing} ({e})") from None
        except ValueError as e:  # a nested validator (e.g. LifecycleRules) names the field itself
            raise ScenarioError(str(e)) from None
    if origin is dict:
        _check(isinstance(value, dict), where, f"must be a table, got {type(value).__name__}")
        _, vt = typing.get_args(tp)
        return {str(k): _build(vt, v, f"{path}.{k}") for k, v in value.items()}
    if origin is list:
        _check(isinstance(value, list | tuple), where, f"must be a list, got {type(value).__name__}")
        (vt,) = typing.get_args(tp)
        return [_build(vt, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported union type at {where}")
    if tp is float:
        _check(
            isinstance(value, int | float) and not isinstance(value, bool), where, f"must be a number, got {value!r}"
        )
        _check(not math.isnan(value), where, "must not be NaN")
        return float(value)
    if tp is int:
        _check(isinstance(value, int) and not isinstance(value, bool), where, f"must be an integer, got {value!r}")
        return value
    if tp is str:
        _check(isinstance(value, str), where, f"must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported field type {tp!r} at {where}")


@dataclass(frozen=True)
class ScenarioArrays:
    """The scenario as NumPy arrays in action-space order, for the vectorised mechanics."""

    # channels (C,)
    cost: np.ndarray
    delivery: np.ndarray
    open_rate: np.ndarray  # -log(1 - open): a hazard, so probabilities stay in [0, 1)
    click_rate: np.ndarray
    optout: np.ndarray
    consent_logit: np.ndarray
    peak_hour: np.ndarray
    hour_kappa: np.ndarray
    hour_norm: np.ndarray  # 1 / I0(kappa): makes the hour curve average 1 over the day
    optout_penalty: np.ndarray
    delay_median_min: np.ndarray
    delay_sigma: np.ndarray
    delay_exponential: np.ndarray  # bool
    # contents (K,)
    conversion_rate: np.ndarray
    discount: np.ndarray
    urgency_h: np.ndarray
    # segments (S,)
    segment_cdf: np.ndarray
    basket: np.ndarray
    organic_per_day: np.ndarray
    visits_per_day: np.ndarray
    seg_channel_affinity: np.ndarray  # (S, C)
    seg_content_affinity: np.ndarray  # (S, K)
    peak_shift_h: np.ndarray
    # time zones
    tz_cdf: np.ndarray
    tz_offset: np.ndarray
    relevance_table: np.ndarray  # (4 * 2 * 2 * 2, K) by ((stage * 2 + cart) * 2 + post_purchase) * 2 + welcome
    churn_daily: np.ndarray  # (4,) by lifecycle stage
    slot_hours: np.ndarray  # (n_slots,) local hour, -1 for "now"

    @classmethod
    def build(cls, sc: Scenario) -> ScenarioArrays:
        from scipy.special import i0

        ch = list(sc.channels.values())
        ct = list(sc.contents.values())
        sg = list(sc.segments.values())
        tz = list(sc.time_zones.values())
        f64 = np.float64

        def col(specs, name):
            return np.array([getattr(s, name) for s in specs], f64)

        kappa = col(ch, "hour_kappa")
        rel_stage = np.array([[c.stage.get(s, 1.0) for c in ct] for s in LIFECYCLE_STAGES], f64)
        flags = np.array([[cart, post, welcome] for cart in (0, 1) for post in (0, 1) for welcome in (0, 1)], bool)
        rel_table = np.concatenate(
            [
                rel_stage[s]
                * np.where(f[0], col(ct, "cart"), col(ct, "no_cart"))
                * np.where(f[1], col(ct, "post_purchase"), 1.0)
                * np.where(f[2], col(ct, "welcome"), 1.0)
                for s in range(len(LIFECYCLE_STAGES))
                for f in flags
            ]
        ).reshape(-1, len(ct))
        consent = np.clip(col(ch, "consent"), 1e-9, 1 - 1e-9)
        return cls(
            cost=col(ch, "cost"),
            delivery=col(ch, "delivery"),
            open_rate=-np.log1p(-np.minimum(col(ch, "open"), 1 - 1e-9)),
            click_rate=-np.log1p(-np.minimum(col(ch, "click"), 1 - 1e-9)),
            optout=col(ch, "optout"),
            consent_logit=np.log(consent / (1 - consent)),
            peak_hour=col(ch, "peak_hour"),
            hour_kappa=kappa,
            hour_norm=1.0 / i0(kappa),
            optout_penalty=col(ch, "optout_penalty"),
            delay_median_min=col(ch, "delay_median_min"),
            delay_sigma=col(ch, "delay_sigma"),
            delay_exponential=np.array([c.delay == "exponential" for c in ch]),
            conversion_rate=-np.log1p(-np.minimum(col(ct, "conversion"), 1 - 1e-9)),
            discount=col(ct, "discount"),
            urgency_h=col(ct, "urgency_h"),
            relevance_table=rel_table,
            segment_cdf=np.cumsum(col(sg, "share")) / sum(s.share for s in sg),
            basket=col(sg, "basket"),
            organic_per_day=col(sg, "organic_per_day"),
            visits_per_day=col(sg, "visits_per_day"),
            seg_channel_affinity=np.array([[s.channel_affinity.get(c, 1.0) for c in sc.channels] for s in sg], f64),
            seg_content_affinity=np.array([[s.content_affinity.get(c, 1.0) for c in sc.contents] for s in sg], f64),
            peak_shift_h=col(sg, "peak_shift_h"),
            tz_cdf=np.cumsum(col(tz, "share")) / sum(t.share for t in tz),
            tz_offset=col(tz, "offset_h"),
            churn_daily=np.array([sc.churn.daily.get(s, 0.0) for s in LIFECYCLE_STAGES], f64),
            slot_hours=np.array([-1, *sc.send_slots], np.int64),
        )
