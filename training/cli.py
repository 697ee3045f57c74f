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

from training.quickstart import AB_CUSTOMERS, AB_DAYS

app = typer.Typer(help="nba: next-best-action engine for omnichannel marketing.", no_args_is_help=True,
                  add_completion=False)
scenario_app = typer.Typer(help="Inspect, validate and calibrate simulator scenarios.", no_args_is_help=True)
app.add_typer(scenario_app, name="scenario")
deployment_app = typer.Typer(help="Validate and inspect a deployment: a brand's own world, declared once.",
                             no_args_is_help=True)
app.add_typer(deployment_app, name="deployment")
console = Console()

POLICIES = ("business_as_usual", "rule_based_journey", "batch_and_blast", "uniform_random", "no_contact")
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

    sim = Simulation(scenario, seed, customers, purpose="journey-summary", decision_hour=scenario.journey_decision_hour)
    total = np.zeros(customers)
    sent = np.zeros(len(scenario.channels))
    with _progress(f"{name:>18}: {customers:,} customers x {days} days", days) as tick:
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
    customers: Annotated[int, typer.Option(min=100, help="simulated customers of the calibration check "
                                                         "(a tenth of them for fitted-Q's journeys)")] = 20_000,
    decisions: Annotated[int, typer.Option(min=2000, help="decisions in the training log")] = 30_000,
    ab_customers: Annotated[int, typer.Option(min=100, help="customers of each A/B test")] = AB_CUSTOMERS,
    ab_days: Annotated[int, typer.Option(min=2, help="days of each A/B test")] = AB_DAYS,
    seed: SeedOpt = 0,
) -> None:
    """End to end on the embedded defaults: simulate decision logs, train and register every policy,
    evaluate them off-policy and against the truth, set champion and challenger, check calibration."""
    from envs import calibration
    from envs.scenario import Scenario
    from training import quickstart as qs

    t0 = time.perf_counter()
    scenario = Scenario.default()
    space = scenario.action_space
    console.rule("[bold]nba quickstart")
    console.print(f"scenario [bold]{scenario.name}[/bold]: {len(scenario.segments)} segments, "
                  f"{len(scenario.channels)} channels x {len(scenario.contents)} contents x {space.n_slots} send slots "
                  f"+ no contact = {space.n_actions} actions; {scenario.feature_spec.dim} observation features")

    def progress(description: str, total: int):
        return _progress(description, total)

    res = qs.run(out, decisions=decisions, eval_decisions=max(2000, decisions * 2 // 3), customers=customers // 10,
                 seed=seed, ab_customers=ab_customers, ab_days=ab_days, progress=progress, say=console.print)
    console.print(_quickstart_table(res))
    from training.calibration_report import DAYS, render_report, simulated_inputs

    with _progress(f"calibration run ({DAYS} days, the first half warm-up)", DAYS) as tick:
        inputs = simulated_inputs(scenario, n=customers, seed=seed, progress=tick)
    checks = calibration.check(inputs.measured)
    console.print(_calibration_table(checks))
    report = render_report(inputs, res.out / "calibration")
    summary = qs.write_summary(res, {"calibration": {c.target.name: {"measured": c.measured, "ok": c.ok}
                                                     for c in checks}})
    for p in res.promotions:
        console.print(f"promotion: {'[green]moved[/green]' if p.promoted else 'kept'} champion: {p.reason}")
    challenger = "none" if res.challenger is None else (f"[bold]{res.challenger.policy}[/bold] "
                                                         f"(version {res.challenger.version})")
    console.print(f"\nchampion: [bold]{res.champion.policy}[/bold] (version {res.champion.version}), "
                  f"challenger: {challenger} of registered model nba-policy")
    console.print(f"Everything is under [bold]{res.out}[/bold]: {summary.name}, decision logs, plots/, "
                  f"calibration/{report.name}, the MLflow store. Browse the runs with\n"
                  f"  [bold]mlflow ui --backend-store-uri {res.tracking_uri}[/bold]\n"
                  f"Serve the champion with\n  [bold]nba serve --tracking-uri {res.tracking_uri}[/bold]\n"
                  f"Done in {time.perf_counter() - t0:.0f} s.")
    if not all(c.ok for c in checks):
        console.print("[yellow]some calibration figures are outside their tolerance at this population size[/yellow]")


def _quickstart_table(res) -> Table:
    """The quickstart's policies in 80 columns: evidence first, the exact value beside it."""
    from rich import box

    from nba.ope import RANK_STATISTIC
    from training.jobs import BELOW_LOGGING, RANK_BY, UNSUPPORTED

    t = Table(title=f"Policies on the evaluation log (customers unseen in training):\nvalue per decision, "
                    f"off-policy ({RANK_BY}, 95% interval), exact beside",
              box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), collapse_padding=True)
    for col in ("policy", "est.", "95% interval", "flag", "A/B", "exact", "role"):
        t.add_column(col, justify="left" if col in ("policy", "flag", "A/B", "role") else "right",
                     no_wrap=True)
    champion = res.champion.version
    challenger = None if res.challenger is None else res.challenger.version
    for r in sorted(res.rows, key=lambda r: (bool(r.flags), -getattr(r.estimate, RANK_STATISTIC))):
        e = r.estimate
        flag = {UNSUPPORTED: "unsupp", BELOW_LOGGING: "<logger"}.get(r.flags[0], r.flags[0]) if r.flags else ""
        guard = r.ab is not None and any(not g.passed for g in r.ab.guardrails)
        ab = "" if r.ab is None else ("won" if r.ab.promote else ("guard" if guard else "lost"))
        role = {champion: "champion", challenger: "challng"}.get(r.version, "")
        truth = "—" if r.truth is None else f"{r.truth:.3f}"
        t.add_row(r.policy, f"{e.value:.3f}", f"[{e.ci_low:.2f}, {e.ci_high:.2f}]", flag, ab, truth, role)
    lv = res.logging_value
    t.caption = (f"logging policy (BAU + exploration): {lv[0]:.3f} [{lv[1]:.2f}, {lv[2]:.2f}]"
                 + ("" if res.logging_truth is None else f", exact {res.logging_truth:.3f}")
                 + "\nflag: unsupp = no support in the log; <logger = worse than the logger"
                 + "\nA/B vs the champion: won (promoted), lost, guard (a guardrail failed)")
    return t


