"""Schemathesis against the decision service's own OpenAPI spec: every phase (examples, coverage, fuzzing,
stateful: decide, then feedback on the decision it returned), a fixed seed, on 127.0.0.1.

Checks: ``not_a_server_error`` (no 5xx), ``response_schema_conformance`` (every answer matches the
spec), ``status_code_conformance`` (every status is documented) and ``content_type_conformance``.
Prints the cases run, the 5xx answers, the failures per check and the answers by status.

    python bench/fuzz.py [--examples 400] [--seed 1] [--json out.json]
    python bench/fuzz.py --url http://127.0.0.1:3000 --token T   # a service already running

Without ``--url`` it starts ``nba serve`` (SQLite log, a fresh registry holding business as usual,
with a bearer token) and stops it afterwards. The contract test in CI runs the same with few examples.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKS = ("not_a_server_error", "response_schema_conformance", "status_code_conformance", "content_type_conformance")
PHASES = ("examples", "coverage", "fuzzing", "stateful")
TOKEN = "fuzz-token"


def fuzz(url: str, examples: int, seed: int, token: str | None, workdir: Path) -> dict:
    """Run schemathesis against the service at ``url``; its figures (and the CLI's exit code)."""
    exe = Path(sys.executable).with_name("schemathesis")
    report = workdir / "schemathesis"
    cmd = [
        str(exe),
        "run",
        f"{url}/docs.json",
        "--checks",
        ",".join(CHECKS),
        "--phases",
        ",".join(PHASES),
        "--max-examples",
        str(examples),
        "--seed",
        str(seed),
        "--workers",
        "1",
        "--continue-on-failure",
        "--report",
        "json,har",
        "--report-dir",
        str(report),
        "--no-color",
    ]
    if token:
        cmd += ["--header", f"Authorization: Bearer {token}"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, env=dict(os.environ, NO_COLOR="1"))
    took = time.perf_counter() - started
    run = json.loads(next(report.glob("json-*.json")).read_text())
    statuses: Counter[int] = Counter()
    for har in report.glob("har-*.json"):
        for entry in json.loads(har.read_text())["log"]["entries"]:
            statuses[int(entry["response"]["status"])] += 1
    by_check: Counter[str] = Counter()
    for failure in run.get("failures", []):
        by_check[failure.get("check", failure.get("title", "unknown"))] += 1
    return {
        "exit_code": proc.returncode,
        "seconds": round(took, 1),
        "cases": run["test_cases"]["generated"],
        "cases_failed": run["test_cases"]["with_failures"],
        "errors": len(run.get("errors", [])),
        "failures": dict(by_check),
        "server_errors": sum(n for s, n in statuses.items() if s >= 500),
        "statuses": dict(sorted(statuses.items())),
        "output": proc.stdout[-6000:] + proc.stderr[-2000:],
    }


def table(result: dict) -> str:
    rows = [
        ("cases run", result["cases"]),
        ("cases failed", result["cases_failed"]),
        ("5xx answers", result["server_errors"]),
        *((f"failures: {c}", result["failures"].get(c, 0)) for c in CHECKS),
        ("errors (could not run)", result["errors"]),
        ("seconds", result["seconds"]),
        ("answers by status", ", ".join(f"{s}: {n}" for s, n in result["statuses"].items())),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def serve_and_fuzz(examples: int, seed: int, workdir: Path) -> dict:
    """Start ``nba serve`` on a fresh registry and SQLite log, fuzz it, stop it."""
    sys.path.insert(0, str(ROOT / "bench"))
    from serve import make_registry

    sys.path.insert(0, str(ROOT / "tests" / "serving"))
    sys.path.insert(0, str(ROOT))  # tests.support, which svc_helpers imports
    from svc_helpers import start_server

    uri = make_registry(workdir / "registry", "business_as_usual")
    server = start_server(
        workdir,
        {"NBA_TRACKING_URI": uri, "NBA_LOG_URL": f"sqlite:///{workdir}/decisions.db", "NBA_TOKEN": TOKEN},
        via="nba",
    )
    try:
        result = fuzz(server.url, examples, seed, TOKEN, workdir)
    finally:
        server.stop()
    log = server.log_text()
    result["server_tracebacks"] = log.count("Traceback")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=400, help="examples per operation and phase")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--url", help="fuzz a running service instead of starting one")
    ap.add_argument("--token", help="its bearer token (with --url)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="nba-fuzz-") as tmp:
        workdir = Path(tmp)
        if args.url:
            result = fuzz(args.url.rstrip("/"), args.examples, args.seed, args.token, workdir)
        else:
            result = serve_and_fuzz(args.examples, args.seed, workdir)
    print(f"schemathesis, {args.examples} examples per operation and phase, seed {args.seed}:")
    print(table(result))
    if result["cases_failed"] or result["server_errors"] or result["errors"] or result["exit_code"]:
        print(result["output"])
    if args.json:
        args.json.write_text(json.dumps({k: v for k, v in result.items() if k != "output"}, indent=2))
    sys.exit(0 if result["exit_code"] == 0 and not result["server_errors"] else 1)


if __name__ == "__main__":
    main()
