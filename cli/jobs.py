"""The MLflow jobs' commands: ``nba import``, ``simulate``, ``train``, ``evaluate``, ``ab``, ``promote`` and
``promotions`` (each runs a job of :mod:`training.jobs`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from cli.common import (
    DEFAULT_LOG,
    LogOpt,
    ParamOpt,
    RootOpt,
    ScenarioOpt,
    SeedOpt,
    checked_params,
    console,
    ensure_sqlite_dir,
    job_errors,
    load_scenario,
    open_store,
    progress_bar,
)


def import_(
    path: Annotated[Path, typer.Argument(help="CSV or Parquet file of past decisions, one row each")],
    action: Annotated[
        str | None,
        typer.Option(
            help="column of the chosen action index (0 = no contact); with --deployment, or --channel/--offer"
        ),
    ] = None,
    log: LogOpt = DEFAULT_LOG,
    deployment: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="deployment file (TOML/YAML): import onto it; attributes by name, context "
            "and eligible actions rebuilt from each customer's earlier rows",
        ),
    ] = None,
    channel: Annotated[
        str | None,
        typer.Option(help="column of the channel name (with --deployment; channel and offer empty: no contact)"),
    ] = None,
    offer: Annotated[str | None, typer.Option(help="column of the offer name (with --deployment)")] = None,
    send_hour: Annotated[
        str | None,
        typer.Option(help="column of the local send hour, one of the deployment's slots (empty or 'now': now)"),
    ] = None,
    tz_offset: Annotated[
        str | None,
        typer.Option(
            help="column of the time zone: hours east of UTC or an IANA name (default: the ISO times' offsets)"
        ),
    ] = None,
    opted_out: Annotated[str | None, typer.Option(help="column of 0/1 opt-outs (an opted_out event)")] = None,
    attribute: Annotated[
        list[str] | None, typer.Option(help="ATTRIBUTE=COLUMN where the file names an attribute differently (repeat)")
    ] = None,
    allow_ineligible: Annotated[
        bool, typer.Option(help="keep rows whose action the deployment would not allow (added to their mask, counted)")
    ] = False,
    context: Annotated[list[str] | None, typer.Option(help="numeric feature column (repeat, in order)")] = None,
    categorical: Annotated[
        list[str] | None,
        typer.Option(
            help="text column one-hot encoded as 'column=value' features (repeat); categories kept in the log"
        ),
    ] = None,
    hashed: Annotated[
        list[str] | None,
        typer.Option(help="high-cardinality text column hashed into --hash-buckets one-hot features (repeat)"),
    ] = None,
    hash_buckets: Annotated[int, typer.Option(min=1, help="buckets per hashed column")] = 64,
    propensity: Annotated[
        str | None,
        typer.Option(help="column of the logging policy's probability of the action; omitted: estimated from the file"),
    ] = None,
    propensity_by: Annotated[
        list[str] | None,
        typer.Option(help="column to estimate the propensity within (e.g. a segment; repeat); default the whole file"),
    ] = None,
    time: Annotated[
        str | None, typer.Option(help="column of the decision time (hours since the epoch or ISO 8601)")
    ] = None,
    time_default: Annotated[
        float | None,
        typer.Option(help="decision time of every row when there is no time column (hours since the epoch)"),
    ] = None,
    reward: Annotated[str | None, typer.Option(help="column of the reward (an empty cell: none)")] = None,
    decision_id: Annotated[str | None, typer.Option(help="column of unique decision ids (default file:row)")] = None,
    customer_id: Annotated[str | None, typer.Option(help="column of customer ids (default: one per row)")] = None,
    send_at: Annotated[str | None, typer.Option(help="column of the send time (default the decision time)")] = None,
    position: Annotated[
        str | None,
        typer.Option(help="column of the slot where the action was shown (integer >= 0); one feature 'position'"),
    ] = None,
    n_actions: Annotated[
        int | None, typer.Option(min=1, help="size of the action space (default the log's, or the largest action + 1)")
    ] = None,
    policy: Annotated[str, typer.Option(help="name of the policy that made these decisions")] = "imported",
    format: Annotated[str | None, typer.Option(help="'csv' or 'parquet' (default from the suffix)")] = None,
) -> None:
    """Import a decision log kept elsewhere (CSV or Parquet), all or nothing; errors name row and column."""
    from training.importing import describe, import_command

    with job_errors():
        res = import_command(
            path,
            log,
            action=action,
            propensity=propensity,
            context=tuple(context or ()),
            categorical=tuple(categorical or ()),
            hashed=tuple(hashed or ()),
            hash_buckets=hash_buckets,
            time=time,
            time_default=time_default,
            reward=reward,
            decision_id=decision_id,
            customer_id=customer_id,
            send_at=send_at,
            position=position,
            n_actions=n_actions,
            propensity_by=tuple(propensity_by or ()),
            policy=policy,
            format=format,
            deployment=deployment,
            channel=channel,
            offer=offer,
            send_hour=send_hour,
            tz_offset=tz_offset,
            opted_out=opted_out,
            attributes=tuple(attribute or ()),
            allow_ineligible=allow_ineligible,
        )
    console.print(describe(res), highlight=False)


def simulate(
    log: LogOpt = DEFAULT_LOG,
    scenario: ScenarioOpt = None,
    policy: Annotated[str, typer.Option(help="logging policy (mixed with exploration)")] = "business_as_usual",
    epsilon: Annotated[float, typer.Option(help="share of uniform exploration")] = 0.2,
    holdout: Annotated[float, typer.Option(help="share of no-contact holdout")] = 0.05,
    messages: Annotated[
        float,
        typer.Option(
            help="share of the logging policy's contacts given a random eligible message (channel, content, "
            "send time): explores which message without changing whom to contact"
        ),
    ] = 0.0,
    decisions: Annotated[int, typer.Option(min=1)] = 20_000,
    seed: SeedOpt = 0,
    param: ParamOpt = None,
    deployment: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="simulate a brand's deployment (TOML/YAML) instead of the scenario: --customers x --days decisions "
            "in its latent --world; --policy uniform_random, no_contact or a registered version of it",
        ),
    ] = None,
    world: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="latent world file of the --deployment (default: its defaults)"),
    ] = None,
    customers: Annotated[int, typer.Option(min=1, help="customers of the --deployment")] = 2000,
    days: Annotated[int, typer.Option(min=1, help="days of the --deployment, one decision a day each")] = 14,
    root: RootOpt = Path("nba-runs"),
) -> None:
    """Produce a decision log: a logging policy decides on the simulated bandit view, or on a brand's deployment in
    a latent world (tracked in MLflow)."""
    from training import jobs

    if deployment is not None or world is not None:
        with job_errors():
            if deployment is None:
                raise jobs.JobError("world: a latent world simulates a --deployment; give its file")
            if scenario is not None or param:
                raise jobs.JobError("deployment: --scenario and --param are the scenario's; not with --deployment")
            jobs.load_world(world, jobs.load_deployment(deployment))  # bad files stop before the store is touched
            open_store(root)
            ensure_sqlite_dir(log)
            name = "uniform_random" if policy == "business_as_usual" else policy  # the default is the scenario's
            with progress_bar(f"simulate {customers:,} customers x {days} days", days) as tick:
                res = jobs.simulate_world(
                    log,
                    str(deployment),
                    world_path=None if world is None else str(world),
                    policy=name,
                    epsilon=epsilon,
                    holdout=holdout,
                    messages=messages,
                    customers=customers,
                    days=days,
                    seed=seed,
                    progress=tick,
                )
        console.print(f"logged {res.rows:,} decisions to [bold]{res.log_url}[/bold] (run {res.run_id})")
        return
    with job_errors():
        params = checked_params(policy, param, scenario, root)
        ensure_sqlite_dir(log)
        with progress_bar(f"simulate {decisions:,} decisions", -(-decisions // jobs.BANDIT_BATCH)) as tick:
            res = jobs.simulate(
                log,
                scenario_path=None if scenario is None else str(scenario),
                policy=policy,
                epsilon=epsilon,
                holdout=holdout,
                messages=messages,
                decisions=decisions,
                seed=seed,
                params=params,
                progress=tick,
            )
    console.print(f"logged {res.rows:,} decisions to [bold]{res.log_url}[/bold] (run {res.run_id})")


def train(
    policy: Annotated[str, typer.Option(help="policy name (see nba.policies.POLICIES)")],
    source: Annotated[str, typer.Option(help="'simulator' or a decision log URL to learn from offline")] = "simulator",
    scenario: ScenarioOpt = None,
    decisions: Annotated[int, typer.Option(min=1, help="online decisions (bandits in the simulator)")] = 20_000,
    customers: Annotated[int, typer.Option(min=10, help="logged customers (offline learners in the simulator)")] = 4000,
    seed: SeedOpt = 0,
    param: ParamOpt = None,
    safe: Annotated[
        list[str] | None,
        typer.Option(
            help="the conservative mode (SPIBB) of a bandit learning from a log, on by default: 'off', or KEY=VALUE "
            "for one of its parameters (repeatable): contacts=free|keep|channel, n_min, group, bucket, improve, "
            "baseline_epsilon, baseline_holdout"
        ),
    ] = None,
    register: Annotated[bool, typer.Option(help="register the policy in the MLflow registry")] = True,
    challenger: Annotated[
        bool,
        typer.Option(
            "--challenger", help="point @challenger at the registered version (nba evaluate, then nba promote)"
        ),
    ] = False,
    deployment: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="deployment file (TOML/YAML) the --source log was imported onto: train on its actions and features "
            "and register a bundle that carries it (default: the deployment the log holds)",
        ),
    ] = None,
    root: RootOpt = Path("nba-runs"),
) -> None:
    """Train a policy and log it to MLflow (registered as a new version of the policy model)."""
    from training import jobs, registry

    with job_errors():
        if challenger and not register:
            raise jobs.JobError("challenger: only a registered version can be the challenger (not with --no-register)")
        conservative = jobs.parse_safe(safe)
        jobs.check_safe(policy, source, conservative, jobs.load_scenario(scenario))
        params = checked_params(policy, param, scenario, root)
        if source != jobs.SIMULATOR:
            total = 1 if jobs.fits_offline(policy) else jobs.log_steps(source)
        elif jobs.fits_offline(policy):  # a day of journeys at a time
            total = load_scenario(scenario).horizon_days
        else:
            total = -(-decisions // jobs.BANDIT_BATCH)
        with progress_bar(f"train {policy}", total) as tick:
            res = jobs.train(
                policy,
                source=source,
                scenario_path=None if scenario is None else str(scenario),
                params=params,
                decisions=decisions,
                customers=customers,
                seed=seed,
                safe=conservative,
                register=register,
                progress=tick,
                deployment_path=None if deployment is None else str(deployment),
            )
    if challenger:
        registry.set_alias(registry.CHALLENGER, res.version)
    console.print(
        f"trained [bold]{policy}[/bold]: {_metrics_line(res.metrics)}; run {res.run_id}"
        + (f", registered version {res.version}" if res.version else "")
        + (" (@challenger)" if challenger else "")
    )


def evaluate(
    policy: Annotated[
        list[str],
        typer.Option(
            help="@alias, version, models:/ URI, bundle or downloaded model folder, or rule-based name (repeat); "
            "on a log imported onto a deployment: its registered versions, no_contact or uniform_random"
        ),
    ],
    log: LogOpt = DEFAULT_LOG,
    scenario: ScenarioOpt = None,
    tau: Annotated[float, typer.Option(help="switch-DR weight threshold")] = 20.0,
    bootstrap: Annotated[int, typer.Option(min=10)] = 200,
    interval: Annotated[
        str,
        typer.Option(help="bootstrap intervals: percentile, or studentized (wider; covers more where estimates skew)"),
    ] = "percentile",
    groups: Annotated[
        str,
        typer.Option(
            help="what MIPS and MDR weight on: channel, channel_content (no model bias on a change of content, where "
            "the log supports it) or action"
        ),
    ] = "channel",
    base: Annotated[
        str | None,
        typer.Option(
            help="one of --policy (today's production policy, say): each policy that changes only its send slots "
            "gets its lift over it read through the log's opens too (simulated logs)"
        ),
    ] = None,
    seed: SeedOpt = 0,
    root: RootOpt = Path("nba-runs"),
) -> None:
    """Off-policy estimates (IPS, SNIPS, DM, DR, switch-DR, MIPS, MDR) on a decision log, with the exact value
    beside them when the log was simulated; a brand's log imported onto its deployment is evaluated on that
    deployment (its reward, no exact value). With --base, a change of send slot alone is also read through the
    opens (nba.surrogate)."""
    from training import jobs

    with job_errors():
        jobs.load_scenario(scenario)
        jobs.check_estimators(interval, groups, tau)
        open_store(root)
        res = jobs.evaluate(
            log,
            list(policy),
            scenario_path=None if scenario is None else str(scenario),
            tau=tau,
            n_bootstrap=bootstrap,
            seed=seed,
            interval=interval,
            groups=groups,
            base=base,
            say=console.print,
        )
    console.print(_estimates_table(res))
    for line in _slot_lift_lines(res):
        console.print(line)


def _slot_lift_lines(res) -> list[str]:
    """A line per policy whose lift over the evaluation's base was read through the opens (a change of send
    slot alone: :attr:`training.jobs.EvaluateResult.slot_lifts`), with the exact lift beside it when known."""
    out = []
    for label, up in res.slot_lifts.items():
        exact = "" if res.truth is None else f", exact {res.truth[label] - res.truth[res.base]:+.3f}"
        out.append(
            f"{label} over {res.base}, a change of send slot alone read through the opens: {up.value:+.3f} "
            f"[{up.ci_low:+.3f}, {up.ci_high:+.3f}] per decision{exact}"
            + (" (unsupported: it moves messages to hours the log never sent at)" if up.unsupported else "")
        )
    return out


def _metrics_line(metrics: Mapping[str, float]) -> str:
    """A job's metrics on one line: counts whole (``rows 28,000``), the rest to four figures."""
    return ", ".join(f"{k} {v:,.0f}" if float(v).is_integer() else f"{k} {v:.4g}" for k, v in metrics.items())


