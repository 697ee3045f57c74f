"""A decision log exported to Parquet and read back."""

from __future__ import annotations

import numpy as np

from nba.log import LoggedBatch, LogLayout, OutcomeRecords, RewardRule, read_parquet_batches, read_parquet_layout
from tests.nba.log_helpers import assert_same, make_records


def test_export_parquet_round_trip(log, tmp_path):
    rec = make_records(2300)
    log.log_decisions(rec)
    log.log_outcomes(OutcomeRecords(rec.decision_id[:3], np.full(3, "converted"), rec.send_at[:3], np.ones(3)))
    path = tmp_path / "log.parquet"
    rule = RewardRule(window_h=24)
    assert log.export_parquet(path, rule, chunk_rows=1000) == 2300
    back = list(read_parquet_batches(path, batch_rows=1000))
    assert [len(b) for b in back] == [1000, 1000, 300]
    whole = LoggedBatch.concat(back)
    assert_same(whole, rec)
    np.testing.assert_array_equal(whole.reward, log.read(rule).reward)
    assert read_parquet_layout(path) == LogLayout(4, 6)
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    assert str(schema.field("context").type) == "fixed_size_list<element: float>[4]"
    assert b"nba.reward_rule" in schema.metadata
