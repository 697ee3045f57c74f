"""Reliability drill: every hostile test run against the decision service, rerun in one go, one table.

Each drill starts the real service (``nba serve`` on 127.0.0.1) on a registry made for this run and a
log of its own, and checks what a hostile tester checked:

1. **fuzz**: schemathesis against the service's own spec (``bench/fuzz.py``): no 5xx, no failed case;
2. **sustained load**: 8 clients posting ``/decide`` (random customers, segments and time zones) to a
   SQLite write-through service: no error, worker RSS and ``/metrics`` size bounded;
3. **kill -9**: SIGKILL under load (the worker, or the whole process tree then a restart on the same
   log and spool) in write-through and write-behind mode on SQLite and PostgreSQL: no acknowledged
   decision missing from the log;
4. **database outage**: PostgreSQL behind a TCP proxy the drill cuts and restores; write-through answers
   fast 503s, logs the outage once and no traceback, then recovers; write-behind keeps acknowledging,
   answers feedback on a spooled decision within its deadline and loses nothing;
5. **alias flip**: ``@champion`` moves to another version under load: no failed request, the new
   version served within 30 s;
6. **cap race**: two instances on one PostgreSQL log, 16 clients deciding for 5 customers at the same
   ``now``: the logged sends keep every contact cap and the minimum gap (``nba.eligibility``).

``--fast`` (the CI part) runs short durations and two of the eight kill combinations, and leaves the
fuzz drill to CI's contract test (``tests/serving/test_serving_contract.py``); the default run takes a
few minutes. PostgreSQL drills need ``NBA_TEST_POSTGRES`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``): unreachable, they are skipped, or failed when
``CI`` is set. Exits 1 when a drill fails.

    python bench/reliability.py [--fast] [--json out.json] [--only kill] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "serving"))
sys.path.insert(0, str(ROOT))  # tests.support, which svc_helpers imports
from fuzz import serve_and_fuzz  # noqa: E402
from serve import Payloads, load, make_registry  # noqa: E402
from svc_helpers import PG_URL, Server, TcpProxy, customer, postgres_or_skip, start_server  # noqa: E402

from nba.log.store import DecisionLog  # noqa: E402

NOW = "2025-06-10T08:00:00Z"  # the cap race's one moment
FEEDBACK_WAIT_S = 2.0  # write-behind: longest a feedback call waits for its spooled decision


@dataclass
class Row:
    """One figure of a drill; ``ok`` is None for a figure reported without a pass mark."""

    measured: str
    result: str
    ok: bool | None = None


@dataclass
class Drill:
    """One drill in one mode, its figures and verdict."""

    name: str
    mode: str
    postgres: bool = False
    rows: list[Row] = field(default_factory=list)
    status: str = "pass"  # pass, FAIL or skip
    seconds: float = 0.0
    error: str = ""

    def check(self, measured: str, result: object, ok: bool) -> None:
        self.rows.append(Row(measured, _fmt(result), bool(ok)))
        if not ok:
            self.status = "FAIL"

    def info(self, measured: str, result: object) -> None:
        self.rows.append(Row(measured, _fmt(result)))


def _fmt(x: object) -> str:
    if isinstance(x, float):
        return f"{x:,.2f}" if abs(x) < 100 else f"{x:,.0f}"
    if isinstance(x, int) and not isinstance(x, bool):
        return f"{x:,}"
    return str(x)


@dataclass
class Context:
    """What every drill shares: the run's length, its directory, the registry and PostgreSQL."""

    fast: bool
    tmp: Path
    registry: str  # MLflow URI
    versions: dict[str, str]  # policy -> registered version; business_as_usual is @champion
    pg_url: str | None
    pg_problem: str

    def workdir(self, name: str) -> Path:
        path = self.tmp / name.replace(" ", "-").replace("/", "-")
        path.mkdir(parents=True)
        return path

    def start(self, tmp: Path, env: dict[str, str], spool: bool = False, wait: bool = True) -> Server:
        """``nba serve`` on the run's registry, configured by ``env`` (NBA_* variables)."""
        args = ["--spool-dir", str(tmp / "spool")] if spool else []
        return start_server(tmp, {"NBA_TRACKING_URI": self.registry, **env}, via="nba", args=args, wait=wait)

    def pg_namespace(self, name: str) -> str:
        return f"rel{name}{os.getpid()}_{uuid.uuid4().hex[:6]}"