def _estimates_table(res) -> Table:
    """Every estimate, a section per policy in the ranking's order, readable in an 80-column terminal: the
    ranked estimator's row in bold, an unsupported estimate marked on its row, a policy's flags under its
    name and the policy it decides as (:meth:`training.jobs.EvaluateResult.same_as`), its exact value
    (simulated logs) on its first row."""
    from training.jobs import FLAG_WORDS, IN_SAMPLE, PROPENSITY_ESTIMATED, RANK_BY

    t = Table(
        title=f"off-policy estimates per decision (95% {res.interval} bootstrap intervals)",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=0,
    )
    for col in ("policy", "estimator", "value", "95% interval", "ESS", "support", "exact"):
        t.add_column(
            col, justify="left" if col in ("policy", "estimator", "support") else "right", no_wrap=col != "policy"
        )
    for label in res.ranked():
        est = res.estimates[label]
        # the name on the first row, a flag on each of the next (the last row takes any left over)
        share = res.learned.get(label)
        words = {**FLAG_WORDS, IN_SAMPLE: f"learned from {share:.0%} of this log"} if share else FLAG_WORDS
        cells = [label, *(f"[red]flagged: {words.get(f, f)}[/red]" for f in res.flags.get(label, ()))]
        twin = res.same_as(label)
        if twin is not None:
            cells.append(f"[dim]decides as {twin}[/dim]")
        cells = [*cells[: len(est) - 1], "\n".join(cells[len(est) - 1 :])] + [""] * (len(est) - len(cells))
        for k, (name, e) in enumerate(est.items()):
            first = k == 0
            t.add_row(
                cells[k],
                name,
                f"{e.value:.3f}",
                f"[{e.ci_low:.3f}, {e.ci_high:.3f}]",
                f"{e.ess:,.0f}",
                "[red]unsupported[/red]" if e.unsupported else "",
                ("—" if res.truth is None else f"{res.truth[label]:.3f}") if first else "",
                style="bold" if name == RANK_BY else None,
                end_section=k == len(est) - 1,
            )
    notes = []
    if res.deployment is not None:
        notes.append(
            f"deployment {res.deployment.name!r} ({res.deployment.digest[:19]}..), rewarded by its rule; "
            "true value: none, a brand's log has no simulator behind it"
        )
    if res.propensity == PROPENSITY_ESTIMATED:
        notes.append(
            f"propensity: estimated at import for {res.propensity_estimated_share:.0%} of the decisions, "
            "not logged: these estimates rest on that estimate"
        )
    notes.append(
        f"ranked by {RANK_BY} (weights by {res.groups}; flagged last): {', '.join(res.ranked())}; the logging "
        f"policy's own value {res.logging_value[0]:.3f}"
    )
    t.caption = "\n".join(notes)
    return t


