"""The MLflow jobs' commands (``nba import``, ``simulate``, ``train``, ``ab``, ``promotions``) and the
MLproject entry points that run them, as a user runs them."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def test_import_a_foreign_log_and_name_the_bad_cell(tmp_path):
    data = tmp_path / "offers.csv"
    rows = ["plan,arpu,offer,revenue"] + [
        f"{['prepaid', 'postpaid'][i % 2]},{i % 7 * 3.5},{i % 4},{'' if i % 5 else i % 3 * 10.0}" for i in range(200)
    ]
    data.write_text("\n".join(rows) + "\n")
    log = f"sqlite:///{tmp_path}/imported.db"
    args = [
        "import",
        str(data),
        "--action",
        "offer",
        "--context",
        "arpu",
        "--categorical",
        "plan",
        "--reward",
        "revenue",
        "--time-default",
        "490000",
        "--log",
        log,
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "200 new decisions" in res.output and "estimated" in res.output
    from nba.log.store import DecisionLog

    with DecisionLog(log) as stored:
        assert stored.count_decisions() == 200
        assert stored.layout().feature_names == ("arpu", "plan=postpaid", "plan=prepaid", "plan=<other>")
    bad = tmp_path / "bad.csv"
    bad.write_text("plan,arpu,offer\nprepaid,1.0,0\npostpaid,lots,1\n")
    res = runner.invoke(
        app,
        [
            "import",
            str(bad),
            "--action",
            "offer",
            "--context",
            "arpu",
            "--time-default",
            "490000",
            "--log",
            f"sqlite:///{tmp_path}/bad.db",
        ],
    )
    assert res.exit_code == 2 and "row 2, column 'arpu'" in res.output


def test_import_a_telecom_log_onto_its_deployment(tmp_path):
    root = Path(__file__).resolve().parents[2]
    data = tmp_path / "telecom.csv"
    subprocess.run(
        [
            sys.executable,
            str(root / "examples" / "telecom" / "generate.py"),
            "--out",
            str(data),
            "--customers",
            "120",
            "--days",
            "3",
            "--seed",
            "5",
        ],
        check=True,
        capture_output=True,
    )
    log = f"sqlite:///{tmp_path}/telecom.db"
    world = root / "examples" / "telecom" / "deployment.toml"
    res = runner.invoke(
        app,
        [
            "import",
            str(data),
            "--deployment",
            str(world),
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
            "--customer-id",
            "customer_id",
            "--decision-id",
            "decision_id",
            "--time",
            "time",
            "--log",
            log,
        ],
    )
    assert res.exit_code == 0, res.output
    assert "360 new decisions" in res.output and "801 actions" in res.output and "deployment: sha256:" in res.output
    assert "kept by the log" in " ".join(res.output.split())
    from nba.deployment import Deployment
    from nba.log.store import DecisionLog

    with DecisionLog(log) as stored:  # nba train and nba evaluate read the deployment from the log
        assert stored.deployment() == Deployment.load(world).to_dict()
    res = runner.invoke(app, ["import", str(data), "--channel", "channel", "--log", f"sqlite:///{tmp_path}/x.db"])
    assert res.exit_code == 2 and "deployment" in res.output


def test_mlproject_entry_point_runs_with_local_env(tmp_path):
    """``mlflow run . -e train -P policy=lints --env-manager local``: the same command line, its run
    the job's run, the policy registered in the store MLFLOW_TRACKING_URI names."""
    repo = Path(__file__).resolve().parents[2]
    mlflow_exe = Path(sys.executable).with_name("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = dict(
        os.environ,
        MLFLOW_TRACKING_URI=uri,
        MLFLOW_DISABLE_TELEMETRY="true",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    env.pop("MLFLOW_EXPERIMENT_ID", None)  # set by earlier tests' MLflow calls
    proc = subprocess.run(
        [
            str(mlflow_exe),
            "run",
            str(repo),
            "-e",
            "train",
            "-P",
            "policy=lints",
            "-P",
            "decisions=1000",
            "--env-manager",
            "local",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trained lints" in proc.stdout
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    (version,) = client.search_model_versions("name = 'nba-policy'")
    run = client.get_run(version.run_id)
    assert run.info.status == "FINISHED" and run.data.params["policy"] == "lints"
    assert run.data.tags["nba.job"] == "train" and "mlflow.project.entryPoint" in run.data.tags


def test_ab_guardrail_errors_and_the_promotions_report(tmp_path, monkeypatch):
    """A bad guardrail stops `nba ab` with the field named before any store exists; `nba promotions`
    writes its report on a store without promotions yet."""
    for k in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # restored afterwards: use_store sets it
    res = runner.invoke(app, ["ab", "--guardrail", "sends=sent:-5", "--root", str(tmp_path / "store")])
    assert res.exit_code == 2 and "guardrail 'sends': margin" in res.output
    assert not (tmp_path / "store").exists()
    res = runner.invoke(app, ["promotions", "--root", str(tmp_path / "store"), "--out", str(tmp_path / "report")])
    assert res.exit_code == 0, res.output
    assert "0 promotion(s)" in res.output
    assert (tmp_path / "report" / "report.md").exists() and (tmp_path / "report" / "predicted_vs_realised.png").exists()


def test_evaluate_refuses_a_bad_interval_grouping_or_threshold_before_any_store_exists(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # restored afterwards
    args = ["--policy", "business_as_usual", "--log", f"sqlite:///{tmp_path / 'none.db'}", "--interval", "bca"]
    res = runner.invoke(app, ["evaluate", *args, "--root", str(tmp_path / "store")])
    assert res.exit_code == 2 and "interval: unknown method 'bca'; valid: percentile, studentized" in res.output
    args[-2:] = ["--groups", "segment"]
    res = runner.invoke(app, ["evaluate", *args, "--root", str(tmp_path / "store")])
    assert res.exit_code == 2 and "groups: unknown grouping 'segment'; valid: channel," in res.output
    args[-2:] = ["--tau", "-1"]
    res = runner.invoke(app, ["evaluate", *args, "--root", str(tmp_path / "store")])
    assert res.exit_code == 2 and "tau: the switch-DR weight threshold must be >= 0, got -1.0" in res.output
    assert not (tmp_path / "store").exists()


UNREACHABLE = "postgresql+psycopg://nobody@127.0.0.1:1/nothing"  # no server listens on port 1


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["journeys", "--days", "0"], "Invalid value for '--days'"),
        (["evaluate", "--policy", "business_as_usual", "--seed", "-1"], "Invalid value for '--seed'"),
        (["train", "--policy", "lgbm_egreedy", "-p", "num_boost_round=many"], "param: num_boost_round: expected int"),
        (["train", "--policy", "lgbm_funnel", "-p", "num_leaves=1"], "param: num_leaves: must be >= 2, got 1"),
        (["simulate", "--log", UNREACHABLE, "--decisions", "100"], "log: cannot open decision log"),
        (["import", "in.csv", "--log", UNREACHABLE, "--action", "a", "--time-default", "1"], "log: cannot open"),
        (["ab", "--out", "in.csv/report"], "out: cannot create the folder 'in.csv/report'"),
        (["promotions", "--out", "in.csv/report"], "out: cannot create the folder 'in.csv/report'"),
        (["quickstart", "--out", "in.csv/runs"], "out: cannot create the folder 'in.csv/runs'"),
        (["scenario", "report", "--out", "in.csv/report"], "out: cannot create the folder 'in.csv/report'"),
        (["evaluate", "--policy", "business_as_usual", "--log", "sqlite:///typo.db"], "log: no SQLite database at"),
        (["evaluate", "--policy", "send_time", "--base", "lints"], "base: 'lints' is not one of the policies"),
        (["serve", "--port", "99999"], "Invalid value for '--port'"),
    ],
)
def test_a_bad_option_is_refused_naming_it(tmp_path, monkeypatch, args, said):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # restored afterwards
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.csv").write_text("a,b\n1,2\n")
    rooted = args[0] in ("evaluate", "train", "simulate", "ab", "promotions")
    res = runner.invoke(app, [*args, *(["--root", str(tmp_path / "store")] if rooted else [])])
    assert res.exit_code == 2 and said in " ".join(res.output.split()), res.output
    assert not (tmp_path / "typo.db").exists()  # a mistyped log is not created on the way
    if args[0] in ("train", "ab", "promotions"):  # refused before the store is made
        assert not (tmp_path / "store").exists()


def test_ab_prints_its_guardrails_whole_in_80_columns(tmp_path, monkeypatch):
    """`nba ab` of two rule-based policies in the simulator: each guardrail's row is readable in an
    80-column terminal (names, means, worsening, bound, margin, status and truth, nothing cut)."""
    from cli import common

    for k in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # restored afterwards: use_store sets it
    monkeypatch.setattr(common.console, "width", 80)
    args = ["ab", "--champion", "business_as_usual", "--challenger", "uniform_random", "--customers", "300"]
    args += ["--days", "3", "--pre-days", "0", "--root", str(tmp_path / "store"), "--out", str(tmp_path / "ab")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    table = res.output[res.output.index("guardrails (") : res.output.index("challenger - champion")]
    assert max(map(len, table.splitlines())) <= 80 and "…" not in table, table
    rows = {line.split("  ")[0]: line.split() for line in table.splitlines() if line[:1].isalpha()}
    assert {"opt-out rate", "churn rate", "sends per"} <= set(rows), table
    # sends per customer: uniform random sends more than business as usual, relative margin +100%
    sends = rows["sends per"]
    assert float(sends[3]) > float(sends[2]) and sends[6] == "+100.0%"
    assert sends[7] in ("holds", "breached", "inconclusive")
    assert (tmp_path / "ab" / "report.md").exists()


def test_simulate_a_brands_deployment_in_its_latent_world_then_train_on_it(tmp_path, monkeypatch):
    """nba simulate --deployment --world writes a log that holds the deployment (nba train finds it there) and
    a run with the world's exact mean expected reward; bad files stop before the store exists."""
    for k in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # restored afterwards: use_store sets it
    telecom = Path(__file__).resolve().parents[2] / "examples" / "telecom"
    store = ["--root", str(tmp_path / "store")]
    world = ["--deployment", str(telecom / "deployment.toml"), "--world", str(telecom / "world.toml")]
    for args, message in (
        (["--world", str(telecom / "world.toml")], "world: a latent world simulates a --deployment"),
        ([*world[:3], str(telecom / "deployment.toml")], "world: deployment: unknown field"),
        ([*world, "--scenario", str(telecom / "world.toml")], "deployment: --scenario and --param"),
    ):
        res = runner.invoke(app, ["simulate", *args, *store])
        assert res.exit_code == 2 and message in " ".join(res.output.split()), res.output
    assert not (tmp_path / "store").exists()
    log = f"sqlite:///{tmp_path / 'world.db'}"
    res = runner.invoke(app, ["simulate", *world, "--customers", "120", "--days", "3", "--log", log, *store])
    assert res.exit_code == 0 and "logged 360 decisions" in res.output, res.output
    import math

    import mlflow

    from nba.deployment import Deployment
    from nba.log import DecisionLog

    with DecisionLog(log) as stored:
        assert stored.deployment() == Deployment.load(telecom / "deployment.toml").to_dict()
    run = mlflow.search_runs(search_all_experiments=True, filter_string="params.deployment = 'telco-retention'")
    assert len(run) == 1 and math.isfinite(float(run["metrics.mean_expected_reward"].iloc[0]))
    res = runner.invoke(app, ["train", "--policy", "linucb", "--source", log, *store])
    assert res.exit_code == 0 and "trained linucb: rows 360" in res.output, res.output


def test_a_change_of_send_slot_read_through_the_opens_gets_a_line_with_its_exact_lift():
    from cli.jobs import _slot_lift_lines
    from nba.ope import Lift
    from training import jobs

    up = Lift("opens", 0.042, 0.021, 0.066, 0.95, 0.011, False)
    res = jobs.EvaluateResult(
        "r", {}, {"bau v4": 0.984, "send_time v11": 1.099}, 0.92, base="bau v4", slot_lifts={"send_time v11": up}
    )
    (line,) = _slot_lift_lines(res)
    assert line == (
        "send_time v11 over bau v4, a change of send slot alone read through the opens: +0.042 [+0.021, +0.066] "
        "per decision, exact +0.115"
    )
    thin = dataclasses.replace(res, truth=None, slot_lifts={"send_time v11": dataclasses.replace(up, unsupported=True)})
    said = "per decision (unsupported: it moves messages to hours the log never sent at)"
    assert _slot_lift_lines(thin)[0].endswith(said)
    assert _slot_lift_lines(dataclasses.replace(res, slot_lifts={})) == []


def test_the_estimates_table_marks_unsupported_estimates_and_flagged_policies():
    """`nba evaluate`'s table, in 80 columns: a section per policy in the ranking's order, its name once with
    its flags under it, each unsupported estimate marked on its row, the exact value on the policy's first row."""
    from rich.console import Console

    from cli.jobs import _estimates_table
    from nba.ope import Estimate
    from training import jobs

    def est(value, low, high, unsupported=()):
        return {
            name: Estimate(name, value, low, high, 0.95, 100, 0.1, 50.0, 3.0, 0.0, unsupported=name in unsupported)
            for name in ("ips", jobs.RANK_BY)
        }

    res = jobs.EvaluateResult(
        "r",
        {
            "lgbm_funnel (safe) v10": est(1.5, 0.1, 2.0, unsupported=(jobs.RANK_BY,)),
            "below v2": est(0.7, 0.6, 0.85),
            "business_as_usual v4": est(1.0, 0.9, 1.1),
        },
        {"lgbm_funnel (safe) v10": 1.019, "below v2": 0.7, "business_as_usual v4": 0.984},
        0.93,
        (0.9, 0.8, 1.0),
        {"lgbm_funnel (safe) v10": (jobs.UNSUPPORTED,), "below v2": (jobs.BELOW_LOGGING,), "business_as_usual v4": ()},
    )
    console = Console(width=80, record=True, color_system=None)
    console.print(_estimates_table(res))
    text = console.export_text()
    lines = text.splitlines()
    assert max(map(len, lines)) <= 80 and "…" not in text, text
    # the ranking's order: unflagged first, each name once, its flags under it
    first = [line.split()[0] for line in lines if line.startswith(("business_as_usual", "below", "lgbm_funnel"))]
    assert first == ["business_as_usual", "below", "lgbm_funnel"], text
    at = {name: next(i for i, line in enumerate(lines) if line.startswith(name)) for name in ("below", "lgbm_funnel")}
    assert lines[at["below"] + 1].startswith("flagged: below the logging"), text
    assert lines[at["lgbm_funnel"] + 1].startswith("flagged: unsupported"), text
    assert "ranked by mdr (weights by channel; flagged last)" in text
    # the unsupported estimate is marked on its own row (mdr here), the supported one (ips) not; the exact value once
    funnel = lines[at["lgbm_funnel"] : at["lgbm_funnel"] + 2]
    assert "unsupported" not in funnel[0] and funnel[0].rstrip().endswith("1.019")
    assert f" {jobs.RANK_BY} " in funnel[1] and "unsupported" in funnel[1].split(jobs.RANK_BY)[1]
    assert text.count("1.019") == 1
    # the in-sample flag gives the share of the log the version learned from
    learned = jobs.EvaluateResult(
        "r", {"y v3": res.estimates["below v2"]}, None, None, (0.5, 0.4, 0.6), {"y v3": (jobs.IN_SAMPLE,)}
    )
    console.print(_estimates_table(dataclasses.replace(learned, learned={"y v3": 0.4})))
    assert "flagged: learned from 40% of" in console.export_text()
    # a policy with more flags than rows below its name lists the rest on its last row
    one = {"x v1": {jobs.RANK_BY: res.estimates["below v2"][jobs.RANK_BY]}}
    both = (jobs.UNSUPPORTED, jobs.BELOW_LOGGING)
    console.print(_estimates_table(jobs.EvaluateResult("r", one, None, None, (0.9, 0.8, 1.0), {"x v1": both})))
    tail = console.export_text().splitlines()
    at_x = next(i for i, line in enumerate(tail) if line.startswith("x v1"))
    assert tail[at_x + 1].strip() == "flagged: unsupported"
    assert tail[at_x + 2].startswith("flagged: below the logging")
    # a policy that decides as one before it says so under its name (and the first says nothing)
    twins = {"linucb (safe) v6": res.estimates["below v2"], "lints (safe) v7": res.estimates["below v2"]}
    same = jobs.EvaluateResult("r", twins, None, None, (0.5, 0.4, 0.6), decisions=dict.fromkeys(twins, "d"))
    console.print(_estimates_table(same))
    tail = console.export_text().splitlines()
    at_t = {name: max(i for i, line in enumerate(tail) if line.startswith(name)) for name in ("linucb", "lints")}
    assert tail[at_t["lints"] + 1].startswith("decides as linucb (safe) v6 "), tail
    assert not tail[at_t["linucb"] + 1].strip().startswith("decides as"), tail


def test_a_jobs_metrics_read_on_one_line():
    from cli.jobs import _metrics_line

    line = _metrics_line({"rows": 28_000.0, "mean_expected_reward": 0.95512, "decisions_per_s": 1_172_345.6})
    assert line == "rows 28,000, mean_expected_reward 0.9551, decisions_per_s 1.172e+06"
