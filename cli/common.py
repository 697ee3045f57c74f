"""What the ``nba`` commands share: the console, the common options, progress bars, and the way bad input
ends a command (exit code 2 and the message)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console()

ScenarioOpt = Annotated[Path | None, typer.Option("--scenario", "-s", help="TOML/YAML scenario (default: built-in)")]
SeedOpt = Annotated[int, typer.Option(min=0, help="random seed")]
LogOpt = Annotated[str, typer.Option("--log", help="decision log URL (sqlite:///... or postgresql+psycopg://...)")]
RootOpt = Annotated[Path, typer.Option("--root", help="embedded MLflow store folder when MLFLOW_TRACKING_URI is unset")]
ParamOpt = Annotated[list[str] | None, typer.Option("--param", "-p", help="policy parameter KEY=VALUE (repeatable)")]
DEFAULT_LOG = "sqlite:///nba-runs/decisions.db"


def load_scenario(path: Path | None):
    """The scenario at ``path`` (default: the built-in one); exit 2 naming the bad field."""
    from envs.scenario import Scenario, ScenarioError

    try:
        return Scenario.default() if path is None else Scenario.load(path)
    except ScenarioError as e:
        console.print(f"[red]invalid scenario:[/red] {e}")
        raise typer.Exit(2) from None


def load_deployment(path: Path | None):
    """The deployment at ``path`` (default: the built-in scenario as one); exit 2 naming the bad field."""
    from nba.deployment import Deployment, DeploymentError

    if path is None:
        return load_scenario(None).deployment()
    try:
        return Deployment.load(path)
    except DeploymentError as e:
        console.print(f"[red]invalid deployment:[/red] {e}")
        raise typer.Exit(2) from None


@contextmanager
def progress_bar(description: str, total: int):
    """A progress bar of ``total`` steps; yields the function that advances it by one."""
    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*cols, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda _=None: bar.advance(task)


@contextmanager
def job_errors():
    """Bad input ends with exit code 2 and the message; nothing else is caught."""
    from training.jobs import JobError

    try:
        yield
    except JobError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None


def open_store(root: Path) -> None:
    """The MLflow store: MLFLOW_TRACKING_URI when set, else the embedded one under ``root``."""
    from training.registry import use_store

    use_store(root)


def checked_params(policy: str, param: list[str] | None, scenario: Path | None, root: Path) -> dict:
    """The policy's parameters, once policy, parameters and scenario are known good; then the store.
    Bad input stops here, before the MLflow store is created or touched."""
    from training import jobs

    params = jobs.parse_params(param)
    jobs.check_policy(policy, params)
    jobs.build_policy(policy, jobs.load_scenario(scenario), params)  # its values too (num_leaves=1, say)
    open_store(root)
    return params


def ensure_sqlite_dir(url: str) -> None:
    """The folder of a SQLite log's file, created if missing."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
