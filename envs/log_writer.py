"""The simulator writes the decision log: every step of a policy in a :class:`Simulation` becomes
decisions and outcome events in a :class:`nba.log.DecisionLog`, exactly as the service will log them.

One simulated step of row ``i`` (customer ``c``, deciding at ``now``, action ``a`` sent at ``send_at``)
becomes one decision and the events its outcome realised::

    delivered   at send_at                                   value 0
    opened      at send_at + seen delay         (seen)       value 0
    clicked     at the open                                  value 0
    converted   at the open if the message caused it, else at send_at (any purchase, organic too)
                                                             value = revenue
    opted_out   at the open                                  value = -opt-out penalty of the channel
    churned     at the open (churn after the message)        value = -churn penalty

every time the one the simulation itself uses (:class:`envs.dynamics.EventTimes`, ``StepResult.times``):
its history holds a send, an open or a purchase from that moment on, as the decision service rebuilds
it from this log.

so the reward read back with :func:`reward_rule` (converted + opted_out + churned, minus the cost,
with an unbounded window: the simulator credits a step with everything it realised, however long
the sampled delay) equals the simulator's realised reward ``revenue - cost - penalty`` up to float
rounding. A no-contact decision may still carry an organic ``converted`` event: that is what makes
uplift visible in the log.

:func:`step_records` is the reusable piece (bandit view, journey view with ``decision_hour``, A/B
arms); :func:`log_bandit_run` is the bandit loop of :func:`envs.rollout.bandit_run` with logging.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.rollout import bandit_simulation, policy_rng
from envs.scenario import Scenario
from envs.simulation import Simulation, StepResult
from nba.log import DecisionLog, DecisionRecords, LogLayout, OutcomeRecords, RewardRule
from nba.policies import Decisions, Policy


def reward_rule(penalties: bool = True) -> RewardRule:
    """The rule under which the log's rewards equal the simulator's realised rewards."""
    events = ("converted", "opted_out", "churned") if penalties else ("converted",)
    return RewardRule(window_h=math.inf, events=events, opt_out_value=0.0, default=0.0, subtract_cost=True)


def simulation_provenance(replay: Mapping[str, Any]) -> dict[str, Any]:
    """The provenance of a log the bandit view simulated (:meth:`nba.log.DecisionLog.set_provenance`):
    ``simulation``, the spec that replays it exactly (``replay``: scenario, policy, params, epsilon, holdout,
    decisions, seed, purpose, batch, as :func:`training.jobs.simulate` gives it), and ``reward_rule``,
    :func:`reward_rule` with penalties, under which its rewards are the simulator's."""
    return {"simulation": dict(replay), "reward_rule": reward_rule(penalties=True).to_dict()}


def scenario_layout(scenario: Scenario) -> LogLayout:
    """The log layout of a scenario: its feature names and action space."""
    space = scenario.action_space
    return LogLayout(
        context_dim=scenario.feature_spec.dim,
        n_actions=space.n_actions,
        feature_names=tuple(scenario.feature_spec.names),
        action_space={
            "channels": list(space.channels),
            "contents": list(space.contents),
            "send_slots": list(space.send_slots),
        },
    )


@dataclass
class CustomerIds:
    """Stable ids for the customers passing through a simulation's rows.

    Row ``r`` holds its ``g``-th customer (``g`` counts replacements) with id ``"{prefix}{r}.{g}"``;
    call :meth:`advance` with each step's ``replaced`` mask.
    """

    prefix: str
    generation: np.ndarray  # (N,) int64

    @classmethod
    def start(cls, n: int, prefix: str = "") -> CustomerIds:
        return cls(prefix, np.zeros(n, np.int64))

    def ids(self, rows: np.ndarray | None = None) -> np.ndarray:
        rows = np.arange(len(self.generation)) if rows is None else np.asarray(rows)
        return np.array(
            [f"{self.prefix}{r}.{g}" for r, g in zip(rows.tolist(), self.generation[rows].tolist(), strict=True)],
            dtype=object,
        )

    def advance(self, replaced: np.ndarray) -> None:
        self.generation += np.asarray(replaced, bool)


