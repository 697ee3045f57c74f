"""A reward model that learns from the funnel's events, not only from the reward: ``lgbm_funnel``.

A message's reward is a rare, noisy sum: the revenue of a conversion that follows about one contact
in several hundred, less what sending cost. The events before it come far more often and say
which channel, hour and content a customer answers to: an opened message (seen), a click, then the
conversion. The decision log holds those events for every decision (``delivered``, ``opened``,
``clicked``, ``converted``), so the model is factorised along the funnel, each stage fitted on the
rows that reached it::

    E[r | x, a] = P(opened | x, a) * P(clicked | opened, x, a) * P(converted | clicked, x, a) * v(x)
                  + E[r - conversion value | x, a]

with ``v(x)`` the expected value of a conversion for the customer (fitted on converted rows) and the
last term a regression of everything else in the reward (cost, opt-out and churn charges, and any
revenue the log's reward rule counts besides the message's own conversions) on all rows, no contact
included. Each stage is a LightGBM model on ``[x, psi(a)]``; the conversion value one on ``x``.
SquareCB's inverse-gap weighting explores over the scores, as in ``lgbm_squarecb``.

On a plain action space (:meth:`nba.actions.ActionSpace.plain`) every action but a no-contact one
(where the space has it) is a contact, with a funnel of its own.

Before ``min_samples`` decisions the policy explores uniformly. Like the other LightGBM bandits it
keeps what it has learnt from and refits from scratch whenever the data has grown by
``refit_growth``. Models are saved as LightGBM text, the data as NumPy arrays.
"""

from __future__ import annotations

from typing import Any, ClassVar

import lightgbm as lgb
import numpy as np

from nba.actions import ActionSpace
from nba.log.records import FUNNEL as STAGES
from nba.log.records import FunnelEvents
from nba.policies.base import check_update, checked, inverse_gap, uniform
from nba.policies.lgbm import check_model_params, contexts_per_chunk, joint_rows, refit_due, regression_params
from nba.policies.linear import action_design

MODELS = (*STAGES, "value", "rest")  # each stage fitted given the one before (opened: given a contact)


