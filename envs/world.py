"""A latent world for any deployment: who a brand's customers are and how they answer, declared once.

A deployment (:mod:`nba.deployment`) says what a brand *knows*: the attributes it sends, its channels,
offers, send slots, contact policy and reward. A **latent world** adds what the simulator knows and the
brand does not: how those attributes are distributed in the population (and in which time zones the
customers live), and how a customer answers each action (delivered, seen at some local hour, converted
for some value, opted out). :class:`envs.world_simulation.WorldSimulation` then simulates the
deployment's customers in it, deciding through the library's one decide path
(:func:`nba.decide.decide`), so a brand can train online, score a policy against exact ground truth,
or try one before it goes live. Simulating your own deployment::

    import numpy as np
    from envs.world import LatentWorld
    from envs.world_simulation import WorldSimulation, simulate_log
    from nba.catalogue import Catalogue
    from nba.deployment import Deployment
    from nba.log import DecisionLog
    from nba.policies import create

    d = Deployment.load("my_deployment.toml")
    world = LatentWorld.default(d)          # or LatentWorld.load("my_world.toml", d)
    sim = WorldSimulation(d, world, seed=0, n=10_000, purpose="train")
    policy = create("linucb", Catalogue.of_deployment(d), dim=d.features().dim)
    rng = np.random.default_rng(0)
    for _ in range(30):                    # 30 decisions per customer, learning online
        out = sim.decide(policy, rng)       # nba.decide.decide: features, mask, choice, propensity
        step = sim.step(out.action)         # realised outcomes; history and opt-outs move on
        policy.update(out.context, out.action, step.reward, out.propensity)
    held_out = WorldSimulation(d, world, seed=0, n=10_000, purpose="held-out")
    print(held_out.policy_value(held_out.decide(policy, rng).probabilities))   # exact expected reward
    with DecisionLog("sqlite:///world.db") as log:   # a log `nba train --source` learns from
        simulate_log(log, d, world, create("uniform_random", d.action_space()), n=2000, decisions=14)

**Every part of the file is optional**; :meth:`LatentWorld.default` is the file with nothing in it. A
field that is wrong raises :class:`WorldError` naming it
(``population.attributes.plan_type.weights.gold: not a value of plan_type; valid: [...]``). The shape
(every value shown is the default, unless marked as an example)::

    [world]
    name = "latent"
    start = 2027-01-04            # the UTC day of the customers' first decision
    decision_hours = [8, 21]      # each decision at a local hour drawn uniformly in [from, to)
    every_days = 1                # days between a customer's decisions

    [population]
    time_zones = [{ utc_offset = 0, share = 1.0 }]      # hours east of UTC, shares (normalised)

    [population.attributes.plan_type]                   # example: one table per declared attribute
    weights = { prepaid = 0.45, postpaid = 0.45, business = 0.1 }   # category (default: uniform)
    missing = 0.0                 # share not known to the brand (not required attributes only):
                                  # the deployment's default is sent in its place, or nothing
    [population.attributes.monthly_revenue]             # example
    distribution = "lognormal"    # number: lognormal (median, sigma), normal (mean, sd),
    given = "plan_type"           #   uniform (low, high), exponential (mean); then + offset,
    median = { prepaid = 12, postpaid = 35, business = 60 }   # rounded to `round` decimals and
    sigma = 0.35                  #   clipped to the declared range. A parameter (and `missing`, `p`)
    round = 2                     #   may be a table over the values of `given`, a category
    drift_per_day = 0.0           #   attribute declared before it; drift: added every day
    [population.attributes.last_complaint_at]           # example: a time is drawn in days before
    distribution = "uniform"      #   the first decision day (negative: still to come)
    low = 0
    high = 60
    missing = 0.9
    [population.attributes.app_user]                    # example
    p = 0.5                       # boolean: probability of true

    [response]
    seed = 0                      # stream of the drawn weights (envs.random, purpose "world-weights")
    base_rate = 0.03              # an offer's conversion probability once seen, for an average customer
    base_spread = 0.3             # sd of each offer's drawn log-odds around it
    drawn_scale = 1.0             # sd (log-odds) of the drawn interactions per unit of an action feature
    fatigue = 0.3                 # log-odds lost per unit of decayed contact load (all channels)
    value_feature = "margin"      # offer feature a conversion earns (default: value, margin or price,
    value_scale = 1.0             #   the first every offer declares as a number; none: `value`)
    value = 1.0
    value_sigma = 0.0             # log-normal spread of a conversion's value around its mean
    conversion_delay_h = 12.0     # mean hours from seeing a message to converting (exponential)

    [response.interactions]       # example: log-odds per standard deviation of a customer feature
    "data_usage_gb x category=data" = 0.8     # (as the policy sees it; "1": every customer, a main
    "1 x discount" = 0.3                      # effect) per unit of an action feature: an offer feature
    "app_user x channel=app_push" = 0.5       # (category=value, a number per sd across offers),
                                              # offer=<name> or channel=<name>
    [response.channels.sms]       # example: one table per channel
    delivery = 0.95               # probability the message is delivered (after the channel's delay_h)
    open = 0.5                    # probability a delivered message is seen, sent at the peak hour
    peak_hour = 19                # local hour of the peak; `open` falls by up to hour_strength away
    hour_strength = 0.5           #   from it: open * (1 - strength * (1 - cos(2 pi (h - peak) / 24)) / 2)
    open_delay_h = 1.0            # mean hours from delivery to being seen (exponential)
    effect = 0.0                  # log-odds of converting on this channel
    opt_out = 0.002               # probability a customer who saw it and did not convert opts out,
    opt_out_per_contact = 0.005   #   plus this per unit of the channel's decayed contact load

    [response.send_slots]         # example: log-odds of converting by send slot
    now = 0.0
    "18" = 0.2

    [response.offers.retention_call]   # example
    base_rate = 0.05
    value = 30.0

**The conversion model.** For customer ``n`` and action ``(channel c, offer o, slot s)``: delivered with
``delivery_c``; seen with ``open_c`` on the local send hour's curve; once seen, converting with
``sigmoid(logit(base_rate_o) + spread_o + s_n . W . g(c, o) + effect_c + slot_s - fatigue * load_n)``,
where ``s_n`` are the customer's attribute features as the policy sees them
(:class:`nba.features.AttributeFeatures`) standardised over a reference population, ``g(c, o)`` the
action's features (the offers' declared features, one-hot categories and numbers standardised across
offers; offer and channel indicators) and ``W`` the declared interactions plus drawn ones; ``load_n``
the customer's decayed contact load (:meth:`nba.features.History.load_at`). A customer who saw it and
did not convert opts out with ``opt_out_c + opt_out_per_contact_c * load_nc``: the channel's consent
attribute turns false (a channel without one is no longer allowed to the customer). The reward is the
deployment's rule (:meth:`nba.deployment.Deployment.reward_rule`) applied to these events' times, so
the exact expected reward of every action is known (:meth:`WorldSimulation.expected_rewards`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np

from envs.random import Streams, normal
from nba.deployment import Deployment, check_keys, check_table, read_document

DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "lognormal": ("median", "sigma"),
    "normal": ("mean", "sd"),
    "uniform": ("low", "high"),
    "exponential": ("mean",),
}
DEFAULT_START = "2027-01-04"  # a Monday
REFERENCE_ROWS = 4096  # customers of the reference population that standardises the customer features
REFERENCE_PURPOSE = "world-reference"
WEIGHTS_PURPOSE = "world-weights"


class WorldError(ValueError):
    """An invalid latent world; the message starts with the dotted path of the offending field."""


def _fail(path: str, msg: str) -> None:
    raise WorldError(f"{path}: {msg}")


def _table(value: Any, path: str) -> Mapping[str, Any]:
    return check_table(value, path, WorldError)


def _keys(table: Mapping[str, Any], path: str, allowed: tuple[str, ...]) -> None:
    check_keys(table, path, allowed, WorldError)


def _number(
    value: Any, path: str, *, low: float | None = None, high: float | None = None, positive: bool = False
) -> float:
    if not (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)):
        _fail(path, f"must be a finite number, got {value!r}")
    if positive and value <= 0:
        _fail(path, f"must be > 0, got {value!r}")
    if low is not None and value < low:
        _fail(path, f"must be >= {low:g}, got {value!r}")
    if high is not None and value > high:
        _fail(path, f"must be <= {high:g}, got {value!r}")
    return float(value)


def _prob(value: Any, path: str) -> float:
    return _number(value, path, low=0.0, high=1.0)


def _start_h(value: Any, path: str) -> float:
    """Hours since the epoch of midnight UTC of an ISO date."""
    if isinstance(value, datetime):
        value = value.date()
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value)
        except ValueError:
            _fail(path, f"must be an ISO 8601 date (2027-01-04), got {value!r}")
    if not isinstance(value, date):
        _fail(path, f"must be an ISO 8601 date (2027-01-04), got {value!r}")
    return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp() / 3600.0


# ----------------------------------------------------------------------------- declarations
@dataclass(frozen=True)
class AttributeLaw:
    """How one declared attribute is distributed. Every parameter is a tuple: one value, or one per value
    of the category attribute ``given`` (in its declared order)."""

    name: str
    type: str
    weights: tuple[float, ...] = ()  # category: one per declared value, summing to 1
    distribution: str | None = None  # number, time
    params: dict[str, tuple[float, ...]] = field(default_factory=dict)
    p: tuple[float, ...] = ()  # boolean: probability of true
    missing: tuple[float, ...] = (0.0,)
    given: str | None = None
    offset: float = 0.0
    round: int | None = None
    drift_per_day: float = 0.0


@dataclass(frozen=True)
class ChannelResponse:
    """How customers answer a message on one channel."""

    delivery: float = 0.95
    open: float = 0.5
    peak_hour: float = 19.0
    hour_strength: float = 0.5
    open_delay_h: float = 1.0
    effect: float = 0.0
    opt_out: float = 0.002
    opt_out_per_contact: float = 0.005


@dataclass(frozen=True)
class Response:
    """The response model (module docstring), resolved for the deployment: one entry per channel, send
    slot and offer, in the deployment's order."""

    seed: int = 0
    base_rate: float = 0.03
    base_spread: float = 0.3
    drawn_scale: float = 1.0
    fatigue: float = 0.3
    value_feature: str | None = None
    value_scale: float = 1.0
    value: float = 1.0
    value_sigma: float = 0.0
    conversion_delay_h: float = 12.0
    interactions: tuple[tuple[str, str, float], ...] = ()  # (customer feature, action feature, weight)
    channels: tuple[ChannelResponse, ...] = ()
    slot_effects: tuple[float, ...] = ()
    offer_rates: tuple[float, ...] = ()  # each offer's base rate
    offer_values: tuple[float, ...] = ()  # each offer's mean conversion value


