"""Can the evidence see a change of send slot? A surrogate estimate of its lift, against the exact one.

    python bench/timing_surrogate.py [--logs 10] [--decisions 20000] [--refits 20] [--seed 0] [--json out.json]

The quickstart's ``send_time`` keeps business as usual's customers, channels and contents and moves only the
send slot (:data:`training.quickstart.BANDIT_PARAMS`). Marginal DR by channel cannot see that change (every
row's channel weight is business as usual's), and the action-level weights are unsupported, so the
shortlist reads the reward model's difference between two slots (``bench/RESULTS.md``). This bench measures
another line of evidence, which does not rest on the reward's noise (organic purchases, standard deviation
about 12 per decision), on ``--logs`` evaluation logs of the quickstart's exploring logger, each of its own
purpose (``timing-surrogate/eval/<j>``): :func:`nba.surrogate.slot_lift`, how much more often the target's
messages are opened (a logistic model of opening by channel and local send hour, fitted on the log's
contacts) times the conversions' value per opened message, its interval from ``--refits`` refits on
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
from nba import ope, surrogate  # noqa: E402
from nba.policies.safe import SPIBB  # noqa: E402
from nba.policies.sto import SendTime  # noqa: E402
from training.quickstart import BANDIT_PARAMS, SAFE, TRAIN_PURPOSE  # noqa: E402

EVAL = "timing-surrogate/eval"  # evaluation log j is the purpose f"{EVAL}/{j}"
TRAIN_DECISIONS = 30_000  # the quickstart's training log


class WorstSlot:
    """A send-time model's scores turned over: the control sends each message at the slot it scores worst."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def slot_scores(self, X: np.ndarray) -> np.ndarray:
        return -self.model.slot_scores(X)


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
            up = surrogate.slot_lift(
                p, base, log["context"], log["action"], log["events"].take(slice(None)), sp, sc.feature_spec,
                clusters=log["customer_id"], n_bootstrap=args.refits, seed=j,
            )  # fmt: skip
            est, lo, hi = up.value, up.ci_low, up.ci_high
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
