"""Policies as MLflow models in a real SQLite store: logged without pickle, aliases, promotion."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest

from envs.scenario import Scenario
from nba.policies import create
from nba.serialization import Bundle
from training import registry


@pytest.fixture(scope="module")
def store(tmp_path_factory, monkeypatch_module):
    root = tmp_path_factory.mktemp("mlflow")
    monkeypatch_module.delenv("MLFLOW_TRACKING_URI", raising=False)
    registry.use_store(root)
    return root


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _bundle(name: str) -> Bundle:
    sc = Scenario.default()
    policy = create(name, sc.action_space, tuple(sc.segments), dim=sc.feature_spec.dim if name == "linucb" else None)
    return Bundle(policy, sc.feature_spec, sc.lifecycle, sc.contact)


def _register(name: str) -> str:
    with mlflow.start_run():
        info = registry.log_policy(_bundle(name))
    return str(info.registered_model_version)


def test_logged_policy_predicts_and_holds_no_pickle(store):
    version = _register("business_as_usual")
    uri = f"models:/{registry.MODEL_NAME}/{version}"
    model = mlflow.pyfunc.load_model(uri)
    frame = registry.example_frame(_bundle("business_as_usual"), n=20)
    out = model.predict(frame, params={"seed": 3})
    assert list(out.columns) == ["action", "channel", "content", "send_hour", "propensity", "policy"]
    assert len(out) == 20 and np.all(out["propensity"] == 1.0)
    # consent off for every channel: only no contact is possible
    frame[[c for c in frame.columns if c.startswith("consent=")]] = 0.0
    assert (model.predict(frame)["action"] == 0).all()
    files = mlflow.artifacts.download_artifacts(uri)
    from pathlib import Path

    suffixes = {p.suffix for p in Path(files).rglob("*") if p.is_file()}
    assert not suffixes & {".pkl", ".pickle", ".cloudpickle"}, suffixes
    assert (Path(files) / "artifacts" / "bundle" / "deployment.json").exists()
    assert registry.alias_state("none").version is None
    from mlflow import MlflowClient

    assert MlflowClient().get_model_version(registry.MODEL_NAME, version).tags["policy"] == "business_as_usual"


def test_promote_needs_evidence_and_rolls_back(store):
    v1, v2 = _register("no_contact"), _register("business_as_usual")
    registry.set_alias(registry.CHAMPION, v1)
    registry.set_alias(registry.CHALLENGER, v2)
    # no evaluation: nothing moves
    p = registry.promote()
    assert not p.promoted and registry.alias_state(registry.CHAMPION).version == v1
    # evaluated on different datasets: nothing moves
    registry.version_tags(v1, {"eval.dr.value": 1.0, "eval.dr.ci_low": 0.9, "eval.dataset": "a"})
    registry.version_tags(v2, {"eval.dr.value": 2.0, "eval.dr.ci_low": 1.5, "eval.dataset": "b"})
    assert not registry.promote().promoted
    # challenger's lower bound below the champion's estimate: nothing moves
    registry.version_tags(v2, {"eval.dr.ci_low": 0.95, "eval.dataset": "a"})
    p = registry.promote()
    assert not p.promoted and "does not beat" in p.reason
    # it beats it: champion moves, the reason is recorded
    registry.version_tags(v2, {"eval.dr.ci_low": 1.2})
    p = registry.promote()
    assert p.promoted and p.champion == v2 and p.previous == v1
    state = registry.alias_state(registry.CHAMPION)
    assert state.version == v2 and "lower bound" in state.tags["promotion.reason"]
    # one command back
    r = registry.rollback()
    assert r.promoted and registry.alias_state(registry.CHAMPION).version == v1


def test_promote_by_ab_result(store):
    v1, v2 = _register("no_contact"), _register("uniform_random")
    registry.set_alias(registry.CHAMPION, v1)
    registry.set_alias(registry.CHALLENGER, v2)
    assert not registry.promote(ab_winner="champion").promoted
    assert registry.promote(ab_winner="challenger").champion == v2
