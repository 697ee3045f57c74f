"""``nba serve``: the decision service (BentoML) in place of this process."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import load_deployment


def serve(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port")] = 3000,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow registry (env NBA_TRACKING_URI)")] = None,
    log_url: Annotated[str | None, typer.Option(help="decision log URL (env NBA_LOG_URL)")] = None,
    spool_dir: Annotated[
        str | None,
        typer.Option(
            help="write-behind: acknowledge once fsynced in a local spool here (env NBA_SPOOL_DIR; one worker)"
        ),
    ] = None,
    deployment: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="a brand's deployment file: serve only its policies, requests carry its "
            "attributes (env NBA_DEPLOYMENT)",
        ),
    ] = None,
) -> None:
    """Start the decision service (BentoML) on @champion; configured by NBA_* variables (serving/config.py)."""
    import os
    import sys

    if deployment is not None:
        load_deployment(deployment)  # exit 2 naming the field before the server starts
    env = dict(os.environ, BENTOML_DO_NOT_TRACK="true", MLFLOW_DISABLE_TELEMETRY="true")
    env.update(
        {
            k: v
            for k, v in (
                ("NBA_TRACKING_URI", tracking_uri),
                ("NBA_LOG_URL", log_url),
                ("NBA_SPOOL_DIR", spool_dir),
                ("NBA_DEPLOYMENT", deployment and str(deployment.resolve())),
            )
            if v
        }
    )
    # BentoML keeps its Prometheus files in its home and empties them at every start: one home per
    # instance, or a second service on this host wipes the first one's metrics
    cache = Path(env.get("NBA_CACHE_DIR") or "nba-runs/serving-cache")
    env.setdefault("BENTOML_HOME", str((cache / f"bentoml-{port}").resolve()))
    root = str(Path(__file__).resolve().parent.parent)
    os.execve(
        sys.executable,
        [
            sys.executable,
            "-m",
            "bentoml",
            "serve",
            "serving.service:DecisionService",
            "--host",
            host,
            "--port",
            str(port),
            "--working-dir",
            root,
        ],
        env,
    )
