"""Experiment: a two-stage long-term value on ``nba/Journey-v0`` against the myopic bandit.

    python bench/journey_two_stage.py [--gamma 0.97] [--weights 1,3] [--log-customers 8000]
                                      [--eval-customers 4000] [--eval-seed 1000]

The same logged data and myopic bandit as ``bench/journey.py`` (seed 0), then:

1. V(x, day): LightGBM on the state alone, fitted to each logged customer-day's Monte Carlo
   return-to-go of the *total* reward (discounted by ``--gamma``; organic purchases included,
   since the long-term lever, the synergy of engaged channels, acts on them). The day is a feature
   because the log's returns stop at its last day.
2. g(x, a): LightGBM on (state, action features), fitted to V(x', day + 1) (0 after churn) and
   boosted from a model of the same target on x alone, so that its trees have only the actions'
   effect left to fit.
3. The policy: greedy over the bandit's candidate actions in r(x, a) + w * gamma * g(x, a), r being
   the myopic bandit's attributed-reward model, for each ``--weights`` w.

Each policy runs on the held-out customers of ``bench/journey.py`` (same seed, common random
numbers), or on other customers (``--eval-seed``); the paired difference to the myopic bandit is
printed with its 95% interval. Choosing w on the held-out customers flatters the best w: choose it
on another seed, then report on the held-out ones.
"""

from __future__ import annotations

import argparse
import time

import lightgbm as lgb
import numpy as np

from envs.rollout import ValueEstimate, collect_transitions, journey_returns
from envs.scenario import Scenario
from nba.policies import create
from nba.policies.base import Explore
from nba.policies.lgbm import joint_rows, predict_eligible, regression_params


def returns_to_go(rewards: np.ndarray, customer: np.ndarray, day: np.ndarray, gamma: float) -> np.ndarray:
    """Discounted sum of each customer's rewards from each logged day to the end of the log."""
    order = np.lexsort((day, customer))
    out = np.zeros(len(rewards))
    acc = 0.0
    cust, r = customer[order], rewards[order]
    for i in range(len(order) - 1, -1, -1):
        if i == len(order) - 1 or cust[i] != cust[i + 1]:
            acc = 0.0
        acc = r[i] + gamma * acc
        out[order[i]] = acc
    return out


class TwoStage:
    """Greedy in r(x, a) + w * gamma * (base(x) + g(x, a)) over the myopic model's candidates."""

    name = "two_stage"

    def __init__(self, myopic, base: lgb.Booster, g: lgb.Booster, weight: float, gamma: float) -> None:
        self.myopic, self.base, self.g, self.weight, self.gamma = myopic, base, g, weight, gamma
        self.space = myopic.space

    def probabilities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        q0 = self.myopic.q_values(X, mask)
        ok = np.isfinite(q0)
        X32 = np.asarray(X, np.float32)
        future = predict_eligible(self.g, X32, self.myopic.psi, ok, 0.0, 2)
        future += self.base.predict(X32, num_threads=2)[:, None]
        q = np.where(ok, q0 + self.weight * self.gamma * future, -np.inf)
        p = np.zeros_like(q)
        p[np.arange(len(q)), q.argmax(axis=1)] = 1.0
        return p

    def update(self, *args, **kwargs) -> TwoStage:
        return self


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gamma", type=float, default=0.97)
    ap.add_argument("--weights", default="1,3", help="comma-separated weights w of the future term")
    ap.add_argument("--log-customers", type=int, default=8000)
    ap.add_argument("--eval-customers", type=int, default=4000)
    ap.add_argument("--eval-seed", type=int, default=1000,
                    help="seed of the evaluation customers (1000: bench/journey.py's held-out ones; another seed "
                         "to choose w without looking at them)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    sc = Scenario.default()
    sp, seg, dim = sc.action_space, tuple(sc.segments), sc.feature_spec.dim
    tr = collect_transitions(sc, Explore(create("business_as_usual", sp, seg), 0.2, holdout=0.2),
                             args.log_customers, seed=1)
    myopic = create("fqi", sp, seg, dim=dim, gamma=0.0, iterations=1, min_support=300, min_data_in_leaf=1000,
                    num_leaves=15, max_candidates=225, bootstrap_top=8, num_boost_round=150, learning_rate=0.05)
    myopic.fit(tr.X, tr.actions, tr.attributed, tr.X_next, tr.mask_next, tr.terminated)
    params = regression_params({"learning_rate": 0.05, "num_leaves": 15, "min_data_in_leaf": 1000, "seed": 0,
                                "threads": 2})
    X, X_next = np.asarray(tr.X, np.float32), np.asarray(tr.X_next, np.float32)
    day = tr.day.astype(np.float32)[:, None]
    G = returns_to_go(tr.rewards, tr.customer, tr.day, args.gamma)
    V = lgb.train(params, lgb.Dataset(np.hstack([X, day]), label=G), 200)
    v_next = np.where(tr.terminated, 0.0, V.predict(np.hstack([X_next, day + 1]), num_threads=2))
    base = lgb.train(params, lgb.Dataset(X, label=v_next), 150)
    g = lgb.train(params, lgb.Dataset(joint_rows(X, myopic.psi, tr.actions), label=v_next,
                                      init_score=base.predict(X, num_threads=2)), 300)
    print(f"{len(tr.rewards):,} transitions; V(x') sd {v_next.std():.2f}; fitted in {time.perf_counter() - t0:.0f} s",
          flush=True)
    seed = args.eval_seed
    bandit = journey_returns(sc, myopic, args.eval_customers, seed)
    print(f"myopic bandit: {bandit.mean():.2f}", flush=True)
    for w in (float(x) for x in args.weights.split(",")):
        r = journey_returns(sc, TwoStage(myopic, base, g, w, args.gamma), args.eval_customers, seed)
        d = ValueEstimate.of(r - bandit)
        print(f"two-stage, w = {w:g}: {r.mean():.2f}; vs the myopic bandit {d.mean:+.2f} [{d.ci_low:+.2f}, "
              f"{d.ci_high:+.2f}] = {d.mean / abs(bandit.mean()):+.1%}", flush=True)


if __name__ == "__main__":
    main()
