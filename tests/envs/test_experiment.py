"""Simulated A/B tests: hashed arms, exact counterfactual truth, intervals that cover it, A/A stays quiet."""

from __future__ import annotations

import numpy as np
import pytest

from envs.experiment import METRICS, customer_ids, run_experiment
from envs.scenario import Scenario
from nba import ab
from nba.policies import create

N, DAYS, PRE = 3000, 10, 5


PURPOSE = "test/envs/experiment"  # this module's customers (envs.random)


@pytest.fixture(scope="module")
def scenario():
    return Scenario.default()


def _policy(sc, name):
    return create(name, sc.action_space, sc.segments)


@pytest.fixture(scope="module")
def ab_run(scenario):
    arms = {"champion": _policy(scenario, "business_as_usual"), "challenger": _policy(scenario, "no_contact")}
    return run_experiment(
        scenario, arms, n=N, days=DAYS, seed=11, pre_days=PRE, experiment="bau-vs-silence", purpose=PURPOSE
    )


@pytest.fixture(scope="module")
def aa_run(scenario):
    bau = _policy(scenario, "business_as_usual")
    return run_experiment(
        scenario,
        {"champion": bau, "challenger": bau},
        n=N,
        days=DAYS,
        seed=12,
        pre_days=PRE,
        experiment="aa",
        purpose=PURPOSE,
    )


def test_arms_are_hashed_assignments(ab_run):
    assert ab_run.arms == ("challenger", "champion")
    np.testing.assert_array_equal(ab_run.customer_id, customer_ids(11, N, PURPOSE))
    np.testing.assert_array_equal(
        ab_run.arm, ab.assign("bau-vs-silence", ab_run.customer_id, {"champion": 1, "challenger": 1})
    )
    share = (ab_run.arm == "challenger").mean()
    assert abs(share - 0.5) < 4 * np.sqrt(0.25 / N)
    assert ab_run.daily_reward.shape == (N, DAYS) and ab_run.pre_reward.shape == (N,)
    assert set(ab_run.metrics) == set(METRICS)
    # the challenger never contacts anyone
    assert ab_run.metrics["sent"][ab_run.arm == "challenger"].sum() == 0
    assert ab_run.metrics["sent"][ab_run.arm == "champion"].sum() > 0


def test_each_customer_lives_its_arms_counterfactual(ab_run):
    """Common random numbers: the experiment's outcome of a customer is its run under its arm's policy."""
    for a in ab_run.arms:
        sel = ab_run.arm == a
        np.testing.assert_array_equal(ab_run.reward[sel], ab_run.potential_reward[a][sel])
    paired = ab_run.potential_reward["challenger"] - ab_run.potential_reward["champion"]
    assert ab_run.true_effect("challenger") == pytest.approx(paired.mean())
    assert ab_run.true_effects("challenger")[-1] == pytest.approx(paired.mean())


def test_counterfactual_runs_asking_the_policies_again_agree(scenario):
    """The truth runs reuse each arm's own customers' actions (replay); asking every policy again gives
    the same potential outcomes, every metric, to the bit: the common-random-numbers claim itself."""
    arms = {"champion": _policy(scenario, "business_as_usual"), "challenger": _policy(scenario, "batch_and_blast")}
    kw = dict(n=400, days=4, seed=13, pre_days=2, purpose=PURPOSE)
    fast, slow = run_experiment(scenario, arms, **kw), run_experiment(scenario, arms, **kw, replay=False)
    for a in fast.arms:
        sel = slow.arm == a
        for m in METRICS:
            np.testing.assert_array_equal(fast.potential_metrics[a][m], slow.potential_metrics[a][m])
            np.testing.assert_array_equal(slow.metrics[m][sel], slow.potential_metrics[a][m][sel])
    np.testing.assert_array_equal(fast.daily_reward, slow.daily_reward)


def test_guardrails_known_truth_and_daily_looks(ab_run):
    """No contact against business as usual: no message sent and fewer opt-outs, so every guardrail's
    true worsening is negative; each guardrail is tested over the daily looks of its metric."""
    for m in METRICS:
        assert ab_run.daily_metrics[m].shape == (N, DAYS)
        np.testing.assert_allclose(ab_run.daily_metrics[m].sum(axis=1), ab_run.metrics[m])
    sends = ab.Guardrail("sends", "sent", 0.5, relative=True)
    assert ab_run.true_worsening("challenger", sends) == -1.0  # sends nothing: -100%
    opt = ab.DEFAULT_GUARDRAILS[0]
    pot = ab_run.potential_metrics
    assert ab_run.true_worsening("challenger", opt) == pytest.approx(
        pot["challenger"]["opted_out"].mean() - pot["champion"]["opted_out"].mean()
    )
    assert ab_run.true_worsening("challenger", opt) < 0
    tests = ab_run.guardrails("challenger", (opt, sends))
    assert [t.guardrail for t in tests] == [opt, sends]
    assert all(t.always_valid and t.p_values.shape == (DAYS,) for t in tests)
    assert tests[1].passed and tests[1].worsening == -1.0
    looks = ab_run.looks("opted_out")
    i, j = looks.arm_index("challenger"), looks.arm_index("champion")
    assert tests[0].worsening == pytest.approx(looks.mean[i, -1] - looks.mean[j, -1])
    with pytest.raises(ValueError, match="metric: 'clicks' is not measured"):
        ab_run.guardrails("challenger", (ab.Guardrail("clicks", "clicks", 1.0),))