@dataclass(frozen=True)
class LatentWorld:
    """A validated latent world for one deployment (build with :meth:`load`, :meth:`from_dict` or
    :meth:`default`); :attr:`deployment_digest` is the deployment it was validated against."""

    name: str
    deployment_digest: str
    start_h: float
    decision_hours: tuple[int, int]
    every_days: int
    time_zones: tuple[tuple[float, float], ...]  # (utc_offset, share), shares summing to 1
    attributes: tuple[AttributeLaw, ...]  # one per deployment attribute, in its order
    response: Response

    @classmethod
    def load(cls, path: str | Path, deployment: Deployment) -> LatentWorld:
        """A world for ``deployment`` from a ``.toml``, ``.yaml`` or ``.yml`` file."""
        return cls.from_dict(read_document(path, "world", WorldError), deployment)

    @classmethod
    def default(cls, deployment: Deployment) -> LatentWorld:
        """The documented defaults for ``deployment``: an empty file."""
        return cls.from_dict({}, deployment)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], deployment: Deployment) -> LatentWorld:
        """Validate plain data (a TOML or YAML document) against ``deployment``; WorldError naming the
        field otherwise."""
        data = _table(data, "world file")
        _keys(data, "", ("world", "population", "response"))
        head = _table(data.get("world", {}), "world")
        _keys(head, "world", ("name", "description", "start", "decision_hours", "every_days"))
        name = head.get("name", "latent")
        if not (isinstance(name, str) and name.strip()):
            _fail("world.name", f"must be a non-empty string, got {name!r}")
        start = _start_h(head.get("start", DEFAULT_START), "world.start")
        hours = head.get("decision_hours", [8, 21])
        ok = (
            isinstance(hours, list | tuple)
            and len(hours) == 2
            and all(isinstance(h, int) and not isinstance(h, bool) for h in hours)
            and 0 <= hours[0] < hours[1] <= 24
        )
        if not ok:
            _fail("world.decision_hours", f"must be [from, to], local hours with 0 <= from < to <= 24, got {hours!r}")
        every = head.get("every_days", 1)
        if not (isinstance(every, int) and not isinstance(every, bool) and every >= 1):
            _fail("world.every_days", f"must be a positive integer, got {every!r}")
        pop = _table(data.get("population", {}), "population")
        _keys(pop, "population", ("time_zones", "attributes"))
        zones = _time_zones(pop.get("time_zones", [{"utc_offset": 0, "share": 1.0}]))
        laws = _attributes(_table(pop.get("attributes", {}), "population.attributes"), deployment)
        response = _response(_table(data.get("response", {}), "response"), deployment)
        return cls(
            name.strip(), deployment.digest, start, (int(hours[0]), int(hours[1])), int(every), zones, laws, response
        )

    def check(self, deployment: Deployment, where: str = "world") -> None:
        """ValueError naming ``where`` unless this world was validated against ``deployment``."""
        if deployment.digest != self.deployment_digest:
            raise ValueError(
                f"{where}: declared for the deployment {self.deployment_digest[:19]}.., not for "
                f"{deployment.name!r} ({deployment.digest[:19]}..); load it against this deployment"
            )


