"""The simulator writes the decision log, and the rewards read back equal the simulator's."""

from __future__ import annotations

import numpy as np
import pytest

from envs.log_writer import (
    CustomerIds,
    PreStep,
    log_bandit_run,
    reward_rule,
    scenario_layout,
    simulation_provenance,
    step_records,
)
from envs.rollout import bandit_run, policy_rng
from envs.scenario import Scenario
from envs.simulation import Simulation
from nba.log import DecisionLog, RewardRule
from nba.policies import Explore, act, create

PURPOSE = "test/envs/decision_log"  # this module's customers (envs.random)


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return Scenario.default()


@pytest.fixture
def log(tmp_path):
    with DecisionLog(f"sqlite:///{tmp_path / 'sim.db'}") as store:
        yield store


def test_bandit_run_logged_rewards_equal_the_simulator(log, scenario):
    space = scenario.action_space
    policy = lambda: Explore(create("uniform_random", space), epsilon=0.7, holdout=0.3)  # noqa: E731
    summary = log_bandit_run(log, scenario, policy(), decisions=2500, seed=3, batch=1000, purpose=PURPOSE)
    assert summary.decisions == summary.new_decisions == log.count_decisions() == 2500
    assert summary.new_outcomes == log.count_outcomes() > 0
    batch = log.read(reward_rule())
    np.testing.assert_allclose(batch.reward, summary.rewards, rtol=0, atol=1e-9)
    # the same loop as envs.rollout.bandit_run: the same realised rewards
    ref = bandit_run(scenario, policy(), decisions=2500, batch=1000, seed=3, purpose=PURPOSE)
    np.testing.assert_array_equal(summary.rewards, ref.rewards)
    assert log.layout() == scenario_layout(scenario)
    assert len(set(batch.customer_id)) < 2500  # rows keep their customer across steps until replaced
    # penalties are real: some negative rewards beyond the cost
    assert (batch.reward < -batch.cost - 1e-9).any()


def test_a_simulated_log_records_its_provenance_before_its_first_decision(log, scenario):
    """The replay spec and the simulator's reward rule, in the log; a run of another simulation into the
    same log is refused before it writes anything."""
    space = scenario.action_space
    replay = {
        "scenario": "default",
        "policy": "uniform_random",
        "params": {},
        "epsilon": 0.0,
        "holdout": 0.0,
        "decisions": 300,
        "seed": 1,
        "purpose": PURPOSE,
        "batch": 300,
    }
    log_bandit_run(
        log,
        scenario,
        create("uniform_random", space),
        decisions=300,
        seed=1,
        batch=300,
        learn=False,
        purpose=PURPOSE,
        provenance=simulation_provenance(replay),
    )
    assert log.provenance() == {"simulation": replay, "reward_rule": reward_rule(penalties=True).to_dict()}
    assert RewardRule.from_dict(log.provenance()["reward_rule"]) == reward_rule(penalties=True)
    with pytest.raises(ValueError, match=r"^provenance: .*simulation\.seed: 1 here, 2 given"):
        log_bandit_run(
            log,
            scenario,
            create("uniform_random", space),
            decisions=300,
            seed=2,
            batch=300,
            learn=False,
            purpose=PURPOSE,
            provenance=simulation_provenance({**replay, "seed": 2}),
        )
    assert log.count_decisions() == 300


def test_organic_purchases_without_contact_are_logged(log, scenario):
    """No contact still earns organic revenue: a converted event on action 0, as uplift needs."""
    summary = log_bandit_run(
        log, scenario, create("no_contact", scenario.action_space), decisions=4000, seed=4, batch=2000, purpose=PURPOSE
    )
    batch = log.read(reward_rule())
    assert (batch.action == 0).all() and (batch.cost == 0).all()
    assert (batch.reward > 0).sum() >= 5
    np.testing.assert_allclose(batch.reward, summary.rewards, rtol=0, atol=1e-9)


def test_rerun_is_idempotent(log, scenario):
    space = scenario.action_space
    first = log_bandit_run(
        log, scenario, create("uniform_random", space), decisions=600, seed=1, batch=300, purpose=PURPOSE
    )
    again = log_bandit_run(
        log, scenario, create("uniform_random", space), decisions=600, seed=1, batch=300, purpose=PURPOSE
    )
    assert first.new_decisions == 600 and again.new_decisions == 0 and again.new_outcomes == 0
    np.testing.assert_array_equal(first.rewards, again.rewards)
    other = log_bandit_run(
        log,
        scenario,
        create("uniform_random", space),
        decisions=300,
        seed=1,
        batch=300,
        experiment="exp",
        arm="B",
        purpose=PURPOSE,
    )
    assert other.new_decisions == 300
    assert len(log.read(experiment="exp")) == 300


