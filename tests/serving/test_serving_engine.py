"""The decision engine in-process (no HTTP): configuration, time zones, history reads, caps under concurrency."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from nba.decide import _rounds
from nba.log.store import DecisionLog
from serving.config import Settings
from serving.endpoints import Runtime
from serving.requests import BadRequest, tz_offset
from tests.serving.svc_helpers import ODD_IDS, answered_both_ways, validated_both_ways

JUNE = 486_000.0  # 2025-06-10 00:00 UTC in hours since the epoch
JANUARY = 482_352.0  # 2025-01-10 00:00 UTC


@pytest.mark.parametrize(
    "name, when, offset",
    [
        ("Europe/Paris", JUNE, 2.0),
        ("Europe/Paris", JANUARY, 1.0),
        ("America/New_York", JUNE, -4.0),
        ("UTC", JUNE, 0.0),
        ("+05:30", JUNE, 5.5),
        ("UTC-3", JUNE, -3.0),
        ("GMT+2", JUNE, 2.0),
        ("-0800", JUNE, -8.0),
    ],
)
def test_time_zones(name, when, offset):
    assert tz_offset(name, when, "timezone") == offset


@pytest.mark.parametrize("name", ["Mars/Olympus", "+15:00", "UTC+1:75", "../etc/passwd", "", "12"])
def test_unknown_time_zones_name_the_field(name):
    with pytest.raises(BadRequest, match=r"^customers\[2\]\.timezone: unknown time zone"):
        tz_offset(name, JUNE, "customers[2].timezone")


def test_settings_from_env():
    s = Settings.from_env(
        {
            "NBA_EXPERIMENT": "exp",
            "NBA_SPLITS": "champion=0.9,challenger=0.1",
            "NBA_POLL_S": "2",
            "NBA_CHANNEL_COSTS": "sms=0.05",
            "MLFLOW_TRACKING_URI": "sqlite:///x.db",
        }
    )
    assert s.aliases == ("champion", "challenger") and s.poll_s == 2 and s.channel_costs == {"sms": 0.05}
    assert s.tracking_uri == "sqlite:///x.db" and Settings.from_env({}).aliases == ("champion",)
    for env, var in [
        ({"NBA_POLL_S": "soon"}, "NBA_POLL_S"),
        ({"NBA_SPLITS": "champion"}, "NBA_SPLITS"),
        ({"NBA_EXPERIMENT": "e", "NBA_SPLITS": "champion=1,loser=1"}, "NBA_SPLITS"),
        ({"NBA_SEED": "x"}, "NBA_SEED"),
        ({"NBA_HISTORY_DAYS": "-1"}, "NBA_HISTORY_DAYS"),
    ]:
        with pytest.raises(ValueError, match=f"^{var}"):
            Settings.from_env(env)


def test_rounds_keep_each_customers_order():
    rows = np.array([3, 1, 3, 3, 0, 1])
    rounds = _rounds(rows)
    assert [r.tolist() for r in rounds] == [[0, 1, 4], [2, 5], [3]]
    assert _rounds(np.array([], np.int64)) == []


@pytest.fixture(scope="module")
def runtime(registry, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("engine")
    rt = Runtime.start(
        Settings(tracking_uri=registry.uri, log_url=f"sqlite:///{tmp}/d.db", cache_dir=tmp / "cache", poll_s=0, seed=1)
    )
    yield rt
    rt.engine.close()


def _customer(cid: str, **kw):
    base = dict(
        customer_id=cid,
        segment="genz",
        timezone="UTC",
        tenure_days=3.0,
        stage=None,
        cart_active=False,
        consent=None,
        channels=None,
        n_purchases=0,
        last_purchase_at=None,
        last_visit_at=None,
    )
    return SimpleNamespace(**(base | kw))


def test_concurrent_requests_for_one_customer_respect_the_caps(runtime):
    now = JUNE * 3600.0 + 8 * 3600.0  # 08:00 UTC, seconds since the epoch
    jobs = [runtime.engine.prepare([_customer("same")], now, 0, batch=False) for _ in range(12)]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda j: runtime.engine.decide(j), jobs))
    sends = sorted(float(r.send_at[0]) for r in results if r.action[0] != 0)
    assert 1 <= len(sends) <= 2 and all(b - a >= 4 for a, b in zip(sends, sends[1:], strict=False))


def test_two_workers_on_one_log_respect_the_caps(runtime, registry, tmp_path):
    """A second engine (another worker's) over the same log: the deciding transaction serialises them."""
    other = Runtime.start(
        Settings(
            tracking_uri=registry.uri, log_url=runtime.engine.log.url, cache_dir=tmp_path / "cache", poll_s=0, seed=2
        )
    )
    try:
        now = JUNE * 3600.0 + 8 * 3600.0
        engines = [runtime.engine, other.engine] * 8
        jobs = [(e, e.prepare([_customer("twin")], now, 0, batch=False)) for e in engines]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda ej: ej[0].decide(ej[1]), jobs))
    finally:
        other.engine.close()
    sends = sorted(float(r.send_at[0]) for r in results if r.action[0] != 0)
    assert 1 <= len(sends) <= 2 and all(b - a >= 4 for a, b in zip(sends, sends[1:], strict=False))
    assert {r.decision_id[0][:8] for r in results} == {runtime.engine._id_prefix, other.engine._id_prefix}


