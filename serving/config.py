"""The decision service's configuration, read from environment variables (nothing else).

=========================  =====================================================================
``NBA_TRACKING_URI``       MLflow tracking/registry URI (default: ``MLFLOW_TRACKING_URI``, else
                           ``sqlite:///nba-runs/mlflow.db``, the embedded store of ``training/``)
``NBA_MODEL_NAME``         registered model name (default ``nba-policy``)
``NBA_LOG_URL``            decision log URL (default ``sqlite:///nba-runs/decisions.db``; PostgreSQL:
                           ``postgresql+psycopg://user@host:5432/db``)
``NBA_EXPERIMENT``         A/B experiment name; empty (default) serves ``@champion`` to everyone
``NBA_SPLITS``             arm shares when an experiment is set, ``champion=0.9,challenger=0.1``
                           (default ``champion=0.5,challenger=0.5``)
``NBA_TOKEN``              bearer token; when set, every decide/feedback call needs
                           ``Authorization: Bearer <token>`` (401 otherwise, nothing logged)
``NBA_TOKEN_SCOPE``        ``api`` (default): the token guards decide and feedback; ``all``: every path
                           but the probes (``/livez``, ``/healthz``, ``/readyz``), metrics and docs too
``NBA_POLL_S``             seconds between registry polls for alias moves (default 10; 0 = never)
``NBA_CACHE_DIR``          local copy of the last good bundles (default ``nba-runs/serving-cache``)
``NBA_HISTORY_DAYS``       days of a customer's log history read for features (default 90)
``NBA_CHANNEL_COSTS``      cost of one send per channel, ``sms=0.05,direct_mail=1`` (default 0)
``NBA_SEED``               seed of the service's random generator (default: fresh entropy)
``NBA_WORKERS``            BentoML worker processes (default 1)
``NBA_SPOOL_DIR``          write-behind mode: acknowledge decisions once fsynced in a local spool in this
                           directory, write them to the log in the background, keep history in memory;
                           one deciding process per log (refused with ``NBA_WORKERS`` > 1); default off
``NBA_CACHE_CUSTOMERS``    write-behind mode: customers whose history is kept in memory (default 200000)
``NBA_FEEDBACK_WAIT_S``    write-behind mode: longest a feedback call waits for its decision to reach the
                           log from the spool before a 503 (default 5; a failing log answers at once)
``NBA_GATHER_MS``          longest a batch waits for more requests once it has its first, while fewer
                           wait than the previous batch held (default 2; 0 = decide what waits at once)
``NBA_DEPLOYMENT``         a deployment file (TOML/YAML, :mod:`nba.deployment`): serve only policies of that
                           deployment (same digest); default: the world of the first version loaded
=========================  =====================================================================
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SPLITS = "champion=0.5,challenger=0.5"
ALIASES = ("champion", "challenger")


def _parse_pairs(name: str, raw: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        key, sep, value = part.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or not key.strip() or not math.isfinite(number) or number < 0:
            raise ValueError(f"{name}: expected comma-separated key=number pairs (number >= 0), got {part!r}")
        out[key.strip()] = number
    return out


@dataclass(frozen=True)
class Settings:
    """Everything the service is configured with; see the module docstring for the variables."""

    tracking_uri: str = "sqlite:///nba-runs/mlflow.db"
    model_name: str = "nba-policy"
    log_url: str = "sqlite:///nba-runs/decisions.db"
    experiment: str = ""
    splits: dict[str, float] = field(default_factory=lambda: _parse_pairs("NBA_SPLITS", DEFAULT_SPLITS))
    token: str = ""
    token_everywhere: bool = False
    poll_s: float = 10.0
    cache_dir: Path = Path("nba-runs/serving-cache")
    history_days: float = 90.0
    channel_costs: dict[str, float] = field(default_factory=dict)
    seed: int | None = None
    workers: int = 1
    spool_dir: Path | None = None
    cache_customers: int = 200_000
    gather_ms: float = 2.0
    feedback_wait_s: float = 5.0
    deployment: Path | None = None

    def __post_init__(self) -> None:
        if self.experiment:
            unknown = sorted(set(self.splits) - set(ALIASES))
            if unknown:
                raise ValueError(f"NBA_SPLITS: unknown arm(s) {unknown}; valid: {list(ALIASES)}")
            if sum(self.splits.values()) <= 0:
                raise ValueError("NBA_SPLITS: the shares must not all be 0")
        if not (math.isfinite(self.poll_s) and self.poll_s >= 0):
            raise ValueError(f"NBA_POLL_S: must be a number of seconds >= 0, got {self.poll_s!r}")
        if not (math.isfinite(self.history_days) and self.history_days > 0):
            raise ValueError(f"NBA_HISTORY_DAYS: must be a positive number of days, got {self.history_days!r}")
        if self.workers < 1:
            raise ValueError(f"NBA_WORKERS: must be >= 1, got {self.workers!r}")
        if self.spool_dir is not None and self.workers > 1:
            raise ValueError(
                "NBA_SPOOL_DIR: write-behind needs one deciding process per log; "
                f"got NBA_WORKERS={self.workers} (unset NBA_SPOOL_DIR to run several workers)"
            )
        if self.cache_customers < 1:
            raise ValueError(f"NBA_CACHE_CUSTOMERS: must be >= 1, got {self.cache_customers!r}")
        if not (math.isfinite(self.feedback_wait_s) and 0 <= self.feedback_wait_s <= 50):
            raise ValueError(f"NBA_FEEDBACK_WAIT_S: must be seconds in [0, 50], got {self.feedback_wait_s!r}")
        if not (math.isfinite(self.gather_ms) and 0 <= self.gather_ms <= 1000):
            raise ValueError(f"NBA_GATHER_MS: must be milliseconds in [0, 1000], got {self.gather_ms!r}")

    @property
    def aliases(self) -> tuple[str, ...]:
        """Registry aliases the service loads: the champion, and the challenger during an experiment."""
        if self.experiment and self.splits.get("challenger", 0) > 0:
            return ALIASES
        return ALIASES[:1]

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Settings from ``env`` (default ``os.environ``); a bad value raises ValueError naming the variable."""
        env = dict(os.environ if env is None else env)

        def number(name: str, default: float) -> float:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                return float(raw)
            except ValueError:
                raise ValueError(f"{name}: expected a number, got {raw!r}") from None

        seed = env.get("NBA_SEED", "").strip()
        if seed and not seed.lstrip("-").isdigit():
            raise ValueError(f"NBA_SEED: expected an integer, got {seed!r}")
        workers = number("NBA_WORKERS", 1)
        if workers != int(workers):
            raise ValueError(f"NBA_WORKERS: expected an integer, got {workers!r}")
        cache = number("NBA_CACHE_CUSTOMERS", cls.cache_customers)
        if cache != int(cache):
            raise ValueError(f"NBA_CACHE_CUSTOMERS: expected an integer, got {cache!r}")
        spool = env.get("NBA_SPOOL_DIR", "").strip()
        scope = env.get("NBA_TOKEN_SCOPE", "api").strip().lower() or "api"
        if scope not in ("api", "all"):
            raise ValueError(f"NBA_TOKEN_SCOPE: expected 'api' or 'all', got {scope!r}")
        return cls(
            tracking_uri=env.get("NBA_TRACKING_URI") or env.get("MLFLOW_TRACKING_URI") or cls.tracking_uri,
            model_name=env.get("NBA_MODEL_NAME") or cls.model_name,
            log_url=env.get("NBA_LOG_URL") or cls.log_url,
            experiment=env.get("NBA_EXPERIMENT", "").strip(),
            splits=_parse_pairs("NBA_SPLITS", env.get("NBA_SPLITS") or DEFAULT_SPLITS),
            token=env.get("NBA_TOKEN", ""),
            token_everywhere=scope == "all",
            poll_s=number("NBA_POLL_S", cls.poll_s),
            cache_dir=Path(env.get("NBA_CACHE_DIR") or cls.cache_dir),
            history_days=number("NBA_HISTORY_DAYS", cls.history_days),
            channel_costs=_parse_pairs("NBA_CHANNEL_COSTS", env.get("NBA_CHANNEL_COSTS", "")),
            seed=int(seed) if seed else None,
            workers=int(workers),
            spool_dir=Path(spool) if spool else None,
            deployment=Path(env["NBA_DEPLOYMENT"].strip()) if env.get("NBA_DEPLOYMENT", "").strip() else None,
            cache_customers=int(cache),
            gather_ms=number("NBA_GATHER_MS", cls.gather_ms),
            feedback_wait_s=number("NBA_FEEDBACK_WAIT_S", cls.feedback_wait_s),
        )
