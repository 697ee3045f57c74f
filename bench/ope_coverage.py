"""Coverage of the off-policy estimators on the quickstart's own setting: policy by policy, against the exact value.

    python bench/ope_coverage.py [--logs 50] [--decisions 20000] [--bootstrap 200] [--refits 8]
                                 [--rounds 30] [--threads 1] [--seed 0] [--json out.json] [--plot out.png]

The quickstart's twelve policies are trained as :func:`training.quickstart.run` trains them, without
MLflow (:func:`train_policies`): the five baselines; the six bandits offline from a 30,000-decision
log of exploring business as usual (``Explore(business_as_usual, 0.2, 0.05)``, as
:func:`training.jobs.simulate` writes it; read in chunks of 10,000 rows with the funnel events, as
``jobs._train_offline`` does, from memory instead of a decision log: the simulator's rewards are the
log's under :func:`training.jobs.sim_reward_rule`); fitted-Q on the journeys of 2,000 customers
under ``Explore(business_as_usual, 0.2, 0.2)``. Then ``--logs`` independent evaluation logs of
``--decisions`` decisions of the same exploring logger, each its own ``(seed, purpose)`` pair (the
purpose ``ope-coverage/eval/<j>``), each policy's exact value on each log's contexts (the mean of
``sum_a pi(a|x) E[r|x, a]``, which is :func:`envs.rollout.bandit_truth`'s, checked on the first log),
and every estimator of :func:`nba.ope.evaluate` on each log with what the pipeline has: the
logging distribution (known for a simulated log), one cross-fitted reward model with ``--refits``
refits per log (:func:`nba.ope.fit_reward_models`), the customers as the bootstrap's clusters.
Extra rows: every estimator again with its interval by ``--compare-interval`` (the other method of
``nba.ope.INTERVALS``: suffix ``_t`` for studentized, ``_pct`` for percentile), ``--fixed``:
``dm_fixed``/``dr_fixed`` (the model held fixed: the intervals before the refits)
and, with ``--channel-content``, ``mips_cc``/``mdr_cc`` (groups of channel x content instead of
channel); ``--funnel-model``: ``dm_funnel``/``dr_funnel``/``mdr_funnel``, the reward model a
cross-fitted ``lgbm_funnel`` model of the log's funnel events (:func:`funnel_model`, held fixed).
``--in-sample``: each log is instead a training log of its own (purpose ``ope-coverage/in-sample/<j>``,
30,000 decisions), the bandits trained again on it and then evaluated on it: what an in-sample
evaluation claims (the baselines and fitted-Q learn nothing from it: the control).
``--estimated-logging``: the logger's group probabilities estimated from each log, as for a log
whose logging distribution is unknown (IPS, DR, MIPS and MDR only). ``--first-log``
runs logs ``first .. first + logs - 1`` (to split a run between processes); ``--merge a.json
b.json ...`` summarises the runs of several JSON files together (the estimates flagged again with
the current ``nba.ope.SUPPORT_SHARE`` from their stored support gaps). The JSON file is rewritten
after every log, so an interrupted run keeps what it measured.

Prints per policy x estimator: coverage of the exact value by the 95% interval (over the logs
where the estimate is not marked unsupported, and over all), mean bias and its standard error,
mean interval width, the share of logs where it is unsupported; then, for ranking rules (an
estimator and a statistic: the point estimate or the lower bound, unsupported estimates left out),
how often each picks the truly best policy and its mean regret; then each policy's paired lift over
business as usual by the ranked estimator (the quickstart's shortlist, :func:`paired_lifts`, with each
interval method measured) against its exact lift: coverage, misses below and above, width, bias, and how
often its lower bound clears 0. ``--policy-param NAME.KEY=VALUE``
passes parameters to a policy's constructor; ``--safe`` trains the bandits in their conservative
mode (SPIBB with the quickstart's options, as the quickstart trains them).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from envs.log_writer import CustomerIds  # noqa: E402
from envs.rollout import bandit_simulation, bandit_truth, collect_transitions, funnel_events, policy_rng  # noqa: E402
from envs.scenario import Scenario  # noqa: E402
from nba import ope  # noqa: E402
from nba.policies import Explore, Policy, create  # noqa: E402
from nba.policies.base import act  # noqa: E402
from training.quickstart import BANDIT_PARAMS, BANDITS, BASELINES, FQI_PARAMS, SAFE  # noqa: E402

TRAIN = "ope-coverage/train"  # the bandits' training log
JOURNEYS = "ope-coverage/fqi"  # fitted-Q's journeys
EVAL = "ope-coverage/eval"  # evaluation log j is the purpose f"{EVAL}/{j}"
IN_SAMPLE_PURPOSE = "ope-coverage/in-sample"  # --in-sample: training log j, also evaluated on: f".../{j}"
TRAIN_DECISIONS = 30_000  # the bandits' training log, as the quickstart's
BATCH = 1000  # decisions per step, as jobs.BANDIT_BATCH
TAU = 20.0  # switch-DR threshold, as jobs.evaluate's default
EPSILON, HOLDOUT = 0.2, 0.05  # the exploring logger of jobs.simulate
CHUNK_ROWS = 10_000  # rows per update when learning from the log, as jobs._train_offline
SUFFIX = {"percentile": "_pct", "studentized": "_t"}  # the estimates of --compare-interval, by method
LIGHTGBM = ("lgbm_egreedy", "lgbm_squarecb", "lgbm_funnel", "fqi")  # the policies with a `threads` parameter
ARRAYS = ("replicates", "units")  # an Estimate's arrays, left out of the JSON
BASE = "business_as_usual"  # the champion the quickstart's shortlist pairs each candidate with


def logger(scenario: Scenario, messages: float = 0.0) -> Explore:
    """The exploring logger, ``messages`` of business as usual's contacts given a random eligible message."""
    bau = create("business_as_usual", scenario.action_space, tuple(scenario.segments))
    return Explore(bau, EPSILON, HOLDOUT, messages=messages)


