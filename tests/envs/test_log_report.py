"""A decision log's own figures beside a scenario's (envs.log_report).

The log under test is written by another writer than the report's own simulation: a one-arm
journey experiment (:func:`envs.experiment.run_experiment`, business as usual for everyone) logged
into SQLite, its pre-period filling the contact histories as :func:`envs.log_report.simulate_log`'s
warm-up does, and left out of the figures by ``since``.
"""

from __future__ import annotations

import dataclasses
import math
import shutil

import numpy as np
import pytest

from envs import log_report as lr
from envs.experiment import run_experiment
from envs.log_writer import scenario_layout
from envs.scenario import Scenario
from nba.log import DecisionLog, DecisionRecords, LogLayout, OutcomeRecords
from nba.policies.baselines import BusinessAsUsual

LOG_PURPOSE = "log-report/test-log"  # the customers of the log under test (envs.random)
MODIFIED_PURPOSE = "log-report/test-modified"  # those of a world whose emails are opened half as often
SCENARIO_PURPOSE = "log-report/test-scenario"  # the scenario's side, other customers
N, DAYS, WARMUP = 600, 14, 14


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return Scenario.default()


@pytest.fixture(scope="module")
def logged(scenario, tmp_path_factory):
    """(path of a SQLite log of N customers under business as usual, first hour of the logged days)."""
    path = tmp_path_factory.mktemp("log-report") / "bau.db"
    bau = BusinessAsUsual(scenario.action_space, tuple(scenario.segments))
    with DecisionLog(f"sqlite:///{path}") as log:
        res = run_experiment(
            scenario,
            {"bau": bau},
            n=N,
            days=DAYS,
            pre_days=WARMUP,
            seed=3,
            purpose=LOG_PURPOSE,
            experiment="bau",
            control="bau",
            truth=False,
            log=log,
        )
    return path, res.start_h


def _figures(path, since, **kw) -> lr.LogFigures:
    with DecisionLog(f"sqlite:///{path}") as log:
        return lr.log_figures(log, since=since, **kw)


@pytest.fixture(scope="module")
def log_figs(logged) -> lr.LogFigures:
    return _figures(*logged)


@pytest.fixture(scope="module")
def scenario_figs(scenario) -> lr.LogFigures:
    return lr.scenario_figures(
        scenario, customers=2 * N, days=DAYS, seed=11, purpose=SCENARIO_PURPOSE, warmup_days=WARMUP
    )


def _row(rows: list[lr.Row], figure: str, channel: str = "") -> lr.Row:
    (row,) = [r for r in rows if r.figure == figure and r.channel == channel]
    return row


def _copy(logged, tmp_path):
    path = tmp_path / "copy.db"
    shutil.copy(logged[0], path)
    return path


# ----------------------------------------------------------------------------- a real simulated log
def test_since_keeps_the_logged_days_only(logged, log_figs):
    path, start = logged
    with DecisionLog(f"sqlite:///{path}") as log:
        experiment_days = len(log.read(experiment="bau"))
        everything = lr.log_figures(log).decisions
    assert log_figs.decisions == experiment_days < everything
    assert log_figs.span_days == DAYS
    assert log_figs.hour_basis == "local"  # the simulator's context carries the time zone
    # every journey decision is at 08:00 local, and business as usual sends at once
    assert log_figs.sent_by_hour.sum() == log_figs.sent.sum() == log_figs.sent_by_hour[8] > 0


