"""The oracle: the best eligible action by the simulator's exact expected reward.

Evaluation only — it reads ground truth no real policy can see — and it acts on the simulation's
current contexts (the ``X`` it is given must be that simulation's observations). It gives the
``V_oracle`` of the normalised score ``(V - V_no_contact) / (V_oracle - V_no_contact)`` in bandit
runs; in journeys it is myopic (the best immediate reward), not optimal over the horizon.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from envs.simulation import Simulation
from nba.policies.base import greedy


class Oracle:
    name: ClassVar[str] = "oracle"

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.space = sim.space

    def probabilities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if X.shape[0] != self.sim.n:
            raise ValueError(f"X: the oracle acts on its simulation's {self.sim.n} current contexts, got {X.shape[0]}")
        return greedy(self.sim.expected_rewards(), mask)

    def update(self, X, actions, rewards, propensities=None) -> Oracle:
        return self