def test_learning_policy_logs_its_propensities(log, scenario):
    space = scenario.action_space
    dim = scenario.feature_spec.dim
    summary = log_bandit_run(
        log, scenario, create("linucb", space, dim=dim), decisions=400, seed=5, batch=200, purpose=PURPOSE
    )
    ref = bandit_run(scenario, create("linucb", space, dim=dim), decisions=400, batch=200, seed=5, purpose=PURPOSE)
    np.testing.assert_array_equal(summary.rewards, ref.rewards)
    batch = log.read(reward_rule())
    np.testing.assert_allclose(batch.reward, ref.rewards, rtol=0, atol=1e-9)
    assert np.all((batch.propensity > 0) & (batch.propensity <= 1))
    assert batch.eligible[np.arange(len(batch)), batch.action].all()


def test_event_times_and_funnel(log, scenario):
    log_bandit_run(
        log, scenario, create("uniform_random", scenario.action_space), decisions=1000, seed=2, purpose=PURPOSE
    )
    batch = log.read()
    sent = batch.action > 0
    assert np.all(batch.send_at[~sent] == batch.time[~sent])
    assert np.all((batch.send_at[sent] >= batch.time[sent]) & (batch.send_at[sent] < batch.time[sent] + 24))
    # funnel: each later stage is counted under a rule that counts nothing else
    counts = {
        e: (log.read(RewardRule(events=(e,), window_h=np.inf, default=0, subtract_cost=False)).reward != 0)
        for e in ("opted_out", "churned")
    }
    assert counts["opted_out"].sum() + counts["churned"].sum() > 0
    with log.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "select o.event, o.time - d.send_at from outcomes o join decisions d using (decision_id)"
        ).all()
    lag = {}
    for event, dt in rows:
        lag.setdefault(event, []).append(dt)
    assert min(min(v) for v in lag.values()) >= 0
    assert len(lag["delivered"]) >= len(lag["opened"]) >= len(lag["clicked"])


def test_step_records_journey_view(tmp_path, scenario):
    """step_records with decision_hour set and only the customers still present logged."""
    n, days = 300, 6
    sim = Simulation(scenario, 11, n, decision_hour=scenario.journey_decision_hour, purpose=PURPOSE)
    policy = create("uniform_random", scenario.action_space)
    rng = policy_rng(11, PURPOSE)
    customers = CustomerIds.start(n, "j-")
    alive = np.ones(n, bool)
    expected = []
    with DecisionLog(f"sqlite:///{tmp_path / 'journey.db'}") as store:
        for day in range(days):
            X, mask = sim.observe(), sim.action_mask()
            before = PreStep.of(sim, customers, X, mask)
            d = act(policy, X, mask, rng)
            res = sim.step(np.where(alive, d.actions, 0))
            ids = np.array([f"j:{day}:{r}" for r in range(n)], dtype=object)
            dec, out = step_records(
                sim,
                before,
                d,
                res,
                decision_ids=ids,
                policy="uniform_random",
                experiment="journey",
                arm=np.where(np.arange(n) % 2, "A", "B"),
                rows=alive,
            )
            store.log_decisions(dec)
            store.log_outcomes(out)
            expected.append(res.reward[alive])
            alive &= ~res.churned
        batch = store.read(reward_rule(penalties=False))
        assert len(batch) == sum(len(e) for e in expected) < n * days  # churned customers stop
        np.testing.assert_allclose(batch.reward, np.concatenate(expected), rtol=0, atol=1e-9)
        assert set(batch.arm) == {"A", "B"}
        # each customer decides at the same local hour every day: times a whole number of days apart
        t = {i: x for i, x in zip(batch.decision_id.tolist(), batch.time.tolist(), strict=True)}
        gaps = [t[f"j:{days - 1}:{r}"] - t[f"j:0:{r}"] for r in range(n) if f"j:{days - 1}:{r}" in t]
        assert gaps and np.allclose(gaps, 24.0 * (days - 1))


def test_blocked_action_is_refused(scenario):
    sim = Simulation(scenario, 0, 50, decision_hour=None, replace_rate=1 / 30, penalties=True, purpose=PURPOSE)
    customers = CustomerIds.start(50)
    X, mask = sim.observe(), sim.action_mask()
    before = PreStep.of(sim, customers, X, mask)
    d = act(create("uniform_random", scenario.action_space), X, mask, np.random.default_rng(0))
    blocked = np.flatnonzero(~mask.all(axis=1))[0]
    bad = d.actions.copy()
    bad[blocked] = np.flatnonzero(~mask[blocked])[0]
    res = sim.step(bad)
    from dataclasses import replace

    with pytest.raises(ValueError, match=rf"^action: row {blocked}: blocked by the contact policy"):
        step_records(
            sim, before, replace(d, actions=bad), res, decision_ids=np.arange(50).astype(str).astype(object), policy="p"
        )
