"""The decision log store: decisions and their outcomes, durable, in SQLite or PostgreSQL.

One code path over SQLAlchemy Core serves both databases; only the URL differs
(``sqlite:///decisions.db``, ``postgresql+psycopg://user@host/db``).

Design:

* **Append-only and idempotent.** A decision is keyed by its ``decision_id``, an outcome by
  ``(decision_id, event)``; writes are ``INSERT ... ON CONFLICT DO NOTHING``, so a caller that
  retries after a timeout never duplicates a row. Each call validates the whole batch first
  (errors name the field and row) and then writes it in **one transaction**: all or nothing.
* **Validated first.** A batch is checked whole before its transaction (:mod:`nba.log.validation`),
  so no row fails inside it and a batch valid for one database is valid for the other.
* **Columnar in, columnar out.** Writers hand in :class:`DecisionRecords` / :class:`OutcomeRecords`
  (NumPy arrays), readers get :class:`LoggedBatch` chunks. The context is stored as the raw
  little-endian float32 bytes of the row, the eligibility mask as ``np.packbits`` bytes
  (little bit order), so a row costs a few bytes per feature and chunks decode with one
  ``np.frombuffer`` call. Writes are ``executemany`` of plain tuples on the driver.
* **Streaming reads.** :meth:`DecisionLog.iter_batches` pages by keyset on the autoincrement
  ``seq`` (insertion order), one short transaction per chunk, so memory stays bounded by the chunk
  size however large the log. Rewards are joined per chunk in NumPy by a
  :class:`~nba.log.rewards.RewardRule`: the rule is chosen at read time, the log keeps raw events.
  :meth:`DecisionLog.export_parquet` streams the same chunks into a file (:mod:`nba.log.parquet`).
* **One layout per log.** The ``meta`` table records the context dimension, the number of actions
  and optionally feature names and the action space (JSON); a batch with another layout is refused.
  A log imported onto a deployment (:func:`nba.log.importer.import_onto`) also keeps that deployment's
  canonical document there (:meth:`DecisionLog.set_deployment`, :meth:`DecisionLog.deployment`): the log
  says which world its decisions were made in, and refuses another. A simulated log keeps its
  provenance there (:meth:`DecisionLog.set_provenance`, :meth:`DecisionLog.provenance`): how it was
  simulated and the reward rule of the simulator, so whoever trains or evaluates on it finds them in
  the log, wherever runs are tracked.
* **SQLite** runs in WAL mode with ``synchronous=FULL`` (an acknowledged write survives a crash or
  power loss) and a busy timeout; write transactions start with ``BEGIN IMMEDIATE`` so concurrent
  writers queue on the lock instead of failing on upgrade.
* **Read-decide-write.** :meth:`DecisionLog.deciding` holds one transaction from a history read to
  the decisions' commit, serialised per customer (SQLite's write lock; PostgreSQL advisory locks
  on customer buckets), so concurrent deciders cannot both let a customer past a contact cap.
* ``namespace`` prefixes the table names (``<namespace>_decisions`` ...): several isolated logs in
  one database, which the tests use on a shared PostgreSQL; :meth:`DecisionLog.drop` removes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from nba.log.parquet import write_parquet
from nba.log.records import (
    FUNNEL,
    SCHEMA_VERSION,
    ContactHistory,
    DecisionRecords,
    FunnelEvents,
    LoggedBatch,
    LogLayout,
    OutcomeRecords,
)
from nba.log.rewards import DEFAULT_RULE, RewardRule, check_rule, join_rewards
from nba.log.validation import (
    ValidDecisions,
    fail_row,
    finite_hours,
    shown,
    string_column,
    validate_decisions,
    validate_outcomes,
)

_logger = logging.getLogger("nba.log")

ENGAGEMENTS = ("opened", "clicked", "converted")
_IN_CHUNK = 500  # values per IN (...) list
OUTCOME_SKEW_H = 5 / 60  # an outcome may be stamped up to 5 minutes before its decision (clocks differ)
LOCK_BUCKETS = 256  # PostgreSQL advisory locks per log in DecisionLog.deciding
_NAMESPACE = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")
DEPLOYMENT_KEY = "deployment"  # meta key of the deployment's canonical document (JSON)
PROVENANCE_KEY = "provenance"  # meta key of how the log's decisions came to be (JSON, keys sorted)


def _world(document_text: str) -> str:
    """A stored deployment document named for people: its name and digest."""
    from nba.deployment import Deployment, DeploymentError

    data = json.loads(document_text)
    try:
        d = Deployment.from_dict(data)
    except DeploymentError:
        return repr(data.get("deployment", {}).get("name")) if isinstance(data, dict) else "(unreadable)"
    return f"{d.name!r} ({d.digest[:19]}..)"


def _differences(stored: Any, given: Any, path: str = "") -> str:
    """Where two JSON documents differ, for people: ``seed: 0 here, 1 given``, the first three places."""
    out: list[str] = []

    def walk(a: Any, b: Any, at: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k, _ABSENT), b.get(k, _ABSENT), f"{at}.{k}" if at else k)
        elif a != b or type(a) is not type(b):
            here = "none" if a is _ABSENT else shown(a)
            there = "none" if b is _ABSENT else shown(b)
            out.append(f"{at or 'the document'}: {here} here, {there} given")

    walk(stored, given, path)
    if not out:
        return "another document"
    return "; ".join(out[:3]) + (f"; and {len(out) - 3} more" if len(out) > 3 else "")


_ABSENT = object()


# ----------------------------------------------------------------------------- store
class DecisionLog:
    """Decisions and outcomes in one SQL database (see the module docstring).

    Args:
        url: SQLAlchemy URL, e.g. ``sqlite:///decisions.db`` or
            ``postgresql+psycopg://postgres@127.0.0.1:5432/nba``.
        namespace: prefix of the table names (lower-case identifier), for several logs in one
            database; ``None`` uses ``decisions``, ``outcomes``, ``meta``.
        layout: fix the log's layout now (else the first batch of decisions sets it); must agree
            with a layout already stored.
        busy_timeout_s: SQLite: how long a writer waits for the lock.
        checkpoint_every_s: SQLite file: copy the write-ahead log into the database from a background
            thread this often, instead of inside whichever commit crosses SQLite's 1,000-page mark
            (that commit then takes several times longer: a latency spike for a service). ``None``:
            SQLite's automatic checkpoints.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str | None = None,
        layout: LogLayout | None = None,
        busy_timeout_s: float = 30.0,
        checkpoint_every_s: float | None = None,
        **engine_kwargs: Any,
    ) -> None:
        if namespace is not None and not _NAMESPACE.match(namespace):
            raise ValueError(f"namespace: must match {_NAMESPACE.pattern}, got {namespace!r}")
        self.url = url
        self.namespace = namespace
        if checkpoint_every_s is not None and not checkpoint_every_s > 0:
            raise ValueError(f"checkpoint_every_s: must be > 0 seconds, got {checkpoint_every_s!r}")
        background = checkpoint_every_s is not None and sa.make_url(url).database not in (None, "", ":memory:")
        self.engine = _make_engine(url, busy_timeout_s, autocheckpoint=not background, **engine_kwargs)
        self.dialect = self.engine.dialect.name
        if self.dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"url: only SQLite and PostgreSQL are supported, got {self.dialect!r}")
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if background and self.dialect == "sqlite":
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, args=(checkpoint_every_s,), name="nba-log-checkpoint", daemon=True
            )
        self._writer = self.engine.execution_options(nba_write=True)
        prefix = f"{namespace}_" if namespace else ""
        md = sa.MetaData()
        seq_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite: the rowid itself
        self.decisions = sa.Table(
            f"{prefix}decisions",
            md,
            sa.Column("seq", seq_type, primary_key=True, autoincrement=True),
            sa.Column("decision_id", sa.Text, nullable=False),
            sa.Column("time", sa.Double, nullable=False),
            sa.Column("customer_id", sa.Text, nullable=False),
            sa.Column("context", sa.LargeBinary, nullable=False),
            sa.Column("eligible", sa.LargeBinary, nullable=False),
            sa.Column("action", sa.Integer, nullable=False),
            sa.Column("send_at", sa.Double, nullable=False),
            sa.Column("propensity", sa.Double, nullable=False),
            sa.Column("policy", sa.Text, nullable=False),
            sa.Column("policy_version", sa.Text, nullable=False),
            sa.Column("experiment", sa.Text, nullable=False),
            sa.Column("arm", sa.Text, nullable=False),
            sa.Column("cost", sa.Double, nullable=False),
            sa.Index(f"{prefix}decisions_id", "decision_id", unique=True),
            sa.Index(f"{prefix}decisions_customer_time", "customer_id", "time"),
            # action_counts: the sends of a window by action, read from the index alone (logs created
            # before it have none: the same query scans the table)
            sa.Index(f"{prefix}decisions_send_at_action", "send_at", "action"),
        )
        self.outcomes = sa.Table(
            f"{prefix}outcomes",
            md,
            sa.Column("decision_id", sa.Text, primary_key=True),
            sa.Column("event", sa.Text, primary_key=True),
            sa.Column("time", sa.Double, nullable=False),
            sa.Column("value", sa.Double, nullable=False),
        )
        self.meta = sa.Table(
            f"{prefix}meta",
            md,
            sa.Column("key", sa.Text, primary_key=True),
            sa.Column("value", sa.Text, nullable=False),
        )
        self._md = md
        with self._writer.begin() as conn:
            md.create_all(conn)
        self._layout: LogLayout | None = None
        self._history_sql_cache: dict[int, tuple[str, str]] = {}
        self._lock_space = _lock_space(self.decisions.name)
        self._decision_sql = self._insert_sql(self.decisions, ["decision_id"])
        self._outcome_sql = self._insert_sql(self.outcomes, ["decision_id", "event"])
        if layout is not None:
            self.set_layout(layout)
        if self._checkpointer is not None:
            self._checkpointer.start()

    # ------------------------------------------------------------------ plumbing
    def _checkpoint_loop(self, every_s: float) -> None:
        """PASSIVE checkpoints (never block a writer or a reader) until :meth:`close`."""
        while not self._stop.wait(every_s):
            try:
                with self.engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
            except sa.exc.SQLAlchemyError as e:  # a busy or vanished database: try again next time
                _logger.warning("decision log checkpoint failed: %s", e)

    def _insert_sql(self, table: sa.Table, keys: list[str]) -> str:
        """Positional ``INSERT ... ON CONFLICT (keys) DO NOTHING`` for ``executemany`` of tuples."""
        ins = (sqlite.insert if self.dialect == "sqlite" else postgresql.insert)(table)
        cols = [c.name for c in table.columns if c.name != "seq"]
        stmt = ins.values({c: sa.bindparam(c) for c in cols}).on_conflict_do_nothing(index_elements=keys)
        compiled = stmt.compile(dialect=self.engine.dialect)
        sql = str(compiled)
        if self.engine.dialect.positional:
            order = list(compiled.positiontup or [])
            if order != cols:
                raise RuntimeError(f"unexpected parameter order {order}")
        return sql

    def close(self) -> None:
        """Release the connections (the data stays)."""
        self._stop.set()
        if self._checkpointer is not None and self._checkpointer.is_alive():
            self._checkpointer.join()
        self.engine.dispose()

    def __enter__(self) -> DecisionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def drop(self) -> None:
        """Drop this log's tables and everything in them (tests' cleanup)."""
        with self._writer.begin() as conn:
            self._md.drop_all(conn)
        self._layout = None

    def __repr__(self) -> str:
        return f"DecisionLog({self.engine.url.render_as_string(hide_password=True)!r}, namespace={self.namespace!r})"

    # ------------------------------------------------------------------ layout
    def layout(self) -> LogLayout | None:
        """The log's layout, or ``None`` before the first decision."""
        if self._layout is None:
            with self.engine.connect() as conn:
                self._layout = self._read_layout(conn)
        return self._layout

    def set_layout(self, layout: LogLayout) -> LogLayout:
        """Fix the log's layout if none is stored yet; ValueError naming the field if it disagrees."""
        with self._writer.begin() as conn:
            return self._set_layout(conn, layout)

    def _read_layout(self, conn: sa.Connection) -> LogLayout | None:
        rows = dict(conn.execute(sa.select(self.meta.c.key, self.meta.c.value)).all())
        if "context_dim" not in rows:
            return None
        names = json.loads(rows.get("feature_names", "null"))
        return LogLayout(
            int(rows["context_dim"]),
            int(rows["n_actions"]),
            None if names is None else tuple(names),
            json.loads(rows.get("action_space", "null")),
        )

    def _set_layout(self, conn: sa.Connection, layout: LogLayout) -> LogLayout:
        """Store ``layout`` unless one is stored; check the two agree (inside the caller's transaction)."""
        if layout.feature_names is not None and len(layout.feature_names) != layout.context_dim:
            raise ValueError(f"context: {len(layout.feature_names)} feature names for {layout.context_dim} features")
        # a stored layout never changes: once read, it need not be read again in every write
        stored = self._layout if self._layout is not None else self._read_layout(conn)
        if stored is None:
            values = {
                "schema_version": SCHEMA_VERSION,
                "context_dim": str(layout.context_dim),
                "n_actions": str(layout.n_actions),
            }
            if layout.feature_names is not None:
                values["feature_names"] = json.dumps(list(layout.feature_names))
            if layout.action_space is not None:
                values["action_space"] = json.dumps(layout.action_space)
            ins = (sqlite.insert if self.dialect == "sqlite" else postgresql.insert)(self.meta)
            conn.execute(
                ins.on_conflict_do_nothing(index_elements=["key"]), [{"key": k, "value": v} for k, v in values.items()]
            )
            stored = self._read_layout(conn)
        assert stored is not None
        return self._agree(stored, layout)

    def ensure_layout(self, layout: LogLayout) -> LogLayout:
        """:meth:`set_layout` without a write transaction once the log's layout is known (a check on
        every batch of a hot path); ValueError naming the field if they disagree."""
        if self._layout is None or layout.feature_names is not None:
            return self.set_layout(layout)
        return self._agree(self._layout, layout)

    def _agree(self, stored: LogLayout, layout: LogLayout) -> LogLayout:
        """Check ``layout`` against the ``stored`` one (ValueError naming the field) and remember it."""
        if stored.context_dim != layout.context_dim:
            raise ValueError(
                f"context: this log holds {stored.context_dim} features per decision, got {layout.context_dim}"
            )
        if stored.n_actions != layout.n_actions:
            raise ValueError(f"eligible: this log holds {stored.n_actions} actions, got {layout.n_actions}")
        for name in ("feature_names", "action_space"):
            mine, theirs = getattr(layout, name), getattr(stored, name)
            if mine is not None and theirs is not None and mine != theirs:
                raise ValueError(f"{name}: differs from the one this log was created with")
        self._layout = stored
        return stored

    # ------------------------------------------------------------------ deployment
    def deployment(self) -> dict[str, Any] | None:
        """The canonical document of the deployment this log's decisions were made on
        (:meth:`nba.deployment.Deployment.to_dict`, in its declared order, as :meth:`set_deployment` stored
        it; ``Deployment.from_dict`` reads it back), or ``None`` for a log that holds none."""
        m = self.meta.c
        with self.engine.connect() as conn:
            text = conn.execute(sa.select(m.value).where(m.key == DEPLOYMENT_KEY)).scalar_one_or_none()
        return None if text is None else json.loads(text)

    def set_deployment(self, document: dict[str, Any]) -> dict[str, Any]:
        """Record ``document``, a deployment's canonical content, as the world this log's decisions are
        made on, unless the log holds it already; returns it. The document is kept as compact JSON in
        its key order (which numbers the features and the actions). A log that holds another deployment
        refuses it: ValueError naming ``deployment`` (a log is one world: import another deployment's
        decisions into another log)."""
        text = json.dumps(document, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
        m = self.meta.c
        with self._writer.begin() as conn:
            ins = (sqlite.insert if self.dialect == "sqlite" else postgresql.insert)(self.meta)
            conn.execute(ins.on_conflict_do_nothing(index_elements=["key"]), [{"key": DEPLOYMENT_KEY, "value": text}])
            stored = conn.execute(sa.select(m.value).where(m.key == DEPLOYMENT_KEY)).scalar_one()
            if stored != text:
                raise ValueError(
                    f"deployment: this log holds the decisions of the deployment {_world(stored)}, not "
                    f"of {_world(text)}; a log holds one deployment's decisions: import onto another log"
                )
        return json.loads(text)

    # ------------------------------------------------------------------ provenance
    def provenance(self) -> dict[str, Any] | None:
        """How this log's decisions came to be, as :meth:`set_provenance` recorded it, or ``None`` for a
        log that holds none (a service's log, an imported one, one written before logs kept it)."""
        m = self.meta.c
        with self.engine.connect() as conn:
            text = conn.execute(sa.select(m.value).where(m.key == PROVENANCE_KEY)).scalar_one_or_none()
        return None if text is None else json.loads(text)

    def set_provenance(self, document: dict[str, Any]) -> dict[str, Any]:
        """Record ``document`` as how this log's decisions came to be, unless the log holds it already;
        returns it. A simulated log says how it was simulated (``simulation``: what replays it exactly) and
        the rule under which its rewards are the simulator's (``reward_rule``: :meth:`RewardRule.to_dict
        <nba.log.rewards.RewardRule.to_dict>`), so whoever reads the log finds both in the log itself.

        ``document`` is a JSON object, kept with its keys sorted; a ``reward_rule`` in it must be a valid
        rule. All or nothing: ValueError naming ``provenance`` (and nothing written) for a document that is
        not such an object, or when the log holds another provenance (a log holds the decisions of one
        simulation: write another simulation to another log)."""
        if not isinstance(document, dict):
            raise ValueError(f"provenance: expected a JSON object, got {type(document).__name__}")
        if "reward_rule" in document:
            RewardRule.from_dict(document["reward_rule"], "provenance.reward_rule")
        try:
            text = json.dumps(document, separators=(",", ":"), sort_keys=True, ensure_ascii=True, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"provenance: not plain JSON: {e}") from None
        m = self.meta.c
        with self._writer.begin() as conn:
            ins = (sqlite.insert if self.dialect == "sqlite" else postgresql.insert)(self.meta)
            conn.execute(ins.on_conflict_do_nothing(index_elements=["key"]), [{"key": PROVENANCE_KEY, "value": text}])
            stored = conn.execute(sa.select(m.value).where(m.key == PROVENANCE_KEY)).scalar_one()
            if stored != text:
                raise ValueError(
                    f"provenance: this log holds decisions that came to be otherwise "
                    f"({_differences(json.loads(stored), json.loads(text))}); a log holds one "
                    "simulation's decisions: write this one to another log"
                )
        return json.loads(text)

    def renumber_actions(
        self,
        layout: LogLayout,
        action_map: np.ndarray,
        deployment: dict[str, Any] | None = None,
        *,
        chunk_rows: int = 20_000,
    ) -> int:
        """Move every decision onto a new numbering of the actions, in one transaction: ``action_map``
        (old A,) gives each old action's index under ``layout`` (-1: the action no longer exists). Each
        decision's action becomes ``action_map[action]`` and its eligibility flags move with their actions
        (an action new to the layout was not eligible then); the layout, and the deployment document when
        given, replace the stored ones. Returns the decisions moved.

        ValueError naming the field, and nothing changed: ``context`` when ``layout`` reads other features,
        ``action_map`` when its length is not the log's number of actions, maps two actions to one or
        maps no contact elsewhere, ``action`` when a logged decision took an action mapped to -1 (row
        and decision id named: drop nothing the contact policy counts).
        """
        stored = self.layout()
        if stored is None:
            raise ValueError("layout: this log holds no decisions yet: nothing to renumber")
        names = (layout.feature_names, stored.feature_names)
        if layout.context_dim != stored.context_dim or (None not in names and names[0] != names[1]):
            raise ValueError("context: the new layout reads other features than this log's decisions hold")
        amap = np.asarray(action_map, np.int64)
        kept = amap[amap >= 0]
        if amap.shape != (stored.n_actions,) or (kept >= layout.n_actions).any() or np.unique(kept).size != kept.size:
            raise ValueError(
                f"action_map: expected {stored.n_actions} distinct indices in [-1, {layout.n_actions}) "
                f"(one per action of this log), got {amap.shape[0]} values"
            )
        if amap[0] != 0:
            raise ValueError("action_map: no contact (action 0) must stay action 0")
        d = self.decisions.c
        old_bytes = (stored.n_actions + 7) // 8
        src = np.flatnonzero(amap >= 0)
        moved = 0
        with self._writer.begin() as conn:
            last = -1
            while True:
                rows = conn.execute(
                    sa.select(d.seq, d.decision_id, d.action, d.eligible)
                    .where(d.seq > last)
                    .order_by(d.seq)
                    .limit(chunk_rows)
                ).all()
                if not rows:
                    break
                seq, ids, taken, elig = zip(*rows, strict=True)
                last = seq[-1]
                action = np.array(taken, np.int64)
                gone = amap[action] < 0
                if gone.any():
                    i = int(np.flatnonzero(gone)[0])
                    raise ValueError(
                        f"action: row {moved + i}: decision {shown(ids[i])} took action {int(action[i])}, "
                        f"which the new layout drops ({int(gone.sum())} such decisions in this chunk)"
                    )
                old = np.unpackbits(
                    np.frombuffer(b"".join(elig), np.uint8).reshape(len(rows), old_bytes),
                    axis=1,
                    count=stored.n_actions,
                    bitorder="little",
                )
                new = np.zeros((len(rows), layout.n_actions), np.uint8)
                new[:, amap[src]] = old[:, src]
                packed = np.ascontiguousarray(np.packbits(new, axis=1, bitorder="little"))
                blobs = packed.view(np.dtype((np.void, packed.shape[1]))).ravel().tolist()
                conn.execute(
                    self.decisions.update()
                    .where(d.seq == sa.bindparam("s"))
                    .values(action=sa.bindparam("a"), eligible=sa.bindparam("e")),
                    [
                        {"s": q, "a": int(a), "e": bytes(b)}
                        for q, a, b in zip(seq, amap[action].tolist(), blobs, strict=True)
                    ],
                )
                moved += len(rows)
            values = {"context_dim": str(layout.context_dim), "n_actions": str(layout.n_actions)}
            if layout.feature_names is not None:
                values["feature_names"] = json.dumps(list(layout.feature_names))
            if layout.action_space is not None:
                values["action_space"] = json.dumps(layout.action_space)
            if deployment is not None:
                values[DEPLOYMENT_KEY] = json.dumps(
                    deployment, separators=(",", ":"), ensure_ascii=True, allow_nan=False
                )
            m = self.meta.c
            conn.execute(self.meta.delete().where(m.key.in_(["action_space", "feature_names"])))
            for k, v in values.items():
                if conn.execute(self.meta.update().where(m.key == k).values(value=v)).rowcount == 0:
                    conn.execute(self.meta.insert().values(key=k, value=v))
        self._layout = None
        self._history_sql_cache.clear()
        return moved

    # ------------------------------------------------------------------ writes
    def log_decisions(self, records: DecisionRecords) -> int:
        """Validate, then write all of ``records`` in one transaction; returns how many were new.

        Decisions whose ``decision_id`` is already stored are skipped (a retry is harmless).
        Nothing is written when any field of any row is invalid (ValueError naming the field).
        """
        return self.log(records, None)[0]

    def log_outcomes(self, records: OutcomeRecords, *, after_decision: bool = False) -> int:
        """Validate, then write all of ``records`` in one transaction; returns how many were new.

        Every ``decision_id`` must be logged already (else ValueError naming ``decision_id``, and
        nothing is written); an ``(decision_id, event)`` already stored is skipped. ``after_decision``:
        refuse an outcome stamped more than :data:`OUTCOME_SKEW_H` before its decision (ValueError naming
        ``time``), as the decision service does; an imported log may hold such events (the reward join
        leaves them out).
        """
        return self.log(None, records, after_decision=after_decision)[1]

    def log(
        self, decisions: DecisionRecords | None, outcomes: OutcomeRecords | None, *, after_decision: bool = False
    ) -> tuple[int, int]:
        """Decisions and outcomes (which may follow those decisions) in one transaction, all or nothing.

        Returns how many decisions and outcomes were new; ``after_decision`` as in :meth:`log_outcomes`.
        """
        v = None if decisions is None else validate_decisions(decisions)
        c = None if outcomes is None else validate_outcomes(outcomes)
        if (v is None or not len(v.cols["decision_id"])) and (c is None or not len(c["decision_id"])):
            return 0, 0
        with self._writer.begin() as conn:
            return self._write(conn, v, c, after_decision)

    def _write(
        self,
        conn: sa.Connection,
        v: ValidDecisions | None,
        c: dict[str, np.ndarray] | None,
        after_decision: bool = False,
    ) -> tuple[int, int]:
        """Validated decisions and outcomes written on ``conn``, inside its transaction."""
        new_d = new_o = 0
        if v is not None and len(v.cols["decision_id"]):
            self._set_layout(conn, LogLayout(v.context.shape[1], v.eligible.shape[1]))
            new_d = int(conn.exec_driver_sql(self._decision_sql, self._decision_rows(v)).rowcount)
        if c is not None and len(c["decision_id"]):
            batch = {} if v is None else dict(zip(v.cols["decision_id"].tolist(), v.cols["time"].tolist(), strict=True))
            self._check_known(conn, c["decision_id"], c["time"] if after_decision else None, batch)
            out_rows = list(
                zip(
                    c["decision_id"].tolist(), c["event"].tolist(), c["time"].tolist(), c["value"].tolist(), strict=True
                )
            )
            new_o = int(conn.exec_driver_sql(self._outcome_sql, out_rows).rowcount)
        return new_d, new_o

    @contextlib.contextmanager
    def deciding(self, customer_ids: Sequence[str]) -> Iterator[Deciding]:
        """One write transaction in which to read ``customer_ids``' contact history, decide, and log the
        decisions, serialised against every other process deciding for any of these customers: two
        service workers (or replicas) cannot both let the same customer past a frequency cap.

        SQLite: the transaction holds the database's write lock (``BEGIN IMMEDIATE``) from the history
        read to the commit. PostgreSQL: it takes transaction-scoped advisory locks on the customers'
        buckets (a hash of the customer id into one of ``LOCK_BUCKETS``), in a fixed order (no deadlock
        between batches), so deciders for customers of other buckets run in parallel. Buckets rather
        than one lock per customer: PostgreSQL's lock table holds about 64 locks per connection, and
        a few concurrent batches of 10,000 customers would exhaust it. Nothing is written if the
        block raises.
        """
        ids = string_column("customer_ids", np.asarray(list(customer_ids), dtype=object), len(customer_ids), True)
        with self._writer.begin() as conn:
            if self.dialect == "postgresql" and len(ids):
                buckets = sorted({lock_bucket(c) for c in ids.tolist()})
                conn.exec_driver_sql(
                    "SELECT pg_advisory_xact_lock(%s, b) FROM unnest(%s::integer[]) AS b ORDER BY b",
                    (self._lock_space, buckets),
                )
            yield Deciding(self, conn)

    @staticmethod
    def _decision_rows(v: ValidDecisions) -> list[tuple]:
        n, d = v.context.shape
        ctx = v.context.view(np.dtype((np.void, 4 * d))).ravel().tolist() if d else [b""] * n
        packed = np.ascontiguousarray(np.packbits(v.eligible, axis=1, bitorder="little"))
        elig = packed.view(np.dtype((np.void, packed.shape[1]))).ravel().tolist()
        c = v.cols
        return list(
            zip(
                c["decision_id"].tolist(),
                c["time"].tolist(),
                c["customer_id"].tolist(),
                ctx,
                elig,
                c["action"].tolist(),
                c["send_at"].tolist(),
                c["propensity"].tolist(),
                c["policy"].tolist(),
                c["policy_version"].tolist(),
                c["experiment"].tolist(),
                c["arm"].tolist(),
                c["cost"].tolist(),
                strict=True,
            )
        )

    def _check_known(
        self, conn: sa.Connection, decision_ids: np.ndarray, times: np.ndarray | None, batch: dict[str, float]
    ) -> None:
        """ValueError naming ``decision_id`` unless every id is in ``batch`` (id -> decision time) or stored;
        with ``times``, naming ``time`` for an outcome more than :data:`OUTCOME_SKEW_H` before its decision."""
        ids = [x for x in dict.fromkeys(decision_ids.tolist()) if x not in batch]
        found = dict(batch)
        d = self.decisions.c
        for i in range(0, len(ids), _IN_CHUNK):
            chunk = ids[i : i + _IN_CHUNK]
            found.update(conn.execute(sa.select(d.decision_id, d.time).where(d.decision_id.in_(chunk))).all())
        missing = [x for x in ids if x not in found]
        if missing:
            row = int(np.flatnonzero(decision_ids == missing[0])[0])
            raise ValueError(
                f"decision_id: row {row}: unknown decision {shown(missing[0])} "
                f"({len(missing)} unknown in the batch); log the decision first"
            )
        if times is None:
            return
        decided = np.fromiter(map(found.__getitem__, decision_ids.tolist()), np.float64, len(decision_ids))
        fail_row(
            "time",
            times < decided - OUTCOME_SKEW_H,
            lambda i: (
                f"{shown(times[i])} is before its decision {shown(decision_ids[i])} at {shown(decided[i])} "
                "(hours since the epoch)"
            ),
        )

    # ------------------------------------------------------------------ reads
    def count_decisions(self) -> int:
        """The number of decisions in the log."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(self.decisions)).scalar_one())

    def count_outcomes(self) -> int:
        """The number of outcome events in the log."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(self.outcomes)).scalar_one())

    def action_counts(self, since_h: float, until_h: float | None = None) -> np.ndarray:
        """(A,) int64: the sends of each action whose ``send_at`` lies in ``[since_h, until_h)`` (hours since
        the epoch; ``until_h`` None: no end), scheduled or made, whoever decided them: what an offer's
        budget or a channel's daily capacity has used in that window. No contact (action 0) sends nothing
        and counts 0; A is the log's number of actions (0 before its first decision). One ``GROUP BY``
        (on the index of ``send_at`` and ``action``)."""
        since = finite_hours("since_h", since_h)
        until = None if until_h is None else finite_hours("until_h", until_h)
        layout = self.layout()
        counts = np.zeros(0 if layout is None else layout.n_actions, np.int64)
        d = self.decisions.c
        window = [d.action > 0, d.send_at >= since] + ([] if until is None else [d.send_at < until])
        q = sa.select(d.action, sa.func.count()).where(*window).group_by(d.action)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        for action, n in rows:
            counts[action] = n
        return counts

    def customer_ids(self) -> set[str]:
        """Every customer with at least one decision in the log."""
        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(self.decisions.c.customer_id).distinct()).scalars())

    def decisions_of(self, decision_ids: Sequence[str]) -> dict[str, tuple[str, int, float]]:
        """``decision_id -> (customer_id, action, send_at)`` of those of ``decision_ids`` the log holds."""
        d = self.decisions.c
        ids = list(dict.fromkeys(decision_ids))
        out: dict[str, tuple[str, int, float]] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(ids), _IN_CHUNK):
                rows = conn.execute(
                    sa.select(d.decision_id, d.customer_id, d.action, d.send_at).where(
                        d.decision_id.in_(ids[i : i + _IN_CHUNK])
                    )
                )
                out.update((r[0], (r[1], int(r[2]), float(r[3]))) for r in rows)
        return out

    def funnel_events(self, batch: LoggedBatch, window_h: float = 72.0) -> FunnelEvents:
        """The funnel's events (opened, clicked, converted, and the conversions' value) that followed
        ``batch``'s contacts within ``window_h`` hours of their send time, for learners that fit each
        stage of the funnel.

        A click counts as an open too (opens go unseen where a mail client blocks tracking). A
        conversion counts only after a click on the message: one without a click (organic, or
        credited to the decision by the attribution window alone) is no step of the funnel, and a
        funnel learner finds it in the rest of the reward instead."""
        if not (window_h >= 0):
            raise ValueError(f"window_h: must be >= 0, got {window_h!r}")
        ids = batch.decision_id.tolist()
        n = len(ids)
        o = self.outcomes.c
        hits: list[Any] = []
        with self.engine.connect() as conn:
            for i in range(0, n, _IN_CHUNK):
                hits += conn.execute(
                    sa.select(o.decision_id, o.event, o.time, o.value).where(
                        o.decision_id.in_(ids[i : i + _IN_CHUNK]), o.event.in_(FUNNEL)
                    )
                ).all()
        flags = {e: np.zeros(n, bool) for e in FUNNEL}
        value = np.zeros(n)
        if hits:
            index = {x: i for i, x in enumerate(ids)}
            h = list(zip(*hits, strict=True))
            row = np.fromiter((index[x] for x in h[0]), np.int64, len(hits))
            event, t, v = np.array(h[1], object), np.array(h[2], np.float64), np.array(h[3], np.float64)
            start = batch.send_at[row]
            inside = (t >= start) & (t <= start + window_h) & (batch.action[row] > 0)
            for e in FUNNEL:
                flags[e][row[inside & (event == e)]] = True
            conv = inside & (event == "converted")
            np.add.at(value, row[conv], v[conv])
        clicked = flags["clicked"]
        converted = flags["converted"] & clicked
        return FunnelEvents(
            opened=flags["opened"] | clicked,
            clicked=clicked,
            converted=converted,
            value=np.where(converted, value, 0.0),
        )

    def _filters(
        self, policy: str | None, experiment: str | None, since: float | None, until: float | None
    ) -> list[sa.ColumnElement[bool]]:
        d = self.decisions.c
        out: list[sa.ColumnElement[bool]] = []
        if policy is not None:
            out.append(d.policy == policy)
        if experiment is not None:
            out.append(d.experiment == experiment)
        if since is not None:
            out.append(d.time >= float(since))
        if until is not None:
            out.append(d.time < float(until))
        return out

    def iter_batches(
        self,
        rule: RewardRule = DEFAULT_RULE,
        chunk_rows: int = 100_000,
        *,
        policy: str | None = None,
        experiment: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> Iterator[LoggedBatch]:
        """Decisions in insertion order, ``chunk_rows`` at a time, with rewards per ``rule``.

        Filters: ``policy`` and ``experiment`` equal, decision ``time`` in ``[since, until)``. Each
        chunk is read in its own short transaction (keyset pagination on ``seq``), so a reader
        never holds the whole log nor blocks writers.
        """
        check_rule(rule)
        if not (isinstance(chunk_rows, int) and chunk_rows >= 1):
            raise ValueError(f"chunk_rows: must be an integer >= 1, got {chunk_rows!r}")
        layout = self.layout()
        if layout is None:
            return
        d, o = self.decisions.c, self.outcomes.c
        filters = self._filters(policy, experiment, since, until)
        cols = [
            d.seq,
            d.decision_id,
            d.time,
            d.customer_id,
            d.context,
            d.eligible,
            d.action,
            d.send_at,
            d.propensity,
            d.policy,
            d.policy_version,
            d.experiment,
            d.arm,
            d.cost,
        ]
        events = sorted(set(rule.events) | ({"opted_out"} if rule.opt_out_value else set()))
        last = -1
        while True:
            with self.engine.connect() as conn:
                q = sa.select(*cols).where(d.seq > last, *filters).order_by(d.seq).limit(chunk_rows)
                rows = conn.execute(q).all()
                if not rows:
                    return
                seq = np.fromiter((r[0] for r in rows), np.int64, len(rows))
                hits: Sequence[Any] = []
                if events:
                    j = (
                        sa.select(d.seq, o.event, o.time, o.value)
                        .select_from(self.outcomes.join(self.decisions, d.decision_id == o.decision_id))
                        .where(d.seq > last, d.seq <= int(seq[-1]), o.event.in_(events), *filters)
                    )
                    hits = conn.execute(j).all()
            yield self._decode(rows, seq, hits, layout, rule)
            last = int(seq[-1])
            if len(rows) < chunk_rows:
                return

    @staticmethod
    def _decode(
        rows: Sequence[Any], seq: np.ndarray, hits: Sequence[Any], layout: LogLayout, rule: RewardRule
    ) -> LoggedBatch:
        n, dim, n_act = len(rows), layout.context_dim, layout.n_actions
        c = list(zip(*rows, strict=True))
        obj = lambda k: np.array(c[k], dtype=object)  # noqa: E731
        f64 = lambda k: np.array(c[k], dtype=np.float64)  # noqa: E731
        context = np.frombuffer(b"".join(c[4]), "<f4").reshape(n, dim).astype(np.float32)
        nbytes = (n_act + 7) // 8
        eligible = np.unpackbits(
            np.frombuffer(b"".join(c[5]), np.uint8).reshape(n, nbytes), axis=1, count=n_act, bitorder="little"
        ).astype(bool)
        send_at, cost = f64(7), f64(13)
        if hits:
            h = list(zip(*hits, strict=True))
            row = np.searchsorted(seq, np.array(h[0], np.int64))
            reward = join_rewards(
                rule,
                send_at,
                cost,
                row,
                np.array(h[1], dtype=object),
                np.array(h[2], np.float64),
                np.array(h[3], np.float64),
            )
        else:
            reward = join_rewards(
                rule, send_at, cost, np.zeros(0, np.int64), np.zeros(0, object), np.zeros(0), np.zeros(0)
            )
        return LoggedBatch(
            decision_id=obj(1),
            time=f64(2),
            customer_id=obj(3),
            context=context,
            eligible=eligible,
            action=np.array(c[6], np.int64),
            send_at=send_at,
            propensity=f64(8),
            policy=obj(9),
            policy_version=obj(10),
            experiment=obj(11),
            arm=obj(12),
            cost=cost,
            reward=reward,
        )

    def read(
        self,
        rule: RewardRule = DEFAULT_RULE,
        *,
        policy: str | None = None,
        experiment: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> LoggedBatch:
        """Every (matching) decision at once: for small logs; use :meth:`iter_batches` for large ones."""
        batches = list(self.iter_batches(rule, policy=policy, experiment=experiment, since=since, until=until))
        if not batches:
            lay = self.layout()
            return LoggedBatch.empty(lay.context_dim, lay.n_actions) if lay else LoggedBatch.empty()
        return batches[0] if len(batches) == 1 else LoggedBatch.concat(batches)

    def _history_sql(self, k: int) -> tuple[str, str]:
        """Driver SQL of :meth:`contact_history` for ``k`` customer ids, built once per ``k``: the decision
        service reads history on every request, and building SQLAlchemy expressions each time costs
        about as much as the query."""
        sql = self._history_sql_cache.get(k)
        if sql is None:
            ph = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
            ids = ", ".join([ph] * k)
            engagements = ", ".join(f"'{e}'" for e in ENGAGEMENTS)
            dec, out = self.decisions.name, self.outcomes.name
            sql = (
                f"SELECT customer_id, time, send_at, action FROM {dec} "
                f"WHERE customer_id IN ({ids}) AND action > 0 AND send_at >= {ph}",
                f"SELECT d.customer_id, o.event, o.time, o.value, d.action, d.send_at, o.decision_id FROM {out} o "
                f"JOIN {dec} d ON d.decision_id = o.decision_id "
                f"WHERE d.customer_id IN ({ids}) AND o.event IN ({engagements}) AND o.time >= {ph}",
            )
            self._history_sql_cache[k] = sql
        return sql

    def contact_history(self, customer_ids: Sequence[str], since: float) -> ContactHistory:
        """Contacts sent (or scheduled) from ``since`` on and engagement events from ``since`` on of
        ``customer_ids``, as the decision service needs them (see :class:`ContactHistory`)."""
        with self.engine.connect() as conn:
            return self._contact_history(conn, customer_ids, since)

    def _contact_history(self, conn: sa.Connection, customer_ids: Sequence[str], since: float) -> ContactHistory:
        ids = string_column("customer_ids", np.asarray(list(customer_ids), dtype=object), len(customer_ids), True)
        since = float(since)
        if math.isnan(since):
            raise ValueError("since: must be a number of hours, got nan")
        index = {c: i for i, c in enumerate(ids.tolist())}
        uniq = list(index)
        contacts: list[Any] = []
        events: list[Any] = []
        for i in range(0, len(uniq), _IN_CHUNK):
            part = uniq[i : i + _IN_CHUNK]
            contact_sql, event_sql = self._history_sql(len(part))
            params = (*part, since)
            contacts += conn.exec_driver_sql(contact_sql, params).fetchall()
            events += conn.exec_driver_sql(event_sql, params).fetchall()
        cust = lambda rows: [index[r[0]] for r in rows]  # noqa: E731
        return ContactHistory.from_rows(
            ids, cust(contacts), [r[1:] for r in contacts], cust(events), [r[1:] for r in events], since
        )

    # ------------------------------------------------------------------ Parquet
    def export_parquet(
        self, path: str | Path, rule: RewardRule = DEFAULT_RULE, chunk_rows: int = 100_000, **filters: Any
    ) -> int:
        """Stream the log (with rewards per ``rule``) into one Parquet file; returns the rows written.

        See :func:`nba.log.parquet_schema` for the columns. ``filters`` as in :meth:`iter_batches`.
        """
        layout = self.layout() or LogLayout(0, 0)
        return write_parquet(path, self.iter_batches(rule, chunk_rows, **filters), layout, rule)


class Deciding:
    """The transaction of :meth:`DecisionLog.deciding`: history reads and decision writes on it."""

    def __init__(self, log: DecisionLog, conn: sa.Connection) -> None:
        self._log, self._conn = log, conn

    def contact_history(self, customer_ids: Sequence[str], since: float) -> ContactHistory:
        """As :meth:`DecisionLog.contact_history`, read inside the transaction."""
        return self._log._contact_history(self._conn, customer_ids, since)

    def log_decisions(self, records: DecisionRecords) -> int:
        """As :meth:`DecisionLog.log_decisions`, committed with the transaction; returns how many were new."""
        return self._log._write(self._conn, validate_decisions(records), None)[0]


def lock_bucket(customer_id: str) -> int:
    """The advisory-lock bucket of a customer in :meth:`DecisionLog.deciding` (0 .. LOCK_BUCKETS - 1)."""
    digest = hashlib.blake2b(customer_id.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") % LOCK_BUCKETS


def _lock_space(table: str) -> int:
    """The first key (a signed 32-bit integer) of one log's advisory locks."""
    return int.from_bytes(hashlib.blake2b(table.encode(), digest_size=4).digest(), "big", signed=True)


# ----------------------------------------------------------------------------- engine
# ----------------------------------------------------------------------------- engine
def _make_engine(url: str, busy_timeout_s: float, autocheckpoint: bool = True, **kwargs: Any) -> sa.Engine:
    """An engine with SQLite set up for durable concurrent use (WAL, synchronous=FULL, busy timeout,
    ``BEGIN IMMEDIATE`` for writes; no checkpoints at commit unless ``autocheckpoint``); PostgreSQL as is."""
    u = sa.make_url(url)
    if u.get_backend_name() != "sqlite":
        kwargs.setdefault("paramstyle", "format")  # positional: executemany of plain tuples
        return sa.create_engine(u, **kwargs)
    engine = sa.create_engine(u, **kwargs)
    ms = int(busy_timeout_s * 1000)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {ms}")
        if u.database not in (None, "", ":memory:"):
            cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = FULL")
        if not autocheckpoint:
            cur.execute("PRAGMA wal_autocheckpoint = 0")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("nba_write") else "BEGIN")

    return engine
