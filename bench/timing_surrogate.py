"""Can the evidence see a change of send slot? A surrogate estimate of its lift, against the exact one.

    python bench/timing_surrogate.py [--logs 10] [--decisions 20000] [--refits 20] [--seed 0] [--json out.json]

The quickstart's ``send_time`` keeps business as usual's customers, channels and contents and moves only the
send slot (:data:`training.quickstart.BANDIT_PARAMS`). Marginal DR by channel cannot see that change (every
row's channel weight is business as usual's), and the action-level weights are unsupported, so the
shortlist reads the reward model's difference between two slots (``bench/RESULTS.md``). This bench measures
another line of evidence, which does not rest on the reward's noise (organic purchases, standard deviation
about 12 per decision), on ``--logs`` evaluation logs of the quickstart's exploring logger, each of its own
purpose (``timing-surrogate/eval/<j>``):

* the probability that a message is opened, by channel and local send hour (the decision's hour for "now",
  else the slot's), fitted on the log's contacts by a logistic regression (:func:`logistic`) on the
  context, the channel, the hour's first two harmonics per channel, and the alignment of the hour with the
  customer's own hour preference on that channel;
* the value of an opened message: the conversions' value over the opened messages (no organic purchase);
* the lift: over every decision, the difference of the two policies' probabilities of each (channel,
  content, slot), times its opening probability, times that value; the interval from ``--refits`` refits on
  bootstrap resamples of the customers.

It assumes that once a message is opened its slot no longer matters, and it leaves out the opt-outs a better
slot avoids: it is built to err low. Policies: ``send_time`` (conservative, trained as the quickstart trains
it, on the training log of purpose ``quickstart/train-log`` at ``--seed``) and a control that sends the same
messages at the slot its hour model scores worst. Per log: the exact lift over business as usual on the log's
contexts, the surrogate estimate and interval, and marginal DR's paired lift (what the shortlist reads now).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ope_coverage import CHUNK_ROWS, TAU, build, simulate_log  # noqa: E402

from envs.scenario import Scenario  # noqa: E402
from nba import ope  # noqa: E402
from nba.policies.safe import SPIBB  # noqa: E402
from nba.policies.sto import SendTime, SendTimeModel  # noqa: E402
from training.quickstart import BANDIT_PARAMS, SAFE, TRAIN_PURPOSE  # noqa: E402

EVAL = "timing-surrogate/eval"  # evaluation log j is the purpose f"{EVAL}/{j}"
TRAIN_DECISIONS = 30_000  # the quickstart's training log


class WorstSlot:
    """A send-time model's scores turned over: the control sends each message at the slot it scores worst."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def slot_scores(self, X: np.ndarray) -> np.ndarray:
        return -self.model.slot_scores(X)


def design(scenario: Scenario, X: np.ndarray, channel: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Features of a message on ``channel`` (n,) sent at the local hour of angle ``t`` (n,) in contexts ``X``."""
    names, channels = scenario.feature_spec.names, scenario.action_space.channels
    n = len(X)
    onehot = np.zeros((n, len(channels)))
    onehot[np.arange(n), channel] = 1.0
    harmonics = np.stack([np.cos(t), np.sin(t), np.cos(2 * t), np.sin(2 * t)], axis=1)
    pref_cos = np.array([names.index(f"hour_pref_cos={c}") for c in channels])[channel]
    pref_sin = np.array([names.index(f"hour_pref_sin={c}") for c in channels])[channel]
    align = X[np.arange(n), pref_cos] * np.cos(t) + X[np.arange(n), pref_sin] * np.sin(t)
    per_channel = (onehot[:, :, None] * harmonics[:, None, :]).reshape(n, -1)
    return np.hstack([X, onehot, harmonics, per_channel, align[:, None]])


def logistic(features: np.ndarray, y: np.ndarray, weight: np.ndarray, ridge: float = 1.0) -> np.ndarray:
    """Coefficients (intercept first) of a weighted logistic regression with an L2 penalty ``ridge`` on the
    standardised features (Newton's method); :func:`opening` applies them."""
    mu, sd = features.mean(axis=0), features.std(axis=0) + 1e-9
    Z = np.hstack([np.ones((len(features), 1)), (features - mu) / sd])
    beta = np.zeros(Z.shape[1])
    penalty = np.full(Z.shape[1], ridge)
    penalty[0] = 0.0
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-Z @ beta))
        grad = Z.T @ (weight * (y - p)) - penalty * beta
        hess = (Z * (weight * p * (1 - p))[:, None]).T @ Z + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        beta += step
        if np.max(np.abs(step)) < 1e-8:
            break
    return np.concatenate([[beta[0] - np.sum(beta[1:] * mu / sd)], beta[1:] / sd])


def opening(beta: np.ndarray, features: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(beta[0] + features @ beta[1:])))


