"""Off-policy estimators at scale: nba against Open Bandit Pipeline on the same arrays.

    python bench/ope.py [--rows 1000000] [--actions 20] [--bootstrap 200] [--seed 0] [--json out.json]

One synthetic log (seeded): ``rows`` contexts with ``actions`` actions, exact expected rewards
``er ~ U(0, 1)``, a logging policy with full support (half a Dirichlet draw, half uniform), Bernoulli
rewards, a reward model ``q_hat = er + N(0, 0.1)`` and a softmax target policy on ``q_hat``. The same
arrays go to nba (:mod:`nba.ope`) and to obp 0.5.7 (``obp.ope``: ``action_dist`` and
``estimated_rewards_by_reg_model`` as (n, A, 1) views, ``position=None``). Prints:

* point estimates of IPS, SNIPS, DM, DR and switch-DR from both, their largest absolute difference
  (they must agree to 1e-9) and run times;
* 95% bootstrap intervals with ``--bootstrap`` resamples (obp's ``estimate_interval``, a Python loop
  of ``RandomState.choice``, against nba's chunked resampling): the intervals, run times and ratios
  (the two draw different resamples, so the intervals agree only up to bootstrap noise; obp's
  SNIPS interval resamples ``w r / mean(w)`` with the full log's mean weight, nba's the ratio of
  the resampled sums, so obp's is wider, as wide as IPS's); and :func:`nba.ope.evaluate`, which
  gives all five intervals from one set of resamples, against obp's three intervals together;
* nba's DR with ``--bootstrap`` resamples alone: wall time, the peak of memory traced (tracemalloc)
  during the call on top of its inputs, and the peak RSS of a separate process that builds the
  inputs and runs it. Targets (issue 4): at most 10 s and 2 GB for 1,000,000 rows and 200 resamples;
* nba's DR with a cluster bootstrap (``clusters``): the rows spread over ``--customers`` customers
  (ten rows each by default), given as integer ids and as string ids;
* marginal IPS on action groups (``--group-size`` consecutive actions a group, the logging
  distribution known): nba's :func:`nba.ope.mips` against obp's
  ``MarginalizedInverseProbabilityWeighting`` with the exact embedding distribution ``p_e_a`` (the
  same marginal weights: they must agree to 1e-9), with run times; nba's marginal DR beside them
  (obp 0.5.7 has no marginal DR).

obp is installed by ``bench/install-peers.sh``. Its ``obp.ope`` imports seaborn for plots only; when
seaborn is missing a placeholder module stands in (no obp plotting is used here).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
import tracemalloc
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nba import ope  # noqa: E402

TAU = 5.0  # switch-DR threshold (obp: lambda_)


def make_log(rows: int, actions: int, seed: int) -> dict[str, np.ndarray]:
    """The synthetic log: rewards, actions, propensities, target (n, A) and q_hat (n, A)."""
    rng = np.random.default_rng(seed)
    er = rng.uniform(0.0, 1.0, (rows, actions))
    logging = rng.dirichlet(np.ones(actions), rows)
    logging *= 0.5
    logging += 0.5 / actions
    u = rng.random(rows)
    a = np.empty(rows, np.int64)
    for start in range(0, rows, 1 << 16):  # inverse-CDF draws, a chunk of rows at a time
        cdf = np.cumsum(logging[start : start + (1 << 16)], axis=1)
        a[start : start + len(cdf)] = np.minimum((cdf <= u[start : start + len(cdf), None]).sum(axis=1), actions - 1)
    idx = np.arange(rows)
    propensities = logging[idx, a]
    del logging
    rewards = (rng.random(rows) < er[idx, a]).astype(np.float64)
    q_hat = er
    q_hat += rng.normal(0.0, 0.1, (rows, actions))
    target = np.exp(3.0 * (q_hat - q_hat.max(axis=1, keepdims=True)))
    target /= target.sum(axis=1, keepdims=True)
    return {"rewards": rewards, "actions": a, "propensities": propensities, "target": target, "q_hat": q_hat}


def _args(log: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    return log["rewards"], log["actions"], log["propensities"], log["target"]


def import_obp():
    try:
        import seaborn  # noqa: F401
    except ImportError:
        sys.modules["seaborn"] = types.ModuleType("seaborn")
    import obp.ope as obp_ope

    return obp_ope


def obp_estimators(obp_ope) -> dict[str, object]:
    return {
        "ips": obp_ope.InverseProbabilityWeighting(),
        "snips": obp_ope.SelfNormalizedInverseProbabilityWeighting(),
        "dm": obp_ope.DirectMethod(),
        "dr": obp_ope.DoublyRobust(),
        "switch_dr": obp_ope.SwitchDoublyRobust(lambda_=TAU),
    }


def obp_inputs(log) -> dict[str, np.ndarray]:
    return {
        "reward": log["rewards"],
        "action": log["actions"],
        "pscore": log["propensities"],
        "action_dist": log["target"][:, :, None],
        "estimated_rewards_by_reg_model": log["q_hat"][:, :, None],
        "position": None,
    }


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def child(rows: int, actions: int, bootstrap: int, seed: int) -> None:
    """Build the log and run nba's DR once: print the process's peak RSS before and after, and the time."""
    log = make_log(rows, actions, seed)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    _, seconds = _timed(lambda: ope.dr(*_args(log), log["q_hat"], n_bootstrap=bootstrap, seed=seed))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rss_inputs_mib": before, "rss_peak_mib": after, "seconds": seconds}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--actions", type=int, default=20)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--customers", type=int, default=100_000, help="customers for the clustered DR interval")
    ap.add_argument("--group-size", type=int, default=4, help="actions per group for the marginal estimators")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.rows, args.actions, args.bootstrap, args.seed)
        return

    # nba's DR alone, in a fresh process: time and whole-process peak memory
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            "--rows",
            str(args.rows),
            "--actions",
            str(args.actions),
            "--bootstrap",
            str(args.bootstrap),
            "--seed",
            str(args.seed),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    sub = json.loads(proc.stdout.strip().splitlines()[-1])

    log, gen_s = _timed(lambda: make_log(args.rows, args.actions, args.seed))
    print(
        f"log: {args.rows:,} rows x {args.actions} actions (generated in {gen_s:.1f} s); "
        f"{args.bootstrap} bootstrap resamples; switch-DR tau = {TAU:g}"
    )

    # nba's DR again, with tracemalloc: memory allocated during the call on top of its inputs
    tracemalloc.start()
    ope.dr(*_args(log), log["q_hat"], n_bootstrap=args.bootstrap, seed=args.seed)
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()

    obp_ope = import_obp()
    inputs = obp_inputs(log)
    peers = obp_estimators(obp_ope)
    names = list(peers)

    point, point_s = {}, {}
    for name in names:
        point[name], point_s[name] = _timed(lambda name=name: nba_estimates_one(log, name, 0, args.seed))
    obp_point, obp_point_s = {}, {}
    for name in names:
        obp_point[name], obp_point_s[name] = _timed(lambda name=name: peers[name].estimate_policy_value(**inputs))

    interval, interval_s = {}, {}
    for name in names:
        interval[name], interval_s[name] = _timed(
            lambda name=name: nba_estimates_one(log, name, args.bootstrap, args.seed)
        )
    obp_interval, obp_interval_s = {}, {}
    for name in ("ips", "snips", "dr"):
        obp_interval[name], obp_interval_s[name] = _timed(
            lambda name=name: peers[name].estimate_interval(
                **inputs, alpha=0.05, n_bootstrap_samples=args.bootstrap, random_state=args.seed
            )
        )

    _, evaluate_s = _timed(
        lambda: ope.evaluate(
            log["target"],
            {"action": log["actions"], "propensity": log["propensities"], "reward": log["rewards"]},
            q_hat=log["q_hat"],
            tau=TAU,
            n_bootstrap=args.bootstrap,
            seed=args.seed,
        )
    )

    customers = np.random.default_rng(args.seed).permutation(args.rows) % max(1, min(args.customers, args.rows))
    names_s = np.array([f"customer-{c}" for c in customers.tolist()], dtype=object)
    clustered, clustered_s = _timed(
        lambda: ope.dr(*_args(log), log["q_hat"], n_bootstrap=args.bootstrap, seed=args.seed, clusters=customers)
    )
    _, clustered_str_s = _timed(
        lambda: ope.dr(*_args(log), log["q_hat"], n_bootstrap=args.bootstrap, seed=args.seed, clusters=names_s)
    )

    diffs = {name: abs(point[name].value - float(obp_point[name])) for name in names}
    max_diff = max(diffs.values())

    print("\npoint estimates (no bootstrap)")
    print(f"{'estimator':<10} {'nba':>14} {'obp':>14} {'|diff|':>9} {'nba s':>7} {'obp s':>7} {'obp/nba':>8}")
    for name in names:
        print(
            f"{name:<10} {point[name].value:>14.10f} {float(obp_point[name]):>14.10f} {diffs[name]:>9.1e} "
            f"{point_s[name]:>7.2f} {obp_point_s[name]:>7.2f} {obp_point_s[name] / point_s[name]:>8.1f}"
        )
    print(f"max |nba - obp| = {max_diff:.2e} ({'agree' if max_diff <= 1e-9 else 'DISAGREE'} to 1e-9)")

    print(f"\n95% intervals, {args.bootstrap} bootstrap resamples (different resamples: agree up to bootstrap noise)")
    print(f"{'estimator':<10} {'nba interval':>25} {'obp interval':>25} {'nba s':>7} {'obp s':>7} {'obp/nba':>8}")
    for name in names:
        e = interval[name]
        if name in obp_interval:
            lo, hi = (obp_interval[name][k] for k in obp_interval[name] if "CI" in k)
            o = f"[{lo:.5f}, {hi:.5f}]"
            os_, ratio = f"{obp_interval_s[name]:>7.2f}", f"{obp_interval_s[name] / interval_s[name]:>8.1f}"
        else:
            o, os_, ratio = "-", f"{'-':>7}", f"{'-':>8}"
        print(f"{name:<10} {f'[{e.ci_low:.5f}, {e.ci_high:.5f}]':>25} {o:>25} {interval_s[name]:>7.2f} {os_} {ratio}")

    obp_three = sum(obp_interval_s.values())
    print(
        f"nba evaluate(): all five intervals from one set of resamples in {evaluate_s:.2f} s; "
        f"obp's three intervals took {obp_three:.2f} s together ({obp_three / evaluate_s:.1f}x)"
    )

    ok_time, ok_mem = sub["seconds"] <= 10.0, sub["rss_peak_mib"] <= 2048
    print(
        f"\nnba DR, {args.bootstrap} resamples, fresh process: {sub['seconds']:.2f} s "
        f"({'within' if ok_time else 'OVER'} 10 s); peak RSS {sub['rss_peak_mib']:.0f} MiB "
        f"(inputs alone {sub['rss_inputs_mib']:.0f} MiB; {'within' if ok_mem else 'OVER'} 2 GiB); "
        f"traced peak during the call {traced_peak:.0f} MiB"
    )
    print(
        f"nba DR, cluster bootstrap over {clustered.n_clusters:,} customers: {clustered_s:.2f} s with integer "
        f"ids, {clustered_str_s:.2f} s with string ids; interval [{clustered.ci_low:.5f}, {clustered.ci_high:.5f}]"
    )
    e = interval["dr"]
    print(
        f"DR diagnostics: ESS {e.ess:,.0f} of {e.n:,} rows, max weight {e.max_weight:.2f}, "
        f"unsupported mass {e.unsupported_mass:g}"
    )

    marginal = marginal_vs_obp(args.rows, args.actions, args.group_size, args.seed, args.bootstrap)
    print(
        f"\nmarginal IPS, groups of {args.group_size} actions ({marginal['groups']} groups), logging known: "
        f"nba {marginal['nba']:.10f} in {marginal['nba_s']:.2f} s, obp MIPW (exact p_e_a) {marginal['obp']:.10f} "
        f"in {marginal['obp_s']:.2f} s ({marginal['obp_s'] / marginal['nba_s']:.1f}x); |diff| "
        f"{marginal['diff']:.1e} ({'agree' if marginal['diff'] <= 1e-9 else 'DISAGREE'} to 1e-9); max weight "
        f"{marginal['max_weight']:.2f} against IPS's {interval['ips'].max_weight:.2f}"
    )
    print(
        f"nba marginal DR {marginal['mdr']:.6f}; nba MIPS and MDR with {args.bootstrap} resamples: "
        f"{marginal['nba_interval_s']:.2f} s"
    )

    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "marginal": marginal,
                    "rows": args.rows,
                    "actions": args.actions,
                    "bootstrap": args.bootstrap,
                    "machine": platform.machine(),
                    "max_abs_diff": max_diff,
                    "point": {
                        n: {
                            "nba": point[n].value,
                            "obp": float(obp_point[n]),
                            "nba_s": point_s[n],
                            "obp_s": obp_point_s[n],
                        }
                        for n in names
                    },
                    "interval": {
                        n: {
                            "nba": [interval[n].ci_low, interval[n].ci_high],
                            "nba_s": interval_s[n],
                            "obp_s": obp_interval_s.get(n),
                        }
                        for n in names
                    },
                    "dr_alone": {**sub, "traced_peak_mib": traced_peak},
                    "evaluate_s": evaluate_s,
                    "dr_clustered": {
                        "customers": clustered.n_clusters,
                        "int_ids_s": clustered_s,
                        "str_ids_s": clustered_str_s,
                    },
                },
                indent=2,
            )
        )


def marginal_vs_obp(rows: int, actions: int, group_size: int, seed: int, bootstrap: int) -> dict[str, float]:
    """MIPS on groups of ``group_size`` consecutive actions, nba against obp's MIPW with the exact ``p_e_a``."""
    log = make_log(rows, actions, seed)
    rng = np.random.default_rng([seed, 1])
    # a logging distribution consistent with the logged propensities: the rest spread at random
    rest = rng.dirichlet(np.ones(actions - 1), rows) * (1.0 - log["propensities"])[:, None]
    logging = np.empty((rows, actions))
    idx = np.arange(rows)
    mask = np.ones((rows, actions), bool)
    mask[idx, log["actions"]] = False
    logging[mask] = rest.ravel()
    logging[idx, log["actions"]] = log["propensities"]
    groups = np.arange(actions) // group_size
    n_groups = int(groups.max()) + 1
    args = _args(log)
    est, nba_s = _timed(lambda: ope.mips(*args, groups, logging=logging, n_bootstrap=0))
    _, nba_interval_s = _timed(
        lambda: (
            ope.mips(*args, groups, logging=logging, n_bootstrap=bootstrap, seed=seed),
            ope.mdr(*args, log["q_hat"], groups, logging=logging, n_bootstrap=bootstrap, seed=seed),
        )
    )
    mdr = ope.mdr(*args, log["q_hat"], groups, logging=logging, n_bootstrap=0)
    obp_ope = import_obp()
    from obp.ope.estimators_embed import MarginalizedInverseProbabilityWeighting

    p_e_a = np.zeros((actions, n_groups, 1))
    p_e_a[np.arange(actions), groups, 0] = 1.0
    del obp_ope
    mipw = MarginalizedInverseProbabilityWeighting(n_actions=actions)
    obp_value, obp_s = _timed(
        lambda: mipw.estimate_policy_value(
            context=np.zeros((rows, 1)),
            reward=log["rewards"],
            action=log["actions"],
            action_embed=groups[log["actions"]][:, None],
            pi_b=logging[:, :, None],
            action_dist=log["target"][:, :, None],
            position=None,
            p_e_a=p_e_a,
        )
    )
    return {
        "groups": n_groups,
        "nba": est.value,
        "obp": float(obp_value),
        "diff": abs(est.value - float(obp_value)),
        "nba_s": nba_s,
        "obp_s": obp_s,
        "nba_interval_s": nba_interval_s,
        "mdr": mdr.value,
        "max_weight": est.max_weight,
    }


def nba_estimates_one(log, name: str, n_bootstrap: int, seed: int) -> ope.Estimate:
    args, q = _args(log), log["q_hat"]
    if name in ("ips", "snips"):
        return getattr(ope, name)(*args, n_bootstrap=n_bootstrap, seed=seed)
    if name == "switch_dr":
        return ope.switch_dr(*args, q, TAU, n_bootstrap=n_bootstrap, seed=seed)
    return getattr(ope, name)(*args, q, n_bootstrap=n_bootstrap, seed=seed)


if __name__ == "__main__":
    main()
