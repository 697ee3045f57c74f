"""Online bandit benchmark on ``nba/Bandit-v0``: nba's policies against Vowpal Wabbit and MABWiser.

    python bench/policies.py [--decisions 100000] [--batch 1000] [--seed 0 | --seeds 0,1,2] [--only NAME,...]
                             [--learn-from attributed|total]
                             [--vw-decisions N] [--mabwiser-decisions N] [--one-at-a-time 500]
                             [--reach-contexts 1000000] [--reach-actions-per-context 1] [--reach-held-out 10000]
                             [--synthetic-decisions 5000] [--synthetic-chunk 100]
                             [--blas-threads 1] [--mab-alpha 1] [--json PATH] [--plot PNG]

Every learner runs in the loop of :func:`envs.rollout.bandit_run` on the default scenario and meets
the same customers: the stream of ``(seed, "bench/policies")`` (:mod:`envs.random`), ``batch`` rows
at a random moment of the day, one customer in 30 replaced after each decision, penalties charged
(:func:`envs.rollout.bandit_simulation`). Act on a batch of contexts, step, learn from the realised
rewards (by default the attributed ones: the revenue of the message's own conversions less cost and
penalties, the same for every learner; ``lgbm_funnel`` also gets the step's funnel events, opened,
clicked and converted, which a decision log holds and which VW and MABWiser have no way to take);
record the exact expected reward of the chosen action, of the best eligible action (oracle) and of
no contact. Peers sit behind nba's policy interface (``bench/peers.py``), so the loop is the same
code for everyone. Printed for each learner: mean realised reward, mean exact expected reward,
the normalised score ``(V - V_no_contact) / (V_oracle - V_no_contact)`` on exact expectations,
and learn+act throughput (decisions/s: time inside ``act`` and ``update`` only, the simulator
excluded). The learning curve is printed beside them: the normalised score of each tenth of the
run, so the last tenth shows how far a learner has come and the overall score what learning cost on
the way (``--plot`` draws it). The greedy score beside them is the normalised score of the
action each learner gave the most probability, on the same contexts: what its model knows, apart
from what exploring cost (:attr:`envs.rollout.BanditRun.greedy_score`). MABWiser's one-at-a-time
throughput (predict and partial_fit one context at a time) is measured on ``--one-at-a-time``
decisions and extrapolated (its cost per call does not depend on how much it has learnt: a
fixed-size ridge model per arm). To keep the default run short,
MABWiser's batch runs stop at ``--mabwiser-decisions`` (20,000; the output says so).

**What a learner can reach.** The oracle chooses on every customer's latent traits, which no
learner sees, so its uplift is out of reach (``bench/ceiling.py`` measures how much of it the traits
carry). Each learner's normalised score is therefore also reported as a share of a *reachable
ceiling*, the uplift of the best policy on observable features, approximated
(:func:`reachable_ceiling`): a LightGBM model fitted to the exact expected reward of random eligible
actions on ``--reach-contexts`` contexts of a stream of their own (``"bench/policies/reachable/train"``,
the bench's stream under uniform random actions; no noise in the labels, which no learner ever has),
whose greedy policy runs as the learners do on ``--reach-held-out`` decisions of another
(``".../held-out"``). Its settings are :data:`REACH_PARAMS`; several minutes on 2 cores at the
default million contexts (``--reach-contexts 0`` skips it). No target on that share.

**One decision at a time.** A service decides for one customer and learns from one outcome: nba's
``linucb`` and ``lints``, VW ``--cb_explore_adf --squarecb`` and MABWiser's LinUCB decide and learn
one context at a time, side by side, on the same synthetic problem (:class:`LogisticBandit`: 10
actions, 20 features, a logistic reward; STACK.md's reference) and the same contexts and reward
draws, taking turns of ``--synthetic-chunk`` decisions so that all meet the same load on the
machine (:func:`synthetic_one_at_a_time`). Printed: decisions/s on the wall clock and on the
thread's CPU time (what the load on a shared machine does not inflate), each with its ratio to VW's.

The CPU's model and the libraries' versions are printed with the figures: the LightGBM learners'
figures have been seen to differ between machines in the second or third digit (on 2026-12-03
``lgbm_funnel`` scored 0.2013 where it had scored 0.2074 twice on 2026-12-02), while every other
learner's repeated to the digit. A fit's last bits can decide a split, and the run's later contexts
follow its decisions: one seed's figure is one trajectory. ``--seeds 0,1,2,...`` runs every learner
on each seed's stream and reports the mean over seeds of every figure (the learning curve tenth by
tenth), with a table of each learner's normalised score per seed and its standard error; the
targets are then checked on the means. MABWiser's one-at-a-time throughput, the reachable ceiling
and the one-at-a-time comparison are measured on the first seed only.

BLAS runs one thread by default (``--blas-threads``) for every learner: VW is single-threaded,
MABWiser's products are small, and on a shared 2-core machine OpenBLAS's second thread spins
against other processes (measured at load average 6: MABWiser 10x slower with two threads). nba's
linear learners pin their own BLAS calls to one thread whatever this setting
(:mod:`nba.policies.linear`). The load average is printed with the figures.

Targets (2-core machine), for nba's best bandit (highest normalised score among nba's learners
run): mean reward >= VW's best; throughput >= VW's (the faster VW learner) and >= 20x MABWiser's
one-at-a-time (the faster one); one decision at a time, ``linucb``'s and ``lints``'s throughput each
>= VW ``--squarecb``'s. The 0.85 normalised score of issue 3 is retired: it was measured against
the omniscient oracle.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/peers.py, when run as a script

from peers import MABWiserLinear, VWCBExploreADF  # noqa: E402

from envs.random import Streams, normal  # noqa: E402
from envs.rollout import (  # noqa: E402
    LEARN_FROM,
    BanditRun,
    bandit_run,
    bandit_simulation,
    learning_rewards,
    policy_rng,
)
from envs.scenario import Scenario  # noqa: E402
from envs.simulation import Simulation  # noqa: E402
from nba.actions import ActionSpace  # noqa: E402
from nba.policies import LEARNERS, POLICIES, act, create  # noqa: E402
from nba.policies.base import greedy, sample, uniform  # noqa: E402
from nba.policies.linear import action_design  # noqa: E402

NBA = (
    "uniform_random",
    "business_as_usual",
    "rule_based_journey",
    "linucb",
    "lints",
    "lgbm_egreedy",
    "lgbm_squarecb",
    "lgbm_funnel",
    "send_time",
)  # send_time: LinTS, then the hour model for the slot
VW = ("vw_egreedy", "vw_squarecb")
MABWISER = ("mabwiser_linucb", "mabwiser_lints")
ALL = NBA + VW + MABWISER
TARGET_MAB_RATIO = 20.0
CURVE_PARTS = 10

PURPOSE = "bench/policies"  # every learner meets the customers of (seed, PURPOSE): envs.random
REACH_TRAIN = "bench/policies/reachable/train"  # the contexts the reachable ceiling's model is fitted on
REACH_HELD_OUT = "bench/policies/reachable/held-out"  # the contexts its greedy policy is scored on
SYNTHETIC = "bench/policies/synthetic"  # the one-at-a-time problem's contexts and reward draws
SYNTHETIC_WEIGHTS = "bench/policies/synthetic/weights"  # its true reward weights
SYNTHETIC_ACTIONS, SYNTHETIC_FEATURES = 10, 20
ONE_AT_A_TIME = ("linucb", "lints", "vw_squarecb", "mabwiser_linucb")  # learners of the one-at-a-time comparison
# LightGBM's settings for the reachable ceiling: bench/ceiling.py's, with more leaves for a million rows, and one
# thread (on a busy 2-core machine an OpenMP team of two spins against the other processes: 100,000 rows fitted
# in 128 s on two threads against 24 s on one at load average 12)
REACH_PARAMS = {
    "objective": "regression",
    "learning_rate": 0.05,
    "num_leaves": 63,
    "min_data_in_leaf": 100,
    "verbose": -1,
    "num_threads": 1,
    "seed": 0,
}
REACH_ROUNDS = 300


@dataclass
class Result:
    name: str
    family: str  # nba | vw | mabwiser
    decisions: int
    mean_reward: float
    mean_expected: float
    mean_oracle: float
    mean_no_contact: float
    normalised_score: float
    greedy_score: float  # BanditRun.greedy_score: the most probable action's, exploration aside
    decisions_per_s: float
    seconds: float
    curve: list[float]  # normalised score of each tenth of the run (BanditRun.score_curve)
    extra: dict = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)  # the seeds whose runs these figures average


def pooled(runs: list[Result]) -> Result:
    """One learner's figures over several seeds' runs: each one the mean of the runs' (the curve tenth by tenth)."""
    first = runs[0]
    if len(runs) == 1:
        return first

    def mean(name: str) -> float:
        return float(np.mean([getattr(r, name) for r in runs]))

    return Result(
        first.name,
        first.family,
        first.decisions,
        mean("mean_reward"),
        mean("mean_expected"),
        mean("mean_oracle"),
        mean("mean_no_contact"),
        mean("normalised_score"),
        mean("greedy_score"),
        mean("decisions_per_s"),
        float(sum(r.seconds for r in runs)),
        np.mean([r.curve for r in runs], axis=0).tolist(),
        first.extra,
        [s for r in runs for s in r.seeds],
    )


