"""The policies the service serves: ``@champion`` (and ``@challenger``) from the MLflow registry.

A :class:`ModelStore` resolves each alias to a version, downloads that version's deployment bundle
into a local cache (``<cache>/<model>/v<version>/bundle``), loads it, and swaps it in by replacing
one dictionary: a request takes the dictionary once and keeps the versions it started with, so a
swap never fails or mixes a request. A background thread polls the registry for alias moves.

Every copy is checked before it is loaded: against the version's ``bundle_digest`` tag
(:data:`training.registry.DIGEST_TAG`, the :func:`nba.serialization.bundle_digest` of the folder
that was registered) when the registry answers, else against the digest remembered when the copy
was last loaded. A cached copy that fails its check or does not load is deleted and downloaded
again (once per refresh); a fresh download that still fails is not served, and
:attr:`ModelStore.problems` says why.

When the registry cannot be reached, the store loads the version each alias last pointed to from
the cache: the pointer ``<cache>/<model>/<alias>.json`` holds ``{"version", "digest", "at"}``; with
neither a registry nor a good cached copy, the service is not ready
(:attr:`ModelStore.not_ready_reason`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from nba.actions import ActionSpace
from nba.catalogue import Catalogue
from nba.deployment import Deployment
from nba.log.records import LogLayout
from nba.serialization import Bundle, bundle_digest, load_bundle

log = logging.getLogger("nba.serving")

CHAMPION = "champion"
DIGEST_TAG = "bundle_digest"  # the model version tag set by training.registry.log_policy (its DIGEST_TAG)


@dataclass(frozen=True)
class Served:
    """One loaded registry version."""

    alias: str
    version: str
    bundle: Bundle
    source: str  # "registry" or "cache"
    digest: str | None = None  # bundle_digest of the folder it was loaded from


class BundleRejected(Exception):
    """A bundle folder that is missing, fails its digest check or does not load; the message ends a
    sentence that starts with "cached bundle" or "downloaded bundle"."""


def _short(digest: str) -> str:
    return digest[:19] + ".." if len(digest) > 19 else digest  # "sha256:" and 12 hex digits


def _error(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}"


def difference(served: Deployment, other: Deployment) -> str:
    """What ``other`` declares differently from ``served``, in a few words a person reads."""
    a, b = served.to_dict(), other.to_dict()
    out = []
    if a["deployment"].get("name") != b["deployment"].get("name"):
        out.append(f"name {b['deployment'].get('name')!r} instead of {a['deployment'].get('name')!r}")
    for section in ("attributes", "channels", "offers"):
        mine, theirs = a[section], b[section]
        added = [k for k in theirs if k not in mine]
        removed = [k for k in mine if k not in theirs]
        changed = [k for k in theirs if k in mine and theirs[k] != mine[k]]
        moved = not (added or removed) and list(mine) != list(theirs)
        parts = [
            f"{what} {_few(keys)}"
            for what, keys in (("adds", added), ("removes", removed), ("changes", changed))
            if keys
        ]
        if moved:
            parts.append("declares them in another order")
        if parts:
            out.append(f"{section}: {', '.join(parts)}")
    if a["deployment"].get("send_slots") != b["deployment"].get("send_slots"):
        out.append(f"send_slots {b['deployment'].get('send_slots')} instead of {a['deployment'].get('send_slots')}")
    out += [f"{section} differs" for section in ("contact_policy", "reward") if a[section] != b[section]]
    return "; ".join(out) or "the same content"


def _few(keys: list[str], most: int = 5) -> str:
    shown = ", ".join(repr(k) for k in keys[:most])
    return shown + (f" and {len(keys) - most} more" if len(keys) > most else "")


@dataclass(frozen=True)
class World:
    """What every served version must share, so that one decision log holds all their decisions: the
    feature names and the action space, and for a deployment its digest.

    A version trained on another catalogue of the same deployment (offers added, retired or changed;
    the same attributes, channels and send slots) by a learner that scores offers by their features
    (:mod:`nba.catalogue`) is moved onto the served catalogue instead of being refused: its policy
    decides over the served offers, new ones included, without retraining.
    """

    features: tuple[str, ...]
    space: ActionSpace
    deployment: Deployment | None = None
    origin: str = ""  # where it comes from, for messages: "NBA_DEPLOYMENT", "version 3", "the decision log"

    @classmethod
    def of(cls, bundle: Bundle, origin: str) -> World:
        return cls(tuple(bundle.spec.names), bundle.policy.space, bundle.deployment, origin)

    def adopt(self, bundle: Bundle) -> Bundle:
        """``bundle``, or its policy moved onto this world's catalogue; BundleRejected saying why it cannot
        be served beside this world."""
        d = bundle.deployment
        if self.deployment is not None:
            if d is None:
                raise BundleRejected(
                    f"decides in the simulator's world, but the service serves the deployment "
                    f"{self.deployment.name!r} ({_short(self.deployment.digest)}, {self.origin})"
                )
            if d.digest == self.deployment.digest:
                return bundle
            moved = self._moved(bundle)
            if moved is not None:
                return moved
            raise BundleRejected(
                f"is a bundle of the deployment {d.name!r} ({_short(d.digest)}), but the service "
                f"serves {self.deployment.name!r} ({_short(self.deployment.digest)}, {self.origin}): "
                f"{difference(self.deployment, d)}"
            )
        if d is not None and self.features:
            raise BundleRejected(
                f"is a bundle of the deployment {d.name!r}, but the service serves a policy of the "
                f"simulator's world ({self.origin})"
            )
        if self.features and tuple(bundle.spec.names) != self.features:
            raise BundleRejected(
                f"reads {len(bundle.spec.names)} features, not the {len(self.features)} features of "
                f"the policy served ({self.origin}): one decision log cannot hold both"
            )
        if bundle.policy.space != self.space:
            raise BundleRejected(
                f"decides over {bundle.policy.space.n_actions} actions, not the "
                f"{self.space.n_actions} of the policy served ({self.origin}): one decision log "
                "cannot hold both"
            )
        return bundle

    def _moved(self, bundle: Bundle) -> Bundle | None:
        """``bundle`` on this world's catalogue when only the offers differ and its policy scores offers by
        their features; None otherwise."""
        d, world = bundle.deployment, self.deployment
        assert d is not None and world is not None
        if getattr(bundle.policy, "catalogue", None) is None or d.features().names != world.features().names:
            return None
        try:
            policy = bundle.policy.with_catalogue(Catalogue.of_deployment(world))
        except ValueError:  # other channels or send slots
            return None
        log.info(
            "version of catalogue %s moved onto the served catalogue %s (%s)",
            _short(d.digest),
            _short(world.digest),
            difference(world, d),
        )
        return Bundle.of_deployment(policy, world)

    @staticmethod
    def fits(layout: LogLayout | None, bundle: Bundle) -> str | None:
        """Why the decision log of ``layout`` cannot hold ``bundle``'s decisions, or None."""
        if layout is None:
            return None
        dim, actions = len(bundle.spec.names), bundle.policy.space.n_actions
        if (layout.context_dim, layout.n_actions) != (dim, actions):
            return (
                f"decides over {actions} actions with {dim} features, but the decision log holds decisions over "
                f"{layout.n_actions} actions with {layout.context_dim} features: serve it on a log of its own "
                "(NBA_LOG_URL, or NBA_LOG_NAMESPACE)"
            )
        return None


