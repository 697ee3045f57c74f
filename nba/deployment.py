"""A brand's own world, declared once: the deployment file (TOML or YAML).

A deployment says what a brand has: the customer **attributes** its systems know (typed: number,
category, boolean, time; with ranges, allowed values, defaults), its **channels** (cost, delivery
delay, the attribute that says a customer is reachable, quiet hours, daily capacity), its **offers**
(their features, the channels that may carry them, eligibility rules on attributes, validity dates,
a send budget), its **send slots**, its **contact policy** (caps per channel, per offer and overall,
minimum gap) and its **reward** (which outcome events count, what they are worth, the attribution
window). Rules are data, never evaluated code. :meth:`Deployment.eligibility` enforces all of it: the counts
across customers (budgets, capacities) from a :class:`Usage` the caller counts from its log, the caps
per offer from a :class:`nba.eligibility.RecentContacts` that keeps each contact's offer
(:meth:`Deployment.recent`).

>>> d = Deployment.load("examples/telecom/deployment.toml")   # doctest: +SKIP
>>> d.digest, d.action_space().n_actions                       # doctest: +SKIP

:meth:`Deployment.from_dict` validates everything and raises :class:`DeploymentError` naming the
field (``offers.data_boost.eligible.plan_type: unknown value 'gold'; valid: [...]``). The
:attr:`Deployment.digest` (SHA-256 of the canonical content) versions it: two files that declare
the same world have the same digest, whatever their format, comments or the order of keys within a
table; the order of attributes, channels, offers and slots counts, since it numbers the features
and the actions.

The file's shape::

    [deployment]
    name = "telco-retention"
    send_slots = ["now", 10, 18]          # "now", or local hours of the day

    [attributes]
    plan_type = { type = "category", values = ["prepaid", "postpaid"], required = true }
    arpu = { type = "number", min = 0, default = 0 }
    whatsapp_opt_in = { type = "boolean", default = false }
    contract_end_at = { type = "time" }    # no default: missing means unknown

    [channels.whatsapp]
    cost = 0.02
    delay_h = 0.1                          # typical delay from send to delivery
    consent = "whatsapp_opt_in"            # a boolean attribute; absent: everyone is reachable
    quiet_hours = [21, 9]                  # local hours [from, to) without sends
    capacity_per_day = 20000               # sends a day, all customers together (optional)

    [offers.data_boost]
    features = { category = "data", discount = 0.2, margin = 4.0 }
    channels = ["whatsapp", "sms"]         # absent: every channel
    eligible = { plan_type = ["prepaid"], arpu = { min = 10 } }
    valid_from = "2026-01-01"              # optional, with valid_until
    budget = 5000                          # sends in all (optional)

    [contact_policy]
    min_gap_h = 24
    caps = [{ channel = "*", max = 3, days = 7 }, { offer = "data_boost", max = 1, days = 30 }]

    [reward]
    events = { converted = "value", opted_out = -5.0 }   # "value": the event's own value
    window_h = 72
    subtract_cost = true

The default simulator scenario as a deployment: :func:`envs.scenario.Scenario.deployment`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cached_property
from itertools import repeat
from pathlib import Path
from typing import Any, NoReturn, cast

import numpy as np

from nba.actions import ActionSpace
from nba.eligibility import (
    Cap,
    ContactRules,
    OfferCap,
    Reason,
    RecentContacts,
    limit_to_remaining,
    reason_bits,
    send_time,
)
from nba.features import AttributeFeatures
from nba.log.records import EVENTS
from nba.log.rewards import RewardRule

ATTRIBUTE_TYPES = ("number", "category", "boolean", "time")
NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")  # attribute, channel and offer names
RESERVED = ("customer_id", "timezone", "now")  # request fields every deployment has
DAY_H = 24.0


class DeploymentError(ValueError):
    """An invalid deployment; the message starts with the offending field's path."""


def _fail(path: str, msg: str) -> NoReturn:
    raise DeploymentError(f"{path}: {msg}")


def check_table(value: Any, path: str, error: type[ValueError]) -> Mapping[str, Any]:
    """``value`` if it is a table (a mapping), else ``error("<path>: must be a table, got <type>")``; shared by
    the files declared beside a deployment (the latent world of :mod:`envs.world`)."""
    if not isinstance(value, Mapping):
        raise error(f"{path}: must be a table, got {type(value).__name__}")
    return value


def check_keys(table: Mapping[str, Any], path: str, allowed: tuple[str, ...], error: type[ValueError]) -> None:
    """``error("<path>.<key>: unknown field; valid: [...]")`` for the first key of ``table`` not ``allowed``."""
    for k in table:
        if k not in allowed:
            raise error(f"{f'{path}.{k}' if path else str(k)}: unknown field; valid: {list(allowed)}")


def _table(value: Any, path: str) -> Mapping[str, Any]:
    return check_table(value, path, DeploymentError)


def _keys(table: Mapping[str, Any], path: str, allowed: tuple[str, ...]) -> None:
    check_keys(table, path, allowed, DeploymentError)


def _name(value: Any, path: str) -> str:
    if not (isinstance(value, str) and NAME.match(value)):
        _fail(path, f"must be a lower-case name (letters, digits, _; at most 63 characters), got {value!r}")
    return value


def _number(value: Any, path: str, *, low: float | None = None, positive: bool = False) -> float:
    if not (isinstance(value, int | float) and not isinstance(value, bool) and _finite(value)):
        _fail(path, f"must be a finite number, got {_short(value)}")
    if positive and value <= 0:
        _fail(path, f"must be > 0, got {value!r}")
    if low is not None and value < low:
        _fail(path, f"must be >= {low:g}, got {value!r}")
    return float(value)


def _finite(value: int | float) -> bool:
    """A finite number that a float holds (an integer beyond 1.8e308 is not)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _short(value: Any, limit: int = 60) -> str:
    """repr of ``value`` cut to ``limit`` characters: a message never echoes a huge input whole."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _count(value: Any, path: str) -> int:
    if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        _fail(path, f"must be a positive integer, got {value!r}")
    return int(value)


def _hours_of(value: Any, path: str) -> float:
    """Hours since the epoch of an ISO date or date-time (UTC unless it says otherwise)."""
    if isinstance(value, datetime):
        t = value
    elif isinstance(value, date):
        t = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            t = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            _fail(path, f"must be an ISO 8601 date or date-time, got {_short(value)}")
    else:
        _fail(path, f"must be an ISO 8601 date or date-time, got {_short(value)}")
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.timestamp() / 3600.0