def _write_report(scenario, out: Path, customers: int, seed: int) -> Path:
    from training.calibration_report import DAYS, write_report

    with _progress("calibration report", DAYS) as tick:
        return write_report(scenario, out, n=customers, seed=seed, progress=tick)


@app.command()
def journeys(
    scenario: ScenarioOpt = None,
    policy: Annotated[str, typer.Option(help=f"one of: {', '.join(POLICIES)}")] = "business_as_usual",
    customers: Annotated[int, typer.Option(min=1)] = 10_000,
    days: Annotated[int | None, typer.Option(help="default: the scenario's horizon")] = None,
    seed: SeedOpt = 0,
) -> None:
    """Simulate customers' 90-day journeys under a policy and print their value (no contact beside it)."""
    sc = _load_scenario(scenario)
    pol = _policy(policy, sc)
    days = days or sc.horizon_days
    results = {policy: _journey_summary(sc, policy, pol, customers, days, seed)}
    if policy != "no_contact":
        results["no_contact"] = _journey_summary(sc, "no_contact", _policy("no_contact", sc), customers, days, seed)
    console.print(_value_table(sc, results, "no_contact"))



# ----------------------------------------------------------------------------- MLflow jobs
LogOpt = Annotated[str, typer.Option("--log", help="decision log URL (sqlite:///... or postgresql+psycopg://...)")]
RootOpt = Annotated[Path, typer.Option("--root", help="embedded MLflow store folder when MLFLOW_TRACKING_URI is unset")]
ParamOpt = Annotated[list[str] | None, typer.Option("--param", "-p", help="policy parameter KEY=VALUE (repeatable)")]
DEFAULT_LOG = "sqlite:///nba-runs/decisions.db"


@contextmanager
def _job():
    """Bad input ends with exit code 2 and the message; nothing else is caught."""
    from training.jobs import JobError

    try:
        yield
    except JobError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None


def _store(root: Path) -> None:
    from training.registry import use_store

    use_store(root)


