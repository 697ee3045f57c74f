"""The pipelines: simulate, train, evaluate, ab, promote — each one MLflow run.

Every job validates its inputs (policy names, scenario, parameters) *before* any run is created,
so a typo never leaves an empty run behind; a job that fails afterwards leaves its run FAILED and
moves no alias. Runs carry the dataset's identity (``dataset.*`` tags) and the code version
(``code.version``: the git commit when there is one, else the package version).

The command line (:mod:`cli`) and the ``MLproject`` entry points call these functions
with the same parameters.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from envs.scenario import Scenario
from nba.ope import RANK_ESTIMATOR, RANK_STATISTIC
from nba.policies import LEARNERS, POLICIES, SEGMENTED, Explore, Policy, create
from nba.policies.base import OfflineLearner, sample
from nba.policies.fqi import returns_to_go
from nba.policies.safe import ESTIMATE, SPIBB
from nba.serialization import Bundle

Progress = Callable[[int], None] | None
PROPENSITY_LOGGED, PROPENSITY_ESTIMATED = "logged", "estimated"  # eval.propensity: what the OPE weights rest on
BANDIT_BATCH = 1000
SIMULATOR = "simulator"
LOG_CHUNK = 10_000  # decisions a learner is updated with at a time when it trains on a log


class JobError(ValueError):
    """Bad input to a job, raised before any MLflow run is created."""


# ----------------------------------------------------------------------------- validation
def parse_params(pairs: list[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """``["alpha=0.5", "epsilon=0.1"]`` (values read as JSON when they parse, else strings)."""
    if pairs is None:
        return {}
    if isinstance(pairs, Mapping):
        return dict(pairs)
    out: dict[str, Any] = {}
    for item in pairs:
        if "=" not in item:
            raise JobError(f"param: expected KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def policy_parameters(name: str) -> dict[str, Any]:
    """The parameters a policy takes by name, with their annotated types: its constructor's, and those of
    the constructors its ``**kw`` reaches (the LightGBM bandits' model parameters)."""
    import typing

    out: dict[str, Any] = {}
    for klass in POLICIES[name].__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        hints = typing.get_type_hints(init)
        params = inspect.signature(init).parameters.values()
        for p in params:
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in (
                "self",
                "space",
                "dim",
                "segments",
            ):
                out.setdefault(p.name, hints.get(p.name))
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return out


def check_policy(name: str, params: Mapping[str, Any]) -> None:
    """Unknown policy or parameter, or a value of the wrong type for a number, flag or text parameter:
    JobError naming it (and listing the valid choices)."""
    if name not in POLICIES:
        raise JobError(f"policy: unknown policy {name!r}; valid: {', '.join(sorted(POLICIES))}")
    valid = policy_parameters(name)
    for k, v in params.items():
        if k not in valid:
            raise JobError(f"param: {name!r} has no parameter {k!r}; valid: {', '.join(valid) or 'none'}")
        kind = valid[k]
        number = isinstance(v, int | float) and not isinstance(v, bool)
        wrong = (
            (kind is int and not (number and isinstance(v, int)))
            or (kind is float and not number)
            or (kind is bool and not isinstance(v, bool))
            or (kind is str and not isinstance(v, str))
        )
        if wrong:
            raise JobError(f"param: {k}: expected {kind.__name__}, got {v!r}")


# the conservative mode's parameters a job may set (nba.policies.safe.SPIBB); its baseline follows the log's writer
SAFE_PARAMS = ("n_min", "contacts", "group", "bucket", "improve", "baseline_epsilon", "baseline_holdout")


def parse_safe(items: list[str] | None) -> bool | dict[str, Any]:
    """``nba train --safe``: nothing or ``on`` (the conservative mode with its defaults: True), ``off``
    (False), or KEY=VALUE pairs of its parameters (:data:`SAFE_PARAMS`; values read as JSON when they parse)."""
    items = [i.strip() for i in items or []]
    switches = [i for i in items if i in ("on", "off")]
    pairs = [i for i in items if i not in ("on", "off")]
    if "off" in switches and (pairs or "on" in switches):
        raise JobError("safe: 'off' takes no parameters")
    if not pairs:
        return "off" not in switches
    params = parse_params(pairs)
    unknown = sorted(set(params) - set(SAFE_PARAMS))
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise JobError(f"safe: no parameter {names}; valid: {', '.join(SAFE_PARAMS)} (or on, off)")
    return params


def check_safe(policy_name: str, source: str, safe: bool | Mapping[str, Any], scenario: Scenario) -> None:
    """Parameters of the conservative mode for a policy that has none (it applies to the learners, from a log),
    or that it refuses: JobError naming ``safe``, before any log is read or run created."""
    if not isinstance(safe, Mapping) or not safe or policy_name not in POLICIES:  # (check_policy names the latter)
        return
    if source == SIMULATOR:
        raise JobError("safe: the conservative mode is for learning from a decision log (--source LOG)")
    if policy_name not in LEARNERS or policy_name == SPIBB.name or fits_offline(policy_name):
        raise JobError(f"safe: {policy_name!r} has no conservative mode (only the bandits learning from a log do)")
    try:  # the wrapper checks its own parameters; any policy stands in for the learner here
        SPIBB(
            scenario.action_space,
            tuple(scenario.segments),
            learner=create("no_contact", scenario.action_space, tuple(scenario.segments)),
            **safe,
        )
    except (TypeError, ValueError) as e:
        raise JobError(f"safe: {e}") from e


def load_scenario(path: str | Path | None) -> Scenario:
    from envs.scenario import ScenarioError

    try:
        return Scenario.default() if path in (None, "", "default") else Scenario.load(Path(path))
    except FileNotFoundError as e:
        raise JobError(f"scenario: no such file {str(path)!r}") from e
    except ScenarioError as e:
        raise JobError(f"scenario: {e}") from e


def build_policy(name: str, scenario: Scenario, params: Mapping[str, Any] | None = None) -> Policy:
    params = dict(params or {})
    check_policy(name, params)
    try:
        return create(name, scenario.action_space, tuple(scenario.segments), dim=scenario.feature_spec.dim, **params)
    except (TypeError, ValueError) as e:
        raise JobError(f"param: {e}") from e


def bundle_of(policy: Policy, scenario: Scenario) -> Bundle:
    return Bundle(policy, scenario.feature_spec, scenario.lifecycle, scenario.contact)


# ----------------------------------------------------------------------------- deployments
def load_deployment(path: str | Path):
    """The :class:`nba.deployment.Deployment` in the file at ``path``, or JobError naming ``deployment``."""
    from nba.deployment import Deployment, DeploymentError

    try:
        return Deployment.load(path)
    except DeploymentError as e:  # its message names the field ("offers.x.channels: ..."), or the file
        msg = str(e)
        raise JobError(msg if msg.startswith("deployment:") else f"deployment: {msg}") from e


def build_deployment_policy(name: str, deployment, params: Mapping[str, Any] | None = None) -> Policy:
    """A new policy on ``deployment``'s action space reading its features (``dim``). The rule-based
    policies follow the scenario's segments, which a deployment has not: JobError naming ``policy``.

    LinUCB and LinTS score offers by their declared features (:class:`nba.catalogue.Catalogue`), so that
    an offer added to the deployment later is decided without retraining; ``catalogue=index`` gives them
    one weight per offer instead (``catalogue=features``, the default, is the catalogue)."""
    from nba.catalogue import Catalogue
    from nba.policies import CATALOGUE

    params = dict(params or {})
    if "catalogue" in params and name not in CATALOGUE:
        raise JobError(f"param: catalogue is a parameter of {', '.join(CATALOGUE)} only, not of {name!r}")
    mode = params.pop("catalogue", "features")
    if mode not in ("features", "index"):
        raise JobError(f"param: catalogue must be 'features' or 'index', got {mode!r}")
    check_policy(name, params)
    if name in SEGMENTED:
        usable = sorted(n for n in POLICIES if n not in SEGMENTED)
        raise JobError(
            f"policy: {name!r} reads the scenario's segments, which the deployment "
            f"{deployment.name!r} does not have; on a deployment: {', '.join(usable)}"
        )
    space = deployment.action_space()
    if name in CATALOGUE and mode == "features":
        space = Catalogue.of_deployment(deployment)
    try:
        return create(name, space, dim=deployment.features().dim, **params)
    except (TypeError, ValueError) as e:
        raise JobError(f"param: {e}") from e


def log_deployments(log) -> set[str]:
    """The digests of the deployments the log's decisions were made on (the ``@<digest>`` that ends
    their ``policy_version``), ``"no digest"`` for decisions without one."""
    import sqlalchemy as sa

    with log.engine.connect() as conn:
        versions = conn.execute(sa.select(log.decisions.c.policy_version).distinct()).scalars().all()
    return {v.rpartition("@")[2] if "@sha256:" in v else "no digest" for v in versions}


def check_log_deployment(log, deployment) -> None:
    """JobError naming ``deployment`` unless the log was imported onto ``deployment``: its layout's feature
    names and action space are the deployment's, and every decision's ``policy_version`` ends with
    ``@<the deployment's digest>`` (:func:`nba.log.importer.import_onto`)."""
    from nba.serialization import space_from_dict

    layout = log.layout()
    space, names = deployment.action_space(), tuple(deployment.features().names)
    if layout.action_space is None or tuple(layout.feature_names or ()) != names:
        raise JobError(
            f"deployment: the log's features ({layout.context_dim}) are not those of the deployment "
            f"{deployment.name!r} ({len(names)}); import the brand's log onto it (nba import --deployment)"
        )
    if space_from_dict(layout.action_space) != space:
        raise JobError(
            f"deployment: the log's action space ({layout.n_actions} actions) is not that of the "
            f"deployment {deployment.name!r} ({space.n_actions}: channels x offers x send slots, in "
            "their declared order)"
        )
    others = sorted(log_deployments(log) - {deployment.digest})
    if others:
        raise JobError(
            f"deployment: the log's decisions were made on another deployment ({', '.join(others)}), "
            f"not on the file's {deployment.digest}"
        )


def stored_deployment(log):
    """The :class:`nba.deployment.Deployment` whose canonical document the log holds (stored by
    :func:`nba.log.importer.import_onto`: :meth:`nba.log.DecisionLog.deployment`), or None."""
    from nba.deployment import Deployment, DeploymentError

    document = log.deployment()
    if document is None:
        return None
    try:
        return Deployment.from_dict(document)
    except DeploymentError as e:
        raise JobError(f"deployment: the deployment the log holds is not valid: {e}") from e


def peek_log(url: str):
    """The decision log at ``url`` to look into before a job opens it (:func:`open_log`); None when it cannot be
    opened, or is a SQLite file that does not exist (not created here): :func:`open_log` says why, in its turn."""
    from nba.log import DecisionLog

    if missing_sqlite(url) is not None:
        return None
    try:
        return DecisionLog(url)
    except Exception:  # noqa: BLE001 - any driver error: open_log names it where the job opens the log
        return None


def peek_deployment(url: str):
    """The deployment the log at ``url`` holds (:func:`stored_deployment`); None when it holds none, or
    when it cannot be opened (:func:`open_log` then says why, in its turn)."""
    log = peek_log(url)
    if log is None:
        return None
    with log:
        return stored_deployment(log)


def log_deployment(log, given=None):
    """The deployment the log's decisions were made on: the one the log holds, or ``given`` (a
    :class:`nba.deployment.Deployment`, from a file), checked against the log (:func:`check_log_deployment`).
    When the log holds one and a file is given too, the two must be the same deployment (digest); a log
    imported before logs kept their deployment needs the file. JobError naming ``deployment`` otherwise."""
    held = stored_deployment(log)
    deployment = given if given is not None else held
    if deployment is None:
        raise JobError("deployment: the log holds no deployment; give the deployment file it was imported onto")
    check_log_deployment(log, deployment)
    if held is not None and held.digest != deployment.digest:
        raise JobError(
            f"deployment: the log's decisions were made on another deployment: it holds {held.name!r} "
            f"({held.digest}), not the file's {deployment.name!r} ({deployment.digest})"
        )
    return deployment


def propensity_source(batch) -> tuple[str, float]:
    """Where a log's propensities come from: :data:`PROPENSITY_LOGGED` when the policy that decided logged
    them, :data:`PROPENSITY_ESTIMATED` when any decision's were estimated at import (its policy name
    ends with :data:`nba.log.importer.ESTIMATED_SUFFIX`), with the share of decisions estimated."""
    from nba.log.importer import ESTIMATED_SUFFIX

    if not len(batch):
        return PROPENSITY_LOGGED, 0.0
    share = float(np.char.endswith(batch.policy.astype(str), ESTIMATED_SUFFIX).mean())
    return (PROPENSITY_ESTIMATED if share > 0 else PROPENSITY_LOGGED), share


def code_version() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parent
        )
        if out.returncode == 0:
            return out.stdout.strip()
    except OSError:
        pass
    from importlib.metadata import version

    return f"nba-{version('nba')}"


