"""The telecom example end to end: a seeded operator's log (examples/telecom/generate.py) imported onto its
deployment; the imported context equals what the decide path builds from a hand-rebuilt history; the
propensities are the generator's; bad rows are refused naming row and column, nothing imported."""

from __future__ import annotations

import csv
import importlib.util
import io
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from nba.decide import decide
from nba.deployment import Deployment
from nba.eligibility import RecentContacts, send_time
from nba.features import History, hour_of_day
from nba.log import DecisionLog
from nba.log.importer import DeploymentMapping, import_onto
from nba.policies import create
from nba.serialization import space_to_dict

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "telecom" / "generate.py"
MAPPING = DeploymentMapping(
    customer_id="customer_id",
    time="time",
    channel="channel",
    offer="offer",
    send_hour="send_hour",
    propensity="propensity",
    reward="reward",
    opted_out="opted_out",
    decision_id="decision_id",
)


def _generator():
    spec = importlib.util.spec_from_file_location("telecom_generate", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def telecom() -> Deployment:
    return Deployment.load(ROOT / "examples" / "telecom" / "deployment.toml")


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """300 customers over 5 days, written by the script's command line."""
    out = tmp_path_factory.mktemp("telecom") / "log.csv"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), "--customers", "300", "--days", "5", "--seed", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "1,500 decisions of 300 customers over 5 days" in done.stdout
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(out.getvalue())
    return path


@pytest.fixture
def log(tmp_path):
    with DecisionLog(f"sqlite:///{tmp_path / 'log.db'}") as store:
        yield store


# ----------------------------------------------------------------------------- the generator
def test_the_generator_is_deterministic_for_a_seed_and_differs_across_seeds(telecom, generated, tmp_path):
    gen = _generator()
    again = gen.write_csv(gen.generate(telecom, 300, 5, seed=0), tmp_path / "again.csv")
    assert again.read_bytes() == generated.read_bytes()
    other = gen.generate(telecom, 300, 5, seed=1)
    assert other[0] == list(_rows(generated)[0])
    assert other[1:] != [list(r.values()) for r in _rows(generated)]
    header = list(_rows(generated)[0])
    assert header == [
        "decision_id",
        "customer_id",
        "time",
        *(a.name for a in telecom.attributes),
        "channel",
        "offer",
        "send_hour",
        "propensity",
        "reward",
        "opted_out",
    ]


def test_the_generated_log_looks_like_an_operators(telecom, generated):
    rows = _rows(generated)
    assert len(rows) == 1500 and len({r["customer_id"] for r in rows}) == 300
    contact = [r for r in rows if r["channel"]]
    assert 0.1 < len(contact) / len(rows) < 0.6  # most customer-days: no contact
    assert {r["channel"] for r in contact} <= {c.name for c in telecom.channels}
    assert all(bool(r["channel"]) == bool(r["offer"]) for r in rows)
    assert {r["send_hour"] for r in contact} <= {"", "10", "13", "18"}
    assert all(not r["days_to_contract_end"] for r in rows if r["plan_type"] == "prepaid")
    assert {r["time"][-6:] for r in rows} >= {"+01:00", "+02:00"}  # Paris-like offsets, before and after 28 March
    assert any(r["reward"] for r in contact) and not any(r["reward"] for r in rows if not r["channel"])
    assert {r["opted_out"] for r in rows} <= {"0", "1"}
    p = np.array([float(r["propensity"]) for r in rows])
    assert ((p > 0) & (p <= 1)).all() and (p < 0.1).any()  # exploration gives small propensities


# ----------------------------------------------------------------------------- the import
def test_import_onto_the_deployment(telecom, generated, log):
    rows = _rows(generated)
    res = import_onto(log, generated, telecom, MAPPING, policy="operator-rules")
    rewards = sum(bool(r["reward"]) for r in rows)
    opt_outs = sum(r["opted_out"] == "1" for r in rows)
    assert (res.rows, res.new_decisions, res.new_outcomes) == (1500, 1500, rewards + opt_outs)
    assert res.deployment == telecom.digest and res.ineligible == 0 and not res.propensity_estimated
    assert res.feature_names == telecom.features().names and res.n_actions == telecom.action_space().n_actions
    layout = log.layout()
    assert layout.feature_names == telecom.features().names
    assert layout.action_space == space_to_dict(telecom.action_space())
    b = log.read(telecom.reward_rule())
    assert set(b.policy) == {"operator-rules"} and set(b.policy_version) == {f"0@{telecom.digest}"}
    by_id = {r["decision_id"]: r for r in rows}
    # the propensities are the generator's, exactly
    np.testing.assert_array_equal(b.propensity, [float(by_id[i]["propensity"]) for i in b.decision_id])
    # and they are those of epsilon-greedy over the imported masks: eps / |eligible|, or 1 - eps + that
    eps, k = _generator().EPSILON, b.eligible.sum(axis=1)
    explored = np.isclose(b.propensity, eps / k, rtol=1e-12)
    assert (explored | np.isclose(b.propensity, 1 - eps + eps / k, rtol=1e-12)).all()
    assert b.eligible[np.arange(len(b.action)), b.action].all()
    space = telecom.action_space()
    names = space.names()
    for i in np.flatnonzero(b.action != 0)[:50]:
        r = by_id[b.decision_id[i]]
        assert names[b.action[i]] == f"{r['channel']}/{r['offer']}/{_slot(r['send_hour'])}"
    cost = np.array([0.0, *(c.cost for c in telecom.channels)])[space.channel_of[b.action] + 1]
    np.testing.assert_array_equal(b.cost, cost)
    # the reward rule of the deployment: revenue, minus 5 for an opt-out, minus the contact's cost
    i = next(j for j, d in enumerate(b.decision_id) if by_id[d]["reward"])
    assert b.reward[i] == pytest.approx(float(by_id[b.decision_id[i]]["reward"]) - b.cost[i])
    assert import_onto(log, generated, telecom, MAPPING).new_decisions == 0  # idempotent