def family(name: str) -> str:
    return "vw" if name in VW else "mabwiser" if name in MABWISER else "nba"


def make_learner(name: str, scenario: Scenario, dim: int, seed: int, mab_alpha: float):
    space = scenario.action_space
    if name == "vw_egreedy":
        return VWCBExploreADF(space, dim, exploration="epsilon", epsilon=0.05, seed=seed)
    if name == "vw_squarecb":
        return VWCBExploreADF(space, dim, exploration="squarecb", seed=seed)
    if name in MABWISER:
        return MABWiserLinear(space, dim, policy=name.removeprefix("mabwiser_"), alpha=mab_alpha, seed=seed)
    params = {"seed": seed} if "seed" in inspect.signature(POLICIES[name]).parameters else {}
    return create(name, space, segments=tuple(scenario.segments), dim=dim if name in LEARNERS else None, **params)


def run_one(
    name: str,
    scenario: Scenario,
    dim: int,
    decisions: int,
    batch: int,
    seed: int,
    mab_alpha: float,
    learn_from: str,
    progress: Callable[[int], None],
) -> Result:
    learner = make_learner(name, scenario, dim, seed, mab_alpha)
    run: BanditRun = bandit_run(
        scenario, learner, decisions, batch=batch, seed=seed, progress=progress, learn_from=learn_from, purpose=PURPOSE
    )
    extra = {}
    if isinstance(learner, VWCBExploreADF):
        extra = {"vw_args": learner.args, "seconds_in_vw_calls": learner.vw_seconds}
        learner.close()
    elif isinstance(learner, MABWiserLinear):
        extra = {"mab_alpha": mab_alpha, "mask": "best eligible arm of predict_expectations"}
    return Result(
        name,
        family(name),
        len(run.rewards),
        float(run.rewards.mean()),
        float(run.expected.mean()),
        float(run.oracle.mean()),
        float(run.no_contact.mean()),
        run.normalised_score,
        run.greedy_score,
        run.decisions_per_s,
        run.seconds,
        run.score_curve(CURVE_PARTS).tolist(),
        extra,
        [seed],
    )


