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
  given); Parquet timestamp columns work too. Without a time column every row gets the one time
  ``time_default``: the log then knows neither the order of the decisions nor a customer's contact
  history (caps and fatigue features built from it see every decision at once).
* The eligible actions, when a column gives them, are action indices separated by spaces, commas or
  semicolons (``"0 3 7"``, ``"[0, 3, 7]"``), or a Parquet list column; default: every action.

**The context** a policy sees is built from the file's columns, in this order, and its feature names
are stored in the log's layout (:attr:`LogLayout.feature_names`):

1. ``context``: numeric columns, one feature each, named as the column;
2. ``categorical``: text (or numbers read as labels) one-hot encoded: one feature per category,
   ``"<column>=<value>"`` in sorted order, then ``"<column>=<other>"`` for a missing cell or a
   value outside the categories. The categories are those seen in the file, unless given
   (``ColumnMapping.categories``) or already in the log's layout: a second file is encoded as the
   first was, whatever values it holds;
3. ``hashed``: a high-cardinality text column hashed into ``hash_buckets`` one-hot features
   ``"<column>#<bucket>"`` (bucket = CRC-32 of the UTF-8 text modulo the buckets: the same in every
   process and on every machine; an empty cell hashes as ``""``);
4. ``position``: the slot in a page or list where the action was shown (an integer >= 0, 0 = first),
   one feature named ``"position"``.

**Without a propensity column** the logging policy's propensities are estimated from the file itself
(:func:`estimate_propensity`): the frequency of each action within each group of the
``propensity_by`` columns, smoothed, renormalised over the row's eligible actions. The decisions are
logged under the policy ``"<policy>:estimated-propensity"`` (:data:`ESTIMATED_SUFFIX`), so that an
off-policy evaluation can tell that its weights rest on an estimate.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from nba.log.records import DecisionRecords, OutcomeRecords
from nba.log.store import DecisionLog, LogLayout, validate_decisions, validate_outcomes

_SPLIT = re.compile(r"[\s,;\[\]]+")
OTHER = "<other>"  # the category of a missing cell or of a value outside the categories
POSITION = "position"  # the feature name of the position column
ESTIMATED_SUFFIX = ":estimated-propensity"  # appended to the policy name of decisions with estimated propensities
MAX_CATEGORIES = 1000  # more distinct values than this in a categorical column: hash it instead
PRIOR_ROWS = 10.0  # pseudo-rows of the overall action frequencies added to every propensity_by group


