"""A simulated online A/B test on ``nba/Journey-v0``, with its true effect known.

:func:`run_experiment` takes a population of ``n`` customers (one
:class:`~envs.simulation.Simulation` row each of the (seed, purpose) family, customer id
``"{purpose}/s{seed}/c{row}"``), optionally runs everyone for ``pre_days`` under the control arm's
policy (the pre-period whose reward is the CUPED covariate), assigns each customer to an arm with
:func:`nba.ab.assign` (hashing the experiment's name with the customer id, as the service does), and
steps all of them together for ``days`` days, each customer acting under its arm's policy. It
records every customer's value of every metric (reward, revenue, cost, messages sent, conversions,
opt-outs, churn) on every day, so each metric has daily looks: the primary metric's always-valid
test and the guardrails' (:func:`nba.ab.noninferiority_sequential`) read the same days.

The true effects come from common random numbers: with ``truth=True`` the same population (same
seed) is run again entirely under each arm's policy. Every row of the simulation draws its own
stream whatever the action, and each policy's sampling uniform of a row on a day is the same in
every run (one generator per day, one uniform per row, used by whichever policy acts), so a
customer's trajectory in the experiment is exactly its trajectory in the run of its arm's policy.
The mean over all ``n`` customers of the paired difference is the experiment's estimand (the
finite-population average treatment effect), known exactly — for every metric, so each guardrail's
true worsening is known too (:meth:`SimulatedAB.true_worsening`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from envs.random import purpose_code
from envs.scenario import Scenario
from envs.simulation import Simulation
from nba import ab
from nba.policies import Decisions, Policy
from nba.policies.base import distribution, sample

if TYPE_CHECKING:
    from nba.log import DecisionLog

POLICY_SALT = 0xAB5EED  # the per-day policy uniforms are seeded apart from the environment's streams
METRICS: tuple[str, ...] = ("reward", "revenue", "cost", "sent", "converted", "opted_out", "churned")


def customer_ids(seed: int, n: int, purpose: str) -> np.ndarray:
    """(n,) object ids of a simulation's rows: row ``i`` is customer ``"{purpose}/s{seed}/c{i}"`` (its stream)."""
    return np.array([f"{purpose}/s{seed}/c{i}" for i in range(n)], dtype=object)


