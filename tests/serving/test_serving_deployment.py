"""The decision service on a brand's deployment (examples/telecom): requests carry the declared attributes,
validated naming the attribute with nothing stored; decisions go through the library's decide path (the
logged context is what :func:`nba.decide.decide` builds), honour consent attributes, offer rules and
restrictions and the contact policy across requests, answer with the offer and its features; feedback
works; over HTTP, the OpenAPI document states the deployment's attributes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
import pytest
from pydantic import ValidationError

from nba.decide import decide
from nba.deployment import Deployment
from nba.log import DecisionLog
from nba.policies import create
from nba.serialization import Bundle
from serving.config import Settings
from serving.endpoints import Runtime, _decisions
from serving.requests import BadRequest
from serving.schemas import DecideBatchRequest, DecideBatchResponse, DecideRequest
from tests.serving.svc_helpers import ODD_IDS, answered_both_ways, start_server, validated_both_ways

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENT = ROOT / "examples" / "telecom" / "deployment.toml"
MODEL = "telco-policy"
NOON = datetime(2026, 6, 2, 12, 0, tzinfo=UTC).timestamp()  # a Tuesday, 14:00 in Paris
ATTRS = {
    "plan_type": "postpaid",
    "tenure_days": 400,
    "monthly_revenue": 35.0,
    "whatsapp_opt_in": True,
    "app_user": True,
    "days_to_contract_end": 30,
}


@pytest.fixture(scope="module")
def telecom() -> Deployment:
    return Deployment.load(DEPLOYMENT)


@pytest.fixture(scope="module")
def registered(registry, telecom) -> str:
    """A LinUCB on the telecom deployment, registered as @champion of its own model name."""
    from training.registry import log_policy, set_alias

    mlflow.set_tracking_uri(registry.uri)
    mlflow.set_registry_uri(registry.uri)
    policy = create("linucb", telecom.action_space(), dim=telecom.features().dim, alpha=2.0)
    with mlflow.start_run():
        info = log_policy(Bundle.of_deployment(policy, telecom), registered_model_name=MODEL)
    set_alias("champion", str(info.registered_model_version), model_name=MODEL)
    return str(info.registered_model_version)


@pytest.fixture(scope="module")
def runtime(registry, registered, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deployment")
    rt = Runtime.start(
        Settings(
            tracking_uri=registry.uri,
            model_name=MODEL,
            log_url=f"sqlite:///{tmp}/d.db",
            cache_dir=tmp / "cache",
            poll_s=0,
            seed=3,
            deployment=DEPLOYMENT,
        )
    )
    assert rt.ready, rt.models.problems
    yield rt
    rt.close()


def _one(rt: Runtime, body: dict, now: float = NOON):
    req = DecideRequest.model_validate(body | {"now": now})
    job = rt.engine.prepare([req], req.now, req.alternatives, batch=False)
    res = rt.engine.decide(job)
    return _decisions(job, res, "")[0]


def _stored(rt: Runtime, decision_id: str):
    batch = rt.engine.log.read()
    i = int(np.flatnonzero(batch.decision_id == decision_id)[0])
    return batch.context[i], batch.eligible[i], batch.action[i]


def test_a_decision_on_attributes_answers_the_offer_with_its_features(runtime, telecom):
    d = _one(runtime, {"customer_id": "t-1", "timezone": "Europe/Paris", "attributes": ATTRS, "alternatives": 3})
    assert d["policy"] == "linucb"
    space = telecom.action_space()
    if d["channel"] is None:
        assert d["offer"] is None and d["offer_features"] is None
    else:
        offer = telecom.offers[list(space.contents).index(d["offer"])]
        assert d["offer"] == d["content"] and d["offer_features"] == offer.features
    assert d["alternatives"] and all(a["probability"] > 0 for a in d["alternatives"])


def test_the_logged_context_and_mask_are_the_decide_paths(runtime, telecom):
    """What the log holds for a first decision is exactly what nba.decide builds for the same attributes."""
    d = _one(runtime, {"customer_id": "t-parity", "timezone": "+02:00", "attributes": ATTRS})
    X, mask, action = _stored(runtime, d["decision_id"])
    policy = runtime.models.served["champion"].bundle.policy
    expect = decide(
        telecom,
        policy,
        [telecom.check_attributes(ATTRS)],
        now=NOON / 3600.0,
        tz_offset=2.0,
        rng=np.random.default_rng(0),
    )
    np.testing.assert_array_equal(X, expect.context[0])
    np.testing.assert_array_equal(mask, expect.eligible[0])
    assert mask[action]


def test_consent_offer_rules_and_restrictions_shape_the_mask(runtime, telecom):
    space = telecom.action_space()
    attrs = ATTRS | {"plan_type": "prepaid", "whatsapp_opt_in": False, "tenure_days": 20}
    d = _one(
        runtime,
        {
            "customer_id": "t-mask",
            "timezone": "UTC",
            "attributes": attrs,
            "channels": ["sms", "email", "whatsapp"],
            "offers": ["data_boost_5gb", "phone_upgrade"],
        },
    )
    _, mask, _ = _stored(runtime, d["decision_id"])
    contact = np.flatnonzero(mask[1:]) + 1
    channels = {space.channels[space.channel_of[a]] for a in contact}
    offers = {space.contents[space.content_of[a]] for a in contact}
    assert mask[0] and contact.size
    assert channels <= {"sms", "email"}  # whatsapp: no consent; the rest: not asked for
    assert offers == {"data_boost_5gb"}  # phone_upgrade: postpaid or business with a year of tenure


def test_the_contact_policy_holds_across_requests(runtime, telecom):
    """A contact made by one request counts in the next one's caps and minimum gap (history from the log)."""
    space = telecom.action_space()
    first = None
    for k in range(6):  # a contact comes within a few tries (the policy explores)
        d = _one(runtime, {"customer_id": "t-gap", "timezone": "UTC", "attributes": ATTRS}, now=NOON + k)
        if d["channel"] is not None:
            first = d
            break
    assert first is not None
    later = _one(runtime, {"customer_id": "t-gap", "timezone": "UTC", "attributes": ATTRS}, now=NOON + 60)
    _, mask, _ = _stored(runtime, later["decision_id"])
    if telecom.min_gap_h > 0:
        assert not mask[1:].any()  # within the minimum gap of the first contact: only no contact
    assert space.n_actions == mask.size


