"""Shared plumbing of the gymnasium views: scenario resolution, spaces, action validation."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np

from envs.scenario import Scenario


def resolve_scenario(scenario: Scenario | str | Path | None) -> Scenario:
    if scenario is None:
        return Scenario.default()
    if isinstance(scenario, Scenario):
        return scenario
    return Scenario.load(scenario)


def observation_space(sc: Scenario) -> gym.spaces.Box:
    d = sc.feature_spec.dim
    return gym.spaces.Box(low=np.full(d, -1.5, np.float32), high=np.full(d, 1e4, np.float32), dtype=np.float32)


def scalar_action(action, n_actions: int) -> int:
    """Validate one action: an integer index in range, never clipped."""
    a = np.asarray(action)
    if a.shape != () or a.dtype.kind not in "iu":
        raise ValueError(f"action: expected one integer index, got {action!r}")
    if not 0 <= int(a) < n_actions:
        raise ValueError(f"action: index {int(a)} is outside the action space [0, {n_actions})")
    return int(a)


def seed_or_draw(seed: int | None, np_random: np.random.Generator) -> int:
    return int(seed) if seed is not None else int(np_random.integers(0, 2**62))


SHARD_MIN_ROWS = 8192  # below this, one thread steps faster than shards would


def default_threads(num_envs: int) -> int:
    """Shards for a vector environment: one per core for large batches, else one."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, num_envs // SHARD_MIN_ROWS))


def make_simulation(scenario: Scenario, seed: int, n: int, threads: int, **kwargs):
    """A (sharded) simulation under gymnasium's seeding convention (:data:`envs.random.GYM`)."""
    from envs.random import GYM
    from envs.simulation import ShardedSimulation, Simulation

    if threads > 1:
        return ShardedSimulation(scenario, seed, n, threads, purpose=GYM, **kwargs)
    return Simulation(scenario, seed, n, purpose=GYM, **kwargs)
