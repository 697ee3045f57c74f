"""The contact policy: which actions each customer may be sent, before any policy chooses.

The simulator and the service share this module. It turns a request (time, time zone, consent,
the caller's channel restrictions, channel budgets) and each customer's recent contacts into an
(N, A) boolean mask of eligible actions. No contact (action 0) is always eligible. The rules are:

* **consent**: the customer can be reached on the channel (opted in, app installed);
* **restricted**: the caller may exclude channels per request (``allowed``);
* **quiet hours**: per channel, local hours ``[start, end)`` in which nothing is sent on it,
  wrapping past midnight (``(21, 8)`` is 21:00-07:59). They are judged at the *send* time of an
  action: the local hour of ``now`` for the "now" slot, the slot's own hour otherwise;
* **frequency caps**: at most ``max_count`` contacts on a channel, or on all channels together,
  within any ``window_h`` hours;
* **minimum gap**: no two contacts, on any channel, closer than ``min_gap_h``;
* **budget**: a channel whose cost exceeds what is left of its budget is out;
* **offer caps** (``offer_caps``): at most ``max_count`` contacts of one offer, on any channel, within
  any ``window_h`` hours (:class:`OfferCap`);
* **counts across customers** (:func:`limit_to_remaining`): an offer's sends left (a deployment's
  budget), a channel's sends left on a UTC day (its daily capacity); a batch is masked so that it
  cannot take more than is left.

The reasons are the eight bits of a uint8, all in use, so the last two rules reuse the nearest: a cap
on an offer is OFFER (it excludes one offer), a spent count is BUDGET.

Caps and the gap are judged at the send time ``s`` of each slot (:func:`send_time`): an action is
blocked by a cap when ``max_count`` recorded contacts already lie strictly within ``window_h`` of
``s``, before or after it (a contact scheduled for later counts too), and by the gap when any
recorded contact lies strictly within ``min_gap_h`` of ``s``. This keeps every cap true of the
actual sends, including sends scheduled in a slot hours after the decision: in any half-open
span of ``window_h`` hours there are never more than ``max_count`` contacts. A contact counts as
soon as it is recorded; record each decided contact right away, stamped with its send time
(:meth:`RecentContacts.record_decisions`). :class:`RecentContacts` keeps, per customer, the latest
``k`` send times on each channel and on all channels (and of each offer an offer cap names), which
is all a cap of up to ``k`` needs.

For a batch of N customers and A = 1 + channels x contents x slots actions, every rule is
evaluated once per (channel, slot) pair on (N,) vectors and then copied to the contents; an offer
cap once per (offer, slot).

Times are hours since the Unix epoch (UTC); a customer's local hour is ``(now + tz_offset) mod 24``.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal, NoReturn, overload
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from nba.actions import CHANNELS, NO_CONTACT, ActionSpace
from nba.features import NEVER, hour_of_day

DAY_H, WEEK_H, MONTH_H = 24.0, 168.0, 720.0
MAX_TZ_H = 14.0  # time zones run from UTC-12 to UTC+14
_OFFSET = re.compile(r"^(?:UTC|GMT)?\s*([+-])(\d{1,2})(?::?(\d{2}))?$", re.IGNORECASE)
ZONE_HINT = "give an IANA name such as 'Europe/Paris' or a UTC offset such as '+02:00'"


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo | float:
    """A ZoneInfo for an IANA name, or a fixed offset in hours for ``+02:00`` / ``UTC-5`` / ``UTC``."""
    if name.upper() in ("UTC", "GMT", "Z"):
        return 0.0
    m = _OFFSET.match(name)
    if m:
        sign, hh, mm = m.group(1), int(m.group(2)), int(m.group(3) or 0)
        if mm >= 60:
            raise ValueError(name)
        off = (hh + mm / 60.0) * (1 if sign == "+" else -1)
        if abs(off) > MAX_TZ_H:
            raise ValueError(name)
        return off
    if "/" not in name and not name.isalpha():
        raise ValueError(name)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(name) from None


def utc_offset(name: str, now_h: float) -> float:
    """Hours east of UTC of time zone ``name`` (an IANA name, or ``+02:00``, ``UTC-5``, ``UTC``) at
    ``now_h`` hours since the epoch; ValueError (the name) for a zone it does not know."""
    z = _zone(name)
    if isinstance(z, float):
        return z
    off = datetime.fromtimestamp(now_h * 3600.0, tz=z).utcoffset()
    return off.total_seconds() / 3600.0 if off is not None else 0.0


def fixed_offset(name: str) -> float | None:
    """The offset of a zone that has one offset at all times (``+02:00``, ``UTC-5``, ``UTC``), None for an
    IANA name; ValueError (the name) for a zone it does not know."""
    z = _zone(name)
    return z if isinstance(z, float) else None


def utc_offsets(name: str, hours: np.ndarray) -> np.ndarray:
    """:func:`utc_offset` of zone ``name`` at each of ``hours`` (an array of hours since the epoch), each at
    its own time: a contact sent in winter has the winter offset, whatever the offset now.

    Cheap for many times: the offset is read once per UTC day from the first time's to the last's
    (remembered across calls), and on a day it changes, the second it changes is found by bisection.
    Exact while no offset lasts less than a day (two changes within one UTC day would be missed; the
    time-zone database has none in this century). ValueError (the name) for a zone it does not know,
    or for times that are not finite.
    """
    z = _zone(name)
    h = np.asarray(hours, np.float64)
    if isinstance(z, float):
        return np.full(h.shape, z)
    if h.size == 0:
        return np.zeros(h.shape)
    if not np.isfinite(h).all():
        raise ValueError("hours: must be finite hours since the epoch")
    day = np.floor(h / DAY_H).astype(np.int64)
    first = int(day.min())
    offs = np.array([_midnight_offset(z, d) for d in range(first, int(day.max()) + 2)])
    out = offs[day - first]
    for k in np.flatnonzero(offs[1:] != offs[:-1]).tolist():  # the offset changes during day first + k
        start = (first + k) * 86_400
        at = _change(z, start, start + 86_400, float(offs[k]))
        late = (day == first + k) & (h * 3600.0 >= at)
        out[late] = _second_offset(z, at)
    return out


def _second_offset(z: ZoneInfo, second: int) -> float:
    off = datetime.fromtimestamp(second, tz=z).utcoffset()
    return off.total_seconds() / 3600.0 if off is not None else 0.0


@lru_cache(maxsize=1 << 16)
def _midnight_offset(z: ZoneInfo, day: int) -> float:
    """The offset of ``z`` at 00:00 UTC of ``day`` (days since the epoch)."""
    return _second_offset(z, day * 86_400)


def _change(z: ZoneInfo, lo: int, hi: int, before: float) -> int:
    """The first second in (``lo``, ``hi``] whose offset is not ``before`` (that of ``lo``; ``hi``'s is not)."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _second_offset(z, mid) == before:
            lo = mid
        else:
            hi = mid
    return hi


class Reason(enum.IntFlag):
    """Why an action is ineligible. A reasons array holds several as bits of a uint8."""

    CONSENT = 1  # the customer cannot be reached on the channel
    RESTRICTED = 2  # the caller excluded the channel from this request
    QUIET_HOURS = 4  # the send time falls in the channel's quiet hours (local time)
    CHANNEL_CAP = 8  # a frequency cap on the action's channel is reached
    TOTAL_CAP = 16  # a frequency cap on all channels together is reached
    MIN_GAP = 32  # another contact lies within min_gap_h of the send time
    BUDGET = 64  # the channel's cost exceeds what is left of its budget, or nothing is left of the offer's
    # send budget or of the channel's capacity on the send day (limit_to_remaining)
    OFFER = 128  # the offer's rules exclude it: the customer's attributes, its channels or its dates, or a
    # cap on the offer (OfferCap) is reached


@dataclass(frozen=True)
class Cap:
    """At most ``max_count`` contacts on ``channel`` (``None``: all channels together) in any ``window_h`` hours.

    Validated by the :class:`ContactRules` holding it, so errors name the cap's position.
    """

    channel: str | None
    max_count: int
    window_h: float


@dataclass(frozen=True)
class OfferCap:
    """At most ``max_count`` contacts of one offer, content index ``offer`` of the action space, on any
    channel, in any ``window_h`` hours (a deployment's ``{ offer = "x", max = 1, days = 30 }``).

    Judged like a :class:`Cap`, at the send time of each slot, from the offer's latest contacts that
    :class:`RecentContacts` keeps (:meth:`RecentContacts.for_rules` with ``offer_caps``).
    """

    offer: int
    max_count: int
    window_h: float

    def __post_init__(self) -> None:
        if not (_is_int(self.offer) and self.offer >= 0):
            _fail("offer", f"must be a content index >= 0, got {self.offer!r}")
        if not (_is_int(self.max_count) and self.max_count > 0):
            _fail("max_count", f"must be a positive integer, got {self.max_count!r}")
        if not (_is_number(self.window_h) and math.isfinite(self.window_h) and self.window_h > 0):
            _fail("window_h", f"must be a positive number of hours, got {self.window_h!r}")


DEFAULT_QUIET_HOURS: dict[str, tuple[int, int]] = {
    # interruptive channels stay silent at night, local time (assumption, in line with the
    # 08:00-21:00 window of US telemarketing rules); email, direct mail and social ads are read
    # when the customer chooses, so they have none
    "sms": (21, 8),
    "push": (21, 8),
    "in_app": (21, 8),
    "web_push": (21, 8),
}
DEFAULT_CAPS: tuple[Cap, ...] = (
    # promotional email: a quarter of brands send more than 10 a month; 3 a week allows that
    Cap("email", 3, WEEK_H),
    Cap("sms", 2, WEEK_H),  # assumption: SMS is costly and intrusive
    Cap("push", 1, DAY_H),  # assumption
    Cap("web_push", 1, DAY_H),  # assumption
    Cap("in_app", 2, DAY_H),  # assumption: shown only while the app is open
    Cap("direct_mail", 1, MONTH_H),  # assumption: about a unit of currency per piece
    Cap("social_ad", 3, WEEK_H),  # assumption
    Cap(None, 2, DAY_H),  # assumption: at most two messages a day, all channels together
    Cap(None, 8, WEEK_H),  # assumption
)
_FIELDS = ("quiet_hours", "caps", "min_gap_h", "channels")
_CAP_FIELDS = ("channel", "max_count", "window_h")


def _fail(path: str, msg: str) -> NoReturn:
    raise ValueError(f"{path}: {msg}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


@dataclass(frozen=True)
class ContactRules:
    """The contact policy of a scenario or deployment (budgets, being state, come with each request).

    A bad value raises ValueError naming the field, e.g. ``caps[1].max_count: must be a positive
    integer, got 0``.
    """

    quiet_hours: dict[str, tuple[int, int]] = field(default_factory=lambda: dict(DEFAULT_QUIET_HOURS))
    caps: tuple[Cap, ...] = DEFAULT_CAPS
    min_gap_h: float = 4.0  # between two contacts on any channel; 0 disables
    channels: tuple[str, ...] = CHANNELS  # the names the rules may refer to (a deployment declares its own)

    def __post_init__(self) -> None:
        if not (
            isinstance(self.channels, tuple | list)
            and self.channels
            and all(isinstance(c, str) and c for c in self.channels)
        ):
            _fail("channels", f"must be a non-empty sequence of channel names, got {self.channels!r}")
        object.__setattr__(self, "channels", tuple(self.channels))
        if not isinstance(self.quiet_hours, Mapping):
            _fail("quiet_hours", f"must map channel to (start, end) hours, got {type(self.quiet_hours).__name__}")
        quiet = {}
        for ch, pair in self.quiet_hours.items():
            path = f"quiet_hours.{ch}"
            if ch not in self.channels:
                _fail(path, f"unknown channel {ch!r}; valid: {list(self.channels)}")
            hours = isinstance(pair, tuple | list) and len(pair) == 2 and all(_is_int(h) and 0 <= h < 24 for h in pair)
            if not hours:
                _fail(path, f"must be a pair (start, end) of hours in 0..23, got {pair!r}")
            if pair[0] == pair[1]:
                _fail(path, f"start and end must differ, got {pair!r} (leave the channel out to allow every hour)")
            quiet[ch] = (int(pair[0]), int(pair[1]))
        object.__setattr__(self, "quiet_hours", quiet)

        if not isinstance(self.caps, tuple | list):
            _fail("caps", f"must be a sequence of Cap, got {type(self.caps).__name__}")
        caps = []
        for i, cap in enumerate(self.caps):
            path = f"caps[{i}]"
            if not isinstance(cap, Cap):
                _fail(path, f"must be a Cap, got {type(cap).__name__}")
            if cap.channel is not None and cap.channel not in self.channels:
                _fail(
                    f"{path}.channel", f"unknown channel {cap.channel!r}; valid: {list(self.channels)} or None for all"
                )
            if not (_is_int(cap.max_count) and cap.max_count > 0):
                _fail(f"{path}.max_count", f"must be a positive integer, got {cap.max_count!r}")
            if not (_is_number(cap.window_h) and math.isfinite(cap.window_h) and cap.window_h > 0):
                _fail(f"{path}.window_h", f"must be a positive number of hours, got {cap.window_h!r}")
            caps.append(Cap(cap.channel, int(cap.max_count), float(cap.window_h)))
        object.__setattr__(self, "caps", tuple(caps))

        gap = self.min_gap_h
        if not (_is_number(gap) and math.isfinite(gap) and gap >= 0):
            _fail("min_gap_h", f"must be a number of hours >= 0, got {gap!r}")
        object.__setattr__(self, "min_gap_h", float(gap))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ContactRules:
        """Rules from plain data (a TOML or YAML table). A key given replaces its default entirely.

        ``{"quiet_hours": {"sms": [21, 8]}, "caps": [{"channel": "sms", "max_count": 2, "window_h": 168},
        {"max_count": 2, "window_h": 24}], "min_gap_h": 4}`` -- a cap without ``channel`` counts all
        channels together. Unknown keys and channels raise ValueError naming the field.
        """
        if not isinstance(data, Mapping):
            _fail("rules", f"must be a table, got {type(data).__name__}")
        for k in data:
            if k not in _FIELDS:
                _fail(str(k), f"unknown field; valid: {list(_FIELDS)}")
        kwargs: dict[str, Any] = {}
        if "quiet_hours" in data:
            quiet = data["quiet_hours"]
            if not isinstance(quiet, Mapping):
                _fail("quiet_hours", f"must be a table of channel = [start, end], got {type(quiet).__name__}")
            kwargs["quiet_hours"] = dict(quiet)
        if "caps" in data:
            raw = data["caps"]
            if not isinstance(raw, list | tuple):
                _fail("caps", f"must be a list of tables, got {type(raw).__name__}")
            caps = []
            for i, item in enumerate(raw):
                if not isinstance(item, Mapping):
                    _fail(f"caps[{i}]", f"must be a table, got {type(item).__name__}")
                for k in item:
                    if k not in _CAP_FIELDS:
                        _fail(f"caps[{i}].{k}", f"unknown field; valid: {list(_CAP_FIELDS)}")
                for k in ("max_count", "window_h"):
                    if k not in item:
                        _fail(f"caps[{i}].{k}", "missing")
                caps.append(Cap(item.get("channel"), item["max_count"], item["window_h"]))
            kwargs["caps"] = tuple(caps)
        if "min_gap_h" in data:
            kwargs["min_gap_h"] = data["min_gap_h"]
        if "channels" in data:
            names = data["channels"]
            kwargs["channels"] = tuple(names) if isinstance(names, list | tuple) else names
        return cls(**kwargs)

    def __hash__(self) -> int:
        return hash((tuple(sorted(self.quiet_hours.items())), self.caps, self.min_gap_h, self.channels))

    def to_dict(self) -> dict[str, Any]:
        """Plain data that :meth:`from_dict` reads back (TOML-safe: no nulls)."""
        caps = []
        for cap in self.caps:
            item: dict[str, Any] = {} if cap.channel is None else {"channel": cap.channel}
            caps.append(item | {"max_count": cap.max_count, "window_h": cap.window_h})
        out = {
            "quiet_hours": {ch: list(pair) for ch, pair in self.quiet_hours.items()},
            "caps": caps,
            "min_gap_h": self.min_gap_h,
        }
        if self.channels != CHANNELS:  # the built-in names are implied (bundles saved before stay as they were)
            out["channels"] = list(self.channels)
        return out


@dataclass(eq=False)
class RecentContacts:
    """Each customer's latest send times: the last ``k`` on each channel and the last ``k`` on any, and
    optionally the last ``k_offer`` of each capped offer.

    ``times`` (N, C, k) holds each channel's and ``any_times`` (N, k) all channels' latest send
    times in hours, newest first, ``NEVER`` where there were fewer than ``k``. Channels are indices
    of the action space. This is all a cap of at most ``k`` contacts needs: with times sorted, "are
    there ``m`` contacts within ``w`` of ``s``" is one comparison of the ``m``-th newest with ``s - w``.
    Arrays are stored customer-minor (Fortran order), so that column is a contiguous vector.

    ``offer_times`` (N, len(offers), k_offer), when given, holds the latest send times of each offer
    in ``offers`` (content indices of the action space, on any channel), for :class:`OfferCap`; it
    is kept only for the offers a cap names, and contacts of other offers are not stored. ``None``
    (the default, and what :meth:`for_rules` without ``offer_caps`` builds): no per-offer record.
    """

    times: np.ndarray
    any_times: np.ndarray
    offer_times: np.ndarray | None = None
    offers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        times = np.asarray(self.times, np.float64)
        any_times = np.asarray(self.any_times, np.float64)
        if (
            times.ndim != 3
            or any_times.ndim != 2
            or times.shape[0] != any_times.shape[0]
            or any_times.shape[1] < 1
            or times.shape[2] < 1
        ):
            raise ValueError(
                f"recent: times {times.shape} must be (N, C, k_channel) and any_times "
                f"{any_times.shape} (N, k), with k, k_channel >= 1"
            )
        if not (np.isfinite(times).all() and np.isfinite(any_times).all()):
            raise ValueError("recent: send times must be finite (NEVER marks no contact)")
        # newest first, stored customer-minor
        self.times = np.asfortranarray(-np.sort(-times, axis=2))
        self.any_times = np.asfortranarray(-np.sort(-any_times, axis=1))
        offers = tuple(self.offers) if isinstance(self.offers, tuple | list | np.ndarray) else None
        if offers is None or not all(_is_int(o) and o >= 0 for o in offers) or len(set(offers)) != len(offers):
            raise ValueError(f"offers: must be distinct content indices >= 0, got {self.offers!r}")
        self.offers = tuple(int(o) for o in offers)
        if self.offer_times is None:
            if self.offers:
                raise ValueError("offer_times: missing, with offers given (give both, or neither)")
            return
        offer_times = np.asarray(self.offer_times, np.float64)
        if (
            offer_times.shape[:2] != (times.shape[0], len(self.offers))
            or offer_times.ndim != 3
            or offer_times.shape[2] < 1
        ):
            raise ValueError(
                f"offer_times: expected shape ({times.shape[0]}, {len(self.offers)}, k_offer) "
                f"(N, len(offers), k_offer >= 1), got {offer_times.shape}"
            )
        if not np.isfinite(offer_times).all():
            raise ValueError("offer_times: send times must be finite (NEVER marks no contact)")
        self.offer_times = np.asfortranarray(-np.sort(-offer_times, axis=2))

    @classmethod
    def empty(
        cls,
        n: int,
        n_channels: int,
        k: int = 8,
        k_channel: int | None = None,
        *,
        offers: tuple[int, ...] = (),
        k_offer: int = 1,
    ) -> RecentContacts:
        """No contacts yet for ``n`` customers; ``k`` bounds the ``max_count`` of caps over all channels,
        ``k_channel`` (default ``k``) that of per-channel caps, ``k_offer`` that of caps on the ``offers``
        (content indices) kept; no offers: no per-offer record."""
        out = cls.__new__(cls)  # already sorted: skip the validating copy of __post_init__
        out.times = np.full((k_channel or k, n_channels, n), NEVER).T
        out.any_times = np.full((k, n), NEVER).T
        out.offers = tuple(offers)
        out.offer_times = np.full((k_offer, len(offers), n), NEVER).T if offers else None
        return out

    @classmethod
    def for_rules(
        cls, n: int, n_channels: int, rules: ContactRules, offer_caps: tuple[OfferCap, ...] = ()
    ) -> RecentContacts:
        """No contacts yet for ``n`` customers, keeping as many contacts as ``rules``' largest caps count
        (over all channels, and per channel), and as ``offer_caps`` count for each offer they name."""
        overall = [cap.max_count for cap in rules.caps if cap.channel is None]
        per_channel = [cap.max_count for cap in rules.caps if cap.channel is not None]
        offers = tuple(dict.fromkeys(cap.offer for cap in offer_caps))
        return cls.empty(
            n,
            n_channels,
            k=max([1, *overall]),
            k_channel=max([1, *per_channel]),
            offers=offers,
            k_offer=max([1, *(cap.max_count for cap in offer_caps)]),
        )

    @property
    def n(self) -> int:
        """The number of customers kept."""
        return self.any_times.shape[0]

    @property
    def n_channels(self) -> int:
        """The number of channels whose contacts are kept."""
        return self.times.shape[1]

    @property
    def k(self) -> int:
        """Latest contacts kept over all channels."""
        return self.any_times.shape[1]

    @property
    def k_channel(self) -> int:
        """Latest contacts kept per channel."""
        return self.times.shape[2]

    @property
    def k_offer(self) -> int:
        """Latest contacts kept per offer in ``offers`` (0 without a per-offer record)."""
        return 0 if self.offer_times is None else self.offer_times.shape[2]

    def record(
        self, rows: np.ndarray, channels: np.ndarray, when: np.ndarray, offers: np.ndarray | None = None
    ) -> None:
        """Contact customer ``rows[i]`` on channel index ``channels[i]`` at ``when[i]`` hours (rows unique),
        with offer (content index) ``offers[i]``.

        ``offers`` is needed when this record keeps contacts per offer (ValueError otherwise); the
        contacts of offers it does not keep count toward the channel and overall caps only.
        """
        rows = np.asarray(rows).ravel()
        if offers is None and self.offer_times is not None:
            raise ValueError(
                f"offers: needed, this record keeps the contacts of offers {list(self.offers)} "
                "(give each contact's content index, space.content_of[action])"
            )
        if rows.size == 0:
            return
        if rows.dtype.kind not in "iu" or rows.min() < 0 or rows.max() >= self.n:
            raise ValueError(f"rows: must be integer row indices in [0, {self.n})")
        if np.bincount(rows, minlength=self.n).max() > 1:
            raise ValueError("rows: must be unique within one call (record repeated contacts in separate calls)")
        channels = np.broadcast_to(np.asarray(channels), rows.shape)
        if channels.dtype.kind not in "iu" or channels.min() < 0 or channels.max() >= self.n_channels:
            raise ValueError(f"channels: must be integer channel indices in [0, {self.n_channels})")
        when = np.broadcast_to(np.asarray(when, np.float64), rows.shape)
        if not np.isfinite(when).all():
            raise ValueError("when: send times must be finite")
        if offers is not None:
            offers = np.broadcast_to(np.asarray(offers), rows.shape)
            if offers.dtype.kind not in "iu" or offers.min() < 0:
                raise ValueError("offers: must be integer content indices >= 0")
        self._insert(rows, channels, when, offers)

    def _insert(
        self, rows: np.ndarray, channels: np.ndarray, when: np.ndarray, offers: np.ndarray | None = None
    ) -> None:
        self.times[rows, channels] = _insert_newest_first(self.times[rows, channels], when)
        self.any_times[rows] = _insert_newest_first(self.any_times[rows], when)
        if self.offer_times is None or offers is None:
            return
        column = self._offer_column(offers)
        kept = column >= 0
        rows, column = rows[kept], column[kept]
        self.offer_times[rows, column] = _insert_newest_first(self.offer_times[rows, column], when[kept])

    def _offer_column(self, offers: np.ndarray) -> np.ndarray:
        """Column of ``offer_times`` holding each of ``offers`` (content indices), -1 for one not kept."""
        lookup = np.full(max(self.offers) + 1, -1, np.intp)
        lookup[list(self.offers)] = np.arange(len(self.offers))
        offers = np.asarray(offers, np.intp)
        return np.where(offers < lookup.size, lookup[np.minimum(offers, lookup.size - 1)], -1)

    def record_decisions(self, space: ActionSpace, actions: np.ndarray, send: np.ndarray) -> None:
        """Record the contacts among ``actions`` (N,) at their send times, ``send`` (N, S) from :func:`send_time`.

        Call it right after deciding, before the next eligibility check: a contact counts from then on.
        """
        actions = space.check(actions)
        if actions.shape != (self.n,) or send.shape != (self.n, space.n_slots):
            raise ValueError(
                f"actions: expected shape ({self.n},) with send ({self.n}, {space.n_slots}), "
                f"got {actions.shape} and {send.shape}"
            )
        rows = np.flatnonzero(actions != NO_CONTACT)  # unique, in range: no need for record's checks
        a = actions[rows]
        when = send[rows, space.slot_of[a]].astype(np.float64)
        if not np.isfinite(when).all():
            raise ValueError("send: send times must be finite")
        self._insert(rows, space.channel_of[a].astype(np.intp), when, space.content_of[a].astype(np.intp))

    def take(self, rows: np.ndarray) -> RecentContacts:
        """A copy holding the contacts of ``rows`` only, per-offer record included (a batch's customers)."""
        out = RecentContacts.__new__(RecentContacts)  # already sorted
        out.times = np.asfortranarray(self.times[rows])
        out.any_times = np.asfortranarray(self.any_times[rows])
        out.offers = self.offers
        out.offer_times = None if self.offer_times is None else np.asfortranarray(self.offer_times[rows])
        return out

    def reset_rows(self, rows: np.ndarray) -> None:
        """Forget the contacts of ``rows`` (a customer replaced by a new one)."""
        self.times[rows] = NEVER
        self.any_times[rows] = NEVER
        if self.offer_times is not None:
            self.offer_times[rows] = NEVER

    def count_since(self, now: np.ndarray, window_h: float, channel: int | None = None) -> np.ndarray:
        """(N,) contacts (on channel index ``channel``, or any) sent or scheduled after ``now - window_h``, up to k."""
        table = self.any_times if channel is None else self.times[:, channel]
        return np.count_nonzero(table > (np.asarray(now, np.float64) - window_h).reshape(-1, 1), axis=1)

    def last_time(self, channel: int | None = None) -> np.ndarray:
        """(N,) latest send time (on channel index ``channel``, or any), scheduled ones included; ``NEVER`` if none."""
        return self.any_times[:, 0] if channel is None else self.times[:, channel, 0]


def _insert_newest_first(table: np.ndarray, when: np.ndarray) -> np.ndarray:
    """Rows of ``table`` (m, k), each sorted newest first, with ``when[i]`` inserted into row i; the oldest drops.

    Entry j becomes ``max(t[j], min(t[j - 1], when))`` (``t[-1] = inf``): the entries newer than
    ``when`` stay, ``when`` takes the next place, and the older ones move down one.
    """
    shifted = np.empty_like(table)
    shifted[:, 0] = np.inf
    shifted[:, 1:] = table[:, :-1]
    np.minimum(shifted, when[:, None], out=shifted)
    return np.maximum(table, shifted, out=shifted)


def send_time(space: ActionSpace, now: np.ndarray, tz_offset: np.ndarray) -> np.ndarray:
    """(N, n_slots) UTC hour stamp at which each send slot sends.

    The "now" slot (``None``) sends at ``now``; an hour slot at the next time that local hour comes
    round (``now`` itself when the local time is exactly on that hour), so within 24 h.
    """
    now = np.asarray(now, np.float64).ravel()
    local = hour_of_day(now + np.asarray(tz_offset, np.float64).ravel())
    out = np.empty((now.shape[0], space.n_slots))
    for s, h in enumerate(space.send_slots):
        out[:, s] = now if h is None else now + hour_of_day(h - local)
    return out


def _in_quiet(hour: np.ndarray | float, start: int, end: int) -> np.ndarray | bool:
    """Whether local ``hour`` lies in ``[start, end)``, wrapping past midnight when ``start > end``."""
    if start < end:
        return (hour >= start) & (hour < end)
    return (hour >= start) | (hour < end)


def _vector(name: str, x: Any, n: int) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim > 1 or (x.ndim == 1 and x.shape[0] != n):
        raise ValueError(f"{name}: expected shape ({n},) or a scalar, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: must be finite")
    return x if x.ndim == 1 else np.broadcast_to(x, (n,))


def _per_channel(name: str, x: Any, n: int, c: int, dtype: type) -> np.ndarray:
    x = np.asarray(x)
    if dtype is bool and x.dtype != np.bool_:
        raise ValueError(f"{name}: must be a bool array, got dtype {x.dtype}")
    if x.shape not in ((c,), (n, c)):
        raise ValueError(f"{name}: expected shape ({n}, {c}) or ({c},), got {x.shape}")
    if dtype is not bool and x.dtype.kind not in "iuf":
        raise ValueError(f"{name}: must be numbers, got dtype {x.dtype}")
    x = x.astype(dtype, copy=False)
    return x if x.shape == (n, c) else np.broadcast_to(x, (n, c))


def _check_request(
    space: ActionSpace,
    rules: ContactRules,
    recent: RecentContacts,
    now: Any,
    tz_offset: Any,
    consent: Any,
    allowed: Any,
    budget_left: Any,
    cost: Any,
) -> tuple:
    n, c = recent.n, space.n_channels
    now = _vector("now", now, n)
    tz = _vector("tz_offset", tz_offset, n)
    if tz.size and np.abs(tz).max() > MAX_TZ_H:
        raise ValueError(
            f"tz_offset: must be hours east of UTC in [-{MAX_TZ_H:g}, {MAX_TZ_H:g}], "
            f"got {float(tz[np.abs(tz).argmax()])!r}"
        )
    consent = _per_channel("consent", consent, n, c, bool)
    if allowed is not None:
        allowed = _per_channel("allowed", allowed, n, c, bool)
    if (budget_left is None) != (cost is None):
        raise ValueError("budget_left: give budget_left and cost together, or neither")
    if budget_left is not None:
        budget_left = _per_channel("budget_left", budget_left, n, c, np.float64)
        cost = _per_channel("cost", cost, n, c, np.float64)
        if np.isnan(budget_left).any():
            raise ValueError("budget_left: must not be NaN (use inf for no budget)")
        if not (np.isfinite(cost).all() and (cost >= 0).all()):
            raise ValueError("cost: must be finite and >= 0")
    if recent.n_channels != c:
        raise ValueError(f"recent: holds {recent.n_channels} channels, the action space {c}")
    for i, cap in enumerate(rules.caps):
        kept, what = (recent.k, "k") if cap.channel is None else (recent.k_channel, "k_channel")
        if (cap.channel is None or cap.channel in space.channels) and cap.max_count > kept:
            raise ValueError(
                f"caps[{i}].max_count: {cap.max_count} exceeds the {kept} latest contacts kept "
                f"per customer (RecentContacts {what})"
            )
    return now, tz, consent, allowed, budget_left, cost


def _limit_reasons(
    space: ActionSpace, rules: ContactRules, recent: RecentContacts, now: np.ndarray, send: np.ndarray, out: np.ndarray
) -> None:
    """Set CHANNEL_CAP, TOTAL_CAP and MIN_GAP bits in ``out`` (C, S, N) for sends at ``send`` (N, S).

    A limit of ``m`` contacts within ``w`` blocks a send at ``s`` when ``m`` recorded contacts lie in
    ``(s - w, s + w)``. With times newest first and ``j0`` of them at or after ``s + w``, that is:
    the ``(j0 + m)``-th newest is after ``s - w`` (``j0`` is 0 unless a contact is scheduled ``w`` or
    more ahead). Contacts a full table dropped are older than all it kept, so this is exact while
    ``j0 + m <= k``. Past that, the oldest kept contact decides: when it lies after ``s - w``, some
    dropped ones may too and the send is blocked; otherwise fewer than ``m`` are in the window.
    """
    n = recent.n
    index = {ch: c for c, ch in enumerate(space.channels)}
    # (channel index, or None for all channels; window_h; max_count; reason): the gap is a cap of one
    limits: list[tuple[int | None, float, int, Reason]] = [
        (index[cap.channel], cap.window_h, cap.max_count, Reason.CHANNEL_CAP)
        for cap in rules.caps
        if cap.channel in index
    ]
    limits += [(None, cap.window_h, cap.max_count, Reason.TOTAL_CAP) for cap in rules.caps if cap.channel is None]
    if rules.min_gap_h > 0:
        limits.append((None, rules.min_gap_h, 1, Reason.MIN_GAP))
    if not limits or n == 0:
        return
    newest = np.maximum(recent.any_times[:, 0], recent.times[:, :, 0].max(axis=1))
    nothing_ahead: dict[float, bool] = {}  # per window: no contact lies w or more after now, so j0 = 0
    send_t = np.ascontiguousarray(send.T)  # (S, N)
    every_channel = np.zeros((space.n_slots, n), np.uint8)  # total caps and the gap hold for all channels
    for c, w, m, reason in limits:
        table = recent.any_times if c is None else recent.times[:, c]  # (N, k)
        if w not in nothing_ahead:
            nothing_ahead[w] = bool(np.all(newest < now + w))
        blocked = _reached(table, m, w, send_t, nothing_ahead[w])
        target = every_channel if c is None else out[c]  # (S, N)
        target |= blocked.view(np.uint8) * np.uint8(reason)
    out |= every_channel


def _reached(table: np.ndarray, m: int, w: float, send_t: np.ndarray, nothing_ahead: bool) -> np.ndarray:
    """(S, N) bool: ``m`` of the contacts in ``table`` (N, k), newest first, lie within ``w`` of the sends
    ``send_t`` (S, N), as :func:`_limit_reasons` explains; ``nothing_ahead``: no contact lies ``w`` or
    more after any send, so ``j0`` is 0."""
    if nothing_ahead:
        return table[:, m - 1] > send_t - w
    ahead = np.count_nonzero(table >= (send_t + w)[:, :, None], axis=2)  # (S, N): j0
    return table[np.arange(table.shape[0]), np.minimum(ahead + (m - 1), table.shape[1] - 1)] > send_t - w


def _offer_cap_reasons(
    space: ActionSpace, offer_caps: tuple[OfferCap, ...], recent: RecentContacts, now: np.ndarray, send: np.ndarray
) -> np.ndarray | None:
    """(N, K x S) uint8, OFFER where a cap on the offer (content) is reached at the slot's send time (each
    customer's offers and slots in action order); None without caps. Judged as the channel caps are
    (:func:`_limit_reasons`), on each offer's record."""
    for i, cap in enumerate(offer_caps):
        if not isinstance(cap, OfferCap):
            raise ValueError(f"offer_caps[{i}]: must be an OfferCap, got {type(cap).__name__}")
        if cap.offer >= space.n_contents:
            raise ValueError(
                f"offer_caps[{i}].offer: {cap.offer} is not a content index of the action space [0, {space.n_contents})"
            )
        if cap.offer not in recent.offers:
            raise ValueError(
                f"recent: keeps no contacts of offer {cap.offer}, which offer_caps[{i}] caps (build "
                "it with RecentContacts.for_rules(..., offer_caps))"
            )
        if cap.max_count > recent.k_offer:
            raise ValueError(
                f"offer_caps[{i}].max_count: {cap.max_count} exceeds the {recent.k_offer} latest "
                "contacts kept per customer and offer (RecentContacts k_offer)"
            )
    if not offer_caps or recent.n == 0:
        return None
    send_t = np.ascontiguousarray(send.T)  # (S, N)
    out = np.zeros((recent.n, space.n_contents, space.n_slots), np.uint8)  # customers first: rows of K x S
    times = recent.offer_times
    if times is None:
        raise ValueError(
            "recent: keeps no contact per offer, and the rules cap offers (RecentContacts.for_rules "
            "with the offer caps)"
        )
    column = recent._offer_column(np.array([cap.offer for cap in offer_caps]))
    for cap, j in zip(offer_caps, column, strict=True):
        table = times[:, j]  # (N, k_offer)
        blocked = _reached(table, cap.max_count, cap.window_h, send_t, bool(np.all(table[:, 0] < now + cap.window_h)))
        out[:, cap.offer] |= blocked.T.view(np.uint8) * np.uint8(Reason.OFFER)
    return out.reshape(recent.n, -1)


def channel_slot_reasons(
    space: ActionSpace,
    rules: ContactRules,
    recent: RecentContacts,
    *,
    now: np.ndarray,
    tz_offset: np.ndarray,
    consent: np.ndarray,
    allowed: np.ndarray | None = None,
    budget_left: np.ndarray | None = None,
    cost: np.ndarray | None = None,
) -> np.ndarray:
    """(N, C, S) uint8 :class:`Reason` bits per channel and send slot, 0 where eligible (see :func:`eligibility`).

    Every action on a (channel, slot) pair shares its verdict, whatever its content.
    """
    now, tz, consent, allowed, budget_left, cost = _check_request(
        space, rules, recent, now, tz_offset, consent, allowed, budget_left, cost
    )
    per_channel = (~consent).view(np.uint8) * np.uint8(Reason.CONSENT)
    if allowed is not None:
        per_channel |= (~allowed).view(np.uint8) * np.uint8(Reason.RESTRICTED)
    if budget_left is not None:
        per_channel |= (cost > budget_left).view(np.uint8) * np.uint8(Reason.BUDGET)
    out = np.empty((space.n_channels, space.n_slots, recent.n), np.uint8)  # customers last: contiguous rows
    out[:] = per_channel.T[:, None, :]
    _limit_reasons(space, rules, recent, now, send_time(space, now, tz), out)
    local = hour_of_day(now + tz)
    quiet_now: dict[tuple[int, int], np.ndarray] = {}
    for c, ch in enumerate(space.channels):
        window = rules.quiet_hours.get(ch)
        if window is None:
            continue
        for s, h in enumerate(space.send_slots):
            if h is None:
                if window not in quiet_now:
                    quiet_now[window] = np.asarray(_in_quiet(local, *window)).view(np.uint8) * np.uint8(
                        Reason.QUIET_HOURS
                    )
                out[c, s] |= quiet_now[window]
            elif _in_quiet(h, *window):
                out[c, s] |= np.uint8(Reason.QUIET_HOURS)
    return _customers_first(out)


def _customers_first(x: np.ndarray) -> np.ndarray:
    """(N, C, S) C-ordered copy of uint8 ``x`` (C, S, N); with S in 1, 2, 4, 8, a channel's slots move as one word."""
    c, s, n = x.shape
    if s not in (1, 2, 4, 8):
        return np.ascontiguousarray(x.transpose(2, 0, 1))
    word = np.dtype(f"<u{s}")
    packed = np.zeros((c, n), word)
    for j in range(s):
        packed |= x[:, j].astype(word) << (8 * j)
    return np.ascontiguousarray(packed.T).view(np.uint8).reshape(n, c, s)


def _expand(space: ActionSpace, per_pair: np.ndarray, no_contact: Any) -> np.ndarray:
    """(N, A) array from (N, C, S) values per (channel, slot): every content shares its pair's value."""
    n, c, k, s = per_pair.shape[0], space.n_channels, space.n_contents, space.n_slots
    out = np.empty((n, space.n_actions), per_pair.dtype)
    out[:, NO_CONTACT] = no_contact
    word = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}.get(s * per_pair.itemsize)
    if word is not None and n > 0:  # copy each pair's S slots as one machine word: a few times faster
        out[:, 1:].view(word).reshape(n, c, k)[:] = per_pair.view(word)
    else:
        out[:, 1:].reshape(n, c, k, s)[:] = per_pair[:, :, None, :]
    return out


@overload
def eligibility(
    space: ActionSpace,
    rules: ContactRules,
    recent: RecentContacts,
    *,
    now: np.ndarray,
    tz_offset: np.ndarray,
    consent: np.ndarray,
    allowed: np.ndarray | None = ...,
    budget_left: np.ndarray | None = ...,
    cost: np.ndarray | None = ...,
    reasons: Literal[False] = ...,
    offer_caps: tuple[OfferCap, ...] = ...,
) -> np.ndarray: ...
@overload
def eligibility(
    space: ActionSpace,
    rules: ContactRules,
    recent: RecentContacts,
    *,
    now: np.ndarray,
    tz_offset: np.ndarray,
    consent: np.ndarray,
    allowed: np.ndarray | None = ...,
    budget_left: np.ndarray | None = ...,
    cost: np.ndarray | None = ...,
    reasons: Literal[True],
    offer_caps: tuple[OfferCap, ...] = ...,
) -> tuple[np.ndarray, np.ndarray]: ...
def eligibility(
    space: ActionSpace,
    rules: ContactRules,
    recent: RecentContacts,
    *,
    now: np.ndarray,
    tz_offset: np.ndarray,
    consent: np.ndarray,
    allowed: np.ndarray | None = None,
    budget_left: np.ndarray | None = None,
    cost: np.ndarray | None = None,
    reasons: bool = False,
    offer_caps: tuple[OfferCap, ...] = (),
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """(N, A) bool mask of the actions each customer may be sent now; with ``reasons``, also why not.

    Args:
        space: the action space (channel-major actions, no contact at 0).
        rules: quiet hours, caps and minimum gap.
        recent: each customer's latest contacts, one row per request row.
        now: (N,) or scalar decision time, hours since the epoch (UTC).
        tz_offset: (N,) or scalar hours east of UTC, in [-14, 14].
        consent: (N, C) or (C,) bool, reachable on the channel (C = ``space.n_channels``).
        allowed: optional (N, C) or (C,) bool, the channels the caller permits for this request.
        budget_left: optional (N, C) or (C,) budget left per channel (inf: unlimited), with ``cost``.
        cost: optional (N, C) or (C,) cost of one contact per channel. The check is per row: rows
            of one batch can together spend more than is left, so give each row its share (N, C)
            where that matters.
        reasons: also return the (N, A) uint8 :class:`Reason` bits, 0 exactly where the mask is True.
        offer_caps: caps on single offers (:class:`OfferCap`, reason OFFER), judged from ``recent``'s
            per-offer record, which must keep every offer they name.

    No contact (action 0) is always eligible. A malformed request raises ValueError naming the
    argument; nothing is clipped or guessed.
    """
    offer_caps = tuple(offer_caps)
    if not (reasons or offer_caps):  # the mask alone, expanded from the pairs' verdicts
        bits = channel_slot_reasons(
            space,
            rules,
            recent,
            now=now,
            tz_offset=tz_offset,
            consent=consent,
            allowed=allowed,
            budget_left=budget_left,
            cost=cost,
        )
        return _expand(space, bits == 0, True)
    out = reason_bits(
        space,
        rules,
        recent,
        now=now,
        tz_offset=tz_offset,
        consent=consent,
        allowed=allowed,
        budget_left=budget_left,
        cost=cost,
        offer_caps=offer_caps,
    )
    mask = out == 0
    return (mask, out) if reasons else mask


def reason_bits(
    space: ActionSpace,
    rules: ContactRules,
    recent: RecentContacts,
    *,
    now: np.ndarray,
    tz_offset: np.ndarray,
    consent: np.ndarray,
    allowed: np.ndarray | None = None,
    budget_left: np.ndarray | None = None,
    cost: np.ndarray | None = None,
    offer_caps: tuple[OfferCap, ...] = (),
) -> np.ndarray:
    """(N, A) uint8 :class:`Reason` bits, 0 exactly where eligible: :func:`eligibility`'s reasons without
    its mask, for a caller that adds rules of its own before taking ``bits == 0``."""
    bits = channel_slot_reasons(
        space,
        rules,
        recent,
        now=now,
        tz_offset=tz_offset,
        consent=consent,
        allowed=allowed,
        budget_left=budget_left,
        cost=cost,
    )
    out = _expand(space, bits, 0)
    offer_caps = tuple(offer_caps)
    if offer_caps:
        n = recent.n
        now_v = _vector("now", now, n)
        per_offer = _offer_cap_reasons(
            space, offer_caps, recent, now_v, send_time(space, now_v, _vector("tz_offset", tz_offset, n))
        )
        if per_offer is not None:  # the same on every channel
            grid = out[:, 1:].reshape(n, space.n_channels, space.n_contents * space.n_slots)
            grid |= per_offer[:, None]
    return out


def limit_to_remaining(
    space: ActionSpace,
    reasons: np.ndarray,
    send: np.ndarray,
    *,
    offer_left: np.ndarray | None = None,
    channel_left: np.ndarray | None = None,
    first_day: int = 0,
) -> np.ndarray:
    """Set BUDGET in ``reasons`` (N, A) where a count shared by all customers is spent, and return it.

    Args:
        space: the action space (channel-major actions, no contact at 0).
        reasons: (N, A) uint8 :class:`Reason` bits of a batch, every other rule already applied;
            changed in place.
        send: (N, S) send time of each slot (:func:`send_time`).
        offer_left: optional (K,) sends each offer (content) may still make, all customers
            together; inf: no limit. A deployment's offer budget less its sends so far.
        channel_left: optional (C, D) sends each channel may still make on UTC day ``first_day + j``
            (days since the epoch), judged at each slot's send time; inf: no limit. A deployment's
            daily capacity less the sends already on that day.
        first_day: the UTC day of ``channel_left[:, 0]``.

    Several customers of one batch could together take more than is left, so the mask is computed
    such that they cannot: a customer takes at most one action, so what is left of an offer (a
    channel's day) goes to the first rows, in row order, that have an eligible action of that offer
    (on that channel, sending that day), and BUDGET blocks the offer (the channel's slots on that
    day) for every later row. The batch can then take at most what is left, whatever the policy
    chooses; counts left unused go to the next batch. Rows earlier in the batch come first: shuffle
    them where that would be unfair. A send on a day ``channel_left`` does not count, on a channel
    that has a limit, raises ValueError naming ``channel_left``.
    """
    n = reasons.shape[0]
    c, k, s = space.n_channels, space.n_contents, space.n_slots
    if reasons.shape != (n, space.n_actions) or reasons.dtype != np.uint8:
        raise ValueError(
            f"reasons: expected a uint8 array ({n}, {space.n_actions}), got {reasons.dtype} {reasons.shape}"
        )
    send = np.asarray(send, np.float64)
    if send.shape != (n, s):
        raise ValueError(f"send: expected shape ({n}, {s}), got {send.shape}")
    grid = reasons[:, 1:].reshape(n, c, k, s)  # a view: each action's (channel, content, slot)
    budget = np.uint8(Reason.BUDGET)
    if offer_left is not None:
        offer_left = _left("offer_left", offer_left, (k,))
        capped = np.flatnonzero(np.isfinite(offer_left))
        if capped.size and n:
            sub = grid[:, :, capped]  # (N, C, J, S)
            able = (sub == 0).any(axis=(1, 3))  # (N, J): a customer who could take the offer
            spent = np.cumsum(able, axis=0) - able >= offer_left[capped]  # earlier rows took all that is left
            if spent.any():
                sub |= spent[:, None, :, None].view(np.uint8) * budget
                grid[:, :, capped] = sub
    if channel_left is not None:
        channel_left = np.asarray(channel_left, np.float64)
        if channel_left.ndim != 2:
            raise ValueError(f"channel_left: expected shape ({c}, days), got {channel_left.shape}")
        days = channel_left.shape[1]
        channel_left = _left("channel_left", channel_left, (c, days))
        capped = np.flatnonzero(np.isfinite(channel_left).any(axis=1))
        if capped.size and n:
            day = np.floor(send / DAY_H).astype(np.int64) - first_day  # (N, S)
            if day.min() < 0 or day.max() >= days:
                bad = first_day + int(day[(day < 0) | (day >= days)][0])
                raise ValueError(
                    f"channel_left: counts sends on UTC days {first_day}..{first_day + days - 1}, a "
                    f"slot sends on day {bad} (count them for the decision's time)"
                )
            sub = grid[:, capped]  # (N, J, K, S)
            # (N, J, S): any offer open on the channel in the slot (reduced over contiguous offers: NumPy
            # reduces a middle axis over rows of S bytes, several times slower)
            able = np.ascontiguousarray((sub == 0).transpose(0, 1, 3, 2)).any(axis=3)
            spent = np.zeros_like(able)
            for d in range(days):
                on = day == d  # (N, S)
                uses = (able & on[:, None, :]).any(axis=2)  # (N, J): could send on the channel that day
                full = np.cumsum(uses, axis=0) - uses >= channel_left[capped, d]
                spent |= full[:, :, None] & on[:, None, :]
            if spent.any():  # every offer of the channel's slot that day, in rows of K x S bytes
                sub.reshape(n, len(capped), k * s)[:] |= np.tile(spent.view(np.uint8) * budget, (1, 1, k))
                grid[:, capped] = sub
    return reasons


def _left(name: str, x: Any, shape: tuple[int, ...]) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {x.shape}")
    if np.isnan(x).any() or np.isneginf(x).any():
        raise ValueError(f"{name}: must be counts, or inf for no limit")
    return x


def reason_names(bits: int) -> list[str]:
    """Names of the :class:`Reason` flags set in ``bits``, in flag order."""
    return [str(r.name) for r in Reason if int(bits) & r.value]


def explain(space: ActionSpace, reasons_row: np.ndarray) -> dict[str, list[str]]:
    """For one customer's (A,) reasons, the name of each ineligible action mapped to its reasons' names."""
    reasons_row = np.asarray(reasons_row)
    if reasons_row.shape != (space.n_actions,):
        raise ValueError(f"reasons_row: expected shape ({space.n_actions},), got {reasons_row.shape}")
    names = space.names()
    return {names[a]: reason_names(reasons_row[a]) for a in np.flatnonzero(reasons_row)}
