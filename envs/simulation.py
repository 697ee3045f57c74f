"""The engine under both gymnasium views: N customers stepped at once, one random stream each.

A :class:`Simulation` owns traits, state, history and a counter-based stream per row. Every step
draws the same number of uniforms for every row, whatever the action, so

* row ``i`` of a simulation follows exactly the trajectory of row ``i`` in any other simulation of
  the same (seed, purpose), whatever the number of rows or shards (under gymnasium's purpose
  :data:`envs.random.GYM`, row ``i`` of seed ``s`` is the one-row simulation seeded ``s + i``, so the
  scalar and vector environments agree), and
* two policies run on the same seed see the same customers and the same luck (common random
  numbers), which makes Monte Carlo comparisons of policies tight.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from envs import dynamics, population, response
from envs.random import Streams
from envs.scenario import Scenario
from nba.decide import Decided, decide_profiles
from nba.eligibility import RecentContacts, eligibility, send_time
from nba.features import Profile, build_features
from nba.policies import Policy

STEP_WIDTH = response.RESPONSE_WIDTH + dynamics.ADVANCE_WIDTH + 2
CHUNK = 65_536  # rows sampled at a time when a simulation starts


@dataclass
class StepResult:
    reward: np.ndarray  # (N,) realised reward
    attributed: np.ndarray  # (N,) its own conversions' revenue less charges (response.realised_rewards)
    outcome: response.Outcome
    replaced: np.ndarray  # (N,) bool: the row now holds a new customer (bandit view)
    churned: np.ndarray  # (N,) bool: the customer left during this step
    blocked: np.ndarray  # (N,) bool: the contact policy did not allow the action: nothing was sent
    times: dynamics.EventTimes  # when the outcome's events happen (what the history and the log stamp)


class Simulation:
    """N simulated customers.

    Args:
        scenario: the population's parameters.
        seed: the integer seed.
        n: number of rows (customers at a time).
        purpose: what the rows are for (``"train-log"``, ``"held-out"``...): rows of different
            (seed, purpose) pairs share no random stream (:mod:`envs.random`).
        first_row: index of this simulation's first row in the (seed, purpose) family (shards).
        decision_hour: local hour of every decision (journey view); ``None`` draws a random moment
            of the day for each decision (bandit view).
        replace_rate: probability that a row's customer is replaced by a new one after a decision
            (bandit view: a stream of customers); churned customers are then replaced too.
        penalties: charge opt-outs and churn at their penalty in the reward (bandit view).
    """

    def __init__(
        self,
        scenario: Scenario,
        seed: int,
        n: int,
        *,
        purpose: str,
        decision_hour: int | None,
        replace_rate: float = 0.0,
        penalties: bool = False,
        first_row: int = 0,
    ) -> None:
        self.scenario = scenario
        self.arrays = scenario.arrays()
        self.space = scenario.action_space
        self.spec = scenario.feature_spec
        self.n = n
        self.decision_hour = decision_hour
        self.replace_rate = replace_rate
        self.penalties = penalties
        self.streams = Streams.of(seed, n, purpose, first_row)
        self._reset_width = population.population_width(scenario) + 1
        # allocate from a one-row template, then draw customers in chunks to bound peak memory
        template = population.sample_population(
            scenario, self.arrays, np.full((1, self._reset_width - 1), 0.5), np.zeros(1)
        )
        self.traits, self.state, self.history = (population.empty_like_rows(x, n) for x in template)
        self.rules = scenario.contact
        self.recent = RecentContacts.for_rules(n, len(scenario.channels), self.rules)
        self.pending = dynamics.Pending.empty()  # events decided but not yet happened (dynamics.settle)
        for start in range(0, n, CHUNK):
            self.reset_rows(np.arange(start, min(n, start + CHUNK)))
        self._moment: response.Moment | None = None
        self._mask: np.ndarray | None = None

    # ------------------------------------------------------------------ rows
    def _start_time(self, u: np.ndarray, tz: np.ndarray, base: np.ndarray | None) -> np.ndarray:
        base = np.full(u.shape[0], population.START_H) if base is None else base
        if self.decision_hour is None:
            return base + 24.0 * u
        return base + np.mod(self.decision_hour - tz - np.mod(base, 24.0), 24.0)

    def _fix_start(self, rows: np.ndarray, u: np.ndarray, base: np.ndarray | None = None) -> None:
        """Move new rows' clocks to their first decision moment (depends on their time zone)."""
        st, hist = self.state, self.history
        start = self._start_time(u, self.traits.tz_offset[rows].astype(np.float64), base)
        shift = start - st.now[rows]
        st.now[rows] += shift
        st.signup[rows] += shift
        st.cart_until[rows] += np.where(st.cart_until[rows] > -1e8, shift, 0.0)
        hist.last_purchase[rows] += np.where(hist.n_purchases[rows] > 0, shift, 0.0)

    def reset_rows(self, rows: np.ndarray, base: np.ndarray | None = None) -> None:
        """Replace the customers of ``rows`` with new ones drawn from those rows' streams."""
        if rows.size == 0:
            return
        u = self.streams.uniform(self._reset_width, rows)
        now = np.zeros(rows.size)
        tr, st, hist = population.sample_population(self.scenario, self.arrays, u[:, :-1], now)
        population.assign_rows(self.traits, rows, tr)
        population.assign_rows(self.state, rows, st)
        population.assign_rows(self.history, rows, hist)
        self.recent.reset_rows(rows)
        self.pending.drop_rows(rows, self.n)
        self._fix_start(rows, u[:, -1], base)
        self._moment = None

    # ------------------------------------------------------------------ views
    @property
    def moment(self) -> response.Moment:
        if self._moment is None:
            self._moment = response.moment(self.scenario, self.arrays, self.traits, self.state, self.history)
            self._mask = None
        return self._moment

    def profile(self) -> Profile:
        m = self.moment
        return Profile(
            segment=self.traits.segment,
            tz_offset=self.traits.tz_offset,
            consent=m.reachable,
            stage=m.stage,
            cart_active=m.cart,
            tenure_days=m.tenure_days,
        )

    def observe(self) -> np.ndarray:
        """(N, d) float32 observations from the one feature function."""
        return build_features(self.spec, self.profile(), self.history, self.state.now, self.scenario.lifecycle)

    def action_mask(self) -> np.ndarray:
        """(N, A) bool: what the contact policy allows now (consent, quiet hours, caps, gap).

        Reachability (consent and no opt-out) comes from the simulated customer; the scenario's
        :class:`nba.eligibility.ContactRules` does the rest, as the service will.
        """
        m = self.moment
        if self._mask is None:
            self._mask = eligibility(
                self.space,
                self.rules,
                self.recent,
                now=self.state.now,
                tz_offset=self.traits.tz_offset.astype(np.float64),
                consent=m.reachable,
            )
        return self._mask

    def decide(self, policy: Policy, rng: np.random.Generator) -> Decided:
        """``policy``'s decisions for every row now, through the library's decide path
        (:func:`nba.decide.decide_profiles`: the features, the contact policy's mask and reasons, the
        choice with its exact propensity, the send times), as the decision service and the MLflow model
        decide. Its ``context`` and ``eligible`` are :meth:`observe` and :meth:`action_mask`."""
        p = self.profile()
        tz = self.traits.tz_offset.astype(np.float64)
        profile = Profile(p.segment, tz, p.consent, p.stage, p.cart_active, p.tenure_days)
        out = decide_profiles(
            policy,
            self.spec,
            self.rules,
            self.scenario.lifecycle,
            profile,
            self.history,
            self.recent,
            now=self.state.now,
            rng=rng,
        )
        self._mask = out.eligible  # the mask step() enforces is the one the policy chose under
        return out

    def expected_rewards(self, actions: np.ndarray | None = None) -> np.ndarray:
        """Exact expected reward of ``actions`` (N, A') — by default every action, (N, n_actions)."""
        if actions is None:
            actions = np.arange(self.space.n_actions)[None, :]
        actions = np.asarray(actions)
        # an action the contact policy blocks is not sent: it earns what no contact earns
        allowed = np.take_along_axis(self.action_mask(), np.broadcast_to(actions, (self.n, actions.shape[1])), 1)
        actions = np.where(allowed, actions, 0)
        return response.expected_reward(
            self.scenario, self.arrays, self.space, self.traits, self.moment, actions, penalties=self.penalties
        )

    # ------------------------------------------------------------------ dynamics
    def step(self, actions: np.ndarray, active: np.ndarray | None = None) -> StepResult:
        """Apply one action per row, realise its outcome, and move every row to its next decision.

        ``active`` (bool (N,)) limits the draws to those rows; the others consume no randomness and
        must be reset by the caller before they are observed again.
        """
        actions = self.space.check(actions)
        if actions.shape != (self.n,):
            raise ValueError(f"action: expected shape ({self.n},), got {actions.shape}")
        sc, sa, space = self.scenario, self.arrays, self.space
        m = self.moment
        blocked = ~self.action_mask()[np.arange(self.n), actions]
        actions = np.where(blocked, 0, actions)  # the contact policy is never violated
        self.recent.record_decisions(
            space, actions, send_time(space, self.state.now, self.traits.tz_offset.astype(np.float64))
        )
        if active is None:
            u = self.streams.uniform(STEP_WIDTH)
        else:
            u = np.full((self.n, STEP_WIDTH), 0.5)
            u[active] = self.streams.uniform(STEP_WIDTH, np.flatnonzero(active))
        t = response.contact_terms(sc, sa, space, self.traits, m, actions[:, None])
        out = response.sample_outcome(sc, sa, space, m, actions, t, u[:, : response.RESPONSE_WIDTH])
        reward, attributed = response.realised_rewards(out, self.penalties)
        times = dynamics.apply_outcome(sc, space, self.traits, self.state, self.pending, actions, t, out)
        j = response.RESPONSE_WIDTH
        if self.decision_hour is None:
            dt = sc.decision_window_h + 24.0 * u[:, j + dynamics.ADVANCE_WIDTH]
        else:
            dt = np.full(self.n, 24.0)
        left = dynamics.advance(
            sc, sa, self.traits, self.state, self.history, m, dt, u[:, j : j + dynamics.ADVANCE_WIDTH]
        )
        dynamics.settle(sc, self.state, self.history, self.pending)  # what happened by the next decision
        churned = out.churned | left
        self._moment = None
        replaced = np.zeros(self.n, bool)
        if self.replace_rate > 0:
            replaced = self.state.churned | (u[:, -1] < self.replace_rate)
            rows = np.flatnonzero(replaced)
            self.reset_rows(rows, base=self.state.now[rows])
        return StepResult(
            reward=reward,
            attributed=attributed,
            outcome=out,
            replaced=replaced,
            churned=churned,
            blocked=blocked,
            times=times,
        )


