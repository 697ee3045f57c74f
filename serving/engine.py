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
* a request cancelled while it waits (its deadline passed, :mod:`serving.timeout`) is dropped, never
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

Validation is :mod:`serving.requests`; a batch goes through the library's decide path
(:mod:`serving.decisions` hands it to :mod:`nba.decide`: history rebuilt from the log, features,
eligibility mask, send times, choice and propensity). A batch reads that history, decides and writes
its decisions inside one :meth:`nba.log.store.DecisionLog.deciding` transaction, which serialises it
against every other worker or replica deciding for the same customers (SQLite: the write lock;
PostgreSQL: advisory locks on customer buckets), so several workers over one log never let a customer
past a cap together.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import math
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nba.actions import NO_CONTACT
from nba.log.records import LogLayout, OutcomeRecords
from nba.log.spool import Spool, rejected
from serving.config import Settings
from serving.decisions import Result, UsageTracker, decide_batch
from serving.history import HistoryCache
from serving.model_store import ModelStore, Served
from serving.requests import (
    BadRequest,
    Fields,
    LogBehind,
    NotReady,
    Rows,
    UnknownDecision,
    checked_hours,
    names_of,
    short,
    validate,
)
from serving.schemas import MAX_VALUE

log = logging.getLogger("nba.serving")
CYCLE_ROWS = 2_000  # a batch takes waiting requests until it holds this many customers
__all__ = ["BadRequest", "Engine", "Job", "LogBehind", "NotReady", "Outage", "Result", "UnknownDecision"]


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
                log.error(
                    "%s failing: %s: %s (requests fail with 503 until it recovers; further failures "
                    "are counted, not logged)",
                    self.what,
                    type(e).__name__,
                    short(str(e), 300),
                )

    def recovered(self) -> None:
        if self.since is None:  # the usual case: no lock
            return
        with self._lock:
            if self.since is not None:
                log.warning(
                    "%s recovered after %d failed requests over %.1f s",
                    self.what,
                    self.failures,
                    time.monotonic() - self.since,
                )
                self.since, self.failures = None, 0

    @property
    def down(self) -> str | None:
        """What is failing, since when, or None."""
        if self.since is None:
            return None
        return f"{self.what} failing for {time.monotonic() - self.since:.0f} s ({self.failures} failed requests)"