def _checked(policy: str, param: list[str] | None, scenario: Path | None, root: Path) -> dict:
    """The policy's parameters, once policy, parameters and scenario are known good; then the store.
    Bad input stops here, before the MLflow store is created or touched."""
    from training import jobs

    params = jobs.parse_params(param)
    jobs.check_policy(policy, params)
    jobs.load_scenario(scenario)
    _store(root)
    return params


def _ensure_sqlite_dir(url: str) -> None:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="CSV or Parquet file of past decisions, one row each")],
    action: Annotated[str | None, typer.Option(
        help="column of the chosen action index (0 = no contact); with --deployment, or --channel/--offer")] = None,
    log: LogOpt = DEFAULT_LOG,
    deployment: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, help="deployment file (TOML/YAML): import onto it; attributes by name, context "
                                          "and eligible actions rebuilt from each customer's earlier rows")] = None,
    channel: Annotated[str | None, typer.Option(
        help="column of the channel name (with --deployment; channel and offer empty: no contact)")] = None,
    offer: Annotated[str | None, typer.Option(help="column of the offer name (with --deployment)")] = None,
    send_hour: Annotated[str | None, typer.Option(
        help="column of the local send hour, one of the deployment's slots (empty or 'now': now)")] = None,
    tz_offset: Annotated[str | None, typer.Option(
        help="column of the time zone: hours east of UTC or an IANA name (default: the ISO times' offsets)")] = None,
    opted_out: Annotated[str | None, typer.Option(help="column of 0/1 opt-outs (an opted_out event)")] = None,
    attribute: Annotated[list[str] | None, typer.Option(
        help="ATTRIBUTE=COLUMN where the file names an attribute differently (repeat)")] = None,
    allow_ineligible: Annotated[bool, typer.Option(
        help="keep rows whose action the deployment would not allow (added to their mask, counted)")] = False,
    context: Annotated[list[str] | None, typer.Option(help="numeric feature column (repeat, in order)")] = None,
    categorical: Annotated[list[str] | None, typer.Option(
        help="text column one-hot encoded as 'column=value' features (repeat); categories kept in the log")] = None,
    hashed: Annotated[list[str] | None, typer.Option(
        help="high-cardinality text column hashed into --hash-buckets one-hot features (repeat)")] = None,
    hash_buckets: Annotated[int, typer.Option(min=1, help="buckets per hashed column")] = 64,
    propensity: Annotated[str | None, typer.Option(
        help="column of the logging policy's probability of the action; omitted: estimated from the file")] = None,
    propensity_by: Annotated[list[str] | None, typer.Option(
        help="column to estimate the propensity within (e.g. a segment; repeat); default the whole file")] = None,
    time: Annotated[str | None, typer.Option(
        help="column of the decision time (hours since the epoch or ISO 8601)")] = None,
    time_default: Annotated[float | None, typer.Option(
        help="decision time of every row when there is no time column (hours since the epoch)")] = None,
    reward: Annotated[str | None, typer.Option(help="column of the reward (an empty cell: none)")] = None,
    decision_id: Annotated[str | None, typer.Option(help="column of unique decision ids (default file:row)")] = None,
    customer_id: Annotated[str | None, typer.Option(help="column of customer ids (default: one per row)")] = None,
    send_at: Annotated[str | None, typer.Option(help="column of the send time (default the decision time)")] = None,
    position: Annotated[str | None, typer.Option(
        help="column of the slot where the action was shown (integer >= 0); one feature 'position'")] = None,
    n_actions: Annotated[int | None, typer.Option(
        min=1, help="size of the action space (default the log's, or the largest action + 1)")] = None,
    policy: Annotated[str, typer.Option(help="name of the policy that made these decisions")] = "imported",
    format: Annotated[str | None, typer.Option(help="'csv' or 'parquet' (default from the suffix)")] = None,
) -> None:
    """Import a decision log kept elsewhere (CSV or Parquet), all or nothing; errors name row and column."""
    from training.importing import describe, import_command

    with _job():
        res = import_command(path, log, action=action, propensity=propensity, context=tuple(context or ()),
                             categorical=tuple(categorical or ()), hashed=tuple(hashed or ()),
                             hash_buckets=hash_buckets, time=time, time_default=time_default, reward=reward,
                             decision_id=decision_id, customer_id=customer_id, send_at=send_at, position=position,
                             n_actions=n_actions, propensity_by=tuple(propensity_by or ()), policy=policy,
                             format=format, deployment=deployment, channel=channel, offer=offer,
                             send_hour=send_hour, tz_offset=tz_offset, opted_out=opted_out,
                             attributes=tuple(attribute or ()), allow_ineligible=allow_ineligible)
    console.print(describe(res), highlight=False)