def _time_zones(raw: Any) -> tuple[tuple[float, float], ...]:
    path = "population.time_zones"
    if not isinstance(raw, list) or not raw:
        _fail(path, f"must be a non-empty list of {{ utc_offset, share }} tables, got {raw!r}")
    out = []
    for i, z in enumerate(raw):
        p = f"{path}[{i}]"
        z = _table(z, p)
        _keys(z, p, ("utc_offset", "share"))
        if "utc_offset" not in z:
            _fail(f"{p}.utc_offset", "missing")
        out.append(
            (
                _number(z["utc_offset"], f"{p}.utc_offset", low=-12.0, high=14.0),
                _number(z.get("share", 1.0), f"{p}.share", low=0.0),
            )
        )
    total = sum(s for _, s in out)
    if total <= 0:
        _fail(path, "the shares must not all be 0")
    return tuple((o, s / total) for o, s in out)


def _by(value: Any, path: str, given: Any, check) -> tuple[float, ...]:
    """One parameter: a number, or a table over every value of ``given`` (an Attribute, or None)."""
    if isinstance(value, Mapping):
        if given is None:
            _fail(path, "a table of values needs `given` (a category attribute)")
        for k in value:
            if k not in given.values:
                _fail(f"{path}.{k}", f"not a value of {given.name}; valid: {list(given.values)}")
        missing = [v for v in given.values if v not in value]
        if missing:
            _fail(path, f"give every value of {given.name}: missing {missing}")
        return tuple(check(value[v], f"{path}.{v}") for v in given.values)
    return (check(value, path),)


