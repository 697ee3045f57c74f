"""How much of the oracle's uplift can a policy reach from observations alone?

    python bench/ceiling.py [--contexts 100000] [--actions-per-context 1] [--blind-seeds 0,1,2] [--draws 64]

Logs ``--contexts`` decisions on ``nba/Bandit-v0`` under uniform random actions, fits a LightGBM
reward model on ``[x, psi(a)]`` once with the *exact expected* reward as label (what no learner
ever sees: no noise) and once with the *realised* reward, and scores the greedy policy of each on
fresh contexts: normalised score (V - V_no_contact) / (V_oracle - V_no_contact) on exact
expectations. The first figure bounds what a learner with that much data and this model class can
reach; the gap to the second is the cost of reward noise. Two more labels: the *attributed* reward
(the revenue of the message's own conversions less cost and penalties: what the learners learn from
by default, without the organic purchases' noise) and the exact uplift over no contact. Last, the
models of ``lgbm_funnel`` fitted on the same rows' attributed rewards and funnel events (opened,
clicked, converted).

Then what the oracle owes to each customer's own latent traits: on contexts a month into a stream
under uniform random contacts, the oracle is scored again with some traits replaced by their
segment's typical value (affinities and basket at the segment's mean, peak hours at the segment's
peak, sensitivity 1) when it chooses, and the true traits when its choice is scored. No learner
sees those traits; a policy that knew everything else exactly would score what "all replaced" does.
On the same contexts, the oracle choosing on the exact expected *attributed* reward (what the
learners learn from) with the true traits: what learning from that reward, and not the total, costs.

Last, a bound that lets the observer learn: the one of :class:`envs.oracle.ContentPosterior`, which
knows every latent trait but content affinity and infers that from each customer's clicks by exact
Bayes (``--draws`` prior samples per customer and content), acts on the bench's own stream
(``nba/Bandit-v0``, 100 decisions of 1,000 rows, as ``bench/policies.py`` runs every learner) and is
scored as the learners are (:func:`envs.oracle.content_blind_score`), on each of ``--blind-seeds``;
on the first seed also without learning (the prior alone) and learning from a click drawn for every
message sent, as if every one had been seen. About two minutes a run at 64 draws.
"""

from __future__ import annotations

import argparse
import dataclasses

import lightgbm as lgb
import numpy as np

from envs import response
from envs.oracle import content_blind_score
from envs.random import purpose_code
from envs.rollout import funnel_events
from envs.scenario import Scenario
from envs.simulation import Simulation
from nba.log.records import FUNNEL, FunnelEvents
from nba.policies.base import masked_argmax
from nba.policies.funnel import LGBMFunnel
from nba.policies.linear import action_design

BLIND = "ceiling/content-blind"  # the content-blind observer's stream of customers


def logged(sc: Scenario, seed: int, purpose: str, n: int, steps: int, per_context: int):
    sim = Simulation(sc, seed, n, purpose=purpose, decision_hour=None, replace_rate=1 / 30, penalties=True)
    rng = np.random.default_rng([seed, purpose_code(purpose)])
    out = {k: [] for k in ("X", "er", "mask", "a", "r", "att", "events")}
    for _ in range(steps):
        X, er, mask = np.ascontiguousarray(sim.observe()), sim.expected_rewards(), sim.action_mask()
        u = rng.random((n, per_context))
        cdf = np.cumsum(mask / mask.sum(1, keepdims=True), axis=1)
        a = (cdf[:, None, :] <= u[:, :, None]).sum(axis=2)  # uniform over eligible, per_context each
        res = sim.step(a[:, 0])
        for k, v in (
            ("X", X),
            ("er", er),
            ("mask", mask),
            ("a", a),
            ("r", res.reward),
            ("att", res.attributed),
            ("events", funnel_events(res)),
        ):
            out[k].append(v)
    events = out.pop("events")
    return {
        **{k: np.concatenate(v) for k, v in out.items()},
        "events": FunnelEvents(*(np.concatenate([getattr(e, f) for e in events]) for f in FUNNEL + ("value",))),
    }