def test_a_log_of_the_scenario_is_close_to_the_scenario(log_figs, scenario_figs):
    """The log (seed 3, one writer) against the scenario (seed 11, other customers, the report's
    writer) on the figures with hundreds of events behind them: the verdict is "close" (within
    25 %). Over ten pairs of seeds these stayed within 15 % of each other; clicked / opened on email
    (some 200 opens) strayed up to 25 %, and the rare events further: they are only checked not to
    contradict the scenario beyond their noise (no "higher" or "lower" in any of the ten)."""
    rows = lr.compare(log_figs, scenario_figs)
    for figure, channel in [
        ("contact rate", ""),
        ("no-contact share", ""),
        ("contacts / customer-week", ""),
        ("send share", "email"),
        ("send share", "push"),
        ("delivered / sent", "email"),
        ("delivered / sent", "push"),
        ("opened / delivered", "email"),
        ("opens / send at 08h local", ""),
        ("contacts to 1st conversion, median", ""),
        ("revenue Gini", ""),
    ]:
        row = _row(rows, figure, channel)
        assert row.verdict == "close", row
    # and no figure of either side contradicts the other beyond its noise
    assert {r.verdict for r in rows} <= {"close", "noisy", "no data"}, [
        r for r in rows if r.verdict in ("higher", "lower")
    ]
    # channels business as usual never uses are not reported (it sends SMS once a month: rarely here)
    assert {"", "email", "push"} <= {r.channel for r in rows} <= {"", "email", "push", "sms"}


def test_opens_removed_show_a_lower_open_rate(logged, scenario, scenario_figs, tmp_path):
    path = _copy(logged, tmp_path)
    space = scenario.action_space
    email = np.flatnonzero(space.channel_of == space.channels.index("email")).tolist()
    with DecisionLog(f"sqlite:///{path}") as log, log.engine.begin() as conn:
        conn.exec_driver_sql(
            "DELETE FROM outcomes WHERE event = 'opened' AND decision_id IN "
            f"(SELECT decision_id FROM decisions WHERE action IN ({', '.join(map(str, email))}))"
        )
    rows = lr.compare(_figures(path, logged[1]), scenario_figs)
    # a click still counts as an open: what is left of the email opens are the clicks
    assert _row(rows, "opened / delivered", "email").verdict == "lower"
    assert _row(rows, "clicked / opened", "email").log == 1.0
    assert _row(rows, "opened / delivered", "push").verdict in ("close", "noisy")  # push opens are rare
    assert _row(rows, "delivered / sent", "email").verdict == "close"


def test_a_world_that_opens_fewer_emails_shows_it(scenario, scenario_figs, tmp_path):
    email = dataclasses.replace(scenario.channels["email"], open=scenario.channels["email"].open / 2)
    world = dataclasses.replace(scenario, channels={**scenario.channels, "email": email})
    with DecisionLog(f"sqlite:///{tmp_path / 'world.db'}") as log:
        lr.simulate_log(log, world, customers=N, days=DAYS, seed=5, purpose=MODIFIED_PURPOSE, warmup_days=WARMUP)
        rows = lr.compare(lr.log_figures(log), scenario_figs)
    opened = _row(rows, "opened / delivered", "email")
    assert opened.verdict == "lower" and 0.35 < opened.ratio < 0.65
    for figure, channel in [("delivered / sent", "email"), ("send share", "email"), ("contact rate", "")]:
        assert _row(rows, figure, channel).verdict == "close"


def test_a_channel_without_sends_has_no_data(logged, scenario, scenario_figs, tmp_path):
    path = _copy(logged, tmp_path)
    space = scenario.action_space
    push = ", ".join(map(str, np.flatnonzero(space.channel_of == space.channels.index("push")).tolist()))
    with DecisionLog(f"sqlite:///{path}") as log, log.engine.begin() as conn:
        conn.exec_driver_sql(
            f"DELETE FROM outcomes WHERE decision_id IN (SELECT decision_id FROM decisions WHERE action IN ({push}))"
        )
        conn.exec_driver_sql(f"DELETE FROM decisions WHERE action IN ({push})")
    figs = _figures(path, logged[1])
    assert figs.sent[space.channels.index("push")] == 0
    rows = [r for r in lr.compare(figs, scenario_figs) if r.channel == "push"]
    assert len(rows) == 6 and {r.verdict for r in rows} == {"no data"}
    assert all(math.isnan(r.log) and math.isnan(r.ratio) for r in rows)


