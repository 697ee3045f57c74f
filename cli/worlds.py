"""The simulator's scenarios and a brand's deployments: ``nba journeys``, ``nba scenario ...`` and
``nba deployment ...``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from cli.common import (
    DEFAULT_LOG,
    LogOpt,
    ScenarioOpt,
    SeedOpt,
    console,
    job_errors,
    load_deployment,
    load_scenario,
    progress_bar,
)

# the rules `nba journeys` simulates (nba.policies.POLICIES holds every policy, learners included)
JOURNEY_RULES = ("business_as_usual", "rule_based_journey", "batch_and_blast", "uniform_random", "no_contact")


def journeys(
    scenario: ScenarioOpt = None,
    policy: Annotated[str, typer.Option(help=f"one of: {', '.join(JOURNEY_RULES)}")] = "business_as_usual",
    customers: Annotated[int, typer.Option(min=1)] = 10_000,
    days: Annotated[int | None, typer.Option(min=1, help="default: the scenario's horizon")] = None,
    seed: SeedOpt = 0,
) -> None:
    """Simulate customers' 90-day journeys under a policy and print their value (no contact beside it)."""
    sc = load_scenario(scenario)
    pol = _policy(policy, sc)
    days = days or sc.horizon_days
    results = {policy: _journey_summary(sc, policy, pol, customers, days, seed)}
    if policy != "no_contact":
        results["no_contact"] = _journey_summary(sc, "no_contact", _policy("no_contact", sc), customers, days, seed)
    console.print(_value_table(sc, results, "no_contact"))


def _policy(name: str, scenario):
    from nba.policies import create

    if name not in JOURNEY_RULES:
        console.print(f"[red]unknown policy {name!r}[/red]; valid: {', '.join(JOURNEY_RULES)}")
        raise typer.Exit(2)
    return create(name, scenario.action_space, tuple(scenario.segments))


def _journey_summary(scenario, name: str, policy, customers: int, days: int, seed: int):
    """Returns per customer plus channel mix of one policy, with a progress bar."""
    from envs.rollout import journeys, policy_rng
    from envs.simulation import Simulation

    sim = Simulation(scenario, seed, customers, purpose="journey-summary", decision_hour=scenario.journey_decision_hour)
    total = np.zeros(customers)
    sent = np.zeros(len(scenario.channels))
    with progress_bar(f"{name:>18}: {customers:,} customers x {days} days", days) as tick:
        for step in journeys(sim, policy, days, policy_rng(seed, "journey-summary")):
            total += step.reward
            ch = sim.space.channel_of[step.actions]
            np.add.at(sent, ch[step.result.outcome.sent & step.alive], 1)
            tick()
    churned = sim.state.churned.mean()
    return total, sent / customers, churned


def _value_table(scenario, results: dict, baseline: str) -> Table:
    from envs.rollout import ValueEstimate

    t = Table(title="90-day profit per customer (95% CI over customers)")
    for col in ("policy", "profit / customer", "95% CI", "vs " + baseline, "messages / customer", "churned"):
        t.add_column(col, justify="right" if col != "policy" else "left")
    base = results[baseline][0]
    for name, (returns, sent, churned) in results.items():
        v = ValueEstimate.of(returns)
        d = ValueEstimate.of(returns - base)
        diff = "—" if name == baseline else f"{d.mean:+.2f} [{d.ci_low:+.2f}, {d.ci_high:+.2f}]"
        mix = ", ".join(f"{c} {x:.1f}" for c, x in zip(scenario.channels, sent, strict=True) if x > 0.05) or "none"
        t.add_row(name, f"{v.mean:.2f}", f"[{v.ci_low:.2f}, {v.ci_high:.2f}]", diff, mix, f"{churned:.1%}")
    return t


def scenario_show(scenario: ScenarioOpt = None) -> None:
    """Print the fully resolved scenario (defaults merged) as JSON."""
    console.print_json(json.dumps(load_scenario(scenario).to_dict(), default=str))


def scenario_check(path: Annotated[Path, typer.Argument(help="TOML/YAML scenario file")]) -> None:
    """Validate a scenario file; exit 2 with the offending field named when it is invalid."""
    sc = load_scenario(path)
    console.print(f"[green]ok[/green]: scenario {sc.name!r}, {sc.action_space.n_actions} actions")


