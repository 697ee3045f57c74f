"""The real service under hostile input (each case a finding of a hostile test run): content types, values
that must be refused, text no log can store, error bodies that must not echo the input, metrics that must
not grow with unknown paths, the token on metrics and docs, and a readiness answer that says what is wrong.
Every refused request stores nothing."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from svc_helpers import customer, start_server

from nba.log.store import DecisionLog

TOKEN = "hostile-token"
NOW = "2025-06-03T08:00:00Z"


@pytest.fixture(scope="module")
def server(registry, workdir):
    tmp = workdir / "hostile"
    tmp.mkdir()
    s = start_server(
        tmp,
        {
            "NBA_TRACKING_URI": registry.uri,
            "NBA_LOG_URL": f"sqlite:///{tmp}/decisions.db",
            "NBA_TOKEN": TOKEN,
            "NBA_TOKEN_SCOPE": "all",
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


def stored(server) -> tuple[int, int]:
    with DecisionLog(server.db) as log:
        return (log.count_decisions(), log.count_outcomes()) if log.layout() is not None else (0, 0)


@pytest.fixture()
def unchanged(server):
    """The test's requests must store nothing."""
    before = stored(server)
    yield
    assert stored(server) == before


def raw(http: httpx.Client, path: str, body: str, content_type: str | None = "application/json") -> httpx.Response:
    headers = {} if content_type is None else {"Content-Type": content_type}
    return http.post(path, content=body.encode("utf-8", "surrogatepass"), headers=headers)


BODY = json.dumps(customer("ct-1"))


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", None, "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonp"],
)
def test_bodies_not_declared_json_get_415(http, unchanged, content_type):
    for path in ("/decide", "/decide_batch", "/feedback"):
        r = raw(http, path, BODY, content_type)
        assert r.status_code == 415, (path, r.text)
        assert r.json()["error"].startswith("content-type: expected application/json")


def test_a_form_is_never_stored_as_a_decision(http, unchanged):
    r = http.post("/decide", data={"customer_id": "x", "segment": "genz", "tenure_days": "1"})
    assert r.status_code == 415
    files = http.post("/decide", files={"customer_id": ("a", b"x")})
    assert files.status_code == 415


def test_json_with_a_charset_is_json(http):
    assert raw(http, "/decide", BODY, "application/json; charset=utf-8").status_code == 200


@pytest.mark.parametrize(
    "body, status, field",
    [
        (
            '{"customer_id": "a", "segment": "genz", "tenure_days": 1, "n_purchases": 1' + "0" * 400 + "}",
            400,
            "n_purchases",
        ),
        ('{"customer_id": "a", "segment": "genz", "tenure_days": 1e400}', 400, "tenure_days"),
        (json.dumps(customer(now="9999-12-31T23:59:59Z", timezone="Europe/Paris")), 422, "now"),
        (json.dumps(customer(now="0001-01-01T00:00:00Z")), 422, "now"),
        (json.dumps(customer(now=-1e12)), 422, "now"),
        (json.dumps(customer(now=True)), 400, "now"),
        (json.dumps(customer(last_purchase_at="0001-01-01T00:00:00Z", now=NOW)), 422, "last_purchase_at"),
        (json.dumps(customer(alternatives=False)), 400, "alternatives"),
        (json.dumps(customer(tenure_days=True)), 400, "tenure_days"),
        (json.dumps(customer(cart_active=1)), 400, "cart_active"),
        (json.dumps(customer(consent={"email": 1})), 400, "consent"),
        (json.dumps(customer("poison\u0000id")), 400, "customer_id"),
        # JSON's parser refuses a lone surrogate (no log could store it)
        ('{"customer_id": "lone \\ud800 surrogate", "segment": "genz", "tenure_days": 1}', 400, "body"),
        (json.dumps(customer(timezone="Europe/Par\u0000is")), 400, "timezone"),
        (json.dumps(customer(channels=["em\u0000ail"])), 400, "channels"),
    ],
)
def test_values_that_must_be_refused(http, unchanged, body, status, field):
    r = raw(http, "/decide", body)
    assert r.status_code == status, r.text
    assert r.json()["error"].startswith(field), r.text


def test_a_refused_row_names_its_place_in_a_batch(http, unchanged):
    body = {"customers": [customer(), customer(), customer("bad\u0000")]}
    r = http.post("/decide_batch", json=body)
    assert r.status_code == 400 and r.json()["error"].startswith("customers[2].customer_id"), r.text


