"""Simulator throughput and memory.

    python bench/sim.py [--num-envs 32768] [--steps 60] [--sync-envs 64] [--sync-steps 60]

Prints, from one run on this machine:
* decisions/s of the vectorised ``nba/Bandit-v0`` (observations, masks and rewards included),
* customer-days/s of the vectorised ``nba/Journey-v0``,
* the same for gymnasium's ``SyncVectorEnv`` over the scalar environments, and the ratios,
* the memory of a 1,000,000-customer simulation (latent traits, state, history and random
  streams), both as the arrays' size and as the peak traced allocation while creating it.
Targets (issue 2, 2-core machine): >= 1,000,000 decisions/s, >= 200,000 customer-days/s,
>= 50x SyncVectorEnv, a 1M population under 1 GB.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import tracemalloc
from pathlib import Path

import gymnasium as gym
import numpy as np

import envs
from envs import population
from envs.scenario import Scenario
from envs.simulation import Simulation


def _rate(env, n_rows: int, steps: int, seed: int) -> float:
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, env.single_action_space.n, size=(steps, n_rows))
    env.step(actions[0])  # warm caches
    t0 = time.perf_counter()
    for i in range(steps):
        env.step(actions[i])
    return steps * n_rows / (time.perf_counter() - t0)


def throughput(env_id: str, num_envs: int, steps: int, sync_envs: int, sync_steps: int, repeats: int = 3) -> dict:
    vec = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point")
    fast = max(_rate(vec, num_envs, steps, seed) for seed in range(repeats))
    sync = gym.make_vec(env_id, num_envs=sync_envs, vectorization_mode="sync")
    slow = max(_rate(sync, sync_envs, sync_steps, seed) for seed in range(repeats))
    return {
        "vector_per_s": fast,
        "sync_per_s": slow,
        "ratio": fast / slow,
        "num_envs": num_envs,
        "sync_envs": sync_envs,
    }


def population_memory(n: int = 1_000_000) -> dict:
    sc = Scenario.default()
    tracemalloc.start()
    sim = Simulation(sc, 0, n, purpose="bench/sim", decision_hour=sc.journey_decision_hour)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    held = population.nbytes(sim.traits) + population.nbytes(sim.state) + population.nbytes(sim.history)
    held += sim.streams.keys.nbytes + sim.streams.counters.nbytes + sim.recent.times.nbytes
    held += sim.recent.any_times.nbytes
    return {"customers": n, "held_mb": held / 2**20, "bytes_per_customer": held / n, "peak_mb": peak / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-envs", type=int, default=32768)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--sync-envs", type=int, default=64)
    ap.add_argument("--sync-steps", type=int, default=60)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()

    results = {"machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}"}
    for env_id, unit in zip(envs.ENV_IDS, ("decisions", "customer-days"), strict=True):
        r = throughput(env_id, args.num_envs, args.steps, args.sync_envs, args.sync_steps)
        r["unit"] = unit
        results[env_id] = r
        print(
            f"{env_id:<18} vectorised ({r['num_envs']:>6} rows): {r['vector_per_s']:>12,.0f} {unit}/s | "
            f"SyncVectorEnv ({r['sync_envs']} envs): {r['sync_per_s']:>9,.0f} {unit}/s | ratio {r['ratio']:,.0f}x"
        )
    mem = population_memory()
    results["population"] = mem
    print(
        f"population of {mem['customers']:,}: {mem['held_mb']:,.0f} MB held "
        f"({mem['bytes_per_customer']:.0f} B/customer), peak {mem['peak_mb']:,.0f} MB while sampling"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