def _start(kind: str, run_name: str | None = None):
    """A new run for a job. Under ``mlflow run`` the first job takes the entry point's run; later
    ones (the quickstart runs several) become its children."""
    import mlflow

    from training.registry import ENTRY_RUN

    entry = os.environ.pop("MLFLOW_RUN_ID", None)
    if entry:
        run = mlflow.start_run(run_id=entry)
    else:
        tags = {"mlflow.parentRunId": ENTRY_RUN} if ENTRY_RUN else None
        run = mlflow.start_run(run_name=run_name or kind, tags=tags)
    mlflow.set_tags({"nba.job": kind, "code.version": code_version()})
    return run


@contextmanager
def _figures_dir(plots_dir: Path | None, prefix: str) -> Iterator[Path]:
    """Where a job draws its figures before logging them: ``plots_dir`` when given (kept, and created only
    by what draws into it), else a temporary folder removed once the job is done (the run holds them)."""
    if plots_dir is not None:
        yield Path(plots_dir)
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def _log_figure(path: Path) -> None:
    import mlflow

    mlflow.log_artifact(str(path), artifact_path="plots")


def _log_series(name: str, values: np.ndarray, steps: np.ndarray) -> None:
    """One metric per step, sent in batches (one call per thousand points, not one per point)."""
    import time

    import mlflow
    from mlflow.entities import Metric

    client, run = mlflow.MlflowClient(), mlflow.active_run()
    now = int(time.time() * 1000)
    metrics = [Metric(name, float(v), now, int(s)) for v, s in zip(values, steps, strict=True)]
    for i in range(0, len(metrics), 1000):
        client.log_batch(run.info.run_id, metrics=metrics[i : i + 1000])


# ----------------------------------------------------------------------------- dataset identity
class LogDigest:
    """``dataset.*`` tags naming a decision log: where it is, how many rows, a digest of its decisions.

    The digest reads what each decision is (its id, customer, time, action and propensity), not how a job
    rewards it, so two exports whose ids repeat (``D0000000`` ...) are still two datasets. Fed the rows a
    job reads anyway (``add`` per chunk, in log order), so naming the data costs no second pass over it;
    the digest does not depend on how the rows were chunked (a running hash per column). With ``sketch``
    (the jobs that keep one: training, evaluation) it also gathers the log's :meth:`sketch`."""

    def __init__(self, url: str, *, sketch: bool = False) -> None:
        self.url, self.rows = url, 0
        self._h = {k: hashlib.sha256() for k in ("decision_id", "customer_id", "time", "action", "propensity")}
        # the sketch: the SKETCH_SIZE smallest decision hashes so far (None: not gathered)
        self._smallest = np.empty(0, np.uint64) if sketch else None

    def add(self, batch) -> None:
        """The decisions of ``batch`` (an :class:`nba.log.LoggedBatch`), the next rows in log order."""
        for k in ("decision_id", "customer_id"):
            self._h[k].update("".join(f"{i}\n" for i in getattr(batch, k).tolist()).encode())
        for k, dtype in (("time", "<f8"), ("action", "<i8"), ("propensity", "<f8")):
            self._h[k].update(np.ascontiguousarray(getattr(batch, k), dtype=dtype).tobytes())
        self.rows += len(batch)
        if self._smallest is not None:
            self._smallest = np.unique(np.concatenate([self._smallest, decision_hashes(batch)]))[:SKETCH_SIZE]

    def sketch(self) -> LogSketch:
        """A bottom-k sketch of the log's decisions, enough to tell how many of another log's are among them
        (:func:`overlap`) without keeping either log; ValueError unless made with ``sketch=True``."""
        if self._smallest is None:
            raise ValueError("sketch: this LogDigest was made without sketch=True")
        return LogSketch(self.rows, self._smallest.copy())

    def tags(self) -> dict[str, str]:
        whole = hashlib.sha256("".join(h.hexdigest() for h in self._h.values()).encode())
        return {
            "dataset.uri": _safe_url(self.url),
            "dataset.rows": str(self.rows),
            "dataset.digest": whole.hexdigest()[:16],
        }

    @classmethod
    def of(cls, url: str, batch) -> dict[str, str]:
        d = cls(url)
        d.add(batch)
        return d.tags()


SKETCH_SIZE = 512  # hashes a log's sketch keeps: the overlap of two logs is known to about ±2/sqrt(512) of it


@dataclass(frozen=True)
class LogSketch:
    """The :data:`SKETCH_SIZE` smallest 64-bit hashes of a log's decisions (each by its id, customer and
    time: :func:`decision_hashes`) and how many decisions it holds: a bottom-k sketch."""

    rows: int
    hashes: np.ndarray  # (<= SKETCH_SIZE,) uint64, sorted, distinct

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "hashes": [f"{h:016x}" for h in self.hashes.tolist()]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LogSketch:
        return cls(int(d["rows"]), np.array([int(h, 16) for h in d["hashes"]], np.uint64))


def decision_hashes(batch) -> np.ndarray:
    """A stable 64-bit hash of each decision of ``batch`` by what identifies it (id, customer, time): the same
    decision read from any copy of its log hashes the same, on any machine."""
    keys = zip(batch.decision_id.tolist(), batch.customer_id.tolist(), batch.time.tolist(), strict=True)
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(f"{d}\x1f{c}\x1f{t!r}".encode(), digest_size=8).digest(), "little")
            for d, c, t in keys
        ),
        np.uint64,
        count=len(batch),
    )


def overlap(learned: LogSketch, evaluated: LogSketch) -> float:
    """The estimated share of the ``evaluated`` log's decisions that are also in the ``learned`` one, from
    their sketches (exact while both logs hold at most :data:`SKETCH_SIZE` decisions): the Jaccard index of
    the two sets read off the union's bottom-k, turned into a containment. 0 when they share none."""
    union = np.union1d(learned.hashes, evaluated.hashes)[:SKETCH_SIZE]
    if not len(union) or not evaluated.rows:
        return 0.0
    both = np.intersect1d(learned.hashes, evaluated.hashes)
    if len(union) < SKETCH_SIZE:  # both sets whole: exact counts
        return float(len(both) / max(evaluated.rows, 1))
    jaccard = np.isin(union, both).mean()
    return float(min(1.0, jaccard * (learned.rows + evaluated.rows) / ((1.0 + jaccard) * evaluated.rows)))


