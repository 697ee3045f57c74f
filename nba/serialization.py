"""Saving and loading policies in a safe format: JSON, NumPy arrays and LightGBM text, never pickle.

A saved policy is a folder::

    policy.json        {"format": 1, "policy": name, "space": {...}, "params": {...}}
    arrays.npz         NumPy arrays (loaded with allow_pickle=False)
    <key>.lgb.txt      LightGBM models as text

A deployment bundle (:func:`save_bundle`) is such a folder under ``policy/`` beside a
``deployment.json`` holding the feature layout, lifecycle thresholds and contact policy.

A bundle comes in two kinds, told apart by :attr:`Bundle.deployment` (``None`` or not):

* a **scenario** bundle: a policy trained in the simulator's world (or on a log of it); ``spec`` is the
  scenario's :class:`~nba.features.FeatureSpec`, ``lifecycle`` and ``rules`` its thresholds and contact
  policy. Its folder is ``policy/`` and ``deployment.json``, as it has always been;
* a **deployment** bundle (:meth:`Bundle.of_deployment`): a policy trained on a brand's own log imported
  onto its deployment (:mod:`nba.deployment`), decided for with :func:`nba.decide.decide`. The
  deployment is the source of truth and the other fields are derived from it: ``spec`` is
  ``deployment.features()`` (:class:`~nba.features.AttributeFeatures`: the names and ``dim`` of what
  the policy sees), ``rules`` is ``deployment.contact_rules()`` (channel and overall caps, quiet hours,
  minimum gap; the per-offer caps, offer rules and consent are the deployment's own, applied by
  :meth:`~nba.deployment.Deployment.eligibility`) and ``lifecycle`` the default
  :class:`~nba.features.LifecycleRules` (a deployment declares no lifecycle; nothing reads it for
  this kind). Its folder adds ``world.json``::

      world.json         {"format": 1, "digest": "sha256:<hex>", "deployment": {...}}

  the deployment's canonical content (:meth:`~nba.deployment.Deployment.to_dict`, in declaration
  order, which is the order of the features and actions, and which the digest sees) and its digest;
  ``deployment.json`` then holds ``{"features": {"layout": "deployment", "names": [...],
  "recency_scale_h": ...}, "lifecycle": ..., "contact": ...}``. :func:`load_bundle` checks that the
  digest recomputed from the content is the one recorded, that the policy decides over the
  deployment's action space and reads its number of features, and that the feature names and
  contact policy written beside them are the deployment's (ValueError naming the field).

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
from typing import TYPE_CHECKING, Any

import numpy as np

from nba.actions import ActionSpace
from nba.eligibility import ContactRules
from nba.features import AttributeFeatures, FeatureSpec, LifecycleRules
from nba.policies.base import Policy

if TYPE_CHECKING:
    from nba.deployment import Deployment

FORMAT = 1
DIGEST_ALGORITHM = "sha256"
WORLD_FILE = "world.json"  # a deployment bundle's deployment: canonical content and digest
DEPLOYMENT_LAYOUT = "deployment"  # deployment.json features.layout of a deployment bundle


def space_to_dict(space: ActionSpace) -> dict[str, Any]:
    """An action space as JSON: its channels, contents and send slots as lists."""
    return {"channels": list(space.channels), "contents": list(space.contents), "send_slots": list(space.send_slots)}


def space_from_dict(d: dict[str, Any]) -> ActionSpace:
    """The action space :func:`space_to_dict` wrote."""
    return ActionSpace(tuple(d["channels"]), tuple(d["contents"]), tuple(d["send_slots"]))


def save(policy: Policy, path: str | Path) -> Path:
    """Write ``policy`` to the folder ``path`` (created if needed; see the module's layout) and return it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    params, arrays, models = policy.get_state()
    meta = {
        "format": FORMAT,
        "policy": policy.name,
        "space": space_to_dict(policy.space),
        "params": params,
        "models": sorted(models),
    }
    (path / "policy.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    np.savez(path / "arrays.npz", **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
    for key, text in models.items():
        (path / f"{key}.lgb.txt").write_text(text)
    return path


def load(path: str | Path) -> Policy:
    """The policy :func:`save` wrote to the folder ``path``; raises on a missing, unknown or foreign format."""
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
    was trained under (features, lifecycle thresholds, contact policy).

    ``deployment``: ``None`` for a scenario bundle; the brand's deployment for a deployment bundle
    (build it with :meth:`of_deployment`; see the module's docstring for what the other fields hold).
    A deployment bundle whose policy does not decide over the deployment's actions or read its
    features is refused (ValueError naming ``space``, ``dim``, ``spec`` or ``rules``).
    """

    policy: Policy
    spec: FeatureSpec | AttributeFeatures
    lifecycle: LifecycleRules
    rules: ContactRules
    deployment: Deployment | None = None

    def __post_init__(self) -> None:
        if isinstance(self.spec, AttributeFeatures) and self.deployment is None:
            raise ValueError("deployment: a bundle that reads a deployment's attributes carries that deployment")
        if self.deployment is not None:
            from nba.decide import check_world

            check_world(self.policy, self.deployment, "policy")
            if tuple(self.spec.names) != tuple(self.deployment.features().names):
                raise ValueError(f"spec: the feature names are not those of the deployment {self.deployment.name!r}")
            if self.rules != self.deployment.contact_rules():
                raise ValueError(f"rules: not the contact policy of the deployment {self.deployment.name!r}")

    @classmethod
    def of_deployment(cls, policy: Policy, deployment: Deployment) -> Bundle:
        """A deployment bundle: ``policy`` on ``deployment``'s actions and features, the rest derived."""
        return cls(policy, deployment.features(), LifecycleRules(), deployment.contact_rules(), deployment)


def save_bundle(bundle: Bundle, path: str | Path) -> Path:
    """A folder ``policy/`` (see :func:`save`) plus ``deployment.json``, and ``world.json`` for a
    deployment bundle."""
    path = Path(path)
    save(bundle.policy, path / "policy")
    spec = bundle.spec
    if not isinstance(spec, AttributeFeatures):
        features = {
            "segments": list(spec.segments),
            "channels": list(spec.channels),
            "recency_scale_h": spec.recency_scale_h,
            "names": list(spec.names),
        }
    else:
        d = bundle.deployment
        assert d is not None  # Bundle.__post_init__: a deployment's features come with their deployment
        features = {"layout": DEPLOYMENT_LAYOUT, "names": list(spec.names), "recency_scale_h": spec.recency_scale_h}
        world = {"format": FORMAT, "digest": d.digest, "deployment": d.to_dict()}
        # not sort_keys: the order of attributes, channels and offers is the order of the features and actions
        (path / WORLD_FILE).write_text(json.dumps(world, indent=2))
    meta = {
        "format": FORMAT,
        "features": features,
        "lifecycle": asdict(bundle.lifecycle),
        "contact": bundle.rules.to_dict(),
    }
    (path / "deployment.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return path


def load_bundle(path: str | Path) -> Bundle:
    """The bundle saved at ``path``: a deployment bundle when ``world.json`` is there (checked: see the
    module's docstring), else a scenario bundle. ValueError naming the file and field otherwise."""
    path = Path(path)
    meta_file = path / "deployment.json"
    if not meta_file.exists():
        raise FileNotFoundError(f"path: no deployment bundle at {str(path)!r} (deployment.json missing)")
    meta = json.loads(meta_file.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"deployment.json: unsupported format {meta.get('format')!r}")
    f = meta["features"]
    world_file = path / WORLD_FILE
    if world_file.exists() or f.get("layout") == DEPLOYMENT_LAYOUT:
        return _load_deployment_bundle(path, meta)
    spec = FeatureSpec(tuple(f["segments"]), tuple(f["channels"]), float(f["recency_scale_h"]))
    if list(spec.names) != f["names"]:
        raise ValueError("deployment.json: features.names do not match this version's feature layout")
    policy = load(path / "policy")
    if tuple(policy.space.channels) != spec.channels:
        raise ValueError("deployment.json: features.channels differ from the policy's channels")
    return Bundle(policy, spec, LifecycleRules(**meta["lifecycle"]), ContactRules.from_dict(meta["contact"]))


def _load_deployment_bundle(path: Path, meta: dict[str, Any]) -> Bundle:
    from nba.deployment import Deployment

    world_file = path / WORLD_FILE
    if not world_file.exists():
        raise FileNotFoundError(
            f"path: {WORLD_FILE} missing beside a deployment bundle's deployment.json at {str(path)!r}"
        )
    if meta["features"].get("layout") != DEPLOYMENT_LAYOUT:
        raise ValueError(
            f"deployment.json: features.layout: expected {DEPLOYMENT_LAYOUT!r} beside {WORLD_FILE}, "
            f"got {meta['features'].get('layout')!r}"
        )
    world = json.loads(world_file.read_text())
    if world.get("format") != FORMAT:
        raise ValueError(f"{WORLD_FILE}: unsupported format {world.get('format')!r}")
    try:
        deployment = Deployment.from_dict(world["deployment"])
    except KeyError:
        raise ValueError(f"{WORLD_FILE}: deployment: missing") from None
    except ValueError as e:  # nba.deployment.DeploymentError, naming the field
        raise ValueError(f"{WORLD_FILE}: deployment.{e}") from None
    if deployment.digest != world.get("digest"):
        raise ValueError(
            f"{WORLD_FILE}: digest: recorded {world.get('digest')!r}, but the content gives "
            f"{deployment.digest!r} (edited after it was saved)"
        )
    features = deployment.features()
    if meta["features"].get("names") != list(features.names):
        raise ValueError(
            "deployment.json: features.names are not the deployment's features in this version "
            "(nba.features.AttributeFeatures)"
        )
    rules = ContactRules.from_dict(meta["contact"])
    if rules != deployment.contact_rules():
        raise ValueError(f"deployment.json: contact: not the contact policy of the deployment {deployment.name!r}")
    policy = load(path / "policy")
    from nba.decide import check_world

    check_world(policy, deployment, "policy.json")
    return Bundle(policy, features, LifecycleRules(**meta["lifecycle"]), rules, deployment)


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
