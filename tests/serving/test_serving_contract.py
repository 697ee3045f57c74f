"""The service against its own OpenAPI spec, with schemathesis (``bench/fuzz.py`` with few examples): every
phase, stateful included (decide, then feedback on the returned decision), a fixed seed, on 127.0.0.1; no
5xx, every answer's status, content type and body as the spec states. ``bench/fuzz.py`` runs it longer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_service_keeps_its_contract(tmp_path):
    out = tmp_path / "fuzz.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fuzz.py"), "--examples", "15", "--seed", "7", "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["cases"] >= 300 and result["cases_failed"] == 0 and result["errors"] == 0, result
    assert result["server_errors"] == 0 and result["server_tracebacks"] == 0, result
    assert result["statuses"].get("200", 0) >= 50, "the run must reach real decisions, not only refusals"
