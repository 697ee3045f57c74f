"""``nba quickstart``: end to end on the embedded defaults, with its tables."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.common import SeedOpt, console, job_errors, progress_bar
from training.quickstart import AB_CUSTOMERS, AB_DAYS, PRODUCTION


def quickstart(
    out: Annotated[Path, typer.Option(help="folder that receives everything the run writes")] = Path(
        "nba-runs/quickstart"
    ),
    customers: Annotated[
        int,
        typer.Option(
            min=100, help="simulated customers of the calibration check (a tenth of them for fitted-Q's journeys)"
        ),
    ] = 20_000,
    decisions: Annotated[int, typer.Option(min=2000, help="decisions in the training log")] = 30_000,
    ab_customers: Annotated[int, typer.Option(min=100, help="customers of each A/B test")] = AB_CUSTOMERS,
    ab_days: Annotated[int, typer.Option(min=2, help="days of each A/B test")] = AB_DAYS,
    seed: SeedOpt = 0,
) -> None:
    """End to end on the embedded defaults: simulate decision logs, train and register every policy,
    evaluate them off-policy and against the truth, set champion and challenger, check calibration."""
    from envs import calibration
    from envs.scenario import Scenario
    from training import jobs
    from training import quickstart as qs

    with job_errors():
        jobs.writable_folder(out)
    t0 = time.perf_counter()
    scenario = Scenario.default()
    space = scenario.action_space
    console.rule("[bold]nba quickstart")
    console.print(
        f"scenario [bold]{scenario.name}[/bold]: {len(scenario.segments)} segments, "
        f"{scenario.feature_spec.dim} observation features;\n{space.n_actions} actions = "
        f"{len(scenario.channels)} channels x {len(scenario.contents)} contents x {space.n_slots} send slots "
        "+ no contact"
    )

    def progress(description: str, total: int):
        return progress_bar(description, total)

    res = qs.run(
        out,
        decisions=decisions,
        eval_decisions=max(2000, decisions * 2 // 3),
        customers=customers // 10,
        seed=seed,
        ab_customers=ab_customers,
        ab_days=ab_days,
        progress=progress,
        say=console.print,
    )
    console.print(_quickstart_table(res))
    from training.calibration_report import DAYS, render_report, simulated_inputs

    with progress_bar(f"calibration run ({DAYS} days, the first half warm-up)", DAYS) as tick:
        inputs = simulated_inputs(scenario, n=customers, seed=seed, progress=tick)
    checks = calibration.check(inputs.measured)
    console.print(_calibration_table(checks))
    report = render_report(inputs, res.out / "calibration")
    summary = qs.write_summary(
        res, {"calibration": {c.target.name: {"measured": c.measured, "ok": c.ok} for c in checks}}
    )
    for p in res.promotions:
        console.print(f"promotion: {'[green]moved[/green]' if p.promoted else 'kept'} champion: {p.reason}")
    challenger = (
        "none"
        if res.challenger is None
        else (f"[bold]{res.challenger.policy}[/bold] (version {res.challenger.version})")
    )
    console.print(
        f"\nchampion of registered model nba-policy: [bold]{res.champion.policy}[/bold] "
        f"(version {res.champion.version})\nchallenger: {challenger}"
    )
    console.print(
        f"Everything is under [bold]{res.out}[/bold]: {summary.name}, decision logs, plots/, "
        f"calibration/{report.name}, the MLflow store. Browse the runs with"
    )
    # a command is never broken over two lines (the terminal may fold it, a copy keeps it whole)
    console.print(f"  [bold]mlflow ui --backend-store-uri {res.tracking_uri}[/bold]", soft_wrap=True)
    console.print("Serve the champion with")
    console.print(f"  [bold]nba serve --tracking-uri {res.tracking_uri}[/bold]", soft_wrap=True)
    console.print(f"Done in {time.perf_counter() - t0:.0f} s.")
    if not all(c.ok for c in checks):
        console.print("[yellow]some calibration figures are outside their tolerance at this population size[/yellow]")


def _quickstart_table(res) -> Table:
    """The quickstart's policies in 80 columns: evidence first, the exact value beside it."""
    from rich import box

    from nba.ope import RANK_STATISTIC
    from nba.surrogate import ESTIMATOR as OPENS
    from training.jobs import BELOW_LOGGING, IN_SAMPLE, RANK_BY, UNSUPPORTED

    t = Table(
        title=f"Policies on the evaluation log (customers unseen in training):\nvalue per decision, "
        f"off-policy ({RANK_BY}, 95% interval), exact beside",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )
    for col in ("policy", "est.", "95% interval", "lift", "flag", "A/B", "exact", "role"):
        t.add_column(col, justify="left" if col in ("policy", "flag", "A/B", "role") else "right", no_wrap=True)
    champion = res.champion.version
    challenger = None if res.challenger is None else res.challenger.version
    short = {UNSUPPORTED: "unsup", BELOW_LOGGING: "<log", IN_SAMPLE: "insmp"}
    for r in sorted(res.rows, key=lambda r: (bool(r.flags), -getattr(r.estimate, RANK_STATISTIC))):
        e = r.estimate
        flag = short.get(r.flags[0], r.flags[0]) if r.flags else ""
        guard = r.ab is not None and any(not g.passed for g in r.ab.guardrails)
        passed = "won" if r.ab is not None and r.ab.winner == "challenger" else "pass"
        ab = "" if r.ab is None else (passed if r.ab.promote else ("guard" if guard else "lost"))
        role = {champion: "champion", challenger: "challenger"}.get(r.version, "")
        truth = "—" if r.truth is None else f"{r.truth:.3f}"
        low = "" if r.lift is None or r.policy == PRODUCTION else f"{r.lift.ci_low:+.2f}"
        low += "*" if low and r.lift.estimator == OPENS else ""
        t.add_row(r.policy, f"{e.value:.2f}", f"[{e.ci_low:.2f}, {e.ci_high:.2f}]", low, flag, ab, truth, role)
    lv = res.logging_value
    twins = ", ".join(f"{r.policy} = {r.same_as}" for r in res.rows if r.same_as is not None)
    t.caption = (
        f"logging policy (BAU + exploration): {lv[0]:.3f} [{lv[1]:.2f}, {lv[2]:.2f}]"
        + ("" if res.logging_truth is None else f", exact {res.logging_truth:.3f}")
        + "\nlift: 95% lower bound of the paired lift over business as usual"
        + (
            "\n  * a change of send slot alone, read through the opens"
            if any(r.lift is not None and r.lift.estimator == OPENS for r in res.rows)
            else ""
        )
        + "\nflag: unsup = no support in the log; <log = worse than the logger"
        + ("; insmp = learned from this log" if any(IN_SAMPLE in r.flags for r in res.rows) else "")
        + "\nA/B vs the champion: won = better, pass = no harm shown (both promote),"
        + "\nlost, guard = a guardrail failed"
        + (f"\nsame decisions, one A/B: {twins}" if twins else "")
    )
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
