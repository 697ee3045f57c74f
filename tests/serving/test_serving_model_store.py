"""serving.model_store.ModelStore against a real embedded MLflow registry: every copy is checked against the
digest recorded at registration, a bad cached copy is downloaded again, and readiness says what is wrong.

The versions live in their own registered model (``nba-store-test``), so moving its aliases and
tampering its artefacts leaves the other modules' ``nba-policy`` alone.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from envs.scenario import Scenario
from nba.serialization import Bundle, bundle_digest, load_bundle
from serving import model_store
from serving.model_store import ModelStore

MODEL = "nba-store-test"
CLOSED_PORT = "http://127.0.0.1:9"  # nothing listens there


@dataclass
class Versions:
    uri: str
    good: str  # business_as_usual, tagged
    broken: str  # uniform_random, tagged, its registered arrays.npz replaced by an object array
    untagged: str  # the good version's artefacts registered again without the digest tag
    digests: dict[str, str]  # version -> bundle_digest tag

    def set_alias(self, alias: str, version: str) -> None:
        MlflowClient(tracking_uri=self.uri, registry_uri=self.uri).set_registered_model_alias(MODEL, alias, version)

    def unset_alias(self, alias: str) -> None:
        MlflowClient(tracking_uri=self.uri, registry_uri=self.uri).delete_registered_model_alias(MODEL, alias)


@pytest.fixture(scope="module")
def versions(registry) -> Versions:
    from nba.policies import create
    from training.registry import DIGEST_TAG, log_policy

    mlflow.set_tracking_uri(registry.uri)
    mlflow.set_registry_uri(registry.uri)
    client = MlflowClient(tracking_uri=registry.uri, registry_uri=registry.uri)
    sc = Scenario.default()
    infos = {}
    for name in ("business_as_usual", "uniform_random"):
        policy = create(name, sc.action_space, tuple(sc.segments))
        with mlflow.start_run():
            infos[name] = log_policy(
                Bundle(policy, sc.feature_spec, sc.lifecycle, sc.contact), registered_model_name=MODEL
            )
    good, broken = (str(infos[n].registered_model_version) for n in ("business_as_usual", "uniform_random"))
    mv = client.get_model_version(MODEL, good)
    untagged = str(client.create_model_version(MODEL, source=mv.source, run_id=mv.run_id).version)
    assert DIGEST_TAG not in client.get_model_version(MODEL, untagged).tags
    # tamper the registry's own copy of the broken version (an artefact store that was written to)
    location = Path(mlflow.get_logged_model(infos["uniform_random"].model_id).artifact_location.removeprefix("file://"))
    arrays = location / "artifacts" / "bundle" / "policy" / "arrays.npz"
    assert arrays.exists()
    np.savez(arrays, w=np.array([{"x": 1}], dtype=object))
    digests = {v: client.get_model_version(MODEL, v).tags[DIGEST_TAG] for v in (good, broken)}
    return Versions(registry.uri, good, broken, untagged, digests)


@pytest.fixture(autouse=True)
def _mlflow_globals(monkeypatch):
    """ModelStore points MLflow's global URIs (and MLFLOW_TRACKING_URI) at its registry: put them back."""
    tracking, reg = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        if var in os.environ:
            monkeypatch.setenv(var, os.environ[var])
        else:
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    yield
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(reg)


def _store(uri: str, cache: Path, aliases: tuple[str, ...] = ("champion",)) -> ModelStore:
    return ModelStore(uri, MODEL, aliases, cache, poll_s=0)


def _folder(cache: Path, version: str) -> Path:
    return cache / MODEL / f"v{version}" / "bundle"