def surrogate_lift(
    scenario: Scenario, log: dict[str, Any], target: np.ndarray, base: np.ndarray, refits: int, seed: int
) -> tuple[float, float, float]:
    """(estimate, low, high) of V(target) - V(base) through the opening probability (module docstring), for
    two distributions that differ only in the send slot; the 95 % interval from customer-bootstrap refits."""
    sp = scenario.action_space
    c, k, s = sp.n_channels, sp.n_contents, sp.n_slots
    X, a = log["context"], log["action"]
    events = log["events"].take(slice(None))
    angles = SendTimeModel(scenario.feature_spec, sp).slot_angles(X)  # (N, S) each slot's local send hour
    sent = np.flatnonzero(a > 0)
    channel, slot = (a[sent] - 1) // (k * s), (a[sent] - 1) % s
    diff = (target - base)[:, 1:].reshape(len(X), c, k, s)
    moved = np.abs(diff) > 1e-12
    rows, cs, _, ss = np.nonzero(moved)
    weight = diff[moved]
    candidates = design(scenario, X[rows], cs, angles[rows, ss])
    features = design(scenario, X[sent], channel, angles[sent, slot])
    opened, value = events.opened[sent], events.value[sent]
    customer = np.unique(log["customer_id"], return_inverse=True)[1]
    g, rng = customer.max() + 1, np.random.default_rng(seed)
    out = []
    for b in range(refits + 1):  # b = 0: the log itself; then the customers resampled
        w = np.ones(g) if b == 0 else np.bincount(rng.integers(0, g, g), minlength=g).astype(np.float64)
        ws = w[customer[sent]]
        beta = logistic(features, opened.astype(np.float64), ws)
        per_open = np.sum(ws * value * opened) / np.sum(ws * opened)
        lift = np.bincount(rows, weights=weight * opening(beta, candidates) * per_open, minlength=len(X))
        out.append(np.sum(w[customer] * lift) / np.sum(w[customer]))
    lo, hi = np.quantile(out[1:], [0.025, 0.975]) if refits > 1 else (np.nan, np.nan)
    return float(out[0]), float(min(lo, out[0])), float(max(hi, out[0]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--logs", type=int, default=10)
    ap.add_argument("--decisions", type=int, default=20_000)
    ap.add_argument("--refits", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    t_start = time.perf_counter()
    sc = Scenario.default()
    sp, segments = sc.action_space, tuple(sc.segments)
    train = simulate_log(sc, args.seed, TRAIN_DECISIONS, TRAIN_PURPOSE, keep_events=True)
    learner = SendTime(sp, segments, **BANDIT_PARAMS["send_time"])
    policy = SPIBB(sp, segments, learner=learner, baseline="business_as_usual", **SAFE)
    for start in range(0, TRAIN_DECISIONS, CHUNK_ROWS):
        r = slice(start, start + CHUNK_ROWS)
        policy.update(train["context"][r], train["action"][r], train["reward"][r], train["propensity"][r])
    worst = copy.copy(learner)
    worst.model = WorstSlot(learner.model)
    bau = build("business_as_usual", sc)
    targets = {"send_time": policy, "worst slot": worst}
    rows: list[dict[str, Any]] = []
    print(f"send_time trained in {time.perf_counter() - t_start:.0f} s; {args.logs} logs of {args.decisions:,}")
    for j in range(args.logs):
        t0 = time.perf_counter()
        log = simulate_log(sc, args.seed, args.decisions, f"{EVAL}/{j}", keep_truth=True, keep_events=True)
        model = ope.fit_reward_models(
            log["context"], log["action"], log["reward"], sp, mask=log["eligible"], seed=j,
            clusters=log["customer_id"], num_boost_round=30, threads=1,
        )  # fmt: skip
        data = {k: log[k] for k in ("action", "propensity", "reward", "customer_id")}
        kw = {"tau": TAU, "n_bootstrap": 200, "seed": j, "logging": log["logging"], "space": sp}
        base = bau.probabilities(log["context"], log["eligible"])
        mdr_base = ope.evaluate(base, data, q_hat=model, **kw)["mdr"]
        for name, pol in targets.items():
            p = pol.probabilities(log["context"], log["eligible"])
            exact = float(np.einsum("ij,ij->i", p - base, log["er"]).mean())
            est, lo, hi = surrogate_lift(sc, log, p, base, args.refits, j)
            paired = ope.lift(ope.evaluate(p, data, q_hat=model, **kw)["mdr"], mdr_base)
            rows.append(
                {"log": j, "policy": name, "exact": exact, "surrogate": [est, lo, hi],
                 "mdr": [paired.value, paired.ci_low, paired.ci_high]}
            )  # fmt: skip
            print(
                f"log {j} {name:<10} exact {exact:+.4f}  surrogate {est:+.4f} [{lo:+.4f}, {hi:+.4f}]  "
                f"paired mdr {paired.value:+.4f} [{paired.ci_low:+.4f}, {paired.ci_high:+.4f}]",
                flush=True,
            )
        print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    print()
    for name in targets:
        mine = [r for r in rows if r["policy"] == name]
        exact = np.array([r["exact"] for r in mine])
        for key in ("surrogate", "mdr"):
            v, lo, hi = (np.array([r[key][i] for r in mine]) for i in range(3))
            print(
                f"{name:<10} {key:<9} exact {exact.mean():+.4f}  estimate {v.mean():+.4f} "
                f"(bias {np.mean(v - exact):+.4f})  covers {np.mean((lo <= exact) & (exact <= hi)):.2f}"
                f"  lower bound > 0: {int((lo > 0).sum())}  upper bound < 0: {int((hi < 0).sum())} of {len(mine)}"
            )
    wall = time.perf_counter() - t_start
    print(f"\n{wall:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"seed": args.seed, "decisions": args.decisions, "wall_s": wall, "rows": rows}))


if __name__ == "__main__":
    main()
