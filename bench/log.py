"""Decision log throughput: writes (decisions/s) into SQLite and PostgreSQL, streaming export to Parquet.

    python bench/log.py [--rows 1000000] [--write-rows 200000] [--batch 10000] [--postgres URL]

Writes ``--write-rows`` decisions (context of 32 float32, 200 actions) in batches of ``--batch``,
then fills a SQLite log to ``--rows`` and streams it to Parquet, reporting rows/s and the peak
memory (tracemalloc: Python and NumPy allocations) of the export. PostgreSQL is skipped when
unreachable. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nba.log import DecisionLog, DecisionRecords, OutcomeRecords, RewardRule  # noqa: E402

D, A = 32, 200


def records(n: int, start: int, rng: np.random.Generator) -> tuple[DecisionRecords, OutcomeRecords]:
    el = rng.random((n, A)) < 0.5
    el[:, 0] = True
    action = np.where(rng.random(n) < 0.5, 0, np.argmax(el[:, 1:], axis=1) + 1)
    t = 493_536.0 + (start + np.arange(n)) / 1000.0
    ids = np.array([f"d{start + i}" for i in range(n)], dtype=object)
    dec = DecisionRecords(
        decision_id=ids,
        time=t,
        customer_id=np.array([f"c{(start + i) % 100_000}" for i in range(n)], dtype=object),
        context=rng.normal(size=(n, D)).astype(np.float32),
        eligible=el,
        action=action.astype(np.int64),
        send_at=t + (action > 0) * 2.0,
        propensity=np.full(n, 0.5),
        policy=np.full(n, "bench", dtype=object),
        policy_version=np.full(n, "1", dtype=object),
        experiment=np.full(n, "", dtype=object),
        arm=np.full(n, "", dtype=object),
        cost=(action > 0) * 0.01,
    )
    k = np.flatnonzero(rng.random(n) < 0.05)
    out = OutcomeRecords(
        ids[k], np.full(k.size, "converted", dtype=object), dec.send_at[k] + 1.0, rng.gamma(2.0, 20.0, k.size)
    )
    return dec, out


def write_rate(url: str, rows: int, batch: int, namespace: str | None = None) -> float:
    rng = np.random.default_rng(0)
    data = [records(batch, k, rng)[0] for k in range(0, rows, batch)]
    store = DecisionLog(url, namespace=namespace)
    try:
        t0 = time.perf_counter()
        for dec in data:
            store.log_decisions(dec)
        return rows / (time.perf_counter() - t0)
    finally:
        if namespace:
            store.drop()
        store.close()


def postgres_ok(url: str) -> bool:
    import sqlalchemy as sa

    try:
        with sa.create_engine(url, connect_args={"connect_timeout": 3}).connect() as conn:
            conn.execute(sa.text("select 1"))
        return True
    except Exception:  # noqa: BLE001
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--write-rows", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--chunk", type=int, default=100_000)
    ap.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = ap.parse_args()
    out: dict[str, object] = {"context_dim": D, "n_actions": A, "batch": args.batch}
    with tempfile.TemporaryDirectory() as tmp:
        out["sqlite_write_decisions_per_s"] = round(write_rate(f"sqlite:///{tmp}/w.db", args.write_rows, args.batch))
        if postgres_ok(args.postgres):
            ns = f"bench_{uuid.uuid4().hex[:8]}"
            out["postgres_write_decisions_per_s"] = round(write_rate(args.postgres, args.write_rows, args.batch, ns))
        else:
            out["postgres_write_decisions_per_s"] = None
        # fill a log to --rows, then stream it out
        url = f"sqlite:///{tmp}/big.db"
        rng = np.random.default_rng(1)
        with DecisionLog(url) as store:
            t0 = time.perf_counter()
            for k in range(0, args.rows, 50_000):
                store.log(*records(min(50_000, args.rows - k), k, rng))
            out["fill_s"] = round(time.perf_counter() - t0, 1)
        with DecisionLog(url) as store:
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            tracemalloc.start()
            t0 = time.perf_counter()
            n = store.export_parquet(Path(tmp) / "log.parquet", RewardRule(), chunk_rows=args.chunk)
            dt = time.perf_counter() - t0
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            out["export_rows"] = n
            out["export_rows_per_s_traced"] = round(n / dt)  # slowed by tracemalloc
            t0 = time.perf_counter()
            n = store.export_parquet(Path(tmp) / "log.parquet", RewardRule(), chunk_rows=args.chunk)
            out["export_rows_per_s"] = round(n / (time.perf_counter() - t0))
            out["export_peak_traced_mib"] = round(peak / 2**20, 1)
            out["max_rss_mib"] = round(max(rss0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024, 1)
            out["parquet_mib"] = round((Path(tmp) / "log.parquet").stat().st_size / 2**20, 1)
            t0 = time.perf_counter()
            m = sum(len(b) for b in store.iter_batches(RewardRule(), args.chunk))
            out["iter_batches_rows_per_s"] = round(m / (time.perf_counter() - t0))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
