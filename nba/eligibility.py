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
* **budget**: a channel whose cost exceeds what is left of its budget is out.

Caps and the gap are judged at the send time ``s`` of each slot (:func:`send_time`): an action is
blocked by a cap when ``max_count`` recorded contacts already lie strictly within ``window_h`` of
``s``, before or after it (a contact scheduled for later counts too), and by the gap when any
recorded contact lies strictly within ``min_gap_h`` of ``s``. This keeps every cap true of the
actual sends, including sends scheduled in a slot hours after the decision: in any half-open
span of ``window_h`` hours there are never more than ``max_count`` contacts. A contact counts as
soon as it is recorded; record each decided contact right away, stamped with its send time
(:meth:`RecentContacts.record_decisions`). :class:`RecentContacts` keeps, per customer, the latest
``k`` send times on each channel and on all channels, which is all a cap of up to ``k`` needs.

For a batch of N customers and A = 1 + channels x contents x slots actions, every rule is
evaluated once per (channel, slot) pair on (N,) vectors and then copied to the contents.

Times are hours since the Unix epoch (UTC); a customer's local hour is ``(now + tz_offset) mod 24``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn, overload

import numpy as np

from nba.actions import CHANNELS, NO_CONTACT, ActionSpace
from nba.features import NEVER, hour_of_day

DAY_H, WEEK_H, MONTH_H = 24.0, 168.0, 720.0
MAX_TZ_H = 14.0  # time zones run from UTC-12 to UTC+14


class Reason(enum.IntFlag):
    """Why an action is ineligible. A reasons array holds several as bits of a uint8."""

    CONSENT = 1  # the customer cannot be reached on the channel
    RESTRICTED = 2  # the caller excluded the channel from this request
    QUIET_HOURS = 4  # the send time falls in the channel's quiet hours (local time)
    CHANNEL_CAP = 8  # a frequency cap on the action's channel is reached
    TOTAL_CAP = 16  # a frequency cap on all channels together is reached
    MIN_GAP = 32  # another contact lies within min_gap_h of the send time
    BUDGET = 64  # the channel's cost exceeds what is left of its budget
    OFFER = 128  # the offer's rules exclude it: the customer's attributes, its channels or its dates


