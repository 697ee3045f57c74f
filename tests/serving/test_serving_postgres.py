"""The service on a PostgreSQL decision log (isolated table prefix) with a champion/challenger experiment:
arms by hashing, versions per arm, feedback, and no acknowledged record lost when the worker is killed."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest
from svc_helpers import customer, postgres_or_skip, start_server

from nba.ab import assign
from nba.log.store import DecisionLog

EXPERIMENT = "exp-serving"


@pytest.fixture(scope="module")
def pg_server(registry, workdir):
    url = postgres_or_skip()
    namespace = f"t{os.getpid()}_{int(time.time())}"
    registry.set_alias("challenger", registry.versions["uniform_random"])
    tmp = workdir / "postgres"
    tmp.mkdir()
    s = start_server(
        tmp,
        {
            "NBA_TRACKING_URI": registry.uri,
            "NBA_LOG_URL": url,
            "NBA_LOG_NAMESPACE": namespace,
            "NBA_EXPERIMENT": EXPERIMENT,
            "NBA_SPLITS": "champion=0.5,challenger=0.5",
        },
    )
    s.log = DecisionLog(url, namespace=namespace)
    yield s
    s.stop()
    s.log.drop()
    s.log.close()


def test_arms_by_hashing_and_versions_per_arm(pg_server, registry):
    ids = [f"pg-{i}" for i in range(40)]
    with pg_server.client() as c:
        out = c.post("/decide_batch", json={"customers": [customer(i) for i in ids]}).json()["decisions"]
        one = c.post("/decide", json=customer("pg-single")).json()
    expected = assign(EXPERIMENT, ids, {"champion": 0.5, "challenger": 0.5})
    assert [d["arm"] for d in out] == expected.tolist()
    assert {d["arm"] for d in out} == {"champion", "challenger"}
    for d in out:
        want = "business_as_usual" if d["arm"] == "champion" else "uniform_random"
        assert d["policy"] == want and d["policy_version"] == registry.versions[want]
        assert d["experiment"] == EXPERIMENT
    batch = pg_server.log.read(experiment=EXPERIMENT)
    logged = dict(zip(batch.decision_id.tolist(), batch.arm.tolist(), strict=True))
    assert all(logged[d["decision_id"]] == d["arm"] for d in out)
    assert one["decision_id"] in logged


def test_feedback_on_postgres(pg_server):
    with pg_server.client() as c:
        d = c.post("/decide", json=customer("pg-fb")).json()
        fb = {"decision_id": d["decision_id"], "event": "opened"}
        assert c.post("/feedback", json=fb).json()["recorded"] is True
        assert c.post("/feedback", json=fb).json()["recorded"] is False
        assert c.post("/feedback", json=fb | {"decision_id": "nope"}).status_code == 404
    assert pg_server.log.count_outcomes() == 1


def test_two_replicas_on_one_log_respect_the_caps(pg_server, workdir):
    """A second server process over the same PostgreSQL log (a replica): concurrent decisions for one
    customer on both never pass the contact policy (at most two contacts, four hours apart)."""
    tmp = workdir / "postgres-replica"
    tmp.mkdir()
    other = start_server(tmp, {k: v for k, v in pg_server.env.items() if k.startswith("NBA_") and k != "NBA_CACHE_DIR"})
    body = customer("pg-replica-twin", now="2025-06-10T08:00:00Z", timezone="UTC")
    try:
        with pg_server.client() as a, other.client() as b, ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda c: c.post("/decide", json=body), [a, b] * 8))
    finally:
        other.stop()
    assert all(r.status_code == 200 for r in answers)
    sends = sorted(
        datetime.fromisoformat(r.json()["send_at"]).timestamp() / 3600
        for r in answers
        if r.json()["channel"] is not None
    )
    assert 1 <= len(sends) <= 2 and all(y - x >= 4 for x, y in zip(sends, sends[1:], strict=False))
    served_by = {r.json()["decision_id"][:8] for r in answers}
    assert len(served_by) == 2  # both replicas decided


def test_killed_worker_loses_nothing_on_postgres(pg_server):
    def send(c, k, i):
        return c.post("/decide_batch", json={"customers": [customer(f"pgk-{k}-{i}-{j}") for j in range(5)]}, timeout=5)

    acked = pg_server.kill_workers_under_load(send, clients=3, at_least=50)
    assert len(acked) >= 50
    logged = set(pg_server.log.read().decision_id.tolist())
    assert not [d for d in acked if d not in logged]
