"""A brand's world end to end, as the README shows it, on the telecom example: the operator's CSV log is
generated, imported onto its deployment (nba import), two learners trained on it and registered
(nba train), evaluated off-policy (nba evaluate), the better one promoted (nba promote), served over HTTP
by ``nba serve --deployment`` (BentoML, a real SQLite log), decided for with the declared attributes, and
told what the customer did (feedback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from nba.deployment import Deployment
from nba.log import DecisionLog
from tests.serving.svc_helpers import start_server

ROOT = Path(__file__).resolve().parents[2]
WORLD = ROOT / "examples" / "telecom" / "deployment.toml"
runner = CliRunner()


@pytest.fixture
def store(tmp_path, monkeypatch):
    """The nba commands' MLflow store: a SQLite file of its own."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri


def _nba(*args: str) -> str:
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return " ".join(res.output.split())


def test_import_train_evaluate_promote_serve_feedback(store, tmp_path):
    data = tmp_path / "telecom.csv"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "telecom" / "generate.py"),
            "--out",
            str(data),
            "--customers",
            "100",
            "--days",
            "4",
            "--seed",
            "3",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    log = f"sqlite:///{tmp_path / 'telecom.db'}"
    out = _nba(
        "import",
        str(data),
        "--deployment",
        str(WORLD),
        "--log",
        log,
        "--customer-id",
        "customer_id",
        "--decision-id",
        "decision_id",
        "--time",
        "time",
        "--channel",
        "channel",
        "--offer",
        "offer",
        "--send-hour",
        "send_hour",
        "--propensity",
        "propensity",
        "--reward",
        "reward",
        "--opted-out",
        "opted_out",
    )
    assert "400 new decisions" in out and "801 actions" in out
    assert "registered version 1" in _nba("train", "--policy", "linucb", "--source", log, "--challenger")
    assert "champion is version 1" in _nba("promote")
    assert "registered version 2" in _nba("train", "--policy", "lints", "--source", log, "--challenger")
    out = _nba("evaluate", "--policy", "@champion", "--policy", "@challenger", "--log", log)
    assert "linucb" in out and "lints" in out and "a brand's log has no simulator behind it" in out
    _nba("promote")  # the challenger replaces the champion only if its paired lift over it clears 0

    served_log = f"sqlite:///{tmp_path / 'served.db'}"
    server = start_server(
        tmp_path,
        {"NBA_CACHE_DIR": str(tmp_path / "cache")},
        via="nba",
        args=["--tracking-uri", store, "--log-url", served_log, "--deployment", str(WORLD)],
    )
    try:
        with server.client() as c:
            ready = c.get("/readyz").json()
            assert ready["policies"]["champion"]["policy"] in ("linucb", "lints"), ready
            answer = c.post(
                "/decide_batch",
                json={
                    "now": "2026-06-02T09:30:00Z",
                    "alternatives": 2,
                    "customers": [
                        {
                            "customer_id": f"cust-{i}",
                            "timezone": "Europe/Paris",
                            "attributes": {
                                "plan_type": ("prepaid", "postpaid")[i % 2],
                                "tenure_days": 100 + 50 * i,
                                "monthly_revenue": 20 + i,
                                "app_user": True,
                                "whatsapp_opt_in": i % 3 == 0,
                            },
                        }
                        for i in range(20)
                    ],
                },
            )
            assert answer.status_code == 200, answer.text
            decisions = answer.json()["decisions"]
            offers = {o.name: o.features for o in Deployment.load(WORLD).offers}
            for d in decisions:
                assert d["offer"] is None or d["offer_features"] == offers[d["offer"]]
            first = decisions[0]["decision_id"]
            fb = c.post(
                "/feedback",
                json={"decision_id": first, "event": "converted", "value": 8.0, "time": "2026-06-02T15:00:00Z"},
            )
            assert fb.status_code == 200 and fb.json()["recorded"] is True
            bad = c.post("/decide", json={"customer_id": "x", "attributes": {"plan_type": "enterprise"}})
            assert bad.status_code == 422 and bad.json()["error"].startswith("attributes.plan_type: unknown value")
    finally:
        server.stop()
    with DecisionLog(served_log) as stored:
        assert stored.count_decisions() == 20 and stored.count_outcomes() == 1

    # the operator adds an offer: the served log moves onto the new catalogue (nba deployment update), the
    # service serves the new file on it, and the champion, which scores offers by their features, decides the
    # new offer without retraining
    doc = Deployment.load(WORLD).to_dict()
    boost = doc["offers"]["data_boost_10gb"]
    doc["offers"] = {"data_boost_15gb": {**boost, "features": {**boost["features"], "margin": 6.0}}, **doc["offers"]}
    new_world = tmp_path / "deployment.yaml"
    new_world.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = _nba("deployment", "update", str(new_world), "--log", served_log)
    assert "moved 20 decisions onto 'telco-retention'" in out and "offers added: ['data_boost_15gb']" in out
    server = start_server(
        tmp_path,
        {"NBA_CACHE_DIR": str(tmp_path / "cache")},
        via="nba",
        args=["--tracking-uri", store, "--log-url", served_log, "--deployment", str(new_world)],
    )
    try:
        with server.client() as c:
            answer = c.post(
                "/decide_batch",
                json={
                    "now": "2026-06-03T09:30:00Z",
                    "customers": [
                        {
                            "customer_id": f"cust-{i}",
                            "timezone": "Europe/Paris",
                            "offers": ["data_boost_15gb"],
                            "attributes": {
                                "plan_type": "prepaid",
                                "tenure_days": 100 + 50 * i,
                                "data_usage_gb": 12.0,
                                "monthly_revenue": 20 + i,
                                "app_user": True,
                                "whatsapp_opt_in": True,
                            },
                        }
                        for i in range(20)
                    ],
                },
            )
            assert answer.status_code == 200, answer.text
            chosen = [d["offer"] for d in answer.json()["decisions"]]
            assert set(chosen) <= {None, "data_boost_15gb"} and "data_boost_15gb" in chosen, chosen
    finally:
        server.stop()
    with DecisionLog(served_log) as stored:
        assert stored.count_decisions() == 40
