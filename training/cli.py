"""The ``nba`` command line."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(help="nba: next-best-action engine for omnichannel marketing.", no_args_is_help=True,
                  add_completion=False)
scenario_app = typer.Typer(help="Inspect, validate and calibrate simulator scenarios.", no_args_is_help=True)
app.add_typer(scenario_app, name="scenario")
console = Console()

POLICIES = ("business_as_usual", "rule_based_journey", "batch_and_blast", "uniform_random", "no_contact")
QUICKSTART_POLICIES = ("business_as_usual", "no_contact")
ScenarioOpt = Annotated[Path | None, typer.Option("--scenario", "-s", help="TOML/YAML scenario (default: built-in)")]
SeedOpt = Annotated[int, typer.Option(help="random seed")]


def _load_scenario(path: Path | None):
    from envs.scenario import Scenario, ScenarioError

    try:
        return Scenario.default() if path is None else Scenario.load(path)
    except ScenarioError as e:
        console.print(f"[red]invalid scenario:[/red] {e}")
        raise typer.Exit(2) from None


def _policy(name: str, scenario):
    from nba.policies import create

    if name not in POLICIES:
        console.print(f"[red]unknown policy {name!r}[/red]; valid: {', '.join(POLICIES)}")
        raise typer.Exit(2)
    return create(name, scenario.action_space, tuple(scenario.segments))


@contextmanager
def _progress(description: str, total: int):
    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*cols, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda _=None: bar.advance(task)


def _journey_summary(scenario, name: str, policy, customers: int, days: int, seed: int):
    """Returns per customer plus channel mix of one policy, with a progress bar."""
    from envs.rollout import journeys, policy_rng
    from envs.simulation import Simulation

    sim = Simulation(scenario, seed, customers, decision_hour=scenario.journey_decision_hour)
    total = np.zeros(customers)
    sent = np.zeros(len(scenario.channels))
    with _progress(f"{name:>18}: {customers:,} customers x {days} days", days) as tick:
        for step in journeys(sim, policy, days, policy_rng(seed)):
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


def _calibration_table(checks) -> Table:
    t = Table(title="Calibration against the articles' figures")
    for col in ("target", "measured", "tolerance", "status"):
        t.add_column(col)
    for c in checks:
        status = "[green]PASS[/green]" if c.ok else "[red]FAIL[/red]"
        tolerance = f"[{c.target.low:g}, {c.target.high:g}]"
        t.add_row(c.target.statement.split(" (")[0], f"{c.measured:.3g}", tolerance, status)
    return t


@app.command()
def quickstart(
    out: Annotated[Path, typer.Option(help="folder that receives everything the run writes")] = Path(
        "nba-runs/quickstart"),
    customers: Annotated[int, typer.Option(min=100, help="simulated customers")] = 20_000,
    seed: SeedOpt = 0,
) -> None:
    """End-to-end run on the built-in defaults: simulate, compare policies, check calibration, report."""
    from envs import calibration
    from envs.scenario import Scenario

    t0 = time.perf_counter()
    scenario = Scenario.default()
    space = scenario.action_space
    console.rule("[bold]nba quickstart")
    console.print(f"scenario [bold]{scenario.name}[/bold]: {len(scenario.segments)} segments, "
                  f"{len(scenario.channels)} channels x {len(scenario.contents)} contents x {space.n_slots} send slots "
                  f"+ no contact = {space.n_actions} actions; {scenario.feature_spec.dim} observation features")
    days = scenario.horizon_days
    results = {name: _journey_summary(scenario, name, _policy(name, scenario), customers, days, seed)
               for name in QUICKSTART_POLICIES}
    console.print(_value_table(scenario, results, "no_contact"))
    console.print("Both policies meet the same customers with the same luck (common random numbers), "
                  "so the difference's interval is tight.")
    from training.calibration_report import DAYS, render_report, simulated_inputs

    with _progress(f"calibration run ({DAYS} days, the first half warm-up)", DAYS) as tick:
        inputs = simulated_inputs(scenario, n=customers, seed=seed, progress=tick)
    checks = calibration.check(inputs.measured)
    console.print(_calibration_table(checks))
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "scenario": scenario.name, "customers": customers, "seed": seed, "days": days,
        "policies": {k: {"profit_per_customer": float(v[0].mean()), "churned": float(v[2])}
                     for k, v in results.items()},
        "calibration": {c.target.name: {"measured": c.measured, "ok": c.ok} for c in checks},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    report = render_report(inputs, out / "calibration")
    console.print(f"\nWrote [bold]{out}/summary.json[/bold] and the calibration report [bold]{report}[/bold] "
                  f"in {time.perf_counter() - t0:.0f} s.")
    if not all(c.ok for c in checks):
        console.print("[yellow]some calibration figures are outside their tolerance at this population size[/yellow]")


def _write_report(scenario, out: Path, customers: int, seed: int) -> Path:
    from training.calibration_report import DAYS, write_report

    with _progress("calibration report", DAYS) as tick:
        return write_report(scenario, out, n=customers, seed=seed, progress=tick)


@app.command()
def simulate(
    scenario: ScenarioOpt = None,
    policy: Annotated[str, typer.Option(help=f"one of: {', '.join(POLICIES)}")] = "business_as_usual",
    customers: Annotated[int, typer.Option(min=1)] = 10_000,
    days: Annotated[int | None, typer.Option(help="default: the scenario's horizon")] = None,
    seed: SeedOpt = 0,
) -> None:
    """Simulate customers' journeys under a policy and print their value (with no contact beside it)."""
    sc = _load_scenario(scenario)
    pol = _policy(policy, sc)
    days = days or sc.horizon_days
    results = {policy: _journey_summary(sc, policy, pol, customers, days, seed)}
    if policy != "no_contact":
        results["no_contact"] = _journey_summary(sc, "no_contact", _policy("no_contact", sc), customers, days, seed)
    console.print(_value_table(sc, results, "no_contact"))


@scenario_app.command("show")
def scenario_show(scenario: ScenarioOpt = None) -> None:
    """Print the fully resolved scenario (defaults merged) as JSON."""
    console.print_json(json.dumps(_load_scenario(scenario).to_dict(), default=str))


@scenario_app.command("check")
def scenario_check(path: Annotated[Path, typer.Argument(help="TOML/YAML scenario file")]) -> None:
    """Validate a scenario file; exit 2 with the offending field named when it is invalid."""
    sc = _load_scenario(path)
    console.print(f"[green]ok[/green]: scenario {sc.name!r}, {sc.action_space.n_actions} actions")


@scenario_app.command("report")
def scenario_report(
    scenario: ScenarioOpt = None,
    out: Annotated[Path, typer.Option(help="output folder")] = Path("nba-runs/calibration"),
    customers: Annotated[int, typer.Option("--n", "--customers", min=100)] = 20_000,
    seed: SeedOpt = 0,
) -> None:
    """Write the calibration report (PNG plots + Markdown/HTML) of a scenario against its targets."""
    sc = _load_scenario(scenario)
    path = _write_report(sc, out, customers, seed)
    console.print(f"report: [bold]{path}[/bold]")


if __name__ == "__main__":
    app()
