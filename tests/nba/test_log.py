"""The decision log store on SQLite and PostgreSQL: round trips, idempotency, atomicity, layout,
streaming, contact history, deciding transactions, deployment and provenance. Validation, rewards and
Parquet have their own modules (``test_log_validation.py``, ``test_log_rewards.py``, ``test_log_parquet.py``).

The ``log`` fixture (``conftest.py``) runs each test on both databases.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import tracemalloc
from dataclasses import replace

import numpy as np
import pytest

from nba.log import (
    DecisionLog,
    FunnelEvents,
    LoggedBatch,
    LogLayout,
    OutcomeRecords,
    RewardRule,
)
from nba.log.store import LOCK_BUCKETS, lock_bucket
from tests.nba.log_helpers import T0, assert_same, make_records


# ----------------------------------------------------------------------------- writes
def test_round_trip(log):
    rec = make_records(50)
    assert log.log_decisions(rec) == 50
    assert log.count_decisions() == 50
    batch = log.read()
    assert_same(batch, rec)
    assert batch.context.dtype == np.float32 and batch.eligible.dtype == bool and batch.action.dtype == np.int64
    np.testing.assert_array_equal(batch.reward, -rec.cost)  # no outcome: default 0 minus cost
    assert log.layout() == LogLayout(4, 6)


def test_retry_is_idempotent(log):
    rec = make_records(30)
    assert log.log_decisions(rec) == 30
    assert log.log_decisions(rec) == 0
    more = make_records(40)  # the same first 30 ids and 10 new ones
    assert log.log_decisions(more) == 10
    assert log.count_decisions() == 40
    out = OutcomeRecords(rec.decision_id[:5], np.full(5, "converted"), rec.send_at[:5] + 1, np.full(5, 3.0))
    assert log.log_outcomes(out) == 5
    assert log.log_outcomes(out) == 0
    assert log.count_outcomes() == 5


def test_bad_row_writes_nothing(log):
    rec = make_records(10)
    p = rec.propensity.copy()
    p[3] = 0.0
    with pytest.raises(ValueError, match=r"^propensity: row 3: must be in \(0, 1\], got 0\.0"):
        log.log_decisions(replace(rec, propensity=p))
    assert log.count_decisions() == 0
    assert log.log_decisions(rec) == 10
    # an outcome batch with one unknown decision is refused whole
    ids = rec.decision_id[:4].astype(object)
    ids[2] = "nope"
    bad = OutcomeRecords(ids, np.full(4, "opened"), rec.time[:4], np.zeros(4))
    with pytest.raises(ValueError, match=r"^decision_id: row 2: unknown decision 'nope'"):
        log.log_outcomes(bad)
    assert log.count_outcomes() == 0


def test_decisions_and_outcomes_in_one_transaction(log):
    rec = make_records(8)
    outs = OutcomeRecords(
        rec.decision_id[:3], np.array(["opened", "clicked", "converted"]), rec.send_at[:3], np.array([0.0, 0.0, 9.0])
    )
    bad = replace(outs, event=np.array(["opened", "clicked", "bought"]))
    with pytest.raises(ValueError, match="^event: row 2"):
        log.log(rec, bad)
    assert log.count_decisions() == 0
    assert log.log(rec, outs) == (8, 3)
    assert log.log(rec, outs) == (0, 0)
    assert log.read(RewardRule()).reward[2] == 9.0 - rec.cost[2]


def test_one_layout_per_log(log, db_url):
    log.log_decisions(make_records(5, d=4))
    with pytest.raises(ValueError, match=r"^context: this log holds 4 features per decision, got 5"):
        log.log_decisions(make_records(5, d=5, start=100))
    with pytest.raises(ValueError, match=r"^eligible: this log holds 6 actions, got 7"):
        log.log_decisions(make_records(5, n_actions=7, start=100))
    assert log.count_decisions() == 5
    # a second handle on the same tables reads the stored layout
    other = DecisionLog(db_url, namespace=log.namespace, layout=LogLayout(4, 6))
    assert other.layout() == LogLayout(4, 6)
    with pytest.raises(ValueError, match="^context"):
        DecisionLog(db_url, namespace=log.namespace, layout=LogLayout(3, 6))
    other.close()


def test_layout_with_names(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    lay = LogLayout(4, 6, ("a", "b", "c", "d"), {"channels": ["email"]})
    with DecisionLog(url, layout=lay) as store:
        store.log_decisions(make_records(3))
    with DecisionLog(url) as store:
        assert store.layout() == lay


def test_sqlite_is_durable_wal(tmp_path):
    path = tmp_path / "wal.db"
    with DecisionLog(f"sqlite:///{path}") as store:
        store.log_decisions(make_records(3))
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    # committed: another process (plain sqlite3) sees it
    assert sqlite3.connect(path).execute("select count(*) from decisions").fetchone()[0] == 3


def test_background_checkpoints_leave_commits_alone(tmp_path):
    path = tmp_path / "ckpt.db"
    wal = tmp_path / "ckpt.db-wal"
    with DecisionLog(f"sqlite:///{path}", checkpoint_every_s=0.05) as store:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        for k in range(8):  # about 1,500 pages of WAL: past SQLite's own 1,000-page checkpoint mark
            store.log_decisions(make_records(2_000, d=64, start=k * 2_000, customers=5_000))
        before = path.stat().st_size
        deadline = 100
        while path.stat().st_size == before and deadline:  # the thread copies the WAL into the database
            deadline -= 1
            time.sleep(0.05)
        assert path.stat().st_size > before and wal.exists()
        assert sum(1 for _ in store.iter_batches(chunk_rows=4_000)) == 4
    assert sqlite3.connect(path).execute("select count(*) from decisions").fetchone()[0] == 16_000
    with pytest.raises(ValueError, match="^checkpoint_every_s"):
        DecisionLog(f"sqlite:///{path}", checkpoint_every_s=0)


# ----------------------------------------------------------------------------- reading
def test_streaming_chunks_and_filters(log):
    a = make_records(1500, policy="a", experiment="x")
    b = make_records(1000, start=1500, policy="b", seed=1)
    log.log_decisions(a)
    log.log_decisions(b)
    sizes = [len(x) for x in log.iter_batches(chunk_rows=700)]
    assert sizes == [700, 700, 700, 400]
    whole = LoggedBatch.concat(list(log.iter_batches(chunk_rows=700)))
    assert whole.decision_id.tolist() == [f"d{i}" for i in range(2500)]
    assert_same(log.read(policy="b"), b)
    assert_same(log.read(experiment="x"), a)
    got = log.read(since=T0 + 100, until=T0 + 1600)
    assert got.decision_id.tolist() == [f"d{i}" for i in range(100, 1600)]
    assert [len(x) for x in log.iter_batches(chunk_rows=600, policy="b", since=T0 + 2000)] == [500]
    assert len(log.read(policy="nobody")) == 0


def test_streaming_memory_is_bounded(tmp_path):
    with DecisionLog(f"sqlite:///{tmp_path / 'big.db'}") as store:
        n = 40_000
        for k in range(0, n, 10_000):
            store.log_decisions(make_records(10_000, d=32, start=k, seed=k))
        tracemalloc.start()
        rows = sum(len(b) for b in store.iter_batches(chunk_rows=2_000))
        _, streamed = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        tracemalloc.start()
        whole = store.read()
        _, full = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert rows == len(whole) == n
    assert streamed < full / 5, (streamed, full)


def test_contact_history(log):
    rec = make_records(40, customers=4)  # customer c{i % 4}, decision time T0 + i
    log.log_decisions(rec)
    ids = rec.decision_id
    log.log_outcomes(
        OutcomeRecords(
            decision_id=np.array([ids[1], ids[1], ids[5], ids[8], ids[34]]),
            event=np.array(["opened", "delivered", "converted", "clicked", "opened"]),
            time=rec.send_at[[1, 1, 5, 8, 34]] + 0.5,
            value=np.array([0.0, 0.0, 12.0, 0.0, 0.0]),
        )
    )
    h = log.contact_history(["c1", "c0", "unknown"], since=T0 + 4)
    assert h.customer_ids.tolist() == ["c1", "c0", "unknown"]
    want = [i for i in range(40) if i % 4 in (0, 1) and rec.action[i] > 0 and rec.send_at[i] >= T0 + 4]
    np.testing.assert_array_equal(h.contact_send_at, rec.send_at[want])
    np.testing.assert_array_equal(h.contact_action, rec.action[want])
    np.testing.assert_array_equal(h.contact_customer, [0 if i % 4 == 1 else 1 for i in want])
    assert np.all(np.diff(h.contact_send_at) >= 0)
    # events of c1 and c0 from T0 + 4 on: decision 5 (c1, converted) and 8 (c0, clicked); 1 is too old
    assert h.event.tolist() == ["converted", "clicked"]
    np.testing.assert_array_equal(h.event_customer, [0, 1])
    np.testing.assert_array_equal(h.event_action, rec.action[[5, 8]])
    np.testing.assert_array_equal(h.event_send_at, rec.send_at[[5, 8]])
    np.testing.assert_array_equal(h.event_value, [12.0, 0.0])
    empty = log.contact_history([], since=0.0)
    assert empty.contact_customer.shape == (0,) and empty.event.shape == (0,)


def test_deciding_reads_and_writes_in_one_transaction(log):
    rec = make_records(6, customers=3)
    with log.deciding(["c0", "c1", "c2"]) as tx:
        assert tx.contact_history(["c0"], since=0.0).contact_action.size == 0
        assert tx.log_decisions(rec) == 6
        inside = tx.contact_history(["c0", "c1", "c2"], since=0.0)  # its own writes, before the commit
        assert inside.contact_action.size == int((rec.action > 0).sum())
    assert log.read().decision_id.tolist() == rec.decision_id.tolist()
    with pytest.raises(RuntimeError, match="policy failed"), log.deciding(["c0"]) as tx:
        tx.log_decisions(make_records(3, start=100, customers=3))
        raise RuntimeError("policy failed")
    assert len(log.read()) == 6  # nothing of the failed block was written
    with pytest.raises(ValueError, match="^customer_ids"), log.deciding(["c0", ""]):
        pass


def test_deciding_serialises_deciders_of_one_customer(log):
    """Two logs (two processes' connections) over one database: the second decider for a customer
    waits for the first one's commit and reads its decision; a decider for another customer does not
    wait on PostgreSQL (per-customer locks), and waits on SQLite (one write lock)."""
    other = DecisionLog(log.url, namespace=log.namespace)
    first_in, release = threading.Event(), threading.Event()

    def hold() -> None:
        with log.deciding(["c0"]) as tx:
            first_in.set()
            release.wait(10)
            tx.log_decisions(make_records(1, customers=1))  # customer c0, contacted at T0 + 2

    seen: dict[str, tuple[float, int]] = {}

    def second(customer: str) -> None:
        with other.deciding([customer]) as tx:
            seen[customer] = (time.perf_counter(), tx.contact_history([customer], since=0.0).contact_action.size)

    rec = make_records(1, customers=1)
    assert lock_bucket("c0") != lock_bucket("c9")
    t = threading.Thread(target=hold)
    t.start()
    assert first_in.wait(10)
    waiters = [threading.Thread(target=second, args=(c,)) for c in ("c0", "c9")]
    for w in waiters:
        w.start()
    time.sleep(0.5)
    released_at = time.perf_counter()
    release.set()
    for w in [t, *waiters]:
        w.join(20)
    other.close()
    assert seen["c0"][0] > released_at  # waited for the first decider's commit...
    assert rec.action[0] > 0 and seen["c0"][1] == 1  # ...and saw its contact
    if log.dialect == "postgresql":
        assert seen["c9"][0] < released_at
    else:
        assert seen["c9"][0] > released_at


def test_deciding_large_batches_concurrently(log):
    """Four transactions of 10,000 customers each at once: with a lock per customer, PostgreSQL's lock
    table (about 64 locks per connection) overflows ("out of shared memory"); with buckets each batch
    holds at most LOCK_BUCKETS locks, and batches that share buckets take turns."""
    if log.dialect != "postgresql":
        pytest.skip("SQLite serialises deciders on its write lock: nothing to overflow")
    errors: list[BaseException] = []
    done: list[int] = []

    def decide(k: int) -> None:
        store = DecisionLog(log.url, namespace=log.namespace)
        try:
            ids = [f"k{k}-{i}" for i in range(10_000)]
            with store.deciding(ids) as tx:
                assert tx.contact_history(ids[:5], since=0.0).contact_action.size == 0
                time.sleep(0.2)
            done.append(k)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            store.close()

    threads = [threading.Thread(target=decide, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and sorted(done) == [0, 1, 2, 3]
    assert len({lock_bucket(f"k0-{i}") for i in range(10_000)}) == LOCK_BUCKETS


def test_funnel_events_follow_each_decision_within_the_window(log):
    rec = make_records(40)
    log.log_decisions(rec)
    contacts = np.flatnonzero(rec.action > 0)
    a, b, c, d, late = (str(rec.decision_id[i]) for i in contacts[:5])
    s = {str(k): float(t) for k, t in zip(rec.decision_id, rec.send_at, strict=True)}
    ids = [a, a, a, b, c, d, late]  # b: a click with no open tracked
    events = ["opened", "clicked", "converted", "clicked", "opened", "converted", "opened"]
    times = [s[a] + 1, s[a] + 2, s[a] + 5, s[b] + 3, s[c] + 0.5, s[d] + 10, s[late] + 100]
    values = [0, 0, 42.0, 0, 0, 17.5, 0]
    log.log_outcomes(OutcomeRecords(np.array(ids), np.array(events), np.array(times), np.array(values, float)))
    batch = log.read()
    ev = log.funnel_events(batch, window_h=72.0)
    row = {x: i for i, x in enumerate(batch.decision_id.tolist())}
    assert {k for k in row if ev.opened[row[k]]} == {a, b, c}  # late: outside the window
    assert {k for k in row if ev.clicked[row[k]]} == {a, b}
    assert {k for k in row if ev.converted[row[k]]} == {a}  # d converted without a click: not through the funnel
    assert ev.value[row[a]] == 42.0 and ev.value.sum() == 42.0
    FunnelEvents.check(ev, batch.action)  # consistent: what the funnel learner requires
    with pytest.raises(ValueError, match="^window_h"):
        log.funnel_events(batch, window_h=-1.0)


def test_outcomes_before_their_decision_are_refused_on_request(log):
    rec = make_records(3)
    log.log_decisions(rec)
    early = OutcomeRecords(
        decision_id=np.array([rec.decision_id[0], rec.decision_id[2]]),
        event=np.array(["opened", "opened"]),
        time=np.array([rec.time[0] + 1, rec.time[2] - 1.0]),
        value=np.zeros(2),
    )
    with pytest.raises(ValueError, match=r"^time: row 1: .* is before its decision"):
        log.log_outcomes(early, after_decision=True)
    assert log.count_outcomes() == 0
    skew = replace(early, time=np.array([rec.time[0], rec.time[2] - 1 / 60]))  # a minute early: clocks differ
    assert log.log_outcomes(skew, after_decision=True) == 2
    assert log.log_outcomes(replace(early, event=np.array(["clicked", "clicked"]))) == 2  # an import may hold them


# ----------------------------------------------------------------------------- deployment, provenance, action counts
def test_the_log_keeps_one_deployment(log, db_url):
    """The deployment's canonical document, in its key order; the same again is harmless, another is refused."""
    assert log.deployment() is None
    doc = {"deployment": {"name": "shop"}, "offers": {"vip": {}, "promo": {}}, "reward": {"window_h": 72.0}}
    assert log.set_deployment(doc) == doc
    assert log.set_deployment(dict(doc)) == doc
    other = DecisionLog(db_url, namespace=log.namespace)  # a second handle reads it back, key order kept
    try:
        assert list(other.deployment()["offers"]) == ["vip", "promo"]
        reordered = {**doc, "offers": {"promo": {}, "vip": {}}}  # the order numbers the actions: another world
        with pytest.raises(ValueError, match=r"^deployment: this log holds the decisions of the deployment 'shop'"):
            other.set_deployment(reordered)
    finally:
        other.close()
    assert log.deployment() == doc
    log.log_decisions(make_records(3))  # decisions and layout beside it
    assert log.deployment() == doc and log.layout() == LogLayout(4, 6)


def test_the_log_keeps_one_provenance(log, db_url):
    """How a log came to be, with its keys sorted: the same again (in any key order) is harmless; another,
    an invalid reward rule or a document that is not JSON is refused, naming provenance, and nothing is written."""
    assert log.provenance() is None
    rule = RewardRule(window_h=float("inf"), events=("converted", "opted_out"))
    doc = {"simulation": {"seed": 0, "policy": "business_as_usual", "params": {}}, "reward_rule": rule.to_dict()}
    assert log.set_provenance(doc) == doc
    assert (
        log.set_provenance(
            {"reward_rule": rule.to_dict(), "simulation": {"params": {}, "policy": "business_as_usual", "seed": 0}}
        )
        == doc
    )
    other = DecisionLog(db_url, namespace=log.namespace)  # a second handle reads it back
    try:
        assert other.provenance() == doc
        assert RewardRule.from_dict(other.provenance()["reward_rule"]) == rule
        changed = {**doc, "simulation": {**doc["simulation"], "seed": 1}}
        with pytest.raises(
            ValueError,
            match=r"^provenance: this log holds decisions that came to be otherwise "
            r"\(simulation\.seed: 0 here, 1 given\)",
        ):
            other.set_provenance(changed)
    finally:
        other.close()
    for bad, message in [
        ([1, 2], r"^provenance: expected a JSON object, got list"),
        ({"simulation": {"at": float("nan")}}, r"^provenance: not plain JSON"),
        ({"simulation": {"at": object()}}, r"^provenance: not plain JSON"),
        ({"reward_rule": {"window_h": -1.0}}, r"^provenance\.reward_rule: window_h must be >= 0"),
        ({"reward_rule": {"events": ["bought"]}}, r"^provenance\.reward_rule: unknown events \['bought'\]"),
        ({"reward_rule": {"window": 72}}, r"^provenance\.reward_rule: unknown fields \['window'\]"),
    ]:
        with pytest.raises(ValueError, match=message):
            log.set_provenance(bad)
    assert log.provenance() == doc and log.count_decisions() == 0 and log.deployment() is None
    log.log_decisions(make_records(3))  # decisions and layout beside it
    assert log.provenance() == doc and log.layout() == LogLayout(4, 6)


def test_a_fresh_log_refuses_an_invalid_provenance_and_keeps_none(log):
    with pytest.raises(ValueError, match=r"^provenance\.reward_rule\.subtract_cost: expected true or false"):
        log.set_provenance({"simulation": {}, "reward_rule": {"subtract_cost": 1}})
    assert log.provenance() is None


def test_action_counts_of_a_send_window(log):
    """Sends by action whose send_at lies in [since, until): one GROUP BY, no contact never counted."""
    assert log.action_counts(T0).tolist() == []  # no layout yet: no actions
    rec = make_records(60, seed=3)  # decided at T0 + i; contacts sent 2 hours later
    log.log_decisions(rec)
    sent = rec.action > 0

    def expected(since, until=np.inf):
        inside = sent & (rec.send_at >= since) & (rec.send_at < until)
        return np.bincount(rec.action[inside], minlength=6)

    counts = log.action_counts(T0)
    assert counts.dtype == np.int64 and counts.shape == (6,) and counts[0] == 0
    np.testing.assert_array_equal(counts, expected(T0))
    assert counts.sum() == sent.sum() > 0
    for since, until in ((T0 + 10, T0 + 30), (T0 + 12, T0 + 12.5), (T0 + 30, None), (T0 + 100, None)):
        np.testing.assert_array_equal(
            log.action_counts(since, until),
            expected(since, np.inf if until is None else until),
            err_msg=str((since, until)),
        )
    # the end is exclusive: a send at exactly until is the next window's
    first = float(rec.send_at[sent][0])
    assert log.action_counts(first, first).sum() == 0 and log.action_counts(first, first + 1e-6).sum() == 1
    for bad, name in ((float("nan"), "since_h"), ("yesterday", "since_h"), (True, "since_h")):
        with pytest.raises(ValueError, match=f"^{name}: expected a finite number of hours"):
            log.action_counts(bad)
    with pytest.raises(ValueError, match="^until_h: expected a finite number"):
        log.action_counts(T0, float("inf"))


# ----------------------------------------------------------------------------- renumbering actions
def test_renumber_actions_moves_actions_and_their_flags_all_or_nothing(log):
    """Each decision's action and eligibility flags follow the map (new actions never eligible), over
    chunks, with the layout and the deployment document replaced; a decision whose action the map drops
    changes nothing, nor does a bad map."""
    rec = make_records(50, n_actions=6)
    log.log_decisions(rec)
    log.log_outcomes(
        OutcomeRecords(
            decision_id=rec.decision_id[:3], event=np.array(["opened"] * 3), time=rec.time[:3] + 1, value=np.zeros(3)
        )
    )
    amap = np.array([0, 4, 1, 6, 2, 5])  # 7 actions afterwards: 3 is new
    with pytest.raises(ValueError, match=r"^action_map: no contact"):
        log.renumber_actions(LogLayout(4, 7), np.array([1, 0, 2, 3, 4, 5]))
    for bad in ([0, 1, 1, 2, 3, 4], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 7]):
        with pytest.raises(ValueError, match=r"^action_map: expected 6 distinct indices in \[-1, 7\)"):
            log.renumber_actions(LogLayout(4, 7), np.array(bad))
    with pytest.raises(ValueError, match=r"^context: "):
        log.renumber_actions(LogLayout(5, 7), amap)
    taken = int(rec.action[rec.action > 0][-1])  # an action some decision took, dropped
    drop = amap.copy()
    drop[taken] = -1
    with pytest.raises(ValueError, match=rf"^action: row \d+: decision 'd\d+' took action {taken}, which the new "):
        log.renumber_actions(LogLayout(4, 7), drop, {"name": "x"}, chunk_rows=7)
    assert log.layout().n_actions == 6 and log.deployment() is None
    assert_same(log.read(), rec)  # nothing moved: the chunks before the refused one were rolled back
    counts = log.action_counts(0.0)
    assert (
        log.renumber_actions(LogLayout(4, 7, action_space={"k": 7}), amap, {"name": "shop", "v": 2}, chunk_rows=7) == 50
    )
    assert log.layout() == LogLayout(4, 7, action_space={"k": 7}) and log.deployment() == {"name": "shop", "v": 2}
    got = log.read()
    np.testing.assert_array_equal(got.action, amap[rec.action])
    want = np.zeros((50, 7), bool)
    want[:, amap] = rec.eligible
    np.testing.assert_array_equal(got.eligible, want)
    np.testing.assert_array_equal(got.context, rec.context)
    assert got.decision_id.tolist() == rec.decision_id.tolist()
    reopened = DecisionLog(log.url, namespace=log.namespace)  # what another process reads
    try:
        assert reopened.layout().n_actions == 7
        after = reopened.action_counts(0.0)
        np.testing.assert_array_equal(after[amap], counts)
        assert after[3] == 0 and after.sum() == counts.sum()
    finally:
        reopened.close()
