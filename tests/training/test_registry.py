"""Policies as MLflow models in a real SQLite store: logged without pickle, aliases, promotion."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest

from envs.scenario import Scenario
from nba import ope
from nba.ope import Estimate
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
    frame[[c for c in frame.columns if c.startswith("consent=")]] = False
    assert (model.predict(frame)["action"] == 0).all()
    files = mlflow.artifacts.download_artifacts(uri)
    from pathlib import Path

    suffixes = {p.suffix for p in Path(files).rglob("*") if p.is_file()}
    assert not suffixes & {".pkl", ".pickle", ".cloudpickle"}, suffixes
    assert (Path(files) / "artifacts" / "bundle" / "deployment.json").exists()
    assert registry.alias_state("none").version is None
    from mlflow import MlflowClient

    assert MlflowClient().get_model_version(registry.MODEL_NAME, version).tags["policy"] == "business_as_usual"


def test_registered_version_carries_the_digest_of_its_bundle(store, tmp_path):
    from pathlib import Path

    from mlflow import MlflowClient

    from nba.serialization import bundle_digest, save_bundle

    bundle = _bundle("linucb")
    with mlflow.start_run():
        info = registry.log_policy(bundle, tags={registry.DIGEST_TAG: "sha256:not-this"})
    version = str(info.registered_model_version)
    tag = MlflowClient().get_model_version(registry.MODEL_NAME, version).tags[registry.DIGEST_TAG]
    # what a download of the registered version gives, byte for byte
    files = Path(
        mlflow.artifacts.download_artifacts(f"models:/{registry.MODEL_NAME}/{version}", dst_path=str(tmp_path / "dl"))
    )
    assert tag == bundle_digest(files / "artifacts" / "bundle")
    assert tag == bundle_digest(save_bundle(bundle, tmp_path / "saved"))  # the folder that was saved
    assert mlflow.get_logged_model(info.model_id).tags[registry.DIGEST_TAG] == tag
    # and the alias state shows it
    registry.set_alias("digest-test", version)
    assert registry.alias_state("digest-test").tags[registry.DIGEST_TAG] == tag
    other = _register("business_as_usual")
    assert MlflowClient().get_model_version(registry.MODEL_NAME, other).tags[registry.DIGEST_TAG] != tag


def _evaluated(
    version: str, dataset: str, figures: dict[str, float], replicated=None, seed: int = 0, tags=None
) -> None:
    """An evaluation of ``version`` on the log whose digest is ``dataset``, recorded as the evaluate job does
    (with ``replicated``, estimates whose replicates it keeps, bootstrapped with ``seed``; ``tags`` on its run)."""
    with mlflow.start_run():
        mlflow.set_tags(tags or {})
        registry.record_evaluation(version, figures, registry.decision_log_dataset(f"sqlite:///{dataset}.db", dataset))
        if replicated is not None:
            registry.log_replicates(replicated, seed)


def _estimate(value: float, replicates: np.ndarray, unsupported: bool = False) -> Estimate:
    lo, hi = np.quantile(replicates, [0.025, 0.975])
    return Estimate("dr", value, lo, hi, 0.95, 1000, float(np.std(replicates)), 500.0, 3.0, 0.0,
                    n_clusters=400, unsupported=unsupported, replicates=replicates, seed=1)  # fmt: skip


def test_promote_needs_evidence_and_rolls_back(store):
    v1, v2 = _register("no_contact"), _register("business_as_usual")
    registry.set_alias(registry.CHAMPION, v1)
    registry.set_alias(registry.CHALLENGER, v2)
    # no evaluation: nothing moves
    p = registry.promote()
    assert not p.promoted and registry.alias_state(registry.CHAMPION).version == v1
    # evaluated on different datasets: nothing moves
    _evaluated(v1, "a", {"dr": 1.0, "dr.ci_low": 0.9})
    _evaluated(v2, "b", {"dr": 2.0, "dr.ci_low": 1.5})
    p = registry.promote()
    assert not p.promoted and "different decision logs" in p.reason
    assert f"champion {v1} on dataset a, challenger {v2} on b" in p.reason and "--policy @challenger" in p.reason
    # challenger's lower bound below the champion's estimate: nothing moves
    _evaluated(v2, "a", {"dr": 2.0, "dr.ci_low": 0.95})
    p = registry.promote()
    assert not p.promoted and "does not beat" in p.reason
    # it beats it, but weighted by estimated propensities where the champion's were logged: nothing moves
    _evaluated(v1, "a", {"dr": 1.0, "dr.ci_low": 0.9, registry.ESTIMATED_SHARE: 0.0})
    _evaluated(v2, "a", {"dr": 2.0, "dr.ci_low": 1.2, registry.ESTIMATED_SHARE: 0.25})
    p = registry.promote()
    assert not p.promoted and "other propensities" in p.reason
    # ... or by another estimator under the same name (MDR weighting by channel and content, say): nothing moves
    finer = {"eval.groups": "channel_content", "eval.interval": "percentile"}
    _evaluated(v2, "a", {"dr": 2.0, "dr.ci_low": 1.2, registry.ESTIMATED_SHARE: 0.0}, tags=finer)
    p = registry.promote()
    assert not p.promoted and "other estimators" in p.reason, p.reason
    assert "champion's {'interval': 'percentile', 'groups': 'channel'}" in p.reason  # recorded before: the defaults
    # on the same footing it beats it: champion moves, the reason is recorded
    _evaluated(v2, "a", {"dr": 2.0, "dr.ci_low": 1.2, registry.ESTIMATED_SHARE: 0.0})
    p = registry.promote()
    assert p.promoted and p.champion == v2 and p.previous == v1
    state = registry.alias_state(registry.CHAMPION)
    assert state.version == v2 and "lower bound" in state.tags["promotion.reason"]
    # one command back
    r = registry.rollback()
    assert r.promoted and registry.alias_state(registry.CHAMPION).version == v1


def test_evaluations_are_metrics_of_the_model_on_the_dataset(store):
    """Each evaluation is a set of metrics logged against the version's logged model and the log's dataset;
    the latest one is what the version holds now, evaluations in the same millisecond included."""
    v = _register("uniform_random")
    assert registry.latest_evaluation(v) is None
    _evaluated(v, "d1", {"dr": 0.5, "dr.ci_low": 0.4, "ess": float("nan")})
    for i in range(5):  # in quick succession: the last one recorded is the latest
        _evaluated(v, f"d{i + 2}", {"dr": float(i), "dr.ci_low": i - 0.5, registry.ESTIMATED_SHARE: 0.0})
    found = registry.latest_evaluation(v)
    assert found.dataset == "d6" and found.metrics == {"dr": 4.0, "dr.ci_low": 3.5, registry.ESTIMATED_SHARE: 0.0}
    assert found.propensity == registry.PROPENSITY_LOGGED
    model_id = registry.logged_model_id(v)
    metrics = mlflow.get_logged_model(model_id).metrics
    assert len(metrics) == 2 + 5 * 3  # every evaluation stays on the model; the NaN one was left out
    datasets = {(registry.DATASET_NAME, f"d{i}") for i in range(1, 7)}
    assert {(m.dataset_name, m.dataset_digest) for m in metrics} == datasets
    run = mlflow.get_run(found.run_id)
    assert [i.model_id for i in run.inputs.model_inputs] == [model_id]
    assert [(i.dataset.name, i.dataset.digest) for i in run.inputs.dataset_inputs] == [(registry.DATASET_NAME, "d6")]
    # queryable from the models of the experiment, by dataset and metric
    hits = mlflow.search_logged_models(
        filter_string="metrics.dr > 3",
        output_format="list",
        datasets=[{"dataset_name": registry.DATASET_NAME, "dataset_digest": "d6"}],
    )
    assert [h.model_id for h in hits] == [model_id]


def test_versions_are_described(store):
    from mlflow import MlflowClient

    client = MlflowClient()
    v = _register("business_as_usual")
    assert client.get_model_version(registry.MODEL_NAME, v).description == "business_as_usual"
    assert client.get_registered_model(registry.MODEL_NAME).description == registry.MODEL_DESCRIPTION
    with mlflow.start_run():
        info = registry.log_policy(_bundle("linucb"), description="linucb trained online on 10 decisions")
    w = str(info.registered_model_version)
    assert client.get_model_version(registry.MODEL_NAME, w).description == "linucb trained online on 10 decisions"
    # an evaluation's line follows what it was trained on, and a later one replaces it
    registry.describe_evaluation(w, "DR 1 [0.5, 1.5] per decision on log a")
    text = registry.describe_evaluation(w, "DR 2 [1.5, 2.5] per decision on log b")
    assert text == "linucb trained online on 10 decisions; evaluated DR 2 [1.5, 2.5] per decision on log b"
    assert client.get_model_version(registry.MODEL_NAME, w).description == text


def _evidence(champion: str, challenger: str, promote: bool, lift: float = 14.0, run_id: str = "r1"):
    return registry.ABEvidence(
        run_id=run_id,
        promote=promote,
        reason="promote: ..." if promote else "do not promote: guardrail(s) failed: opt-out rate",
        champion_version=champion,
        challenger_version=challenger,
        lift=lift,
        low=lift - 7,
        high=lift + 7,
        days=14,
        true_lift=lift - 1.4,
    )


def test_promote_by_ab_verdict_records_predicted_beside_realised(store):
    v1, v2 = _register("no_contact"), _register("uniform_random")
    registry.set_alias(registry.CHAMPION, v1)
    registry.set_alias(registry.CHALLENGER, v2)
    predicted = registry.Prediction(0.8, 0.5, 1.1, "dr")
    # a failing verdict (a guardrail) moves nothing, even with a glowing prediction
    p = registry.promote(ab=_evidence(v1, v2, False), predicted=predicted)
    assert not p.promoted and "opt-out rate" in p.reason and registry.alias_state(registry.CHAMPION).version == v1
    # a passing verdict on other versions, or on policies that are not registered, moves nothing either
    p = registry.promote(ab=_evidence(v1, "999", True))
    assert not p.promoted and "not champion" in p.reason
    p = registry.promote(ab=_evidence(None, v2, True))
    assert not p.promoted and "not registered versions" in p.reason
    # a passing verdict on these versions moves it, the lifts per decision side by side
    p = registry.promote(ab=_evidence(v1, v2, True), predicted=predicted)
    assert p.promoted and p.champion == v2 and p.previous == v1
    assert p.record() == pytest.approx(
        {
            "predicted_lift": 0.8,
            "predicted_lift_low": 0.5,
            "predicted_lift_high": 1.1,
            "realised_lift": 1.0,
            "realised_lift_low": 0.5,
            "realised_lift_high": 1.5,
            "realised_lift_per_customer": 14.0,
            "true_lift": 0.9,
        }
    )
    tags = registry.alias_state(registry.CHAMPION).tags
    assert tags["promotion.ab_run"] == "r1" and float(tags["promotion.predicted_lift"]) == 0.8
    assert float(tags["promotion.realised_lift"]) == 1.0 and float(tags["promotion.true_lift"]) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="predicted_ci"):
        registry.Prediction(1.0, 1.5, 2.0)
    with pytest.raises(ValueError, match="predicted_lift"):
        registry.Prediction(float("nan"), 0.0, 1.0)


def test_promotions_report_plots_predicted_against_realised(store, tmp_path):
    from training import jobs, promotion_report

    v1, v2, v3 = _register("no_contact"), _register("uniform_random"), _register("batch_and_blast")
    registry.set_alias(registry.CHAMPION, v1)
    registry.set_alias(registry.CHALLENGER, v2)
    runs = {}
    for name, (champ, chall, ok, lift) in {"a": (v1, v2, True, 14.0), "b": (v2, v3, False, -7.0)}.items():
        with mlflow.start_run() as run:  # stands for a finished `ab` run: its tags and metrics
            mlflow.set_tags(
                {
                    "nba.job": "ab",
                    "ab.promote": str(ok).lower(),
                    "ab.reason": f"verdict {name}",
                    "ab.days": "14",
                    "ab.champion_version": champ,
                    "ab.challenger_version": chall,
                }
            )
            mlflow.log_metrics({"diff": lift, "ci_low": lift - 7, "ci_high": lift + 7, "true_effect": lift + 1})
        runs[name] = run.info.run_id
    first = jobs.promote(ab_run=runs["a"], predicted_lift=0.5, predicted_ci=(0.2, 0.8))
    assert first.promoted and registry.alias_state(registry.CHAMPION).version == v2
    registry.set_alias(registry.CHALLENGER, v3)
    second = jobs.promote(ab_run=runs["b"], predicted_lift=0.3, predicted_ci=(0.0, 0.6))
    assert not second.promoted and "verdict b" in second.reason
    with pytest.raises(jobs.JobError, match="predicted_ci"):
        jobs.promote(ab_run=runs["b"], predicted_lift=0.3, predicted_ci=(0.4, 0.6))
    res = jobs.promotions_report(out=tmp_path / "promotions")
    assert res.n == 2 and [p.promoted for p in res.points] == [True, False]
    a, b = res.points
    assert (a.predicted, a.realised, a.true) == pytest.approx((0.5, 1.0, 15 / 14))
    assert a.covered is False and b.covered is False  # realised -0.5 outside [0, 0.6]
    text = res.report.read_text()
    assert "2 promotion decision(s)" in text and "+0.5 [+0.2, +0.8]" in text and "verdict b" in text
    png = (tmp_path / "promotions" / promotion_report.PLOT_PNG).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    arts = {f.path for f in mlflow.MlflowClient().list_artifacts(res.run_id, "promotions_report")}
    assert {
        "promotions_report/report.md",
        "promotions_report/report.html",
        f"promotions_report/{promotion_report.PLOT_PNG}",
    } <= arts


@pytest.fixture(scope="module")
def telecom(store):
    """The telecom deployment, a uniform policy's deployment bundle of it logged and registered, and the
    registered version loaded back as a pyfunc."""
    from pathlib import Path

    from nba.deployment import Deployment

    world = Deployment.load(Path(__file__).resolve().parents[2] / "examples" / "telecom" / "deployment.toml")
    bundle = Bundle.of_deployment(create("uniform_random", world.action_space()), world)
    with mlflow.start_run():
        info = registry.log_policy(bundle, tags={"trained_on": "test"})
    model = mlflow.pyfunc.load_model(f"models:/{registry.MODEL_NAME}/{info.registered_model_version}")
    return world, info, model


def test_a_deployment_bundle_is_registered_with_its_deployment(telecom, tmp_path):
    from pathlib import Path

    from mlflow import MlflowClient

    from nba.serialization import bundle_digest, load_bundle

    world, info, _ = telecom
    version = str(info.registered_model_version)
    tags = MlflowClient().get_model_version(registry.MODEL_NAME, version).tags
    assert tags["policy"] == "uniform_random" and tags["trained_on"] == "test"
    assert tags[registry.DEPLOYMENT_TAG] == "telco-retention" and tags[registry.DEPLOYMENT_DIGEST_TAG] == world.digest
    logged = mlflow.get_logged_model(info.model_id).tags
    assert logged[registry.DEPLOYMENT_DIGEST_TAG] == world.digest
    assert logged[registry.DIGEST_TAG] == tags[registry.DIGEST_TAG]
    # the signature: the requests' fields and one column per declared attribute, the optional ones optional
    inputs = {c.name: c for c in info.signature.inputs.inputs}
    assert list(inputs) == ["customer_id", "timezone", "now", *(a.name for a in world.attributes)]
    assert inputs["plan_type"].required and not inputs["days_to_contract_end"].required
    files = (
        Path(
            mlflow.artifacts.download_artifacts(
                f"models:/{registry.MODEL_NAME}/{version}", dst_path=str(tmp_path / "dl")
            )
        )
        / "artifacts"
        / "bundle"
    )
    assert tags[registry.DIGEST_TAG] == bundle_digest(files)
    back = load_bundle(files)
    assert back.deployment == world and back.policy.space == world.action_space()
    # a scenario bundle's version has no deployment tags
    other = MlflowClient().get_model_version(registry.MODEL_NAME, _register("no_contact")).tags
    assert registry.DEPLOYMENT_TAG not in other and registry.DEPLOYMENT_DIGEST_TAG not in other


def _requests(n: int, local_hour: int, **attributes) -> tuple[object, list[dict]]:
    """``n`` requests on 11 June 2025 at ``local_hour`` in UTC+2, plan types in turn, and their attributes."""
    import pandas as pd

    plans = ["prepaid", "postpaid", "business"]
    people = [
        {
            "plan_type": plans[i % 3],
            "tenure_days": 30.0 + 20 * i,
            "monthly_revenue": 10.0 + i,
            "days_to_contract_end": None if i % 3 == 0 else float(i % 120),
            "loyalty_tier": "gold",
            "app_user": True,
            "whatsapp_opt_in": True,
            "sms_opt_in": True,
            "email_opt_in": True,
        }
        | attributes
        for i in range(n)
    ]
    frame = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(n)],
            "timezone": "+02:00",
            "now": f"2025-06-11T{local_hour - 2:02d}:00:00Z",
            **{k: [p[k] for p in people] for k in people[0]},
        }
    )
    return frame, people


def test_the_deployment_pyfunc_decides_through_the_decide_path(telecom):
    """Loaded from the registry, the pyfunc decides as nba.decide does (same draws, same propensities), within
    quiet hours, consent and the offers' rules; no contact history: every customer a new one."""
    from nba.decide import decide

    world, _, model = telecom
    space, offers = world.action_space(), [o.name for o in world.offers]
    frame, people = _requests(300, 12)
    out = model.predict(frame, params={"seed": 5})
    attributes = [world.check_attributes(p) for p in people]
    now = 486_010.0  # 2025-06-11T10:00Z
    same = decide(
        world, create("uniform_random", space), attributes, now=now, tz_offset=2.0, rng=np.random.default_rng(5)
    )
    np.testing.assert_array_equal(out["action"], same.action)
    np.testing.assert_allclose(out["propensity"], same.propensity, rtol=1e-12)
    a = out["action"].to_numpy()
    assert (a > 0).mean() > 0.9 and (space.slot_of[a[a > 0]] == 0).any()  # at noon "now" is allowed
    # the offers' rules: no renewal for prepaid lines, nothing an offer's rules exclude
    allowed = world.offers_allowed(attributes, now)
    contact = np.flatnonzero(a > 0)
    assert allowed[contact, space.content_of[a[contact]]].all()
    prepaid = np.array([p["plan_type"] == "prepaid" for p in people])
    assert not (out["content"][prepaid] == "contract_renewal_discount").any()
    assert set(out["content"][contact]) <= set(offers)
    # 23:00 local, e-mail (the one channel without quiet hours) not consented: every channel is in its
    # quiet hours, so only no contact or a later slot
    late, _ = _requests(300, 23, email_opt_in=False)
    out = model.predict(late, params={"seed": 5})
    a = out["action"].to_numpy()
    assert (a > 0).any() and (space.slot_of[a[a > 0]] > 0).all() and (out["send_hour"][a > 0] >= 10).all()
    # no consent on any channel with a consent attribute: the call centre (none) or no contact
    closed, _ = _requests(100, 12, app_user=False, whatsapp_opt_in=False, sms_opt_in=False, email_opt_in=False)
    out = model.predict(closed, params={"seed": 5})
    assert set(out["channel"]) <= {"none", "call_centre"} and (out["channel"] == "call_centre").any()
    # a bad cell is refused, naming it
    bad = frame.copy()
    bad.loc[3, "plan_type"] = "platinum"
    with pytest.raises(ValueError, match=r"rows\[3\]\.plan_type: unknown value 'platinum'"):
        model.predict(bad)