def ab(
    champion: Annotated[str, typer.Option(help="@alias, version, bundle folder or rule-based name")] = "@champion",
    challenger: Annotated[str, typer.Option(help="same choices as --champion")] = "@challenger",
    source: Annotated[str, typer.Option(help="'simulator' or the decision log URL of a live experiment")] = "simulator",
    experiment: Annotated[str, typer.Option(help="experiment name (hashed with customer ids for arms)")] = "ab",
    customers: Annotated[int, typer.Option(min=100, help="simulated customers")] = 5000,
    days: Annotated[int, typer.Option(min=2, help="experiment days (daily looks)")] = 14,
    pre_days: Annotated[int, typer.Option(min=0, help="simulated pre-period days (CUPED covariate)")] = 7,
    split: Annotated[float, typer.Option(help="challenger's share of customers")] = 0.5,
    alpha: Annotated[float, typer.Option(help="significance level")] = 0.05,
    truth: Annotated[
        bool,
        typer.Option(
            help="simulated: also run both policies on everyone for the exact effects (twice the challenger's work)"
        ),
    ] = True,
    guardrail: Annotated[
        list[str] | None,
        typer.Option(
            help="guardrail '[name=]metric:margin[%][:higher]' or JSON (repeatable; 'none': no guardrail); default: "
            "opt-out rate opted_out:0.005, churn rate churned:0.01, sends per customer sent:100%"
        ),
    ] = None,
    require: Annotated[
        str,
        typer.Option(
            help="what the primary metric must show to promote: 'better' (significantly) or 'not_worse' (no harm shown)"
        ),
    ] = "better",
    out: Annotated[Path, typer.Option(help="report folder")] = Path("nba-runs/ab"),
    seed: SeedOpt = 0,
    root: RootOpt = Path("nba-runs"),
) -> None:
    """A/B test champion against challenger (simulated, or from a logged experiment) with an
    always-valid sequential test and non-inferiority guardrails; writes the report and tags the run
    with the verdict (promote or not, and why)."""
    from training import jobs

    with job_errors():
        jobs.load_scenario(None)
        guardrails = None if not guardrail else ([] if guardrail == ["none"] else list(guardrail))
        jobs.check_guardrails(guardrails, source)
        jobs.writable_folder(out)
        open_store(root)
        with progress_bar(f"A/B {experiment}", days) as tick:
            res = jobs.ab(
                champion=champion,
                challenger=challenger,
                source=source,
                experiment=experiment,
                customers=customers,
                days=days,
                pre_days=pre_days,
                split=split,
                alpha=alpha,
                seed=seed,
                guardrails=guardrails,
                truth=truth,
                require=require,
                out=out,
                progress=tick,
            )
    console.print(_ab_table(res) if res.guardrails else "no guardrail declared: the primary metric alone decides")
    truth = "" if res.true_effect is None else f" (true effect {res.true_effect:+.3f})"
    console.print(
        f"challenger - champion: {res.diff:+.3f} per customer over {res.days} days, always-valid interval "
        f"[{res.ci_low:+.3f}, {res.ci_high:+.3f}], p = {res.p_value:.4g}{truth}"
    )
    colour = "green" if res.promote else "red"
    console.print(f"{res.verdict}\n[{colour}]{res.reason}[/{colour}]\nreport {res.report}; run {res.run_id}")