class ModelStore:
    """Loads and hot-swaps the aliased policy versions (see the module docstring).

    Every version served must decide in one world (:class:`World`): the ``deployment`` given (the
    service's ``NBA_DEPLOYMENT``), else the world of the first version loaded; and its decisions must fit
    the decision log's ``log_layout`` (features and actions), when the log holds decisions already. A
    version of another world is refused, with a message naming the difference, and the alias keeps its
    last good version.
    """

    def __init__(
        self,
        tracking_uri: str,
        model_name: str,
        aliases: tuple[str, ...],
        cache_dir: Path,
        poll_s: float = 10.0,
        deployment: Deployment | None = None,
        log_layout: LogLayout | None = None,
    ) -> None:
        self.tracking_uri, self.model_name, self.aliases = tracking_uri, model_name, aliases
        self.log_layout = log_layout  # the decision log's, when it holds decisions already
        self.world: World | None = (
            None if deployment is None else World((), deployment.action_space(), deployment, "NBA_DEPLOYMENT")
        )
        self.cache = Path(cache_dir) / model_name
        self.poll_s = poll_s
        self.served: dict[str, Served] = {}  # replaced whole, never mutated
        self.last_error: str | None = None
        # what went wrong, per alias, as sentences (replaced whole); kept while the state they describe holds
        self._problems: dict[str, tuple[str | None, list[str]]] = {}  # alias -> (version they are about, notes)
        self._registry_error: str | None = None  # set while the registry does not answer
        self._unset: frozenset[str] = frozenset()  # aliases the registry said are not set
        self._consulted = False  # the registry or the cache has been tried
        self._untagged_warned: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = None
        self._refresh_lock = threading.Lock()
        self._world_lock = threading.Lock()

    # ------------------------------------------------------------------ registry access
    def _mlflow(self):
        if self.tracking_uri.startswith("sqlite:///"):
            # MLflow would create an empty registry at a wrong path, which says no alias is set
            db = Path(self.tracking_uri.removeprefix("sqlite:///").split("?", 1)[0])
            if not db.is_file():
                raise FileNotFoundError(f"no registry database at {str(db)!r}")
        if self._client is None:
            import mlflow
            from mlflow import MlflowClient

            os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
            # an unreachable tracking server must not hold the start for minutes of retries
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
            mlflow.set_tracking_uri(self.tracking_uri)
            mlflow.set_registry_uri(self.tracking_uri)
            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    def _registry_version(self, alias: str) -> tuple[str, str | None] | None:
        """The version ``alias`` points at and its ``bundle_digest`` tag (None for a version registered
        before digests); None when the alias is not set. Raises when unreachable."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self._mlflow().get_model_version_by_alias(self.model_name, alias)
        except MlflowException as e:
            if getattr(e, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise
        return str(mv.version), (mv.tags or {}).get(DIGEST_TAG) or None

    def _folder(self, version: str) -> Path:
        return self.cache / f"v{version}" / "bundle"

    def _download(self, version: str, expected: str | None) -> Path:
        """Download ``version``'s bundle into the cache (atomic rename) and return its folder. A copy
        that does not match ``expected`` never enters the cache (BundleRejected)."""
        import mlflow

        target = self._folder(version)
        self.cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.cache, prefix=".download-") as tmp:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    f"models:/{self.model_name}/{version}",
                    dst_path=tmp,
                    tracking_uri=self.tracking_uri,
                    registry_uri=self.tracking_uri,
                )
            )
            src = local / "artifacts" / "bundle"
            if not (src / "deployment.json").exists():
                raise FileNotFoundError(f"version {version}: no artifacts/bundle in the registered model")
            if expected is not None and (got := bundle_digest(src)) != expected:
                raise BundleRejected(f"failed its digest check ({_short(got)} expected {_short(expected)})")
            staged = Path(tmp) / "staged"
            shutil.copytree(src, staged)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(staged, target)
            except OSError:  # another worker got there first (its copy is checked when loaded)
                if not target.exists():
                    raise
        return target

    def _discard(self, version: str) -> None:
        """Delete the cached ``v<version>`` folder (renamed away first, so no reader sees half of it)."""
        folder = self.cache / f"v{version}"
        doomed = self.cache / f".discarded-v{version}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(folder, doomed)
        except FileNotFoundError:
            return
        shutil.rmtree(doomed, ignore_errors=True)

    def _verified_load(self, folder: Path, expected: str | None, version: str = "") -> tuple[Bundle, str]:
        """Load ``folder`` once its digest equals ``expected`` (not checked when None); returns the
        bundle and the folder's digest. Raises BundleRejected saying what is wrong."""
        if not folder.is_dir():
            raise BundleRejected("is missing")
        try:
            digest = bundle_digest(folder)
        except OSError as e:
            raise BundleRejected(f"cannot be read: {_error(e)}") from e
        if expected is not None and digest != expected:
            raise BundleRejected(f"failed its digest check ({_short(digest)} expected {_short(expected)})")
        try:
            bundle = load_bundle(folder)
        except Exception as e:
            raise BundleRejected(f"cannot load: {_error(e)}") from e
        with self._world_lock:
            if self.world is not None:
                bundle = self.world.adopt(bundle)
            why = World.fits(self.log_layout, bundle)
            if why is not None:
                raise BundleRejected(why)
            if self.world is None:  # the first version served fixes the world
                self.world = World.of(bundle, f"version {version}" if version else "the first version loaded")
        return bundle, digest

    def _pointer(self, alias: str) -> Path:
        return self.cache / f"{alias}.json"

    def _remember(self, alias: str, version: str, digest: str | None) -> None:
        tmp = self._pointer(alias).with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": version, "digest": digest, "at": time.time()}))
        os.replace(tmp, self._pointer(alias))

    # ------------------------------------------------------------------ loading
    def _load_version(self, alias: str, version: str, expected: str | None) -> tuple[Served | None, list[str]]:
        """``version`` checked and loaded: from the cache, else (or when the cached copy fails) from a
        fresh download. Returns what to serve (None when nothing can be) and what went wrong."""
        notes: list[str] = []
        folder = self._folder(version)
        if folder.parent.exists():
            try:
                bundle, digest = self._verified_load(folder, expected, version)
                return Served(alias, version, bundle, "registry", digest), notes
            except BundleRejected as e:
                notes.append(f"{alias} version {version}: cached bundle {e}; downloaded again")
                log.error("%s", notes[-1])
                self._discard(version)
        try:
            bundle, digest = self._verified_load(self._download(version, expected), expected, version)
        except BundleRejected as e:
            self._discard(version)
            notes.append(f"{alias} version {version}: downloaded bundle {e}")
            return None, notes
        except Exception as e:
            notes.append(f"{alias} version {version}: download failed: {_error(e)}")
            return None, notes
        return Served(alias, version, bundle, "registry", digest), notes

    def refresh(self) -> bool:
        """Bring every alias up to date with the registry; True when it answered. Never raises."""
        with self._refresh_lock:
            try:
                wanted = {alias: self._registry_version(alias) for alias in self.aliases}
            except Exception as e:  # unreachable registry: keep serving what we have
                self._registry_error = _error(e)
                self._consulted = True
                self.last_error = f"registry unreachable: {self._registry_error}"
                log.warning("%s", self.last_error)
                return False
            self._registry_error, self._consulted = None, True
            self._unset = frozenset(a for a, w in wanted.items() if w is None)
            served, problems = dict(self.served), dict(self._problems)
            tried: dict[str, tuple[str, Served | None, list[str]]] = {}  # version -> (alias, outcome), this refresh
            for alias, want in wanted.items():
                current = served.get(alias)
                if want is None:
                    problems.pop(alias, None)
                    if current is not None:
                        log.warning("alias %s removed from the registry: no longer served", alias)
                        served.pop(alias)
                    continue
                version, expected = want
                if current is not None and current.version == version and expected in (None, current.digest):
                    if problems.get(alias, (version,))[0] != version:  # back on it after another version failed
                        problems.pop(alias)
                    continue
                if expected is None and version not in self._untagged_warned:
                    self._untagged_warned.add(version)
                    log.warning(
                        "%s version %s has no %s tag (registered before digests): loaded unchecked",
                        self.model_name,
                        version,
                        DIGEST_TAG,
                    )
                if version not in tried:  # aliases on the same version share one attempt
                    tried[version] = (alias, *self._load_version(alias, version, expected))
                first, new, notes = tried[version]
                notes = [n.replace(f"{first} version", f"{alias} version", 1) for n in notes]
                if new is not None:
                    served[alias] = replace(new, alias=alias)
                    problems[alias] = (version, notes)
                    self._remember(alias, version, new.digest)
                    log.info("serving %s@%s = version %s (%s)", self.model_name, alias, version, new.bundle.policy.name)
                    continue
                if current is not None and current.version != version:
                    notes[-1] += f"; still serving version {current.version}"
                else:  # nothing, or a copy of this version that does not match the registry's digest
                    served.pop(alias, None)
                    notes[-1] += "; not served"
                problems[alias] = (version, notes)
                self.last_error = notes[-1]
                log.error("%s", notes[-1])
            self.served = served  # one assignment: requests see the old or the new dictionary, never half
            self._problems = problems
            return True

    def load_cached(self) -> None:
        """Serve the versions the aliases last pointed to, from the local cache (registry unreachable),
        each checked against the digest remembered in its pointer."""
        with self._refresh_lock:
            self._load_cached()

    def _load_cached(self) -> None:
        served, problems = dict(self.served), dict(self._problems)
        why = "" if self._registry_error is None else f" (registry unreachable: {self._registry_error})"
        for alias in self.aliases:
            if alias in served:
                continue
            pointer = self._pointer(alias)
            if not pointer.exists():
                problems.pop(alias, None)
                continue
            before = problems.get(alias)
            try:
                meta = json.loads(pointer.read_text())
                version, remembered = str(meta["version"]), meta.get("digest")
            except Exception as e:
                problems[alias] = (
                    None,
                    [f"{alias}: cached pointer {pointer.name} unreadable ({_error(e)}); not served{why}"],
                )
            else:
                if remembered is None:
                    log.warning(
                        "cached %s pointer names version %s without a digest (written before digests): "
                        "loaded unchecked",
                        alias,
                        version,
                    )
                try:
                    bundle, digest = self._verified_load(self._folder(version), remembered, version)
                except BundleRejected as e:
                    problems[alias] = (version, [f"{alias} version {version}: cached bundle {e}; not served{why}"])
                else:
                    served[alias] = Served(alias, version, bundle, "cache", digest)
                    problems[alias] = (version, [])
                    log.warning("registry unreachable: serving %s version %s from the local cache", alias, version)
                    continue
            if problems[alias] != before:
                self.last_error = problems[alias][1][-1]
                log.error("%s", self.last_error)
        self._consulted = True
        self.served = served
        self._problems = problems

    def start(self) -> None:
        """Load at start (registry, else cache) and begin polling when ``poll_s`` > 0."""
        if not self.refresh():
            self.load_cached()
        if self.poll_s > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._poll, name="nba-registry-poll", daemon=True)
            self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            before = {a: s.version for a, s in self.served.items()}
            if not self.refresh() and any(a not in self.served for a in self.aliases):
                self.load_cached()
            after = {a: s.version for a, s in self.served.items()}
            if before != after:
                log.info("registry poll: now serving %s", after)

    def stop(self) -> None:
        self._stop.set()

    @property
    def ready(self) -> bool:
        return CHAMPION in self.served

    def _alias_problems(self, alias: str) -> list[str]:
        notes = list(self._problems.get(alias, (None, []))[1])
        served = self.served.get(alias)
        if self._registry_error is not None:
            if served is not None:
                where = "the local cache" if served.source == "cache" else "the copy loaded before"
                notes.append(
                    f"{alias}: registry unreachable ({self._registry_error}); serving version "
                    f"{served.version} from {where}"
                )
            elif not notes:
                notes.append(f"{alias}: registry unreachable ({self._registry_error}) and no cached copy")
        elif served is None and not notes:
            if not self._consulted:
                notes.append(f"{alias}: not loaded yet")
            elif alias in self._unset and alias == CHAMPION:  # an unset challenger is no experiment, not a fault
                notes.append(f"{alias}: no version of {self.model_name} has this alias in the registry")
        return notes

    @property
    def problems(self) -> list[str]:
        """What is wrong, as plain sentences: empty when every alias the registry sets is served and
        nothing failed. Non-empty while ready too (a copy downloaded again, the registry down while a
        cached copy serves)."""
        return [p for alias in self.aliases for p in self._alias_problems(alias)]

    @property
    def not_ready_reason(self) -> str | None:
        """None when the champion is served, else the sentence that says why not."""
        if self.ready:
            return None
        notes = self._alias_problems(CHAMPION)
        return notes[-1] if notes else f"{CHAMPION}: not loaded"
