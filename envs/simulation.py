"""The engine under both gymnasium views: N customers stepped at once, one random stream each.

A :class:`Simulation` owns traits, state, history and a counter-based stream per row. Every step
draws the same number of uniforms for every row, whatever the action, so

* row ``i`` of a simulation keyed with seeds ``s, s+1, ...`` follows exactly the trajectory of a
  one-row simulation seeded ``s + i`` (scalar and vector environments agree), and
* two policies run on the same seed see the same customers and the same luck (common random
  numbers), which makes Monte Carlo comparisons of policies tight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs import dynamics, population, response
from envs.random import Streams
from envs.scenario import Scenario
from nba.features import Profile, build_features

STEP_WIDTH = response.RESPONSE_WIDTH + dynamics.ADVANCE_WIDTH + 2
CHUNK = 65_536  # rows sampled at a time when a simulation starts


@dataclass
class StepResult:
    reward: np.ndarray  # (N,) realised reward
    outcome: response.Outcome
    replaced: np.ndarray  # (N,) bool: the row now holds a new customer (bandit view)
    churned: np.ndarray  # (N,) bool: the customer left during this step


class Simulation:
    """N simulated customers.

    Args:
        scenario: the population's parameters.
        seed: row ``i`` uses the stream of seed ``seed + i``.
        n: number of rows (customers at a time).
        decision_hour: local hour of every decision (journey view); ``None`` draws a random moment
            of the day for each decision (bandit view).
        replace_rate: probability that a row's customer is replaced by a new one after a decision
            (bandit view: a stream of customers); churned customers are then replaced too.
        penalties: charge opt-outs and churn at their penalty in the reward (bandit view).
    """

    def __init__(self, scenario: Scenario, seed: int, n: int, *, decision_hour: int | None,
                 replace_rate: float = 0.0, penalties: bool = False) -> None:
        self.scenario = scenario
        self.arrays = scenario.arrays()
        self.space = scenario.action_space
        self.spec = scenario.feature_spec
        self.n = n
        self.decision_hour = decision_hour
        self.replace_rate = replace_rate
        self.penalties = penalties
        self.streams = Streams.from_seed(seed, n)
        self._reset_width = population.population_width(scenario) + 1
        # allocate from a one-row template, then draw customers in chunks to bound peak memory
        template = population.sample_population(scenario, self.arrays, np.full((1, self._reset_width - 1), 0.5),
                                                np.zeros(1))
        self.traits, self.state, self.history = (population.empty_like_rows(x, n) for x in template)
        for start in range(0, n, CHUNK):
            self.reset_rows(np.arange(start, min(n, start + CHUNK)))
        self._moment: response.Moment | None = None

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
        self._fix_start(rows, u[:, -1], base)
        self._moment = None

    # ------------------------------------------------------------------ views
    @property
    def moment(self) -> response.Moment:
        if self._moment is None:
            self._moment = response.moment(self.scenario, self.arrays, self.traits, self.state, self.history)
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
        """(N, A) bool: no contact, and every action on a channel the customer can be reached on."""
        reach = self.moment.reachable
        per_channel = self.space.n_contents * self.space.n_slots  # actions are channel-major
        mask = np.empty((self.n, self.space.n_actions), bool)
        mask[:, 0] = True
        mask[:, 1:].reshape(self.n, reach.shape[1], per_channel)[:] = reach[:, :, None]
        return mask

    def expected_rewards(self, actions: np.ndarray | None = None) -> np.ndarray:
        """Exact expected reward of ``actions`` (N, A') — by default every action, (N, n_actions)."""
        if actions is None:
            actions = np.arange(self.space.n_actions)[None, :]
        return response.expected_reward(self.scenario, self.arrays, self.space, self.traits, self.moment,
                                         np.asarray(actions), penalties=self.penalties)

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
        if active is None:
            u = self.streams.uniform(STEP_WIDTH)
        else:
            u = np.full((self.n, STEP_WIDTH), 0.5)
            u[active] = self.streams.uniform(STEP_WIDTH, np.flatnonzero(active))
        t = response.contact_terms(sc, sa, space, self.traits, m, actions[:, None])
        out = response.sample_outcome(sc, sa, space, m, actions, t, u[:, : response.RESPONSE_WIDTH])
        reward = out.revenue - out.cost - (out.penalty if self.penalties else 0.0)
        dynamics.apply_outcome(sc, space, self.traits, self.state, self.history, m, actions, t, out)
        j = response.RESPONSE_WIDTH
        if self.decision_hour is None:
            dt = sc.decision_window_h + 24.0 * u[:, j + dynamics.ADVANCE_WIDTH]
        else:
            dt = np.full(self.n, 24.0)
        left = dynamics.advance(sc, sa, self.traits, self.state, self.history, m, dt,
                                u[:, j : j + dynamics.ADVANCE_WIDTH])
        churned = out.churned | left
        self._moment = None
        replaced = np.zeros(self.n, bool)
        if self.replace_rate > 0:
            replaced = self.state.churned | (u[:, -1] < self.replace_rate)
            rows = np.flatnonzero(replaced)
            self.reset_rows(rows, base=self.state.now[rows])
        return StepResult(reward=reward, outcome=out, replaced=replaced, churned=churned)
