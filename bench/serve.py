"""Decision service figures on loopback: the BentoML service against a bare Starlette app on uvicorn.

Both servers run the same engine (same policy from the same registry, same history reads and the
same durable log writes, each to its own SQLite file). An asyncio client on raw HTTP/1.1 keep-alive
connections records every latency:

* decide at concurrency 1, 8 and 32: requests/s, p50 and p99;
* decide_batch with 100 and 1,000 customers (one at a time): decisions/s and p50/p99;
* the ratio service / bare app at every point.

The two servers take turns point by point, in both orders, so background load hits both alike.
Bounded in time: about ``10 * seconds`` plus start-up; the default takes under two minutes.

    python bench/serve.py [--seconds 6] [--policy business_as_usual] [--json out.json] [--write behind|through]
                          [--gather-ms MS] [--world scenario|telecom|offers1000]

``--world``: the simulator's scenario (profile fields in each request, the default), the telecom
deployment of ``examples/telecom`` (its declared attributes in each request: 5 channels, 40 offers,
4 slots, 801 actions), or that deployment with 1,000 offers and one send slot (5,001 actions). On a
deployment the policy defaults to ``uniform_random``: as cheap as the scenario's business as usual
(the rule-based baselines follow the scenario's segments), so the figures are the service's own
cost of attributes, eligibility over the catalogue and the log; a learner adds its own cost
(``bench/policies.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.support, when run as a script

from tests.support.ports import free_port  # noqa: E402

SEGMENTS = ("genz", "millennial", "genx", "senior")
ZONES = ("Europe/Paris", "America/New_York", "Asia/Tokyo", "UTC", "+05:30", "America/Los_Angeles")


TELECOM = ROOT / "examples" / "telecom" / "deployment.toml"
PLANS = ("prepaid", "postpaid", "business")
TIERS = ("none", "silver", "gold")


def deployment_of(world: str, root: Path) -> Path | None:
    """The deployment file a world serves (None: the simulator's scenario); ``offers1000`` is written under
    ``root``: the telecom deployment's channels and attributes, 1,000 offers with the same features, one slot."""
    if world == "scenario":
        return None
    if world == "telecom":
        return TELECOM
    import yaml

    from nba.deployment import Deployment

    data = Deployment.load(TELECOM).to_dict()
    rng = np.random.default_rng(7)
    cats = ("data", "voice", "roaming", "device", "content")
    data["deployment"]["send_slots"] = ["now"]
    data["offers"] = {
        f"offer_{k:04d}": {
            "features": {
                "category": cats[k % len(cats)],
                "discount": float(rng.choice([0.0, 0.1, 0.2, 0.3])),
                "margin": float(np.round(rng.uniform(0.5, 40.0), 1)),
                "monthly_price": float(np.round(rng.uniform(1, 30), 1)),
            }
        }
        for k in range(1000)
    }
    data["contact_policy"]["caps"] = [c for c in data["contact_policy"]["caps"] if "offer" not in c]
    path = root / "offers1000.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def make_registry(root: Path, policy: str, deployment: Path | None = None) -> str:
    """A fresh embedded MLflow registry with one policy as @champion (on ``deployment`` when given);
    returns its URI."""
    import mlflow

    from nba.policies import create
    from nba.serialization import Bundle
    from training.registry import log_policy, set_alias, use_store

    uri = use_store(root)
    if deployment is None:
        from envs.scenario import Scenario

        sc = Scenario.default()
        bundle = Bundle(
            create(policy, sc.action_space, tuple(sc.segments), dim=sc.feature_spec.dim),
            sc.feature_spec,
            sc.lifecycle,
            sc.contact,
        )
    else:
        from nba.deployment import Deployment

        d = Deployment.load(deployment)
        bundle = Bundle.of_deployment(create(policy, d.action_space(), dim=d.features().dim), d)
    with mlflow.start_run():
        info = log_policy(bundle)
    set_alias("champion", info.registered_model_version)
    return uri


def start(kind: str, port: int, env: dict[str, str], logfile: Path) -> subprocess.Popen:
    if kind == "bentoml":
        cmd = [
            sys.executable,
            "-m",
            "bentoml",
            "serve",
            "serving.service:DecisionService",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
    else:
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "bare_app:create_app",
            "--factory",
            "--app-dir",
            str(ROOT / "bench"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=logfile.open("w"), stderr=subprocess.STDOUT)


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"server on port {port} not ready after {timeout:.0f} s")


class Payloads:
    """Request bodies over a pool of customers (random segment, zone, tenure)."""

    def __init__(self, seed: int = 0, pool: int = 200_000, attributes: bool = False) -> None:
        self.rng = np.random.default_rng(seed)
        self.pool = pool
        self.attributes = attributes
        self.tag = f"{os.getpid():x}{int(time.time()):x}"

    def customer(self, i: int) -> dict:
        if self.attributes:  # the telecom deployment's declared attributes
            return {
                "customer_id": f"b{self.tag}-{i}",
                "timezone": ZONES[i % len(ZONES)],
                "attributes": {
                    "plan_type": PLANS[i % 3],
                    "tenure_days": float(i % 2000),
                    "monthly_revenue": float(10 + i % 60),
                    "data_usage_gb": float(i % 40),
                    "loyalty_tier": TIERS[i % 3],
                    "app_user": i % 2 == 0,
                    "whatsapp_opt_in": i % 3 == 0,
                    "days_to_contract_end": None if i % 3 == 0 else float(i % 365),
                },
            }
        return {
            "customer_id": f"b{self.tag}-{i}",
            "segment": SEGMENTS[i % 4],
            "timezone": ZONES[i % len(ZONES)],
            "tenure_days": float(i % 400),
            "cart_active": bool(i % 7 == 0),
        }

    def one(self) -> bytes:
        return json.dumps(self.customer(int(self.rng.integers(self.pool)))).encode()

    def batch(self, n: int) -> bytes:
        ids = self.rng.choice(self.pool, size=n, replace=False)
        return json.dumps({"customers": [self.customer(int(i)) for i in ids]}).encode()


async def _client(port: int, path: str, bodies, deadline: float, lat: list[float], errors: list[int]) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n".encode()
    try:
        while time.perf_counter() < deadline:
            body = bodies()
            t0 = time.perf_counter()
            w.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            status, length, chunked = 0, 0, False
            for i, line in enumerate((await r.readuntil(b"\r\n\r\n")).split(b"\r\n")):
                if i == 0:
                    status = int(line.split()[1])
                elif line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
                elif line.lower().startswith(b"transfer-encoding:") and b"chunked" in line.lower():
                    chunked = True
            if chunked:
                while True:
                    size = int((await r.readuntil(b"\r\n")).strip(), 16)
                    await r.readexactly(size + 2)
                    if size == 0:
                        break
            else:
                await r.readexactly(length)
            lat.append(time.perf_counter() - t0)
            if status != 200:
                errors.append(status)
    finally:
        w.close()


async def load(port: int, path: str, bodies, concurrency: int, seconds: float) -> dict:
    lat: list[float] = []
    errors: list[int] = []
    t0 = time.perf_counter()
    deadline = t0 + seconds
    await asyncio.gather(*(_client(port, path, bodies, deadline, lat, errors) for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    ms = np.asarray(lat) * 1e3
    return {
        "requests": len(lat),
        "errors": len(errors),
        "rps": len(lat) / wall,
        "lat": ms.tolist(),
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
    }


def points(seconds: float, attributes: bool = False) -> list[tuple[str, str, object, int, int]]:
    """(name, path, bodies, concurrency, customers per request) of every measurement point."""
    p = Payloads(attributes=attributes)
    out: list[tuple[str, str, object, int, int]] = [(f"decide_c{c}", "/decide", p.one, c, 1) for c in (1, 8, 32)]
    for n in (100, 1000):
        bodies = [p.batch(n) for _ in range(8)]
        it = iter(range(10**9))
        out.append((f"batch_{n}", "/decide_batch", lambda b=bodies, i=it: b[next(i) % len(b)], 1, n))
    return out


def measure(ports: dict[str, int], seconds: float, attributes: bool = False) -> dict[str, dict]:
    """Every point on every server, the servers alternating point by point (and in both orders, half the
    time each) so that both see the same background load."""
    results: dict[str, dict] = {kind: {} for kind in ports}
    warm = Payloads(seed=1, attributes=attributes)
    for port in ports.values():
        asyncio.run(load(port, "/decide", warm.one, 8, min(2.0, seconds)))
    for name, path, bodies, c, n in points(seconds, attributes):
        parts: dict[str, list[dict]] = {kind: [] for kind in ports}
        for order in (list(ports), list(ports)[::-1]):
            for kind in order:
                parts[kind].append(asyncio.run(load(ports[kind], path, bodies, c, seconds / 2)))
        for kind, runs in parts.items():
            r = {
                "requests": sum(x["requests"] for x in runs),
                "errors": sum(x["errors"] for x in runs),
                "rps": float(np.mean([x["rps"] for x in runs])),
                "latencies_ms": sum((x["lat"] for x in runs), []),
            }
            ms = np.asarray(r.pop("latencies_ms"))
            r["p50_ms"] = float(np.percentile(ms, 50)) if ms.size else float("nan")
            r["p99_ms"] = float(np.percentile(ms, 99)) if ms.size else float("nan")
            r["decisions_per_s"] = r["rps"] * n
            results[kind][name] = r
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=6.0, help="per measurement point")
    ap.add_argument("--policy", default=None, help="default: business_as_usual, uniform_random on a deployment")
    ap.add_argument("--world", choices=("scenario", "telecom", "offers1000"), default="scenario")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument(
        "--write",
        choices=("behind", "through"),
        default="behind",
        help="behind: acknowledge once fsynced in a local spool, history in memory (NBA_SPOOL_DIR); "
        "through: commit each batch to the log before answering",
    )
    ap.add_argument(
        "--gather-ms",
        type=float,
        default=None,
        help="NBA_GATHER_MS for both servers (default: the service's own default)",
    )
    args = ap.parse_args()
    os.environ.update(BENTOML_DO_NOT_TRACK="true", MLFLOW_DISABLE_TELEMETRY="true")
    if args.gather_ms is not None:  # both servers inherit it
        os.environ["NBA_GATHER_MS"] = f"{args.gather_ms:g}"
    load_before = os.getloadavg()  # other jobs on the machine slow both servers alike, but the figures with them
    tmp = Path(tempfile.mkdtemp(prefix="nba-bench-serve-"))
    deployment = deployment_of(args.world, tmp)
    args.policy = args.policy or ("business_as_usual" if deployment is None else "uniform_random")
    uri = make_registry(tmp, args.policy, deployment)
    procs, ports = {}, {}
    try:
        for kind in ("bentoml", "bare"):
            ports[kind] = free_port()
            env = dict(
                os.environ,
                NBA_TRACKING_URI=uri,
                NBA_LOG_URL=f"sqlite:///{tmp}/{kind}.db",
                NBA_CACHE_DIR=str(tmp / f"cache-{kind}"),
                NBA_POLL_S="10",
            )
            env.pop("NBA_TOKEN", None)
            env.pop("NBA_SPOOL_DIR", None)
            env.pop("NBA_DEPLOYMENT", None)
            if deployment is not None:
                env["NBA_DEPLOYMENT"] = str(deployment)
            if args.write == "behind":
                env["NBA_SPOOL_DIR"] = str(tmp / f"spool-{kind}")
            procs[kind] = start(kind, ports[kind], env, tmp / f"{kind}.log")
        for kind in procs:
            wait_ready(ports[kind], procs[kind])
        results = measure(ports, args.seconds, attributes=deployment is not None)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
    mode = (
        "write-behind: acknowledged once fsynced in a local spool"
        if args.write == "behind"
        else "write-through: committed to the log before the answer"
    )
    from serving.config import Settings

    gather = Settings.from_env({"NBA_GATHER_MS": os.environ.get("NBA_GATHER_MS", "")}).gather_ms
    load = [round(x, 2) for x in (*load_before, *os.getloadavg())]
    print(
        f"world {args.world}; policy {args.policy}; {os.cpu_count()} CPUs; {args.seconds:g} s per point; "
        f"logs: SQLite WAL synchronous=FULL, {mode}; gather window {gather:g} ms; "
        "client: asyncio raw HTTP/1.1 keep-alive; load average (1, 5, 15 min) before "
        f"{load[0]:g}, {load[1]:g}, {load[2]:g}, after {load[3]:g}, {load[4]:g}, {load[5]:g}\n"
    )
    print(
        f"{'point':<14} {'service req/s':>13} {'p50 ms':>7} {'p99 ms':>7} | {'bare req/s':>10} {'p50 ms':>7} "
        f"{'p99 ms':>7} | ratio  errors"
    )
    for point in results["bare"]:
        s, b = results["bentoml"][point], results["bare"][point]
        print(
            f"{point:<14} {s['rps']:>13.0f} {s['p50_ms']:>7.2f} {s['p99_ms']:>7.2f} | {b['rps']:>10.0f} "
            f"{b['p50_ms']:>7.2f} {b['p99_ms']:>7.2f} | {s['rps'] / b['rps']:.2f}   {s['errors']}/{b['errors']}"
        )
    for n in (100, 1000):
        s, b = results["bentoml"][f"batch_{n}"], results["bare"][f"batch_{n}"]
        print(f"batch of {n}: service {s['decisions_per_s']:.0f} decisions/s, bare {b['decisions_per_s']:.0f}")
    targets = {
        "decide p99 at c=8 <= 10 ms": results["bentoml"]["decide_c8"]["p99_ms"] <= 10,
        "throughput >= 0.6x bare at c=8": results["bentoml"]["decide_c8"]["rps"]
        >= 0.6 * results["bare"]["decide_c8"]["rps"],
        "1,000-customer batch p50 <= 25 ms": results["bentoml"]["batch_1000"]["p50_ms"] <= 25,
    }
    for k, ok in targets.items():
        print(f"target {k}: {'met' if ok else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "targets": targets, "load_average": load}, indent=2))


if __name__ == "__main__":
    main()
