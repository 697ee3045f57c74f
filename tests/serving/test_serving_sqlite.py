"""The real service (``nba serve``) on SQLite with a bearer token: decisions, batches, feedback, bad input,
caps from the log, hot swap of @champion under load, and a worker killed with SIGKILL."""

from __future__ import annotations

import json
import math
import threading
import time

import numpy as np
import pytest
from svc_helpers import customer, start_server

from nba.log.store import DecisionLog
from serving.schemas import DecideBatchResponse, Decision

TOKEN = "s3cret-token"
NOW = "2025-06-03T08:00:00Z"


@pytest.fixture(scope="module")
def server(registry, workdir):
    tmp = workdir / "sqlite"
    tmp.mkdir()
    s = start_server(
        tmp,
        {
            "NBA_TRACKING_URI": registry.uri,
            "NBA_LOG_URL": f"sqlite:///{tmp}/decisions.db",
            "NBA_TOKEN": TOKEN,
            "NBA_CHANNEL_COSTS": "sms=0.05,direct_mail=1",
        },
        via="nba",
    )
    s.db = f"sqlite:///{tmp}/decisions.db"
    yield s
    s.stop()


@pytest.fixture(scope="module")
def http(server):
    with server.client(TOKEN) as c:
        yield c


def count(server) -> int:
    with DecisionLog(server.db) as log:
        return log.count_decisions() if log.layout() is not None else 0


def test_decide_answers_and_logs_the_decision(server, http):
    r = http.post("/decide", json=customer("alice", now=NOW, cart_active=True, alternatives=3))
    assert r.status_code == 200, r.text
    d = r.json()
    Decision.model_validate(d)  # the response has the declared layout
    assert d["customer_id"] == "alice" and d["policy"] == "business_as_usual" and d["policy_version"] == "1"
    assert 0 < d["propensity"] <= 1 and d["experiment"] == "" and d["arm"] == ""
    assert d["channel"] is not None, "a new customer with consent everywhere gets a welcome message"
    assert d["send_at_local"].endswith("+02:00")  # Paris in June
    assert d["alternatives"] and d["alternatives"][0]["probability"] > 0
    with DecisionLog(server.db) as log:
        batch = log.read()
    row = list(batch.decision_id).index(d["decision_id"])
    assert batch.customer_id[row] == "alice" and batch.policy_version[row] == "1"
    assert math.isclose(batch.propensity[row], d["propensity"])
    assert batch.eligible[row, 0] and batch.context.shape[1] > 10


def test_caps_count_decisions_as_soon_as_made(http):
    """Ten decisions for one customer at the same moment: the contact policy sees each earlier one."""
    sends = []
    for _ in range(10):
        d = http.post("/decide", json=customer("bob", now=NOW, timezone="UTC")).json()
        if d["channel"] is not None:
            sends.append(np.datetime64(d["send_at"].rstrip("Z")).astype("datetime64[s]").astype(float) / 3600)
    assert 1 <= len(sends) <= 2, sends  # at most two messages a day over all channels
    assert all(abs(a - b) >= 4 for i, a in enumerate(sends) for b in sends[i + 1 :]), "minimum gap of 4 h"


def test_consent_and_channel_restrictions_are_enforced(http):
    for i in range(5):
        d = http.post(
            "/decide", json=customer(f"optout-{i}", consent={"email": False}, channels=["email", "sms"], now=NOW)
        ).json()
        assert d["channel"] is None, d


def test_decide_batch(http, server):
    before = count(server)
    body = {
        "now": NOW,
        "alternatives": 2,
        "customers": [customer(f"batch-{i}", timezone=["UTC", "Asia/Tokyo", "-05:00"][i % 3]) for i in range(300)],
    }
    r = http.post("/decide_batch", json=body)
    assert r.status_code == 200, r.text
    DecideBatchResponse.model_validate(r.json())
    out = r.json()["decisions"]
    assert [d["customer_id"] for d in out] == [f"batch-{i}" for i in range(300)]
    assert len({d["decision_id"] for d in out}) == 300
    assert count(server) == before + 300


@pytest.mark.parametrize(
    "body, status, field",
    [
        ({"customers": [customer("dup"), customer("dup")]}, 422, "customers[1].customer_id"),
        ({"customers": [customer(), customer(), customer(timezone="Mars/Olympus")]}, 422, "customers[2].timezone"),
        ({"customers": [customer(segment="boomer")]}, 422, "customers[0].segment"),
        ({"customers": []}, 400, "customers"),
        ({"customers": [customer(tenure_days=-1)]}, 400, "tenure_days"),
    ],
)
def test_bad_batches_are_refused_whole(http, server, body, status, field):
    before = count(server)
    r = http.post("/decide_batch", json=body)
    assert r.status_code == status, r.text
    assert field in r.text
    assert count(server) == before


def test_oversize_batch_is_refused(http, server):
    before = count(server)
    body = {"customers": [{"customer_id": f"x{i}", "segment": "genz", "tenure_days": 1} for i in range(10_001)]}
    r = http.post("/decide_batch", json=body)
    assert r.status_code == 400 and "customers" in r.text and "10000" in r.text
    assert count(server) == before