def log_steps(url: str) -> int:
    """How many batches of :data:`LOG_CHUNK` decisions training on the log at ``url`` takes (1 when it
    cannot be opened: :func:`open_log` says why, in its turn); the progress bar's length."""
    log = peek_log(url)
    if log is None:
        return 1
    with log:
        return max(1, -(-log.count_decisions() // LOG_CHUNK))


def missing_sqlite(url: str) -> str | None:
    """The path of the SQLite file ``url`` names when it does not exist (opening a log would create it, and a
    mistyped path would read as an empty log); None otherwise, or when ``url`` is no SQLite URL."""
    import sqlalchemy as sa

    try:
        u = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        return None  # connect_log names a URL it cannot parse
    if u.get_backend_name() == "sqlite" and u.database not in (None, "", ":memory:") and not Path(u.database).exists():
        return u.database
    return None


def writable_folder(path: str | Path, name: str = "out") -> Path:
    """The folder ``path``, created if missing, or JobError naming ``name`` when it cannot be (before any run)."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise JobError(f"{name}: cannot create the folder {str(path)!r}: {e.strerror or e}") from e
    return Path(path)


def connect_log(url: str, name: str = "log"):
    """The decision log at ``url`` (created if new), or JobError naming ``name`` (before any run exists)."""
    from nba.log import DecisionLog

    try:
        return DecisionLog(url)
    except Exception as e:  # noqa: BLE001 - any driver error: the URL is what the user must fix
        raise JobError(f"{name}: cannot open decision log {_safe_url(url)!r}: {e}") from e


def open_log(url: str, name: str = "source"):
    """A decision log that holds decisions, or JobError naming ``name`` (before any run exists); a SQLite file
    that does not exist is not created (opening a log creates its tables)."""
    missing = missing_sqlite(url)
    if missing is not None:
        raise JobError(f"{name}: no SQLite database at {missing!r}")
    log = connect_log(url, name)
    if log.layout() is None or log.count_decisions() == 0:
        log.close()
        raise JobError(f"{name}: decision log {_safe_url(url)!r} is empty")
    return log


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _dataset_input(tags: Mapping[str, str], context: str, sketch: LogSketch | None = None) -> None:
    """The log as an MLflow dataset input of the run (identity only: the rows stay in the log); with its
    ``sketch`` too (a training run's: evaluations tell from it how much of their log the version learned
    from)."""
    import mlflow
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    from training import registry

    ds = MetaDataset(
        source=HTTPDatasetSource(url=tags["dataset.uri"]), name="decision-log", digest=tags["dataset.digest"]
    )
    mlflow.log_input(ds, context=context)
    mlflow.set_tags(dict(tags))
    if sketch is not None:
        mlflow.log_dict(sketch.to_dict(), registry.SKETCH_ARTIFACT)


# ----------------------------------------------------------------------------- simulate
@dataclass(frozen=True)
class SimulateResult:
    run_id: str
    log_url: str
    rows: int
    tags: dict[str, str]


def simulate(
    log_url: str,
    *,
    scenario_path: str | None = None,
    policy: str = "business_as_usual",
    epsilon: float = 0.2,
    holdout: float = 0.05,
    messages: float = 0.0,
    decisions: int = 20_000,
    seed: int = 0,
    purpose: str = "log",
    params: Mapping[str, Any] | None = None,
    progress: Progress = None,
) -> SimulateResult:
    """Run a logging policy (``policy`` with ``messages`` of its contacts given a random eligible message,
    mixed with ``epsilon`` uniform exploration and a no-contact ``holdout``, so every eligible action has
    support: :class:`nba.policies.Explore`) on the bandit view and write the decision log.

    The customers are those of ``(seed, purpose)``: two logs of different purposes (a training and an
    evaluation log, say) share no customer and no random stream (:mod:`envs.random`). The log records its
    provenance (:func:`envs.log_writer.simulation_provenance`: this simulation and the simulator's reward
    rule), which training and evaluation read from the log itself (:func:`reward_rule_for`,
    :func:`find_simulation`); a log that holds another simulation's decisions is refused (JobError naming
    ``log``), and so is one of another layout."""
    import mlflow

    from envs.log_writer import log_bandit_run, simulation_provenance

    scenario = load_scenario(scenario_path)
    logging = explore(build_policy(policy, scenario, params), epsilon, holdout, messages)
    if decisions < 1:
        raise JobError(f"decisions: must be >= 1, got {decisions}")
    with connect_log(log_url) as log, _start("simulate") as run:
        mlflow.log_params(
            {
                "scenario": scenario.name,
                "policy": policy,
                "epsilon": epsilon,
                "holdout": holdout,
                "messages": messages,
                "decisions": decisions,
                "seed": seed,
                "purpose": purpose,
                "batch": BANDIT_BATCH,
                **(params or {}),
            }
        )
        replay = {
            "scenario": scenario_path or "default",
            "policy": policy,
            "params": dict(params or {}),
            "epsilon": epsilon,
            "holdout": holdout,
            "messages": messages,
            "decisions": decisions,
            "seed": seed,
            "purpose": purpose,
            "batch": BANDIT_BATCH,
        }
        try:
            log_bandit_run(
                log,
                scenario,
                logging,
                decisions,
                seed,
                batch=BANDIT_BATCH,
                policy_name=logging.name,
                learn=False,
                progress=progress,
                purpose=purpose,
                provenance=simulation_provenance(replay),
            )
        except ValueError as e:  # the log holds another simulation's decisions, or another layout
            raise JobError(f"log: {e}") from e
        batch = log.read(sim_reward_rule())
        tags = LogDigest.of(log_url, batch) | {"dataset.source": SIMULATOR}
        mlflow.set_tag("simulation.replay", json.dumps(replay, sort_keys=True))  # for people: the log holds it
        _dataset_input(tags, "simulate")
        mlflow.log_metrics(
            {"mean_reward": float(batch.reward.mean()), "contact_rate": float((batch.action > 0).mean())}
        )
        return SimulateResult(run.info.run_id, log_url, int(tags["dataset.rows"]), tags)


def load_world(path: str | Path | None, deployment):
    """The latent world of ``deployment`` in the file at ``path`` (None: its defaults), or JobError naming
    ``world`` and the field."""
    from envs.world import LatentWorld, WorldError

    try:
        return LatentWorld.default(deployment) if path is None else LatentWorld.load(path, deployment)
    except (OSError, WorldError) as e:
        msg = str(e)
        raise JobError(msg if msg.startswith("world") else f"world: {msg}") from e


def simulate_world(
    log_url: str,
    deployment_path: str,
    *,
    world_path: str | None = None,
    policy: str = "uniform_random",
    epsilon: float = 0.2,
    holdout: float = 0.05,
    messages: float = 0.0,
    customers: int = 2000,
    days: int = 14,
    seed: int = 0,
    purpose: str = "log",
    progress: Progress = None,
) -> SimulateResult:
    """A decision log of a brand's own deployment, simulated: ``customers`` customers of ``(seed, purpose)``
    in the latent world of ``world_path`` (:class:`envs.world.LatentWorld`; default: its defaults for the
    deployment), one decision a day for ``days`` days by ``policy`` (a registered version or bundle of this
    deployment, ``uniform_random`` or ``no_contact``) with ``messages`` of its contacts given a random eligible
    message, mixed with ``epsilon`` uniform exploration and a no-contact ``holdout``. The log holds the
    deployment (``nba train --source`` and ``nba evaluate`` find it); the run records the world's exact mean
    expected reward of the actions taken."""
    import mlflow

    from envs.world_simulation import simulate_log

    deployment = load_deployment(deployment_path)
    world = load_world(world_path, deployment)
    label, base, version = resolve_deployment_target(policy, deployment)
    logging = explore(base, epsilon, holdout, messages)
    if customers < 1 or days < 1:
        raise JobError(f"customers: customers and days must be >= 1, got {customers} and {days}")
    with connect_log(log_url) as log, _start("simulate") as run:
        mlflow.log_params(
            {
                "deployment": deployment.name,
                "deployment.digest": deployment.digest,
                "world": world_path or "default",
                "policy": label,
                "epsilon": epsilon,
                "holdout": holdout,
                "messages": messages,
                "customers": customers,
                "days": days,
                "seed": seed,
                "purpose": purpose,
            }
        )
        try:
            done = simulate_log(
                log,
                deployment,
                world,
                logging,
                n=customers,
                decisions=days,
                seed=seed,
                purpose=purpose,
                version=version or "0",
                progress=progress,
            )
        except ValueError as e:  # the log holds another world's decisions: nothing was written
            raise JobError(f"log: {e}") from e
        batch = log.read(deployment.reward_rule())
        tags = LogDigest.of(log_url, batch) | {"dataset.source": SIMULATOR}
        _dataset_input(tags, "simulate")
        mlflow.log_metrics(
            {
                "mean_reward": done.mean_reward,
                "mean_expected_reward": done.mean_expected,
                "contact_rate": float((batch.action > 0).mean()),
            }
        )
        return SimulateResult(run.info.run_id, log_url, int(tags["dataset.rows"]), tags)


def sim_reward_rule():
    """Rewards of a simulated log as the simulator counts them: revenue - cost - opt-out and churn
    penalties (the bandit view's reward, whose exact expectation is the ground truth)."""
    from envs.log_writer import reward_rule

    return reward_rule(penalties=True)


def log_provenance(log_url: str) -> dict[str, Any]:
    """How the decisions of the log at ``log_url`` came to be, as the log records it
    (:meth:`nba.log.DecisionLog.provenance`); empty when it records nothing or cannot be opened
    (:func:`open_log` says why, in its turn)."""
    log = peek_log(log_url)
    if log is None:
        return {}
    with log:
        return log.provenance() or {}


def reward_rule_for(log_url: str):
    """The reward rule of a log: the one its provenance records (a simulated log's: the simulator's,
    :func:`sim_reward_rule`), else nba's default. Read from the log, so the same log gets the same rewards
    whichever tracking store the job uses."""
    from nba.log import RewardRule

    rule = log_provenance(log_url).get("reward_rule")
    try:
        return RewardRule() if rule is None else RewardRule.from_dict(rule, "provenance.reward_rule")
    except ValueError as e:
        raise JobError(f"log: {e}") from e


def replay_logging(replay: Mapping[str, Any]) -> tuple[Scenario, Policy]:
    """The scenario and the logging policy (with its exploration) of a simulation's replay spec
    (:func:`find_simulation`)."""
    scenario = load_scenario(None if replay["scenario"] == "default" else replay["scenario"])
    base = build_policy(replay["policy"], scenario, replay.get("params"))
    return scenario, explore(base, replay["epsilon"], replay["holdout"], replay.get("messages", 0.0))


def explore(base: Policy, epsilon: float, holdout: float, messages: float = 0.0) -> Policy:
    """``base`` with its exploration (:class:`nba.policies.Explore`), or ``base`` itself when it has none;
    JobError naming the field (``epsilon``, ``messages``, or ``space`` without a no-contact action) when
    :class:`~nba.policies.Explore` refuses it."""
    if not (epsilon or holdout or messages):
        return base
    try:
        return Explore(base, epsilon, holdout, messages)
    except ValueError as e:
        raise JobError(str(e)) from e


def find_simulation(log_url: str) -> dict[str, Any] | None:
    """The replay spec of the simulation that wrote the log at ``log_url``, as the log's provenance records
    it (:func:`simulate`), or None for a log no simulation wrote."""
    return log_provenance(log_url).get("simulation")


# ----------------------------------------------------------------------------- train
@dataclass(frozen=True)
class TrainResult:
    run_id: str
    policy: Policy
    version: str | None
    metrics: dict[str, float] = field(default_factory=dict)


def transitions_from_log(batch, gamma: float | None = None) -> dict[str, np.ndarray]:
    """Journey transitions from a decision log: each decision followed by the same customer's next
    one. A customer's last decision has no observed future: it is dropped as truncated (never
    treated as terminal), so fitted-Q only bootstraps where the log shows what came next.

    With ``gamma`` (the two-stage value's), also each transition's ``returns`` (the discounted sum
    of the customer's logged rewards from it to the end of the log), ``day`` (days since the log's
    first decision: the returns of its last days stop early), and the logged ``propensities`` and
    eligibility ``mask`` (to weigh the actions as if drawn uniformly)."""
    order = np.lexsort((batch.time, batch.customer_id))
    cust = batch.customer_id[order]
    has_next = np.zeros(len(order), bool)
    has_next[:-1] = cust[1:] == cust[:-1]
    rows, nxt = order[has_next], order[np.flatnonzero(has_next) + 1]
    out = {
        "X": batch.context[rows],
        "actions": batch.action[rows],
        "rewards": batch.reward[rows],
        "X_next": batch.context[nxt],
        "mask_next": batch.eligible[nxt],
        "terminated": np.zeros(len(rows), bool),
    }
    if gamma is not None:
        returns = returns_to_go(batch.reward, batch.customer_id, batch.time, gamma)
        out |= {
            "returns": returns[rows],
            "day": (batch.time[rows] - batch.time.min()) / 86_400.0,
            "propensities": batch.propensity[rows],
            "mask": batch.eligible[rows],
        }
    return out


def train(
    policy_name: str,
    *,
    source: str = SIMULATOR,
    scenario_path: str | None = None,
    params: Mapping[str, Any] | None = None,
    decisions: int = 20_000,
    customers: int = 4000,
    seed: int = 0,
    purpose: str = "train",
    safe: bool | Mapping[str, Any] = True,
    register: bool = True,
    plots_dir: Path | None = None,
    progress: Progress = None,
    deployment_path: str | Path | None = None,
) -> TrainResult:
    """Fit one policy and log it (registered under :data:`training.registry.MODEL_NAME`).

    ``source="simulator"``: bandits learn online on the bandit view for ``decisions`` decisions
    (learning curve and regret against the exact oracle); the offline learners
    (:class:`nba.policies.base.OfflineLearner`: fitted-Q, the two-stage value) learn on journey
    transitions of ``customers`` customers logged under an exploring business-as-usual policy. Any
    other ``source`` is a decision-log URL: the policy learns offline from it, streamed in chunks
    (offline learners from consecutive decisions of each customer). On the simulator the customers
    are those of ``(seed, purpose)``.

    ``safe`` (default): a bandit learning from a log learns in its conservative mode
    (:func:`conservative`): where the log's support for an action is thin it keeps the logging
    policy's probability, so the learned policy does not come out worse than the one that wrote the log;
    a mapping is that mode's parameters (``{"contacts": "keep"}``, say: see :class:`nba.policies.safe.SPIBB`).

    ``deployment_path``: a deployment file (:mod:`nba.deployment`) and ``source`` a log imported onto it
    (:func:`log_deployment`, else JobError naming ``deployment``). A log imported onto a deployment holds
    it (:meth:`nba.log.DecisionLog.deployment`): without ``deployment_path`` the policy trains on that
    one, and with it the two must be the same. The policy is built on the
    deployment's action space and features (:func:`build_deployment_policy`: no rule-based policy),
    learns offline from the log with the deployment's reward (:meth:`~nba.deployment.Deployment.reward_rule`),
    without the conservative mode (it buckets by the scenario's segments: the run's param ``safe`` says
    ``off (deployment)``), and is registered as a deployment bundle (:meth:`nba.serialization.Bundle.of_deployment`).
    """
    if deployment_path is None and source != SIMULATOR:
        check_policy(policy_name, dict(params or {}))  # a typo fails before the log is opened
    if deployment_path is not None or (source != SIMULATOR and peek_deployment(source) is not None):
        return _train_on_deployment(
            policy_name,
            source=source,
            deployment_path=deployment_path,
            scenario_path=scenario_path,
            params=params,
            seed=seed,
            purpose=purpose,
            safe=safe,
            register=register,
            progress=progress,
        )
    import mlflow

    scenario = load_scenario(scenario_path)
    check_safe(policy_name, source, safe, scenario)
    policy = build_policy(policy_name, scenario, params)
    offline_log = None
    if source != SIMULATOR:
        if safe and policy_name in LEARNERS and not isinstance(policy, OfflineLearner | SPIBB):
            policy = conservative(policy, scenario, source, **(safe if isinstance(safe, Mapping) else {}))
        offline_log = open_log(source)
        layout = offline_log.layout()
        if layout.context_dim != scenario.feature_spec.dim or layout.n_actions != scenario.action_space.n_actions:
            worlds = log_deployments(offline_log) - {"no digest"}
            offline_log.close()
            hint = (
                f"; its decisions were made on a deployment ({', '.join(sorted(worlds))}): give its file "
                "(deployment_path, nba train --deployment)"
                if worlds
                else ""
            )
            raise JobError(
                f"source: the log's layout ({layout.context_dim} features, {layout.n_actions} actions) does "
                f"not match the scenario's ({scenario.feature_spec.dim}, "
                f"{scenario.action_space.n_actions}){hint}"
            )
    metrics: dict[str, float] = {}
    with _figures_dir(plots_dir, "nba-train-") as tmp, _start("train", run_name=f"train-{policy_name}") as run:
        mlflow.log_params(
            {
                "policy": policy_name,
                "source": "simulator" if offline_log is None else "decision_log",
                "scenario": scenario.name,
                "seed": seed,
                "purpose": purpose,
                **{f"policy.{k}": v for k, v in (params or {}).items()},
            }
        )
        if isinstance(policy, SPIBB):
            mlflow.log_params(
                {
                    "safe": "spibb",
                    "safe.n_min": policy.n_min,
                    "safe.baseline": policy.baseline_name,
                    "safe.baseline_epsilon": policy.baseline_epsilon,
                    "safe.baseline_holdout": policy.baseline_holdout,
                    "safe.bucket": ",".join(policy.buckets.families),
                    "safe.group": policy.group,
                    "safe.improve": policy.improve,
                    "safe.contacts": policy.contacts,
                }
            )
        elif offline_log is not None and policy_name in LEARNERS and not isinstance(policy, OfflineLearner):
            mlflow.log_param("safe", "off")
        label, world = policy_label(policy), f"scenario {scenario.name}"
        if offline_log is not None:
            digest = LogDigest(source, sketch=True)
            metrics = _train_offline(policy, offline_log, digest, progress)
            _dataset_input(digest.tags(), "train", digest.sketch())
            offline_log.close()
            described = (
                _trained_on_log(label, digest, world)
                if policy_name in LEARNERS
                else f"{label}: rules, nothing learned (run on {digest.rows:,} decisions of "
                f"{digest.tags()['dataset.uri']}, {world})"
            )
        elif isinstance(policy, OfflineLearner):
            mlflow.log_params({"customers": customers})
            metrics = _train_offline_simulator(policy, scenario, customers, seed, purpose, progress)
            described = f"{label} trained on the journeys of {customers:,} simulated customers ({world}, seed {seed})"
        else:  # bandits learn online; rule-based policies just run, for their curves and mix
            mlflow.log_params({"decisions": decisions, "batch": BANDIT_BATCH})
            metrics = _train_bandit_online(policy, scenario, decisions, seed, purpose, tmp, progress)
            described = (
                f"{label} trained online on {decisions:,} simulated decisions ({world}, seed {seed})"
                if policy_name in LEARNERS
                else f"{label}: rules, nothing learned ({world})"
            )
        mlflow.log_metrics(metrics)
        for png in sorted(tmp.glob("*.png")):
            _log_figure(png)
        version = _log_trained(
            bundle_of(policy, scenario), register, source if offline_log is None else _safe_url(source), described
        )
        return TrainResult(run.info.run_id, policy, version, metrics)


def _train_on_deployment(
    policy_name: str,
    *,
    source: str,
    deployment_path: str | Path | None,
    scenario_path: str | None,
    params: Mapping[str, Any] | None,
    seed: int,
    purpose: str,
    safe: bool | Mapping[str, Any],
    register: bool,
    progress: Progress,
) -> TrainResult:
    """:func:`train` on a brand's log imported onto its deployment: the file's (``deployment_path``) or,
    without one, the log's own."""
    import mlflow

    if source == SIMULATOR:
        raise JobError(
            "source: a deployment is trained on its own decision log (nba import --deployment), "
            "not on the simulator's scenario"
        )
    if scenario_path not in (None, "", "default"):
        raise JobError("scenario: not with a deployment (the deployment is the world the policy decides in)")
    if isinstance(safe, Mapping) and safe:
        raise JobError("safe: the conservative mode buckets by the scenario's segments; not with a deployment")
    given = None if deployment_path is None else load_deployment(deployment_path)
    log = open_log(source)
    try:
        deployment = log_deployment(log, given)
        policy = build_deployment_policy(policy_name, deployment, params)
    except JobError:
        log.close()
        raise
    with _start("train", run_name=f"train-{policy_name}") as run:
        mlflow.log_params(
            {
                "policy": policy_name,
                "source": "decision_log",
                "deployment": deployment.name,
                "deployment_digest": deployment.digest,
                "deployment_from": "log" if given is None else "file",
                "reward": "deployment",
                "seed": seed,
                "purpose": purpose,
                "safe": "off (deployment)",
                **{f"policy.{k}": v for k, v in (params or {}).items()},
            }
        )
        digest = LogDigest(source, sketch=True)
        try:
            metrics = _train_offline(policy, log, digest, progress, rule=deployment.reward_rule())
        finally:
            log.close()
        _dataset_input(digest.tags(), "train", digest.sketch())
        mlflow.log_metrics(metrics)
        version = _log_trained(
            Bundle.of_deployment(policy, deployment),
            register,
            _safe_url(source),
            _trained_on_log(policy_label(policy), digest, f"deployment {deployment.name}"),
        )
        return TrainResult(run.info.run_id, policy, version, metrics)


def _trained_on_log(label: str, digest: LogDigest, world: str) -> str:
    """A registered version's description when it learned from a decision log: the policy, the log's rows,
    URI and digest, the world it decides in."""
    tags = digest.tags()
    return (
        f"{label} trained on {digest.rows:,} decisions of {tags['dataset.uri']} "
        f"(digest {tags['dataset.digest']}, {world})"
    )


def _log_trained(bundle: Bundle, register: bool, trained_on: str, description: str | None = None) -> str | None:
    """Log the trained ``bundle`` in the active run as a model named after its policy; registered (its version
    returned, described by ``description``: :func:`training.registry.log_policy`) when ``register``."""
    from training import registry

    name = _file_stem(policy_label(bundle.policy), sep="-")  # the logged model's: "lints-safe"
    if not register:
        registry.log_policy(bundle, registered_model_name=None, name=name)
        return None
    info = registry.log_policy(bundle, tags={"trained_on": trained_on}, description=description, name=name)
    return str(info.registered_model_version)


def conservative(policy: Policy, scenario: Scenario, log_url: str, **params: Any) -> SPIBB:
    """``policy`` in its conservative mode for learning from the log at ``log_url``
    (:class:`nba.policies.safe.SPIBB`): where the log's support is thin it keeps the baseline, the
    logging policy's base policy when the log's simulate run names it (its exploration is what it
    paid to learn, not a choice worth keeping: see :mod:`nba.policies.safe`), else the log's own
    action frequencies. ``params``: the wrapper's other parameters (``n_min``, ``contacts``...)."""
    replay = find_simulation(log_url)
    if replay is not None and replay["policy"] in POLICIES and replay["policy"] not in LEARNERS:
        baseline = {"baseline": replay["policy"], "baseline_params": dict(replay.get("params") or {})}
    else:
        baseline = {"baseline": ESTIMATE}
    try:
        return SPIBB(scenario.action_space, tuple(scenario.segments), learner=policy, **baseline, **params)
    except (TypeError, ValueError) as e:
        raise JobError(f"safe: {e}") from e


def _train_bandit_online(
    policy: Policy, scenario: Scenario, decisions: int, seed: int, purpose: str, out: Path, progress: Progress
) -> dict[str, float]:
    from envs.rollout import bandit_run
    from training import plots

    out.mkdir(parents=True, exist_ok=True)
    run = bandit_run(scenario, policy, decisions, batch=BANDIT_BATCH, seed=seed, progress=progress, purpose=purpose)
    chunks = -(-len(run.rewards) // BANDIT_BATCH)
    x = np.arange(1, chunks + 1) * BANDIT_BATCH  # decisions made at the end of each batch

    def per_batch(v: np.ndarray) -> np.ndarray:
        return np.array([c.mean() for c in np.array_split(v, chunks)])

    reward, oracle, base = per_batch(run.expected), per_batch(run.oracle), per_batch(run.no_contact)
    regret = np.cumsum((oracle - reward) * BANDIT_BATCH)
    _log_series("expected_reward", reward, x)
    _log_series("realised_reward", per_batch(run.rewards), x)
    _log_series("cumulative_regret", regret, x)
    plots.learning_curve(x, reward, oracle, base, regret, out / "learning_curve.png", policy.name)
    space = scenario.action_space
    plots.channel_mix(
        {policy.name: plots.mix_of(run.actions, space.channel_of, space.n_channels)},
        scenario.channels,
        out / "channel_mix.png",
        "channel mix of the decisions",
    )
    plots.send_hour_heatmap(
        run.send_hour,
        run.segment,
        run.actions > 0,
        scenario.segments,
        out / "send_hours.png",
        f"{policy.name}: local send hour by segment",
    )
    return {
        "mean_expected_reward": float(run.expected.mean()),
        "normalised_score": run.normalised_score,
        "greedy_score": run.greedy_score,
        "decisions_per_s": run.decisions_per_s,
        "final_regret": float(regret[-1]),
    }


def _train_offline_simulator(
    policy: Policy, scenario: Scenario, customers: int, seed: int, purpose: str, progress: Progress
) -> dict[str, float]:
    import mlflow

    from envs.rollout import collect_transitions

    logging = Explore(create("business_as_usual", scenario.action_space, tuple(scenario.segments)), 0.2, 0.2)
    t = collect_transitions(scenario, logging, customers, seed, progress=progress, purpose=purpose)
    keep = ~t.truncated
    # the attributed reward (the message's own conversions less cost): organic purchases only add noise
    mlflow.log_param("reward", "attributed")
    extra = {}
    if fit_takes(policy, "returns"):
        # the value of a state counts every purchase: engagement's long-term effect acts on organic ones
        mlflow.log_param("value_reward", "total")
        returns = returns_to_go(t.rewards, t.customer, t.day, policy.params["gamma"])
        given = {
            "returns": returns[keep],
            "day": t.day[keep],
            "propensities": t.propensities[keep],
            "mask": t.mask[keep],
            "state_rewards": (t.rewards - t.attributed)[keep],
        }
        extra = {k: v for k, v in given.items() if fit_takes(policy, k)}
    _fit_offline(
        policy,
        t.X[keep],
        t.actions[keep],
        t.attributed[keep],
        t.X_next[keep],
        t.mask_next[keep],
        t.terminated[keep],
        **extra,
    )
    return {"transitions": float(keep.sum())}


def fits_offline(name: str) -> bool:
    """Whether the policy ``name`` is an offline learner (:class:`nba.policies.base.OfflineLearner`)."""
    return name in POLICIES and issubclass(POLICIES[name], OfflineLearner)


def fit_takes(policy: OfflineLearner, field: str) -> bool:
    """Whether ``policy.fit`` learns from ``field`` beyond the transitions (its signature says so)."""
    return field in inspect.signature(policy.fit).parameters


def _fit_offline(policy, X, actions, rewards, X_next, mask_next, terminated, **extra) -> None:
    # what the learner's progress reports at each iteration (fitted-Q: how much its targets moved)
    metric = getattr(policy, "fit_progress", "fit_progress")

    def tick(it: int, value: float) -> None:
        import mlflow

        mlflow.log_metric(metric, value, step=it)

    policy.fit(X, actions, rewards, X_next, mask_next, terminated, **extra, progress=tick)


def _train_offline(policy: Policy, log, digest: LogDigest, progress: Progress, rule=None) -> dict[str, float]:
    """Learn from every decision of ``log``, rewarded by ``rule`` (default :func:`reward_rule_for` the log)."""
    import mlflow

    rule = reward_rule_for(log.url) if rule is None else rule
    if isinstance(policy, OfflineLearner):
        batch = log.read(rule)
        digest.add(batch)
        t = transitions_from_log(batch, policy.params["gamma"] if fit_takes(policy, "returns") else None)
        _fit_offline(policy, **t)
        if progress is not None:
            progress(0)
        return {"transitions": float(len(t["actions"]))}
    rows = 0
    events = getattr(policy, "learns_from_events", False)  # the funnel's events, read beside the rewards
    for step, batch in enumerate(log.iter_batches(rule, chunk_rows=LOG_CHUNK)):
        extra = {"events": log.funnel_events(batch, rule.window_h)} if events else {}
        policy.update(batch.context, batch.action, batch.reward, batch.propensity, **extra)
        digest.add(batch)
        rows += len(batch)
        mlflow.log_metric("rows_seen", rows, step=step)
        mlflow.log_metric("logged_reward", float(batch.reward.mean()), step=step)
        if progress is not None:
            progress(step)
    return {"rows": float(rows)}


# ----------------------------------------------------------------------------- registry helpers
def policy_label(policy: Policy) -> str:
    """A policy's name for people: a learner in its conservative mode is ``"<learner> (safe)"``."""
    inner = getattr(policy, "learner", None)
    return f"{inner.name} (safe)" if isinstance(policy, SPIBB) and inner is not None else policy.name


def _registered_bundle(ref: str) -> tuple[str, Bundle, str | None] | None:
    """The bundle ``ref`` names, with its label and registered version of :data:`training.registry.MODEL_NAME`
    (None for a bundle folder, or another model's URI): ``@alias``, a version number, a ``models:/`` URI,
    a saved bundle folder or a downloaded MLflow model folder; None when ``ref`` names no bundle. JobError
    naming ``policy`` when it names a version that does not exist, or a folder that holds no bundle."""
    from nba.serialization import load_bundle
    from training import registry

    name = registry.MODEL_NAME
    if ref.startswith("models:/"):
        uri, rest = ref, ref.removeprefix("models:/")
        mine = (
            rest.removeprefix(f"{name}/")
            if rest.startswith(f"{name}/")
            else (rest.removeprefix(name) if rest.startswith(f"{name}@") else None)
        )
        pinned = mine if mine is not None and (mine.isdigit() or mine.startswith("@")) else None
    elif ref.startswith("@") or ref.isdigit():
        uri, pinned = (f"models:/{name}/{ref}" if ref.isdigit() else f"models:/{name}{ref}"), ref
    elif Path(ref).is_dir():
        folder = Path(ref) / "artifacts" / "bundle" if (Path(ref) / "MLmodel").is_file() else Path(ref)
        try:  # a saved bundle, or a downloaded MLflow model of one
            b = load_bundle(folder)
        except (OSError, ValueError, KeyError) as e:
            raise JobError(f"policy: {ref!r} is a folder but holds no bundle: {e}") from e
        return policy_label(b.policy), b, None
    else:
        return None
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        path = mlflow.artifacts.download_artifacts(uri)
    except MlflowException as e:
        raise JobError(
            f"policy: no registered version {ref!r}" + ("" if ref.startswith("models:/") else f" of {name!r}")
        ) from e
    b = load_bundle(Path(path) / "artifacts" / "bundle")
    version = None if pinned is None else (pinned if pinned.isdigit() else registry.alias_state(pinned[1:]).version)
    return (f"{policy_label(b.policy)} v{version}" if version else f"{policy_label(b.policy)} ({ref})"), b, version


def distinct_labels(
    targets: list[str], resolved: list[tuple[str, Any, str | None]]
) -> list[tuple[str, Any, str | None]]:
    """Each resolved target under a label of its own: targets that share one (two bundle folders of one policy)
    are told apart by what named them; the same target twice is refused (JobError naming ``policy``)."""
    if len(set(targets)) < len(targets):
        twice = next(t for t in targets if targets.count(t) > 1)
        raise JobError(f"policy: {twice!r} is given twice")
    labels = [label for label, _, _ in resolved]
    return [
        (f"{label} ({ref})" if labels.count(label) > 1 else label, policy, version)
        for ref, (label, policy, version) in zip(targets, resolved, strict=True)
    ]


def training_run(ref: str, version: str | None) -> str | None:
    """The MLflow run that trained the bundle ``ref`` names (``version``: the registered version it resolved to):
    the version's run; for another ``models:/`` URI, or a folder holding an MLflow model (``MLmodel``, as
    ``mlflow artifacts download`` writes it) or that model's ``artifacts/bundle``, the run its ``MLmodel`` names;
    None for a rule by name or a bare bundle folder."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from training import registry

    if version is not None:
        return mlflow.MlflowClient().get_model_version(registry.MODEL_NAME, str(version)).run_id
    if ref.startswith("models:/"):
        try:
            return mlflow.models.get_model_info(ref).run_id
        except (MlflowException, OSError):
            return None
    folder = Path(ref)
    for meta in (folder / "MLmodel", folder.parent.parent / "MLmodel"):
        if meta.is_file() and (meta.parent / "artifacts" / "bundle").is_dir():
            import yaml

            found = (yaml.safe_load(meta.read_text()) or {}).get("run_id")
            return str(found) if found else None
    return None


def resolve_target(ref: str, scenario: Scenario) -> tuple[str, Policy, str | None]:
    """A policy to evaluate: ``@alias``, a version number or a ``models:/`` URI of the registered model,
    a saved bundle folder, or a policy name (rule-based policies only: learners need training)."""
    found = _registered_bundle(ref)
    if found is not None:
        label, b, version = found
        if b.deployment is not None:
            raise JobError(
                f"policy: {ref!r} decides on the deployment {b.deployment.name!r}, not on the scenario "
                f"{scenario.name!r}: evaluate it on a log of its deployment"
            )
        return label, b.policy, version
    untrained = (set(SEGMENTED) - set(LEARNERS)) | {"no_contact", "uniform_random"}  # learners need training
    if ref in untrained:
        return ref, build_policy(ref, scenario), None
    raise JobError(
        f"policy: {ref!r} is not @alias, a version number, a bundle folder or a policy that needs no "
        f"training ({', '.join(sorted(untrained))})"
    )


UNTRAINED_ON_DEPLOYMENT = ("no_contact", "uniform_random")  # need neither training nor the scenario's segments


def resolve_deployment_target(ref: str, deployment) -> tuple[str, Policy, str | None]:
    """A policy to evaluate on a log of ``deployment``: a registered version or bundle folder (as
    :func:`resolve_target`) whose policy decides over the deployment's actions reading its features
    (a bundle of another deployment with the same actions and feature names passes), or one of
    :data:`UNTRAINED_ON_DEPLOYMENT`. A learner's name is refused (it has learned nothing yet: train it
    on the log first), and so are the rule-based policies (they follow the scenario's segments): JobError
    naming ``policy`` and the target."""
    found = _registered_bundle(ref)
    if found is None:
        if ref in UNTRAINED_ON_DEPLOYMENT:
            return ref, build_deployment_policy(ref, deployment), None
        if ref in LEARNERS:
            raise JobError(
                f"policy: {ref!r} is a learner that has learned nothing yet: train it on the log first "
                f"(nba train --policy {ref} --source LOG) and evaluate its version"
            )
        if ref in SEGMENTED:
            raise JobError(
                f"policy: {ref!r} reads the scenario's segments, which the deployment {deployment.name!r} does not have"
            )
        raise JobError(
            f"policy: {ref!r} is not @alias, a version number, a models:/ URI, a bundle folder or a policy "
            f"that needs no training ({', '.join(UNTRAINED_ON_DEPLOYMENT)})"
        )
    label, b, version = found
    space, features = deployment.action_space(), deployment.features()
    dim = getattr(b.policy, "dim", None)
    if (
        getattr(b.policy, "space", None) != space
        or dim not in (None, features.dim)
        or tuple(b.spec.names) != tuple(features.names)
    ):
        world = "the scenario's" if b.deployment is None else f"the deployment {b.deployment.name!r}'s"
        raise JobError(
            f"policy: {ref!r} ({label}) decides over {b.policy.space.n_actions} actions reading "
            f"{len(b.spec.names)} features, {world}, not the {space.n_actions} actions and {features.dim} "
            f"features of the log's deployment {deployment.name!r}"
        )
    return label, b.policy, version


# ----------------------------------------------------------------------------- evaluate
RANK_BY = RANK_ESTIMATOR  # the estimator the pipelines rank and promote by (nba.ope; bench/ope_coverage.py)
BELOW_LOGGING = "below_logging"  # flag: even the upper bound is under the logging policy's own value
UNSUPPORTED = "unsupported"  # flag: the target puts mass where the log has no support (nba.ope's check)
IN_SAMPLE = "in_sample"  # flag: the version learned from this log's decisions, so its estimate is optimistic
IN_SAMPLE_SHARE = 0.05  # ... from this share of them or more (training.jobs.learned_share)
FLAGS = (UNSUPPORTED, BELOW_LOGGING, IN_SAMPLE)
FLAG_WORDS = {UNSUPPORTED: "unsupported", BELOW_LOGGING: "below the logging policy", IN_SAMPLE: "learned from this log"}
PLOTTED = ("snips", "dm", "dr", "mips", "mdr")  # the estimators of the intervals plot (a panel each)


@dataclass(frozen=True)
class EvaluateResult:
    run_id: str
    estimates: dict[str, dict[str, Any]]  # label -> estimator -> Estimate
    truth: dict[str, float] | None  # label -> exact value on the log's contexts (simulated logs)
    logging_truth: float | None  # the logging policy's exact value there (simulated logs)
    logging_value: tuple[float, float, float] = (np.nan, np.nan, np.nan)  # logged mean reward, its interval
    flags: dict[str, tuple[str, ...]] = field(default_factory=dict)  # label -> UNSUPPORTED / BELOW_LOGGING
    propensity: str = PROPENSITY_LOGGED  # what the weights rest on: PROPENSITY_LOGGED or PROPENSITY_ESTIMATED
    propensity_estimated_share: float = 0.0  # the share of decisions whose propensity was estimated at import
    deployment: Any = None  # the nba.deployment.Deployment of a brand's log (no simulator: no exact values)
    learned: dict[str, float] = field(default_factory=dict)  # label -> share of the log it learned from
    decisions: dict[str, str] = field(default_factory=dict)  # label -> digest of its distribution on the log
    interval: str = "percentile"  # the bootstrap intervals' method (nba.ope.INTERVALS)
    groups: str = "channel"  # what MIPS and MDR weight on (nba.ope.GROUPINGS)
    base: str | None = None  # the label of the target the others were compared with (evaluate's ``base``)
    # label -> the lift over base read through the opens (nba.surrogate.slot_lift), for the targets that change
    # only base's send slots
    slot_lifts: dict[str, Any] = field(default_factory=dict)

    def same_as(self, label: str) -> str | None:
        """The first target before ``label`` (in the order given) whose distribution on every decision of the
        log is ``label``'s, bit for bit: two policies that decide as one (linucb and lints in their
        conservative mode read one ridge regression); None when there is none."""
        mine, before = self.decisions.get(label), list(self.decisions)
        before = before[: before.index(label)] if mine else []
        return next((k for k in before if self.decisions[k] == mine), None)

    def lift(self, label: str, base: str):
        """The paired :data:`RANK_BY` estimate of ``label``'s value minus ``base``'s on this log
        (:func:`nba.ope.lift`: both estimated on the same resamples, so the rows where the two policies agree
        cancel); unsupported when either estimate is."""
        from nba.ope import lift

        return lift(self.estimates[label][RANK_BY], self.estimates[base][RANK_BY])

    def evidence(self, label: str):
        """The lift of ``label`` over the evaluation's ``base`` that a shortlist reads: the one through the opens
        (:attr:`slot_lifts`) where ``label`` changes only the base's send slots, which :data:`RANK_BY`'s paired
        lift reads through its reward model alone; else :meth:`lift`."""
        if self.base is None:
            raise ValueError("base: this evaluation compared its targets with no base (evaluate's base)")
        if label in self.slot_lifts:
            return self.slot_lifts[label]
        return self.lift(label, self.base)

    def ranked(self) -> list[str]:
        """Labels by the :data:`RANK_BY` estimate's :data:`nba.ope.RANK_STATISTIC` (its point estimate or
        lower bound), best first; flagged ones last (never ranked above others)."""
        return sorted(
            self.estimates,
            key=lambda k: (bool(self.flags.get(k)), -getattr(self.estimates[k][RANK_BY], RANK_STATISTIC)),
        )


def check_estimators(interval: str, groups: str, tau: float = 20.0) -> None:
    """An evaluation's interval method, grouping and switch-DR threshold (:func:`evaluate`), else JobError
    naming the field."""
    from nba.ope import GROUPINGS, INTERVALS

    if not tau >= 0:
        raise JobError(f"tau: the switch-DR weight threshold must be >= 0, got {tau!r}")
    if interval not in INTERVALS:
        raise JobError(f"interval: unknown method {interval!r}; valid: {', '.join(INTERVALS)}")
    if groups not in GROUPINGS:
        raise JobError(f"groups: unknown grouping {groups!r}; valid: {', '.join(GROUPINGS)}")


def decisions_digest(probabilities: np.ndarray) -> str:
    """A digest of a target's (n, A) distribution on a log's decisions: equal for two policies exactly when they
    decide alike on every one of them (:meth:`EvaluateResult.same_as`)."""
    p = np.ascontiguousarray(probabilities, dtype=np.float64)
    h = hashlib.blake2b(str(p.shape).encode(), digest_size=16)
    h.update(p)
    return h.hexdigest()


def logging_value(batch, n_bootstrap: int, seed: int, level: float = 0.95) -> tuple[float, float, float]:
    """The logging policy's own value on its log: the mean logged reward and its interval (the
    customers resampled, as the off-policy estimates are)."""
    from nba.ope import resample_means

    reps = resample_means(batch.reward, n_bootstrap, seed, clusters=batch.customer_id)[:, 0]
    lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2]) if len(reps) else (np.nan, np.nan)
    return float(batch.reward.mean()), float(lo), float(hi)


def learned_share(run_id: str | None, digest: str, sketch: LogSketch) -> float:
    """The share of a log's decisions (its ``digest`` and ``sketch``) that the policy of training run ``run_id``
    (:func:`training_run`) learned from: 1 on its own training log, an estimate from the two logs' sketches on
    another (:func:`overlap`), 0 for a policy that learned from no log known to this store."""
    from training import registry

    found = registry.learned_from(run_id)
    if found is None:
        return 0.0
    trained_digest, trained_sketch = found
    if trained_digest == digest:
        return 1.0
    try:
        learned = None if trained_sketch is None else LogSketch.from_dict(trained_sketch)
    except (KeyError, TypeError, ValueError):  # a sketch that is not one: as if the run kept none
        learned = None
    return 0.0 if learned is None else overlap(learned, sketch)


def flags_of(est: Mapping[str, Any], logged: float, in_sample: bool = False) -> tuple[str, ...]:
    """What keeps an estimate from ranking or promoting: no support, an upper bound under the logger, or a
    policy that learned from the decisions it is evaluated on (``in_sample``: the estimate is no evidence)."""
    e = est[RANK_BY]
    on = {UNSUPPORTED: e.unsupported, BELOW_LOGGING: e.ci_high < logged, IN_SAMPLE: in_sample}
    return tuple(f for f in FLAGS if on[f])


def evaluate(
    log_url: str,
    targets: list[str],
    *,
    scenario_path: str | None = None,
    tau: float = 20.0,
    n_bootstrap: int = 200,
    seed: int = 0,
    interval: str = "percentile",
    groups: str = "channel",
    base: str | None = None,
    plots_dir: Path | None = None,
    say: Callable[[str], None] | None = None,
) -> EvaluateResult:
    """Off-policy estimates of each target on a decision log, plus the exact value when the log came
    from the simulator (replayed from its simulate run). A registered version's figures are metrics of its
    logged model on the log's dataset, logged by a run nested in this one, and its description gets the
    headline estimate (:func:`_record_version_evaluation`; :func:`training.registry.latest_evaluation`
    reads them back). ``interval``: the bootstrap intervals' method (:data:`nba.ope.INTERVALS`: percentile, or
    studentized, wider, that covers more where the estimates are skewed; see ``bench/RESULTS.md``). ``groups``:
    what the marginal estimators (MIPS, MDR) weight on (:data:`nba.ope.GROUPINGS`): the action's channel, its
    channel and content (no reward-model bias on a change of content within a channel, where a larger log
    supports it), or the action itself.

    The reward model is fitted once on the log, with refits on resampled customers whose spread
    widens the DM and DR intervals (:func:`nba.ope.fit_reward_models`). Each target is flagged
    (``flag.*`` metrics; ``say`` prints a warning) when its :data:`RANK_BY` estimate is *unsupported* (it
    puts mass on actions the log does not support), when even its upper bound lies below the
    logging policy's own value on the log (a policy learned from that log that is worse than the
    policy that wrote it), or when it is a version that learned from :data:`IN_SAMPLE_SHARE` of this log's
    decisions or more (``in_sample``, :func:`learned_share`: its estimate is optimistic, no evidence of how
    it does on decisions it has not seen). Flagged targets rank last.

    A brand's log imported onto its deployment (it holds it: :func:`stored_deployment`) is evaluated on
    that deployment: its targets are registered versions or bundle folders of policies on its actions and
    features, or ``no_contact`` / ``uniform_random`` (:func:`resolve_deployment_target`), rewarded by the
    deployment's rule, on the decision-time contexts and masks the log holds; no scenario
    (``scenario_path``: JobError) and no exact value (no simulator behind it). Every evaluation records
    what its weights rest on (``eval.propensity``: :func:`propensity_source`); when the log's propensities
    were estimated at import rather than logged, ``say`` warns that the estimates rest on that estimate.

    ``base``: one of ``targets`` (today's production policy, say) to compare the others with. A target that
    decides as ``base`` but for the send slots (the same probability of no contact and of each channel x
    content on every decision: :func:`nba.surrogate.slot_only`) changes the reward through whether its
    messages are opened, which the estimators above read through their reward model alone. Its lift over
    ``base`` is then also read through the log's opens (:func:`nba.surrogate.slot_lift`: ``lift_opens.*``
    metrics, :attr:`EvaluateResult.slot_lifts`), biased towards 0 but of the right sign where the other
    lifts see nothing (``bench/timing_surrogate.py``). Simulated logs only: a deployment's features need not
    hold the customers' hour curves."""
    import mlflow

    from nba.ope import evaluate as ope_evaluate
    from nba.ope import fit_reward_models
    from nba.surrogate import slot_lift, slot_only
    from training import plots, registry

    scenario = load_scenario(scenario_path)
    if not targets:
        raise JobError("policy: give at least one policy to evaluate")
    check_estimators(interval, groups, tau)
    if base is not None and base not in targets:
        raise JobError(f"base: {base!r} is not one of the policies evaluated ({', '.join(targets)})")
    deployment = peek_deployment(log_url)
    if deployment is not None:
        if scenario_path not in (None, "", "default"):
            raise JobError(
                f"scenario: the log holds the decisions of the deployment {deployment.name!r}; evaluate "
                "them on it, without a scenario"
            )
        resolved = [resolve_deployment_target(t, deployment) for t in targets]
        space = deployment.action_space()
    else:
        resolved = [resolve_target(t, scenario) for t in targets]
        space = scenario.action_space
    resolved = distinct_labels(targets, resolved)
    log = open_log(log_url, "log")
    if deployment is not None:
        try:
            check_log_deployment(log, deployment)
        except JobError:
            log.close()
            raise
    with _figures_dir(plots_dir, "nba-eval-") as out, _start("evaluate") as run, log:
        out.mkdir(parents=True, exist_ok=True)
        batch = log.read(reward_rule_for(log_url) if deployment is None else deployment.reward_rule())
        named = LogDigest(log_url, sketch=True)
        named.add(batch)
        ident, evaluated = named.tags(), named.sketch()
        _dataset_input(ident, "evaluate")
        propensity, estimated_share = propensity_source(batch)
        mlflow.log_params(
            {
                "targets": ",".join(targets),
                "tau": tau,
                "n_bootstrap": n_bootstrap,
                "seed": seed,
                "interval": interval,
                "groups": groups,
                "rank_by": RANK_BY,
            }
        )
        world = (
            {}
            if deployment is None
            else {"eval.deployment": deployment.name, "eval.deployment_digest": deployment.digest}
        )
        mlflow.set_tags(
            {
                "eval.propensity": propensity,
                **world,
                "eval.truth": "simulator"
                if deployment is None
                else "none: a brand's log has no simulator behind it, off-policy estimates only",
            }
        )
        mlflow.log_metric("propensity.estimated_share", estimated_share)
        if propensity == PROPENSITY_ESTIMATED and say is not None:
            say(
                f"[yellow]warning: propensity: estimated at import, not logged ({estimated_share:.0%} of the "
                "decisions): the IPS and DR weights, and so every estimate below, rest on that estimate; sound "
                "only if the old policy chose at random given the columns it was estimated from[/yellow]"
            )
        model = fit_reward_models(
            batch.context, batch.action, batch.reward, space, mask=batch.eligible, seed=seed, clusters=batch.customer_id
        )
        logged = logging_value(batch, n_bootstrap, seed)
        replay = None if deployment is not None else find_simulation(log_url)
        logging = None
        if replay is not None:  # the logging distribution itself: exact group weights and support check
            logging = replay_logging(replay)[1].probabilities(batch.context, batch.eligible)
            if not np.allclose(logging[np.arange(len(batch)), batch.action], batch.propensity, rtol=1e-6, atol=1e-9):
                logging = None  # not the distribution that wrote this log: estimate it instead
        mlflow.log_metrics(
            {"logging.value": logged[0], "logging.value.ci_low": logged[1], "logging.value.ci_high": logged[2]}
        )
        estimates: dict[str, dict[str, Any]] = {}
        flags: dict[str, tuple[str, ...]] = {}
        learned = {
            label: learned_share(training_run(ref, version), ident["dataset.digest"], evaluated)
            for ref, (label, _, version) in zip(targets, resolved, strict=True)
        }
        # one action drawn from each target per context, for the plots: drawn as each target is evaluated, so
        # that only one (n, A) distribution is held at a time
        draws = np.random.default_rng(seed)
        sampled: dict[str, np.ndarray] = {}
        decisions: dict[str, str] = {}
        base_label, base_version, base_probs, events = None, None, None, None
        if base is not None:
            base_label, base_policy, base_version = resolved[targets.index(base)]
            if deployment is None:  # the opens' evidence on a change of slot (nba.surrogate)
                events = log.funnel_events(batch)
                if events.opened.any():
                    base_probs = base_policy.probabilities(batch.context, batch.eligible)
                elif say is not None:
                    say(
                        "[yellow]warning: base: no message of this log was opened, so no change of send slot can "
                        "be read through the opens[/yellow]"
                    )
        slot_lifts: dict[str, Any] = {}
        for label, policy, _ in resolved:
            if label == base_label and base_probs is not None:
                probs = base_probs  # the base's own distribution, computed once
            else:
                probs = policy.probabilities(batch.context, batch.eligible)
            if base_probs is not None and label != base_label and slot_only(probs, base_probs, space):
                if not np.array_equal(probs, base_probs):
                    slot_lifts[label] = slot_lift(
                        probs,
                        base_probs,
                        batch.context,
                        batch.action,
                        events,
                        space,
                        scenario.feature_spec,
                        clusters=batch.customer_id,
                        n_bootstrap=n_bootstrap,
                        seed=seed,
                    )
            sampled[label] = sample(probs, draws.random(len(probs)))
            decisions[label] = decisions_digest(probs)
            est = ope_evaluate(
                probs,
                batch,
                q_hat=model,
                space=space,
                tau=tau,
                n_bootstrap=n_bootstrap,
                seed=seed,
                logging=logging,
                interval=interval,
                groups=groups,
            )
            del probs
            estimates[label] = est
            flags[label] = flags_of(est, logged[0], in_sample=learned[label] >= IN_SAMPLE_SHARE)
            key = _metric_key(label.replace("@", ""))
            for name, e in est.items():
                mlflow.log_metrics(
                    {f"{key}.{name}": e.value, f"{key}.{name}.ci_low": e.ci_low, f"{key}.{name}.ci_high": e.ci_high}
                )
            mlflow.log_metrics(
                {
                    f"{key}.ess": est[RANK_BY].ess,
                    f"{key}.max_weight": est[RANK_BY].max_weight,
                    f"{key}.support_gap": est[RANK_BY].support_gap,
                    f"{key}.in_sample_share": learned[label],
                }
            )
            if label in slot_lifts:
                up = slot_lifts[label]
                mlflow.log_metrics(
                    {
                        f"{key}.lift_opens": up.value,
                        f"{key}.lift_opens.ci_low": up.ci_low,
                        f"{key}.lift_opens.ci_high": up.ci_high,
                        f"{key}.lift_opens.unsupported": float(up.unsupported),
                    }
                )
            if flags[label] and say is not None:
                e = est[RANK_BY]
                said = (
                    f"; in_sample: it learned from {learned[label]:.0%} of these decisions, so this estimate is "
                    "optimistic: evaluate it on decisions of its own"
                    if IN_SAMPLE in flags[label]
                    else ""
                )
                say(
                    f"[yellow]warning: {label}: {', '.join(flags[label])} ({RANK_BY} {e.value:.3f} "
                    f"[{e.ci_low:.3f}, {e.ci_high:.3f}], logging policy {logged[0]:.3f}, "
                    f"unsupported mass {e.support_gap:.2f}){said}[/yellow]"
                )
        truth = logging_truth = None
        if replay is not None:
            from envs.rollout import bandit_truth

            sc, logging = replay_logging(replay)
            exact = bandit_truth(
                sc,
                logging,
                {label: p for label, p, _ in resolved},
                replay["decisions"],
                replay["batch"],
                replay["seed"],
                purpose=replay["purpose"],
            )
            truth = {label: exact[label] for label, _, _ in resolved}
            for label, v in truth.items():
                mlflow.log_metric(f"{_metric_key(label.replace('@', ''))}.true_value", v)
            logging_truth = exact["logging"]
            mlflow.log_metric("logging.true_value", logging_truth)
        dataset = registry.decision_log_dataset(ident["dataset.uri"], ident["dataset.digest"])
        for label, _, version in resolved:
            if version is not None:
                _record_version_evaluation(
                    label,
                    version,
                    estimates[label],
                    flags[label],
                    logged,
                    estimated_share,
                    None if truth is None else truth[label],
                    ident,
                    dataset,
                    {"eval.propensity": propensity, "eval.interval": interval, "eval.groups": groups, **world},
                    seed,
                    slot_lifts.get(label),
                    base_version,
                )
        if deployment is None:
            _plot_decisions(scenario, batch, sampled, out)
        _log_figure(
            plots.channel_mix(
                {label: plots.mix_of(a, space.channel_of, space.n_channels) for label, a in sampled.items()},
                space.channels,
                out / "channel_mix.png",
                "channel mix on the evaluation log's contexts",
            )
        )
        _log_figure(
            plots.intervals_by_estimator(
                {
                    label: {n: (e.value, e.ci_low, e.ci_high, e.unsupported) for n, e in est.items() if n in PLOTTED}
                    for label, est in estimates.items()
                },
                PLOTTED,
                out / "ope_intervals.png",
                "off-policy estimates of every policy, by estimator: 95% intervals, hollow grey where unsupported",
                None if truth is None else dict(truth),
            )
        )
        res = EvaluateResult(
            run.info.run_id,
            estimates,
            truth,
            logging_truth,
            logged,
            flags,
            propensity,
            estimated_share,
            deployment,
            learned,
            decisions,
            interval,
            groups,
            base_label,
            slot_lifts,
        )
        if base_label is not None:
            mlflow.set_tag("eval.base", base_label)
        for label in decisions:
            twin = res.same_as(label)
            if twin is not None:
                mlflow.set_tag(f"{_metric_key(label.replace('@', ''))}.same_decisions_as", twin)
        ranked = res.ranked()
        rank_rows = [
            (
                label,
                estimates[label][RANK_BY].value,
                estimates[label][RANK_BY].ci_low,
                estimates[label][RANK_BY].ci_high,
            )
            for label in ranked
        ]
        _log_figure(
            plots.estimate_intervals(
                rank_rows,
                out / "ope_ranking.png",
                f"policies ranked by the {'lower bound' if RANK_STATISTIC == 'ci_low' else 'estimate'} of "
                f"{RANK_BY} (95% intervals), flagged last in hollow grey",
                None if truth is None else dict(truth),
                {label: ", ".join(flags[label]) for label in ranked if flags[label]},
                reference=logged[0],
            )
        )
        return res