def mabwiser_one_at_a_time(
    name: str,
    scenario: Scenario,
    dim: int,
    decisions: int,
    batch: int,
    seed: int,
    mab_alpha: float,
    learn_from: str,
    progress: Callable[[int], None],
) -> dict:
    """Same loop, but MABWiser predicts and learns one context at a time (each timed)."""
    learner = make_learner(name, scenario, dim, seed, mab_alpha)
    rows = min(batch, decisions)
    sim = Simulation(scenario, seed, rows, purpose=PURPOSE, decision_hour=None, replace_rate=1 / 30, penalties=True)
    steps = -(-decisions // rows)
    spent = 0.0
    for step in range(steps):
        X, mask = sim.observe(), sim.action_mask()
        actions = np.empty(rows, np.int64)
        t0 = time.perf_counter()
        for i in range(rows):
            actions[i] = learner.decide_one(X[i], mask[i])
        spent += time.perf_counter() - t0
        res = sim.step(actions)
        rewards = learning_rewards(res, learn_from)
        t0 = time.perf_counter()
        for i in range(rows):
            learner.update_one(X[i], int(actions[i]), float(rewards[i]))
        spent += time.perf_counter() - t0
        progress(step)
    n = steps * rows
    return {"decisions_measured": n, "seconds": spent, "decisions_per_s": n / spent}


# ----------------------------------------------------------------------------- the reachable ceiling
class GreedyOnModel:
    """The greedy policy of a LightGBM model of the reward on ``[x, psi(a)]``, behind nba's policy interface."""

    name = "greedy_on_exact_reward_model"

    def __init__(self, space: ActionSpace, model) -> None:
        self.space, self.model = space, model
        self.psi = action_design(space).astype(np.float32)

    def probabilities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        n, a = X.shape[0], self.space.n_actions
        grid = np.hstack([np.repeat(np.asarray(X, np.float32), a, axis=0), np.tile(self.psi, (n, 1))])
        return greedy(self.model.predict(grid).reshape(n, a), mask)

    def update(self, X, actions, rewards, propensities=None) -> GreedyOnModel:
        return self


@dataclass(frozen=True)
class Reachable:
    """What a learner can reach from observations: the normalised score of the greedy policy of a model
    fitted to exact expected rewards (:func:`reachable_ceiling`)."""

    normalised_score: float
    greedy_score: float
    contexts: int
    rows: int
    held_out: int
    seconds: float
    settings: dict


def exact_reward_model(
    scenario: Scenario,
    seed: int,
    contexts: int,
    steps: int,
    purpose: str,
    actions_per_context: int = 1,
    progress: Callable[[int], None] | None = None,
    threads: int = 1,
):
    """A LightGBM model (:data:`REACH_PARAMS`) of the *exact* expected reward on ``[x, psi(a)]``.

    ``contexts`` contexts of ``(seed, purpose)``, ``contexts // steps`` customers over ``steps``
    decisions under uniform random actions (a random moment of the day, one customer in 30 replaced
    after each decision), each labelled for ``actions_per_context`` uniform random eligible actions with
    their exact expected reward (``Simulation.expected_rewards``: no noise, which no learner ever sees).
    Returns the booster; ``progress(step)`` after each step.
    """
    import lightgbm as lgb

    psi = action_design(scenario.action_space).astype(np.float32)
    rows = max(1, contexts // steps)
    sim = bandit_simulation(scenario, seed, rows, purpose)
    rng = policy_rng(seed, purpose)
    features, labels = [], []
    for step in range(steps):
        X, er, mask = sim.observe(), sim.expected_rewards(), sim.action_mask()
        p = uniform(mask)
        actions = np.stack([sample(p, rng.random(rows)) for _ in range(actions_per_context)], axis=1)  # (n, k)
        features.append(np.hstack([np.repeat(X, actions_per_context, axis=0), psi[actions.ravel()]]))
        labels.append(er[np.repeat(np.arange(rows), actions_per_context), actions.ravel()])
        sim.step(actions[:, 0])
        if progress is not None:
            progress(step)
    data = lgb.Dataset(np.concatenate(features), np.concatenate(labels))
    del features
    return lgb.train({**REACH_PARAMS, "num_threads": threads}, data, REACH_ROUNDS)


def reachable_ceiling(
    scenario: Scenario,
    seed: int,
    contexts: int,
    actions_per_context: int,
    held_out: int,
    steps: int,
    progress: Callable[[int], None],
) -> Reachable:
    """The uplift of the best policy on observable features, approximated.

    :func:`exact_reward_model` on ``contexts`` contexts of ``(seed, REACH_TRAIN)`` over ``steps``
    decisions (the bench's stream); its greedy policy run as the learners are
    (:func:`envs.rollout.bandit_run`), on ``held_out`` decisions of ``(seed, REACH_HELD_OUT)``,
    ``held_out // steps`` customers over the same ``steps`` decisions, and scored on exact expected
    rewards.
    """
    t0 = time.perf_counter()
    space = scenario.action_space
    rows = max(1, contexts // steps)
    model = exact_reward_model(scenario, seed, contexts, steps, REACH_TRAIN, actions_per_context, progress)
    held_rows = max(1, held_out // steps)
    run = bandit_run(
        scenario, GreedyOnModel(space, model), held_rows * steps, batch=held_rows, seed=seed, purpose=REACH_HELD_OUT
    )
    progress(steps)
    return Reachable(
        run.normalised_score,
        run.greedy_score,
        rows * steps,
        rows * steps * actions_per_context,
        held_rows * steps,
        time.perf_counter() - t0,
        {
            "lightgbm": REACH_PARAMS,
            "rounds": REACH_ROUNDS,
            "actions_per_context": actions_per_context,
            "steps": steps,
            "train_purpose": REACH_TRAIN,
            "held_out_purpose": REACH_HELD_OUT,
        },
    )


# ----------------------------------------------------------------------------- one decision at a time
@dataclass(frozen=True)
class LogisticBandit:
    """The one-at-a-time comparison's problem (STACK.md's reference): ``SYNTHETIC_ACTIONS`` actions,
    ``SYNTHETIC_FEATURES`` features ``x ~ N(0, I)``, reward ``~ Bernoulli(sigmoid(x . w_a + c_a))`` with
    ``w_a ~ N(0, 0.5^2 I)`` and ``c_a ~ N(-1, 0.5^2)`` drawn once per seed. Action 0 is nba's no contact,
    the others one channel each (one content, one slot), so nba's learners see 13 action features."""

    space: ActionSpace
    W: np.ndarray  # (A, d)
    c: np.ndarray  # (A,)

    @classmethod
    def make(cls, seed: int) -> LogisticBandit:
        space = ActionSpace(
            channels=tuple(f"arm{i}" for i in range(1, SYNTHETIC_ACTIONS)), contents=("offer",), send_slots=(None,)
        )
        z = normal(Streams.of(seed, SYNTHETIC_ACTIONS, SYNTHETIC_WEIGHTS).uniform(SYNTHETIC_FEATURES + 1))
        return cls(space, 0.5 * z[:, :-1], -1.0 + 0.5 * z[:, -1])

    def draw(self, seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, d) contexts and (n,) uniforms that decide each reward (shared by every learner)."""
        u = Streams.of(seed, n, SYNTHETIC).uniform(SYNTHETIC_FEATURES + 1)
        return normal(u[:, :-1]), u[:, -1]

    def expected(self, X: np.ndarray) -> np.ndarray:
        """(n, A) exact expected reward of every action."""
        return 1.0 / (1.0 + np.exp(-(X @ self.W.T + self.c)))


def synthetic_one_at_a_time(seed: int, decisions: int, chunk: int, progress: Callable[[int], None]) -> dict:
    """Every learner of :data:`ONE_AT_A_TIME` decides and learns one context at a time on the same
    :class:`LogisticBandit` contexts and reward draws, side by side: in turns of ``chunk`` decisions each,
    so that all meet the same load on the machine. nba's learners and VW go through :func:`nba.policies.act`
    and ``update`` with a batch of one; MABWiser through ``decide_one`` / ``update_one``. Timed: the
    calls to the learner only (wall clock, and the thread's CPU time)."""
    problem = LogisticBandit.make(seed)
    space, d = problem.space, SYNTHETIC_FEATURES
    X, u = problem.draw(seed, decisions)
    er = problem.expected(X)
    learners = {}
    for name in ONE_AT_A_TIME:
        if name == "vw_squarecb":
            learners[name] = VWCBExploreADF(space, d, exploration="squarecb", seed=seed)
        elif name == "mabwiser_linucb":
            learners[name] = MABWiserLinear(space, d, policy="linucb", seed=seed)
        else:
            learners[name] = create(name, space, dim=d, **({"seed": seed} if name == "lints" else {}))
    rngs = {name: policy_rng(seed, SYNTHETIC) for name in learners}
    wall, cpu = dict.fromkeys(learners, 0.0), dict.fromkeys(learners, 0.0)
    got = {name: np.empty(decisions) for name in learners}
    mask = np.ones((1, space.n_actions), bool)
    for start in range(0, decisions, chunk):
        for name, learner in learners.items():
            rng, oaat = rngs[name], isinstance(learner, MABWiserLinear)
            for i in range(start, min(decisions, start + chunk)):
                x = X[i : i + 1]
                t0, c0 = time.perf_counter(), time.thread_time()
                if oaat:
                    a = learner.decide_one(x[0], mask[0])
                else:
                    dec = act(learner, x, mask, rng)
                    a = int(dec.actions[0])
                wall[name] += time.perf_counter() - t0
                cpu[name] += time.thread_time() - c0
                r = float(u[i] < er[i, a])
                t0, c0 = time.perf_counter(), time.thread_time()
                if oaat:
                    learner.update_one(x[0], a, r)
                else:
                    learner.update(x, dec.actions, np.array([r]), dec.propensities)
                wall[name] += time.perf_counter() - t0
                cpu[name] += time.thread_time() - c0
                got[name][i] = er[i, a]
        progress(min(decisions, start + chunk))
    for learner in learners.values():
        if isinstance(learner, VWCBExploreADF):
            learner.close()
    oracle, mean = er.max(axis=1).mean(), er.mean()
    out = {
        name: {
            "decisions": decisions,
            "decisions_per_s": decisions / wall[name],
            "cpu_decisions_per_s": decisions / cpu[name],
            "mean_expected": float(got[name].mean()),
            "score_vs_uniform": float((got[name].mean() - mean) / (oracle - mean)),
        }
        for name in learners
    }
    vw = out["vw_squarecb"]
    for m in out.values():
        m["ratio_to_vw"] = m["decisions_per_s"] / vw["decisions_per_s"]
        m["cpu_ratio_to_vw"] = m["cpu_decisions_per_s"] / vw["cpu_decisions_per_s"]
    return {
        "learners": out,
        "oracle": float(oracle),
        "uniform": float(mean),
        "chunk": chunk,
        "seed": seed,
        "actions": SYNTHETIC_ACTIONS,
        "features": SYNTHETIC_FEATURES,
    }


# ----------------------------------------------------------------------------- report
def cpu_model() -> str:
    """The CPU's model name, as Linux reports it (the machine's architecture elsewhere)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def versions() -> str:
    """Versions of the libraries the learners' figures depend on."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in ("numpy", "lightgbm", "vowpalwabbit", "mabwiser"):
        with contextlib.suppress(PackageNotFoundError):
            out.append(f"{name} {version(name)}")
    return ", ".join(out)


def seed_words(seeds: list[int]) -> str:
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"mean over seeds {', '.join(map(str, seeds))}"


def _fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def table(results: list[Result], one_at_a_time: dict[str, dict]) -> str:
    head = (
        f"{'learner':<20} {'decisions':>9} {'mean reward':>11} {'mean E[r]':>9} {'oracle':>7} "
        f"{'no contact':>10} {'norm. score':>11} {'last tenth':>10} {'greedy':>7} {'decisions/s':>12}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r.name:<20} {r.decisions:>9,} {r.mean_reward:>11.4f} {r.mean_expected:>9.4f} "
            f"{r.mean_oracle:>7.4f} {r.mean_no_contact:>10.4f} {r.normalised_score:>11.4f} "
            f"{r.curve[-1]:>10.4f} {r.greedy_score:>7.4f} {_fmt_rate(r.decisions_per_s):>12}"
        )
    for name, m in one_at_a_time.items():
        label = f"{name} (1 at a time)"
        lines.append(
            f"{label:<29} {'':>11} {'':>9} {'':>7} {'':>10} {'':>11} {'':>10} {'':>7} "
            f"{_fmt_rate(m['decisions_per_s']):>12}"
            f"   measured on {m['decisions_measured']:,} decisions, extrapolated"
        )
    return "\n".join(lines)


def seed_table(runs: dict[str, list[Result]], seeds: list[int]) -> str:
    """Normalised score of every learner on each of ``seeds`` (its runs, in that order), with the mean and
    its standard error."""
    head = f"{'learner':<20} " + " ".join(f"{f'seed {s}':>8}" for s in seeds) + f" {'mean':>8} {'std. err.':>9}"
    lines = [head, "-" * len(head)]
    for name, rs in runs.items():
        x = np.array([r.normalised_score for r in rs])
        se = x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else float("nan")
        lines.append(f"{name:<20} " + " ".join(f"{v:>8.4f}" for v in x) + f" {x.mean():>8.4f} {se:>9.4f}")
    return "\n".join(lines)


def curve_table(results: list[Result]) -> str:
    """Normalised score of each tenth of every learner's run, one row per learner."""
    head = f"{'learner':<20} " + " ".join(f"{f'{k + 1}/{CURVE_PARTS}':>6}" for k in range(CURVE_PARTS))
    lines = [head, "-" * len(head)]
    lines += [f"{r.name:<20} " + " ".join(f"{x:>6.3f}" for x in r.curve) for r in results]
    return "\n".join(lines)


def reachable_text(reachable: Reachable, results: list[Result]) -> str:
    """The reachable ceiling, and each learner's normalised score as a share of it."""
    lines = [
        f"reachable ceiling: greedy on a LightGBM model of the exact expected reward ({reachable.rows:,} rows "
        f"of {reachable.contexts:,} contexts), run on {reachable.held_out:,} held-out decisions: normalised "
        f"score {reachable.normalised_score:.4f} ({reachable.seconds:,.0f} s)"
    ]
    if results:
        head = f"{'learner':<20} {'norm. score':>11} {'share of reachable':>18}"
        lines += [head, "-" * len(head)]
        lines += [
            f"{r.name:<20} {r.normalised_score:>11.4f} {r.normalised_score / reachable.normalised_score:>18.3f}"
            for r in results
        ]
    return "\n".join(lines)


def targets(results: list[Result], one_at_a_time: dict[str, dict], reachable: Reachable | None) -> tuple[str, dict]:
    by = {r.name: r for r in results}
    bandits = [by[n] for n in LEARNERS if n in by]
    vws = [by[n] for n in VW if n in by]
    out: dict = {}
    lines = []
    if not bandits:
        return "targets: no nba bandit was run", out
    best = max(bandits, key=lambda r: r.normalised_score)
    out["nba_best"] = best.name
    lines.append(f"nba's best bandit: {best.name} (highest normalised score)")
    share = f"{best.normalised_score / reachable.normalised_score:.3f}" if reachable else "not measured"
    lines.append(
        f"  normalised score             {best.normalised_score:>10.4f}   share of the reachable ceiling "
        f"{share}   (no target; last tenth of its run: {best.curve[-1]:.4f})"
    )
    out["normalised_score"] = {
        "value": best.normalised_score,
        "last_tenth": best.curve[-1],
        "reachable": reachable.normalised_score if reachable else None,
        "share_of_reachable": best.normalised_score / reachable.normalised_score if reachable else None,
    }
    if vws:
        vbest = max(vws, key=lambda r: r.mean_expected)
        ok = best.mean_expected >= vbest.mean_expected
        lines.append(
            f"  mean E[reward] vs VW's best  {best.mean_expected:>10.4f} vs {vbest.mean_expected:.4f} "
            f"({vbest.name}; ratio {best.mean_expected / vbest.mean_expected:.3f}, realised "
            f"{best.mean_reward:.4f} vs {vbest.mean_reward:.4f})   target >=   {'PASS' if ok else 'FAIL'}"
        )
        out["reward_vs_vw"] = {
            "nba": best.mean_expected,
            "vw": vbest.mean_expected,
            "vw_learner": vbest.name,
            "nba_realised": best.mean_reward,
            "vw_realised": vbest.mean_reward,
            "pass": ok,
        }
        vfast = max(vws, key=lambda r: r.decisions_per_s)
        ratio = best.decisions_per_s / vfast.decisions_per_s
        lines.append(
            f"  throughput vs VW's           {ratio:>9.2f}x   ({_fmt_rate(best.decisions_per_s)} vs "
            f"{_fmt_rate(vfast.decisions_per_s)}/s, {vfast.name}, the faster VW)   target >= 1x   "
            f"{'PASS' if ratio >= 1 else 'FAIL'}"
        )
        out["throughput_vs_vw"] = {"ratio": ratio, "vw_learner": vfast.name, "target": 1.0, "pass": ratio >= 1}
    if one_at_a_time:
        mname, m = max(one_at_a_time.items(), key=lambda kv: kv[1]["decisions_per_s"])
        ratio = best.decisions_per_s / m["decisions_per_s"]
        lines.append(
            f"  throughput vs MABWiser 1x1   {ratio:>9.1f}x   ({_fmt_rate(best.decisions_per_s)} vs "
            f"{_fmt_rate(m['decisions_per_s'])}/s, {mname} one at a time, the faster)   "
            f"target >= {TARGET_MAB_RATIO:.0f}x   {'PASS' if ratio >= TARGET_MAB_RATIO else 'FAIL'}"
        )
        out["throughput_vs_mabwiser_one_at_a_time"] = {
            "ratio": ratio,
            "mabwiser_learner": mname,
            "target": TARGET_MAB_RATIO,
            "pass": ratio >= TARGET_MAB_RATIO,
        }
    return "\n".join(lines), out


def synthetic_targets(synthetic: dict) -> tuple[str, dict]:
    """linucb and lints, one decision at a time, against VW --squarecb's learn+act throughput (target >= 1x)."""
    lines, out = [f"one decision at a time ({synthetic['actions']} actions, {synthetic['features']} features):"], {}
    vw = synthetic["learners"]["vw_squarecb"]
    for name in ("linucb", "lints"):
        m = synthetic["learners"][name]
        ok = m["ratio_to_vw"] >= 1.0
        lines.append(
            f"  {name:<7} throughput vs VW --squarecb {m['ratio_to_vw']:>6.2f}x   "
            f"({_fmt_rate(m['decisions_per_s'])} vs {_fmt_rate(vw['decisions_per_s'])}/s; CPU time "
            f"{m['cpu_ratio_to_vw']:.2f}x)   target >= 1x   {'PASS' if ok else 'FAIL'}"
        )
        out[f"one_at_a_time_{name}_vs_vw"] = {
            "ratio": m["ratio_to_vw"],
            "cpu_ratio": m["cpu_ratio_to_vw"],
            "target": 1.0,
            "pass": ok,
        }
    return "\n".join(lines), out


def synthetic_table(synthetic: dict) -> str:
    """One line per learner of the one-at-a-time comparison."""
    head = (
        f"{'learner':<20} {'decisions':>9} {'decisions/s':>12} {'vs VW':>6} {'CPU dec./s':>11} {'vs VW':>6} "
        f"{'mean E[r]':>9} {'score':>6}"
    )
    lines = [head, "-" * len(head)]
    for name, m in synthetic["learners"].items():
        lines.append(
            f"{name:<20} {m['decisions']:>9,} {_fmt_rate(m['decisions_per_s']):>12} {m['ratio_to_vw']:>5.2f}x "
            f"{_fmt_rate(m['cpu_decisions_per_s']):>11} {m['cpu_ratio_to_vw']:>5.2f}x "
            f"{m['mean_expected']:>9.4f} {m['score_vs_uniform']:>6.3f}"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--decisions", type=int, default=100_000, help="decisions per learner (default 100,000)")
    ap.add_argument("--batch", type=int, default=1000, help="contexts per act/learn round (default 1000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--seeds",
        default=None,
        help="comma-separated seeds: run every learner on each, report the means (overrides --seed)",
    )
    ap.add_argument("--only", type=str, default=None, help=f"comma-separated learners; default all: {','.join(ALL)}")
    ap.add_argument("--vw-decisions", type=int, default=0, help="cap VW's decisions (default 0: --decisions)")
    ap.add_argument(
        "--mabwiser-decisions",
        type=int,
        default=20_000,
        help="cap MABWiser's batch-run decisions (default 20,000; 0: --decisions)",
    )
    ap.add_argument(
        "--one-at-a-time",
        type=int,
        default=500,
        help="decisions on which MABWiser's one-at-a-time throughput is measured (0: skip)",
    )
    ap.add_argument("--mab-alpha", type=float, default=1.0, help="MABWiser LinUCB/LinTS alpha (its default, 1)")
    ap.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="BLAS threads for every learner (default 1; 0: the libraries' own, 2 here)",
    )
    ap.add_argument(
        "--learn-from",
        choices=LEARN_FROM,
        default="attributed",
        help="the reward every learner learns from (default attributed: the message's own conversions, "
        "less cost and penalties; total: with organic purchases)",
    )
    ap.add_argument(
        "--reach-contexts",
        type=int,
        default=1_000_000,
        help="contexts the reachable ceiling's model is fitted on (default 1,000,000; 0: skip it)",
    )
    ap.add_argument(
        "--reach-actions-per-context",
        type=int,
        default=1,
        help="random eligible actions labelled with their exact expected reward per context (default 1)",
    )
    ap.add_argument(
        "--reach-held-out",
        type=int,
        default=10_000,
        help="decisions on which the reachable ceiling's greedy policy is scored (default 10,000)",
    )
    ap.add_argument(
        "--synthetic-decisions",
        type=int,
        default=5000,
        help="decisions per learner of the one-at-a-time comparison (default 5,000; 0: skip it)",
    )
    ap.add_argument(
        "--synthetic-chunk",
        type=int,
        default=100,
        help="decisions each learner of the one-at-a-time comparison makes in its turn (default 100)",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--plot", type=Path, default=None, help="draw every learner's learning curve in this PNG")
    args = ap.parse_args()

    names = list(ALL) if args.only is None else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALL]
    if unknown:
        ap.error(f"--only: unknown learner(s) {unknown}; valid: {','.join(ALL)}")
    if args.decisions < 1 or args.batch < 1:
        ap.error("--decisions and --batch must be >= 1")
    if args.reach_contexts < 0 or args.reach_actions_per_context < 1 or args.reach_held_out < 1:
        ap.error("--reach-contexts must be >= 0, --reach-actions-per-context and --reach-held-out >= 1")
    if args.synthetic_decisions < 0 or args.synthetic_chunk < 1:
        ap.error("--synthetic-decisions must be >= 0 and --synthetic-chunk >= 1")
    try:
        seeds = [args.seed] if args.seeds is None else [int(x) for x in args.seeds.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--seeds: expected comma-separated integers, got {args.seeds!r}")
    if not seeds or len(set(seeds)) != len(seeds):
        ap.error(f"--seeds: expected distinct comma-separated integers, got {args.seeds!r}")

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if args.blas_threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.blas_threads, user_api="blas")
    load_before = os.getloadavg()
    scenario = Scenario.default()
    dim = scenario.feature_spec.dim
    plan = {}
    for n in names:
        cap = args.vw_decisions if n in VW else args.mabwiser_decisions if n in MABWISER else None
        plan[n] = min(args.decisions, cap) if cap else args.decisions
    oaat = [n for n in names if n in MABWISER] if args.one_at_a_time > 0 else []

    command = " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])
    runs: dict[str, list[Result]] = {n: [] for n in names}
    one_at_a_time: dict[str, dict] = {}
    t_start = time.perf_counter()
    columns = (
        TextColumn("{task.description:<30}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("decisions"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    steps = -(-args.decisions // args.batch)  # the learners' decisions, hence the reachable ceiling's
    reachable: Reachable | None = None
    synthetic: dict | None = None
    with Progress(*columns, transient=False) as progress:
        if args.synthetic_decisions:
            task = progress.add_task("one at a time, side by side", total=args.synthetic_decisions)
            synthetic = synthetic_one_at_a_time(
                seeds[0],
                args.synthetic_decisions,
                args.synthetic_chunk,
                lambda done: progress.update(task, completed=done),
            )
        tasks = {n: progress.add_task(n, total=plan[n] * len(seeds)) for n in names}
        rows = min(args.batch, args.one_at_a_time)
        one_tasks = {
            n: progress.add_task(f"{n} (1 at a time)", total=-(-args.one_at_a_time // rows) * rows) for n in oaat
        }

        def advance(task, total, per_step, before=0):
            return lambda step: progress.update(task, completed=before + min((step + 1) * per_step, total))

        for n in names:
            for k, seed in enumerate(seeds):
                runs[n].append(
                    run_one(
                        n,
                        scenario,
                        dim,
                        plan[n],
                        args.batch,
                        seed,
                        args.mab_alpha,
                        args.learn_from,
                        advance(tasks[n], plan[n], args.batch, before=k * plan[n]),
                    )
                )
            r = pooled(runs[n])
            progress.update(tasks[n], description=f"{n}: {r.normalised_score:+.3f}, {r.decisions_per_s:,.0f}/s")
        for n in oaat:
            total = progress.tasks[one_tasks[n]].total
            one_at_a_time[n] = mabwiser_one_at_a_time(
                n,
                scenario,
                dim,
                args.one_at_a_time,
                args.batch,
                seeds[0],
                args.mab_alpha,
                args.learn_from,
                advance(one_tasks[n], total, rows),
            )
        if args.reach_contexts:
            task = progress.add_task("reachable ceiling (contexts, fit)", total=steps + 1)
            reachable = reachable_ceiling(
                scenario,
                seeds[0],
                args.reach_contexts,
                args.reach_actions_per_context,
                args.reach_held_out,
                steps,
                lambda step: progress.update(task, completed=step + 1),
            )
    wall = time.perf_counter() - t_start
    results = [pooled(runs[n]) for n in names]

    print()
    print(f"command: {command}")
    print(
        f"nba/Bandit-v0, default scenario: {scenario.action_space.n_actions} actions, {dim} context features; "
        f"{seed_words(seeds)}, batch {args.batch}; learning from {args.learn_from} rewards; "
        f"machine {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; BLAS threads "
        f"{args.blas_threads or 'library default'}"
    )
    cpu, libraries = cpu_model(), versions()
    print(f"CPU {cpu}; {libraries}")
    load_after = os.getloadavg()
    print(
        f"load average (1, 5, 15 min) before {', '.join(f'{x:.1f}' for x in load_before)}, after "
        f"{', '.join(f'{x:.1f}' for x in load_after)}: other processes on the machine slow every timing"
    )
    capped = [n for n in names if plan[n] != args.decisions]
    if capped:
        print(f"capped: {', '.join(f'{n} at {plan[n]:,}' for n in capped)} decisions (others {args.decisions:,})")
    print(
        "mean reward: realised; mean E[r]: exact expected reward of the chosen action; oracle / no contact: exact "
        "expected reward of the best eligible action / of no contact on the same contexts; decisions/s: learn+act "
        "only (simulator excluded); greedy: normalised score of the action the learner gave the most probability"
    )
    if any(n in MABWISER for n in names):
        print(
            f"MABWiser has no eligibility mask: the best eligible arm of predict_expectations is chosen "
            f"(alpha {args.mab_alpha:g}, one ridge model per arm)"
        )
    print()
    if results:
        print(table(results, one_at_a_time))
        print()
    if len(seeds) > 1 and results:
        print(f"normalised score on each seed (the table above: means over the {len(seeds)} seeds)")
        print(seed_table(runs, seeds))
        print()
    if results:
        print("learning curve: normalised score of each tenth of the run")
        print(curve_table(results))
        print()
    if reachable:
        print(reachable_text(reachable, results))
        print()
    if synthetic:
        print(
            f"one decision at a time, side by side (seed {synthetic['seed']}): {synthetic['actions']} actions, "
            f"{synthetic['features']} features, reward ~ Bernoulli(sigmoid(x . w_a + c_a)); learners take turns of "
            f"{synthetic['chunk']} decisions on the same contexts; decisions/s: wall clock of the calls to the "
            f"learner (act + update), CPU: the thread's CPU time in them; score: (E[r] - uniform) / (oracle - "
            f"uniform), oracle {synthetic['oracle']:.4f}, uniform {synthetic['uniform']:.4f}"
        )
        print(synthetic_table(synthetic))
        print()
    text, target_figures = targets(results, one_at_a_time, reachable)
    print(text)
    if synthetic:
        text, figures = synthetic_targets(synthetic)
        target_figures.update(figures)
        print(text)
    print(f"\nwall time {wall:,.0f} s")
    if args.plot and results:
        from training.plots import score_curves

        args.plot.parent.mkdir(parents=True, exist_ok=True)
        score_curves(
            {r.name: r.curve for r in results},
            {r.name: r.decisions for r in results},
            reachable.normalised_score if reachable else None,
            args.plot,
            f"nba/Bandit-v0, {seed_words(seeds)}: learning {args.learn_from} rewards",
            reference_label="reachable",
        )
        print(f"learning curves: {args.plot}")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "command": command,
                    "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_implementation()} "
                    f"{platform.python_version()}",
                    "cpu": cpu,
                    "versions": libraries,
                    "settings": {
                        "decisions": args.decisions,
                        "batch": args.batch,
                        "seeds": seeds,
                        "plan": plan,
                        "learn_from": args.learn_from,
                        "one_at_a_time": args.one_at_a_time,
                        "mab_alpha": args.mab_alpha,
                        "reach_contexts": args.reach_contexts,
                        "reach_actions_per_context": args.reach_actions_per_context,
                        "reach_held_out": args.reach_held_out,
                        "synthetic_decisions": args.synthetic_decisions,
                        "synthetic_chunk": args.synthetic_chunk,
                        "blas_threads": args.blas_threads,
                        "load_average_before": load_before,
                        "load_average_after": load_after,
                        "n_actions": scenario.action_space.n_actions,
                        "dim": dim,
                    },
                    "results": [vars(r) for r in results],
                    "runs_per_seed": {n: [vars(r) for r in rs] for n, rs in runs.items()} if len(seeds) > 1 else None,
                    "mabwiser_one_at_a_time": one_at_a_time,
                    "reachable": vars(reachable) if reachable else None,
                    "share_of_reachable": {r.name: r.normalised_score / reachable.normalised_score for r in results}
                    if reachable
                    else None,
                    "one_at_a_time_synthetic": synthetic,
                    "targets": target_figures,
                    "wall_seconds": wall,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
