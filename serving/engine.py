"""The decision engine behind every HTTP front end: validate, read history, decide, log, answer.

One engine per worker process. Requests are validated on the caller's thread
(:meth:`Engine.prepare`, which raises :class:`BadRequest` naming the field); valid ones queue for a
single **decider thread** that takes every request waiting at that moment and runs them as one
batch — one history read, one feature/eligibility/policy pass, one transaction in the decision log
— before it resolves their futures. So:

* an acknowledged decision is committed (SQLite ``synchronous=FULL`` or PostgreSQL) before its
  response is sent: the futures resolve only after the commit (write-through, the default); or, in
  write-behind mode (``NBA_SPOOL_DIR``), after the batch is fsynced to a local spool
  (:class:`nba.log.spool.Spool`) that a replayer process writes to the log, the history then coming
  from memory (:class:`serving.history.HistoryCache`);
* a decision counts toward the contact caps as soon as it is made: the next batch reads it back,
  and no batch holds the same customer twice (a request whose customers are already in the batch
  waits for the next one);
* concurrent requests share the fixed costs of a batch (group commit), so throughput grows with
  concurrency instead of queueing behind one fsync each;
* a batch that finds fewer requests waiting than the previous batch held waits up to
  ``NBA_GATHER_MS`` (2 ms) for the rest: concurrent clients' requests reach the decider one by one as
  the event loop reads them, and without the wait the decider took the first of a burst alone, then
  the rest (a third of the batches at concurrency 8), and the rest waited for both. Traffic that comes
  one request at a time (the previous batch held one) never waits;
* a request cancelled while it waits (its deadline passed, :mod:`serving.traffic`) is dropped, never
  decided or logged; one the decider has taken can no longer be cancelled.

In write-behind mode the decider writes a batch to the spool and, when more requests wait, hands
its fsync to a **syncer thread** and decides the next batch meanwhile: ``fdatasync`` holds no
interpreter lock, and one fsync covers every batch written before it. The syncer answers the
batches once they are durable; with nothing waiting, the decider fsyncs and answers itself (no
hand-off at concurrency 1). A failed fsync is final: that batch and every later one fail, and the
service reports not ready. (In write-through mode, a separate writer thread committing batch k while
the decider computes batch k+1 was measured and dropped: a SQLite commit holds the interpreter lock
for much of its time, and the hand-off cost more than the overlap saved, about 3 -> 7 ms at
concurrency 1 and 790 -> 580 requests/s at 8 with the bare app.)

Features come from :func:`nba.features.build_features` over the caller's profile fields plus the
customer's history rebuilt from the log; the contact policy is :func:`nba.eligibility.eligibility`
with the same history. A batch reads that history, decides and writes its decisions inside one
:meth:`nba.log.store.DecisionLog.deciding` transaction, which serialises it against every other
worker or replica deciding for the same customers (SQLite: the write lock; PostgreSQL: advisory
locks on customer buckets), so several workers over one log never let a customer past a cap together.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import math
import os
import queue
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from nba.actions import NO_CONTACT, ActionSpace
from nba.eligibility import MAX_TZ_H, RecentContacts, eligibility, send_time
from nba.features import LIFECYCLE_STAGES, NEVER, History, Profile, build_features, hour_of_day, lifecycle_stage
from nba.log.records import DecisionRecords, OutcomeRecords
from nba.log.spool import Spool, rejected
from nba.log.store import LogLayout
from nba.policies import act
from nba.serialization import Bundle
from serving.config import Settings
from serving.history import HistoryCache
from serving.models import ModelStore, Served
from serving.schemas import MAX_VALUE

log = logging.getLogger("nba.serving")
CYCLE_ROWS = 2_000  # a batch takes waiting requests until it holds this many customers
_OFFSET = re.compile(r"^(?:UTC|GMT)?\s*([+-])(\d{1,2})(?::?(\d{2}))?$", re.IGNORECASE)
_STAGE = {s: i for i, s in enumerate(LIFECYCLE_STAGES)}


class BadRequest(ValueError):
    """A request the service refuses (4xx); the message starts with the offending field."""

    status = 422


class UnknownDecision(BadRequest):
    """Feedback for a decision id the log does not hold."""

    status = 404


class NotReady(RuntimeError):
    """No policy loaded yet (503)."""


class LogBehind(NotReady):
    """Write-behind feedback for a decision the log does not hold yet (503: retry later)."""


# ----------------------------------------------------------------------------- time
EARLIEST_H = 0.0  # 1970-01-01T00:00Z: times the service accepts, in hours since the epoch
LATEST_H = (datetime(2200, 1, 1, tzinfo=UTC).timestamp()) / 3600.0  # before 2200-01-01T00:00Z


def checked_hours(t: datetime | float | None, default: float, field_name: str) -> float:
    """:func:`hours` of ``t``, refused (BadRequest naming ``field_name``) outside 1970 to 2199."""
    try:
        h = hours(t, default)
    except (OverflowError, ValueError, OSError):
        h = math.nan
    if not (EARLIEST_H <= h < LATEST_H):
        raise BadRequest(f"{field_name}: must be a time from 1970-01-01 to 2199-12-31 (UTC), got {_short(t)}")
    return h


def _short(value: Any, limit: int = 60) -> str:
    """repr of ``value`` cut to ``limit`` characters: an error message never echoes a large input."""
    text = repr(value.isoformat() if isinstance(value, datetime) else value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def hours(t: datetime | float | None, default: float) -> float:
    """Hours since the epoch of ``t`` (a datetime, naive = UTC, or epoch seconds); ``default`` when None."""
    if t is None:
        return default
    if isinstance(t, datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=UTC)
        return t.timestamp() / 3600.0
    return float(t) / 3600.0


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo | float:
    """A ZoneInfo for an IANA name, or a fixed offset in hours for ``+02:00`` / ``UTC-5`` / ``UTC``."""
    if name.upper() in ("UTC", "GMT", "Z"):
        return 0.0
    m = _OFFSET.match(name)
    if m:
        sign, hh, mm = m.group(1), int(m.group(2)), int(m.group(3) or 0)
        if mm >= 60:
            raise ValueError(name)
        off = (hh + mm / 60.0) * (1 if sign == "+" else -1)
        if abs(off) > MAX_TZ_H:
            raise ValueError(name)
        return off
    if "/" not in name and not name.isalpha():
        raise ValueError(name)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(name) from None


def tz_offset(name: str, now_h: float, field_name: str) -> float:
    """Hours east of UTC of time zone ``name`` at ``now_h``; BadRequest naming ``field_name`` if unknown."""
    try:
        z = _zone(name)
    except ValueError:
        raise BadRequest(f"{field_name}: unknown time zone {_short(name)}; give an IANA name such as "
                         f"'Europe/Paris' or a UTC offset such as '+02:00'") from None
    if isinstance(z, float):
        return z
    off = datetime.fromtimestamp(now_h * 3600.0, tz=z).utcoffset()
    return off.total_seconds() / 3600.0 if off is not None else 0.0


def _p(i: int, batch: bool) -> str:
    """Field-path prefix of row ``i``: ``customers[i].`` in a batch, nothing for a single decision."""
    return f"customers[{i}]." if batch else ""


# ----------------------------------------------------------------------------- requests
@dataclass
class Rows:
    """Validated customers of one request, every row bound to the served version that will decide it."""

    ids: list[str]
    alias: list[str]  # served alias deciding each row (champion, or challenger in its arm)
    arm: list[str]  # experiment arm ("" without experiment)
    segment: list[int]
    tz: list[float]
    tenure: list[float]
    stage: list[int]  # -1: derive
    cart: list[bool]
    consent: list[list[bool] | None]  # per channel of the row's bundle; None: all
    allowed: list[list[bool] | None]
    n_purchases: list[float]
    last_purchase: list[float]
    last_visit: list[float]


@dataclass
class Job:
    """A validated request waiting for the decider."""

    rows: Rows
    now: float
    served: dict[str, Served]
    alternatives: int
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


@dataclass(frozen=True)
class Written:
    """A write-behind batch written to the spool, answered once fsynced up to ``position``."""

    jobs: list[Job]
    results: list[Result]
    position: int


@dataclass(frozen=True)
class Result:
    """The decisions of one job, as arrays (the front end turns them into responses)."""

    decision_id: list[str]
    action: np.ndarray
    propensity: np.ndarray
    send_at: np.ndarray
    policy: list[str]
    version: list[str]
    alternatives: list[list[tuple[int, float]]]  # per row: (action, probability), best first
    spaces: list[ActionSpace]  # per row


class Outage:
    """Logs a failure once when it starts and once when it ends, never once per request: a decision log
    that is down fails hundreds of requests a second, and a line (or a traceback) for each floods the log."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.since: float | None = None
        self.failures = 0
        self._lock = threading.Lock()

    def failed(self, e: BaseException) -> None:
        with self._lock:
            self.failures += 1
            if self.since is None:
                self.since = time.monotonic()
                log.error("%s failing: %s: %s (requests fail with 503 until it recovers; further failures "
                          "are counted, not logged)", self.what, type(e).__name__, _short(str(e), 300))

    def recovered(self) -> None:
        if self.since is None:  # the usual case: no lock
            return
        with self._lock:
            if self.since is not None:
                log.warning("%s recovered after %d failed requests over %.1f s", self.what, self.failures,
                            time.monotonic() - self.since)
                self.since, self.failures = None, 0

    @property
    def down(self) -> str | None:
        """What is failing, since when, or None."""
        if self.since is None:
            return None
        return f"{self.what} failing for {time.monotonic() - self.since:.0f} s ({self.failures} failed requests)"