def evaluation_metrics(
    est: Mapping[str, Any],
    flags: tuple[str, ...],
    logged: tuple[float, float, float],
    estimated_share: float,
    true_value: float | None = None,
) -> dict[str, float]:
    """The figures of one policy's evaluation, as metrics of its model: each estimator's value per decision
    (``dr``), interval (``dr.ci_low``, ``dr.ci_high``) and support (``dr.unsupported``: 1 or 0); the
    :data:`RANK_BY` estimate's weight diagnostics (``ess``, ``max_weight``, ``unsupported_mass``,
    ``support_gap``); the flags (``flag.unsupported``, ``flag.below_logging``, ``flag.in_sample``: 1 or 0);
    the logging policy's own value (``logging.value*``); ``propensity.estimated_share``; the exact value when
    simulated (``true_value``)."""
    from training import registry

    out: dict[str, float] = {}
    for name, e in est.items():
        out |= {
            name: e.value,
            f"{name}.ci_low": e.ci_low,
            f"{name}.ci_high": e.ci_high,
            f"{name}.unsupported": float(e.unsupported),
        }
    e = est[RANK_BY]
    out |= {
        "ess": e.ess,
        "max_weight": e.max_weight,
        "unsupported_mass": e.unsupported_mass,
        "support_gap": e.support_gap,
        **{f"flag.{f}": float(f in flags) for f in FLAGS},
        "logging.value": logged[0],
        "logging.value.ci_low": logged[1],
        "logging.value.ci_high": logged[2],
        registry.ESTIMATED_SHARE: estimated_share,
    }
    if true_value is not None:
        out["true_value"] = true_value
    return {k: float(v) for k, v in out.items()}