@app.command()
def simulate(
    log: LogOpt = DEFAULT_LOG,
    scenario: ScenarioOpt = None,
    policy: Annotated[str, typer.Option(help="logging policy (mixed with exploration)")] = "business_as_usual",
    epsilon: Annotated[float, typer.Option(help="share of uniform exploration")] = 0.2,
    holdout: Annotated[float, typer.Option(help="share of no-contact holdout")] = 0.05,
    decisions: Annotated[int, typer.Option(min=1)] = 20_000,
    seed: SeedOpt = 0,
    param: ParamOpt = None,
    deployment: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False,
        help="simulate a brand's deployment (TOML/YAML) instead of the scenario: --customers x --days decisions "
             "in its latent --world; --policy uniform_random, no_contact or a registered version of it")] = None,
    world: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, help="latent world file of the --deployment (default: its defaults)")] = None,
    customers: Annotated[int, typer.Option(min=1, help="customers of the --deployment")] = 2000,
    days: Annotated[int, typer.Option(min=1, help="days of the --deployment, one decision a day each")] = 14,
    root: RootOpt = Path("nba-runs"),
) -> None:
    """Produce a decision log: a logging policy decides on the simulated bandit view, or on a brand's deployment in
    a latent world (tracked in MLflow)."""
    from training import jobs

    if deployment is not None or world is not None:
        with _job():
            if deployment is None:
                raise jobs.JobError("world: a latent world simulates a --deployment; give its file")
            if scenario is not None or param:
                raise jobs.JobError("deployment: --scenario and --param are the scenario's; not with --deployment")
            jobs.load_world(world, jobs.load_deployment(deployment))  # bad files stop before the store is touched
            _store(root)
            _ensure_sqlite_dir(log)
            name = "uniform_random" if policy == "business_as_usual" else policy  # the default is the scenario's
            with _progress(f"simulate {customers:,} customers x {days} days", days) as tick:
                res = jobs.simulate_world(log, str(deployment), world_path=None if world is None else str(world),
                                          policy=name, epsilon=epsilon, holdout=holdout, customers=customers,
                                          days=days, seed=seed, progress=tick)
        console.print(f"logged {res.rows:,} decisions to [bold]{res.log_url}[/bold] (run {res.run_id})")
        return
    with _job():
        params = _checked(policy, param, scenario, root)
        _ensure_sqlite_dir(log)
        with _progress(f"simulate {decisions:,} decisions", -(-decisions // jobs.BANDIT_BATCH)) as tick:
            res = jobs.simulate(log, scenario_path=None if scenario is None else str(scenario), policy=policy,
                                epsilon=epsilon, holdout=holdout, decisions=decisions, seed=seed, params=params,
                                progress=tick)
    console.print(f"logged {res.rows:,} decisions to [bold]{res.log_url}[/bold] (run {res.run_id})")


@app.command()
def train(
    policy: Annotated[str, typer.Option(help="policy name (see nba.policies.POLICIES)")],
    source: Annotated[str, typer.Option(help="'simulator' or a decision log URL to learn from offline")] = "simulator",
    scenario: ScenarioOpt = None,
    decisions: Annotated[int, typer.Option(min=1, help="online decisions (bandits in the simulator)")] = 20_000,
    customers: Annotated[int, typer.Option(min=10, help="logged customers (offline learners in the simulator)")] = 4000,
    seed: SeedOpt = 0,
    param: ParamOpt = None,
    register: Annotated[bool, typer.Option(help="register the policy in the MLflow registry")] = True,
    challenger: Annotated[bool, typer.Option(
        "--challenger", help="point @challenger at the registered version (nba evaluate, then nba promote)")] = False,
    deployment: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False,
        help="deployment file (TOML/YAML) the --source log was imported onto: train on its actions and features "
             "and register a bundle that carries it (default: the deployment the log holds)")] = None,
    root: RootOpt = Path("nba-runs"),
) -> None:
    """Train a policy and log it to MLflow (registered as a new version of the policy model)."""
    from training import jobs, registry

    with _job():
        if challenger and not register:
            raise jobs.JobError("challenger: only a registered version can be the challenger (not with --no-register)")
        params = _checked(policy, param, scenario, root)
        if source != jobs.SIMULATOR:
            total = 1 if jobs.fits_offline(policy) else jobs.log_steps(source)
        elif jobs.fits_offline(policy):  # a day of journeys at a time
            total = _load_scenario(scenario).horizon_days
        else:
            total = -(-decisions // jobs.BANDIT_BATCH)
        with _progress(f"train {policy}", total) as tick:
            res = jobs.train(policy, source=source, scenario_path=None if scenario is None else str(scenario),
                             params=params, decisions=decisions, customers=customers, seed=seed,
                             register=register, progress=tick,
                             deployment_path=None if deployment is None else str(deployment))
    if challenger:
        registry.set_alias(registry.CHALLENGER, res.version)
    shown = ", ".join(f"{k} {v:.4g}" for k, v in res.metrics.items())
    console.print(f"trained [bold]{policy}[/bold]: {shown}; run {res.run_id}"
                  + (f", registered version {res.version}" if res.version else "")
                  + (" (@challenger)" if challenger else ""))


@app.command()
def evaluate(
    policy: Annotated[list[str], typer.Option(
        help="@alias, version, models:/ URI, bundle folder or rule-based name (repeat); on a log imported onto a "
             "deployment: its registered versions, no_contact or uniform_random")],
    log: LogOpt = DEFAULT_LOG,
    scenario: ScenarioOpt = None,
    tau: Annotated[float, typer.Option(help="switch-DR weight threshold")] = 20.0,
    bootstrap: Annotated[int, typer.Option(min=10)] = 200,
    seed: SeedOpt = 0,
    root: RootOpt = Path("nba-runs"),
) -> None:
    """Off-policy estimates (IPS, SNIPS, DM, DR, switch-DR, MIPS, MDR) on a decision log, with the exact value
    beside them when the log was simulated; a brand's log imported onto its deployment is evaluated on that
    deployment (its reward, no exact value)."""
    from training import jobs

    with _job():
        jobs.load_scenario(scenario)
        _store(root)
        res = jobs.evaluate(log, list(policy), scenario_path=None if scenario is None else str(scenario), tau=tau,
                            n_bootstrap=bootstrap, seed=seed, say=console.print)
    console.print(_estimates_table(res))


def _estimates_table(res) -> Table:
    from training.jobs import PROPENSITY_ESTIMATED, RANK_BY

    t = Table(title="off-policy estimates per decision (95% bootstrap intervals)")
    for col in ("policy", "estimator", "estimate", "95% CI", "ESS", "true value"):
        t.add_column(col, justify="left" if col in ("policy", "estimator") else "right")
    for label, est in res.estimates.items():
        truth = "—" if res.truth is None else f"{res.truth[label]:.3f}"
        for name, e in est.items():
            t.add_row(label, name, f"{e.value:.3f}", f"[{e.ci_low:.3f}, {e.ci_high:.3f}]", f"{e.ess:,.0f}", truth)
    notes = []
    if res.deployment is not None:
        notes.append(f"deployment {res.deployment.name!r} ({res.deployment.digest[:19]}..), rewarded by its rule; "
                     "true value: none, a brand's log has no simulator behind it")
    if res.propensity == PROPENSITY_ESTIMATED:
        notes.append(f"propensity: estimated at import for {res.propensity_estimated_share:.0%} of the decisions, "
                     "not logged: these estimates rest on that estimate")
    notes.append(f"ranked by {RANK_BY} (flagged last): {', '.join(res.ranked())}; the logging policy's own value "
                 f"{res.logging_value[0]:.3f}")
    t.caption = "\n".join(notes)
    return t


@app.command()
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
    truth: Annotated[bool, typer.Option(help="simulated: also run both policies on everyone for the exact effects "
                                             "(twice the challenger's work)")] = True,
    guardrail: Annotated[list[str] | None, typer.Option(
        help="guardrail '[name=]metric:margin[%][:higher]' or JSON (repeatable; 'none': no guardrail); default: "
             "opt-out rate opted_out:0.005, churn rate churned:0.01, sends per customer sent:100%")] = None,
    require: Annotated[str, typer.Option(help="what the primary metric must show to promote: 'better' "
                                              "(significantly) or 'not_worse' (no harm shown)")] = "better",
    out: Annotated[Path, typer.Option(help="report folder")] = Path("nba-runs/ab"),
    seed: SeedOpt = 0,
    root: RootOpt = Path("nba-runs"),
) -> None:
    """A/B test champion against challenger (simulated, or from a logged experiment) with an
    always-valid sequential test and non-inferiority guardrails; writes the report and tags the run
    with the verdict (promote or not, and why)."""
    from training import jobs

    with _job():
        jobs.load_scenario(None)
        guardrails = None if not guardrail else ([] if guardrail == ["none"] else list(guardrail))
        jobs.check_guardrails(guardrails, source)
        _store(root)
        with _progress(f"A/B {experiment}", days) as tick:
            res = jobs.ab(champion=champion, challenger=challenger, source=source, experiment=experiment,
                          customers=customers, days=days, pre_days=pre_days, split=split, alpha=alpha, seed=seed,
                          guardrails=guardrails, truth=truth, require=require, out=out, progress=tick)
    console.print(_ab_table(res) if res.guardrails else "no guardrail declared: the primary metric alone decides")
    truth = "" if res.true_effect is None else f" (true effect {res.true_effect:+.3f})"
    console.print(f"challenger - champion: {res.diff:+.3f} per customer over {res.days} days, always-valid interval "
                  f"[{res.ci_low:+.3f}, {res.ci_high:+.3f}], p = {res.p_value:.4g}{truth}")
    colour = "green" if res.promote else "red"
    console.print(f"{res.verdict}\n[{colour}]{res.reason}[/{colour}]\nreport {res.report}; run {res.run_id}")