@dataclass(frozen=True)
class SimulatedAB:
    """What a simulated A/B test produced, per customer, plus its ground truth."""

    experiment: str
    control: str
    arms: tuple[str, ...]  # every arm, sorted
    customer_id: np.ndarray  # (n,) object
    arm: np.ndarray  # (n,) object: the customer's assigned arm
    daily_reward: np.ndarray  # (n, days) reward of each experiment day (0 once churned)
    pre_reward: np.ndarray  # (n,) total reward over the pre-period (zeros without one)
    metrics: dict[str, np.ndarray]  # metric -> (n,) total over the experiment days, see METRICS
    true_daily: dict[str, np.ndarray] | None  # arm -> (days,) mean cumulative reward, everyone under it
    potential_reward: dict[str, np.ndarray] | None  # arm -> (n,) each customer's total under that arm
    seed: int
    pre_days: int
    start_h: float  # hours: the first decision of the experiment (the first daily look starts here)
    daily_metrics: dict[str, np.ndarray] | None = None  # metric -> (n, days) value of each experiment day
    potential_metrics: dict[str, dict[str, np.ndarray]] | None = None  # arm -> metric -> (n,) total under it

    @property
    def days(self) -> int:
        return self.daily_reward.shape[1]

    @property
    def n(self) -> int:
        return len(self.customer_id)

    @property
    def reward(self) -> np.ndarray:
        """(n,) total reward of each customer over the experiment."""
        return self.metrics["reward"]

    def true_effect(self, treatment: str, day: int | None = None) -> float:
        """True mean difference per customer (treatment − control) of the cumulative reward to ``day``.

        ``day`` counts from 0; default: the whole experiment.
        """
        if self.true_daily is None:
            raise ValueError("truth: the experiment was run with truth=False")
        if treatment not in self.true_daily:
            raise ValueError(f"treatment: unknown arm {treatment!r}; arms: {list(self.arms)}")
        k = self.days - 1 if day is None else day
        return float(self.true_daily[treatment][k] - self.true_daily[self.control][k])

    def true_effects(self, treatment: str) -> np.ndarray:
        """(days,) true effect on the cumulative reward at each daily look."""
        return np.array([self.true_effect(treatment, k) for k in range(self.days)])

    def looks(self, metric: str = "reward") -> ab.Looks:
        """Daily looks: every customer enrolled on day 0, the cumulative ``metric`` at the end of each day."""
        if metric == "reward":
            return ab.looks_from_daily(self.daily_reward, self.arm, arms=self.arms)
        if self.daily_metrics is None or metric not in self.daily_metrics:
            raise ValueError(f"metric: {metric!r} has no daily values; valid: {', '.join(METRICS)}")
        return ab.looks_from_daily(self.daily_metrics[metric], self.arm, arms=self.arms)

    def true_worsening(self, treatment: str, guardrail: ab.Guardrail) -> float:
        """The guardrail's exact worsening over the experiment (:func:`nba.ab.worsening` of the means of
        every customer under the treatment and under the control: common random numbers)."""
        if self.potential_metrics is None:
            raise ValueError("truth: the experiment was run with truth=False")
        if treatment not in self.potential_metrics:
            raise ValueError(f"treatment: unknown arm {treatment!r}; arms: {list(self.arms)}")
        if guardrail.metric not in self.potential_metrics[treatment]:
            raise ValueError(
                f"guardrail {guardrail.name!r}: metric: {guardrail.metric!r} is not measured; "
                f"valid: {', '.join(METRICS)}"
            )
        mt = self.potential_metrics[treatment][guardrail.metric].mean()
        mc = self.potential_metrics[self.control][guardrail.metric].mean()
        return float(ab.worsening(guardrail, mt, 0.0, mc, 0.0)[0])

    def guardrails(
        self, treatment: str, guardrails: tuple[ab.Guardrail, ...] = ab.DEFAULT_GUARDRAILS, *, alpha: float = 0.05
    ) -> tuple[ab.GuardrailTest, ...]:
        """Each guardrail's always-valid non-inferiority test over the daily looks of its metric."""
        checked = ab.check_guardrails(guardrails, METRICS)
        return tuple(
            ab.noninferiority_sequential(self.looks(g.metric), treatment, self.control, g, alpha=alpha) for g in checked
        )

    def analyse(
        self,
        treatment: str,
        *,
        tau: float | None = None,
        alpha: float = 0.05,
        level: float = 0.95,
        cuped: bool | None = None,
    ) -> ab.Analysis:
        """:func:`nba.ab.analyse` of the total reward: Welch, CUPED (with a pre-period), mSPRT (with ``tau``)."""
        cuped = self.pre_days > 0 if cuped is None else cuped
        return ab.analyse(
            self.reward,
            self.arm,
            treatment,
            self.control,
            covariate=self.pre_reward if cuped else None,
            looks=self.looks() if tau is not None else None,
            tau=tau,
            alpha=alpha,
            level=level,
        )


def _check(
    arms: Mapping[str, Policy], splits: Mapping[str, float] | None, control: str, n: int, days: int, pre_days: int
) -> dict[str, float]:
    if not arms:
        raise ValueError("arms: expected at least one arm name -> policy")
    splits = {a: 1.0 for a in arms} if splits is None else dict(splits)
    names, _ = ab.check_splits(splits)
    if set(names) != set(arms):
        raise ValueError(f"splits: arms {sorted(names)} differ from the policies' arms {sorted(arms)}")
    if control not in arms:
        raise ValueError(f"control: {control!r} is not an arm; arms: {sorted(arms)}")
    for name, value in (("n", n), ("days", days)):
        if not isinstance(value, int | np.integer) or value <= 0:
            raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    if not isinstance(pre_days, int | np.integer) or pre_days < 0:
        raise ValueError(f"pre_days: expected a non-negative integer, got {pre_days!r}")
    return splits