def test_feedback_values_that_must_be_refused(http, server):
    d = http.post("/decide", json=customer(now=NOW)).json()
    before = stored(server)
    ok = {"decision_id": d["decision_id"], "event": "converted", "time": "2025-06-03T12:00:00Z", "value": 30.0}
    for bad, status, field in [
        ({"value": -1e308}, 400, "value"),
        ({"value": 1e300}, 400, "value"),
        ({"value": False}, 400, "value"),
        ({"time": "0001-01-01T00:00:00Z"}, 422, "time"),
        ({"time": "2025-06-03T07:00:00Z"}, 422, "time"),  # before its decision
        ({"decision_id": "x\u0000y"}, 400, "decision_id"),
    ]:
        r = http.post("/feedback", json=ok | bad)
        assert r.status_code == status, (bad, r.text)
        assert r.json()["error"].startswith(field), (bad, r.text)
    assert stored(server) == before


def test_feedback_at_its_decisions_time_is_taken(http):
    d = http.post("/decide", json=customer(now=NOW)).json()
    r = http.post("/feedback", json={"decision_id": d["decision_id"], "event": "opened", "time": NOW})
    assert r.status_code == 200 and r.json()["recorded"] is True


def test_error_bodies_never_echo_a_large_input(http, unchanged):
    huge = "x" * 1_000_000
    for body in (
        customer(segment=huge),
        customer(huge[:201]),
        customer(timezone=huge[:64]),
        customer(segment=huge[:64]),
        customer(channels=[huge[:64]]),
    ):
        r = http.post("/decide", json=body)
        assert 400 <= r.status_code < 500 and len(r.content) < 2_000, (r.status_code, len(r.content))


def test_unknown_paths_share_one_metric_label(http):
    def size() -> int:
        return len(http.get("/metrics").content)

    for i in range(50):  # the first unknown path adds its series
        http.get(f"/warm-{i}")
    before = size()
    for _ in range(300):
        assert http.get(f"/{uuid.uuid4().hex}/{uuid.uuid4().hex}").status_code == 404
    text = http.get("/metrics").text
    assert size() - before < 2_000, "unknown paths must not add metric series"
    assert 'endpoint="/{unknown}"' in text and "/warm-" not in text


def test_token_scope_all_guards_metrics_and_docs_but_not_the_probes(server):
    with server.client() as anon:
        for path in ("/metrics", "/docs.json", "/"):
            assert anon.get(path).status_code == 401, path
        for path in ("/livez", "/healthz", "/readyz"):
            assert anon.get(path).status_code == 200, path
    with server.client(TOKEN) as c:
        assert c.get("/metrics").status_code == 200 and c.get("/docs.json").status_code == 200


def test_readiness_says_what_is_served(http, registry):
    r = http.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["ready"] is True and body["log"]["mode"] == "write-through"
    assert body["policies"]["champion"]["version"] == registry.versions["business_as_usual"]
    assert isinstance(body["problems"], list)


def test_the_spec_states_every_answer(http):
    spec = http.get("/docs.json").json()
    assert spec["openapi"].startswith("3.0")
    decide = spec["paths"]["/decide"]["post"]["responses"]
    assert {"200", "400", "401", "415", "422", "503", "504"} <= set(decide)
    decision = spec["components"]["schemas"]["Decision"]["properties"]
    assert decision["channel"]["nullable"] is True and decision["send_hour_local"]["nullable"] is True
    detail = spec["components"]["schemas"]["Error"]["properties"]["detail"]
    assert detail["type"] == "array"
    assert '{"type": "null"}' not in json.dumps(spec), "OpenAPI 3.0 has no null type"
    segment = spec["components"]["schemas"]["DecideRequest"]["properties"]["segment"]
    assert "genz" in segment["enum"]


def test_a_second_instance_on_the_host_leaves_the_first_ones_metrics(registry, workdir):
    """BentoML empties its Prometheus files at every start: ``nba serve`` gives each instance its own home."""
    tmp = workdir / "two-instances"
    tmp.mkdir()
    env = {"NBA_TRACKING_URI": registry.uri, "NBA_LOG_URL": f"sqlite:///{tmp}/decisions.db"}
    first = start_server(tmp, env, via="nba", own_home=False)
    try:
        with first.client() as c:
            assert c.post("/decide", json=customer()).status_code == 200
            assert "nba_decisions_total" in c.get("/metrics").text
            second = start_server(tmp, env, via="nba", own_home=False)
            second.stop()
            assert "nba_decisions_total" in c.get("/metrics").text
    finally:
        first.stop()
