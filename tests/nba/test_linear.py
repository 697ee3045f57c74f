"""The linear learners' ridge statistics and their incremental updates, against from-scratch solves.

:class:`nba.policies.linear.Ridge` keeps ``A^-1`` and, for LinTS, the perturbed solutions ``A^-1 W`` up
to date by Sherman-Morrison / Woodbury instead of refactorising per batch. These tests check each piece
against a fresh dense solve, that LinUCB and LinTS decide exactly as a refactorising implementation of
the same definitions (:class:`Reference`, kept here) on the same data, one decision at a time and in
batches of every size, and that LinTS's samples have the posterior's distribution.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import cho_factor, cho_solve
from threadpoolctl import threadpool_info, threadpool_limits

from nba import serialization
from nba.actions import ActionSpace
from nba.catalogue import Catalogue
from nba.policies import act, create
from nba.policies.base import greedy, share_of_argmax
from nba.policies.linear import (
    BLAS_THREADS,
    WOODBURY_SHARE,
    LinTS,
    LinUCB,
    Ridge,
    action_design,
    pinned_blas,
)

SPACE = ActionSpace(channels=tuple(f"c{i}" for i in range(9)), contents=("offer",), send_slots=(None,))  # 10 actions
DIM = 20
D = action_design(SPACE).shape[1] * (DIM + 1)  # 13 x 21 = 273


def phi_rows(X: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """(N, D) joint features psi(a) (x) [x, 1], built directly from their definition."""
    psi = action_design(SPACE)
    return np.stack([np.kron(psi[a], np.append(x, 1.0)) for x, a in zip(X, actions, strict=True)])


def data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contexts, actions and noisy linear rewards."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, DIM))
    actions = rng.integers(0, SPACE.n_actions, n)
    rewards = phi_rows(X, actions) @ rng.standard_normal(D) * 0.1 + rng.standard_normal(n)
    return X, actions, rewards


class Reference:
    """The definitions, refactorised after every update: Cholesky of ``A``, ``theta`` by two triangular
    solves, widths from ``A^-1``; LinTS's samples ``theta + v sigma A^-1 W`` with ``W = L Z`` drawn afresh
    (``Z`` (D, M) standard normals) at every refresh of the ridge (a batch of more than D / 8 rows, or one
    that would take the rows folded in since the last refresh past D) and ``W += phi^T e`` (``e`` (k, M))
    for a batch between, from the same generator in the same order."""

    def __init__(self, lam: float = 1.0, seed: int | None = None, v: float = 0.5, n_samples: int = 32) -> None:
        self.A, self.b = lam * np.eye(D), np.zeros(D)
        self.rewards: list[float] = []
        self.rng = None if seed is None else np.random.default_rng(seed)
        self.v, self.n_samples = v, n_samples
        self.since = 0
        self._solve(refresh=True)

    @property
    def sigma(self) -> float:
        return float(np.std(self.rewards, ddof=1)) if len(self.rewards) >= 2 else 1.0

    def update(self, X, actions, rewards) -> None:
        phi = phi_rows(X, actions)
        k = len(rewards)
        self.A += phi.T @ phi
        self.b += phi.T @ rewards
        self.rewards += list(rewards)
        refresh = k > D // WOODBURY_SHARE or self.since + k > D
        self.since = 0 if refresh else self.since + k
        if self.rng is not None and not refresh:
            self.W += phi.T @ self.rng.standard_normal((k, self.n_samples))
        self._solve(refresh)

    def _solve(self, refresh: bool) -> None:
        self.chol = cho_factor(self.A, lower=True)
        self.theta = cho_solve(self.chol, self.b)
        if self.rng is not None:
            if refresh:
                self.W = np.tril(self.chol[0]) @ self.rng.standard_normal((D, self.n_samples))
            self.samples = (self.theta[:, None] + self.v * self.sigma * cho_solve(self.chol, self.W)).T

    def all_phi(self, X: np.ndarray) -> np.ndarray:
        """(N, A, D) features of every action for every context."""
        return np.stack([phi_rows(X, np.full(len(X), a)) for a in range(SPACE.n_actions)], axis=1)

    def ucb(self, X: np.ndarray, alpha: float = 1.0) -> np.ndarray:
        phi = self.all_phi(X)
        inverse = cho_solve(self.chol, np.eye(D))
        width = np.sqrt(((phi @ inverse) * phi).sum(axis=2))
        return phi @ self.theta + alpha * self.sigma * width

    def sample_scores(self, X: np.ndarray) -> np.ndarray:
        return np.einsum("nad,md->mna", self.all_phi(X), self.samples)


@pytest.fixture(autouse=True)
def one_blas_thread():
    """The reference's dense solves on one BLAS thread, as the learners' (fast on a busy machine)."""
    with threadpool_limits(1, user_api="blas"):
        yield


# ----------------------------------------------------------------------------- ridge statistics
def test_ridge_statistics_and_solution_match_a_fresh_solve():
    # batches of 1, 2, 3, 40 and 500 rows: Sherman-Morrison, Woodbury and refactorising paths all taken,
    # the deviations with them: A^-1 W, W drawn afresh at each refresh and moved by phi^T e between (the
    # reference keeps W itself, from a generator of the same seed)
    ridge = Ridge(SPACE, DIM, lam=2.0, normals=np.random.default_rng(1), samples=5)
    ref = Reference(lam=2.0, seed=1, n_samples=5)
    seed = 0
    for size in [1] * 30 + [2] * 10 + [3, 40, 500] + [1] * 20:
        X, actions, rewards = data(size, seed)
        seed += 1
        ridge.add(X, actions, rewards)
        ref.update(X, actions, rewards)
        assert ridge.since == ref.since
        np.testing.assert_allclose(ridge.deviation, cho_solve(ref.chol, ref.W), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ridge.A, ref.A, rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(ridge.b, ref.b, rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(ridge.theta, np.linalg.solve(ref.A, ref.b), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(ridge.inverse, np.linalg.inv(ref.A), rtol=1e-9, atol=1e-12)
    assert ridge.sigma == pytest.approx(ref.sigma, rel=1e-12)


def test_ridge_on_a_catalogues_real_valued_features_matches_a_fresh_solve():
    # psi is not 0/1 here: a large batch weighs each action's x x^T (and x e^T) by psi (one product for all)
    offers = {"cheap": {"price": 1.0, "kind": "a"}, "dear": {"price": -3.0, "kind": "b"}, "odd": {"price": 0.5}}
    space = ActionSpace(("c0", "c1", "c2"), tuple(offers), (None, 9))
    catalogue = Catalogue(space, offers)
    ridge = Ridge(space, DIM, lam=2.0, catalogue=catalogue, normals=np.random.default_rng(3), samples=3)
    psi = action_design(space, catalogue)
    assert not ridge.binary and psi.shape == (space.n_actions, 1 + len(catalogue.names))
    A, b = 2.0 * np.eye(ridge.size), np.zeros(ridge.size)
    rng = np.random.default_rng(9)
    for size in (1, 2, 3, 40, 500, 1):
        X, actions, rewards = rng.standard_normal((size, DIM)), rng.integers(0, space.n_actions, size), rng.random(size)
        ridge.add(X, actions, rewards)
        phi = np.stack([np.kron(psi[a], np.append(x, 1.0)) for x, a in zip(X, actions, strict=True)])
        A += phi.T @ phi
        b += phi.T @ rewards
    np.testing.assert_allclose(ridge.A, A, rtol=1e-13, atol=1e-11)
    np.testing.assert_allclose(ridge.b, b, rtol=1e-13, atol=1e-11)
    np.testing.assert_allclose(ridge.theta, np.linalg.solve(A, b), rtol=1e-9, atol=1e-11)
    # widths weigh the pairs of blocks by psi_g psi_h: the same as phi^T A^-1 phi for every action
    Xw = rng.standard_normal((40, DIM))
    Phi = np.stack([[np.kron(psi[a], np.append(x, 1.0)) for a in range(space.n_actions)] for x in Xw])
    dense = np.sqrt(np.einsum("nad,de,nae->na", Phi, np.linalg.inv(A), Phi))
    for rows in (slice(0, 3), slice(None)):  # A^-1 read in place, and through the cached layout
        np.testing.assert_allclose(ridge.widths(Xw[rows]), dense[rows], rtol=1e-9)


def test_widths_read_only_the_pairs_of_blocks_an_action_uses():
    # index one-hots: no action has two channels (or two contents, or two slots), so those pairs are never read
    space = ActionSpace(tuple(f"c{i}" for i in range(7)), tuple(f"k{i}" for i in range(8)), (None, 9, 13, 19))
    ridge = Ridge(space, 3)
    pairs = set(zip(ridge._pair_g.tolist(), ridge._pair_h.tolist(), strict=True))
    da, c, k, t = ridge.da, space.n_channels, space.n_contents, space.n_slots
    assert (da, len(pairs)) == (2 + c + k + t, da + 1 + 2 * (c + k + t) + c * k + c * t + k * t)  # 21 and 176 here
    assert (2, 3) not in pairs and (2, 2 + c) in pairs  # two channels never; a channel and a content


def test_the_kept_inverse_and_deviations_stay_on_a_fresh_solve_between_refreshes():
    ridge = Ridge(SPACE, DIM, normals=np.random.default_rng(6), samples=4)
    twin = np.random.default_rng(6)  # the same draws: Z at the start, then e for each row
    W = np.linalg.cholesky(ridge.A) @ twin.standard_normal((D, 4))
    X, actions, rewards = data(D, 5)  # D single rows: the refresh comes only after them
    for i in range(D):
        ridge.add(X[i : i + 1], actions[i : i + 1], rewards[i : i + 1])
        W += phi_rows(X[i : i + 1], actions[i : i + 1]).T @ twin.standard_normal((1, 4))
    assert ridge.since == D, "no refresh yet"
    np.testing.assert_allclose(ridge.inverse, np.linalg.inv(ridge.A), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(ridge.theta, np.linalg.solve(ridge.A, ridge.b), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ridge.deviation, np.linalg.solve(ridge.A, W), rtol=1e-9, atol=1e-11)
    ridge.add(X[:1], actions[:1], rewards[:1])
    assert ridge.since == 0, "past D rows, A^-1 is computed afresh"
    W = np.linalg.cholesky(ridge.A) @ twin.standard_normal((D, 4))  # and the deviations drawn afresh
    np.testing.assert_allclose(ridge.deviation, np.linalg.solve(ridge.A, W), rtol=1e-10, atol=1e-12)


def test_lints_samples_have_the_posteriors_distribution():
    # On data the policy did not choose, each sample is theta + v sigma A^-1 W with W ~ N(0, A) column by
    # column, so the samples' covariance is (v sigma)^2 A^-1 and their mean theta. 2,000 seeds x 32 samples
    # on a small model (3 arms, 2 features: D = 12), after a refactorising batch then single rows moving the
    # samples: the empirical covariance within 6 % of the largest entry (its sampling error is about 1 %).
    space, dim = ActionSpace.plain(3), 2
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((k, dim)), rng.integers(0, 3, k), rng.standard_normal(k)) for k in (40, 1, 1, 1)]
    draws = []
    for seed in range(2000):
        policy = LinTS(space, dim, v=1.0, seed=seed)
        for X, actions, rewards in batches:
            policy.update(X, actions, rewards, np.ones(len(rewards)))
        draws.append(policy.samples)
    assert policy.ridge.since == 3, "the last rows moved the samples incrementally"
    samples = np.concatenate(draws)
    r = policy.ridge
    scale = (policy.v * r.sigma) ** 2
    cov = np.cov(samples, rowvar=False) / scale
    np.testing.assert_allclose(samples.mean(axis=0), r.theta, atol=0.05 * np.sqrt(scale * np.diag(r.inverse)).max())
    assert np.abs(cov - np.linalg.inv(r.A)).max() < 0.06 * np.abs(np.linalg.inv(r.A)).max()


# ----------------------------------------------------------------------------- same decisions as before
def contexts_and_masks(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = rng.random((n, SPACE.n_actions)) < 0.7
    mask[:, 0] = True
    return rng.standard_normal((n, DIM)), mask


def learn_side_by_side(policy, ref: Reference, sizes, check) -> None:
    """Feed both the same batches (rewards of a fixed linear truth), calling ``check`` after each."""
    rng = np.random.default_rng(8)
    truth = rng.standard_normal(D) * 0.3
    for step, size in enumerate(sizes):
        X, mask = contexts_and_masks(size, 100 + step)
        actions = np.array([rng.choice(np.flatnonzero(m)) for m in mask])
        rewards = phi_rows(X, actions) @ truth + rng.standard_normal(size)
        policy.update(X, actions, rewards, np.full(size, 0.5))
        ref.update(X, actions, rewards)
        check(step)


SIZES = [1] * 300 + [2] * 20 + [3, 1, 50, 1, 1000] + [1] * 30


def test_linucb_widths_in_chunks_bounded_in_bytes(monkeypatch):
    """A large catalogue's widths go a few contexts at a time (WIDTH_BYTES): the same widths, chunk by chunk."""
    from nba.policies import linear

    policy = LinUCB(SPACE, DIM, alpha=1.0)
    X, mask = contexts_and_masks(400, 3)
    actions = np.array([np.flatnonzero(m)[0] for m in mask])
    policy.update(X, actions, np.random.default_rng(4).standard_normal(400), np.full(400, 0.5))
    X50, _ = contexts_and_masks(50, 5)
    whole = policy.ridge.widths(X50)
    sizes: list[int] = []
    pairs = linear.Ridge.pairs
    monkeypatch.setattr(linear.Ridge, "pairs", lambda self, Xa: sizes.append(len(Xa)) or pairs(self, Xa))
    ridge = policy.ridge
    p = len(ridge._pair_g)
    for per_chunk in (3, 1):
        sizes.clear()
        monkeypatch.setattr(linear, "WIDTH_BYTES", 8 * (p * ridge.dx + p + SPACE.n_actions) * per_chunk)
        np.testing.assert_allclose(ridge.widths(X50), whole, rtol=1e-12)
        assert max(sizes) == per_chunk and sum(sizes) == 50