def evaluation_line(
    est: Mapping[str, Any], flags: tuple[str, ...], logged: float, ident: Mapping[str, str], propensity: str
) -> str:
    """An evaluation's headline for a version's description: the :data:`RANK_BY` estimate with its
    interval, per decision, on which log, beside the logging policy's value, with its flags."""
    e = est[RANK_BY]
    notes = [
        f"logging policy {logged:.4g}",
        *[FLAG_WORDS[f] for f in flags],
    ]
    if propensity == PROPENSITY_ESTIMATED:
        notes.append("propensities estimated at import")
    return (
        f"{RANK_BY.upper()} {e.value:.4g} [{e.ci_low:.4g}, {e.ci_high:.4g}] per decision on "
        f"{int(ident['dataset.rows']):,} decisions of {ident['dataset.uri']} (digest {ident['dataset.digest']}; "
        f"{'; '.join(notes)})"
    )


def _record_version_evaluation(
    label: str,
    version: str,
    est: Mapping[str, Any],
    flags: tuple[str, ...],
    logged: tuple[float, float, float],
    estimated_share: float,
    true_value: float | None,
    ident: Mapping[str, str],
    dataset,
    tags: Mapping[str, str],
    seed: int,
    slot: Any = None,
    base_version: str | None = None,
) -> None:
    """A registered version's evaluation: a run nested in the evaluate run (``evaluate <label>``) logs
    :func:`evaluation_metrics` against the version's logged model and the log's dataset
    (:func:`training.registry.record_evaluation`) and the estimates' bootstrap replicates (of seed ``seed``:
    :func:`training.registry.log_replicates`, which a promotion pairs), and the version's description gets
    its headline (:func:`evaluation_line`). ``slot``: its lift through the opens over the registered version
    ``base_version`` (a change of send slot alone: :attr:`EvaluateResult.slot_lifts`), logged as the
    ``lift_opens*`` metrics with the tag ``eval.base_version``, which :func:`training.registry.promote` reads."""
    import mlflow

    from training import registry

    line = evaluation_line(est, flags, logged[0], ident, tags["eval.propensity"])
    with mlflow.start_run(run_name=f"evaluate {label}", nested=True, description=f"{label}: {line}"):
        mlflow.set_tags(
            {
                "nba.job": "evaluate.version",
                "code.version": code_version(),
                "eval.version": version,
                "eval.rank_by": RANK_BY,
                **tags,
            }
        )
        _dataset_input(ident, "evaluate")
        metrics = evaluation_metrics(est, flags, logged, estimated_share, true_value)
        if slot is not None and base_version is not None:
            mlflow.set_tag("eval.base_version", base_version)
            metrics |= {
                "lift_opens": slot.value,
                "lift_opens.ci_low": slot.ci_low,
                "lift_opens.ci_high": slot.ci_high,
                "lift_opens.unsupported": float(slot.unsupported),
            }
        registry.record_evaluation(version, metrics, dataset)
        registry.log_replicates(dict(est), seed)
    registry.describe_evaluation(version, line)


