"""Deployment bundles: policy plus the rules it runs under, round-tripped without pickle."""

import json

import numpy as np
import pytest

from envs.scenario import Scenario
from nba.policies import act, create
from nba.serialization import Bundle, load_bundle, save_bundle


def test_bundle_round_trip(tmp_path):
    sc = Scenario.default()
    policy = create("linucb", sc.action_space, tuple(sc.segments), dim=sc.feature_spec.dim)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, sc.feature_spec.dim)).astype(np.float32)
    mask = np.ones((64, sc.action_space.n_actions), bool)
    d = act(policy, X, mask, np.random.default_rng(1))
    policy.update(X, d.actions, rng.normal(size=64), d.propensities)
    path = save_bundle(Bundle(policy, sc.feature_spec, sc.lifecycle, sc.contact), tmp_path / "b")
    back = load_bundle(path)
    assert back.spec == sc.feature_spec and back.lifecycle == sc.lifecycle and back.rules == sc.contact
    np.testing.assert_array_equal(back.policy.probabilities(X, mask), policy.probabilities(X, mask))
    assert not list(path.rglob("*.pkl"))


def test_bundle_rejects_other_feature_layout(tmp_path):
    sc = Scenario.default()
    policy = create("no_contact", sc.action_space, tuple(sc.segments))
    path = save_bundle(Bundle(policy, sc.feature_spec, sc.lifecycle, sc.contact), tmp_path / "b")
    meta = json.loads((path / "deployment.json").read_text())
    meta["features"]["names"] = meta["features"]["names"][:-1]
    (path / "deployment.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="features.names"):
        load_bundle(path)
    with pytest.raises(FileNotFoundError, match="deployment.json"):
        load_bundle(tmp_path / "missing")