class _Run:
    """One pass over the population: ``pre_days`` under the control policy, then ``days`` by arm."""

    def __init__(
        self,
        scenario: Scenario,
        seed: int,
        n: int,
        purpose: str,
        log: DecisionLog | None = None,
        ids: np.ndarray | None = None,
        experiment: str = "",
        arm_names: tuple[str, ...] = (),
    ) -> None:
        self.sim = Simulation(scenario, seed, n, purpose=purpose, decision_hour=scenario.journey_decision_hour)
        self.purpose, self.purpose_code = purpose, purpose_code(purpose)
        self.alive = np.ones(n, bool)
        self.seed = seed
        self.day = 0
        self.log, self.ids, self.experiment, self.arm_names = log, ids, experiment, arm_names
        self.actions: list[np.ndarray] = []  # every step's actions, the pre-period's included

    def step(
        self,
        policies: list[Policy],
        arm_index: np.ndarray,
        in_experiment: bool = True,
        replay: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One day. ``replay = (actions, rows)``: the rows of the (n,) mask ``rows`` take the given
        actions instead of asking their policy (a counterfactual run reusing the main run's choices)."""
        sim = self.sim
        X, mask = sim.observe(), sim.action_mask()
        before = self._before(X, mask)
        u = np.random.default_rng([int(self.seed) % 2**64, POLICY_SALT, self.purpose_code, self.day]).random(sim.n)
        actions = np.zeros(sim.n, np.int64)
        probs = np.zeros(mask.shape)
        probs[:, 0] = 1.0
        asks = self.alive.copy()
        if replay is not None:
            actions[replay[1]] = replay[0][replay[1]]
            asks &= ~replay[1]
        for k, policy in enumerate(policies):
            rows = np.flatnonzero((arm_index == k) & asks)
            if rows.size:
                probs[rows] = distribution(policy, X[rows], mask[rows])
                actions[rows] = sample(probs[rows], u[rows])
        res = sim.step(actions)
        self.actions.append(actions)
        if self.log is not None:
            self._write(
                before,
                Decisions(actions, probs[np.arange(sim.n), actions], probs),
                res,
                policies,
                arm_index,
                in_experiment,
            )
        live = self.alive.copy()
        out = res.outcome
        metrics = {
            "reward": res.reward,
            "revenue": out.revenue,
            "cost": out.cost,
            "sent": out.sent,
            "converted": out.converted,
            "opted_out": out.opted_out,
            "churned": res.churned,
        }
        metrics = {k: np.where(live, np.asarray(v, np.float64), 0.0) for k, v in metrics.items()}  # METRICS' order
        self.alive &= ~res.churned
        self.day += 1
        return metrics["reward"], metrics

    def _before(self, X: np.ndarray, mask: np.ndarray):
        if self.log is None:
            return None
        from envs.log_writer import PreStep

        sim = self.sim
        return PreStep(
            customer_id=self.ids,
            now=sim.state.now.astype(np.float64, copy=True),
            tz_offset=sim.traits.tz_offset.astype(np.float64, copy=True),
            context=np.asarray(X, np.float32),
            eligible=np.array(mask, bool),
        )

    def _write(
        self, before, decisions: Decisions, res, policies: list[Policy], arm_index: np.ndarray, in_experiment: bool
    ) -> None:
        from envs.log_writer import step_records

        assert self.log is not None and self.ids is not None
        run = f"{self.experiment}/{self.purpose}/s{self.seed}:{self.day}:"
        ids = np.array([f"{run}{i}" for i in range(self.sim.n)], dtype=object)
        for k, policy in enumerate(policies):
            rows = np.flatnonzero((arm_index == k) & self.alive)
            if rows.size == 0:
                continue
            dec, outs = step_records(
                self.sim,
                before,
                decisions,
                res,
                decision_ids=ids,
                policy=policy.name,
                experiment=self.experiment if in_experiment else "",
                arm=self.arm_names[k] if in_experiment else "",
                rows=rows,
            )
            self.log.log_decisions(dec)
            self.log.log_outcomes(outs)


def _simulate(
    scenario: Scenario,
    seed: int,
    purpose: str,
    n: int,
    policies: list[Policy],
    arm_index: np.ndarray,
    control: int,
    days: int,
    pre_days: int,
    progress: Callable[[int], None] | None,
    run: _Run | None = None,
    replay: tuple[list[np.ndarray], np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray], float, _Run]:
    """(metric -> (n, days) daily values, (n,) pre-period reward, metric -> (n,) totals, start hour, run).

    ``replay = (actions of each step, rows)``: those rows take an earlier run's actions (see ``_Run.step``)."""
    run = _Run(scenario, seed, n, purpose) if run is None else run
    pre = np.zeros(n)
    everyone_control = np.full(n, control)

    def again(step: int) -> tuple[np.ndarray, np.ndarray] | None:
        return None if replay is None else (replay[0][step], replay[1])

    for d in range(pre_days):  # everyone under the control: every row's pre-period is the earlier run's
        everyone = None if replay is None else (replay[0][d], np.ones(n, bool))
        pre += run.step(policies, everyone_control, in_experiment=False, replay=everyone)[0]
    start = float(run.sim.state.now.min())
    daily = {m: np.zeros((n, days)) for m in METRICS}
    for d in range(days):
        _, metrics = run.step(policies, arm_index, replay=again(pre_days + d))
        for m in METRICS:
            daily[m][:, d] = metrics[m]
        if progress is not None:
            progress(d)
    totals = {m: daily[m].sum(axis=1) for m in METRICS}  # summed alike in every run: bit-identical
    return daily, pre, totals, start, run


def run_experiment(
    scenario: Scenario,
    arms: Mapping[str, Policy],
    *,
    n: int = 5000,
    days: int = 14,
    seed: int = 0,
    purpose: str,
    experiment: str = "ab",
    control: str = "champion",
    splits: Mapping[str, float] | None = None,
    pre_days: int = 0,
    truth: bool = True,
    log: DecisionLog | None = None,
    progress: Callable[[int], None] | None = None,
    replay: bool = True,
) -> SimulatedAB:
    """Simulate an A/B test of ``arms`` (arm name → policy) on ``n`` customers for ``days`` days.

    Args:
        scenario: the simulated population.
        arms: the policies under test, e.g. ``{"champion": bau, "challenger": new}``; not updated.
        n: customers (rows ``0 .. n - 1`` of the (seed, purpose) family).
        days: experiment days (one journey decision a day per customer).
        seed: the population's seed (and the policies' sampling uniforms).
        purpose: what the customers are for (e.g. ``"ab"``): with ``seed``, the key of their streams.
        experiment: the experiment's name, hashed with each customer id to assign its arm.
        control: the arm the others are compared with; its policy also runs the pre-period.
        splits: arm → weight (default: equal).
        pre_days: days everyone spends under the control policy before the experiment starts.
        truth: also run every arm's policy on everyone (common random numbers) for the true effects.
        log: write every decision and outcome of the main run (pre-period included, with experiment
            and arm ``""``) to this decision log (:mod:`envs.log_writer`); read the rewards back
            with ``envs.log_writer.reward_rule(penalties=False)``. Decision ids are
            ``"{experiment}/{purpose}/s{seed}:{day}:{row}"`` (days count from the pre-period), so a rerun adds nothing.
        progress: called with each experiment day of the main run.
        replay: in the truth runs, the customers of the arm whose policy is run take the actions they
            took in the main run instead of asking the policy again (the same actions by common random
            numbers, so the same results; it saves a third of the policies' work with two arms).
            ``False`` asks every policy again (what the tests compare against).
    """
    splits = _check(arms, splits, control, n, days, pre_days)
    names = tuple(sorted(arms))
    policies = [arms[a] for a in names]
    ids = customer_ids(seed, n, purpose)
    arm = ab.assign(experiment, ids, splits)
    arm_index = np.searchsorted(np.asarray(names, dtype=object), arm)
    c = names.index(control)
    run = None
    if log is not None:
        from envs.log_writer import scenario_layout

        log.set_layout(scenario_layout(scenario))
        run = _Run(scenario, seed, n, purpose, log, ids, experiment, names)
    daily, pre, totals, start, main = _simulate(
        scenario, seed, purpose, n, policies, arm_index, c, days, pre_days, progress, run
    )
    true_daily = potential = potential_metrics = None
    if truth:
        true_daily, potential, potential_metrics = {}, {}, {}
        for k, a in enumerate(names):
            again = (main.actions, arm_index == k) if replay else None
            d, _, tot, _, _ = _simulate(
                scenario, seed, purpose, n, policies, np.full(n, k), c, days, pre_days, None, replay=again
            )
            true_daily[a] = np.cumsum(d["reward"], axis=1).mean(axis=0)
            potential[a] = tot["reward"]
            potential_metrics[a] = tot
    return SimulatedAB(
        experiment=experiment,
        control=control,
        arms=names,
        customer_id=ids,
        arm=arm,
        daily_reward=daily["reward"],
        pre_reward=pre,
        metrics=totals,
        true_daily=true_daily,
        potential_reward=potential,
        seed=seed,
        pre_days=pre_days,
        start_h=start,
        daily_metrics=daily,
        potential_metrics=potential_metrics,
    )
