"""The batch body read column by column (serving.batch_json) agrees with pydantic: where it reads a body, it
reads what pydantic reads; where pydantic refuses a body or changes a value, it leaves the body to pydantic,
so DecideBatchRequest.model_validate_json gives pydantic's answer and pydantic's error, word for word."""

from __future__ import annotations

import json
import random

import orjson
import pytest
from pydantic import BaseModel, ValidationError

from serving.batch_json import batch_columns
from serving.schemas import MAX_BATCH, CustomerColumns, DecideBatchRequest

TELECOM = {
    "plan_type": "prepaid",
    "tenure_days": 40.0,
    "monthly_revenue": 12,
    "app_user": True,
    "days_to_contract_end": None,
}
EVERY_FIELD = {
    "customer_id": "c-1",
    "segment": "genz",
    "timezone": "Europe/Paris",
    "tenure_days": 120,
    "stage": "active",
    "cart_active": True,
    "consent": {"email": True, "sms": False},
    "channels": ["email", "push"],
    "n_purchases": 2,
    "last_purchase_at": "2025-05-01T18:30:00Z",
    "last_visit_at": 1748858100,
    "attributes": {"plan_type": "business", "x": -0.0, "y": 1e300, "z": "été"},
    "offers": ["data_boost_5gb"],
}


def pydantic_parse(body: bytes) -> DecideBatchRequest:
    """pydantic's own reading of ``body`` (the method DecideBatchRequest overrides)."""
    return BaseModel.model_validate_json.__func__(DecideBatchRequest, body)  # type: ignore[attr-defined]


def outcome(parse, body: bytes):
    """What ``parse`` makes of ``body``: the request as plain data (its repr: NaN equals NaN), or the error's
    text."""
    try:
        req = parse(body)
    except ValidationError as e:
        return "error", str(e)
    return "ok", repr((req.now, req.alternatives, [c.model_dump() for c in req.customers]))


def body_of(customers: list, **top) -> bytes:
    return json.dumps({"customers": customers} | top, ensure_ascii=False).encode()


def agree(body: bytes) -> bool:
    """The column reading of ``body`` and pydantic's agree; True when the column reading took it."""
    expected = outcome(pydantic_parse, body)
    assert outcome(DecideBatchRequest.model_validate_json, body) == expected
    fields = batch_columns(body)
    if fields is not None:
        assert expected[0] == "ok", f"read a body pydantic refuses: {body[:200]!r} -> {expected[1]}"
        assert outcome(lambda _: DecideBatchRequest.model_construct(**fields), body) == expected
    return fields is not None


@pytest.mark.parametrize(
    "body",
    [
        body_of([{"customer_id": f"c-{i}", "timezone": "UTC", "attributes": TELECOM} for i in range(50)]),
        body_of([{"customer_id": "a"}, {"customer_id": "b", "attributes": None}], alternatives=3),
        body_of([EVERY_FIELD, {"customer_id": "c-2", "tenure_days": 3.5, "stage": None}], now="2025-06-03T10:00:00Z"),
        body_of([EVERY_FIELD], now=1748944800),
        body_of([{"customer_id": "ünïcode-ÿ", "segment": "日本"}]),
    ],
)
def test_the_usual_bodies_are_read_by_column_as_pydantic_reads_them(body):
    assert agree(body)
    assert isinstance(DecideBatchRequest.model_validate_json(body).customers, CustomerColumns)


def test_an_integer_becomes_a_float_and_a_time_a_datetime_as_with_pydantic():
    customers = DecideBatchRequest.model_validate_json(body_of([EVERY_FIELD])).customers
    assert isinstance(customers, CustomerColumns)
    assert type(customers[0].tenure_days) is float
    assert customers[0].last_purchase_at == pydantic_parse(body_of([EVERY_FIELD])).customers[0].last_purchase_at


def customer(**kw):
    return {"customer_id": "c-1"} | kw


