"""Linear contextual bandits on joint context-action features: LinUCB and linear Thompson sampling.

A reward is modelled as ``r(x, a) = theta . phi(x, a)`` with ``phi(x, a) = psi(a) (x) [x, 1]``, the
Kronecker product of the action's features ``psi(a)`` and the context with an intercept, where
``psi(a) = [1, contact, channel one-hot, content one-hot, slot one-hot]``. The leading 1 is a
*baseline* block shared by every action, no contact included, so the other blocks learn the
**uplift** of contacting over not contacting: a customer's organic revenue never looks like the
effect of a message. Scores of all actions are ``X~ Theta^T Psi^T``, cheap for any catalogue.

Both learners share one ridge regression (:class:`Ridge`): ``A = lambda I + sum phi phi^T`` and
``b = sum r phi``, accumulated in blocks (a batch adds ``x x^T`` per distinct action to the
(g, h) blocks of that action's active features), and solved by Cholesky.

* :class:`LinUCB` picks ``argmax theta.phi + alpha * sigma * sqrt(phi^T A^-1 phi)`` (exact width).
* :class:`LinTS` draws ``n_samples`` parameter vectors ``theta + v * sigma * L^-T z`` (``A = L L^T``,
  ``z`` standard normal from its own seeded generator, so results do not depend on the BLAS build)
  when it updates, and its distribution is the exact share of samples under which each action wins.

``sigma`` is the running standard deviation of observed rewards, so ``alpha`` and ``v`` are unitless.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from scipy.linalg import cho_factor, cho_solve, solve_triangular

from nba.actions import ActionSpace
from nba.policies.base import check_propensities, greedy, share_of_argmax


def action_design(space: ActionSpace) -> np.ndarray:
    """(A, 1 + d_a) action features with the always-on baseline column first."""
    return np.hstack([np.ones((space.n_actions, 1), np.float64), space.features().astype(np.float64)])


class Ridge:
    """Ridge statistics over phi(x, a) = psi(a) (x) [x, 1], kept in (group, context) blocks."""

    def __init__(self, space: ActionSpace, dim: int, lam: float = 1.0) -> None:
        if lam <= 0:
            raise ValueError(f"lam: must be > 0, got {lam!r}")
        self.space, self.dim, self.lam = space, dim, lam
        self.psi = action_design(space)
        self.dx = dim + 1
        self.da = self.psi.shape[1]
        size = self.da * self.dx
        self.A = lam * np.eye(size)
        self.b = np.zeros(size)
        self.n = 0
        self.reward_sum = 0.0
        self.reward_sq = 0.0
        self._solve()

    def _aug(self, X: np.ndarray) -> np.ndarray:
        return np.hstack([np.asarray(X, np.float64), np.ones((X.shape[0], 1))])

    @property
    def sigma(self) -> float:
        """Standard deviation of the rewards seen (1 before any)."""
        if self.n < 2:
            return 1.0
        var = (self.reward_sq - self.reward_sum**2 / self.n) / (self.n - 1)
        return float(np.sqrt(max(var, 1e-12)))

    def add(self, X: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        Xa = self._aug(X)
        A4 = self.A.reshape(self.da, self.dx, self.da, self.dx)
        b2 = self.b.reshape(self.da, self.dx)
        for a in np.unique(actions):
            rows = actions == a
            xs = Xa[rows]
            groups = np.flatnonzero(self.psi[a])
            gram = xs.T @ xs
            xr = xs.T @ rewards[rows]
            for g in groups:
                b2[g] += xr
                for h in groups:
                    A4[g, :, h, :] += gram
        self.n += len(rewards)
        self.reward_sum += float(rewards.sum())
        self.reward_sq += float((rewards**2).sum())
        self._solve()

    def _solve(self) -> None:
        self.chol = cho_factor(self.A, lower=True)
        self.theta = cho_solve(self.chol, self.b)
        self._cov4 = None

    def _cov(self) -> np.ndarray:
        """A^-1 laid out (dx, da * da * dx) for the width computation, cached until the next update."""
        if self._cov4 is None:
            cov = cho_solve(self.chol, np.eye(self.A.shape[0]))
            self._cov4 = cov.reshape(self.da, self.dx, self.da, self.dx).transpose(1, 0, 2, 3).reshape(self.dx, -1)
        return self._cov4

    def scores(self, X: np.ndarray, theta: np.ndarray | None = None) -> np.ndarray:
        """(N, A) predicted reward of every action (``theta`` (D,) or (M, D) for several)."""
        theta = self.theta if theta is None else theta
        Xa = self._aug(X)
        if theta.ndim == 1:
            return Xa @ theta.reshape(self.da, self.dx).T @ self.psi.T
        T = theta.reshape(-1, self.da, self.dx)
        return np.einsum("ni,mgi,ag->mna", Xa, T, self.psi, optimize=True)

    def widths(self, X: np.ndarray, chunk: int = 256) -> np.ndarray:
        """(N, A) sqrt(phi^T A^-1 phi) for every action, exactly."""
        Xa = self._aug(X)
        cov4 = self._cov()
        out = np.empty((Xa.shape[0], self.space.n_actions))
        for s in range(0, Xa.shape[0], chunk):
            x = Xa[s : s + chunk]
            y = (x @ cov4).reshape(len(x), self.da, self.da, self.dx)
            q = np.einsum("nghj,nj->ngh", y, x)
            out[s : s + chunk] = np.einsum("ag,ngh,ah->na", self.psi, q, self.psi, optimize=True)
        return np.sqrt(np.maximum(out, 0.0))

    # state
    def arrays(self) -> dict[str, np.ndarray]:
        return {"A": self.A, "b": self.b, "reward_moments": np.array([self.n, self.reward_sum, self.reward_sq])}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.A = np.array(arrays["A"], np.float64)
        self.b = np.array(arrays["b"], np.float64)
        n, s, sq = arrays["reward_moments"]
        self.n, self.reward_sum, self.reward_sq = int(n), float(s), float(sq)
        self._solve()


def _check_update(space: ActionSpace, dim: int, X, actions, rewards, propensities=None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate a logged batch; raise ValueError naming the field."""
    X = np.asarray(X, np.float64)
    if X.ndim != 2 or X.shape[1] != dim:
        raise ValueError(f"X: expected shape (N, {dim}), got {X.shape}")
    actions = space.check(np.asarray(actions), "actions")
    rewards = np.asarray(rewards, np.float64)
    if actions.shape != (X.shape[0],) or rewards.shape != (X.shape[0],):
        raise ValueError(f"actions/rewards: expected shape ({X.shape[0]},), got {actions.shape} and {rewards.shape}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(rewards))):
        raise ValueError("X/rewards: contain NaN or infinite values")
    if propensities is not None:
        check_propensities(propensities, X.shape[0])
    return X, actions, rewards


class LinUCB:
    """Upper confidence bound on the joint linear model (deterministic: propensity 1 on its choice)."""

    name: ClassVar[str] = "linucb"

    def __init__(self, space: ActionSpace, dim: int, alpha: float = 1.0, lam: float = 1.0) -> None:
        if alpha < 0:
            raise ValueError(f"alpha: must be >= 0, got {alpha!r}")
        self.space, self.dim, self.alpha = space, dim, alpha
        self.ridge = Ridge(space, dim, lam)

    def scores(self, X: np.ndarray) -> np.ndarray:
        """(N, A) estimated expected reward of every action."""
        return self.ridge.scores(X)

    def probabilities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        ucb = self.ridge.scores(X) + self.alpha * self.ridge.sigma * self.ridge.widths(X)
        return greedy(ucb, mask)

    def update(self, X, actions, rewards, propensities=None) -> LinUCB:
        self.ridge.add(*_check_update(self.space, self.dim, X, actions, rewards, propensities))
        return self

    def get_state(self):
        return {"dim": self.dim, "alpha": self.alpha, "lam": self.ridge.lam}, self.ridge.arrays(), {}

    @classmethod
    def from_state(cls, space, params, arrays, models):
        policy = cls(space, **params)
        policy.ridge.restore(arrays)
        return policy


class LinTS:
    """Linear Thompson sampling with posterior samples drawn at update time (exact propensities)."""

    name: ClassVar[str] = "lints"

    def __init__(self, space: ActionSpace, dim: int, v: float = 0.5, lam: float = 1.0, n_samples: int = 32,
                 seed: int = 0) -> None:
        if v < 0:
            raise ValueError(f"v: must be >= 0, got {v!r}")
        if n_samples < 1:
            raise ValueError(f"n_samples: must be >= 1, got {n_samples!r}")
        self.space, self.dim, self.v, self.n_samples, self.seed = space, dim, v, n_samples, seed
        self.ridge = Ridge(space, dim, lam)
        self.rng = np.random.default_rng(seed)
        self._draw()

    def _draw(self) -> None:
        L = self.ridge.chol[0]
        z = self.rng.standard_normal((self.ridge.A.shape[0], self.n_samples))
        noise = solve_triangular(L, z, lower=True, trans="T")  # L^-T z ~ N(0, A^-1)
        self.samples = (self.ridge.theta[:, None] + self.v * self.ridge.sigma * noise).T  # (M, D)

    def scores(self, X: np.ndarray) -> np.ndarray:
        return self.ridge.scores(X)

    def probabilities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return share_of_argmax(self.ridge.scores(X, self.samples), mask)

    def update(self, X, actions, rewards, propensities=None) -> LinTS:
        self.ridge.add(*_check_update(self.space, self.dim, X, actions, rewards, propensities))
        self._draw()
        return self

    def get_state(self):
        params: dict[str, Any] = {"dim": self.dim, "v": self.v, "lam": self.ridge.lam, "n_samples": self.n_samples,
                                  "seed": self.seed}
        state = self.rng.bit_generator.state
        params["rng_state"] = {"bit_generator": state["bit_generator"],
                               "state": {k: str(v) for k, v in state["state"].items()},
                               "has_uint32": state["has_uint32"], "uinteger": str(state["uinteger"])}
        return params, {**self.ridge.arrays(), "samples": self.samples}, {}

    @classmethod
    def from_state(cls, space, params, arrays, models):
        params = dict(params)
        rng_state = params.pop("rng_state")
        policy = cls(space, **params)
        policy.ridge.restore(arrays)
        policy.samples = np.array(arrays["samples"], np.float64)
        policy.rng.bit_generator.state = {
            "bit_generator": rng_state["bit_generator"],
            "state": {k: int(v) for k, v in rng_state["state"].items()},
            "has_uint32": rng_state["has_uint32"], "uinteger": int(rng_state["uinteger"]),
        }
        return policy