def _attributes(table: Mapping[str, Any], d: Deployment) -> tuple[AttributeLaw, ...]:
    declared = {a.name: a for a in d.attributes}
    for k in table:
        if k not in declared:
            _fail(f"population.attributes.{k}", f"not an attribute of the deployment; declared: {sorted(declared)}")
    laws: dict[str, AttributeLaw] = {}
    for a in d.attributes:
        path = f"population.attributes.{a.name}"
        spec = _table(table.get(a.name, {}), path)
        common = ("missing", "given")
        if a.type == "category":
            _keys(spec, path, ("weights", *common))
        elif a.type == "boolean":
            _keys(spec, path, ("p", *common))
        else:
            extra = ("drift_per_day",) if a.type == "number" else ()
            _keys(
                spec,
                path,
                (
                    "distribution",
                    "offset",
                    "round",
                    *extra,
                    *common,
                    *sorted({p for ps in DISTRIBUTIONS.values() for p in ps}),
                ),
            )
        given = None
        if "given" in spec:
            g = spec["given"]
            if a.type == "category":
                _fail(f"{path}.given", "a category's weights cannot depend on another attribute")
            if g not in declared or declared[g].type != "category":
                _fail(f"{path}.given", f"must name a category attribute, got {g!r}")
            if g not in laws:
                _fail(f"{path}.given", f"{g!r} must be declared before {a.name!r} in the deployment")
            if any(m > 0 for m in laws[g].missing):
                _fail(f"{path}.given", f"{g!r} may be missing (population.attributes.{g}.missing)")
            given = declared[g]
        missing = _by(spec.get("missing", _default_missing(a)), f"{path}.missing", given, _prob)
        if a.required and any(m > 0 for m in missing):
            _fail(f"{path}.missing", "a required attribute is always sent: must be 0")
        law = AttributeLaw(a.name, a.type, missing=missing, given=None if given is None else given.name)
        if a.type == "category":
            raw = _table(spec.get("weights", {v: 1.0 for v in a.values}), f"{path}.weights")
            for k in raw:
                if k not in a.values:
                    _fail(f"{path}.weights.{k}", f"not a value of {a.name}; valid: {list(a.values)}")
            w = np.array([_number(raw.get(v, 0.0), f"{path}.weights.{v}", low=0.0) for v in a.values])
            if w.sum() <= 0:
                _fail(f"{path}.weights", "must not all be 0")
            law = AttributeLaw(**{**law.__dict__, "weights": tuple((w / w.sum()).tolist())})
        elif a.type == "boolean":
            law = AttributeLaw(**{**law.__dict__, "p": _by(spec.get("p", 0.5), f"{path}.p", given, _prob)})
        else:
            law = _numeric_law(a, spec, path, given, law)
        laws[a.name] = law
    return tuple(laws[a.name] for a in d.attributes)


