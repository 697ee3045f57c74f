"""Import decision logs kept elsewhere (CSV or Parquet) into a :class:`DecisionLog`.

A :class:`ColumnMapping` says which of the file's columns hold what. Each row becomes one decision;
a reward column becomes a ``converted`` outcome with that value at the decision's send time (so a
:class:`RewardRule` counting ``converted`` gives it back: with ``cost`` 0 the reward read is the
reward imported). Rows without a reward (empty cell) get no outcome.

* **Idempotent**: without a decision-id column, ids are ``"{file name}:{row}"``; importing the same
  file again writes nothing new.
* **All or nothing**: the whole file is validated first — errors name the row (1-based data row,
  the header not counted) and the column, e.g. ``row 17, column 'propensity': expected a number in
  (0, 1], got 'abc'`` — then decisions and outcomes go in one transaction.
* Times are numbers of hours since the Unix epoch, or ISO 8601 timestamps (UTC unless an offset is
  given); Parquet timestamp columns work too.
* The eligible actions, when a column gives them, are action indices separated by spaces, commas or
  semicolons (``"0 3 7"``, ``"[0, 3, 7]"``), or a Parquet list column; default: every action.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from nba.log.records import DecisionRecords, OutcomeRecords
from nba.log.store import DecisionLog

_SPLIT = re.compile(r"[\s,;\[\]]+")


@dataclass(frozen=True)
class ColumnMapping:
    """Which columns of an imported file hold the decision's fields.

    Args:
        context: the feature columns, in the policy's feature order.
        action: action index (0 = no contact), an integer in ``[0, n_actions)``.
        propensity: probability with which the logging policy chose the action, in (0, 1].
        n_actions: size of the action space.
        time: decision time (hours since the epoch or ISO timestamps).
        reward: the decision's reward, if known (becomes a ``converted`` outcome).
        decision_id: unique id column; default ``"{file name}:{row}"``.
        customer_id: customer column; default the decision id (every row its own customer).
        send_at: send time (hours or ISO); default the decision time.
        eligible: column of eligible action indices; default every action.
        cost: cost column; default 0.
    """

    context: tuple[str, ...]
    action: str
    propensity: str
    n_actions: int
    time: str
    reward: str | None = None
    decision_id: str | None = None
    customer_id: str | None = None
    send_at: str | None = None
    eligible: str | None = None
    cost: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "context", tuple(self.context))
        if not (isinstance(self.n_actions, int) and self.n_actions >= 1):
            raise ValueError(f"n_actions: must be an integer >= 1, got {self.n_actions!r}")
        if not all(isinstance(c, str) and c for c in self.context):
            raise ValueError(f"context: must be column names, got {self.context!r}")

    def columns(self) -> list[str]:
        named = [self.action, self.propensity, self.time, self.reward, self.decision_id, self.customer_id,
                 self.send_at, self.eligible, self.cost]
        return [*self.context, *(c for c in named if c is not None)]


class _Fail(ValueError):
    pass


def _fail(row: int, column: str, msg: str) -> None:
    raise _Fail(f"row {row + 1}, column {column!r}: {msg}")


def read_table(path: str | Path, format: str | None = None):
    """The file as a pyarrow Table (``format``: ``"csv"`` or ``"parquet"``; default from the suffix)."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    path = Path(path)
    fmt = format or ("parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv")
    if fmt == "parquet":
        return pq.read_table(path)
    if fmt == "csv":
        return pcsv.read_csv(path)
    raise ValueError(f"format: expected 'csv' or 'parquet', got {format!r}")


def _cells(table, column: str) -> list[Any]:
    if column not in table.column_names:
        raise ValueError(f"column {column!r}: not in the file; columns: {table.column_names}")
    return table.column(column).to_pylist()


def _numbers(table, column: str, check: Callable[[np.ndarray], np.ndarray] | None = None, what: str = "a number",
             parse: Callable[[Any], float] | None = None) -> np.ndarray:
    """(N,) float64 from a numeric or text column; the first bad cell raises, naming row and column."""
    import pyarrow as pa

    col = table.column(column) if column in table.column_names else None
    if col is None:
        raise ValueError(f"column {column!r}: not in the file; columns: {table.column_names}")
    if (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)) and col.null_count == 0:
        out = col.to_numpy().astype(np.float64)
    else:
        cells = col.to_pylist()
        out = np.empty(len(cells))
        for i, v in enumerate(cells):
            try:
                out[i] = (parse or _to_float)(v)
            except (TypeError, ValueError):
                _fail(i, column, f"expected {what}, got {v!r}")
    ok = np.isfinite(out) if check is None else np.isfinite(out) & check(out)
    bad = np.flatnonzero(~ok)
    if bad.size:
        i = int(bad[0])
        _fail(i, column, f"expected {what}, got {table.column(column)[i].as_py()!r}")
    return out


def _to_float(v: Any) -> float:
    if v is None or isinstance(v, bool):
        raise ValueError
    return float(v)


def _to_hours(v: Any) -> float:
    """Hours since the epoch from a number, an ISO 8601 string or a datetime (naive = UTC)."""
    if v is None or isinstance(v, bool):
        raise ValueError
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            v = datetime.fromisoformat(v.strip())
    if isinstance(v, datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=UTC)
        return v.timestamp() / 3600.0
    raise ValueError


def _strings(table, column: str) -> np.ndarray:
    cells = _cells(table, column)
    for i, v in enumerate(cells):
        if v is None or (isinstance(v, float) and math.isnan(v)) or str(v) == "":
            _fail(i, column, "expected a non-empty value, got an empty cell")
    return np.array([str(v) for v in cells], dtype=object)


