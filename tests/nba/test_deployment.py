"""The deployment file: the telecom example and the default scenario as deployments, a digest that versions
the content, what the engine runs on (action space, contact rules, reward), request attributes, and a
clear error naming the field for every invalid declaration."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from envs.scenario import Scenario
from nba.deployment import Deployment, DeploymentError, Usage
from nba.eligibility import ContactRules, Reason, RecentContacts, eligibility

ROOT = Path(__file__).resolve().parents[2]
TELECOM = ROOT / "examples" / "telecom" / "deployment.toml"
JUNE = 486_000.0  # 2025-06-11 00:00 UTC, hours since the epoch


@pytest.fixture(scope="module")
def telecom() -> Deployment:
    return Deployment.load(TELECOM)


def test_the_telecom_example_declares_its_world(telecom):
    assert [c.name for c in telecom.channels] == ["whatsapp", "sms", "email", "app_push", "call_centre"]
    assert len(telecom.offers) == 40
    assert {o.features["category"] for o in telecom.offers} == {
        "data",
        "voice",
        "roaming",
        "device",
        "content",
        "loyalty",
    }
    space = telecom.action_space()
    assert space.n_actions == 1 + 5 * 40 * 4
    call = next(c for c in telecom.channels if c.name == "call_centre")
    assert call.capacity_per_day == 2000 and call.cost == 3.5
    renewal = next(o for o in telecom.offers if o.name == "contract_renewal_discount")
    assert renewal.eligible["plan_type"].values == ("postpaid", "business")
    assert renewal.eligible["days_to_contract_end"].max == 60
    rules = telecom.contact_rules()
    assert rules.min_gap_h == 24 and rules.quiet_hours["whatsapp"] == (21, 9)
    assert rules.channels == tuple(c.name for c in telecom.channels)
    assert {c.offer for c in telecom.caps if c.offer} == {"retention_call", "anniversary_gift"}
    reward = telecom.reward_rule()
    assert reward.events == ("converted",) and reward.opt_out_value == -5.0 and reward.window_h == 72


def test_the_digest_versions_the_content_not_the_layout(telecom, tmp_path):
    data = telecom.to_dict()
    again = Deployment.from_dict(json.loads(json.dumps(data)))
    assert again.digest == telecom.digest and again == telecom
    as_yaml = tmp_path / "telecom.yaml"
    as_yaml.write_text(yaml.safe_dump(dict(reversed(list(data.items()))), sort_keys=False))
    assert Deployment.load(as_yaml).digest == telecom.digest
    changed = copy.deepcopy(data)
    changed["channels"]["sms"]["cost"] = 0.06
    assert Deployment.from_dict(changed).digest != telecom.digest
    shuffled = copy.deepcopy(data)  # keys within a table: same world
    shuffled["channels"]["sms"] = dict(reversed(list(shuffled["channels"]["sms"].items())))
    assert Deployment.from_dict(shuffled).digest == telecom.digest
    reordered = copy.deepcopy(data)  # the offers in another order number the actions otherwise
    reordered["offers"] = dict(reversed(list(reordered["offers"].items())))
    assert Deployment.from_dict(reordered).digest != telecom.digest


def test_the_default_scenario_as_a_deployment():
    sc = Scenario.default()
    d = sc.deployment()
    assert d.action_space() == sc.action_space
    assert d.contact_rules() == sc.contact
    assert d.reward_rule().window_h == sc.decision_window_h
    assert d.attribute("segment").values == tuple(sc.segments)
    assert Deployment.from_dict(d.to_dict()).digest == d.digest


def test_the_contact_rules_run_on_the_deployments_own_channels(telecom):
    """Quiet hours of WhatsApp (21-9 local) hold at 23:00 local; email has none."""
    space, rules = telecom.action_space(), telecom.contact_rules()
    n, c = 2, space.n_channels
    now = np.full(n, JUNE + 21.0)  # 21:00 UTC
    tz = np.array([2.0, -12.0])  # 23:00 in Paris, 09:00 in Baker Island
    mask = eligibility(
        space,
        rules,
        RecentContacts.empty(n, c, k=8, k_channel=2),
        now=now,
        tz_offset=tz,
        consent=np.ones((n, c), bool),
        allowed=np.ones((n, c), bool),
    )
    whatsapp_now = space.index("whatsapp", "data_boost_5gb", None)
    email_now = space.index("email", "data_boost_5gb", None)
    assert not mask[0, whatsapp_now] and mask[0, email_now]
    assert mask[1, whatsapp_now]
    assert ContactRules.from_dict(rules.to_dict()) == rules
    assert "channels" not in ContactRules().to_dict(), "the built-in names stay implied in saved bundles"


def test_request_attributes_are_checked_and_completed(telecom):
    out = telecom.check_attributes({"plan_type": "postpaid", "tenure_days": 400, "last_complaint_at": "2025-06-11"})
    assert out["monthly_revenue"] == 0.0 and out["loyalty_tier"] == "none" and out["days_to_contract_end"] is None
    assert out["last_complaint_at"] == JUNE
    for values, field, message in [
        ({"tenure_days": 3}, "attributes.plan_type", "missing"),
        ({"plan_type": "gold", "tenure_days": 3}, "attributes.plan_type", "unknown value 'gold'"),
        ({"plan_type": "prepaid", "tenure_days": -1}, "attributes.tenure_days", "within"),
        ({"plan_type": "prepaid", "tenure_days": True}, "attributes.tenure_days", "finite number"),
        ({"plan_type": "prepaid", "tenure_days": "3"}, "attributes.tenure_days", "finite number"),
        ({"plan_type": "prepaid", "tenure_days": 3, "app_user": 1}, "attributes.app_user", "true or false"),
        (
            {"plan_type": "prepaid", "tenure_days": 3, "last_complaint_at": "yesterday"},
            "attributes.last_complaint_at",
            "ISO 8601",
        ),
        ({"plan_type": "prepaid", "tenure_days": 3, "shoe_size": 42}, "attributes.shoe_size", "unknown attribute"),
    ]:
        with pytest.raises(DeploymentError, match=f"^{field}: .*{message}"):
            telecom.check_attributes(values)


def _minimal() -> dict:
    return {
        "deployment": {"name": "shop", "send_slots": ["now", 18]},
        "attributes": {
            "tier": {"type": "category", "values": ["a", "b"], "default": "a"},
            "spend": {"type": "number", "min": 0, "default": 0},
            "sms_ok": {"type": "boolean", "default": True},
            "seen_at": {"type": "time"},
        },
        "channels": {"email": {"cost": 0.001}, "sms": {"cost": 0.05, "consent": "sms_ok", "quiet_hours": [21, 8]}},
        "offers": {
            "promo": {"features": {"kind": "price", "discount": 0.1}},
            "news": {
                "features": {"kind": "content", "discount": 0.0},
                "channels": ["email"],
                "eligible": {"tier": ["b"], "spend": {"min": 10}},
            },
        },
        "contact_policy": {
            "min_gap_h": 12,
            "caps": [{"channel": "*", "max": 2, "days": 7}, {"offer": "promo", "max": 1, "hours": 48}],
        },
        "reward": {"events": {"converted": "value"}, "window_h": 48},
    }


def test_a_minimal_deployment():
    d = Deployment.from_dict(_minimal())
    assert d.action_space().n_actions == 1 + 2 * 2 * 2
    assert d.caps[1].offer == "promo" and d.caps[1].window_h == 48


def _with(path: str, value) -> dict:
    data = _minimal()
    *parents, last = path.split("/")
    node = data
    for p in parents:
        node = node[p]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return data


@pytest.mark.parametrize(
    "path, value, field",
    [
        ("colour", "red", "colour"),
        ("deployment/name", KeyError, "deployment.name"),
        ("deployment/send_slots", ["now", 25], r"deployment.send_slots\[1\]"),
        ("deployment/send_slots", ["now", "now"], "deployment.send_slots"),
        ("attributes/tier/type", "colour", "attributes.tier.type"),
        ("attributes/tier/values", [], "attributes.tier.values"),
        ("attributes/tier/default", "c", "attributes.tier.default"),
        ("attributes/spend/default", -1, "attributes.spend.default"),
        ("attributes/spend/min", "zero", "attributes.spend.min"),
        ("attributes/Bad-Name", {"type": "number"}, "attributes.Bad-Name"),
        ("attributes/timezone", {"type": "category", "values": ["x"]}, "attributes.timezone"),
        ("attributes/spend/required", True, "attributes.spend.default"),
        ("channels", {}, "channels"),
        ("channels/sms/consent", "tier", "channels.sms.consent"),
        ("channels/sms/quiet_hours", [21, 21], "channels.sms.quiet_hours"),
        ("channels/sms/cost", -0.1, "channels.sms.cost"),
        ("channels/sms/capacity_per_day", 0, "channels.sms.capacity_per_day"),
        ("offers/news/channels", ["fax"], r"offers.news.channels\[0\]"),
        ("offers/news/eligible", {"age": [1]}, "offers.news.eligible.age"),
        ("offers/news/eligible", {"tier": ["c"]}, r"offers.news.eligible.tier\[0\]"),
        ("offers/news/eligible", {"seen_at": ["x"]}, "offers.news.eligible.seen_at"),
        ("offers/news/eligible", {"spend": {"min": 5, "max": 1}}, "offers.news.eligible.spend"),
        ("offers/news/features", {"kind": 3, "discount": 0.0}, "offers.news.features.kind"),
        ("offers/news/features", {"kind": "content"}, "offers.news.features"),
        (
            "offers/news",
            {"features": {"kind": "x", "discount": 0.0}, "valid_from": "2021-01-01", "valid_until": "2020-01-01"},
            "offers.news.valid_until",
        ),
        ("offers/news", {"features": {"kind": "x", "discount": 0.0}, "valid_from": "soon"}, "offers.news.valid_from"),
        ("offers/news/budget", 1.5, "offers.news.budget"),
        (
            "contact_policy/caps",
            [{"channel": "sms", "offer": "promo", "max": 1, "days": 1}],
            r"contact_policy.caps\[0\]",
        ),
        ("contact_policy/caps", [{"offer": "gift", "max": 1, "days": 1}], r"contact_policy.caps\[0\].offer"),
        ("contact_policy/caps", [{"channel": "*", "max": 1, "days": 1, "hours": 24}], r"contact_policy.caps\[0\]"),
        ("contact_policy/caps", [{"channel": "*", "max": 0, "days": 1}], r"contact_policy.caps\[0\].max"),
        ("contact_policy/min_gap_h", -1, "contact_policy.min_gap_h"),
        ("reward/events", {"bought": "value"}, "reward.events.bought"),
        ("reward/events", {"converted": 10.0}, "reward.events.converted"),
        ("reward/window_h", 0, "reward.window_h"),
    ],
)
def test_an_invalid_deployment_names_the_field(path, value, field):
    with pytest.raises(DeploymentError, match=f"^{field}: "):
        Deployment.from_dict(_with(path, value))


def test_files_that_cannot_be_read_are_named(tmp_path):
    with pytest.raises(DeploymentError, match="^deployment: no such file"):
        Deployment.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[deployment\nname = 1")
    with pytest.raises(DeploymentError, match="^deployment: bad.toml is not valid TOML"):
        Deployment.load(bad)
    other = tmp_path / "world.json"
    other.write_text("{}")
    with pytest.raises(DeploymentError, match="neither .toml nor .yaml"):
        Deployment.load(other)


def test_who_may_get_which_offer(telecom):
    people = [
        telecom.check_attributes(a)
        for a in (
            {"plan_type": "postpaid", "tenure_days": 400, "days_to_contract_end": 30, "whatsapp_opt_in": True},
            {"plan_type": "prepaid", "tenure_days": 120},
            {"plan_type": "postpaid", "tenure_days": 20},  # contract end unknown
        )
    ]
    offers = [o.name for o in telecom.offers]
    summer = 501_000.0  # 2027-02-26 in hours since the epoch: before the cruise season, in the sports pass's
    ok = telecom.offers_allowed(people, summer)
    col = {name: ok[:, offers.index(name)].tolist() for name in offers}
    assert col["contract_renewal_discount"] == [True, False, False]
    assert col["upgrade_to_postpaid"] == [False, True, False]
    assert col["phone_upgrade"] == [True, False, False]
    assert col["cruise_pack"] == [False, False, False] and col["sports_pass"] == [True, True, True]
    assert col["data_boost_5gb"] == [True, True, True]
    assert telecom.offers_allowed(people, 503_000.0)[:, offers.index("cruise_pack")].all()  # 2027-05-21
    consent = telecom.consent(people)
    channels = [c.name for c in telecom.channels]
    assert consent[:, channels.index("whatsapp")].tolist() == [True, False, False]
    assert consent[:, channels.index("call_centre")].all()  # no consent attribute: everyone


def test_the_deployments_eligibility_gives_each_exclusion_its_reason(telecom):
    from nba.eligibility import Reason, explain

    space = telecom.action_space()
    people = [
        telecom.check_attributes({"plan_type": "postpaid", "tenure_days": 400, "days_to_contract_end": 30}),
        telecom.check_attributes({"plan_type": "prepaid", "tenure_days": 10, "whatsapp_opt_in": True}),
    ]
    recent = RecentContacts.empty(2, space.n_channels, k=8, k_channel=2)
    mask, bits = telecom.eligibility(people, recent, now=JUNE + 10.0, tz_offset=2.0, reasons=True)  # 12:00 local
    call = space.index("call_centre", "retention_call", None)
    email = space.index("email", "retention_call", None)
    whatsapp = space.index("whatsapp", "data_boost_5gb", None)
    assert mask[0, call] and not mask[1, call] and bits[1, call] == Reason.OFFER
    assert not mask[0, email] and bits[0, email] == Reason.OFFER  # retention_call goes by phone only
    assert bits[0, whatsapp] == Reason.CONSENT and mask[1, whatsapp]
    assert mask[:, 0].all() and ((bits == 0) == mask).all()
    assert explain(space, bits[1])["call_centre/retention_call/now"] == ["OFFER"]


def test_what_a_policy_sees_of_a_deployments_customers(telecom):
    from nba.features import History

    layout = telecom.features()
    names = list(layout.names)
    assert names[:4] == ["plan_type=prepaid", "plan_type=postpaid", "plan_type=business", "monthly_revenue"]
    assert "days_to_contract_end:missing" in names and "plan_type:missing" not in names  # required: never missing
    assert names[-3:] == ["log_purchases", "purchase_recency", "visit_recency"]
    assert "contact_load=call_centre" in names and layout.dim == len(names)
    people = [
        telecom.check_attributes(a)
        for a in (
            {"plan_type": "business", "tenure_days": 0, "monthly_revenue": 10000, "last_complaint_at": "2025-06-10"},
            {"plan_type": "prepaid", "tenure_days": 364, "days_to_contract_end": 30},
        )
    ]
    history = History.empty(2, len(telecom.channels))
    history.record_contacts(np.array([1]), np.array([4]), np.array([JUNE - 2.0]))
    X = layout.build(telecom.columns(people), history, JUNE, np.array([2.0, -5.0]))
    assert X.shape == (2, layout.dim) and X.dtype == np.float32 and np.isfinite(X).all()
    col = {n: X[:, i].tolist() for i, n in enumerate(names)}
    assert col["plan_type=business"] == [1.0, 0.0] and col["plan_type=prepaid"] == [0.0, 1.0]
    assert col["monthly_revenue"] == [1.0, 0.0]  # scaled by its declared range [0, 10000]
    assert col["tenure_days"] == pytest.approx([0.0, np.log1p(364)])  # a minimum only: log1p(x - min)
    assert col["days_to_contract_end:missing"] == [1.0, 0.0] and col["days_to_contract_end"][0] == 0.0
    assert col["last_complaint_at:days_since"][0] == pytest.approx(np.log1p(1.0))  # a day ago
    assert col["last_complaint_at:missing"] == [0.0, 1.0]
    assert col["loyalty_tier=none"] == [1.0, 1.0]  # the default fills in
    assert col["log_contacts=call_centre"] == pytest.approx([0.0, np.log(2.0)])
    assert col["tz_offset"] == pytest.approx([2 / 12, -5 / 12])


# ---------------------------------------------------------------------------- the whole contact policy
DAY = int(JUNE // 24)  # the UTC day of JUNE
NOON = JUNE + 10.0  # 12:00 local at tz +2: the slots "now", 10 (tomorrow), 13 and 18


def renewals(telecom, n):
    """``n`` customers who may get every offer but those for prepaid plans or silver members."""
    return [
        telecom.check_attributes(
            {"plan_type": "postpaid", "tenure_days": 400, "days_to_contract_end": 30, "monthly_revenue": 50}
        )
    ] * n


def test_usage_counts_each_offer_in_all_and_each_channel_per_send_day(telecom):
    space = telecom.action_space()
    call, email = "call_centre", "email"
    actions = np.array(
        [
            space.index(call, "retention_call", None),
            space.index(call, "anniversary_gift", 10),
            space.index(email, "retention_call", None),
            0,
            space.index(call, "retention_call", 13),
        ]
    )
    send_at = np.array([NOON, JUNE + 32.0, JUNE - 5.0, NOON, JUNE + 48.0])  # today, tomorrow, yesterday, -, after
    usage = Usage.count(telecom, actions, send_at, NOON)
    offers = [o.name for o in telecom.offers]
    assert usage.day == DAY and usage.offer_sends.sum() == 4  # no contact is not a send
    assert usage.offer_sends[offers.index("retention_call")] == 3
    assert usage.offer_sends[offers.index("anniversary_gift")] == 1
    assert usage.channel_sends.shape == (5, 2) and usage.channel_sends.sum() == 2
    assert usage.channel_sends[4].tolist() == [1, 1]  # midnight after tomorrow belongs to the day after
    more = usage.plus(telecom, actions[:1], send_at[:1])
    assert more.channel_sends[4].tolist() == [2, 1] and more.offer_sends.sum() == 5 and usage.offer_sends.sum() == 4
    across = Usage.count(telecom, actions, send_at, np.array([NOON, JUNE + 30.0]))  # a batch over midnight
    assert across.channel_sends.shape == (5, 3) and across.channel_sends[4].tolist() == [1, 1, 1]


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda d: Usage(np.zeros(3), np.zeros((5, 2)), DAY), "usage.offer_sends"),
        (lambda d: Usage(np.zeros((40, 1)), np.zeros((5, 2)), DAY), "usage.offer_sends"),
        (lambda d: Usage(np.zeros(40), np.zeros(5), DAY), "usage.channel_sends"),
        (lambda d: Usage(np.zeros(40), np.zeros((4, 2)), DAY), "usage.channel_sends"),
        (lambda d: Usage(np.zeros(40), np.zeros((5, 0)), DAY), "usage.channel_sends"),
        (lambda d: Usage(np.full(40, -1), np.zeros((5, 2)), DAY), "usage.offer_sends"),
        (lambda d: Usage(np.zeros(40), np.full((5, 2), 0.5), DAY), "usage.channel_sends"),
        (lambda d: Usage(np.zeros(40), np.zeros((5, 2)), float(DAY)), "usage.day"),
        (
            lambda d: Usage(np.zeros(40), np.zeros((5, 2)), DAY - 2),
            "usage.day",
        ),  # counts days the batch does not send on
        (lambda d: Usage.count(d, np.array([1, 2]), np.array([NOON]), NOON), "send_at"),
        (lambda d: Usage.count(d, np.array([801]), np.array([NOON]), NOON), "actions"),
        (lambda d: Usage.count(d, np.array([1]), np.array([np.nan]), NOON), "send_at"),
    ],
)
def test_usage_that_does_not_fit_raises_naming_the_field(telecom, make, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        telecom.eligibility(renewals(telecom, 1), telecom.recent(1), now=NOON, tz_offset=2.0, usage=make(telecom))


def test_the_deployment_caps_each_offer_per_customer(telecom):
    space = telecom.action_space()
    offers = [o.name for o in telecom.offers]
    retention, gift = offers.index("retention_call"), offers.index("anniversary_gift")
    recent = telecom.recent(3)
    assert set(recent.offers) == {retention, gift} and recent.k_offer == 1
    # 90 days cap: row 0's call was exactly 90 days ago, row 1's an hour less, row 2's was another offer
    recent.record(
        np.arange(3),
        np.full(3, 4),
        NOON - np.array([2160.0, 2159.0, 1.0]),
        offers=np.array([retention, retention, offers.index("referral_bonus")]),
    )
    mask, bits = telecom.eligibility(renewals(telecom, 3), recent, now=NOON, tz_offset=2.0, reasons=True)
    call_now, call_13h = (
        space.index("call_centre", "retention_call", None),
        space.index("call_centre", "retention_call", 13),
    )
    assert mask[0, call_now] and mask[0, call_13h]
    assert bits[1, call_now] == Reason.OFFER and mask[1, call_13h]  # 13:00 sends exactly 90 days after
    assert bits[2, call_now] == Reason.CHANNEL_CAP | Reason.MIN_GAP and mask[:, 0].all() and ((bits == 0) == mask).all()
    # an old caller's record keeps no offers: the same contacts, the offer caps not checked, all else alike
    old = RecentContacts.for_rules(3, 5, telecom.contact_rules())
    old.record(np.arange(3), np.full(3, 4), NOON - np.array([2160.0, 2159.0, 1.0]))
    old_mask, old_bits = telecom.eligibility(renewals(telecom, 3), old, now=NOON, tz_offset=2.0, reasons=True)
    assert old_mask[1, call_now] and np.array_equal(old_bits & ~np.uint8(Reason.OFFER), bits & ~np.uint8(Reason.OFFER))
    with pytest.raises(ValueError, match="^offers: needed"):
        recent.record(np.array([0]), np.array([4]), np.array([NOON]))


def test_budgets_and_daily_capacities_hold_across_the_batch(telecom):
    space = telecom.action_space()
    offers = [o.name for o in telecom.offers]
    people, recent = renewals(telecom, 3), telecom.recent(3)
    plain_mask, plain = telecom.eligibility(people, recent, now=NOON, tz_offset=2.0, reasons=True)
    sends = np.zeros(40, np.int64)
    sends[offers.index("anniversary_gift")] = 19_999  # one left of 20000
    sends[offers.index("referral_bonus")] = 10**9  # no budget: no limit
    channel = np.zeros((5, 2), np.int64)
    channel[4] = [2000, 1999]  # call centre: full today, one call left tomorrow
    mask, bits = telecom.eligibility(
        people, recent, now=NOON, tz_offset=2.0, reasons=True, usage=Usage(sends, channel, DAY)
    )
    gift = space.content_of == offers.index("anniversary_gift")
    call = space.channel_of == 4
    tomorrow = space.slot_of == space.send_slots.index(10)
    assert np.array_equal(mask[0, gift & ~call], plain_mask[0, gift & ~call])  # the first row gets the last gift
    assert (bits[1:, gift] & Reason.BUDGET).all()
    assert ((bits[:, call & ~tomorrow] & Reason.BUDGET) != 0).all()
    assert mask[0, call & tomorrow & ~gift].sum() == plain_mask[0, call & tomorrow & ~gift].sum() > 0
    assert (bits[1:, call & tomorrow] & Reason.BUDGET).all()
    assert np.array_equal(mask[:, ~gift & ~call], plain_mask[:, ~gift & ~call]) and mask[:, 0].all()
    assert ((bits == 0) == mask).all() and np.array_equal(bits & ~np.uint8(Reason.BUDGET), plain)
    none = telecom.eligibility(people, recent, now=NOON, tz_offset=2.0, usage=None)  # not checked
    assert np.array_equal(none, plain_mask)


def test_decide_passes_the_usage_through(telecom):
    from nba.decide import decide
    from nba.policies import create

    space = telecom.action_space()
    policy = create("uniform_random", space)
    full = Usage(np.zeros(40, np.int64), np.array([[0, 0]] * 4 + [[2000, 2000]]), DAY)  # no calls today or tomorrow
    out = decide(
        telecom, policy, renewals(telecom, 50), now=NOON, tz_offset=2.0, rng=np.random.default_rng(3), usage=full
    )
    call = space.channel_of == 4
    assert (out.reasons[:, call] & Reason.BUDGET).all() and not out.eligible[:, call].any()
    assert not call[out.action].any()