def test_decisions_and_feedback_come_back_as_history(runtime):
    engine = runtime.engine
    now = JUNE * 3600.0
    ids = [f"h{i}" for i in range(30)]
    res = engine.decide(engine.prepare([_customer(c) for c in ids], now, 0, batch=True))
    for did in res.decision_id[:10]:
        engine.feedback(did, "opened", now + 3600, 0.0)
    engine.feedback(res.decision_id[0], "converted", now + 7200, 12.0)
    log: DecisionLog = engine.log
    h = log.contact_history(ids + ["unknown"], JUNE - 1)
    contacted = res.action > 0
    assert len(h.contact_action) == contacted.sum() and (h.contact_action > 0).all()
    assert sorted(h.customer_ids[h.contact_customer].tolist()) == sorted(np.asarray(ids)[contacted].tolist())
    assert len(h.event) == 11


def test_bad_values_name_the_field(runtime):
    eng = runtime.engine
    with pytest.raises(BadRequest, match=r"^customers\[1\]\.segment"):
        eng.prepare([_customer("a"), _customer("b", segment="x")], None, 0, batch=True)
    with pytest.raises(BadRequest, match=r"^consent: unknown channel 'fax'"):
        eng.prepare([_customer("a", consent={"fax": True})], None, 0, batch=False)
    with pytest.raises(BadRequest, match=r"^last_visit_at"):
        eng.prepare([_customer("a", last_visit_at=JUNE * 3600.0 + 10)], JUNE * 3600.0, 0, batch=False)


@pytest.mark.parametrize(
    "changes, named",
    [
        ({}, None),
        ({1: {"segment": "x"}}, "customers[1].segment"),
        ({2: {"tenure_days": None}}, "customers[2].tenure_days"),
        ({0: {"consent": {"fax": True}}}, "customers[0].consent"),
        ({1: {"consent": {"email": True, "sms": False}, "channels": ["email"], "stage": "lapsed"}}, None),
        ({3: {"cart_active": True, "last_purchase_at": "2025-06-01T10:00:00Z", "n_purchases": 3}}, None),
        ({2: {"last_visit_at": JUNE * 3600.0 + 10}}, "customers[2].last_visit_at"),
        ({1: {"attributes": {"plan_type": "prepaid"}}}, "customers[1].attributes"),
        ({0: {"offers": ["promo"]}}, "customers[0].offers"),
    ],
)
def test_a_batch_read_by_column_is_validated_as_one_read_by_pydantic(runtime, changes, named):
    """The same rows, or the same 422 naming the same field, from either reading of the body."""
    customers = [{"customer_id": f"w-{i}", "segment": "genz", "tenure_days": 3 + i} for i in range(4)]
    for i, change in changes.items():
        customers[i] = customers[i] | change
    by_column, by_pydantic = validated_both_ways(runtime.engine, {"now": JUNE * 3600.0, "customers": customers})
    assert by_column == by_pydantic
    assert by_column.startswith(f"{named}: " if named else "{'ids': ['w-0'"), by_column


def test_a_batch_answer_written_by_column_is_orjsons_of_the_decisions(runtime):
    customers = [
        {"customer_id": c, "segment": "genz", "tenure_days": 30.0, "timezone": "Asia/Kolkata" if i % 2 else "UTC"}
        for i, c in enumerate(ODD_IDS + [f"sc-{i}" for i in range(30)])
    ]
    answered_both_ways(runtime.engine, customers, JUNE * 3600.0, 2, "")


