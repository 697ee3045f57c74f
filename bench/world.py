"""How fast a brand's own world simulates (envs/world_simulation.py), through the library's decide path.

    python bench/world.py [--customers 10000] [--decisions 30] [--json out.json]

For the telecom deployment (examples/telecom: 801 actions) with its latent world file and with the default
world (no file), and for a uniform policy: decisions/s of ``WorldSimulation`` (each round is
``nba.decide.decide`` over the whole catalogue, then the customers' responses, history and opt-outs), the
share of that time spent in the decide path, and the peak traced memory of the simulation (a separate run). No peer
simulates a brand's declared deployment; the scenario's own simulator is ``bench/sim.py``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import tracemalloc
from pathlib import Path

from envs.rollout import policy_rng
from envs.world import LatentWorld
from envs.world_simulation import WorldSimulation
from nba.deployment import Deployment
from nba.policies import create

TELECOM = Path(__file__).resolve().parents[1] / "examples" / "telecom"


def peak_mb(d: Deployment, world: LatentWorld, customers: int) -> float:
    """Peak traced memory of creating the simulation and running two rounds (apart from the timed run:
    tracing slows allocations)."""
    tracemalloc.start()
    sim = WorldSimulation(d, world, seed=0, n=customers, purpose="bench/world")
    policy, rng = create("uniform_random", d.action_space()), policy_rng(0, "bench/world")
    for _ in range(2):
        sim.step(sim.decide(policy, rng).action)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def run(d: Deployment, world: LatentWorld, customers: int, decisions: int) -> dict[str, float]:
    t0 = time.perf_counter()
    sim = WorldSimulation(d, world, seed=0, n=customers, purpose="bench/world")
    setup = time.perf_counter() - t0
    policy, rng = create("uniform_random", d.action_space()), policy_rng(0, "bench/world")
    deciding = stepping = reward = 0.0
    for _ in range(decisions):
        t1 = time.perf_counter()
        out = sim.decide(policy, rng)
        t2 = time.perf_counter()
        reward += float(sim.step(out.action).reward.sum())
        t3 = time.perf_counter()
        deciding, stepping = deciding + t2 - t1, stepping + t3 - t2
    total = customers * decisions
    return {
        "customers": customers,
        "decisions": decisions,
        "setup_s": setup,
        "decide_s": deciding,
        "step_s": stepping,
        "decisions_per_s": total / (deciding + stepping),
        "decide_share": deciding / (deciding + stepping),
        "peak_mb": peak_mb(d, world, customers),
        "mean_reward": reward / total,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=10_000)
    ap.add_argument("--decisions", type=int, default=30)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    d = Deployment.load(TELECOM / "deployment.toml")
    worlds = {
        "telecom world.toml": LatentWorld.load(TELECOM / "world.toml", d),
        "default world": LatentWorld.default(d),
    }
    out = {"machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}", "runs": {}}
    for name, world in worlds.items():
        r = run(d, world, args.customers, args.decisions)
        out["runs"][name] = r
        print(
            f"{d.name} ({d.action_space().n_actions} actions), {name}: {args.customers:,} customers x "
            f"{args.decisions} decisions: {r['decisions_per_s']:,.0f} decisions/s (decide path "
            f"{100 * r['decide_share']:.0f}% of the time; setup {r['setup_s']:.1f} s), peak traced memory "
            f"{r['peak_mb']:,.0f} MB, mean reward {r['mean_reward']:.4f}"
        )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