def _plot_decisions(scenario: Scenario, batch, sampled: Mapping[str, np.ndarray], out: Path) -> None:
    """Each policy's local send hours by segment on the log's contexts (``sampled[label]``: its actions
    there: one draw from its distribution per context)."""
    from training import plots

    space, spec = scenario.action_space, scenario.feature_spec
    X = batch.context
    segment = np.argmax(X[:, [spec.index(f"segment={s}") for s in scenario.segments]], axis=1)
    hour = np.mod(
        np.degrees(np.arctan2(X[:, spec.index("local_hour_sin")], X[:, spec.index("local_hour_cos")])) / 15.0, 24.0
    )
    slot_hours = np.array([np.nan if h is None else h for h in space.send_slots])
    for label, actions in sampled.items():
        send = slot_hours[np.maximum(space.slot_of[actions], 0)]
        send = np.where(np.isnan(send), hour, send)
        _log_figure(
            plots.send_hour_heatmap(
                send,
                segment,
                actions > 0,
                scenario.segments,
                out / f"send_hours_{_file_stem(label)}.png",
                f"{label}: local send hour by segment",
            )
        )


# ----------------------------------------------------------------------------- A/B
@dataclass(frozen=True)
class ABResult:
    run_id: str
    winner: str  # "challenger", "champion" or "none" (no significant difference on the primary metric)
    verdict: str  # the primary metric's verdict, one sentence
    diff: float  # challenger − champion, primary metric per customer over the experiment
    ci_low: float  # always-valid interval at the last look
    ci_high: float
    p_value: float  # always-valid p-value at the last look
    true_effect: float | None  # simulated tests only
    report: Path
    promote: bool = False  # the verdict: primary significantly better and every guardrail non-inferior
    reason: str = ""  # why (which guardrail failed)
    guardrails: tuple[Any, ...] = ()  # nba.ab.GuardrailTest of each declared guardrail
    true_worsening: dict[str, float] | None = None  # guardrail name -> exact worsening (simulated tests)
    days: int = 0
    champion_version: str | None = None  # the registered versions tested (None: not a registered version)
    challenger_version: str | None = None


