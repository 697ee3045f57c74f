"""MLflow tracking and registry for nba: the embedded store, logged policies, aliases, promotion.

One registered model (default ``nba-policy``) holds every policy version; the aliases ``champion``
and ``challenger`` say what production serves. :func:`promote` moves ``champion`` only when the
evidence supports it — the verdict of an A/B test of exactly these two versions (primary metric
significantly better, every guardrail non-inferior), else the off-policy evaluation — and records
why as tags, with the off-policy prediction of the lift beside the lift the A/B test realised
(:class:`Prediction`, :class:`ABEvidence`); :func:`rollback` returns to the previous champion.

Each version reads as a person reads the registry: a one-line description of the policy and what it
was trained on (:func:`describe`), to which the evaluate job adds its headline estimate with its
interval (:func:`describe_evaluation`). The evaluation's figures are metrics logged against the
version's logged model and the decision log's dataset (:func:`record_evaluation`, :func:`decision_log_dataset`);
:func:`latest_evaluation` reads them back, and :func:`promote` decides on them.

Policies are logged as pyfunc *models from code* (``training/policy_model.py``): MLflow copies that
file and the policy's ``bundle`` artefact (JSON, ``.npz`` without pickle, LightGBM text). MLflow
pickles nothing of the policy; what it writes beside it (MLmodel YAML, requirements, the input
example as JSON) is data too.

A deployment bundle (:meth:`nba.serialization.Bundle.of_deployment`: a policy trained on a brand's log
imported onto its deployment) is registered the same way, its version tagged with the deployment's name
and digest (:data:`DEPLOYMENT_TAG`, :data:`DEPLOYMENT_DIGEST_TAG`) beside :data:`DIGEST_TAG`. Both kinds are
logged with an input example and signature (:func:`example_frame`): the requests the pyfunc decides on.
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

from nba.serialization import Bundle, bundle_digest, save_bundle

MODEL_NAME = "nba-policy"
DIGEST_TAG = "bundle_digest"  # model version tag: nba.serialization.bundle_digest of artifacts/bundle
DEPLOYMENT_TAG = "deployment"  # model version tag of a deployment bundle: its deployment's name
DEPLOYMENT_DIGEST_TAG = "deployment_digest"  # ... and that deployment's digest (nba.deployment.Deployment.digest)
# what an evaluation's weights rest on (Evaluation.propensity, training.jobs.propensity_source): "logged" when
# the log's propensities were the deciding policy's own, "estimated" when they were estimated at import
PROPENSITY_LOGGED, PROPENSITY_ESTIMATED = "logged", "estimated"
DATASET_NAME = "decision-log"  # the MLflow dataset a decision log is (decision_log_dataset)
ESTIMATED_SHARE = "propensity.estimated_share"  # evaluation metric: share of decisions whose propensity was estimated
REPLICATES = "replicates.npz"  # a version's evaluation run's artefact: each estimate's bootstrap replicates
EVALUATED = "; evaluated "  # what separates a version's description from its evaluation's line (describe_evaluation)
MODEL_DESCRIPTION = (
    "Next-best-action policies: each version is a trained policy, described by what it learned from "
    "and, once evaluated, its off-policy estimate. @champion serves; @challenger is the candidate "
    "nba promote moves it to on the evidence."
)
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
    uri = external = os.environ.get("MLFLOW_TRACKING_URI")
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
        # not os.environ: mlflow.set_tracking_uri has just set MLFLOW_TRACKING_URI there for child processes
        location = None if external else (root / "mlartifacts").as_uri()
        mlflow.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment)
    return uri


def example_frame(bundle: Bundle, n: int = 2, seed: int = 0):
    """A small input example of the pyfunc's requests (:mod:`training.policy_model`): ``customer_id``,
    ``timezone``, ``now`` (ISO 8601), then a deployment bundle's declared attributes, or a scenario
    bundle's profile fields with every channel consented. Odd rows leave out what a request may leave
    out (they are empty there), so the signature marks those columns optional."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    now = 486_010.0 + rng.uniform(0.0, 48.0, n)  # hours since the epoch: June 2025
    iso = lambda h: pd.Timestamp(round(float(h) * 3600.0), unit="s", tz="UTC").isoformat()  # noqa: E731
    full = np.arange(n) % 2 == 0
    rows: dict[str, list] = {
        "customer_id": [f"c{i}" for i in range(n)],
        "timezone": [("Europe/Paris", "America/New_York", "+05:30")[i % 3] for i in range(n)],
        "now": [iso(h) for h in now],
    }
    if bundle.deployment is not None:
        for a in bundle.deployment.attributes:
            if a.type == "category":
                values = [a.values[i] for i in rng.integers(0, len(a.values), n)]
            elif a.type == "boolean":
                values = [True] * n
            elif a.type == "time":
                values = [iso(h - 24.0 * d) for h, d in zip(now, rng.uniform(1, 400, n), strict=True)]
            else:
                low = 0.0 if a.min is None else a.min
                values = rng.uniform(low, low + 1000.0 if a.max is None else a.max, n).tolist()
            rows[a.name] = [v if f or a.required else None for v, f in zip(values, full, strict=True)]
        return pd.DataFrame(rows)
    from nba.features import LIFECYCLE_STAGES

    spec = bundle.spec
    some = lambda values: [v if f else None for v, f in zip(values, full, strict=True)]  # noqa: E731
    rows |= {
        "segment": [spec.segments[i % len(spec.segments)] for i in range(n)],
        "tenure_days": rng.uniform(0.0, 1000.0, n).tolist(),
        "stage": some([LIFECYCLE_STAGES[i % len(LIFECYCLE_STAGES)] for i in range(n)]),
        "cart_active": some([bool(i % 4 == 0) for i in range(n)]),
        **{f"consent={c}": some([True] * n) for c in spec.channels},
        "n_purchases": some([float(i % 3) for i in range(n)]),
        "last_purchase": some([iso(h - 24.0 * d) for h, d in zip(now, rng.uniform(1, 90, n), strict=True)]),
        "last_visit": some([iso(h - d) for h, d in zip(now, rng.uniform(1, 72, n), strict=True)]),
    }
    return pd.DataFrame(rows)