def _default_missing(a: Any) -> float:
    return 0.5 if a.type == "time" and not a.required and a.default is None else 0.0


def _numeric_law(a: Any, spec: Mapping[str, Any], path: str, given: Any, law: AttributeLaw) -> AttributeLaw:
    if "distribution" in spec:
        dist = spec["distribution"]
        if dist not in DISTRIBUTIONS:
            _fail(f"{path}.distribution", f"must be one of {list(DISTRIBUTIONS)}, got {dist!r}")
        defaults: dict[str, float] = {}
        offset = 0.0
    else:  # derived from the declared type and range (module docstring)
        dist, defaults, offset = _default_distribution(a)
    for k in spec:
        if k in {p for ps in DISTRIBUTIONS.values() for p in ps} and k not in DISTRIBUTIONS[dist]:
            _fail(f"{path}.{k}", f"not a parameter of the {dist} distribution (it takes {list(DISTRIBUTIONS[dist])})")
    params = {}
    for k in DISTRIBUTIONS[dist]:
        if k not in spec and k not in defaults:
            _fail(f"{path}.{k}", f"missing (the {dist} distribution takes {list(DISTRIBUTIONS[dist])})")
        positive = (dist, k) in (("lognormal", "median"), ("exponential", "mean"))
        params[k] = _by(
            spec.get(k, defaults.get(k)),
            f"{path}.{k}",
            given,
            lambda v, p, pos=positive, nonneg=k in ("sigma", "sd"): _number(
                v, p, positive=pos, low=0.0 if nonneg else None
            ),
        )
    if dist == "uniform" and any(
        h < lo for lo, h in zip(*np.broadcast_arrays(params["low"], params["high"]), strict=True)
    ):
        _fail(f"{path}.high", "must not be below low")
    rnd = spec.get("round")
    if rnd is not None and not (isinstance(rnd, int) and not isinstance(rnd, bool) and 0 <= rnd <= 6):
        _fail(f"{path}.round", f"must be a number of decimals in 0..6, got {rnd!r}")
    return AttributeLaw(
        **{
            **law.__dict__,
            "distribution": dist,
            "params": params,
            "offset": _number(spec.get("offset", offset), f"{path}.offset"),
            "round": rnd,
            "drift_per_day": _number(spec.get("drift_per_day", 0.0), f"{path}.drift_per_day"),
        }
    )


def _default_distribution(a: Any) -> tuple[str, dict[str, float], float]:
    """A number: uniform over [min, max]; min + lognormal(10, 1) with only a minimum; max - lognormal(10, 1)
    with only a maximum (a negative median is refused: normal around max - 10); normal(default or 0, 1)
    unbounded. A time: uniform 0 to 365 days before the first decision day."""
    if a.type == "time":
        return "uniform", {"low": 0.0, "high": 365.0}, 0.0
    if a.min is not None and a.max is not None:
        return "uniform", {"low": a.min, "high": a.max}, 0.0
    if a.min is not None:
        return "lognormal", {"median": 10.0, "sigma": 1.0}, a.min
    if a.max is not None:
        return "normal", {"mean": a.max - 10.0, "sd": 5.0}, 0.0
    return "normal", {"mean": 0.0 if a.default is None else float(a.default), "sd": 1.0}, 0.0


