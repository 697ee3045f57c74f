"""Typed requests and responses of the decision service (pydantic), with the examples the OpenAPI spec shows.

Times are ISO 8601 date-times (a time without an offset is read as UTC) or numbers of seconds since
the Unix epoch. What depends on the deployed policy (segment and channel names) is checked by the
engine, which names the offending field (``customers[3].segment: unknown segment ...``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from nba.log.records import EVENTS

MAX_BATCH = 10_000
Event = Literal[EVENTS]  # type: ignore[valid-type]  # the decision log's event names

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, str_strip_whitespace=True)

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

    model_config = ConfigDict(**_STRICT, json_schema_extra={"example": CUSTOMER_EXAMPLE})

    customer_id: str = Field(min_length=1, max_length=200, description="the caller's stable customer id")
    segment: str = Field(min_length=1, description="segment name, one of the deployed policy's segments")
    timezone: str = Field("UTC", description="IANA name (Europe/Paris) or UTC offset (+02:00, UTC-5)")
    tenure_days: float = Field(ge=0, description="days since sign-up")
    stage: Literal["new", "active", "at_risk", "lapsed"] | None = Field(
        None, description="lifecycle stage; derived from tenure and last purchase when omitted")
    cart_active: bool = Field(False, description="an abandoned cart is open")
    consent: dict[str, bool] | None = Field(
        None, description="reachability per channel; a channel left out is not reachable. "
                          "Omitted: the caller vouches for every channel")
    channels: list[str] | None = Field(None, description="restrict this decision to these channels")
    n_purchases: int = Field(0, ge=0, description="purchases so far")
    last_purchase_at: datetime | None = Field(None, description="time of the last purchase")
    last_visit_at: datetime | None = Field(None, description="time of the last site or app visit")


class DecideRequest(Customer):
    """One decision: a customer, and optionally the current time and how many alternatives to return."""

    model_config = ConfigDict(**_STRICT, json_schema_extra={"example":
        CUSTOMER_EXAMPLE | {"now": "2025-06-03T10:00:00Z", "alternatives": 3}})

    now: datetime | None = Field(None, description="decision time (default: the server's clock)")
    alternatives: int = Field(3, ge=0, le=20, description="how many top alternatives to return")


class DecideBatchRequest(BaseModel):
    """Up to 10,000 customers decided at once (one transaction in the log)."""

    model_config = ConfigDict(**_STRICT, json_schema_extra={"example": {
        "now": "2025-06-03T10:00:00Z", "alternatives": 0,
        "customers": [CUSTOMER_EXAMPLE, {"customer_id": "c-000124", "segment": "senior", "tenure_days": 3}]}})

    now: datetime | None = Field(None, description="decision time for every customer (default: now)")
    alternatives: int = Field(0, ge=0, le=20, description="top alternatives returned per customer")
    customers: list[Customer] = Field(min_length=1, max_length=MAX_BATCH, description="distinct customers")


class Alternative(BaseModel):
    """An action the policy weighed, with its probability of being chosen."""

    action: str
    channel: str | None
    content: str | None
    send_hour_local: int | None = Field(description="the slot's local hour; null: send now")
    probability: float


class Decision(BaseModel):
    """What to do for one customer; ``channel`` null means no contact."""

    model_config = ConfigDict(json_schema_extra={"example": {
        "decision_id": "6f1c0d3e9b8a4c2d8e7f6a5b4c3d2e1f", "customer_id": "c-000123",
        "action": "push/cart_reminder/19h", "channel": "push", "content": "cart_reminder",
        "send_at": "2025-06-03T17:00:00Z", "send_at_local": "2025-06-03T19:00:00+02:00", "send_hour_local": 19,
        "propensity": 0.82, "policy": "linucb", "policy_version": "3", "experiment": "", "arm": "champion",
        "alternatives": [{"action": "email/promo/now", "channel": "email", "content": "promo",
                          "send_hour_local": None, "probability": 0.1}]}})

    decision_id: str
    customer_id: str
    action: str = Field(description="channel/content/slot, or no_contact")
    channel: str | None
    content: str | None
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

    model_config = ConfigDict(**_STRICT, json_schema_extra={"example": {
        "decision_id": "6f1c0d3e9b8a4c2d8e7f6a5b4c3d2e1f", "event": "converted", "time": "2025-06-03T18:10:00Z",
        "value": 42.5}})

    decision_id: str = Field(min_length=1, max_length=200)
    event: Event
    time: datetime | None = Field(None, description="when it happened (default: now)")
    value: float = Field(0.0, description="revenue of a conversion; 0 for other events unless given")


class FeedbackResponse(BaseModel):
    """``recorded`` is false when the same event was already in the log (an idempotent retry)."""

    decision_id: str
    event: str
    recorded: bool
