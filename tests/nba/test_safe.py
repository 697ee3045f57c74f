"""Safe policy improvement (:mod:`nba.policies.safe`): the SPIBB wrapper's distribution, its support counts,
its parameters, and its value against the simulator's exact truth.

The contract battery (``test_policy_contract.py``) checks the wrapper like every policy; here are the checks
that are its own."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from envs.rollout import bandit_simulation, bandit_truth, policy_rng
from envs.scenario import Scenario
from nba import serialization
from nba.policies import Explore, act, create
from nba.policies.base import greedy
from nba.policies.safe import SPIBB, Buckets, action_groups

LOG = "test/nba/safe/log"  # the training log's customers (envs.random)
EVAL = "test/nba/safe/eval"  # the evaluation contexts': other customers
SEED = 3

SCENARIO = Scenario.default()
SPACE = SCENARIO.action_space
SEGMENTS = tuple(SCENARIO.segments)
SPEC = SCENARIO.feature_spec
DIM = SPEC.dim


def logger():
    """The quickstart's logging policy: business as usual, 20 % uniform exploration, a 5 % holdout."""
    return Explore(create("business_as_usual", SPACE, SEGMENTS), 0.2, 0.05)


@functools.cache
def log(decisions: int = 20_000, batch: int = 1000) -> dict[str, np.ndarray]:
    """A log of ``decisions`` decisions of :func:`logger` on the bandit view (contexts, masks, logged
    actions, realised rewards, propensities), in batches of ``batch``."""
    sim = bandit_simulation(SCENARIO, SEED, batch, LOG)
    rng = policy_rng(SEED, LOG)
    pol = logger()
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("X", "mask", "actions", "rewards", "propensities")}
    for _ in range(decisions // batch):
        X, mask = np.ascontiguousarray(sim.observe()), sim.action_mask()
        d = act(pol, X, mask, rng)
        res = sim.step(d.actions)
        for k, v in (
            ("X", X),
            ("mask", mask),
            ("actions", d.actions),
            ("rewards", res.reward),
            ("propensities", d.propensities),
        ):
            cols[k].append(np.asarray(v))
    out = {k: np.concatenate(v) for k, v in cols.items()}
    for v in out.values():
        v.setflags(write=False)
    return out


def fitted(learner: str = "linucb", chunk: int = 10_000, **params) -> SPIBB:
    data = log()
    policy = SPIBB(SPACE, SEGMENTS, learner=learner, dim=DIM, **params)
    for s in range(0, len(data["actions"]), chunk):
        rows = slice(s, s + chunk)
        policy.update(data["X"][rows], data["actions"][rows], data["rewards"][rows], data["propensities"][rows])
    return policy


def with_counts(policy: SPIBB, **params) -> SPIBB:
    """Another wrapper of the same (trained) learner with the same support counts."""
    other = SPIBB(SPACE, SEGMENTS, learner=policy.learner, bucket=policy.buckets.families, **params)
    other.counts = policy.counts.copy()
    return other


def eval_contexts(n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    sim = bandit_simulation(SCENARIO, SEED, n, EVAL)
    return np.ascontiguousarray(sim.observe()), sim.action_mask()


# ----------------------------------------------------------------------------- support
def test_counts_are_the_logged_actions_per_bucket():
    data = log()
    policy = fitted(bucket=("segment", "stage"))
    assert policy.counts.sum() == len(data["actions"])
    b = Buckets(SPEC, ("segment", "stage"))
    seg = np.argmax(data["X"][:, [SPEC.index(f"segment={s}") for s in SEGMENTS]], axis=1)
    stage = np.argmax(data["X"][:, [i for i, n in enumerate(SPEC.names) if n.startswith("stage=")]], axis=1)
    np.testing.assert_array_equal(b.of(data["X"]), seg * 4 + stage)
    first = (b.of(data["X"]) == 0) & (data["actions"] == 0)
    assert policy.counts[0, 0] == first.sum() > 0


def test_a_binary_feature_splits_every_bucket_in_two():
    X, _ = eval_contexts(500)
    two = Buckets(SPEC, ("segment", "cart_active"))
    assert two.n == len(SEGMENTS) * 2
    cart = X[:, SPEC.index("cart_active")] > 0.5
    np.testing.assert_array_equal(two.of(X) % 2, cart.astype(int))


def test_support_pools_the_actions_of_a_group():
    policy = fitted()
    X, mask = eval_contexts(300)
    per_action = with_counts(policy, group="action").support(X)
    pooled = policy.support(X)  # the default group: channel x content
    groups = action_groups(SPACE, "channel_content")
    for g in (0, 1, 17):
        members = np.flatnonzero(groups == g)
        np.testing.assert_array_equal(pooled[:, members[0]], per_action[:, members].sum(axis=1))
        assert (pooled[:, members] == pooled[:, members[:1]]).all()
    assert len(np.unique(groups)) == 1 + SPACE.n_channels * SPACE.n_contents


# ----------------------------------------------------------------------------- the distribution
def test_bootstrapped_actions_keep_the_baseline_probability_and_the_rest_goes_to_the_learner_best():
    policy = fitted(baseline="business_as_usual", baseline_epsilon=0.2, baseline_holdout=0.05)
    X, mask = eval_contexts()
    p = policy.probabilities(X, mask)
    pb = logger().probabilities(X, mask)
    boot = policy.bootstrapped(X, mask)
    free = mask & ~boot
    some = free.any(axis=1)
    assert boot.any() and some.mean() > 0.9
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.all(p[~mask] == 0.0)
    np.testing.assert_array_equal(p[boot], pb[boot])
    np.testing.assert_array_equal(p[~some], pb[~some])  # nothing supported: the baseline
    # the freed mass sits on one supported action per row: the best the learner scores among them
    extra = np.where(free, p, 0.0)[some]
    free, X = free[some], X[some]
    pb = pb[some]
    assert ((extra > 0).sum(axis=1) == 1).all()
    np.testing.assert_allclose(extra.sum(axis=1), np.where(free, pb, 0.0).sum(axis=1), rtol=0, atol=1e-12)
    best = np.argmax(extra, axis=1)
    scores = policy.learner.scores(X)
    np.testing.assert_array_equal(best, np.argmax(np.where(free, scores, -np.inf), axis=1))


def contacts_kept(policy: SPIBB):
    """A contact-keeping policy's distribution on the evaluation contexts, checked for what every such mode
    guarantees (distributions on the mask, the baseline's probability on bootstrapped actions and on no
    contact); returns the contexts, the mask, both distributions and the supported contacts."""
    X, mask = eval_contexts()
    p, pb = policy.probabilities(X, mask), policy.baseline_probabilities(X, mask)
    boot = policy.bootstrapped(X, mask)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.all(p[~mask] == 0.0)
    np.testing.assert_array_equal(p[boot], pb[boot])
    np.testing.assert_allclose(p[:, 0], pb[:, 0], rtol=0, atol=1e-12)  # as often as the baseline
    free = mask & ~boot
    free[:, 0] = False
    return X, mask, p, pb, free


def test_keeping_contacts_moves_only_the_contact_mass_among_contacts(tmp_path):
    """contacts="keep": where no contact is supported, its baseline probability stays, so the policy contacts as
    often as the baseline; the freed contact mass goes to the learner's best supported contact."""
    base = fitted()
    policy = with_counts(base, contacts="keep")
    X, mask, p, pb, free = contacts_kept(policy)
    some = free.any(axis=1)
    assert some.mean() > 0.8 and (pb[some, 0] < 1).any()  # most rows have a supported contact (0.86 here)
    extra = np.where(free, p, 0.0)[some]
    assert ((extra > 0).sum(axis=1) <= 1).all()
    moved = extra.sum(axis=1) > 0
    scores = policy.learner.scores(X[some])
    np.testing.assert_array_equal(
        np.argmax(extra, axis=1)[moved], np.argmax(np.where(free[some], scores, -np.inf), axis=1)[moved]
    )
    # the free mode may trade contacts for no contact and back: here it contacts more than the baseline
    assert (base.probabilities(X, mask)[:, 0] < pb[:, 0] - 1e-9).any()
    restored = serialization.load(serialization.save(policy, tmp_path / "keep"))
    assert restored.contacts == "keep"
    np.testing.assert_array_equal(restored.probabilities(X, mask), p)


def test_keeping_channels_moves_each_channels_mass_to_its_best_message(tmp_path):
    """contacts="channel": as "keep", and the baseline's supported mass on each channel stays on that channel,
    on the learner's best supported message there: the channel plan (so the sends) is the baseline's."""
    base = fitted()
    policy = with_counts(base, contacts="channel")
    X, mask, p, pb, free = contacts_kept(policy)
    scores = policy.learner.scores(X)
    moved_rows = 0
    for c in range(SPACE.n_channels):
        on = SPACE.channel_of == c
        np.testing.assert_allclose(p[:, on].sum(axis=1), pb[:, on].sum(axis=1), rtol=0, atol=1e-12)
        fc = free & on
        extra = np.where(fc, p, 0.0)
        moved = np.where(fc, pb, 0.0).sum(axis=1) > 0
        assert ((extra[moved] > 0).sum(axis=1) == 1).all()  # one message a channel
        np.testing.assert_array_equal(
            np.argmax(extra[moved], axis=1), np.argmax(np.where(fc[moved], scores[moved], -np.inf), axis=1)
        )
        moved_rows += int(moved.sum())
    assert moved_rows > 0.5 * len(X) * (pb[:, 0] < 1).mean()
    # keeping contacts alone moves mass across channels; keeping channels does not
    keep = with_counts(base, contacts="keep").probabilities(X, mask)
    across = [
        not np.allclose(keep[:, SPACE.channel_of == c].sum(1), pb[:, SPACE.channel_of == c].sum(1))
        for c in range(SPACE.n_channels)
    ]
    assert any(across)
    restored = serialization.load(serialization.save(policy, tmp_path / "channel"))
    assert restored.contacts == "channel"
    np.testing.assert_array_equal(restored.probabilities(X, mask), p)
    with pytest.raises(ValueError, match=r"^contacts: 'channel' moves each channel's mass to one message"):
        SPIBB(SPACE, SEGMENTS, learner="linucb", contacts="channel", improve="learner")


def test_n_min_zero_is_the_learner_greedy_and_a_huge_n_min_the_baseline():
    policy = fitted()
    X, mask = eval_contexts(500)
    never = with_counts(policy, n_min=0)
    np.testing.assert_array_equal(never.probabilities(X, mask), greedy(policy.learner.scores(X), mask))
    always = with_counts(policy, n_min=1e9, baseline="business_as_usual", baseline_epsilon=0.2, baseline_holdout=0.05)
    np.testing.assert_array_equal(always.probabilities(X, mask), logger().probabilities(X, mask))


def test_improve_learner_spreads_the_freed_mass_as_the_learner_does():
    policy = fitted("lints")
    X, mask = eval_contexts(500)
    spread = with_counts(policy, improve="learner")
    p = spread.probabilities(X, mask)
    boot = spread.bootstrapped(X, mask)
    free = mask & ~boot
    q = np.where(free, policy.learner.probabilities(X, mask), 0.0)
    rows = q.sum(axis=1) > 0
    assert 0.1 < rows.mean() < 1.0  # both cases occur
    mass = 1.0 - np.where(boot, spread.baseline_probabilities(X, mask), 0.0).sum(axis=1)
    want = mass[rows, None] * q[rows] / q[rows].sum(axis=1, keepdims=True)
    np.testing.assert_allclose(np.where(free[rows], p[rows], 0.0), want, rtol=1e-12, atol=1e-15)
    # where the learner gives the supported actions nothing, the mass goes to the best-scored of them
    rest = ~rows & free.any(axis=1)
    best = np.argmax(np.where(free, policy.learner.scores(X), -np.inf), axis=1)
    np.testing.assert_allclose(p[rest, best[rest]], mass[rest], rtol=1e-12)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-12)


def test_an_estimated_baseline_is_the_logged_frequency_per_bucket_on_the_mask():
    policy = fitted(baseline="estimate")
    X, mask = eval_contexts(500)
    pb = policy.baseline_probabilities(X, mask)
    n = np.where(mask, policy.counts[policy.buckets.of(X)], 0)
    np.testing.assert_allclose(pb, n / n.sum(axis=1, keepdims=True), rtol=1e-12)
    # before any data: no contact
    empty = SPIBB(SPACE, SEGMENTS, learner="linucb", baseline="estimate")
    np.testing.assert_array_equal(empty.probabilities(X, mask), create("no_contact", SPACE).probabilities(X, mask))


# ----------------------------------------------------------------------------- parameters and state
def test_parameters_name_the_baseline_the_threshold_and_the_buckets(tmp_path):
    policy = fitted(
        baseline="business_as_usual",
        baseline_epsilon=0.2,
        baseline_holdout=0.05,
        n_min=25,
        bucket=("segment", "stage", "cart_active"),
    )
    params, arrays, _ = policy.get_state()
    assert params["baseline"] == "business_as_usual"
    assert (params["baseline_epsilon"], params["baseline_holdout"], params["n_min"]) == (0.2, 0.05, 25.0)
    assert params["bucket"] == ["segment", "stage", "cart_active"] and params["group"] == "channel_content"
    assert params["learner"] == "linucb" and arrays["counts"].shape == (4 * 4 * 2, SPACE.n_actions)
    loaded = serialization.load(serialization.save(policy, tmp_path / "p"))
    X, mask = eval_contexts(300)
    np.testing.assert_array_equal(loaded.probabilities(X, mask), policy.probabilities(X, mask))


BAD = {
    "n_min": {"n_min": -1},
    "bucket": {"bucket": ("segment", "no_such_feature")},
    "group": {"group": "content"},
    "improve": {"improve": "optimistic"},
    "baseline": {"baseline": "linucb"},
    "learner": {"learner": "business_as_usual"},
    "dim": {"dim": DIM + 1},
    "epsilon": {"baseline_epsilon": 1.5},
    "contacts": {"contacts": "sometimes"},
}


@pytest.mark.parametrize("field", list(BAD))
def test_bad_parameters_raise_naming_the_field(field):
    with pytest.raises(ValueError, match=f"^{field}: "):
        SPIBB(SPACE, SEGMENTS, **({"learner": "linucb"} | BAD[field]))


def test_a_refused_batch_leaves_no_count():
    policy = SPIBB(SPACE, SEGMENTS, learner="linucb")
    data = log()
    rewards = data["rewards"][:100].copy()
    rewards[5] = np.nan
    with pytest.raises(ValueError, match="^X/rewards: "):
        policy.update(data["X"][:100], data["actions"][:100], rewards, data["propensities"][:100])
    assert policy.counts.sum() == 0 and policy.learner.ridge.n == 0


# ----------------------------------------------------------------------------- value against the truth
def test_the_safe_linucb_is_not_worse_than_the_logger_where_the_bare_one_is():
    # LinUCB learnt offline from the exploring logger's 20,000 decisions extrapolates to actions the log
    # barely tried and comes out well below the logger; wrapped, it keeps the logger's choice there.
    policy = fitted(
        "linucb",
        baseline="business_as_usual",
        baseline_epsilon=0.2,
        baseline_holdout=0.05,
        bucket=("segment", "stage", "cart_active"),
    )
    truth = bandit_truth(SCENARIO, logger(), {"bare": policy.learner, "safe": policy}, 6000, 1000, SEED, purpose=EVAL)
    assert truth["bare"] < truth["logging"] - 0.05
    assert truth["safe"] > truth["logging"] + 0.02
