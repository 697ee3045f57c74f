"""Scenario loading: the default, user files merged over it, and errors that name the field."""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest
import yaml

from envs.scenario import DEFAULT_PATH, Scenario, ScenarioError


@pytest.fixture(scope="module")
def default() -> Scenario:
    return Scenario.default()


def _write(tmp_path, name: str, text: str):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_default_loads(default):
    assert default.name == "default"
    assert list(default.channels) == ["email", "sms", "push", "in_app", "web_push", "direct_mail", "social_ad"]
    assert len(default.contents) == 8 and len(default.segments) == 4
    assert default.send_slots == [9, 13, 19]
    assert default.action_space.n_actions == 1 + 7 * 8 * 4
    assert default.feature_spec.dim == len(default.feature_spec.names)
    assert math.isclose(sum(s.share for s in default.segments.values()), 1.0)
    # values straight from the file
    assert default.channels["sms"].cost == 0.06
    assert default.contents["cart_reminder"].urgency_h == 24.0
    assert default.contents["promo"].urgency_h == math.inf  # not in the file: the dataclass default
    assert default.segments["genz"].channel_affinity["social_ad"] == 1.9
    sa = default.arrays()
    assert sa.cost.shape == (7,) and sa.conversion_rate.shape == (8,)
    assert sa.segment_cdf[-1] == pytest.approx(1.0)
    np.testing.assert_array_equal(sa.slot_hours, [-1, 9, 13, 19])


def test_default_path_loads_without_merging(default):
    assert Scenario.load(DEFAULT_PATH) == default


def test_toml_file_merges_over_default(tmp_path, default):
    p = _write(
        tmp_path,
        "user.toml",
        """
        name = "cheap_sms"
        [channels.sms]
        cost = 0.08
        [segments.genz]
        channel_affinity = { push = 2.5 }
        [fatigue]
        channel_weight = 0.5
    """,
    )
    sc = Scenario.load(p)
    assert sc.name == "cheap_sms"
    assert sc.channels["sms"].cost == 0.08
    # siblings of the changed value keep the default
    assert sc.channels["sms"].open == default.channels["sms"].open
    assert sc.channels["email"] == default.channels["email"]
    # nested tables merge key by key: only push changed in genz's channel affinity
    assert sc.segments["genz"].channel_affinity["push"] == 2.5
    assert sc.segments["genz"].channel_affinity["social_ad"] == 1.9
    assert sc.segments["genz"].share == default.segments["genz"].share
    assert sc.fatigue.channel_weight == 0.5
    assert sc.fatigue.total_weight == default.fatigue.total_weight
    assert sc.segments["senior"] == default.segments["senior"]


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_yaml_file_merges_over_default(tmp_path, default, suffix):
    p = _write(
        tmp_path,
        "user" + suffix,
        """
        channels:
          sms:
            cost: 0.08
          direct_mail:
            delivery: 0.5
        horizon_days: 30
    """,
    )
    sc = Scenario.load(p)
    assert sc.channels["sms"].cost == 0.08
    assert sc.channels["direct_mail"].delivery == 0.5
    assert sc.channels["direct_mail"].cost == default.channels["direct_mail"].cost
    assert sc.horizon_days == 30
    assert sc.contents == default.contents


def test_empty_yaml_is_the_default(tmp_path, default):
    assert Scenario.load(_write(tmp_path, "empty.yaml", "")) == default


# (TOML text of a user file, dotted field path the error message must start with)
BAD_FILES = {
    "negative cost": ("[channels.sms]\ncost = -1.0\n", "channels.sms.cost"),
    "probability above 1": ("[channels.email]\nopen = 1.5\n", "channels.email.open"),
    "probability below 0": ("[channels.push]\nconsent = -0.1\n", "channels.push.consent"),
    "unknown channel in segment affinity": (
        "[segments.genz]\nchannel_affinity = { tiktok = 2.0 }\n",
        "segments.genz.channel_affinity",
    ),
    "unknown content in segment affinity": (
        "[segments.senior]\ncontent_affinity = { lottery = 2.0 }\n",
        "segments.senior.content_affinity",
    ),
    "unknown top-level channel": (
        # a complete spec, so the only thing wrong is the channel's name
        "[channels.fax]\ncost = 0.1\ndelivery = 0.9\nopen = 0.5\nclick = 0.1\noptout = 0.0\n"
        "consent = 0.2\ndelay = 'exponential'\ndelay_median_min = 60.0\n",
        "channels",
    ),
    "unknown field (typo)": ("[channels.sms]\ncots = 0.1\n", "channels.sms.cots"),
    "unknown top-level field": ("horizon_dayz = 30\n", "horizon_dayz"),
    "segment shares do not sum to 1": ("[segments.genz]\nshare = 0.5\n", "segments.*.share"),
    "NaN": ("[channels.sms]\ncost = nan\n", "channels.sms.cost"),
    "NaN probability": ("[contents.promo]\ndiscount = nan\n", "contents.promo.discount"),
    "string for a number": ('[channels.sms]\ncost = "cheap"\n', "channels.sms.cost"),
    "bool for a number": ("[channels.sms]\ncost = true\n", "channels.sms.cost"),
    "float for an integer": ("horizon_days = 30.5\n", "horizon_days"),
    "table for a number": ("[channels.sms.cost]\nvalue = 1\n", "channels.sms.cost"),
    "unknown lifecycle stage": ("[contents.promo]\nstage = { dormant = 1.0 }\n", "contents.promo.stage"),
    "bad delay kind": ("[channels.sms]\ndelay = 'gamma'\n", "channels.sms.delay"),
    "send slot out of range": ("send_slots = [9, 24]\n", "send_slots[1]"),
    "repeated send slot": ("send_slots = [9, 9]\n", "send_slots"),
    "unknown channel in use_channels": ("use_channels = ['email', 'fax']\n", "use_channels"),
}