def _ref_version(ref: str) -> str | None:
    """The registered version a policy reference names now (``@alias`` or a number), else None."""
    from training import registry

    if ref.isdigit():
        return ref
    return registry.alias_state(ref[1:]).version if ref.startswith("@") else None


def check_guardrails(guardrails: Any, source: str = SIMULATOR) -> tuple[Any, ...]:
    """Guardrails (``nba.ab.Guardrail``, mappings, or ``"[name=]metric:margin[%][:higher]"`` strings);
    None: :data:`nba.ab.DEFAULT_GUARDRAILS` (for a decision log: those it can measure). JobError names the
    guardrail and its field."""
    from envs.experiment import METRICS
    from nba import ab as abstats
    from training.ab_report import LOG_METRICS

    measurable = METRICS if source == SIMULATOR else LOG_METRICS
    if guardrails is None:
        guardrails = [g for g in abstats.DEFAULT_GUARDRAILS if g.metric in measurable]
    if isinstance(guardrails, str | Mapping | abstats.Guardrail):
        guardrails = [guardrails]
    try:
        return abstats.check_guardrails(guardrails, measurable)
    except ValueError as e:
        raise JobError(str(e)) from e


def ab(
    *,
    champion: str = "@champion",
    challenger: str = "@challenger",
    source: str = SIMULATOR,
    experiment: str = "ab",
    scenario_path: str | None = None,
    customers: int = 5000,
    days: int = 14,
    pre_days: int = 7,
    split: float = 0.5,
    start: float | None = None,
    alpha: float = 0.05,
    seed: int = 0,
    purpose: str = "ab",
    guardrails: Any = None,
    truth: bool = True,
    require: str = "better",
    out: Path | None = None,
    progress: Progress = None,
) -> ABResult:
    """Champion against challenger: simulated (both policies as arms in the journey simulator, the
    true effects known) or from a logged experiment (decisions with ``experiment`` and arms
    ``champion``/``challenger`` in a decision log). Analysed by :mod:`nba.ab` (Welch, CUPED with a
    pre-period, always-valid mSPRT over daily looks); the winner is what the always-valid test says.

    ``guardrails`` (see :func:`check_guardrails`; default :data:`nba.ab.DEFAULT_GUARDRAILS`: opt-out
    rate +0.5 point, churn rate +1 point, sends per customer +100%) are declared with the experiment
    and recorded on its run; each is tested for non-inferiority, always-valid, at ``alpha``. The run's
    tags hold the verdict: ``ab.promote`` (``true`` only when the primary metric is significantly better
    and every guardrail holds) and ``ab.reason`` (which guardrail failed), with the versions tested,
    which :func:`promote` checks against the aliases. ``truth`` (simulated tests) also runs both
    policies on every customer for the exact effects (common random numbers): it doubles the
    challenger's share of the work; ``False`` halves the job's time and reports no true effects.
    ``require``: what the primary metric must show for ``ab.promote`` (:func:`nba.ab.decide`):
    ``"better"`` (significantly), or ``"not_worse"`` for a test too small to resolve the lift another
    piece of evidence predicts (the quickstart's: its off-policy estimate), where the test's part is to
    show no harm.
    """
    import mlflow

    from training import ab_report

    if not 0 < split < 1:
        raise JobError(f"split: the challenger's share must be in (0, 1), got {split}")
    if not 0 < alpha < 1:
        raise JobError(f"alpha: must be in (0, 1), got {alpha}")
    if not isinstance(days, int) or days < 1:
        raise JobError(f"days: expected a positive number of days, got {days!r}")
    from nba.ab import REQUIRE

    declared = check_guardrails(guardrails, source)
    if require not in REQUIRE:
        raise JobError(f"require: expected one of {', '.join(REQUIRE)}, got {require!r}")
    scenario = load_scenario(scenario_path)
    out = Path(tempfile.mkdtemp(prefix="nba-ab-")) if out is None else Path(out)
    if source == SIMULATOR:
        if days < 2 or customers < 100:
            raise JobError(f"days/customers: need at least 2 days and 100 customers, got {days} and {customers}")
        arms = {"champion": resolve_target(champion, scenario), "challenger": resolve_target(challenger, scenario)}
        versions = (arms["champion"][2], arms["challenger"][2])
    else:
        log = open_log(source)
        rule = reward_rule_for(source)
        digest = LogDigest(source)
        first = []
        for b in log.iter_batches(rule, experiment=experiment):
            if len(b):
                first.append(b.time.min())
                digest.add(b)
        if not first:
            raise JobError(f"experiment: no decisions of experiment {experiment!r} in the log")
        versions = (_ref_version(champion), _ref_version(challenger))
    with _start("ab", run_name=f"ab-{experiment}") as run:
        mlflow.log_params(
            {
                "experiment": experiment,
                "source": "simulator" if source == SIMULATOR else "decision_log",
                "alpha": alpha,
                "seed": seed,
                "champion": champion,
                "challenger": challenger,
                "guardrails": json.dumps([g.to_dict() for g in declared]),
                "require": require,
            }
        )
        true_effect = None
        if source == SIMULATOR:
            from envs.experiment import run_experiment

            mlflow.log_params(
                {
                    "customers": customers,
                    "days": days,
                    "pre_days": pre_days,
                    "split": split,
                    "purpose": purpose,
                    "truth": truth,
                }
            )
            result = run_experiment(
                scenario,
                {k: v[1] for k, v in arms.items()},
                n=customers,
                days=days,
                seed=seed,
                purpose=purpose,
                experiment=experiment,
                control="champion",
                pre_days=pre_days,
                splits={"champion": 1 - split, "challenger": split},
                truth=truth,
                progress=progress,
            )
            inputs = ab_report.simulated_inputs(result, alpha=alpha, guardrails=declared)
            true_effect = float(result.true_effect("challenger")) if truth else None
        else:
            t0 = float(min(first)) if start is None else start
            _dataset_input(digest.tags(), "ab")
            mlflow.log_params({"days": days})
            inputs = ab_report.log_inputs(
                lambda: log.iter_batches(rule, experiment=experiment),
                experiment=experiment,
                control="champion",
                start=t0,
                days=days,
                alpha=alpha,
                guardrails=declared,
                guardrail_batches=lambda r: log.iter_batches(r, experiment=experiment),
            )
        inputs = dataclasses.replace(inputs, require=require)
        files = ab_report.render_report(inputs, out)
        for f in files.all():
            mlflow.log_artifact(str(f), artifact_path="ab_report")
        a = inputs.analyses["challenger"]
        s, c = a.sequential, a.comparison
        p_value = float(s.p_value[-1]) if s is not None else float(c.p_value)
        significant = s.rejected if s is not None else c.significant(alpha)
        diff = float(s.diff[-1]) if s is not None else float(c.diff)
        winner = "none" if not significant else ("challenger" if diff > 0 else "champion")
        lo, hi = (float(s.cs_low[-1]), float(s.cs_high[-1])) if s is not None else (c.ci_low, c.ci_high)
        decision = inputs.verdict("challenger")
        tests = inputs.guardrails.get("challenger", ())
        worse = None if inputs.true_worsening is None else inputs.true_worsening["challenger"]
        metrics = {
            "diff": diff,
            "ci_low": lo,
            "ci_high": hi,
            "p_value": p_value,
            "welch_p": float(c.p_value),
            "promote": float(decision.promote),
        }
        if a.cuped is not None:
            metrics["cuped_variance_reduction"] = float(a.cuped.variance_reduction)
        if true_effect is not None:
            metrics["true_effect"] = true_effect
        for g in tests:
            key = f"guardrail.{_metric_key(g.guardrail.name)}"
            metrics |= {
                f"{key}.worsening": g.worsening,
                f"{key}.bound": g.bound,
                f"{key}.lower": g.lower,
                f"{key}.margin": g.margin,
                f"{key}.p_value": g.p_value,
                f"{key}.holds": float(g.passed),
                f"{key}.power": g.power(),
                f"{key}.mean_treatment": g.mean_treatment,
                f"{key}.mean_control": g.mean_control,
            }
            if worse is not None:
                metrics[f"{key}.true_worsening"] = worse[g.guardrail.name]
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        if s is not None:
            _log_series("always_valid_p", s.p_value, np.arange(1, len(s.p_value) + 1))
            _log_series("cumulative_diff", s.diff, np.arange(1, len(s.diff) + 1))
        mlflow.set_tags(
            {
                "ab.winner": winner,
                "ab.verdict": ab_report.verdict(a),
                "ab.promote": str(decision.promote).lower(),
                "ab.reason": decision.reason[:5000],
                "ab.failed_guardrails": ",".join(decision.failed),
                "ab.days": str(days),
                "ab.champion_version": versions[0] or "",
                "ab.challenger_version": versions[1] or "",
            }
        )
        return ABResult(
            run.info.run_id,
            winner,
            ab_report.verdict(a),
            diff,
            lo,
            hi,
            p_value,
            true_effect,
            files.markdown,
            decision.promote,
            decision.reason,
            tests,
            worse,
            days,
            versions[0],
            versions[1],
        )


