"""The draw of :func:`nba.policies.base.sample`: over many actions it inverts each row block by block, and
that must be the inversion the full cumulative sum makes (same actions, same distribution), with the
propensity :func:`nba.policies.act` reports the probability of the action drawn."""

from __future__ import annotations

import numpy as np
import pytest

from nba.actions import ActionSpace
from nba.policies import act, create
from nba.policies.base import BLOCKS_FROM, epsilon_greedy, greedy, sample, uniform


def full_cumsum(p: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The draw as it was before blocks: one cumulative sum over the whole row."""
    cdf = np.cumsum(p, axis=1)
    actions = np.minimum((cdf <= (u * cdf[:, -1])[:, None]).sum(axis=1), p.shape[1] - 1)
    bad = p[np.arange(len(actions)), actions] <= 0
    actions[bad] = np.argmax(p[bad] > 0, axis=1)
    return actions


def distributions(a: int, n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = rng.random((n, a)) < rng.uniform(0.01, 1.0, (n, 1))
    mask[:, 0] = True
    scores = rng.normal(size=(n, a))
    sparse = np.zeros((n, a))
    sparse[:, 0] = 1.0
    sparse[:, a - 1] = 2.0  # mass at both ends, nothing between
    return {
        "uniform": uniform(mask),
        "epsilon_greedy": epsilon_greedy(scores, mask, 0.1),
        "greedy": greedy(scores, mask),
        "skewed": np.where(mask, rng.random((n, a)) ** 12, 0.0),
        "both_ends": sparse / 3.0,
        "unnormalised": np.where(mask, rng.random((n, a)) * 7.0, 0.0),
    }


@pytest.mark.parametrize("a", [BLOCKS_FROM, 225, 801, 1024, 5001])
def test_blocks_pick_the_actions_the_full_cumulative_sum_picks(a):
    for name, p in distributions(a, 3000, a).items():
        u = np.random.default_rng(a + 1).random(len(p))
        got = sample(p, u)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, full_cumsum(p, u), err_msg=name)
        assert (p[np.arange(len(p)), got] > 0).all(), name


def within_rounding(p: np.ndarray, u: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """Rows whose target lies in the interval of the action drawn, give or take rounding (1e-12 of the sum)."""
    cdf = np.cumsum(p, axis=1)
    rows = np.arange(len(p))
    target, tol = u * cdf[:, -1], 1e-12 * cdf[:, -1]
    start = np.where(actions > 0, cdf[rows, actions - 1], 0.0)
    return (start - tol <= target) & (target <= cdf[rows, actions] + tol)


@pytest.mark.parametrize("a", [BLOCKS_FROM, 801, 5001])
def test_blocks_at_the_ends_of_the_unit_interval(a):
    """``u`` next to 1 puts the target within rounding of the row's sum: where the last actions' probabilities
    are below that rounding ("skewed": powers of 12), the two orders of addition may pick different ones
    of them, each an action whose interval holds the target within rounding, never one without mass."""
    for name, p in distributions(a, 500, 7).items():
        for u in (0.0, np.nextafter(1.0, 0.0), 1.0 - 3 * 2.0**-53):
            uu = np.full(len(p), u)
            got = sample(p, uu)
            assert (p[np.arange(len(p)), got] > 0).all(), name
            assert within_rounding(p, uu, got).all(), name
            if name != "skewed":
                np.testing.assert_array_equal(got, full_cumsum(p, uu), err_msg=name)


def test_a_target_on_a_block_boundary_takes_the_next_action_with_mass():
    """Dyadic probabilities sum exactly in any order: a target equal to the mass of the first block's actions
    (its end) draws the next action with mass, as the full cumulative sum does."""
    a = 1024  # blocks of 32
    p = np.zeros((2, a))
    p[:, 5] = p[:, 40] = 0.25  # 5 in the first block, 40 in the second
    p[:, 900] = 0.5
    u = np.array([0.25, 0.5])  # on the end of action 5's interval, then of action 40's
    np.testing.assert_array_equal(sample(p, u), [40, 900])
    np.testing.assert_array_equal(sample(p, u), full_cumsum(p, u))


def test_a_batch_draws_as_its_rows_one_at_a_time():
    for name, p in distributions(801, 400, 3).items():
        u = np.random.default_rng(4).random(len(p))
        one_by_one = np.concatenate([sample(p[i : i + 1], u[i : i + 1]) for i in range(len(p))])
        np.testing.assert_array_equal(sample(p, u), one_by_one, err_msg=name)


def test_the_blocks_draw_each_action_with_its_probability():
    """One row drawn 200,000 times: every action's share within 5 standard errors of its probability."""
    rng = np.random.default_rng(11)
    row = np.where(rng.random(801) < 0.5, rng.random(801) ** 3, 0.0)
    row[0] = 0.0
    row /= row.sum()
    n = 200_000
    drawn = sample(np.broadcast_to(row, (n, row.size)), rng.random(n))
    share = np.bincount(drawn, minlength=row.size) / n
    assert share[row == 0].sum() == 0
    se = np.sqrt(row * (1 - row) / n)
    assert np.all(np.abs(share - row) <= 5 * se + 1e-12)


def test_the_propensity_is_the_probability_of_the_action_drawn():
    space = ActionSpace.plain([f"offer_{k}" for k in range(800)], no_contact=True)
    policy = create("uniform_random", space)
    rng = np.random.default_rng(5)
    mask = rng.random((2000, space.n_actions)) < rng.uniform(0.005, 1.0, (2000, 1))
    mask[:, 0] = True
    d = act(policy, np.zeros((2000, 0)), mask, np.random.default_rng(6))
    rows = np.arange(2000)
    np.testing.assert_array_equal(d.propensities, d.probabilities[rows, d.actions])
    np.testing.assert_array_equal(d.propensities, 1.0 / mask.sum(axis=1))
    assert mask[rows, d.actions].all()


def test_uniform_is_one_over_the_eligible_count():
    mask = np.random.default_rng(2).random((300, 801)) < 0.3
    mask[:, 0] = True
    np.testing.assert_array_equal(uniform(mask), mask / mask.sum(axis=1, keepdims=True))