def _ab_table(res) -> Table:
    t = Table(title="guardrails (non-inferiority, always valid, at the test's alpha)")
    for col in ("guardrail", "champion", "challenger", "worsening", "upper bound", "margin", "status", "true"):
        t.add_column(col, justify="left" if col == "guardrail" else "right")
    for g in res.guardrails:
        gd = g.guardrail
        fmt = (lambda x: f"{100 * x:+.1f}%") if gd.relative else (lambda x: f"{x:+.4g}")
        true = "—" if res.true_worsening is None else fmt(res.true_worsening[gd.name])
        colour = "green" if g.passed else "red"
        t.add_row(f"{gd.name} ({gd.metric})", f"{g.mean_control:.4g}", f"{g.mean_treatment:.4g}", fmt(g.worsening),
                  fmt(g.bound), fmt(g.margin), f"[{colour}]{g.status}[/{colour}]", true)
    return t


@app.command()
def promote(
    metric: Annotated[str, typer.Option(help="estimator whose tags decide when no A/B run is given")] = "dr",
    ab_run: Annotated[str | None, typer.Option(help="id of a finished `nba ab` run whose verdict decides")] = None,
    predicted_lift: Annotated[float | None, typer.Option(
        help="off-policy estimate of challenger - champion, value per decision, recorded beside the A/B's")] = None,
    predicted_low: Annotated[float | None, typer.Option(help="its interval's lower end")] = None,
    predicted_high: Annotated[float | None, typer.Option(help="its interval's upper end")] = None,
    rollback: Annotated[bool, typer.Option("--rollback", help="return champion to the previous version")] = False,
    root: RootOpt = Path("nba-runs"),
) -> None:
    """Move the champion alias to the challenger when the A/B verdict (or, without one, the evaluation)
    supports it, recording the predicted lift beside the realised one; or roll back."""
    from training import jobs

    with _job():
        from nba.ope import ESTIMATORS

        if metric not in ESTIMATORS:  # before the store is touched
            raise jobs.JobError(f"metric: unknown estimator {metric!r}; valid: {', '.join(ESTIMATORS)}")
        if (predicted_low is None) != (predicted_high is None):
            raise jobs.JobError("predicted_ci: give both --predicted-low and --predicted-high")
        ci = None if predicted_low is None else (predicted_low, predicted_high)
        _store(root)
        res = jobs.promote(metric=metric, ab_run=ab_run or None, rollback=rollback, predicted_lift=predicted_lift,
                           predicted_ci=ci)
    colour = "green" if res.promoted else "yellow"
    console.print(f"[{colour}]{'moved' if res.promoted else 'unchanged'}[/{colour}]: {res.reason}; "
                  f"champion is version {res.champion}")
    if not (ab_run or rollback) and jobs.evidence_propensity() == jobs.PROPENSITY_ESTIMATED:
        console.print("[yellow]note: the off-policy evidence rests on propensities estimated at import, not "
                      "logged: confirm with an A/B test (nba ab)[/yellow]")