def read_document(path: str | Path, what: str, error: type[ValueError]) -> dict[str, Any]:
    """The plain data of a ``.toml``, ``.yaml`` or ``.yml`` file (deployments and scenarios); ``error``
    whose message starts with ``what`` when the file is missing or not valid."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what}: no such file {str(path)!r}")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise error(f"{what}: {path.name} is not valid YAML: {e}") from None
    elif path.suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise error(f"{what}: {path.name} is not valid TOML: {e}") from None
    else:
        raise error(f"{what}: {path.name!r} is neither .toml nor .yaml/.yml")
    if not isinstance(data, dict):
        raise error(f"{what}: {path.name} must hold a table at its top level, got {type(data).__name__}")
    return data


# ----------------------------------------------------------------------------- parts
@dataclass(frozen=True)
class Attribute:
    """A customer attribute the caller sends. ``default`` None: none (a missing value is unknown,
    or refused when ``required``)."""

    name: str
    type: str
    values: tuple[str, ...] = ()  # category: the allowed values
    min: float | None = None  # number
    max: float | None = None
    default: Any = None  # as check() returns it (a time: hours since the epoch)
    required: bool = False

    def check(self, value: Any, path: str) -> Any:
        """``value`` as this attribute holds it (a float, a str, a bool, hours since the epoch);
        DeploymentError naming ``path`` if it is not one."""
        if self.type == "number":
            x = _number(value, path)
            if (self.min is not None and x < self.min) or (self.max is not None and x > self.max):
                _fail(path, f"must be within [{self.min}, {self.max}], got {value!r}")
            return x
        if self.type == "category":
            if value not in self.values:
                _fail(path, f"unknown value {_short(value)}; valid: {list(self.values)}")
            return value
        if self.type == "boolean":
            if not isinstance(value, bool):
                _fail(path, f"must be true or false, got {_short(value)}")
            return value
        return _hours_of(value, path)


@dataclass(frozen=True)
class Channel:
    """A channel the brand sends on."""

    name: str
    cost: float = 0.0
    delay_h: float = 0.0
    consent: str | None = None  # a boolean attribute: reachable when true
    quiet_hours: tuple[int, int] | None = None  # local [from, to) without sends
    capacity_per_day: int | None = None


@dataclass(frozen=True)
class Rule:
    """An offer's eligibility on one attribute: one of ``values``, or a number within [``min``, ``max``]."""

    values: tuple[Any, ...] = ()
    min: float | None = None
    max: float | None = None

    def to_data(self) -> Any:
        """The rule as the deployment file writes it: the allowed values, or ``{min, max}``."""
        if self.values:
            return list(self.values)
        return {k: v for k, v in (("min", self.min), ("max", self.max)) if v is not None}


@dataclass(frozen=True)
class Offer:
    """An offer or content: its features, where and to whom it may go, when, and how many times."""

    name: str
    features: dict[str, float | str] = field(default_factory=dict)
    channels: tuple[str, ...] = ()  # empty: every channel
    eligible: dict[str, Rule] = field(default_factory=dict)
    valid_from_h: float | None = None
    valid_until_h: float | None = None
    budget: int | None = None


@dataclass(frozen=True)
class CapRule:
    """At most ``max`` contacts in ``window_h`` hours: on a channel, of an offer, or overall (both None)."""

    max: int
    window_h: float
    channel: str | None = None
    offer: str | None = None


@dataclass(frozen=True, eq=False)  # arrays: compare the fields, not the objects
class Usage:
    """What all customers together have used: the counts that offer budgets and channel capacities need.

    ``offer_sends`` (n_offers,): the contacts with each offer so far, in all (a budget counts every send,
    scheduled ones included). ``channel_sends`` (C, D): the contacts on each channel whose *send time*
    falls on UTC day ``day + j`` (days since the epoch: ``floor(hours / 24)``), for j in 0..D-1;
    :meth:`count` covers the day of the decision and the next one, since a send slot can send up to
    24 h after the decision. Build it with :meth:`count` from the log's contacts; a count that is
    not a non-negative integer raises ValueError naming the field.
    """

    offer_sends: np.ndarray
    channel_sends: np.ndarray
    day: int

    def __post_init__(self) -> None:
        for name, ndim in (("offer_sends", 1), ("channel_sends", 2)):
            x = np.asarray(getattr(self, name))
            if x.ndim != ndim or (x.size and x.dtype.kind not in "iuf"):
                shape = "(n_offers,)" if ndim == 1 else "(C, days)"
                raise ValueError(
                    f"usage.{name}: expected a {shape} array of counts, got shape {x.shape} dtype {x.dtype}"
                )
            x = x.astype(np.float64)
            if not (np.isfinite(x).all() and (x >= 0).all() and (x == np.round(x)).all()):
                raise ValueError(f"usage.{name}: counts must be integers >= 0")
            x = x.astype(np.int64)
            x.setflags(write=False)
            object.__setattr__(self, name, x)
        if np.asarray(self.channel_sends).shape[1] < 1:
            raise ValueError("usage.channel_sends: must count at least one day")
        if not (isinstance(self.day, int | np.integer) and not isinstance(self.day, bool)):
            raise ValueError(f"usage.day: must be an integer (days since the epoch), got {self.day!r}")
        object.__setattr__(self, "day", int(self.day))

    @classmethod
    def count(cls, deployment: Deployment, actions: np.ndarray, send_at: np.ndarray, now: np.ndarray | float) -> Usage:
        """The usage of ``actions`` (M,), the deployment's action indices of logged decisions (no contact
        is not counted), sent at ``send_at`` (M,) hours since the epoch, for deciding at ``now`` (scalar or
        (N,)): every contact counts toward its offer; toward its channel, those sending on the UTC days
        from the first ``now``'s to the day after the last ``now``'s. Give all the log's contacts, or
        at least those of offers with a budget and those sending from the first ``now``'s day on."""
        now = np.asarray(now, np.float64)
        if now.size == 0 or not np.isfinite(now).all():
            raise ValueError("now: must be finite hours since the epoch (a scalar or a non-empty array)")
        first, last = int(np.floor(now.min() / DAY_H)), int(np.floor(now.max() / DAY_H))
        empty = cls(
            np.zeros(len(deployment.offers), np.int64),
            np.zeros((len(deployment.channels), last - first + 2), np.int64),
            first,
        )
        return empty.plus(deployment, actions, send_at)

    def plus(self, deployment: Deployment, actions: np.ndarray, send_at: np.ndarray) -> Usage:
        """This usage with the contacts among ``actions`` (M,) sent at ``send_at`` (M,) added: what the next
        batch decides with once this batch's decisions are made."""
        space = deployment.action_space()
        actions = space.check(np.asarray(actions).ravel(), "actions")
        send_at = np.asarray(send_at, np.float64).ravel()
        if send_at.shape != actions.shape:
            raise ValueError(f"send_at: expected shape {actions.shape} like actions, got {send_at.shape}")
        if not np.isfinite(send_at).all():
            raise ValueError("send_at: must be finite hours since the epoch")
        self._check(deployment)
        contact = actions != 0
        a, when = actions[contact], send_at[contact]
        offers = self.offer_sends + np.bincount(space.content_of[a], minlength=len(deployment.offers))
        days = self.channel_sends.shape[1]
        d = np.floor(when / DAY_H).astype(np.int64) - self.day
        inside = (d >= 0) & (d < days)
        cells = space.channel_of[a][inside].astype(np.int64) * days + d[inside]
        channels = self.channel_sends + np.bincount(cells, minlength=self.channel_sends.size).reshape(-1, days)
        return Usage(offers, channels, self.day)

    def _check(self, deployment: Deployment) -> None:
        """ValueError naming the field when the counts do not fit ``deployment``'s offers and channels."""
        n_offers, c = len(deployment.offers), len(deployment.channels)
        if self.offer_sends.shape != (n_offers,):
            raise ValueError(
                f"usage.offer_sends: expected shape ({n_offers},) (one count per offer), got {self.offer_sends.shape}"
            )
        if self.channel_sends.shape[0] != c:
            raise ValueError(
                f"usage.channel_sends: expected shape ({c}, days) (one row per channel), got {self.channel_sends.shape}"
            )


