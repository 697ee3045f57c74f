"""Peer learners behind nba's policy interface, so that ``bench/policies.py`` runs them in nba's own loop.

Each adapter has ``space``, ``probabilities(X, mask) -> (N, A)`` and ``update(X, actions, rewards,
propensities)``, which is all :func:`envs.rollout.bandit_run` (through :func:`nba.policies.act`)
asks of a policy: every peer meets the same customers, acts through the same one-uniform-per-row
draw, and learns from the same realised rewards as nba's policies.

* :class:`VWCBExploreADF`: Vowpal Wabbit ``--cb_explore_adf`` (epsilon-greedy or ``--squarecb``).
  The observation is the shared example (namespace ``S``: one feature per nonzero context value);
  each eligible action is an action example (namespace ``A``: the contact flag and the channel,
  content and slot one-hots of :meth:`nba.actions.ActionSpace.features`; no contact has none, so
  its score is VW's constant and the shared terms, like nba's baseline block); ``-q SA`` crosses
  the two. Only eligible actions are offered, so VW's PMF is the exact distribution over them.
  Rewards are given to VW as costs (``cost = -reward``) with the PMF's probability of the chosen
  action: the example VW predicted on is learnt from, labelled, once its reward is known (VW text
  format, parsed by VW each time: keeping the parsed examples of a whole batch alive for
  ``set_label_string`` gives the same model but was slower).
* :class:`MABWiserLinear`: MABWiser ``LinUCB`` / ``LinTS`` (one ridge regression per arm on the
  context). MABWiser has no eligibility mask: the adapter takes ``predict_expectations`` (UCB
  scores, or one posterior draw for LinTS) and chooses the best *eligible* arm. MABWiser does not
  expose its action distribution, so ``probabilities`` is a one-hot on that choice: exact for
  LinUCB (deterministic), while for LinTS it is the realised posterior draw, not the probability
  of the choice (the propensity ``act`` logs is then 1; no learner here uses propensities, and the
  benchmark records only actions and rewards). It also decides and learns one context at a time
  (:meth:`MABWiserLinear.decide_one`, :meth:`MABWiserLinear.update_one`) to measure MABWiser's
  one-at-a-time throughput.
"""

from __future__ import annotations

import time
from typing import ClassVar

import numpy as np

from nba.actions import ActionSpace
from nba.policies.base import greedy, masked_argmax

TINY = 1e-12  # context values below this (the float32 floor used for "never") are left out of VW examples


# ----------------------------------------------------------------------------- Vowpal Wabbit
def vw_action_lines(space: ActionSpace) -> list[str]:
    """One VW action example per action: namespace ``A`` with the features of ``ActionSpace.features()``."""
    names = (
        ["contact"]
        + [f"channel={c}" for c in space.channels]
        + [f"content={k}" for k in space.contents]
        + [f"slot={'now' if s is None else f'{s:02d}h'}" for s in space.send_slots]
    )
    feats = space.features()
    if feats.shape[1] != len(names):
        raise ValueError(f"ActionSpace.features: expected {len(names)} columns, got {feats.shape[1]}")
    return ["|A " + " ".join(names[j] for j in np.flatnonzero(row)) if row.any() else "|A" for row in feats]


def vw_shared_lines(X: np.ndarray) -> list[str]:
    """One VW shared example per context: namespace ``S``, feature ``f<j>`` with value ``X[i, j]``."""
    X = np.asarray(X, np.float64)
    out = []
    for row in X:
        nz = np.flatnonzero(np.abs(row) > TINY)
        out.append("shared |S " + " ".join(f"f{j}:{row[j]:.7g}" for j in nz))
    return out