def _file_stem(name: str, sep: str = "_") -> str:
    """A label as a file name's stem, its runs of letters, digits, ``_``, ``.`` and ``-`` joined by ``sep``:
    "lgbm_funnel (safe) v10" -> "lgbm_funnel_safe_v10" (or, ``sep="-"``, a logged model's "lgbm_funnel-safe-v10"),
    "@champion" -> "champion"."""
    return sep.join(re.findall(r"[A-Za-z0-9_.-]+", name)) or "unnamed"


def _metric_key(name: str) -> str:
    """A name as an MLflow metric key part: "opt-out rate" -> "opt-out_rate", "lints (safe) v2" -> "lints__safe__v2"."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


# ----------------------------------------------------------------------------- promote
def ab_evidence(ab_run: str):
    """The :class:`training.registry.ABEvidence` of a finished ``ab`` run, or JobError naming ``ab_run``."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from training import registry

    try:
        run = mlflow.MlflowClient().get_run(ab_run)
    except MlflowException as e:
        raise JobError(f"ab_run: no run {ab_run!r}") from e
    tags, metrics = run.data.tags, run.data.metrics
    if tags.get("nba.job") != "ab" or run.info.status != "FINISHED" or "ab.promote" not in tags:
        raise JobError(f"ab_run: run {ab_run!r} is not a finished A/B run with a verdict")
    return registry.ABEvidence(
        run_id=ab_run,
        promote=tags["ab.promote"] == "true",
        reason=tags.get("ab.reason", ""),
        champion_version=tags.get("ab.champion_version") or None,
        challenger_version=tags.get("ab.challenger_version") or None,
        lift=metrics["diff"],
        low=metrics["ci_low"],
        high=metrics["ci_high"],
        days=int(tags["ab.days"]),
        true_lift=metrics.get("true_effect"),
    )


def promote(
    *,
    metric: str = "dr",
    ab_run: str | None = None,
    rollback: bool = False,
    predicted_lift: float | None = None,
    predicted_ci: tuple[float, float] | None = None,
    predicted_source: str = "",
):
    """Move ``champion`` to the challenger when the evidence supports it (or roll back), as a run.

    ``ab_run``: the id of a finished :func:`ab` run of the current champion against the current
    challenger; its verdict decides (``ab.promote``: primary better and every guardrail holds).
    Without it, the off-policy evaluation's metrics on both versions' models decide
    (:func:`training.registry.promote`), by the same rule for deployment bundles as for scenario
    bundles; the run's tag ``promotion.propensity`` says what that evidence rests on
    (:func:`evidence_propensity`: ``estimated`` when the evaluation log's propensities were estimated
    at import).
    ``predicted_lift`` (with ``predicted_ci = (low, high)``): the off-policy estimate of challenger
    minus champion, value per decision, recorded beside the A/B's realised lift per decision (and
    the true one when simulated) on the run and, when it moves, the new champion version
    (``promotion.*`` tags); :func:`promotions_report` plots them over every promotion.
    """
    import mlflow

    from nba.ope import ESTIMATORS
    from training import registry

    if metric not in ESTIMATORS:
        raise JobError(f"metric: unknown estimator {metric!r}; valid: {', '.join(ESTIMATORS)}")
    predicted = None
    if predicted_lift is not None or predicted_ci is not None:
        if predicted_lift is None:
            raise JobError("predicted_lift: required with predicted_ci")
        low, high = (predicted_lift, predicted_lift) if predicted_ci is None else tuple(predicted_ci)
        try:
            predicted = registry.Prediction(predicted_lift, low, high, predicted_source)
        except (TypeError, ValueError) as e:
            raise JobError(str(e)) from e
    evidence = ab_evidence(ab_run) if ab_run else None
    with _start("promote"):
        mlflow.log_params(
            {"metric": metric, "ab_run": ab_run or "", "rollback": rollback, "predicted_source": predicted_source}
        )
        if rollback:
            result = registry.rollback()
        else:
            result = registry.promote(metric=metric, ab=evidence, predicted=predicted)
        mlflow.set_tags(
            {
                "promotion.promoted": str(result.promoted),
                "promotion.reason": result.reason[:5000],
                "promotion.champion": result.champion or "",
                "promotion.previous": result.previous or "",
                "promotion.ab_run": ab_run or "",
                "promotion.rollback": str(rollback),
                "promotion.propensity": "" if rollback or evidence else evidence_propensity(),
            }
        )
        if not rollback:
            mlflow.log_metrics(result.record())
        return result


def evidence_propensity() -> str:
    """What the off-policy evidence of a promotion rests on: the propensities of the challenger's latest
    evaluation (:attr:`training.registry.Evaluation.propensity`: :data:`PROPENSITY_LOGGED`,
    :data:`PROPENSITY_ESTIMATED`, or ``""`` when it was not evaluated)."""
    from training import registry

    version = registry.alias_state(registry.CHALLENGER).version
    found = None if version is None else registry.latest_evaluation(version)
    return "" if found is None or found.propensity is None else found.propensity


# ----------------------------------------------------------------------------- promotions report
@dataclass(frozen=True)
class PromotionsReport:
    run_id: str
    n: int  # promotion decisions with a predicted and a realised lift
    report: Path  # report.md
    points: tuple[Any, ...]  # training.promotion_report.PromotionPoint, oldest first


def promotions_report(*, out: Path | None = None) -> PromotionsReport:
    """Predicted (off-policy) against realised (A/B) lift over every promotion in the tracking store,
    as a run whose artefacts are the plot and the Markdown/HTML report."""
    import mlflow

    from training import promotion_report

    out = Path(tempfile.mkdtemp(prefix="nba-promotions-")) if out is None else Path(out)
    points = promotion_report.collect()
    with _start("promotions_report") as run:
        files = promotion_report.render_report(points, out)
        for f in files.all():
            mlflow.log_artifact(str(f), artifact_path="promotions_report")
        mlflow.log_metrics(promotion_report.summarise(points).metrics())
        return PromotionsReport(run.info.run_id, len(points), files.markdown, tuple(points))