def _eligible(table, column: str, n_actions: int) -> np.ndarray:
    cells = _cells(table, column)
    out = np.zeros((len(cells), n_actions), bool)
    for i, v in enumerate(cells):
        if v is None:
            _fail(i, column, "expected action indices, got an empty cell")
        parts = v if isinstance(v, list) else [p for p in _SPLIT.split(str(v)) if p]
        try:
            idx = [int(p) for p in parts]
        except (TypeError, ValueError):
            _fail(i, column, f"expected action indices separated by spaces or commas, got {v!r}")
        if any(a < 0 or a >= n_actions for a in idx):
            _fail(i, column, f"action indices must be in [0, {n_actions}), got {v!r}")
        out[i, idx] = True
    return out


def import_table(log: DecisionLog, path: str | Path, mapping: ColumnMapping, *, policy: str = "imported",
                 version: str = "0", experiment: str = "", arm: str = "", format: str | None = None,
                 id_prefix: str | None = None) -> int:
    """Import one CSV or Parquet file into ``log``; returns how many decisions were new.

    Validates every row first (ValueError ``"row R, column 'C': ..."``); then writes all decisions and
    their reward outcomes in one transaction. See :class:`ColumnMapping` and the module docstring.
    """
    path = Path(path)
    try:
        table = read_table(path, format)
    except (OSError, ValueError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith("format"):
            raise
        raise ValueError(f"path: cannot read {str(path)!r}: {exc}") from exc
    missing = [c for c in mapping.columns() if c not in table.column_names]
    if missing:
        raise ValueError(f"column {missing[0]!r}: not in the file; columns: {table.column_names}")
    n = table.num_rows
    try:
        records, outcomes = _records(table, mapping, n, path.name if id_prefix is None else id_prefix,
                                     policy, version, experiment, arm)
    except _Fail as exc:
        raise ValueError(str(exc)) from None
    return log.log(records, outcomes)[0]


def _records(table, m: ColumnMapping, n: int, prefix: str, policy: str, version: str, experiment: str,
             arm: str) -> tuple[DecisionRecords, OutcomeRecords]:
    context = np.empty((n, len(m.context)), np.float32)
    for j, c in enumerate(m.context):
        x = _numbers(table, c, lambda v: np.abs(v) <= np.finfo(np.float32).max, "a finite number")
        context[:, j] = x
    action_f = _numbers(table, m.action, lambda v: (v == np.round(v)) & (v >= 0) & (v < m.n_actions),
                        f"an action index in [0, {m.n_actions})")
    action = action_f.astype(np.int64)
    propensity = _numbers(table, m.propensity, lambda v: (v > 0) & (v <= 1), "a number in (0, 1]")
    time = _numbers(table, m.time, None, "hours since the epoch or an ISO timestamp", _to_hours)
    if m.send_at is None:
        send_at = time
    else:
        send_at = _numbers(table, m.send_at, None, "hours since the epoch or an ISO timestamp", _to_hours)
        bad = np.flatnonzero(send_at < time)
        if bad.size:
            _fail(int(bad[0]), m.send_at, f"send time {send_at[bad[0]]!r} is before the decision time "
                                          f"{time[bad[0]]!r} (hours)")
    cost = np.zeros(n) if m.cost is None else _numbers(table, m.cost, lambda v: v >= 0, "a number >= 0")
    if m.decision_id is None:
        ids = np.array([f"{prefix}:{i + 1}" for i in range(n)], dtype=object)
    else:
        ids = _strings(table, m.decision_id)
        order = np.argsort(ids.astype(str), kind="stable")
        dup = np.flatnonzero(ids[order][1:] == ids[order][:-1])
        if dup.size:
            _fail(int(order[dup[0] + 1]), m.decision_id, f"duplicate decision id {ids[order[dup[0] + 1]]!r}")
    customers = ids if m.customer_id is None else _strings(table, m.customer_id)
    if m.eligible is None:
        eligible = np.ones((n, m.n_actions), bool)
    else:
        eligible = _eligible(table, m.eligible, m.n_actions)
        bad = np.flatnonzero(~eligible[np.arange(n), action])
        if bad.size:
            _fail(int(bad[0]), m.eligible, f"the chosen action {int(action[bad[0]])} is not among the eligible ones")
    decisions = DecisionRecords(
        decision_id=ids, time=time, customer_id=customers, context=context, eligible=eligible, action=action,
        send_at=send_at, propensity=propensity, policy=np.full(n, policy, dtype=object),
        policy_version=np.full(n, version, dtype=object), experiment=np.full(n, experiment, dtype=object),
        arm=np.full(n, arm, dtype=object), cost=cost,
    )
    if m.reward is None:
        k = np.zeros(0, np.int64)
        reward = np.zeros(0)
    else:
        cells = _cells(table, m.reward)
        present = np.array([not (v is None or v == "" or (isinstance(v, float) and math.isnan(v))) for v in cells],
                           bool)
        k = np.flatnonzero(present)
        reward = np.empty(k.size)
        for j, i in enumerate(k.tolist()):
            try:
                reward[j] = _to_float(cells[i])
            except (TypeError, ValueError):
                _fail(i, m.reward, f"expected a number or an empty cell, got {cells[i]!r}")
            if not math.isfinite(reward[j]):
                _fail(i, m.reward, f"expected a finite number, got {cells[i]!r}")
    outcomes = OutcomeRecords(decision_id=ids[k], event=np.full(k.size, "converted", dtype=object),
                              time=send_at[k], value=reward)
    return decisions, outcomes