@pytest.mark.parametrize(
    "body",
    [
        body_of([customer(customer_id=" c-1")]),  # pydantic strips it
        body_of([customer(customer_id="c-1\u0085")]),
        body_of([customer(customer_id="c-1\x1f")]),  # Python would strip it, pydantic does not
        body_of([customer(customer_id="")]),
        body_of([customer(customer_id="x" * 201)]),
        body_of([customer(customer_id="c\x00")]),
        body_of([customer(customer_id=7)]),
        body_of([{"timezone": "UTC"}]),
        body_of([customer(timezone=None)]),
        body_of([customer(timezone="x" * 65)]),
        body_of([customer(segment=" genz")]),
        body_of([customer(shoe_size=42)]),
        body_of([customer()], extra=1),
        body_of([]),
        body_of([customer()] * (MAX_BATCH + 1)),
        body_of([customer(tenure_days=True)]),
        body_of([customer(tenure_days=-1)]),
        body_of([customer(tenure_days=1e6)]),
        body_of([customer(tenure_days="3")]),
        body_of([customer(stage="asleep")]),
        body_of([customer(stage=3)]),
        body_of([customer(cart_active=1)]),
        body_of([customer(cart_active=None)]),
        body_of([customer(n_purchases=3.0)]),
        body_of([customer(n_purchases=False)]),
        body_of([customer(n_purchases=-1)]),
        body_of([customer(n_purchases=10**6 + 1)]),
        body_of([customer(n_purchases=10**20)]),
        body_of([customer(last_visit_at=True)]),
        body_of([customer(last_visit_at="yesterday")]),
        body_of([customer(consent={"email": 1})]),
        body_of([customer(consent={" email": True})]),
        body_of([customer(consent={f"c{i}": True for i in range(65)})]),
        body_of([customer(consent=["email"])]),
        body_of([customer(channels=[f"c{i}" for i in range(65)])]),
        body_of([customer(channels=["email", 3])]),
        body_of([customer(channels="email")]),
        body_of([customer(offers=["o "])]),
        body_of([customer(attributes={f"a{i}": 1 for i in range(257)})]),
        body_of([customer(attributes={" plan_type": "prepaid"})]),
        body_of([customer(attributes={"": 1})]),
        body_of([customer(attributes={"x" * 65: 1})]),
        body_of([customer(attributes=[1])]),
        body_of([customer(attributes={"a": [1, [2]]})]),  # left to pydantic, and to the deployment
        body_of([customer(attributes={"a": "{["})]),
        body_of([customer(attributes={"a": 123456789012345678901234567890})]),  # a float to orjson
        body_of([customer(attributes={"a": -9223372036854775809})]),
        body_of([customer()], alternatives=21),
        body_of([customer()], alternatives=True),
        body_of([customer()], alternatives=2.0),
        body_of([customer()], now=True),
        body_of([customer()], now="soon"),
        body_of([customer(), "c-2"]),
        body_of(customer()),
        b'{"customers": [{"customer_id": "a", "attributes": {"a": ' + b"[" * 250 + b"]" * 250 + b"}}]}",
        b'{"customers": [{"customer_id": "a", "attributes": {"a": NaN}}]}',
        b'{"customers": [{"customer_id": "a", "attributes": {"a": 1e999}}]}',
        b'{"customers": [{"customer_id": "\\ud800"}]}',
        b'{"customers": [{"customer_id": "a"}]} x',
        b'\xef\xbb\xbf{"customers": [{"customer_id": "a"}]}',
        b'{"customers": [{"customer_id": "\xff"}]}',
        b"[]",
        b"",
    ],
)
def test_what_pydantic_refuses_or_changes_is_left_to_pydantic(body):
    assert not agree(body)


def test_text_is_left_to_pydantic():
    body = body_of([customer()])
    assert batch_columns(body.decode()) is None
    assert outcome(DecideBatchRequest.model_validate_json, body.decode()) == outcome(pydantic_parse, body)


def test_mutated_bodies_are_read_as_pydantic_reads_them_or_left_to_it():
    """Random edits of a body with every field: the column reading never takes one pydantic refuses, and
    reads the same request from every one it takes."""
    rng = random.Random(5)
    base = orjson.dumps({"now": 1748944800, "alternatives": 2, "customers": [EVERY_FIELD, customer(timezone="UTC")]})
    alphabet = b'{}[]",:0123456789.eE+- \\tfnrulabc\x00\x1f\xc3\xa9'
    taken = 0
    for _ in range(4000):
        body = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(body))
            op = rng.random()
            if op < 0.4:
                body[i] = rng.choice(alphabet)
            elif op < 0.7:
                body.insert(i, rng.choice(alphabet))
            else:
                del body[i]
        taken += agree(bytes(body))
    assert taken > 200  # many edits leave a valid body (a changed digit, a letter in a name)
