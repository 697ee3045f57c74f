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

**Onto a deployment** (:func:`import_onto` with a :class:`DeploymentMapping`): a brand's file is read
in the brand's own terms. The attribute columns are named as the deployment's attributes and checked
with their rules; the action is a channel, an offer and a send hour by name; the context is the
deployment's (:class:`nba.features.AttributeFeatures`) and the eligible actions its
(:meth:`nba.deployment.Deployment.eligibility`), both with each customer's contact history rebuilt
from their earlier rows of the file, as the decision service would have seen it (:func:`_replay`).
The log's layout gets the deployment's feature names and action space, its metadata the deployment's
canonical document (:meth:`DecisionLog.deployment`), and the decisions the deployment's digest (in
``policy_version``)::

    d = Deployment.load("examples/telecom/deployment.toml")
    m = DeploymentMapping(customer_id="customer_id", time="time", channel="channel", offer="offer",
                          send_hour="send_hour", propensity="propensity", reward="reward", opted_out="opted_out")
    import_onto(log, "operator_export.csv", d, m)
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from nba.actions import NO_CONTACT, ActionSpace
from nba.eligibility import Reason, RecentContacts, send_time, utc_offset
from nba.features import History, hour_of_day
from nba.log.records import DecisionRecords, LogLayout, OutcomeRecords
from nba.log.store import DecisionLog
from nba.log.validation import validate_decisions, validate_outcomes

if TYPE_CHECKING:
    from nba.deployment import Deployment

_SPLIT = re.compile(r"[\s,;\[\]]+")
OTHER = "<other>"  # the category of a missing cell or of a value outside the categories
POSITION = "position"  # the feature name of the position column
ESTIMATED_SUFFIX = ":estimated-propensity"  # appended to the policy name of decisions with estimated propensities
MAX_CATEGORIES = 1000  # more distinct values than this in a categorical column: hash it instead
PRIOR_ROWS = 10.0  # pseudo-rows of the overall action frequencies added to every propensity_by group
ROUND_ROWS = 65536  # rows replayed at once onto a deployment (bounds the (rows, actions) masks in memory)


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
            raise ValueError(
                f"position: the feature {POSITION!r} would be named twice (a context column is named {POSITION!r})"
            )
        if self.hashed and not (isinstance(self.hash_buckets, int) and self.hash_buckets >= 1):
            raise ValueError(f"hash_buckets: must be an integer >= 1, got {self.hash_buckets!r}")
        _check_time_and_propensity(self)
        if self.categories is not None:
            fixed: dict[str, tuple[str, ...]] = {}
            for column, values in self.categories.items():
                if column not in self.categorical:
                    raise ValueError(
                        f"categories: {column!r} is not among the categorical columns {list(self.categorical)}"
                    )
                values = (values,) if isinstance(values, str) else tuple(values)
                bad = next((v for v in values if not isinstance(v, str) or not v or v == OTHER), None)
                if bad is not None or len(set(values)) != len(values):
                    raise ValueError(
                        f"categories[{column!r}]: expected distinct non-empty strings other than "
                        f"{OTHER!r}, got {list(values)!r}"
                    )
                fixed[column] = values
            object.__setattr__(self, "categories", fixed)

    def columns(self) -> list[str]:
        """Every column of the file this mapping reads, each once, in the order they are first named."""
        named = [
            self.action,
            self.propensity,
            self.time,
            self.reward,
            self.decision_id,
            self.customer_id,
            self.send_at,
            self.eligible,
            self.cost,
            self.position,
        ]
        columns = [
            *self.context,
            *self.categorical,
            *self.hashed,
            *(c for c in named if c is not None),
            *self.propensity_by,
        ]
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
        deployment: the digest of the deployment the file was imported onto (:func:`import_onto`), if any.
        ineligible: rows whose logged action the deployment would not have allowed, kept with
            ``allow_ineligible`` (their mask includes their action).
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
    deployment: str | None = None
    ineligible: int = 0


def _time_default(m: ColumnMapping | DeploymentMapping) -> float:
    """Every row's decision time without a time column (:func:`_check_time_and_propensity` checked it)."""
    if m.time_default is None:
        raise ValueError("time_default: without a time column, give the decision time of every row")
    return float(m.time_default)


def _check_time_and_propensity(m: ColumnMapping | DeploymentMapping) -> None:
    """A mapping's time (a column, or else ``time_default``) and propensity (a column, or else an estimate
    within ``propensity_by``), the same for both kinds of mapping."""
    if m.time is None:
        t = m.time_default
        if t is None or isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
            raise ValueError(
                "time_default: without a time column, give the decision time of every row "
                f"(hours since the epoch), got {t!r}"
            )
    elif m.time_default is not None:
        raise ValueError(f"time_default: only used without a time column; the time column is {m.time!r}")
    if m.propensity is not None and m.propensity_by:
        raise ValueError(
            f"propensity_by: only used to estimate the propensity; the file has the column {m.propensity!r}"
        )


class _Fail(ValueError):
    pass


def _fail(row: int, column: str | None, msg: str) -> NoReturn:
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


def _numbers(
    table,
    column: str,
    check: Callable[[np.ndarray], np.ndarray] | None = None,
    what: str = "a number",
    parse: Callable[[Any], float] | None = None,
    hint: str = "",
) -> np.ndarray:
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