def test_linucb_decides_as_the_refactorising_implementation():
    policy, ref = LinUCB(SPACE, DIM, alpha=1.0), Reference()
    X1, m1 = contexts_and_masks(1, 7)
    X50, m50 = contexts_and_masks(50, 9)

    def check(step):
        np.testing.assert_array_equal(policy.probabilities(X1, m1), greedy(ref.ucb(X1), m1))
        if step % 25 == 0:
            np.testing.assert_array_equal(policy.probabilities(X50, m50), greedy(ref.ucb(X50), m50))
            np.testing.assert_allclose(
                policy.ridge.widths(X50), (ref.ucb(X50) - ref.ucb(X50, 0.0)) / ref.sigma, rtol=1e-9
            )

    learn_side_by_side(policy, ref, SIZES, check)


def test_lints_decides_as_the_refactorising_implementation():
    # same generator, same draws: the same posterior samples, so the same distribution for one
    # context (scored through the deviations) and for many (scored through the samples themselves)
    policy, ref = LinTS(SPACE, DIM, v=0.5, n_samples=32, seed=11), Reference(seed=11)
    X1, m1 = contexts_and_masks(1, 7)
    X50, m50 = contexts_and_masks(50, 9)

    def check(step):
        np.testing.assert_array_equal(policy.probabilities(X1, m1), share_of_argmax(ref.sample_scores(X1), m1))
        if step % 25 == 0:
            np.testing.assert_allclose(policy.samples, ref.samples, rtol=1e-9, atol=1e-11)
            np.testing.assert_array_equal(policy.probabilities(X50, m50), share_of_argmax(ref.sample_scores(X50), m50))

    learn_side_by_side(policy, ref, SIZES, check)