def build(name: str, scenario: Scenario, params: Mapping[str, Any] | None = None) -> Policy:
    return create(
        name, scenario.action_space, tuple(scenario.segments), dim=scenario.feature_spec.dim, **dict(params or {})
    )


def train_policies(
    scenario: Scenario,
    seed: int = 0,
    *,
    decisions: int = TRAIN_DECISIONS,
    customers: int = 2000,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    safe: bool = False,
    transform: Callable[[str, Policy], Policy] | None = None,
    messages: float = 0.0,
    log: Mapping[str, Any] | None = None,
) -> dict[str, Policy]:
    """The quickstart's twelve policies, trained as it trains them (module docstring), in its order.

    ``params``: constructor parameters by policy name; ``safe``: each bandit learns in its
    conservative mode (:class:`nba.policies.safe.SPIBB` around it, business as usual the baseline,
    as ``jobs.conservative`` builds it for a simulated log, with the quickstart's ``SAFE`` options);
    ``transform(name, policy)``: applied to each learned bandit after training; ``messages``: the
    training log's logger explores messages that much (:func:`logger`); ``log``: the training log (a
    :func:`simulate_log` with its events), instead of the one of purpose ``TRAIN``.
    """
    params = dict(params or {})
    out: dict[str, Policy] = {name: build(name, scenario, params.get(name)) for name in BASELINES}
    if log is None:
        log = simulate_log(scenario, seed, decisions, TRAIN, keep_events=True, messages=messages)
    decisions = len(log["action"])
    for name in BANDITS:
        policy = build(name, scenario, {**BANDIT_PARAMS.get(name, {}), **params.get(name, {})})
        if safe:
            from nba.policies.safe import SPIBB

            policy = SPIBB(
                scenario.action_space, tuple(scenario.segments), learner=policy, baseline="business_as_usual", **SAFE
            )
        events = getattr(policy, "learns_from_events", False)
        for s in range(0, decisions, CHUNK_ROWS):
            rows = slice(s, s + CHUNK_ROWS)
            extra = {"events": log["events"].take(rows)} if events else {}
            policy.update(
                log["context"][rows], log["action"][rows], log["reward"][rows], log["propensity"][rows], **extra
            )
        out[name] = transform(name, policy) if transform is not None else policy
    fqi = build("fqi", scenario, {**FQI_PARAMS, **params.get("fqi", {})})
    journeys = Explore(create("business_as_usual", scenario.action_space, tuple(scenario.segments)), 0.2, 0.2)
    t = collect_transitions(scenario, journeys, customers, seed, purpose=JOURNEYS)
    keep = ~t.truncated
    fqi.fit(t.X[keep], t.actions[keep], t.attributed[keep], t.X_next[keep], t.mask_next[keep], t.terminated[keep])
    out["fqi"] = fqi
    return out


