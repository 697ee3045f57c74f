"""The ``nba`` command line: its command groups, each command's code in a module of its own group."""

from __future__ import annotations

import typer

from cli import jobs, quickstart, serve, worlds

app = typer.Typer(
    help="nba: next-best-action engine for omnichannel marketing.", no_args_is_help=True, add_completion=False
)
scenario_app = typer.Typer(help="Inspect, validate and calibrate simulator scenarios.", no_args_is_help=True)
app.add_typer(scenario_app, name="scenario")
deployment_app = typer.Typer(
    help="Validate and inspect a deployment: a brand's own world, declared once.", no_args_is_help=True
)
app.add_typer(deployment_app, name="deployment")

app.command()(quickstart.quickstart)
app.command()(worlds.journeys)
app.command("import")(jobs.import_)
app.command()(jobs.simulate)
app.command()(jobs.train)
app.command()(jobs.evaluate)
app.command()(jobs.ab)
app.command()(jobs.promote)
app.command()(jobs.promotions)
scenario_app.command("show")(worlds.scenario_show)
scenario_app.command("check")(worlds.scenario_check)
deployment_app.command("check")(worlds.deployment_check)
deployment_app.command("show")(worlds.deployment_show)
deployment_app.command("update")(worlds.deployment_update)
scenario_app.command("report")(worlds.scenario_report)
app.command()(serve.serve)


if __name__ == "__main__":
    app()