def _response(table: Mapping[str, Any], d: Deployment) -> Response:
    _keys(
        table,
        "response",
        (
            "seed",
            "base_rate",
            "base_spread",
            "drawn_scale",
            "fatigue",
            "value_feature",
            "value_scale",
            "value",
            "value_sigma",
            "conversion_delay_h",
            "interactions",
            "channels",
            "send_slots",
            "offers",
        ),
    )
    seed = table.get("seed", 0)
    if not (isinstance(seed, int) and not isinstance(seed, bool)):
        _fail("response.seed", f"must be an integer, got {seed!r}")
    base = table.get("base_rate", 0.03)
    base = _number(base, "response.base_rate", positive=True, high=0.999999)
    numeric = [
        k
        for k in (d.offers[0].features if d.offers else {})
        if all(isinstance(o.features.get(k), float) for o in d.offers)
    ]
    if "value_feature" in table:
        vf = table["value_feature"]
        if vf not in numeric:
            _fail("response.value_feature", f"must name a number feature every offer declares; numbers: {numeric}")
    else:
        vf = next((k for k in ("value", "margin", "price") if k in numeric), None)
    channels = _table(table.get("channels", {}), "response.channels")
    names = [c.name for c in d.channels]
    for k in channels:
        if k not in names:
            _fail(f"response.channels.{k}", f"not a channel of the deployment; declared: {names}")
    per_channel = []
    for c in names:
        path = f"response.channels.{c}"
        spec = _table(channels.get(c, {}), path)
        fields_ = ChannelResponse.__dataclass_fields__
        _keys(spec, path, tuple(fields_))
        vals = {}
        for k, f in fields_.items():
            v = spec.get(k, f.default)
            if k in ("delivery", "open", "hour_strength", "opt_out"):
                vals[k] = _prob(v, f"{path}.{k}")
            elif k == "peak_hour":
                vals[k] = _number(v, f"{path}.{k}", low=0.0, high=24.0)
            elif k == "open_delay_h":
                vals[k] = _number(v, f"{path}.{k}", positive=True)
            elif k == "opt_out_per_contact":
                vals[k] = _number(v, f"{path}.{k}", low=0.0)
            else:
                vals[k] = _number(v, f"{path}.{k}")
        per_channel.append(ChannelResponse(**vals))
    slots = _table(table.get("send_slots", {}), "response.send_slots")
    labels = ["now" if s is None else str(s) for s in d.send_slots]
    for k in slots:
        if str(k) not in labels:
            _fail(f"response.send_slots.{k}", f"not a send slot of the deployment; declared: {labels}")
    slot_effects = tuple(_number(slots.get(lab, 0.0), f"response.send_slots.{lab}") for lab in labels)
    offers = _table(table.get("offers", {}), "response.offers")
    offer_names = [o.name for o in d.offers]
    for k in offers:
        if k not in offer_names:
            _fail(f"response.offers.{k}", f"not an offer of the deployment; declared: {offer_names[:8]}...")
    value_scale = _number(table.get("value_scale", 1.0), "response.value_scale")
    value = _number(table.get("value", 1.0), "response.value")
    rates, values = [], []
    for o in d.offers:
        path = f"response.offers.{o.name}"
        spec = _table(offers.get(o.name, {}), path)
        _keys(spec, path, ("base_rate", "value"))
        rates.append(_number(spec.get("base_rate", base), f"{path}.base_rate", positive=True, high=0.999999))
        default_value = value if vf is None else float(o.features[vf]) * value_scale
        values.append(_number(spec.get("value", default_value), f"{path}.value"))
    interactions = []
    customer, action = customer_feature_names(d), action_feature_names(d)
    for key, w in _table(table.get("interactions", {}), "response.interactions").items():
        path = f"response.interactions.{key!r}".replace("'", '"')
        parts = [p.strip() for p in str(key).split(" x ")]
        if len(parts) != 2:
            _fail(path, 'must be "<customer feature> x <action feature>"')
        if parts[0] not in customer and parts[0] != "1":
            _fail(path, f'unknown customer feature {parts[0]!r}; valid: "1" (every customer) or {list(customer)}')
        if parts[1] not in action:
            _fail(path, f"unknown action feature {parts[1]!r}; valid: {list(action)}")
        interactions.append((parts[0], parts[1], _number(w, path)))
    return Response(
        seed=int(seed),
        base_rate=base,
        base_spread=_number(table.get("base_spread", 0.3), "response.base_spread", low=0.0),
        drawn_scale=_number(table.get("drawn_scale", 1.0), "response.drawn_scale", low=0.0),
        fatigue=_number(table.get("fatigue", 0.3), "response.fatigue"),
        value_feature=vf,
        value_scale=value_scale,
        value=value,
        value_sigma=_number(table.get("value_sigma", 0.0), "response.value_sigma", low=0.0),
        conversion_delay_h=_number(table.get("conversion_delay_h", 12.0), "response.conversion_delay_h", positive=True),
        interactions=tuple(sorted(interactions)),
        channels=tuple(per_channel),
        slot_effects=slot_effects,
        offer_rates=tuple(rates),
        offer_values=tuple(values),
    )