@app.command()
def promotions(
    out: Annotated[Path, typer.Option(help="report folder")] = Path("nba-runs/promotions"),
    root: RootOpt = Path("nba-runs"),
) -> None:
    """Report over every promotion in the tracking store: the off-policy predicted lift against the lift
    the A/B test realised (PNG, Markdown, HTML; logged to MLflow)."""
    from training import jobs

    with _job():
        _store(root)
        res = jobs.promotions_report(out=out)
    console.print(f"{res.n} promotion(s) with a predicted and a realised lift; report {res.report}; run {res.run_id}")


@scenario_app.command("show")
def scenario_show(scenario: ScenarioOpt = None) -> None:
    """Print the fully resolved scenario (defaults merged) as JSON."""
    console.print_json(json.dumps(_load_scenario(scenario).to_dict(), default=str))


@scenario_app.command("check")
def scenario_check(path: Annotated[Path, typer.Argument(help="TOML/YAML scenario file")]) -> None:
    """Validate a scenario file; exit 2 with the offending field named when it is invalid."""
    sc = _load_scenario(path)
    console.print(f"[green]ok[/green]: scenario {sc.name!r}, {sc.action_space.n_actions} actions")


def _load_deployment(path: Path | None):
    from nba.deployment import Deployment, DeploymentError

    if path is None:
        return _load_scenario(None).deployment()
    try:
        return Deployment.load(path)
    except DeploymentError as e:
        console.print(f"[red]invalid deployment:[/red] {e}")
        raise typer.Exit(2) from None