FEW_ROWS = 4  # up to this many customers, checking row by row costs less than column by column


class AttributeColumns(Sequence[dict[str, Any]]):
    """Checked attributes of N customers held column by column (:meth:`Deployment.check_columns`), the
    columns as :meth:`Deployment.columns` makes them: float64 with NaN for unknown (numbers, times),
    object arrays otherwise (None for unknown), read-only.

    It reads as the sequence of N dicts :meth:`Deployment.check_attributes` returns, so it goes wherever
    checked attributes do (:func:`nba.decide.decide`, :meth:`Deployment.eligibility`), and those take
    its columns as they are, without a dict per customer.
    """

    __slots__ = ("_n", "columns")

    def __init__(self, columns: Mapping[str, np.ndarray], n: int) -> None:
        held = {}
        for name, col in columns.items():
            if col.shape != (n,):
                raise ValueError(f"columns.{name}: expected shape ({n},), got {col.shape}")
            col = col.view()
            col.setflags(write=False)
            held[name] = col
        self.columns: Mapping[str, np.ndarray] = held
        self._n = int(n)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return self.take(np.arange(self._n)[i])
        i = range(self._n)[i]  # IndexError beyond the rows
        return {name: _cell(col, i) for name, col in self.columns.items()}

    def __repr__(self) -> str:
        return f"AttributeColumns({self._n} rows: {', '.join(self.columns)})"

    def take(self, rows: np.ndarray) -> AttributeColumns:
        """The customers ``rows`` (indices), in that order."""
        rows = np.asarray(rows, np.intp)
        return AttributeColumns({name: col[rows] for name, col in self.columns.items()}, len(rows))

    @classmethod
    def concat(cls, parts: Sequence[AttributeColumns]) -> AttributeColumns:
        """The customers of ``parts`` one after the other (all checked by one deployment)."""
        if len(parts) == 1:
            return parts[0]
        names = list(parts[0].columns) if parts else []
        return cls(
            {name: np.concatenate([p.columns[name] for p in parts]) for name in names}, sum(len(p) for p in parts)
        )


def _cell(col: np.ndarray, i: int) -> Any:
    """Row ``i`` of a column as :meth:`Deployment.check_attributes` gives it (None for unknown)."""
    if col.dtype.kind == "f":
        x = float(col[i])
        return None if math.isnan(x) else x
    return col[i]


_NONE = type(None)
_TAKEN_AS_THEY_COME: dict[str, set[type]] = {  # value types checked column by column; others one value at a time
    "number": {int, float, _NONE},
    "category": {str, _NONE},
    "boolean": {bool, _NONE},
}


def _as_column(a: Attribute, values: list[Any]) -> np.ndarray:
    """Checked values of one attribute (None for unknown) as :meth:`Deployment.columns` holds them."""
    if a.type in ("number", "time"):
        return np.array([math.nan if v is None else v for v in values], np.float64)
    out = np.empty(len(values), object)
    out[:] = values
    return out


def _column(a: Attribute, values: list[Any]) -> tuple[np.ndarray | None, int]:
    """The column of attribute ``a`` from a batch's ``values`` (None: not given) as
    :meth:`Attribute.check` and the default make it, and the first row whose value may be refused
    (``len(values)`` when none: the column is then exact). A value the attribute may refuse is only
    flagged here; the caller checks that row itself. The column is None when a row is flagged."""
    n = len(values)
    types = set(map(type, values))
    if types == {_NONE} and not a.required:  # given by no row (an optional attribute requests often leave out)
        if a.type in ("number", "time"):
            return np.full(n, math.nan if a.default is None else a.default, np.float64), n
        return _as_column(a, [a.default] * n), n
    if a.type == "time" or not types <= _TAKEN_AS_THEY_COME[a.type]:
        out = []
        for i, v in enumerate(values):  # one at a time: times are parsed, odd types checked as they are
            if v is None:
                if a.required:
                    return None, i
                out.append(a.default)
                continue
            try:
                out.append(a.check(v, "value"))
            except DeploymentError:
                return None, i
        return _as_column(a, out), n
    given = _NONE not in types
    first = values.index(None) if a.required and not given else n  # a required one not given
    if a.type == "number":
        if given:
            x = np.array(values, np.float64)
        else:
            x = np.array([math.nan if v is None else v for v in values], np.float64)
            unknown = np.isnan(x)
            if int(np.count_nonzero(unknown)) != values.count(None):  # a NaN given (refused below)
                unknown = np.fromiter((v is None for v in values), bool, n)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(x)
            if not given:
                bad &= ~unknown
            if a.min is not None:
                bad |= x < a.min
            if a.max is not None:
                bad |= x > a.max
        if bad.any() or first < n:
            return None, min(first, int(np.argmax(bad)) if bad.any() else n)
        if not given:
            x[unknown] = math.nan if a.default is None else a.default
        return x, n
    if a.type == "category":
        valid = {*a.values, None}
        if not valid.issuperset(values):
            first = next((i for i, v in enumerate(values[:first]) if v not in valid), first)
    if first < n:
        return None, first
    if not given and a.default is not None:
        values = [a.default if v is None else v for v in values]
    return _as_column(a, values), n


