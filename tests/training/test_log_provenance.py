"""A simulated log carries its provenance: training and evaluation find its reward rule and the exact
values' replay in the log itself, whichever MLflow tracking store the job uses."""

from __future__ import annotations

import os

import numpy as np
import pytest

from envs.log_writer import log_bandit_run
from envs.scenario import Scenario
from nba.log import DecisionLog, RewardRule
from nba.policies import create
from training import jobs, registry

PURPOSE = "test/training/log-provenance"  # this module's customers (envs.random)


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    """Point MLflow at a fresh embedded store under a folder of its own: ``tracking("a")``."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def use(name: str) -> str:
        os.environ.pop("MLFLOW_TRACKING_URI", None)  # mlflow.set_tracking_uri exports the last one
        return registry.use_store(tmp_path / name, experiment="tests")

    return use


def test_a_simulated_log_is_read_the_same_under_another_tracking_store(tracking, tmp_path):
    url = f"sqlite:///{tmp_path / 'sim.db'}"
    tracking("simulated-here")
    sim = jobs.simulate(url, decisions=2000, seed=7, purpose=PURPOSE)
    replay = {
        "scenario": "default",
        "policy": "business_as_usual",
        "params": {},
        "epsilon": 0.2,
        "holdout": 0.05,
        "messages": 0.0,
        "decisions": 2000,
        "seed": 7,
        "purpose": PURPOSE,
        "batch": jobs.BANDIT_BATCH,
    }
    with DecisionLog(url) as log:
        assert log.provenance() == {"simulation": replay, "reward_rule": jobs.sim_reward_rule().to_dict()}
        simulated = log.read(jobs.sim_reward_rule()).reward.mean()
        assert simulated != log.read(RewardRule()).reward.mean()  # the penalties count
    assert sim.rows == 2000

    tracking("empty-elsewhere")  # no simulate run in this store
    assert jobs.reward_rule_for(url) == jobs.sim_reward_rule()
    assert jobs.find_simulation(url) == replay
    ev = jobs.evaluate(url, ["no_contact", "uniform_random"], n_bootstrap=20)
    assert ev.logging_value[0] == pytest.approx(simulated, rel=1e-12)
    assert ev.truth is not None and set(ev.truth) == {"no_contact", "uniform_random"}
    assert ev.logging_truth is not None and np.isfinite(ev.logging_truth)

    # the same simulation again is harmless; another into the same log is refused and writes nothing
    jobs.simulate(url, decisions=2000, seed=7, purpose=PURPOSE)
    with pytest.raises(jobs.JobError, match=r"^log: provenance: .*simulation\.seed: 7 here, 8 given"):
        jobs.simulate(url, decisions=2000, seed=8, purpose=PURPOSE)
    with DecisionLog(url) as log:
        assert log.count_decisions() == 2000 and log.provenance()["simulation"] == replay


def test_a_log_without_provenance_gets_the_default_rule(tracking, tmp_path):
    """A log no simulate job wrote (here the simulator's loop without a provenance) holds none: nba's default
    rule, no exact values to replay."""
    tracking("any")
    url = f"sqlite:///{tmp_path / 'bare.db'}"
    scenario = Scenario.default()
    with DecisionLog(url) as log:
        log_bandit_run(
            log,
            scenario,
            create("uniform_random", scenario.action_space),
            decisions=500,
            seed=1,
            batch=500,
            learn=False,
            purpose=PURPOSE,
        )
        assert log.provenance() is None
    assert jobs.reward_rule_for(url) == RewardRule()
    assert jobs.find_simulation(url) is None
    ev = jobs.evaluate(url, ["no_contact"], n_bootstrap=20)
    assert ev.truth is None and ev.logging_truth is None