# ----------------------------------------------------------------------------- write-behind (NBA_SPOOL_DIR)
@pytest.fixture()
def pair(registry, tmp_path):
    """Two engines on the same seed: write-through, and write-behind with a cache smaller than the population."""
    common = dict(tracking_uri=registry.uri, poll_s=0, seed=7, cache_dir=tmp_path / "cache")
    through = Runtime.start(Settings(log_url=f"sqlite:///{tmp_path}/through.db", **common))
    behind = Runtime.start(
        Settings(log_url=f"sqlite:///{tmp_path}/behind.db", spool_dir=tmp_path / "spool", cache_customers=40, **common)
    )
    yield through, behind
    through.close()
    behind.close()


def _rounds_of_decisions(rt: Runtime, ids: list[str]) -> list:
    """Nine rounds 3 h apart: ten customers every round (caps and gaps bite) and a third of the others in
    turn (they leave the write-behind cache in between and are read back from the log); each round is
    followed at once by feedback on some decisions (before the write-behind log holds them)."""
    out = []
    core, rest = ids[:10], ids[10:]
    for r in range(9):
        now = (JUNE + 3 * r) * 3600.0
        chosen = core + rest[r % 3 :: 3]
        customers = [
            _customer(c, segment=("genz", "senior")[i % 2], cart_active=i % 3 == 0) for i, c in enumerate(chosen)
        ]
        res = rt.engine.decide(rt.engine.prepare(customers, now, 2, batch=True))
        for j, did in enumerate(res.decision_id):
            if j % 3 == r % 3:
                assert rt.engine.feedback(did, "opened", now + 1800, 0.0) is True
                assert rt.engine.feedback(did, "opened", now + 1800, 0.0) is False  # idempotent
            if j % 7 == r % 7:
                rt.engine.feedback(did, "converted", now + 3600, 25.0)
        out.append(res)
    return out


def test_write_behind_decides_exactly_as_write_through(pair):
    """History from memory (entries evicted and read back from the log) gives the same decisions."""
    through, behind = pair
    ids = [f"p{i}" for i in range(90)]
    a, b = _rounds_of_decisions(through, ids), _rounds_of_decisions(behind, ids)
    for ra, rb in zip(a, b, strict=True):
        np.testing.assert_array_equal(ra.action, rb.action)
        np.testing.assert_array_equal(ra.propensity, rb.propensity)
        np.testing.assert_array_equal(ra.send_at, rb.send_at)
    assert any((r.action[:10] == 0).any() for r in a[1:])  # caps and gaps did bite
    assert behind.engine.spool.flush(60)
    h_mem = behind.engine.history.history(ids, JUNE - 1)
    h_log = behind.engine.log.contact_history(ids, JUNE - 1)

    def rows(h, kind: str, names: tuple[str, ...]) -> list[tuple]:
        who = h.customer_ids[getattr(h, f"{kind}_customer")].tolist()
        return sorted(zip(who, *(getattr(h, n).tolist() for n in names), strict=True))

    contacts = ("contact_time", "contact_send_at", "contact_action")
    events = ("event", "event_time", "event_value", "event_action", "event_send_at", "event_decision")
    assert rows(h_mem, "contact", contacts) == rows(h_log, "contact", contacts)
    assert rows(h_mem, "event", events) == rows(h_log, "event", events) and len(h_log.event) > 50
    assert behind.engine.log.count_decisions() == through.engine.log.count_decisions() == 9 * 10 + 3 * 80
    assert behind.engine.log.count_outcomes() == through.engine.log.count_outcomes()


def test_write_behind_respects_the_caps_under_concurrency(pair):
    _, behind = pair
    now = JUNE * 3600.0 + 8 * 3600.0
    jobs = [behind.engine.prepare([_customer("same")], now, 0, batch=False) for _ in range(12)]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda j: behind.engine.decide(j), jobs))
    sends = sorted(float(r.send_at[0]) for r in results if r.action[0] != 0)
    assert 1 <= len(sends) <= 2 and all(b - a >= 4 for a, b in zip(sends, sends[1:], strict=False))