@deployment_app.command("check")
def deployment_check(path: Annotated[Path, typer.Argument(help="TOML/YAML deployment file")]) -> None:
    """Validate a deployment file and summarise it with its digest; exit 2 naming the offending field."""
    console.print(_load_deployment(path).summary(), highlight=False, soft_wrap=True)


@deployment_app.command("show")
def deployment_show(path: Annotated[Path | None, typer.Argument(
        help="TOML/YAML deployment file (default: the built-in scenario as a deployment)")] = None) -> None:
    """Print a deployment's canonical content (what its digest is taken of) as JSON."""
    d = _load_deployment(path)
    console.print_json(json.dumps({"digest": d.digest, **d.to_dict()}))


@deployment_app.command("update")
def deployment_update(
    path: Annotated[Path, typer.Argument(help="the deployment file with its new catalogue (TOML/YAML)")],
    log: LogOpt = DEFAULT_LOG,
) -> None:
    """Move a deployment's log onto a new version of its catalogue (offers added, removed, reordered or changed;
    the same attributes, channels and send slots): every decision keeps its channel, offer and slot, renumbered,
    in one transaction, so serving the new file on this log keeps every customer's history and caps."""
    from nba.log.importer import move_onto
    from training import jobs

    d = _load_deployment(path)
    with _job():
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
    console.print(f"moved {moved.decisions:,} decisions onto {d.name!r} ({moved.before[:19]}.. -> {moved.after[:19]}..,"
                  f" {d.action_space().n_actions} actions); offers added: {list(moved.added) or 'none'}, removed: "
                  f"{list(moved.removed) or 'none'}", highlight=False)


