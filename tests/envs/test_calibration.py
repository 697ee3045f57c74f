"""The default scenario reproduces the articles' figures (envs/calibration.py lists each target,
its source and tolerance). One calibration run of 20,000 customers is shared by the checks; at that
size the sampling error of each figure is far inside its tolerance (e.g. the share of multi-channel
buyers is a proportion over ~8,000 buyers: standard error ~0.005 against a band of ±0.07)."""

import numpy as np
import pytest

from envs import calibration
from envs.population import nbytes
from envs.scenario import Scenario
from envs.simulation import Simulation

PURPOSE = "test/envs/calibration"  # this module's customers (envs.random)


@pytest.fixture(scope="module")
def scenario():
    return Scenario.default()


@pytest.fixture(scope="module")
def measured(scenario):
    stats = calibration.simulate_journeys(scenario, n=20_000, seed=0)
    return calibration.measure(scenario, stats)


def test_every_checked_target_is_measured(measured):
    checked = {t.name for t in calibration.TARGETS if t.kind == "checked"}
    assert checked == set(measured)


@pytest.mark.parametrize("name", [t.name for t in calibration.TARGETS if t.kind == "checked"])
def test_target_within_tolerance(measured, name):
    target = calibration.TARGETS_BY_NAME[name]
    assert target.ok(measured[name]), f"{name}: measured {measured[name]:.4f}, target [{target.low}, {target.high}]"


def test_targets_name_a_source_and_bracket_their_value():
    for t in calibration.TARGETS:
        assert t.source and t.statement
        assert t.low <= t.value <= t.high, t.name


def test_calibration_holds_on_another_seed(scenario):
    """The fit is a property of the scenario, not of one lucky seed."""
    stats = calibration.simulate_journeys(scenario, n=10_000, seed=123)
    for check in calibration.check(calibration.measure(scenario, stats)):
        assert check.ok, (check.target.name, check.measured)


def test_business_as_usual_beats_no_contact(scenario):
    """Marketing pays on this population: a sanity check of the uplift machinery."""
    from envs.rollout import compare_policies
    from nba.policies.baselines import BusinessAsUsual, NoContact

    diff = compare_policies(
        scenario,
        BusinessAsUsual(scenario.action_space, tuple(scenario.segments)),
        NoContact(scenario.action_space),
        n=5_000,
        seed=4,
        purpose=PURPOSE,
    )
    assert diff.ci_low > 0, diff


def test_common_random_numbers_make_paired_differences_tight(scenario):
    from envs.rollout import journey_returns
    from nba.policies.baselines import NoContact

    a = journey_returns(scenario, NoContact(scenario.action_space), 3_000, seed=5, purpose=PURPOSE)
    b = journey_returns(scenario, NoContact(scenario.action_space), 3_000, seed=5, purpose=PURPOSE)
    assert np.array_equal(a, b)


def test_million_customers_fit_in_one_gigabyte(scenario):
    sim = Simulation(scenario, 0, 1_000_000, decision_hour=scenario.journey_decision_hour, purpose=PURPOSE)
    held = nbytes(sim.traits) + nbytes(sim.state) + nbytes(sim.history)
    held += sim.streams.keys.nbytes + sim.streams.counters.nbytes + sim.recent.times.nbytes
    held += sim.recent.any_times.nbytes
    assert held < 2**30, f"{held / 2**20:.0f} MB"


def test_paired_comparison_is_tighter_than_independent_runs(scenario):
    """Common random numbers: the same-seed difference has far less variance than a cross-seed one."""
    from envs.rollout import journey_returns
    from nba.policies.baselines import BusinessAsUsual, NoContact

    no_contact = NoContact(scenario.action_space)
    bau = BusinessAsUsual(scenario.action_space, tuple(scenario.segments))
    a = journey_returns(scenario, bau, 3_000, seed=6, days=30, purpose=PURPOSE)
    b_same = journey_returns(scenario, no_contact, 3_000, seed=6, days=30, purpose=PURPOSE)
    b_other = journey_returns(scenario, no_contact, 3_000, seed=7, days=30, purpose=PURPOSE)
    assert np.var(a - b_same) < 0.5 * np.var(a - b_other)


def test_journey_value_brackets_the_mean_return(scenario):
    from envs.rollout import journey_returns, journey_value
    from nba.policies.baselines import BusinessAsUsual

    bau = BusinessAsUsual(scenario.action_space, tuple(scenario.segments))
    v = journey_value(scenario, bau, n=1_000, seed=8, days=10, purpose=PURPOSE)
    r = journey_returns(scenario, bau, 1_000, seed=8, days=10, purpose=PURPOSE)
    assert v.n == 1_000 and v.mean == r.mean()
    assert v.ci_low < v.mean < v.ci_high