class ShardedSimulation:
    """Rows split over several :class:`Simulation` shards stepped in parallel threads.

    NumPy releases the GIL inside its array operations, so on a multi-core machine shards of a
    few thousand rows each run side by side. Shard ``k`` holding rows ``[a, b)`` is rows ``a ...``
    of the same (seed, purpose) family, so every row follows exactly the trajectory it has in one
    ``Simulation(scenario, seed, n, purpose=...)``.
    """

    def __init__(self, scenario: Scenario, seed: int, n: int, threads: int, *, purpose: str, **kwargs) -> None:
        from concurrent.futures import ThreadPoolExecutor

        if threads < 1:
            raise ValueError(f"threads: must be >= 1, got {threads!r}")
        bounds = np.linspace(0, n, min(threads, n) + 1).astype(int)
        self.bounds = bounds
        self.shards = [
            Simulation(scenario, seed, int(b - a), purpose=purpose, first_row=int(a), **kwargs)
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        self.pool = ThreadPoolExecutor(len(self.shards))
        first = self.shards[0]
        self.scenario, self.space, self.spec, self.n = scenario, first.space, first.spec, n

    def _map(self, fn, *args):
        return list(self.pool.map(fn, self.shards, *args))

    def _split(self, x: np.ndarray | None) -> list:
        if x is None:
            return [None] * len(self.shards)
        return [x[a:b] for a, b in zip(self.bounds[:-1], self.bounds[1:], strict=True)]

    def observe(self) -> np.ndarray:
        return np.concatenate(self._map(Simulation.observe))

    def action_mask(self) -> np.ndarray:
        return np.concatenate(self._map(Simulation.action_mask))

    def expected_rewards(self, actions: np.ndarray | None = None) -> np.ndarray:
        if actions is not None and np.shape(actions)[0] != 1:
            return np.concatenate(self._map(Simulation.expected_rewards, self._split(np.asarray(actions))))
        return np.concatenate(self._map(lambda s: s.expected_rewards(actions)))

    def step(self, actions: np.ndarray, active: np.ndarray | None = None) -> StepResult:
        actions = self.space.check(actions)
        if actions.shape != (self.n,):
            raise ValueError(f"action: expected shape ({self.n},), got {actions.shape}")
        parts = self._map(Simulation.step, self._split(actions), self._split(active))
        out = response.Outcome(
            **{f: np.concatenate([getattr(p.outcome, f) for p in parts]) for f in vars(parts[0].outcome)}
        )
        cat = {
            f: np.concatenate([getattr(p, f) for p in parts])
            for f in ("reward", "attributed", "replaced", "churned", "blocked")
        }
        times = dynamics.EventTimes(
            **{f.name: np.concatenate([getattr(p.times, f.name) for p in parts]) for f in fields(dynamics.EventTimes)}
        )
        return StepResult(outcome=out, times=times, **cat)

    def reset_rows(self, rows: np.ndarray, base: np.ndarray | None = None) -> None:
        for k, (a, b) in enumerate(zip(self.bounds[:-1], self.bounds[1:], strict=True)):
            sel = (rows >= a) & (rows < b)
            if sel.any():
                self.shards[k].reset_rows(rows[sel] - a, None if base is None else base[sel])
