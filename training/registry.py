"""MLflow tracking and registry for nba: the embedded store, logged policies, aliases, promotion.

One registered model (default ``nba-policy``) holds every policy version; the aliases ``champion``
and ``challenger`` say what production serves. :func:`promote` moves ``champion`` only when the
evaluation supports it and records why as tags; :func:`rollback` returns to the previous champion.

Policies are logged as pyfunc *models from code* (``training/policy_model.py``): MLflow copies that
file and the policy's ``bundle`` artefact (JSON, ``.npz`` without pickle, LightGBM text). MLflow
pickles nothing of the policy; what it writes beside it (MLmodel YAML, requirements, the input
example as JSON) is data too.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nba.serialization import Bundle, save_bundle

MODEL_NAME = "nba-policy"
CHAMPION, CHALLENGER = "champion", "challenger"
POLICY_MODEL_FILE = Path(__file__).with_name("policy_model.py")
REQUIREMENTS = ["numpy", "pandas", "lightgbm", "mlflow"]
ENTRY_RUN = os.environ.get("MLFLOW_RUN_ID")  # set when launched by `mlflow run` (the jobs take it over)


def use_store(root: str | Path = "nba-runs", experiment: str = "nba") -> str:
    """Point MLflow at ``MLFLOW_TRACKING_URI`` if set, else at the embedded store under ``root``
    (``mlflow.db`` SQLite tracking + registry, ``mlartifacts/`` artefacts). Returns the URI."""
    import logging
    import warnings

    import mlflow

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer", category=UserWarning)
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    root = Path(root).resolve()
    if not uri:
        root.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if ENTRY_RUN and os.environ.get("MLFLOW_EXPERIMENT_ID"):  # launched by `mlflow run`: its experiment
        mlflow.set_experiment(experiment_id=os.environ["MLFLOW_EXPERIMENT_ID"])
        return uri
    if mlflow.get_experiment_by_name(experiment) is None:
        location = None if os.environ.get("MLFLOW_TRACKING_URI") else (root / "mlartifacts").as_uri()
        mlflow.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment)
    return uri


def example_frame(bundle: Bundle, n: int = 2, seed: int = 0):
    """A small input example: plausible feature rows with every channel consented."""
    import pandas as pd

    names = bundle.spec.names
    X = np.random.default_rng(seed).uniform(0, 1, size=(n, len(names)))  # float64: what callers send
    for c in bundle.spec.channels:
        X[:, names.index(f"consent={c}")] = 1.0
    return pd.DataFrame(X, columns=list(names))


def log_policy(bundle: Bundle, registered_model_name: str | None = MODEL_NAME, name: str = "policy",
               tags: dict[str, str] | None = None):
    """Log ``bundle`` as a pyfunc model in the active run (and register it). Returns MLflow's ModelInfo."""
    import mlflow
    from mlflow.models import infer_signature

    from training.policy_model import decide_frame

    example = example_frame(bundle)
    signature = infer_signature(example, decide_frame(bundle, example, seed=0), params={"seed": 0})
    # MLflow prints "Successfully registered model ... / Created version ..." on every call; the
    # returned ModelInfo says the same, so keep the console for the jobs' own progress
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(io.StringIO()), \
            contextlib.redirect_stdout(io.StringIO()):
        path = save_bundle(bundle, Path(tmp) / "bundle")
        info = mlflow.pyfunc.log_model(
            name=name, python_model=str(POLICY_MODEL_FILE), artifacts={"bundle": str(path)},
            signature=signature, input_example=example, pip_requirements=REQUIREMENTS,
            registered_model_name=registered_model_name, tags=tags,
        )
    if registered_model_name is not None:
        version_tags(str(info.registered_model_version), {"policy": bundle.policy.name, **(tags or {})},
                     registered_model_name)
    return info


@dataclass(frozen=True)
class AliasState:
    alias: str
    version: str | None
    run_id: str | None
    policy: str | None
    tags: dict[str, str]


def alias_state(alias: str, model_name: str = MODEL_NAME) -> AliasState:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        mv = client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return AliasState(alias, None, None, None, {})
    return AliasState(alias, str(mv.version), mv.run_id, mv.tags.get("policy"), dict(mv.tags))