def describe(bundle: Bundle, label: str | None = None) -> str:
    """The default description of a registered version: the policy (``label``, else its name), and the
    deployment a deployment bundle decides on: ``"linucb"``, ``"lints on the deployment telecom"``."""
    name = label or bundle.policy.name
    return name if bundle.deployment is None else f"{name} on the deployment {bundle.deployment.name}"


def log_policy(
    bundle: Bundle,
    registered_model_name: str | None = MODEL_NAME,
    name: str = "policy",
    tags: dict[str, str] | None = None,
    description: str | None = None,
):
    """Log ``bundle`` as a pyfunc model in the active run (and register it). Returns MLflow's ModelInfo.

    The registered version gets the tags ``policy`` (the policy's name) and :data:`DIGEST_TAG` (the
    :func:`~nba.serialization.bundle_digest` of the bundle folder logged as ``artifacts/bundle``), by
    which the decision service checks its copies; the logged model gets the digest tag too. It is
    described by ``description`` (one line: the policy and what it was trained on), else :func:`describe`;
    the registered model, when it has no description yet, by :data:`MODEL_DESCRIPTION`.

    A deployment bundle (``bundle.deployment`` set) also gets :data:`DEPLOYMENT_TAG` (the deployment's
    name) and :data:`DEPLOYMENT_DIGEST_TAG` (its digest), on the version and the logged model. Both kinds
    are logged with :func:`example_frame` as input example and the signature it gives.
    """
    import mlflow
    from mlflow.models import infer_signature

    from training.policy_model import decide_frame

    tags = dict(tags or {})
    example = example_frame(bundle)
    signature = infer_signature(example, decide_frame(bundle, example, seed=0), params={"seed": 0})
    if bundle.deployment is not None:
        tags |= {DEPLOYMENT_TAG: bundle.deployment.name, DEPLOYMENT_DIGEST_TAG: bundle.deployment.digest}
    # MLflow prints "Successfully registered model ... / Created version ..." on every call; the
    # returned ModelInfo says the same, so keep the console for the jobs' own progress
    with (
        tempfile.TemporaryDirectory() as tmp,
        contextlib.redirect_stderr(io.StringIO()),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        path = save_bundle(bundle, Path(tmp) / "bundle")
        digest = bundle_digest(path)  # of exactly the folder MLflow copies
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(POLICY_MODEL_FILE),
            artifacts={"bundle": str(path)},
            signature=signature,
            input_example=example,
            pip_requirements=REQUIREMENTS,
            registered_model_name=registered_model_name,
            tags={**tags, DIGEST_TAG: digest},
        )
    if registered_model_name is not None:
        from mlflow import MlflowClient

        version = str(info.registered_model_version)
        version_tags(version, {"policy": bundle.policy.name, **tags, DIGEST_TAG: digest}, registered_model_name)
        client = MlflowClient()
        client.update_model_version(registered_model_name, version, description=description or describe(bundle))
        if not client.get_registered_model(registered_model_name).description:
            client.update_registered_model(registered_model_name, description=MODEL_DESCRIPTION)
    return info


