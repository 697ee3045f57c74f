"""The real service in write-behind mode (``NBA_SPOOL_DIR``): answers once the spool is fsynced, feedback
right after a decision, a worker (with its replayer) killed with SIGKILL loses nothing acknowledged, and a
clean stop leaves everything in the log."""

from __future__ import annotations

import pytest
from svc_helpers import customer, start_server

from nba.log.store import DecisionLog


@pytest.fixture(scope="module")
def server(registry, workdir):
    tmp = workdir / "spool"
    tmp.mkdir()
    s = start_server(
        tmp,
        {"NBA_TRACKING_URI": registry.uri, "NBA_LOG_URL": f"sqlite:///{tmp}/decisions.db"},
        via="nba",
        args=["--spool-dir", str(tmp / "spool")],
    )
    s.db = f"sqlite:///{tmp}/decisions.db"
    yield s
    s.stop()


def test_decide_then_feedback_at_once(server):
    with server.client() as c:
        d = c.post("/decide", json=customer("wb-1", now="2025-06-03T08:00:00Z")).json()
        r = c.post("/feedback", json={"decision_id": d["decision_id"], "event": "opened"})
        assert r.status_code == 200 and r.json()["recorded"] is True
        again = c.post("/feedback", json={"decision_id": d["decision_id"], "event": "opened"})
        assert again.json()["recorded"] is False
        assert c.post("/feedback", json={"decision_id": "nope", "event": "opened"}).status_code == 404
        batch = c.post("/decide_batch", json={"customers": [customer(f"wb-b{i}") for i in range(50)]}).json()
        assert len(batch["decisions"]) == 50
    with DecisionLog(server.db) as log:
        ids = set(log.read().decision_id.tolist())
    assert d["decision_id"] in ids


def test_killed_worker_and_replayer_lose_no_acknowledged_decision(server):
    """SIGKILL the worker and its replayer while decisions flow: the next worker replays the spool first."""
    acked = server.kill_workers_under_load(
        lambda c, k, i: c.post(
            "/decide_batch", json={"customers": [customer(f"wk-{k}-{i}-{j}") for j in range(20)]}, timeout=5
        ),
        clients=4,
        at_least=400,
    )
    assert len(acked) >= 400
    server.wait_ready(timeout=90)  # the arbiter restarts the worker: it replays the spool before it serves
    with DecisionLog(server.db) as log:
        logged = set(log.read().decision_id.tolist())
    missing = [d for d in acked if d not in logged]
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged decisions lost"
    with server.client() as c:
        assert c.post("/decide", json=customer()).status_code == 200


def test_a_clean_stop_writes_the_spool_to_the_log(registry, workdir):
    """SIGTERM to the server: the worker answers what it holds and its replayer (which the process
    manager's signal to the worker's group must not reach) writes the spool to the log before exiting."""
    tmp = workdir / "spool-stop"
    tmp.mkdir()
    db = f"sqlite:///{tmp}/decisions.db"
    s = start_server(
        tmp, {"NBA_TRACKING_URI": registry.uri, "NBA_LOG_URL": db}, via="nba", args=["--spool-dir", str(tmp / "spool")]
    )
    try:
        acked = []
        with s.client() as c:
            for k in range(5):
                r = c.post("/decide_batch", json={"customers": [customer(f"st-{k}-{j}") for j in range(40)]})
                assert r.status_code == 200
                acked += [d["decision_id"] for d in r.json()["decisions"]]
    finally:
        s.stop()
    with DecisionLog(db) as log:
        logged = set(log.read().decision_id.tolist())
    assert set(acked) <= logged and len(acked) == 200
    assert (tmp / "spool" / "decisions.spool").stat().st_size == 0