def _ab_table(res) -> Table:
    """The guardrails' verdicts, readable in an 80-column terminal (only a long guardrail name wraps)."""
    t = Table(
        title="guardrails (non-inferiority, always valid, at the test's alpha)",
        caption="worse by: the challenger's worsening; bound: its upper bound, which must stay below the "
        "margin; true: the exact worsening",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=0,
    )
    for col in ("guardrail", "champion", "challenger", "worse by", "bound", "margin", "status", "true"):
        t.add_column(col, justify="left" if col in ("guardrail", "status") else "right", no_wrap=col != "guardrail")
    for g in res.guardrails:
        gd = g.guardrail
        fmt = (lambda x: f"{100 * x:+.1f}%") if gd.relative else (lambda x: f"{x:+.3g}")
        true = "—" if res.true_worsening is None else fmt(res.true_worsening[gd.name])
        colour = "green" if g.passed else "red"
        t.add_row(
            gd.name,
            f"{g.mean_control:.3g}",
            f"{g.mean_treatment:.3g}",
            fmt(g.worsening),
            fmt(g.bound),
            fmt(g.margin),
            f"[{colour}]{g.status}[/{colour}]",
            true,
        )
    return t


def promote(
    metric: Annotated[str, typer.Option(help="estimator whose tags decide when no A/B run is given")] = "dr",
    ab_run: Annotated[str | None, typer.Option(help="id of a finished `nba ab` run whose verdict decides")] = None,
    predicted_lift: Annotated[
        float | None,
        typer.Option(
            help="off-policy estimate of challenger - champion, value per decision, recorded beside the A/B's"
        ),
    ] = None,
    predicted_low: Annotated[float | None, typer.Option(help="its interval's lower end")] = None,
    predicted_high: Annotated[float | None, typer.Option(help="its interval's upper end")] = None,
    rollback: Annotated[bool, typer.Option("--rollback", help="return champion to the previous version")] = False,
    root: RootOpt = Path("nba-runs"),
) -> None:
    """Move the champion alias to the challenger when the A/B verdict (or, without one, the evaluation)
    supports it, recording the predicted lift beside the realised one; or roll back."""
    from training import jobs

    with job_errors():
        from nba.ope import ESTIMATORS

        if metric not in ESTIMATORS:  # before the store is touched
            raise jobs.JobError(f"metric: unknown estimator {metric!r}; valid: {', '.join(ESTIMATORS)}")
        if (predicted_low is None) != (predicted_high is None):
            raise jobs.JobError("predicted_ci: give both --predicted-low and --predicted-high")
        ci = None if predicted_low is None else (predicted_low, predicted_high)
        open_store(root)
        res = jobs.promote(
            metric=metric, ab_run=ab_run or None, rollback=rollback, predicted_lift=predicted_lift, predicted_ci=ci
        )
    colour = "green" if res.promoted else "yellow"
    console.print(
        f"[{colour}]{'moved' if res.promoted else 'unchanged'}[/{colour}]: {res.reason}; "
        f"champion is version {res.champion}"
    )
    if not (ab_run or rollback) and jobs.evidence_propensity() == jobs.PROPENSITY_ESTIMATED:
        console.print(
            "[yellow]note: the off-policy evidence rests on propensities estimated at import, not "
            "logged: confirm with an A/B test (nba ab)[/yellow]"
        )


def promotions(
    out: Annotated[Path, typer.Option(help="report folder")] = Path("nba-runs/promotions"),
    root: RootOpt = Path("nba-runs"),
) -> None:
    """Report over every promotion in the tracking store: the off-policy predicted lift against the lift
    the A/B test realised (PNG, Markdown, HTML; logged to MLflow)."""
    from training import jobs

    with job_errors():
        jobs.writable_folder(out)
        open_store(root)
        res = jobs.promotions_report(out=out)
    console.print(f"{res.n} promotion(s) with a predicted and a realised lift; report {res.report}; run {res.run_id}")