def test_feedback_on_a_deployment_decision(runtime):
    d = _one(runtime, {"customer_id": "t-fb", "timezone": "UTC", "attributes": ATTRS})
    assert runtime.engine.feedback(d["decision_id"], "converted", NOON + 3600, 12.0)
    assert not runtime.engine.feedback(d["decision_id"], "converted", NOON + 3600, 12.0)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"attributes": ATTRS | {"plan_type": "gold"}}, "attributes.plan_type: unknown value 'gold'"),
        ({"attributes": ATTRS | {"shoe_size": 42}}, "attributes.shoe_size: unknown attribute"),
        ({"attributes": {k: v for k, v in ATTRS.items() if k != "plan_type"}}, "attributes.plan_type: missing"),
        ({"attributes": ATTRS | {"monthly_revenue": -3.0}}, "attributes.monthly_revenue: must be within"),
        ({"attributes": ATTRS | {"app_user": "yes"}}, "attributes.app_user: must be true or false"),
        ({"attributes": ATTRS | {"tenure_days": "400"}}, "attributes.tenure_days"),
        ({"attributes": ATTRS, "segment": "genz"}, "segment: the served policy decides on the deployment"),
        ({"attributes": ATTRS, "offers": ["free_lunch"]}, "offers: unknown offer 'free_lunch'"),
        ({"attributes": ATTRS, "channels": ["fax"]}, "channels: unknown channel 'fax'"),
    ],
)
def test_bad_attributes_are_refused_naming_the_field_and_nothing_is_stored(runtime, body, message):
    before = runtime.engine.log.count_decisions()
    req = DecideRequest.model_validate({"customer_id": "t-bad", "timezone": "UTC", "now": NOON} | body)
    with pytest.raises(BadRequest) as e:
        runtime.engine.prepare([req], req.now, 0, batch=False)
    assert str(e.value).startswith(message), str(e.value)
    assert runtime.engine.log.count_decisions() == before


