"""``nba/Journey-v0``: one customer over a horizon of days, a decision each day.

Description:
    The long-term view. Each day at ``journey_decision_hour`` local time the agent decides whether
    to contact the customer, on which channel, with which content and at which hour of the day.
    Messages build fatigue and engagement, purchases move the lifecycle, badly chosen messages cause
    opt-outs (the channel is lost for the rest of the journey) and churn (the customer is lost).
    This is where a policy that plans ahead beats a myopic bandit.

Action Space:
    ``Discrete(n_actions)`` as in ``nba/Bandit-v0``; an invalid index raises ``ValueError``.

Observation Space:
    ``Box(d,)`` float32 from :func:`nba.features.build_features` (no latent trait).

Rewards:
    Realised profit of the day: revenue of purchases (less discounts) minus send costs. Opt-outs and
    churn carry no penalty here: they cost the future revenue they prevent.

Starting State:
    A customer drawn from the scenario's population (some just signed up, most established).

Episode End:
    Terminated when the customer churns; truncated after ``horizon_days`` (default 90).

Arguments:
    ``scenario`` (a :class:`Scenario`, a TOML/YAML path, or ``None``), ``horizon_days`` (default:
    the scenario's).

Version History:
    v0: initial version.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import VectorEnv
from gymnasium.vector.utils import batch_space

from envs.bandit import _outcome_info
from envs.random import GYM
from envs.simulation import ShardedSimulation, Simulation
from envs.views import (
    default_threads,
    make_simulation,
    observation_space,
    resolve_scenario,
    scalar_action,
    seed_or_draw,
)


class JourneyEnv(gym.Env[np.ndarray, np.int64]):
    metadata = {"render_modes": []}

    def __init__(self, scenario=None, horizon_days: int | None = None) -> None:
        self.scenario = resolve_scenario(scenario)
        self.horizon_days = horizon_days or self.scenario.horizon_days
        self.space = self.scenario.action_space
        self.action_space = gym.spaces.Discrete(self.space.n_actions)
        self.observation_space = observation_space(self.scenario)
        self.sim: Simulation | None = None
        self.day = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None or self.sim is None:
            self.sim = Simulation(
                self.scenario,
                seed_or_draw(seed, self.np_random),
                1,
                purpose=GYM,
                decision_hour=self.scenario.journey_decision_hour,
            )
        else:
            self.sim.reset_rows(np.arange(1))
        self.day = 0
        return self.sim.observe()[0], {"action_mask": self.sim.action_mask()[0], "day": 0}

    def step(self, action):
        if self.sim is None:
            raise RuntimeError("call reset() before step()")
        a = scalar_action(action, self.space.n_actions)
        res = self.sim.step(np.array([a]))
        self.day += 1
        info = {"action_mask": self.sim.action_mask()[0], "day": self.day, "outcome": _outcome_info(res, 0)}
        terminated = bool(res.churned[0])
        truncated = not terminated and self.day >= self.horizon_days
        return self.sim.observe()[0], float(res.reward[0]), terminated, truncated, info


class JourneyVectorEnv(VectorEnv):
    """``num_envs`` customers stepped at once; sub-env ``i`` equals ``JourneyEnv`` seeded ``seed + i``.

    Autoreset follows gymnasium's default (``NEXT_STEP``): the step after an episode ends resets
    that sub-env, ignores its action and returns reward 0. Large batches are split over ``threads``
    shards stepped in parallel, as in ``BanditVectorEnv``.
    """

    metadata = {"render_modes": [], "autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(
        self, num_envs: int = 1024, scenario=None, horizon_days: int | None = None, threads: int | None = None
    ) -> None:
        self.scenario = resolve_scenario(scenario)
        self.num_envs = num_envs
        self.horizon_days = horizon_days or self.scenario.horizon_days
        self.threads = default_threads(num_envs) if threads is None else threads
        self.space = self.scenario.action_space
        self.single_action_space = gym.spaces.Discrete(self.space.n_actions)
        self.single_observation_space = observation_space(self.scenario)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.sim: Simulation | ShardedSimulation | None = None
        self.day = np.zeros(num_envs, np.int64)
        self._done = np.zeros(num_envs, bool)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None or self.sim is None:
            if seed is None:
                seed = int(np.random.default_rng().integers(0, 2**62))
            self.sim = make_simulation(
                self.scenario, seed, self.num_envs, self.threads, decision_hour=self.scenario.journey_decision_hour
            )
        else:
            self.sim.reset_rows(np.arange(self.num_envs))
        self.day[:] = 0
        self._done[:] = False
        return self.sim.observe(), self._info()

    def _info(self) -> dict[str, Any]:
        return {"action_mask": self.sim.action_mask(), "day": self.day.copy()}

    def step(self, actions):
        if self.sim is None:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise ValueError(f"action: expected shape ({self.num_envs},), got {actions.shape}")
        restart = self._done
        active = ~restart
        res = self.sim.step(np.where(active, actions, 0), active=active if restart.any() else None)
        reward = np.where(active, res.reward, 0.0)
        self.day += 1
        terminated = active & res.churned
        truncated = active & ~terminated & (self.day >= self.horizon_days)
        rows = np.flatnonzero(restart)
        if rows.size:
            self.sim.reset_rows(rows)
            self.day[rows] = 0
        self._done = terminated | truncated
        return self.sim.observe(), reward, terminated, truncated, self._info()