def scenario_report(
    scenario: ScenarioOpt = None,
    out: Annotated[Path, typer.Option(help="output folder of the calibration report")] = Path("nba-runs/calibration"),
    customers: Annotated[
        int | None,
        typer.Option(
            "--n",
            "--customers",
            min=100,
            help="simulated customers (default: 20,000 for the calibration report, 2,000 beside a --log)",
        ),
    ] = None,
    seed: SeedOpt = 0,
    log: Annotated[
        str | None,
        typer.Option(
            "--log",
            help="decision log URL (sqlite:///decisions.db, postgresql+psycopg://...): print its own figures "
            "beside the scenario's under business as usual, instead of the calibration report",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="with --log: decisions from this time on (ISO 8601 date or date-time; UTC unless it has an offset)",
        ),
    ] = None,
    until: Annotated[str | None, typer.Option(help="with --log: decisions before this time (as --since)")] = None,
    days: Annotated[
        int | None,
        typer.Option(
            min=1, help="with --log: days the scenario's run logs (default: the days the log spans, at most 90)"
        ),
    ] = None,
    warmup_days: Annotated[
        int,
        typer.Option(min=0, help="with --log: days simulated before the scenario's run logs (contact histories fill)"),
    ] = 28,
) -> None:
    """Write the calibration report (PNG plots + Markdown/HTML) of a scenario against its targets; with --log,
    print how far the scenario is from a decision log's own figures (funnel per channel, response by hour,
    contacts before a conversion, revenue concentration, contact rate)."""
    sc = load_scenario(scenario)
    if log is None:
        from training.jobs import writable_folder

        with job_errors():
            writable_folder(out)
        path = _write_report(sc, out, customers or 20_000, seed)
        console.print(f"report: [bold]{path}[/bold]")
        return
    import sqlalchemy

    from envs import log_report

    try:
        window = [None if t is None else log_report.parse_time(t) for t in (since, until)]
        with log_report.open_log(log) as store:
            mine = log_report.log_figures(store, since=window[0], until=window[1])
    except (ValueError, FileNotFoundError, sqlalchemy.exc.SQLAlchemyError) as e:
        console.print(f"[red]cannot read the log:[/red] {e}")
        raise typer.Exit(2) from None
    if mine.decisions == 0:
        console.print("[yellow]the log holds no decisions (in that window): every figure is 'no data'[/yellow]")
    n, days = customers or log_report.CUSTOMERS, days or min(max(mine.span_days, 1), 90)
    description = f"scenario {sc.name!r}: {n:,} customers, {warmup_days} + {days} days"
    with progress_bar(description, warmup_days + days) as tick:
        theirs = log_report.scenario_figures(
            sc, customers=n, days=days, seed=seed, purpose=log_report.PURPOSE, warmup_days=warmup_days, progress=tick
        )
    where = sqlalchemy.make_url(log).render_as_string(hide_password=True)
    title = (
        f"log {where}: {mine.decisions:,} decisions, {mine.customers:,} customers, {mine.span_days} days\n"
        f"scenario {sc.name!r} under business as usual: {theirs.decisions:,} decisions, "
        f"{theirs.customers:,} customers, {days} days"
    )
    typer.echo(log_report.render(log_report.compare(mine, theirs), title=title))
    typer.echo(
        f"close: within {log_report.TOLERANCE:.0%} of the scenario; noisy: further, but within sampling "
        f"noise;\nno data: a side has none, or fewer than {log_report.MIN_COUNT} sends or customers behind it."
    )
    if mine.hour_basis == "UTC":
        typer.echo("hours are UTC: the log's context carries no tz_offset feature.")


def _write_report(scenario, out: Path, customers: int, seed: int) -> Path:
    from training.calibration_report import DAYS, write_report

    with progress_bar("calibration report", DAYS) as tick:
        return write_report(scenario, out, n=customers, seed=seed, progress=tick)


def deployment_check(path: Annotated[Path, typer.Argument(help="TOML/YAML deployment file")]) -> None:
    """Validate a deployment file and summarise it with its digest; exit 2 naming the offending field."""
    console.print(load_deployment(path).summary(), highlight=False, soft_wrap=True)


def deployment_show(
    path: Annotated[
        Path | None, typer.Argument(help="TOML/YAML deployment file (default: the built-in scenario as a deployment)")
    ] = None,
) -> None:
    """Print a deployment's canonical content (what its digest is taken of) as JSON."""
    d = load_deployment(path)
    console.print_json(json.dumps({"digest": d.digest, **d.to_dict()}))


def deployment_update(
    path: Annotated[Path, typer.Argument(help="the deployment file with its new catalogue (TOML/YAML)")],
    log: LogOpt = DEFAULT_LOG,
) -> None:
    """Move a deployment's log onto a new version of its catalogue (offers added, removed, reordered or changed;
    the same attributes, channels and send slots): every decision keeps its channel, offer and slot, renumbered,
    in one transaction, so serving the new file on this log keeps every customer's history and caps."""
    from nba.log.importer import move_onto
    from training import jobs

    d = load_deployment(path)
    with job_errors():
        opened = jobs.open_log(log, "log")
        try:
            moved = move_onto(opened, d)
        except ValueError as e:
            raise jobs.JobError(str(e)) from None
        finally:
            opened.close()
    if moved.before == moved.after:
        console.print(f"the log already holds this deployment ({d.digest[:19]}..): nothing to do", highlight=False)
        return
    console.print(
        f"moved {moved.decisions:,} decisions onto {d.name!r} ({moved.before[:19]}.. -> {moved.after[:19]}..,"
        f" {d.action_space().n_actions} actions); offers added: {list(moved.added) or 'none'}, removed: "
        f"{list(moved.removed) or 'none'}",
        highlight=False,
    )
