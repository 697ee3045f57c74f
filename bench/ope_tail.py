"""How the rare large rewards bound an interval's coverage: interval methods on the baselines' marginal IPS.

    python bench/ope_tail.py [--logs 300] [--decisions 20000] [--bootstrap 200] [--json out.json]

``--logs`` independent logs of the quickstart's exploring logger (``Explore(business_as_usual, 0.2, 0.05)``,
purposes ``ope-tail/eval/<j>``), and on each the marginal IPS (MIPS by channel, with the logging
distribution known: no reward model, so nothing but the interval differs) of the baselines that need no
training, with four 95 % intervals over the customers (a cluster bootstrap, 200 resamples): the
percentile and the studentized (bootstrap-t) intervals of :mod:`nba.ope`, and for comparison the BCa
interval (bias-corrected and accelerated, the acceleration from the customers' jackknife) and the
normal one (estimate +- 1.96 standard errors). Prints each interval's coverage of the exact value, its
mean width and its misses below the truth; then how much of no contact's estimate rests on its largest
terms: how often a log holds a term above 1,000 or 2,000 and the share of the estimate they carry.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ope_coverage import build, simulate_log  # noqa: E402

from envs.scenario import Scenario  # noqa: E402
from nba import ope  # noqa: E402

EVAL = "ope-tail/eval"
POLICIES = ("no_contact", "uniform_random", "batch_and_blast", "business_as_usual", "rule_based_journey")
METHODS = ("percentile", "studentized", "bca", "normal")
LEVEL = 0.95


def bca_and_normal(v: np.ndarray, codes: np.ndarray, n_bootstrap: int, seed: int) -> dict[str, tuple[float, float]]:
    """The BCa and normal intervals of the mean of ``v`` over resampled clusters (the library's resamples)."""
    g = int(codes.max()) + 1
    sums, sizes = np.bincount(codes, weights=v, minlength=g), np.bincount(codes, minlength=g).astype(float)
    m = sums.sum() / sizes.sum()
    se = np.sqrt(((sums - m * sizes) ** 2).sum() * g / (g - 1)) / sizes.sum()
    reps = ope.resample_means(v, n_bootstrap, seed, clusters=codes)[:, 0]
    z0 = norm.ppf(np.clip((reps < m).mean() + 0.5 * (reps == m).mean(), 1e-6, 1 - 1e-6))
    jack = (sums.sum() - sums) / (sizes.sum() - sizes)  # leave one customer out
    d = jack.mean() - jack
    acc = (d**3).sum() / (6.0 * ((d**2).sum()) ** 1.5)
    z = norm.ppf([(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    lo, hi = np.quantile(reps, norm.cdf(z0 + (z0 + z) / (1 - acc * (z0 + z))))
    q = norm.ppf((1 + LEVEL) / 2)
    return {"bca": (min(lo, m), max(hi, m)), "normal": (m - q * se, m + q * se)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--logs", type=int, default=300)
    ap.add_argument("--decisions", type=int, default=20_000)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    scenario = Scenario.default()
    policies = {name: build(name, scenario) for name in POLICIES}
    groups = ope.action_groups(scenario.action_space)
    hit = {p: {m: [] for m in METHODS} for p in POLICIES}
    width = {p: {m: [] for m in METHODS} for p in POLICIES}
    low = {p: dict.fromkeys(METHODS, 0) for p in POLICIES}
    tail = {1000: [], 2000: []}  # per log: (count of no contact's terms above, their share of the estimate)
    for j in range(args.logs):
        log = simulate_log(scenario, args.seed, args.decisions, f"{EVAL}/{j}", keep_truth=True)
        codes = ope.cluster_codes(log["customer_id"], args.decisions)
        logging_g = ope.group_probabilities(log["logging"], groups)
        rows = np.arange(args.decisions)
        for name, policy in policies.items():
            probs = policy.probabilities(log["context"], log["eligible"])
            truth = float(np.einsum("ij,ij->i", probs, log["er"]).mean())
            kw = {
                "groups": groups,
                "logging_groups": logging_g,
                "n_bootstrap": args.bootstrap,
                "seed": j,
                "clusters": codes,
            }
            intervals = {
                m: (e.ci_low, e.ci_high)
                for m in ("percentile", "studentized")
                for e in [ope.mips(log["reward"], log["action"], log["propensity"], probs, interval=m, **kw)]
            }
            e_group = groups[log["action"]]
            w = ope.group_probabilities(probs, groups)[rows, e_group] / logging_g[rows, e_group]
            terms = w * log["reward"]
            intervals |= bca_and_normal(terms, codes, args.bootstrap, j)
            for m, (lo, hi) in intervals.items():
                hit[name][m].append(lo <= truth <= hi)
                width[name][m].append(hi - lo)
                low[name][m] += int(hi < truth)
            if name == "no_contact":
                for cut in tail:
                    big = terms > cut
                    tail[cut].append((int(big.sum()), float(terms[big].sum() / terms.sum())))
        if (j + 1) % 25 == 0:
            print(f"{j + 1}/{args.logs} logs ({time.perf_counter() - t0:,.0f} s)", flush=True)
    out: dict = {"logs": args.logs, "decisions": args.decisions, "bootstrap": args.bootstrap, "policies": {}}
    print(f"\nMIPS by channel, 95 % intervals over {args.logs} logs: coverage / mean width / misses below the truth")
    print(f"{'policy':<20}" + "".join(f"{m:>24}" for m in METHODS))
    for name in POLICIES:
        cells = {m: (float(np.mean(hit[name][m])), float(np.mean(width[name][m])), low[name][m]) for m in METHODS}
        out["policies"][name] = {
            m: dict(zip(("coverage", "width", "misses_low"), c, strict=True)) for m, c in cells.items()
        }
        print(f"{name:<20}" + "".join(f"{c:>10.3f} {wd:>7.2f} {lo:>5d}" for c, wd, lo in cells.values()))
    print("\nno contact's largest terms (a purchase x the weight of the logger's 5 % holdout):")
    for cut, per_log in tail.items():
        counts = np.array([c for c, _ in per_log])
        share = float(np.mean([s for _, s in per_log]))
        print(
            f"  terms above {cut:,}: {counts.mean():.2f} per log, none in {np.mean(counts == 0):.0%} of logs, "
            f"{share:.0%} of the estimate on average"
        )
        out[f"tail_above_{cut}"] = {
            "per_log": float(counts.mean()),
            "logs_without": float(np.mean(counts == 0)),
            "share": share,
        }
    print(f"\n{time.perf_counter() - t0:,.0f} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
