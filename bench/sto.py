"""What send-time optimisation alone is worth: one rule's messages, sent at different hours.

    python bench/sto.py [--customers 20000] [--burn-in 60] [--steps 60] [--seed 0] [--json out.json] [--plot out.png]

Channel and content are held to one rule, business as usual's (``nba.policies.baselines``); only the
send slot varies (the scenario's slots: "now" or local hours 9, 13, 19). On ``nba/Bandit-v0``
(a random moment of the day per decision, a new customer after a decision with probability 1/30,
penalties charged), ``--customers`` rows of customers of their own purpose (:data:`EVAL`) build
their histories under the rule with a send slot drawn uniformly among the eligible ones, for
``--burn-in`` decisions and then ``--steps`` more. At each of the last ``--steps`` decisions every
send-time rule is scored on the same context by the exact expected reward of its choice
(:meth:`envs.simulation.Simulation.expected_rewards`); nothing it chooses is sent, so all rules are
scored on the same customers, histories and moments (common random numbers). Send-time rules:

* **now (or the first allowed slot)**: the decision's moment; when the contact policy blocks it
  (quiet hours at night on SMS and push), the eligible slot that comes soonest;
* **business as usual**: now, or nothing when now is blocked (what the rule itself does);
* **fixed hour h**: the local hour h for everyone (the soonest eligible slot when h is blocked);
* **segment's best hour**: per segment and channel, the hour (9, 13 or 19) whose messages were seen
  most often on :data:`WARM_UP` customers (their own purpose) under the same logging;
* **nba (per-customer hour model)**: :class:`nba.policies.sto.SendTime` over the rule's message, its
  population prior learnt from the warm-up customers' contexts, reading each customer's own
  history (``hour_pref_cos/sin``); greedy (``epsilon = 0``);
* **true peak hour (curve only)**: the slot where the customer's true hour curve on the channel is
  highest (the latent ``peak_hour`` trait; ignores what waiting costs);
* **oracle**: the eligible slot with the highest true expected reward for the rule's message.

Every rule but business as usual sends on the same decisions (those where the rule has a message
and some slot is eligible), so the comparison is of timing alone. The table gives each rule's exact
value per decision and its difference from "now" with a 95% interval over customer rows (each row a
customer stream of its own), and the share of the oracle's timing uplift over "now" it captures
(delta-method interval). Target: nba's per-customer hour captures >= 50% of it.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from scipy import stats

from envs.rollout import ValueEstimate, bandit_simulation, policy_rng
from envs.scenario import Scenario
from envs.simulation import Simulation
from nba.actions import ActionSpace
from nba.eligibility import send_time
from nba.features import TWO_PI_24, hour_of_day
from nba.policies import act
from nba.policies.baselines import BusinessAsUsual
from nba.policies.sto import SendTime

# the customers of each stage, all of (--seed, purpose): no stage sees another's customers (envs.random)
WARM_UP, EVAL = "sto/warm-up", "sto/eval"
TARGET = 0.5  # share of the oracle's timing uplift over "now" nba's per-customer hour must capture


class RuleMessage:
    """The rule's (channel, content), its send slot drawn uniformly among the eligible ones.

    A first stage for :class:`SendTime` (which keeps the message and picks the slot) and the
    logging policy under which histories build; no contact where the rule has no message or no slot
    of it is eligible."""

    name = "rule_message"

    def __init__(self, rule: BusinessAsUsual) -> None:
        self.rule, self.space = rule, rule.space

    def slot_actions(self, X: np.ndarray) -> np.ndarray:
        """(N, S) the rule's message at each send slot; 0 (no contact) where the rule sends nothing."""
        sp = self.space
        a = self.rule.choose(X)
        base = 1 + (sp.channel_of[a].astype(np.int64) * sp.n_contents + sp.content_of[a]) * sp.n_slots
        return np.where((a > 0)[:, None], base[:, None] + np.arange(sp.n_slots), 0)

    def probabilities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        slots = self.slot_actions(X)
        ok = np.take_along_axis(mask, slots, 1) & (slots > 0)
        out = np.zeros(mask.shape)
        k = ok.sum(axis=1)
        rows = np.arange(len(X))
        np.add.at(out, (np.repeat(rows, ok.shape[1]), slots.ravel()), (ok / np.maximum(k, 1)[:, None]).ravel())
        out[:, 0] = np.where(k == 0, 1.0, 0.0)
        return out

    def update(self, X, actions, rewards, propensities=None, **extra) -> RuleMessage:
        return self