# ----------------------------------------------------------------------------- evaluations
def decision_log_dataset(uri: str, digest: str):
    """A decision log as an MLflow dataset (identity only: the rows stay in the log): its URI (password
    hidden) and the digest of its decisions (``training.jobs.LogDigest``)."""
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    return MetaDataset(source=HTTPDatasetSource(url=uri), name=DATASET_NAME, digest=digest)


@dataclass(frozen=True)
class Evaluation:
    """A version's latest off-policy evaluation, as logged against its model by :func:`record_evaluation`.

    ``metrics``: ``<estimator>`` (value per decision), ``<estimator>.ci_low`` / ``.ci_high`` and the
    others the evaluate job logs; ``dataset``: the digest of the decision log they were measured on;
    ``run_id``: the run that logged them."""

    version: str
    run_id: str
    dataset: str | None
    metrics: dict[str, float]
    timestamp: int

    @property
    def propensity(self) -> str | None:
        """What the weights rested on: :data:`PROPENSITY_ESTIMATED` when some of the log's propensities were
        estimated at import, :data:`PROPENSITY_LOGGED` when none were; None when not recorded."""
        share = self.metrics.get(ESTIMATED_SHARE)
        return None if share is None else PROPENSITY_ESTIMATED if share > 0 else PROPENSITY_LOGGED


def logged_model_id(version: str, model_name: str = MODEL_NAME) -> str | None:
    """The id of the logged model ``version`` registers: its ``model_id``, which the SQL registry leaves
    empty, else its source ``models:/m-<id>``."""
    from mlflow import MlflowClient

    mv = MlflowClient().get_model_version(model_name, str(version))
    source = mv.source or ""
    return mv.model_id or (source.removeprefix("models:/") if source.startswith("models:/m-") else None)


SKETCH_ARTIFACT = "dataset_sketch.json"  # a training run's sketch of its log (training.jobs.LogSketch)