@scenario_app.command("report")
def scenario_report(
    scenario: ScenarioOpt = None,
    out: Annotated[Path, typer.Option(help="output folder of the calibration report")] = Path(
        "nba-runs/calibration"),
    customers: Annotated[int | None, typer.Option(
        "--n", "--customers", min=100,
        help="simulated customers (default: 20,000 for the calibration report, 2,000 beside a --log)")] = None,
    seed: SeedOpt = 0,
    log: Annotated[str | None, typer.Option(
        "--log", help="decision log URL (sqlite:///decisions.db, postgresql+psycopg://...): print its own figures "
                      "beside the scenario's under business as usual, instead of the calibration report")] = None,
    since: Annotated[str | None, typer.Option(
        help="with --log: decisions from this time on (ISO 8601 date or date-time; UTC unless it has an offset)",
    )] = None,
    until: Annotated[str | None, typer.Option(help="with --log: decisions before this time (as --since)")] = None,
    days: Annotated[int | None, typer.Option(
        min=1, help="with --log: days the scenario's run logs (default: the days the log spans, at most 90)")] = None,
    warmup_days: Annotated[int, typer.Option(
        min=0, help="with --log: days simulated before the scenario's run logs (contact histories fill)")] = 28,
) -> None:
    """Write the calibration report (PNG plots + Markdown/HTML) of a scenario against its targets; with --log,
    print how far the scenario is from a decision log's own figures (funnel per channel, response by hour,
    contacts before a conversion, revenue concentration, contact rate)."""
    sc = _load_scenario(scenario)
    if log is None:
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
    with _progress(f"scenario {sc.name!r}: {n:,} customers, {warmup_days} + {days} days", warmup_days + days) as tick:
        theirs = log_report.scenario_figures(sc, customers=n, days=days, seed=seed, purpose=log_report.PURPOSE,
                                             warmup_days=warmup_days, progress=tick)
    where = sqlalchemy.make_url(log).render_as_string(hide_password=True)
    title = (f"log {where}: {mine.decisions:,} decisions, {mine.customers:,} customers, {mine.span_days} days\n"
             f"scenario {sc.name!r} under business as usual: {theirs.decisions:,} decisions, "
             f"{theirs.customers:,} customers, {days} days")
    typer.echo(log_report.render(log_report.compare(mine, theirs), title=title))
    typer.echo(f"close: within {log_report.TOLERANCE:.0%} of the scenario; noisy: further, but within sampling "
               f"noise;\nno data: a side has none, or fewer than {log_report.MIN_COUNT} sends or customers behind it.")
    if mine.hour_basis == "UTC":
        typer.echo("hours are UTC: the log's context carries no tz_offset feature.")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 3000,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow registry (env NBA_TRACKING_URI)")] = None,
    log_url: Annotated[str | None, typer.Option(help="decision log URL (env NBA_LOG_URL)")] = None,
    spool_dir: Annotated[str | None, typer.Option(
        help="write-behind: acknowledge once fsynced in a local spool here (env NBA_SPOOL_DIR; one worker)")] = None,
    deployment: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, help="a brand's deployment file: serve only its policies, requests carry its "
                                          "attributes (env NBA_DEPLOYMENT)")] = None,
) -> None:
    """Start the decision service (BentoML) on @champion; configured by NBA_* variables (serving/config.py)."""
    import os
    import sys

    if deployment is not None:
        _load_deployment(deployment)  # exit 2 naming the field before the server starts
    env = dict(os.environ, BENTOML_DO_NOT_TRACK="true", MLFLOW_DISABLE_TELEMETRY="true")
    env.update({k: v for k, v in (("NBA_TRACKING_URI", tracking_uri), ("NBA_LOG_URL", log_url),
                                  ("NBA_SPOOL_DIR", spool_dir),
                                  ("NBA_DEPLOYMENT", deployment and str(deployment.resolve()))) if v})
    # BentoML keeps its Prometheus files in its home and empties them at every start: one home per
    # instance, or a second service on this host wipes the first one's metrics
    cache = Path(env.get("NBA_CACHE_DIR") or "nba-runs/serving-cache")
    env.setdefault("BENTOML_HOME", str((cache / f"bentoml-{port}").resolve()))
    root = str(Path(__file__).resolve().parent.parent)
    os.execve(sys.executable, [sys.executable, "-m", "bentoml", "serve", "serving.service:DecisionService",
                               "--host", host, "--port", str(port), "--working-dir", root], env)


if __name__ == "__main__":
    app()