def _slot(cell: str) -> str:
    return "now" if not cell else f"{int(cell):02d}h"


def test_the_context_equals_the_decide_paths_for_a_rebuilt_history(telecom, generated, log):
    """Parity: one customer's rows, their history rebuilt by hand from their earlier rows, through
    nba.decide, give the context and the mask the import stored."""
    import_onto(log, generated, telecom, MAPPING)
    b = log.read()
    rows = _rows(generated)
    space = telecom.action_space()
    mine = _busiest_customer(rows, space)
    stored = {d: j for j, d in enumerate(b.decision_id)}
    policy = create("uniform_random", space)
    c = len(telecom.channels)
    seen: list[tuple[float, float, float, int, bool]] = []  # (time, send_at, tz, action, converted) of earlier rows
    checked = 0
    for r in mine:
        now, tz = _hours_and_offset(r["time"])
        history = History.empty(1, c)
        recent = RecentContacts.empty(1, c, k=8, k_channel=2)
        for _t, sent, zone, a, converted in sorted(seen, key=lambda x: (x[1], x[0])):
            if a:
                recent.record(np.array([0]), np.array([space.channel_of[a]]), np.array([sent]))
                if sent <= now:
                    history.record_contacts(
                        np.array([0]),
                        np.array([space.channel_of[a]]),
                        np.array([sent]),
                        hour_of_day(np.array([sent + zone])),
                    )
            if converted and sent <= now:
                history.record_purchases(np.array([0]), np.array([sent]))
        attributes = telecom.check_attributes(_attributes(telecom, r))
        out = decide(
            telecom,
            policy,
            [attributes],
            now=now,
            tz_offset=tz,
            rng=np.random.default_rng(0),
            history=history,
            recent=recent,
        )
        j = stored[r["decision_id"]]
        np.testing.assert_array_equal(out.context[0], b.context[j])
        np.testing.assert_array_equal(out.eligible[0], b.eligible[j])
        a = int(b.action[j])
        sent = send_time(space, np.array([now]), np.array([tz]))[0, max(space.slot_of[a], 0)] if a else now
        seen.append((now, sent, tz, a, bool(r["reward"])))
        checked += 1
    assert checked == 5
    names = telecom.features().names
    last = b.context[stored[mine[-1]["decision_id"]]]
    assert last[[n.startswith("log_contacts=") for n in names]].sum() > 0  # the history is not empty


def _busiest_customer(rows: list[dict[str, str]], space) -> list[dict[str, str]]:
    """The rows, in time order, of the customer with the most contacts; one with a conversion and a
    contact still scheduled at their next decision when there is one."""
    by: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by.setdefault(r["customer_id"], []).append(r)

    def score(mine: list[dict[str, str]]) -> tuple[bool, bool, int]:
        mine.sort(key=lambda r: _hours_and_offset(r["time"])[0])
        scheduled = False
        for a, b in zip(mine, mine[1:], strict=False):
            if a["send_hour"]:
                t, tz = _hours_and_offset(a["time"])
                send = t + (int(a["send_hour"]) - (t + tz)) % 24
                scheduled |= send > _hours_and_offset(b["time"])[0]
        return scheduled, any(r["reward"] for r in mine[:-1]), sum(bool(r["channel"]) for r in mine)

    return max(by.values(), key=score)


def _hours_and_offset(text: str) -> tuple[float, float]:
    t = datetime.fromisoformat(text)
    return t.timestamp() / 3600.0, t.utcoffset().total_seconds() / 3600.0


def _attributes(d: Deployment, row: dict[str, str]) -> dict:
    """A row's attribute cells as a caller would send them (empty: not sent)."""
    out = {}
    for a in d.attributes:
        cell = row[a.name]
        if cell == "":
            continue
        out[a.name] = {"number": float, "boolean": lambda v: v == "true"}.get(a.type, str)(cell)
    return out