def import_table(
    log: DecisionLog,
    path: str | Path,
    mapping: ColumnMapping,
    *,
    policy: str = "imported",
    version: str = "0",
    experiment: str = "",
    arm: str = "",
    format: str | None = None,
    id_prefix: str | None = None,
) -> int:
    """Import one CSV or Parquet file into ``log``; returns how many decisions were new
    (:func:`import_file` returns the whole :class:`ImportResult`)."""
    return import_file(
        log,
        path,
        mapping,
        policy=policy,
        version=version,
        experiment=experiment,
        arm=arm,
        format=format,
        id_prefix=id_prefix,
    ).new_decisions


def import_file(
    log: DecisionLog,
    path: str | Path,
    mapping: ColumnMapping,
    *,
    policy: str = "imported",
    version: str = "0",
    experiment: str = "",
    arm: str = "",
    format: str | None = None,
    id_prefix: str | None = None,
) -> ImportResult:
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
        records, outcomes, names = _records(
            table, mapping, stored, path.name if id_prefix is None else id_prefix, name, version, experiment, arm
        )
        _validated(records, outcomes, mapping)
    except _Fail as exc:
        raise ValueError(str(exc)) from None
    n_actions = records.eligible.shape[1]
    result = ImportResult(
        0,
        len(records),
        names,
        estimated,
        name,
        0,
        mapping.propensity_by if estimated else (),
        mapping.time_default if mapping.time is None else None,
        n_actions,
    )
    if not len(records):
        return result
    log.set_layout(LogLayout(len(names), n_actions, names))
    new_d, new_o = log.log(records, outcomes)
    return ImportResult(
        new_d, result.rows, names, estimated, name, new_o, result.propensity_by, result.time_default, n_actions
    )


def _validated(decisions: DecisionRecords, outcomes: OutcomeRecords, m: ColumnMapping | DeploymentMapping) -> None:
    """The log's own checks, before anything is stored; a refusal names the file's row and column."""
    action = m.action if m.action is not None else getattr(m, "channel", None)
    columns = {
        "decision_id": m.decision_id,
        "customer_id": m.customer_id,
        "time": m.time,
        "send_at": getattr(m, "send_at", None),
        "propensity": m.propensity,
        "cost": m.cost,
        "action": action,
        "eligible": getattr(m, "eligible", None),
    }
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
    blocks: list[tuple[str, list[str], np.ndarray]] = []
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
        bucket = np.array(
            [zlib.crc32(v.encode("utf-8", "surrogatepass")) % k for v in values] + [zlib.crc32(b"") % k], np.int64
        )
        blocks.append((c, [f"{c}#{b}" for b in range(k)], _one_hot(bucket[codes], k)))
    if m.position is not None:
        x = _numbers(
            table,
            m.position,
            lambda v: (v == np.round(v)) & (v >= 0),
            "a position: an integer >= 0 (0 = the first slot)",
        )
        blocks.append((m.position, [POSITION], x[:, None]))
    names = tuple(name for _, block, _ in blocks for name in block)
    sources = [c for c, block, _ in blocks for _ in block]
    if stored_names is not None and names != stored_names:
        i = next(
            (i for i, (a, b) in enumerate(zip(names, stored_names, strict=False)) if a != b),
            min(len(names), len(stored_names)),
        )
        # the file's column of the feature, or the log's when the mapping has none there
        column = sources[i] if i < len(sources) else re.split(r"[=#]", stored_names[i], maxsplit=1)[0]
        mine = repr(names[i]) if i < len(names) else "nothing"
        theirs = repr(stored_names[i]) if i < len(stored_names) else "nothing"
        raise ValueError(
            f"column {column!r}: feature {i + 1} of this log is {theirs}, this mapping gives {mine} "
            f"(the log has {len(stored_names)} features, the mapping {len(names)}); every file of "
            "one log must map onto the same features"
        )
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


def _categories(
    column: str, m: ColumnMapping, stored_names: tuple[str, ...] | None, values: list[str], codes: np.ndarray
) -> tuple[str, ...]:
    """A categorical column's categories: given, else the log layout's, else those in the file, sorted."""
    if m.categories is not None and column in m.categories:
        return tuple(m.categories[column])
    prefix = f"{column}="
    if stored_names is not None and f"{prefix}{OTHER}" in stored_names:
        return tuple(s[len(prefix) :] for s in stored_names if s.startswith(prefix) and s != f"{prefix}{OTHER}")
    seen = sorted({values[k] for k in np.unique(codes[codes >= 0]).tolist()})
    if OTHER in seen:
        _fail(
            int(np.flatnonzero(codes == values.index(OTHER))[0]),
            column,
            f"the value {OTHER!r} is reserved for missing and unseen values",
        )
    if len(seen) > MAX_CATEGORIES:
        raise ValueError(
            f"column {column!r}: {len(seen):,} distinct values, more than {MAX_CATEGORIES:,} "
            "one-hot features; map it in hashed (with hash_buckets) instead"
        )
    return tuple(seen)