def test_a_batch_names_the_row_of_a_bad_attribute(runtime):
    req = DecideBatchRequest.model_validate(
        {
            "now": NOON,
            "customers": [
                {"customer_id": "b-0", "attributes": ATTRS},
                {"customer_id": "b-1", "attributes": ATTRS | {"loyalty_tier": 3}},
            ],
        }
    )
    with pytest.raises(BadRequest, match=r"^customers\[1\]\.attributes\.loyalty_tier: unknown value 3"):
        runtime.engine.prepare(req.customers, req.now, 0, batch=True)


def test_a_large_batch_names_its_first_bad_row_and_stores_nothing(runtime):
    """Checked column by column, a batch still names the first row the row-by-row check would refuse."""
    customers = [{"customer_id": f"big-{i}", "attributes": ATTRS} for i in range(60)]
    customers[52]["attributes"] = ATTRS | {"shoe_size": 42}
    customers[41]["attributes"] = ATTRS | {"monthly_revenue": 10_001}
    customers[47]["attributes"] = {"tenure_days": 3}
    before = runtime.engine.log.count_decisions()
    req = DecideBatchRequest.model_validate({"now": NOON, "customers": customers})
    with pytest.raises(BadRequest, match=r"^customers\[41\]\.attributes\.monthly_revenue: must be within"):
        runtime.engine.prepare(req.customers, req.now, 0, batch=True)
    assert runtime.engine.log.count_decisions() == before


@pytest.mark.parametrize(
    "changes, named",
    [
        ({}, None),
        ({3: {"attributes": ATTRS | {"loyalty_tier": 3}}}, "customers[3].attributes.loyalty_tier"),
        ({2: {"attributes": ATTRS | {"shoe_size": 42}}, 4: {"attributes": {}}}, "customers[2].attributes.shoe_size"),
        ({1: {"attributes": ATTRS | {"monthly_revenue": 10_001}}}, "customers[1].attributes.monthly_revenue"),
        ({1: {"attributes": ATTRS | {"tenure_days": "long"}}}, "customers[1].attributes.tenure_days"),
        ({2: {"segment": "genz"}}, "customers[2].segment"),
        ({2: {"channels": ["email", "fax"]}}, "customers[2].channels"),
        ({3: {"offers": ["data_boost_5gb", "free_lunch"]}}, "customers[3].offers"),
        ({1: {"channels": ["email"], "offers": ["data_boost_5gb"]}}, None),
        ({4: {"timezone": "Mars/Olympus"}}, "customers[4].timezone"),
        ({4: {"customer_id": "w-1"}}, "customers[4].customer_id"),
        ({0: {"attributes": None}}, "customers[0].attributes.plan_type"),
    ],
)
def test_a_batch_read_by_column_is_validated_as_one_read_by_pydantic(runtime, changes, named):
    """The same rows, or the same 422 naming the same field, from either reading of the body; nothing stored."""
    customers = [{"customer_id": f"w-{i}", "timezone": "Europe/Paris", "attributes": ATTRS} for i in range(6)]
    for i, change in changes.items():
        customers[i] = customers[i] | change
    before = runtime.engine.log.count_decisions()
    by_column, by_pydantic = validated_both_ways(runtime.engine, {"now": NOON, "customers": customers})
    assert by_column == by_pydantic
    assert by_column.startswith(f"{named}: " if named else "{'ids': ['w-0'"), by_column
    assert runtime.engine.log.count_decisions() == before


@pytest.mark.parametrize("alternatives", [0, 3])
def test_a_batch_answer_written_by_column_is_orjsons_of_the_decisions(runtime, alternatives):
    """Ids JSON escapes, offers with their features, local send times, alternatives: the same bytes."""
    ids = [f"{c}-{alternatives}" for c in ODD_IDS] + [f"ans-{alternatives}-{i}" for i in range(40)]
    zones = ["Europe/Paris", "UTC", "America/New_York", "+05:30"]
    customers = [
        {"customer_id": c, "timezone": zones[i % 4], "attributes": ATTRS | {"app_user": i % 2 == 0}}
        for i, c in enumerate(ids)
    ]
    body = answered_both_ways(runtime.engine, customers, NOON + 3600 * alternatives, alternatives, 'exp"1')
    decisions = DecideBatchResponse.model_validate_json(body).decisions
    assert [d.customer_id for d in decisions] == ids
    assert any(d.offer_features for d in decisions) and all(len(d.alternatives) <= alternatives for d in decisions)


