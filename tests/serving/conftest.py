"""Fixtures for the decision service's integration tests: a real MLflow registry shared by the modules."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest


@dataclass
class Registry:
    """An embedded MLflow registry holding business_as_usual (version 1, @champion) and uniform_random (2)."""

    root: Path
    uri: str
    versions: dict[str, str]

    def set_alias(self, alias: str, version: str) -> None:
        from training.registry import set_alias

        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        set_alias(alias, version)


@pytest.fixture(scope="session")
def registry(tmp_path_factory) -> Registry:
    from envs.scenario import Scenario
    from nba.policies import create
    from nba.serialization import Bundle
    from training.registry import log_policy, set_alias, use_store

    root = tmp_path_factory.mktemp("registry")
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        uri = use_store(root)
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    sc = Scenario.default()
    versions = {}
    for name in ("business_as_usual", "uniform_random"):
        policy = create(name, sc.action_space, tuple(sc.segments), dim=sc.feature_spec.dim)
        with mlflow.start_run():
            info = log_policy(Bundle(policy, sc.feature_spec, sc.lifecycle, sc.contact))
        versions[name] = str(info.registered_model_version)
    set_alias("champion", versions["business_as_usual"])
    return Registry(root, uri, versions)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serving")
