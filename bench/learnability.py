"""What bounds a learned champion in the quickstart: the problem's ceiling, or learning from its log?

    python bench/learnability.py [--seed 0] [--sizes 30000,100000,300000] [--eval 20000] [--reach 300000]
                                 [--threads 1] [--json out.json]

The quickstart's learned bandits run in their conservative mode: they contact the customers business as
usual contacts and choose the message (channel, content, send time) of those contacts. Every figure below
is the exact value per decision of such a policy on the contexts of one evaluation log of the quickstart's
exploring logger (``Explore(business_as_usual, 0.2, 0.05)``, ``(seed, "learnability/eval")``), beside
business as usual's on the same contexts:

* **latent oracle**: business as usual's contacts, each with the eligible message of the highest exact
  expected reward (it reads the customers' latent traits: no learner can);
* **observable ceiling**: the same with the message a LightGBM model (``bench/policies.py``'s reachable
  ceiling settings) scores best, the model fitted to the *exact* expected reward of one uniformly random
  eligible action on each of ``--reach`` contexts (``(seed, "learnability/reach")``);
* **the quickstart's learner** (``lgbm_egreedy``'s reward model; its greedy message on business as usual's
  contacts: :class:`nba.policies.safe.SPIBB` with ``contacts="keep"`` and ``n_min=0``, nothing kept back
  for thin support), fitted on ``--sizes`` decisions of
  (a) uniformly random actions or (b) the quickstart's exploring logger, each labelled (i) with the
  realised reward, as a log records it, or (ii) with its exact expected reward (no response noise);
  and (b, i) also in the quickstart's own conservative mode (``n_min`` at its default);
* **the funnel learner** (``lgbm_funnel``: the open, click and conversion probabilities and the
  conversion's value, each a model of its own, from the decisions' funnel events), fitted on the same
  decisions with their realised rewards and events, greedy and conservative (``n_min`` 10 and the default),
  and also on (c) the same number of decisions of the logger with message exploration
  (``Explore(business_as_usual, 0.2, 0.05, messages=1)``: business as usual's contacts, each with a random
  eligible message: ``nba simulate --messages 1``); and each funnel also held to business as usual's
  channel (``contacts="channel"``: content and send time only), greedy and at ``n_min`` 10.

Before each size's rows it prints how many funnel events its training sets hold: the models of the later
stages learn from those.

Each training set is its own ``(seed, purpose)``. Prints the realised reward's mean and spread on the
evaluation log, then the table; with ``--json``, writes it.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ope_coverage import CHUNK_ROWS, Events, build, simulate_log  # noqa: E402
from policies import exact_reward_model  # noqa: E402

from envs.rollout import bandit_simulation, funnel_events, policy_rng  # noqa: E402
from envs.scenario import Scenario  # noqa: E402
from nba.policies.base import sample, uniform  # noqa: E402
from nba.policies.linear import action_design  # noqa: E402
from nba.policies.safe import N_MIN, SPIBB  # noqa: E402
from training.quickstart import SAFE  # noqa: E402

EVAL = "learnability/eval"
REACH = "learnability/reach"
UNIFORM = "learnability/uniform"
LOGGED = "learnability/logged"
MESSAGES = "learnability/messages"
N_MIN_LOW = 10.0  # a lighter conservative mode, for logs that spread their contacts over every message
STEPS = 100  # decisions per customer slot in the uniform streams (bench/policies.py's reachable ceiling)


def uniform_data(scenario: Scenario, seed: int, n: int, purpose: str) -> dict[str, np.ndarray]:
    """``n`` decisions of uniformly random eligible actions: contexts, actions, propensities, realised and
    exact rewards, and funnel events."""
    rows = max(1, n // STEPS)
    sim = bandit_simulation(scenario, seed, rows, purpose)
    rng = policy_rng(seed, purpose)
    out: dict[str, list] = {k: [] for k in ("context", "action", "propensity", "reward", "exact")}
    events = []
    for _ in range(STEPS):
        X, er, mask = sim.observe(), sim.expected_rewards(), sim.action_mask()
        p = uniform(mask)
        a = sample(p, rng.random(rows))
        res = sim.step(a)
        for k, v in (
            ("context", X),
            ("action", a),
            ("propensity", p[np.arange(rows), a]),
            ("reward", res.reward),
            ("exact", er[np.arange(rows), a]),
        ):
            out[k].append(np.array(v))
        events.append(funnel_events(res))
    return {**{k: np.concatenate(v) for k, v in out.items()}, "events": Events(events)}


def logged_data(scenario: Scenario, seed: int, n: int, purpose: str, messages: float = 0.0) -> dict[str, np.ndarray]:
    """``n`` decisions of the quickstart's exploring logger (``messages``: that share of its contacts with a
    random eligible message), with the exact reward of each logged action."""
    log = simulate_log(scenario, seed, n, purpose, keep_truth=True, keep_events=True, messages=messages)
    log["exact"] = log["er"][np.arange(n), log["action"]]
    return log


def value_keeping_contacts(baseline: np.ndarray, er: np.ndarray, mask: np.ndarray, choice: np.ndarray) -> float:
    """Exact value of business as usual's contacts with the message ``choice`` (n,) on each contact."""
    rows = np.arange(len(er))
    has = mask[:, 1:].any(axis=1)
    contact = np.where(has, er[rows, choice], er[:, 0])
    return float((baseline[:, 0] * er[:, 0] + (1.0 - baseline[:, 0]) * contact).mean())


