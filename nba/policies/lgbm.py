"""LightGBM reward model with epsilon-greedy or SquareCB exploration.

A gradient-boosted regression of the reward on ``[x, psi(a)]`` (context and action features, see
:func:`nba.policies.linear.action_design`) scores every eligible action; exploration turns the
scores into a distribution:

* ``lgbm_egreedy``: the best action with probability ``1 - epsilon``, uniform over eligible
  actions otherwise;
* ``lgbm_squarecb``: inverse-gap weighting with ``gamma = gamma_scale * n ** gamma_exponent``
  (``n`` the number of rewards learnt from), as in SquareCB.

Before it has ``min_samples`` rewards the policy explores uniformly. It keeps what it has learnt
from and refits from scratch whenever the data has grown by ``refit_growth`` (geometric schedule:
total fitting cost stays proportional to the data). The model is saved as LightGBM text, the data
as NumPy arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import lightgbm as lgb
import numpy as np

from nba.actions import ActionSpace
from nba.policies.base import check_update, checked, epsilon_greedy, inverse_gap, uniform
from nba.policies.linear import action_design

# bytes of LightGBM input rows built at a time by predict_eligible: bounded whatever the catalogue's size
PREDICT_BYTES = 1 << 26


def joint_rows(X: np.ndarray, psi: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """LightGBM input rows ``[x, psi(a)]`` (float32) for contexts ``X`` and their ``actions``."""
    X = np.asarray(X)
    d = X.shape[1]
    out = np.empty((X.shape[0], d + psi.shape[1]), np.float32)
    out[:, :d] = X
    out[:, d:] = psi[actions]
    return out


# LightGBM's model parameters as the policies take them, and what each must be
MODEL_BOUNDS = {
    "num_boost_round": (lambda v: v >= 1, ">= 1"),
    "rest_rounds": (lambda v: v >= 1, ">= 1"),
    "refit_rounds": (lambda v: v >= 1, ">= 1"),
    "learning_rate": (lambda v: bool(np.isfinite(v) and v > 0), "a finite number > 0"),
    "num_leaves": (lambda v: v >= 2, ">= 2"),
    "min_data_in_leaf": (lambda v: v >= 1, ">= 1"),
    "threads": (lambda v: v >= 1, ">= 1"),
}


def check_model_params(params: Mapping[str, Any]) -> None:
    """A policy's parameters (its ``params``): ValueError naming the first of LightGBM's model parameters
    (:data:`MODEL_BOUNDS`) out of range, before LightGBM meets it; a parameter left as None is not checked."""
    for field, (ok, bound) in MODEL_BOUNDS.items():
        value = params.get(field)
        if value is not None and not ok(value):
            raise ValueError(f"{field}: must be {bound}, got {value!r}")


def regression_params(p: dict[str, Any]) -> dict[str, Any]:
    """LightGBM regression parameters from a policy's own (deterministic, quiet)."""
    return {
        "objective": "regression",
        "learning_rate": p["learning_rate"],
        "num_leaves": p["num_leaves"],
        "min_data_in_leaf": p["min_data_in_leaf"],
        "seed": p["seed"],
        "deterministic": True,
        "num_threads": p["threads"],
        "verbose": -1,
    }


def refit_due(params: dict[str, Any], n: int, fitted_on: int) -> bool:
    """The geometric refit schedule: ``min_samples`` rewards, then each time the data has grown by
    ``refit_growth`` since the last fit (total fitting cost stays proportional to the data)."""
    return n >= params["min_samples"] and n >= params["refit_growth"] * fitted_on


