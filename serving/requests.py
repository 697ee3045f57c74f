"""Request validation: what the decision service refuses, and the validated rows it decides on.

:func:`validate` turns the customers of one request (objects with the :class:`serving.schemas.Customer`
fields) into :class:`Rows`, every row bound to the served version that will decide it, or raises
:class:`BadRequest` naming the first offending field (``customers[3].attributes.plan_type: ...``).
Nothing is stored before a request is valid.

What a row must carry depends on the served policy's world:

* a **scenario** policy (the simulator's world) decides on the profile fields: ``segment`` and
  ``tenure_days`` are required, ``stage``, ``cart_active``, ``consent``, ``n_purchases``,
  ``last_purchase_at`` and ``last_visit_at`` optional; ``attributes`` and ``offers`` are refused;
* a **deployment** policy (a brand's world, :mod:`nba.deployment`) decides on the deployment's declared
  ``attributes`` (checked by :meth:`nba.deployment.Deployment.check_attributes`: types, ranges, allowed
  values, defaults, required ones), optionally restricted to some ``channels`` and ``offers``; the
  profile fields are refused (consent comes from the channels' consent attributes).

Validation runs column by column (the attributes too: :meth:`nba.deployment.Deployment.check_columns`): a
batch of 10,000 customers is validated in a few milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nba.deployment import Deployment, DeploymentError
from nba.eligibility import ZONE_HINT, utc_offset
from nba.features import LIFECYCLE_STAGES, NEVER
from serving.model_store import Served
from serving.schemas import CustomerColumns

_STAGE = {s: i for i, s in enumerate(LIFECYCLE_STAGES)}
PROFILE_FIELDS = (
    "segment",
    "tenure_days",
    "stage",
    "cart_active",
    "consent",
    "n_purchases",
    "last_purchase_at",
    "last_visit_at",
)  # the simulator's profile: what a scenario policy reads
DEPLOYMENT_FIELDS = ("attributes", "offers")  # what a deployment policy reads beside the time zone and channels
_DEFAULTS = (None, False, 0)  # the defaults of the fields above


class BadRequest(ValueError):
    """A request the service refuses (4xx); the message starts with the offending field."""

    status = 422


class UnknownDecision(BadRequest):
    """Feedback for a decision id the log does not hold."""

    status = 404


class NotReady(RuntimeError):
    """No policy loaded yet (503)."""


class LogBehind(NotReady):
    """Write-behind feedback for a decision the log does not hold yet (503: retry later)."""


# ----------------------------------------------------------------------------- time
EARLIEST_H = 0.0  # 1970-01-01T00:00Z: times the service accepts, in hours since the epoch
LATEST_H = (datetime(2200, 1, 1, tzinfo=UTC).timestamp()) / 3600.0  # before 2200-01-01T00:00Z


def checked_hours(t: datetime | float | None, default: float, field_name: str) -> float:
    """:func:`hours` of ``t``, refused (BadRequest naming ``field_name``) outside 1970 to 2199."""
    try:
        h = hours(t, default)
    except (OverflowError, ValueError, OSError):
        h = math.nan
    if not (EARLIEST_H <= h < LATEST_H):
        raise BadRequest(f"{field_name}: must be a time from 1970-01-01 to 2199-12-31 (UTC), got {short(t)}")
    return h


def short(value: Any, limit: int = 60) -> str:
    """repr of ``value`` cut to ``limit`` characters: an error message never echoes a large input."""
    text = repr(value.isoformat() if isinstance(value, datetime) else value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def hours(t: datetime | float | None, default: float) -> float:
    """Hours since the epoch of ``t`` (a datetime, naive = UTC, or epoch seconds); ``default`` when None."""
    if t is None:
        return default
    if isinstance(t, datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=UTC)
        return t.timestamp() / 3600.0
    return float(t) / 3600.0


def tz_offset(name: str, now_h: float, field_name: str) -> float:
    """Hours east of UTC of time zone ``name`` at ``now_h`` (:func:`nba.eligibility.utc_offset`);
    BadRequest naming ``field_name`` if unknown."""
    try:
        return utc_offset(name, now_h)
    except ValueError:
        raise BadRequest(f"{field_name}: unknown time zone {short(name)}; {ZONE_HINT}") from None


def _p(i: int, batch: bool) -> str:
    """Field-path prefix of row ``i``: ``customers[i].`` in a batch, nothing for a single decision."""
    return f"customers[{i}]." if batch else ""


# ----------------------------------------------------------------------------- rows
@dataclass
class Rows:
    """Validated customers of one request, every row bound to the served version that will decide it.

    The profile columns (``segment`` to ``last_visit``) are filled for a scenario policy, ``attributes``
    and ``offers`` for a deployment policy; the other kind's columns are empty lists.
    """

    ids: list[str]
    alias: list[str]  # served alias deciding each row (champion, or challenger in its arm)
    arm: list[str]  # experiment arm ("" without experiment)
    tz: list[float]
    allowed: list[list[bool] | None]  # per channel of the row's bundle; None: all
    segment: list[int]
    tenure: list[float]
    stage: list[int]  # -1: derive
    cart: list[bool]
    consent: list[list[bool] | None]  # per channel of the row's bundle; None: all
    n_purchases: list[float]
    last_purchase: list[float]
    last_visit: list[float]
    attributes: Sequence[dict[str, Any]]  # checked and completed with the deployment's defaults (AttributeColumns)
    offers: list[list[bool] | None]  # per offer of the deployment; None: all
    zones: list[str] = field(default_factory=list)  # the time zones ``tz`` was read from (names or offsets)


def names_of(served: Served) -> dict[str, Any]:
    """Name lookups of a served bundle: its segments, channels and offers by index."""
    bundle = served.bundle
    space = bundle.policy.space
    d = bundle.deployment
    return {
        "segments": {} if d is not None else {s: i for i, s in enumerate(bundle.spec.segments)},
        "channels": {c: i for i, c in enumerate(space.channels)},
        "offers": {} if d is None else {o.name: i for i, o in enumerate(d.offers)},
    }


class Fields:
    """The customers of a request field by field: a :class:`serving.schemas.CustomerColumns`' lists as they
    are, other customers' (objects with the :class:`serving.schemas.Customer` fields) read once a field; a
    field an object lacks reads None."""

    def __init__(self, customers: Sequence[Any]) -> None:
        self.n = len(customers)
        self._customers = customers
        self._columns: dict[str, list[Any]] = dict(customers.columns) if isinstance(customers, CustomerColumns) else {}

    def __getitem__(self, name: str) -> list[Any]:
        values = self._columns.get(name)
        if values is None:
            values = self._columns[name] = [getattr(c, name, None) for c in self._customers]
        return values

    def given(self, name: str) -> bool:
        """Whether some customer gives ``name`` (a value but None)."""
        return self[name].count(None) != self.n


def validate(
    customers: Sequence[Any] | Fields,
    now_h: float,
    alias: list[str],
    arm: list[str],
    served: dict[str, Served],
    tables: dict[str, dict[str, Any]],
    batch: bool,
) -> Rows:
    """``customers`` (or their :class:`Fields`) checked into :class:`Rows` for the versions
    ``served[alias[i]]`` (``tables``: their :func:`names_of`, by alias); BadRequest naming the first
    offending field."""
    f = customers if isinstance(customers, Fields) else Fields(customers)
    ids = f["customer_id"]
    if batch and len(set(ids)) != len(ids):
        seen: dict[str, int] = {}
        for i, c in enumerate(ids):
            if c in seen:
                raise BadRequest(f"customers[{i}].customer_id: duplicate of customers[{seen[c]}] ({short(c)})")
            seen[c] = i
    deployment = served[alias[0]].bundle.deployment if alias else None
    names = f["timezone"]
    zones = {z: tz_offset(z, now_h, f"{_p(names.index(z), batch)}timezone") for z in dict.fromkeys(names)}
    allowed = _each_flags(f, "channels", alias, tables, batch, "channel")
    rows = Rows(
        ids, alias, arm, list(map(zones.__getitem__, names)), allowed, [], [], [], [], [], [], [], [], [], [], names
    )
    if deployment is None:
        _profiles(rows, f, now_h, tables, batch)
    else:
        _attributes(rows, f, deployment, tables, batch)
    return rows


def _each_flags(
    f: Fields, name: str, alias: list[str], tables: dict[str, dict[str, Any]], batch: bool, what: str
) -> list[list[bool] | None]:
    """Per customer, :func:`_flags` of the names it gives in field ``name`` (channels, offers), None where it
    gives none."""
    out: list[list[bool] | None] = [None] * f.n
    if f.given(name):
        for i, wanted in enumerate(f[name]):
            if wanted is not None:
                out[i] = _flags(tables[alias[i]][f"{what}s"], wanted, f"{_p(i, batch)}{name}", what)
    return out


def _refuse(f: Fields, fields: tuple[str, ...], batch: bool, why: str) -> None:
    """BadRequest naming the first of ``fields`` some customer gave."""
    # a field counts as given when it holds something but its default (the HTTP front end passes every
    # field, so pydantic's model_fields_set cannot tell); field by field, the first row that gives any
    n, first, name = f.n, f.n, ""
    for field_name in fields:
        values = f[field_name]
        if values.count(None) == n or values.count(False) == n:  # all None, or all False / 0
            continue
        i = next((i for i, v in enumerate(values[:first]) if v not in _DEFAULTS), n)
        if i < first:
            first, name = i, field_name
    if first < n:
        raise BadRequest(f"{_p(first, batch)}{name}: {why}")


def _profiles(rows: Rows, f: Fields, now_h: float, tables: dict[str, dict[str, Any]], batch: bool) -> None:
    """The profile columns of a scenario policy's rows."""
    _refuse(
        f,
        DEPLOYMENT_FIELDS,
        batch,
        "the served policy decides in the simulator's world, on the "
        "profile fields (segment, tenure_days, ...): it has no "
        "declared attributes or offers",
    )
    alias = rows.alias
    segs = f["segment"]
    for name in ("segment", "tenure_days"):
        if None in f[name]:
            i = f[name].index(None)
            raise BadRequest(f"{_p(i, batch)}{name}: missing (the served policy decides on the profile fields)")
    if len(tables) == 1:
        segment = list(map(next(iter(tables.values()))["segments"].get, segs))
    else:
        segment = [tables[a]["segments"].get(x) for a, x in zip(alias, segs, strict=True)]
    if None in segment:
        i = segment.index(None)
        raise BadRequest(
            f"{_p(i, batch)}segment: unknown segment {short(segs[i])}; valid: {list(tables[alias[i]]['segments'])}"
        )
    consent: list[list[bool] | None] = [None] * f.n
    if f.given("consent"):
        for i, given in enumerate(f["consent"]):
            if given is not None:
                consent[i] = _flags(
                    tables[alias[i]]["channels"],
                    [ch for ch, ok in given.items() if ok],
                    f"{_p(i, batch)}consent",
                    "channel",
                    also=given,
                )
    latest = now_h + 1e-6
    stamps = {}
    for name in ("last_purchase_at", "last_visit_at"):
        values = f[name]
        h = [NEVER if v is None else checked_hours(v, NEVER, f"{_p(i, batch)}{name}") for i, v in enumerate(values)]
        if h and max(h) > latest:
            i = next(i for i, v in enumerate(h) if v > latest)
            raise BadRequest(f"{_p(i, batch)}{name}: is after the decision time")
        stamps[name] = h
    rows.segment = segment
    rows.tenure = list(map(float, f["tenure_days"]))
    rows.stage = [-1 if s is None else _STAGE[s] for s in f["stage"]]
    rows.cart = list(map(bool, f["cart_active"]))
    rows.consent = consent
    rows.n_purchases = list(map(float, f["n_purchases"]))
    rows.last_purchase, rows.last_visit = stamps["last_purchase_at"], stamps["last_visit_at"]


