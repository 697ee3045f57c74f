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
On a plain action space without no contact (:meth:`nba.actions.ActionSpace.plain`) no action is a
candidate by right, and a row with no eligible candidate is decided over all its eligible actions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import lightgbm as lgb
import numpy as np

from nba.actions import ActionSpace
from nba.policies.base import check_propensities, check_update, checked, epsilon_greedy
from nba.policies.lgbm import check_model_params, joint_rows, predict_eligible, regression_params
from nba.policies.linear import action_design


class FittedQ:
    """Fitted-Q iteration with LightGBM on logged transitions (see the module's docstring): greedy in Q
    (``epsilon``: uniform exploration) over the actions the log supports; :meth:`fit` learns, not ``update``."""

    name: ClassVar[str] = "fqi"
    fit_progress: ClassVar[str] = "fqi_target_change"  # fit's progress: mean |change of the targets|

    def __init__(
        self,
        space: ActionSpace,
        dim: int,
        gamma: float = 0.97,
        iterations: int = 8,
        num_boost_round: int = 100,
        learning_rate: float = 0.1,
        num_leaves: int = 31,
        min_data_in_leaf: int = 100,
        min_support: int = 200,
        max_candidates: int = 32,
        bootstrap_top: int | None = None,
        refit_rounds: int | None = None,
        epsilon: float = 0.0,
        seed: int = 0,
        threads: int = 2,
    ) -> None:
        if not 0.0 <= gamma < 1.0:
            raise ValueError(f"gamma: must be in [0, 1), got {gamma!r}")
        if iterations < 1:
            raise ValueError(f"iterations: must be >= 1, got {iterations!r}")
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon: must be in [0, 1], got {epsilon!r}")
        if bootstrap_top is not None and bootstrap_top < 1:
            raise ValueError(f"bootstrap_top: must be >= 1 or None, got {bootstrap_top!r}")
        self.space, self.dim = space, dim
        self.params: dict[str, Any] = {
            "gamma": gamma,
            "iterations": iterations,
            "num_boost_round": num_boost_round,
            "learning_rate": learning_rate,
            "num_leaves": num_leaves,
            "min_data_in_leaf": min_data_in_leaf,
            "min_support": min_support,
            "max_candidates": max_candidates,
            "bootstrap_top": bootstrap_top,
            "refit_rounds": refit_rounds,
            "epsilon": epsilon,
            "seed": seed,
            "threads": threads,
        }
        check_model_params(self.params)
        self.psi = action_design(space).astype(np.float32)
        self.candidates = ~space.is_contact  # no contact, where the space has it
        self.booster: lgb.Booster | None = None

    # ------------------------------------------------------------------ model
    def eligible(self, mask: np.ndarray | None, n: int) -> np.ndarray:
        """(N, A) the eligible candidates; in a row with none (a space without no contact), every
        eligible action."""
        a = self.space.n_actions
        mask = np.ones((n, a), bool) if mask is None else np.asarray(mask, bool)
        ok = mask & self.candidates
        none = ~ok.any(axis=1)
        if none.any():
            ok[none] = mask[none]
        return ok

    def q_values(self, X: np.ndarray, mask: np.ndarray | None = None, chunk: int = 8192) -> np.ndarray:
        """(N, A) Q of every eligible candidate action (-inf elsewhere: :meth:`eligible`); 0 before fitting."""
        ok = self.eligible(mask, X.shape[0])
        if self.booster is None:
            return np.where(ok, 0.0, -np.inf)
        return predict_eligible(self.booster, X, self.psi, ok, -np.inf, self.params["threads"], chunk)

    def fit(
        self,
        X: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        X_next: np.ndarray,
        mask_next: np.ndarray,
        terminated: np.ndarray,
        progress: Callable[[int, float], None] | None = None,
    ) -> FittedQ:
        """Fit on logged transitions; ``progress(iteration, mean |change of targets|)``."""
        X = np.asarray(X, np.float32)
        n = X.shape[0]
        actions = self.space.check(np.asarray(actions), "actions")
        rewards = np.asarray(rewards, np.float64)
        terminated = np.asarray(terminated, bool)
        for name, arr, shape in (
            ("actions", actions, (n,)),
            ("rewards", rewards, (n,)),
            ("X_next", X_next, X.shape),
            ("mask_next", mask_next, (n, self.space.n_actions)),
            ("terminated", terminated, (n,)),
        ):
            if np.shape(arr) != shape:
                raise ValueError(f"{name}: expected shape {shape}, got {np.shape(arr)}")
        if X.shape[1] != self.dim:
            raise ValueError(f"X: expected {self.dim} features, got {X.shape[1]}")
        if not (np.all(np.isfinite(X)) and np.all(np.isfinite(rewards)) and np.all(np.isfinite(X_next))):
            raise ValueError("X/rewards/X_next: contain NaN or infinite values")
        p = self.params
        counts = np.bincount(actions, minlength=self.space.n_actions)
        if self.space.has_no_contact:
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
            self.booster = lgb.train(
                lgb_params, data, init_model=self.booster, num_boost_round=p["num_boost_round"] if it == 0 else refit
            )
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
        if self.booster is None:
            raise RuntimeError("fit the policy before asking for its values")
        q[rows, cols] = self.booster.predict(
            joint_rows(X[rows], self.psi, top[rows, cols]), num_threads=self.params["threads"]
        )
        return q.max(axis=1)

    # ------------------------------------------------------------------ policy interface
    @checked
    def probabilities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(N, A) epsilon-greedy in Q over each row's eligible candidates (:meth:`eligible`)."""
        return epsilon_greedy(self.q_values(X, mask), self.eligible(mask, X.shape[0]), self.params["epsilon"])

    def update(self, X, actions, rewards, propensities=None) -> FittedQ:
        """Offline learner: learns with :meth:`fit` on transitions; a logged bandit batch is checked (ValueError
        naming the field), then ignored."""
        check_update(self.space, self.dim, X, actions, rewards, propensities)
        return self

    def get_state(self):
        """(``dim`` and the constructor's parameters, the candidate actions, the Q model's text once fitted)."""
        params: dict[str, Any] = {"dim": self.dim, **self.params}
        models = {} if self.booster is None else {"q_model": self.booster.model_to_string()}
        return params, {"candidates": self.candidates}, models

    @classmethod
    def from_state(cls, space, params, arrays, models):
        """The fitted-Q :meth:`get_state` described: its parameters, candidates and Q model (if fitted)."""
        policy = cls(space, **params)
        policy.candidates = np.array(arrays["candidates"], bool)
        if "q_model" in models:
            policy.booster = lgb.Booster(model_str=models["q_model"])
        return policy


