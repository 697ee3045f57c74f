"""``nba import``: a decision log kept elsewhere (CSV or Parquet) into a decision log.

The body of the command, apart from its options: :func:`import_command` opens the log, maps the
columns (:class:`nba.log.importer.ColumnMapping`) and imports the file all or nothing;
:func:`describe` says what happened in a few lines a person reads. Bad input raises
:class:`training.jobs.JobError` whose message names the row and the column.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from nba.log.importer import ESTIMATED_SUFFIX, ColumnMapping, ImportResult, import_file
from nba.log.store import DecisionLog


def import_command(path: str | Path, log_url: str, *, action: str, propensity: str | None = None,
                   context: Sequence[str] = (), categorical: Sequence[str] = (), hashed: Sequence[str] = (),
                   hash_buckets: int = 64, time: str | None = None, time_default: float | None = None,
                   reward: str | None = None, decision_id: str | None = None, customer_id: str | None = None,
                   send_at: str | None = None, position: str | None = None, n_actions: int | None = None,
                   propensity_by: Sequence[str] = (), policy: str = "imported",
                   format: str | None = None) -> ImportResult:
    """Import the file at ``path`` into the decision log at ``log_url`` (created if new).

    ``n_actions``: default the log's, or else the file's largest action + 1. Without ``time``, every row
    is decided at ``time_default`` (hours since the epoch); without ``propensity``, the propensities are
    estimated from the file, by the groups of ``propensity_by``. The other arguments are the columns
    of :class:`~nba.log.importer.ColumnMapping`. Raises :class:`training.jobs.JobError` on bad input
    (nothing imported).
    """
    from training.jobs import JobError

    try:
        mapping = ColumnMapping(
            context=tuple(context), action=action, propensity=propensity, n_actions=n_actions, time=time,
            reward=reward, decision_id=decision_id, customer_id=customer_id, send_at=send_at,
            categorical=tuple(categorical), hashed=tuple(hashed), hash_buckets=hash_buckets, position=position,
            time_default=time_default, propensity_by=tuple(propensity_by),
        )
        if log_url.startswith("sqlite:///") and log_url != "sqlite:///:memory:":
            Path(log_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        with DecisionLog(log_url) as log:
            return import_file(log, path, mapping, policy=policy, format=format)
    except ValueError as e:
        raise JobError(str(e)) from None


def describe(result: ImportResult) -> str:
    """A few lines on one import: rows, new decisions, features, and what the propensities rest on."""
    old = result.rows - result.new_decisions
    lines = [f"imported {result.rows:,} rows: {result.new_decisions:,} new decisions"
             + (f" ({old:,} already in the log)" if old else "")
             + f", {result.new_outcomes:,} rewards; {result.n_actions} actions; policy {result.policy!r}"]
    names = result.feature_names
    shown = ", ".join(names) if len(names) <= 12 else f"{', '.join(names[:10])}, ... {names[-1]}"
    lines.append(f"context: {len(names)} features: {shown}")
    if result.time_default is not None:
        at = datetime.fromtimestamp(result.time_default * 3600.0, UTC).isoformat(timespec="minutes")
        lines.append(f"time: no time column; every decision at {at} (hour {result.time_default:g}), so their "
                     "order and each customer's contact history are unknown")
    if result.propensity_estimated:
        by = f"within each group of {', '.join(result.propensity_by)}" if result.propensity_by else "over the file"
        lines.append(f"propensity: estimated from the action frequencies {by} (smoothed), not logged; the "
                     f"decisions are under the policy name ending {ESTIMATED_SUFFIX!r}.")
        lines.append("  Off-policy estimates (IPS, DR) on them rest on this estimate: sound only if the old "
                     "policy chose at random given those columns alone; if it followed rules on other "
                     "attributes, read them as indicative and confirm with an A/B test.")
    else:
        lines.append("propensity: logged by the old policy (off-policy estimates can weight by it)")
    return "\n".join(lines)
