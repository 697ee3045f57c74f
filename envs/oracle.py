"""The oracle: the best eligible action by the simulator's exact expected reward.

Evaluation only — it reads ground truth no real policy can see — and it acts on the simulation's
current contexts (the ``X`` it is given must be that simulation's observations). It gives the
``V_oracle`` of the normalised score ``(V - V_no_contact) / (V_oracle - V_no_contact)`` in bandit
runs; in journeys it is myopic (the best immediate reward), not optimal over the horizon.

:class:`ContentPosterior` is a weaker observer that still knows more than any policy can: every latent
trait but each customer's content affinities, which it infers from the customer's clicks by exact
Bayes. :func:`content_blind_score` runs it on the bandit stream: an upper reference for what
learning from a customer's history can reach (``bench/ceiling.py``).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from envs import population, response
from envs.population import Traits
from envs.rollout import bandit_simulation
from envs.scenario import Scenario
from envs.simulation import Simulation
from nba.policies.base import greedy, masked_argmax


class Oracle:
    name: ClassVar[str] = "oracle"

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.space = sim.space

    def probabilities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if X.shape[0] != self.sim.n:
            raise ValueError(f"X: the oracle acts on its simulation's {self.sim.n} current contexts, got {X.shape[0]}")
        return greedy(self.sim.expected_rewards(), mask)

    def update(self, X, actions, rewards, propensities=None) -> Oracle:
        return self


class ContentPosterior:
    """What a customer's own history can say of their content affinities, for an observer who knows
    every other latent trait: the exact Bayes posterior given the clicks of the messages seen so far.

    Evaluation only. Each (customer, content) affinity has the population's prior, the segment's
    affinity times a lognormal factor of spread ``population.affinity_sigma``. A seen message of
    content ``k`` with click intensity ``lam`` (``P(click) = 1 - exp(-lam * a)``, ``lam`` holding the
    channel, relevance, urgency and timing, known to this observer) multiplies the likelihood of
    ``a`` by ``1 - exp(-lam * a)`` if clicked and by ``exp(-lam * a)`` if not. Nothing else a
    customer does depends on content affinity (opens, conversions after a click, opt-outs and churn
    do not), so clicks are all the history says of it. The posterior is held as ``draws`` prior
    samples per (customer, content) with log-likelihood weights; a replaced customer starts again
    from the prior.
    """

    def __init__(self, scenario: Scenario, n: int, draws: int = 64, seed: int = 0, z: np.ndarray | None = None) -> None:
        if draws < 1:
            raise ValueError(f"draws: must be >= 1, got {draws!r}")
        k = len(scenario.contents)
        if z is None:
            z = np.random.default_rng([seed, 0xC0]).standard_normal((n, k, draws))
        if z.shape != (n, k, draws):
            raise ValueError(f"z: expected shape {(n, k, draws)}, got {z.shape}")
        self.scenario, self.arrays = scenario, scenario.arrays()
        self.loglik = np.zeros((n, k, draws))
        sigma = scenario.population.affinity_sigma
        self._factor = np.exp(sigma * np.asarray(z, np.float64) - sigma**2 / 2)  # (n, K, draws), mean 1 a priori

    def affinities(
        self, segment: np.ndarray, rows: np.ndarray | slice = slice(None), content: np.ndarray | None = None
    ) -> np.ndarray:
        """(len(rows), K, draws) sampled affinities of ``rows`` whose segments are ``segment``; given
        ``content`` (one index per row), only that content's, (len(rows), draws)."""
        seg = np.asarray(segment, np.intp)
        if content is None:
            return self.arrays.seg_content_affinity[seg][:, :, None] * self._factor[rows]
        return self.arrays.seg_content_affinity[seg, content][:, None] * self._factor[rows, content]

    def observe(
        self,
        traits: Traits,
        actions: np.ndarray,
        p_click: np.ndarray,
        seen: np.ndarray,
        clicked: np.ndarray,
        replaced: np.ndarray | None = None,
    ) -> None:
        """Learn from one step: the chosen ``actions`` (N,), their click probability ``p_click`` (N,) given
        seen under the true traits, which were ``seen`` and ``clicked``; ``replaced`` rows (new customers)
        forget everything afterwards."""
        space = self.scenario.action_space
        rows = np.flatnonzero(np.asarray(seen, bool) & (np.asarray(actions) > 0))
        k = space.content_of[actions[rows]].astype(np.intp)
        p = np.minimum(np.asarray(p_click, np.float64)[rows], 1.0 - 1e-12)
        lam = -np.log1p(-p) / traits.content_affinity[rows, k].astype(np.float64)  # the intensity, affinity apart
        a = self.affinities(traits.segment[rows], rows, content=k)  # (rows, draws)
        la = lam[:, None] * a
        self.loglik[rows, k] += np.where(np.asarray(clicked, bool)[rows, None], np.log(-np.expm1(-la)), -la)
        if replaced is not None:
            self.loglik[np.asarray(replaced, bool)] = 0.0

    def weights(self) -> np.ndarray:
        """(N, K, draws) posterior weights of the draws, each (customer, content) summing to 1."""
        w = np.exp(self.loglik - self.loglik.max(axis=2, keepdims=True))
        return w / w.sum(axis=2, keepdims=True)

    def expected_rewards(self, sim: Simulation, prior: bool = False) -> np.ndarray:
        """(N, A) posterior expectation of every action's exact expected reward on ``sim``'s current contexts
        (an action the contact policy blocks earns what no contact earns, as in ``sim.expected_rewards``);
        ``prior`` ignores the clicks."""
        space, tr = sim.space, sim.traits
        n, draws = self.loglik.shape[0], self.loglik.shape[2]
        if sim.n != n:
            raise ValueError(f"sim: expected {n} rows, got {sim.n}")
        actions = np.where(sim.action_mask(), np.arange(space.n_actions)[None, :], 0)
        content = np.maximum(space.content_of, 0).astype(np.intp)[actions]  # no contact: any column (all alike)
        w = np.full(self.loglik.shape, 1.0 / draws) if prior else self.weights()
        aff = self.affinities(tr.segment)
        out = np.zeros(actions.shape)
        rows = np.arange(n)[:, None]
        for j in range(draws):
            t = dataclasses.replace(tr, content_affinity=aff[:, :, j].astype(np.float32))
            er = response.expected_reward(
                sim.scenario, sim.arrays, space, t, sim.moment, actions, penalties=sim.penalties
            )
            out += w[rows, content, j] * er
        return out


