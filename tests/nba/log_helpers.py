"""Decision records for the decision log's tests: ``make_records`` builds a seeded batch, ``assert_same``
compares what a log reads back with what was written."""

from __future__ import annotations

import numpy as np

from nba.log import DecisionRecords, LoggedBatch

T0 = 493_536.0  # 2026-04-21 00:00 UTC in hours since the epoch


def make_records(
    n: int,
    d: int = 4,
    n_actions: int = 6,
    seed: int = 0,
    start: int = 0,
    customers: int = 10,
    policy: str = "p",
    experiment: str = "",
) -> DecisionRecords:
    rng = np.random.default_rng(seed)
    el = rng.random((n, n_actions)) < 0.6
    el[:, 0] = True
    # a random eligible action per row
    u = rng.random(n) * el.sum(axis=1)
    action = (np.cumsum(el, axis=1) <= u[:, None]).sum(axis=1).astype(np.int64)
    t = T0 + start + np.arange(n, dtype=np.float64)
    return DecisionRecords(
        decision_id=np.array([f"d{start + i}" for i in range(n)]),
        time=t,
        customer_id=np.array([f"c{(start + i) % customers}" for i in range(n)]),
        context=rng.normal(size=(n, d)).astype(np.float32),
        eligible=el,
        action=action,
        send_at=t + np.where(action > 0, 2.0, 0.0),
        propensity=1.0 / el.sum(axis=1),
        policy=np.full(n, policy),
        policy_version=np.full(n, "3"),
        experiment=np.full(n, experiment),
        arm=np.where(np.arange(n) % 2 == 0, "A", "B"),
        cost=np.where(action > 0, 0.25, 0.0),
    )


def assert_same(batch: LoggedBatch, rec: DecisionRecords) -> None:
    for name in DecisionRecords.__dataclass_fields__:
        got, want = getattr(batch, name), getattr(rec, name)
        if got.dtype == object:
            assert got.tolist() == want.tolist(), name
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)
