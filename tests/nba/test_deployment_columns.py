"""A batch's attributes checked column by column (Deployment.check_columns) against the row-by-row check
(Deployment.check_attributes) on random valid and invalid batches: the same values, the same error for the
first refused row; AttributeColumns reads as the rows it holds; the deployment's eligibility is the contact
policy's reasons with its offers' own rules on top, whatever the path that computes them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from nba.deployment import FEW_ROWS, AttributeColumns, Deployment, DeploymentError, Usage
from nba.eligibility import Reason, eligibility, send_time

ROOT = Path(__file__).resolve().parents[2]
TELECOM = ROOT / "examples" / "telecom" / "deployment.toml"
JUNE = 486_000.0  # 2025-06-11 00:00 UTC, hours since the epoch
PATH = "customers[{i}].attributes"


@pytest.fixture(scope="module")
def telecom() -> Deployment:
    return Deployment.load(TELECOM)


@pytest.fixture(scope="module")
def shop() -> Deployment:
    """Every attribute type, with and without defaults, required or not, bounded or not."""
    return Deployment.from_dict(
        {
            "deployment": {"name": "shop", "send_slots": ["now", 18]},
            "attributes": {
                "tier": {"type": "category", "values": ["a", "b", "c"], "default": "a"},
                "region": {"type": "category", "values": ["north", "south"], "required": True},
                "spend": {"type": "number", "min": 0, "max": 1000, "default": 0},
                "age": {"type": "number", "min": 18},
                "score": {"type": "number", "required": True},
                "sms_ok": {"type": "boolean", "default": True},
                "vip": {"type": "boolean"},
                "seen_at": {"type": "time"},
                "joined_at": {"type": "time", "default": "2024-01-01"},
            },
            "channels": {"email": {"cost": 0.001}, "sms": {"cost": 0.05, "consent": "sms_ok", "quiet_hours": [21, 8]}},
            "offers": {
                "promo": {"features": {"discount": 0.1}},
                "news": {
                    "features": {"discount": 0.0},
                    "channels": ["email"],
                    "eligible": {"tier": ["b", "c"], "spend": {"min": 10}, "vip": [True]},
                },
            },
        }
    )


def _valid(d: Deployment, rng: np.random.Generator) -> dict:
    """A random valid row: each attribute given, left out, or null (unless required)."""
    row: dict = {}
    for a in d.attributes:
        r = rng.random()
        if not a.required and r < 0.2:
            continue
        if not a.required and r < 0.3:
            row[a.name] = None
            continue
        if a.type == "category":
            row[a.name] = str(rng.choice(a.values))
        elif a.type == "boolean":
            row[a.name] = bool(rng.random() < 0.5)
        elif a.type == "time":
            row[a.name] = ["2025-06-11", "2025-06-11T10:30:00+02:00", "2024-02-29T23:59:59Z"][int(rng.integers(3))]
        else:
            low = 0.0 if a.min is None else a.min
            high = low + 500 if a.max is None else a.max
            x = float(rng.uniform(low, high))
            row[a.name] = int(x) if rng.random() < 0.5 else x  # JSON gives ints and floats
    return row


# values each attribute type refuses (and a few it takes only one at a time: a NumPy float is a float)
BAD = {
    "number": ["3", True, math.nan, math.inf, 10**400, [1], -1e9, 1e9],
    "category": ["gold", 1, True, ["a"], ""],
    "boolean": [1, 0, "true", 1.0],
    "time": ["yesterday", 3, True, "2025-13-01"],
}


def _corrupt(d: Deployment, row: dict, rng: np.random.Generator) -> object:
    """``row`` made invalid one way or another (or not a table at all)."""
    if not isinstance(row, dict):  # corrupted already
        return row
    r = rng.random()
    if r < 0.1:
        return ["not", "a", "table"] if rng.random() < 0.5 else None
    if r < 0.25:
        return row | {"shoe_size": 42}
    required = [a for a in d.attributes if a.required]
    if r < 0.4 and required:
        a = required[int(rng.integers(len(required)))]
        out = dict(row)
        if rng.random() < 0.5:
            out.pop(a.name, None)
        else:
            out[a.name] = None
        return out
    a = d.attributes[int(rng.integers(len(d.attributes)))]
    bad = BAD[a.type]
    value = bad[int(rng.integers(len(bad)))]
    if a.type == "number" and isinstance(value, float) and abs(value) == 1e9 and a.min is None and a.max is None:
        value = "1e9"  # an unbounded number takes any finite value
    return row | {a.name: value}


def _row_by_row(d: Deployment, rows: list) -> tuple[list[dict] | None, str | None]:
    """The rows checked one by one: the checked values, or the first error's message."""
    out = []
    for i, r in enumerate(rows):
        try:
            out.append(d.check_attributes(r, PATH.format(i=i)))
        except DeploymentError as e:
            return None, str(e)
    return out, None