def trait_knowledge(sc: Scenario, seed: int, n: int = 20_000, warmup: int = 30) -> None:
    """Print the oracle's normalised score when it chooses with segment-typical traits in place of some."""
    sa, space = sc.arrays(), sc.action_space
    sim = Simulation(sc, seed, n, purpose="ceiling/traits", decision_hour=None, replace_rate=1 / 30, penalties=True)
    rng = np.random.default_rng([seed, purpose_code("ceiling/traits")])
    for _ in range(warmup):  # a month of uniform random contacts: histories, fatigue, opt-outs
        mask = sim.action_mask()
        sim.step((np.cumsum(mask / mask.sum(1, keepdims=True), 1) <= rng.random((n, 1))).sum(1))
    mask, er = sim.action_mask(), sim.expected_rewards()
    v_nc, v_or = er[:, 0].mean(), np.where(mask, er, -np.inf).max(1).mean()
    tr, seg = sim.traits, sim.traits.segment.astype(np.intp)
    f32 = np.float32
    typical = {
        "channel_affinity": sa.seg_channel_affinity[seg].astype(f32),
        "content_affinity": sa.seg_content_affinity[seg].astype(f32),
        "peak_hour": np.mod(sa.peak_hour[None, :] + sa.peak_shift_h[seg, None], 24.0).astype(f32),
        "basket": sa.basket[seg].astype(f32),
        "organic_rate": (-np.log1p(-sa.organic_per_day[seg])).astype(f32),
        "sensitivity": np.ones(n, f32),
    }
    actions = np.where(mask, np.arange(space.n_actions)[None, :], 0)

    def scored(believed: np.ndarray) -> float:
        """Normalised score, on the true expected rewards, of the eligible action ``believed`` rates best."""
        v = er[np.arange(n), masked_argmax(believed, mask)].mean()
        return (v - v_nc) / (v_or - v_nc)

    def score(replaced: list[str]) -> float:
        t = dataclasses.replace(tr, **{k: typical[k] for k in replaced})
        return scored(
            response.expected_reward(
                sc, sa, space, t, response.moment(sc, sa, t, sim.state, sim.history), actions, penalties=True
            )
        )

    print(
        f"\noracle choosing with segment-typical traits ({n:,} contexts after {warmup} uniform random steps; "
        f"V_no_contact {v_nc:.3f}, V_oracle {v_or:.3f}):"
    )
    for k in typical:
        print(f"  {k:<18} replaced: normalised score {score([k]):.3f}")
    print(f"  all replaced:                 normalised score {score(list(typical)):.3f}")
    # the true traits, but the objective the learners learn from: no organic purchases, no discount lost on them
    attributed = response.expected_attributed_reward(sc, sa, space, tr, sim.moment, actions, penalties=True)
    print(f"  none replaced, choosing on the expected attributed reward: normalised score {scored(attributed):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contexts", type=int, default=100_000)
    ap.add_argument(
        "--actions-per-context",
        type=int,
        default=1,
        help="exact-label rows per logged context (realised rewards exist for the first only)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--blind-seeds",
        default="0,1,2",
        help="streams on which the content-blind observer runs, comma-separated ('' for none)",
    )
    ap.add_argument("--draws", type=int, default=64, help="the content-blind observer's prior draws")
    args = ap.parse_args()
    try:
        blind_seeds = [int(x) for x in args.blind_seeds.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--blind-seeds: expected comma-separated integers, got {args.blind_seeds!r}")
    if args.draws < 1:
        ap.error(f"--draws: must be >= 1, got {args.draws}")
    sc = Scenario.default()
    psi = action_design(sc.action_space).astype(np.float32)
    batch = 2000
    train = logged(sc, args.seed, "ceiling/train", batch, max(1, args.contexts // batch), args.actions_per_context)
    test = logged(sc, args.seed, "ceiling/held-out", batch, 5, 1)
    rows = np.arange(len(train["X"]))
    params = {
        "objective": "regression",
        "learning_rate": 0.05,
        "num_leaves": 31,
        "min_data_in_leaf": 100,
        "verbose": -1,
        "num_threads": 2,
        "seed": 0,
    }
    n, A = len(test["X"]), sc.action_space.n_actions
    grid = np.hstack([np.repeat(test["X"], A, 0), np.tile(psi, (n, 1))])
    v_nc = test["er"][:, 0].mean()
    v_or = np.where(test["mask"], test["er"], -np.inf).max(axis=1).mean()
    for label in ("exact expected reward", "realised reward", "attributed reward", "exact uplift"):
        r_idx, acts = rows, train["a"][:, 0]
        if label == "exact expected reward":
            r_idx = np.repeat(rows, args.actions_per_context)
            acts = train["a"].ravel()
            y = train["er"][r_idx, acts]
        elif label == "realised reward":
            y = train["r"]
        elif label == "attributed reward":
            y = train["att"]
        else:
            y = train["er"][rows, acts] - train["er"][rows, 0]
        model = lgb.train(params, lgb.Dataset(np.hstack([train["X"][r_idx], psi[acts]]), y), 300)
        scores = model.predict(grid).reshape(n, A)
        chosen = masked_argmax(scores, test["mask"])
        v = test["er"][np.arange(n), chosen].mean()
        print(
            f"greedy on a model of the {label:<22} ({len(y):>9,} rows): normalised score "
            f"{(v - v_nc) / (v_or - v_nc):.3f}"
        )
    # lgbm_funnel's models (its defaults) fitted once on the same rows' attributed rewards and funnel events
    funnel = LGBMFunnel(sc.action_space, sc.feature_spec.dim, min_samples=1)
    funnel.update(train["X"], train["a"][:, 0], train["att"], events=train["events"])
    v = test["er"][np.arange(n), masked_argmax(funnel.scores(test["X"], test["mask"]), test["mask"])].mean()
    print(
        f"greedy on lgbm_funnel's models of the funnel events ({len(rows):>9,} rows): normalised score "
        f"{(v - v_nc) / (v_or - v_nc):.3f}"
    )
    trait_knowledge(sc, args.seed)
    content_blind(sc, blind_seeds, args.draws)


def content_blind(sc: Scenario, seeds: list[int], draws: int) -> None:
    """Print the content-blind observer's normalised score on the bench's stream of each seed."""
    if not seeds:
        return
    print(
        f"\nknowing every trait but content affinity, learning it from clicks by exact Bayes ({draws} draws), "
        "on the bench's stream (1,000 rows x 100 decisions):"
    )
    scores = []
    for seed in seeds:
        scores.append(content_blind_score(sc, seed, draws=draws, purpose=BLIND))
        print(f"  seed {seed}: normalised score {scores[-1]:.3f}", flush=True)
    if len(scores) > 1:
        print(f"  mean {np.mean(scores):.3f} (standard error {np.std(scores, ddof=1) / np.sqrt(len(scores)):.3f})")
    alone = content_blind_score(sc, seeds[0], draws=draws, prior=True, purpose=BLIND)
    print(f"  seed {seeds[0]}, the prior alone (no learning): {alone:.3f}")
    print(
        f"  seed {seeds[0]}, a click drawn for every message sent, as if all were seen: "
        f"{content_blind_score(sc, seeds[0], draws=draws, all_seen=True, purpose=BLIND):.3f}"
    )


if __name__ == "__main__":
    main()
