"""Deployment bundles: policy plus the rules it runs under, round-tripped without pickle."""

import json
import os
import shutil

import numpy as np
import pytest

from envs.scenario import Scenario
from nba.policies import act, create
from nba.serialization import Bundle, bundle_digest, load_bundle, save, save_bundle


def test_bundle_round_trip(tmp_path):
    sc = Scenario.default()
    policy = create("linucb", sc.action_space, tuple(sc.segments), dim=sc.feature_spec.dim)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, sc.feature_spec.dim)).astype(np.float32)
    mask = np.ones((64, sc.action_space.n_actions), bool)
    d = act(policy, X, mask, np.random.default_rng(1))
    policy.update(X, d.actions, rng.normal(size=64), d.propensities)
    path = save_bundle(Bundle(policy, sc.feature_spec, sc.lifecycle, sc.contact), tmp_path / "b")
    back = load_bundle(path)
    assert back.spec == sc.feature_spec and back.lifecycle == sc.lifecycle and back.rules == sc.contact
    np.testing.assert_array_equal(back.policy.probabilities(X, mask), policy.probabilities(X, mask))
    assert not list(path.rglob("*.pkl"))


def test_bundle_rejects_other_feature_layout(tmp_path):
    sc = Scenario.default()
    policy = create("no_contact", sc.action_space, tuple(sc.segments))
    path = save_bundle(Bundle(policy, sc.feature_spec, sc.lifecycle, sc.contact), tmp_path / "b")
    meta = json.loads((path / "deployment.json").read_text())
    meta["features"]["names"] = meta["features"]["names"][:-1]
    (path / "deployment.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="features.names"):
        load_bundle(path)
    with pytest.raises(FileNotFoundError, match="deployment.json"):
        load_bundle(tmp_path / "missing")


def _saved(tmp_path, name="b"):
    sc = Scenario.default()
    policy = create("linucb", sc.action_space, tuple(sc.segments), dim=sc.feature_spec.dim)
    return save_bundle(Bundle(policy, sc.feature_spec, sc.lifecycle, sc.contact), tmp_path / name)


def test_bundle_digest_is_content_only(tmp_path):
    path = _saved(tmp_path)
    digest = bundle_digest(path)
    assert digest.startswith("sha256:") and len(digest) == len("sha256:") + 64
    # the same content elsewhere, saved again, with other mtimes: the same digest
    assert bundle_digest(_saved(tmp_path, "again")) == digest
    copy = shutil.copytree(path, tmp_path / "copy")
    for f in copy.rglob("*"):
        os.utime(f, (1_000_000, 1_000_000))
    (copy / "empty-folder").mkdir()
    assert bundle_digest(copy) == digest
    with pytest.raises(FileNotFoundError, match="no bundle folder"):
        bundle_digest(tmp_path / "missing")


def test_bundle_digest_sees_every_file(tmp_path):
    path = _saved(tmp_path)
    digest = bundle_digest(path)
    seen = {digest}

    def changed(edit) -> str:
        copy = tmp_path / f"c{len(seen)}"
        shutil.copytree(path, copy)
        edit(copy)
        d = bundle_digest(copy)
        assert d not in seen
        seen.add(d)
        return d

    # the contact caps removed from deployment.json: loads fine, but not the same bundle
    def no_caps(p):
        meta = json.loads((p / "deployment.json").read_text())
        meta["contact"]["caps"], meta["contact"]["min_gap_h"] = [], 0
        (p / "deployment.json").write_text(json.dumps(meta, indent=2, sort_keys=True))

    changed(no_caps)
    changed(lambda p: np.savez(p / "policy" / "arrays.npz", w=np.array([{"x": 1}], dtype=object)))
    changed(lambda p: (p / ".hidden").write_text(""))  # an added (even empty, hidden) file counts
    changed(lambda p: (p / "policy" / "extra.txt").write_bytes(b"x"))
    changed(lambda p: (p / "policy" / "policy.json").rename(p / "policy" / "policy2.json"))  # renamed
    changed(lambda p: (p / "policy" / "arrays.npz").unlink())  # removed
    # the bytes of one file cannot be moved into the next one's
    a, b = tmp_path / "ab", tmp_path / "ba"
    for root, (x, y) in ((a, (b"12", b"3")), (b, (b"1", b"23"))):
        root.mkdir()
        (root / "x").write_bytes(x)
        (root / "y").write_bytes(y)
    assert bundle_digest(a) != bundle_digest(b)


# ----------------------------------------------------------------------------- bundles that carry their deployment
SMALL = {
    "deployment": {"name": "small-shop", "send_slots": ["now", 18]},
    "attributes": {
        "plan": {"type": "category", "values": ["basic", "plus"], "required": True},
        "spend": {"type": "number", "min": 0, "max": 500, "default": 0},
        "sms_opt_in": {"type": "boolean", "default": True},
    },
    "channels": {"email": {"cost": 0.01}, "sms": {"cost": 0.05, "consent": "sms_opt_in", "quiet_hours": [21, 9]}},
    "offers": {
        "welcome": {"features": {"discount": 0.1}},
        "upgrade": {"features": {"discount": 0.0}, "eligible": {"plan": ["basic"]}},
        "winback": {"features": {"discount": 0.3}, "channels": ["email"]},
    },
    "contact_policy": {"min_gap_h": 12, "caps": [{"channel": "*", "max": 2, "days": 7}]},
}


def _world(**changes):
    from nba.deployment import Deployment

    return Deployment.from_dict({**SMALL, **changes})


def _trained(deployment, name="linucb", dim=None):
    space, features = deployment.action_space(), deployment.features()
    policy = create(name, space, dim=features.dim if dim is None else dim)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, policy.dim)).astype(np.float32)
    mask = np.ones((64, space.n_actions), bool)
    d = act(policy, X, mask, np.random.default_rng(1))
    policy.update(X, d.actions, rng.normal(size=64), d.propensities)
    return policy, X, mask


