"""Calibration report: the simulated population beside the facts it was calibrated on.

:func:`write_report` simulates customers under the business-as-usual schedule
(:func:`envs.calibration.simulate_journeys`), measures every checked target
(:func:`envs.calibration.measure`) and writes into one folder a Markdown summary (``report.md``),
the same as a self-contained HTML page (``report.html``) and one PNG per mechanic, each shown beside
the target it is checked against. The command line runs it as::

    nba scenario report --out DIR --n N --seed S

It is built in three layers so that the report can later be rerun on a user's own decision logs
(sim-to-real validation):

1. the curves are computed from plain arrays by :mod:`envs.calibration_metrics` (funnel rates,
   hour-of-day curves, delays, revenue concentration, spend by channels used);
2. :func:`simulated_inputs` is the only place that reaches into the simulator: it fills a
   :class:`ReportInputs` from a scenario;
3. :func:`render_report` draws the plots and writes the pages from a :class:`ReportInputs`, through
   the reports' shared templates (``training/reports/templates/calibration.*.j2``).

A logs importer only has to fill :class:`ReportInputs` from logs to get the same report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from envs.calibration import TARGETS, TARGETS_BY_NAME, JourneyStats, Target, measure, omni_rank, simulate_journeys
from envs.calibration_metrics import (
    SMS_MINUTES,
    TOP_SHARE,
    Funnel,
    delay_quantiles,
    empirical_cdf,
    revenue_concentration,
    revenue_per_buyer_by_channels,
    rolling_mean,
    start_state_curves,
    top_share,
)
from envs.scenario import Scenario
from training.plots import channel_colors
from training.reports.render import Table, interval, num, percent, pyplot, write_pages

DAYS = 180  # days simulated under business-as-usual ...
WARMUP_DAYS = 90  # ... of which the first are a warm-up, not measured

FUNNEL_PNG = "funnel.png"
HOURS_PNG = "hours.png"
SMS_PNG = "sms_delay.png"
TOUCH_PNG = "touchpoints.png"
CONC_PNG = "concentration.png"
DAILY_PNG = "daily_revenue.png"
IMAGES: tuple[str, ...] = (FUNNEL_PNG, HOURS_PNG, SMS_PNG, TOUCH_PNG, CONC_PNG, DAILY_PNG)

TARGET_COLOR = "#d62728"
MEASURED_COLOR = "#1f77b4"


# ====================================================================================== inputs
@dataclass
class ReportInputs:
    """Everything the report draws: arrays, plus the facts the header states."""

    scenario_name: str
    n: int
    seed: int
    days: int
    warmup_days: int
    stats: JourneyStats
    measured: dict[str, float]  # checked target name -> measured value
    channels: tuple[str, ...]
    segments: tuple[str, ...]
    funnel: Funnel
    funnel_content: str
    hours: np.ndarray  # (S, C, 24) from envs.calibration_metrics.hour_curves
    decision_hour: int | None  # local hour the schedule sends at (marked on the hour curves)
    send_slots: tuple[int, ...]
    delays: dict[str, tuple[np.ndarray, np.ndarray]]  # channel -> (minutes, cdf) of the delay model
    notes: tuple[str, ...] = ()


def simulated_inputs(
    sc: Scenario, *, n: int = 20_000, seed: int = 0, progress: Callable[[int], None] | None = None
) -> ReportInputs:
    """Simulate ``n`` customers of ``sc`` and gather what the report draws."""
    stats = simulate_journeys(sc, n=n, seed=seed, days=DAYS, warmup_days=WARMUP_DAYS, progress=progress)
    measured = measure(sc, stats)
    funnel, hours, content = start_state_curves(sc, n=n, seed=seed)

    notes = [
        "`wrong_moment` and `sms_read_3min` are measured by `envs.calibration` on their own fixed samples "
        "(5,000 customers, seed 1; 200,000 uniforms, seed 2), whatever `--n` and `--seed` are.",
    ]
    return ReportInputs(
        scenario_name=sc.name,
        n=n,
        seed=seed,
        days=DAYS,
        warmup_days=WARMUP_DAYS,
        stats=stats,
        measured=measured,
        channels=funnel.channels,
        segments=tuple(sc.segments),
        funnel=funnel,
        funnel_content=content,
        hours=hours,
        decision_hour=sc.journey_decision_hour,
        send_slots=tuple(sc.send_slots),
        delays={c: delay_quantiles(sc, c) for c in sc.channels},
        notes=tuple(notes),
    )


def write_report(
    scenario: Scenario, out_dir: Path, *, n: int = 20_000, seed: int = 0, progress: Callable[[int], None] | None = None
) -> Path:
    """Simulate ``scenario`` and write its calibration report into ``out_dir``; return ``report.md``.

    ``progress`` is called with each simulated day (0 .. DAYS - 1). Writes ``report.md``,
    ``report.html`` and the PNGs named in :data:`IMAGES`.
    """
    return render_report(simulated_inputs(scenario, n=n, seed=seed, progress=progress), out_dir)


# ====================================================================================== rendering
@dataclass(frozen=True)
class TargetRow:
    target: Target
    measured: float | None  # None: an input target, or not measured in this scenario

    @property
    def status(self) -> str:
        if self.target.kind != "checked":
            return "input"
        if self.measured is None or not np.isfinite(self.measured):
            return "N/A"
        return "PASS" if self.target.ok(self.measured) else "FAIL"

    @property
    def label(self) -> str:
        return _target_label(self.target)


@dataclass(frozen=True)
class Section:
    title: str
    image: str
    alt: str
    text: str
    targets: tuple[str, ...] = ()
    table: Table | None = None


def _target_label(t: Target) -> str:
    return f"target {num(t.value)} (tolerance {num(t.low)}–{num(t.high)})"


def _plot_funnel(plt, inp: ReportInputs, path: Path) -> None:
    f = inp.funnel
    c = len(f.channels)
    fig, ax = plt.subplots(figsize=(11, 5.2), layout="constrained")
    width = 0.2
    cmap = plt.get_cmap("viridis")
    x = np.arange(c)
    for i, name in enumerate(Funnel.STAGES):
        v = f.stage(name)
        ax.bar(
            x + (i - 1.5) * width,
            np.where(v > 0, v, np.nan),
            width,
            label=name,
            color=cmap(i / 3.5),
            edgecolor="white",
            linewidth=0.5,
        )
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda y, _: f"{100 * y:g}%"))
    ax.set_xticks(x, [f"{ch}\n(reach {percent(r)})" for ch, r in zip(f.channels, f.reach, strict=True)])
    ax.set_ylabel("probability per message sent (log scale)")
    ax.set_title(
        f"Response funnel per channel: one '{inp.funnel_content}' message sent now, averaged over reachable customers"
    )
    ax.grid(axis="y", which="major", alpha=0.3)
    ax.legend(title="stage reached", ncols=4, loc="upper right")
    lo = np.nanmin(np.where(f.converted > 0, f.converted, np.nan)) if np.any(f.converted > 0) else 1e-4
    ax.set_ylim(lo / 3, 5.0)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_hours(plt, inp: ReportInputs, path: Path) -> None:
    s = len(inp.segments)
    cols = min(s, 2)
    rows = int(np.ceil(s / cols))
    colors = channel_colors(inp.channels)
    fig, axes = plt.subplots(
        rows, cols, figsize=(6 * cols, 3.6 * rows), sharex=True, sharey=True, layout="constrained", squeeze=False
    )
    h = np.arange(24)
    top = np.nanmax(inp.hours) if np.isfinite(inp.hours).any() else 2.0
    for i, ax in enumerate(axes.flat):
        if i >= s:
            ax.set_visible(False)
            continue
        for j, ch in enumerate(inp.channels):
            ax.plot(h, inp.hours[i, j], marker=".", color=colors[ch], label=ch)
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        for slot in inp.send_slots:
            ax.axvline(slot, color="grey", lw=0.6, ls=":")
        if inp.decision_hour is not None:
            ax.axvline(inp.decision_hour, color="black", lw=1.2, ls="-.")
        n_seg = int((inp.stats.segment == i).sum())
        ax.set_title(f"segment {inp.segments[i]} ({n_seg:,} customers)")
        ax.set_xticks(range(0, 24, 3))
        ax.set_xlim(-0.5, 23.5)
        ax.set_ylim(0, top * 1.08)
        ax.grid(alpha=0.25)
    for ax in axes[-1]:
        ax.set_xlabel("local hour of the send")
    for ax in axes[:, 0]:
        ax.set_ylabel("mean hour multiplier\n(1 = daily average)")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    from matplotlib.lines import Line2D

    handles += [Line2D([], [], color="black", lw=1.2, ls="-."), Line2D([], [], color="grey", lw=0.6, ls=":")]
    labels += [f"business-as-usual send ({inp.decision_hour:02d}:00)", "send slots offered"]
    fig.legend(handles, labels, loc="outside lower center", ncols=5)
    fig.suptitle("Hour-of-day engagement curves by segment: multiplier of the open hazard by local send hour")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_sms_delay(plt, inp: ReportInputs, path: Path) -> None:
    t = TARGETS_BY_NAME["sms_read_3min"]
    colors = channel_colors(inp.channels)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained", gridspec_kw={"width_ratios": [1.1, 1]})
    if "sms" in inp.delays:
        x, p = inp.delays["sms"]
        xmax = max(10.0, 1.2 * float(np.interp(0.99, p, x)))
        ax.plot(x, p, color=colors["sms"], lw=2, label="scenario delay distribution")
        ox, op = empirical_cdf(inp.stats.sms_delays_min)
        if ox.size:
            ax.step(
                ox,
                op,
                where="post",
                color="black",
                lw=1,
                alpha=0.7,
                label=f"SMS seen in the simulated journeys (n={ox.size:,})",
            )
        ax.axhspan(t.low, t.high, color=TARGET_COLOR, alpha=0.15, label=f"target band {t.low:.0%}–{t.high:.0%}")
        ax.axvline(SMS_MINUTES, color=TARGET_COLOR, ls="--", lw=1)
        ax.plot(
            [SMS_MINUTES],
            [t.value],
            marker="*",
            ms=16,
            color=TARGET_COLOR,
            ls="none",
            label=f"target: {t.value:.0%} within {SMS_MINUTES:g} min",
        )
        m = inp.measured.get("sms_read_3min")
        if m is not None:
            ax.plot(
                [SMS_MINUTES],
                [m],
                marker="o",
                ms=8,
                mfc="none",
                mew=2,
                color=MEASURED_COLOR,
                ls="none",
                label=f"measured: {m:.1%}",
            )
        ax.set_xlim(0, xmax)
        ax.set_ylim(0, 1.01)
        ax.legend(loc="lower right", fontsize=9)
    else:
        ax.text(0.5, 0.5, "the scenario has no SMS channel", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("minutes from delivery to read")
    ax.set_ylabel("share of SMS read")
    ax.set_title("SMS read delay (CDF)")
    ax.grid(alpha=0.3)

    lo, hi = np.inf, 0.0
    for ch, (x, p) in inp.delays.items():
        ax2.plot(x, p, color=colors[ch], lw=1.6, label=ch)
        lo, hi = min(lo, float(np.interp(0.005, p, x))), max(hi, float(np.interp(0.995, p, x)))
    ax2.set_xscale("log")
    ticks = [(1 / 60, "1 s"), (1, "1 min"), (60, "1 h"), (1440, "1 day"), (10080, "1 week")]
    ax2.set_xticks([v for v, _ in ticks], [s for _, s in ticks])
    ax2.set_xlim(max(lo, 1e-3), 1.5 * hi)
    ax2.set_ylim(0, 1.01)
    ax2.set_xlabel("time from delivery to seen (log scale)")
    ax2.set_ylabel("share seen")
    ax2.set_title("Delay to seen, every channel (scenario distributions)")
    ax2.grid(alpha=0.3, which="major")
    ax2.legend(fontsize=8, loc="upper left")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_touchpoints(plt, inp: ReportInputs, path: Path) -> None:
    t = TARGETS_BY_NAME["touchpoints_per_purchase"]
    tp = np.asarray(inp.stats.touchpoints_at_purchase, np.float64)
    fig, ax = plt.subplots(figsize=(9, 4.8), layout="constrained")
    ax.axvspan(t.low, t.high, color=TARGET_COLOR, alpha=0.12, label=f"target band for the median: {t.low:g}–{t.high:g}")
    if tp.size:
        cap = int(max(np.percentile(tp, 99), t.high + 5))
        clipped = np.minimum(tp, cap)
        ax.hist(
            clipped,
            bins=np.arange(-0.5, cap + 1.5),
            color=MEASURED_COLOR,
            alpha=0.8,
            label=f"purchases (n={tp.size:,}; last bar: {cap}+)",
        )
        med = float(np.median(tp))
        ax.axvline(med, color="black", lw=2, label=f"median: {med:g}")
        ax.set_xlim(-0.5, cap + 0.5)
    else:
        ax.text(0.5, 0.5, "no purchase in the measured days", ha="center", va="center", transform=ax.transAxes)
    ax.axvline(t.value, color=TARGET_COLOR, lw=1, ls="--", label=f"target value: {t.value:g}")
    ax.set_xlabel("touchpoints since the previous purchase (messages delivered + site/app visits)")
    ax.set_ylabel("purchases")
    ax.set_title("Touchpoints before a purchase")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_concentration(plt, inp: ReportInputs, path: Path) -> None:
    st = inp.stats
    t_share = TARGETS_BY_NAME["omni_revenue_share"]
    t_ratio = TARGETS_BY_NAME["multichannel_spend_ratio"]
    order = omni_rank(st)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5.2), layout="constrained")

    x, y = revenue_concentration(st.revenue, order)
    ax.plot(x, y, color=MEASURED_COLOR, lw=2, label="customers ranked most → least omnichannel")
    xr, yr = revenue_concentration(st.revenue, np.argsort(-st.revenue, kind="stable"))
    ax.plot(xr, yr, color="grey", lw=1, label="customers ranked by revenue (upper bound)")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="equal shares")
    ax.errorbar(
        [TOP_SHARE],
        [t_share.value],
        yerr=[[t_share.value - t_share.low], [t_share.high - t_share.value]],
        fmt="*",
        ms=14,
        color=TARGET_COLOR,
        capsize=5,
        label=f"target: top {TOP_SHARE:.0%} carry {t_share.value:.0%} ({t_share.low:.0%}–{t_share.high:.0%})",
    )
    m = top_share(st.revenue, order)
    ax.plot([TOP_SHARE], [m], "o", ms=8, mfc="none", mew=2, color="black", label=f"measured: {m:.1%}")
    ax.axvline(TOP_SHARE, color=TARGET_COLOR, lw=0.6, ls="--")
    ax.set_xlabel("share of customers (most omnichannel first)")
    ax.set_ylabel("share of revenue")
    ax.set_title("Revenue concentration on omnichannel customers")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)

    labels, mean, count = revenue_per_buyer_by_channels(st.revenue, st.purchases, st.channels_used)
    colors = ["#bbbbbb"] + [MEASURED_COLOR] * (len(labels) - 1)
    bars = ax2.bar(labels, np.nan_to_num(mean), color=colors, edgecolor="black", linewidth=0.5)
    for b, k in zip(bars, count, strict=True):
        ax2.annotate(
            f"{k:,} buyers",
            (b.get_x() + b.get_width() / 2, b.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
            xytext=(0, 2),
            textcoords="offset points",
        )
    r = inp.measured.get("multichannel_spend_ratio", float("nan"))
    ax2.set_xlabel("channels used in the measured days (outbound channels seen + site/app)")
    ax2.set_ylabel("revenue per buyer (currency units)")
    ax2.set_title(
        f"Multi-channel customers spend more: 2+ vs 0–1 channels = {num(r)}×\n{_target_label(t_ratio)}", fontsize=11
    )
    ax2.grid(axis="y", alpha=0.3)
    ax2.margins(y=0.12)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_daily(plt, inp: ReportInputs, path: Path) -> None:
    d = np.asarray(inp.stats.daily_revenue, np.float64)
    days = inp.warmup_days + 1 + np.arange(d.size)
    fig, ax = plt.subplots(figsize=(10, 4.4), layout="constrained")
    ax.plot(days, d, color=MEASURED_COLOR, lw=1, alpha=0.6, marker=".", label="daily")
    if d.size:
        ax.plot(days, rolling_mean(d, 7), color="black", lw=2, label="7-day trailing mean")
        ax.axhline(d.mean(), color="grey", ls="--", lw=1, label=f"mean over the period: {d.mean():.3g}")
    ax.set_xlabel(f"day of the simulation (days 1–{inp.warmup_days} are warm-up, not shown)")
    ax.set_ylabel("revenue per customer per day")
    ax.set_title("Mean revenue per customer per day (churned customers count as 0)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _target_rows(measured: dict[str, float]) -> tuple[list[TargetRow], list[TargetRow]]:
    checked = [TargetRow(t, measured.get(t.name)) for t in TARGETS if t.kind == "checked"]
    inputs = [TargetRow(t, None) for t in TARGETS if t.kind != "checked"]
    return checked, inputs


def _sections(inp: ReportInputs) -> list[Section]:
    st = inp.stats
    f = inp.funnel
    measured_days = inp.days - inp.warmup_days
    sent, seen = np.asarray(st.sent_per_channel), np.asarray(st.seen_per_channel)
    with np.errstate(invalid="ignore", divide="ignore"):
        seen_rate = seen / sent
    funnel_table = Table(
        ["channel", "reachable", "delivered", "seen", "clicked", "converted", "BAU sent", "BAU seen / sent"],
        [
            [
                ch,
                *(percent(f.stage(stage)[i]) for stage in ("reach", *Funnel.STAGES)),
                f"{int(sent[i]):,}",
                percent(seen_rate[i]),
            ]
            for i, ch in enumerate(f.channels)
        ],
    )
    sms = np.asarray(st.sms_delays_min, np.float64)
    sms_obs = (
        f" In the simulated journeys, {np.mean(sms <= SMS_MINUTES):.1%} of the {sms.size:,} SMS seen "
        f"were read within {SMS_MINUTES:g} minutes."
        if sms.size
        else ""
    )
    tp = np.asarray(st.touchpoints_at_purchase)
    buyers = st.purchases > 0
    labels, mean, count = revenue_per_buyer_by_channels(st.revenue, st.purchases, st.channels_used)
    conc_table = Table(
        ["channels used", "buyers", "share of buyers", "revenue per buyer"],
        [
            [lab, f"{k:,}", percent(k / max(buyers.sum(), 1)), num(v)]
            for lab, k, v in zip(labels, count, mean, strict=True)
        ],
    )
    d = np.asarray(st.daily_revenue, np.float64)
    return [
        Section(
            "Response funnel per channel",
            FUNNEL_PNG,
            "grouped bar chart of funnel rates per channel",
            f"Exact funnel probabilities (`envs.response.contact_terms`) of one '{inp.funnel_content}' message "
            f"sent now, on each channel, at a random moment of the day, to the {inp.n:,} customers of seed "
            f"{inp.seed} at their start state (no fatigue yet), averaged over the customers reachable on the "
            f"channel. Each stage is cumulative: 'seen' is delivered and seen (opened), 'converted' is a purchase "
            f"caused by the message. The BAU columns are the messages the business-as-usual schedule sent in the "
            f"{measured_days} measured days and the share of them seen (fatigue and the 08:00 send hour "
            f"included). No calibration target: the funnel rates are industry-typical assumptions.",
            table=funnel_table,
        ),
        Section(
            "Hour-of-day engagement",
            HOURS_PNG,
            "hour-of-day engagement curves per channel and segment",
            "Mean hour-of-day multiplier by local send hour, `hour_norm[c] * exp(kappa_c * "
            "cos(2π(h − peak_nc)/24))`, over the customers of each segment (per-customer peaks spread around "
            "the channel's peak, shifted per segment). It multiplies the open hazard, and its square root the "
            "click hazard. Each customer's curve averages 1 over the day, so the "
            "gap between a curve and 1 is what send-time optimisation can win or lose. No calibration target.",
        ),
        Section(
            "SMS read delay",
            SMS_PNG,
            "CDF of the SMS read delay with the 3-minute target",
            "Left: the scenario's distribution of the time from delivery to read for SMS "
            "(`envs.response.delay_minutes`), and the SMS actually seen in the simulated journeys."
            + sms_obs
            + " Right: the same distribution for every channel, for scale (email hours, direct mail days, "
            "social ads about a day).",
            targets=("sms_read_3min",),
        ),
        Section(
            "Touchpoints before a purchase",
            TOUCH_PNG,
            "histogram of touchpoints before a purchase",
            f"For each of the {tp.size:,} purchases in the measured days: the messages delivered plus site/app "
            f"visits since the customer's previous purchase (counted from day 1, so the warm-up fills the "
            f"history). Zero means an organic purchase with no touchpoint since the last one. The target "
            f"applies to the median.",
            targets=("touchpoints_per_purchase",),
        ),
        Section(
            "Omnichannel customers: revenue concentration and spend",
            CONC_PNG,
            "revenue concentration curve and revenue per buyer by number of channels used",
            "Left: share of revenue against share of customers, ranked from the most to the least omnichannel "
            "(`envs.calibration.omni_rank`: channels used, then engagements). Right: revenue per buyer by the "
            "number of channels the buyer used; `multichannel_spend_ratio` compares buyers on 2+ channels with "
            "all others, so its denominator includes the buyers on 0 channels (grey bar: bought with no "
            "message seen and no visit).",
            targets=("omni_revenue_share", "multichannel_spend_ratio", "multichannel_buyers"),
            table=conc_table,
        ),
        Section(
            "Daily revenue",
            DAILY_PNG,
            "mean revenue per customer per day",
            f"Revenue per customer per day over the {measured_days} measured days, under the business-as-usual "
            f"schedule; mean {num(float(d.mean()) if d.size else float('nan'))}, total "
            f"{num(float(d.sum()))} per customer over the period; {st.churned.mean():.1%} of customers churned "
            f"over all {inp.days} days. No calibration target; a drift here means the population is not "
            f"stationary (churn, lifecycle).",
        ),
    ]


def _command(inp: ReportInputs, out_dir: Path) -> str:
    return f"nba scenario report --out {out_dir} --n {inp.n} --seed {inp.seed}"


def _intro(inp: ReportInputs, out_dir: Path, checked: list[TargetRow]) -> tuple[str, str]:
    passed = sum(r.status == "PASS" for r in checked)
    failed = [r.target.name for r in checked if r.status == "FAIL"]
    missing = [r.target.name for r in checked if r.status == "N/A"]
    text = (
        f"Scenario '{inp.scenario_name}': {inp.n:,} simulated customers, seed {inp.seed}, {inp.days} days "
        f"simulated under the business-as-usual schedule (`nba.policies.baselines.BusinessAsUsual`), the first "
        f"{inp.warmup_days} as warm-up and the last {inp.days - inp.warmup_days} measured. "
        f"{passed} of {len(checked) - len(missing)} measured calibration targets pass"
        + (f"; failing: {', '.join(failed)}" if failed else "")
        + (f"; not measurable in this scenario: {', '.join(missing)}" if missing else "")
        + "."
    )
    if inp.scenario_name != "default":
        text += " To reproduce it, add `--scenario FILE` with the same scenario file."
    return text, _command(inp, out_dir)


def _checked_table(rows: list[TargetRow]) -> Table:
    return Table(
        ["target", "statement", "target value", "tolerance", "measured", "status", "source"],
        [
            [
                r.target.name,
                r.target.statement,
                num(r.target.value),
                interval(r.target.low, r.target.high),
                num(r.measured),
                r.status,
                r.target.source,
            ]
            for r in rows
        ],
        status_col=5,
    )


def _input_table(rows: list[TargetRow]) -> Table:
    return Table(
        ["target", "statement", "value", "range", "source"],
        [
            [
                r.target.name,
                r.target.statement,
                num(r.target.value),
                interval(r.target.low, r.target.high),
                r.target.source,
            ]
            for r in rows
        ],
    )


def render_report(inp: ReportInputs, out_dir: Path) -> Path:
    """Draw every figure and write ``report.md`` and ``report.html`` into ``out_dir``; return ``report.md``."""
    plt = pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for draw, name in (
        (_plot_funnel, FUNNEL_PNG),
        (_plot_hours, HOURS_PNG),
        (_plot_sms_delay, SMS_PNG),
        (_plot_touchpoints, TOUCH_PNG),
        (_plot_concentration, CONC_PNG),
        (_plot_daily, DAILY_PNG),
    ):
        draw(plt, inp, out_dir / name)
    checked, inputs = _target_rows(inp.measured)
    intro, command = _intro(inp, out_dir, checked)
    md, _ = write_pages(
        out_dir,
        "calibration",
        title=f"Calibration report — scenario '{inp.scenario_name}'",
        intro=intro,
        command=command,
        checked=_checked_table(checked),
        inputs=_input_table(inputs),
        notes=inp.notes,
        sections=_sections(inp),
        rows={r.target.name: r for r in checked},
    )
    return md