def test_requests_decided_together_are_decided_as_the_decide_path_decides(runtime, telecom):
    """Several requests in one batch (their attributes checked column by column, per request) give the
    context and the mask that nba.decide gives for the same customers' checked attributes."""
    from nba.deployment import AttributeColumns
    from serving.decisions import decide_batch

    tiers = ("none", "silver", "gold")
    bodies = [
        [
            {
                "customer_id": f"tog-{j}-{i}",
                "timezone": "+02:00",
                "attributes": ATTRS
                | {
                    "tenure_days": float(40 * i),
                    "loyalty_tier": tiers[i % 3],
                    "plan_type": ("prepaid", "business")[i % 2],
                },
            }
            for i in range(n)
        ]
        for j, n in enumerate((3, 12, 1))
    ]
    jobs = [
        runtime.engine.prepare(DecideBatchRequest.model_validate({"customers": b}).customers, NOON, 0, batch=True)
        for b in bodies
    ]
    assert all(isinstance(job.rows.attributes, AttributeColumns) for job in jobs)
    ids = [c for job in jobs for c in job.rows.ids]
    now = np.full(len(ids), NOON / 3600.0)
    served = jobs[0].served
    history = runtime.engine.log.contact_history(ids, 0.0)
    decision_ids = [f"tog-{i}" for i in range(len(ids))]
    _, records = decide_batch(
        [(job.rows, 0) for job in jobs],
        served,
        now,
        history,
        decision_ids,
        np.random.default_rng(1),
        channel_costs={},
        experiment="",
    )
    people = [telecom.check_attributes(c["attributes"]) for b in bodies for c in b]
    expect = decide(
        telecom, served["champion"].bundle.policy, people, now=now, tz_offset=2.0, rng=np.random.default_rng(0)
    )
    np.testing.assert_array_equal(records.context, expect.context)
    np.testing.assert_array_equal(records.eligible, expect.eligible)


def test_a_winter_contact_keeps_its_local_hour_in_summer(runtime, telecom):
    """The history the service rebuilds for a customer in Europe/Paris gives a contact sent at 10:00 in winter
    (and its engagement) the hour 10 after the switch to summer time, not 11: the logged context is what
    nba.decide builds from the history rebuilt with the customer's zone."""
    from nba.decide import history_from_log
    from nba.log.records import DecisionRecords, OutcomeRecords

    space, dim = telecom.action_space(), telecom.features().dim
    winter = datetime(2026, 3, 20, 9, tzinfo=UTC).timestamp() / 3600.0  # 10:00 in Paris (+01:00), opened
    spring = datetime(2026, 5, 5, 8, tzinfo=UTC).timestamp() / 3600.0  # 10:00 in Paris (+02:00), not opened
    sms = space.index("sms", "data_boost_5gb", None)

    def strings(*x: str) -> np.ndarray:
        return np.array(x, dtype=object)

    log = runtime.engine.log
    log.log_decisions(
        DecisionRecords(
            decision_id=strings("dst-winter", "dst-spring"),
            time=np.array([winter, spring]),
            customer_id=strings("dst-1", "dst-1"),
            context=np.zeros((2, dim), np.float32),
            eligible=np.ones((2, space.n_actions), bool),
            action=np.array([sms, sms]),
            send_at=np.array([winter, spring]),
            propensity=np.array([0.5, 0.5]),
            policy=strings("linucb", "linucb"),
            policy_version=strings("1", "1"),
            experiment=strings("", ""),
            arm=strings("", ""),
            cost=np.array([0.05, 0.05]),
        )
    )
    log.log_outcomes(
        OutcomeRecords(
            decision_id=strings("dst-winter"),
            event=strings("opened"),
            time=np.array([winter + 0.5]),
            value=np.array([0.0]),
        )
    )
    now = np.array([NOON / 3600.0])
    before = log.contact_history(["dst-1"], now[0] - 90 * 24.0)  # what the service reads: its own decision after
    d = _one(runtime, {"customer_id": "dst-1", "timezone": "Europe/Paris", "attributes": ATTRS})  # June: +02:00
    X, _, _ = _stored(runtime, d["decision_id"])
    policy = runtime.models.served["champion"].bundle.policy

    def context(zones):
        recent = telecom.recent(1)
        history = history_from_log(before, np.arange(1), space, recent, now=now, tz_offset=np.array([2.0]), zones=zones)
        return decide(
            telecom,
            policy,
            [telecom.check_attributes(ATTRS)],
            now=now,
            tz_offset=2.0,
            history=history,
            recent=recent,
            rng=np.random.default_rng(0),
        ).context[0]

    np.testing.assert_array_equal(X, context(["Europe/Paris"]))
    # sent twice at 10:00 and opened once at 10:00: no preferred hour; with today's offset the winter one
    # was sent (and seen) at 11:00, and the context would prefer 11:00 to 10:00
    assert not np.array_equal(X, context(None))


