"""Validation of the decision log's records, on SQLite and PostgreSQL: every refusal names the field and
the row, repeats no huge value, and comes before the transaction (nothing written)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from nba.log import DecisionRecords, OutcomeRecords
from nba.log.validation import storable_text
from tests.nba.log_helpers import T0, make_records


def _bad(field, value):
    def make(rec: DecisionRecords) -> DecisionRecords:
        x = getattr(rec, field).copy() if hasattr(getattr(rec, field), "copy") else getattr(rec, field)
        return replace(rec, **{field: value(x)})

    return make


def _set(x, i, v):
    x = x.astype(object) if isinstance(v, str) or x.dtype.kind == "U" else x
    x[i] = v
    return x


@pytest.mark.parametrize(
    "make, message",
    [
        (_bad("decision_id", lambda x: _set(x, 2, "")), r"^decision_id: row 2: must not be empty"),
        (_bad("decision_id", lambda x: _set(x, 4, x[1])), r"^decision_id: row 4: duplicate 'd1'"),
        (_bad("decision_id", lambda x: np.arange(len(x))), r"^decision_id: expected strings"),
        (_bad("customer_id", lambda x: _set(x, 1, 7)), r"^customer_id: row 1: expected a string, got 7"),
        (_bad("time", lambda x: _set(x, 5, np.nan)), r"^time: row 5: must be finite"),
        (_bad("time", lambda x: x[:-1]), r"^time: expected shape \(10,\)"),
        (_bad("send_at", lambda x: _set(x, 3, T0)), r"^send_at: row 3: must not be before"),
        (_bad("propensity", lambda x: _set(x, 1, 1.5)), r"^propensity: row 1: must be in \(0, 1\]"),
        (_bad("action", lambda x: _set(x, 2, 6)), r"^action: row 2: must be in \[0, 6\), got 6"),
        (_bad("action", lambda x: x.astype(float)), r"^action: expected integers"),
        (_bad("context", lambda x: _set(x, 7, np.inf)), r"^context: row 7: contains NaN"),
        (_bad("context", lambda x: x[:, 0]), r"^context: expected shape \(10, d\)"),
        (_bad("eligible", lambda x: x.astype(int)), r"^eligible: expected a boolean array"),
        (_bad("cost", lambda x: _set(x, 0, -1.0)), r"^cost: row 0: must be >= 0"),
        (_bad("policy", lambda x: _set(x, 9, "")), r"^policy: row 9: must not be empty"),
    ],
)
def test_validation_names_the_field(log, make, message):
    with pytest.raises(ValueError, match=message):
        log.log_decisions(make(make_records(10)))
    assert log.count_decisions() == 0


def test_storable_text_names_what_a_database_cannot_store():
    assert storable_text("") is None and storable_text("ordinary é 😀 \t") is None
    assert storable_text("poison\x00id") == "contains a NUL character"
    assert storable_text(json.loads('"ab\\ud800"')) == "is not valid Unicode (a lone surrogate '\\ud800' at position 2)"


@pytest.mark.parametrize("field", ["decision_id", "customer_id", "policy", "policy_version", "experiment", "arm"])
@pytest.mark.parametrize(
    "value, message",
    [
        ("poison\x00id", r"contains a NUL character, got 'poison\\x00id'$"),
        ("\x00", r"contains a NUL character, got '\\x00'$"),
        ("é\udfff", r"is not valid Unicode \(a lone surrogate '\\udfff' at position 1\), got 'é\\udfff'$"),
    ],
)
def test_text_either_database_cannot_store_is_refused_before_the_transaction(log, field, value, message):
    """PostgreSQL refused a NUL inside the transaction (a DataError failing every row of the batch) and
    SQLite stored it; a lone surrogate failed both while binding. Now validation names the row."""
    rec = make_records(10)
    col = getattr(rec, field).astype(object)
    col[3] = value
    with pytest.raises(ValueError, match=rf"^{field}: row 3: {message}"):
        log.log_decisions(replace(rec, **{field: col}))
    assert log.count_decisions() == 0
    assert log.log_decisions(rec) == 10


def test_a_huge_refused_value_is_not_echoed(log):
    rec = make_records(4)
    col = rec.customer_id.astype(object)
    col[2] = "x" * 100_000 + "\x00"
    with pytest.raises(ValueError, match=r"^customer_id: row 2: contains a NUL character, got 'xxx") as caught:
        log.log_decisions(replace(rec, customer_id=col))
    assert len(str(caught.value)) < 150
    ids = rec.decision_id.astype(object)
    ids[3] = ids[0] = "d" * 1_000
    with pytest.raises(ValueError, match=r"^decision_id: row 3: duplicate 'ddd") as caught:
        log.log_decisions(replace(rec, decision_id=ids))
    assert len(str(caught.value)) < 150


def test_outcomes_and_history_reads_refuse_text_a_database_cannot_store(log):
    rec = make_records(5)
    log.log_decisions(rec)
    bad = OutcomeRecords(np.array(["d0", "d1\x00"], object), np.array(["opened", "opened"]), np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match=r"^decision_id: row 1: contains a NUL character"):
        log.log_outcomes(bad)
    assert log.count_outcomes() == 0
    with pytest.raises(ValueError, match=r"^customer_ids: row 1: contains a NUL character"):
        log.contact_history(["c0", "c\x00"], since=T0)
    with pytest.raises(ValueError, match=r"^customer_ids: row 0: is not valid Unicode"), log.deciding(["\ud800"]):
        pass


def test_ineligible_action_is_refused(log):
    rec = make_records(10)
    el = rec.eligible.copy()
    el[6, rec.action[6]] = False
    el[6, 0] = True
    if rec.action[6] == 0:
        el[6, 0] = False
    with pytest.raises(ValueError, match=r"^action: row 6: action \d+ is not eligible"):
        log.log_decisions(replace(rec, eligible=el))


@pytest.mark.parametrize(
    "outcomes, message",
    [
        (
            lambda ids: OutcomeRecords(ids[:2], np.array(["opened", "bought"]), np.zeros(2), np.zeros(2)),
            r"^event: row 1: unknown event 'bought'",
        ),
        (
            lambda ids: OutcomeRecords(ids[[0, 0]], np.array(["opened", "opened"]), np.zeros(2), np.zeros(2)),
            r"^event: row 1: duplicate",
        ),
        (
            lambda ids: OutcomeRecords(ids[:2], np.array(["opened", "clicked"]), np.zeros(2), np.array([0, np.nan])),
            r"^value: row 1: must be finite",
        ),
        (
            lambda ids: OutcomeRecords(np.array(["d0", ""]), np.array(["opened", "clicked"]), np.zeros(2), np.zeros(2)),
            r"^decision_id: row 1: must not be empty",
        ),
    ],
)
def test_outcome_validation(log, outcomes, message):
    rec = make_records(5)
    log.log_decisions(rec)
    with pytest.raises(ValueError, match=message):
        log.log_outcomes(outcomes(rec.decision_id))
    assert log.count_outcomes() == 0