def set_alias(alias: str, version: str, model_name: str = MODEL_NAME) -> None:
    from mlflow import MlflowClient

    MlflowClient().set_registered_model_alias(model_name, alias, str(version))


@dataclass(frozen=True)
class Promotion:
    promoted: bool
    reason: str
    champion: str | None  # version serving after the decision
    previous: str | None


def _float_tag(tags: dict[str, str], key: str) -> float | None:
    try:
        return float(tags[key])
    except (KeyError, ValueError):
        return None


def promote(model_name: str = MODEL_NAME, metric: str = "dr", ab_winner: str | None = None) -> Promotion:
    """Move ``champion`` to the challenger when the evidence supports it.

    Evidence, in order: a finished A/B test that names the challenger the winner (``ab_winner`` =
    ``"challenger"``), else the off-policy evaluation tags ``eval.<metric>.value`` / ``.ci_low`` set
    on both versions by the evaluate job on the same dataset (``eval.dataset``): the challenger's lower
    confidence bound must beat the champion's estimate. Records the reason as tags on the new
    champion version and the registered model; never moves an alias otherwise.
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    champ, chall = alias_state(CHAMPION, model_name), alias_state(CHALLENGER, model_name)
    if chall.version is None:
        return Promotion(False, "no challenger registered", champ.version, None)
    if champ.version is None:
        reason = "no champion yet: the challenger becomes champion"
    elif chall.version == champ.version:
        return Promotion(False, "challenger is already the champion", champ.version, None)
    elif ab_winner is not None:
        if ab_winner != CHALLENGER:
            return Promotion(False, f"A/B test winner is {ab_winner!r}, not the challenger", champ.version, None)
        reason = "a finished A/B test found the challenger better"
    else:
        key_v, key_lo = f"eval.{metric}.value", f"eval.{metric}.ci_low"
        c_lo, k_v = _float_tag(chall.tags, key_lo), _float_tag(champ.tags, key_v)
        if c_lo is None or k_v is None:
            return Promotion(False, f"no {metric} evaluation on both versions (tags {key_v}, {key_lo})",
                             champ.version, None)
        if chall.tags.get("eval.dataset") != champ.tags.get("eval.dataset"):
            return Promotion(False, "champion and challenger were evaluated on different datasets",
                             champ.version, None)
        if not c_lo > k_v:
            return Promotion(False, f"challenger's {metric} lower bound {c_lo:.4g} does not beat the champion's "
                                    f"estimate {k_v:.4g}", champ.version, None)
        reason = f"challenger's {metric} lower bound {c_lo:.4g} beats the champion's estimate {k_v:.4g}"
    client.set_registered_model_alias(model_name, CHAMPION, chall.version)
    for key, value in {"promotion.reason": reason, "promotion.previous_champion": champ.version or ""}.items():
        client.set_model_version_tag(model_name, chall.version, key, value)
    client.set_registered_model_tag(model_name, "champion.previous", champ.version or "")
    client.set_registered_model_tag(model_name, "champion.reason", reason)
    return Promotion(True, reason, chall.version, champ.version)


def rollback(model_name: str = MODEL_NAME) -> Promotion:
    """Point ``champion`` back at the version it replaced at the last promotion."""
    from mlflow import MlflowClient

    client = MlflowClient()
    model = client.get_registered_model(model_name)
    previous = model.tags.get("champion.previous")
    current = alias_state(CHAMPION, model_name).version
    if not previous:
        return Promotion(False, "no previous champion recorded", current, None)
    client.set_registered_model_alias(model_name, CHAMPION, previous)
    reason = f"rolled back from version {current} to {previous}"
    client.set_registered_model_tag(model_name, "champion.previous", current or "")
    client.set_registered_model_tag(model_name, "champion.reason", reason)
    return Promotion(True, reason, previous, current)


def version_tags(version: str, tags: dict[str, Any], model_name: str = MODEL_NAME) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    for k, v in tags.items():
        client.set_model_version_tag(model_name, str(version), k, str(v))