# ----------------------------------------------------------------------------- propensity estimate
def estimate_propensity(
    action: np.ndarray,
    n_actions: int,
    groups: np.ndarray | None = None,
    eligible: np.ndarray | None = None,
    prior_rows: float = PRIOR_ROWS,
) -> np.ndarray:
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
def _records(
    table, m: ColumnMapping, stored: LogLayout | None, prefix: str, policy: str, version: str, experiment: str, arm: str
) -> tuple[DecisionRecords, OutcomeRecords, tuple[str, ...]]:
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
        action_f = _numbers(
            table,
            m.action,
            lambda v: (v == np.round(v)) & (v >= 0) & (v < n_actions),
            f"an action index in [0, {n_actions})",
        )
    action = action_f.astype(np.int64)
    hours = "hours since the epoch or an ISO timestamp"
    if m.time is None:
        time = np.full(n, _time_default(m))
    else:
        time = _numbers(table, m.time, None, hours, _to_hours)
    if m.send_at is None:
        send_at = time
    else:
        send_at = _numbers(table, m.send_at, None, hours, _to_hours)
        bad = np.flatnonzero(send_at < time)
        if bad.size:
            _fail(
                int(bad[0]),
                m.send_at,
                f"send time {send_at[bad[0]]!r} is before the decision time {time[bad[0]]!r} (hours)",
            )
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
        propensity = estimate_propensity(
            action, n_actions, _groups(table, m.propensity_by), None if m.eligible is None else eligible
        )
    else:
        propensity = _numbers(table, m.propensity, lambda v: (v > 0) & (v <= 1), "a number in (0, 1]")
    decisions = DecisionRecords(
        decision_id=ids,
        time=time,
        customer_id=customers,
        context=context,
        eligible=eligible,
        action=action,
        send_at=send_at,
        propensity=propensity,
        policy=np.full(n, policy, dtype=object),
        policy_version=np.full(n, version, dtype=object),
        experiment=np.full(n, experiment, dtype=object),
        arm=np.full(n, arm, dtype=object),
        cost=cost,
    )
    k, reward = _rewards(table, m.reward) if m.reward is not None else (np.zeros(0, np.int64), np.zeros(0))
    outcomes = OutcomeRecords(
        decision_id=ids[k], event=np.full(k.size, "converted", dtype=object), time=send_at[k], value=reward
    )
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
    present = np.array([not (v is None or v == "" or (isinstance(v, float) and math.isnan(v))) for v in cells], bool)
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


# ----------------------------------------------------------------------------- onto a deployment
@dataclass(frozen=True)
class DeploymentMapping:
    """Which columns of a brand's file hold what, for an import onto its deployment (:func:`import_onto`).

    The customers' attributes are read from the columns named as the deployment's attributes (or as
    ``attributes`` renames them); the context is the deployment's own (:meth:`Deployment.features`),
    so no feature columns are mapped here.

    Args:
        customer_id: customer column; default the decision id (every row its own customer, so no
            contact history).
        time: decision time (hours since the epoch or ISO 8601; an ISO offset such as ``+02:00`` is
            also the customer's time zone unless ``tz_offset`` is given); ``None``: every row at
            ``time_default``.
        time_default: the decision time of every row when ``time`` is ``None``.
        tz_offset: the customer's time zone: hours east of UTC, or an IANA name (``Europe/Paris``);
            default the offsets of the ISO times (0 for times without one).
        action: one column of action indices into ``deployment.action_space()`` (0 = no contact);
            or else ``channel`` and ``offer`` (both empty: no contact) with ``send_hour`` (a local
            hour of the deployment's send slots; empty or ``now``: "now"; no column: every contact "now").
        propensity: the logging policy's probability of the action, in (0, 1]; ``None``: estimated
            from the file (:func:`estimate_propensity`, within the groups of ``propensity_by``,
            renormalised over each row's eligible actions).
        reward: the revenue of the decision's conversion (an empty cell: none), a ``converted`` event.
        opted_out: 0/1 (or true/false; empty: 0), an ``opted_out`` event.
        decision_id: unique id column; default ``"{file name}:{row}"``.
        cost: the contact's cost; default the deployment's cost of the channel (0 for no contact).
        attributes: attribute name -> the file's column, where they differ.
    """

    customer_id: str | None = None
    time: str | None = None
    time_default: float | None = None
    tz_offset: str | None = None
    action: str | None = None
    channel: str | None = None
    offer: str | None = None
    send_hour: str | None = None
    propensity: str | None = None
    propensity_by: tuple[str, ...] = ()
    reward: str | None = None
    opted_out: str | None = None
    decision_id: str | None = None
    cost: str | None = None
    attributes: Mapping[str, str] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        by = self.propensity_by
        if isinstance(by, str) or not all(isinstance(c, str) and c for c in by):
            raise ValueError(f"propensity_by: must be column names, got {by!r}")
        object.__setattr__(self, "propensity_by", tuple(by))
        if self.action is not None:
            given = next((f for f in ("channel", "offer", "send_hour") if getattr(self, f) is not None), None)
            if given is not None:
                raise ValueError(
                    f"{given}: the action column {self.action!r} already gives the action; map either "
                    "one action column or channel and offer (with send_hour)"
                )
        elif self.channel is None or self.offer is None:
            raise ValueError(
                f"{'channel' if self.channel is None else 'offer'}: map the channel and offer columns "
                "(with send_hour), or one action column of indices"
            )
        _check_time_and_propensity(self)
        renames = dict(self.attributes or {})
        bad = next(((k, v) for k, v in renames.items() if not (isinstance(k, str) and isinstance(v, str) and v)), None)
        if bad is not None:
            raise ValueError(f"attributes: expected attribute name -> column name, got {bad[0]!r} -> {bad[1]!r}")
        object.__setattr__(self, "attributes", renames)

    def column_of(self, attribute: str) -> str:
        """The file's column of ``attribute``."""
        return (self.attributes or {}).get(attribute, attribute)

    def columns(self) -> list[str]:
        """The columns this mapping names, attributes aside (each must be in the file)."""
        named = [
            self.customer_id,
            self.time,
            self.tz_offset,
            self.action,
            self.channel,
            self.offer,
            self.send_hour,
            self.propensity,
            self.reward,
            self.opted_out,
            self.decision_id,
            self.cost,
        ]
        return list(dict.fromkeys([*(c for c in named if c is not None), *self.propensity_by]))