@pytest.mark.parametrize(
    ("attribute", "value", "message"),
    [
        ("plan_type", ["postpaid"], "unknown value ['postpaid']"),
        ("plan_type", "p" * 5000, "unknown value 'pppp"),
        ("plan_type", {"a": 1}, "unknown value {'a': 1}"),
        ("tenure_days", [1.0] * 5000, "must be a finite number, got [1.0, "),
        ("app_user", "x" * 5000, "must be true or false, got 'xxx"),
        ("last_complaint_at", "2025-01-01" * 500, "must be an ISO 8601 date or date-time, got '2025"),
        ("p" * 64, 1, "unknown attribute"),
    ],
)
def test_attribute_values_are_json_scalars_of_the_declared_type(runtime, attribute, value, message):
    """The schema takes an attribute's value as the JSON has it; the deployment refuses anything but a scalar of
    the declared type, naming the attribute, without echoing a large value, and nothing is stored."""
    req = DecideRequest.model_validate({"customer_id": "t-odd", "now": NOON, "attributes": ATTRS | {attribute: value}})
    before = runtime.engine.log.count_decisions()
    with pytest.raises(BadRequest) as e:
        runtime.engine.prepare([req], req.now, 0, batch=False)
    assert str(e.value).startswith(f"attributes.{attribute}: {message}"), str(e.value)
    assert len(str(e.value)) < 400
    batch = DecideBatchRequest.model_validate(
        {"now": NOON, "customers": [{"customer_id": f"t-odd-{i}", "attributes": ATTRS} for i in range(40)]}
    )
    batch.customers[33].attributes = ATTRS | {attribute: value}
    with pytest.raises(BadRequest, match=rf"^customers\[33\]\.attributes\.{attribute}: "):
        runtime.engine.prepare(batch.customers, batch.now, 0, batch=True)
    assert runtime.engine.log.count_decisions() == before


@pytest.mark.parametrize(
    ("extra", "refused"),
    [
        ({"tenure_days": 3.0}, "customers[0].tenure_days"),
        ({"cart_active": True}, "customers[0].cart_active"),
        ({"segment": "genz", "stage": "new"}, "customers[0].segment"),
        ({"tenure_days": 0.0, "n_purchases": 0, "cart_active": False}, None),  # the defaults: nothing given
    ],
)
def test_a_profile_field_every_row_gives_is_refused_at_its_first_row(runtime, extra, refused):
    batch = DecideBatchRequest.model_validate(
        {"now": NOON, "customers": [{"customer_id": f"t-p-{i}", "attributes": ATTRS} | extra for i in range(30)]}
    )
    if refused is None:
        assert len(runtime.engine.prepare(batch.customers, batch.now, 0, batch=True).rows.ids) == 30
        return
    with pytest.raises(BadRequest) as e:
        runtime.engine.prepare(batch.customers, batch.now, 0, batch=True)
    assert str(e.value).startswith(f"{refused}: the served policy decides on the deployment"), str(e.value)


def test_attribute_names_are_bounded():
    with pytest.raises(ValidationError):
        DecideRequest.model_validate({"customer_id": "x", "attributes": {"p" * 65: 1}})


