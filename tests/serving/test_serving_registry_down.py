"""Registry unreachable at start: the service serves the last good local copy, or reports not ready."""

from __future__ import annotations

import pytest
from svc_helpers import customer, start_server

from nba.log.store import DecisionLog
from serving.model_store import ModelStore

DOWN = "http://127.0.0.1:9"  # nothing listens there


@pytest.fixture(scope="module")
def servers(registry, workdir):
    tmp = workdir / "down"
    (tmp / "cached").mkdir(parents=True)
    (tmp / "empty").mkdir()
    store = ModelStore(registry.uri, "nba-policy", ("champion",), tmp / "cached" / "cache", poll_s=0)
    assert store.refresh() and store.ready  # what an earlier run left in its cache
    common = {"NBA_TRACKING_URI": DOWN, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"}
    cached = start_server(tmp / "cached", common | {"NBA_LOG_URL": f"sqlite:///{tmp}/cached/d.db"}, wait=False)
    empty = start_server(tmp / "empty", common | {"NBA_LOG_URL": f"sqlite:///{tmp}/empty/d.db"}, wait=False)
    try:
        cached.wait_ready()
        empty.wait_ready(expect=503)
        yield cached, empty, tmp
    finally:
        cached.stop()
        empty.stop()


def test_serves_the_cached_copy(servers, registry):
    cached, _, _ = servers
    with cached.client() as c:
        d = c.post("/decide", json=customer()).json()
    assert d["policy_version"] == registry.versions["business_as_usual"]
    assert "local cache" in cached.log_text()


def test_not_ready_without_any_copy(servers):
    _, empty, tmp = servers
    with empty.client() as c:
        assert c.get("/readyz").status_code == 503
        r = c.post("/decide", json=customer())
        assert r.status_code == 503 and "no policy" in r.text
        assert c.get("/livez").status_code == 200
    with DecisionLog(f"sqlite:///{tmp}/empty/d.db") as log:
        assert log.layout() is None
