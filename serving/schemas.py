"""Typed requests and responses of the decision service (pydantic), with the examples the OpenAPI spec shows.

Times are ISO 8601 date-times (a time without an offset is read as UTC) or numbers of seconds since
the Unix epoch, from 1970 to 2199 (the engine refuses others). Numbers are strict: a JSON boolean is
not a number, and every count and amount has a bound. Text must be storable by every decision log
(no NUL character, no lone surrogate) and names are at most 64 characters, so a request the log
would refuse is refused before it is acknowledged. What depends on the deployed policy (segment and
channel names) is checked by the engine, which names the offending field (``customers[3].segment:
unknown segment ...``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal, overload

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from nba.log.records import EVENTS
from nba.log.validation import storable_text

MAX_BATCH = 10_000
MAX_ALTERNATIVES = 20  # alternatives one decision may return
MAX_ID = 200  # characters of a customer or decision id
MAX_PURCHASES = 1_000_000
MAX_TENURE_DAYS = 36_525.0  # a century
MAX_VALUE = 1e9  # largest revenue one conversion may report
MAX_NAME = 64  # segment, channel, offer, attribute and time-zone names
MAX_TEXT = 200  # an attribute's text value as documented (a category, or a time in ISO 8601)
MAX_ATTRIBUTES = 256  # attributes in one request
MAX_OFFERS = 10_000  # offers one request may be restricted to
Event = Literal[EVENTS]  # type: ignore[valid-type]  # the decision log's event names

STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, str_strip_whitespace=True)


def _storable(value: str) -> str:
    """Refuse what a decision log cannot store (a NUL character, a lone surrogate) before acknowledging."""
    if value.isascii() and "\x00" not in value:  # the usual text, at the cost of one call
        return value
    reason = storable_text(value)
    if reason is not None:
        raise ValueError(reason)
    return value


def _no_bool(value: Any) -> Any:
    """A JSON true/false is not a time: refuse it instead of reading it as second 0 or 1 of the epoch."""
    if isinstance(value, bool):
        raise ValueError("expected an ISO 8601 date-time or a number of seconds since the epoch, got a boolean")
    return value


Text = Annotated[str, AfterValidator(_storable)]
# An attribute's value is taken as the JSON has it and checked by the served deployment
# (nba.deployment.Deployment.check_columns: the declared type, strictly, so true is not 1 and "3" is not 3;
# range, allowed values; a 422 naming customers[i].attributes.<name>, the value cut to 60 characters), which
# refuses anything but a JSON scalar of the declared type and every name it does not declare. A type per
# value here (a union of the JSON scalars, each string checked storable) took 2.6 of the 6 ms of parsing a
# batch of 1,000 customers, for nothing the deployment lets through (nor does the log store the text of
# an attribute). The documented schema stays the scalars'.
AttributeValue = Annotated[
    Any,
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "boolean"},
                {"type": "integer"},
                {"type": "number"},
                {"type": "string", "maxLength": MAX_TEXT},
                {"type": "null"},
            ]
        }
    ),
]
AttributeName = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME), AfterValidator(_storable)]
Time = Annotated[datetime, BeforeValidator(_no_bool)]
Stage = Literal["new", "active", "at_risk", "lapsed"]

CUSTOMER_EXAMPLE = {
    "customer_id": "c-000123",
    "segment": "genz",
    "timezone": "Europe/Paris",
    "tenure_days": 120,
    "cart_active": True,
    "consent": {"email": True, "sms": False, "push": True},
    "channels": ["email", "push"],
    "n_purchases": 2,
    "last_purchase_at": "2025-05-01T18:30:00Z",
    "last_visit_at": "2025-06-02T09:15:00Z",
}


class Customer(BaseModel):
    """One customer's profile as the caller knows it; history features come from the decision log."""

    model_config = ConfigDict(**STRICT, json_schema_extra={"example": CUSTOMER_EXAMPLE})

    customer_id: Text = Field(min_length=1, max_length=MAX_ID, description="the caller's stable customer id")
    segment: Name | None = Field(
        None, description="segment name, one of the deployed policy's segments (required by a scenario policy)"
    )
    timezone: Name = Field("UTC", description="IANA name (Europe/Paris) or UTC offset (+02:00, UTC-5)")
    tenure_days: float | None = Field(
        None, ge=0, le=MAX_TENURE_DAYS, strict=True, description="days since sign-up (required by a scenario policy)"
    )
    stage: Stage | None = Field(None, description="lifecycle stage; derived from tenure and last purchase when omitted")
    cart_active: bool = Field(False, strict=True, description="an abandoned cart is open")
    consent: dict[Name, Annotated[bool, Field(strict=True)]] | None = Field(
        None,
        max_length=MAX_NAME,
        description="reachability per channel; a channel left out is not reachable. "
        "Omitted: the caller vouches for every channel",
    )
    channels: list[Name] | None = Field(
        None, max_length=MAX_NAME, description="restrict this decision to these channels"
    )
    n_purchases: int = Field(0, ge=0, le=MAX_PURCHASES, strict=True, description="purchases so far")
    last_purchase_at: Time | None = Field(None, description="time of the last purchase")
    last_visit_at: Time | None = Field(None, description="time of the last site or app visit")
    attributes: dict[AttributeName, AttributeValue] | None = Field(
        None,
        max_length=MAX_ATTRIBUTES,
        description="a deployment policy's declared customer attributes, by name "
        "(checked against the deployment: type, range, allowed values)",
    )
    offers: list[Name] | None = Field(
        None, max_length=MAX_OFFERS, description="restrict this decision to these offers (a deployment policy)"
    )