def test_write_behind_acknowledges_only_what_is_fsynced(pair):
    """The decider writes a batch and goes on deciding while its fsync runs (in the decider itself when
    nothing waits, else in the syncer thread): at the moment a request's future resolves, its batch's
    frame lies wholly before the spool's synced position."""
    from nba.log.spool import _APPENDED, _BASE, decode, scan

    _, behind = pair
    spool = behind.engine.spool
    now = JUNE * 3600.0 + 8 * 3600.0
    seen: list[tuple[str, int]] = []

    def submit(i: int):
        job = behind.engine.prepare([_customer(f"ack{i}")], now, 0, batch=False)
        fut = behind.engine.submit(job)
        fut.add_done_callback(lambda f: seen.append((f.result().decision_id[0], spool._state.get(_APPENDED))))
        return fut

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for fut in list(pool.map(submit, range(400))):
            fut.result(30)
    assert len(seen) == 400
    data = spool.path.read_bytes()
    frames, end = scan(data)
    assert end == len(data)
    base = spool._state.get(_BASE)  # position of the file's first byte
    frame_end = {d: base + e for s, e in frames for d in decode(data[s:e]).decision_id.tolist()}
    assert all(frame_end[d] <= synced for d, synced in seen)
    assert len(frames) < 400  # concurrent requests shared batches