@dataclass(frozen=True)
class Moved:
    """What :func:`move_onto` did to a log."""

    decisions: int  # decisions renumbered (0 when the log already held the deployment)
    added: tuple[str, ...]  # offers the new catalogue adds
    removed: tuple[str, ...]  # offers it no longer declares (none of them was ever sent)
    before: str  # digests of the deployment the log held, and of the one it holds now
    after: str


def move_onto(log: DecisionLog, deployment: Deployment) -> Moved:
    """Move a deployment log onto a new version of its ``deployment`` whose **catalogue** changed: offers
    added, removed or reordered, their features, rules, dates or budgets changed; the same name,
    attributes, channels and send slots (so the same features). Every decision keeps its (channel,
    offer, send slot), renumbered in the new action space (:meth:`DecisionLog.renumber_actions`, one
    transaction), so the contact history, the caps and the training data carry over, and the log then
    holds the new deployment: ``nba serve --deployment`` on it serves the new catalogue with the same log.

    ValueError naming the field, and nothing changed: ``deployment`` when the log holds none, another
    deployment's, or one whose attributes, channels or send slots differ; ``offers`` when an offer the
    new catalogue drops was sent in this log (retire it by its dates instead: ``valid_until`` keeps its
    past contacts counted and makes it ineligible).
    """
    from nba.deployment import Deployment
    from nba.serialization import space_to_dict

    held = log.deployment()
    if held is None:
        raise ValueError("deployment: this log holds no deployment (import onto one first: nba import --deployment)")
    old = Deployment.from_dict(held)
    if old.digest == deployment.digest:
        return Moved(0, (), (), old.digest, old.digest)
    a, b = old.action_space(), deployment.action_space()
    names = lambda d: [x.name for x in d.attributes]  # noqa: E731
    for what, mine, theirs in (
        ("name", old.name, deployment.name),
        ("attributes", names(old), names(deployment)),
        ("channels", list(a.channels), list(b.channels)),
        ("send_slots", list(a.send_slots), list(b.send_slots)),
    ):
        if mine != theirs:
            raise ValueError(
                f"deployment: {what} differ ({mine} in the log, {theirs} in the file): only the "
                "offers may change on a log; import the new world onto a new log"
            )
    if old.features().names != deployment.features().names:
        raise ValueError(
            "deployment: the attributes' declarations differ (types, values or ranges change the "
            "features): only the offers may change on a log; import onto a new log"
        )
    index = {(b.channel_of[j], b.contents[b.content_of[j]], b.slot_of[j]): j for j in range(1, b.n_actions)}
    amap = np.array(
        [0]
        + [index.get((a.channel_of[i], a.contents[a.content_of[i]], a.slot_of[i]), -1) for i in range(1, a.n_actions)],
        np.int64,
    )
    removed = tuple(o for o in a.contents if o not in b.contents)
    added = tuple(o for o in b.contents if o not in a.contents)
    sent = log.action_counts(-1e12)
    used = sorted({a.contents[a.content_of[i]] for i in np.flatnonzero((amap < 0) & (sent > 0))})
    if used:
        raise ValueError(
            f"offers: {used} were sent in this log and the new catalogue drops them; keep them "
            "declared with a valid_until in the past (they stay counted by the caps and are never "
            "chosen again)"
        )
    features = deployment.features()
    layout = LogLayout(features.dim, b.n_actions, features.names, space_to_dict(b))
    moved = log.renumber_actions(layout, amap, deployment.to_dict())
    return Moved(moved, added, removed, old.digest, deployment.digest)