def learner_values(
    scenario,
    data,
    labels: str,
    ev,
    threads: int,
    n_mins: tuple[float, ...],
    learner: str = "lgbm_egreedy",
    channel_n_mins: tuple[float, ...] = (),
) -> list[float]:
    """Exact values of ``learner`` fitted on ``data`` (labels: "reward" or "exact"; the funnel learner also
    takes the decisions' events), on business as usual's contacts, on the evaluation contexts: one value
    per ``n_min`` of the conservative mode (0: the learner's greedy message), then one per
    ``channel_n_mins`` held to business as usual's channel too (``contacts="channel"``); one fit serves
    them all."""
    policy = SPIBB(
        scenario.action_space,
        tuple(scenario.segments),
        learner=build(learner, scenario, {"threads": threads}),
        baseline="business_as_usual",
        **SAFE,
    )
    events = getattr(policy.learner, "learns_from_events", False)
    n = len(data["action"])
    for s in range(0, n, CHUNK_ROWS):  # in chunks, as the quickstart learns from its log
        rows = slice(s, s + CHUNK_ROWS)
        extra = {"events": data["events"].take(rows)} if events else {}
        policy.update(
            data["context"][rows], data["action"][rows], data[labels][rows], data["propensity"][rows], **extra
        )
    out = []
    modes = [(n_min, SAFE["contacts"]) for n_min in n_mins] + [(n_min, "channel") for n_min in channel_n_mins]
    for n_min, contacts in modes:  # the support counts depend on neither: one fit serves every value
        policy.n_min, policy.contacts = float(n_min), contacts
        probs = policy.probabilities(ev["context"], ev["eligible"])
        out.append(float(np.einsum("ij,ij->i", probs, ev["er"]).mean()))
    return out


