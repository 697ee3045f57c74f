"""Validation of the decision log's records, before anything is written.

Every batch a writer hands in (:class:`~nba.log.records.DecisionRecords`,
:class:`~nba.log.records.OutcomeRecords`) is checked whole, column by column; an error is a
ValueError whose message starts with the field's name (and the first bad row), and repeats at most
about 60 characters of a value. A batch that passes can be written in one transaction with no row
failing inside it.

**Text both databases store.** Validation refuses a string with a NUL character (PostgreSQL cannot
store one) or one not encodable as UTF-8 (a lone surrogate): :func:`storable_text`. A batch valid for
one database is valid for the other.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from nba.log.records import EVENTS, DecisionRecords, OutcomeRecords

STRING_FIELDS = ("decision_id", "customer_id", "policy", "policy_version", "experiment", "arm")
_NONEMPTY = ("decision_id", "customer_id", "policy")
_ECHO = 60  # most characters of a value an error message repeats


def shown(x: Any) -> str:
    """repr of a NumPy scalar as the Python value (``0.0``, not ``np.float64(0.0)``), cut to about 60
    characters: an error message never repeats a huge value."""
    r = repr(x.item() if isinstance(x, np.generic) else x)
    return r if len(r) <= _ECHO else f"{r[: _ECHO - 3]}..."


def finite_hours(name: str, value: Any) -> float:
    """``value`` as a finite number of hours, or ValueError naming ``name``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float | np.integer | np.floating)
        or not math.isfinite(value)
    ):
        raise ValueError(f"{name}: expected a finite number of hours since the epoch, got {shown(value)}")
    return float(value)


def storable_text(value: str) -> str | None:
    """Why ``value`` cannot be stored as text by both SQLite and PostgreSQL, ``None`` if it can.

    PostgreSQL refuses a NUL character in text, and neither database takes a string that is not
    encodable as UTF-8: one with a lone surrogate, which Python's ``json`` decodes from an escape
    such as ``\\ud800``. The log's validation applies this rule to every string column, and the
    decision service to what it is sent.
    """
    if "\x00" in value:
        return "contains a NUL character"
    if not value.isascii():  # O(1) in CPython: an ASCII string cannot hold a surrogate
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            return f"is not valid Unicode (a lone surrogate {value[e.start]!r} at position {e.start})"
    return None


def _storable(name: str, values: list[str]) -> None:
    """ValueError naming ``name`` and the first row that :func:`storable_text` refuses: one scan of
    the joined column on the common path (nothing to refuse), the rows only when it fails."""
    if storable_text("".join(values)) is None:
        return
    for i, value in enumerate(values):
        why = storable_text(value)
        if why is not None:
            raise ValueError(f"{name}: row {i}: {why}, got {shown(value)}")


def fail_row(name: str, bad: np.ndarray, msg: str | Callable[[int], str]) -> None:
    """ValueError ``"<name>: row <i>: <msg>"`` at the first row where ``bad``; ``msg`` may be a function of
    that row (built only when a row fails)."""
    if bad.any():  # the usual answer, and cheaper to get than the rows
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}: row {i}: {msg(i) if callable(msg) else msg}")


def string_column(name: str, x: Any, n: int, nonempty: bool) -> np.ndarray:
    """(n,) object array of str that both databases can store (:func:`storable_text`); ValueError
    naming ``name`` (and the row) otherwise."""
    a = np.asarray(x)
    if a.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},), got {a.shape}")
    if a.dtype.kind == "U":
        out = a.astype(object)
    elif a.dtype.kind == "O":
        values = a.tolist()
        if set(map(type, values)) <= {str}:  # the usual case, checked in C
            out = a
        else:
            ok = np.fromiter((isinstance(v, str) for v in values), bool, n)
            fail_row(name, ~ok, lambda i: f"expected a string, got {shown(a[i])}")
            out = np.array([str(v) for v in values], dtype=object)  # NumPy str_ and other subclasses
    else:
        raise ValueError(f"{name}: expected strings, got dtype {a.dtype}")
    if nonempty and n:
        lengths = np.fromiter(map(len, out), np.int64, n)
        fail_row(name, lengths == 0, "must not be empty")
    _storable(name, out.tolist())
    return out


def _floats(name: str, x: Any, n: int) -> np.ndarray:
    a = np.asarray(x)
    if a.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},), got {a.shape}")
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{name}: expected numbers, got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    fail_row(name, ~np.isfinite(a), lambda i: f"must be finite, got {shown(a[i])}")
    return a