@dataclass(frozen=True)
class PreStep:
    """What a step's records need from before the step (the simulation changes in place)."""

    customer_id: np.ndarray  # (N,) object str
    now: np.ndarray  # (N,) float64 hours: the decision time
    tz_offset: np.ndarray  # (N,) float64
    context: np.ndarray  # (N, d) float32: what the policy saw
    eligible: np.ndarray  # (N, A) bool: the contact policy's mask

    @classmethod
    def of(
        cls,
        sim: Simulation,
        customers: CustomerIds,
        context: np.ndarray | None = None,
        eligible: np.ndarray | None = None,
    ) -> PreStep:
        """Snapshot ``sim`` before :meth:`Simulation.step` (pass the context and mask already observed)."""
        return cls(
            customer_id=customers.ids(),
            now=sim.state.now.astype(np.float64, copy=True),
            tz_offset=sim.traits.tz_offset.astype(np.float64, copy=True),
            context=np.asarray(sim.observe() if context is None else context, np.float32),
            eligible=np.array(sim.action_mask() if eligible is None else eligible, bool),
        )


def step_records(
    sim: Simulation,
    before: PreStep,
    decisions: Decisions,
    result: StepResult,
    *,
    decision_ids: np.ndarray,
    policy: str,
    version: str = "0",
    experiment: str | np.ndarray = "",
    arm: str | np.ndarray = "",
    rows: np.ndarray | None = None,
) -> tuple[DecisionRecords, OutcomeRecords]:
    """One simulated step as decisions and outcome events (see the module docstring).

    Args:
        sim: the simulation (its scenario, action space and penalties; static).
        before: :meth:`PreStep.of` taken before the step.
        decisions: what the policy decided on ``before.context`` and ``before.eligible``.
        result: what :meth:`Simulation.step` returned for those actions.
        decision_ids: (N,) unique ids, one per row (only ``rows`` are used).
        experiment, arm: a string for all rows or (N,) strings.
        rows: the rows to log (e.g. customers still present in a journey); default all.
    """
    n = len(before.now)
    rows = np.arange(n) if rows is None else np.asarray(rows)
    if rows.dtype == bool:
        rows = np.flatnonzero(rows)
    actions = np.asarray(decisions.actions, np.int64)
    if actions.shape != (n,) or np.shape(decision_ids) != (n,):
        raise ValueError(
            f"decisions: expected {n} actions and decision ids, got {actions.shape} and {np.shape(decision_ids)}"
        )
    blocked = np.flatnonzero(result.blocked[rows])
    if blocked.size:
        raise ValueError(
            f"action: row {int(rows[blocked[0]])}: blocked by the contact policy; a logged action "
            "must be eligible under the mask the simulation enforced"
        )
    space, out = sim.space, result.outcome
    a = actions[rows]
    send_at = result.times.send_at[rows]
    per_row = lambda x: np.broadcast_to(np.asarray(x, dtype=object), (n,))[rows]  # noqa: E731
    ids = np.asarray(decision_ids, dtype=object)[rows]
    dec = DecisionRecords(
        decision_id=ids,
        time=before.now[rows],
        customer_id=before.customer_id[rows],
        context=before.context[rows],
        eligible=before.eligible[rows],
        action=a,
        send_at=send_at,
        propensity=np.asarray(decisions.propensities, np.float64)[rows],
        policy=np.full(rows.size, policy, dtype=object),
        policy_version=np.full(rows.size, version, dtype=object),
        experiment=per_row(experiment),
        arm=per_row(arm),
        cost=out.cost[rows].astype(np.float64),
    )
    ch = np.maximum(space.channel_of[a], 0)
    seen_at = result.times.seen_at[rows]
    penalty_optout = sim.arrays.optout_penalty[ch]
    events = [
        ("delivered", out.delivered[rows], send_at, 0.0),
        ("opened", out.seen[rows], seen_at, 0.0),
        ("clicked", out.clicked[rows], seen_at, 0.0),
        ("converted", out.purchased[rows], result.times.bought_at[rows], out.revenue[rows]),
        ("opted_out", out.opted_out[rows], seen_at, -penalty_optout),
        ("churned", out.churned[rows], seen_at, -float(sim.scenario.churn.penalty)),
    ]
    parts = []
    for name, happened, when, value in events:
        k = np.flatnonzero(happened)
        parts.append(
            (
                k,
                np.full(k.size, name, dtype=object),
                np.asarray(when)[k],
                np.broadcast_to(np.asarray(value, np.float64), (rows.size,))[k],
            )
        )
    k = np.concatenate([p[0] for p in parts])
    order = np.argsort(k, kind="stable")  # events grouped by decision
    outcomes = OutcomeRecords(
        decision_id=ids[k[order]],
        event=np.concatenate([p[1] for p in parts])[order],
        time=np.concatenate([p[2] for p in parts])[order],
        value=np.concatenate([p[3] for p in parts])[order],
    )
    return dec, outcomes


