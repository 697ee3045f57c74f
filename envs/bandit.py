"""``nba/Bandit-v0``: one marketing decision per step, for a (customer, moment).

Description:
    A stream of decisions. Each step shows the context of one customer at one moment of the day
    (profile and contact history, built by :func:`nba.features.build_features`); the agent picks no
    contact or a (channel, content, send slot); the customer responds through the funnel of
    :mod:`envs.response`. The customer then lives on (fatigue, engagement, lifecycle) and comes back
    one to two days later, until replaced by a new customer (on churn, or with probability
    ``replace_rate`` a step), so contexts carry real contact histories.

Action Space:
    ``Discrete(n_actions)``: 0 is no contact; see :class:`nba.actions.ActionSpace` for the rest. An
    index out of range raises ``ValueError``; it is never clipped. Actions on a channel the customer
    cannot be reached on are legal but are not sent (no cost, no effect): ``info["action_mask"]``
    marks the reachable ones.

Observation Space:
    ``Box(d,)`` float32, the feature vector named by ``Scenario.feature_spec.names``.

Rewards:
    Realised profit of the decision within ``decision_window_h``: revenue of any purchase (organic
    or caused by the message, less the content's discount if the message was seen) minus the send
    cost, minus the opt-out and churn penalties of the scenario. ``info["expected_rewards"]`` holds
    the **exact expected reward of every action** for the context just returned, so oracle value and
    regret are exact.

Starting State:
    A customer drawn from the scenario's population, at a random moment of the day.

Episode End:
    Never terminates; wrap in ``TimeLimit`` (``max_episode_steps``) for finite episodes.

Arguments:
    ``scenario`` (a :class:`Scenario`, a TOML/YAML path, or ``None`` for the default),
    ``replace_rate`` (default 1/30).

Version History:
    v0: initial version.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import VectorEnv
from gymnasium.vector.utils import batch_space

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


def _outcome_info(res, i: int) -> dict[str, Any]:
    """Row ``i`` of a step's outcome as plain Python values (None where a value does not apply)."""
    out = {}
    for k, v in vars(res.outcome).items():
        x = v[i].item()
        out[k] = None if isinstance(x, float) and np.isnan(x) else x
    return out


class BanditEnv(gym.Env[np.ndarray, np.int64]):
    metadata = {"render_modes": []}

    def __init__(self, scenario=None, replace_rate: float = 1 / 30) -> None:
        self.scenario = resolve_scenario(scenario)
        self.replace_rate = replace_rate
        self.space = self.scenario.action_space
        self.action_space = gym.spaces.Discrete(self.space.n_actions)
        self.observation_space = observation_space(self.scenario)
        self.sim: Simulation | None = None

    def _info(self) -> dict[str, Any]:
        return {
            "action_mask": self.sim.action_mask()[0],
            "expected_rewards": self.sim.expected_rewards()[0],
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None or self.sim is None:
            self.sim = Simulation(
                self.scenario,
                seed_or_draw(seed, self.np_random),
                1,
                purpose=GYM,
                decision_hour=None,
                replace_rate=self.replace_rate,
                penalties=True,
            )
        else:
            self.sim.reset_rows(np.arange(1))
        return self.sim.observe()[0], self._info()

    def step(self, action):
        if self.sim is None:
            raise RuntimeError("call reset() before step()")
        a = scalar_action(action, self.space.n_actions)
        er = self.sim.expected_rewards()[0]
        mask = self.sim.action_mask()[0]
        res = self.sim.step(np.array([a]))
        info = self._info()
        info.update(
            expected_reward=float(er[a]),
            oracle_reward=float(er[mask].max()),
            outcome=_outcome_info(res, 0),
            new_customer=bool(res.replaced[0]),
        )
        return self.sim.observe()[0], float(res.reward[0]), False, False, info


class BanditVectorEnv(VectorEnv):
    """``num_envs`` decision streams stepped at once in NumPy; sub-env ``i`` equals ``BanditEnv`` seeded
    ``seed + i``. Exact expected rewards: :meth:`expected_rewards` (or ``info_expected_rewards=True``).
    Large batches are split over ``threads`` shards stepped in parallel (default: one per core, for
    batches of 8,192 rows or more)."""

    metadata = {"render_modes": [], "autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 1024,
        scenario=None,
        replace_rate: float = 1 / 30,
        info_expected_rewards: bool = False,
        threads: int | None = None,
    ) -> None:
        self.scenario = resolve_scenario(scenario)
        self.num_envs = num_envs
        self.replace_rate = replace_rate
        self.info_expected_rewards = info_expected_rewards
        self.threads = default_threads(num_envs) if threads is None else threads
        self.space = self.scenario.action_space
        self.single_action_space = gym.spaces.Discrete(self.space.n_actions)
        self.single_observation_space = observation_space(self.scenario)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.sim: Simulation | ShardedSimulation | None = None
        self._np_random = None

    def expected_rewards(self) -> np.ndarray:
        """(num_envs, n_actions) exact expected reward of every action in the current contexts."""
        return self.sim.expected_rewards()

    def action_mask(self) -> np.ndarray:
        return self.sim.action_mask()

    def _info(self) -> dict[str, Any]:
        info = {"action_mask": self.sim.action_mask()}
        if self.info_expected_rewards:
            info["expected_rewards"] = self.sim.expected_rewards()
        return info

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None or self.sim is None:
            if seed is None:
                seed = int(np.random.default_rng().integers(0, 2**62))
            self.sim = make_simulation(
                self.scenario,
                seed,
                self.num_envs,
                self.threads,
                decision_hour=None,
                replace_rate=self.replace_rate,
                penalties=True,
            )
        else:
            self.sim.reset_rows(np.arange(self.num_envs))
        return self.sim.observe(), self._info()

    def step(self, actions):
        if self.sim is None:
            raise RuntimeError("call reset() before step()")
        res = self.sim.step(np.asarray(actions))
        zeros = np.zeros(self.num_envs, bool)
        info = self._info()
        info["new_customer"] = res.replaced
        return self.sim.observe(), res.reward, zeros, zeros.copy(), info
