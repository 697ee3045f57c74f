"""``nba quickstart``: the installed console script, as the README's first command runs it."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path


def test_quickstart_console_script_end_to_end(tmp_path):
    """The installed ``nba`` script, as the README's first command runs it (smaller population), in an
    80-column terminal; everything it writes lands under ``--out``, nothing in the working directory."""
    exe = Path(sys.executable).with_name("nba")
    env = dict(os.environ, COLUMNS="80")
    out, cwd = tmp_path / "qs", tmp_path / "cwd"
    cwd.mkdir()
    for k in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID"):  # set by earlier tests' MLflow calls
        env.pop(k, None)
    proc = subprocess.run(
        [
            str(exe),
            "quickstart",
            "--customers",
            "3000",
            "--decisions",
            "4000",
            "--out",
            str(out),
            "--ab-customers",
            "600",
            "--ab-days",
            "4",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not any(cwd.iterdir()), sorted(p.name for p in cwd.iterdir())
    summary = json.loads((out / "summary.json").read_text())
    from training.quickstart import BANDITS, BASELINES, PRODUCTION

    assert set(summary["policies"]) == {*BASELINES, *BANDITS, "fqi"}
    assert all(p["true_value"] is not None for p in summary["policies"].values())
    assert summary["tracking_uri"] == f"sqlite:///{out.resolve() / 'mlflow.db'}"
    for f in (
        "mlflow.db",
        "train-log.db",
        "eval-log.db",
        "calibration/report.md",
        "plots/evaluation/ope_intervals.png",
        "plots/evaluation/ope_ranking.png",
        "mlartifacts",
    ):
        assert (out / f).exists(), f
    # no empty folder: the policies trained from the log (or, fitted-Q, on journeys) draw no figure of their own
    assert not [p for p in (out / "plots").rglob("*") if p.is_dir() and not any(p.iterdir())]
    # a send-hour map per policy, named after it (its label, e.g. send_hours_lgbm_funnel_safe_v10.png)
    maps = sorted(p.name for p in (out / "plots/evaluation").glob("send_hours_*.png"))
    assert len(maps) == len(summary["policies"]), maps
    assert all(any(m.startswith(f"send_hours_{k}_") for m in maps) for k in summary["policies"]), maps
    # the champion is production unless an A/B test promoted a challenger, and then it says so
    tested = {k: p for k, p in summary["policies"].items() if p["ab"] is not None}
    promoted = [k for k, p in tested.items() if p["promoted"]]
    assert summary["champion"]["policy"] == (promoted[0] if promoted else PRODUCTION)
    assert all(not p["flags"] for p in tested.values())  # flagged estimates never reach an A/B test
    # shortlisted on the paired lift over production: its lower bound above 0
    assert summary["policies"][PRODUCTION]["lift_over_production"] == {
        "estimator": "mdr",
        "estimate": 0.0,
        "ci": [0.0, 0.0],
    }
    # send_time moves only business as usual's send slots: its lift is read through the opens
    assert summary["policies"]["send_time"]["lift_over_production"]["estimator"] == "opens"
    assert all(p["lift_over_production"]["ci"][0] > 0 for p in tested.values())
    # the learners that read one model decide alike, and say so; no two tested policies decide alike, and the
    # challenger left is no copy of the champion
    same = {k: p["same_decisions_as"] for k, p in summary["policies"].items() if p["same_decisions_as"]}
    assert same == {"lints": "linucb", "lgbm_squarecb": "lgbm_egreedy"}, same
    assert not any(same.get(k) in tested for k in tested)
    if summary["challenger"] is not None:
        pair = {summary["champion"]["policy"], summary["challenger"]["policy"]}
        assert not any({k, v} == pair for k, v in same.items())
    assert "same decisions, one A/B: lints = linucb, lgbm_squarecb =" in proc.stdout
    for text in ("PASS", "champion", "mlflow ui", "nba serve --tracking-uri", "exact"):
        assert text in proc.stdout, text
    # the commands to copy stay whole on their line, however narrow the terminal (the paths here pass 80 columns)
    lines = [line.strip() for line in proc.stdout.splitlines()]
    for command in ("mlflow ui --backend-store-uri", "nba serve --tracking-uri"):
        assert f"{command} {summary['tracking_uri']}" in lines, command
    table = proc.stdout[proc.stdout.index("Policies on the evaluation log") : proc.stdout.index("logging policy (BAU")]
    assert max(map(len, table.splitlines())) <= 80 and "…" not in table
    # the registry serves the champion
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=summary["tracking_uri"], registry_uri=summary["tracking_uri"])
    assert str(client.get_model_version_by_alias("nba-policy", "champion").version) == summary["champion"]["version"]


def test_the_table_says_what_each_ab_verdict_was():
    """The quickstart's table in 80 columns: an A/B that showed the challenger better reads "won", one
    that promoted on no harm shown "pass", one that did not promote "lost" (or "guard" when a guardrail
    failed); the roles are spelt out."""
    from rich.console import Console

    from cli.quickstart import _quickstart_table
    from nba import ab
    from nba.ope import Estimate, Lift
    from training.jobs import RANK_BY, ABResult
    from training.quickstart import PRODUCTION, QuickstartResult, Row

    def row(policy, version, value, result=None, promoted=False):
        est = Estimate(RANK_BY, value, value - 0.2, value + 0.2, 0.95, 1000, 0.1, 20.0, 0.0, 0.0)
        lift = Lift(RANK_BY, value - 1.0, value - 1.1, value - 0.9, 0.95, 0.05, False)
        return Row(policy, version, est, (), value, lift, result, promoted)

    def tested(winner, promote, guardrail_p=0.01):
        g = ab.Guardrail("opt-out rate", "opted_out", 0.005)
        test = ab.GuardrailTest(g, 100, 100, 0.01, 0.01, 0.0, 0.001, 0.002, guardrail_p, 0.05, True)
        return ABResult("r", winner, "", 0.0, -1.0, 1.0, 0.5, None, Path("r"), promote, "", (test,))

    rows = [
        row(PRODUCTION, "4", 1.0),
        row("lgbm_funnel", "10", 1.3, tested("challenger", True), True),
        row("linucb", "6", 1.2, tested("none", True)),
        dataclasses.replace(row("lints", "7", 1.15, tested("none", False)), same_as="linucb"),
        row("send_time", "11", 1.1, tested("none", False, guardrail_p=0.5)),
    ]
    rows[-1] = dataclasses.replace(rows[-1], lift=dataclasses.replace(rows[-1].lift, estimator="opens"))
    res = QuickstartResult(rows, rows[1], rows[2], 0.9, (0.9, 0.8, 1.0), "sqlite://", Path("."), 1.0)
    console = Console(width=80, record=True, color_system=None)
    console.print(_quickstart_table(res))
    text = console.export_text()
    assert max(map(len, text.splitlines())) <= 80 and "…" not in text, text
    verdicts = {line.split()[0]: line.split() for line in text.splitlines() if line.strip()[:1].isalpha()}
    assert "won" in verdicts["lgbm_funnel"] and "champion" in verdicts["lgbm_funnel"]
    assert "pass" in verdicts["linucb"] and "challenger" in verdicts["linucb"]
    assert "lost" in verdicts["lints"] and "guard" in verdicts["send_time"]
    # a lift read through the opens is starred, and the caption says what the star means
    assert (
        "+0.00*" in verdicts["send_time"] and "+0.20" in verdicts["lgbm_funnel"] and "* a change of send slot" in text
    )
    assert "pass = no harm shown" in text
    assert "same decisions, one A/B: lints = linucb" in text


def test_the_shortlist_keeps_one_of_the_policies_that_decide_alike():
    from training.quickstart import distinct

    decides = {"linucb": "a", "lints": "a", "lgbm_funnel": "b", "send_time": "c", "lgbm_egreedy": "b"}
    assert distinct(["lints", "lgbm_funnel", "linucb", "lgbm_egreedy", "send_time"], decides) == [
        "lints",
        "lgbm_funnel",
        "send_time",
    ]
    assert distinct([], decides) == []


def test_the_surest_gain_is_tested_first():
    """A narrow lift far from 0 in its own units ranks above a wide one that clears 0 by a little more."""
    from nba.ope import Lift
    from training.quickstart import strength

    wide = Lift("mdr", 0.89, 0.05, 1.85, 0.95, 0.46, False)
    narrow = Lift("opens", 0.029, 0.017, 0.045, 0.95, 0.007, False)
    assert strength(narrow) > strength(wide) > 0
    assert strength(Lift("mdr", 0.0, 0.0, 0.0, 0.95, 0.0, False)) == 0.0
    assert strength(Lift("mdr", 0.1, 0.1, 0.1, 0.95, 0.0, False)) == float("inf")