@dataclass(frozen=True)
class LoggedRunSummary:
    """What :func:`log_bandit_run` wrote."""

    run_id: str
    decisions: int  # decisions made
    new_decisions: int  # of which newly written (0 when the same run was logged before)
    new_outcomes: int
    rewards: np.ndarray  # (decisions,) the simulator's realised rewards, in decision order
    seconds_logging: float  # time spent writing to the log

    @property
    def mean_reward(self) -> float:
        return float(self.rewards.mean()) if self.rewards.size else 0.0


def log_bandit_run(
    log: DecisionLog,
    scenario: Scenario,
    policy: Policy,
    decisions: int,
    seed: int = 0,
    batch: int = 1000,
    policy_name: str | None = None,
    version: str = "0",
    experiment: str = "",
    arm: str = "",
    learn: bool = True,
    progress: Callable[[int], None] | None = None,
    *,
    purpose: str,
    provenance: Mapping[str, Any] | None = None,
) -> LoggedRunSummary:
    """Run ``policy`` on ``nba/Bandit-v0`` like :func:`envs.rollout.bandit_run` and log every decision.

    The same (seed, purpose) gives the same customers, decisions and outcomes (and the same ids), so
    logging a run twice writes nothing new. Decision ids are ``"{run_id}:{step}:{row}"`` with
    ``run_id = "{policy_name}@{version}/{purpose}/s{seed}"`` (plus ``/{experiment}/{arm}`` when
    given); customer ids are ``"{purpose}/s{seed}-{row}.{generation}"``. ``provenance``
    (:func:`simulation_provenance`) is recorded in the log before its first decision
    (:meth:`nba.log.DecisionLog.set_provenance`: ValueError naming ``provenance``, and nothing written,
    when the log holds another).
    """
    if decisions < 1 or batch < 1:
        raise ValueError(f"decisions: decisions and batch must be >= 1, got {decisions!r} and {batch!r}")
    name = policy_name or policy.name
    run_id = f"{name}@{version}/{purpose}/s{seed}" + (f"/{experiment}/{arm}" if experiment or arm else "")
    sim = bandit_simulation(scenario, seed, batch, purpose)
    log.set_layout(scenario_layout(scenario))
    if provenance is not None:
        log.set_provenance(dict(provenance))
    customers = CustomerIds.start(batch, prefix=f"{purpose}/s{seed}-")
    rng = policy_rng(seed, purpose)
    rewards, new_d, new_o, spent = [], 0, 0, 0.0
    for step in range(-(-decisions // batch)):
        decided = sim.decide(policy, rng)
        X, d = decided.context, decided.decisions
        before = PreStep.of(sim, customers, X, decided.eligible)
        res = sim.step(d.actions)
        if learn:
            policy.update(X, d.actions, res.reward, d.propensities)
        rows = np.arange(min(batch, decisions - step * batch))
        ids = np.array([f"{run_id}:{step}:{r}" for r in range(batch)], dtype=object)
        dec, outs = step_records(
            sim,
            before,
            d,
            res,
            decision_ids=ids,
            policy=name,
            version=version,
            experiment=experiment,
            arm=arm,
            rows=rows,
        )
        t0 = time.perf_counter()
        d_new, o_new = log.log(dec, outs)  # the step's decisions and outcomes in one transaction
        new_d, new_o = new_d + d_new, new_o + o_new
        spent += time.perf_counter() - t0
        rewards.append(res.reward[rows])
        customers.advance(res.replaced)
        if progress is not None:
            progress(step)
    return LoggedRunSummary(run_id, decisions, new_d, new_o, np.concatenate(rewards), spent)
