"""Calibration report: the simulated population beside the facts it was calibrated on.

:func:`write_report` simulates customers under the business-as-usual schedule
(:func:`envs.calibration.simulate_journeys`), measures every checked target
(:func:`envs.calibration.measure`) and writes into one folder a Markdown summary (``report.md``),
the same as a self-contained HTML page (``report.html``) and one PNG per mechanic, each shown beside
the target it is checked against. The command line runs it as::

    nba scenario report --out DIR --n N --seed S

It is built in three layers so that the report can later be rerun on a user's own decision logs
(sim-to-real validation):

1. *array functions* (:func:`funnel_rates`, :func:`hour_curves`, :func:`delay_quantiles`,
   :func:`empirical_cdf`, :func:`revenue_concentration`, :func:`top_share`,
   :func:`revenue_per_buyer_by_channels`, :func:`rolling_mean`) compute every curve from plain
   arrays — a :class:`~envs.calibration.JourneyStats`, funnel probabilities, peak hours, delays;
2. :func:`simulated_inputs` is the only place that reaches into the simulator: it fills a
   :class:`ReportInputs` from a scenario;
3. :func:`render_report` draws and writes everything from a :class:`ReportInputs`.

A logs importer only has to fill :class:`ReportInputs` from logs to get the same report.
"""

from __future__ import annotations

import html
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from envs import response
from envs.calibration import TARGETS, TARGETS_BY_NAME, JourneyStats, Target, measure, omni_rank, simulate_journeys
from envs.scenario import Scenario
from envs.simulation import Simulation
from nba.actions import CHANNELS

DAYS = 180  # days simulated under business-as-usual ...
WARMUP_DAYS = 90  # ... of which the first are a warm-up, not measured
FUNNEL_CONTENT = "promo"  # the content whose funnel is shown per channel
TOP_SHARE = 0.07  # "the most omnichannel 7% of customers"
SMS_MINUTES = 3.0  # "90% of SMS are read within 3 minutes"
MAX_CHANNELS_BUCKET = 4  # revenue per buyer by channels used: 0, 1, 2, 3, 4+

FUNNEL_PNG = "funnel.png"
HOURS_PNG = "hours.png"
SMS_PNG = "sms_delay.png"
TOUCH_PNG = "touchpoints.png"
CONC_PNG = "concentration.png"
DAILY_PNG = "daily_revenue.png"
IMAGES: tuple[str, ...] = (FUNNEL_PNG, HOURS_PNG, SMS_PNG, TOUCH_PNG, CONC_PNG, DAILY_PNG)

TARGET_COLOR = "#d62728"
MEASURED_COLOR = "#1f77b4"


# ====================================================================================== array layer
@dataclass(frozen=True)
class Funnel:
    """Funnel rates per channel, each (C,): the probability that one contact reaches each stage.

    Averaged over the customers reachable on the channel; ``reach`` is the share of customers who are.
    """

    STAGES: ClassVar[tuple[str, ...]] = ("delivered", "seen", "clicked", "converted")

    channels: tuple[str, ...]
    reach: np.ndarray
    delivered: np.ndarray
    seen: np.ndarray
    clicked: np.ndarray
    converted: np.ndarray

    def stage(self, name: str) -> np.ndarray:
        return getattr(self, name)