@dataclass(frozen=True)
class Cap:
    """At most ``max_count`` contacts on ``channel`` (``None``: all channels together) in any ``window_h`` hours.

    Validated by the :class:`ContactRules` holding it, so errors name the cap's position.
    """

    channel: str | None
    max_count: int
    window_h: float


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
        if not (isinstance(self.channels, tuple | list) and self.channels
                and all(isinstance(c, str) and c for c in self.channels)):
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
                _fail(f"{path}.channel", f"unknown channel {cap.channel!r}; valid: {list(self.channels)} or None "
                                         "for all")
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
    """Each customer's latest send times: the last ``k`` on each channel and the last ``k`` on any.

    ``times`` (N, C, k) holds each channel's and ``any_times`` (N, k) all channels' latest send
    times in hours, newest first, ``NEVER`` where there were fewer than ``k``. Channels are indices
    of the action space. This is all a cap of at most ``k`` contacts needs: with times sorted, "are
    there ``m`` contacts within ``w`` of ``s``" is one comparison of the ``m``-th newest with ``s - w``.
    Arrays are stored customer-minor (Fortran order), so that column is a contiguous vector.
    """

    times: np.ndarray
    any_times: np.ndarray

    def __post_init__(self) -> None:
        times = np.asarray(self.times, np.float64)
        any_times = np.asarray(self.any_times, np.float64)
        if (times.ndim != 3 or any_times.ndim != 2 or times.shape[0] != any_times.shape[0]
                or any_times.shape[1] < 1 or times.shape[2] < 1):
            raise ValueError(f"recent: times {times.shape} must be (N, C, k_channel) and any_times "
                             f"{any_times.shape} (N, k), with k, k_channel >= 1")
        if not (np.isfinite(times).all() and np.isfinite(any_times).all()):
            raise ValueError("recent: send times must be finite (NEVER marks no contact)")
        # newest first, stored customer-minor
        self.times = np.asfortranarray(-np.sort(-times, axis=2))
        self.any_times = np.asfortranarray(-np.sort(-any_times, axis=1))

    @classmethod
    def empty(cls, n: int, n_channels: int, k: int = 8, k_channel: int | None = None) -> RecentContacts:
        """No contacts yet for ``n`` customers; ``k`` bounds the ``max_count`` of caps over all channels,
        ``k_channel`` (default ``k``) that of per-channel caps."""
        out = cls.__new__(cls)  # already sorted: skip the validating copy of __post_init__
        out.times = np.full((k_channel or k, n_channels, n), NEVER).T
        out.any_times = np.full((k, n), NEVER).T
        return out

    @classmethod
    def for_rules(cls, n: int, n_channels: int, rules: ContactRules) -> RecentContacts:
        """No contacts yet for ``n`` customers, keeping as many contacts as ``rules``' largest caps count
        (over all channels, and per channel)."""
        overall = [cap.max_count for cap in rules.caps if cap.channel is None]
        per_channel = [cap.max_count for cap in rules.caps if cap.channel is not None]
        return cls.empty(n, n_channels, k=max([1, *overall]), k_channel=max([1, *per_channel]))

    @property
    def n(self) -> int:
        return self.any_times.shape[0]

    @property
    def n_channels(self) -> int:
        return self.times.shape[1]

    @property
    def k(self) -> int:
        """Latest contacts kept over all channels."""
        return self.any_times.shape[1]

    @property
    def k_channel(self) -> int:
        """Latest contacts kept per channel."""
        return self.times.shape[2]

    def record(self, rows: np.ndarray, channels: np.ndarray, when: np.ndarray) -> None:
        """Contact customer ``rows[i]`` on channel index ``channels[i]`` at ``when[i]`` hours (rows unique)."""
        rows = np.asarray(rows).ravel()
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
        self._insert(rows, channels, when)

    def _insert(self, rows: np.ndarray, channels: np.ndarray, when: np.ndarray) -> None:
        self.times[rows, channels] = _insert_newest_first(self.times[rows, channels], when)
        self.any_times[rows] = _insert_newest_first(self.any_times[rows], when)

    def record_decisions(self, space: ActionSpace, actions: np.ndarray, send: np.ndarray) -> None:
        """Record the contacts among ``actions`` (N,) at their send times, ``send`` (N, S) from :func:`send_time`.

        Call it right after deciding, before the next eligibility check: a contact counts from then on.
        """
        actions = space.check(actions)
        if actions.shape != (self.n,) or send.shape != (self.n, space.n_slots):
            raise ValueError(f"actions: expected shape ({self.n},) with send ({self.n}, {space.n_slots}), "
                             f"got {actions.shape} and {send.shape}")
        rows = np.flatnonzero(actions != NO_CONTACT)  # unique, in range: no need for record's checks
        a = actions[rows]
        when = send[rows, space.slot_of[a]].astype(np.float64)
        if not np.isfinite(when).all():
            raise ValueError("send: send times must be finite")
        self._insert(rows, space.channel_of[a].astype(np.intp), when)

    def reset_rows(self, rows: np.ndarray) -> None:
        """Forget the contacts of ``rows`` (a customer replaced by a new one)."""
        self.times[rows] = NEVER
        self.any_times[rows] = NEVER

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


def _check_request(space: ActionSpace, rules: ContactRules, recent: RecentContacts, now: Any, tz_offset: Any,
                   consent: Any, allowed: Any, budget_left: Any, cost: Any) -> tuple:
    n, c = recent.n, space.n_channels
    now = _vector("now", now, n)
    tz = _vector("tz_offset", tz_offset, n)
    if tz.size and np.abs(tz).max() > MAX_TZ_H:
        raise ValueError(f"tz_offset: must be hours east of UTC in [-{MAX_TZ_H:g}, {MAX_TZ_H:g}], "
                         f"got {float(tz[np.abs(tz).argmax()])!r}")
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
            raise ValueError(f"caps[{i}].max_count: {cap.max_count} exceeds the {kept} latest contacts kept "
                             f"per customer (RecentContacts {what})")
    return now, tz, consent, allowed, budget_left, cost


