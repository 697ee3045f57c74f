"""The service on PostgreSQL under a poison record and a database outage (a TCP proxy the test cuts), in
write-through and write-behind mode: a NUL in an id is refused before acknowledgement and never blocks
the log or its neighbours; an outage answers fast 503s (or, write-behind, keeps acknowledging from the
spool) with one log line when it starts and one when it ends; everything acknowledged reaches the log."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from svc_helpers import TcpProxy, customer, postgres_or_skip, start_server

from nba.log.store import DecisionLog


def _start(registry, workdir, name: str, spool: bool):
    url = postgres_or_skip()
    proxy = TcpProxy("127.0.0.1", int(url.rsplit(":", 1)[1].split("/")[0]))
    namespace = f"f{name}{os.getpid()}_{int(time.time())}"
    tmp = workdir / f"pg-{name}"
    tmp.mkdir()
    args = ["--spool-dir", str(tmp / "spool")] if spool else []
    s = start_server(
        tmp,
        {
            "NBA_TRACKING_URI": registry.uri,
            "NBA_LOG_URL": proxy.url(url),
            "NBA_LOG_NAMESPACE": namespace,
            "NBA_FEEDBACK_WAIT_S": "2",
        },
        via="nba",
        args=args,
    )
    s.proxy = proxy
    s.log = DecisionLog(url, namespace=namespace)  # direct, not through the proxy
    return s


@pytest.fixture(scope="module")
def through(registry, workdir):
    s = _start(registry, workdir, "wt", spool=False)
    yield s
    s.stop()
    s.log.drop()
    s.log.close()


@pytest.fixture(scope="module")
def behind(registry, workdir):
    s = _start(registry, workdir, "wb", spool=True)
    yield s
    s.stop()
    s.log.drop()
    s.log.close()


def _in_log(server, ids: list[str], timeout: float = 20.0) -> set[str]:
    deadline = time.time() + timeout
    while True:
        logged = set(server.log.read().decision_id.tolist()) if server.log.layout() is not None else set()
        if set(ids) <= logged or time.time() > deadline:
            return logged
        time.sleep(0.2)


@pytest.mark.parametrize("mode", ["through", "behind"])
def test_a_nul_id_is_refused_and_never_blocks_the_log(mode, request):
    server = request.getfixturevalue(mode)
    with server.client() as c:
        r = c.post("/decide", json=customer("poison\u0000id"))
        assert r.status_code == 400 and r.json()["error"].startswith("customer_id"), r.text
        acked = [c.post("/decide", json=customer(f"after-poison-{mode}-{i}")).json()["decision_id"] for i in range(30)]
        d = c.post("/decide", json=customer(f"fb-{mode}")).json()
        fb = c.post("/feedback", json={"decision_id": d["decision_id"], "event": "opened"})
        assert fb.status_code == 200, fb.text
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["problems"] == [], ready.text
    assert set(acked) <= _in_log(server, acked)


def test_one_bad_request_never_fails_its_neighbours(through):
    """Eight valid requests and one with a NUL id, sent together, 20 rounds."""
    bodies = [[customer(f"n{r}-{i}") for i in range(8)] + [customer(f"bad{r}\u0000")] for r in range(20)]
    with through.client() as c, ThreadPoolExecutor(9) as pool:
        statuses = [list(pool.map(lambda b: c.post("/decide", json=b).status_code, round_)) for round_ in bodies]
    assert all(s[:8] == [200] * 8 and s[8] == 400 for s in statuses), statuses


def test_an_outage_answers_fast_503s_and_logs_once(through):
    with through.client() as c:
        assert c.post("/decide", json=customer("pre-outage")).status_code == 200
        lines_before = len(through.log_text().splitlines())
        through.proxy.cut()
        try:
            started = time.perf_counter()
            statuses = [c.post("/decide", json=customer(f"down-{i}")).status_code for i in range(100)]
            took = time.perf_counter() - started
            ready = c.get("/readyz").json()
        finally:
            through.proxy.restore()
        assert set(statuses) == {503}
        assert took < 20, f"{took:.1f} s for 100 refused requests"
        assert any("decision log failing" in p for p in ready["problems"]), ready
        deadline = time.time() + 20
        while c.post("/decide", json=customer("post-outage")).status_code != 200:
            assert time.time() < deadline, "no recovery after the outage"
            time.sleep(0.2)
    during = through.log_text().splitlines()[lines_before:]
    assert sum("decision log failing" in line for line in during) == 1, during
    assert sum("decision log recovered" in line for line in during) == 1, during
    assert not any("Traceback" in line for line in during), during
    assert len(during) < 10, during


def test_write_behind_keeps_acknowledging_through_an_outage_and_feedback_answers_in_time(behind):
    with behind.client() as c:
        behind.proxy.cut()
        try:
            acked = [c.post("/decide", json=customer(f"spooled-{i}")).json()["decision_id"] for i in range(40)]
            started = time.perf_counter()
            fb = c.post("/feedback", json={"decision_id": acked[-1], "event": "opened"})
            took = time.perf_counter() - started
            ready = c.get("/readyz")
        finally:
            behind.proxy.restore()
        assert fb.status_code == 503 and "retry" in fb.json()["error"], fb.text
        assert took < 3.0, f"feedback took {took:.1f} s"
        assert ready.status_code == 200 and ready.json()["log"]["behind_bytes"] > 0, ready.text
        assert set(acked) <= _in_log(behind, acked, timeout=30)
        fb = c.post("/feedback", json={"decision_id": acked[-1], "event": "opened"})
        assert fb.status_code == 200 and fb.json()["recorded"] is True, fb.text


def _poisoned_frame(layout, ids: list[str], poison_row: int) -> bytes:
    """A spool frame of valid decisions with a NUL put into one customer id afterwards (as a spool written
    by an older version, which let a NUL through, holds it)."""
    import zlib

    import numpy as np
    import orjson

    from nba.log.records import DecisionRecords
    from nba.log.spool import _HEAD, MAGIC, encode

    n = len(ids)
    text = lambda v: np.array([v] * n, dtype=object)  # noqa: E731
    rec = DecisionRecords(
        decision_id=np.array([f"{c}-d" for c in ids], dtype=object),
        time=np.full(n, 490_000.0),
        customer_id=np.array(ids, dtype=object),
        context=np.zeros((n, layout.context_dim), np.float32),
        eligible=np.ones((n, layout.n_actions), bool),
        action=np.zeros(n, np.int64),
        send_at=np.full(n, 490_000.0),
        propensity=np.ones(n),
        policy=text("business_as_usual"),
        policy_version=text("1"),
        experiment=text(""),
        arm=text(""),
        cost=np.zeros(n),
    )
    frame = encode(rec)
    _, hl, _, _ = _HEAD.unpack_from(frame)
    header = orjson.loads(frame[_HEAD.size : _HEAD.size + hl])
    header["customer_id"][poison_row] = "poison\x00id"
    head, body = orjson.dumps(header), frame[_HEAD.size + hl :]
    return _HEAD.pack(MAGIC, len(head), len(body), zlib.crc32(body, zlib.crc32(head))) + head + body


def test_a_poison_left_in_the_spool_is_dead_lettered_and_the_service_starts(registry, workdir):
    """A spool holding a row PostgreSQL refuses (a NUL), left by a killed process: the next start replays
    the good rows, moves the bad one to the dead letter, serves, and says so in readiness and metrics."""
    url = postgres_or_skip()
    namespace = f"fdl{os.getpid()}_{int(time.time())}"
    tmp = workdir / "pg-dead-letter"
    tmp.mkdir()
    env = {"NBA_TRACKING_URI": registry.uri, "NBA_LOG_URL": url, "NBA_LOG_NAMESPACE": namespace}
    args = ["--spool-dir", str(tmp / "spool")]
    log = DecisionLog(url, namespace=namespace)
    try:
        first = start_server(tmp, env, via="nba", args=args)
        with first.client() as c:
            assert c.post("/decide", json=customer("layout")).status_code == 200
        first.stop()
        (tmp / "spool" / "decisions.spool").write_bytes(_poisoned_frame(log.layout(), ["good-1", "bad", "good-2"], 1))
        second = start_server(tmp, env, via="nba", args=args)
        try:
            with second.client() as c:
                ready = c.get("/readyz")
                metrics = c.get("/metrics").text
                assert c.post("/decide", json=customer("after-restart")).status_code == 200
        finally:
            second.stop()
        body = ready.json()
        assert ready.status_code == 200 and body["log"]["dead_letters"] == 1, body
        assert any("dead-letter" in p for p in body["problems"]), body
        assert "nba_dead_letters 1.0" in metrics, [line for line in metrics.splitlines() if "nba_" in line]
        logged = set(log.read().customer_id.tolist())
        assert {"good-1", "good-2", "after-restart"} <= logged and not any("\x00" in c for c in logged)
        assert "poison" in (tmp / "spool" / "dead-letter.jsonl").read_text()
    finally:
        log.drop()
        log.close()