def build_registry(root: Path) -> tuple[str, dict[str, str]]:
    """A fresh registry: business_as_usual as @champion (bench/serve.py) and uniform_random as
    @challenger, the alias flip's target and the cap race's policy."""
    import mlflow

    from envs.scenario import Scenario
    from nba.policies import create
    from nba.serialization import Bundle
    from training.registry import MODEL_NAME, log_policy, set_alias

    os.environ.pop("MLFLOW_TRACKING_URI", None)  # use_store would take it over a fresh store
    with contextlib.redirect_stdout(sys.stderr):
        uri = make_registry(root, "business_as_usual")
        champion = mlflow.MlflowClient().get_model_version_by_alias(MODEL_NAME, "champion").version
        sc = Scenario.default()
        policy = create("uniform_random", sc.action_space, tuple(sc.segments), dim=sc.feature_spec.dim)
        with mlflow.start_run():
            info = log_policy(Bundle(policy, sc.feature_spec, sc.lifecycle, sc.contact))
        set_alias("challenger", info.registered_model_version)  # what the cap race serves
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    return uri, {"business_as_usual": str(champion), "uniform_random": str(info.registered_model_version)}


def set_champion(uri: str, version: str) -> None:
    import mlflow

    from training.registry import set_alias

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    set_alias("champion", version)
    os.environ.pop("MLFLOW_TRACKING_URI", None)


def logged_ids(url: str, namespace: str | None, want: list[str], timeout: float = 30.0) -> set[str]:
    """The decision ids in the log, once it holds ``want`` (or after ``timeout`` s: a write-behind log may
    still be replaying)."""
    deadline = time.time() + timeout
    with DecisionLog(url, namespace=namespace) as log:
        while True:
            ids = set(log.read().decision_id.tolist()) if log.layout() is not None else set()
            if set(want) <= ids or time.time() > deadline:
                return ids
            time.sleep(0.3)