def test_empty_logs_have_no_data(scenario, scenario_figs, tmp_path):
    with DecisionLog(f"sqlite:///{tmp_path / 'empty.db'}") as log:
        nothing = lr.log_figures(log)  # no layout yet
        log.set_layout(scenario_layout(scenario))
        no_decisions = lr.log_figures(log)
    assert nothing.channels == () and nothing.decisions == 0
    assert no_decisions.channels == tuple(scenario.channels) and no_decisions.decisions == 0
    for figs in (nothing, no_decisions):
        rows = lr.compare(figs, scenario_figs)
        assert rows and {r.verdict for r in rows} == {"no data"}
        assert "no data" in lr.render(rows)
    assert {r.verdict for r in lr.compare(nothing, nothing)} == {"no data"}


def test_render_fits_100_columns(log_figs, scenario_figs):
    rows = lr.compare(log_figs, scenario_figs)
    rows.append(
        lr.Row(
            "a figure with a name far too long for any table of a hundred columns " * 2,
            "direct_mail",
            1234567.0,
            0.000123,
            math.inf,
            "higher",
        )
    )
    text = lr.render(rows, title="log vs scenario")
    lines = text.splitlines()
    assert max(map(len, lines)) <= 100
    assert len(lines) == len(rows) + 3 and lines[0] == "log vs scenario"
    assert lines[1].split() == ["figure", "channel", "log", "scenario", "ratio", "verdict"]
    assert lines[-1].endswith("higher") and "inf" in lines[-1] and "1,234,567" in lines[-1]


# ----------------------------------------------------------------------------- a log built by hand
def _hand_log(url: str) -> DecisionLog:
    """Three customers, two channels (email = action 1, sms = action 2), time zones +2, 0 and -5:

    ====  ====  ====  =======  =============================================================
    id    who   time  action   outcomes
    ====  ====  ====  =======  =============================================================
    d1    A     0     email    delivered, opened, clicked, converted 50 at 1
    d2    A     24    sms      delivered
    d3    B     0     none     converted 10 at 0 (organic)
    d4    B     24    email    opened (no delivered event: implied), opted_out
    d5    C     0     email    nothing
    d6    C     24    email    delivered, converted 30 at 30 without a click
    ====  ====  ====  =======  =============================================================
    """
    log = DecisionLog(
        url,
        layout=LogLayout(
            1, 3, ("tz_offset",), {"channels": ["email", "sms"], "contents": ["promo"], "send_slots": [None]}
        ),
    )
    who = np.array(["A", "A", "B", "B", "C", "C"], dtype=object)
    tz = {"A": 2.0, "B": 0.0, "C": -5.0}
    t = np.array([0.0, 24, 0, 24, 0, 24])
    action = np.array([1, 2, 0, 1, 1, 1])
    s = lambda v: np.full(6, v, dtype=object)  # noqa: E731
    log.log_decisions(
        DecisionRecords(
            decision_id=np.array([f"d{i}" for i in range(1, 7)], dtype=object),
            time=t,
            customer_id=who,
            context=np.array([[tz[w] / 12] for w in who], np.float32),
            eligible=np.ones((6, 3), bool),
            action=action,
            send_at=t,
            propensity=np.ones(6),
            policy=s("hand"),
            policy_version=s("0"),
            experiment=s(""),
            arm=s(""),
            cost=np.zeros(6),
        )
    )
    events = [
        ("d1", "delivered", 0, 0),
        ("d1", "opened", 0.5, 0),
        ("d1", "clicked", 0.5, 0),
        ("d1", "converted", 1, 50),
        ("d2", "delivered", 24, 0),
        ("d3", "converted", 0, 10),
        ("d4", "opened", 25, 0),
        ("d4", "opted_out", 25, 0),
        ("d6", "delivered", 24, 0),
        ("d6", "converted", 30, 30),
    ]
    cols = list(zip(*events, strict=True))
    log.log_outcomes(
        OutcomeRecords(
            np.array(cols[0], dtype=object),
            np.array(cols[1], dtype=object),
            np.array(cols[2], float),
            np.array(cols[3], float),
        )
    )
    return log


