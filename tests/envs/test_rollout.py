"""Rollouts: which reward a learner is fed."""

from __future__ import annotations

import numpy as np
import pytest

from envs.rollout import BanditRun, bandit_run, bandit_simulation
from envs.scenario import Scenario
from nba.policies import create
from nba.policies.base import Explore

PURPOSE = "test/envs/rollout"  # this module's customers (envs.random)

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
    run = bandit_run(SC, rec, decisions=1500, batch=500, seed=9, learn_from=learn_from, purpose=PURPOSE)
    fed = np.concatenate(rec.seen)
    # replay the same stream with the actions the run took: the same outcomes, whatever was chosen
    sim = bandit_simulation(SC, 9, 500, PURPOSE)
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
        bandit_run(SC, Recorder(), decisions=10, batch=10, learn_from="revenue", purpose=PURPOSE)


def _run(expected, oracle, no_contact) -> BanditRun:
    n = len(expected)
    zeros = np.zeros(n)
    return BanditRun(
        rewards=zeros,
        expected=np.asarray(expected, float),
        greedy=np.asarray(expected, float),
        oracle=np.asarray(oracle, float),
        no_contact=np.asarray(no_contact, float),
        actions=zeros.astype(int),
        segment=zeros.astype(int),
        send_hour=zeros,
        seconds=1.0,
    )


def test_score_curve_scores_each_slice_on_its_own():
    # no better than no contact for the first 6 decisions, as good as the oracle for the last 4
    run = _run([0, 0, 0, 0, 0, 0, 2, 2, 2, 2], [2] * 10, [0] * 10)
    np.testing.assert_allclose(run.score_curve(2), [0.0, 0.8])
    np.testing.assert_allclose(run.score_curve(5), [0, 0, 0, 1, 1])
    # 3 parts of 10: 3, 3 and 4 decisions
    np.testing.assert_allclose(run.score_curve(3), [0.0, 0.0, 1.0])
    np.testing.assert_allclose(run.score_curve(1), [run.normalised_score])
    # each slice against its own oracle and no-contact means, not the run's
    run = _run([1, 1, 3, 3], [2, 2, 5, 5], [0, 0, 1, 1])
    np.testing.assert_allclose(run.score_curve(2), [0.5, 0.5])


def test_score_curve_of_a_real_run_averages_to_its_score():
    run = bandit_run(SC, Recorder(), decisions=2000, batch=500, seed=3, purpose=PURPOSE)
    curve = run.score_curve(4)
    gains = [run.oracle[i : i + 500].mean() - run.no_contact[i : i + 500].mean() for i in range(0, 2000, 500)]
    assert np.average(curve, weights=gains) == pytest.approx(run.normalised_score)


@pytest.mark.parametrize("parts", [0, 11, -1])
def test_score_curve_rejects_a_part_count_naming_the_field(parts):
    with pytest.raises(ValueError, match="parts"):
        _run([0] * 10, [1] * 10, [0] * 10).score_curve(parts)


def _rules():
    return create("business_as_usual", SC.action_space, segments=tuple(SC.segments))


def test_greedy_is_the_most_probable_actions_exact_reward():
    # a deterministic policy's most probable action is the one it takes
    run = bandit_run(SC, _rules(), decisions=1000, batch=500, seed=4, purpose=PURPOSE)
    np.testing.assert_array_equal(run.greedy, run.expected)
    assert run.greedy_score == pytest.approx(run.normalised_score)
    # uniform over the eligible actions: every one ties, and the lowest, no contact, is the greedy choice
    run = bandit_run(SC, Recorder(), decisions=1000, batch=500, seed=4, purpose=PURPOSE)
    np.testing.assert_array_equal(run.greedy, run.no_contact)
    assert run.greedy_score == 0.0
    assert run.normalised_score < 0.0  # contacting at random costs more than it earns
    # the rules with half the decisions explored: the greedy choice is the rules' own, and what exploring
    # cost shows as the gap between the two scores
    run = bandit_run(SC, Explore(_rules(), epsilon=0.5), decisions=2000, batch=500, seed=4, purpose=PURPOSE)
    assert run.greedy_score > run.normalised_score + 0.05
    assert not np.array_equal(run.greedy, run.expected)


def test_the_simulation_decides_through_the_librarys_decide_path():
    """Simulation.decide (nba.decide.decide_profiles) shows the policy observe() and action_mask(), and
    chooses as nba.policies.act does with the same generator: the rollouts that call it are unchanged."""
    from envs.simulation import Simulation
    from nba.eligibility import send_time
    from nba.policies import act

    sc = Scenario.default()
    policy = create("uniform_random", sc.action_space)
    for hour in (None, sc.journey_decision_hour):
        sim = Simulation(sc, 5, 400, purpose="test/decide", decision_hour=hour)
        for _ in range(6):
            decided = sim.decide(policy, np.random.default_rng([5, 1]))
            X, mask = sim.observe(), sim.action_mask()
            np.testing.assert_array_equal(decided.context, X)
            np.testing.assert_array_equal(decided.eligible, mask)
            assert ((decided.reasons == 0) == mask).all()
            d = act(policy, X, mask, np.random.default_rng([5, 1]))
            np.testing.assert_array_equal(decided.action, d.actions)
            np.testing.assert_array_equal(decided.propensity, d.propensities)
            assert decided.decisions.actions is decided.action
            slots = send_time(sim.space, sim.state.now, sim.traits.tz_offset.astype(np.float64))
            sent = decided.action > 0
            np.testing.assert_array_equal(
                decided.send_at[sent], slots[np.flatnonzero(sent), sim.space.slot_of[decided.action[sent]]]
            )
            assert not sim.step(decided.action).blocked.any()
