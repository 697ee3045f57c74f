"""Fitted-Q iteration: what the shared contract battery does not cover."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from envs.rollout import Transitions, collect_transitions
from envs.scenario import Scenario
from nba.policies import create
from nba.policies.base import Explore

SC = Scenario.default()
SPACE, SEGMENTS, DIM = SC.action_space, tuple(SC.segments), SC.feature_spec.dim
SMALL = {"iterations": 3, "num_boost_round": 20, "min_data_in_leaf": 20, "min_support": 5, "max_candidates": 225,
         "threads": 1}


@functools.cache
def logged() -> Transitions:
    logger = Explore(create("business_as_usual", SPACE, SEGMENTS), 0.5, holdout=0.2)
    return collect_transitions(SC, logger, 200, seed=5, days=20)


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
