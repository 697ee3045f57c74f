"""The policies the service serves: ``@champion`` (and ``@challenger``) from the MLflow registry.

A :class:`ModelStore` resolves each alias to a version, downloads that version's deployment bundle
into a local cache (``<cache>/<model>/v<version>/bundle``), loads it, and swaps it in by replacing
one dictionary: a request takes the dictionary once and keeps the versions it started with, so a
swap never fails or mixes a request. A background thread polls the registry for alias moves.

When the registry cannot be reached, the store loads the version each alias last pointed to from
the cache (``<cache>/<model>/<alias>.json``); with neither, the service is not ready.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from nba.serialization import Bundle, load_bundle

log = logging.getLogger("nba.serving")


@dataclass(frozen=True)
class Served:
    """One loaded registry version."""

    alias: str
    version: str
    bundle: Bundle
    source: str  # "registry" or "cache"


class ModelStore:
    """Loads and hot-swaps the aliased policy versions (see the module docstring)."""

    def __init__(self, tracking_uri: str, model_name: str, aliases: tuple[str, ...], cache_dir: Path,
                 poll_s: float = 10.0) -> None:
        self.tracking_uri, self.model_name, self.aliases = tracking_uri, model_name, aliases
        self.cache = Path(cache_dir) / model_name
        self.poll_s = poll_s
        self.served: dict[str, Served] = {}  # replaced whole, never mutated
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = None
        self._refresh_lock = threading.Lock()

    # ------------------------------------------------------------------ registry access
    def _mlflow(self):
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

    def _registry_version(self, alias: str) -> str | None:
        """The version ``alias`` points at; None when the alias is not set. Raises when unreachable."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self._mlflow().get_model_version_by_alias(self.model_name, alias).version)
        except MlflowException as e:
            if getattr(e, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def _download(self, version: str) -> Path:
        """The cached bundle folder of ``version``, downloaded once (atomic rename into the cache)."""
        import mlflow

        target = self.cache / f"v{version}" / "bundle"
        if (target / "deployment.json").exists():
            return target
        self.cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.cache) as tmp:
            local = Path(mlflow.artifacts.download_artifacts(
                f"models:/{self.model_name}/{version}", dst_path=tmp, tracking_uri=self.tracking_uri))
            src = local / "artifacts" / "bundle"
            if not (src / "deployment.json").exists():
                raise FileNotFoundError(f"version {version}: no artifacts/bundle in the registered model")
            staged = Path(tmp) / "staged"
            shutil.copytree(src, staged)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(staged, target)
            except OSError:  # another worker got there first
                if not (target / "deployment.json").exists():
                    raise
        return target

    def _pointer(self, alias: str) -> Path:
        return self.cache / f"{alias}.json"

    def _remember(self, alias: str, version: str) -> None:
        tmp = self._pointer(alias).with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": version, "at": time.time()}))
        os.replace(tmp, self._pointer(alias))

    # ------------------------------------------------------------------ loading
    def refresh(self) -> bool:
        """Bring every alias up to date with the registry; True when it answered. Never raises."""
        with self._refresh_lock:
            try:
                wanted = {alias: self._registry_version(alias) for alias in self.aliases}
            except Exception as e:  # unreachable registry: keep serving what we have
                self.last_error = f"registry unreachable: {type(e).__name__}: {e}"
                log.warning("%s", self.last_error)
                return False
            served = dict(self.served)
            for alias, version in wanted.items():
                current = served.get(alias)
                if version is None:
                    if current is not None:
                        log.warning("alias %s removed from the registry: no longer served", alias)
                        served.pop(alias)
                    continue
                if current is not None and current.version == version:
                    continue
                try:
                    bundle = load_bundle(self._download(version))
                except Exception as e:
                    self.last_error = f"{alias} version {version}: {type(e).__name__}: {e}"
                    log.error("cannot load %s", self.last_error)
                    continue
                served[alias] = Served(alias, version, bundle, "registry")
                self._remember(alias, version)
                log.info("serving %s@%s = version %s (%s)", self.model_name, alias, version, bundle.policy.name)
            self.served = served  # one assignment: requests see the old or the new dictionary, never half
            return True

    def load_cached(self) -> None:
        """Serve the versions the aliases last pointed to, from the local cache (registry unreachable)."""
        served = dict(self.served)
        for alias in self.aliases:
            if alias in served or not self._pointer(alias).exists():
                continue
            try:
                version = str(json.loads(self._pointer(alias).read_text())["version"])
                bundle = load_bundle(self.cache / f"v{version}" / "bundle")
            except Exception as e:
                log.error("cached %s unusable: %s: %s", alias, type(e).__name__, e)
                continue
            served[alias] = Served(alias, version, bundle, "cache")
            log.warning("registry unreachable: serving %s version %s from the local cache", alias, version)
        self.served = served

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
            if not self.refresh() and not self.served:
                self.load_cached()
            after = {a: s.version for a, s in self.served.items()}
            if before != after:
                log.info("registry poll: now serving %s", after)

    def stop(self) -> None:
        self._stop.set()

    @property
    def ready(self) -> bool:
        return "champion" in self.served
