"""``nba import``: a decision log kept elsewhere (CSV or Parquet) into a decision log.

The body of the command, apart from its options: :func:`import_command` opens the log, maps the
columns (:class:`nba.log.importer.ColumnMapping`) and imports the file all or nothing;
:func:`describe` says what happened in a few lines a person reads. Bad input raises
:class:`training.jobs.JobError` whose message names the row and the column.

With ``deployment`` (a deployment file), the file is imported onto that deployment
(:func:`nba.log.importer.import_onto`): its attribute columns named as the deployment's attributes,
the action as channel, offer and send hour (or one action column), the context and the eligible
actions the deployment's, with each customer's contact history rebuilt from their earlier rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from nba.log.importer import (
    ESTIMATED_SUFFIX,
    ColumnMapping,
    DeploymentMapping,
    ImportResult,
    import_file,
    import_onto,
)

FEATURE_OPTIONS = ("context", "categorical", "hashed", "position", "n_actions", "send_at")  # not with a deployment
DEPLOYMENT_OPTIONS = ("channel", "offer", "send_hour", "tz_offset", "opted_out", "attributes", "allow_ineligible")


def import_command(
    path: str | Path,
    log_url: str,
    *,
    action: str | None = None,
    propensity: str | None = None,
    context: Sequence[str] = (),
    categorical: Sequence[str] = (),
    hashed: Sequence[str] = (),
    hash_buckets: int = 64,
    time: str | None = None,
    time_default: float | None = None,
    reward: str | None = None,
    decision_id: str | None = None,
    customer_id: str | None = None,
    send_at: str | None = None,
    position: str | None = None,
    n_actions: int | None = None,
    propensity_by: Sequence[str] = (),
    policy: str = "imported",
    format: str | None = None,
    deployment: str | Path | None = None,
    channel: str | None = None,
    offer: str | None = None,
    send_hour: str | None = None,
    tz_offset: str | None = None,
    opted_out: str | None = None,
    attributes: Mapping[str, str] | Sequence[str] = (),
    allow_ineligible: bool = False,
) -> ImportResult:
    """Import the file at ``path`` into the decision log at ``log_url`` (created if new).

    ``n_actions``: default the log's, or else the file's largest action + 1. Without ``time``, every row
    is decided at ``time_default`` (hours since the epoch); without ``propensity``, the propensities are
    estimated from the file, by the groups of ``propensity_by``. The other arguments are the columns
    of :class:`~nba.log.importer.ColumnMapping`.

    With ``deployment`` (a TOML or YAML deployment file) the file is imported onto it
    (:func:`~nba.log.importer.import_onto`; the columns of :class:`~nba.log.importer.DeploymentMapping`):
    ``channel``, ``offer`` and ``send_hour`` (or ``action``, indices into its action space),
    ``tz_offset``, ``opted_out``, ``attributes`` (attribute -> column where they differ, or
    ``"attribute=column"`` strings) and ``allow_ineligible``; the feature options (``context``,
    ``categorical``, ``hashed``, ``position``, ``n_actions``, ``send_at``) do not apply. Raises
    :class:`training.jobs.JobError` on bad input (nothing imported).
    """
    from training.jobs import JobError, connect_log

    given = dict(
        context=context,
        categorical=categorical,
        hashed=hashed,
        position=position,
        n_actions=n_actions,
        send_at=send_at,
        channel=channel,
        offer=offer,
        send_hour=send_hour,
        tz_offset=tz_offset,
        opted_out=opted_out,
        attributes=attributes,
        allow_ineligible=allow_ineligible,
    )
    try:
        wrong = FEATURE_OPTIONS if deployment is not None else DEPLOYMENT_OPTIONS
        extra = next((k for k in wrong if given[k]), None)
        if extra is not None:
            raise ValueError(
                f"{extra}: only for an import onto a deployment"
                if deployment is None
                else f"{extra}: the deployment gives the context and the actions; not with deployment"
            )
        if deployment is not None:
            from nba.deployment import Deployment

            world = Deployment.load(deployment)
            mapping = DeploymentMapping(
                customer_id=customer_id,
                time=time,
                time_default=time_default,
                tz_offset=tz_offset,
                action=action,
                channel=channel,
                offer=offer,
                send_hour=send_hour,
                propensity=propensity,
                propensity_by=tuple(propensity_by),
                reward=reward,
                opted_out=opted_out,
                decision_id=decision_id,
                attributes=_renames(attributes),
            )
        else:
            if action is None:
                raise ValueError("action: give the column of the chosen action index (or import onto a deployment)")
            mapping = ColumnMapping(
                context=tuple(context),
                action=action,
                propensity=propensity,
                n_actions=n_actions,
                time=time,
                reward=reward,
                decision_id=decision_id,
                customer_id=customer_id,
                send_at=send_at,
                categorical=tuple(categorical),
                hashed=tuple(hashed),
                hash_buckets=hash_buckets,
                position=position,
                time_default=time_default,
                propensity_by=tuple(propensity_by),
            )
        if log_url.startswith("sqlite:///") and log_url != "sqlite:///:memory:":
            Path(log_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        with connect_log(log_url) as log:
            if deployment is not None:
                return import_onto(
                    log, path, world, mapping, policy=policy, format=format, allow_ineligible=allow_ineligible
                )
            return import_file(log, path, mapping, policy=policy, format=format)
    except ValueError as e:
        raise JobError(str(e)) from None


def _renames(attributes: Mapping[str, str] | Sequence[str]) -> dict[str, str]:
    """Attribute -> column, from a mapping or from ``"attribute=column"`` strings (the CLI's)."""
    if isinstance(attributes, Mapping):
        return dict(attributes)
    out = {}
    for item in attributes:
        name, sep, column = item.partition("=")
        if not (sep and name.strip() and column.strip()):
            raise ValueError(f"attributes: expected 'attribute=column', got {item!r}")
        out[name.strip()] = column.strip()
    return out


def describe(result: ImportResult) -> str:
    """A few lines on one import: rows, new decisions, features, and what the propensities rest on."""
    old = result.rows - result.new_decisions
    lines = [
        f"imported {result.rows:,} rows: {result.new_decisions:,} new decisions"
        + (f" ({old:,} already in the log)" if old else "")
        + f", {result.new_outcomes:,} rewards; {result.n_actions} actions; policy {result.policy!r}"
    ]
    names = result.feature_names
    shown = ", ".join(names) if len(names) <= 12 else f"{', '.join(names[:10])}, ... {names[-1]}"
    lines.append(f"context: {len(names)} features: {shown}")
    if result.deployment is not None:
        lines.append(
            f"deployment: {result.deployment[:19]}.. (kept by the log, and in each decision's "
            "policy_version: nba train and nba evaluate find it there); the context and the eligible actions "
            "are the deployment's, with each customer's contact history rebuilt from their earlier rows in "
            "the file"
        )
    if result.ineligible:
        lines.append(
            f"ineligible: {result.ineligible:,} rows chose an action the deployment would not have allowed; "
            "kept, their action added to their mask"
        )
    if result.time_default is not None:
        at = datetime.fromtimestamp(result.time_default * 3600.0, UTC).isoformat(timespec="minutes")
        lines.append(
            f"time: no time column; every decision at {at} (hour {result.time_default:g}), so their "
            "order and each customer's contact history are unknown"
        )
    if result.propensity_estimated:
        by = f"within each group of {', '.join(result.propensity_by)}" if result.propensity_by else "over the file"
        lines.append(
            f"propensity: estimated from the action frequencies {by} (smoothed), not logged; the "
            f"decisions are under the policy name ending {ESTIMATED_SUFFIX!r}."
        )
        lines.append(
            "  Off-policy estimates (IPS, DR) on them rest on this estimate: sound only if the old "
            "policy chose at random given those columns alone; if it followed rules on other "
            "attributes, read them as indicative and confirm with an A/B test."
        )
    else:
        lines.append("propensity: logged by the old policy (off-policy estimates can weight by it)")
    return "\n".join(lines)