def first_allowed(ok: np.ndarray, wait: np.ndarray, prefer: np.ndarray | None = None) -> np.ndarray:
    """(N,) slot index: the eligible slot with the highest ``prefer`` score, ties (and no score) to the soonest."""
    score = -wait if prefer is None else prefer * 1e3 - wait
    return np.argmax(np.where(ok, score, -np.inf), axis=1)


def warm_up(sc: Scenario, rule: RuleMessage, sto: SendTime, n: int, steps: int, seed: int) -> np.ndarray:
    """Log ``steps`` decisions of ``n`` :data:`WARM_UP` rows under the rule with uniform slots: teach
    ``sto`` its population prior from the contexts, and return the seen rate of the sends per
    (segment, channel, slot) — what the segment's best hour is read from."""
    sp = sc.action_space
    sim = bandit_simulation(sc, seed, n, WARM_UP)
    rng = policy_rng(seed, WARM_UP)
    shape = (len(sc.segments), sp.n_channels, sp.n_slots)
    sent, seen = np.zeros(shape), np.zeros(shape)
    for _ in range(steps):
        X, mask = sim.observe(), sim.action_mask()
        d = act(rule, X, mask, rng)
        seg = sim.traits.segment.astype(np.intp)
        res = sim.step(d.actions)
        sto.update(X, d.actions, res.reward, d.propensities)
        out = res.outcome
        rows = np.flatnonzero(out.sent)
        idx = (seg[rows], sp.channel_of[d.actions[rows]], sp.slot_of[d.actions[rows]])
        np.add.at(sent, idx, 1.0)
        np.add.at(seen, idx, out.seen[rows].astype(np.float64))
    return seen / np.maximum(sent, 1.0)


def true_curve(sim: Simulation, channel: np.ndarray, slots: np.ndarray, wait: np.ndarray) -> np.ndarray:
    """(N, S) the customer's true hour curve on ``channel`` (N,) at each slot's local send hour."""
    sa = sim.arrays
    local = hour_of_day(sim.state.now + sim.traits.tz_offset)
    hour = hour_of_day(local[:, None] + wait)
    ch = np.maximum(channel, 0)
    peak = sim.traits.peak_hour[np.arange(sim.n), ch].astype(np.float64)
    return sa.hour_kappa[ch][:, None] * np.cos(TWO_PI_24 * (hour - peak[:, None]))


RULES = (
    "now (or the first allowed slot)",
    "business as usual (now or nothing)",
    "fixed 9:00",
    "fixed 13:00",
    "fixed 19:00",
    "segment's best hour",
    "nba per-customer hour",
    "true peak hour (curve only)",
    "oracle",
)
NOW, ORACLE, NBA, SEGMENT = RULES[0], RULES[-1], "nba per-customer hour", "segment's best hour"