def content_blind_score(
    scenario: Scenario,
    seed: int = 0,
    batch: int = 1000,
    steps: int = 100,
    draws: int = 64,
    prior: bool = False,
    all_seen: bool = False,
    *,
    purpose: str,
) -> float:
    """Normalised score of the observer of :class:`ContentPosterior` acting on ``nba/Bandit-v0``'s stream.

    ``batch`` rows for ``steps`` decisions each, as :func:`envs.rollout.bandit_run` meets them; at every
    decision it takes the eligible action of highest posterior expected reward, and learns from the
    step's clicks. It knows every latent trait but content affinity, so no policy learning from
    observations alone can be expected to beat it. ``prior`` never learns; ``all_seen`` lets it learn
    from a click drawn for every message sent, as if every one had been seen (far more than any log
    holds: about 15 % of messages are seen).
    """
    if batch < 1 or steps < 1:
        raise ValueError(f"batch and steps: must be >= 1, got {batch!r} and {steps!r}")
    sim = bandit_simulation(scenario, seed, batch, purpose)
    post = ContentPosterior(scenario, batch, draws, seed)
    rng = np.random.default_rng([seed, 0xB1])
    totals = np.zeros(3)  # chosen, oracle, no contact
    for _ in range(steps):
        mask, er = sim.action_mask(), sim.expected_rewards()
        a = masked_argmax(post.expected_rewards(sim, prior=prior), mask)
        totals += (er[np.arange(batch), a].sum(), np.where(mask, er, -np.inf).max(axis=1).sum(), er[:, 0].sum())
        traits = population.take_rows(sim.traits, np.arange(batch))  # before the step replaces anyone
        p_click = response.contact_terms(
            sim.scenario, sim.arrays, sim.space, sim.traits, sim.moment, a[:, None]
        ).p_click[:, 0]
        res = sim.step(a)
        o = res.outcome
        if all_seen:
            seen, clicked = o.sent, rng.random(batch) < p_click
        else:
            seen, clicked = o.seen, o.clicked
        if not prior:
            post.observe(traits, a, p_click, seen, clicked, res.replaced)
    return float((totals[0] - totals[2]) / (totals[1] - totals[2]))