class Events:
    """Funnel events of a log's rows, concatenated over steps, sliced by rows."""

    def __init__(self, steps: list) -> None:
        self.fields = {
            k: np.concatenate([getattr(e, k) for e in steps]) for k in ("opened", "clicked", "converted", "value")
        }
        self.cls = type(steps[0])

    def take(self, rows: slice | np.ndarray):
        return self.cls(**{k: v[rows] for k, v in self.fields.items()})


def simulate_log(
    scenario: Scenario,
    seed: int,
    decisions: int,
    purpose: str,
    *,
    keep_events: bool = False,
    keep_truth: bool = False,
    messages: float = 0.0,
) -> dict[str, Any]:
    """A decision log of the exploring logger (``messages``: :func:`logger`) in memory, as
    envs.log_writer.log_bandit_run writes it.

    Fields ``context``, ``eligible``, ``action``, ``propensity``, ``reward``, ``customer_id``,
    ``logging`` (the logger's distribution), plus ``er`` (exact expected rewards) with
    ``keep_truth`` and ``events`` with ``keep_events``.
    """
    sim = bandit_simulation(scenario, seed, BATCH, purpose)
    rng = policy_rng(seed, purpose)
    customers = CustomerIds.start(BATCH, prefix=f"{purpose}/s{seed}-")
    pol = logger(scenario, messages)
    cols: dict[str, list] = {
        k: []
        for k in ("context", "eligible", "action", "propensity", "reward", "customer_id", "logging", "er", "events")
    }
    for step in range(-(-decisions // BATCH)):
        take = min(BATCH, decisions - step * BATCH)
        X, mask = sim.observe(), sim.action_mask()
        if keep_truth:
            cols["er"].append(sim.expected_rewards()[:take])
        ids = customers.ids()[:take]
        d = act(pol, X, mask, rng)
        res = sim.step(d.actions)
        for k, v in (
            ("context", X),
            ("eligible", mask),
            ("action", d.actions),
            ("propensity", d.propensities),
            ("reward", res.reward),
            ("logging", d.probabilities),
            ("customer_id", ids),
        ):
            cols[k].append(np.array(v[:take]))
        if keep_events:
            cols["events"].append(funnel_events(res))
        customers.advance(res.replaced)
    out: dict[str, Any] = {k: np.concatenate(v) for k, v in cols.items() if v and k != "events"}
    if keep_events:
        out["events"] = Events(cols["events"])
    return out


Estimates = dict[str, dict[str, ope.Estimate]]  # policy -> estimator -> estimate


def funnel_model(log: Mapping[str, Any], space, seed: int, threads: int = 1, folds: int = 2) -> np.ndarray:
    """(n, A) cross-fitted predictions of every action's reward by ``lgbm_funnel``'s model of the log's
    funnel events (opened, clicked, converted, the conversion's value and the rest of the reward):
    the model fitted on the other folds predicts each fold's rows; an ineligible action earns what no
    contact earns, as in :func:`nba.ope.fit_reward_model`."""
    from nba.policies.funnel import LGBMFunnel

    n = len(log["reward"])
    fold = np.random.default_rng([seed, 0xF0]).permutation(n) % folds
    out = np.empty((n, space.n_actions))
    for k in range(folds):
        train, test = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        model = LGBMFunnel(space, log["context"].shape[1], min_samples=1, seed=seed, threads=threads)
        events = log["events"].take(train)
        model.update(log["context"][train], log["action"][train], log["reward"][train], events=events)
        mask = log["eligible"][test]
        scores = model.scores(log["context"][test], mask)
        out[test] = np.where(mask, scores, scores[:, :1])
    return out


def evaluate_log(
    policies: Mapping[str, Policy],
    log: Mapping[str, Any],
    seed: int,
    *,
    bootstrap: int,
    refits: int,
    rounds: int,
    channel_content: bool = False,
    threads: int = 1,
    estimated_logging: bool = False,
    fixed: bool = False,
    compare_interval: str | None = None,
    funnel: bool = False,
) -> tuple[dict[str, float], Estimates, float]:
    """Exact values and every estimate of each policy on one log; also the reward model's fitting time."""
    space = next(iter(policies.values())).space
    t0 = time.perf_counter()
    model = ope.fit_reward_models(
        log["context"],
        log["action"],
        log["reward"],
        space,
        mask=log["eligible"],
        seed=seed,
        refits=refits,
        clusters=log["customer_id"],
        num_boost_round=rounds,
        threads=threads,
    )
    fit_s = time.perf_counter() - t0
    q_funnel = funnel_model(log, space, seed, threads) if funnel else None
    truth, estimates = {}, {}
    data = {k: log[k] for k in ("action", "propensity", "reward", "customer_id")}
    kw = {"tau": TAU, "n_bootstrap": bootstrap, "seed": seed, "logging": log["logging"], "space": space}
    for name, policy in policies.items():
        probs = policy.probabilities(log["context"], log["eligible"])
        truth[name] = float(np.einsum("ij,ij->i", probs, log["er"]).mean())
        if estimated_logging:  # the logger's group probabilities estimated from the log, as for a real log
            if "logging_groups" not in log:
                log["logging_groups"] = ope.fit_group_propensities(
                    log["context"],
                    log["action"],
                    ope.action_groups(space),
                    mask=log["eligible"],
                    seed=seed,
                    threads=threads,
                )
            est = ope.evaluate(
                probs, data, q_hat=model, **{**kw, "logging": None}, logging_groups=log["logging_groups"]
            )
            estimates[name] = {k: est[k] for k in ("ips", "dr", "mips", "mdr")}
            continue
        est = ope.evaluate(probs, data, q_hat=model, **kw)
        if compare_interval:  # every estimator again, its interval by the other method
            other = ope.evaluate(probs, data, q_hat=model, interval=compare_interval, **kw)
            est |= {f"{k}{SUFFIX[compare_interval]}": e for k, e in other.items()}
        if fixed:
            held = ope.evaluate(probs, data, q_hat=model.q_hat, **kw)
            est |= {"dm_fixed": held["dm"], "dr_fixed": held["dr"]}
        if channel_content:
            cc = ope.evaluate(probs, data, q_hat=model, groups="channel_content", **kw)
            est |= {"mips_cc": cc["mips"], "mdr_cc": cc["mdr"]}
        if q_funnel is not None:
            fun = ope.evaluate(probs, data, q_hat=q_funnel, **kw)
            est |= {f"{k}_funnel": fun[k] for k in ("dm", "dr", "mdr")}
        estimates[name] = est
    return truth, estimates, fit_s


def paired_lifts(estimates: Estimates) -> dict[str, dict[str, dict[str, Any]]]:
    """Each policy's paired lift over business as usual by the ranked estimator (:func:`nba.ope.lift`: the
    quickstart's shortlist), with each interval method measured (``mdr``, and ``mdr_t`` or ``mdr_pct``): policy
    -> estimator -> the Lift's fields."""
    if BASE not in estimates:
        return {}
    ranked = (ope.RANK_ESTIMATOR, *(ope.RANK_ESTIMATOR + x for x in SUFFIX.values()))
    names = [n for n in ranked if n in estimates[BASE]]
    return {p: {n: vars(ope.lift(est[n], estimates[BASE][n])) for n in names} for p, est in estimates.items()}


def lift_summary(truths: list[dict[str, float]], lifts: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Per policy x estimator, over the logs: how often the paired lift's interval covers the exact lift over
    business as usual (the two exact values' difference on the log's contexts), misses below / above, mean
    width, bias; how often its lower bound clears 0 (the quickstart would A/B it) and, of those, how often the
    exact lift is above 0."""
    out: dict[str, Any] = {}
    for policy in lifts[0]:
        if policy == BASE:
            continue
        tr = np.array([t[policy] - t[BASE] for t in truths])
        row = out[policy] = {"exact": float(tr.mean())}
        for name in lifts[0][policy]:
            lo = np.array([x[policy][name]["ci_low"] for x in lifts])
            hi = np.array([x[policy][name]["ci_high"] for x in lifts])
            value = np.array([x[policy][name]["value"] for x in lifts])
            clear = lo > 0
            row[name] = {
                "coverage": float(np.mean((lo <= tr) & (tr <= hi))),
                "misses_low": int((hi < tr).sum()),
                "misses_high": int((lo > tr).sum()),
                "width": float(np.mean(hi - lo)),
                "bias": float(np.mean(value - tr)),
                "clears_0": int(clear.sum()),
                "clears_0_rightly": int((clear & (tr > 0)).sum()),
            }
    return out


def summarise(truths: list[dict[str, float]], runs: list[dict[str, dict[str, ope.Estimate]]]) -> dict[str, Any]:
    """Per policy x estimator: coverage (supported logs, all logs), bias, width, unsupported share."""
    out: dict[str, Any] = {}
    for policy in truths[0]:
        out[policy] = {"truth": float(np.mean([t[policy] for t in truths]))}
        for name in runs[0][policy]:
            es = [r[policy][name] for r in runs]
            tr = np.array([t[policy] for t in truths])
            cov = np.array([e.covers(v) for e, v in zip(es, tr, strict=True)])
            sup = np.array([not e.unsupported for e in es])
            err = np.array([e.value for e in es]) - tr
            out[policy][name] = {
                "coverage": float(cov[sup].mean()) if sup.any() else None,
                "coverage_all": float(cov.mean()),
                "bias": float(err.mean()),
                "bias_se": float(err.std(ddof=1) / np.sqrt(len(err))) if len(err) > 1 else float("nan"),
                "rmse": float(np.sqrt((err**2).mean())),
                "width": float(np.mean([e.ci_high - e.ci_low for e in es])),
                "unsupported": float(1 - sup.mean()),
                "support_gap": float(np.mean([e.support_gap for e in es])),
                "model_se": float(np.mean([e.model_se for e in es])),
                "ess": float(np.mean([e.ess for e in es])),
                "misses_low": int(((~cov) & (np.array([e.ci_high for e in es]) < tr)).sum()),
                "misses_high": int(((~cov) & (np.array([e.ci_low for e in es]) > tr)).sum()),
            }
    return out


def ranking(truths, runs, estimators) -> dict[str, Any]:
    """For each estimator and statistic (value, ci_low): share of logs whose pick is the truly best, mean regret."""
    out = {}
    for name in estimators:
        for stat in ("value", "ci_low"):
            right, regret = [], []
            for t, r in zip(truths, runs, strict=True):
                best = max(t.values())
                ok = {p: getattr(e[name], stat) for p, e in r.items() if not e[name].unsupported}
                if not ok:
                    continue
                pick = max(ok, key=ok.get)
                right.append(t[pick] >= best - 1e-12)
                regret.append(best - t[pick])
            out[f"{name}.{stat}"] = {
                "best_share": float(np.mean(right)) if right else None,
                "mean_regret": float(np.mean(regret)) if regret else None,
                "logs": len(right),
            }
    return out


def plot(summary: Mapping[str, Any], estimators: list[str], path: Path, logs: int) -> None:
    """Coverage bars, a group per policy and a bar per estimator, beside a key that names the ranked estimator,
    the hatching (unsupported on most logs) and the two reference lines (the nominal 95 %, the 90 % target)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from training.plots import distinct_colors

    policies = list(summary)
    fig, ax = plt.subplots(figsize=(13, 5), layout="constrained")
    width = 0.8 / len(estimators)
    colours = distinct_colors(len(estimators))
    handles: list[Any] = []
    for k, name in enumerate(estimators):
        xs = np.arange(len(policies)) + (k - len(estimators) / 2 + 0.5) * width
        cov = [summary[p][name]["coverage_all"] for p in policies]
        uns = [summary[p][name]["unsupported"] > 0.5 for p in policies]
        ranked = name == ope.RANK_ESTIMATOR
        bars = ax.bar(
            xs, cov, width, color=colours[k], edgecolor="k" if ranked else "none", linewidth=0.8 if ranked else 0
        )
        for b, u in zip(bars, uns, strict=True):
            if u:
                b.set_hatch("//")
                b.set_alpha(0.4)
        label = f"{name} (the pipeline ranks by it)" if ranked else name
        handles.append(Patch(facecolor=colours[k], edgecolor="k" if ranked else "none", label=label))
    ax.axhline(0.95, color="k", lw=0.8, ls="--")
    ax.axhline(0.90, color="r", lw=0.8, ls=":")
    handles += [
        Patch(facecolor="0.85", hatch="//", edgecolor="0.3", label="unsupported on most logs"),
        Line2D([], [], color="k", lw=0.8, ls="--", label="nominal 0.95"),
        Line2D([], [], color="r", lw=0.8, ls=":", label="target 0.90"),
    ]
    ax.set_xticks(np.arange(len(policies)), policies, rotation=30, ha="right")
    ax.set_ylabel(f"coverage of the exact value ({logs} logs)")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(-0.5, len(policies) - 0.5)
    ax.set_title("95 % intervals: how often they contain the exact value")
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _param(items: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, _, value = item.partition("=")
        name, _, field = key.partition(".")
        if not (name and field and value):
            raise SystemExit(f"--policy-param: expected NAME.KEY=VALUE, got {item!r}")
        try:
            out.setdefault(name, {})[field] = json.loads(value)
        except json.JSONDecodeError:
            out.setdefault(name, {})[field] = value
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--logs", type=int, default=50)
    ap.add_argument("--decisions", type=int, default=20_000)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--refits", type=int, default=ope.REFITS)
    ap.add_argument("--rounds", type=int, default=30, help="the reward model's boosting rounds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--messages", type=float, default=0.0, help="share of the logger's contacts given a random eligible message"
    )
    ap.add_argument("--policy-param", action="append", default=[])
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="LightGBM threads of the reward model and the tree policies (on a busy machine one "
        "thread is several times faster than two)",
    )
    ap.add_argument(
        "--safe", action="store_true", help="the bandits in their conservative mode (SPIBB), as the quickstart"
    )
    ap.add_argument(
        "--estimated-logging",
        action="store_true",
        help="the logger's group probabilities estimated from each log (fit_group_propensities), not "
        "given: IPS, DR, MIPS and MDR only (the support check then reads the log's counts)",
    )
    ap.add_argument("--channel-content", action="store_true", help="also the marginal estimators on channel x content")
    ap.add_argument(
        "--compare-interval",
        choices=[*ope.INTERVALS, "none"],
        default=next(m for m in ope.INTERVALS if m != ope.INTERVAL),
        help="also every estimator with its interval by this method (suffix _t: studentized, _pct: percentile)",
    )
    ap.add_argument("--fixed", action="store_true", help="also DM and DR with the reward model held fixed")
    ap.add_argument(
        "--funnel-model",
        action="store_true",
        help="also DM, DR and MDR with a cross-fitted funnel model of the log's events as the reward model",
    )
    ap.add_argument(
        "--in-sample",
        action="store_true",
        help="evaluate on the log the bandits learned from: log j is training log j (30,000 decisions), each "
        "its own purpose, the policies trained again on each (what an in-sample evaluation claims)",
    )
    ap.add_argument("--first-log", type=int, default=0)
    ap.add_argument("--merge", type=Path, nargs="+", default=None, help="summarise these JSON outputs together")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None, help="write the tables as Markdown")
    args = ap.parse_args()
    if args.merge:
        merged = [json.loads(f.read_text()) for f in args.merge]
        truths = [t for m in merged for t in m["truths"]]
        # flagged again with the current threshold (nba.ope.SUPPORT_SHARE) from the stored support gaps
        runs = [
            {
                p: {n: ope.Estimate(**{**e, "unsupported": e["support_gap"] > ope.SUPPORT_SHARE}) for n, e in r.items()}
                for p, r in run.items()
            }
            for m in merged
            for run in m["estimates"]
        ]
        lifts = [x for m in merged for x in m.get("lifts", [])]
        lifts = lifts if len(lifts) == len(runs) else []  # runs from before the lifts were kept: none
        report(truths, runs, lifts, args, sum(m["wall_s"] for m in merged), merged[0])
        return
    t_start = time.perf_counter()
    scenario = Scenario.default()
    params = _param(args.policy_param)
    for name in LIGHTGBM:
        params.setdefault(name, {}).setdefault("threads", args.threads)

    def trained(log: Mapping[str, Any] | None = None) -> dict[str, Policy]:
        return train_policies(scenario, args.seed, params=params, safe=args.safe, messages=args.messages, log=log)

    policies = {} if args.in_sample else trained()
    train_s = time.perf_counter() - t_start
    if args.in_sample:  # each log is a training log of its own, evaluated on after the policies learn from it
        args.decisions = TRAIN_DECISIONS
    print(
        f"trained {len(policies)} policies in {train_s:.0f} s; {args.logs} evaluation logs of {args.decisions:,} "
        f"decisions{' (in sample)' if args.in_sample else ''}; {args.bootstrap} resamples; reward model "
        f"{args.rounds} rounds, {args.refits} refits"
    )
    truths, runs, lifts, fit_s, sim_s = [], [], [], [], []
    for j in range(args.first_log, args.first_log + args.logs):
        t0 = time.perf_counter()
        purpose = f"{IN_SAMPLE_PURPOSE if args.in_sample else EVAL}/{j}"
        log = simulate_log(
            scenario,
            args.seed,
            args.decisions,
            purpose,
            keep_truth=True,
            keep_events=args.funnel_model or args.in_sample,
            messages=args.messages,
        )
        sim_s.append(time.perf_counter() - t0)
        if args.in_sample:
            t1 = time.perf_counter()
            policies = trained(log)
            train_s += time.perf_counter() - t1
        # the resampling and reward-model seed: the log's own index (its customers are (seed, purpose)'s)
        truth, est, fs = evaluate_log(
            policies,
            log,
            j,
            bootstrap=args.bootstrap,
            refits=args.refits,
            rounds=args.rounds,
            channel_content=args.channel_content,
            threads=args.threads,
            estimated_logging=args.estimated_logging,
            fixed=args.fixed,
            compare_interval=None if args.compare_interval == "none" else args.compare_interval,
            funnel=args.funnel_model,
        )
        if j == args.first_log:  # the exact values are bandit_truth's (the replay of the same logging run)
            exact = bandit_truth(
                scenario,
                logger(scenario, args.messages),
                policies,
                args.decisions,
                BATCH,
                args.seed,
                purpose=purpose,
            )
            worst = max(abs(exact[p] - truth[p]) for p in policies)
            assert worst < 1e-9, f"exact values differ from bandit_truth by {worst}"
        truths.append(truth)
        runs.append(est)
        lifts.append(paired_lifts(est))
        fit_s.append(fs)
        print(
            f"log {j + 1 - args.first_log}/{args.logs}: {time.perf_counter() - t0:.0f} s (reward model {fs:.0f} s)",
            flush=True,
        )
        if args.json:
            save(args, truths, runs, lifts, time.perf_counter() - t_start, train_s, sim_s, fit_s)
    wall = time.perf_counter() - t_start
    timing = {"train_s": train_s, "sim_s": float(np.mean(sim_s)), "fit_s": float(np.mean(fit_s))}
    report(truths, runs, lifts, args, wall, timing)
    if args.json:
        save(args, truths, runs, lifts, wall, train_s, sim_s, fit_s)


def save(args, truths, runs, lifts, wall: float, train_s: float, sim_s: list[float], fit_s: list[float]) -> None:
    """The run so far as JSON (rewritten after every log)."""
    args.json.write_text(
        json.dumps(
            {
                "logs": len(runs),
                "first_log": args.first_log,
                "decisions": args.decisions,
                "bootstrap": args.bootstrap,
                "refits": args.refits,
                "rounds": args.rounds,
                "seed": args.seed,
                "interval": ope.INTERVAL,
                "compare_interval": args.compare_interval,
                "machine": platform.machine(),
                "wall_s": wall,
                "train_s": train_s,
                "sim_s": float(np.mean(sim_s)),
                "fit_s": float(np.mean(fit_s)),
                "support_weight": ope.SUPPORT_WEIGHT,
                "support_share": ope.SUPPORT_SHARE,
                "in_sample": args.in_sample,
                "summary": summarise(truths, runs),
                "ranking": ranking(truths, runs, list(runs[0][next(iter(runs[0]))])),
                "truths": truths,
                "estimates": [
                    {
                        p: {n: {k: v for k, v in vars(e).items() if k not in ARRAYS} for n, e in r.items()}
                        for p, r in run.items()
                    }
                    for run in runs
                ],
                "lifts": lifts,
                "messages": args.messages,
                "safe": args.safe,
            }
        )
    )


def report(truths, runs, lifts, args, wall: float, timing: Mapping[str, Any]) -> None:
    """Print the tables (and the plot) of a run or of merged runs."""
    names = list(runs[0][next(iter(runs[0]))])
    summary = summarise(truths, runs)
    rank = ranking(truths, runs, names)

    print(
        f"\ncoverage of the exact value by the 95% interval over {len(runs)} logs (supported logs / all logs), "
        "bias (its standard error), mean width, share unsupported"
    )
    for policy, row in summary.items():
        print(f"\n{policy} (exact value {row['truth']:.4f})")
        print(
            f"  {'estimator':<10} {'cover':>6} {'all':>6} {'bias':>9} {'(se)':>7} {'width':>8} {'unsup':>6} "
            f"{'gap':>6} {'model_se':>8} {'ess':>8}"
        )
        for name in names:
            s = row[name]
            cov = "-" if s["coverage"] is None else f"{s['coverage']:.2f}"
            print(
                f"  {name:<10} {cov:>6} {s['coverage_all']:>6.2f} {s['bias']:>9.4f} {s['bias_se']:>7.4f} "
                f"{s['width']:>8.4f} {s['unsupported']:>6.2f} {s['support_gap']:>6.3f} {s['model_se']:>8.4f} "
                f"{s['ess']:>8.0f}"
            )
    best = max(summary, key=lambda p: summary[p]["truth"])
    print(f"\nranking rules (unsupported estimates left out; truly best policy on average: {best})")
    print(f"  {'rule':<18} {'picks best':>10} {'mean regret':>12}")
    for rule, v in rank.items():
        if v["best_share"] is not None:
            print(f"  {rule:<18} {v['best_share']:>10.2f} {v['mean_regret']:>12.4f}")
    if lifts and lifts[0]:
        print(
            f"\npaired lift over {BASE} (the quickstart's shortlist): coverage of the exact lift, misses below / "
            "above, mean width, bias; logs whose lower bound clears 0 (of those, with an exact lift above 0)"
        )
        for policy, row in lift_summary(truths, lifts).items():
            print(f"\n{policy} (exact lift {row['exact']:+.4f})")
            for name, v in row.items():
                if name != "exact":
                    print(
                        f"  {name:<8} cover {v['coverage']:.2f}  misses {v['misses_low']:>2} / {v['misses_high']:<2} "
                        f"width {v['width']:.3f}  bias {v['bias']:+.4f}  clears 0: {v['clears_0']} "
                        f"({v['clears_0_rightly']} rightly)"
                    )
    t = {k: timing.get(k, float("nan")) for k in ("train_s", "sim_s", "fit_s")}
    print(
        f"\n{len(runs)} logs; wall time {wall:.0f} s (summed over merged runs; training {t['train_s']:.0f} s; "
        f"per log: simulation {t['sim_s']:.1f} s, reward model {t['fit_s']:.1f} s)"
    )
    if args.plot:
        plot(summary, ["ips", "dm", "dr", "mips", "mdr"], args.plot, len(runs))
    if args.markdown:
        args.markdown.write_text(markdown(summary, rank, names))


def markdown(summary: Mapping[str, Any], rank: Mapping[str, Any], names: list[str]) -> str:
    """Tables for bench/RESULTS.md: coverage over all logs per policy x estimator ("u" where unsupported
    on most logs), bias, and the ranking rules."""
    lines = ["| policy | exact | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    for policy, row in summary.items():
        cells = [f"{row[n]['coverage_all']:.2f}" + (" u" if row[n]["unsupported"] > 0.5 else "") for n in names]
        lines.append(f"| {policy} | {row['truth']:.3f} | " + " | ".join(cells) + " |")
    lines += ["", "| policy | " + " | ".join(f"{n} bias (se)" for n in names) + " |", "|---" * (len(names) + 1) + "|"]
    for policy, row in summary.items():
        lines.append(
            f"| {policy} | " + " | ".join(f"{row[n]['bias']:+.3f} ({row[n]['bias_se']:.3f})" for n in names) + " |"
        )
    lines += ["", "| ranking rule | picks the best | mean regret |", "|---|---|---|"]
    for rule, v in rank.items():
        if v["best_share"] is not None:
            lines.append(f"| {rule} | {v['best_share']:.2f} | {v['mean_regret']:.4f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