def test_promote_pairs_two_evaluations_of_one_log_that_kept_their_replicates(store):
    # The challenger's own interval overlaps the champion's estimate (the unpaired rule would refuse), but
    # the two move together resample by resample (they agree on most rows): its paired lift clears 0.
    v1, v2 = _register("no_contact"), _register("business_as_usual")
    registry.set_alias(registry.CHAMPION, v1)
    registry.set_alias(registry.CHALLENGER, v2)
    rng = np.random.default_rng(0)
    shared = rng.normal(1.0, 0.2, 200)  # the log's resamples, which both policies' estimates follow
    champion = _estimate(1.0, shared)
    challenger = _estimate(1.05, shared + 0.05 + rng.normal(0.0, 0.005, 200))
    figures = {
        v: {"dr": e.value, "dr.ci_low": e.ci_low, "dr.ci_high": e.ci_high}
        for v, e in ((v1, champion), (v2, challenger))
    }
    assert not figures[v2]["dr.ci_low"] > figures[v1]["dr"]
    # bootstrapped with other seeds: not the same resamples, so the unpaired rule decides (and refuses)
    _evaluated(v1, "a", figures[v1], {"dr": champion}, seed=1)
    _evaluated(v2, "a", figures[v2], {"dr": challenger}, seed=2)
    assert registry.paired_lift(registry.latest_evaluation(v2), registry.latest_evaluation(v1), "dr") is None
    p = registry.promote()
    assert not p.promoted and "does not beat the champion's estimate" in p.reason
    # the same seed: paired, as nba.ope.lift pairs them, and the champion moves
    _evaluated(v2, "a", figures[v2], {"dr": challenger}, seed=1)
    paired = registry.paired_lift(registry.latest_evaluation(v2), registry.latest_evaluation(v1), "dr")
    expected = ope.lift(challenger, champion)
    assert (paired.value, paired.ci_low, paired.ci_high) == pytest.approx(
        (expected.value, expected.ci_low, expected.ci_high)
    )
    assert paired.ci_low > 0
    p = registry.promote()
    assert p.promoted and "paired dr lift" in p.reason and "clears 0" in p.reason
    assert registry.alias_state(registry.CHAMPION).version == v2
    # an unsupported estimate never promotes, however its paired lift reads
    registry.set_alias(registry.CHAMPION, v1)
    _evaluated(v2, "a", figures[v2], {"dr": _estimate(1.05, challenger.replicates, unsupported=True)}, seed=1)
    p = registry.promote()
    assert not p.promoted and "unsupported" in p.reason
    assert registry.alias_state(registry.CHAMPION).version == v1