def funnel_rates(channels: Sequence[str], reachable: np.ndarray, p_deliver: np.ndarray, p_open: np.ndarray,
                 p_click: np.ndarray, p_convert: np.ndarray) -> Funnel:
    """Mean funnel rates per channel from conditional stage probabilities.

    Args:
        channels: the C channel names.
        reachable: (N, C) bool, customer ``n`` can be contacted on channel ``c``.
        p_deliver, p_open, p_click, p_convert: (N, C) probabilities of one contact on channel ``c``:
            delivered, seen given delivered, clicked given seen, converted given clicked.

    Returns:
        The funnel; a channel no one can be reached on has NaN rates.
    """
    reachable = np.asarray(reachable, bool)
    stages = np.cumprod(np.stack([p_deliver, p_open, p_click, p_convert]).astype(np.float64), axis=0)
    count = reachable.sum(axis=0)
    total = np.where(reachable[None], stages, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = total / count
    return Funnel(tuple(channels), reachable.mean(axis=0), *means)


def hour_curves(peak_hour: np.ndarray, segment: np.ndarray, kappa: np.ndarray, hour_norm: np.ndarray,
                n_segments: int) -> np.ndarray:
    """(S, C, 24) mean hour-of-day multiplier of each segment and channel at local hours 0..23.

    A customer's multiplier on channel ``c`` at local hour ``h`` is
    ``hour_norm[c] * exp(kappa[c] * cos(2 pi (h - peak_hour[n, c]) / 24))``, which averages 1 over
    the day (the response funnel's ``hour_nc(h)``). ``peak_hour`` is (N, C), ``segment`` (N,).
    A segment with no customer gets NaN.
    """
    h = np.arange(24.0)
    kappa = np.asarray(kappa, np.float64)
    out = np.full((n_segments, kappa.size, 24), np.nan)
    for s in range(n_segments):
        p = np.asarray(peak_hour, np.float64)[segment == s]
        if p.shape[0] == 0:
            continue
        mult = np.exp(kappa[None, :, None] * np.cos(response.TWO_PI_24 * (h[None, None, :] - p[:, :, None])))
        out[s] = np.asarray(hour_norm)[:, None] * mult.mean(axis=0)
    return out


def delay_quantiles(sc: Scenario, channel: str, k: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """The scenario's delivery-to-seen delay distribution on ``channel``: ``(minutes, cdf)``.

    Exact quantiles at ``k`` evenly spaced probabilities (the inverse CDF of
    :func:`envs.response.delay_minutes`), so the CDF is drawn without sampling noise.
    """
    p = (np.arange(k) + 0.5) / k
    ch = np.full(k, list(sc.channels).index(channel))
    return np.sort(response.delay_minutes(sc.arrays(), ch, p)), p


def empirical_cdf(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted finite values of ``x`` and their empirical CDF."""
    x = np.asarray(x, np.float64)
    x = np.sort(x[np.isfinite(x)])
    return x, np.arange(1, x.size + 1) / max(x.size, 1)


def revenue_concentration(revenue: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lorenz-style curve: cumulative share of revenue of the first customers in ``order``.

    Returns ``(customer_share, revenue_share)``, both of length N + 1, from (0, 0) to (1, 1).
    """
    r = np.asarray(revenue, np.float64)[order]
    cum = np.concatenate([[0.0], np.cumsum(r)])
    x = np.arange(r.size + 1) / max(r.size, 1)
    return x, (cum / cum[-1] if cum[-1] > 0 else np.zeros_like(cum))


def top_share(revenue: np.ndarray, order: np.ndarray, share: float = TOP_SHARE) -> float:
    """Share of revenue of the first ``share`` of customers in ``order`` (as in envs.calibration.measure)."""
    revenue = np.asarray(revenue, np.float64)
    top = order[: max(1, int(round(share * len(order))))]
    total = revenue.sum()
    return float(revenue[top].sum() / total) if total > 0 else float("nan")


def revenue_per_buyer_by_channels(revenue: np.ndarray, purchases: np.ndarray, channels_used: np.ndarray,
                                  max_channels: int = MAX_CHANNELS_BUCKET
                                  ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Mean revenue per buyer by channels used (0, 1, ..., ``max_channels``+).

    Returns ``(labels, mean revenue per buyer, number of buyers)``; an empty bucket has NaN revenue.
    """
    buyers = np.asarray(purchases) > 0
    bucket = np.minimum(np.asarray(channels_used), max_channels).astype(np.int64)
    labels = [str(i) for i in range(max_channels)] + [f"{max_channels}+"]
    mean = np.full(max_channels + 1, np.nan)
    count = np.zeros(max_channels + 1, np.int64)
    for i in range(max_channels + 1):
        sel = buyers & (bucket == i)
        count[i] = sel.sum()
        if count[i]:
            mean[i] = np.asarray(revenue, np.float64)[sel].mean()
    return labels, mean, count


def rolling_mean(x: np.ndarray, window: int = 7) -> np.ndarray:
    """Trailing mean over ``window`` values (shorter at the start)."""
    x = np.asarray(x, np.float64)
    cum = np.concatenate([[0.0], np.cumsum(x)])
    i = np.arange(1, x.size + 1)
    lo = np.maximum(i - window, 0)
    return (cum[i] - cum[lo]) / (i - lo)


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
    hours: np.ndarray  # (S, C, 24) from hour_curves
    decision_hour: int | None  # local hour the schedule sends at (marked on the hour curves)
    send_slots: tuple[int, ...]
    delays: dict[str, tuple[np.ndarray, np.ndarray]]  # channel -> (minutes, cdf) of the delay model
    notes: tuple[str, ...] = ()


def simulated_inputs(sc: Scenario, *, n: int = 20_000, seed: int = 0,
                     progress: Callable[[int], None] | None = None) -> ReportInputs:
    """Simulate ``n`` customers of ``sc`` and gather what the report draws."""
    stats = simulate_journeys(sc, n=n, seed=seed, days=DAYS, warmup_days=WARMUP_DAYS, progress=progress)
    measured = measure(sc, stats)

    sim = Simulation(sc, seed, n, purpose="calibration-funnel", decision_hour=None, penalties=True)
    space, sa = sim.space, sim.arrays
    content = FUNNEL_CONTENT if FUNNEL_CONTENT in space.contents else space.contents[0]
    actions = np.array([[space.index(c, content, None) for c in space.channels]])
    t = response.contact_terms(sc, sa, space, sim.traits, sim.moment, actions)
    funnel = funnel_rates(space.channels, sim.moment.reachable, t.p_deliver, t.p_open, t.p_click, t.p_convert)
    hours = hour_curves(sim.traits.peak_hour, sim.traits.segment, sa.hour_kappa, sa.hour_norm, len(sc.segments))

    notes = [
        "`wrong_moment` and `sms_read_3min` are measured by `envs.calibration` on their own fixed samples "
        "(5,000 customers, seed 1; 200,000 uniforms, seed 2), whatever `--n` and `--seed` are.",
    ]
    return ReportInputs(
        scenario_name=sc.name, n=n, seed=seed, days=DAYS, warmup_days=WARMUP_DAYS, stats=stats,
        measured=measured, channels=tuple(space.channels), segments=tuple(sc.segments), funnel=funnel,
        funnel_content=content, hours=hours, decision_hour=sc.journey_decision_hour,
        send_slots=tuple(sc.send_slots), delays={c: delay_quantiles(sc, c) for c in sc.channels},
        notes=tuple(notes),
    )


def write_report(scenario: Scenario, out_dir: Path, *, n: int = 20_000, seed: int = 0,
                 progress: Callable[[int], None] | None = None) -> Path:
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


@dataclass(frozen=True)
class Section:
    title: str
    image: str
    alt: str
    text: str
    targets: tuple[str, ...] = ()
    table: tuple[list[str], list[list[str]]] | None = None


def _fmt(x: float | None) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{x:.4g}"


def _pct(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{100 * x:.3g}%"


def _channel_colors(channels: Sequence[str]) -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {c: cmap(CHANNELS.index(c) if c in CHANNELS else i) for i, c in enumerate(channels)}


def _target_label(t: Target) -> str:
    return f"target {_fmt(t.value)} (tolerance {_fmt(t.low)}–{_fmt(t.high)})"


def _plot_funnel(plt, inp: ReportInputs, path: Path) -> None:
    f = inp.funnel
    c = len(f.channels)
    fig, ax = plt.subplots(figsize=(11, 5.2), layout="constrained")
    width = 0.2
    cmap = plt.get_cmap("viridis")
    x = np.arange(c)
    for i, name in enumerate(Funnel.STAGES):
        v = f.stage(name)
        ax.bar(x + (i - 1.5) * width, np.where(v > 0, v, np.nan), width, label=name, color=cmap(i / 3.5),
               edgecolor="white", linewidth=0.5)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda y, _: f"{100 * y:g}%"))
    ax.set_xticks(x, [f"{ch}\n(reach {_pct(r)})" for ch, r in zip(f.channels, f.reach, strict=True)])
    ax.set_ylabel("probability per message sent (log scale)")
    ax.set_title(f"Response funnel per channel: one '{inp.funnel_content}' message sent now, "
                 "averaged over reachable customers")
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
    colors = _channel_colors(inp.channels)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.6 * rows), sharex=True, sharey=True,
                             layout="constrained", squeeze=False)
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
    colors = _channel_colors(inp.channels)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained",
                                  gridspec_kw={"width_ratios": [1.1, 1]})
    if "sms" in inp.delays:
        x, p = inp.delays["sms"]
        xmax = max(10.0, 1.2 * float(np.interp(0.99, p, x)))
        ax.plot(x, p, color=colors["sms"], lw=2, label="scenario delay distribution")
        ox, op = empirical_cdf(inp.stats.sms_delays_min)
        if ox.size:
            ax.step(ox, op, where="post", color="black", lw=1, alpha=0.7,
                    label=f"SMS seen in the simulated journeys (n={ox.size:,})")
        ax.axhspan(t.low, t.high, color=TARGET_COLOR, alpha=0.15, label=f"target band {t.low:.0%}–{t.high:.0%}")
        ax.axvline(SMS_MINUTES, color=TARGET_COLOR, ls="--", lw=1)
        ax.plot([SMS_MINUTES], [t.value], marker="*", ms=16, color=TARGET_COLOR, ls="none",
                label=f"target: {t.value:.0%} within {SMS_MINUTES:g} min")
        m = inp.measured.get("sms_read_3min")
        if m is not None:
            ax.plot([SMS_MINUTES], [m], marker="o", ms=8, mfc="none", mew=2, color=MEASURED_COLOR, ls="none",
                    label=f"measured: {m:.1%}")
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
        ax.hist(clipped, bins=np.arange(-0.5, cap + 1.5), color=MEASURED_COLOR, alpha=0.8,
                label=f"purchases (n={tp.size:,}; last bar: {cap}+)")
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
    ax.errorbar([TOP_SHARE], [t_share.value], yerr=[[t_share.value - t_share.low], [t_share.high - t_share.value]],
                fmt="*", ms=14, color=TARGET_COLOR, capsize=5,
                label=f"target: top {TOP_SHARE:.0%} carry {t_share.value:.0%} ({t_share.low:.0%}–{t_share.high:.0%})")
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
        ax2.annotate(f"{k:,} buyers", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                     va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    r = inp.measured.get("multichannel_spend_ratio", float("nan"))
    ax2.set_xlabel("channels used in the measured days (outbound channels seen + site/app)")
    ax2.set_ylabel("revenue per buyer (currency units)")
    ax2.set_title(f"Multi-channel customers spend more: 2+ vs 0–1 channels = {_fmt(r)}×\n"
                  f"{_target_label(t_ratio)}", fontsize=11)
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
    funnel_table = (
        ["channel", "reachable", "delivered", "seen", "clicked", "converted",
         "BAU sent", "BAU seen / sent"],
        [[ch, _pct(f.reach[i]), _pct(f.delivered[i]), _pct(f.seen[i]), _pct(f.clicked[i]), _pct(f.converted[i]),
          f"{int(sent[i]):,}", _pct(seen_rate[i])] for i, ch in enumerate(f.channels)],
    )
    sms = np.asarray(st.sms_delays_min, np.float64)
    sms_obs = (f" In the simulated journeys, {np.mean(sms <= SMS_MINUTES):.1%} of the {sms.size:,} SMS seen "
               f"were read within {SMS_MINUTES:g} minutes." if sms.size else "")
    tp = np.asarray(st.touchpoints_at_purchase)
    buyers = st.purchases > 0
    labels, mean, count = revenue_per_buyer_by_channels(st.revenue, st.purchases, st.channels_used)
    conc_table = (
        ["channels used", "buyers", "share of buyers", "revenue per buyer"],
        [[lab, f"{k:,}", _pct(k / max(buyers.sum(), 1)), _fmt(v)] for lab, k, v in zip(labels, count, mean,
                                                                                       strict=True)],
    )
    d = np.asarray(st.daily_revenue, np.float64)
    return [
        Section(
            "Response funnel per channel", FUNNEL_PNG, "grouped bar chart of funnel rates per channel",
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
            "Hour-of-day engagement", HOURS_PNG, "hour-of-day engagement curves per channel and segment",
            "Mean hour-of-day multiplier by local send hour, `hour_norm[c] * exp(kappa_c * "
            "cos(2π(h − peak_nc)/24))`, over the customers of each segment (per-customer peaks spread around "
            "the channel's peak, shifted per segment). It multiplies the open hazard, and its square root the "
            "click hazard. Each customer's curve averages 1 over the day, so the "
            "gap between a curve and 1 is what send-time optimisation can win or lose. No calibration target.",
        ),
        Section(
            "SMS read delay", SMS_PNG, "CDF of the SMS read delay with the 3-minute target",
            "Left: the scenario's distribution of the time from delivery to read for SMS "
            "(`envs.response.delay_minutes`), and the SMS actually seen in the simulated journeys." + sms_obs
            + " Right: the same distribution for every channel, for scale (email hours, direct mail days, "
            "social ads about a day).",
            targets=("sms_read_3min",),
        ),
        Section(
            "Touchpoints before a purchase", TOUCH_PNG, "histogram of touchpoints before a purchase",
            f"For each of the {tp.size:,} purchases in the measured days: the messages delivered plus site/app "
            f"visits since the customer's previous purchase (counted from day 1, so the warm-up fills the "
            f"history). Zero means an organic purchase with no touchpoint since the last one. The target "
            f"applies to the median.",
            targets=("touchpoints_per_purchase",),
        ),
        Section(
            "Omnichannel customers: revenue concentration and spend", CONC_PNG,
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
            "Daily revenue", DAILY_PNG, "mean revenue per customer per day",
            f"Revenue per customer per day over the {measured_days} measured days, under the business-as-usual "
            f"schedule; mean {_fmt(float(d.mean()) if d.size else float('nan'))}, total "
            f"{_fmt(float(d.sum()))} per customer over the period; {st.churned.mean():.1%} of customers churned "
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
        + (f"; not measurable in this scenario: {', '.join(missing)}" if missing else "") + "."
    )
    if inp.scenario_name != "default":
        text += " To reproduce it, add `--scenario FILE` with the same scenario file."
    return text, _command(inp, out_dir)


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(_md_escape(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return out


def _checked_table(rows: list[TargetRow]) -> tuple[list[str], list[list[str]]]:
    return (["target", "statement", "target value", "tolerance", "measured", "status", "source"],
            [[r.target.name, r.target.statement, _fmt(r.target.value), f"[{_fmt(r.target.low)}, {_fmt(r.target.high)}]",
              _fmt(r.measured), r.status, r.target.source] for r in rows])


def _input_table(rows: list[TargetRow]) -> tuple[list[str], list[list[str]]]:
    return (["target", "statement", "value", "range", "source"],
            [[r.target.name, r.target.statement, _fmt(r.target.value), f"[{_fmt(r.target.low)}, {_fmt(r.target.high)}]",
              r.target.source] for r in rows])


def _markdown(inp: ReportInputs, out_dir: Path, checked: list[TargetRow], inputs: list[TargetRow],
              sections: list[Section]) -> str:
    rows = {r.target.name: r for r in checked}
    text, cmd = _intro(inp, out_dir, checked)
    md = [f"# Calibration report — scenario '{inp.scenario_name}'", "", text, "", "Reproduce with:", "",
          "```", cmd, "```", ""]
    md += ["## 1. Calibration targets", "", "Checked on the simulated customers:", ""]
    md += _md_table(*_checked_table(checked))
    md += ["", "Used to set inputs (facts about brands, not customers; not measured):", ""]
    md += _md_table(*_input_table(inputs))
    md += [""] + [f"Note: {n}" for n in inp.notes] + [""]
    for i, s in enumerate(sections, start=2):
        md += [f"## {i}. {s.title}", "", s.text, ""]
        for name in s.targets:
            r = rows[name]
            md.append(f"- **{r.status}** `{name}` — {r.target.statement}: measured {_fmt(r.measured)}, "
                      f"{_target_label(r.target)}. Source: {r.target.source}.")
        if s.targets:
            md.append("")
        md += [f"![{s.alt}]({s.image})", ""]
        if s.table is not None:
            md += _md_table(*s.table) + [""]
    return "\n".join(md)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1500px; margin: 2em auto;
       padding: 0 1.5em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
pre { background: #f4f4f4; padding: .6em 1em; border-radius: 4px; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
.PASS { color: #fff; background: #2e7d32; font-weight: bold; }
.FAIL { color: #fff; background: #c62828; font-weight: bold; }
.row { display: flex; gap: 1.5em; align-items: flex-start; flex-wrap: wrap; }
.row figure { flex: 3 1 650px; margin: 0; }
.row figure img { max-width: 100%; border: 1px solid #ddd; }
.row aside { flex: 1 1 280px; }
.card { border: 1px solid #ccc; border-left: 6px solid #888; border-radius: 4px; padding: .6em .9em;
        margin-bottom: 1em; background: #fafafa; }
.card.PASS-card { border-left-color: #2e7d32; }
.card.FAIL-card { border-left-color: #c62828; }
.card .name { font-family: monospace; }
.small { font-size: .85em; color: #555; }
"""


def _html_table(header: list[str], rows: list[list[str]], status_col: int | None = None) -> str:
    e = html.escape
    out = ["<table>", "<tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = []
        for j, c in enumerate(row):
            cls = f' class="{e(c)}"' if j == status_col and c in ("PASS", "FAIL") else ""
            cells.append(f"<td{cls}>{e(c)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _html_code(s: str) -> str:
    """Escape ``s`` and turn `backquoted` spans into <code>."""
    parts = html.escape(s).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _html(inp: ReportInputs, out_dir: Path, checked: list[TargetRow], inputs: list[TargetRow],
          sections: list[Section]) -> str:
    e = html.escape
    rows = {r.target.name: r for r in checked}
    text, cmd = _intro(inp, out_dir, checked)
    title = f"Calibration report — scenario '{inp.scenario_name}'"
    h = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">', f"<title>{e(title)}</title>",
         f"<style>{_CSS}</style>", "</head>", "<body>", f"<h1>{e(title)}</h1>", f"<p>{_html_code(text)}</p>",
         "<p>Reproduce with:</p>", f"<pre>{e(cmd)}</pre>", "<h2>1. Calibration targets</h2>",
         "<p>Checked on the simulated customers:</p>", _html_table(*_checked_table(checked), status_col=5),
         "<p>Used to set inputs (facts about brands, not customers; not measured):</p>",
         _html_table(*_input_table(inputs))]
    h += [f'<p class="small">Note: {_html_code(n)}</p>' for n in inp.notes]
    for i, s in enumerate(sections, start=2):
        h += [f"<h2>{i}. {e(s.title)}</h2>", f"<p>{_html_code(s.text)}</p>", '<div class="row">',
              f'<figure><img src="{e(s.image)}" alt="{e(s.alt)}"></figure>', "<aside>"]
        for name in s.targets:
            r = rows[name]
            h += [f'<div class="card {e(r.status)}-card">',
                  f'<div><span class="{e(r.status)}">&nbsp;{e(r.status)}&nbsp;</span> '
                  f'<span class="name">{e(name)}</span></div>',
                  f"<p>{e(r.target.statement)}</p>",
                  f"<p>measured <b>{e(_fmt(r.measured))}</b><br>{e(_target_label(r.target))}</p>",
                  f'<p class="small">Source: {e(r.target.source)}</p>', "</div>"]
        if not s.targets:
            h.append('<p class="small">No calibration target for this mechanic.</p>')
        h.append("</aside></div>")
        if s.table is not None:
            h.append(_html_table(*s.table))
    h += ["</body>", "</html>", ""]
    return "\n".join(h)


def render_report(inp: ReportInputs, out_dir: Path) -> Path:
    """Draw every figure and write ``report.md`` and ``report.html`` into ``out_dir``; return ``report.md``."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:  # leave an interactive session's backend alone
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for draw, name in ((_plot_funnel, FUNNEL_PNG), (_plot_hours, HOURS_PNG), (_plot_sms_delay, SMS_PNG),
                       (_plot_touchpoints, TOUCH_PNG), (_plot_concentration, CONC_PNG), (_plot_daily, DAILY_PNG)):
        draw(plt, inp, out_dir / name)
    checked, inputs = _target_rows(inp.measured)
    sections = _sections(inp)
    (out_dir / "report.html").write_text(_html(inp, out_dir, checked, inputs, sections), encoding="utf-8")
    md = out_dir / "report.md"
    md.write_text(_markdown(inp, out_dir, checked, inputs, sections), encoding="utf-8")
    return md
