"""Importing CSV and Parquet decision logs: mapping, idempotency, errors naming row and column."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nba.log import ColumnMapping, DecisionLog, RewardRule, import_table

MAPPING = ColumnMapping(context=("x1", "x2"), action="action", propensity="p", n_actions=4, time="t",
                        reward="reward", customer_id="customer", eligible="eligible")
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
    m = ColumnMapping(context=("f",), action="a", propensity="prop", n_actions=3, time="time",
                      decision_id="id", send_at="send")
    assert import_table(log, write(tmp_path, text), m) == 2
    b = log.read()
    assert b.decision_id.tolist() == ["x", "y"] and b.customer_id.tolist() == ["x", "y"]
    assert b.eligible.all()
    np.testing.assert_array_equal(b.send_at, [12.0, 11.0])
    assert log.count_outcomes() == 0


@pytest.mark.parametrize("row, column, cell, message", [
    (2, "p", "abc", r"^row 2, column 'p': expected a number in \(0, 1\], got 'abc'"),
    (3, "p", "0", r"^row 3, column 'p': expected a number in \(0, 1\], got 0"),
    (1, "action", "4", r"^row 1, column 'action': expected an action index in \[0, 4\), got 4"),
    (2, "action", "1.5", r"^row 2, column 'action': expected an action index"),
    (3, "x2", "nan", r"^row 3, column 'x2': expected a finite number"),
    (2, "t", "yesterday", r"^row 2, column 't': expected hours since the epoch or an ISO timestamp, got 'yesterday'"),
    (1, "reward", "lots", r"^row 1, column 'reward': expected a number or an empty cell, got 'lots'"),
    (3, "eligible", "0 1", r"^row 3, column 'eligible': the chosen action 3 is not among the eligible ones"),
    (2, "eligible", "0 9", r"^row 2, column 'eligible': action indices must be in \[0, 4\)"),
    (1, "customer", "", r"^row 1, column 'customer': expected a non-empty value"),
])
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
    table = pa.table({
        "x1": pa.array([1.0, 2.0, 3.0], pa.float32()), "x2": [0.0, 0.5, 1.0], "action": [0, 2, 1],
        "p": [0.5, 0.5, 0.9], "t": pa.array([t0, t0 + dt.timedelta(hours=1), t0 + dt.timedelta(hours=2)],
                                            pa.timestamp("us", tz="UTC")),
        "reward": [1.0, None, 2.0], "customer": ["a", "b", "a"], "eligible": [[0], [0, 2], [0, 1, 3]],
    })
    path = tmp_path / "log.parquet"
    pq.write_table(table, path)
    assert import_table(log, path, MAPPING) == 3
    b = log.read()
    np.testing.assert_allclose(b.time, [493536.0, 493537.0, 493538.0])
    np.testing.assert_array_equal(b.reward, [1.0, 0.0, 2.0])
    np.testing.assert_array_equal(b.eligible[1], [True, False, True, False])
    assert import_table(log, path, MAPPING) == 0
