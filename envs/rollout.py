"""Policies run in the simulator: journey rollouts and Monte Carlo values with common random numbers.

Policies act through :func:`nba.policies.act` with their own generator. Because every row of a
:class:`envs.simulation.Simulation` draws the same uniforms whatever the action, two policies
evaluated with the same seed meet the same customers with the same luck: the difference of their
values has far less variance than two independent runs would (common random numbers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy import stats

from envs.random import purpose_code
from envs.scenario import Scenario
from envs.simulation import Simulation, StepResult
from nba.eligibility import send_time
from nba.features import hour_of_day
from nba.log.records import FunnelEvents
from nba.policies import Policy, act
from nba.policies.base import masked_argmax

POLICY_SALT = 0x5EED  # the policy's generator is seeded apart from the environment's streams


@dataclass(frozen=True)
class JourneyStep:
    day: int
    actions: np.ndarray  # (N,) what the policy chose (no contact for customers already gone)
    result: StepResult
    alive: np.ndarray  # (N,) bool: the customer was still there for this step
    reward: np.ndarray  # (N,) realised reward, 0 for customers already gone


def journeys(sim: Simulation, policy: Policy, days: int, rng: np.random.Generator) -> Iterator[JourneyStep]:
    """Step every customer of ``sim`` for ``days`` days under ``policy``; churn ends a customer."""
    alive = np.ones(sim.n, bool)
    for day in range(days):
        actions = np.where(alive, sim.decide(policy, rng).action, 0)
        res = sim.step(actions)
        yield JourneyStep(day, actions, res, alive.copy(), np.where(alive, res.reward, 0.0))
        alive &= ~res.churned


@dataclass(frozen=True)
class ValueEstimate:
    """Mean return per customer with a t-interval over customers."""

    mean: float
    ci_low: float
    ci_high: float
    n: int
    level: float = 0.95

    @classmethod
    def of(cls, values: np.ndarray, level: float = 0.95) -> ValueEstimate:
        values = np.asarray(values, np.float64)
        n = values.size
        mean = float(values.mean())
        half = float(stats.t.ppf(0.5 + level / 2, n - 1) * values.std(ddof=1) / np.sqrt(n)) if n > 1 else np.inf
        return cls(mean, mean - half, mean + half, n, level)


def policy_rng(seed: int, purpose: str) -> np.random.Generator:
    """The policy's uniforms of a run on (seed, purpose), apart from the customers' streams."""
    return np.random.default_rng([int(seed) % 2**64, POLICY_SALT, purpose_code(purpose)])


def journey_returns(
    scenario: Scenario,
    policy: Policy,
    n: int,
    seed: int,
    days: int | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    purpose: str,
) -> np.ndarray:
    """(n,) undiscounted return of each customer over ``days`` (default: the scenario's horizon),
    on the customers of ``(seed, purpose)``."""
    sim = Simulation(scenario, seed, n, purpose=purpose, decision_hour=scenario.journey_decision_hour)
    total = np.zeros(n)
    for step in journeys(sim, policy, days or scenario.horizon_days, policy_rng(seed, purpose)):
        total += step.reward
        if progress is not None:
            progress(step.day)
    return total


def journey_value(
    scenario: Scenario, policy: Policy, n: int = 10_000, seed: int = 0, days: int | None = None, *, purpose: str
) -> ValueEstimate:
    """Monte Carlo value (mean return per customer) of ``policy`` on ``nba/Journey-v0``."""
    return ValueEstimate.of(journey_returns(scenario, policy, n, seed, days, purpose=purpose))


def compare_policies(
    scenario: Scenario, a: Policy, b: Policy, n: int = 10_000, seed: int = 0, days: int | None = None, *, purpose: str
) -> ValueEstimate:
    """Value of ``a`` minus value of ``b`` per customer, paired by common random numbers."""
    return ValueEstimate.of(
        journey_returns(scenario, a, n, seed, days, purpose=purpose)
        - journey_returns(scenario, b, n, seed, days, purpose=purpose)
    )


def bandit_simulation(scenario: Scenario, seed: int, n: int, purpose: str) -> Simulation:
    """``n`` rows of the bandit view's stream of customers (as ``nba/Bandit-v0``: a random moment of
    the day, a new customer after a decision with probability 1/30, penalties charged). The one
    setup of :func:`bandit_run`, :func:`bandit_truth` and :func:`envs.log_writer.log_bandit_run`,
    so that a replay meets exactly the contexts a run logged."""
    return Simulation(scenario, seed, n, purpose=purpose, decision_hour=None, replace_rate=1 / 30, penalties=True)


@dataclass(frozen=True)
class BanditRun:
    """A policy learning online on ``nba/Bandit-v0``, scored against exact expected rewards."""

    rewards: np.ndarray  # (T,) realised
    expected: np.ndarray  # (T,) exact expected reward of the chosen action
    greedy: np.ndarray  # (T,) exact expected reward of the action the policy gave the most probability
    oracle: np.ndarray  # (T,) best eligible expected reward
    no_contact: np.ndarray  # (T,) expected reward of no contact
    actions: np.ndarray  # (T,) chosen action (after the contact policy: a blocked one is 0)
    segment: np.ndarray  # (T,) the customer's segment index
    send_hour: np.ndarray  # (T,) local hour at which the chosen action sends (float)
    seconds: float  # time spent in the policy (act + update)

    def _normalised(self, values: np.ndarray) -> float:
        """(mean(values) - V_no_contact) / (V_oracle - V_no_contact) over the run."""
        base = self.no_contact.mean()
        return float((values.mean() - base) / (self.oracle.mean() - base))

    @property
    def normalised_score(self) -> float:
        """(V - V_no_contact) / (V_oracle - V_no_contact), on exact expectations."""
        return self._normalised(self.expected)

    @property
    def greedy_score(self) -> float:
        """Normalised score the policy's most probable action would have earned on the same contexts: what
        its model knows, without what exploring cost (the contexts still follow the actions taken)."""
        return self._normalised(self.greedy)

    def score_curve(self, parts: int = 10) -> np.ndarray:
        """(parts,) normalised score of each of ``parts`` consecutive slices of the run, of
        ``len // parts`` decisions or one more: how far the learner has come, where the overall score
        also counts what it spent learning."""
        n = len(self.expected)
        if not 1 <= parts <= n:
            raise ValueError(f"parts: must be between 1 and the number of decisions ({n:,}), got {parts!r}")
        edges = (np.arange(parts + 1) * n) // parts
        expected, oracle, no_contact = (
            np.add.reduceat(a, edges[:-1]) for a in (self.expected, self.oracle, self.no_contact)
        )
        return (expected - no_contact) / (oracle - no_contact)

    @property
    def decisions_per_s(self) -> float:
        return len(self.rewards) / self.seconds


LEARN_FROM = ("attributed", "total")


def learning_rewards(res: StepResult, learn_from: str) -> np.ndarray:
    """The rewards of a step a learner is fed: ``"attributed"`` or ``"total"`` (see :func:`bandit_run`)."""
    return res.attributed if learn_from == "attributed" else res.reward


def funnel_events(res: StepResult) -> FunnelEvents:
    """A step's funnel events as a decision log's feedback reports them: opened (seen), clicked,
    converted, and the conversion's revenue."""
    o = res.outcome
    return FunnelEvents(
        opened=o.seen.copy(),
        clicked=o.clicked.copy(),
        converted=o.converted.copy(),
        value=np.where(o.converted, o.revenue, 0.0),
    )