def test_lints_scores_a_large_batch_in_chunks_to_the_same_distribution(monkeypatch):
    # a batch wider than one chunk of sampled scores is scored a chunk at a time (bounded memory): the same
    # shares as the whole batch at once, row for row
    import nba.policies.linear as linear

    policy = LinTS(SPACE, DIM, n_samples=32, seed=3)
    X, actions, rewards = data(200, 4)
    policy.update(X, actions, rewards, np.ones(200))
    Xc, mask = contexts_and_masks(300, 5)
    whole = policy.probabilities(Xc, mask)
    monkeypatch.setattr(linear, "SAMPLE_BYTES", 8 * 32 * SPACE.n_actions * 64)  # 64 contexts a chunk: 5 chunks
    chunked = policy.probabilities(Xc, mask)
    np.testing.assert_array_equal(chunked, whole)
    np.testing.assert_allclose(chunked.sum(axis=1), 1.0)
    assert np.all(chunked[~mask] == 0)


# ----------------------------------------------------------------------------- state
@pytest.mark.parametrize("cls", [LinUCB, LinTS])
def test_a_learner_saved_between_refreshes_continues_bit_for_bit(cls, tmp_path):
    policy = cls(SPACE, DIM)
    X, actions, rewards = data(40, 12)
    for i in range(20):
        policy.update(X[i : i + 1], actions[i : i + 1], rewards[i : i + 1], [1.0])
    assert policy.ridge.since == 20
    loaded = serialization.load(serialization.save(policy, tmp_path / "policy"))
    for p in (policy, loaded):
        for i in range(20, 40):
            p.update(X[i : i + 1], actions[i : i + 1], rewards[i : i + 1], [1.0])
    (params, arrays, _), (params2, arrays2, _) = policy.get_state(), loaded.get_state()
    assert params == params2 and arrays.keys() == arrays2.keys()
    for key in arrays:
        np.testing.assert_array_equal(arrays2[key], arrays[key], err_msg=key)
    Xc, mask = contexts_and_masks(5, 13)
    np.testing.assert_array_equal(loaded.probabilities(Xc, mask), policy.probabilities(Xc, mask))