def _bundle_tables(bundle: Bundle) -> dict[str, Any]:
    space = bundle.policy.space
    return {"segments": {s: i for i, s in enumerate(bundle.spec.segments)},
            "channels": {c: i for i, c in enumerate(space.channels)},
            "names": space.names()}


class Engine:
    """Validation, the decider thread and feedback (see the module docstring)."""

    def __init__(self, settings: Settings, models: ModelStore, decision_log: Any, counter: Any = None) -> None:
        self.settings, self.models, self.log = settings, models, decision_log
        self.counter = counter  # Prometheus counter with labels (channel, arm), or None
        self.rng = np.random.default_rng(settings.seed)
        self._tables: dict[int, tuple[Bundle, dict[str, Any]]] = {}
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._deferred: deque[Job] = deque()
        self._gather_s = settings.gather_ms / 1000.0
        self._last_jobs = 1  # requests in the previous batch: how many a burst is expected to bring
        self._splits = {a: w for a, w in settings.splits.items() if w > 0}
        self._id_prefix = os.urandom(4).hex()
        self._count = 0
        self.outage = Outage("decision log")
        self.spool: Spool | None = None
        self.history: HistoryCache | None = None
        if settings.spool_dir is not None:  # replays what a killed process left before deciding anything
            self.spool = Spool(settings.spool_dir, decision_log)
            self.history = HistoryCache(decision_log, settings.cache_customers)
        self._acks: queue.SimpleQueue[Written | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="nba-decider", daemon=True)
        self._thread.start()
        self._syncer: threading.Thread | None = None
        if self.spool is not None:
            self._syncer = threading.Thread(target=self._sync_loop, name="nba-syncer", daemon=True)
            self._syncer.start()

    # ------------------------------------------------------------------ validation
    def tables(self, served: Served) -> dict[str, Any]:
        """Name lookups of a served bundle, cached (the entry holds the bundle, so its id stays unique)."""
        key = id(served.bundle)
        entry = self._tables.get(key)
        if entry is None or entry[0] is not served.bundle:
            if len(self._tables) > 16:
                self._tables.clear()
            entry = self._tables[key] = (served.bundle, _bundle_tables(served.bundle))
        return entry[1]

    def arms(self, ids: list[str]) -> list[str]:
        if not self.settings.experiment:
            return [""] * len(ids)
        from nba.ab import assign

        return assign(self.settings.experiment, ids, self._splits).tolist()

    def prepare(self, customers: list[Any], now: Any, alternatives: int, batch: bool) -> Job:
        """Validate ``customers`` (objects with the :class:`serving.schemas.Customer` fields) into a Job.

        Raises BadRequest naming the field (``customers[3].segment: ...``), NotReady without a policy.
        """
        served = self.models.served
        if "champion" not in served:
            raise NotReady(f"no policy loaded: {self.models.not_ready_reason or 'not loaded yet'}")
        now_h = checked_hours(now, time.time() / 3600.0, "now")
        ids = [c.customer_id for c in customers]
        if batch and len(set(ids)) != len(ids):
            seen: dict[str, int] = {}
            for i, c in enumerate(ids):
                if c in seen:
                    raise BadRequest(f"customers[{i}].customer_id: duplicate of customers[{seen[c]}] ({_short(c)})")
                seen[c] = i
        arm = self.arms(ids)
        alias = [a if a in served else "champion" for a in arm] if self.settings.experiment else ["champion"] * len(ids)
        tables = {a: self.tables(served[a]) for a in set(alias)}
        # column by column (a batch of 10,000 customers is validated in a few milliseconds); the first
        # offending row is named
        segs = [c.segment for c in customers]
        if len(tables) == 1:
            segment = list(map(next(iter(tables.values()))["segments"].get, segs))
        else:
            segment = [tables[a]["segments"].get(x) for a, x in zip(alias, segs, strict=True)]
        if None in segment:
            i = segment.index(None)
            raise BadRequest(f"{_p(i, batch)}segment: unknown segment {_short(segs[i])}; "
                             f"valid: {list(tables[alias[i]]['segments'])}")
        names = [c.timezone for c in customers]
        zones = {z: tz_offset(z, now_h, f"{_p(names.index(z), batch)}timezone") for z in dict.fromkeys(names)}
        consent: list[list[bool] | None] = [None] * len(customers)
        allowed: list[list[bool] | None] = [None] * len(customers)
        for i, c in enumerate(customers):
            if c.consent is not None:
                consent[i] = self._channel_flags(tables[alias[i]], c.consent, f"{_p(i, batch)}consent")
            if c.channels is not None:
                allowed[i] = self._channel_flags(tables[alias[i]], dict.fromkeys(c.channels, True),
                                                 f"{_p(i, batch)}channels")
        latest = now_h + 1e-6
        stamps = {}
        for name in ("last_purchase_at", "last_visit_at"):
            values = [getattr(c, name) for c in customers]
            h = [NEVER if v is None else checked_hours(v, NEVER, f"{_p(i, batch)}{name}") for i, v in enumerate(values)]
            if h and max(h) > latest:
                i = next(i for i, v in enumerate(h) if v > latest)
                raise BadRequest(f"{_p(i, batch)}{name}: is after the decision time")
            stamps[name] = h
        rows = Rows(ids, alias, arm, segment, list(map(zones.__getitem__, names)),
                    [float(c.tenure_days) for c in customers],
                    [-1 if c.stage is None else _STAGE[c.stage] for c in customers],
                    [bool(c.cart_active) for c in customers], consent, allowed,
                    [float(c.n_purchases) for c in customers], stamps["last_purchase_at"], stamps["last_visit_at"])
        return Job(rows, now_h, served, alternatives)

    @staticmethod
    def _channel_flags(t: dict[str, Any], flags: dict[str, bool] | None, name: str) -> list[bool] | None:
        if flags is None:
            return None
        out = [False] * len(t["channels"])
        for ch, ok in flags.items():
            j = t["channels"].get(ch)
            if j is None:
                raise BadRequest(f"{name}: unknown channel {_short(ch)}; valid: {list(t['channels'])}")
            out[j] = bool(ok)
        return out

    # ------------------------------------------------------------------ deciding
    def submit(self, job: Job) -> concurrent.futures.Future:
        """Queue ``job``; its future resolves to a :class:`Result` once committed to the log."""
        self._queue.put(job)
        return job.future

    def decide(self, job: Job, timeout: float | None = 30.0) -> Result:
        """Blocking :meth:`submit` (for threads and tests)."""
        return self.submit(job).result(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the decider after the requests already queued; in write-behind mode, replay the spool."""
        self._queue.put(None)
        self._thread.join(timeout)
        if self._syncer is not None:
            self._acks.put(None)
            self._syncer.join(timeout)
        if self.spool is not None:
            self.spool.close(timeout)

    def _next_cycle(self) -> list[Job]:
        """The jobs of the next batch: deferred ones first, then whatever waits, no customer twice."""
        jobs: list[Job] = []
        ids: set[str] = set()
        rows = 0
        pending: deque[Job] = self._deferred
        self._deferred = deque()
        while not pending:
            first = self._queue.get()
            if first is None:
                return []
            # a request its caller gave up on (cancelled: the deadline passed) is dropped, never decided;
            # once running, a job can no longer be cancelled, so its answer always finds its future
            if first.future.set_running_or_notify_cancel():
                pending.append(first)
        deadline = 0.0
        while True:
            while pending:
                job = pending.popleft()
                if jobs and (rows + len(job.rows.ids) > CYCLE_ROWS or job.served is not jobs[0].served
                             or not ids.isdisjoint(job.rows.ids)):
                    self._deferred.append(job)
                    continue
                jobs.append(job)
                ids.update(job.rows.ids)
                rows += len(job.rows.ids)
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                # fewer requests than the previous batch held: the rest of a burst is probably still being
                # read by the event loop, so wait for it (up to the gather window) rather than split it
                if self._deferred or len(jobs) >= self._last_jobs or self._gather_s <= 0:
                    break
                deadline = deadline or time.perf_counter() + self._gather_s
                try:
                    nxt = self._queue.get(timeout=max(deadline - time.perf_counter(), 0.0))
                except queue.Empty:
                    break
            if nxt is None:
                self._queue.put(None)
                break
            if nxt.future.set_running_or_notify_cancel():
                pending.append(nxt)
        self._last_jobs = len(jobs)
        return jobs

    def _run(self) -> None:
        while True:
            jobs = self._next_cycle()
            if not jobs:
                return
            try:
                results, position = self._decide(jobs)
            except Exception as e:  # nothing of the batch was acknowledged
                if self.spool is None and len(jobs) > 1 and rejected(e):
                    self._decide_alone(jobs)  # a row the log refuses must not fail its neighbours' requests
                else:  # the log is down, the spool failed, or not the data: every request of the batch fails
                    for job in jobs:
                        job.future.set_exception(e)
                continue
            self.outage.recovered()
            if position is None:  # committed to the log
                self._resolve(jobs, results)
            elif self._queue.empty() and not self._deferred:  # nothing to decide meanwhile: sync here
                self._acknowledge([Written(jobs, results, position)])
            else:  # decide the next batch while the syncer fsyncs this one
                self._acks.put(Written(jobs, results, position))

    def _decide_alone(self, jobs: list[Job]) -> None:
        """Write-through: decide and commit each request of a failed batch in its own transaction, so that
        only the request holding what the log refuses fails."""
        for job in jobs:
            try:
                results, _ = self._decide([job])
            except Exception as e:
                job.future.set_exception(e)
            else:
                self._resolve([job], results)

    def _resolve(self, jobs: list[Job], results: list[Result]) -> None:
        if self.counter is not None:  # durable: count them
            self._count_metrics(jobs, results)
        for job, res in zip(jobs, results, strict=True):
            job.future.set_result(res)

    def _sync_loop(self) -> None:
        """The syncer thread (write-behind): one fsync for every batch written meanwhile, then their answers."""
        while True:
            items = [self._acks.get()]
            with contextlib.suppress(queue.Empty):
                while items[-1] is not None:
                    items.append(self._acks.get_nowait())
            written = [w for w in items if w is not None]
            if written:
                self._acknowledge(written)
            if items[-1] is None:
                return

    def _acknowledge(self, written: list[Written]) -> None:
        """Make ``written`` batches durable in the spool, then answer them (or fail them all)."""
        try:
            self.spool.sync(max(w.position for w in written))
        except Exception as e:  # a failed fsync is final: this and every later batch fail, nothing acked
            log.error("spool fsync for %d batches failed: %s: %s", len(written), type(e).__name__, e)
            for w in written:
                for job in w.jobs:
                    job.future.set_exception(e)
            return
        for w in written:
            self._resolve(w.jobs, w.results)

    def _ids(self, n: int) -> list[str]:
        """Unique decision ids: a random per-process prefix, the time and a counter."""
        base = f"{self._id_prefix}{int(time.time() * 1000):x}"
        start = self._count
        self._count += n
        return [f"{base}-{i:x}" for i in range(start, start + n)]

    def _decide(self, jobs: list[Job]) -> tuple[list[Result], int | None]:
        """The batch's results, and (write-behind) the spool position to fsync before answering them."""
        served = jobs[0].served
        ids = [c for job in jobs for c in job.rows.ids]
        now = np.concatenate([np.full(len(job.rows.ids), job.now) for job in jobs])
        since = float(now.min()) - 24.0 * self.settings.history_days
        if self.spool is None:
            with self.log.deciding(ids) as tx:  # no other worker decides for these customers until the commit
                results, records = self._decide_with(jobs, served, ids, now, tx.contact_history(ids, since))
                tx.log_decisions(records)
        else:  # write-behind: history from memory, acknowledged once the batch is fsynced in the spool
            results, records = self._decide_with(jobs, served, ids, now, self.history.history(ids, since))
            layout = LogLayout(records.context.shape[1], records.eligible.shape[1])
            position = self.spool.write(records, layout)  # durable, and acknowledged, once synced
            self.history.add_decisions(records, position, self.spool.replayed)
            return results, position
        return results, None

    def _decide_with(self, jobs: list[Job], served: dict[str, Served], ids: list[str], now: np.ndarray,
                     history: Any) -> tuple[list[Result], DecisionRecords]:
        n = len(ids)
        cat = lambda name: [x for job in jobs for x in getattr(job.rows, name)]  # noqa: E731
        alias = np.asarray(cat("alias"), dtype=object)
        arm = np.asarray(cat("arm"), dtype=object)
        decision_id = self._ids(n)
        action = np.zeros(n, np.int64)
        propensity = np.ones(n)
        send_at = now.copy()
        policy = np.empty(n, object)
        version = np.empty(n, object)
        contexts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        alternatives: list[list[tuple[int, float]]] = [[] for _ in range(n)]
        k_alt = np.repeat([job.alternatives for job in jobs], [len(job.rows.ids) for job in jobs])
        spaces: list[ActionSpace] = [None] * n  # type: ignore[list-item]
        for name in sorted(set(alias.tolist())):
            rows = np.flatnonzero(alias == name)
            s = served[name]
            X, mask, send, dec = self._decide_group(s.bundle, jobs, rows, now[rows], history)
            action[rows] = dec.actions
            propensity[rows] = dec.propensities
            slot = s.bundle.policy.space.slot_of[dec.actions]
            chosen = send[np.arange(len(rows)), np.maximum(slot, 0)]
            send_at[rows] = np.where(dec.actions == NO_CONTACT, now[rows], chosen)
            policy[rows] = s.bundle.policy.name
            version[rows] = s.version
            contexts[name] = (rows, X, mask)
            kmax = int(k_alt[rows].max())
            if kmax > 0:
                probs = dec.probabilities
                kk = min(kmax, probs.shape[1])
                top = np.argpartition(-probs, kk - 1, axis=1)[:, :kk]
                at = np.arange(len(rows))[:, None]  # row index for gathering along axis 1
                ptop = probs[at, top]
                order = np.argsort(-ptop, axis=1, kind="stable")
                top, ptop = top[at, order].tolist(), ptop[at, order].tolist()  # Python numbers from here
                for r, k, ts, ps in zip(rows.tolist(), k_alt[rows].tolist(), top, ptop, strict=True):
                    alternatives[r] = [(a, p) for a, p in zip(ts[:k], ps[:k], strict=True) if p > 0]
            space = s.bundle.policy.space
            for r in rows.tolist():
                spaces[r] = space
        records = self._records(served, ids, now, contexts, decision_id, action, propensity, send_at, policy,
                                version, arm)
        out, start = [], 0
        policies, versions = policy.tolist(), version.tolist()
        for job in jobs:
            sl = slice(start, start + len(job.rows.ids))
            start += len(job.rows.ids)
            out.append(Result(decision_id[sl], action[sl], propensity[sl], send_at[sl], policies[sl], versions[sl],
                              alternatives[sl], spaces[sl]))
        return out, records

    def _decide_group(self, bundle: Bundle, jobs: list[Job], rows: np.ndarray, now: np.ndarray, history: Any):
        """Features, eligibility and the policy's decision for ``rows`` (indices into the batch)."""
        space, spec, rules = bundle.policy.space, bundle.spec, bundle.rules
        c = space.n_channels
        names = ("segment", "tz", "tenure", "stage", "cart", "consent", "allowed", "n_purchases", "last_purchase",
                 "last_visit")
        if len(jobs) == 1:
            flat = {name: getattr(jobs[0].rows, name) for name in names}
        else:
            flat = {name: [x for job in jobs for x in getattr(job.rows, name)] for name in names}
        everyone = len(rows) == len(flat["segment"])  # rows is then arange(n): take the lists whole
        idx = rows.tolist()

        def pick(name: str, dtype: Any) -> np.ndarray:
            values = flat[name]
            return np.asarray(values if everyone else [values[r] for r in idx], dtype)

        tz = pick("tz", np.float64)
        consent = np.ones((len(rows), c), bool)
        allowed = np.ones((len(rows), c), bool)
        for j, r in enumerate(idx):
            if flat["consent"][r] is not None:
                consent[j] = flat["consent"][r]
            if flat["allowed"][r] is not None:
                allowed[j] = flat["allowed"][r]
        hist, recent, purchases = self._history(bundle, rows, now, tz, history)
        last_purchase = np.maximum(pick("last_purchase", np.float64), purchases[1])
        n_purchases = np.maximum(pick("n_purchases", np.float32), purchases[0])
        hist.last_purchase[:] = last_purchase
        hist.n_purchases[:] = n_purchases
        hist.last_visit[:] = pick("last_visit", np.float64)
        tenure = pick("tenure", np.float64)
        stage = pick("stage", np.int8)
        derive = stage < 0
        if derive.any():
            bought = n_purchases > 0
            since_d = np.where(bought & (last_purchase > NEVER / 2), (now - last_purchase) / 24.0, np.inf)
            stage[derive] = lifecycle_stage(tenure, since_d, bundle.lifecycle)[derive]
        profile = Profile(segment=pick("segment", np.int64), tz_offset=tz, consent=consent, stage=stage,
                          cart_active=pick("cart", bool), tenure_days=tenure)
        X = np.ascontiguousarray(build_features(spec, profile, hist, now, bundle.lifecycle))
        mask = eligibility(space, rules, recent, now=now, tz_offset=tz, consent=consent, allowed=allowed)
        send = send_time(space, now, tz)
        dec = act(bundle.policy, X, mask, self.rng)
        return X, mask, send, dec

    def _history(self, bundle: Bundle, rows: np.ndarray, now: np.ndarray, tz: np.ndarray, h: Any):
        """History and RecentContacts of ``rows`` rebuilt from the log's contact history ``h``."""
        space = bundle.policy.space
        n, c = len(rows), space.n_channels
        local = np.full(int(rows.max()) + 1 if n else 0, -1, np.int64)
        local[rows] = np.arange(n)
        hist = History.empty(n, c)
        recent = RecentContacts.for_rules(n, c, bundle.rules)
        # contacts: recent keeps every one (scheduled ones too), history the ones already sent
        cust = h.contact_customer
        keep = (cust < len(local)) & (h.contact_action < space.n_actions)
        keep[keep] &= local[cust[keep]] >= 0
        r, send_at, a = local[cust[keep]], h.contact_send_at[keep], h.contact_action[keep]
        ch = space.channel_of[a].astype(np.intp)
        for sel in _rounds(r):
            recent.record(r[sel], ch[sel], send_at[sel])
            past = sel[send_at[sel] <= now[r[sel]]]
            if past.size:
                hist.record_contacts(r[past], ch[past], send_at[past], hour_of_day(send_at[past] + tz[r[past]]))
        # engagements: the first open or click of each contact; conversions are purchases
        cust = h.event_customer
        keep = (cust < len(local)) & (h.event_action < space.n_actions)
        keep[keep] &= local[cust[keep]] >= 0
        r, ev, t = local[cust[keep]], h.event[keep], h.event_time[keep]
        ea, es = h.event_action[keep], h.event_send_at[keep]
        bought = ev == "converted"
        n_bought = np.bincount(r[bought], minlength=n).astype(np.float32)
        last_bought = np.full(n, NEVER)
        np.maximum.at(last_bought, r[bought], t[bought])
        seen = (ev != "converted") & (ea > 0)
        if seen.any():
            idx = np.flatnonzero(seen)
            key = np.stack([r[idx].astype(np.float64), es[idx], ea[idx].astype(np.float64)], axis=1)
            _, first = np.unique(key, axis=0, return_index=True)  # events are sorted by time: first = earliest
            idx = np.sort(idx[first])
            rr, cc = r[idx], space.channel_of[ea[idx]].astype(np.intp)
            for sel in _rounds(rr):
                hist.record_engagements(rr[sel], cc[sel], t[idx][sel], hour_of_day(es[idx][sel] + tz[rr[sel]]))
        return hist, recent, (n_bought, last_bought)

    def _records(self, served: dict[str, Served], ids: list[str], now: np.ndarray, contexts: dict,
                 decision_id: list[str], action: np.ndarray, propensity: np.ndarray, send_at: np.ndarray,
                 policy: np.ndarray, version: np.ndarray, arm: np.ndarray) -> DecisionRecords:
        """The whole batch as log records (all aliases share the log's layout)."""
        n = len(ids)
        first = next(iter(contexts.values()))
        X = np.empty((n, first[1].shape[1]), np.float32)
        mask = np.empty((n, first[2].shape[1]), bool)
        cost = np.zeros(n)
        for name, (rows, Xg, mg) in contexts.items():
            if Xg.shape[1] != X.shape[1] or mg.shape[1] != mask.shape[1]:
                raise RuntimeError(f"{name}: its feature or action layout differs from the champion's; "
                                   "one decision log cannot hold both")
            X[rows], mask[rows] = Xg, mg
            space = served[name].bundle.policy.space
            ch_cost = np.array([0.0] + [self.settings.channel_costs.get(ch, 0.0) for ch in space.channels])
            cost[rows] = ch_cost[space.channel_of[action[rows]] + 1]
        exp = self.settings.experiment
        return DecisionRecords(
            decision_id=np.asarray(decision_id, dtype=object), time=now, customer_id=np.asarray(ids, dtype=object),
            context=X, eligible=mask, action=action, send_at=send_at, propensity=propensity, policy=policy,
            policy_version=version, experiment=np.full(n, exp, dtype=object), arm=arm, cost=cost)

    def _count_metrics(self, jobs: list[Job], results: list[Result]) -> None:
        counts: dict[tuple[str, str], int] = {}
        for job, res in zip(jobs, results, strict=True):
            for sp, a, am in zip(res.spaces, res.action.tolist(), job.rows.arm, strict=True):
                ch = "none" if a == NO_CONTACT else sp.channels[sp.channel_of[a]]
                counts[(ch, am or "champion")] = counts.get((ch, am or "champion"), 0) + 1
        for (ch, am), k in counts.items():
            self.counter.labels(channel=ch, arm=am).inc(k)

    # ------------------------------------------------------------------ feedback
    def feedback(self, decision_id: str, event: str, when: Any, value: float) -> bool:
        """Record an outcome; True when new, False when already logged. UnknownDecision for unknown ids."""
        t = checked_hours(when, time.time() / 3600.0, "time")
        if not (math.isfinite(value) and 0 <= value <= MAX_VALUE):
            raise BadRequest(f"value: must be a revenue from 0 to {MAX_VALUE:g}, got {_short(value)}")
        rec = OutcomeRecords(decision_id=np.asarray([decision_id], dtype=object),
                             event=np.asarray([event], dtype=object), time=np.asarray([t]),
                             value=np.asarray([float(value)]))
        try:
            new = self._log_outcome(rec)
        except ValueError as e:
            if _unknown(e):
                raise UnknownDecision(f"decision_id: unknown decision {_short(decision_id)}") from None
            raise BadRequest(str(e)) from None
        self.outage.recovered()
        if new and self.history is not None:
            self.history.add_event(decision_id, event, t, float(value))
        return new

    def _log_outcome(self, rec: OutcomeRecords) -> bool:
        try:
            return self.log.log_outcomes(rec, after_decision=True) > 0
        except ValueError as e:
            if self.spool is None or not _unknown(e) or not self.spool.pending_bytes:
                raise
        # write-behind: the decision may still be on its way from the spool; once it is in, try again. While
        # the log refuses the replay, or is slower than the deadline, the answer is a fast 503: retry later
        behind = self.spool.last_error
        if behind is None and not self.spool.flush(timeout=self.settings.feedback_wait_s):
            behind = f"the log is {self.spool.pending_bytes} bytes behind the spool"
        if behind is not None:
            raise LogBehind(f"decision_id: its decision is not in the decision log yet ({behind}); "
                            "nothing was recorded, retry later")
        return self.log.log_outcomes(rec, after_decision=True) > 0


def _unknown(e: ValueError) -> bool:
    return str(e).startswith("decision_id") and "unknown decision" in str(e)


def _rounds(rows: np.ndarray) -> list[np.ndarray]:
    """Split positions of ``rows`` into rounds with each row at most once, keeping each row's order."""
    if rows.size == 0:
        return []
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    start = np.r_[0, np.flatnonzero(sorted_rows[1:] != sorted_rows[:-1]) + 1]
    rank = np.empty(rows.size, np.int64)
    rank[order] = np.arange(rows.size) - np.repeat(start, np.diff(np.r_[start, rows.size]))
    return [np.flatnonzero(rank == k) for k in range(int(rank.max()) + 1)]