def learned_from(run_id: str | None) -> tuple[str, dict[str, Any] | None] | None:
    """The decision log the policy of training run ``run_id`` learned from: its digest (the run's
    ``dataset.digest``) and the run's sketch of it (:data:`SKETCH_ARTIFACT`; None when the run kept none).
    None when it learned from no log (trained in the simulator, or a rule-based policy that only ran on one),
    or when the run is not in this store (deleted and collected, or another store's)."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from nba.policies import LEARNERS

    try:
        run = MlflowClient().get_run(run_id) if run_id else None
    except MlflowException:
        run = None
    if run is None:
        return None
    digest = run.data.tags.get("dataset.digest")
    if digest is None or run.data.params.get("policy") not in LEARNERS:
        return None
    try:
        sketch = mlflow.artifacts.load_dict(f"runs:/{run_id}/{SKETCH_ARTIFACT}")
    except (MlflowException, OSError, ValueError):  # none kept (runs before sketches), or not JSON
        sketch = None
    return digest, sketch if isinstance(sketch, dict) else None


def slot_lift_over(evaluation: Evaluation, base_version: str | None) -> tuple[float, float, float, bool] | None:
    """(value, low, high, unsupported) of the lift through the opens that ``evaluation`` holds over the version
    ``base_version`` (``nba evaluate --base``, a change of send slot alone: ``lift_opens*`` metrics and the
    ``eval.base_version`` tag of its run); None when it holds none over that version."""
    from mlflow import MlflowClient

    m = evaluation.metrics
    if base_version is None or "lift_opens.ci_low" not in m or "lift_opens" not in m:
        return None
    if MlflowClient().get_run(evaluation.run_id).data.tags.get("eval.base_version") != str(base_version):
        return None
    return (
        m["lift_opens"],
        m["lift_opens.ci_low"],
        m.get("lift_opens.ci_high", float("nan")),
        bool(m.get("lift_opens.unsupported", 0.0)),
    )


def latest_evaluation(version: str, model_name: str = MODEL_NAME) -> Evaluation | None:
    """The figures of the last evaluation of ``version`` (the metrics its logged model holds on a decision
    log, from the run that logged them last); None when it was never evaluated."""
    from mlflow import MlflowClient

    model_id = logged_model_id(version, model_name)
    if not model_id:
        return None
    runs: dict[str, list] = {}
    for m in MlflowClient().get_logged_model(model_id).metrics or []:
        if m.dataset_name == DATASET_NAME:
            runs.setdefault(m.run_id, []).append(m)
    if not runs:
        return None
    run_id, metrics = max(runs.items(), key=lambda kv: max(m.timestamp for m in kv[1]))
    return Evaluation(
        str(version),
        run_id,
        metrics[0].dataset_digest,
        {m.key: float(m.value) for m in metrics},
        max(m.timestamp for m in metrics),
    )


def record_evaluation(version: str, metrics: dict[str, float], dataset, model_name: str = MODEL_NAME) -> None:
    """Log ``metrics`` in the active run against the logged model of ``version`` and ``dataset``
    (:func:`decision_log_dataset`): MLflow adds both as the run's inputs, and the model's page lists them
    with the dataset and the run. Non-finite values are left out (a store keeps no NaN there). Stamped
    after the version's previous evaluation, so that :func:`latest_evaluation` finds this one."""
    import time

    import mlflow

    model_id = logged_model_id(version, model_name)
    if not model_id:
        raise ValueError(f"version {version} of {model_name!r} has no logged model to record an evaluation on")
    previous = latest_evaluation(version, model_name)
    stamp = max(int(time.time() * 1000), 0 if previous is None else previous.timestamp + 1)
    mlflow.log_metrics(
        {k: float(v) for k, v in metrics.items() if np.isfinite(v)}, model_id=model_id, dataset=dataset, timestamp=stamp
    )


def log_replicates(estimates: dict[str, Any], seed: int) -> None:
    """Log each estimate's bootstrap replicates in the active run (:data:`REPLICATES`: NumPy arrays, no
    pickle), with what pairing them needs (``<estimator>.meta``: value, rows, clusters (-1: none), level,
    unsupported, the bootstrap's seed; a studentized estimate's unit sums, ``<estimator>.units``), so that a
    later promotion can pair two versions' evaluations of one log (:func:`paired_lift`)."""
    import mlflow

    arrays: dict[str, np.ndarray] = {}
    for name, e in estimates.items():
        if e.replicates is None:
            continue
        arrays[name] = np.asarray(e.replicates, np.float64)
        clusters = -1 if e.n_clusters is None else e.n_clusters
        arrays[f"{name}.meta"] = np.array([e.value, e.n, clusters, e.level, float(e.unsupported), seed], np.float64)
        if e.units is not None:  # a studentized estimate's unit sums: its paired lift is studentized too
            arrays[f"{name}.units"] = np.vstack(e.units)
    if not arrays:
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / REPLICATES
        np.savez(path, **arrays)
        mlflow.log_artifact(str(path))


