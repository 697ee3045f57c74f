"""Offline reinforcement learning for customer journeys: fitted-Q iteration with LightGBM.

What a marketing team can actually run: no live exploration, only logged transitions
``(x, a, r, x', terminated)`` from the campaigns it already sends (plus a little randomisation).
Each iteration fits a LightGBM regression (the first from scratch, the next ones boosting on from
the previous Q with ``refit_rounds`` more trees) of

    y = r + gamma * (1 - terminated) * max_{a' eligible in x'} Q_k(x', a')

on ``[x, psi(a)]``. Bootstrapping stops on *termination* (the customer churned: no future value),
not on *truncation* (the log simply ends: the future still counts), so the policy learns what
fatigue, opt-outs and churn cost later. The maximum runs over the actions the logging policy took
often enough to be evaluated (``min_support`` times; at most ``max_candidates``, the most frequent),
never over actions the data says little about.
``gamma = 0`` gives the myopic reward model a contextual bandit would use, on the same data.

``bootstrap_top`` (None: every candidate) limits that maximum to the actions the first, myopic fit
rates best in each next state, found once: with all 225 actions as candidates, the maximum over
every one of them for every transition at every iteration is most of the fitting time.

What to learn from: the ``rewards`` given. A message's *attributed* reward (the revenue of its own
conversions less its cost) is far less noisy than the customer's whole profit, whose organic
purchases happen whatever is sent; ``bench/journey.py`` learns from it by default.

The learnt policy is greedy in Q (``epsilon`` adds uniform exploration over eligible candidates).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import lightgbm as lgb
import numpy as np

from nba.actions import ActionSpace
from nba.policies.base import epsilon_greedy
from nba.policies.lgbm import joint_rows, predict_eligible, regression_params
from nba.policies.linear import action_design


class FittedQ:
    name: ClassVar[str] = "fqi"

    def __init__(self, space: ActionSpace, dim: int, gamma: float = 0.97, iterations: int = 8,
                 num_boost_round: int = 100, learning_rate: float = 0.1, num_leaves: int = 31,
                 min_data_in_leaf: int = 100, min_support: int = 200, max_candidates: int = 32,
                 bootstrap_top: int | None = None, refit_rounds: int | None = None, epsilon: float = 0.0,
                 seed: int = 0, threads: int = 2) -> None:
        if not 0.0 <= gamma < 1.0:
            raise ValueError(f"gamma: must be in [0, 1), got {gamma!r}")
        if iterations < 1:
            raise ValueError(f"iterations: must be >= 1, got {iterations!r}")
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon: must be in [0, 1], got {epsilon!r}")
        if bootstrap_top is not None and bootstrap_top < 1:
            raise ValueError(f"bootstrap_top: must be >= 1 or None, got {bootstrap_top!r}")
        self.space, self.dim = space, dim
        self.params = {"gamma": gamma, "iterations": iterations, "num_boost_round": num_boost_round,
                       "learning_rate": learning_rate, "num_leaves": num_leaves,
                       "min_data_in_leaf": min_data_in_leaf, "min_support": min_support,
                       "max_candidates": max_candidates, "bootstrap_top": bootstrap_top, "refit_rounds": refit_rounds,
                       "epsilon": epsilon, "seed": seed, "threads": threads}
        self.psi = action_design(space).astype(np.float32)
        self.candidates = np.zeros(space.n_actions, bool)
        self.candidates[0] = True
        self.booster: lgb.Booster | None = None

    # ------------------------------------------------------------------ model
    def q_values(self, X: np.ndarray, mask: np.ndarray | None = None, chunk: int = 8192) -> np.ndarray:
        """(N, A) Q of every eligible candidate action (-inf elsewhere); 0 before fitting."""
        n = X.shape[0]
        ok = np.broadcast_to(self.candidates, (n, self.space.n_actions))
        if mask is not None:
            ok = ok & mask
        if self.booster is None:
            return np.where(ok, 0.0, -np.inf)
        return predict_eligible(self.booster, X, self.psi, ok, -np.inf, self.params["threads"], chunk)

    def fit(self, X: np.ndarray, actions: np.ndarray, rewards: np.ndarray, X_next: np.ndarray,
            mask_next: np.ndarray, terminated: np.ndarray,
            progress: Callable[[int, float], None] | None = None) -> FittedQ:
        """Fit on logged transitions; ``progress(iteration, mean |change of targets|)``."""
        X = np.asarray(X, np.float32)
        n = X.shape[0]
        actions = self.space.check(np.asarray(actions), "actions")
        rewards = np.asarray(rewards, np.float64)
        terminated = np.asarray(terminated, bool)
        for name, arr, shape in (("actions", actions, (n,)), ("rewards", rewards, (n,)),
                                 ("X_next", X_next, X.shape), ("mask_next", mask_next, (n, self.space.n_actions)),
                                 ("terminated", terminated, (n,))):
            if np.shape(arr) != shape:
                raise ValueError(f"{name}: expected shape {shape}, got {np.shape(arr)}")
        if X.shape[1] != self.dim:
            raise ValueError(f"X: expected {self.dim} features, got {X.shape[1]}")
        if not (np.all(np.isfinite(X)) and np.all(np.isfinite(rewards)) and np.all(np.isfinite(X_next))):
            raise ValueError("X/rewards/X_next: contain NaN or infinite values")
        p = self.params
        counts = np.bincount(actions, minlength=self.space.n_actions)
        counts[0] = max(counts[0], p["min_support"])  # no contact is always a candidate
        top = np.argsort(-counts, kind="stable")[: p["max_candidates"]]
        self.candidates = np.zeros(self.space.n_actions, bool)
        self.candidates[top[counts[top] >= p["min_support"]]] = True
        lgb_params = regression_params(p)
        design = joint_rows(X, self.psi, actions)
        targets = rewards.copy()
        self.booster = None
        refit = p["refit_rounds"] or max(1, p["num_boost_round"] // 2)
        mask_next = np.asarray(mask_next, bool)
        shortlist = None
        for it in range(p["iterations"] if p["gamma"] > 0 else 1):
            if it > 0:
                if p["bootstrap_top"] is None:
                    future = self.q_values(X_next, mask_next).max(axis=1)
                else:
                    if shortlist is None:  # the first (myopic) fit's best actions in every next state
                        shortlist = self._shortlist(X_next, mask_next, p["bootstrap_top"])
                    future = self._best_of(X_next, *shortlist)
                new = rewards + p["gamma"] * np.where(terminated, 0.0, future)
                change = float(np.abs(new - targets).mean())
                targets = new
            else:
                change = float(np.abs(targets).mean())
            # iteration k + 1 boosts from Q_k towards its new targets: Q_k is a good start, so
            # ``refit_rounds`` more trees do what a fit from scratch would need many more for
            data = lgb.Dataset(design, label=targets, free_raw_data=False)
            self.booster = lgb.train(lgb_params, data, init_model=self.booster,
                                     num_boost_round=p["num_boost_round"] if it == 0 else refit)
            if progress is not None:
                progress(it, change)
        return self

    def _shortlist(self, X: np.ndarray, mask: np.ndarray, k: int, chunk: int = 8192):
        """(N, k) actions with the highest Q in each row and whether each is eligible."""
        n, k = X.shape[0], min(k, self.space.n_actions)
        top = np.zeros((n, k), np.int64)
        ok = np.zeros((n, k), bool)
        for start in range(0, n, chunk):
            q = self.q_values(X[start : start + chunk], mask[start : start + chunk])
            t = np.argpartition(-q, k - 1, axis=1)[:, :k]
            top[start : start + chunk] = t
            ok[start : start + chunk] = np.isfinite(np.take_along_axis(q, t, axis=1))
        return top, ok

    def _best_of(self, X: np.ndarray, top: np.ndarray, ok: np.ndarray) -> np.ndarray:
        """(N,) the highest current Q among each row's shortlisted eligible actions."""
        rows, cols = np.nonzero(ok)
        q = np.full(ok.shape, -np.inf)
        q[rows, cols] = self.booster.predict(joint_rows(X[rows], self.psi, top[rows, cols]),
                                             num_threads=self.params["threads"])
        return q.max(axis=1)

    # ------------------------------------------------------------------ policy interface
    def probabilities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        q = self.q_values(X, mask)
        eligible = mask & self.candidates
        return epsilon_greedy(q, eligible, self.params["epsilon"])

    def update(self, X, actions, rewards, propensities=None) -> FittedQ:
        """Offline learner: learns with :meth:`fit` on transitions; logged bandit batches are ignored."""
        return self

    def get_state(self):
        params: dict[str, Any] = {"dim": self.dim, **self.params}
        models = {} if self.booster is None else {"q_model": self.booster.model_to_string()}
        return params, {"candidates": self.candidates}, models

    @classmethod
    def from_state(cls, space, params, arrays, models):
        policy = cls(space, **params)
        policy.candidates = np.array(arrays["candidates"], bool)
        if "q_model" in models:
            policy.booster = lgb.Booster(model_str=models["q_model"])
        return policy