def test_a_scenario_request_to_a_deployment_service_and_back(runtime, registry, tmp_path):
    """Profile fields to a deployment's policy name the field; attributes to a scenario's policy too."""
    req = DecideRequest.model_validate({"customer_id": "x", "segment": "genz", "tenure_days": 3.0, "now": NOON})
    with pytest.raises(BadRequest, match="^segment: the served policy decides on the deployment 'telco-retention'"):
        runtime.engine.prepare([req], req.now, 0, batch=False)
    rt = Runtime.start(
        Settings(
            tracking_uri=registry.uri,
            log_url=f"sqlite:///{tmp_path}/s.db",
            cache_dir=tmp_path / "cache",
            poll_s=0,
            seed=1,
        )
    )
    try:
        req = DecideRequest.model_validate({"customer_id": "x", "attributes": ATTRS, "now": NOON})
        with pytest.raises(BadRequest, match="^attributes: the served policy decides in the simulator's world"):
            rt.engine.prepare([req], req.now, 0, batch=False)
        req = DecideRequest.model_validate({"customer_id": "x", "now": NOON})
        with pytest.raises(BadRequest, match="^segment: missing"):
            rt.engine.prepare([req], req.now, 0, batch=False)
    finally:
        rt.close()


def test_over_http_with_the_deployment_file(registry, registered, tmp_path):
    """BentoML serving the deployment: decide with attributes, a 422 naming the attribute with nothing stored,
    feedback, and the OpenAPI document stating the declared attributes and offers."""
    log_url = f"sqlite:///{tmp_path}/http.db"
    server = start_server(
        tmp_path,
        {
            "NBA_TRACKING_URI": registry.uri,
            "NBA_MODEL_NAME": MODEL,
            "NBA_LOG_URL": log_url,
            "NBA_DEPLOYMENT": str(DEPLOYMENT),
        },
    )
    try:
        with server.client() as c:
            ok = c.post(
                "/decide",
                json={
                    "customer_id": "h-1",
                    "timezone": "Europe/Paris",
                    "attributes": ATTRS,
                    "now": "2026-06-02T12:00:00Z",
                },
            )
            assert ok.status_code == 200, ok.text
            body = ok.json()
            assert body["policy_version"] == registered and "offer_features" in body
            bad = c.post("/decide", json={"customer_id": "h-2", "attributes": ATTRS | {"plan_type": "gold"}})
            assert bad.status_code == 422 and "attributes.plan_type" in bad.json()["error"]
            fb = c.post(
                "/feedback",
                json={"decision_id": body["decision_id"], "event": "opened", "time": "2026-06-02T13:00:00Z"},
            )
            assert fb.status_code == 200 and fb.json()["recorded"] is True
            doc = c.get("/docs.json").json()
            props = doc["components"]["schemas"]["DecideRequest"]["properties"]
            assert props["attributes"]["properties"]["plan_type"]["enum"] == ["prepaid", "postpaid", "business"]
            assert "segment" not in props and "data_boost_5gb" in props["offers"]["items"]["enum"]
    finally:
        server.stop()
    with DecisionLog(log_url) as log:
        assert log.count_decisions() == 1 and log.customer_ids() == {"h-1"}


def test_a_catalogue_learner_of_another_catalogue_is_moved_onto_the_served_one(registry, telecom, tmp_path):
    """A LinUCB that scores offers by their features, trained before an offer existed, serves the deployment
    with that offer: no retraining, the new offer decided; a log holding another layout refuses it."""
    from nba.catalogue import Catalogue
    from training.registry import log_policy, set_alias

    data = telecom.to_dict()
    data["offers"].pop("phone_upgrade")
    data["contact_policy"]["caps"] = [c for c in data["contact_policy"]["caps"] if c.get("offer") != "phone_upgrade"]
    older = Deployment.from_dict(data)
    policy = create("linucb", Catalogue.of_deployment(older), dim=older.features().dim)
    mlflow.set_tracking_uri(registry.uri)
    mlflow.set_registry_uri(registry.uri)
    with mlflow.start_run():
        info = log_policy(Bundle.of_deployment(policy, older), registered_model_name="telco-catalogue")
    set_alias("champion", str(info.registered_model_version), model_name="telco-catalogue")
    settings = dict(tracking_uri=registry.uri, model_name="telco-catalogue", poll_s=0, seed=5, deployment=DEPLOYMENT)
    rt = Runtime.start(Settings(log_url=f"sqlite:///{tmp_path}/c.db", cache_dir=tmp_path / "c1", **settings))
    try:
        assert rt.ready, rt.models.problems
        served = rt.models.served["champion"].bundle
        assert served.deployment.digest == telecom.digest and served.policy.space == telecom.action_space()
        d = _one(rt, {"customer_id": "cat-1", "timezone": "UTC", "attributes": ATTRS, "offers": ["phone_upgrade"]})
        assert d["offer"] in (None, "phone_upgrade")
        _, mask, _ = _stored(rt, d["decision_id"])
        assert mask[1:].any()  # the new offer is eligible and decided on
    finally:
        rt.close()
    with DecisionLog(f"sqlite:///{tmp_path}/old.db") as log:  # a log of the older catalogue's layout
        from nba.log.records import LogLayout

        log.set_layout(LogLayout(older.features().dim, older.action_space().n_actions))
    rt = Runtime.start(Settings(log_url=f"sqlite:///{tmp_path}/old.db", cache_dir=tmp_path / "c2", **settings))
    try:
        assert not rt.ready
        assert any("but the decision log holds decisions over 781 actions" in p for p in rt.models.problems), (
            rt.models.problems
        )
    finally:
        rt.close()


