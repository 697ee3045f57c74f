"""`bentoml build` turns bentofile.yaml into a Bento offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bentoml_build_offline(tmp_path):
    env = dict(
        os.environ, BENTOML_HOME=str(tmp_path / "bentoml"), BENTOML_DO_NOT_TRACK="true", MLFLOW_DISABLE_TELEMETRY="true"
    )
    r = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "--output", "tag"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    bentos = list((tmp_path / "bentoml" / "bentos" / "nba").glob("*/bento.yaml"))
    assert len(bentos) == 1
    src = bentos[0].parent / "src"
    assert (src / "serving" / "service.py").exists() and (src / "nba" / "policies" / "base.py").exists()
    assert not (src / "tests").exists()
    assert "serving.service:DecisionService" in bentos[0].read_text()