def learn(
    policy: Policy, X: np.ndarray, actions: np.ndarray, res: StepResult, propensities: np.ndarray, learn_from: str
) -> None:
    """``policy.update`` on a step, with its funnel events for the learners that take them."""
    extra = {"events": funnel_events(res)} if getattr(policy, "learns_from_events", False) else {}
    policy.update(X, actions, learning_rewards(res, learn_from), propensities, **extra)


def bandit_run(
    scenario: Scenario,
    policy: Policy,
    decisions: int,
    batch: int = 1000,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    learn_from: str = "total",
    *,
    purpose: str,
) -> BanditRun:
    """Act on ``batch`` contexts at a time, learn from their rewards, until ``decisions`` are made.

    ``learn_from`` picks the reward the policy learns from: ``"total"`` (revenue less cost and
    penalties) or ``"attributed"`` (only the revenue of the message's own conversions, less cost and
    penalties: no organic purchases, whose noise drowns a message's effect). Scores are always on
    the total expected reward.
    """
    import time

    if learn_from not in LEARN_FROM:
        raise ValueError(f"learn_from: expected one of {LEARN_FROM}, got {learn_from!r}")
    sim = bandit_simulation(scenario, seed, batch, purpose)
    rng = policy_rng(seed, purpose)
    out = {k: [] for k in ("rewards", "expected", "greedy", "oracle", "no_contact", "actions", "segment", "send_hour")}
    space = sim.space
    spent = 0.0
    for step in range(-(-decisions // batch)):
        X, mask = sim.observe(), sim.action_mask()
        er = sim.expected_rewards()
        t0 = time.perf_counter()
        d = act(policy, X, mask, rng)
        spent += time.perf_counter() - t0
        tz = sim.traits.tz_offset.astype(np.float64)
        sends = send_time(space, sim.state.now, tz)
        rows = np.arange(batch)
        out["send_hour"].append(hour_of_day(sends[rows, np.maximum(space.slot_of[d.actions], 0)] + tz))
        out["segment"].append(sim.traits.segment.copy())
        res = sim.step(d.actions)
        out["actions"].append(np.where(res.blocked, 0, d.actions))
        t0 = time.perf_counter()
        learn(policy, X, d.actions, res, d.propensities, learn_from)
        spent += time.perf_counter() - t0
        out["rewards"].append(res.reward)
        out["expected"].append(er[rows, d.actions])
        out["greedy"].append(er[rows, masked_argmax(d.probabilities, mask)])
        out["oracle"].append(np.where(mask, er, -np.inf).max(axis=1))
        out["no_contact"].append(er[:, 0])
        if progress is not None:
            progress(step)
    cat = {k: np.concatenate(v)[:decisions] for k, v in out.items()}
    return BanditRun(**cat, seconds=spent)


def bandit_truth(
    scenario: Scenario,
    logging: Policy,
    targets: dict[str, Policy],
    decisions: int,
    batch: int = 1000,
    seed: int = 0,
    *,
    purpose: str,
) -> dict[str, float]:
    """Exact value of each target policy on the contexts a logging run met: the mean over logged
    decisions of ``sum_a target(a | x) * E[r | x, a]``.

    It replays the logging run of :func:`bandit_run` (same seed, same batch, a logging policy that
    does not learn, same purpose), so the contexts are exactly those of a decision log written from that run; this
    is the estimand of off-policy estimators on that log. ``logging`` itself is included as
    ``"logging"``.
    """
    sim = bandit_simulation(scenario, seed, batch, purpose)
    rng = policy_rng(seed, purpose)
    totals = dict.fromkeys([*targets, "logging"], 0.0)
    done = 0
    for _ in range(-(-decisions // batch)):
        decided = sim.decide(logging, rng)
        X, mask, d = decided.context, decided.eligible, decided.decisions
        er = sim.expected_rewards()
        take = min(batch, decisions - done)
        totals["logging"] += float((d.probabilities * er)[:take].sum())
        for name, policy in targets.items():
            totals[name] += float((policy.probabilities(X, mask) * er)[:take].sum())
        sim.step(d.actions)
        done += take
    return {k: v / decisions for k, v in totals.items()}


@dataclass(frozen=True)
class Transitions:
    """Logged journey transitions of customers still present (one row per customer-day)."""

    X: np.ndarray  # (T, d) float32
    actions: np.ndarray  # (T,)
    propensities: np.ndarray  # (T,)
    rewards: np.ndarray  # (T,)
    attributed: np.ndarray  # (T,) the message's own conversions' revenue less its charges
    mask: np.ndarray  # (T, A)
    X_next: np.ndarray  # (T, d)
    mask_next: np.ndarray  # (T, A)
    terminated: np.ndarray  # (T,) the customer churned: no future
    truncated: np.ndarray  # (T,) the log ends here: the future is unknown, not zero
    customer: np.ndarray  # (T,) row of the customer in the simulation
    day: np.ndarray  # (T,)


def collect_transitions(
    scenario: Scenario,
    policy: Policy,
    n: int,
    seed: int,
    days: int | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    purpose: str,
) -> Transitions:
    """Run ``policy`` on ``n`` customers of ``(seed, purpose)`` on the journey view and log every transition."""
    days = days or scenario.horizon_days
    sim = Simulation(scenario, seed, n, purpose=purpose, decision_hour=scenario.journey_decision_hour)
    rng = policy_rng(seed, purpose)
    alive = np.ones(n, bool)
    cols: dict[str, list[np.ndarray]] = {f: [] for f in Transitions.__dataclass_fields__}
    decided = sim.decide(policy, rng)
    for day in range(days):
        X, mask, d = decided.context, decided.eligible, decided.decisions
        res = sim.step(np.where(alive, d.actions, 0))
        decided = sim.decide(policy, rng)  # the next day's decision (the last one only shows the next state)
        X_next, mask_next = decided.context, decided.eligible
        rows = np.flatnonzero(alive)
        term = res.churned[rows]
        batch = {
            "X": X[rows],
            "actions": d.actions[rows],
            "propensities": d.propensities[rows],
            "rewards": res.reward[rows],
            "attributed": res.attributed[rows],
            "mask": mask[rows],
            "X_next": X_next[rows],
            "mask_next": mask_next[rows],
            "terminated": term,
            "truncated": ~term & (day == days - 1),
            "customer": rows,
            "day": np.full(rows.size, day),
        }
        for k, v in batch.items():
            cols[k].append(v)
        alive &= ~res.churned
        if progress is not None:
            progress(day)
    return Transitions(**{k: np.concatenate(v) for k, v in cols.items()})
