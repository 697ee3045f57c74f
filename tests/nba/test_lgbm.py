"""The LightGBM helpers every tree policy and the off-policy reward model share (nba.policies.lgbm)."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from nba.policies import lgbm


def test_joint_rows_put_each_context_beside_its_actions_features():
    X = np.arange(6, dtype=np.float64).reshape(3, 2)
    psi = np.eye(4, dtype=np.float32) * 10
    rows = lgbm.joint_rows(X, psi, np.array([3, 0, 1]))
    assert rows.dtype == np.float32
    np.testing.assert_array_equal(rows, [[0, 1, 0, 0, 0, 10], [2, 3, 10, 0, 0, 0], [4, 5, 0, 10, 0, 0]])


def test_predict_eligible_is_the_same_in_any_chunking_and_fills_the_rest(monkeypatch):
    rng = np.random.default_rng([7, 1])
    X = rng.normal(size=(300, 5))
    psi = np.eye(9, dtype=np.float32)
    a = rng.integers(0, 9, 2000)
    x = rng.normal(size=(2000, 5))
    y = x[:, 0] * (a % 3) + a * 0.1 + rng.normal(0, 0.1, 2000)
    booster = lgb.train(
        {"objective": "regression", "verbose": -1, "num_threads": 1, "min_data_in_leaf": 20},
        lgb.Dataset(lgbm.joint_rows(x, psi, a), y),
        num_boost_round=20,
    )
    ok = rng.random((300, 9)) < 0.5
    whole = lgbm.predict_eligible(booster, X, psi, ok, np.nan, 1)
    r, c = np.nonzero(ok)
    np.testing.assert_array_equal(whole[r, c], booster.predict(lgbm.joint_rows(X[r], psi, c), num_threads=1))
    assert np.isnan(whole[~ok]).all()
    for limit in (1, 14 * 9 * 4 * 7):  # one context a call, then 7 (504 bytes a context)
        monkeypatch.setattr(lgbm, "PREDICT_BYTES", limit)
        np.testing.assert_array_equal(lgbm.predict_eligible(booster, X, psi, ok, np.nan, 1), whole)
    np.testing.assert_array_equal(lgbm.predict_eligible(booster, X, psi, ok, np.nan, 1, chunk=3), whole)
    assert (lgbm.predict_eligible(booster, X, psi, np.zeros_like(ok), -1.0, 1) == -1.0).all()


@pytest.mark.parametrize("n", [0, 1])
def test_predict_eligible_on_tiny_batches(n):
    psi = np.eye(3, dtype=np.float32)
    booster = lgb.train(
        {"objective": "regression", "verbose": -1, "num_threads": 1, "min_data_in_leaf": 1},
        lgb.Dataset(lgbm.joint_rows(np.zeros((10, 2)), psi, np.arange(10) % 3), np.arange(10.0)),
        num_boost_round=2,
    )
    out = lgbm.predict_eligible(booster, np.zeros((n, 2)), psi, np.ones((n, 3), bool), np.nan, 1)
    assert out.shape == (n, 3) and np.isfinite(out).all()


@pytest.mark.parametrize("name", ["lgbm_egreedy", "lgbm_squarecb", "lgbm_funnel", "fqi", "two_stage"])
@pytest.mark.parametrize(
    ("param", "value", "said"),
    [
        ("num_boost_round", 0, "must be >= 1, got 0"),
        ("learning_rate", -0.1, "must be a finite number > 0, got -0.1"),
        ("learning_rate", float("nan"), "must be a finite number > 0, got nan"),
        ("num_leaves", 1, "must be >= 2, got 1"),
        ("min_data_in_leaf", 0, "must be >= 1, got 0"),
        ("threads", 0, "must be >= 1, got 0"),
    ],
)
def test_every_lightgbm_policy_refuses_a_model_parameter_out_of_range_naming_it(name, param, value, said):
    """Its model's parameters reach the command line (nba train -p num_leaves=1): each out-of-range value is
    refused by name when the policy is built, not by LightGBM at its first fit."""
    from envs.scenario import Scenario
    from nba.policies import create

    sc = Scenario.default()
    with pytest.raises(ValueError, match=f"^{param}: {said}$"):
        create(name, sc.action_space, tuple(sc.segments), dim=sc.feature_spec.dim, **{param: value})