def test_the_replay_in_small_chunks_gives_the_same_log(telecom, generated, tmp_path, monkeypatch):
    from nba.log import importer

    with DecisionLog(f"sqlite:///{tmp_path / 'whole.db'}") as log:
        import_onto(log, generated, telecom, MAPPING)
        whole = log.read()
    monkeypatch.setattr(importer, "ROUND_ROWS", 37)
    with DecisionLog(f"sqlite:///{tmp_path / 'chunks.db'}") as log:
        import_onto(log, generated, telecom, MAPPING)
        chunks = log.read()
    np.testing.assert_array_equal(whole.context, chunks.context)
    np.testing.assert_array_equal(whole.eligible, chunks.eligible)


# ----------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    "column, cell, message",
    [
        ("offer", "fax_boost", r"^row 7, column 'offer': unknown offer 'fax_boost'; declared: \['data_boost_5gb'"),
        ("channel", "pigeon", r"^row 7, column 'channel': unknown channel 'pigeon'; declared: \['whatsapp'"),
        ("send_hour", "11", r"^row 7, column 'send_hour': '11' is not a send slot of the deployment"),
        ("monthly_revenue", "12000", r"^row 7, column 'monthly_revenue': must be within \[0.0, 10000.0\], got 12000.0"),
        ("tenure_days", "-3", r"^row 7, column 'tenure_days': must be within \[0.0, None\], got -3.0"),
        ("plan_type", "platinum", r"^row 7, column 'plan_type': unknown value 'platinum'; valid: \['prepaid'"),
        ("plan_type", "", r"^row 7, column 'plan_type': empty, but the attribute 'plan_type' is required"),
        ("sms_opt_in", "maybe", r"^row 7, column 'sms_opt_in': must be true or false, got 'maybe'"),
        ("last_complaint_at", "last week", r"^row 7, column 'last_complaint_at': must be an ISO 8601 date"),
        (
            "time",
            "tuesday",
            r"^row 7, column 'time': expected hours since the epoch or an ISO timestamp, got 'tuesday'",
        ),
        ("opted_out", "2", r"^row 7, column 'opted_out': expected 0 or 1"),
    ],
)
def test_a_bad_cell_fails_naming_row_and_column_and_imports_nothing(
    telecom, generated, log, tmp_path, column, cell, message
):
    rows = _rows(generated)
    target = (
        6 if column not in ("offer", "channel", "send_hour") else next(i for i, r in enumerate(rows) if r["channel"])
    )
    rows[target][column] = cell
    if target != 6:  # keep the row number of the message: move the contact row to row 7
        rows[6], rows[target] = rows[target], rows[6]
    with pytest.raises(ValueError, match=message):
        import_onto(log, _write(tmp_path / "bad.csv", rows), telecom, MAPPING)
    assert log.count_decisions() == 0 and log.count_outcomes() == 0 and log.layout() is None


def test_an_ineligible_action_is_refused_unless_allowed(telecom, generated, log, tmp_path):
    rows = _rows(generated)
    # a prepaid customer's contact, made a contract renewal (postpaid and business only) on the same channel
    i = next(i for i, r in enumerate(rows) if r["plan_type"] == "prepaid" and r["channel"] not in ("", "call_centre"))
    rows[i]["offer"] = "contract_renewal_discount"
    path = _write(tmp_path / "ineligible.csv", rows)
    with pytest.raises(
        ValueError,
        match=rf"^row {i + 1}, column 'offer': the deployment does not allow "
        rf"{rows[i]['channel']}/contract_renewal_discount/\w+ here \(offer\); "
        "import with allow_ineligible",
    ):
        import_onto(log, path, telecom, MAPPING)
    assert log.count_decisions() == 0
    res = import_onto(log, path, telecom, MAPPING, allow_ineligible=True)
    assert res.new_decisions == 1500 and res.ineligible == 1
    b = log.read()
    j = int(np.flatnonzero(b.decision_id == rows[i]["decision_id"])[0])
    assert b.eligible[j, b.action[j]]
    assert telecom.action_space().decode(int(b.action[j])).content == "contract_renewal_discount"


def test_import_command_onto_the_deployment(telecom, generated, tmp_path):
    from training.importing import describe, import_command
    from training.jobs import JobError

    url = f"sqlite:///{tmp_path / 'logs' / 'telco.db'}"
    kw = dict(
        deployment=ROOT / "examples" / "telecom" / "deployment.toml",
        customer_id="customer_id",
        time="time",
        channel="channel",
        offer="offer",
        send_hour="send_hour",
        reward="reward",
        opted_out="opted_out",
        decision_id="decision_id",
    )
    res = import_command(generated, url, propensity="propensity", **kw)
    assert res.new_decisions == 1500 and res.deployment == telecom.digest
    text = describe(res)
    assert "1,500 rows: 1,500 new decisions" in text and "58 features" in text
    assert "deployment: sha256:" in text and "rebuilt from their earlier rows" in text
    with pytest.raises(JobError, match=r"^context: the deployment gives the context"):
        import_command(generated, url, context=("monthly_revenue",), **kw)
    with pytest.raises(JobError, match=r"^channel: only for an import onto a deployment"):
        import_command(generated, url, action="a", channel="channel", time="time")
    with pytest.raises(JobError, match=r"^row 1, column 'offer': expected hours"):
        import_command(generated, f"sqlite:///{tmp_path / 'other.db'}", **{**kw, "time": "offer"})