class DecideRequest(Customer):
    """One decision: a customer, and optionally the current time and how many alternatives to return."""

    model_config = ConfigDict(
        **STRICT, json_schema_extra={"example": CUSTOMER_EXAMPLE | {"now": "2025-06-03T10:00:00Z", "alternatives": 3}}
    )

    now: Time | None = Field(None, description="decision time (default: the server's clock)")
    alternatives: int = Field(
        3, ge=0, le=MAX_ALTERNATIVES, strict=True, description="how many top alternatives to return"
    )


class DecideBatchRequest(BaseModel):
    """Up to 10,000 customers decided at once (one transaction in the log)."""

    model_config = ConfigDict(
        **STRICT,
        json_schema_extra={
            "example": {
                "now": "2025-06-03T10:00:00Z",
                "alternatives": 0,
                "customers": [CUSTOMER_EXAMPLE, {"customer_id": "c-000124", "segment": "senior", "tenure_days": 3}],
            }
        },
    )

    now: Time | None = Field(None, description="decision time for every customer (default: now)")
    alternatives: int = Field(
        0, ge=0, le=MAX_ALTERNATIVES, strict=True, description="top alternatives returned per customer"
    )
    customers: list[Customer] = Field(min_length=1, max_length=MAX_BATCH, description="distinct customers")

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **kwargs: Any) -> DecideBatchRequest:  # type: ignore[override]
        """As pydantic's, read column by column where it can (:mod:`serving.batch_json`): the same request,
        its ``customers`` a :class:`CustomerColumns`; pydantic's own parse, and its errors, otherwise."""
        from serving.batch_json import batch_columns

        fields = None if kwargs else batch_columns(json_data)
        if fields is None:
            return super().model_validate_json(json_data, **kwargs)
        return cls.model_construct(**fields)


class CustomerColumns(Sequence[Customer]):
    """The customers of a batch as one list per field of :class:`Customer`, each value as pydantic would
    have made it (:mod:`serving.batch_json`); it reads as the list of Customer objects they make."""

    __slots__ = ("_n", "columns")

    def __init__(self, columns: dict[str, list[Any]], n: int) -> None:
        self.columns, self._n = columns, n

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> Customer: ...

    @overload
    def __getitem__(self, i: slice) -> list[Customer]: ...

    def __getitem__(self, i: int | slice) -> Customer | list[Customer]:
        if isinstance(i, slice):
            return [self[k] for k in range(self._n)[i]]
        i = range(self._n)[i]  # IndexError beyond the customers
        return Customer.model_construct(**{name: col[i] for name, col in self.columns.items()})

    def __iter__(self) -> Iterator[Customer]:
        return map(self.__getitem__, range(self._n))


class Alternative(BaseModel):
    """An action the policy weighed, with its probability of being chosen."""

    action: str
    channel: str | None
    content: str | None
    send_hour_local: int | None = Field(description="the slot's local hour; null: send now")
    probability: float


class Decision(BaseModel):
    """What to do for one customer; ``channel`` null means no contact."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "decision_id": "6f1c0d3e9b8a4c2d8e7f6a5b4c3d2e1f",
                "customer_id": "c-000123",
                "action": "push/cart_reminder/19h",
                "channel": "push",
                "content": "cart_reminder",
                "send_at": "2025-06-03T17:00:00Z",
                "send_at_local": "2025-06-03T19:00:00+02:00",
                "send_hour_local": 19,
                "propensity": 0.82,
                "policy": "linucb",
                "policy_version": "3",
                "experiment": "",
                "arm": "champion",
                "alternatives": [
                    {
                        "action": "email/promo/now",
                        "channel": "email",
                        "content": "promo",
                        "send_hour_local": None,
                        "probability": 0.1,
                    }
                ],
            }
        }
    )

    decision_id: str
    customer_id: str
    action: str = Field(description="channel/content/slot, or no_contact")
    channel: str | None
    content: str | None
    offer: str | None = Field(
        None, description="a deployment's offer (the content); null for no contact or a scenario policy"
    )
    offer_features: dict[str, float | str] | None = Field(None, description="the offer's declared features")
    send_at: datetime = Field(description="when to send, UTC (the decision time for no contact)")
    send_at_local: datetime = Field(description="the same instant in the customer's time zone")
    send_hour_local: int | None = Field(description="the send slot's local hour; null: now")
    propensity: float = Field(description="probability with which the policy chose this action")
    policy: str
    policy_version: str
    experiment: str
    arm: str
    alternatives: list[Alternative] = Field(default_factory=list)


class DecideBatchResponse(BaseModel):
    """Decisions in the order of the request's customers."""

    decisions: list[Decision]


class FeedbackRequest(BaseModel):
    """An outcome event that followed a decision; sending the same (decision_id, event) again changes nothing."""

    model_config = ConfigDict(
        **STRICT,
        json_schema_extra={
            "example": {
                "decision_id": "6f1c0d3e9b8a4c2d8e7f6a5b4c3d2e1f",
                "event": "converted",
                "time": "2025-06-03T18:10:00Z",
                "value": 42.5,
            }
        },
    )

    decision_id: Text = Field(min_length=1, max_length=MAX_ID)
    event: Event
    time: Time | None = Field(None, description="when it happened, not before its decision (default: now)")
    value: float = Field(
        0.0, ge=0, le=MAX_VALUE, strict=True, description="revenue of a conversion; 0 for other events unless given"
    )


class FeedbackResponse(BaseModel):
    """``recorded`` is false when the same event was already in the log (an idempotent retry)."""

    decision_id: str
    event: str
    recorded: bool