def test_interval_covers_true_difference(ab_run):
    truth = ab_run.true_effect("challenger")
    a = ab_run.analyse("challenger", tau=2.0)
    c = a.comparison
    assert c.ci_low <= truth <= c.ci_high
    assert a.cuped is not None and a.cuped.adjusted.ci_low <= truth <= a.cuped.adjusted.ci_high
    assert a.cuped.variance_reduction > 0
    # the confidence sequence covers the true cumulative effect at every daily look
    s = a.sequential
    assert s is not None and s.n_looks == DAYS
    effects = ab_run.true_effects("challenger")
    assert np.all((s.cs_low <= effects) & (effects <= s.cs_high))


def test_aa_is_not_significant(aa_run):
    assert aa_run.true_effect("challenger") == 0.0  # same policy, same luck: exactly no effect
    a = aa_run.analyse("challenger", tau=2.0)
    assert not a.comparison.significant()
    assert a.cuped is not None and not a.cuped.adjusted.significant()
    assert a.sequential is not None and not a.sequential.rejected


def test_fixed_seed_is_reproducible(scenario):
    arms = {"champion": _policy(scenario, "business_as_usual"), "challenger": _policy(scenario, "batch_and_blast")}
    kw = dict(n=300, days=3, seed=5, pre_days=1, truth=False)
    r1, r2 = (
        run_experiment(scenario, arms, **kw, purpose=PURPOSE),
        run_experiment(scenario, arms, **kw, purpose=PURPOSE),
    )
    np.testing.assert_array_equal(r1.daily_reward, r2.daily_reward)
    np.testing.assert_array_equal(r1.pre_reward, r2.pre_reward)
    assert r1.true_daily is None
    with pytest.raises(ValueError, match="truth"):
        r1.true_effect("challenger")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"control": "nope"}, "control"),
        ({"splits": {"champion": 1}}, "splits"),
        ({"n": 0}, "n"),
        ({"days": 0}, "days"),
        ({"pre_days": -1}, "pre_days"),
        ({"splits": {"champion": 1, "challenger": 0}}, "splits"),
    ],
)
def test_run_experiment_validates(scenario, kwargs, match):
    bau = _policy(scenario, "business_as_usual")
    with pytest.raises(ValueError, match=match):
        run_experiment(
            scenario, {"champion": bau, "challenger": bau}, purpose=PURPOSE, **{"n": 10, "days": 1, **kwargs}
        )


def test_experiment_written_to_decision_log_analyses_the_same(scenario, tmp_path):
    from envs.log_writer import reward_rule
    from nba.log import DecisionLog

    arms = {"champion": _policy(scenario, "business_as_usual"), "challenger": _policy(scenario, "batch_and_blast")}
    log = DecisionLog(f"sqlite:///{tmp_path / 'ab.db'}")
    try:
        r = run_experiment(
            scenario,
            arms,
            n=400,
            days=4,
            pre_days=2,
            seed=21,
            experiment="logged",
            truth=False,
            log=log,
            purpose=PURPOSE,
        )
        rule = reward_rule(penalties=False)
        totals = ab.customer_totals(log.iter_batches(rule, chunk_rows=500, experiment="logged"), experiment="logged")
        looks = ab.daily_looks(
            log.iter_batches(rule, experiment="logged"), experiment="logged", start=r.start_h, days=r.days, arms=r.arms
        )
        pre = ab.customer_totals(log.iter_batches(rule, experiment=""), end=r.start_h)
    finally:
        log.close()
    order = np.argsort(r.customer_id)
    np.testing.assert_array_equal(totals.customer_id, r.customer_id[order])
    np.testing.assert_array_equal(totals.arm, r.arm[order])
    np.testing.assert_allclose(totals.total, r.reward[order], atol=1e-9)
    np.testing.assert_allclose(pre.lookup(r.customer_id), r.pre_reward, atol=1e-9)
    ref = r.looks()
    np.testing.assert_array_equal(looks.n, ref.n)
    np.testing.assert_allclose(looks.mean, ref.mean, atol=1e-9)
    np.testing.assert_allclose(looks.var, ref.var, rtol=1e-9, atol=1e-9)
