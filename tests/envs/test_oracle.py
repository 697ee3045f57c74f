import numpy as np

from envs.oracle import Oracle
from envs.scenario import Scenario
from envs.simulation import Simulation
from nba.policies import act, create


def test_oracle_is_at_least_as_good_as_any_policy_on_exact_expectations():
    sc = Scenario.default()
    sim = Simulation(sc, 11, 2000, decision_hour=None, penalties=True)
    X, mask = sim.observe(), sim.action_mask()
    er = sim.expected_rewards()
    rows = np.arange(sim.n)
    oracle = act(Oracle(sim), X, mask, np.random.default_rng(0))
    assert mask[rows, oracle.actions].all()
    np.testing.assert_array_equal(er[rows, oracle.actions], np.where(mask, er, -np.inf).max(axis=1))
    for name in ("uniform_random", "business_as_usual", "no_contact"):
        d = act(create(name, sc.action_space, tuple(sc.segments)), X, mask, np.random.default_rng(1))
        assert (er[rows, oracle.actions] >= er[rows, d.actions] - 1e-12).all()