def _same_columns(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)
    for name, col in want.items():
        assert got[name].dtype == col.dtype and got[name].shape == col.shape, name
        if col.dtype.kind == "f":
            np.testing.assert_array_equal(got[name], col, err_msg=name)  # NaN where unknown, on both
        else:
            assert [(type(v), v) for v in got[name].tolist()] == [(type(v), v) for v in col.tolist()], name


@pytest.mark.parametrize("which", ["telecom", "shop"])
def test_a_valid_batch_checked_column_by_column_is_the_row_by_row_check(which, request):
    d = request.getfixturevalue(which)
    rng = np.random.default_rng(11)
    for _ in range(60):
        rows = [_valid(d, rng) for _ in range(int(rng.integers(0, 40)))]
        want, error = _row_by_row(d, rows)
        assert error is None
        got = d.check_columns(rows, PATH)
        assert isinstance(got, AttributeColumns) and len(got) == len(rows)
        _same_columns(d.columns(got), d.columns(want))
        assert list(got) == want  # read as rows: what check_attributes gives


@pytest.mark.parametrize("which", ["telecom", "shop"])
def test_an_invalid_batch_fails_on_the_first_refused_row_with_its_own_error(which, request):
    d = request.getfixturevalue(which)
    rng = np.random.default_rng(12)
    for _ in range(300):
        n = int(rng.integers(1, 30))
        rows: list = [_valid(d, rng) for _ in range(n)]
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(n))
            rows[i] = _corrupt(d, rows[i], rng)
        _, error = _row_by_row(d, rows)
        if error is None:  # a corruption that happens to be valid
            _same_columns(d.columns(d.check_columns(rows, PATH)), d.columns(_row_by_row(d, rows)[0]))
            continue
        with pytest.raises(DeploymentError) as e:
            d.check_columns(rows, PATH)
        assert str(e.value) == error


def test_the_error_names_the_row_and_the_attribute(telecom):
    rows = [{"plan_type": "prepaid", "tenure_days": 3}] * 9 + [{"plan_type": "gold", "tenure_days": 3}]
    with pytest.raises(DeploymentError, match=r"^customers\[9\]\.attributes\.plan_type: unknown value 'gold'"):
        telecom.check_columns(rows, PATH)
    with pytest.raises(DeploymentError, match=r"^attributes\.tenure_days: must be a finite number, got 1000000000"):
        telecom.check_columns([{"plan_type": "prepaid", "tenure_days": 10**400}], "attributes")
    with pytest.raises(DeploymentError, match=r"^customers\[7\]\.attributes\.tenure_days: missing \(required\)"):
        telecom.check_columns([{"plan_type": "prepaid", "tenure_days": 3}] * 7 + [{"plan_type": "prepaid"}], PATH)


def test_attribute_columns_read_as_their_rows(shop):
    rng = np.random.default_rng(13)
    rows = [_valid(shop, rng) for _ in range(3 * FEW_ROWS)]
    checked = [shop.check_attributes(r) for r in rows]
    a = shop.check_columns(rows[:FEW_ROWS])  # row by row inside
    b = shop.check_columns(rows[FEW_ROWS:])  # column by column
    both = AttributeColumns.concat([a, b])
    assert list(both) == checked and both[-1] == checked[-1] and both[1:3][1] == checked[2]
    picked = both.take(np.array([5, 0, 5]))
    assert list(picked) == [checked[5], checked[0], checked[5]]
    with pytest.raises(IndexError):
        both[len(rows)]
    with pytest.raises(ValueError):
        both.columns["spend"][0] = 1.0  # read-only: the decide path shares them
    people = shop.check_columns(rows)
    np.testing.assert_array_equal(shop.offers_allowed(people, JUNE), shop.offers_allowed(checked, JUNE))
    np.testing.assert_array_equal(shop.consent(people), shop.consent(checked))