@dataclass(frozen=True)
class ColumnMapping:
    """Which columns of an imported file hold the decision's fields.

    Args:
        context: numeric feature columns, in the policy's feature order.
        action: action index (0 = no contact), an integer in ``[0, n_actions)``.
        propensity: probability with which the logging policy chose the action, in (0, 1]; ``None``:
            estimated from the file (see ``propensity_by`` and :func:`estimate_propensity`).
        n_actions: size of the action space; ``None``: the log's, or else the file's largest action + 1
            (give it when some actions were never chosen in the file).
        time: decision time (hours since the epoch or ISO timestamps); ``None``: every row at
            ``time_default``, so order and contact history are unknown.
        reward: the decision's reward, if known (becomes a ``converted`` outcome).
        decision_id: unique id column; default ``"{file name}:{row}"``.
        customer_id: customer column; default the decision id (every row its own customer).
        send_at: send time (hours or ISO); default the decision time.
        eligible: column of eligible action indices; default every action.
        cost: cost column; default 0.
        categorical: text columns one-hot encoded after the numeric ones (``"<column>=<value>"`` and
            ``"<column>=<other>"``).
        categories: the categories of some ``categorical`` columns, fixed (values outside go to
            ``<other>``); default: those of the log's layout, or else those seen in the file, sorted.
        hashed: high-cardinality text columns, each hashed into ``hash_buckets`` one-hot features.
        hash_buckets: buckets per hashed column.
        position: column of the slot in a page or list where the action was shown (integer >= 0);
            one feature named ``"position"``, last.
        time_default: the decision time (hours since the epoch) of every row when ``time`` is ``None``.
        propensity_by: columns whose groups (e.g. a segment) the estimated propensity is computed
            within; default: the whole file. Only without a propensity column.
    """

    context: tuple[str, ...]
    action: str
    propensity: str | None = None
    n_actions: int | None = None
    time: str | None = None
    reward: str | None = None
    decision_id: str | None = None
    customer_id: str | None = None
    send_at: str | None = None
    eligible: str | None = None
    cost: str | None = None
    categorical: tuple[str, ...] = ()
    categories: Mapping[str, tuple[str, ...]] | None = field(default=None, hash=False)
    hashed: tuple[str, ...] = ()
    hash_buckets: int = 64
    position: str | None = None
    time_default: float | None = None
    propensity_by: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("context", "categorical", "hashed", "propensity_by"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(c, str) and c for c in value):
                raise ValueError(f"{name}: must be column names, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        if self.n_actions is not None and not (isinstance(self.n_actions, int) and self.n_actions >= 1):
            raise ValueError(f"n_actions: must be an integer >= 1, got {self.n_actions!r}")
        features = [*self.context, *self.categorical, *self.hashed]
        dup = next((c for i, c in enumerate(features) if c in features[:i]), None)
        if dup is not None:
            raise ValueError(f"column {dup!r}: mapped twice among context, categorical and hashed")
        if self.position is not None and POSITION in self.context:
            raise ValueError(f"position: the feature {POSITION!r} would be named twice (a context column "
                             f"is named {POSITION!r})")
        if self.hashed and not (isinstance(self.hash_buckets, int) and self.hash_buckets >= 1):
            raise ValueError(f"hash_buckets: must be an integer >= 1, got {self.hash_buckets!r}")
        if self.time is None:
            if self.time_default is None or isinstance(self.time_default, bool) or \
                    not isinstance(self.time_default, int | float) or not math.isfinite(self.time_default):
                raise ValueError("time_default: without a time column, give the decision time of every row "
                                 f"(hours since the epoch), got {self.time_default!r}")
        elif self.time_default is not None:
            raise ValueError(f"time_default: only used without a time column; the time column is {self.time!r}")
        if self.propensity is not None and self.propensity_by:
            raise ValueError("propensity_by: only used to estimate the propensity; the file has the column "
                             f"{self.propensity!r}")
        if self.categories is not None:
            fixed: dict[str, tuple[str, ...]] = {}
            for column, values in self.categories.items():
                if column not in self.categorical:
                    raise ValueError(f"categories: {column!r} is not among the categorical columns "
                                     f"{list(self.categorical)}")
                values = (values,) if isinstance(values, str) else tuple(values)
                bad = next((v for v in values if not isinstance(v, str) or not v or v == OTHER), None)
                if bad is not None or len(set(values)) != len(values):
                    raise ValueError(f"categories[{column!r}]: expected distinct non-empty strings other than "
                                     f"{OTHER!r}, got {list(values)!r}")
                fixed[column] = values
            object.__setattr__(self, "categories", fixed)

    def columns(self) -> list[str]:
        named = [self.action, self.propensity, self.time, self.reward, self.decision_id, self.customer_id,
                 self.send_at, self.eligible, self.cost, self.position]
        columns = [*self.context, *self.categorical, *self.hashed, *(c for c in named if c is not None),
                   *self.propensity_by]
        return list(dict.fromkeys(columns))


@dataclass(frozen=True)
class ImportResult:
    """What one import did.

    Attributes:
        new_decisions: decisions written (rows already in the log are skipped).
        rows: data rows in the file.
        feature_names: the context's features, in order (as stored in the log's layout).
        propensity_estimated: the file had no propensity column; the propensities are an estimate.
        policy: the policy name the decisions were logged under.
        new_outcomes: reward outcomes written.
        propensity_by: the columns the propensity estimate was grouped by.
        time_default: the one decision time of every row when the file had no time column.
        n_actions: the size of the action space.
    """

    new_decisions: int
    rows: int
    feature_names: tuple[str, ...]
    propensity_estimated: bool
    policy: str = "imported"
    new_outcomes: int = 0
    propensity_by: tuple[str, ...] = ()
    time_default: float | None = None
    n_actions: int = 0


class _Fail(ValueError):
    pass


def _fail(row: int, column: str, msg: str) -> None:
    raise _Fail(f"row {row + 1}, column {column!r}: {msg}")


def read_table(path: str | Path, format: str | None = None, text_columns: Sequence[str] = ()):
    """The file as a pyarrow Table (``format``: ``"csv"`` or ``"parquet"``; default from the suffix).

    ``text_columns``: CSV columns read as text whatever they look like (``"007"`` stays ``"007"``).
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    path = Path(path)
    fmt = format or ("parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv")
    if fmt == "parquet":
        return pq.read_table(path)
    if fmt == "csv":
        types = {c: pa.string() for c in text_columns}
        return pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(column_types=types))
    raise ValueError(f"format: expected 'csv' or 'parquet', got {format!r}")


def _cells(table, column: str) -> list[Any]:
    if column not in table.column_names:
        raise ValueError(f"column {column!r}: not in the file; columns: {table.column_names}")
    return table.column(column).to_pylist()


def _numbers(table, column: str, check: Callable[[np.ndarray], np.ndarray] | None = None, what: str = "a number",
             parse: Callable[[Any], float] | None = None, hint: str = "") -> np.ndarray:
    """(N,) float64 from a numeric or text column; the first bad cell raises, naming row and column
    (``hint`` follows the message of a cell that is not a number at all)."""
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
                _fail(i, column, f"expected {what}, got {v!r}" + (hint if isinstance(v, str) and v else ""))
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


def _labels(table, column: str) -> tuple[np.ndarray, list[str]]:
    """The column as labels: ``(codes, values)`` with ``values[codes[i]]`` row i's text and code -1 for a
    missing (null or empty) cell; vectorised (pyarrow's dictionary encoding)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = table.column(column).combine_chunks()
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        try:
            col = pc.cast(col, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise ValueError(f"column {column!r}: expected text or numbers as labels, got {col.type}") from None
    enc = pc.dictionary_encode(col)
    values = [str(v) for v in enc.dictionary.to_pylist()]
    lookup = np.array([-1 if v == "" else k for k, v in enumerate(values)] + [-1], np.int64)
    idx = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return lookup[idx], values


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
    """Import one CSV or Parquet file into ``log``; returns how many decisions were new
    (:func:`import_file` returns the whole :class:`ImportResult`)."""
    return import_file(log, path, mapping, policy=policy, version=version, experiment=experiment, arm=arm,
                       format=format, id_prefix=id_prefix).new_decisions


def import_file(log: DecisionLog, path: str | Path, mapping: ColumnMapping, *, policy: str = "imported",
                version: str = "0", experiment: str = "", arm: str = "", format: str | None = None,
                id_prefix: str | None = None) -> ImportResult:
    """Import one CSV or Parquet file into ``log``.

    Validates every row first (ValueError ``"row R, column 'C': ..."``, R the 1-based data row); checks
    the context's features against the log's layout (ValueError naming the column that disagrees);
    then stores the layout (with the feature names) and writes all decisions and their reward outcomes.
    Nothing is written when anything is refused. See :class:`ColumnMapping` and the module docstring.
    """
    path = Path(path)
    try:
        table = read_table(path, format, (*mapping.categorical, *mapping.hashed, *mapping.propensity_by))
    except (OSError, ValueError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith("format"):
            raise
        raise ValueError(f"path: cannot read {str(path)!r}: {exc}") from exc
    missing = [c for c in mapping.columns() if c not in table.column_names]
    if missing:
        raise ValueError(f"column {missing[0]!r}: not in the file; columns: {table.column_names}")
    stored = log.layout()
    estimated = mapping.propensity is None
    name = f"{policy}{ESTIMATED_SUFFIX}" if estimated else policy
    try:
        records, outcomes, names = _records(table, mapping, stored, path.name if id_prefix is None else id_prefix,
                                            name, version, experiment, arm)
        _validated(records, outcomes, mapping)
    except _Fail as exc:
        raise ValueError(str(exc)) from None
    n_actions = records.eligible.shape[1]
    result = ImportResult(0, len(records), names, estimated, name, 0, mapping.propensity_by if estimated else (),
                          mapping.time_default if mapping.time is None else None, n_actions)
    if not len(records):
        return result
    log.set_layout(LogLayout(len(names), n_actions, names))
    new_d, new_o = log.log(records, outcomes)
    return ImportResult(new_d, result.rows, names, estimated, name, new_o, result.propensity_by,
                        result.time_default, n_actions)


def _validated(decisions: DecisionRecords, outcomes: OutcomeRecords, m: ColumnMapping) -> None:
    """The log's own checks, before anything is stored; a refusal names the file's row and column."""
    columns = {"decision_id": m.decision_id, "customer_id": m.customer_id, "time": m.time, "send_at": m.send_at,
               "propensity": m.propensity, "cost": m.cost, "action": m.action, "eligible": m.eligible}
    try:
        validate_decisions(decisions)
        validate_outcomes(outcomes)
    except ValueError as exc:
        found = re.match(r"^(\w+): row (\d+): (.*)$", str(exc), re.DOTALL)
        if found is None or columns.get(found[1]) is None:
            raise
        _fail(int(found[2]), columns[found[1]], found[3])


# ----------------------------------------------------------------------------- context features
def _features(table, m: ColumnMapping, stored: LogLayout | None) -> tuple[np.ndarray, tuple[str, ...]]:
    """(N, d) float32 context and its feature names, checked against the ``stored`` layout's names."""
    n = table.num_rows
    stored_names = None if stored is None else stored.feature_names
    blocks: list[tuple[str, list[str], Callable[[np.ndarray], None] | np.ndarray]] = []
    big = np.finfo(np.float32).max
    hint = "; a column of categories belongs in categorical (or hashed, when it has many values)"
    for c in m.context:
        x = _numbers(table, c, lambda v: np.abs(v) <= big, "a finite number", hint=hint)
        blocks.append((c, [c], x[:, None]))
    for c in m.categorical:
        codes, values = _labels(table, c)
        cats = _categories(c, m, stored_names, values, codes)
        pos = {v: k for k, v in enumerate(cats)}
        slot = np.array([pos.get(v, len(cats)) for v in values] + [len(cats)], np.int64)
        blocks.append((c, [f"{c}={v}" for v in (*cats, OTHER)], _one_hot(slot[codes], len(cats) + 1)))
    for c in m.hashed:
        codes, values = _labels(table, c)
        k = m.hash_buckets
        bucket = np.array([zlib.crc32(v.encode("utf-8", "surrogatepass")) % k for v in values]
                          + [zlib.crc32(b"") % k], np.int64)
        blocks.append((c, [f"{c}#{b}" for b in range(k)], _one_hot(bucket[codes], k)))
    if m.position is not None:
        x = _numbers(table, m.position, lambda v: (v == np.round(v)) & (v >= 0),
                     "a position: an integer >= 0 (0 = the first slot)")
        blocks.append((m.position, [POSITION], x[:, None]))
    names = tuple(name for _, block, _ in blocks for name in block)
    sources = [c for c, block, _ in blocks for _ in block]
    if stored_names is not None and names != stored_names:
        i = next((i for i, (a, b) in enumerate(zip(names, stored_names, strict=False)) if a != b),
                 min(len(names), len(stored_names)))
        # the file's column of the feature, or the log's when the mapping has none there
        column = sources[i] if i < len(sources) else re.split(r"[=#]", stored_names[i], maxsplit=1)[0]
        mine = repr(names[i]) if i < len(names) else "nothing"
        theirs = repr(stored_names[i]) if i < len(stored_names) else "nothing"
        raise ValueError(f"column {column!r}: feature {i + 1} of this log is {theirs}, this mapping gives {mine} "
                         f"(the log has {len(stored_names)} features, the mapping {len(names)}); every file of "
                         "one log must map onto the same features")
    context = np.empty((n, len(names)), np.float32)
    j = 0
    for _, block, x in blocks:
        context[:, j : j + len(block)] = x
        j += len(block)
    return context, names


def _one_hot(slot: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros((slot.size, width), np.float32)
    out[np.arange(slot.size), slot] = 1.0
    return out


def _categories(column: str, m: ColumnMapping, stored_names: tuple[str, ...] | None, values: list[str],
                codes: np.ndarray) -> tuple[str, ...]:
    """A categorical column's categories: given, else the log layout's, else those in the file, sorted."""
    if m.categories is not None and column in m.categories:
        return tuple(m.categories[column])
    prefix = f"{column}="
    if stored_names is not None and f"{prefix}{OTHER}" in stored_names:
        return tuple(s[len(prefix):] for s in stored_names if s.startswith(prefix) and s != f"{prefix}{OTHER}")
    seen = sorted({values[k] for k in np.unique(codes[codes >= 0]).tolist()})
    if OTHER in seen:
        _fail(int(np.flatnonzero(codes == values.index(OTHER))[0]), column,
              f"the value {OTHER!r} is reserved for missing and unseen values")
    if len(seen) > MAX_CATEGORIES:
        raise ValueError(f"column {column!r}: {len(seen):,} distinct values, more than {MAX_CATEGORIES:,} "
                         "one-hot features; map it in hashed (with hash_buckets) instead")
    return tuple(seen)


# ----------------------------------------------------------------------------- propensity estimate
def estimate_propensity(action: np.ndarray, n_actions: int, groups: np.ndarray | None = None,
                        eligible: np.ndarray | None = None, prior_rows: float = PRIOR_ROWS) -> np.ndarray:
    """The logging policy's propensity of each logged action, estimated from the log itself.

    The overall frequency of action ``a`` is Laplace-smoothed, ``f(a) = (n_a + 1) / (N + A)``; within a
    group ``g`` of ``n_g`` rows, ``q(a | g) = (n_ga + prior_rows * f(a)) / (n_g + prior_rows)``: the
    group's own frequencies, pulled towards the overall ones in small groups. Row ``i``'s propensity
    is ``q(a_i | g_i)`` renormalised over its eligible actions. Never 0 (every ``f(a) > 0``) and at most 1.

    It equals the logging policy's probability only if that policy chose at random given the group
    alone (the same odds for every customer of a segment, say); a policy that followed rules on other
    attributes makes it a rough weight, and off-policy estimates resting on it rough too.

    Args:
        action: (N,) int logged actions in ``[0, n_actions)``.
        groups: (N,) int group of each row; default one group.
        eligible: (N, n_actions) bool; default every action.
        prior_rows: weight of the overall frequencies in every group, in rows.
    """
    action = np.asarray(action, np.int64)
    n = action.size
    g = np.zeros(n, np.int64) if groups is None else np.asarray(groups, np.int64)
    overall = (np.bincount(action, minlength=n_actions) + 1.0) / (n + n_actions)
    n_g = np.bincount(g)
    if eligible is None:
        _, pair, n_ga = np.unique(g * n_actions + action, return_inverse=True, return_counts=True)
        return (n_ga[pair.ravel()] + prior_rows * overall[action]) / (n_g[g] + prior_rows)
    counts = np.bincount(g * n_actions + action, minlength=n_g.size * n_actions).reshape(n_g.size, n_actions)
    q = (counts + prior_rows * overall) / (n_g[:, None] + prior_rows)
    out = np.empty(n)
    for s in range(0, n, 65536):  # (rows, actions) at a time: bounded memory on large files
        rows = slice(s, s + 65536)
        qs = q[g[rows]]
        out[rows] = qs[np.arange(qs.shape[0]), action[rows]] / (qs * eligible[rows]).sum(axis=1)
    return out


def _groups(table, columns: tuple[str, ...]) -> np.ndarray | None:
    """(N,) int group of each row by the labels of ``columns`` (a missing cell is a group of its own)."""
    if not columns:
        return None
    codes = np.stack([_labels(table, c)[0] for c in columns], axis=1)
    return np.unique(codes, axis=0, return_inverse=True)[1].ravel()


# ----------------------------------------------------------------------------- records
def _records(table, m: ColumnMapping, stored: LogLayout | None, prefix: str, policy: str, version: str,
             experiment: str, arm: str) -> tuple[DecisionRecords, OutcomeRecords, tuple[str, ...]]:
    n = table.num_rows
    context, names = _features(table, m, stored)
    if m.n_actions is not None and stored is not None and m.n_actions != stored.n_actions:
        raise ValueError(f"n_actions: this log holds {stored.n_actions} actions, the mapping says {m.n_actions}")
    n_actions = m.n_actions if m.n_actions is not None else None if stored is None else stored.n_actions
    if n_actions is None:
        action_f = _numbers(table, m.action, lambda v: (v == np.round(v)) & (v >= 0), "an action index >= 0")
        if not n:
            raise ValueError("n_actions: cannot be inferred from a file without rows; give it")
        n_actions = int(action_f.max()) + 1
    else:
        action_f = _numbers(table, m.action, lambda v: (v == np.round(v)) & (v >= 0) & (v < n_actions),
                            f"an action index in [0, {n_actions})")
    action = action_f.astype(np.int64)
    hours = "hours since the epoch or an ISO timestamp"
    if m.time is None:
        time = np.full(n, float(m.time_default))
    else:
        time = _numbers(table, m.time, None, hours, _to_hours)
    if m.send_at is None:
        send_at = time
    else:
        send_at = _numbers(table, m.send_at, None, hours, _to_hours)
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
        eligible = np.ones((n, n_actions), bool)
    else:
        eligible = _eligible(table, m.eligible, n_actions)
        bad = np.flatnonzero(~eligible[np.arange(n), action])
        if bad.size:
            _fail(int(bad[0]), m.eligible, f"the chosen action {int(action[bad[0]])} is not among the eligible ones")
    if m.propensity is None:
        propensity = estimate_propensity(action, n_actions, _groups(table, m.propensity_by),
                                         None if m.eligible is None else eligible)
    else:
        propensity = _numbers(table, m.propensity, lambda v: (v > 0) & (v <= 1), "a number in (0, 1]")
    decisions = DecisionRecords(
        decision_id=ids, time=time, customer_id=customers, context=context, eligible=eligible, action=action,
        send_at=send_at, propensity=propensity, policy=np.full(n, policy, dtype=object),
        policy_version=np.full(n, version, dtype=object), experiment=np.full(n, experiment, dtype=object),
        arm=np.full(n, arm, dtype=object), cost=cost,
    )
    k, reward = _rewards(table, m.reward) if m.reward is not None else (np.zeros(0, np.int64), np.zeros(0))
    outcomes = OutcomeRecords(decision_id=ids[k], event=np.full(k.size, "converted", dtype=object),
                              time=send_at[k], value=reward)
    return decisions, outcomes, names


def _rewards(table, column: str) -> tuple[np.ndarray, np.ndarray]:
    """The rows with a reward (an empty cell: none) and their rewards."""
    import pyarrow as pa

    col = table.column(column)
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        x = col.to_numpy().astype(np.float64)  # nulls become NaN: no reward, like an empty cell
        k = np.flatnonzero(~np.isnan(x))
        bad = k[np.isinf(x[k])]
        if bad.size:
            _fail(int(bad[0]), column, f"expected a finite number, got {x[bad[0]]!r}")
        return k, x[k]
    cells = col.to_pylist()
    present = np.array([not (v is None or v == "" or (isinstance(v, float) and math.isnan(v))) for v in cells],
                       bool)
    k = np.flatnonzero(present)
    reward = np.empty(k.size)
    for j, i in enumerate(k.tolist()):
        try:
            reward[j] = _to_float(cells[i])
        except (TypeError, ValueError):
            _fail(i, column, f"expected a number or an empty cell, got {cells[i]!r}")
        if not math.isfinite(reward[j]):
            _fail(i, column, f"expected a finite number, got {cells[i]!r}")
    return k, reward