def _once(method: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A method of a frozen deployment computed once per instance: the decide path asks for the action
    space, the features and the rules at every decision, and a catalogue of 1,000 offers made that cost
    milliseconds. The result is shared: arrays come back read-only."""
    key = f"_once_{method.__name__}"

    @functools.wraps(method)
    def cached(self: Any) -> Any:
        try:
            return self.__dict__[key]
        except KeyError:
            value = method(self)
            if isinstance(value, np.ndarray):
                value.setflags(write=False)
            self.__dict__[key] = value
            return value

    return cached


# ----------------------------------------------------------------------------- the deployment
@dataclass(frozen=True)
class Deployment:
    """A validated deployment (build with :meth:`load` or :meth:`from_dict`)."""

    name: str
    attributes: tuple[Attribute, ...]
    channels: tuple[Channel, ...]
    offers: tuple[Offer, ...]
    send_slots: tuple[int | None, ...] = (None,)
    caps: tuple[CapRule, ...] = ()
    min_gap_h: float = 0.0
    reward_events: dict[str, str | float] = field(default_factory=lambda: {"converted": "value"})
    reward_window_h: float = 72.0
    subtract_cost: bool = True
    description: str = ""

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path) -> Deployment:
        """A deployment from a ``.toml``, ``.yaml`` or ``.yml`` file."""
        return cls.from_dict(read_document(path, "deployment", DeploymentError))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Deployment:
        """Validate plain data (a TOML or YAML document); DeploymentError naming the field otherwise."""
        data = _table(data, "deployment file")
        _keys(data, "", ("deployment", "attributes", "channels", "offers", "contact_policy", "reward"))
        head = _table(data.get("deployment", {}), "deployment")
        _keys(head, "deployment", ("name", "description", "send_slots"))
        if "name" not in head:
            _fail("deployment.name", "missing")
        name = head["name"]
        if not (isinstance(name, str) and name.strip()):
            _fail("deployment.name", f"must be a non-empty string, got {name!r}")
        description = head.get("description", "")
        if not isinstance(description, str):
            _fail("deployment.description", f"must be a string, got {description!r}")
        slots = _slots(head.get("send_slots", ["now"]))
        attributes = _attributes(_table(data.get("attributes", {}), "attributes"))
        by_name = {a.name: a for a in attributes}
        channels = _channels(_table(data.get("channels", {}), "channels"), by_name)
        offers = _offers(_table(data.get("offers", {}), "offers"), by_name, {c.name for c in channels})
        caps, gap = _contact_policy(
            _table(data.get("contact_policy", {}), "contact_policy"),
            {c.name for c in channels},
            {o.name for o in offers},
        )
        events, window, subtract = _reward(_table(data.get("reward", {}), "reward"))
        return cls(name.strip(), attributes, channels, offers, slots, caps, gap, events, window, subtract, description)

    # ------------------------------------------------------------------ identity
    def to_dict(self) -> dict[str, Any]:
        """Canonical plain data (what the digest is taken of; :meth:`from_dict` reads it back)."""

        def clean(d: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in d.items() if v is not None and v != () and v != {} and v != []}

        def when(h: float | None) -> str | None:
            return None if h is None else datetime.fromtimestamp(h * 3600.0, UTC).isoformat()

        return {
            "deployment": clean(
                {
                    "name": self.name,
                    "description": self.description or None,
                    "send_slots": ["now" if s is None else s for s in self.send_slots],
                }
            ),
            "attributes": {
                a.name: clean(
                    {
                        "type": a.type,
                        "values": list(a.values),
                        "min": a.min,
                        "max": a.max,
                        "default": when(a.default) if a.type == "time" else a.default,
                        "required": a.required or None,
                    }
                )
                for a in self.attributes
            },
            "channels": {
                c.name: clean(
                    {
                        "cost": c.cost,
                        "delay_h": c.delay_h,
                        "consent": c.consent,
                        "quiet_hours": None if c.quiet_hours is None else list(c.quiet_hours),
                        "capacity_per_day": c.capacity_per_day,
                    }
                )
                for c in self.channels
            },
            "offers": {
                o.name: clean(
                    {
                        "features": dict(sorted(o.features.items())),
                        "channels": list(o.channels),
                        "eligible": {k: o.eligible[k].to_data() for k in sorted(o.eligible)},
                        "valid_from": when(o.valid_from_h),
                        "valid_until": when(o.valid_until_h),
                        "budget": o.budget,
                    }
                )
                for o in self.offers
            },
            "contact_policy": {
                "min_gap_h": self.min_gap_h,
                "caps": [
                    clean(
                        {
                            "channel": c.channel or ("*" if c.offer is None else None),
                            "offer": c.offer,
                            "max": c.max,
                            "hours": c.window_h,
                        }
                    )
                    for c in self.caps
                ],
            },
            "reward": {
                "events": dict(self.reward_events),
                "window_h": self.reward_window_h,
                "subtract_cost": self.subtract_cost,
            },
        }

    @cached_property
    def digest(self) -> str:
        """``sha256:<hex>`` of the canonical content: same world, same digest. The order of the attributes,
        channels, offers and slots counts (it numbers the features and the actions); the order of keys
        within a table does not."""
        text = json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=True)
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    # ------------------------------------------------------------------ what the engine runs on
    def attribute(self, name: str) -> Attribute:
        """The declared attribute ``name`` (KeyError naming it when the deployment declares none so named)."""
        for a in self.attributes:
            if a.name == name:
                return a
        raise KeyError(name)

    @_once
    def action_space(self) -> ActionSpace:
        """No contact, then every (channel, offer, slot)."""
        return ActionSpace(tuple(c.name for c in self.channels), tuple(o.name for o in self.offers), self.send_slots)

    @_once
    def contact_rules(self) -> ContactRules:
        """The channel and overall caps, quiet hours and minimum gap as :class:`nba.eligibility.ContactRules`
        (the caps on single offers are :meth:`offer_caps`)."""
        quiet = {c.name: c.quiet_hours for c in self.channels if c.quiet_hours is not None}
        caps = tuple(Cap(c.channel, c.max, c.window_h) for c in self.caps if c.offer is None)
        return ContactRules(
            quiet_hours=quiet, caps=caps, min_gap_h=self.min_gap_h, channels=tuple(c.name for c in self.channels)
        )

    @_once
    def offer_caps(self) -> tuple[OfferCap, ...]:
        """The caps on single offers as :class:`nba.eligibility.OfferCap`, offers by their index (their
        content index in :meth:`action_space`)."""
        index = {o.name: j for j, o in enumerate(self.offers)}
        return tuple(OfferCap(index[c.offer], c.max, c.window_h) for c in self.caps if c.offer is not None)

    def recent(self, n: int) -> RecentContacts:
        """No contacts yet for ``n`` customers, sized for every cap of the contact policy, per offer
        included: record each contact with its offer, ``record(rows, channels, send_at, offers)``,
        the offer being ``action_space().content_of[action]``."""
        return RecentContacts.for_rules(n, len(self.channels), self.contact_rules(), self.offer_caps())

    def reward_rule(self) -> RewardRule:
        """The reward as :class:`nba.log.rewards.RewardRule`: the events counted with their own value,
        a fixed value for an opt-out."""
        counted = tuple(e for e, v in self.reward_events.items() if v == "value")
        opt_out = self.reward_events.get("opted_out", 0.0)
        return RewardRule(
            window_h=self.reward_window_h,
            events=counted,
            opt_out_value=0.0 if opt_out == "value" else float(opt_out),
            subtract_cost=self.subtract_cost,
        )

    def check_attributes(self, values: Mapping[str, Any], path: str = "attributes") -> dict[str, Any]:
        """A request's attributes checked and completed with defaults: DeploymentError naming
        ``attributes.<name>`` for an unknown attribute, a wrong type, a value out of range, or a
        required one missing."""
        values = _table(values, path)
        known = {a.name: a for a in self.attributes}
        for k in values:
            if k not in known:
                _fail(f"{path}.{k}", f"unknown attribute; declared: {sorted(known)}")
        out: dict[str, Any] = {}
        for a in self.attributes:
            if a.name in values and values[a.name] is not None:
                out[a.name] = a.check(values[a.name], f"{path}.{a.name}")
            elif a.required:
                _fail(f"{path}.{a.name}", "missing (required)")
            else:
                out[a.name] = a.default
        return out

    def check_columns(self, rows: Sequence[Mapping[str, Any]], path: str = "attributes[{i}]") -> AttributeColumns:
        """The attributes of N customers checked as :meth:`check_attributes` checks each of them, column by
        column (one pass per attribute over the batch, not a check per value): the same values, and
        for the first row it refuses the same DeploymentError, its field named from ``path``
        (``{i}``: the row's index; ``"customers[{i}].attributes"`` names ``customers[3].attributes.arpu``).
        Nothing is kept of a refused batch."""
        n = len(rows)
        if n <= FEW_ROWS:
            return self._check_rows(rows, path)
        try:
            columns, first = self._columns_of(rows)
        except (TypeError, ValueError, OverflowError):  # values the column pass cannot take: row by row
            return self._check_rows(rows, path)
        if first < n:
            self.check_attributes(rows[first], path.format(i=first))  # raises that row's own error
            return self._check_rows(rows, path)  # flagged, yet valid (a type taken one value at a time)
        return AttributeColumns(columns, n)

    def _check_rows(self, rows: Sequence[Mapping[str, Any]], path: str) -> AttributeColumns:
        checked = [self.check_attributes(r, path.format(i=i)) for i, r in enumerate(rows)]
        return AttributeColumns(self.columns(checked), len(checked))

    def _columns_of(self, rows: Sequence[Mapping[str, Any]]) -> tuple[dict[str, np.ndarray], int]:
        """The columns of ``rows`` (:func:`_column`) and the first row that may be refused (``len(rows)``:
        none, and the columns are exact)."""
        n = len(rows)
        plain = set(map(type, rows)) == {dict}
        if not plain:
            first = next((i for i, r in enumerate(rows) if not isinstance(r, Mapping)), n)
            rows = rows[:first]
        else:
            first = n
        dicts = cast("list[dict[str, Any]]", rows)  # when plain: dict.get mapped over them
        known, given = self._attribute_names(), set().union(*rows)
        if not known.issuperset(given):
            first = min(first, next(i for i, r in enumerate(rows) if not known.issuperset(r)))
        columns: dict[str, np.ndarray] = {}
        for a in self.attributes:
            if a.name not in given:  # no row gives it
                values: list[Any] = [None] * len(rows)
            elif plain:
                values = list(map(dict.get, dicts, repeat(a.name)))
            else:
                values = [r.get(a.name) for r in rows]
            col, bad = _column(a, values)
            first = min(first, bad)
            if col is not None:
                columns[a.name] = col
        return columns, first

    @_once
    def _attribute_names(self) -> frozenset[str]:
        return frozenset(a.name for a in self.attributes)

    @_once
    def features(self) -> AttributeFeatures:
        """The layout of what a policy sees of this deployment's customers (:class:`nba.features.AttributeFeatures`)."""
        return AttributeFeatures(self)

    # ------------------------------------------------------------------ who may get what
    def columns(self, attributes: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """Checked attributes of N customers (as :meth:`check_attributes` returns them) by attribute:
        float64 with NaN for unknown (numbers, times), object arrays otherwise (None for unknown);
        :class:`AttributeColumns` give theirs as they are (read-only)."""
        if isinstance(attributes, AttributeColumns):
            return dict(attributes.columns)
        out = {}
        for a in self.attributes:
            values = [row.get(a.name) for row in attributes]
            if a.type in ("number", "time"):
                out[a.name] = np.array([np.nan if v is None else v for v in values], np.float64)
            else:
                out[a.name] = np.array(values, dtype=object)
        return out

    def consent(self, attributes: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """(N, C) bool: reachable on each channel (its consent attribute true; a channel without one:
        everyone)."""
        return self._consent(self.columns(attributes), len(attributes))

    def _consent(self, cols: Mapping[str, np.ndarray], n: int) -> np.ndarray:
        out = np.ones((n, len(self.channels)), bool)
        for j, c in enumerate(self.channels):
            if c.consent is not None:
                out[:, j] = cols[c.consent] == True  # noqa: E712 - elementwise on an object array: None is not
        return out

    def offers_allowed(self, attributes: Sequence[Mapping[str, Any]], now_h: np.ndarray | float) -> np.ndarray:
        """(N, n_offers) bool: the offers each customer may get at ``now_h`` (hours since the epoch), by
        the offers' eligibility rules and validity dates. An attribute a rule needs but the customer's
        value is unknown excludes the offer."""
        return self._offers_allowed(self.columns(attributes), len(attributes), now_h)

    def _offers_allowed(self, cols: Mapping[str, np.ndarray], n: int, now_h: np.ndarray | float) -> np.ndarray:
        now = np.broadcast_to(np.asarray(now_h, np.float64), (n,))
        out = np.ones((n, len(self.offers)), bool)
        for j in self._ruled_offers():
            o = self.offers[j]
            ok = out[:, j]
            for name, rule in o.eligible.items():
                col = cols[name]
                if rule.values:
                    ok &= np.isin(col, np.array(rule.values, dtype=object))
                else:
                    with np.errstate(invalid="ignore"):
                        ok &= ~np.isnan(col)
                        if rule.min is not None:
                            ok &= col >= rule.min
                        if rule.max is not None:
                            ok &= col <= rule.max
            if o.valid_from_h is not None:
                ok &= now >= o.valid_from_h
            if o.valid_until_h is not None:
                ok &= now < o.valid_until_h
        return out

    @_once
    def offer_channels(self) -> np.ndarray:
        """(n_offers, C) bool: the channels each offer may go out on."""
        names = [c.name for c in self.channels]
        out = np.ones((len(self.offers), len(names)), bool)
        for j, o in enumerate(self.offers):
            if o.channels:
                out[j] = np.isin(names, o.channels)
        return out

    def eligibility(
        self,
        attributes: Sequence[Mapping[str, Any]],
        recent: RecentContacts,
        *,
        now: np.ndarray | float,
        tz_offset: np.ndarray | float,
        allowed: np.ndarray | None = None,
        reasons: bool = False,
        columns: Mapping[str, np.ndarray] | None = None,
        usage: Usage | None = None,
        offers: np.ndarray | None = None,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """(N, A) mask of the actions each customer may get now, with the reasons (``reasons``): the whole
        contact policy and the offers' own rules. No contact stays eligible.

        * per customer (:func:`nba.eligibility.eligibility`): consent from the channels' attributes,
          quiet hours, channel and overall caps, minimum gap; the caps on single offers
          (:meth:`offer_caps`) with reason OFFER, judged from ``recent``'s per-offer record. A
          ``recent`` that keeps none (``RecentContacts.for_rules`` without ``offer_caps``) has no
          offer to judge them by, and they are not checked: build it with :meth:`recent`;
        * the offers' rules (:attr:`nba.eligibility.Reason.OFFER`): attributes, channels, dates;
        * across customers, with ``usage`` (:class:`Usage`, reason BUDGET): an offer whose budget is
          spent, a channel whose ``capacity_per_day`` is reached on the UTC day a slot sends. Within
          the batch, what is left goes to the first rows (row order) that could take it
          (:func:`nba.eligibility.limit_to_remaining`), so the batch cannot overshoot whatever the
          policy chooses; give the next batch the usage with this one's decisions added
          (:meth:`Usage.plus`). ``usage`` None: budgets and capacities are not checked;
        * ``offers`` (N, n_offers) bool, the offers each request is restricted to (reason RESTRICTED
          on the others), applied after the counts (a row's restriction does not give what is left
          to a later row).

        ``columns``: :meth:`columns` of ``attributes``, when the caller has them already. ValueError
        naming the field when ``usage`` or ``offers`` does not fit this deployment.
        """
        space, n = self.action_space(), len(attributes)
        c, k, s = len(self.channels), len(self.offers), space.n_slots
        if usage is not None:
            usage._check(self)
        if offers is not None:
            offers = np.asarray(offers, bool)
            if offers.shape != (n, k):
                raise ValueError(f"offers: expected shape {(n, k)}, got {offers.shape}")
        cols = self.columns(attributes) if columns is None else columns
        offer_caps = self.offer_caps() if recent.offer_times is not None else ()
        bits = reason_bits(
            space,
            self.contact_rules(),
            recent,
            now=np.asarray(now, np.float64),
            tz_offset=np.asarray(tz_offset, np.float64),
            consent=self._consent(cols, n),
            allowed=allowed,
            offer_caps=offer_caps,
        )
        # a view: each action's (channel, offer x slot); a per-offer verdict is repeated over the slots, so
        # that it is or-ed in rows of K x S bytes (as (N, C, K, S), NumPy loops over rows of S bytes)
        grid = bits[:, 1:].reshape(n, c, k * s)
        if self._ruled_offers():
            closed = (~self._offers_allowed(cols, n, now)).view(np.uint8) * np.uint8(Reason.OFFER)
            grid |= np.repeat(closed, s, axis=1)[:, None, :]
        off_channel = self._off_channel()
        if off_channel is not None:
            grid |= off_channel
        if usage is not None:
            budget = np.array([np.inf if o.budget is None else o.budget for o in self.offers])
            capacity = np.array([np.inf if c.capacity_per_day is None else c.capacity_per_day for c in self.channels])
            now_v = np.broadcast_to(np.asarray(now, np.float64), (n,))
            send = send_time(space, now_v, np.broadcast_to(np.asarray(tz_offset, np.float64), (n,)))
            day = np.floor(send / DAY_H) - usage.day
            days = usage.channel_sends.shape[1]
            if np.isfinite(capacity).any() and n and (day.min() < 0 or day.max() >= days):
                raise ValueError(
                    f"usage.day: counts the channels' sends on UTC days {usage.day}.."
                    f"{usage.day + days - 1}, the batch sends from day {usage.day + int(day.min())} to "
                    f"{usage.day + int(day.max())} (Usage.count at the decision's now)"
                )
            limit_to_remaining(
                space,
                bits,
                send,
                offer_left=budget - usage.offer_sends,
                channel_left=capacity[:, None] - usage.channel_sends,
                first_day=usage.day,
            )
        if offers is not None and not offers.all():
            grid |= np.repeat((~offers).view(np.uint8) * np.uint8(Reason.RESTRICTED), s, axis=1)[:, None, :]
        mask = bits == 0
        return (mask, bits) if reasons else mask

    @_once
    def _ruled_offers(self) -> tuple[int, ...]:
        """The offers with eligibility rules or validity dates (the others are open to everyone)."""
        return tuple(
            j
            for j, o in enumerate(self.offers)
            if o.eligible or o.valid_from_h is not None or o.valid_until_h is not None
        )

    @_once
    def _off_channel(self) -> np.ndarray | None:
        """(C, n_offers x S) uint8: OFFER on the actions of an offer that may not go out on the channel; None
        when every offer may go out on every channel."""
        closed = ~self.offer_channels().T
        if not closed.any():
            return None
        return np.repeat(closed.view(np.uint8) * np.uint8(Reason.OFFER), self.action_space().n_slots, axis=1)

    def summary(self) -> str:
        """A few lines a person reads: what the file declares, and its digest."""
        space = self.action_space()
        offer_features = sorted({k for o in self.offers for k in o.features})
        lines = [
            f"deployment {self.name!r} ({self.digest[:19]}..)",
            f"  attributes: {len(self.attributes)} ({', '.join(f'{a.name}:{a.type}' for a in self.attributes)})",
            f"  channels:   {', '.join(c.name for c in self.channels)}",
            f"  offers:     {len(self.offers)} with features {offer_features or 'none'}",
            f"  send slots: {', '.join('now' if s is None else f'{s}h' for s in self.send_slots)}",
            f"  actions:    {space.n_actions} (no contact + channels x offers x slots)",
            f"  caps:       {len(self.caps)}, minimum gap {self.min_gap_h:g} h",
            f"  reward:     {', '.join(f'{e}={v}' for e, v in self.reward_events.items())} within "
            f"{self.reward_window_h:g} h{', minus costs' if self.subtract_cost else ''}",
        ]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- sections
def _slots(raw: Any) -> tuple[int | None, ...]:
    if not isinstance(raw, list | tuple) or not raw:
        _fail("deployment.send_slots", f'must be a non-empty list of "now" or hours, got {raw!r}')
    slots: list[int | None] = []
    for i, s in enumerate(raw):
        if s == "now":
            slots.append(None)
        elif isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 24:
            slots.append(s)
        else:
            _fail(f"deployment.send_slots[{i}]", f'must be "now" or an hour in 0..23, got {s!r}')
    if len(set(slots)) != len(slots):
        _fail("deployment.send_slots", f"must not repeat a slot, got {raw!r}")
    return tuple(slots)


def _attributes(table: Mapping[str, Any]) -> tuple[Attribute, ...]:
    out = []
    for name, spec in table.items():
        path = f"attributes.{name}"
        _name(name, path)
        if name in RESERVED:
            _fail(path, f"is a field of every request ({', '.join(RESERVED)}); choose another name")
        spec = _table(spec, path)
        _keys(spec, path, ("type", "values", "min", "max", "default", "required", "description"))
        kind = spec.get("type")
        if not isinstance(kind, str) or kind not in ATTRIBUTE_TYPES:
            _fail(f"{path}.type", f"must be one of {list(ATTRIBUTE_TYPES)}, got {kind!r}")
        required = spec.get("required", False)
        if not isinstance(required, bool):
            _fail(f"{path}.required", f"must be true or false, got {required!r}")
        values: tuple[str, ...] = ()
        low = high = None
        if kind == "category":
            raw = spec.get("values")
            if not (isinstance(raw, list) and raw and all(isinstance(v, str) and v for v in raw)):
                _fail(f"{path}.values", f"must be a non-empty list of strings, got {raw!r}")
            if len(set(raw)) != len(raw):
                _fail(f"{path}.values", f"must not repeat a value, got {raw!r}")
            values = tuple(raw)
        elif "values" in spec:
            _fail(f"{path}.values", f"only a category has values (this is a {kind})")
        if kind == "number":
            low = None if spec.get("min") is None else _number(spec["min"], f"{path}.min")
            high = None if spec.get("max") is None else _number(spec["max"], f"{path}.max")
            if low is not None and high is not None and low > high:
                _fail(path, f"min {low:g} is above max {high:g}")
        elif "min" in spec or "max" in spec:
            _fail(f"{path}.{'min' if 'min' in spec else 'max'}", f"only a number has a range (this is a {kind})")
        attribute = Attribute(name, kind, values, low, high, None, required)
        default = spec.get("default")
        if default is not None and not (kind == "time" and default == "none"):
            if required:
                _fail(f"{path}.default", "a required attribute has no default")
            attribute = Attribute(name, kind, values, low, high, attribute.check(default, f"{path}.default"), required)
        out.append(attribute)
    return tuple(out)


def _channels(table: Mapping[str, Any], attributes: dict[str, Attribute]) -> tuple[Channel, ...]:
    if not table:
        _fail("channels", "declare at least one channel")
    out = []
    for name, spec in table.items():
        path = f"channels.{name}"
        _name(name, path)
        spec = _table(spec, path)
        _keys(spec, path, ("cost", "delay_h", "consent", "quiet_hours", "capacity_per_day", "description"))
        consent = spec.get("consent")
        if consent is not None:
            a = attributes.get(consent)
            if a is None or a.type != "boolean":
                _fail(
                    f"{path}.consent",
                    f"must name a boolean attribute, got {consent!r}; boolean attributes: "
                    f"{sorted(k for k, v in attributes.items() if v.type == 'boolean')}",
                )
        quiet = spec.get("quiet_hours")
        if quiet is not None:
            ok = (
                isinstance(quiet, list | tuple)
                and len(quiet) == 2
                and all(isinstance(h, int) and not isinstance(h, bool) and 0 <= h < 24 for h in quiet)
                and quiet[0] != quiet[1]
            )
            if not ok:
                _fail(f"{path}.quiet_hours", f"must be [from, to], two different hours in 0..23, got {quiet!r}")
            quiet = (int(quiet[0]), int(quiet[1]))
        capacity = spec.get("capacity_per_day")
        out.append(
            Channel(
                name,
                _number(spec.get("cost", 0.0), f"{path}.cost", low=0.0),
                _number(spec.get("delay_h", 0.0), f"{path}.delay_h", low=0.0),
                consent,
                quiet,
                None if capacity is None else _count(capacity, f"{path}.capacity_per_day"),
            )
        )
    return tuple(out)


def _rule(attribute: Attribute | None, rule: Any, path: str) -> Rule:
    """An offer's eligibility rule on one attribute: allowed values, or {min, max} for a number."""
    if attribute is None:
        _fail(path, "not a declared attribute")
    if attribute.type == "number":
        rule = _table(rule, path)
        _keys(rule, path, ("min", "max"))
        if not rule:
            _fail(path, "give min, max or both")
        low = None if rule.get("min") is None else _number(rule["min"], f"{path}.min")
        high = None if rule.get("max") is None else _number(rule["max"], f"{path}.max")
        if low is not None and high is not None and low > high:
            _fail(path, f"min {low:g} is above max {high:g}")
        return Rule(min=low, max=high)
    if attribute.type == "time":
        _fail(path, "a time attribute cannot restrict an offer (use valid_from / valid_until)")
    allowed = rule if isinstance(rule, list) else [rule]
    if not allowed:
        _fail(path, "must allow at least one value")
    for i, v in enumerate(allowed):
        attribute.check(v, f"{path}[{i}]" if isinstance(rule, list) else path)
    return Rule(values=tuple(allowed))


def _offers(table: Mapping[str, Any], attributes: dict[str, Attribute], channels: set[str]) -> tuple[Offer, ...]:
    if not table:
        _fail("offers", "declare at least one offer (or content)")
    out = []
    schema: dict[str, tuple[str, str]] = {}  # feature -> (kind, the first offer declaring it)
    for name, spec in table.items():
        path = f"offers.{name}"
        _name(name, path)
        spec = _table(spec, path)
        _keys(spec, path, ("features", "channels", "eligible", "valid_from", "valid_until", "budget", "description"))
        features = dict(_table(spec.get("features", {}), f"{path}.features"))
        for k, v in features.items():
            _name(k, f"{path}.features.{k}")
            if isinstance(v, bool) or not isinstance(v, int | float | str):
                _fail(f"{path}.features.{k}", f"must be a number or a string, got {v!r}")
            if not isinstance(v, str):
                features[k] = _number(v, f"{path}.features.{k}")
            kind = "category" if isinstance(v, str) else "number"
            first = schema.setdefault(k, (kind, name))
            if first[0] != kind:
                _fail(f"{path}.features.{k}", f"is a {kind} here but a {first[0]} in offers.{first[1]}")
        on = spec.get("channels", [])
        if not isinstance(on, list):
            _fail(f"{path}.channels", f"must be a list of channel names, got {on!r}")
        for i, ch in enumerate(on):
            if ch not in channels:
                _fail(f"{path}.channels[{i}]", f"unknown channel {ch!r}; declared: {sorted(channels)}")
        rules = _table(spec.get("eligible", {}), f"{path}.eligible")
        eligible = {k: _rule(attributes.get(k), v, f"{path}.eligible.{k}") for k, v in rules.items()}
        start = None if spec.get("valid_from") is None else _hours_of(spec["valid_from"], f"{path}.valid_from")
        end = None if spec.get("valid_until") is None else _hours_of(spec["valid_until"], f"{path}.valid_until")
        if start is not None and end is not None and start >= end:
            _fail(f"{path}.valid_until", "must come after valid_from")
        budget = None if spec.get("budget") is None else _count(spec["budget"], f"{path}.budget")
        out.append(Offer(name, features, tuple(on), eligible, start, end, budget))
    for o in out:  # every offer describes itself with the same features, so policies can compare them
        missing = sorted(set(schema) - set(o.features))
        if missing:
            _fail(
                f"offers.{o.name}.features",
                f"missing {missing} that other offers declare (e.g. offers.{schema[missing[0]][1]})",
            )
    return tuple(out)


def _contact_policy(
    table: Mapping[str, Any], channels: set[str], offers: set[str]
) -> tuple[tuple[CapRule, ...], float]:
    _keys(table, "contact_policy", ("caps", "min_gap_h"))
    gap = _number(table.get("min_gap_h", 0.0), "contact_policy.min_gap_h", low=0.0)
    raw = table.get("caps", [])
    if not isinstance(raw, list):
        _fail("contact_policy.caps", f"must be a list of tables, got {raw!r}")
    caps = []
    for i, item in enumerate(raw):
        path = f"contact_policy.caps[{i}]"
        item = _table(item, path)
        _keys(item, path, ("channel", "offer", "max", "days", "hours"))
        channel, offer = item.get("channel"), item.get("offer")
        if channel is not None and offer is not None:
            _fail(path, "caps one channel or one offer, not both")
        if channel is None and offer is None:
            _fail(path, 'give channel (a name, or "*" for all channels together) or offer')
        if channel is not None and channel != "*" and channel not in channels:
            _fail(f"{path}.channel", f'unknown channel {channel!r}; declared: {sorted(channels)} or "*"')
        if offer is not None and offer not in offers:
            _fail(f"{path}.offer", f"unknown offer {offer!r}; declared: {sorted(offers)}")
        if ("days" in item) == ("hours" in item):
            _fail(path, "give the window as days or as hours (one of them)")
        window = (
            _number(item["days"], f"{path}.days", positive=True) * DAY_H
            if "days" in item
            else _number(item["hours"], f"{path}.hours", positive=True)
        )
        if "max" not in item:
            _fail(f"{path}.max", "missing")
        caps.append(
            CapRule(_count(item["max"], f"{path}.max"), window, None if channel in (None, "*") else channel, offer)
        )
    return tuple(caps), gap


def _reward(table: Mapping[str, Any]) -> tuple[dict[str, str | float], float, bool]:
    _keys(table, "reward", ("events", "window_h", "subtract_cost"))
    events = dict(_table(table.get("events", {"converted": "value"}), "reward.events"))
    if not events:
        _fail("reward.events", "count at least one event")
    for e, v in events.items():
        path = f"reward.events.{e}"
        if e not in EVENTS:
            _fail(path, f"unknown event; valid: {list(EVENTS)}")
        if v != "value" and e != "opted_out":
            _fail(path, 'must be "value" (the event\'s own value); a fixed value is for opted_out only')
        if v != "value":
            events[e] = _number(v, path)
    window = _number(table.get("window_h", 72.0), "reward.window_h", positive=True)
    subtract = table.get("subtract_cost", True)
    if not isinstance(subtract, bool):
        _fail("reward.subtract_cost", f"must be true or false, got {subtract!r}")
    return events, window, subtract