@pytest.mark.parametrize(
    "body, status, field",
    [
        ({"segment": "genz", "tenure_days": 1}, 400, "customer_id"),
        (customer(tenure_days="long"), 400, "tenure_days"),
        (customer(segment="boomer"), 422, "segment"),
        (customer(timezone="Nowhere/Land"), 422, "timezone"),
        (customer(timezone="+15:00"), 422, "timezone"),
        (customer(consent={"fax": True}), 422, "consent"),
        (customer(channels=["pigeon"]), 422, "channels"),
        (customer(stage="zombie"), 400, "stage"),
        (customer(colour="red"), 400, "colour"),
    ],
)
def test_bad_input_gets_4xx_naming_the_field_and_stores_nothing(http, server, body, status, field):
    before = count(server)
    r = http.post("/decide", json=body)
    assert r.status_code == status, r.text
    assert field in r.text
    assert count(server) == before


def test_nan_and_malformed_json_are_refused_without_tracebacks(http, server):
    before = count(server)
    body = json.dumps(customer()).replace('"tenure_days": 5.0', '"tenure_days": NaN')
    r = http.post("/decide", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "tenure_days" in r.text
    r = http.post("/decide", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert count(server) == before
    time.sleep(0.5)
    assert "Traceback" not in server.log_text()


def test_token_is_required(server, http):
    before = count(server)
    with server.client() as anon, server.client("wrong") as wrong:
        for c in (anon, wrong):
            assert c.post("/decide", json=customer()).status_code == 401
            assert c.post("/decide_batch", json={"customers": [customer()]}).status_code == 401
            assert c.post("/feedback", json={"decision_id": "x", "event": "opened"}).status_code == 401
        assert anon.get("/readyz").status_code == 200
    assert count(server) == before


def test_feedback_is_idempotent_and_checks_the_decision(http, server):
    d = http.post("/decide", json=customer("carol", now=NOW)).json()
    fb = {"decision_id": d["decision_id"], "event": "converted", "time": "2025-06-03T12:00:00Z", "value": 30.0}
    first = http.post("/feedback", json=fb)
    assert first.status_code == 200 and first.json()["recorded"] is True
    again = http.post("/feedback", json=fb)
    assert again.status_code == 200 and again.json()["recorded"] is False
    missing = http.post("/feedback", json=fb | {"decision_id": "no-such-decision"})
    assert missing.status_code == 404 and "decision_id" in missing.text
    assert http.post("/feedback", json=fb | {"event": "exploded"}).status_code == 400
    with DecisionLog(server.db) as log:
        assert log.count_outcomes() == 1


def test_openapi_metrics_and_health(server, http):
    spec = http.get("/docs.json").json()
    for path in ("/decide", "/decide_batch", "/feedback"):
        assert path in spec["paths"]
    assert "c-000123" in json.dumps(spec["components"]), "request examples in the OpenAPI spec"
    d = http.post("/decide", json=customer("metrics-1")).json()  # its own, should the test run alone
    metrics = http.get("/metrics").text
    assert "nba_decisions_total" in metrics and f'channel="{d["channel"] or "none"}"' in metrics
    assert http.get("/livez").status_code == 200 and http.get("/healthz").status_code == 200


def test_champion_moves_under_load_without_a_failed_request(server, http, registry):
    statuses, versions = [], []
    stop = threading.Event()

    def hammer() -> None:
        with server.client(TOKEN) as c:
            while not stop.is_set():
                r = c.post("/decide", json=customer())
                statuses.append(r.status_code)
                if r.status_code == 200:
                    versions.append(r.json()["policy_version"])

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        registry.set_alias("champion", registry.versions["uniform_random"])
        deadline = time.time() + 30
        while time.time() < deadline and (not versions or versions[-1] != registry.versions["uniform_random"]):
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
        registry.set_alias("champion", registry.versions["business_as_usual"])
    assert statuses and set(statuses) == {200}, sorted(set(statuses))
    assert versions[0] == registry.versions["business_as_usual"]
    assert versions[-1] == registry.versions["uniform_random"]
    assert http.post("/decide", json=customer()).status_code == 200


def test_killed_worker_loses_no_acknowledged_decision(server):
    """SIGKILL the worker process while decisions flow: every acknowledged decision is in the log."""
    acked = server.kill_workers_under_load(
        lambda c, k, i: c.post("/decide", json=customer(f"kill-{k}-{i}"), timeout=5),
        clients=4,
        at_least=20,
        token=TOKEN,
    )
    assert len(acked) >= 20
    with DecisionLog(server.db) as log:
        logged = set(log.read().decision_id.tolist())
    missing = [d for d in acked if d not in logged]
    assert not missing, f"{len(missing)} acknowledged decisions lost"
    server.wait_ready(timeout=90)  # the arbiter restarts the worker, which serves again
    with server.client(TOKEN) as c:
        assert c.post("/decide", json=customer()).status_code == 200
