"""Rollouts: which reward a learner is fed."""

from __future__ import annotations

import numpy as np
import pytest

from envs.rollout import bandit_run, bandit_simulation
from envs.scenario import Scenario
from nba.policies import create

SC = Scenario.default()


class Recorder:
    """Uniform random decisions; keeps every reward it is given to learn from."""

    name = "recorder"

    def __init__(self) -> None:
        self.inner = create("uniform_random", SC.action_space)
        self.space = self.inner.space
        self.seen: list[np.ndarray] = []

    def probabilities(self, X, mask):
        return self.inner.probabilities(X, mask)

    def update(self, X, actions, rewards, propensities=None):
        self.seen.append(np.array(rewards))
        return self


@pytest.mark.parametrize("learn_from", ["total", "attributed"])
def test_bandit_run_feeds_the_reward_it_is_told(learn_from):
    rec = Recorder()
    run = bandit_run(SC, rec, decisions=1500, batch=500, seed=9, learn_from=learn_from)
    fed = np.concatenate(rec.seen)
    # replay the same stream with the actions the run took: the same outcomes, whatever was chosen
    sim = bandit_simulation(SC, 9, 500)
    total, attributed = [], []
    for chunk in np.split(run.actions, 3):
        res = sim.step(chunk)
        total.append(res.reward)
        attributed.append(res.attributed)
    total, attributed = np.concatenate(total), np.concatenate(attributed)
    np.testing.assert_array_equal(run.rewards, total)
    np.testing.assert_array_equal(fed, attributed if learn_from == "attributed" else total)
    # the two differ where an organic purchase happened: they are not the same stream twice
    assert (attributed != total).sum() >= 3
    # a decision that sent nothing is attributed nothing
    assert (attributed[run.actions == 0] == 0).all()


def test_bandit_run_rejects_an_unknown_reward_naming_the_field():
    with pytest.raises(ValueError, match="learn_from"):
        bandit_run(SC, Recorder(), decisions=10, batch=10, learn_from="revenue")
