"""Saving and loading policies in a safe format: JSON, NumPy arrays and LightGBM text, never pickle.

A saved policy is a folder::

    policy.json        {"format": 1, "policy": name, "space": {...}, "params": {...}}
    arrays.npz         NumPy arrays (loaded with allow_pickle=False)
    <key>.lgb.txt      LightGBM models as text

A deployment bundle (:func:`save_bundle`) is such a folder under ``policy/`` beside a
``deployment.json`` holding the feature layout, lifecycle thresholds and contact policy.

Loading reads data only: no code in the folder is ever run. :func:`bundle_digest` fingerprints a
saved folder (every file's relative path and bytes), so a copy can be checked against the digest
recorded when it was registered.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nba.actions import ActionSpace
from nba.eligibility import ContactRules
from nba.features import FeatureSpec, LifecycleRules
from nba.policies.base import Policy

FORMAT = 1
DIGEST_ALGORITHM = "sha256"


def space_to_dict(space: ActionSpace) -> dict[str, Any]:
    return {"channels": list(space.channels), "contents": list(space.contents), "send_slots": list(space.send_slots)}


def space_from_dict(d: dict[str, Any]) -> ActionSpace:
    return ActionSpace(tuple(d["channels"]), tuple(d["contents"]), tuple(d["send_slots"]))


def save(policy: Policy, path: str | Path) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    params, arrays, models = policy.get_state()
    meta = {"format": FORMAT, "policy": policy.name, "space": space_to_dict(policy.space), "params": params,
            "models": sorted(models)}
    (path / "policy.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    np.savez(path / "arrays.npz", **arrays)
    for key, text in models.items():
        (path / f"{key}.lgb.txt").write_text(text)
    return path


def load(path: str | Path) -> Policy:
    from nba.policies import POLICIES

    path = Path(path)
    meta_file = path / "policy.json"
    if not meta_file.exists():
        raise FileNotFoundError(f"path: no saved policy at {str(path)!r} (policy.json missing)")
    meta = json.loads(meta_file.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"policy.json: unsupported format {meta.get('format')!r}")
    name = meta.get("policy")
    if name not in POLICIES:
        raise ValueError(f"policy.json: unknown policy {name!r}; valid: {sorted(POLICIES)}")
    with np.load(path / "arrays.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    models = {k: (path / f"{k}.lgb.txt").read_text() for k in meta.get("models", [])}
    return POLICIES[name].from_state(space_from_dict(meta["space"]), meta["params"], arrays, models)


# ----------------------------------------------------------------------------- deployment bundles
@dataclass(frozen=True)
class Bundle:
    """Everything a decision service needs beside the decision log: the policy and the rules it
    was trained under (features, lifecycle thresholds, contact policy)."""

    policy: Policy
    spec: FeatureSpec
    lifecycle: LifecycleRules
    rules: ContactRules


def save_bundle(bundle: Bundle, path: str | Path) -> Path:
    """A folder ``policy/`` (see :func:`save`) plus ``deployment.json``."""
    path = Path(path)
    save(bundle.policy, path / "policy")
    spec = bundle.spec
    meta = {
        "format": FORMAT,
        "features": {"segments": list(spec.segments), "channels": list(spec.channels),
                     "recency_scale_h": spec.recency_scale_h, "names": list(spec.names)},
        "lifecycle": asdict(bundle.lifecycle),
        "contact": bundle.rules.to_dict(),
    }
    (path / "deployment.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return path


def load_bundle(path: str | Path) -> Bundle:
    path = Path(path)
    meta_file = path / "deployment.json"
    if not meta_file.exists():
        raise FileNotFoundError(f"path: no deployment bundle at {str(path)!r} (deployment.json missing)")
    meta = json.loads(meta_file.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"deployment.json: unsupported format {meta.get('format')!r}")
    f = meta["features"]
    spec = FeatureSpec(tuple(f["segments"]), tuple(f["channels"]), float(f["recency_scale_h"]))
    if list(spec.names) != f["names"]:
        raise ValueError("deployment.json: features.names do not match this version's feature layout")
    policy = load(path / "policy")
    if tuple(policy.space.channels) != spec.channels:
        raise ValueError("deployment.json: features.channels differ from the policy's channels")
    return Bundle(policy, spec, LifecycleRules(**meta["lifecycle"]), ContactRules.from_dict(meta["contact"]))


def bundle_digest(path: str | Path) -> str:
    """``"sha256:<hex>"`` over every file under ``path``: the sorted relative paths (POSIX form) and
    their bytes. Modification times, permissions and empty folders do not count; any added, removed,
    renamed or edited file does.

    Each file contributes ``<relative path> NUL <size> NUL <bytes>``, so no two different folders
    can give the same stream.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"path: no bundle folder at {str(root)!r}")
    files = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        files += [Path(folder, n) for n in names]
    h = hashlib.new(DIGEST_ALGORITHM)
    for rel, file in sorted((f.relative_to(root).as_posix(), f) for f in files):
        data = file.read_bytes()
        h.update(rel.encode("utf-8") + b"\0" + str(len(data)).encode("ascii") + b"\0")
        h.update(data)
    return f"{DIGEST_ALGORITHM}:{h.hexdigest()}"