def _limit_reasons(space: ActionSpace, rules: ContactRules, recent: RecentContacts, now: np.ndarray,
                   send: np.ndarray, out: np.ndarray) -> None:
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
    limits = [(index[cap.channel], cap.window_h, cap.max_count, Reason.CHANNEL_CAP)
              for cap in rules.caps if cap.channel in index]
    limits += [(None, cap.window_h, cap.max_count, Reason.TOTAL_CAP) for cap in rules.caps if cap.channel is None]
    if rules.min_gap_h > 0:
        limits.append((None, rules.min_gap_h, 1, Reason.MIN_GAP))
    if not limits or n == 0:
        return
    newest = np.maximum(recent.any_times[:, 0], recent.times[:, :, 0].max(axis=1))
    nothing_ahead: dict[float, bool] = {}  # per window: no contact lies w or more after now, so j0 = 0
    send_t = np.ascontiguousarray(send.T)  # (S, N)
    every_channel = np.zeros((space.n_slots, n), np.uint8)  # total caps and the gap hold for all channels
    rows = np.arange(n)
    for c, w, m, reason in limits:
        table = recent.any_times if c is None else recent.times[:, c]  # (N, k)
        k = table.shape[1]
        if w not in nothing_ahead:
            nothing_ahead[w] = bool(np.all(newest < now + w))
        if nothing_ahead[w]:
            blocked = table[:, m - 1] > send_t - w  # (S, N)
        else:
            ahead = np.count_nonzero(table >= (send_t + w)[:, :, None], axis=2)  # (S, N): j0
            blocked = table[rows, np.minimum(ahead + (m - 1), k - 1)] > send_t - w
        target = every_channel if c is None else out[c]  # (S, N)
        target |= blocked.view(np.uint8) * np.uint8(reason)
    out |= every_channel


def channel_slot_reasons(space: ActionSpace, rules: ContactRules, recent: RecentContacts, *, now: np.ndarray,
                         tz_offset: np.ndarray, consent: np.ndarray, allowed: np.ndarray | None = None,
                         budget_left: np.ndarray | None = None, cost: np.ndarray | None = None) -> np.ndarray:
    """(N, C, S) uint8 :class:`Reason` bits per channel and send slot, 0 where eligible (see :func:`eligibility`).

    Every action on a (channel, slot) pair shares its verdict, whatever its content.
    """
    now, tz, consent, allowed, budget_left, cost = _check_request(
        space, rules, recent, now, tz_offset, consent, allowed, budget_left, cost)
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
                    quiet_now[window] = _in_quiet(local, *window).view(np.uint8) * np.uint8(Reason.QUIET_HOURS)
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
def eligibility(space: ActionSpace, rules: ContactRules, recent: RecentContacts, *, now: np.ndarray,
                tz_offset: np.ndarray, consent: np.ndarray, allowed: np.ndarray | None = ...,
                budget_left: np.ndarray | None = ..., cost: np.ndarray | None = ...,
                reasons: Literal[False] = ...) -> np.ndarray: ...
@overload
def eligibility(space: ActionSpace, rules: ContactRules, recent: RecentContacts, *, now: np.ndarray,
                tz_offset: np.ndarray, consent: np.ndarray, allowed: np.ndarray | None = ...,
                budget_left: np.ndarray | None = ..., cost: np.ndarray | None = ...,
                reasons: Literal[True]) -> tuple[np.ndarray, np.ndarray]: ...
def eligibility(space: ActionSpace, rules: ContactRules, recent: RecentContacts, *, now: np.ndarray,
                tz_offset: np.ndarray, consent: np.ndarray, allowed: np.ndarray | None = None,
                budget_left: np.ndarray | None = None, cost: np.ndarray | None = None,
                reasons: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
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

    No contact (action 0) is always eligible. A malformed request raises ValueError naming the
    argument; nothing is clipped or guessed.
    """
    bits = channel_slot_reasons(space, rules, recent, now=now, tz_offset=tz_offset, consent=consent, allowed=allowed,
                                budget_left=budget_left, cost=cost)
    mask = _expand(space, bits == 0, True)
    if not reasons:
        return mask
    return mask, _expand(space, bits, 0)


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