def test_a_deployment_bundle_round_trips_with_its_world(tmp_path):
    world = _world()
    policy, X, mask = _trained(world)
    bundle = Bundle.of_deployment(policy, world)
    assert bundle.spec.names == world.features().names and bundle.rules == world.contact_rules()
    path = save_bundle(bundle, tmp_path / "b")
    assert {p.name for p in path.iterdir()} == {"policy", "deployment.json", "world.json"}
    saved = json.loads((path / "world.json").read_text())
    assert saved["digest"] == world.digest and saved["deployment"] == world.to_dict()
    back = load_bundle(path)
    assert back.deployment == world and back.deployment.digest == world.digest
    assert back.spec == world.features() and back.rules == world.contact_rules() and back.lifecycle == bundle.lifecycle
    np.testing.assert_array_equal(back.policy.probabilities(X, mask), policy.probabilities(X, mask))
    # a scenario bundle carries none, and saves exactly the files it always had
    scenario = load_bundle(_saved(tmp_path, "scenario"))
    assert scenario.deployment is None and not (tmp_path / "scenario" / "world.json").exists()


def _edit(path, name, edit):
    data = json.loads((path / name).read_text())
    edit(data)
    (path / name).write_text(json.dumps(data, indent=2))


def test_a_deployment_bundle_is_checked_on_load(tmp_path):
    world = _world()
    policy, _, _ = _trained(world)
    saved = save_bundle(Bundle.of_deployment(policy, world), tmp_path / "b")

    def copy(name):
        return shutil.copytree(saved, tmp_path / name)

    # the recorded digest tampered with, or the content edited under it
    p = copy("digest")
    _edit(p, "world.json", lambda w: w.update(digest="sha256:" + "0" * 64))
    with pytest.raises(ValueError, match="^world.json: digest: recorded 'sha256:000"):
        load_bundle(p)
    p = copy("content")
    _edit(p, "world.json", lambda w: w["deployment"]["channels"]["email"].update(cost=0.02))
    with pytest.raises(ValueError, match="^world.json: digest: .* the content gives"):
        load_bundle(p)
    p = copy("invalid")
    _edit(p, "world.json", lambda w: w["deployment"]["channels"]["email"].update(cost=-1))
    with pytest.raises(ValueError, match="^world.json: deployment.channels.email.cost"):
        load_bundle(p)
    # a policy on another action space (one offer fewer), or reading another number of features
    p = copy("space")
    fewer = _world(offers={k: v for k, v in SMALL["offers"].items() if k != "winback"})
    shutil.rmtree(p / "policy")
    save(_trained(fewer)[0], p / "policy")
    with pytest.raises(ValueError, match="^policy.json: space: the policy decides over 9 actions"):
        load_bundle(p)
    p = copy("dim")
    shutil.rmtree(p / "policy")
    save(_trained(world, dim=world.features().dim + 1)[0], p / "policy")
    with pytest.raises(ValueError, match=r"^policy.json: dim: the policy reads \d+ features"):
        load_bundle(p)
    # the order of the attributes numbers the features: the digest sees it
    p = copy("order")

    def reverse(w):
        w["deployment"]["attributes"] = dict(reversed(w["deployment"]["attributes"].items()))

    _edit(p, "world.json", reverse)
    with pytest.raises(ValueError, match="^world.json: digest"):
        load_bundle(p)
    p = copy("names")
    _edit(p, "deployment.json", lambda m: m["features"].update(names=m["features"]["names"][::-1]))
    with pytest.raises(ValueError, match="^deployment.json: features.names"):
        load_bundle(p)
    p = copy("contact")
    _edit(p, "deployment.json", lambda m: m["contact"].update(min_gap_h=0))
    with pytest.raises(ValueError, match="^deployment.json: contact"):
        load_bundle(p)
    p = copy("no-world")
    (p / "world.json").unlink()
    with pytest.raises(FileNotFoundError, match="world.json missing"):
        load_bundle(p)
    assert load_bundle(copy("untouched")).deployment == world


def test_a_deployment_bundle_is_checked_when_built():
    world = _world()
    fewer = _world(offers={k: v for k, v in SMALL["offers"].items() if k != "winback"})
    with pytest.raises(ValueError, match="^policy: space"):
        Bundle.of_deployment(create("uniform_random", fewer.action_space()), world)
    with pytest.raises(ValueError, match="^policy: dim"):
        Bundle.of_deployment(create("lints", world.action_space(), dim=3), world)
    sc = Scenario.default()
    policy = create("no_contact", world.action_space())
    with pytest.raises(ValueError, match="^spec: "):
        Bundle(policy, sc.feature_spec, sc.lifecycle, world.contact_rules(), world)
    with pytest.raises(ValueError, match="^rules: "):
        Bundle(policy, world.features(), sc.lifecycle, sc.contact, world)
    assert Bundle.of_deployment(policy, world).deployment is world