def import_onto(
    log: DecisionLog,
    path: str | Path,
    deployment: Deployment,
    mapping: DeploymentMapping,
    *,
    policy: str = "imported",
    version: str = "0",
    experiment: str = "",
    arm: str = "",
    format: str | None = None,
    id_prefix: str | None = None,
    allow_ineligible: bool = False,
) -> ImportResult:
    """Import one CSV or Parquet file of a brand's decisions onto its ``deployment``, all or nothing.

    Each row's attributes are checked with the deployment's rules (an unknown category, a number out
    of range, a required attribute missing: ValueError ``"row R, column 'C': ..."``, R the 1-based
    data row); its action is resolved in ``deployment.action_space()`` (an unknown channel, offer or
    send hour names row and column). Then the file is **replayed** in time order, as the decision
    service would have seen it (:func:`_replay`): each row's context is
    ``deployment.features().build(...)`` and its eligible actions ``deployment.eligibility(...)``,
    with the customer's contact history and recent contacts rebuilt from their earlier rows. A logged
    action the deployment would not have allowed is refused, naming the row and the column (the
    reasons in words), unless ``allow_ineligible``: then the row's mask includes its action and
    :attr:`ImportResult.ineligible` counts such rows.

    The log's layout gets the deployment's feature names and action space, and the log keeps the
    deployment's canonical document (:meth:`DecisionLog.set_deployment`: training and evaluation on the
    log find it there); a log created with another layout, or holding another deployment, is refused
    (``deployment: ...``). The deployment's digest is in
    :attr:`ImportResult.deployment` and in every imported decision's ``policy_version``,
    ``"<version>@<digest>"``. Costs are the deployment's channel costs unless a cost column is mapped.
    """
    from nba.serialization import space_to_dict

    path = Path(path)
    m = mapping
    space = deployment.action_space()
    features = deployment.features()
    text = [m.column_of(a.name) for a in deployment.attributes if a.type in ("category", "time")]
    text += [
        c for c in (m.time, m.tz_offset, m.customer_id, m.decision_id, m.channel, m.offer, m.send_hour) if c is not None
    ]
    try:
        table = read_table(path, format, (*text, *m.propensity_by))
    except (OSError, ValueError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith("format"):
            raise
        raise ValueError(f"path: cannot read {str(path)!r}: {exc}") from exc
    missing = [c for c in m.columns() if c not in table.column_names]
    if missing:
        raise ValueError(f"column {missing[0]!r}: not in the file; columns: {table.column_names}")
    layout = LogLayout(features.dim, space.n_actions, features.names, space_to_dict(space))
    stored = log.layout()
    if stored is not None and not (
        (stored.context_dim, stored.n_actions, stored.feature_names)
        == (layout.context_dim, layout.n_actions, layout.feature_names)
        and stored.action_space in (None, layout.action_space)
    ):
        raise ValueError(
            f"deployment: this log holds {stored.context_dim} features and {stored.n_actions} actions "
            f"that are not those of the deployment {deployment.name!r} ({layout.context_dim} features, "
            f"{layout.n_actions} actions); import onto a log of this deployment"
        )
    held = log.deployment()
    if held is not None:
        from nba.deployment import Deployment

        other = Deployment.from_dict(held)
        if other.digest != deployment.digest:
            raise ValueError(
                f"deployment: this log holds the decisions of the deployment {other.name!r} "
                f"({other.digest[:19]}..), not of {deployment.name!r} ({deployment.digest[:19]}..); "
                "import onto a log of this deployment"
            )
    estimated = m.propensity is None
    name = f"{policy}{ESTIMATED_SUFFIX}" if estimated else policy
    try:
        records, outcomes, ineligible = _onto_records(
            table,
            deployment,
            m,
            path.name if id_prefix is None else id_prefix,
            name,
            f"{version}@{deployment.digest}",
            experiment,
            arm,
            allow_ineligible,
        )
        _validated(records, outcomes, m)
    except _Fail as exc:
        raise ValueError(str(exc)) from None
    result = ImportResult(
        0,
        len(records),
        features.names,
        estimated,
        name,
        0,
        m.propensity_by if estimated else (),
        m.time_default if m.time is None else None,
        space.n_actions,
        deployment.digest,
        ineligible,
    )
    if not len(records):
        return result
    log.set_deployment(deployment.to_dict())
    log.set_layout(layout)
    new_d, new_o = log.log(records, outcomes)
    return replace(result, new_decisions=new_d, new_outcomes=new_o)


def _onto_records(
    table,
    d: Deployment,
    m: DeploymentMapping,
    prefix: str,
    policy: str,
    version: str,
    experiment: str,
    arm: str,
    allow_ineligible: bool,
) -> tuple[DecisionRecords, OutcomeRecords, int]:
    n = table.num_rows
    space = d.action_space()
    time, tz = _times_and_zones(table, m)
    people = _attribute_rows(table, d, m)
    action = _deployment_actions(table, space, m)
    ids, customers = _ids(table, m.decision_id, m.customer_id, prefix, n)
    send = send_time(space, time, tz)
    contact = action != NO_CONTACT
    send_at = np.where(contact, send[np.arange(n), np.maximum(space.slot_of[action], 0)], time)
    if m.cost is None:
        cost = np.array([0.0, *(c.cost for c in d.channels)])[space.channel_of[action] + 1]
    else:
        cost = _numbers(table, m.cost, lambda v: v >= 0, "a number >= 0")
    k, reward = _rewards(table, m.reward) if m.reward is not None else (np.zeros(0, np.int64), np.zeros(0))
    opted = np.zeros(0, np.int64) if m.opted_out is None else np.flatnonzero(_flags(table, m.opted_out))
    context, eligible, reasons = _replay(d, people, customers, time, tz, action, send_at, k)
    bad = np.flatnonzero(reasons)
    if bad.size and not allow_ineligible:
        i = int(bad[0])
        why = ", ".join(str(r.name).lower() for r in Reason if reasons[i] & r)
        column = m.action or (
            m.offer
            if reasons[i] & Reason.OFFER
            else m.send_hour
            if reasons[i] & Reason.QUIET_HOURS and m.send_hour
            else m.channel
        )
        more = f" ({bad.size} rows in all)" if bad.size > 1 else ""
        _fail(
            i,
            column,
            f"the deployment does not allow {space.names()[action[i]]} here ({why}){more}; "
            "import with allow_ineligible to keep such rows, their action added to their mask",
        )
    if m.propensity is None:
        propensity = estimate_propensity(action, space.n_actions, _groups(table, m.propensity_by), eligible)
    else:
        propensity = _numbers(table, m.propensity, lambda v: (v > 0) & (v <= 1), "a number in (0, 1]")
    decisions = DecisionRecords(
        decision_id=ids,
        time=time,
        customer_id=customers,
        context=context,
        eligible=eligible,
        action=action,
        send_at=send_at,
        propensity=propensity,
        policy=np.full(n, policy, dtype=object),
        policy_version=np.full(n, version, dtype=object),
        experiment=np.full(n, experiment, dtype=object),
        arm=np.full(n, arm, dtype=object),
        cost=cost,
    )
    rows = np.concatenate([k, opted])
    events = np.array(["converted"] * k.size + ["opted_out"] * opted.size, dtype=object)
    outcomes = OutcomeRecords(
        decision_id=ids[rows], event=events, time=send_at[rows], value=np.concatenate([reward, np.zeros(opted.size)])
    )
    return decisions, outcomes, int(bad.size)


def _replay(
    d: Deployment,
    people: list[dict[str, Any]],
    customers: np.ndarray,
    time: np.ndarray,
    tz: np.ndarray,
    action: np.ndarray,
    send_at: np.ndarray,
    bought: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's context, eligible actions and the Reason bits of its own action (0: it was eligible), with
    the customer's history rebuilt from their earlier rows, as the decision service would have seen it.

    Rows are taken in time order (ties in file order). Before a customer's row at time ``t``:

    * the recent contacts (caps, minimum gap: :class:`RecentContacts`) hold every contact of their
      earlier rows, at its send time, sent or still scheduled;
    * the contact history (:class:`History`) holds those sent by ``t`` (send time <= ``t``), recorded
      in send-time order, each at the local hour of its send in the time zone of its own row; and, as
      purchases, the conversions (reward cells) of their earlier rows at those rows' send times (the
      time the log stores them at) when that is <= ``t``. The file has no opens or clicks: the
      engagement features stay at none, as for a customer who never engaged.

    Every earlier row counts, however old (the service looks back ``history_days``, 90 by default).
    A row's own action is then added to the recent contacts; a row whose action was not eligible is
    replayed all the same (its bits say why). The replay goes one round per rank of a row among its
    customer's rows (every customer's first row, then every second, ...), in chunks of ``ROUND_ROWS``.
    """
    n, space, layout = len(people), d.action_space(), d.features()
    c_idx, codes = np.unique(customers.astype(str), return_inverse=True)
    codes = codes.ravel()
    order = np.lexsort((np.arange(n), time))
    grouped = order[np.argsort(codes[order], kind="stable")]  # rows by customer, time order within
    starts = np.r_[0, np.flatnonzero(np.diff(codes[grouped])) + 1]
    rank = np.empty(n, np.int64)
    rank[grouped] = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    last = np.zeros(c_idx.size, np.int64)
    np.maximum.at(last, codes, rank)
    m, c = c_idx.size, len(d.channels)
    hist = History.empty(m, c)
    recent = RecentContacts.for_rules(m, c, d.contact_rules())
    columns = d.columns(people)
    context = np.empty((n, layout.dim), np.float32)
    eligible = np.empty((n, space.n_actions), bool)
    reasons = np.zeros(n, np.uint8)
    channel = space.channel_of[action].astype(np.intp)
    contact = action != NO_CONTACT
    bought_row = np.zeros(n, bool)
    bought_row[bought] = True
    pending = np.zeros(0, np.int64)  # rows of contacts or conversions not yet in the history
    now_of = np.full(m, -np.inf)
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[by_rank], np.arange(int(rank.max(initial=-1)) + 2))
    hist_fields = [f.name for f in fields(History) if f.name != "half_life_h"]
    for r in range(bounds.size - 1):
        for s in range(bounds[r], bounds[r + 1], ROUND_ROWS):
            rows = by_rank[s : min(s + ROUND_ROWS, bounds[r + 1])]
            cu = codes[rows]
            now_of[cu] = time[rows]
            due = send_at[pending] <= now_of[codes[pending]]
            ready, pending = pending[due], pending[~due]
            now_of[cu] = -np.inf
            ready = ready[np.lexsort((time[ready], send_at[ready]))]
            sent = ready[contact[ready]]
            for batch in _once_each(codes[sent]):
                p = sent[batch]
                hist.record_contacts(codes[p], channel[p], send_at[p], hour_of_day(send_at[p] + tz[p]))
            paid = ready[bought_row[ready]]
            np.add.at(hist.n_purchases, codes[paid], np.float32(1.0))
            np.maximum.at(hist.last_purchase, codes[paid], send_at[paid])
            h = History(**{f: getattr(hist, f)[cu] for f in hist_fields}, half_life_h=hist.half_life_h)
            cols = {k: v[rows] for k, v in columns.items()}
            context[rows] = layout.build(cols, h, time[rows], tz[rows])
            mask, bits = d.eligibility(
                [people[i] for i in rows.tolist()],
                RecentContacts(recent.times[cu], recent.any_times[cu]),
                now=time[rows],
                tz_offset=tz[rows],
                reasons=True,
                columns=cols,
            )
            reasons[rows] = bits[np.arange(rows.size), action[rows]]
            mask[np.arange(rows.size), action[rows]] = True
            eligible[rows] = mask
            new = rows[contact[rows]]
            recent.record(codes[new], channel[new], send_at[new])
            later = rows[(contact[rows] | bought_row[rows]) & (rank[rows] < last[cu])]  # a later row will see them
            pending = np.concatenate([pending, later])
    return context, eligible, reasons


def _once_each(keys: np.ndarray) -> list[np.ndarray]:
    """Positions of ``keys`` split into batches with each key at most once, keeping each key's order."""
    if keys.size == 0:
        return []
    order = np.argsort(keys, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(keys[order])) + 1]
    rank = np.empty(keys.size, np.int64)
    rank[order] = np.arange(keys.size) - np.repeat(starts, np.diff(np.r_[starts, keys.size]))
    return [np.flatnonzero(rank == k) for k in range(int(rank.max()) + 1)]