def test_bad_settings_and_state_raise_naming_the_field():
    with pytest.raises(ValueError, match="^lam:"):
        Ridge(SPACE, DIM, lam=0.0)
    policy = LinUCB(SPACE, DIM)
    policy.update(*data(1, 0), [1.0])
    params, arrays, models = policy.get_state()
    arrays = {**arrays, "kept": np.eye(5)}
    with pytest.raises(ValueError, match="^kept:"):
        LinUCB.from_state(SPACE, params, arrays, models)
    # a LinTS saved before it kept deviations (its arrays held posterior samples instead)
    params, arrays, models = LinTS(SPACE, DIM).get_state()
    arrays = {k: v for k, v in arrays.items() if k != "deviation"}
    with pytest.raises(ValueError, match="^deviation:.*train it again"):
        LinTS.from_state(SPACE, params, {**arrays, "samples": np.zeros((32, D))}, models)


# ----------------------------------------------------------------------------- BLAS threads
def blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_pinned_blas_runs_on_blas_threads_and_restores_the_callers():
    seen = []
    probe = pinned_blas(lambda: seen.append(blas_threads()))
    with threadpool_limits(2, user_api="blas"):
        before = blas_threads()
        probe()
        assert blas_threads() == before, "the caller's thread counts come back"
    assert seen[0] and all(n == BLAS_THREADS for n in seen[0])