def rss_mb(server: Server) -> float:
    """Resident memory of the server's workers (its child processes), MB."""
    total = 0
    for p in psutil.Process(server.proc.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total / 2**20


def serves(server: Server) -> bool:
    with server.client() as c:
        return c.post("/decide", json=customer()).status_code == 200


# ---------------------------------------------------------------------------------------------- drills
def drill_fuzz(ctx: Context, d: Drill) -> None:
    examples = 10 if ctx.fast else 100
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # else its registry would be the one set there, not a fresh one
    r = serve_and_fuzz(examples, 1, ctx.workdir("fuzz"))
    d.info("examples per operation and phase", examples)
    d.check("cases run", r["cases"], r["cases"] > 0)
    d.check("5xx answers", r["server_errors"], r["server_errors"] == 0)
    d.check("failed cases", r["cases_failed"], r["cases_failed"] == 0 and r["exit_code"] == 0)
    d.check("errors (could not run)", r["errors"], r["errors"] == 0)
    d.check("server tracebacks", r["server_tracebacks"], r["server_tracebacks"] == 0)
    if d.status != "pass":
        d.error = r["output"][-3000:]


def drill_load(ctx: Context, d: Drill) -> None:
    seconds = 5.0 if ctx.fast else 60.0
    tmp = ctx.workdir("load")
    server = ctx.start(tmp, {"NBA_LOG_URL": f"sqlite:///{tmp}/decisions.db"})
    try:
        port = int(server.url.rsplit(":", 1)[1])
        payloads = Payloads(seed=3)
        asyncio.run(load(port, "/decide", payloads.one, 8, 1.0))  # warm-up: first requests, caches
        rss0, m0 = rss_mb(server), httpx.get(f"{server.url}/metrics")
        r = asyncio.run(load(port, "/decide", payloads.one, 8, seconds))
        rss1, m1 = rss_mb(server), httpx.get(f"{server.url}/metrics")
    finally:
        server.stop()
    d.info("seconds at concurrency 8 (after 1 s warm-up)", seconds)
    d.info("requests", r["requests"])
    d.check("errors (non-200)", r["errors"], r["errors"] == 0 and r["requests"] > 0)
    d.info("requests/s", r["rps"])
    d.info("p99 latency, ms", r["p99_ms"])
    growth = rss1 - rss0
    rss = f"{rss0:.0f} -> {rss1:.0f} ({growth:+.0f})"
    if ctx.fast:  # a few seconds say nothing of a leak
        d.info("worker RSS start -> end, MB", rss)
    else:
        d.check("worker RSS start -> end, MB (growth < 50)", rss, growth < 50)
    d.check(
        "/metrics size start -> end, KB",
        f"{len(m0.content) / 1024:.1f} -> {len(m1.content) / 1024:.1f}",
        len(m1.content) - len(m0.content) < 50 * 1024,
    )
    counted = [b"nba_decisions_total{" in m.content for m in (m0, m1)]
    d.check(
        "/metrics answers with the decision counter, start and end",
        f"{m0.status_code} {m1.status_code}, {'yes' if all(counted) else 'no'}",
        m0.status_code == m1.status_code == 200 and all(counted),
    )
    if not all(counted):
        d.error = f"/metrics at the end ({m1.status_code}): {m1.text[:500]!r}"


def drill_kill(ctx: Context, d: Drill, db: str, spool: bool, tree: bool) -> None:
    at_least = 100 if ctx.fast else 400
    tmp = ctx.workdir(f"kill-{db}-{'wb' if spool else 'wt'}-{'tree' if tree else 'worker'}")
    namespace = ctx.pg_namespace("k") if db == "postgres" else None
    url = ctx.pg_url if db == "postgres" else f"sqlite:///{tmp}/decisions.db"
    env = {"NBA_LOG_URL": url, **({"NBA_LOG_NAMESPACE": namespace} if namespace else {})}
    tag = uuid.uuid4().hex[:6]

    def send(c: httpx.Client, k: int, i: int) -> httpx.Response:
        return c.post(
            "/decide_batch", json={"customers": [customer(f"k{tag}-{k}-{i}-{j}") for j in range(10)]}, timeout=5
        )

    server = ctx.start(tmp, env, spool=spool)
    try:
        if tree:
            acked = server.kill_workers_under_load(send, clients=4, at_least=at_least, whole_tree=True)
            started = time.perf_counter()
            server = ctx.start(tmp, env, spool=spool)  # same log, same spool
        else:
            acked = server.kill_workers_under_load(send, clients=4, at_least=at_least)
            started = time.perf_counter()
            server.wait_ready(timeout=90)  # the arbiter starts another worker (which replays the spool first)
        ready_s = time.perf_counter() - started
        logged = logged_ids(url, namespace, acked)
        again = serves(server)
    finally:
        server.stop()
        if namespace:
            with DecisionLog(ctx.pg_url, namespace=namespace) as log:
                log.drop()
    missing = len(set(acked) - logged)
    d.check("decisions acknowledged before the kill", len(acked), len(acked) > 0)
    d.check("acknowledged missing from the log", missing, missing == 0)
    d.info("seconds until ready again", ready_s)
    d.check("serves after the restart", "yes" if again else "no", again)


def _proxied(ctx: Context, name: str, spool: bool) -> tuple[Server, TcpProxy, str]:
    port = int(ctx.pg_url.rsplit(":", 1)[1].split("/")[0])
    proxy = TcpProxy("127.0.0.1", port)
    namespace = ctx.pg_namespace(name)
    tmp = ctx.workdir(f"outage-{name}")
    server = ctx.start(
        tmp,
        {
            "NBA_LOG_URL": proxy.url(ctx.pg_url),
            "NBA_LOG_NAMESPACE": namespace,
            "NBA_FEEDBACK_WAIT_S": f"{FEEDBACK_WAIT_S:g}",
        },
        spool=spool,
    )
    return server, proxy, namespace


def drill_outage_through(ctx: Context, d: Drill) -> None:
    n = 30 if ctx.fast else 100
    server, proxy, namespace = _proxied(ctx, "wt", spool=False)
    try:
        with server.client() as c:
            before = c.post("/decide", json=customer("pre-outage")).status_code
            lines_before = len(server.log_text().splitlines())
            proxy.cut()
            try:
                statuses, latencies = [], []
                for i in range(n):
                    t0 = time.perf_counter()
                    statuses.append(c.post("/decide", json=customer(f"down-{i}")).status_code)
                    latencies.append(time.perf_counter() - t0)
                ready = c.get("/readyz")
            finally:
                proxy.restore()
            started = time.perf_counter()
            deadline = time.time() + 30
            while c.post("/decide", json=customer("post-outage")).status_code != 200 and time.time() < deadline:
                time.sleep(0.2)
            recovered_s = time.perf_counter() - started
            after = [c.post("/decide", json=customer(f"up-{i}")).status_code for i in range(20)]
        time.sleep(0.5)
        during = server.log_text().splitlines()[lines_before:]
    finally:
        server.stop()
        with DecisionLog(ctx.pg_url, namespace=namespace) as log:
            log.drop()
    d.check("answer before the outage", before, before == 200)
    refused = statuses.count(503)
    d.check("requests during the outage answered 503", f"{refused}/{n}", refused == n)
    d.check("max latency of those, ms (limit 5,000)", round(max(latencies) * 1000), max(latencies) < 5.0)
    problems = (
        ready.json().get("problems", []) if ready.headers.get("content-type", "").startswith("application/json") else []
    )
    named = any("decision log failing" in p for p in problems)
    d.check(
        "/readyz during the outage: status, names the failing log",
        f"{ready.status_code}, {'yes' if named else 'no'}",
        named,
    )
    failing = sum("decision log failing" in line for line in during)
    d.check('"decision log failing" lines in the service log', failing, failing == 1)
    d.info('"decision log recovered" lines', sum("decision log recovered" in line for line in during))
    tracebacks = sum("Traceback" in line for line in during)
    d.check("tracebacks in the service log", tracebacks, tracebacks == 0)
    d.info("seconds from restore to the first 200", recovered_s)
    d.check("requests after restore answered 200", f"{after.count(200)}/{len(after)}", after.count(200) == len(after))


def drill_outage_behind(ctx: Context, d: Drill) -> None:
    n = 30 if ctx.fast else 100
    server, proxy, namespace = _proxied(ctx, "wb", spool=True)
    try:
        with server.client() as c:
            proxy.cut()  # before its first decision: the service has not fixed the log's layout yet
            try:
                cold = c.post("/decide", json=customer("cold")).status_code
            finally:
                proxy.restore()
            before = c.post("/decide", json=customer("pre-outage")).status_code
            proxy.cut()
            try:
                answers = [c.post("/decide", json=customer(f"spooled-{i}")) for i in range(n)]
                acked = [r.json()["decision_id"] for r in answers if r.status_code == 200]
                started = time.perf_counter()
                fb = c.post("/feedback", json={"decision_id": acked[-1], "event": "opened"}) if acked else None
                fb_s = time.perf_counter() - started
            finally:
                proxy.restore()
            logged = logged_ids(ctx.pg_url, namespace, acked, timeout=30)
            fb_after = c.post("/feedback", json={"decision_id": acked[-1], "event": "opened"}) if acked else None
        time.sleep(0.5)
        tracebacks = server.log_text().count("Traceback")
    finally:
        server.stop()
        with DecisionLog(ctx.pg_url, namespace=namespace) as log:
            log.drop()
    d.info("first decision of a fresh service, log already down", cold)
    d.check("answer before the outage", before, before == 200)
    d.check("decisions acknowledged during the outage", f"{len(acked)}/{n}", len(acked) == n)
    fb_status = fb.status_code if fb is not None else "-"
    d.check(
        f"feedback on a spooled decision: latency, ms (deadline {FEEDBACK_WAIT_S:g} s)",
        round(fb_s * 1000),
        fb is not None and fb_s < FEEDBACK_WAIT_S + 1.0,
    )
    d.check("feedback on a spooled decision: status (503 expected)", fb_status, fb_status == 503)
    missing = len(set(acked) - logged)
    d.check("acknowledged missing from the log after restore", missing, missing == 0)
    fb_after_status = fb_after.status_code if fb_after is not None else "-"
    d.check("feedback after restore", fb_after_status, fb_after_status == 200)
    d.check("tracebacks in the service log", tracebacks, tracebacks == 0)


def drill_alias(ctx: Context, d: Drill) -> None:
    old, new = ctx.versions["business_as_usual"], ctx.versions["uniform_random"]
    tmp = ctx.workdir("alias")
    server = ctx.start(tmp, {"NBA_LOG_URL": f"sqlite:///{tmp}/decisions.db", "NBA_POLL_S": "1"})
    answers: list[tuple[float, int, str]] = []  # (time, status, version)
    stop = threading.Event()

    def hammer() -> None:
        with server.client() as c:
            while not stop.is_set():
                try:
                    r = c.post("/decide", json=customer())
                    answers.append(
                        (time.perf_counter(), r.status_code, r.json()["policy_version"] if r.status_code == 200 else "")
                    )
                except httpx.HTTPError:
                    answers.append((time.perf_counter(), 0, ""))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    flipped = None
    try:
        time.sleep(1.0)
        set_champion(ctx.registry, new)
        flipped = time.perf_counter()
        deadline = time.time() + 30
        while time.time() < deadline and not any(v == new for *_, v in answers[-8:]):
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
        server.stop()
        set_champion(ctx.registry, old)
    failed = sum(s != 200 for _, s, _ in answers)
    first_new = next((t for t, _, v in answers if v == new), None)
    after_new = [v for t, _, v in answers if first_new is not None and t > first_new]
    d.info("requests (4 clients)", len(answers))
    d.check("failed requests", failed, failed == 0 and len(answers) > 0)
    d.check(
        "first answers from the old version",
        "yes" if answers and answers[0][2] == old else "no",
        bool(answers) and answers[0][2] == old,
    )
    took = first_new - flipped if first_new is not None and flipped is not None else None
    d.check("seconds until the new version answers", "never" if took is None else took, took is not None and took < 30)
    d.info("answers from the old version after the first new one", sum(v == old for v in after_new))


def cap_violations(batch, rules, action_space) -> tuple[int, list[str]]:
    """Breaches of ``rules`` (its caps and minimum gap) by the logged contacts in ``batch``, per customer:
    in any half-open span of ``window_h`` hours at most ``max_count`` contacts (on the cap's channel, or
    on all), and no two contacts closer than ``min_gap_h``."""
    channels = np.asarray(action_space.channels, dtype=object)
    contact = batch.action > 0
    channel = np.where(contact, channels[np.maximum(action_space.channel_of[batch.action], 0)], None)
    found: list[str] = []
    for cid in sorted(set(batch.customer_id[contact].tolist())):
        mine = contact & (batch.customer_id == cid)
        for cap in rules.caps:
            sel = mine if cap.channel is None else mine & (channel == cap.channel)
            t = np.sort(batch.send_at[sel])
            # most contacts in [t_i, t_i + window) over every i: the worst span starts at a contact
            most = int((np.searchsorted(t, t + cap.window_h - 1e-9, side="left") - np.arange(len(t))).max(initial=0))
            if most > cap.max_count:
                found.append(
                    f"{cid}: {most} contacts on {cap.channel or 'all channels'} within "
                    f"{cap.window_h:g} h (cap {cap.max_count})"
                )
        t = np.sort(batch.send_at[mine])
        gaps = np.diff(t)
        if rules.min_gap_h > 0 and (gaps < rules.min_gap_h - 1e-9).any():
            found.append(f"{cid}: contacts {gaps.min():.2f} h apart (minimum gap {rules.min_gap_h:g} h)")
    return len(found), found


def drill_caps(ctx: Context, d: Drill) -> None:
    from envs.scenario import Scenario

    seconds = 3.0 if ctx.fast else 30.0
    namespace = ctx.pg_namespace("c")
    # uniform random (@challenger to everyone) contacts whenever a contact is eligible: every cap is tried
    env = {
        "NBA_LOG_URL": ctx.pg_url,
        "NBA_LOG_NAMESPACE": namespace,
        "NBA_EXPERIMENT": "cap-race",
        "NBA_SPLITS": "champion=0,challenger=1",
    }
    servers = [ctx.start(ctx.workdir(f"caps-{i}"), env, wait=False) for i in range(2)]
    customers = [
        customer(f"race-{i}", now=NOW, timezone="UTC", segment=seg)
        for i, seg in enumerate(("genz", "millennial", "genx", "senior", "genz"))
    ]
    statuses: list[int] = []
    served_by: set[str] = set()

    def hammer(k: int, deadline: float) -> None:
        rng = np.random.default_rng(k)
        with servers[k % 2].client() as c:
            while time.time() < deadline:
                try:
                    r = c.post("/decide", json=customers[rng.integers(len(customers))])
                except httpx.HTTPError:
                    statuses.append(0)
                    continue
                statuses.append(r.status_code)
                if r.status_code == 200:
                    served_by.add(f"{k % 2}")

    try:
        for s in servers:
            s.wait_ready()
        deadline = time.time() + seconds
        threads = [threading.Thread(target=hammer, args=(k, deadline)) for k in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with DecisionLog(ctx.pg_url, namespace=namespace) as log:
            batch = log.read()
    finally:
        for s in servers:
            s.stop()
        with DecisionLog(ctx.pg_url, namespace=namespace) as log:
            log.drop()
    sc = Scenario.default()
    n_bad, bad = cap_violations(batch, sc.contact, sc.action_space)
    contacts = batch.action > 0
    per_customer = [int((contacts & (batch.customer_id == c["customer_id"])).sum()) for c in customers]
    d.info("seconds, 16 clients on 2 instances, 5 customers", seconds)
    d.info("requests", len(statuses))
    d.check("errors (non-200)", len(statuses) - statuses.count(200), statuses.count(200) == len(statuses) > 0)
    d.check("instances that decided", len(served_by), len(served_by) == 2)
    d.check("decisions in the log", len(batch), len(batch) == statuses.count(200))
    d.info("contacts logged per customer", " ".join(map(str, per_customer)))
    d.check(
        f"cap breaches ({len(sc.contact.caps)} caps, {sc.contact.min_gap_h:g} h gap)",
        n_bad,
        n_bad == 0 and sum(per_customer) > 0,
    )
    if bad:
        d.error = "\n".join(bad[:20])


# ------------------------------------------------------------------------------------------------ run
def run_drill(ctx: Context, d: Drill, fn: Callable[[Context, Drill], None], tag: str) -> None:
    """Run one drill (a crash fails it, not the run); a progress line on stderr."""
    t0 = time.perf_counter()
    if d.postgres and ctx.pg_url is None:
        d.status, d.error = ("FAIL" if os.environ.get("CI") else "skip"), ctx.pg_problem
    else:
        try:
            fn(ctx, d)
        except Exception as e:  # noqa: BLE001 - a drill that crashes fails, the others still run
            d.status, d.error = "FAIL", f"{type(e).__name__}: {e}"
    d.seconds = time.perf_counter() - t0
    print(f"{tag} {d.name} ({d.mode}): {d.status} in {d.seconds:.1f} s", file=sys.stderr, flush=True)
    if d.status == "FAIL" and d.error:
        print(d.error[-3000:], file=sys.stderr, flush=True)


def plan(fast: bool) -> list[tuple[Drill, Callable[[Context, Drill], None]]]:
    """Every drill of the run, in order, with the function that runs it."""
    # --fast leaves the fuzz drill to CI's contract test (tests/serving/test_serving_contract.py): the same run
    out: list[tuple[Drill, Callable[[Context, Drill], None]]] = (
        [] if fast else [(Drill("fuzz", "SQLite, schemathesis"), drill_fuzz)]
    )
    out.append((Drill("sustained load", "SQLite write-through"), drill_load))
    combos = [(db, spool, tree) for db in ("sqlite", "postgres") for spool in (False, True) for tree in (False, True)]
    if fast:
        combos = [("sqlite", True, False), ("postgres", False, True)]
    for db, spool, tree in combos:
        mode = (
            f"{'PostgreSQL' if db == 'postgres' else 'SQLite'} {'write-behind' if spool else 'write-through'}, "
            f"{'whole tree' if tree else 'worker'}"
        )
        out.append(
            (
                Drill("kill -9", mode, postgres=db == "postgres"),
                lambda ctx, d, a=(db, spool, tree): drill_kill(ctx, d, *a),
            )
        )
    out += [
        (Drill("database outage", "PostgreSQL write-through", postgres=True), drill_outage_through),
        (Drill("database outage", "PostgreSQL write-behind", postgres=True), drill_outage_behind),
        (Drill("alias flip", "SQLite write-through"), drill_alias),
        (Drill("cap race", "PostgreSQL write-through, 2 instances, uniform random", postgres=True), drill_caps),
    ]
    return out


def table(drills: list[Drill]) -> str:
    head = ("drill", "mode", "measured", "result", "pass/fail")
    rows = [head]
    for d in drills:
        if d.status == "skip":
            rows.append((d.name, d.mode, "skipped", " ".join(d.error.split())[:120], "skip"))
        for r in d.rows:
            rows.append((d.name, d.mode, r.measured, r.result, "" if r.ok is None else "pass" if r.ok else "FAIL"))
        if d.status == "FAIL" and d.error and not any(r.ok is False for r in d.rows):
            rows.append((d.name, d.mode, "error", " ".join(d.error.split())[:120], "FAIL"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows[1:])])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fast", action="store_true", help="short durations and two kill combinations (CI)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--only", help="run only the drills whose name contains this")
    ap.add_argument(
        "--lanes",
        type=int,
        choices=(1, 2),
        default=None,
        help="drills run side by side: SQLite ones beside PostgreSQL ones (default 2 with --fast, "
        "else 1, so that the full run's figures are not shared with another drill)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the working directory (server logs)")
    args = ap.parse_args()
    os.environ.update(BENTOML_DO_NOT_TRACK="true", MLFLOW_DISABLE_TELEMETRY="true")
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="nba-reliability-"))
    drills = [(d, fn) for d, fn in plan(args.fast) if not args.only or args.only in d.name]
    try:
        pg_url, pg_problem = PG_URL, ""
        try:
            postgres_or_skip()
        except BaseException as e:  # noqa: BLE001 - pytest's skip or fail outcome: PostgreSQL unreachable
            if isinstance(e, KeyboardInterrupt):
                raise
            pg_url, pg_problem = None, str(e).strip() or type(e).__name__
        uri, versions = build_registry(tmp / "registry")
        ctx = Context(args.fast, tmp, uri, versions, pg_url, pg_problem)
        lanes = args.lanes or (2 if args.fast else 1)
        # two lanes: the SQLite drills beside the PostgreSQL ones (fuzz and alias flip both set MLflow's
        # process-wide URI: they must share a lane)
        groups = [
            [x for x in enumerate(drills, 1) if not x[1][0].postgres],
            [x for x in enumerate(drills, 1) if x[1][0].postgres],
        ]
        if lanes == 1:
            groups = [list(enumerate(drills, 1))]

        def run(lane: list) -> None:
            for i, (d, fn) in lane:
                run_drill(ctx, d, fn, f"[{i}/{len(drills)}]")

        with ThreadPoolExecutor(len(groups)) as pool:
            list(pool.map(run, groups))
    finally:
        failed = any(d.status == "FAIL" for d, _ in drills)
        if args.keep or failed:
            print(f"working directory (server logs): {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    took = time.perf_counter() - started
    done = [d for d, _ in drills]
    print(f"reliability drill ({'fast' if args.fast else 'full'}), {os.cpu_count()} CPUs, {took:.0f} s:\n")
    print(table(done))
    print(
        f"\n{sum(d.status == 'pass' for d in done)} passed, {sum(d.status == 'FAIL' for d in done)} failed, "
        f"{sum(d.status == 'skip' for d in done)} skipped"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "mode": "fast" if args.fast else "full",
                    "date": datetime.now(UTC).strftime("%Y-%m-%d"),
                    "seconds": round(took, 1),
                    "passed": not failed,
                    "drills": [asdict(d) for d in done],
                },
                indent=2,
            )
        )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