def _replicated(evaluation: Evaluation, metric: str) -> tuple[Any, float] | None:
    """The ``metric`` estimate of ``evaluation`` with its replicates (an :class:`nba.ope.Estimate`) and its
    bootstrap's seed, from the run's :data:`REPLICATES`; None where it logged none."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from nba.ope import Estimate

    try:
        path = mlflow.artifacts.download_artifacts(run_id=evaluation.run_id, artifact_path=REPLICATES)
    except (MlflowException, OSError):  # an evaluation logged before replicates were kept, or by hand
        return None
    with np.load(path, allow_pickle=False) as saved:
        if metric not in saved or f"{metric}.meta" not in saved:
            return None
        replicates, meta = saved[metric], saved[f"{metric}.meta"]
        units = saved[f"{metric}.units"] if f"{metric}.units" in saved else None
    value, n, clusters, level, unsupported, seed = (float(x) for x in meta)
    nan = float("nan")
    estimate = Estimate(
        estimator=metric,
        value=value,
        ci_low=evaluation.metrics.get(f"{metric}.ci_low", nan),
        ci_high=evaluation.metrics.get(f"{metric}.ci_high", nan),
        level=level,
        n=int(n),
        std_error=float(np.nanstd(replicates, ddof=1)) if len(replicates) > 1 else nan,
        ess=nan,
        max_weight=nan,
        unsupported_mass=nan,
        n_clusters=None if clusters < 0 else int(clusters),
        unsupported=bool(unsupported),
        interval=estimator_settings(evaluation)["interval"],
        replicates=replicates,
        seed=int(seed),
        units=None if units is None else (units[0], units[1]),
    )
    return estimate, seed


ESTIMATOR_SETTINGS = {"eval.interval": "percentile", "eval.groups": "channel"}  # tags, and their values before them


def estimator_settings(evaluation: Evaluation) -> dict[str, str]:
    """How the estimates of ``evaluation`` were made (the interval's method, what the marginal estimators weight
    on), from its run's tags; an evaluation from before they were recorded used the defaults."""
    from mlflow import MlflowClient

    tags = MlflowClient().get_run(evaluation.run_id).data.tags
    return {k.removeprefix("eval."): tags.get(k, default) for k, default in ESTIMATOR_SETTINGS.items()}


def paired_lift(challenger: Evaluation, champion: Evaluation, metric: str) -> Any:
    """The challenger's paired ``metric`` lift over the champion (:func:`nba.ope.lift`, an
    :class:`nba.ope.Lift`) when both evaluations kept their replicates of one log, resampled alike (the same
    dataset, bootstrap seed, rows, clusters and number of resamples); None where they cannot be paired."""
    from nba.ope import lift

    if challenger.dataset is None or challenger.dataset != champion.dataset:
        return None
    c, k = _replicated(challenger, metric), _replicated(champion, metric)
    if c is None or k is None or c[1] != k[1]:
        return None
    try:
        return lift(c[0], k[0])
    except ValueError:  # other rows, clusters or resamples: not the same resamples
        return None


def describe_evaluation(version: str, line: str, model_name: str = MODEL_NAME) -> str:
    """Put an evaluation's headline ``line`` in the description of ``version``, after what it was trained on
    (in place of an earlier evaluation's); returns the description."""
    from mlflow import MlflowClient

    client = MlflowClient()
    base = (client.get_model_version(model_name, str(version)).description or "").split(EVALUATED)[0].strip()
    text = f"{base}{EVALUATED}{line}" if base else f"evaluated {line}"
    client.update_model_version(model_name, str(version), description=text)
    return text


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
class Prediction:
    """The off-policy estimate of the challenger's lift over the champion, value per decision, with its interval."""

    lift: float
    low: float
    high: float
    source: str = ""  # where it came from, e.g. "dr on eval run <id>"

    def __post_init__(self) -> None:
        for name in ("lift", "low", "high"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating) or not np.isfinite(v):
                field = "predicted_lift" if name == "lift" else "predicted_ci"
                raise ValueError(f"{field}: expected a finite number, got {v!r}")
        if not self.low <= self.lift <= self.high:
            raise ValueError(
                f"predicted_ci: expected low <= lift <= high, got {self.low!r} <= {self.lift!r} <= {self.high!r}"
            )