# ----------------------------------------------------------------------------- features of the model
def customer_feature_names(d: Deployment) -> tuple[str, ...]:
    """The attribute part of what a policy sees (:class:`nba.features.AttributeFeatures`): the customer
    features an interaction may name."""
    names = d.features().names
    return names[: names.index("tz_offset")]


def _offer_columns(d: Deployment) -> tuple[list[str], np.ndarray]:
    """The offers' declared features as columns: a category one-hot per value (sorted), a number
    standardised across offers (0 when constant). (names, (n_offers, F) matrix)."""
    names: list[str] = []
    cols: list[np.ndarray] = []
    keys = sorted({k for o in d.offers for k in o.features})
    for k in keys:
        vals = [o.features.get(k) for o in d.offers]
        if any(isinstance(v, str) for v in vals):
            for v in sorted({v for v in vals if isinstance(v, str)}):
                names.append(f"{k}={v}")
                cols.append(np.array([x == v for x in vals], np.float64))
        else:
            x = np.array([0.0 if v is None else float(v) for v in vals])
            sd = x.std()
            names.append(k)
            cols.append((x - x.mean()) / sd if sd > 0 else np.zeros_like(x))
    matrix = np.stack(cols, axis=1) if cols else np.zeros((len(d.offers), 0))
    return names, matrix


def action_feature_names(d: Deployment) -> tuple[str, ...]:
    """The action features an interaction may name: the offers' declared features (:func:`_offer_columns`),
    then ``offer=<name>`` and ``channel=<name>``."""
    return (*_offer_columns(d)[0], *(f"offer={o.name}" for o in d.offers), *(f"channel={c.name}" for c in d.channels))


def _hypoexponential_cdf(t: np.ndarray, m1: np.ndarray, m2: float) -> np.ndarray:
    """P(E1 + E2 <= t) for independent exponentials of means m1 and m2 (0 for t <= 0)."""
    t = np.maximum(np.asarray(t, np.float64), 0.0)
    l1, l2 = 1.0 / np.asarray(m1, np.float64), 1.0 / m2
    same = np.isclose(l1, l2, rtol=1e-9)
    with np.errstate(divide="ignore", invalid="ignore"):
        diff = 1.0 - (l2 * np.exp(-l1 * t) - l1 * np.exp(-l2 * t)) / (l2 - l1)
    equal = 1.0 - np.exp(-l1 * t) * (1.0 + l1 * t)
    return np.where(same, equal, diff)