def test_a_failed_spool_fsync_fails_the_requests_and_readiness(pair, monkeypatch):
    """After an fsync error nothing more is acknowledged: the batch and every later one fail, and the
    service reports not ready (a load balancer then sends customers elsewhere)."""
    import os

    from nba.log.spool import SpoolFailed

    _, behind = pair
    now = JUNE * 3600.0 + 8 * 3600.0
    ok = behind.engine.decide(behind.engine.prepare([_customer("before")], now, 0, batch=False))
    assert behind.ready and len(ok.decision_id) == 1

    def eio(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", eio)
    with pytest.raises(SpoolFailed):
        behind.engine.decide(behind.engine.prepare([_customer("during")], now, 0, batch=False))
    monkeypatch.undo()
    assert not behind.ready
    with pytest.raises(SpoolFailed):
        behind.engine.decide(behind.engine.prepare([_customer("after")], now, 0, batch=False))
    assert behind.engine.spool.flush(30)
    assert behind.engine.log.decisions_of([ok.decision_id[0]])  # acknowledged before: in the log


def test_write_behind_settings_are_checked():
    s = Settings.from_env({"NBA_SPOOL_DIR": "/tmp/x", "NBA_CACHE_CUSTOMERS": "1000"})
    assert str(s.spool_dir) == "/tmp/x" and s.cache_customers == 1000 and Settings.from_env({}).spool_dir is None
    for env, var in [
        ({"NBA_SPOOL_DIR": "/tmp/x", "NBA_WORKERS": "2"}, "NBA_SPOOL_DIR"),
        ({"NBA_CACHE_CUSTOMERS": "0"}, "NBA_CACHE_CUSTOMERS"),
        ({"NBA_CACHE_CUSTOMERS": "1.5"}, "NBA_CACHE_CUSTOMERS"),
    ]:
        with pytest.raises(ValueError, match=f"^{var}"):
            Settings.from_env(env)


def test_time_stamps_format_alike_one_by_one_and_in_bulk():
    """The answer's stamps: a single decision is formatted in Python, a batch by numpy; the strings agree."""
    from serving.endpoints import _iso

    rng = np.random.default_rng(3)
    h = np.r_[rng.uniform(-1e5, 1e6, 300), np.round(rng.uniform(0, 1e6, 20)), 490_000.5]
    h = np.r_[h, rng.choice(h[:6], 200), 2e9, -2e9]  # a batch's repeated stamps; beyond 2**53 microseconds
    tz = rng.choice([-9.5, -8.0, 0.0, 2.0, 5.75, 14.0], h.size)
    bulk, bulk_local = _iso(h), _iso(h, tz)
    assert bulk[0].endswith("Z") and len(bulk[0]) == 27 and bulk_local[0][-6] in "+-"
    assert [_iso(h[i : i + 1])[0] for i in range(h.size)] == bulk
    assert [_iso(h[i : i + 1], tz[i : i + 1])[0] for i in range(h.size)] == bulk_local
    assert _iso(np.array([0.0]), np.array([-9.5])) == ["1969-12-31T14:30:00.000000-09:30"]


def test_a_request_given_up_while_queued_is_never_decided_and_the_decider_goes_on(registry, tmp_path):
    """A request whose deadline passes while it waits is cancelled (as asyncio cancels the wrapped future):
    the decider drops it, logs nothing for it, and keeps answering; a job already being decided cannot be
    cancelled, so its answer always has a future to go to."""
    rt, sizes, gate, entered = _recording_engine(registry, tmp_path)
    try:
        gate.clear()  # the decider holds its first batch until the gate opens
        now = JUNE * 3600.0 + 8 * 3600.0
        first = rt.engine.submit(rt.engine.prepare([_customer("first")], now, 0, batch=False))
        assert entered.wait(10)
        queued = rt.engine.submit(rt.engine.prepare([_customer("gave-up")], now, 0, batch=False))
        assert not first.cancel() and queued.cancel()
        gate.set()
        assert first.result(10).action.shape == (1,)
        after = rt.engine.decide(rt.engine.prepare([_customer("after")], now, 0, batch=False), timeout=10)
        assert after.action.shape == (1,)
        logged = rt.engine.log.customer_ids()
        assert {"first", "after"} <= logged and "gave-up" not in logged
    finally:
        rt.close()


def _recording_engine(registry, tmp_path, gather_ms: float = Settings.gather_ms):
    """A runtime whose decider records the size of every batch, and can hold a batch until a gate opens
    (``gate`` open, ``entered`` set as each batch reaches the decider)."""
    rt = Runtime.start(
        Settings(
            tracking_uri=registry.uri,
            log_url=f"sqlite:///{tmp_path}/d.db",
            cache_dir=tmp_path / "cache",
            poll_s=0,
            seed=1,
            gather_ms=gather_ms,
        )
    )
    sizes: list[int] = []
    gate, entered = threading.Event(), threading.Event()
    gate.set()
    decide = rt.engine._decide

    def recorded(jobs):
        sizes.append(len(jobs))
        entered.set()
        gate.wait(10)
        return decide(jobs)

    rt.engine._decide = recorded
    return rt, sizes, gate, entered


def _burst_of_four(rt, gate, entered, now):
    """One held batch, four requests queued behind it: the next batch holds four."""
    gate.clear()
    entered.clear()
    held = rt.engine.submit(rt.engine.prepare([_customer("held")], now, 0, batch=False))
    assert entered.wait(10)
    four = [rt.engine.submit(rt.engine.prepare([_customer(f"b{i}")], now, 0, batch=False)) for i in range(4)]
    gate.set()
    for f in [held, *four]:
        f.result(10)


@pytest.mark.parametrize("gather_ms", [0.0, 900.0])
def test_a_burst_split_by_the_event_loop_is_gathered_into_one_batch(registry, tmp_path, gather_ms):
    """After a batch of four, a request whose three companions arrive 50 ms later waits for them (within
    the gather window) instead of being decided alone; without a window it goes alone."""
    rt, sizes, gate, entered = _recording_engine(registry, tmp_path, gather_ms)
    now = JUNE * 3600.0 + 8 * 3600.0
    try:
        _burst_of_four(rt, gate, entered, now)
        assert sizes == [1, 4]
        t0 = time.perf_counter()
        first = rt.engine.submit(rt.engine.prepare([_customer("c0")], now, 0, batch=False))
        time.sleep(0.05)
        rest = [rt.engine.submit(rt.engine.prepare([_customer(f"c{i}")], now, 0, batch=False)) for i in (1, 2, 3)]
        for f in [first, *rest]:
            f.result(10)
        if gather_ms:
            assert sizes[2:] == [4]
            assert time.perf_counter() - t0 < 0.6  # answered once the burst was whole, not at the window's end
        else:
            assert sizes[2] == 1 and sum(sizes[3:]) == 3
        assert {f"c{i}" for i in range(4)} <= rt.engine.log.customer_ids()
    finally:
        rt.close()


def test_the_gather_window_bounds_the_wait_and_follows_the_traffic(registry, tmp_path):
    """A lone request after a batch of four waits the whole window for companions that never come; the next
    lone request expects none (the previous batch held one) and is decided at once."""
    rt, sizes, gate, entered = _recording_engine(registry, tmp_path, gather_ms=300.0)
    now = JUNE * 3600.0 + 8 * 3600.0
    try:
        _burst_of_four(rt, gate, entered, now)
        t0 = time.perf_counter()
        rt.engine.decide(rt.engine.prepare([_customer("lone")], now, 0, batch=False), timeout=10)
        assert time.perf_counter() - t0 >= 0.3
        rt.engine._gather_s = 5.0  # were it to wait again, it would wait seconds
        t0 = time.perf_counter()
        rt.engine.decide(rt.engine.prepare([_customer("next")], now, 0, batch=False), timeout=10)
        assert time.perf_counter() - t0 < 2.5
        assert sizes == [1, 4, 1, 1]
    finally:
        rt.close()


def test_the_gather_window_is_checked():
    assert Settings.from_env({}).gather_ms == 2.0 and Settings.from_env({"NBA_GATHER_MS": "0"}).gather_ms == 0
    for raw in ("-1", "nan", "5000", "soon"):
        with pytest.raises(ValueError, match="^NBA_GATHER_MS"):
            Settings.from_env({"NBA_GATHER_MS": raw})


def test_a_row_the_log_refuses_fails_only_its_own_request(registry, tmp_path):
    """Write-through: eight requests decided in one batch, one holding a customer the database refuses (a
    trigger: a reason no validation can know): that request fails, its seven neighbours are committed and
    answered."""
    import sqlite3

    rt, sizes, gate, entered = _recording_engine(registry, tmp_path)
    try:
        now = JUNE * 3600.0 + 8 * 3600.0
        rt.engine.decide(rt.engine.prepare([_customer("warm-up")], now, 0, batch=False))  # the log's tables
        with sqlite3.connect(tmp_path / "d.db") as db:
            db.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON decisions WHEN NEW.customer_id = 'refused' "
                "BEGIN SELECT RAISE(ABORT, 'refused by the database'); END"
            )
        gate.clear()
        entered.clear()
        held = rt.engine.submit(rt.engine.prepare([_customer("held")], now, 0, batch=False))
        assert entered.wait(10)
        names = ["n0", "n1", "n2", "refused", "n3", "n4", "n5", "n6"]
        futures = [rt.engine.submit(rt.engine.prepare([_customer(c)], now, 0, batch=False)) for c in names]
        gate.set()
        held.result(10)
        outcomes = {}
        for c, f in zip(names, futures, strict=True):
            try:
                outcomes[c] = f.result(10).decision_id[0]
            except Exception as e:  # noqa: BLE001 - the refused row's own failure
                outcomes[c] = e
        assert sizes[-9:] == [8] + [1] * 8  # one batch of eight failed, then each request alone
        assert isinstance(outcomes.pop("refused"), Exception)
        logged = rt.engine.log.customer_ids()
        assert all(isinstance(v, str) for v in outcomes.values()) and set(outcomes) <= logged
        assert "refused" not in logged
    finally:
        rt.close()


