"""Fitted-Q iteration: what the shared contract battery does not cover."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from envs.rollout import Transitions, collect_transitions
from envs.scenario import Scenario
from nba.policies import create
from nba.policies.base import Explore
from nba.policies.fqi import returns_to_go

PURPOSE = "test/nba/fqi"  # this module's customers (envs.random)

SC = Scenario.default()
SPACE, SEGMENTS, DIM = SC.action_space, tuple(SC.segments), SC.feature_spec.dim
SMALL = {
    "iterations": 3,
    "num_boost_round": 20,
    "min_data_in_leaf": 20,
    "min_support": 5,
    "max_candidates": 225,
    "threads": 1,
}


@functools.cache
def logged() -> Transitions:
    logger = Explore(create("business_as_usual", SPACE, SEGMENTS), 0.5, holdout=0.2)
    return collect_transitions(SC, logger, 200, seed=5, days=20, purpose=PURPOSE)


def fitted(**params):
    t = logged()
    policy = create("fqi", SPACE, SEGMENTS, dim=DIM, **(SMALL | params))
    return policy.fit(t.X, t.actions, t.attributed, t.X_next, t.mask_next, t.terminated)


def test_a_shortlist_of_every_action_bootstraps_exactly_as_the_full_maximum():
    t = logged()
    full, listed = fitted(bootstrap_top=None), fitted(bootstrap_top=SPACE.n_actions)
    assert full.candidates.sum() > 100  # the maximum does run over many actions
    np.testing.assert_array_equal(full.q_values(t.X[:500], t.mask[:500]), listed.q_values(t.X[:500], t.mask[:500]))


def test_a_short_shortlist_changes_the_bootstrap_and_keeps_the_first_fit():
    t = logged()
    full, short = fitted(bootstrap_top=None), fitted(bootstrap_top=2)
    myopic = fitted(iterations=1)
    X, mask = t.X[:500], t.mask[:500]
    # both start from the same myopic fit; the shortlist only limits the later targets' maximum
    assert full.booster.num_trees() == short.booster.num_trees() > myopic.booster.num_trees()
    assert not np.array_equal(full.q_values(X, mask), short.q_values(X, mask))


def test_the_shortlist_round_trips_through_the_saved_parameters():
    policy = fitted(bootstrap_top=4, iterations=2)
    params, arrays, models = policy.get_state()
    again = type(policy).from_state(SPACE, params, arrays, models)
    assert again.params["bootstrap_top"] == 4
    t = logged()
    np.testing.assert_array_equal(again.q_values(t.X[:200], t.mask[:200]), policy.q_values(t.X[:200], t.mask[:200]))


@pytest.mark.parametrize("bad", [0, -3])
def test_a_shortlist_of_no_action_is_rejected_naming_the_field(bad):
    with pytest.raises(ValueError, match="bootstrap_top"):
        create("fqi", SPACE, SEGMENTS, dim=DIM, bootstrap_top=bad)


# ----------------------------------------------------------------------------- two-stage value
def _returns_by_loop(rewards, episode, step, gamma):
    out = np.zeros(len(rewards))
    for e in np.unique(episode):
        rows = np.flatnonzero(episode == e)
        rows = rows[np.argsort(step[rows], kind="stable")]
        acc = 0.0
        for i in rows[::-1]:
            acc = rewards[i] + gamma * acc
            out[i] = acc
    return out


@pytest.mark.parametrize("gamma", [0.0, 0.9, 1.0])
def test_returns_to_go_sum_each_episode_backwards(gamma):
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 30, size=40)  # episodes of uneven lengths, rows shuffled
    episode = np.repeat(rng.permutation(1000)[:40], lengths)
    step = np.concatenate([np.arange(n) + rng.integers(0, 5) for n in lengths])
    rewards = rng.normal(size=len(step))
    order = rng.permutation(len(step))
    episode, step, rewards = episode[order], step[order], rewards[order]
    got = returns_to_go(rewards, episode, step, gamma)
    np.testing.assert_allclose(got, _returns_by_loop(rewards, episode, step, gamma), rtol=1e-12, atol=1e-12)
    if gamma == 0.0:
        np.testing.assert_array_equal(got, rewards)


def test_returns_to_go_rejects_mismatched_episodes_naming_the_field():
    with pytest.raises(ValueError, match="^episode: "):
        returns_to_go(np.zeros(5), np.zeros(4), np.arange(5), 0.9)
    with pytest.raises(ValueError, match="^gamma: "):
        returns_to_go(np.zeros(5), np.zeros(5), np.arange(5), 1.5)


TWO_STAGE = {
    "num_boost_round": 50,
    "value_rounds": 100,
    "change_rounds": 100,
    "learning_rate": 0.2,
    "min_data_in_leaf": 20,
    "min_support": 5,
    "threads": 1,
}


def known_effects():
    """Logged transitions with a known future: no immediate reward; every email raises the value of the
    next state by 5; every SMS ends the journey (the customer churns: nothing after).

    The value of a state is 20 - 2.5 x_7 (x_7, the log of the tenure in days, runs from 0.2 to 7.5
    here); an email lowers x_7 by 2. Trees do not extrapolate, so the rows checked keep x_7 - 2 within
    the range V was fitted on."""
    t = logged()
    channel = SPACE.channel_of[t.actions]
    value = 20.0 - 2.5 * t.X[:, 7].astype(np.float64)
    X_next = t.X.copy()
    X_next[:, 7] = np.where(channel == 0, t.X[:, 7] - 2.0, t.X[:, 7])
    terminated = channel == 1
    return t, np.zeros(len(value)), value, X_next, terminated


@pytest.mark.parametrize("weighted", [False, True])
def test_two_stage_value_follows_the_value_of_the_next_state_and_stops_at_churn(weighted):
    t, rewards, value, X_next, terminated = known_effects()
    policy = create("two_stage", SPACE, SEGMENTS, dim=DIM, **TWO_STAGE)
    logged_with = {"propensities": t.propensities, "mask": t.mask} if weighted else {}
    policy.fit(t.X, t.actions, rewards, X_next, t.mask_next, terminated, returns=value, **logged_with)
    mask = t.mask & policy.candidates
    channel = SPACE.channel_of
    email = (mask & (channel == 0)).any(axis=1)
    chosen = policy.probabilities(t.X, t.mask).argmax(axis=1)
    assert email.mean() > 0.3  # the check below runs on many rows
    assert np.mean(channel[chosen[email]] == 0) > 0.95  # an email, wherever one is eligible
    assert not np.any(channel[chosen] == 1)  # never an SMS: it ends the journey
    # the fitted future, on rows where both channels are eligible: 5 more after an email than after
    # no contact, and after an SMS nothing (boosting shrinks both: the margins allow for it)
    g = policy.future(t.X, mask)
    rows = np.flatnonzero(email & (mask & (channel == 1)).any(axis=1) & (t.X[:, 7] > 3.0))
    assert len(rows) >= 500
    em = np.array([g[i, mask[i] & (channel == 0)].mean() for i in rows]) - g[rows, 0]
    sms = np.array([g[i, mask[i] & (channel == 1)].mean() for i in rows])
    assert 3.5 < np.median(em) < 6.5
    assert np.median(sms) < 0.25 * np.median(g[rows, 0])


def test_two_stage_value_at_weight_0_decides_as_its_reward_model():
    t = logged()
    policy = create("two_stage", SPACE, SEGMENTS, dim=DIM, **TWO_STAGE)
    policy.fit(
        t.X,
        t.actions,
        t.attributed,
        t.X_next,
        t.mask_next,
        t.terminated,
        returns=returns_to_go(t.rewards, t.customer, t.day, 0.97),
        day=t.day,
    )
    X, mask = t.X[:500], t.mask[:500]
    myopic = policy.reweighted(0.0)
    np.testing.assert_array_equal(myopic.q_values(X, mask), policy.reward.q_values(X, mask))
    # the future term does move decisions at weight 1
    assert not np.array_equal(policy.probabilities(X, mask), myopic.probabilities(X, mask))
    assert policy.reweighted(1.0).get_state()[2] == policy.get_state()[2]  # the same fitted models


def test_two_stage_value_weighted_by_a_uniform_logger_fits_as_unweighted():
    # weights 1 / (eligible count * propensity) are all 1 when the logger drew uniformly
    t = logged()
    uniform = 1.0 / t.mask.sum(axis=1)
    args = (t.X, t.actions, t.attributed, t.X_next, t.mask_next, t.terminated)
    plain = create("two_stage", SPACE, SEGMENTS, dim=DIM, **TWO_STAGE).fit(*args)
    weighted = create("two_stage", SPACE, SEGMENTS, dim=DIM, **TWO_STAGE).fit(*args, propensities=uniform, mask=t.mask)
    np.testing.assert_allclose(
        weighted.q_values(t.X[:300], t.mask[:300]), plain.q_values(t.X[:300], t.mask[:300]), rtol=1e-9
    )
    # the real logger's propensities do change the fit of g
    real = create("two_stage", SPACE, SEGMENTS, dim=DIM, **TWO_STAGE).fit(
        *args, propensities=t.propensities, mask=t.mask
    )
    assert real.futures[0][1].model_to_string() != plain.futures[0][1].model_to_string()


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("returns", {"returns": "nan"}),
        ("returns", {"returns": np.zeros(3)}),
        ("day", {"day": np.zeros(3)}),
        ("propensities", {"propensities": "ones"}),
        ("propensities", {"propensities": "zeros", "mask": "logged"}),
        ("mask", {"propensities": "ones", "mask": "short"}),
        ("mask", {"propensities": "ones", "mask": "empty"}),
        ("state_rewards", {"state_rewards": "nan"}),
        ("state_rewards", {"state_rewards": np.zeros(3)}),
    ],
)
def test_two_stage_value_rejects_bad_targets_naming_the_field_and_keeps_its_state(field, kwargs):
    t = logged()
    n = len(t.actions)
    empty = t.mask.copy()
    empty[3] = False
    named = {
        "nan": np.full(n, np.nan),
        "ones": np.ones(n),
        "zeros": np.zeros(n),
        "logged": t.mask,
        "short": t.mask[:-1],
        "empty": empty,
    }
    kwargs = {k: named[v] if isinstance(v, str) else v for k, v in kwargs.items()}
    policy = create("two_stage", SPACE, SEGMENTS, dim=DIM, **TWO_STAGE)
    before = policy.get_state()
    with pytest.raises(ValueError, match=f"^{field}: "):
        policy.fit(t.X, t.actions, t.attributed, t.X_next, t.mask_next, t.terminated, **kwargs)
    assert policy.get_state()[2] == before[2] and np.array_equal(policy.candidates, before[1]["candidates"])


@pytest.mark.parametrize(
    ("field", "params"),
    [
        ("weight", {"weight": -1.0}),
        ("gamma", {"gamma": 1.0}),
        ("change_rounds", {"change_rounds": 0}),
        ("iterations", {"iterations": 0}),
        ("average", {"iterations": 2, "average": 3}),
        ("bootstrap_top", {"bootstrap_top": 0}),
    ],
)
def test_two_stage_value_rejects_bad_settings_naming_the_field(field, params):
    with pytest.raises(ValueError, match=f"^{field}: "):
        create("two_stage", SPACE, SEGMENTS, dim=DIM, **params)


# ----------------------------------------------------------------------------- fitted-Q iteration in two stages
def sms_pays_now_and_ends_the_journey():
    """Logged transitions where an email earns 1, an SMS 1.5 but ends the journey, and the logging
    policy's value is 0 everywhere: one step of improvement over it takes the SMS; looking past it
    (the greedy value of the next state: at least 1 more), the email."""
    t = logged()
    channel = SPACE.channel_of[t.actions]
    rewards = np.select([channel == 0, channel == 1], [1.0, 1.5], 0.0)
    return t, (t.X, t.actions, rewards, t.X_next, t.mask_next, channel == 1), np.zeros(len(rewards))


def test_iterating_bootstraps_the_greedy_value_of_the_next_state_and_stops_at_churn():
    t, args, returns = sms_pays_now_and_ends_the_journey()
    one = create("two_stage", SPACE, SEGMENTS, dim=DIM, **TWO_STAGE).fit(*args, returns=returns)
    two = create("two_stage", SPACE, SEGMENTS, dim=DIM, iterations=2, **TWO_STAGE).fit(*args, returns=returns)
    channel = SPACE.channel_of
    mask = t.mask & one.candidates
    both = np.flatnonzero((mask & (channel == 0)).any(axis=1) & (mask & (channel == 1)).any(axis=1))
    assert len(both) >= 500
    assert np.mean(channel[one.probabilities(t.X, t.mask).argmax(axis=1)[both]] == 1) > 0.95
    assert np.mean(channel[two.probabilities(t.X, t.mask).argmax(axis=1)[both]] == 0) > 0.95
    # the second iteration's future: about one more reward after an email (the next state's best is
    # an email, 1, or an SMS, 1.5), nothing after an SMS (boosting shrinks both: the margins allow for it)
    g = two.future(t.X, mask)
    em = np.array([g[i, mask[i] & (channel == 0)].mean() for i in both])
    sms = np.array([g[i, mask[i] & (channel == 1)].mean() for i in both])
    assert 0.8 < np.median(em) < 1.6
    assert np.median(sms) < 0.3 * np.median(em)


def test_the_state_rewards_count_in_the_next_state_from_the_second_iteration():
    t, args, returns = sms_pays_now_and_ends_the_journey()
    own = np.full(len(returns), 3.0)  # every surviving day brings 3 whatever is sent
    fit = lambda **kw: create("two_stage", SPACE, SEGMENTS, dim=DIM, **TWO_STAGE, **kw).fit(  # noqa: E731
        *args, returns=returns, state_rewards=own
    )
    one, two = fit(), fit(iterations=2)
    mask = t.mask[:2000] & one.candidates
    X, email = t.X[:2000], mask & (SPACE.channel_of == 0)
    np.testing.assert_allclose(one.future(X, mask)[email], 0.0, atol=1e-6)  # V is the logging value: 0
    assert 3.5 < np.median(two.future(X, mask)[email]) < 4.6  # 3 + the next state's best, about 1


def test_the_first_iteration_is_the_two_stage_value_and_the_average_round_trips():
    t, args, returns = sms_pays_now_and_ends_the_journey()
    one = create("two_stage", SPACE, SEGMENTS, dim=DIM, **TWO_STAGE).fit(*args, returns=returns)
    three = create("two_stage", SPACE, SEGMENTS, dim=DIM, iterations=3, average=3, **TWO_STAGE).fit(
        *args, returns=returns
    )
    assert len(three.futures) == 3
    assert [m.model_to_string() for m in three.futures[0]] == [m.model_to_string() for m in one.futures[0]]
    X, mask = t.X[:300], t.mask[:300] & three.candidates
    each = [create("two_stage", SPACE, SEGMENTS, dim=DIM, **TWO_STAGE) for _ in range(3)]
    for policy, future in zip(each, three.futures, strict=True):
        policy.reward, policy.futures = three.reward, [future]
    np.testing.assert_allclose(three.future(X, mask), sum(p.future(X, mask) for p in each) / 3, rtol=1e-12)
    params, arrays, models = three.get_state()
    again = type(three).from_state(SPACE, params, arrays, models)
    np.testing.assert_array_equal(again.q_values(X, t.mask[:300]), three.q_values(X, t.mask[:300]))
    last = create("two_stage", SPACE, SEGMENTS, dim=DIM, iterations=3, average=1, **TWO_STAGE).fit(
        *args, returns=returns
    )
    assert [m.model_to_string() for m in last.futures[0]] == [m.model_to_string() for m in three.futures[2]]
