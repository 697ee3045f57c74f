"""Catalogues (:mod:`nba.catalogue`): action features from offers' declared features, under a frozen encoding,
and the linear learners that score actions by them and move to a changed catalogue without retraining."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nba import serialization
from nba.actions import ActionSpace
from nba.catalogue import Catalogue, Encoding
from nba.deployment import Deployment
from nba.policies import act, create
from nba.policies.linear import LinTS, LinUCB

TELECOM = "examples/telecom/deployment.toml"

# a small structured world: two channels, one send slot, offers described by a kind and a value
CHANNELS, SLOTS = ("email", "sms"), (None,)
OFFERS = {f"o{i}": {"kind": "ab"[i % 2], "value": v} for i, v in enumerate([1.0, 0.8, 0.6, 0.4, 0.2, 0.0])}


def space_of(offers) -> ActionSpace:
    return ActionSpace(CHANNELS, tuple(offers), SLOTS)


def small_catalogue(offers=None) -> Catalogue:
    offers = OFFERS if offers is None else offers
    return Catalogue(space_of(offers), offers)


# ----------------------------------------------------------------------------- encoding
def test_a_deployment_catalogue_encodes_its_offers_features():
    deployment = Deployment.load(TELECOM)
    cat = Catalogue.of_deployment(deployment)
    space = deployment.action_space()
    assert cat.space == space
    channels = [f"channel={c.name}" for c in deployment.channels]
    slots = ["send_slot=now", "send_slot=10h", "send_slot=13h", "send_slot=18h"]
    categories = sorted({o.features["category"] for o in deployment.offers})
    assert cat.names == [
        "contact",
        *channels,
        *slots,
        *(f"category={c}" for c in categories),
        "discount",
        "margin",
        "monthly_price",
    ]
    assert cat.matrix.shape == (space.n_actions, len(cat.names)) and cat.matrix.dtype == np.float64
    assert not cat.matrix.flags.writeable
    assert np.all(cat.matrix[0] == 0.0)  # no contact
    offer = deployment.offers[3]
    row = dict(zip(cat.names, cat.matrix[space.index("sms", offer.name, 13)], strict=True))
    assert row["contact"] == 1.0 and row["channel=sms"] == 1.0 and row["send_slot=13h"] == 1.0
    assert sum(row[c] for c in channels) == 1.0 and sum(row[s] for s in slots) == 1.0
    assert row[f"category={offer.features['category']}"] == 1.0 and sum(row[f"category={c}"] for c in categories) == 1
    margins = [o.features["margin"] for o in deployment.offers]
    assert row["margin"] == pytest.approx(offer.features["margin"] / max(margins))


def test_the_encoding_and_catalogue_are_plain_json_and_round_trip():
    cat = Catalogue.of_deployment(Deployment.load(TELECOM))
    data = json.loads(json.dumps(cat.to_dict()))
    assert Encoding.from_dict(data["encoding"]) == cat.encoding
    again = Catalogue.from_dict(cat.space, data, cat.matrix)
    assert again == cat and again.names == cat.names
    with pytest.raises(ValueError, match="^catalogue: "):
        Catalogue.from_dict(cat.space, data, cat.matrix * 2.0)


def test_a_new_catalogue_is_encoded_the_old_way():
    old = small_catalogue()
    offers = {
        "o1": OFFERS["o1"],
        "big": {"kind": "a", "value": 3.0},  # beyond the old largest value
        "odd": {"kind": "z", "value": 0.5},  # a kind never seen: no kind
        "bare": {},  # no features: no kind, value 0
        "extra": {"kind": "b", "value": 0.5, "colour": "red"},
    }  # colour is not in the encoding
    new = Catalogue(space_of(offers), offers).with_encoding(old.encoding.to_dict())
    assert new.encoding == old.encoding and new.names == old.names
    assert new.names == ["contact", "channel=email", "channel=sms", "send_slot=now", "kind=a", "kind=b", "value"]

    def features(offer):  # the offer's encoded features (after contact, channel and slot)
        return new.matrix[new.space.index("sms", offer, None), 4:].tolist()

    assert features("o1") == [0.0, 1.0, 0.8]
    assert features("big") == [1.0, 0.0, 3.0]  # scaled by the old scale, 1
    assert features("odd") == [0.0, 0.0, 0.5]
    assert features("bare") == [0.0, 0.0, 0.0]
    assert features("extra") == [0.0, 1.0, 0.5]
    fresh = Catalogue(space_of(offers), offers)  # its own encoding: other columns
    assert fresh.names != old.names and "kind=z" in fresh.names and "colour=red" in fresh.names
    assert small_catalogue().with_encoding(old.encoding) == old


def test_a_plain_catalogue_describes_k_named_actions():
    features = {"x": {"size": 2.0, "colour": "red"}, "y": {"size": -4.0, "colour": "blue"}, "z": {"size": 1.0}}
    cat = Catalogue.plain(["x", "y", "z"], features)
    assert cat.space == ActionSpace.plain(["x", "y", "z"])
    assert cat.names == ["colour=blue", "colour=red", "size"]
    np.testing.assert_array_equal(cat.matrix, [[0, 1, 0.5], [1, 0, -1], [0, 0, 0.25]])
    nc = Catalogue.plain(["x", "y", "z"], features, no_contact=True)
    assert nc.space == ActionSpace.plain(["x", "y", "z"], no_contact=True) and nc.names[0] == "contact"
    np.testing.assert_array_equal(nc.matrix, [[0, 0, 0, 0], [1, 0, 1, 0.5], [1, 1, 0, -1], [1, 0, 0, 0.25]])
    assert Encoding.from_dict(json.loads(json.dumps(nc.encoding.to_dict()))) == nc.encoding


def _other_slots():
    offers = {"o0": OFFERS["o0"]}
    return Catalogue(ActionSpace(CHANNELS, ("o0",), (None, 9)), offers).with_encoding(small_catalogue().encoding)


BAD = {
    "channels": (
        lambda: Catalogue(
            ActionSpace(("email", "push"), ("o0",), SLOTS), {"o0": OFFERS["o0"]}, small_catalogue().encoding
        ),
        r"^channels: .*added \['push'\], removed \['sms'\]",
    ),
    "channels-order": (
        lambda: Catalogue(ActionSpace(("sms", "email"), ("o0",), SLOTS), {"o0": {}}, small_catalogue().encoding),
        "^channels: .*another order",
    ),
    "send_slots": (_other_slots, r"^send_slots: .*added \[9\]"),
    "layout": (lambda: Catalogue.plain(["o0"], {"o0": {}}, encoding=small_catalogue().encoding), "^encoding: "),
    "no_contact": (
        lambda: Catalogue.plain(["a"], {"a": {}}, no_contact=True, encoding=Catalogue.plain(["a"], {"a": {}}).encoding),
        "^no_contact: ",
    ),
    "value": (lambda: small_catalogue({"o0": {"value": [1]}}), r"^features\.o0\.value: "),
    "nan": (lambda: small_catalogue({"o0": {"value": float("nan")}}), r"^features\.o0\.value: "),
    "bool": (lambda: small_catalogue({"o0": {"value": True}}), r"^features\.o0\.value: "),
    "mixed-kinds": (
        lambda: small_catalogue({"o0": {"kind": "a"}, "o1": {"kind": 2.0}}),
        r"^features\.o1\.kind: is a number here but a category in features\.o0",
    ),
    "kind-changed": (
        lambda: small_catalogue({"o0": {"kind": 1.0}}).with_encoding(small_catalogue().encoding),
        r"^features\.o0\.kind: is a number here but a category in the encoding",
    ),
    "missing-offer": (lambda: Catalogue(space_of(OFFERS), {"o0": {}}), "^features: no entry for offer 'o1'"),
    "unknown-offer": (lambda: Catalogue(space_of({"o0": {}}), {"o0": {}, "zz": {}}), r"^features: \['zz'\]"),
    "encoding-format": (lambda: Encoding.from_dict({"format": 9}), r"^encoding\.format: "),
    "encoding-scale": (
        lambda: Encoding.from_dict(
            {"format": 1, "layout": "plain", "features": [{"name": "v", "type": "number", "scale": 0}]}
        ),
        r"^encoding\.features\[0\]\.scale: ",
    ),
    "create-other-policy": (
        lambda: create("uniform_random", small_catalogue().space, catalogue=small_catalogue()),
        "^catalogue: ",
    ),
    "create-catalogue-as-space": (
        lambda: create("no_contact", small_catalogue(), catalogue=small_catalogue()),
        "^catalogue: policy 'no_contact'",
    ),
    "create-other-space": (
        lambda: create("linucb", space_of({"o0": {}}), dim=2, catalogue=small_catalogue()),
        "^catalogue: ",
    ),
    "move-without-catalogue": (
        lambda: create("lints", space_of(OFFERS), dim=2).with_catalogue(small_catalogue()),
        "^catalogue: .*without a catalogue",
    ),
    "move-to-other-channels": (
        lambda: create("linucb", small_catalogue().space, dim=2, catalogue=small_catalogue()).with_catalogue(
            Catalogue(ActionSpace(("email",), ("o0",), SLOTS), {"o0": {}})
        ),
        r"^channels: .*removed \['sms'\]",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_catalogues_raise_naming_the_field(case):
    build, message = BAD[case]
    with pytest.raises(ValueError, match=message):
        build()


# ----------------------------------------------------------------------------- policies
DIM = 3


def world_rewards(catalogue: Catalogue, X: np.ndarray, actions: np.ndarray, rng) -> np.ndarray:
    """Contacting with an offer earns ``x0 * value + 0.5 x1`` (kind a) or ``- 0.5 x1`` (kind b), less 0.2,
    plus noise; no contact earns nothing (plus noise)."""
    space = catalogue.space
    value = np.array([catalogue.features[o].get("value", 0.0) for o in space.contents])
    sign = np.array([{"a": 0.5, "b": -0.5}.get(catalogue.features[o].get("kind"), 0.0) for o in space.contents])
    content = np.maximum(space.content_of[actions], 0)
    mean = (X[:, 0] * value[content] + X[:, 1] * sign[content] - 0.2) * space.is_contact[actions]
    return mean + 0.3 * rng.standard_normal(len(actions))


def trained(cls, catalogue: Catalogue, n: int = 3000, seed: int = 0):
    """A learner on ``catalogue`` fed ``n`` rows logged uniformly at random, in three batches."""
    rng = np.random.default_rng(seed)
    policy = cls(catalogue.space, DIM, catalogue=catalogue)
    logger = create("uniform_random", catalogue.space)
    for _ in range(3):
        X = rng.standard_normal((n // 3, DIM))
        d = act(logger, X, np.ones((len(X), catalogue.space.n_actions), bool), rng)
        policy.update(X, d.actions, world_rewards(catalogue, X, d.actions, rng), d.propensities)
    return policy


@pytest.mark.parametrize("cls", [LinUCB, LinTS])
def test_a_new_offer_is_chosen_for_the_right_contexts_without_retraining(cls):
    old = small_catalogue()
    policy = trained(cls, old)
    offers = {k: v for k, v in OFFERS.items() if k != "o0"}  # o0 retired, the best offer so far
    offers["new"] = {"kind": "a", "value": 2.0}  # better than any: twice o0's value
    moved = policy.with_catalogue(Catalogue(space_of(offers), offers))
    assert moved.space.contents == ("o1", "o2", "o3", "o4", "o5", "new")

    rng = np.random.default_rng(1)
    X = rng.standard_normal((4000, DIM))
    good = (X[:, 0] > 0.3) & (X[:, 1] > 0.3)  # where "new" is the best action by far
    bad = X[:, 0] < -0.3  # where it is the worst
    before = act(policy, X, np.ones((len(X), old.space.n_actions), bool), rng)
    chosen_before = np.array([old.space.decode(a).content for a in before.actions])
    assert np.mean(chosen_before[good] == "o0") > 0.8  # o0 was what these customers got
    after = act(moved, X, np.ones((len(X), moved.space.n_actions), bool), rng)
    chosen = np.array([moved.space.decode(a).content for a in after.actions])
    assert "o0" not in set(chosen)  # retired: never decided
    assert np.mean(chosen[good] == "new") > 0.9
    assert np.mean(chosen[bad] == "new") < 0.02
    # explored: its features lie beyond those seen, so its confidence width is the widest
    widths = moved.ridge.widths(X[:200]).mean(axis=0)
    is_new = np.array([moved.space.decode(a).content == "new" for a in range(moved.space.n_actions)])
    assert widths[is_new].min() > widths[moved.space.is_contact & ~is_new].max()


@pytest.mark.parametrize("cls", [LinUCB, LinTS])
def test_with_catalogue_keeps_what_was_learnt_and_learns_on_as_the_original(cls):
    old = small_catalogue()
    policy = trained(cls, old, n=600)
    offers = {"o3": OFFERS["o3"], "o1": OFFERS["o1"], "new": {"kind": "b", "value": 0.9}}
    moved = policy.with_catalogue(Catalogue(space_of(offers), offers))
    assert moved.catalogue.encoding == old.encoding and moved.space == space_of(offers)
    assert policy.space == old.space and policy.catalogue is old  # the original is untouched
    r, m = policy.ridge, moved.ridge
    for name in ("A", "b", "theta"):
        np.testing.assert_array_equal(getattr(m, name), getattr(r, name), err_msg=name)
    assert (m.n, m.sigma) == (r.n, r.sigma)
    if cls is LinTS:
        np.testing.assert_array_equal(moved.samples, policy.samples)
        assert moved.rng.bit_generator.state == policy.rng.bit_generator.state

    # a kept offer scores as before; the same data teaches both the same (through the kept offers' indices)
    X = np.random.default_rng(2).standard_normal((50, DIM))
    old_index = np.array([0] + [old.space.index(c, o, None) for c in CHANNELS for o in offers if o != "new"])
    new_index = np.array([0] + [moved.space.index(c, o, None) for c in CHANNELS for o in offers if o != "new"])
    np.testing.assert_allclose(moved.scores(X)[:, new_index], policy.scores(X)[:, old_index], rtol=1e-12)
    pick = np.random.default_rng(3).integers(0, len(old_index), 50)
    rewards = np.random.default_rng(4).standard_normal(50)
    policy.update(X, old_index[pick], rewards, np.full(50, 0.5))
    moved.update(X, new_index[pick], rewards, np.full(50, 0.5))
    np.testing.assert_allclose(m.theta, r.theta, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["linucb", "lints"])
def test_a_catalogue_learner_saves_and_loads_without_pickle(name, tmp_path):
    cat = small_catalogue()
    policy = trained(LinUCB if name == "linucb" else LinTS, cat, n=300)
    folder = serialization.save(policy, tmp_path / "policy")
    meta = json.loads((folder / "policy.json").read_text())
    assert meta["params"]["catalogue"] == json.loads(json.dumps(cat.to_dict()))
    with np.load(folder / "arrays.npz", allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["catalogue"], cat.matrix)
    loaded = serialization.load(folder)
    assert loaded.catalogue == cat and loaded.space == cat.space
    X = np.random.default_rng(5).standard_normal((20, DIM))
    mask = np.ones((20, cat.space.n_actions), bool)
    np.testing.assert_array_equal(loaded.probabilities(X, mask), policy.probabilities(X, mask))
    assert serialization.load(serialization.save(create(name, cat, dim=DIM), tmp_path / "c")).catalogue == cat
    # without a catalogue, the saved state is as it always was
    params, arrays, _ = create(name, cat.space, dim=DIM).get_state()
    assert "catalogue" not in params and "catalogue" not in arrays
