"""The closed loop's A/B step: what it costs, and what its verdict says of a guardrail-breaking challenger.

    python bench/ab_loop.py [--sizes 1000,2000,5000] [--days 14] [--pre-days 7] [--decisions 30000]
                            [--messages 0] [--safe] [--n-min 40] [--contacts keep] [--seed 0] [--compare-replay]
                            [--replay-size 5000] [--json out.json]

The issue's case (#26, point 4): the quickstart's ``lgbm_funnel``, fitted offline on a
``--decisions`` decision log of business as usual with exploration (``jobs.simulate`` +
``jobs.train`` in a throw-away MLflow store, as the quickstart does), against business as usual in
a simulated A/B test (``jobs.ab``: ``--days`` days after a ``--pre-days`` pre-period, half the
customers each, the default guardrails: opt-out rate +0.5 point, churn rate +1 point, sends per
customer +100%). For each size in ``--sizes``: the job's wall time and CPU time (simulation of the
experiment and of its counterfactual truth, analysis, report, MLflow), the primary metric's estimate
and always-valid interval beside the true effect, every guardrail's worsening, always-valid bounds,
status and true worsening, and the verdict.

``--messages`` gives that share of the logger's contacts a random eligible message (``jobs.simulate``'s
message exploration); ``--safe`` fits the challenger in the quickstart's conservative mode (business as
usual's contacts kept, :data:`training.quickstart.SAFE`) with ``--n-min``: the learner that keeps the
sends business as usual attempts and improves their messages; ``--contacts channel`` also keeps business
as usual's channel (:class:`nba.policies.safe.SPIBB`), so the learner picks content and send time only.

Beside it, at each size, business as usual against itself (an A/A test: every true worsening is 0):
whether each guardrail can be shown to hold at that size — a harmless challenger can be promoted only
where they all do, so this is the size a *reliable* verdict needs, not only a refusal.

``--compare-replay`` also times the experiment's simulation alone at ``--replay-size`` customers with the truth
runs replaying each arm's own customers' actions (the default) and asking every policy again.
There is no peer: no open-source package runs a guarded A/B test against a simulator's truth.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

PURPOSE = "bench/ab_loop"  # the A/B customers (envs.random)
LOG_PURPOSE = "bench/ab_loop/log"  # the training log's customers


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,2000,5000")
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--pre-days", type=int, default=7)
    ap.add_argument("--decisions", type=int, default=30_000)
    ap.add_argument("--messages", type=float, default=0.0, help="the logger's share of random messages")
    ap.add_argument("--safe", action="store_true", help="the challenger in the quickstart's conservative mode")
    ap.add_argument("--n-min", type=float, default=None, help="the conservative mode's n_min (default: its own)")
    ap.add_argument("--contacts", default=None, help="the conservative mode's contacts (default: the quickstart's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compare-replay", action="store_true")
    ap.add_argument("--replay-size", type=int, default=5000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    console = Console(width=160)
    os.environ.pop("MLFLOW_TRACKING_URI", None)

    from training import jobs, registry

    root = Path(tempfile.mkdtemp(prefix="nba-bench-ab-"))
    registry.use_store(root, experiment="bench-ab")
    log = f"sqlite:///{root / 'train-log.db'}"
    t0 = time.perf_counter()
    jobs.simulate(log, decisions=args.decisions, seed=args.seed, purpose=LOG_PURPOSE, messages=args.messages)
    bau = jobs.train("business_as_usual", source=log, seed=args.seed).version
    safe: bool | dict = True  # jobs.train's default conservative mode (contacts free)
    if args.safe:
        from training.quickstart import SAFE

        safe = dict(SAFE) | ({} if args.n_min is None else {"n_min": args.n_min})
        safe |= {} if args.contacts is None else {"contacts": args.contacts}
    funnel = jobs.train("lgbm_funnel", source=log, seed=args.seed, safe=safe).version
    setup = time.perf_counter() - t0
    console.print(
        f"setup (log of {args.decisions:,} decisions, {args.messages:g} of its contacts with random messages; "
        f"lgbm_funnel fitted, conservative {safe}; both registered): {setup:.0f} s"
    )

    rows = []
    for n in sizes:
        for name, champion, challenger in (("lgbm_funnel vs BAU", bau, funnel), ("A/A: BAU vs BAU", bau, bau)):
            w, c = time.perf_counter(), _cpu()
            res = jobs.ab(
                champion=champion,
                challenger=challenger,
                customers=n,
                days=args.days,
                pre_days=args.pre_days,
                seed=args.seed,
                purpose=PURPOSE,
                experiment=f"bench-{n}",
                out=root / f"ab-{n}-{name[:3]}",
            )
            rows.append(
                {
                    "test": name,
                    "customers": n,
                    "wall_s": time.perf_counter() - w,
                    "cpu_s": _cpu() - c,
                    "diff": res.diff,
                    "ci": [res.ci_low, res.ci_high],
                    "true_effect": res.true_effect,
                    "promote": res.promote,
                    "reason": res.reason,
                    "guardrails": {
                        g.guardrail.name: {
                            "worsening": g.worsening,
                            "bound": g.bound,
                            "lower": g.lower,
                            "margin": g.margin,
                            "status": g.status,
                            "true": res.true_worsening[g.guardrail.name],
                        }
                        for g in res.guardrails
                    },
                }
            )
            console.print(f"{name}, {n:,} customers: {rows[-1]['wall_s']:.1f} s; {res.reason}")

    t = Table(
        title=f"A/B job, {args.days} days after a {args.pre_days}-day pre-period, default guardrails "
        "(worsening [always-valid bounds] status; true)"
    )
    for col in (
        "test",
        "customers",
        "wall s",
        "CPU s",
        "reward / customer [CS] (true)",
        "opt-out rate",
        "churn rate",
        "sends per customer",
        "promote",
    ):
        t.add_column(col, justify="left" if col == "test" else "right")
    for r in rows:

        def cell(g: dict, pct: bool) -> str:
            f = (lambda x: f"{100 * x:+.0f}%") if pct else (lambda x: f"{x:+.4f}")
            return f"{f(g['worsening'])} [{f(g['lower'])}, {f(g['bound'])}] {g['status']} ({f(g['true'])})"

        gs = r["guardrails"]
        t.add_row(
            r["test"],
            f"{r['customers']:,}",
            f"{r['wall_s']:.1f}",
            f"{r['cpu_s']:.1f}",
            f"{r['diff']:+.2f} [{r['ci'][0]:+.2f}, {r['ci'][1]:+.2f}] ({r['true_effect']:+.2f})",
            cell(gs["opt-out rate"], False),
            cell(gs["churn rate"], False),
            cell(gs["sends per customer"], True),
            "yes" if r["promote"] else "no",
        )
    console.print(t)

    replay = None
    if args.compare_replay:
        from envs.experiment import run_experiment
        from envs.scenario import Scenario

        sc = Scenario.default()
        arms = {"champion": jobs.resolve_target(bau, sc)[1], "challenger": jobs.resolve_target(funnel, sc)[1]}
        n = args.replay_size
        replay = {}
        for flag in (True, False):
            w = time.perf_counter()
            run_experiment(
                sc, arms, n=n, days=args.days, pre_days=args.pre_days, seed=args.seed, purpose=PURPOSE, replay=flag
            )
            replay["replay" if flag else "ask_again"] = time.perf_counter() - w
        console.print(
            f"run_experiment alone, {n:,} customers: {replay['replay']:.1f} s replaying the arms' own "
            f"actions in the truth runs, {replay['ask_again']:.1f} s asking every policy again "
            f"({replay['ask_again'] / replay['replay']:.2f}x)"
        )

    console.print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "setup_s": setup,
                    "decisions": args.decisions,
                    "messages": args.messages,
                    "safe": safe,
                    "rows": rows,
                    "replay": replay,
                    "days": args.days,
                    "pre_days": args.pre_days,
                    "cpu": cpu_model(),
                    "cpus": os.cpu_count(),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