@pytest.mark.parametrize(("text", "path"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_values_fail_at_load_naming_the_field(tmp_path, text, path):
    p = _write(tmp_path, "bad.toml", text)
    with pytest.raises(ScenarioError) as e:
        Scenario.load(p)
    assert str(e.value).startswith(f"{path}: "), str(e.value)
    assert isinstance(e.value, ValueError)


LIFECYCLE_BAD = {
    "at_risk not before lapsed": ("[lifecycle]\nat_risk_days = 100.0\n", "lifecycle.at_risk_days"),
    "zero days": ("[lifecycle]\nnew_days = 0.0\n", "lifecycle.new_days"),
}


@pytest.mark.parametrize(("text", "path"), LIFECYCLE_BAD.values(), ids=LIFECYCLE_BAD.keys())
def test_bad_lifecycle_values_fail_at_load_naming_the_field(tmp_path, text, path):
    with pytest.raises(ValueError) as e:
        Scenario.load(_write(tmp_path, "bad.toml", text))
    assert str(e.value).startswith(f"{path}: "), str(e.value)


@pytest.mark.parametrize(("text", "path"), LIFECYCLE_BAD.values(), ids=LIFECYCLE_BAD.keys())
def test_bad_lifecycle_values_raise_scenario_error(tmp_path, text, path):
    with pytest.raises(ScenarioError, match=f"^{path}: "):
        Scenario.load(_write(tmp_path, "bad.toml", text))


def test_bad_value_in_yaml_names_the_field(tmp_path):
    p = _write(tmp_path, "bad.yaml", "channels:\n  sms:\n    cost: -1.0\n")
    with pytest.raises(ScenarioError, match=r"^channels\.sms\.cost: must be >= 0, got -1\.0$"):
        Scenario.load(p)


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(ScenarioError, match="^scenario: no such file"):
        Scenario.load(tmp_path / "nope.toml")
    with pytest.raises(ScenarioError, match="^scenario: "):
        Scenario.load(_write(tmp_path, "x.json", "{}"))


def test_use_channels_and_contents_narrow_the_action_space(tmp_path, default):
    p = _write(
        tmp_path,
        "narrow.toml",
        """
        use_channels = ["sms", "email"]
        use_contents = ["promo", "cart_reminder", "winback"]
        send_slots = [10]
    """,
    )
    sc = Scenario.load(p)
    assert list(sc.channels) == ["sms", "email"]  # in the order given
    assert list(sc.contents) == ["promo", "cart_reminder", "winback"]
    space = sc.action_space
    assert space.channels == ("sms", "email") and space.send_slots == (None, 10)
    assert space.n_actions == 1 + 2 * 3 * 2
    assert sc.feature_spec.channels == ("sms", "email")
    assert sc.channels["sms"] == default.channels["sms"]
    sa = sc.arrays()
    assert sa.cost.tolist() == [default.channels["sms"].cost, default.channels["email"].cost]
    # segment affinities are re-indexed to the kept channels
    assert sa.seg_channel_affinity[0].tolist() == [
        default.segments["genz"].channel_affinity["sms"],
        default.segments["genz"].channel_affinity["email"],
    ]


def test_to_dict_from_dict_round_trip(tmp_path, default):
    d = default.to_dict()
    assert Scenario.from_dict(d) == default
    assert d["channels"]["sms"]["cost"] == 0.06
    # the plain dict is data only: it survives a YAML dump and load (inf urgency included)
    p = tmp_path / "dumped.yaml"
    p.write_text(yaml.safe_dump(d))
    assert Scenario.load(p) == default
    # a modified scenario round-trips too
    d["channels"]["sms"]["cost"] = 0.5
    d["send_slots"] = [7]
    sc = Scenario.from_dict(d)
    assert sc.channels["sms"].cost == 0.5 and sc.action_space.send_slots == (None, 7)
    assert Scenario.from_dict(sc.to_dict()) == sc


def test_from_dict_does_not_mutate_its_input(default):
    d = default.to_dict()
    d["use_channels"] = ["email"]
    snapshot = yaml.safe_dump(d)
    Scenario.from_dict(d)
    assert yaml.safe_dump(d) == snapshot


def test_infinite_cost_and_misspelt_channel_table_are_rejected(tmp_path):
    with pytest.raises(ScenarioError, match=r"^channels\.email\.cost: must be finite"):
        Scenario.load(_write(tmp_path, "inf.toml", "[channels.email]\ncost = inf\n"))
    with pytest.raises(ScenarioError, match=r"^channels: unknown channel 'emial'"):
        Scenario.load(_write(tmp_path, "typo.toml", "[channels.emial]\ncost = 0.1\n"))