@dataclass(frozen=True)
class ABEvidence:
    """What a finished A/B run concluded about the challenger (see ``training.jobs.ab``).

    ``lift*`` is the realised difference challenger − champion of the primary metric per customer
    over ``days`` days (always-valid interval); one decision a customer a day makes ``lift / days``
    the lift per decision, the off-policy evaluation's unit.
    """

    run_id: str
    promote: bool
    reason: str
    champion_version: str | None
    challenger_version: str | None
    lift: float
    low: float
    high: float
    days: int
    true_lift: float | None = None  # simulated tests: the exact effect per customer


@dataclass(frozen=True)
class Promotion:
    promoted: bool
    reason: str
    champion: str | None  # version serving after the decision
    previous: str | None
    predicted: Prediction | None = None
    ab: ABEvidence | None = None

    def record(self) -> dict[str, float]:
        """The lifts side by side, per decision: ``predicted_lift*`` (off-policy), ``realised_lift*`` (A/B),
        ``true_lift`` (simulated A/B), ``realised_lift_per_customer``."""
        out: dict[str, float] = {}
        if self.predicted is not None:
            out |= {
                "predicted_lift": self.predicted.lift,
                "predicted_lift_low": self.predicted.low,
                "predicted_lift_high": self.predicted.high,
            }
        if self.ab is not None:
            a = self.ab
            out |= {
                "realised_lift": a.lift / a.days,
                "realised_lift_low": a.low / a.days,
                "realised_lift_high": a.high / a.days,
                "realised_lift_per_customer": a.lift,
            }
            if a.true_lift is not None:
                out["true_lift"] = a.true_lift / a.days
        return out


