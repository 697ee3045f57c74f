"""The reliability drill's CI part (``bench/reliability.py --fast``): sustained load, kill -9,
a database outage, an alias flip under load and a cap race, each against a real service; every drill
passes. PostgreSQL drills may be skipped only outside CI with PostgreSQL unreachable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DRILLS = {"sustained load", "kill -9", "database outage", "alias flip", "cap race"}  # fuzz: test_serving_contract


@pytest.mark.slow
def test_every_drill_passes(tmp_path):
    out = tmp_path / "reliability.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "reliability.py"), "--fast", "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-4000:]
    drills = json.loads(out.read_text())["drills"]
    assert {d["name"] for d in drills} == DRILLS
    assert {d["mode"] for d in drills if d["name"] == "kill -9"} == {
        "SQLite write-behind, worker",
        "PostgreSQL write-through, whole tree",
    }
    for d in drills:
        may_skip = d["postgres"] and not os.environ.get("CI")
        assert d["status"] == "pass" or (may_skip and d["status"] == "skip"), d
        if d["status"] == "pass":
            assert d["rows"] and all(r["ok"] is not False for r in d["rows"]), d


def test_the_cap_check_finds_every_kind_of_breach():
    """The cap race's judge: a checker that never fails would pass any race."""
    sys.path.insert(0, str(ROOT / "bench"))
    from reliability import cap_violations

    from envs.scenario import Scenario

    sc = Scenario.default()
    space, content = sc.action_space, sc.action_space.contents[0]
    email, sms = space.index("email", content), space.index("sms", content)
    t = 480_000.0  # hours since the epoch

    def breaches(rows):
        batch = SimpleNamespace(
            customer_id=np.array([r[0] for r in rows], dtype=object),
            action=np.array([r[1] for r in rows]),
            send_at=np.array([r[2] for r in rows]),
        )
        return cap_violations(batch, sc.contact, space)[0]

    assert breaches([("a", email, t), ("a", sms, t + 4), ("a", 0, t + 1), ("b", email, t)]) == 0
    assert breaches([("a", email, t), ("a", sms, t + 3.9)]) == 1  # minimum gap of 4 h
    assert breaches([("a", email, t), ("b", email, t)]) == 0  # per customer
    assert breaches([("a", email, t), ("a", sms, t + 4), ("a", email, t + 8)]) == 1  # two a day, all channels
    assert breaches([("a", email, t), ("a", sms, t + 4), ("a", email, t + 24)]) == 0  # half-open day
    assert breaches([("a", sms, t), ("a", sms, t + 24), ("a", sms, t + 48)]) == 1  # two sms a week
