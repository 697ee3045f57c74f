"""Rewards joined from outcome events by a RewardRule at read time, and the rule as JSON."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from nba.log import OutcomeRecords, RewardRule
from tests.nba.log_helpers import make_records


def test_reward_join_window_default_and_cost(log):
    rec = make_records(6)
    rec = replace(rec, action=np.zeros(6, np.int64), send_at=rec.time, cost=np.array([0, 0, 0, 0, 0, 1.0]))
    log.log_decisions(rec)
    s = rec.send_at
    ids = rec.decision_id
    log.log_outcomes(
        OutcomeRecords(
            decision_id=np.array([ids[0], ids[0], ids[1], ids[2], ids[3], ids[3], ids[5]]),
            event=np.array(["converted", "opened", "converted", "converted", "opted_out", "clicked", "converted"]),
            time=np.array([s[0] + 1, s[0] + 0.5, s[1] + 100, s[2] - 1, s[3] + 2, s[3] + 1, s[5] + 72]),
            value=np.array([10.0, 0.0, 20.0, 30.0, -2.0, 0.0, 5.0]),
        )
    )
    r = log.read(RewardRule(window_h=72, default=-0.5)).reward
    # 0: converted in window; 1: too late -> default; 2: before send -> default; 3: no counted
    # event -> default; 4: nothing -> default; 5: on the window's edge, minus cost
    np.testing.assert_allclose(r, [10.0, -0.5, -0.5, -0.5, -0.5, 4.0])
    r = log.read(RewardRule(window_h=200, events=("converted", "opted_out"), opt_out_value=-1.0)).reward
    np.testing.assert_allclose(r, [10.0, 20.0, 0.0, -3.0, 0.0, 4.0])
    r = log.read(RewardRule(events=("opened", "clicked"), subtract_cost=False)).reward
    np.testing.assert_allclose(r, [0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="^rule: unknown events"):
        log.read(RewardRule(events=("bought",)))


def test_reward_rule_as_json_round_trips():
    """An unbounded window is null in JSON; a field left out keeps its default; every error names the field."""
    for rule in (
        RewardRule(),
        RewardRule(
            window_h=float("inf"), events=("converted", "churned"), opt_out_value=-2.0, default=0.5, subtract_cost=False
        ),
    ):
        data = json.loads(json.dumps(rule.to_dict(), allow_nan=False))
        assert RewardRule.from_dict(data) == rule
    assert RewardRule().to_dict() == {
        "window_h": 72.0,
        "events": ["converted"],
        "opt_out_value": 0.0,
        "default": 0.0,
        "subtract_cost": True,
    }
    assert RewardRule.from_dict({"window_h": None}) == RewardRule(window_h=float("inf"))
    for bad, message in [
        ("72", r"^reward_rule: expected an object of \['window_h', 'events'"),
        ({"window_h": "72"}, r"^reward_rule\.window_h: expected a finite number \(or null: no end\), got '72'"),
        ({"default": float("inf")}, r"^reward_rule\.default: expected a finite number, got inf"),
        ({"opt_out_value": True}, r"^reward_rule\.opt_out_value: expected a finite number, got True"),
        ({"events": "converted"}, r"^reward_rule\.events: expected a list of event names"),
    ]:
        with pytest.raises(ValueError, match=message):
            RewardRule.from_dict(bad)