class LGBMFunnel:
    """LightGBM funnel model (opened, clicked, converted, value, rest) with SquareCB exploration."""

    name: ClassVar[str] = "lgbm_funnel"
    learns_from_events: ClassVar[bool] = True

    def __init__(
        self,
        space: ActionSpace,
        dim: int,
        *,
        num_boost_round: int = 60,
        rest_rounds: int = 30,
        learning_rate: float = 0.15,
        num_leaves: int = 15,
        min_data_in_leaf: int = 50,
        min_samples: int = 1000,
        refit_growth: float = 1.5,
        gamma_scale: float = 10.0,
        gamma_exponent: float = 0.5,
        seed: int = 0,
        threads: int = 2,
    ) -> None:
        if min_samples < 1 or refit_growth <= 1.0:
            raise ValueError("min_samples: must be >= 1 and refit_growth: must be > 1")
        if gamma_scale <= 0:
            raise ValueError(f"gamma_scale: must be > 0, got {gamma_scale!r}")
        self.space, self.dim = space, dim
        self.params: dict[str, Any] = {
            "num_boost_round": num_boost_round,
            "rest_rounds": rest_rounds,
            "learning_rate": learning_rate,
            "num_leaves": num_leaves,
            "min_data_in_leaf": min_data_in_leaf,
            "min_samples": min_samples,
            "refit_growth": refit_growth,
            "gamma_scale": gamma_scale,
            "gamma_exponent": gamma_exponent,
            "seed": seed,
            "threads": threads,
        }
        check_model_params(self.params)
        self.psi = action_design(space).astype(np.float32)
        self.X = np.zeros((0, dim), np.float32)
        self.actions = np.zeros(0, np.int64)
        self.rewards = np.zeros(0, np.float64)
        self.events = {name: np.zeros(0, bool) for name in STAGES}
        self.value = np.zeros(0, np.float64)
        self.models: dict[str, lgb.Booster | float] = {}
        self.fitted_on = 0

    # ------------------------------------------------------------------ model
    def _train(self, objective: str, X: np.ndarray, y: np.ndarray, rounds: int) -> lgb.Booster | float:
        """A LightGBM model of ``y``, or the mean of ``y`` where too few rows (or no variation) to fit one."""
        if len(y) < 2 * self.params["min_data_in_leaf"] or np.all(y == y[0]):
            return float(y.mean()) if len(y) else 0.0
        data = lgb.Dataset(X, y.astype(np.float64), free_raw_data=True)
        params = {**regression_params(self.params), "objective": objective}
        return lgb.train(params, data, num_boost_round=rounds)

    def _fit(self) -> None:
        rows = joint_rows(self.X, self.psi, self.actions)
        reached = self.space.is_contact[self.actions]  # the first stage's rows: contacts
        rounds = self.params["num_boost_round"]
        for name in STAGES:
            y = self.events[name]
            self.models[name] = self._train("binary", rows[reached], y[reached], rounds)
            reached = y
        conv = self.events["converted"]
        self.models["value"] = self._train("regression", self.X[conv], self.value[conv], rounds)
        # the rest (cost, opt-out and churn charges) varies far less across actions than the funnel: fewer
        # rounds, since the four models' predictions are what deciding costs
        self.models["rest"] = self._train("regression", rows, self.rewards - self.value, self.params["rest_rounds"])
        self.fitted_on = len(self.rewards)

    def _predict(self, name: str, rows: np.ndarray) -> np.ndarray:
        m = self.models[name]
        if isinstance(m, float):
            return np.full(len(rows), m)
        return np.asarray(m.predict(rows, num_threads=self.params["threads"]))

    def scores(self, X: np.ndarray, mask: np.ndarray | None = None, chunk: int = 8192) -> np.ndarray:
        """(N, A) predicted reward of every action (NaN where ``mask`` is False, if given).

        The (context, action) rows are built once for the four models that score them, ``chunk``
        contexts at a time, and fewer where a context's rows are wide
        (:func:`nba.policies.lgbm.contexts_per_chunk`, as for the other LightGBM learners): memory stays bounded
        for large batches and large catalogues."""
        X = np.asarray(X)
        n, a = X.shape[0], self.space.n_actions
        mask = np.ones((n, a), bool) if mask is None else mask
        out = np.full((n, a), np.nan)
        if not self.models:
            return out
        value = self.models["value"]
        step = contexts_per_chunk(a, X.shape[1] + self.psi.shape[1], chunk)
        for start in range(0, n, step):
            xs, m = X[start : start + step], mask[start : start + step]
            r, c = np.nonzero(m & self.space.is_contact)  # contacts: the funnel's rows
            rows = joint_rows(xs[r], self.psi, c)
            gain = np.ones(len(r))
            for name in STAGES:
                gain *= self._predict(name, rows)
            v = (
                np.full(len(xs), value)
                if isinstance(value, float)
                else value.predict(np.asarray(xs, np.float32), num_threads=self.params["threads"])
            )
            out[start + r, c] = self._predict("rest", rows) + gain * v[r]
            if self.space.has_no_contact:
                alone = np.flatnonzero(m[:, 0])  # no contact: the rest alone
                out[start + alone, 0] = self._predict(
                    "rest", joint_rows(xs[alone], self.psi, np.zeros(len(alone), int))
                )
        return out

    @property
    def gamma(self) -> float:
        """SquareCB's ``gamma``: ``gamma_scale * fitted_on ** gamma_exponent``, greedier as the fitted data grows."""
        return self.params["gamma_scale"] * max(self.fitted_on, 1) ** self.params["gamma_exponent"]

    @checked
    def probabilities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(N, A) inverse-gap weights over the funnel's :meth:`scores` of eligible actions; uniform before the
        first fit."""
        if not self.models:
            return uniform(mask)
        return inverse_gap(np.nan_to_num(self.scores(X, mask), nan=-np.inf), mask, self.gamma)

    def update(self, X, actions, rewards, propensities=None, events: FunnelEvents | None = None):
        """Keep the batch and its funnel ``events`` (required); refit the five models when due. Returns self."""
        X, actions, rewards = check_update(self.space, self.dim, X, actions, rewards, propensities)
        # the check reads action 0 as no contact: give it each decision's contact flag instead (on a plain
        # space without no contact, action 0 is a contact like any other)
        ev = FunnelEvents.check(events, self.space.is_contact[actions].astype(np.int64))
        self.X = np.vstack([self.X, X.astype(np.float32)])
        self.actions = np.concatenate([self.actions, actions])
        self.rewards = np.concatenate([self.rewards, rewards])
        for name in STAGES:
            self.events[name] = np.concatenate([self.events[name], getattr(ev, name)])
        self.value = np.concatenate([self.value, ev.value])
        n = len(self.rewards)
        if refit_due(self.params, n, self.fitted_on):
            self._fit()
        return self

    # ------------------------------------------------------------------ state
    def get_state(self):
        """(parameters, with ``fitted_on`` and the models that are constants; the data learnt from, events
        included; the LightGBM models' texts)."""
        params = {
            "dim": self.dim,
            **self.params,
            "fitted_on": self.fitted_on,
            "constant_models": {k: m for k, m in self.models.items() if isinstance(m, float)},
        }
        arrays = {
            "X": self.X,
            "actions": self.actions,
            "rewards": self.rewards,
            "value": self.value,
            **{f"event_{k}": v for k, v in self.events.items()},
        }
        models = {k: m.model_to_string() for k, m in self.models.items() if not isinstance(m, float)}
        return params, arrays, models

    @classmethod
    def from_state(cls, space, params, arrays, models):
        """The funnel model :meth:`get_state` described: its data, its models and when it was fitted."""
        params = dict(params)
        fitted_on, constants = params.pop("fitted_on"), params.pop("constant_models")
        policy = cls(space, **params)
        policy.X = np.array(arrays["X"], np.float32)
        policy.actions = np.array(arrays["actions"], np.int64)
        policy.rewards = np.array(arrays["rewards"], np.float64)
        policy.value = np.array(arrays["value"], np.float64)
        policy.events = {k: np.array(arrays[f"event_{k}"], bool) for k in STAGES}
        policy.fitted_on = fitted_on
        policy.models = {
            k: (float(constants[k]) if k in constants else lgb.Booster(model_str=models[k]))
            for k in MODELS
            if k in constants or k in models
        }
        return policy