def test_the_learners_compute_on_pinned_blas_threads(monkeypatch):
    import nba.policies.linear as linear

    seen = []

    def spy(fn):
        def inner(*args, **kwargs):
            seen.append((fn.__name__, blas_threads()))
            return fn(*args, **kwargs)

        return inner

    monkeypatch.setattr(linear.Ridge, "add", spy(linear.Ridge.add))  # both learners' updates
    monkeypatch.setattr(linear.Ridge, "widths_aug", spy(linear.Ridge.widths_aug))  # LinUCB's decisions
    monkeypatch.setattr(linear, "share_of_argmax", spy(linear.share_of_argmax))  # LinTS's decisions
    X, mask = contexts_and_masks(3, 1)
    with threadpool_limits(2, user_api="blas"):
        for policy in (LinUCB(SPACE, DIM), LinTS(SPACE, DIM)):
            policy.update(X, np.array([0, 1, 2]), np.ones(3), np.ones(3))
            policy.probabilities(X, mask)
    assert {name for name, _ in seen} == {"add", "widths_aug", "share_of_argmax"}
    assert all(n == BLAS_THREADS for _, counts in seen for n in counts)


def test_one_decision_at_a_time_through_act():
    # the loop of bench/policies.py's one-at-a-time comparison: act on one context, learn its reward
    for policy in (LinUCB(SPACE, DIM), LinTS(SPACE, DIM, seed=3)):
        rng = np.random.default_rng(0)
        X, mask = contexts_and_masks(200, 21)
        for i in range(200):
            d = act(policy, X[i : i + 1], mask[i : i + 1], rng)
            assert mask[i, d.actions[0]]
            policy.update(X[i : i + 1], d.actions, [float(d.actions[0] == 3)], d.propensities)
        assert policy.ridge.n == 200


def test_linucb_on_a_plain_k_armed_linear_problem_has_far_less_regret_than_uniform():
    # A plain contextual bandit (no no-contact action): 10 arms, 20 features, mean reward x . theta_a,
    # Gaussian noise of standard deviation 1, random masks (each arm eligible with probability 0.7, so
    # action 0 is often excluded), 5,000 rounds of one decision and one update. Regret is against the
    # best eligible arm's mean; uniform random's is its exact expectation (best minus the eligible mean).
    # Over seeds 0-2 LinUCB's regret is 0.11 of uniform's (690 against 6,500); the bound is 0.25, and
    # its last 1,000 rounds must cost less than its first 1,000 (it learns, not just starts well).
    rng = np.random.default_rng(0)
    k, d, rounds = 10, 20, 5000
    theta = rng.standard_normal((k, d)) / np.sqrt(d)
    policy = create("linucb", k, dim=d)
    regret, uniform = np.zeros(rounds), np.zeros(rounds)
    for t in range(rounds):
        x = rng.standard_normal((1, d))
        mask = rng.random((1, k)) < 0.7
        if not mask.any():
            mask[0, rng.integers(k)] = True
        mean = x[0] @ theta.T
        best = mean[mask[0]].max()
        dec = act(policy, x, mask, rng)
        a = int(dec.actions[0])
        assert mask[0, a] and dec.propensities[0] == 1.0
        regret[t], uniform[t] = best - mean[a], best - mean[mask[0]].mean()
        policy.update(x, dec.actions, np.array([mean[a] + rng.standard_normal()]), dec.propensities)
    assert regret.sum() < 0.25 * uniform.sum(), (regret.sum(), uniform.sum())
    assert regret[-1000:].sum() < regret[:1000].sum()
