"""``nba journeys``, ``nba scenario`` and ``nba deployment``, run as a user runs them."""

import json
from pathlib import Path

from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def test_scenario_check_accepts_the_default_and_names_the_bad_field(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text("[channels.sms]\ncost = 0.08\n")
    res = runner.invoke(app, ["scenario", "check", str(good)])
    assert res.exit_code == 0, res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("channels:\n  sms:\n    cost: -1\n")
    res = runner.invoke(app, ["scenario", "check", str(bad)])
    assert res.exit_code == 2
    assert "channels.sms.cost" in res.output


def test_scenario_show_prints_the_resolved_scenario():
    res = runner.invoke(app, ["scenario", "show"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert set(data["channels"]) == {"email", "sms", "push", "in_app", "web_push", "direct_mail", "social_ad"}


def test_deployment_check_and_show(tmp_path):
    telecom = Path(__file__).resolve().parents[2] / "examples" / "telecom" / "deployment.toml"
    res = runner.invoke(app, ["deployment", "check", str(telecom)])
    assert res.exit_code == 0, res.output
    assert "telco-retention" in res.output and "801" in res.output and "sha256:" in res.output
    bad = tmp_path / "bad.toml"
    bad.write_text('[deployment]\nname = "x"\n[channels.fax]\ncost = -1\n')
    res = runner.invoke(app, ["deployment", "check", str(bad)])
    assert res.exit_code == 2 and "channels.fax.cost" in res.output
    res = runner.invoke(app, ["deployment", "show"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["digest"].startswith("sha256:") and "email" in data["channels"]


def test_scenario_report_beside_a_log(tmp_path):
    from envs import log_report
    from envs.scenario import Scenario
    from nba.log.store import DecisionLog

    url = f"sqlite:///{tmp_path}/theirs.db"
    with DecisionLog(url) as log:
        log_report.simulate_log(
            log, Scenario.default(), customers=300, days=4, seed=0, purpose="test/training/cli", warmup_days=2
        )
    res = runner.invoke(app, ["scenario", "report", "--log", url, "--n", "300", "--days", "4", "--warmup-days", "2"])
    assert res.exit_code == 0, res.output
    assert "contact rate" in res.output and "opened / delivered" in res.output
    assert "close" in res.output
    res = runner.invoke(app, ["scenario", "report", "--log", f"sqlite:///{tmp_path}/missing.db"])
    assert res.exit_code == 2 and "cannot read the log" in res.output


def test_simulate_prints_a_value_table():
    res = runner.invoke(app, ["journeys", "--customers", "300", "--days", "7", "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert "business_as_usual" in res.output and "no_contact" in res.output


def test_unknown_policy_lists_the_valid_ones():
    res = runner.invoke(app, ["journeys", "--policy", "magic", "--customers", "10", "--days", "1"])
    assert res.exit_code == 2
    assert "business_as_usual" in res.output