def test_budgets_capacities_and_offer_caps_hold_in_the_service(registry, telecom, tmp_path):
    """A deployment whose call centre takes 3 calls a day and whose data_boost_5gb has a budget of 4 sends:
    whatever a uniformly exploring policy tries over several batches, the log never holds more; and a
    customer gets retention_call at most once in 90 days (a cap per offer) across requests."""
    import yaml

    from training.registry import log_policy, set_alias

    data = telecom.to_dict()
    data["channels"]["call_centre"]["capacity_per_day"] = 3
    data["offers"]["data_boost_5gb"]["budget"] = 4
    data["contact_policy"]["min_gap_h"] = 0.0
    data["contact_policy"]["caps"] = [c for c in data["contact_policy"]["caps"] if c.get("offer") == "retention_call"]
    tight = Deployment.from_dict(data)
    path = tmp_path / "tight.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    mlflow.set_tracking_uri(registry.uri)
    mlflow.set_registry_uri(registry.uri)
    with mlflow.start_run():
        info = log_policy(
            Bundle.of_deployment(create("uniform_random", tight.action_space()), tight),
            registered_model_name="telco-tight",
        )
    set_alias("champion", str(info.registered_model_version), model_name="telco-tight")
    rt = Runtime.start(
        Settings(
            tracking_uri=registry.uri,
            model_name="telco-tight",
            poll_s=0,
            seed=11,
            deployment=path,
            log_url=f"sqlite:///{tmp_path}/t.db",
            cache_dir=tmp_path / "c",
        )
    )
    try:
        assert rt.ready, rt.models.problems
        for k in range(4):  # four batches of 30 customers, offered only what is limited
            customers = [
                DecideBatchRequest.model_validate(
                    {
                        "customers": [
                            {
                                "customer_id": f"k{k}-{i}",
                                "attributes": ATTRS,
                                "channels": ["call_centre", "email"],
                                "offers": ["data_boost_5gb", "data_boost_10gb"],
                            }
                            for i in range(30)
                        ]
                    }
                ).customers
            ]
            job = rt.engine.prepare(customers[0], NOON + 600 * k, 0, batch=True)
            rt.engine.decide(job)
        for k in range(8):  # one customer asked again and again: retention_call at most once
            req = DecideRequest.model_validate(
                {
                    "customer_id": "loyal",
                    "attributes": ATTRS,
                    "offers": ["retention_call"],
                    "now": NOON + 3600 * (k + 1),
                }
            )
            rt.engine.decide(rt.engine.prepare([req], req.now, 0, batch=False))
        batch = rt.engine.log.read()
    finally:
        rt.close()
    space = tight.action_space()
    contact = batch.action > 0
    channel = np.where(contact, space.channel_of[batch.action], -1)
    offer = np.where(contact, space.content_of[batch.action], -1)
    calls = channel == [c.name for c in tight.channels].index("call_centre")
    assert contact.sum() > 20  # the policy did try
    days = np.floor(batch.send_at[calls] / 24.0)
    assert calls.any() and np.bincount((days - days.min()).astype(int)).max() <= 3
    assert (offer == [o.name for o in tight.offers].index("data_boost_5gb")).sum() == 4  # the budget, spent
    loyal = batch.customer_id == "loyal"
    assert (offer[loyal] == [o.name for o in tight.offers].index("retention_call")).sum() == 1