def evaluate(
    sc: Scenario,
    rule: RuleMessage,
    sto: SendTime,
    seg_rate: np.ndarray,
    n: int,
    burn_in: int,
    steps: int,
    seed: int,
    variants: dict[str, SendTime] | None = None,
    progress=None,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Per-row totals of each send-time rule's exact expected reward over the ``steps`` scored decisions
    (``variants``: more send-time models, scored as nba's is)."""
    sp: ActionSpace = sc.action_space
    sim = bandit_simulation(sc, seed, n, EVAL)
    rng = policy_rng(seed, EVAL)
    rows = np.arange(n)
    variants = variants or {}
    totals = {name: np.zeros(n) for name in [*RULES, *variants]}
    counts = {"decisions": 0, "with_message": 0, "sent": 0, "now_blocked": 0, "nba_is_oracle": 0, "nba_slot_now": 0}
    hours = [h for h in sp.send_slots]
    for step in range(burn_in + steps):
        X, mask = sim.observe(), sim.action_mask()
        if step >= burn_in:
            slots = rule.slot_actions(X)
            ok = np.take_along_axis(mask, slots, 1) & (slots > 0)
            # (N, S): a blocked slot, and every slot of a row without a message, earns what no contact earns
            er = sim.expected_rewards(slots)
            tz = sim.traits.tz_offset.astype(np.float64)
            wait = send_time(sp, sim.state.now, tz) - sim.state.now[:, None]
            channel = sp.channel_of[slots[:, 0]]
            is_hour = np.array([h is not None for h in hours])
            seg = sim.traits.segment.astype(np.intp)
            p_nba = sto.probabilities(X, mask)
            nba_slot = np.where(p_nba[:, 0] < 1.0, sp.slot_of[np.argmax(p_nba, axis=1)], 0)
            for name, model in variants.items():
                totals[name] += er[rows, sp.slot_of[np.argmax(model.probabilities(X, mask), axis=1)].clip(0)]
            choice = {
                NOW: first_allowed(ok, wait),
                "fixed 9:00": first_allowed(ok, wait, np.array(hours, dtype=object) == 9),
                "fixed 13:00": first_allowed(ok, wait, np.array(hours, dtype=object) == 13),
                "fixed 19:00": first_allowed(ok, wait, np.array(hours, dtype=object) == 19),
                SEGMENT: first_allowed(ok, wait, np.where(is_hour, seg_rate[seg, np.maximum(channel, 0)], -1.0)),
                NBA: nba_slot,
                "true peak hour (curve only)": first_allowed(ok, wait, true_curve(sim, channel, slots, wait)),
                ORACLE: first_allowed(ok, wait, er),
            }
            send = ok.any(axis=1)
            for name, s in choice.items():
                totals[name] += er[rows, s]
            totals["business as usual (now or nothing)"] += er[:, 0]
            counts["decisions"] += n
            counts["with_message"] += int((slots[:, 0] > 0).sum())
            counts["sent"] += int(send.sum())
            counts["now_blocked"] += int((send & ~ok[:, 0]).sum())
            counts["nba_is_oracle"] += int((send & (nba_slot == choice[ORACLE])).sum())
            counts["nba_slot_now"] += int((send & (nba_slot == 0)).sum())
            if not np.all(p_nba[send, 0] == 0.0) or np.any(p_nba[~send, 0] != 1.0):
                raise RuntimeError("nba's send-time model and the rule disagree on which decisions send")
        d = act(rule, X, mask, rng)
        sim.step(d.actions)
        if progress is not None:
            progress(step)
    return totals, counts


def share_interval(d_v: np.ndarray, d_o: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """mean(d_v) / mean(d_o) with a delta-method interval over rows."""
    r = d_v.mean() / d_o.mean()
    resid = d_v - r * d_o
    half = stats.norm.ppf(0.5 + level / 2) * resid.std(ddof=1) / (np.sqrt(len(d_v)) * abs(d_o.mean()))
    return float(r), float(r - half), float(r + half)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=20_000, help="rows of customers, warm-up and evaluation each")
    ap.add_argument("--burn-in", type=int, default=60, help="decisions per row before scoring (histories build)")
    ap.add_argument("--steps", type=int, default=60, help="scored decisions per row")
    ap.add_argument("--warm-up-steps", type=int, default=60, help="decisions per warm-up row")
    ap.add_argument(
        "--prior-strength",
        type=float,
        default=None,
        help="SendTime's weight on the segment's prior, in messages (default: estimated)",
    )
    ap.add_argument(
        "--strengths",
        default="0,3,30,300,1000,inf",
        help="also score nba's model with these fixed weights on the prior (what a history can add)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None)
    args = ap.parse_args()
    started = time.perf_counter()
    console = Console(width=150)
    sc = Scenario.default()
    sp, seg = sc.action_space, tuple(sc.segments)
    rule = RuleMessage(BusinessAsUsual(sp, seg))
    sto = SendTime(sp, seg, first=rule, epsilon=0.0, prior_strength=args.prior_strength)
    with Progress(console=console) as bar:
        task = bar.add_task(f"warm-up: {args.customers:,} rows x {args.warm_up_steps} decisions", total=None)
        seg_rate = warm_up(sc, rule, sto, args.customers, args.warm_up_steps, args.seed)
        bar.update(task, total=1, completed=1)
        task = bar.add_task(
            f"evaluation: {args.customers:,} rows x {args.burn_in} + {args.steps} decisions",
            total=args.burn_in + args.steps,
        )
        variants = {}
        for k in (float(x) for x in args.strengths.split(",") if x):
            variant = copy.copy(sto)
            variant.model = copy.copy(sto.model)
            variant.model.prior_strength = k
            variants[f"nba, prior weight {k:g} messages"] = variant
        totals, counts = evaluate(
            sc,
            rule,
            sto,
            seg_rate,
            args.customers,
            args.burn_in,
            args.steps,
            args.seed,
            variants,
            progress=lambda _: bar.advance(task),
        )
    per = {k: v / args.steps for k, v in totals.items()}  # per decision, per row
    d_o = per[ORACLE] - per[NOW]
    table = Table(
        title=f"Send time only: business as usual's messages, {args.customers:,} customer rows x "
        f"{args.steps} decisions (exact expected reward, 95% CI over rows)"
    )
    for col in ("send-time rule", "value / decision", "vs now", "95% CI", "share of oracle's uplift", "95% CI "):
        table.add_column(col)
    results = {"rules": {}}
    for name in totals:
        v = ValueEstimate.of(per[name])
        d = ValueEstimate.of(per[name] - per[NOW])
        s = share_interval(per[name] - per[NOW], d_o)
        results["rules"][name] = {
            "value": v.mean,
            "value_ci": [v.ci_low, v.ci_high],
            "vs_now": d.mean,
            "vs_now_ci": [d.ci_low, d.ci_high],
            "share": s[0],
            "share_ci": [s[1], s[2]],
        }
        table.add_row(
            name,
            f"{v.mean:.4f}",
            f"{d.mean:+.4f}",
            f"[{d.ci_low:+.4f}, {d.ci_high:+.4f}]",
            f"{s[0]:.1%}",
            f"[{s[1]:.1%}, {s[2]:.1%}]",
        )
    console.print(table)
    sent = counts["sent"]
    results["counts"] = counts
    console.print(
        f"{counts['decisions']:,} decisions; the rule has a message in {counts['with_message']:,} "
        f"({counts['with_message'] / counts['decisions']:.1%}), some slot is eligible in {sent:,}; "
        f"now is blocked in {counts['now_blocked'] / sent:.1%} of those; nba picks the oracle's slot in "
        f"{counts['nba_is_oracle'] / sent:.1%} and now in {counts['nba_slot_now'] / sent:.1%}"
    )
    d = ValueEstimate.of(per[NBA] - per[SEGMENT])
    results["nba_vs_segment"] = {"diff": d.mean, "ci": [d.ci_low, d.ci_high]}
    console.print(
        f"nba's per-customer hour vs the segment's best hour: {d.mean:+.4f} "
        f"[{d.ci_low:+.4f}, {d.ci_high:+.4f}] per decision "
        f"({d.mean / d_o.mean():+.1%} of the oracle's uplift)"
    )
    share = results["rules"][NBA]["share"]
    met = share >= TARGET
    results["target"] = {"share": TARGET, "met": bool(met)}
    console.print(
        f"nba's per-customer hour captures {share:.1%} of the oracle's timing uplift over now "
        f"(target >= {TARGET:.0%}): {'met' if met else 'NOT met'}"
    )
    results["segment_seen_rate"] = {
        s: {
            ch: dict(zip([str(h) for h in sp.send_slots], seg_rate[i, j].tolist(), strict=True))
            for j, ch in enumerate(sp.channels)
            if seg_rate[i, j].any()
        }
        for i, s in enumerate(seg)
    }
    k = sto.model.strength()
    results["prior_strength"] = {
        s: {ch: float(k[i, j]) for j, ch in enumerate(sp.channels) if seg_rate[i, j].any()} for i, s in enumerate(seg)
    }
    console.print(
        "nba's weight on the segment's prior, in messages: "
        + "; ".join(
            f"{s} " + ", ".join(f"{ch} {v:.0f}" for ch, v in d.items()) for s, d in results["prior_strength"].items()
        )
    )
    results["wall_s"] = time.perf_counter() - started
    results["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    console.print(f"wall time {results['wall_s']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    if args.plot:
        plot(results, args.plot)


def plot(results: dict, path: Path) -> None:
    """Each rule's share of the oracle's timing uplift over now, with its interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["rules"])
    share = np.array([results["rules"][k]["share"] for k in names])
    ci = np.array([results["rules"][k]["share_ci"] for k in names])
    fig, ax = plt.subplots(figsize=(7, 3.6))
    y = np.arange(len(names))[::-1]
    ax.barh(y, share, xerr=[share - ci[:, 0], ci[:, 1] - share], color="tab:blue", alpha=0.7)
    ax.axvline(TARGET, color="tab:red", ls="--", lw=1, label=f"target {TARGET:.0%}")
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlabel("share of the oracle's timing uplift over now")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
