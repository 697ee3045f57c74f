"""The A/B report: every plot written and a valid PNG, the summary states the verdict and the truth."""

from __future__ import annotations

import numpy as np
import pytest

from envs.scenario import Scenario
from nba import ab
from nba.log.records import LoggedBatch
from nba.policies import create
from training import ab_report as abr

PURPOSE = "test/training/ab_report"  # this module's customers (envs.random)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    sc = Scenario.default()
    arms = {
        "champion": create("business_as_usual", sc.action_space, sc.segments),
        "challenger": create("batch_and_blast", sc.action_space, sc.segments),
    }
    out = tmp_path_factory.mktemp("ab") / "report"
    days: list[int] = []
    files = abr.write_report(
        sc,
        arms,
        out,
        n=1500,
        days=6,
        pre_days=3,
        seed=1,
        experiment="exp-report",
        progress=days.append,
        purpose=PURPOSE,
    )
    return out, files, days


def _check_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 400 and height >= 300
    assert data.rstrip(b"\x00")[-8:-4] == b"IEND"


def test_files_written(report):
    out, files, days = report
    assert days == list(range(6))
    assert files.markdown == out / "report.md" and files.html == out / "report.html"
    assert [p.name for p in files.images] == [*abr.IMAGES, abr.GUARDRAILS_PNG]
    for p in files.all():
        assert p.is_file() and p.stat().st_size > 0
    for p in files.images:
        _check_png(p)


def test_summary_states_verdict_estimates_and_truth(report):
    _, files, _ = report
    text = files.markdown.read_text()
    assert "experiment 'exp-report'" in text and "## Verdict" in text
    for word in ("Welch", "CUPED", "mSPRT", "true effect", "revenue", "converted"):
        assert word in text, word
    for name in (*abr.IMAGES, abr.GUARDRAILS_PNG):
        assert f"]({name})" in text
    page = files.html.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for name in (*abr.IMAGES, abr.GUARDRAILS_PNG):
        assert f'<img src="{name}"' in page
    # the verdict and every default guardrail, with its true worsening
    assert "## Guardrails" in text and "promote: " in text and "power if harmless" in text
    for g in ab.DEFAULT_GUARDRAILS:
        assert f"| {g.name} | {g.metric} (lower is better) | challenger |" in text


def _log(n=600, days=5, seed=0):
    """A decision log of an A/B test with a pre-period: a few decisions per customer and day."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"u{i}" for i in range(n)], dtype=object)
    arm = ab.assign("exp-log", ids, {"champion": 1, "challenger": 1})
    base = rng.gamma(2.0, 1.0, n)
    rows = rng.integers(0, n, 8 * n * days)
    t = rng.uniform(-24.0 * 3, 24.0 * days, rows.size)
    reward = rng.poisson(base[rows]) + 0.3 * ((arm[rows] == "challenger") & (t >= 0))
    in_exp = t >= 0
    m = rows.size
    s = lambda v: np.asarray(v, dtype=object)  # noqa: E731
    return LoggedBatch(
        decision_id=s([f"d{i}" for i in range(m)]),
        time=t,
        customer_id=ids[rows],
        context=np.zeros((m, 1), np.float32),
        eligible=np.ones((m, 2), bool),
        action=np.zeros(m, np.int64),
        send_at=t,
        propensity=np.ones(m),
        policy=s(["p"] * m),
        policy_version=s(["1"] * m),
        experiment=np.where(in_exp, "exp-log", "").astype(object),
        arm=np.where(in_exp, arm[rows], "").astype(object),
        cost=np.zeros(m),
        reward=reward.astype(np.float64),
    )


def test_report_from_decision_log(tmp_path):
    batch = _log()
    chunks = [batch]  # a list (or a callable returning an iterator) can be read twice
    inp = abr.log_inputs(
        chunks, experiment="exp-log", control="champion", start=0.0, days=5, pre_batches=[batch], pre_start=-72.0
    )
    a = inp.analyses["challenger"]
    assert a.cuped is not None and a.cuped.variance_reduction > 0.2  # customers' rates persist
    assert a.sequential is not None and a.sequential.n_looks == 5
    files = abr.render_report(inp, tmp_path / "log")
    for p in files.images:
        _check_png(p)
    assert "decision log" in files.markdown.read_text()
    with pytest.raises(ValueError, match="batches"):
        abr.log_inputs(iter(chunks), experiment="exp-log", control="champion", start=0.0, days=5)
    with pytest.raises(ValueError, match="control"):
        abr.log_inputs(chunks, experiment="exp-log", control="nope", start=0.0, days=5)


def test_guardrail_breaking_challenger_is_not_promoted():
    """Batch and blast against business as usual: it sends about a quarter more messages, so a sends
    guardrail of +5% is breached whatever the reward says, and the verdict says which guardrail and why."""
    from envs.experiment import run_experiment

    sc = Scenario.default()
    arms = {
        "champion": create("business_as_usual", sc.action_space, sc.segments),
        "challenger": create("batch_and_blast", sc.action_space, sc.segments),
    }
    res = run_experiment(sc, arms, n=1200, days=5, seed=2, experiment="exp-guard", purpose=PURPOSE)
    sends = ab.Guardrail("sends per customer", "sent", 0.05, relative=True)
    inp = abr.simulated_inputs(res, guardrails=(sends,))
    (test,) = inp.guardrails["challenger"]
    true = inp.true_worsening["challenger"]["sends per customer"]
    assert true > 0.2 and test.status == "breached" and test.lower <= true <= test.bound  # its bound covers the truth
    v = inp.verdict("challenger")
    assert not v.promote and v.failed == ("sends per customer",) and "sends per customer breached" in v.reason
    # with no guardrail declared only the primary decides
    assert abr.simulated_inputs(res, guardrails=()).guardrails == {}


def test_planned_tau_is_the_detectable_effect():
    tau = abr.planned_tau(1.0, alpha=0.05, power=0.8)
    assert ab.power(1.0, tau, np.sqrt(0.5)) == pytest.approx(0.8, abs=1e-3)  # se = sqrt(0.5 (1 + 1)) = 1


def test_a_metric_without_relative_lift_says_why_on_its_row(tmp_path, saved_figures):
    # no opt-out in the control arm: its mean is 0, the lift is undefined, and the row used to stay blank
    batch = _log()
    inp = abr.log_inputs([batch], experiment="exp-log", control="champion", start=0.0, days=5)
    rng = np.random.default_rng(5)
    inp.metrics["opted_out"] = {"challenger": ab.compare((rng.random(300) < 0.01) * 1.0, np.zeros(300))}
    assert not np.isfinite(inp.metrics["opted_out"]["challenger"].lift)
    abr.render_report(inp, tmp_path / "zero")
    texts = [t.get_text() for fig, _ in saved_figures for ax in fig.axes for t in ax.texts]
    assert "no relative lift: champion's mean is 0" in texts