def _attributes(rows: Rows, f: Fields, deployment: Deployment, tables: dict[str, dict[str, Any]], batch: bool) -> None:
    """The attribute and offer columns of a deployment policy's rows."""
    _refuse(
        f,
        PROFILE_FIELDS,
        batch,
        f"the served policy decides on the deployment {deployment.name!r}: "
        "send the customer's declared attributes (attributes: {...}) instead "
        "of the simulator's profile fields",
    )
    given = f["attributes"]
    try:  # column by column: one pass per attribute over the batch
        out = deployment.check_columns(
            [a or {} for a in given] if None in given else given,
            "customers[{i}].attributes" if batch else "attributes",
        )
    except DeploymentError as e:
        raise BadRequest(str(e)) from None
    rows.attributes, rows.offers = out, _each_flags(f, "offers", rows.alias, tables, batch, "offer")


def _flags(
    index: dict[str, int], names: list[str], field_name: str, what: str, also: dict[str, bool] | None = None
) -> list[bool]:
    """One flag per entry of ``index``: True for the ``names`` given; BadRequest naming ``field_name``
    for a name (of ``names``, or a key of ``also``) it does not hold."""
    for name in (*names, *(also or ())):
        if name not in index:
            raise BadRequest(f"{field_name}: unknown {what} {short(name)}; valid: {list(index)}")
    out = [False] * len(index)
    for name in names:
        out[index[name]] = True
    return out