def test_figures_of_a_hand_built_log(tmp_path):
    with _hand_log(f"sqlite:///{tmp_path / 'hand.db'}") as log:
        f = lr.log_figures(log)
        paged = lr.log_figures(log, chunk_rows=2)  # pages that split customers and their events
        late = lr.log_figures(log, since=12.0)
        early = lr.log_figures(log, until=12.0)
    assert f.channels == ("email", "sms") and f.decisions == 6 and f.customers == 3
    assert f.sent.tolist() == [4, 1]
    assert f.delivered.tolist() == [3, 1]  # d1, d4 (opened, so delivered), d6
    assert f.opened.tolist() == [2, 0] and f.clicked.tolist() == [1, 0]
    assert f.converted.tolist() == [1, 0]  # d6 converted without a click: not a step of the funnel
    assert f.opted_out.tolist() == [1, 0]
    # contacts up to the first conversion: A 1 (d1), B 0 (organic first), C 2 (d5, d6)
    assert f.contacts_to_convert.tolist() == [1, 1, 1]
    assert f.contacts_quantile(0.5) == 1 and f.contacts_quantile(0.9) == 2
    assert f.revenue == 90
    assert f.revenue_top_share == pytest.approx(50 / 90)  # the top 10 % of 3 customers: one
    assert f.revenue_gini == pytest.approx(2 * (10 + 2 * 30 + 3 * 50) / (3 * 90) - 4 / 3)
    assert f.customer_days == 6.0  # each customer: first to last decision (1 day) plus a day
    assert (f.first_time, f.last_time, f.span_days) == (0.0, 24.0, 2)
    # local send hours: A at 02h and 02h (+2), B at 00h, C at 19h (-5)
    assert f.hour_basis == "local"
    assert {h: n for h, n in enumerate(f.sent_by_hour.tolist()) if n} == {2: 2, 0: 1, 19: 2}
    assert {h: n for h, n in enumerate(f.opened_by_hour.tolist()) if n} == {2: 1, 0: 1}
    for name in (
        "sent",
        "delivered",
        "opened",
        "clicked",
        "converted",
        "opted_out",
        "sent_by_hour",
        "opened_by_hour",
        "contacts_to_convert",
    ):
        assert np.array_equal(getattr(paged, name), getattr(f, name)), name
    assert paged.revenue_gini == pytest.approx(f.revenue_gini)
    assert late.decisions == early.decisions == 3
    assert late.sent.tolist() == [2, 1] and early.sent.tolist() == [2, 0]
    v = f.values(min_count=1)
    assert v[("contact rate", "")].value == pytest.approx(5 / 6)
    assert v[("contacts / customer-week", "")].value == pytest.approx(7 * 5 / 6)
    opened = v[("opened / delivered", "email")]
    # by customer: A 1 of 1, B 1 of 1, C 0 of 1; residuals 1/3, 1/3, -2/3 over 3 deliveries, n/(n-1) = 3/2
    assert opened.value == pytest.approx(2 / 3) and opened.se == pytest.approx(math.sqrt(2 / 3 * 3 / 2) / 3)
    assert math.isnan(f.values()[("opened / delivered", "email")].value)  # 3 deliveries: too few at 20


def test_a_log_without_an_action_space_counts_one_channel(tmp_path):
    with DecisionLog(f"sqlite:///{tmp_path / 'bare.db'}", layout=LogLayout(1, 3)) as log:
        with _hand_log(f"sqlite:///{tmp_path / 'hand.db'}") as hand:
            batch = hand.read()
        log.log_decisions(DecisionRecords(**{k: getattr(batch, k) for k in DecisionRecords.__dataclass_fields__}))
        f = lr.log_figures(log)
    assert f.channels == ("contact",) and f.sent.tolist() == [5] and f.hour_basis == "UTC"
    assert f.delivered.tolist() == [0] and f.contacts_to_convert.size == 0
    assert math.isnan(f.revenue_gini)