def _ids(table, decision_id: str | None, customer_id: str | None, prefix: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    if decision_id is None:
        ids = np.array([f"{prefix}:{i + 1}" for i in range(n)], dtype=object)
    else:
        ids = _strings(table, decision_id)
        order = np.argsort(ids.astype(str), kind="stable")
        dup = np.flatnonzero(ids[order][1:] == ids[order][:-1])
        if dup.size:
            _fail(int(order[dup[0] + 1]), decision_id, f"duplicate decision id {ids[order[dup[0] + 1]]!r}")
    return ids, (ids if customer_id is None else _strings(table, customer_id))


def _times_and_zones(table, m: DeploymentMapping) -> tuple[np.ndarray, np.ndarray]:
    """(N,) decision times (hours since the epoch) and (N,) time zones (hours east of UTC)."""
    import pyarrow as pa

    n = table.num_rows
    hours = "hours since the epoch or an ISO timestamp"
    offsets = np.zeros(n)
    if m.time is None:
        time = np.full(n, _time_default(m))
    elif pa.types.is_string(table.column(m.time).type) or pa.types.is_large_string(table.column(m.time).type):
        time = np.empty(n)
        for i, v in enumerate(table.column(m.time).to_pylist()):
            try:
                time[i] = float(v)
                continue
            except (TypeError, ValueError):
                pass
            try:
                t = datetime.fromisoformat(v.strip())
            except (AttributeError, ValueError):
                _fail(i, m.time, f"expected {hours}, got {v!r}")
            offset = t.utcoffset()
            if offset is None:
                t = t.replace(tzinfo=UTC)
            else:
                offsets[i] = offset.total_seconds() / 3600.0
            time[i] = t.timestamp() / 3600.0
        bad = np.flatnonzero(~np.isfinite(time))
        if bad.size:
            _fail(int(bad[0]), m.time, f"expected {hours}, got {table.column(m.time)[int(bad[0])].as_py()!r}")
    else:
        time = _numbers(table, m.time, None, hours, _to_hours)
    if m.tz_offset is None:
        tz = offsets
    else:
        tz = np.empty(n)
        for i, v in enumerate(table.column(m.tz_offset).to_pylist()):
            try:
                tz[i] = _to_float(v)
            except (TypeError, ValueError):
                tz[i] = _zone_offset(v, time[i], i, m.tz_offset)
    bad = np.flatnonzero(~(np.abs(tz) <= 14.0))
    if bad.size:
        i = int(bad[0])
        _fail(i, m.tz_offset or m.time, f"expected a time zone within 14 hours of UTC, got {tz[i]:g} hours")
    return time, tz


def _zone_offset(name: Any, hours: float, row: int, column: str) -> float:
    """Hours east of UTC of the time zone ``name`` at ``hours`` since the epoch
    (:func:`nba.eligibility.utc_offset`, as the decision service reads it)."""
    if not isinstance(name, str) or not name.strip():
        _fail(row, column, f"expected hours east of UTC or a time zone name (Europe/Paris), got {name!r}")
    try:
        return utc_offset(name.strip(), hours)
    except ValueError:
        _fail(row, column, f"unknown time zone {name!r}; expected hours east of UTC or an IANA name (Europe/Paris)")


def _flags(table, column: str) -> np.ndarray:
    """(N,) bool from 0/1, true/false or empty (false) cells."""
    out = np.zeros(table.num_rows, bool)
    for i, v in enumerate(table.column(column).to_pylist()):
        flag = _flag(v)
        if flag is None:
            _fail(i, column, f"expected 0 or 1 (true or false; empty: 0), got {v!r}")
        out[i] = flag
    return out


_TRUE, _FALSE = ("true", "1", "yes", "t", "y", "1.0"), ("false", "0", "no", "f", "n", "0.0", "")


def _flag(v: Any) -> bool | None:
    """A boolean cell as a bool (None or an empty cell: False), or None if it is not one."""
    if v is None or isinstance(v, bool):
        return bool(v)
    if isinstance(v, int | float) and v in (0, 1):
        return bool(v)
    if isinstance(v, str):
        t = v.strip().lower()
        return True if t in _TRUE else False if t in _FALSE else None
    return None


def _deployment_actions(table, space: ActionSpace, m: DeploymentMapping) -> np.ndarray:
    """(N,) action indices: from the action column, or from the channel, offer and send-hour columns."""
    n = table.num_rows
    if m.action is not None:
        a = _numbers(
            table,
            m.action,
            lambda v: (v == np.round(v)) & (v >= 0) & (v < space.n_actions),
            f"an action index in [0, {space.n_actions})",
        )
        return a.astype(np.int64)
    if m.send_hour is None and None not in space.send_slots:
        raise ValueError(
            f'send_hour: the deployment has no "now" slot (its slots: {list(space.send_slots)}); '
            "map the send-hour column"
        )
    channels = table.column(m.channel).to_pylist()
    offers = table.column(m.offer).to_pylist()
    hours = [None] * n if m.send_hour is None else table.column(m.send_hour).to_pylist()
    channel_at = {ch: k for k, ch in enumerate(space.channels)}
    offer_at = {o: k for k, o in enumerate(space.contents)}
    slot_at = {h: k for k, h in enumerate(space.send_slots)}
    out = np.empty(n, np.int64)
    cache: dict[tuple, int] = {}
    for i, key in enumerate(zip(channels, offers, hours, strict=True)):
        found = cache.get(key)
        if found is None:
            found = cache[key] = _action_of(key, i, m, space, channel_at, offer_at, slot_at)
        out[i] = found
    return out


def _action_of(
    key: tuple,
    row: int,
    m: DeploymentMapping,
    space: ActionSpace,
    channel_at: dict[str, int],
    offer_at: dict[str, int],
    slot_at: dict[int | None, int],
) -> int:
    channel, offer, hour = (None if v is None or (isinstance(v, str) and not v.strip()) else v for v in key)
    if channel is None and offer is None:
        return NO_CONTACT
    if channel is None or offer is None:
        empty, other, value = (m.channel, m.offer, offer) if channel is None else (m.offer, m.channel, channel)
        _fail(row, empty, f"empty, but {other!r} is {value!r} (both empty: no contact)")
    if str(channel).strip() not in channel_at:
        _fail(row, m.channel, f"unknown channel {channel!r}; declared: {list(space.channels)}")
    if str(offer).strip() not in offer_at:
        _fail(row, m.offer, f"unknown offer {offer!r}; declared: {list(space.contents)}")
    slot: int | None = None
    if hour is not None and not (isinstance(hour, str) and hour.strip().lower() == "now"):
        try:
            x = float(hour)
        except (TypeError, ValueError):
            x = math.nan
        if not (x == round(x) and x in slot_at):
            slots = ["now" if h is None else h for h in space.send_slots]
            _fail(row, m.send_hour, f"{hour!r} is not a send slot of the deployment; slots: {slots} (empty: now)")
        slot = int(x)
    if slot not in slot_at:
        _fail(row, m.send_hour or m.channel, 'the deployment has no "now" slot; give the send hour')
    k = (channel_at[str(channel).strip()] * space.n_contents + offer_at[str(offer).strip()]) * space.n_slots
    return 1 + k + slot_at[slot]


_MISSING = object()


def _attribute_rows(table, d: Deployment, m: DeploymentMapping) -> list[dict[str, Any]]:
    """Each row's attributes as :meth:`Deployment.check_attributes` returns them: checked with the
    attribute's rules (the error names row and column), defaults where a cell or a column is missing."""
    names, values = [], []
    for a in d.attributes:
        column = m.column_of(a.name)
        names.append(a.name)
        if column not in table.column_names:
            if a.required:
                raise ValueError(f"column {column!r}: not in the file, and the attribute {a.name!r} is required")
            values.append([a.default] * table.num_rows)
        else:
            values.append(_attribute_column(table, column, a))
    return [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]


def _attribute_column(table, column: str, a: Any) -> list[Any]:
    import pyarrow as pa

    col = table.column(column)
    if a.type == "number" and (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        x = col.to_numpy(zero_copy_only=False).astype(np.float64)  # nulls: NaN
        bad = np.isinf(x)
        if a.min is not None:
            bad |= x < a.min
        if a.max is not None:
            bad |= x > a.max
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            a.check(float(x[i]), f"row {i + 1}, column {column!r}")  # raises, in the attribute's own words
        missing = np.isnan(x)
        if missing.any():
            if a.required:
                _fail(int(np.flatnonzero(missing)[0]), column, f"empty, but the attribute {a.name!r} is required")
            return [a.default if miss else v for v, miss in zip(x.tolist(), missing.tolist(), strict=True)]
        return x.tolist()
    cache: dict[tuple[type, Any], Any] = {}
    out = []
    for i, v in enumerate(col.to_pylist()):
        key = (type(v), v)
        value = cache.get(key, _MISSING)
        if value is _MISSING:
            value = cache[key] = _attribute_value(v, a, i, column)
        out.append(value)
    return out


def _attribute_value(v: Any, a: Any, row: int, column: str) -> Any:
    """One cell as the attribute holds it, or its default when empty."""
    if v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, float) and math.isnan(v)):
        if a.required:
            _fail(row, column, f"empty, but the attribute {a.name!r} is required")
        return a.default
    if isinstance(v, str):
        v = v.strip()
        if a.type == "number":
            try:
                v = float(v)
            except ValueError:
                _fail(row, column, f"expected a number, got {v!r}")
        elif a.type == "boolean" and _flag(v) is not None:
            v = _flag(v)
    elif a.type == "boolean" and isinstance(v, int | float) and v in (0, 1):
        v = bool(v)
    elif a.type == "category" and isinstance(v, int):
        v = str(v)
    return a.check(v, f"row {row + 1}, column {column!r}")