class Engine:
    """Validation, the decider thread and feedback (see the module docstring)."""

    def __init__(self, settings: Settings, models: ModelStore, decision_log: Any, counter: Any = None) -> None:
        self.settings, self.models, self.log = settings, models, decision_log
        self.counter = counter  # Prometheus counter with labels (channel, arm), or None
        self.rng = np.random.default_rng(settings.seed)
        self._tables: dict[int, tuple[Any, dict[str, Any]]] = {}
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._deferred: deque[Job] = deque()
        self._gather_s = settings.gather_ms / 1000.0
        self._last_jobs = 1  # requests in the previous batch: how many a burst is expected to bring
        self._splits = {a: w for a, w in settings.splits.items() if w > 0}
        self._id_prefix = os.urandom(4).hex()
        self._count = 0
        self.outage = Outage("decision log")
        self._world_recorded = settings.deployment is not None  # NBA_DEPLOYMENT: recorded at start (serving.endpoints)
        self.usage = UsageTracker(decision_log)  # a deployment's offer budgets and channel capacities
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
            entry = self._tables[key] = (served.bundle, names_of(served))
        return entry[1]

    def arms(self, ids: list[str]) -> list[str]:
        if not self.settings.experiment:
            return [""] * len(ids)
        from nba.ab import assign

        return assign(self.settings.experiment, ids, self._splits).tolist()

    def prepare(self, customers: list[Any], now: Any, alternatives: int, batch: bool) -> Job:
        """Validate ``customers`` (objects with the :class:`serving.schemas.Customer` fields, or a
        :class:`serving.schemas.CustomerColumns`) into a Job
        (:func:`serving.requests.validate`).

        Raises BadRequest naming the field (``customers[3].segment: ...``), NotReady without a policy.
        """
        served = self.models.served
        if "champion" not in served:
            raise NotReady(f"no policy loaded: {self.models.not_ready_reason or 'not loaded yet'}")
        now_h = checked_hours(now, time.time() / 3600.0, "now")
        fields = Fields(customers)
        ids = fields["customer_id"]
        arm = self.arms(ids)
        alias = [a if a in served else "champion" for a in arm] if self.settings.experiment else ["champion"] * len(ids)
        tables = {a: self.tables(served[a]) for a in set(alias)}
        return Job(validate(fields, now_h, alias, arm, served, tables, batch), now_h, served, alternatives)

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
                if jobs and (
                    rows + len(job.rows.ids) > CYCLE_ROWS
                    or job.served is not jobs[0].served
                    or not ids.isdisjoint(job.rows.ids)
                ):
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
        form = f"{self._id_prefix}{int(time.time() * 1000):x}-%x"  # hexadecimal digits only, then the counter
        start = self._count
        self._count += n
        return list(map(form.__mod__, range(start, start + n)))

    def _decide(self, jobs: list[Job]) -> tuple[list[Result], int | None]:
        """The batch's results, and (write-behind) the spool position to fsync before answering them."""
        served = jobs[0].served
        if not self._world_recorded:
            self._record_world(served)
        ids = [c for job in jobs for c in job.rows.ids]
        now = np.concatenate([np.full(len(job.rows.ids), job.now) for job in jobs])
        since = float(now.min()) - 24.0 * self.settings.history_days
        batch = [(job.rows, job.alternatives) for job in jobs]
        if self.spool is None:
            with self.log.deciding(ids) as tx:  # no other worker decides for these customers until the commit
                results, records = self._decide_batch(batch, served, now, tx.contact_history(ids, since))
                tx.log_decisions(records)
        else:  # write-behind: history from memory, acknowledged once the batch is fsynced in the spool
            results, records = self._decide_batch(batch, served, now, self.history.history(ids, since))
            layout = LogLayout(records.context.shape[1], records.eligible.shape[1])
            position = self.spool.write(records, layout)  # durable, and acknowledged, once synced
            self.history.add_decisions(records, position, self.spool.replayed)
            return results, position
        return results, None

    def _record_world(self, served: dict[str, Served]) -> None:
        """Record the deployment the first served champion decides on in the decision log (once), as
        ``NBA_DEPLOYMENT`` is at start: training on the service's own log then finds its world there. A log
        that holds another deployment keeps it (its layout fits, or the version would have been refused);
        the mismatch is logged once."""
        champion = served.get("champion")
        deployment = None if champion is None else champion.bundle.deployment
        self._world_recorded = True
        if deployment is None:
            return
        try:
            self.log.set_deployment(deployment.to_dict())
        except ValueError as e:
            log.warning("decision log keeps its deployment: %s", short(str(e), 300))
        except Exception as e:  # noqa: BLE001 - the log is unreachable: a later batch tries again
            self._world_recorded = False  # (the log's writes report the outage, not this)
            log.debug("deployment not recorded yet: %s", e)

    def _decide_batch(self, batch: list[tuple[Rows, int]], served: dict[str, Served], now: np.ndarray, history: Any):
        return decide_batch(
            batch,
            served,
            now,
            history,
            self._ids(len(now)),
            self.rng,
            channel_costs=self.settings.channel_costs,
            experiment=self.settings.experiment,
            usage=self.usage,
        )

    def _count_metrics(self, jobs: list[Job], results: list[Result]) -> None:
        counts: dict[tuple[str, str], int] = {}
        for job, res in zip(jobs, results, strict=True):
            for b, a, am in zip(res.bundles, res.action.tolist(), job.rows.arm, strict=True):
                sp = b.policy.space
                ch = "none" if a == NO_CONTACT else sp.channels[sp.channel_of[a]]
                counts[(ch, am or "champion")] = counts.get((ch, am or "champion"), 0) + 1
        for (ch, am), k in counts.items():
            self.counter.labels(channel=ch, arm=am).inc(k)

    # ------------------------------------------------------------------ feedback
    def feedback(self, decision_id: str, event: str, when: Any, value: float) -> bool:
        """Record an outcome; True when new, False when already logged. UnknownDecision for unknown ids."""
        t = checked_hours(when, time.time() / 3600.0, "time")
        if not (math.isfinite(value) and 0 <= value <= MAX_VALUE):
            raise BadRequest(f"value: must be a revenue from 0 to {MAX_VALUE:g}, got {short(value)}")
        rec = OutcomeRecords(
            decision_id=np.asarray([decision_id], dtype=object),
            event=np.asarray([event], dtype=object),
            time=np.asarray([t]),
            value=np.asarray([float(value)]),
        )
        try:
            new = self._log_outcome(rec)
        except ValueError as e:
            if _unknown(e):
                raise UnknownDecision(f"decision_id: unknown decision {short(decision_id)}") from None
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
            raise LogBehind(
                f"decision_id: its decision is not in the decision log yet ({behind}); "
                "nothing was recorded, retry later"
            )
        return self.log.log_outcomes(rec, after_decision=True) > 0


def _unknown(e: ValueError) -> bool:
    return str(e).startswith("decision_id") and "unknown decision" in str(e)