# ----------------------------------------------------------------------------- pieces
@pytest.mark.parametrize(
    ("log", "scenario", "expected"),
    [
        (lr.Figure(0.11), lr.Figure(0.1), "close"),
        (lr.Figure(0.125), lr.Figure(0.1), "close"),  # 25 % exactly
        (lr.Figure(0.2), lr.Figure(0.1), "higher"),
        (lr.Figure(0.05), lr.Figure(0.1), "lower"),
        (lr.Figure(0.0), lr.Figure(0.0), "close"),
        (lr.Figure(0.01), lr.Figure(0.0), "higher"),
        (lr.Figure(math.nan), lr.Figure(0.1), "no data"),
        (lr.Figure(0.1), lr.NO_DATA, "no data"),
        # 3 opt-outs in 1,000 sends against 6 in 1,000 (binomial standard errors 0.0017 and 0.0024): half,
        # but only 1 standard error of the difference apart
        (lr.Figure(0.003, 0.0017), lr.Figure(0.006, 0.0024), "noisy"),
        (lr.Figure(0.003, 0.0017), lr.Figure(0.006), "noisy"),  # one side's error is enough
        # 300 in 100,000 against 600 in 100,000: the same rates, now 10 standard errors apart
        (lr.Figure(0.003, 0.00017), lr.Figure(0.006, 0.00024), "lower"),
    ],
)
def test_verdicts(log, scenario, expected):
    assert lr.verdict(log, scenario) == expected
    assert expected in lr.VERDICTS


def test_revenue_concentration():
    share, gini = lr._concentration(np.full(50, 3.0))
    assert share == pytest.approx(0.1) and gini == pytest.approx(0.0)
    share, gini = lr._concentration(np.r_[np.zeros(9), 5.0])
    assert share == 1.0 and gini == pytest.approx(0.9)  # (n - 1) / n: one customer has everything
    assert all(math.isnan(x) for x in lr._concentration(np.zeros(4)))


def test_ratio_standard_error_by_customer():
    rng = np.random.default_rng(0)
    # one send each: the binomial standard error (times sqrt(n / (n - 1)))
    y = (rng.random(400) < 0.3).astype(float)
    p = y.mean()
    assert lr._ratio_se(y, np.ones(400)) == pytest.approx(math.sqrt(p * (1 - p) / 399))
    # ten sends each, all opened or none by customer: ten times the sends, the same error as one each
    assert lr._ratio_se(10 * y, np.full(400, 10.0)) == pytest.approx(lr._ratio_se(y, np.ones(400)))
    assert math.isnan(lr._ratio_se(np.zeros(1), np.ones(1)))


def test_send_hour_rounds_to_the_minute():
    send_at = np.array([8.0 - 1e-7, 8.0 + 59.6 / 60, 23.999, 493_536.0 + 13.0])
    assert lr._send_hour(send_at, None).tolist() == [8, 9, 0, 13]
    assert lr._send_hour(np.array([20.0, 1.0]), np.array([5.0, -5.0])).tolist() == [1, 20]


def test_open_log_refuses_a_missing_sqlite_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no SQLite database"):
        lr.open_log(f"sqlite:///{tmp_path / 'typo.db'}")
    assert not (tmp_path / "typo.db").exists()
    with _hand_log(f"sqlite:///{tmp_path / 'hand.db'}"):
        pass
    with lr.open_log(f"sqlite:///{tmp_path / 'hand.db'}") as log:
        assert lr.log_figures(log).decisions == 6


def test_parse_time():
    assert lr.parse_time("1970-01-02") == 24.0
    assert lr.parse_time("2026-04-21") == 493_536.0  # envs.population.START_H
    assert lr.parse_time("2026-04-21T10:00+02:00") == 493_544.0
    assert lr.parse_time("493536.5") == 493_536.5
    with pytest.raises(ValueError, match="ISO 8601"):
        lr.parse_time("last tuesday")
