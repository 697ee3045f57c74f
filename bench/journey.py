"""Long-term value on ``nba/Journey-v0``: offline RL against myopic bandits and rule-based journeys.

    python bench/journey.py [--log-customers 8000] [--eval-customers 4000] [--iterations 8] [--average 1]
                            [--learn-from attributed|total] [--weights 0,0.5,1] [--gamma 0.97]
                            [--check-day 10] [--check-days 60]

A marketing team's offline setting. Logged data: ``--log-customers`` customers for 90 days under
the business-as-usual schedule with randomisation (``--holdout`` no contact, ``--explore``
uniform over eligible actions; exact propensities). From those logs, learning from the
*attributed* reward by default (``--learn-from``: the revenue of the message's own conversions less
its cost; organic purchases, which no action causes, only add noise to what a model must find):

* the **myopic bandit**: a LightGBM reward model r(x, a), greedy — what a contextual bandit learns
  from the same data;
* **FQI**: fitted-Q iteration with LightGBM in two stages (:class:`nba.policies.fqi.TwoStageValue`,
  ``--iterations`` iterations, gamma ``--gamma``): Q(x, a) = r(x, a) + w * gamma * g(x, a), where r is
  the myopic bandit's own reward model and g(x, a) the fitted value of the state the action leads to
  (0 after churn: the bootstrap stops on termination, not truncation), its fit weighted by the logged
  propensities (as if the actions were drawn uniformly). The first iteration fits g to the Monte
  Carlo value of the logging policy (the return-to-go of the *total* reward, organic purchases
  included); each next one to the greedy value of the next state under the current Q, over the
  ``--bootstrap-top`` actions r rates best there, plus the state's fitted organic revenue.
  ``--iterations 1`` is one step of policy improvement over the logging policy. The weight w is
  chosen among ``--weights`` on ``--validation-customers`` other customers (their own seed), never on
  the held-out ones; w = 0 is the myopic bandit itself, so validation can refuse the future term.

Then every policy runs on ``--eval-customers`` held-out customers (another seed) for 90 days,
all on the same customers with the same luck (common random numbers), and the table gives the
90-day profit per customer with its 95% interval, and the paired differences the targets ask for:
FQI vs the best bandit (target >= +5%), vs the rule-based journey (target >= +30%) and vs business
as usual (target >= +10%), each interval excluding 0.

``--check-day D`` also checks FQI's choices against the simulator's truth: on the validation
customers, all following the myopic bandit until day D, it sets the advantage FQI predicts for its
choices on day D over the myopic ones against their true effect to day ``--check-days``, with
business as usual afterwards and with the myopic bandit afterwards.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from envs.rollout import LEARN_FROM, ValueEstimate, collect_transitions, journey_returns
from envs.scenario import Scenario
from nba.policies import create
from nba.policies.base import Explore, masked_argmax
from nba.policies.fqi import returns_to_go

# the customers of each stage, all of (--seed, purpose): no stage sees another's customers (envs.random)
LOG, VALIDATION, HELD_OUT = "journey/log", "journey/validation", "journey/held-out"


class Switch:
    """``before`` until day ``day``, ``at`` on that day, ``after`` from the next (a policy for one journey run);
    records the contexts and masks of day ``day``."""

    name = "switch"

    def __init__(self, before, at, after, day: int) -> None:
        self.before, self.at, self.after, self.day, self.space = before, at, after, day, at.space
        self.t, self.seen = 0, None

    def probabilities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        t, self.t = self.t, self.t + 1
        if t == self.day:
            self.seen = (X.copy(), mask.copy())
        return (self.before if t < self.day else self.at if t == self.day else self.after).probabilities(X, mask)


def check_choices(sc: Scenario, console: Console, myopic, fqi, bau, day: int, days: int, n: int, seed: int) -> dict:
    """Where FQI's choice on ``day`` differs from the myopic bandit's, is it better?

    All customers follow the myopic bandit until ``day``, then take FQI's choice or
    the myopic one, then follow business as usual or the myopic bandit until
    ``days``; common random numbers pair the runs. FQI's predicted advantage (its reward
    model's and its future term's) is set against the simulator's truth."""
    runs, seen = {}, None
    with Progress(console=console) as bar:
        task = bar.add_task(f"checking FQI's choices on day {day}", total=4 * days)
        for after_name, after in (("business as usual", bau), ("myopic bandit", myopic)):
            for at_name, at in (("fqi", fqi), ("myopic", myopic)):
                policy = Switch(myopic, at, after, day)
                runs[after_name, at_name] = journey_returns(
                    sc, policy, n, seed, days=days, purpose=VALIDATION, progress=lambda _: bar.advance(task)
                )
                seen = seen or policy.seen
    X, mask = seen
    rows = np.arange(len(X))
    chosen = {k: masked_argmax(p.probabilities(X, mask), mask) for k, p in (("myopic", myopic), ("fqi", fqi))}
    q_r, q_fqi = myopic.q_values(X, mask), fqi.q_values(X, mask)
    r = {k: q_r[rows, a] for k, a in chosen.items()}  # the chosen actions' fitted rewards
    total = {k: q_fqi[rows, a] for k, a in chosen.items()}  # and their FQI Q
    pred_r = float(np.mean(r["fqi"] - r["myopic"]))
    pred_g = float(np.mean((total["fqi"] - r["fqi"]) - (total["myopic"] - r["myopic"])))  # the future term's part
    out = {
        "day": day,
        "days": days,
        "differs": float(np.mean(chosen["fqi"] != chosen["myopic"])),
        "no_contact": {k: float(np.mean(a == 0)) for k, a in chosen.items()},
        "predicted": {"reward": pred_r, "future": pred_g},
        "truth": {},
    }
    none = out["no_contact"]
    console.print(
        f"day {day}: FQI's choice differs from the myopic bandit's for {out['differs']:.0%} "
        f"of customers (no contact: {none['fqi']:.0%} against {none['myopic']:.0%}); "
        f"predicted gain per customer {pred_r + pred_g:+.3f} (reward {pred_r:+.3f}, future {pred_g:+.3f})"
    )
    for after_name in ("business as usual", "myopic bandit"):
        d = ValueEstimate.of(runs[after_name, "fqi"] - runs[after_name, "myopic"])
        out["truth"][after_name] = {"mean": d.mean, "ci": [d.ci_low, d.ci_high]}
        console.print(
            f"  true gain to day {days}, {after_name} afterwards: {d.mean:+.3f} [{d.ci_low:+.3f}, {d.ci_high:+.3f}]"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--log-customers", type=int, default=8000)
    ap.add_argument("--eval-customers", type=int, default=4000)
    ap.add_argument("--holdout", type=float, default=0.2)
    ap.add_argument("--explore", type=float, default=0.2)
    ap.add_argument("--gamma", type=float, default=0.97, help="FQI's discount")
    ap.add_argument("--iterations", type=int, default=8, help="FQI's iterations (1: one improvement step)")
    ap.add_argument("--average", type=int, default=1, help="FQI acts on the mean of its last AVERAGE iterations' g")
    ap.add_argument(
        "--learn-from",
        choices=LEARN_FROM,
        default="attributed",
        help="the reward r fits (default attributed; total: with organic purchases)",
    )
    ap.add_argument("--min-support", type=int, default=300)
    ap.add_argument("--min-data-in-leaf", type=int, default=1000)
    ap.add_argument("--num-leaves", type=int, default=15)
    ap.add_argument("--max-candidates", type=int, default=225)
    ap.add_argument("--bootstrap-top", type=int, default=8)
    ap.add_argument("--weights", default="0,0.5,1", help="FQI's weights w to choose from")
    ap.add_argument("--validation-customers", type=int, default=4000)
    ap.add_argument(
        "--check-day", type=int, default=None, help="also check FQI's choices on this day against the simulator's truth"
    )
    ap.add_argument("--check-days", type=int, default=60, help="the check's horizon in days")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    started = time.perf_counter()
    console = Console()
    sc = Scenario.default()
    sp, seg, dim = sc.action_space, tuple(sc.segments), sc.feature_spec.dim
    days = sc.horizon_days
    bau = create("business_as_usual", sp, seg)
    logger = Explore(bau, args.explore, holdout=args.holdout)

    with Progress(console=console) as bar:
        task = bar.add_task(f"logging {args.log_customers:,} customers x {days} days", total=days)
        tr = collect_transitions(
            sc, logger, args.log_customers, seed=args.seed, purpose=LOG, progress=lambda _: bar.advance(task)
        )
    console.print(
        f"{len(tr.rewards):,} logged transitions, {tr.terminated.sum():,} ending in churn; "
        f"reward per transition: total sd {tr.rewards.std():.2f}, attributed sd {tr.attributed.std():.2f}"
    )
    rewards = tr.attributed if args.learn_from == "attributed" else tr.rewards

    fit_params = {
        "min_support": args.min_support,
        "min_data_in_leaf": args.min_data_in_leaf,
        "num_leaves": args.num_leaves,
        "max_candidates": args.max_candidates,
        "num_boost_round": 150,
        "learning_rate": 0.05,
    }
    fqi = create(
        "two_stage",
        sp,
        seg,
        dim=dim,
        gamma=args.gamma,
        iterations=args.iterations,
        average=args.average,
        bootstrap_top=args.bootstrap_top,
        **fit_params,
    )
    t0 = time.perf_counter()
    with Progress(console=console) as bar:
        task = bar.add_task("fitting the myopic bandit and FQI", total=2 + args.iterations)
        fqi.fit(
            tr.X,
            tr.actions,
            rewards,
            tr.X_next,
            tr.mask_next,
            tr.terminated,
            returns=returns_to_go(tr.rewards, tr.customer, tr.day, args.gamma),
            day=tr.day,
            propensities=tr.propensities,
            mask=tr.mask,
            state_rewards=tr.rewards - tr.attributed if args.learn_from == "attributed" else None,
            progress=lambda i, sd: bar.advance(task),
        )
    console.print(
        f"myopic bandit and FQI ({args.iterations} iterations): fitted in {time.perf_counter() - t0:.0f} s "
        f"on {fqi.candidates.sum()} candidate actions"
    )
    myopic = fqi.reward  # FQI's own reward model: a greedy LightGBM bandit

    # choose FQI's weight on validation customers of their own (not the held-out ones)
    weights = [float(w) for w in args.weights.split(",")]
    with Progress(console=console) as bar:
        task = bar.add_task(
            f"choosing w on {args.validation_customers:,} validation customers",
            total=days * (1 + sum(w != 0 for w in weights)),
        )
        tick = lambda _: bar.advance(task)  # noqa: E731
        base = journey_returns(sc, myopic, args.validation_customers, args.seed, progress=tick, purpose=VALIDATION)
        gains = {}
        for w in weights:  # w = 0 scores exactly as the myopic bandit: no second run
            run = (
                base
                if w == 0
                else journey_returns(
                    sc, fqi.reweighted(w), args.validation_customers, args.seed, progress=tick, purpose=VALIDATION
                )
            )
            gains[w] = ValueEstimate.of(run - base)
    best_w = max(weights, key=lambda w: gains[w].mean)
    for w, d in gains.items():
        console.print(
            f"validation: FQI at w = {w:g} vs the myopic bandit {d.mean:+.2f} "
            f"[{d.ci_low:+.2f}, {d.ci_high:+.2f}] = {d.mean / abs(base.mean()):+.1%}"
            f"{'  (chosen)' if w == best_w else ''}"
        )
    fitted = {"myopic bandit": myopic, "fqi": fqi.reweighted(best_w)}
    check = None
    if args.check_day is not None:
        check = check_choices(
            sc,
            console,
            myopic,
            fitted["fqi"],
            bau,
            args.check_day,
            args.check_days,
            args.validation_customers,
            args.seed,
        )

    policies = {
        "no contact": create("no_contact", sp),
        "rule-based journey": create("rule_based_journey", sp, seg),
        "business as usual": bau,
        **fitted,
    }
    returns = {}
    with Progress(console=console) as bar:
        for name, policy in policies.items():
            task = bar.add_task(f"evaluating {name}", total=days)
            returns[name] = journey_returns(
                sc, policy, args.eval_customers, args.seed, purpose=HELD_OUT, progress=lambda _, t=task: bar.advance(t)
            )

    table = Table(title=f"90-day profit per customer, {args.eval_customers:,} held-out customers (95% CI)")
    for col in ("policy", "profit / customer", "95% CI"):
        table.add_column(col)
    results = {}
    for name, r in returns.items():
        v = ValueEstimate.of(r)
        results[name] = {"mean": v.mean, "ci": [v.ci_low, v.ci_high]}
        table.add_row(name, f"{v.mean:.2f}", f"[{v.ci_low:.2f}, {v.ci_high:.2f}]")
    console.print(table)

    def paired(a: str, b: str, target: float) -> dict:
        d = ValueEstimate.of(returns[a] - returns[b])
        base = returns[b].mean()
        rel = d.mean / abs(base)
        ok = rel >= target and (d.ci_low > 0 if target >= 0 else True)
        console.print(
            f"{a} vs {b}: {d.mean:+.2f} [{d.ci_low:+.2f}, {d.ci_high:+.2f}] per customer = "
            f"{rel:+.1%} (target >= {target:+.0%}, interval excluding 0): {'met' if ok else 'NOT met'}"
        )
        return {"diff": d.mean, "ci": [d.ci_low, d.ci_high], "relative": rel, "target": target, "met": bool(ok)}

    best_bandit = "myopic bandit"
    results["fqi_vs_best_bandit"] = paired("fqi", best_bandit, 0.05)
    results["fqi_vs_rule_based"] = paired("fqi", "rule-based journey", 0.30)
    results["fqi_vs_business_as_usual"] = paired("fqi", "business as usual", 0.10)
    results["fqi_weight"] = {
        "chosen": best_w,
        "validation": [args.seed, VALIDATION],
        "gains": {str(w): d.mean for w, d in gains.items()},
    }
    results["check"] = check
    results["wall_s"] = time.perf_counter() - started
    console.print(f"wall time {results['wall_s']:.0f} s")
    results["args"] = vars(args) | {"json": str(args.json) if args.json else None}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