def contexts_per_chunk(n_actions: int, row_width: int, chunk: int) -> int:
    """Contexts whose (context, action) float32 rows of ``row_width`` features fit in :data:`PREDICT_BYTES`:
    at most ``chunk``, at least one."""
    return max(1, min(chunk, PREDICT_BYTES // max(1, n_actions * row_width * 4)))


def predict_eligible(
    booster: lgb.Booster, X: np.ndarray, psi: np.ndarray, ok: np.ndarray, fill: float, threads: int, chunk: int = 8192
) -> np.ndarray:
    """(N, A) predictions for the (context, action) pairs where ``ok``, ``fill`` elsewhere.

    Predicts at most ``chunk`` contexts' pairs at a time, and fewer where a context's pairs are wide
    (:data:`PREDICT_BYTES` of input rows at most), so memory stays bounded for large batches and large
    catalogues.
    """
    out = np.full(ok.shape, fill)
    X = np.asarray(X)
    step = contexts_per_chunk(ok.shape[1], X.shape[1] + psi.shape[1], chunk)
    for start in range(0, ok.shape[0], step):
        rows, cols = np.nonzero(ok[start : start + step])
        if rows.size:
            out[start + rows, cols] = booster.predict(joint_rows(X[start + rows], psi, cols), num_threads=threads)
    return out


class _LGBMReward:
    """A LightGBM reward model on ``[x, psi(a)]``, refitted on a geometric schedule; subclasses explore."""

    name: ClassVar[str]

    def __init__(
        self,
        space: ActionSpace,
        dim: int,
        *,
        num_boost_round: int = 100,
        learning_rate: float = 0.1,
        num_leaves: int = 31,
        min_data_in_leaf: int = 50,
        min_samples: int = 1000,
        refit_growth: float = 1.5,
        seed: int = 0,
        threads: int = 2,
    ) -> None:
        if min_samples < 1 or refit_growth <= 1.0:
            raise ValueError("min_samples: must be >= 1 and refit_growth: must be > 1")
        self.space, self.dim = space, dim
        self.params: dict[str, Any] = {
            "num_boost_round": num_boost_round,
            "learning_rate": learning_rate,
            "num_leaves": num_leaves,
            "min_data_in_leaf": min_data_in_leaf,
            "min_samples": min_samples,
            "refit_growth": refit_growth,
            "seed": seed,
            "threads": threads,
        }
        check_model_params(self.params)
        self.psi = action_design(space).astype(np.float32)
        self.X = np.zeros((0, dim), np.float32)
        self.actions = np.zeros(0, np.int64)
        self.rewards = np.zeros(0, np.float64)
        self.booster: lgb.Booster | None = None
        self.fitted_on = 0

    # ------------------------------------------------------------------ model
    def _fit(self) -> None:
        p = self.params
        data = lgb.Dataset(joint_rows(self.X, self.psi, self.actions), self.rewards, free_raw_data=True)
        self.booster = lgb.train(regression_params(p), data, num_boost_round=p["num_boost_round"])
        self.fitted_on = len(self.rewards)

    def scores(self, X: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """(N, A) predicted reward of every action (NaN where ``mask`` is False, if given)."""
        n, a = X.shape[0], self.space.n_actions
        if mask is None:
            mask = np.ones((n, a), bool)
        if self.booster is None:
            return np.full((n, a), np.nan)
        return predict_eligible(self.booster, X, self.psi, mask, np.nan, self.params["threads"])

    @checked
    def probabilities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(N, A) the exploration's distribution over the eligible actions' scores; uniform before the first fit."""
        if self.booster is None:
            return uniform(mask)
        return self._explore(np.nan_to_num(self.scores(X, mask), nan=-np.inf), mask)

    def _explore(self, scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def update(self, X, actions, rewards, propensities=None):
        """Keep the batch and refit the reward model when due (:func:`refit_due`). Returns self."""
        X, actions, rewards = check_update(self.space, self.dim, X, actions, rewards, propensities)
        self.X = np.vstack([self.X, X.astype(np.float32)])
        self.actions = np.concatenate([self.actions, actions])
        self.rewards = np.concatenate([self.rewards, rewards])
        n = len(self.rewards)
        if refit_due(self.params, n, self.fitted_on):
            self._fit()
        return self

    # ------------------------------------------------------------------ state
    def _explore_params(self) -> dict[str, Any]:
        return {}

    def get_state(self):
        """(parameters, exploration's and ``fitted_on`` included; the data learnt from; the model's text)."""
        params = {"dim": self.dim, **self.params, **self._explore_params(), "fitted_on": self.fitted_on}
        arrays = {"X": self.X, "actions": self.actions, "rewards": self.rewards}
        models = {} if self.booster is None else {"reward_model": self.booster.model_to_string()}
        return params, arrays, models

    @classmethod
    def from_state(cls, space, params, arrays, models):
        """The policy :meth:`get_state` described: its data, its reward model and when it was fitted."""
        params = dict(params)
        fitted_on = params.pop("fitted_on")
        policy = cls(space, **params)
        policy.X = np.array(arrays["X"], np.float32)
        policy.actions = np.array(arrays["actions"], np.int64)
        policy.rewards = np.array(arrays["rewards"], np.float64)
        policy.fitted_on = fitted_on
        if "reward_model" in models:
            policy.booster = lgb.Booster(model_str=models["reward_model"])
        return policy


class LGBMEpsilonGreedy(_LGBMReward):
    """LightGBM reward model, epsilon-greedy: the best eligible action with probability ``1 - epsilon``."""

    name: ClassVar[str] = "lgbm_egreedy"

    def __init__(self, space: ActionSpace, dim: int, epsilon: float = 0.05, **kw: Any) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon: must be in [0, 1], got {epsilon!r}")
        super().__init__(space, dim, **kw)
        self.epsilon = epsilon

    def _explore_params(self):
        return {"epsilon": self.epsilon}

    def _explore(self, scores, mask):
        return epsilon_greedy(scores, mask, self.epsilon)


class LGBMSquareCB(_LGBMReward):
    """LightGBM reward model with SquareCB's inverse-gap weighting over the eligible actions."""

    name: ClassVar[str] = "lgbm_squarecb"

    def __init__(
        self, space: ActionSpace, dim: int, gamma_scale: float = 10.0, gamma_exponent: float = 0.5, **kw: Any
    ) -> None:
        if gamma_scale <= 0:
            raise ValueError(f"gamma_scale: must be > 0, got {gamma_scale!r}")
        super().__init__(space, dim, **kw)
        self.gamma_scale, self.gamma_exponent = gamma_scale, gamma_exponent

    def _explore_params(self):
        return {"gamma_scale": self.gamma_scale, "gamma_exponent": self.gamma_exponent}

    @property
    def gamma(self) -> float:
        """SquareCB's ``gamma``: ``gamma_scale * fitted_on ** gamma_exponent``, greedier as the fitted data grows."""
        return self.gamma_scale * max(self.fitted_on, 1) ** self.gamma_exponent

    def _explore(self, scores, mask):
        return inverse_gap(scores, mask, self.gamma)