def test_the_service_records_its_deployment_in_the_log_and_refuses_a_log_of_another(tmp_path):
    """With NBA_DEPLOYMENT the log records the deployment at start (training on the service's own log finds
    it); a log that holds another version of it is refused with the command that moves it, nothing written."""
    from pathlib import Path

    from nba.deployment import Deployment

    path = Path(__file__).resolve().parents[2] / "examples" / "telecom" / "deployment.toml"
    telecom = Deployment.load(path)
    data = telecom.to_dict()
    data["offers"].pop("phone_upgrade")
    data["contact_policy"]["caps"] = [c for c in data["contact_policy"]["caps"] if c.get("offer") != "phone_upgrade"]
    older = Deployment.from_dict(data)
    common = dict(
        tracking_uri=f"sqlite:///{tmp_path}/no-registry.db", poll_s=0, deployment=path, cache_dir=tmp_path / "cache"
    )
    rt = Runtime.start(Settings(log_url=f"sqlite:///{tmp_path}/new.db", **common))
    try:
        assert rt.engine.log.deployment() == telecom.to_dict()
    finally:
        rt.close()
    with DecisionLog(f"sqlite:///{tmp_path}/old.db") as log:
        log.set_deployment(older.to_dict())
    with pytest.raises(
        ValueError,
        match=r"^NBA_DEPLOYMENT: deployment: this log holds the decisions of the "
        r"deployment 'telco-retention' \(sha256:.*; if only the offers changed, move "
        rf"the log onto the new file first: nba deployment update {path} --log <this "
        r"log>$",
    ):
        Runtime.start(Settings(log_url=f"sqlite:///{tmp_path}/old.db", **common))
    with DecisionLog(f"sqlite:///{tmp_path}/old.db") as log:
        assert log.deployment() == older.to_dict() and log.count_decisions() == 0


def test_a_batchs_large_arrays_stay_on_the_heap_where_glibc_allows():
    """Runtime.start asks glibc to serve a batch's megabyte arrays from its heap (no fresh pages per batch);
    elsewhere it changes nothing."""
    import platform

    from serving.endpoints import keep_large_arrays_on_the_heap

    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert keep_large_arrays_on_the_heap() is glibc
    big = np.ones((1000, 801))  # allocated and freed as usual
    assert float(np.cumsum(big, axis=1)[-1, -1]) == 801.0