def _unique(name: str, keys: np.ndarray) -> None:
    if keys.size < 2:
        return
    order = np.argsort(keys, kind="stable")
    dup = np.flatnonzero(keys[order][1:] == keys[order][:-1])
    if dup.size:
        i = int(order[dup[0] + 1])
        raise ValueError(f"{name}: row {i}: duplicate {shown(keys[i])} within the batch")


@dataclass(frozen=True)
class ValidDecisions:
    """Validated decisions, columns ready to bind."""

    cols: dict[str, np.ndarray]
    context: np.ndarray  # (N, d) float32
    eligible: np.ndarray  # (N, A) bool


def validate_decisions(records: DecisionRecords) -> ValidDecisions:
    """Check every field of ``records``; ValueError whose message starts with the field's name."""
    if not isinstance(records, DecisionRecords):
        raise TypeError(f"records: expected DecisionRecords, got {type(records).__name__}")
    ids = np.asarray(records.decision_id)
    if ids.ndim != 1:
        raise ValueError(f"decision_id: expected a 1-D array, got shape {ids.shape}")
    n = ids.shape[0]
    cols = {name: string_column(name, getattr(records, name), n, name in _NONEMPTY) for name in STRING_FIELDS}
    for name in ("time", "send_at", "cost"):
        cols[name] = _floats(name, getattr(records, name), n)
    p = _floats("propensity", records.propensity, n)
    fail_row("propensity", ~((p > 0) & (p <= 1)), lambda i: f"must be in (0, 1], got {shown(p[i])}")
    cols["propensity"] = p
    fail_row(
        "send_at",
        cols["send_at"] < cols["time"],
        lambda i: f"must not be before the decision time {shown(cols['time'][i])}, got {shown(cols['send_at'][i])}",
    )
    fail_row("cost", cols["cost"] < 0, lambda i: f"must be >= 0, got {shown(cols['cost'][i])}")
    ctx = np.asarray(records.context)
    if ctx.ndim != 2 or ctx.shape[0] != n:
        raise ValueError(f"context: expected shape ({n}, d), got {ctx.shape}")
    if ctx.dtype.kind not in "fiu":
        raise ValueError(f"context: expected numbers, got dtype {ctx.dtype}")
    ctx = np.ascontiguousarray(ctx, dtype="<f4")
    fail_row("context", ~np.isfinite(ctx).all(axis=1), "contains NaN or infinite values (or overflows float32)")
    el = np.asarray(records.eligible)
    if el.ndim != 2 or el.shape[0] != n or el.shape[1] < 1:
        raise ValueError(f"eligible: expected shape ({n}, A) with A >= 1, got {el.shape}")
    if el.dtype != bool:
        raise ValueError(f"eligible: expected a boolean array, got dtype {el.dtype}")
    a = np.asarray(records.action)
    if a.shape != (n,):
        raise ValueError(f"action: expected shape ({n},), got {a.shape}")
    if a.dtype.kind not in "iu":
        raise ValueError(f"action: expected integers, got dtype {a.dtype}")
    a = a.astype(np.int64, copy=False)
    n_actions = el.shape[1]
    fail_row("action", (a < 0) | (a >= n_actions), lambda i: f"must be in [0, {n_actions}), got {int(a[i])}")
    fail_row("action", ~el[np.arange(n), a], lambda i: f"action {int(a[i])} is not eligible")
    cols["action"] = a
    _unique("decision_id", cols["decision_id"])
    return ValidDecisions(cols, ctx, el)


def validate_outcomes(records: OutcomeRecords) -> dict[str, np.ndarray]:
    """Check every field of ``records`` (the decisions' existence is checked on write)."""
    if not isinstance(records, OutcomeRecords):
        raise TypeError(f"records: expected OutcomeRecords, got {type(records).__name__}")
    ids = np.asarray(records.decision_id)
    if ids.ndim != 1:
        raise ValueError(f"decision_id: expected a 1-D array, got shape {ids.shape}")
    n = ids.shape[0]
    cols = {
        "decision_id": string_column("decision_id", ids, n, True),
        "event": string_column("event", records.event, n, True),
    }
    known = np.isin(cols["event"].astype(str), EVENTS) if n else np.ones(0, bool)
    fail_row("event", ~known, lambda i: f"unknown event {shown(cols['event'][i])}; valid: {list(EVENTS)}")
    cols["time"] = _floats("time", records.time, n)
    cols["value"] = _floats("value", records.value, n)
    if n > 1:
        _unique("event", np.char.add(np.char.add(cols["decision_id"].astype(str), "\x00"), cols["event"].astype(str)))
    return cols