class VWCBExploreADF:
    """Vowpal Wabbit ``--cb_explore_adf`` behind nba's policy interface."""

    name: ClassVar[str] = "vw"

    def __init__(
        self,
        space: ActionSpace,
        dim: int,
        exploration: str = "epsilon",
        epsilon: float = 0.05,
        bits: int = 18,
        seed: int = 0,
        extra: str = "",
    ) -> None:
        import vowpalwabbit

        if exploration not in ("epsilon", "squarecb"):
            raise ValueError(f"exploration: expected 'epsilon' or 'squarecb', got {exploration!r}")
        self.space, self.dim, self.exploration = space, dim, exploration
        args = ["--cb_explore_adf", "-q", "SA", "-b", str(bits), "--random_seed", str(seed), "--quiet"]
        args += ["--epsilon", str(epsilon)] if exploration == "epsilon" else ["--squarecb"]
        self.args = " ".join(args + ([extra] if extra else []))
        self.ws = vowpalwabbit.Workspace(self.args)
        self._actions = vw_action_lines(space)
        self._pending: tuple[np.ndarray, list[np.ndarray], list[list[str]]] | None = None
        self.vw_seconds = 0.0  # time inside VW calls (parse, predict, learn); the rest is formatting

    def probabilities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        out = np.zeros(mask.shape)
        shared = vw_shared_lines(X)
        eligible = [np.flatnonzero(row) for row in mask]
        examples = [[shared[i]] + [self._actions[a] for a in elig] for i, elig in enumerate(eligible)]
        predict = self.ws.predict
        t0 = time.perf_counter()
        pmfs = [predict(ex) for ex in examples]
        self.vw_seconds += time.perf_counter() - t0
        for i, (elig, pmf) in enumerate(zip(eligible, pmfs, strict=True)):
            out[i, elig] = pmf
        self._pending = (X, eligible, examples)
        return out

    def update(self, X, actions, rewards, propensities=None) -> VWCBExploreADF:
        if self._pending is None or not (self._pending[0] is X or np.array_equal(self._pending[0], X)):
            raise ValueError("X: VWCBExploreADF learns from the batch it last decided on (same contexts, same mask)")
        _, eligible, examples = self._pending
        rewards = np.asarray(rewards, np.float64)
        propensities = np.asarray(propensities, np.float64)
        for ex, elig, a, r, p in zip(examples, eligible, np.asarray(actions), rewards, propensities, strict=True):
            k = int(np.searchsorted(elig, a))
            if k == len(elig) or elig[k] != a:
                raise ValueError(f"actions: {int(a)} was not offered to VW (ineligible)")
            ex[1 + k] = f"0:{-r:.9g}:{p:.9g} {ex[1 + k]}"
        learn = self.ws.learn
        t0 = time.perf_counter()
        for ex in examples:
            learn(ex)
        self.vw_seconds += time.perf_counter() - t0
        self._pending = None
        return self

    def close(self) -> None:
        self.ws.finish()


# ----------------------------------------------------------------------------- MABWiser
class MABWiserLinear:
    """MABWiser ``LinUCB`` or ``LinTS`` (one ridge regression per arm) behind nba's policy interface."""

    name: ClassVar[str] = "mabwiser"

    def __init__(
        self,
        space: ActionSpace,
        dim: int,
        policy: str = "linucb",
        alpha: float = 1.0,
        l2_lambda: float = 1.0,
        seed: int = 0,
    ) -> None:
        from mabwiser.mab import MAB, LearningPolicy

        if policy not in ("linucb", "lints"):
            raise ValueError(f"policy: expected 'linucb' or 'lints', got {policy!r}")
        self.space, self.dim, self.policy = space, dim, policy
        make = LearningPolicy.LinUCB if policy == "linucb" else LearningPolicy.LinTS
        self.arms = list(range(space.n_actions))
        self.mab = MAB(arms=self.arms, learning_policy=make(alpha=alpha, l2_lambda=l2_lambda), seed=seed, n_jobs=1)
        # an empty fit initialises every arm's ridge model (A = l2_lambda I, b = 0), as nba's learners start
        self.mab.fit(np.zeros(0, np.int64), np.zeros(0), np.zeros((0, dim)))

    def expectations(self, X: np.ndarray) -> np.ndarray:
        """(N, A) MABWiser's ``predict_expectations`` (UCB scores, or one posterior draw for LinTS)."""
        X = np.asarray(X, np.float64)
        pred = self.mab.predict_expectations(X)
        if isinstance(pred, dict):
            pred = [pred]
        a = len(self.arms)
        return np.fromiter((v for d in pred for v in d.values()), np.float64, count=len(pred) * a).reshape(-1, a)

    def probabilities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """One-hot on the best eligible arm (see the module notes: not a distribution for LinTS)."""
        return greedy(self.expectations(X), mask)

    def update(self, X, actions, rewards, propensities=None) -> MABWiserLinear:
        self.mab.partial_fit(np.asarray(actions, np.int64), np.asarray(rewards, np.float64), np.asarray(X, np.float64))
        return self

    # one context at a time, as a service would call it
    def decide_one(self, x: np.ndarray, mask_row: np.ndarray) -> int:
        return int(masked_argmax(self.expectations(x[None, :]), mask_row[None, :])[0])

    def update_one(self, x: np.ndarray, action: int, reward: float) -> None:
        self.mab.partial_fit(np.array([action]), np.array([reward], np.float64), np.asarray(x, np.float64)[None, :])