class Model:
    """A world's response model compiled for its deployment: arrays the simulation computes with.

    ``customer_scores`` turns observations into each customer's log-odds by offer and by channel;
    :meth:`probabilities` gives, for chosen actions, what the simulation draws and what the reward
    expects.
    """

    def __init__(self, world: LatentWorld, d: Deployment) -> None:
        world.check(d)
        r = world.response
        self.world, self.deployment = world, d
        space = d.action_space()
        self.space = space
        c_names = customer_feature_names(d)
        self.n_customer = len(c_names)
        o_names, o_matrix = _offer_columns(d)
        n_o, n_c = len(d.offers), len(d.channels)
        # drawn weights: over the offer features (the offers' indicators when they declare none) and channels
        drawn_offer = o_matrix if o_matrix.shape[1] else np.eye(n_o)
        k_o = drawn_offer.shape[1]
        u = Streams.of(r.seed, 1, WEIGHTS_PURPOSE).uniform(self.n_customer * (k_o + n_c) + n_o)[0]
        z = normal(u)
        sd = r.drawn_scale / math.sqrt(max(self.n_customer, 1))
        w_offer = sd * z[: self.n_customer * k_o].reshape(self.n_customer, k_o)
        w_channel = sd * z[self.n_customer * k_o : self.n_customer * (k_o + n_c)].reshape(self.n_customer, n_c)
        spread = r.base_spread * z[self.n_customer * (k_o + n_c) :]
        b_offer = w_offer @ drawn_offer.T  # (F_c, n_offers)
        # declared interactions; "1" (every customer) is row F_c: a main effect of the action feature
        b_offer = np.vstack([b_offer, np.zeros(n_o)])
        w_channel = np.vstack([w_channel, np.zeros(n_c)])
        c_index = {n: i for i, n in enumerate(c_names)} | {"1": self.n_customer}
        o_index = {n: i for i, n in enumerate(o_names)}
        for cust, act, w in r.interactions:
            i = c_index[cust]
            if act.startswith("channel="):
                w_channel[i, [c.name for c in d.channels].index(act[len("channel=") :])] += w
            elif act.startswith("offer=") and act not in o_index:
                b_offer[i, [o.name for o in d.offers].index(act[len("offer=") :])] += w
            else:
                b_offer[i] += w * o_matrix[:, o_index[act]]
        self.b_offer, self.b_channel = b_offer[:-1], w_channel[:-1]
        rates = np.array(r.offer_rates)
        self.offer_logit = np.log(rates / (1.0 - rates)) + spread + b_offer[-1]
        self.channel_main = w_channel[-1]
        self.offer_value = np.array(r.offer_values)
        ch = r.channels
        self.delivery = np.array([c.delivery for c in ch])
        self.open = np.array([c.open for c in ch])
        self.peak = np.array([c.peak_hour for c in ch])
        self.strength = np.array([c.hour_strength for c in ch])
        self.open_delay = np.array([c.open_delay_h for c in ch])
        self.effect = np.array([c.effect for c in ch]) + self.channel_main
        self.opt_out = np.array([c.opt_out for c in ch])
        self.opt_out_per = np.array([c.opt_out_per_contact for c in ch])
        self.slot_effect = np.array(r.slot_effects)
        self.cost = np.array([c.cost for c in d.channels])
        self.delay = np.array([c.delay_h for c in d.channels])
        rule = d.reward_rule()
        self.rule = rule
        self.window = rule.window_h
        self.counts_conversion = "converted" in rule.events
        left = self.window - self.delay
        self.f_open = np.where(left > 0, 1.0 - np.exp(-np.maximum(left, 0.0) / self.open_delay), 0.0)
        self.f_convert = np.where(left > 0, _hypoexponential_cdf(left, self.open_delay, r.conversion_delay_h), 0.0)
        self.mean, self.sd = self._reference()

    def _reference(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and sd of the customer features over a reference population (no history, at the start)."""
        from envs.world_simulation import sample_population  # the population's sampler lives with the simulation

        d, world = self.deployment, self.world
        pop = sample_population(world, d, Streams.of(world.response.seed, REFERENCE_ROWS, REFERENCE_PURPOSE))
        from nba.features import History

        X = d.features().build(pop.columns(d), History.empty(REFERENCE_ROWS, len(d.channels)), pop.now, pop.tz)
        x = X[:, : self.n_customer].astype(np.float64)
        sd = x.std(axis=0)
        return x.mean(axis=0), np.where(sd > 1e-9, sd, np.inf)

    def customer_scores(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, n_offers) and (N, C) log-odds of the customers' interactions with each offer and channel,
        from their observations ``X`` (N, d)."""
        s = (X[:, : self.n_customer].astype(np.float64) - self.mean) / self.sd
        return s @ self.b_offer, s @ self.b_channel

    def open_probability(self, channel: np.ndarray, local_hour: np.ndarray) -> np.ndarray:
        """P(seen | delivered) of messages on ``channel`` sent at ``local_hour``."""
        angle = (2.0 * np.pi / 24.0) * (local_hour - self.peak[channel])
        return self.open[channel] * (1.0 - self.strength[channel] * 0.5 * (1.0 - np.cos(angle)))