def returns_to_go(rewards: np.ndarray, episode: np.ndarray, step: np.ndarray, gamma: float) -> np.ndarray:
    """Each transition's discounted sum of its episode's rewards from it to the end of the log.

    ``episode`` identifies the journey (the customer), ``step`` orders its transitions (the day);
    the discount applies once per transition. Vectorised over episodes: the transitions sorted by
    episode and step, the k-th of every episode adds the discounted return of its successor, for k
    from the longest episode's last down to the first (memory linear in the transitions).
    """
    rewards = np.asarray(rewards, np.float64)
    episode, step = np.asarray(episode), np.asarray(step)
    for name, arr in (("episode", episode), ("step", step)):
        if arr.shape != rewards.shape or arr.ndim != 1:
            raise ValueError(f"{name}: expected shape {rewards.shape}, got {arr.shape}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma: must be in [0, 1], got {gamma!r}")
    if rewards.size == 0:
        return rewards.copy()
    order = np.lexsort((step, episode))
    ep = episode[order]
    first = np.r_[True, ep[1:] != ep[:-1]]
    position = np.arange(len(ep)) - np.flatnonzero(first)[np.cumsum(first) - 1]
    has_next = np.r_[~first[1:], False]  # the next row is the same episode's next transition
    by_position = np.argsort(position, kind="stable")
    bounds = np.searchsorted(position[by_position], np.arange(position.max() + 2))
    G = rewards[order]
    for k in range(position.max(), -1, -1):
        rows = by_position[bounds[k] : bounds[k + 1]]
        rows = rows[has_next[rows]]
        G[rows] += gamma * G[rows + 1]
    out = np.empty_like(rewards)
    out[order] = G
    return out


