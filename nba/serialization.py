"""Saving and loading policies in a safe format: JSON, NumPy arrays and LightGBM text, never pickle.

A saved policy is a folder::

    policy.json        {"format": 1, "policy": name, "space": {...}, "params": {...}}
    arrays.npz         NumPy arrays (loaded with allow_pickle=False)
    <key>.lgb.txt      LightGBM models as text

Loading reads data only: no code in the folder is ever run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from nba.actions import ActionSpace
from nba.policies.base import Policy

FORMAT = 1


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