def _object_array(folder: Path) -> None:
    np.savez(folder / "policy" / "arrays.npz", w=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        load_bundle(folder)


def _remove_caps(folder: Path) -> None:
    meta = json.loads((folder / "deployment.json").read_text())
    assert meta["contact"]["caps"] and meta["contact"]["min_gap_h"] > 0
    meta["contact"]["caps"], meta["contact"]["min_gap_h"] = [], 0
    (folder / "deployment.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    rules = load_bundle(folder).rules  # it loads: only the digest tells
    assert rules.caps == () and rules.min_gap_h == 0


def _filled_cache(versions: Versions, cache: Path) -> Path:
    """A cache as an earlier run leaves it: the good version served as champion."""
    versions.set_alias("champion", versions.good)
    first = _store(versions.uri, cache)
    assert first.refresh() and first.ready and first.problems == [] and first.not_ready_reason is None
    return _folder(cache, versions.good)


def test_digest_tag_is_the_registry_one():
    from training.registry import DIGEST_TAG

    assert model_store.DIGEST_TAG == DIGEST_TAG


def test_pointer_remembers_version_and_digest(versions, tmp_path):
    folder = _filled_cache(versions, tmp_path)
    pointer = json.loads((tmp_path / MODEL / "champion.json").read_text())
    assert set(pointer) == {"version", "digest", "at"}
    assert pointer["version"] == versions.good and pointer["digest"] == versions.digests[versions.good]
    assert bundle_digest(folder) == pointer["digest"]


def test_cached_object_array_is_downloaded_again(versions, tmp_path):
    folder = _filled_cache(versions, tmp_path)
    _object_array(folder)
    store = _store(versions.uri, tmp_path)
    store.start()
    assert store.ready and store.not_ready_reason is None
    served = store.served["champion"]
    assert served.version == versions.good and served.source == "registry"
    assert served.bundle.policy.name == "business_as_usual"
    assert bundle_digest(folder) == versions.digests[versions.good]  # the cache holds the good copy again
    [problem] = store.problems
    # the digest catches it before np.load would (the untagged version's test shows the load failing)
    assert problem.startswith(f"champion version {versions.good}: cached bundle failed its digest check (")
    assert problem.endswith("downloaded again")
    assert "registry unreachable" not in problem
    # the store keeps serving; the next refresh finds nothing new to do
    assert store.refresh() and store.served["champion"] is served


def test_cached_bundle_without_caps_fails_its_digest_check(versions, tmp_path):
    folder = _filled_cache(versions, tmp_path)
    versions.set_alias("challenger", versions.good)  # two aliases on one version: one download
    try:
        _remove_caps(folder)
        store = _store(versions.uri, tmp_path, ("champion", "challenger"))
        store.start()
    finally:
        versions.unset_alias("challenger")
    assert store.ready
    for alias in ("champion", "challenger"):
        assert store.served[alias].bundle.rules == Scenario.default().contact
    good, tampered = versions.digests[versions.good][:19], "sha256:"
    champion, challenger = store.problems
    assert champion.startswith(f"champion version {versions.good}: cached bundle failed its digest check ({tampered}")
    assert f"expected {good}..)" in champion and champion.endswith("; downloaded again")
    assert challenger == champion.replace("champion", "challenger", 1)
    assert bundle_digest(folder) == versions.digests[versions.good]


@pytest.mark.parametrize("down", ["missing-sqlite", "closed-port"])
def test_registry_unreachable_refuses_a_tampered_cache(versions, tmp_path, down):
    uri = f"sqlite:///{tmp_path}/missing/mlflow.db" if down == "missing-sqlite" else CLOSED_PORT
    folder = _filled_cache(versions, tmp_path)
    # untouched: served from the cache, and problems says the registry is down
    store = _store(uri, tmp_path)
    store.start()
    assert store.ready and store.served["champion"].source == "cache" and store.not_ready_reason is None
    [problem] = store.problems
    assert problem.startswith("champion: registry unreachable (")
    assert problem.endswith(f"serving version {versions.good} from the local cache")
    # tampered: refused, and the reason says both what is wrong and why it was not downloaded again
    _remove_caps(folder)
    store = _store(uri, tmp_path)
    store.start()
    assert not store.ready
    reason = store.not_ready_reason
    assert reason.startswith(f"champion version {versions.good}: cached bundle failed its digest check (")
    assert f"expected {versions.digests[versions.good][:19]}..)" in reason
    assert "not served (registry unreachable: " in reason
    assert ("FileNotFoundError" if down == "missing-sqlite" else "MlflowException") in reason
    assert store.problems == [reason]
    assert not (tmp_path / "missing").exists()  # no empty registry made up at a wrong path
    # the registry is back: the same store heals the cache
    store.tracking_uri = versions.uri
    store._client = None
    assert store.refresh() and store.ready
    [problem] = store.problems
    assert "cached bundle failed its digest check" in problem and problem.endswith("downloaded again")


def test_no_cached_copy_and_registry_unreachable(versions, tmp_path):
    store = _store(CLOSED_PORT, tmp_path)
    assert store.not_ready_reason == "champion: not loaded yet"
    store.start()
    assert not store.ready
    assert store.not_ready_reason.startswith("champion: registry unreachable (MlflowException: ")
    assert store.not_ready_reason.endswith("and no cached copy")
    assert store.problems == [store.not_ready_reason]


def test_pointer_from_before_digests_loads_with_a_warning(versions, tmp_path, caplog):
    folder = _filled_cache(versions, tmp_path)
    _remove_caps(folder)  # nothing to check it against while the registry is down
    (tmp_path / MODEL / "champion.json").write_text(json.dumps({"version": versions.good, "at": 0.0}))
    store = _store(CLOSED_PORT, tmp_path)
    with caplog.at_level(logging.WARNING, logger="nba.serving"):
        store.start()
    assert store.ready and store.served["champion"].source == "cache"
    assert "without a digest" in caplog.text
    # once the registry answers, the copy is checked against the version's tag and replaced
    store.tracking_uri = versions.uri
    store._client = None
    assert store.refresh() and store.ready
    served = store.served["champion"]
    assert served.source == "registry" and served.bundle.rules == Scenario.default().contact
    [problem] = store.problems
    assert "cached bundle failed its digest check" in problem
    pointer = json.loads((tmp_path / MODEL / "champion.json").read_text())
    assert pointer["digest"] == versions.digests[versions.good]


def test_untagged_version_loads_unchecked_with_one_warning(versions, tmp_path, caplog):
    versions.set_alias("champion", versions.untagged)
    store = _store(versions.uri, tmp_path)
    with caplog.at_level(logging.WARNING, logger="nba.serving"):
        assert store.refresh() and store.ready and store.problems == []
        versions.set_alias("champion", versions.good)
        assert store.refresh() and store.served["champion"].version == versions.good
        versions.set_alias("champion", versions.untagged)
        assert store.refresh() and store.served["champion"].version == versions.untagged
    assert caplog.text.count("no bundle_digest tag") == 1
    # the pointer remembers the digest of the copy it loaded, so the cache is still checked offline
    folder = _folder(tmp_path, versions.untagged)
    pointer = json.loads((tmp_path / MODEL / "champion.json").read_text())
    assert pointer["digest"] == bundle_digest(folder) == versions.digests[versions.good]  # same artefacts
    # a cached copy that fails to load is downloaded again, tag or not
    _object_array(folder)
    store = _store(versions.uri, tmp_path)
    assert store.refresh() and store.ready
    [problem] = store.problems
    assert "cached bundle cannot load: ValueError" in problem and problem.endswith("downloaded again")
    versions.set_alias("champion", versions.good)


def test_a_version_broken_in_the_registry_is_not_served(versions, tmp_path):
    from training.registry import DIGEST_TAG

    _filled_cache(versions, tmp_path)
    store = _store(versions.uri, tmp_path)
    assert store.refresh() and store.ready
    versions.set_alias("champion", versions.broken)
    try:
        # moved to the broken version: the running store keeps the good one and says why
        assert store.refresh() and store.served["champion"].version == versions.good
        [problem] = store.problems
        assert problem.startswith(f"champion version {versions.broken}: downloaded bundle failed its digest check (")
        assert problem.endswith(f"; still serving version {versions.good}")
        assert not (tmp_path / MODEL / f"v{versions.broken}").exists()  # never entered the cache
        # a fresh start has nothing to serve, and says so: not "registry unreachable"
        fresh = _store(versions.uri, tmp_path / "fresh")
        fresh.start()
        assert not fresh.ready
        reason = fresh.not_ready_reason
        assert reason.startswith(f"champion version {versions.broken}: downloaded bundle failed its digest check (")
        assert reason.endswith("; not served") and "unreachable" not in reason
        assert fresh.refresh() and fresh.not_ready_reason == reason  # tried again at each refresh
        # without the tag, the download passes unchecked and fails to load
        client = MlflowClient(tracking_uri=versions.uri, registry_uri=versions.uri)
        client.delete_model_version_tag(MODEL, versions.broken, DIGEST_TAG)
        try:
            assert fresh.refresh() and not fresh.ready
            reason = fresh.not_ready_reason
            assert reason.startswith(f"champion version {versions.broken}: downloaded bundle cannot load: ValueError")
            assert reason.endswith("; not served") and fresh.problems == [reason]
            assert not (tmp_path / "fresh" / MODEL / f"v{versions.broken}").exists()
        finally:
            client.set_model_version_tag(MODEL, versions.broken, DIGEST_TAG, versions.digests[versions.broken])
    finally:
        versions.set_alias("champion", versions.good)
    # back on the good version: served, and nothing wrong any more
    assert store.refresh() and store.served["champion"].version == versions.good and store.problems == []


def test_champion_alias_not_set(versions, tmp_path):
    versions.unset_alias("champion")
    try:
        store = _store(versions.uri, tmp_path, ("champion", "challenger"))
        assert store.refresh() and not store.ready
        assert store.not_ready_reason == f"champion: no version of {MODEL} has this alias in the registry"
        assert store.problems == [store.not_ready_reason]  # an unset challenger is not a problem
    finally:
        versions.set_alias("champion", versions.good)
    assert store.refresh() and store.ready and store.problems == []


def test_a_version_of_another_world_is_refused_and_the_last_good_version_kept(versions, tmp_path):
    """One service serves one world (one decision log holds its decisions): a champion moved to a policy
    trained on a brand's deployment is refused with the reason, and the store keeps the version it serves."""
    from nba.deployment import Deployment
    from nba.policies import create
    from training.registry import log_policy

    world = Deployment.load(Path(__file__).resolve().parents[2] / "examples" / "telecom" / "deployment.toml")
    policy = create("linucb", world.action_space(), dim=world.features().dim)
    with mlflow.start_run():
        info = log_policy(Bundle.of_deployment(policy, world), registered_model_name=MODEL)
    store = _store(versions.uri, tmp_path)
    assert store.refresh() and store.ready and store.served["champion"].version == versions.good
    versions.set_alias("champion", str(info.registered_model_version))
    try:
        assert store.refresh()
        assert store.ready and store.served["champion"].version == versions.good
        assert any(
            "is a bundle of the deployment 'telco-retention', but the service serves a policy of the "
            "simulator's world" in p
            for p in store.problems
        ), store.problems
    finally:
        versions.set_alias("champion", versions.good)


def test_a_deployment_service_refuses_a_version_of_a_changed_deployment_naming_the_change(versions, tmp_path):
    """With NBA_DEPLOYMENT, only policies of that very deployment are served: one trained on a catalogue
    with an offer more is refused at start, the message naming the offer; the scenario's champion too."""
    from nba.deployment import Deployment
    from nba.policies import create
    from training.registry import log_policy

    path = Path(__file__).resolve().parents[2] / "examples" / "telecom" / "deployment.toml"
    world = Deployment.load(path)
    data = world.to_dict()
    data["offers"]["sim_only_deal"] = {
        "features": {"category": "data", "discount": 0.5, "margin": 1.0, "monthly_price": 3.0}
    }
    changed = Deployment.from_dict(data)
    with mlflow.start_run():
        info = log_policy(
            Bundle.of_deployment(create("linucb", changed.action_space(), dim=changed.features().dim), changed),
            registered_model_name=MODEL,
        )
    store = ModelStore(versions.uri, MODEL, ("champion",), tmp_path, poll_s=0, deployment=world)
    assert store.refresh() and not store.ready  # the scenario's champion: another world
    assert any(
        "decides in the simulator's world, but the service serves the deployment 'telco-retention'" in p
        for p in store.problems
    ), store.problems
    versions.set_alias("champion", str(info.registered_model_version))
    try:
        assert store.refresh() and not store.ready
        assert any("offers: adds 'sim_only_deal'" in p for p in store.problems), store.problems
    finally:
        versions.set_alias("champion", versions.good)