def promote(
    model_name: str = MODEL_NAME, metric: str = "dr", ab: ABEvidence | None = None, predicted: Prediction | None = None
) -> Promotion:
    """Move ``champion`` to the challenger when the evidence supports it.

    Evidence, in order: a finished A/B test (``ab``) of the current champion against the current
    challenger (the versions it tested must be the aliases' versions now) whose verdict is to
    promote: the primary metric significantly better and every guardrail non-inferior; a verdict
    against, or a test of other versions, moves nothing. Without an A/B test, each version's latest
    off-policy evaluation (:func:`latest_evaluation`: the metrics ``<metric>`` and ``<metric>.ci_low``
    logged against its model by the evaluate job), both on the same dataset and with propensities of
    the same kind: where both kept their bootstrap replicates of that log, resampled alike
    (:func:`paired_lift`), the lower bound of the challenger's paired lift over the champion must clear 0
    (and neither estimate be unsupported), the quickstart's own rule; otherwise the challenger's lower
    confidence bound must beat the champion's estimate. A challenger that moves only the champion's send
    slots, evaluated with the champion as its base (``nba evaluate --base``), is judged by its lift through
    the opens instead (:func:`slot_lift_over`), whatever the metric: the estimators read such a change
    through their reward model alone. Records
    the reason, the A/B run and the lifts (:meth:`Promotion.record`: ``predicted`` beside the A/B's
    realised lift) as tags on the new champion version and the registered model; never moves an alias
    otherwise.
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    champ, chall = alias_state(CHAMPION, model_name), alias_state(CHALLENGER, model_name)

    def refuse(reason: str) -> Promotion:
        return Promotion(False, reason, champ.version, None, predicted, ab)

    if chall.version is None:
        return refuse("no challenger registered")
    if champ.version is None:
        reason = "no champion yet: the challenger becomes champion"
    elif chall.version == champ.version:
        return refuse("challenger is already the champion")
    elif ab is not None:
        if ab.champion_version is None or ab.challenger_version is None:
            return refuse(
                f"A/B run {ab.run_id} tested policies that are not registered versions, not champion "
                f"{champ.version} against challenger {chall.version}"
            )
        if (ab.champion_version, ab.challenger_version) != (champ.version, chall.version):
            return refuse(
                f"A/B run {ab.run_id} tested version {ab.champion_version} against "
                f"{ab.challenger_version}, not champion {champ.version} against challenger {chall.version}"
            )
        if not ab.promote:
            return refuse(f"A/B verdict: {ab.reason}")
        reason = f"A/B verdict: {ab.reason}"
    else:
        key_v, key_lo = metric, f"{metric}.ci_low"
        c_eval, k_eval = latest_evaluation(chall.version, model_name), latest_evaluation(champ.version, model_name)
        c_lo = None if c_eval is None else c_eval.metrics.get(key_lo)
        k_v = None if k_eval is None else k_eval.metrics.get(key_v)
        if c_lo is None or k_v is None:
            return refuse(f"no {metric} evaluation on both versions (metrics {key_v}, {key_lo} on their models)")
        if c_eval.dataset != k_eval.dataset:
            return refuse(
                f"champion and challenger were last evaluated on different decision logs (champion "
                f"{champ.version} on dataset {k_eval.dataset}, challenger {chall.version} on {c_eval.dataset}): "
                "evaluate both on one log (nba evaluate --policy @champion --policy @challenger --log URL)"
            )
        if c_eval.metrics.get("flag.in_sample"):
            return refuse(
                f"the challenger was evaluated on decisions it learned from (dataset {c_eval.dataset}): an "
                "in-sample estimate is no evidence; evaluate both on a log of their own"
            )
        sources = (k_eval.propensity, c_eval.propensity)
        if None not in sources and sources[0] != sources[1]:  # the same decisions, weighted otherwise
            return refuse(
                f"champion and challenger were evaluated with other propensities (champion's "
                f"{sources[0]}, challenger's {sources[1]}): evaluate both on the same log"
            )
        settings = (estimator_settings(k_eval), estimator_settings(c_eval))
        if settings[0] != settings[1]:  # the same metric name, another estimator
            return refuse(
                f"champion and challenger were evaluated with other estimators (champion's {settings[0]}, "
                f"challenger's {settings[1]}): evaluate both with one"
            )
        opens = slot_lift_over(c_eval, champ.version)
        paired = None if opens is not None else paired_lift(c_eval, k_eval, metric)
        if opens is not None:
            value, low, high, unsupported = opens
            said = (
                f"challenger's lift over the champion through the opens (it moves only the champion's send "
                f"slots) {value:+.4g} [{low:+.4g}, {high:+.4g}]"
            )
            if unsupported:
                return refuse(f"{said} is unsupported: it moves messages to hours the log never sent at")
            if not low > 0:
                return refuse(f"{said}: its lower bound does not clear 0")
            reason = f"{said}: its lower bound clears 0"
        elif paired is not None:
            said = (
                f"challenger's paired {metric} lift over the champion {paired.value:+.4g} "
                f"[{paired.ci_low:+.4g}, {paired.ci_high:+.4g}]"
            )
            if paired.unsupported:
                return refuse(f"{said} rests on an unsupported estimate")
            if not paired.ci_low > 0:
                return refuse(f"{said}: its lower bound does not clear 0")
            reason = f"{said}: its lower bound clears 0"
        elif not c_lo > k_v:
            return refuse(
                f"challenger's {metric} lower bound {c_lo:.4g} does not beat the champion's estimate {k_v:.4g}"
            )
        else:
            reason = f"challenger's {metric} lower bound {c_lo:.4g} beats the champion's estimate {k_v:.4g}"
    done = Promotion(True, reason, chall.version, champ.version, predicted, ab)
    client.set_registered_model_alias(model_name, CHAMPION, chall.version)
    tags = {
        "promotion.reason": reason,
        "promotion.previous_champion": champ.version or "",
        "promotion.ab_run": "" if ab is None else ab.run_id,
        **{f"promotion.{k}": f"{v:.6g}" for k, v in done.record().items()},
    }
    for key, value in tags.items():
        client.set_model_version_tag(model_name, chall.version, key, value)
    client.set_registered_model_tag(model_name, "champion.previous", champ.version or "")
    client.set_registered_model_tag(model_name, "champion.reason", reason)
    return done


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