def observable_ceiling(scenario: Scenario, seed: int, contexts: int, ev, threads: int) -> np.ndarray:
    """The message (n,) a LightGBM model of the exact expected reward (``bench/policies.py``'s
    :func:`exact_reward_model`) scores best on each evaluation row."""
    model = exact_reward_model(scenario, seed, contexts, STEPS, REACH, threads=threads)
    psi = action_design(scenario.action_space).astype(np.float32)
    n, a = ev["context"].shape[0], scenario.action_space.n_actions
    best = np.empty(n, np.int64)
    for rows in np.array_split(np.arange(n), max(1, n // 1000)):
        grid = np.hstack([np.repeat(ev["context"][rows].astype(np.float32), a, axis=0), np.tile(psi, (len(rows), 1))])
        pred = model.predict(grid).reshape(len(rows), a)
        best[rows] = np.where(ev["eligible"][rows, 1:], pred[:, 1:], -np.inf).argmax(axis=1) + 1
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sizes", default="30000,100000,300000", help="training decisions, comma-separated")
    ap.add_argument("--eval", type=int, default=20_000, help="decisions of the evaluation log")
    ap.add_argument("--reach", type=int, default=300_000, help="contexts of the observable ceiling's model")
    ap.add_argument("--threads", type=int, default=1, help="LightGBM threads")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    scenario = Scenario.default()
    ev = logged_data(scenario, args.seed, args.eval, EVAL)
    er, mask = ev["er"], ev["eligible"]
    baseline = build("business_as_usual", scenario).probabilities(ev["context"], mask)
    v_bau = float(np.einsum("ij,ij->i", baseline, er).mean())
    rows: list[tuple[str, float]] = []

    def add(label: str, value: float) -> None:
        rows.append((label, value))
        print(f"{label:<78} {value:7.3f} {value / v_bau - 1:+8.1%}   ({time.perf_counter() - t0:,.0f} s)", flush=True)

    print(f"business as usual: {v_bau:.3f} per decision on {args.eval:,} evaluation decisions (seed {args.seed})")
    r = ev["reward"]
    print(
        f"the evaluation log's realised reward: mean {r.mean():.3f}, standard deviation {r.std():.2f}, "
        f"max {r.max():,.0f}"
    )
    # what no estimator removes: the realised reward's spread around its exact expectation (organic purchases,
    # the basket's draw); even an on-policy mean of n decisions has this standard error
    noise = float((r - ev["exact"]).std())
    se = noise / np.sqrt(len(r))
    print(
        f"its noise around the exact expected reward: standard deviation {noise:.2f}; on {len(r):,} decisions "
        f"a policy's value is known to +-{1.96 * se:.3f} at best (95 %, on-policy), so a 95 % lower bound "
        f"clears business as usual's value only for a lift above {1.96 * se / v_bau:.1%}"
    )
    oracle = np.where(mask[:, 1:], er[:, 1:], -np.inf).argmax(axis=1) + 1
    add(
        "latent oracle: the best message by truth on business as usual's contacts",
        value_keeping_contacts(baseline, er, mask, oracle),
    )
    add(
        f"observable ceiling: LightGBM on exact rewards of {args.reach:,} uniform actions",
        value_keeping_contacts(
            baseline, er, mask, observable_ceiling(scenario, args.seed, args.reach, ev, args.threads)
        ),
    )
    for n in (int(s) for s in args.sizes.split(",")):
        uni = uniform_data(scenario, args.seed, n, f"{UNIFORM}/{n}")
        log = logged_data(scenario, args.seed, n, f"{LOGGED}/{n}")
        msg = logged_data(scenario, args.seed, n, f"{MESSAGES}/{n}", messages=1.0)
        for data, source in ((uni, "uniform"), (log, "logger"), (msg, "logger, random messages")):
            held = data["events"].fields
            counts = ", ".join(f"{k} {int(held[k].sum()):,}" for k in ("opened", "clicked", "converted"))
            print(f"{n:,} decisions, {source}: {int((data['action'] > 0).sum()):,} contacts, {counts}", flush=True)
        for data, source in ((uni, "uniform actions"), (log, "the quickstart's exploring logger")):
            for labels, what in (("exact", "exact rewards"), ("reward", "realised rewards")):
                greedy, safe = learner_values(scenario, data, labels, ev, args.threads, (0.0, N_MIN))
                add(f"learner, {n:,} decisions of {source}, {what}", greedy)
                if source != "uniform actions" and labels == "reward":
                    add(f"the same, conservative (n_min {N_MIN:g})", safe)
        for data, source in (
            (uni, "uniform actions"),
            (log, "the exploring logger"),
            (msg, "the logger, random messages"),
        ):
            greedy, low, safe, channel, channel_low = learner_values(
                scenario, data, "reward", ev, args.threads, (0.0, N_MIN_LOW, N_MIN), "lgbm_funnel", (0.0, N_MIN_LOW)
            )
            add(f"funnel learner, {n:,} decisions of {source}, realised rewards", greedy)
            add(f"the same, conservative (n_min {N_MIN_LOW:g})", low)
            add(f"the same, conservative (n_min {N_MIN:g})", safe)
            add("the same on business as usual's channel", channel)
            add(f"the same on business as usual's channel, conservative (n_min {N_MIN_LOW:g})", channel_low)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "seed": args.seed,
                    "eval": args.eval,
                    "reach": args.reach,
                    "business_as_usual": v_bau,
                    "reward_noise_sd": noise,
                    "rows": [{"policy": label, "value": v, "lift": v / v_bau - 1} for label, v in rows],
                    "machine": platform.machine(),
                    "wall_s": time.perf_counter() - t0,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
