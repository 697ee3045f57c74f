"""Importing CSV and Parquet decision logs: mapping, idempotency, errors naming row and column."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nba.log import ColumnMapping, DecisionLog, RewardRule, import_table, importer
from nba.log.importer import ImportResult, estimate_propensity, import_file

MAPPING = ColumnMapping(
    context=("x1", "x2"),
    action="action",
    propensity="p",
    n_actions=4,
    time="t",
    reward="reward",
    customer_id="customer",
    eligible="eligible",
)
CSV = """x1,x2,action,p,t,reward,customer,eligible
0.5,1.0,1,0.5,493536.0,3.5,c1,0 1
-1.0,2.0,0,0.25,2026-04-21T01:00:00Z,,c2,"[0, 2, 3]"
2.0,0.0,3,1.0,2026-04-21T03:30:00+02:00,0,c1,0;3
"""


@pytest.fixture
def log(tmp_path):
    with DecisionLog(f"sqlite:///{tmp_path / 'log.db'}") as store:
        yield store


def write(tmp_path, text: str, name: str = "events.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_import_round_trip(log, tmp_path):
    path = write(tmp_path, CSV)
    assert import_table(log, path, MAPPING, policy="legacy", experiment="e") == 3
    b = log.read(RewardRule(default=-1.0))
    assert b.decision_id.tolist() == ["events.csv:1", "events.csv:2", "events.csv:3"]
    np.testing.assert_array_equal(b.context, [[0.5, 1.0], [-1.0, 2.0], [2.0, 0.0]])
    np.testing.assert_array_equal(b.action, [1, 0, 3])
    np.testing.assert_array_equal(b.propensity, [0.5, 0.25, 1.0])
    np.testing.assert_allclose(b.time, [493536.0, 493537.0, 493537.5])  # ISO times in UTC hours
    np.testing.assert_array_equal(b.eligible, [[1, 1, 0, 0], [1, 0, 1, 1], [1, 0, 0, 1]])
    np.testing.assert_array_equal(b.reward, [3.5, -1.0, 0.0])  # an empty reward: no outcome, the default
    assert b.customer_id.tolist() == ["c1", "c2", "c1"]
    assert set(b.policy) == {"legacy"} and set(b.experiment) == {"e"}
    np.testing.assert_array_equal(b.cost, 0.0)
    # re-importing the same file (even moved) adds nothing
    moved = tmp_path / "sub"
    moved.mkdir()
    assert import_table(log, write(moved, CSV), MAPPING) == 0
    assert log.count_decisions() == 3 and log.count_outcomes() == 2


def test_defaults_all_eligible_and_id_column(log, tmp_path):
    text = "id,f,a,prop,time,send\nx,1,2,0.2,10,12\ny,2,0,0.8,11,11\n"
    m = ColumnMapping(
        context=("f",), action="a", propensity="prop", n_actions=3, time="time", decision_id="id", send_at="send"
    )
    assert import_table(log, write(tmp_path, text), m) == 2
    b = log.read()
    assert b.decision_id.tolist() == ["x", "y"] and b.customer_id.tolist() == ["x", "y"]
    assert b.eligible.all()
    np.testing.assert_array_equal(b.send_at, [12.0, 11.0])
    assert log.count_outcomes() == 0


@pytest.mark.parametrize(
    "row, column, cell, message",
    [
        (2, "p", "abc", r"^row 2, column 'p': expected a number in \(0, 1\], got 'abc'"),
        (3, "p", "0", r"^row 3, column 'p': expected a number in \(0, 1\], got 0"),
        (1, "action", "4", r"^row 1, column 'action': expected an action index in \[0, 4\), got 4"),
        (2, "action", "1.5", r"^row 2, column 'action': expected an action index"),
        (3, "x2", "nan", r"^row 3, column 'x2': expected a finite number"),
        (
            2,
            "t",
            "yesterday",
            r"^row 2, column 't': expected hours since the epoch or an ISO timestamp, got 'yesterday'",
        ),
        (1, "reward", "lots", r"^row 1, column 'reward': expected a number or an empty cell, got 'lots'"),
        (3, "eligible", "0 1", r"^row 3, column 'eligible': the chosen action 3 is not among the eligible ones"),
        (2, "eligible", "0 9", r"^row 2, column 'eligible': action indices must be in \[0, 4\)"),
        (1, "customer", "", r"^row 1, column 'customer': expected a non-empty value"),
    ],
)
def test_malformed_rows_name_row_and_column(log, tmp_path, row, column, cell, message):
    lines = CSV.splitlines()
    header = lines[0].split(",")
    import csv
    import io

    rows = list(csv.reader(io.StringIO(CSV)))
    rows[row][header.index(column)] = cell
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    with pytest.raises(ValueError, match=message):
        import_table(log, write(tmp_path, out.getvalue()), MAPPING)
    assert log.count_decisions() == 0 and log.count_outcomes() == 0


def test_missing_column_and_duplicate_ids(log, tmp_path):
    bad = ColumnMapping(context=("x1", "nope"), action="action", propensity="p", n_actions=4, time="t")
    with pytest.raises(ValueError, match=r"^column 'nope': not in the file"):
        import_table(log, write(tmp_path, CSV), bad)
    text = "id,f,a,prop,time\nx,1,0,0.2,10\nx,2,0,0.8,11\n"
    m = ColumnMapping(context=("f",), action="a", propensity="prop", n_actions=3, time="time", decision_id="id")
    with pytest.raises(ValueError, match=r"^row 2, column 'id': duplicate decision id 'x'"):
        import_table(log, write(tmp_path, text, "dup.csv"), m)
    assert log.count_decisions() == 0


def test_parquet_import_with_timestamps_and_lists(log, tmp_path):
    import datetime as dt

    t0 = dt.datetime(2026, 4, 21, tzinfo=dt.UTC)  # 493536 h since the epoch
    table = pa.table(
        {
            "x1": pa.array([1.0, 2.0, 3.0], pa.float32()),
            "x2": [0.0, 0.5, 1.0],
            "action": [0, 2, 1],
            "p": [0.5, 0.5, 0.9],
            "t": pa.array([t0, t0 + dt.timedelta(hours=1), t0 + dt.timedelta(hours=2)], pa.timestamp("us", tz="UTC")),
            "reward": [1.0, None, 2.0],
            "customer": ["a", "b", "a"],
            "eligible": [[0], [0, 2], [0, 1, 3]],
        }
    )
    path = tmp_path / "log.parquet"
    pq.write_table(table, path)
    assert import_table(log, path, MAPPING) == 3
    b = log.read()
    np.testing.assert_allclose(b.time, [493536.0, 493537.0, 493538.0])
    np.testing.assert_array_equal(b.reward, [1.0, 0.0, 2.0])
    np.testing.assert_array_equal(b.eligible[1], [True, False, True, False])
    assert import_table(log, path, MAPPING) == 0


# ----------------------------------------------------------------------------- categories, hashing, position
CAT_CSV = """x1,plan_type,region,action,p,t
1.5,prepaid,north,1,0.5,10
2.0,postpaid,,0,0.5,11
-1.0,prepaid,south,2,0.25,12
"""
CAT = ColumnMapping(
    context=("x1",), action="action", propensity="p", n_actions=3, time="t", categorical=("plan_type", "region")
)
CAT_NAMES = (
    "x1",
    "plan_type=postpaid",
    "plan_type=prepaid",
    "plan_type=<other>",
    "region=north",
    "region=south",
    "region=<other>",
)


def test_categorical_columns_become_one_hot_features_named_in_the_layout(log, tmp_path):
    res = import_file(log, write(tmp_path, CAT_CSV), CAT)
    assert res == ImportResult(3, 3, CAT_NAMES, False, "imported", 0, (), None, 3)
    assert log.layout().feature_names == CAT_NAMES
    np.testing.assert_array_equal(
        log.read().context,
        [
            [1.5, 0, 1, 0, 1, 0, 0],
            [2.0, 1, 0, 0, 0, 0, 1],  # empty region: <other>
            [-1.0, 0, 1, 0, 0, 1, 0],
        ],
    )


def test_a_second_file_is_encoded_with_the_first_ones_categories(log, tmp_path):
    import_file(log, write(tmp_path, CAT_CSV), CAT)
    second = "x1,plan_type,region,action,p,t\n0,business,north,1,0.5,20\n3,postpaid,east,0,0.5,21\n"
    res = import_file(log, write(tmp_path, second, "second.csv"), CAT)
    assert res.new_decisions == 2 and res.feature_names == CAT_NAMES
    np.testing.assert_array_equal(
        log.read().context[3:],
        [
            [0, 0, 0, 1, 1, 0, 0],  # business: plan <other>
            [3, 1, 0, 0, 0, 0, 1],
        ],
    )  # east: region <other>
    # a numeric column that is not the log's: refused, naming it, nothing written
    m = ColumnMapping(
        context=("x2",), action="action", propensity="p", n_actions=3, time="t", categorical=("plan_type", "region")
    )
    third = second.replace("x1", "x2")
    with pytest.raises(ValueError, match=r"^column 'x2': feature 1 of this log is 'x1', this mapping gives 'x2'"):
        import_file(log, write(tmp_path, third, "third.csv"), m)
    # a categorical column the log does not have
    m = ColumnMapping(
        context=("x1",), action="action", propensity="p", n_actions=3, time="t", categorical=("plan_type",)
    )
    with pytest.raises(
        ValueError,
        match=r"^column 'region': feature 5 of this log is 'region=north', this mapping "
        r"gives nothing \(the log has 7 features, the mapping 4\)",
    ):
        import_file(log, write(tmp_path, second, "fourth.csv"), m)
    assert log.count_decisions() == 5


def test_fixed_categories_and_the_other_column(log, tmp_path):
    m = ColumnMapping(
        context=(),
        action="action",
        propensity="p",
        n_actions=3,
        time="t",
        categorical=("plan_type",),
        categories={"plan_type": ("prepaid", "business")},
    )
    res = import_file(log, write(tmp_path, CAT_CSV), m)
    assert res.feature_names == ("plan_type=prepaid", "plan_type=business", "plan_type=<other>")
    np.testing.assert_array_equal(log.read().context, [[1, 0, 0], [0, 0, 1], [1, 0, 0]])  # postpaid: <other>
    with pytest.raises(ValueError, match=r"^categories: 'region' is not among the categorical columns"):
        ColumnMapping(
            context=(),
            action="a",
            propensity="p",
            time="t",
            categorical=("plan_type",),
            categories={"region": ("north",)},
        )
    with pytest.raises(ValueError, match=r"^categories\['plan_type'\]: expected distinct non-empty strings"):
        ColumnMapping(
            context=(),
            action="a",
            propensity="p",
            time="t",
            categorical=("plan_type",),
            categories={"plan_type": ("a", "a")},
        )


def test_numbers_as_categories_keep_their_text(log, tmp_path):
    """A categorical column of codes is read as text: ``007`` stays ``007`` (CSV) and Parquet integers and
    dictionary columns work too."""
    text = "code,action,p,t\n007,0,0.5,1\n12,1,0.5,2\n007,1,0.5,3\n"
    m = ColumnMapping(context=(), action="action", propensity="p", n_actions=2, time="t", categorical=("code",))
    assert import_file(log, write(tmp_path, text), m).feature_names == ("code=007", "code=12", "code=<other>")
    path = tmp_path / "codes.parquet"
    pq.write_table(
        pa.table(
            {
                "code": pa.array(["12", None, "007"]).dictionary_encode(),
                "action": [0, 1, 1],
                "p": [0.5, 0.5, 0.5],
                "t": [4.0, 5.0, 6.0],
            }
        ),
        path,
    )
    assert import_file(log, path, m).new_decisions == 3
    np.testing.assert_array_equal(log.read().context[3:], [[0, 1, 0], [0, 0, 1], [1, 0, 0]])


def test_text_in_a_numeric_column_points_to_categorical(log, tmp_path):
    m = ColumnMapping(context=("x1", "plan_type"), action="action", propensity="p", n_actions=3, time="t")
    with pytest.raises(
        ValueError,
        match=r"^row 1, column 'plan_type': expected a finite number, got 'prepaid'; a "
        r"column of categories belongs in categorical",
    ):
        import_file(log, write(tmp_path, CAT_CSV), m)
    assert log.count_decisions() == 0
    with pytest.raises(ValueError, match=r"^column 'x1': mapped twice"):
        ColumnMapping(context=("x1",), action="a", propensity="p", time="t", categorical=("x1",))


def test_hashed_column_uses_a_stable_hash(log, tmp_path):
    import zlib

    text = "device,action,p,t\ndev-a,0,0.5,1\ndev-b,1,0.5,2\n,1,0.5,3\ndev-a,0,0.5,4\n"
    m = ColumnMapping(
        context=(), action="action", propensity="p", n_actions=2, time="t", hashed=("device",), hash_buckets=8
    )
    res = import_file(log, write(tmp_path, text), m)
    assert res.feature_names == tuple(f"device#{k}" for k in range(8))
    ctx = log.read().context
    buckets = [zlib.crc32(v.encode()) % 8 for v in ("dev-a", "dev-b", "", "dev-a")]  # "" for the empty cell
    np.testing.assert_array_equal(ctx.argmax(axis=1), buckets)
    np.testing.assert_array_equal(ctx.sum(axis=1), 1.0)
    assert buckets == [2, 0, 0, 2]  # pinned: CRC-32 is the same in every process (Python's hash() is salted)
    with pytest.raises(ValueError, match=r"^hash_buckets: must be an integer >= 1"):
        ColumnMapping(context=(), action="a", propensity="p", time="t", hashed=("device",), hash_buckets=0)


def test_too_many_categories_points_to_hashing(log, tmp_path, monkeypatch):
    monkeypatch.setattr(importer, "MAX_CATEGORIES", 2)
    m = ColumnMapping(context=(), action="action", propensity="p", n_actions=3, time="t", categorical=("region",))
    with pytest.raises(ValueError, match=r"^column 'region': 3 distinct values, more than 2 .* map it in hashed"):
        import_file(log, write(tmp_path, CAT_CSV.replace(",,", ",east,")), m)
    assert log.count_decisions() == 0


def test_position_is_one_last_feature(log, tmp_path):
    text = "x1,slot,action,p,t\n1,0,1,0.5,1\n2,3,0,0.5,2\n"
    m = ColumnMapping(context=("x1",), action="action", propensity="p", n_actions=2, time="t", position="slot")
    assert import_file(log, write(tmp_path, text), m).feature_names == ("x1", "position")
    np.testing.assert_array_equal(log.read().context, [[1, 0], [2, 3]])
    for bad in ("-1", "1.5", ""):
        with pytest.raises(ValueError, match=r"^row 2, column 'slot': expected a position: an integer >= 0"):
            import_file(log, write(tmp_path, text.replace(",3,", f",{bad},"), "bad.csv"), m)
    assert log.count_decisions() == 2


# ----------------------------------------------------------------------------- no time, no propensity
def test_without_a_time_column_every_row_gets_time_default(log, tmp_path):
    text = "x1,action,p\n1,1,0.5\n2,0,0.5\n"
    m = ColumnMapping(context=("x1",), action="action", propensity="p", time_default=493536.0)
    res = import_file(log, write(tmp_path, text), m)
    assert res.time_default == 493536.0 and res.n_actions == 2  # inferred: the largest action + 1
    b = log.read()
    np.testing.assert_array_equal(b.time, [493536.0, 493536.0])
    np.testing.assert_array_equal(b.send_at, b.time)
    with pytest.raises(ValueError, match=r"^time_default: without a time column, give the decision time"):
        ColumnMapping(context=("x1",), action="action", propensity="p")
    with pytest.raises(ValueError, match=r"^time_default: only used without a time column"):
        ColumnMapping(context=("x1",), action="action", propensity="p", time="t", time_default=1.0)


def test_propensity_estimated_per_group_smoothed_and_flagged(log, tmp_path):
    # segment a: actions 0, 0, 0, 1; segment b: 1, 1; two actions, N = 6
    text = "seg,action,t\na,0,1\na,0,2\na,0,3\na,1,4\nb,1,5\nb,1,6\n"
    m = ColumnMapping(context=(), action="action", n_actions=2, time="t", propensity_by=("seg",))
    res = import_file(log, write(tmp_path, text), m, policy="legacy")
    assert res.propensity_estimated and res.policy == "legacy:estimated-propensity"
    assert res.propensity_by == ("seg",)
    b = log.read()
    assert set(b.policy) == {"legacy:estimated-propensity"}
    f0, f1 = (3 + 1) / (6 + 2), (3 + 1) / (6 + 2)  # overall frequencies, Laplace-smoothed
    k = importer.PRIOR_ROWS
    a0, a1 = (3 + k * f0) / (4 + k), (1 + k * f1) / (4 + k)  # segment a, pulled towards the overall ones
    b1 = (2 + k * f1) / (2 + k)
    np.testing.assert_allclose(b.propensity, [a0, a0, a0, a1, b1, b1])
    # without groups: the overall frequencies (of 6 rows, with the same pull)
    m = ColumnMapping(context=(), action="action", n_actions=2, time="t")
    res = import_file(log, write(tmp_path, text, "again.csv"), m)
    np.testing.assert_allclose(log.read().propensity[6:], (3 + k * 0.5) / (6 + k))
    with pytest.raises(ValueError, match=r"^propensity_by: only used to estimate the propensity"):
        ColumnMapping(context=(), action="action", propensity="p", time="t", propensity_by=("seg",))


def test_estimated_propensity_renormalised_over_eligible_actions():
    action = np.array([0, 0, 1, 2])
    eligible = np.array([[1, 1, 0], [1, 1, 1], [1, 1, 0], [1, 1, 1]], bool)
    full = estimate_propensity(action, 3)
    q = (np.bincount(action, minlength=3) + 1) / 7 * importer.PRIOR_ROWS
    q = (np.bincount(action, minlength=3) + q) / (4 + importer.PRIOR_ROWS)  # q(a) for the one group
    np.testing.assert_allclose(full, q[action])
    p = estimate_propensity(action, 3, eligible=eligible)
    np.testing.assert_allclose(p, [q[0] / (q[0] + q[1]), q[0], q[1] / (q[0] + q[1]), q[2]])
    # never 0 for an action never chosen in the group, never above 1
    rare = estimate_propensity(np.array([1, 0, 0, 0]), 2, groups=np.array([0, 1, 1, 1]))
    assert (rare > 0).all() and (rare <= 1).all()


def test_a_refused_text_is_named_by_row_and_column(log, tmp_path):
    path = tmp_path / "nul.parquet"
    pq.write_table(pa.table({"customer": ["a", "b\x00c"], "action": [0, 1], "p": [0.5, 0.5], "t": [1.0, 2.0]}), path)
    m = ColumnMapping(context=(), action="action", propensity="p", n_actions=2, time="t", customer_id="customer")
    with pytest.raises(ValueError, match=r"^row 2, column 'customer': contains a NUL character"):
        import_file(log, path, m)
    assert log.count_decisions() == 0 and log.layout() is None


def test_twenty_thousand_rows(log, tmp_path):
    """A large file goes through the vectorised paths (categories, hashing, estimate) in one import."""
    rng = np.random.default_rng(0)
    n = 20_000
    seg = rng.choice(["a", "b", "c"], n)
    path = tmp_path / "big.csv"
    with path.open("w") as f:
        f.write("x,seg,device,slot,action,reward\n")
        for i in range(n):
            f.write(
                f"{rng.normal():.4f},{seg[i]},d{rng.integers(5000)},{i % 4},{rng.integers(5)},"
                f"{'' if i % 3 else rng.random()}\n"
            )
    m = ColumnMapping(
        context=("x",),
        action="action",
        time_default=1.0,
        categorical=("seg",),
        hashed=("device",),
        hash_buckets=32,
        position="slot",
        propensity_by=("seg",),
        reward="reward",
    )
    res = import_file(log, path, m)
    assert res.new_decisions == n and len(res.feature_names) == 1 + 4 + 32 + 1
    assert res.n_actions == 5 and res.new_outcomes == -(-n // 3)
    b = log.read()
    assert ((b.propensity > 0.1) & (b.propensity < 0.3)).all()  # about 1/5 each
    np.testing.assert_array_equal(b.context[:, 1:5].sum(axis=1), 1.0)


# ----------------------------------------------------------------------------- the command
def test_import_command_end_to_end(tmp_path):
    from training.importing import describe, import_command
    from training.jobs import JobError

    rng = np.random.default_rng(1)
    n = 2000
    plan = rng.choice(["prepaid", "postpaid", "business"], n)
    action = np.where(plan == "business", rng.integers(0, 2, n), rng.integers(0, 4, n))
    path = tmp_path / "brand.csv"
    with path.open("w") as f:
        f.write("customer,arpu,plan_type,action,revenue\n")
        for i in range(n):
            f.write(f"c{i % 700},{rng.gamma(2, 10):.2f},{plan[i]},{action[i]},{rng.random() if i % 2 else ''}\n")
    url = f"sqlite:///{tmp_path / 'logs' / 'brand.db'}"
    kw = dict(
        action="action",
        context=("arpu",),
        categorical=("plan_type",),
        reward="revenue",
        customer_id="customer",
        time_default=493536.0,
        propensity_by=("plan_type",),
    )
    res = import_command(path, url, **kw)
    assert res.rows == res.new_decisions == n and res.propensity_estimated and res.n_actions == 4
    assert res.feature_names == (
        "arpu",
        "plan_type=business",
        "plan_type=postpaid",
        "plan_type=prepaid",
        "plan_type=<other>",
    )
    with DecisionLog(url) as log:
        b = log.read()
        assert log.layout().feature_names == res.feature_names
    assert set(b.policy) == {"imported:estimated-propensity"}
    # business customers only ever got actions 0 and 1 (about half each); others about a quarter each
    business = b.context[:, 1] == 1
    assert np.all(np.abs(b.propensity[business] - 0.5) < 0.1) and np.all(np.abs(b.propensity[~business] - 0.25) < 0.1)
    text = describe(res)
    assert "2,000 rows: 2,000 new decisions" in text and "5 features" in text and "plan_type=<other>" in text
    assert "estimated" in text and "plan_type" in text and "A/B test" in text and "order" in text
    again = import_command(path, url, **kw)
    assert again.new_decisions == 0 and "already in the log" in describe(again)
    # bad input: a JobError naming row and column, nothing imported
    other = f"sqlite:///{tmp_path / 'other.db'}"
    with pytest.raises(JobError, match=r"^row 1, column 'plan_type': expected a finite number, got '\w+'; a col"):
        import_command(path, other, action="action", context=("plan_type",), time_default=0.0)
    with pytest.raises(JobError, match=r"^time_default"):
        import_command(path, other, action="action")
    with DecisionLog(other) as log:
        assert log.count_decisions() == 0


# ----------------------------------------------------------------------------- onto a deployment
SHOP = {
    "deployment": {"name": "shop", "send_slots": ["now", 18]},
    "attributes": {
        "tier": {"type": "category", "values": ["basic", "plus"], "required": True},
        "spend": {"type": "number", "min": 0, "max": 1000, "default": 0},
        "sms_ok": {"type": "boolean", "default": True},
    },
    "channels": {"email": {"cost": 0.01}, "sms": {"cost": 0.05, "consent": "sms_ok", "quiet_hours": [21, 9]}},
    "offers": {
        "promo": {"features": {"margin": 2.0}},
        "vip": {"features": {"margin": 5.0}, "eligible": {"tier": ["plus"]}},
    },
    "contact_policy": {"min_gap_h": 24},
}
T0 = 493536.0  # 2026-04-21T00:00Z


@pytest.fixture
def shop():
    from nba.deployment import Deployment

    return Deployment.from_dict(SHOP)


def test_import_onto_a_deployment_rebuilds_each_customers_history(log, tmp_path, shop):
    """A scheduled send counts for the minimum gap at once, for the history once sent; a conversion is a
    purchase from its send time; time zones come from the ISO offsets."""
    from nba.log.importer import DeploymentMapping, import_onto

    text = (
        "id,who,at,tier,spend,sms_ok,ch,of,hour,p,rev\n"
        "a1,ann,2026-04-21T10:00:00+02:00,plus,120,true,email,vip,18,0.5,7.5\n"  # sends at 18:00 local
        "b1,bob,2026-04-21T08:00:00Z,basic,,,,,,0.9,\n"  # no contact, defaults
        "a2,ann,2026-04-21T12:00:00+02:00,plus,120,true,,,,0.25,\n"  # before the send: not in history
        "a3,ann,2026-04-22T19:00:00+02:00,plus,120,false,email,promo,,0.5,\n"
    )  # after it: in history
    m = DeploymentMapping(
        customer_id="who",
        time="at",
        channel="ch",
        offer="of",
        send_hour="hour",
        propensity="p",
        reward="rev",
        decision_id="id",
    )
    res = import_onto(log, write(tmp_path, text), shop, m)
    assert (res.new_decisions, res.new_outcomes, res.ineligible) == (4, 1, 0)
    assert res.deployment == shop.digest and res.n_actions == 1 + 2 * 2 * 2
    b = log.read(shop.reward_rule())
    names = shop.features().names
    col = {n: b.context[:, j] for j, n in enumerate(names)}
    space = shop.action_space()
    assert b.action.tolist() == [space.index("email", "vip", 18), 0, 0, space.index("email", "promo", None)]
    np.testing.assert_array_equal(col["tz_offset"] * 12, [2, 0, 2, 2])
    np.testing.assert_array_equal(b.send_at[0], T0 + 16)  # 18:00 at +02:00
    np.testing.assert_allclose(col["spend"], [0.12, 0, 0.12, 0.12], rtol=1e-6)  # bob's empty spend: the default 0
    np.testing.assert_array_equal(col["sms_ok"], [1, 1, 1, 0])  # bob's empty sms_ok: the default true
    # a2 (12:00) comes before a1's send (18:00): no contact in the history, but the gap blocks every contact
    np.testing.assert_allclose(col["log_contacts=email"], [0, 0, 0, np.log(2)], rtol=1e-6)
    assert b.eligible[2].tolist() == [True] + [False] * 8
    # a3: a1's conversion is a purchase, at a1's send time
    np.testing.assert_allclose(col["log_purchases"], [0, 0, 0, np.log(2)], rtol=1e-6)
    assert col["purchase_recency"][3] == pytest.approx(np.exp(-(T0 + 41 - (T0 + 16)) / 168.0), rel=1e-6)
    # bob is basic: vip is not for him, whatever the channel
    assert not b.eligible[1, [space.index(c, "vip", s) for c in ("email", "sms") for s in (None, 18)]].any()
    np.testing.assert_array_equal(b.cost, [0.01, 0, 0, 0.01])
    assert set(b.policy_version) == {f"0@{shop.digest}"}
    np.testing.assert_allclose(b.reward, [7.5 - 0.01, 0, 0, -0.01])
    # the same rows, a gap-breaking contact: refused naming the channel, unless allowed
    bad = text.replace(
        "a2,ann,2026-04-21T12:00:00+02:00,plus,120,true,,,", "a2,ann,2026-04-21T12:00:00+02:00,plus,120,true,sms,promo,"
    )
    with pytest.raises(
        ValueError,
        match=r"^row 3, column 'ch': the deployment does not allow sms/promo/now here "
        r"\(min_gap\)",
    ):
        import_onto(log, write(tmp_path, bad, "bad.csv"), shop, m)
    assert log.count_decisions() == 4


def test_import_onto_with_an_action_column_zones_renames_and_estimated_propensity(log, tmp_path, shop):
    from nba.log.importer import DeploymentMapping, import_onto

    space = shop.action_space()
    a = space.index("sms", "promo", None)
    text = (
        f"customer,t,zone,level,action\n"
        f"c1,{T0 + 10},Europe/Paris,basic,{a}\n"  # 12:00 in Paris (summer time)
        f"c2,{T0 + 10},America/New_York,plus,0\n"
        f"c3,{T0 + 10},1,plus,{a}\n"
    )
    m = DeploymentMapping(
        customer_id="customer", time="t", tz_offset="zone", action="action", attributes={"tier": "level"}
    )
    res = import_onto(log, write(tmp_path, text), shop, m)
    assert res.propensity_estimated and res.policy == "imported:estimated-propensity" and res.new_decisions == 3
    b = log.read()
    tz = b.context[:, shop.features().names.index("tz_offset")] * 12
    np.testing.assert_array_equal(tz, [2, -4, 1])
    assert b.context[0, shop.features().names.index("tier=basic")] == 1  # read from the column 'level'
    # estimated: the file's frequencies (a twice, 0 once), smoothed, renormalised over each row's eligible actions
    k = importer.PRIOR_ROWS
    q = (np.bincount([a, 0, a], minlength=9) + k * (np.bincount([a, 0, a], minlength=9) + 1) / 12) / (3 + k)
    np.testing.assert_allclose(b.propensity, q[b.action] / (b.eligible * q).sum(axis=1))
    for zone, message in (
        ("Mars/Olympus", r"^row 1, column 'zone': unknown time zone 'Mars/Olympus'"),
        ("15", r"^row 1, column 'zone': expected a time zone within 14 hours of UTC, got 15"),
    ):
        with pytest.raises(ValueError, match=message):
            import_onto(log, write(tmp_path, text.replace("Europe/Paris", zone), "z.csv"), shop, m)


def test_import_onto_refusals_before_reading_rows(log, tmp_path, shop):
    from nba.log.importer import DeploymentMapping, import_onto

    with pytest.raises(ValueError, match=r"^offer: map the channel and offer columns"):
        DeploymentMapping(time="t", channel="ch")
    with pytest.raises(ValueError, match=r"^send_hour: the action column 'a' already gives the action"):
        DeploymentMapping(time="t", action="a", send_hour="h")
    with pytest.raises(ValueError, match=r"^time_default: without a time column"):
        DeploymentMapping(action="a")
    with pytest.raises(ValueError, match=r"^attributes: expected attribute name -> column name"):
        DeploymentMapping(time="t", action="a", attributes={"tier": ""})
    m = DeploymentMapping(time="t", action="a", propensity="p")
    with pytest.raises(ValueError, match=r"^column 'tier': not in the file, and the attribute 'tier' is required"):
        import_onto(log, write(tmp_path, "t,a,p\n1,0,1\n"), shop, m)
    with pytest.raises(ValueError, match=r"^row 1, column 'a': expected an action index in \[0, 9\)"):
        import_onto(log, write(tmp_path, "t,a,p,tier\n1,9,1,basic\n", "b.csv"), shop, m)
    # channel and offer: one empty, the other not
    m2 = DeploymentMapping(time="t", channel="ch", offer="of", propensity="p")
    with pytest.raises(ValueError, match=r"^row 1, column 'of': empty, but 'ch' is 'email' \(both empty: no contact\)"):
        import_onto(log, write(tmp_path, "t,ch,of,p,tier\n1,email,,1,basic\n", "c.csv"), shop, m2)
    assert log.count_decisions() == 0
    # a log made with other features refuses the deployment's rows, naming it
    import_table(log, write(tmp_path, CSV, "plain.csv"), MAPPING)
    with pytest.raises(
        ValueError,
        match=r"^deployment: this log holds 2 features and 4 actions that are not those "
        r"of the deployment 'shop'",
    ):
        import_onto(log, write(tmp_path, "t,a,p,tier\n1,0,1,basic\n", "d.csv"), shop, m)


def test_the_log_keeps_the_deployment_it_was_imported_onto(log, tmp_path, shop):
    """The log holds the deployment's canonical document, read back to the same digest; a log of one
    deployment refuses another's rows (another digest, the same features and actions), nothing written;
    a refused file leaves an empty log without a deployment."""
    from nba.deployment import Deployment
    from nba.log.importer import DeploymentMapping, import_onto

    m = DeploymentMapping(time="t", action="a", propensity="p")
    with pytest.raises(ValueError, match=r"^row 1, column 'a'"):
        import_onto(log, write(tmp_path, "t,a,p,tier\n1,9,1,basic\n", "bad.csv"), shop, m)
    assert log.deployment() is None
    import_onto(log, write(tmp_path, "t,a,p,tier\n1,0,1,basic\n2,1,0.5,plus\n"), shop, m)
    assert log.deployment() == shop.to_dict() and Deployment.from_dict(log.deployment()).digest == shop.digest
    assert import_onto(log, write(tmp_path, "t,a,p,tier\n3,0,1,basic\n", "more.csv"), shop, m).new_decisions == 1
    dearer = Deployment.from_dict({**SHOP, "channels": {**SHOP["channels"], "email": {"cost": 0.02}}})
    assert dearer.action_space() == shop.action_space() and dearer.digest != shop.digest
    with pytest.raises(
        ValueError,
        match=r"^deployment: this log holds the decisions of the deployment 'shop' "
        r"\(sha256:.*\), not of 'shop'",
    ):
        import_onto(log, write(tmp_path, "t,a,p,tier\n4,0,1,basic\n", "dear.csv"), dearer, m)
    with pytest.raises(ValueError, match=r"^deployment: this log holds the decisions of the deployment 'shop'"):
        log.set_deployment(dearer.to_dict())  # the store's own check, for any writer
    assert log.count_decisions() == 3 and log.deployment() == shop.to_dict()


def test_a_log_moves_onto_its_deployments_new_catalogue(tmp_path):
    """An offer added at the front and an unsent one dropped: every decision keeps its (channel, offer,
    slot) and its eligible actions by name, the new offer was never eligible, the contact history reads
    the same contacts, the log holds the new deployment; a drop of a sent offer, another channel list
    or another world is refused with nothing changed (nba deployment update says the same)."""
    import importlib.util
    from pathlib import Path

    from typer.testing import CliRunner

    from cli.main import app
    from nba.deployment import Deployment
    from nba.log.importer import DeploymentMapping, import_onto, move_onto

    telecom = Path(__file__).resolve().parents[2] / "examples" / "telecom"
    spec = importlib.util.spec_from_file_location("telecom_generate", telecom / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    d = Deployment.load(telecom / "deployment.toml")
    rows = generate.generate(d, 100, 4, seed=1)
    url = f"sqlite:///{tmp_path / 'telecom.db'}"
    m = DeploymentMapping(
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
    with DecisionLog(url) as log:
        import_onto(log, generate.write_csv(rows, tmp_path / "t.csv"), d, m)
        before = log.read()
        sent = log.action_counts(0.0)
    old = d.action_space()
    sent_offers = {old.contents[old.content_of[a]] for a in np.flatnonzero(sent)}
    unsent = [o.name for o in d.offers if o.name not in sent_offers]
    assert unsent and len(sent_offers) > 5
    doc = d.to_dict()
    offers = doc["offers"]
    family = {**offers[sent_offers.pop()], "features": {**offers[unsent[0]]["features"], "category": "family"}}
    new_doc = {**doc, "offers": {"family_bundle": family, **{k: v for k, v in offers.items() if k != unsent[0]}}}
    new = Deployment.from_dict(new_doc)
    space = new.action_space()

    def names(s, a):
        return [(s.channel_of[x], s.contents[s.content_of[x]] if x else "", s.slot_of[x]) for x in a]

    def flags_by_name(s, eligible):
        return {key: eligible[:, j].tolist() for j, key in enumerate(names(s, range(s.n_actions)))}

    with DecisionLog(url) as log:
        for bad, message in (
            (
                {
                    **doc,
                    "offers": {
                        k: v
                        for k, v in offers.items()
                        if k != old.contents[old.content_of[int(np.flatnonzero(sent)[0])]]
                    },
                },
                r"^offers: \['.*'\] were sent in this log",
            ),
            ({**doc, "channels": {**doc["channels"], "web_push": {"cost": 0.001}}}, r"^deployment: channels differ"),
            ({**doc, "deployment": {**doc["deployment"], "name": "other"}}, r"^deployment: name differ"),
        ):
            with pytest.raises(ValueError, match=message):
                move_onto(log, Deployment.from_dict(bad))
        assert log.deployment() == doc and log.layout().n_actions == old.n_actions
        moved = move_onto(log, new)
        assert (moved.decisions, moved.added, moved.removed) == (400, ("family_bundle",), (unsent[0],))
        assert moved.before == d.digest and moved.after == new.digest
        assert move_onto(log, new).decisions == 0  # already there
        after = log.read()
        assert log.deployment() == new.to_dict() and log.layout().n_actions == space.n_actions
        h_before_ids = sorted(set(before.customer_id.tolist()))
        history = log.contact_history(h_before_ids, since=0.0)
    assert after.decision_id.tolist() == before.decision_id.tolist()
    assert names(space, after.action) == names(old, before.action)
    np.testing.assert_array_equal(after.context, before.context)
    np.testing.assert_array_equal(after.propensity, before.propensity)
    np.testing.assert_allclose(after.reward, before.reward)
    was, now = flags_by_name(old, before.eligible), flags_by_name(space, after.eligible)
    for key, column in now.items():
        assert column == was.get(key, [False] * len(column)), key
    dropped = [key for key in was if key not in now]  # the unsent offer's actions: their flags go with them
    assert len(dropped) == len(old.channels) * len(old.send_slots) and {k[1] for k in dropped} == {unsent[0]}
    assert not any(any(c) for key, c in now.items() if key[1] == "family_bundle")
    contacts = before.action > 0
    assert sorted(
        zip(
            history.customer_ids[history.contact_customer].tolist(),
            history.contact_send_at.tolist(),
            names(space, history.contact_action),
            strict=True,
        )
    ) == sorted(
        zip(
            before.customer_id[contacts].tolist(),
            before.send_at[contacts].tolist(),
            names(old, before.action[contacts]),
            strict=True,
        )
    )

    # back to the file as it was: the family bundle was never sent, the dropped offer comes back
    res = CliRunner().invoke(app, ["deployment", "update", str(telecom / "deployment.toml"), "--log", url])
    said = " ".join(res.output.split())
    assert res.exit_code == 0, res.output
    assert (
        f"moved 400 decisions onto 'telco-retention' ({new.digest[:19]}.. -> {d.digest[:19]}.., 801 actions); "
        f"offers added: ['{unsent[0]}'], removed: ['family_bundle']" in said
    )
    with DecisionLog(url) as log:
        assert log.deployment() == doc
        assert names(old, log.read().action) == names(old, before.action)
    res = CliRunner().invoke(
        app, ["deployment", "update", str(telecom / "deployment.toml"), "--log", f"sqlite:///{tmp_path / 'empty.db'}"]
    )
    assert res.exit_code == 2 and "log: no SQLite database at" in " ".join(res.output.split())
