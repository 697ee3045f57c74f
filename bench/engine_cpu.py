"""CPU time of one decide_batch request, stage by stage, in process (no HTTP): a noisy machine's wall clock
hides a millisecond, its CPU clock does not.

The engine of ``bench/serve.py`` (write-behind: history from memory, decisions fsynced in a spool) on one
of its worlds, a batch of distinct customers per request; each stage is timed with ``time.thread_time``
on the calling thread, the median over ``--repeat`` requests after a warm-up:

* ``parse``: the body into :class:`serving.schemas.DecideBatchRequest` (its ``model_validate_json``, as BentoML
  calls it: column by column where it can, :mod:`serving.batch_json`, else pydantic);
* ``validate``: :meth:`serving.engine.Engine.prepare` (the deployment's column checks);
* ``decide``: the decider's batch (history, features, eligibility, the policy's draw, the spool frame,
  the history cache);
* ``fsync``: the spool's sync (its CPU: the disk's wait is not counted);
* ``answer``: the response's JSON (:func:`serving.endpoints._batch_body`);
* ``total``: the five; and apart, ``draw``: :func:`nba.policies.act` (the policy's distribution and its
  draw) again on the batch just decided.

The policy is the one ``bench/serve.py`` serves (``uniform_random`` on a deployment): nothing runs on
other threads (BLAS), which ``thread_time`` would not see. Latency is ``bench/serve.py``'s, on an idle
machine; these figures say where a request's CPU goes, and what a change saves of it.

    python bench/engine_cpu.py [--world telecom|offers1000|scenario] [--n 1000] [--repeat 60]
                               [--against DIR] [--rounds 3]

``--against DIR``: run this script on another checkout too (``git worktree add --detach /tmp/nba-head
<commit>``), the two alternating ``--rounds`` times in fresh processes, and print the medians side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# the checkout measured: this one, or (--against) the other one, whose nba, serving and bench/serve.py run
ROOT = Path(os.environ.get("NBA_ENGINE_CPU_ROOT") or Path(__file__).resolve().parent.parent)
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

STAGES = ("parse", "validate", "decide", "fsync", "answer", "total", "draw")


def measure(world: str, n: int, repeat: int) -> dict[str, float]:
    """Median CPU ms of each stage over ``repeat`` requests of ``n`` customers."""
    import numpy as np
    from serve import Payloads, deployment_of, make_registry

    from nba.policies import act
    from serving import endpoints
    from serving.config import Settings
    from serving.schemas import DecideBatchRequest

    tmp = Path(tempfile.mkdtemp(prefix="nba-engine-cpu-"))
    deployment = deployment_of(world, tmp)
    uri = make_registry(tmp, "business_as_usual" if deployment is None else "uniform_random", deployment)
    env = {
        "NBA_TRACKING_URI": uri,
        "NBA_LOG_URL": f"sqlite:///{tmp}/log.db",
        "NBA_CACHE_DIR": str(tmp / "cache"),
        "NBA_POLL_S": "0",
        "NBA_SPOOL_DIR": str(tmp / "spool"),
        "NBA_SEED": "0",
    }
    if deployment is not None:
        env["NBA_DEPLOYMENT"] = str(deployment)
    rt = endpoints.Runtime.start(Settings.from_env(env))
    for _ in range(200):
        if rt.ready:
            break
        time.sleep(0.05)
    engine = rt.engine
    answer = getattr(endpoints, "_batch_body", None) or (  # (a checkout from before it)
        lambda job, res, e: endpoints._dumps({"decisions": endpoints._decisions(job, res, e)})
    )
    payloads = Payloads(seed=3, attributes=deployment is not None)
    clock = time.thread_time
    times: dict[str, list[float]] = {s: [] for s in STAGES}
    draw_rng = np.random.default_rng(1)
    try:
        for k in range(repeat + 10):
            body = payloads.batch(n)
            t0 = clock()
            req = DecideBatchRequest.model_validate_json(body)
            t1 = clock()
            job = engine.prepare(req.customers, req.now, req.alternatives, batch=True)
            t2 = clock()
            (result,), position = engine._decide([job])
            t3 = clock()
            engine.spool.sync(position)
            t4 = clock()
            answer(job, result, "")
            t5 = clock()
            policy = job.served["champion"].bundle.policy
            last = _LAST.get("batch")
            t6 = t7 = 0.0
            if last is not None:
                X, mask = last
                t6 = clock()
                act(policy, X, mask, draw_rng)
                t7 = clock()
            if k >= 10:
                for s, v in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t0, t7 - t6), strict=True):
                    times[s].append(v * 1e3)
    finally:
        rt.close()
    return {s: statistics.median(v) for s, v in times.items()}


_LAST: dict[str, tuple] = {}


def _keep_last_batch() -> None:
    """Remember the last contexts and mask the decide path built (for the ``draw`` stage)."""
    import nba.decide as decide_mod

    choose = decide_mod._choose

    def spy(policy, X, mask, *args, **kwargs):
        _LAST["batch"] = (X, mask)
        return choose(policy, X, mask, *args, **kwargs)

    decide_mod._choose = spy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", choices=("scenario", "telecom", "offers1000"), default="telecom")
    ap.add_argument("--n", type=int, default=1000, help="customers per request")
    ap.add_argument("--repeat", type=int, default=60, help="requests measured (after 10 of warm-up)")
    ap.add_argument("--against", type=Path, default=None, help="another checkout to compare with")
    ap.add_argument("--rounds", type=int, default=3, help="with --against: alternations of the two")
    ap.add_argument("--json", action="store_true", help="print the medians as JSON (for --against)")
    args = ap.parse_args()
    os.environ.update(BENTOML_DO_NOT_TRACK="true", MLFLOW_DISABLE_TELEMETRY="true")
    if args.against is None:
        _keep_last_batch()
        out = measure(args.world, args.n, args.repeat)
        if args.json:
            print(json.dumps(out))
        else:
            print(f"world {args.world}, {args.n} customers, median CPU ms over {args.repeat} requests")
            for s in STAGES:
                print(f"{s:<9} {out[s]:7.2f}")
        return
    runs: dict[str, list[dict[str, float]]] = {"this": [], "against": []}
    for _ in range(args.rounds):
        for name, root in (("against", args.against.resolve()), ("this", ROOT)):
            cmd = [sys.executable, str(Path(__file__).resolve()), "--world", args.world, "--n", str(args.n)]
            cmd += ["--repeat", str(args.repeat), "--json"]
            env = dict(os.environ, PYTHONPATH=str(root), NBA_ENGINE_CPU_ROOT=str(root))
            res = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, check=True)
            runs[name].append(json.loads(res.stdout.strip().splitlines()[-1]))
    print(f"world {args.world}, {args.n} customers, CPU ms (median of {args.rounds} runs' medians)")
    print(f"{'stage':<9} {'against':>8} {'this':>8}")
    for s in STAGES:
        a = statistics.median(r[s] for r in runs["against"])
        t = statistics.median(r[s] for r in runs["this"])
        print(f"{s:<9} {a:8.2f} {t:8.2f}")


if __name__ == "__main__":
    main()