class TwoStageValue:
    """Offline RL in two stages: the immediate reward plus what the action does to the customer's value.

    Fitted-Q must carry the long-term value through its own noisy, ever-growing targets. This
    learner instead fits three LightGBM regressions on the logged transitions, each on a smooth target:

    1. **the value V(x)** of a customer's state, on the state alone (plus the day, if given: a log's
       returns stop at its end), fitted to ``returns``: each transition's Monte Carlo return-to-go
       under the logging policy (:func:`returns_to_go`), usually of the *total* reward, organic
       purchases included, where the long-term effects of engagement and fatigue show;
    2. **the change g(x, a)**: the expected value of the next state, V(x') (0 after churn: the
       bootstrap stops on termination, not on truncation), fitted on ``[x, psi(a)]`` and boosted from
       a model of the same target on x alone, so that its trees have only the actions' effect to fit;
       given the logging propensities, weighted so that the logged actions look independent of the
       state (see :meth:`fit`);
    3. **the immediate reward r(x, a)**: the myopic reward model of :class:`FittedQ` with gamma 0, on
       ``rewards`` (the message's attributed reward).

    It then acts greedily (``epsilon``: uniform exploration) over the reward model's candidate
    actions in ``Q(x, a) = r(x, a) + weight * gamma * g(x, a)``: one step of policy improvement over
    the logging policy, with the value of the state it leads to. ``weight`` 1 is the nominal one;
    choose it on customers other than those reported (``bench/journey.py`` does).

    **Fitted-Q iteration in this form** (``iterations`` > 1): the Monte Carlo V is only the start.
    Each further iteration refits g to the greedy value of the next state under the current Q,

        V_k(x') = s(x') + max_{a'} [r(x', a') + gamma * g_k(x', a')]      (0 after churn)

    (s: the state's own reward, ``state_rewards`` in :meth:`fit`; the maximum over the
    ``bootstrap_top`` candidates the reward model rates best in x'), with the same state-only start
    and weights. Q = r + gamma * g then moves towards the optimal Q as fitted-Q iteration does,
    but from the logging policy's value, which already looks the whole log ahead, where fitted-Q from
    zero looks one more day ahead per iteration; and r, fitted once on the low-noise attributed
    reward, keeps its ranking of the actions' immediate effects. ``average``: the policy's g is
    the mean of the last ``average`` iterations' (the decisions of single iterations move more than
    their values do).
    """

    name: ClassVar[str] = "two_stage"
    fit_progress: ClassVar[str] = "target_sd"  # fit's progress: the spread of each fit's targets

    def __init__(
        self,
        space: ActionSpace,
        dim: int,
        gamma: float = 0.97,
        weight: float = 1.0,
        iterations: int = 1,
        average: int = 1,
        bootstrap_top: int = 8,
        num_boost_round: int = 150,
        value_rounds: int = 200,
        change_rounds: int = 300,
        learning_rate: float = 0.05,
        num_leaves: int = 15,
        min_data_in_leaf: int = 1000,
        min_support: int = 300,
        max_candidates: int = 225,
        epsilon: float = 0.0,
        seed: int = 0,
        threads: int = 2,
    ) -> None:
        if not 0.0 <= gamma < 1.0:
            raise ValueError(f"gamma: must be in [0, 1), got {gamma!r}")
        if not (np.isfinite(weight) and weight >= 0.0):
            raise ValueError(f"weight: must be a finite number >= 0, got {weight!r}")
        for field, count in (
            ("value_rounds", value_rounds),
            ("change_rounds", change_rounds),
            ("iterations", iterations),
            ("average", average),
            ("bootstrap_top", bootstrap_top),
        ):
            if count < 1:
                raise ValueError(f"{field}: must be >= 1, got {count!r}")
        if average > iterations:
            raise ValueError(f"average: must be at most iterations ({iterations}), got {average!r}")
        self.space, self.dim = space, dim
        self.params: dict[str, Any] = {
            "gamma": gamma,
            "weight": weight,
            "iterations": iterations,
            "average": average,
            "bootstrap_top": bootstrap_top,
            "num_boost_round": num_boost_round,
            "value_rounds": value_rounds,
            "change_rounds": change_rounds,
            "learning_rate": learning_rate,
            "num_leaves": num_leaves,
            "min_data_in_leaf": min_data_in_leaf,
            "min_support": min_support,
            "max_candidates": max_candidates,
            "epsilon": epsilon,
            "seed": seed,
            "threads": threads,
        }
        check_model_params(self.params)
        self.reward = FittedQ(
            space,
            dim,
            gamma=0.0,
            iterations=1,
            num_boost_round=num_boost_round,
            learning_rate=learning_rate,
            num_leaves=num_leaves,
            min_data_in_leaf=min_data_in_leaf,
            min_support=min_support,
            max_candidates=max_candidates,
            epsilon=epsilon,
            seed=seed,
            threads=threads,
        )
        self.psi = self.reward.psi
        # g of the last ``average`` iterations: each a model of E[V(x') | x] and one of E[V(x') | x, a]
        # boosted from it
        self.futures: list[tuple[lgb.Booster, lgb.Booster]] = []

    @property
    def candidates(self) -> np.ndarray:
        """(A,) bool the actions the reward model may choose (those the log supports)."""
        return self.reward.candidates

    def reweighted(self, weight: float) -> TwoStageValue:
        """The same fitted models with another ``weight`` (to choose it on validation customers)."""
        params = {k: v for k, v in self.params.items() if k != "weight"}
        other = type(self)(self.space, self.dim, weight=weight, **params)
        other.reward, other.futures = self.reward, self.futures
        return other

    # ------------------------------------------------------------------ model
    def future(self, X: np.ndarray, ok: np.ndarray) -> np.ndarray:
        """(N, A) fitted E[V(x') | x, a] where ``ok``, 0 elsewhere (and everywhere before fitting)."""
        if not self.futures:
            return np.zeros(ok.shape)
        X = np.asarray(X, np.float32)
        threads = self.params["threads"]
        out = np.zeros(ok.shape)
        for base, change in self.futures:
            out += predict_eligible(change, X, self.psi, ok, 0.0, threads)
            out += np.asarray(base.predict(X, num_threads=threads))[:, None]
        return np.where(ok, out / len(self.futures), 0.0)

    def q_values(self, X: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """(N, A) r(x, a) + weight * gamma * g(x, a) of every eligible candidate, -inf elsewhere."""
        q = self.reward.q_values(X, mask)
        ok = np.isfinite(q)
        return np.where(ok, q + self.params["weight"] * self.params["gamma"] * self.future(X, ok), -np.inf)

    def fit(
        self,
        X: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        X_next: np.ndarray,
        mask_next: np.ndarray,
        terminated: np.ndarray,
        returns: np.ndarray | None = None,
        day: np.ndarray | None = None,
        propensities: np.ndarray | None = None,
        mask: np.ndarray | None = None,
        state_rewards: np.ndarray | None = None,
        progress: Callable[[int, float], None] | None = None,
    ) -> TwoStageValue:
        """Fit on logged transitions.

        ``rewards``: the immediate reward r fits; ``returns``: V's target, each transition's
        discounted return-to-go (:func:`returns_to_go`; None: ``rewards``, so V is the next
        reward and the policy looks two steps ahead); ``day``: each transition's step in the log,
        a feature of V (None: V sees the state alone). ``state_rewards``: the part of each
        transition's reward that ``rewards`` leave out and no action causes (organic purchases when
        r fits the attributed reward; None: nothing), fitted on the state alone and counted in the
        value of the next state from the second iteration on. ``progress(stage, standard deviation
        of the stage's target)`` after each fit: the reward model, V, then g of each iteration.

        ``propensities`` and ``mask`` (the logging policy's probability of each logged action and
        the eligible actions then): g is then fitted with the weights ``1 / (eligible count *
        propensity)``, which make the logged actions look drawn uniformly, independently of the
        state. Without them, a logging policy that picks actions by state (business as usual
        sends the cart email to carts) lets g credit the action for what the state brings, wherever
        the state-only start of g leaves some of it unexplained.
        """
        n = np.shape(X)[0]
        weights = None
        if propensities is not None or mask is not None:
            if propensities is None or mask is None:
                raise ValueError("propensities: give both the propensities and the mask, or neither")
            propensities, mask = check_propensities(propensities, n), np.asarray(mask)
            if mask.shape != (n, self.space.n_actions) or mask.dtype != bool:
                raise ValueError(
                    f"mask: expected a boolean array of shape {(n, self.space.n_actions)}, got "
                    f"{mask.dtype} {mask.shape}"
                )
            eligible = mask.sum(axis=1)
            if np.any(eligible == 0):
                raise ValueError("mask: a transition has no eligible action")
            weights = 1.0 / (eligible * propensities)
        returns = np.asarray(rewards if returns is None else returns, np.float64)
        if returns.shape != (n,):
            raise ValueError(f"returns: expected shape {(n,)}, got {returns.shape}")
        if not np.all(np.isfinite(returns)):
            raise ValueError("returns: contain NaN or infinite values")
        if state_rewards is not None:
            state_rewards = np.asarray(state_rewards, np.float64)
            if state_rewards.shape != (n,) or not np.all(np.isfinite(state_rewards)):
                raise ValueError(f"state_rewards: expected {n} finite values, got shape {state_rewards.shape}")
        if day is not None:
            day = np.asarray(day, np.float32)
            if day.shape != (n,) or not np.all(np.isfinite(day)):
                raise ValueError(f"day: expected {n} finite steps, got shape {day.shape}")
        self.reward.fit(X, actions, rewards, X_next, mask_next, terminated)  # validates the transitions
        if progress is not None:
            progress(0, float(np.std(rewards)))
        p = self.params
        lgb_params = regression_params(p)
        X, X_next = np.asarray(X, np.float32), np.asarray(X_next, np.float32)
        terminated = np.asarray(terminated, bool)

        def with_day(Z: np.ndarray, shift: int) -> np.ndarray:
            return Z if day is None else np.hstack([Z, (day + shift)[:, None]])

        value = lgb.train(lgb_params, lgb.Dataset(with_day(X, 0), label=returns), p["value_rounds"])
        if progress is not None:
            progress(1, float(returns.std()))
        joint = joint_rows(X, self.psi, np.asarray(actions))
        threads = p["threads"]

        def fit_future(v_next: np.ndarray) -> tuple[lgb.Booster, lgb.Booster]:
            base = lgb.train(lgb_params, lgb.Dataset(X, label=v_next), p["num_boost_round"])
            change = lgb.train(
                lgb_params,
                lgb.Dataset(joint, label=v_next, weight=weights, init_score=base.predict(X, num_threads=threads)),
                p["change_rounds"],
            )
            return base, change

        v_next = np.where(terminated, 0.0, value.predict(with_day(X_next, 1), num_threads=threads))
        futures = [fit_future(v_next)]
        if progress is not None:
            progress(2, float(v_next.std()))
        if p["iterations"] > 1:
            bootstrap = self._bootstrap(X, X_next, np.asarray(mask_next, bool), state_rewards)
            for it in range(1, p["iterations"]):
                v_next = np.where(terminated, 0.0, bootstrap(*futures[-1]))
                futures.append(fit_future(v_next))
                if progress is not None:
                    progress(2 + it, float(v_next.std()))
        self.futures = futures[-p["average"] :]
        return self

    def _bootstrap(
        self, X: np.ndarray, X_next: np.ndarray, mask_next: np.ndarray, state_rewards: np.ndarray | None
    ) -> Callable[[lgb.Booster, lgb.Booster], np.ndarray]:
        """V_k(x') = s(x') + max over the shortlist of [r(x', a') + gamma * g_k(x', a')], as a function of g_k.

        The shortlist: the ``bootstrap_top`` eligible candidates the reward model rates best in each
        next state, found once (as :class:`FittedQ` does); s, the state's own reward, fitted once.
        """
        p, threads = self.params, self.params["threads"]
        top, ok = self.reward._shortlist(X_next, mask_next, p["bootstrap_top"])
        rows, cols = np.nonzero(ok)
        pairs = joint_rows(X_next[rows], self.psi, top[rows, cols])
        if self.reward.booster is None:
            raise RuntimeError("fit the reward model before the values")
        r_next = self.reward.booster.predict(pairs, num_threads=threads)
        own = np.zeros(len(X_next))
        if state_rewards is not None:
            own_model = lgb.train(regression_params(p), lgb.Dataset(X, label=state_rewards), p["value_rounds"])
            own = np.asarray(own_model.predict(X_next, num_threads=threads))

        def value(base: lgb.Booster, change: lgb.Booster) -> np.ndarray:
            g = change.predict(pairs, num_threads=threads) + base.predict(X_next, num_threads=threads)[rows]
            q = np.full(ok.shape, -np.inf)
            q[rows, cols] = r_next + p["gamma"] * g
            return own + q.max(axis=1)

        return value

    # ------------------------------------------------------------------ policy interface
    @checked
    def probabilities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(N, A) epsilon-greedy in ``r + weight * gamma * g`` over each row's eligible candidates."""
        return epsilon_greedy(self.q_values(X, mask), self.reward.eligible(mask, X.shape[0]), self.params["epsilon"])

    def update(self, X, actions, rewards, propensities=None) -> TwoStageValue:
        """Offline learner: learns with :meth:`fit` on transitions; a logged bandit batch is checked (ValueError
        naming the field), then ignored."""
        check_update(self.space, self.dim, X, actions, rewards, propensities)
        return self

    def get_state(self):
        """(``dim`` and the constructor's parameters, the candidates, the reward model's and every averaged
        g's two models' texts)."""
        params: dict[str, Any] = {"dim": self.dim, **self.params}
        models = {}
        if self.reward.booster is not None:
            models["reward_model"] = self.reward.booster.model_to_string()
        for i, (base, change) in enumerate(self.futures):
            base_key, change_key = _future_keys(i)
            models |= {base_key: base.model_to_string(), change_key: change.model_to_string()}
        return params, {"candidates": self.candidates}, models

    @classmethod
    def from_state(cls, space, params, arrays, models):
        """The two-stage learner :meth:`get_state` described: parameters, candidates, reward model and g's."""
        policy = cls(space, **params)
        policy.reward.candidates = np.array(arrays["candidates"], bool)
        if "reward_model" in models:
            policy.reward.booster = lgb.Booster(model_str=models["reward_model"])
        while (keys := _future_keys(len(policy.futures)))[1] in models:
            policy.futures.append((lgb.Booster(model_str=models[keys[0]]), lgb.Booster(model_str=models[keys[1]])))
        return policy


def _future_keys(i: int) -> tuple[str, str]:
    """The saved names of the i-th averaged g's two models (the first keeps a single iteration's names)."""
    suffix = f"_{i}" if i else ""
    return f"value_base{suffix}", f"value_change{suffix}"
