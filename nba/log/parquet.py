"""The decision log as Parquet: the schema of an export, writing batches into one file, reading them back.

See :func:`parquet_schema` for the columns; the file's schema metadata holds the log's layout and the
reward rule of the export.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from nba.log.records import SCHEMA_VERSION, LoggedBatch, LogLayout
from nba.log.rewards import RewardRule
from nba.log.validation import STRING_FIELDS


def parquet_schema(layout: LogLayout, rule: RewardRule | None = None):
    """Arrow schema of an exported log: one column per :class:`LoggedBatch` field.

    ``context`` is a ``fixed_size_list<float32>[d]`` and ``eligible`` a ``fixed_size_list<bool>[A]``
    (one list per row: any Parquet reader sees the whole vector, and it decodes to an (N, d) array
    without copies per row). The schema's metadata holds the layout (``nba.context_dim``,
    ``nba.n_actions``, ``nba.feature_names``, ``nba.action_space``) and the reward rule used.
    """
    import pyarrow as pa

    meta = {
        "nba.schema_version": SCHEMA_VERSION,
        "nba.context_dim": str(layout.context_dim),
        "nba.n_actions": str(layout.n_actions),
        "nba.feature_names": json.dumps(None if layout.feature_names is None else list(layout.feature_names)),
        "nba.action_space": json.dumps(layout.action_space),
    }
    if rule is not None:
        meta["nba.reward_rule"] = json.dumps(
            {
                "window_h": rule.window_h,
                "events": list(rule.events),
                "opt_out_value": rule.opt_out_value,
                "default": rule.default,
                "subtract_cost": rule.subtract_cost,
            }
        )
    s, f = pa.string(), pa.float64()
    return pa.schema(
        [
            ("decision_id", s),
            ("time", f),
            ("customer_id", s),
            ("context", pa.list_(pa.float32(), max(layout.context_dim, 0))),
            ("eligible", pa.list_(pa.bool_(), max(layout.n_actions, 0))),
            ("action", pa.int64()),
            ("send_at", f),
            ("propensity", f),
            ("policy", s),
            ("policy_version", s),
            ("experiment", s),
            ("arm", s),
            ("cost", f),
            ("reward", f),
        ],
        metadata=meta,
    )


def batch_to_arrow(batch: LoggedBatch, schema):
    """A :class:`LoggedBatch` as an Arrow table of ``schema`` (from :func:`parquet_schema`)."""
    import pyarrow as pa

    cols = []
    for field in schema:
        x = getattr(batch, field.name)
        if pa.types.is_fixed_size_list(field.type):
            flat = pa.array(np.ascontiguousarray(x).ravel(), field.type.value_type)
            cols.append(pa.FixedSizeListArray.from_arrays(flat, field.type.list_size))
        elif pa.types.is_string(field.type):
            cols.append(pa.array(x.tolist(), pa.string()))
        else:
            cols.append(pa.array(x, field.type))
    return pa.Table.from_arrays(cols, schema=schema)


def write_parquet(
    path: str | Path, batches: Iterable[LoggedBatch], layout: LogLayout, rule: RewardRule | None = None
) -> int:
    """Write ``batches`` (of one log, of ``layout``, rewarded by ``rule``) into one Parquet file at ``path``,
    zstd-compressed, one row group per batch; returns the rows written."""
    import pyarrow.parquet as pq

    schema = parquet_schema(layout, rule)
    total = 0
    with pq.ParquetWriter(str(path), schema, compression="zstd") as writer:
        for batch in batches:
            writer.write_table(batch_to_arrow(batch, schema))
            total += len(batch)
    return total


def read_parquet_batches(path: str | Path, batch_rows: int = 100_000) -> Iterator[LoggedBatch]:
    """Stream an exported log back as :class:`LoggedBatch` chunks."""
    import pyarrow.parquet as pq

    f = pq.ParquetFile(str(path))
    meta = f.schema_arrow.metadata or {}
    if b"nba.context_dim" not in meta:
        raise ValueError(f"path: {path} is not an nba decision log export (no nba.context_dim metadata)")
    dim, n_act = int(meta[b"nba.context_dim"]), int(meta[b"nba.n_actions"])
    for rb in f.iter_batches(batch_size=batch_rows):
        n = rb.num_rows
        kw: dict[str, np.ndarray] = {}
        for name in rb.schema.names:
            col = rb.column(name)
            if name == "context":
                kw[name] = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(n, dim)
            elif name == "eligible":
                kw[name] = col.flatten().to_numpy(zero_copy_only=False).astype(bool).reshape(n, n_act)
            elif name in STRING_FIELDS:
                kw[name] = np.array(col.to_pylist(), dtype=object)
            else:
                kw[name] = col.to_numpy(zero_copy_only=False)
        yield LoggedBatch(**kw)


def read_parquet_layout(path: str | Path) -> LogLayout:
    """The layout recorded in an exported log's metadata."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(str(path)).metadata or {}
    if b"nba.context_dim" not in meta:
        raise ValueError(f"path: {path} is not an nba decision log export (no nba.context_dim metadata)")
    names = json.loads(meta.get(b"nba.feature_names", b"null"))
    return LogLayout(
        int(meta[b"nba.context_dim"]),
        int(meta[b"nba.n_actions"]),
        None if names is None else tuple(names),
        json.loads(meta.get(b"nba.action_space", b"null")),
    )
