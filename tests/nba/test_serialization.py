"""Deployment bundles: policy plus the rules it runs under, round-tripped without pickle."""

import json
import os
import shutil

import numpy as np
import pytest

from envs.scenario import Scenario
from nba.policies import act, create
from nba.serialization import Bundle, bundle_digest, load_bundle, save_bundle


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