def _reference_reasons(d: Deployment, people: list[dict], recent, now, tz, usage, offers) -> np.ndarray:
    """The deployment's reasons from their definition: the contact policy's, OFFER where the offer's rules
    or channels exclude it, the counts across customers, then RESTRICTED outside the request's offers."""
    space, n = d.action_space(), len(people)
    offer_caps = d.offer_caps() if recent.offer_times is not None else ()
    _, bits = eligibility(
        space,
        d.contact_rules(),
        recent,
        now=now,
        tz_offset=tz,
        consent=d.consent(people),
        reasons=True,
        offer_caps=offer_caps,
    )
    ok = d.offers_allowed(people, now)[:, space.content_of[1:]]
    ok &= d.offer_channels()[space.content_of[1:], space.channel_of[1:]]
    bits[:, 1:] |= np.where(ok, 0, int(Reason.OFFER)).astype(np.uint8)
    if usage is not None:
        budget = np.array([np.inf if o.budget is None else o.budget for o in d.offers])
        capacity = np.array([np.inf if c.capacity_per_day is None else c.capacity_per_day for c in d.channels])
        send = send_time(space, np.full(n, now), np.full(n, tz))
        _limit(space, bits, send, budget - usage.offer_sends, capacity[:, None] - usage.channel_sends, usage.day)
    if offers is not None:
        bits[:, 1:] |= np.where(offers[:, space.content_of[1:]], 0, int(Reason.RESTRICTED)).astype(np.uint8)
    return bits


def _limit(
    space, bits: np.ndarray, send: np.ndarray, offer_left: np.ndarray, channel_left: np.ndarray, first_day: int
) -> None:
    """BUDGET as nba.eligibility.limit_to_remaining documents it, row by row: what is left of an offer (of a
    channel's day) goes to the first rows that have an eligible action of it (sending that day)."""
    n = bits.shape[0]
    budget = np.uint8(Reason.BUDGET)
    contact = np.arange(1, space.n_actions)
    for k in np.flatnonzero(np.isfinite(offer_left)):
        of = contact[space.content_of[1:] == k]
        taken = 0
        for i in range(n):
            able = (bits[i, of] == 0).any()
            if taken >= offer_left[k]:
                bits[i, of] |= budget
            taken += able
    day = np.floor(send / 24.0).astype(int) - first_day  # (N, S)
    for c in np.flatnonzero(np.isfinite(channel_left).any(axis=1)):
        on_c = contact[space.channel_of[1:] == c]
        for d in range(channel_left.shape[1]):
            taken = 0
            for i in range(n):
                that_day = on_c[day[i, space.slot_of[on_c]] == d]
                able = (bits[i, that_day] == 0).any()
                if taken >= channel_left[c, d]:
                    bits[i, that_day] |= budget
                taken += able


@pytest.mark.parametrize("which", ["telecom", "shop"])
def test_the_deployments_reasons_are_the_rules_on_top_of_the_contact_policy(which, request):
    d = request.getfixturevalue(which)
    space = d.action_space()
    rng = np.random.default_rng(14)
    budgeted = 0
    for trial in range(12):
        n = int(rng.integers(1, 60))
        rows = [_valid(d, rng) for _ in range(n)]
        people = [d.check_attributes(r) for r in rows]
        now, tz = JUNE + float(rng.uniform(0, 48)), float(rng.choice([-5.0, 0.0, 2.0, 9.0]))
        recent = d.recent(n)
        contacts = rng.random(n) < 0.5
        actions = rng.integers(1, space.n_actions, n)
        earlier = send_time(space, np.full(n, now - float(rng.uniform(1, 40))), np.full(n, tz))
        recent.record_decisions(space, np.where(contacts, actions, 0), earlier)
        offers = rng.random((n, len(d.offers))) < 0.7 if trial % 2 else None
        day = int(now // 24)
        # a few sends left of each budget and capacity, so that the batch's first rows take them
        budget = np.array([0 if o.budget is None else o.budget for o in d.offers])
        capacity = np.array([0 if c.capacity_per_day is None else c.capacity_per_day for c in d.channels])
        left = rng.integers(0, 4, (len(d.channels), 2))
        usage = Usage(
            np.maximum(budget - rng.integers(0, 4, len(d.offers)), 0), np.maximum(capacity[:, None] - left, 0), day
        )
        for u in (None, usage):
            want = _reference_reasons(d, people, recent, now, tz, u, offers)
            for attributes in (people, d.check_columns(rows)):
                mask, bits = d.eligibility(
                    attributes, recent, now=now, tz_offset=tz, reasons=True, usage=u, offers=offers
                )
                np.testing.assert_array_equal(bits, want)
                budgeted += int(((bits & Reason.BUDGET) != 0).any())
                np.testing.assert_array_equal(mask, want == 0)
    assert budgeted or which == "shop"  # the counts across customers were in play
