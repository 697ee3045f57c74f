"""A/B report: the result of a champion/challenger test as plots and a summary a person reads.

Built in layers like :mod:`training.calibration_report`:

1. :class:`ABReportInputs` holds everything the report shows: per treatment arm an
   :class:`nba.ab.Analysis` of the primary metric (reward per customer: Welch, CUPED, mSPRT over
   daily looks), Welch comparisons of secondary metrics, the guardrails' non-inferiority tests
   (:class:`nba.ab.GuardrailTest`) and the verdict they make with the primary
   (:class:`nba.ab.Verdict`), and the true effects when known;
2. :func:`simulated_inputs` fills it from a simulated test (:func:`envs.experiment.run_experiment`),
   :func:`log_inputs` from decision-log batches (:class:`nba.log.LoggedBatch`, e.g. a store's
   ``iter_batches``);
3. :func:`render_report` draws and writes ``estimates.png``, ``cumulative.png``, ``pvalues.png``,
   ``guardrails.png`` (with guardrails), ``report.md`` and ``report.html`` (the reports' shared
   templates, ``training/reports/templates/ab.*.j2``) into a folder and returns their paths.

:func:`write_report` runs a simulated test and renders it in one call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from envs.experiment import SimulatedAB, run_experiment
from envs.scenario import Scenario
from nba import ab
from nba.log.records import LoggedBatch
from nba.policies import Policy
from training.plots import distinct_colors
from training.reports.render import Table, interval, num, p_value, percent, pyplot, write_pages

PRIMARY = "reward"
ESTIMATES_PNG = "estimates.png"
CUMULATIVE_PNG = "cumulative.png"
PVALUES_PNG = "pvalues.png"
GUARDRAILS_PNG = "guardrails.png"
IMAGES: tuple[str, ...] = (ESTIMATES_PNG, CUMULATIVE_PNG, PVALUES_PNG)  # always drawn; GUARDRAILS_PNG with guardrails
PLANNED_POWER = 0.8  # the default mixture scale tau is the effect detectable with this power

ESTIMATE_COLOR = "#1f77b4"
CUPED_COLOR = "#2ca02c"
TRUTH_COLOR = "#d62728"


# ====================================================================================== inputs
@dataclass(frozen=True)
class ABReportInputs:
    """Everything the report draws and states."""

    experiment: str
    control: str
    source: str  # one line: where the data came from
    arm_counts: dict[str, int]  # arm -> customers
    analyses: dict[str, ab.Analysis]  # treatment arm -> analysis of the primary metric
    metrics: dict[str, dict[str, ab.Comparison]]  # metric -> treatment arm -> Welch comparison
    truth: dict[str, np.ndarray] | None  # treatment arm -> (looks,) true effect at each look
    look_unit: str = "day"
    alpha: float = 0.05
    notes: tuple[str, ...] = ()
    guardrails: dict[str, tuple[ab.GuardrailTest, ...]] = field(default_factory=dict)  # treatment -> tests
    true_worsening: dict[str, dict[str, float]] | None = None  # treatment -> guardrail name -> exact worsening
    require: str = "better"  # what the primary must show to promote (nba.ab.decide)

    @property
    def treatments(self) -> tuple[str, ...]:
        return tuple(self.analyses)

    def verdict(self, treatment: str) -> ab.Verdict:
        """Promote ``treatment`` or not: its primary test (always-valid when there are looks) and guardrails."""
        a = self.analyses[treatment]
        primary = a.sequential if a.sequential is not None else a.comparison
        return ab.decide(primary, self.guardrails.get(treatment, ()), self.alpha, self.require)


def planned_tau(se_final: float, alpha: float = 0.05, power: float = PLANNED_POWER) -> float:
    """The effect the test detects with ``power`` at its planned final standard error.

    ``(z_{1-α/2} + z_{power}) · se``: the mSPRT mixture is most powerful around effects of size
    ``tau``, so it is tuned to the minimum detectable effect of the planned sample.
    """
    return float((stats.norm.isf(alpha / 2) + stats.norm.ppf(power)) * se_final)


def _default_tau(looks: ab.Looks, treatment: str, control: str, alpha: float) -> float:
    i, j = looks.arm_index(treatment), looks.arm_index(control)
    se = np.sqrt(looks.var[i, -1] / looks.n[i, -1] + looks.var[j, -1] / looks.n[j, -1])
    return planned_tau(float(se), alpha)


def simulated_inputs(
    result: SimulatedAB,
    *,
    tau: float | None = None,
    alpha: float = 0.05,
    level: float = 0.95,
    guardrails: Iterable[ab.Guardrail] = ab.DEFAULT_GUARDRAILS,
) -> ABReportInputs:
    """Report inputs from a simulated A/B test (CUPED when it has a pre-period, truth when known).

    ``tau`` (the mSPRT mixture scale) defaults to :func:`planned_tau` of the final look's standard
    error, which depends on the metric's variance only, never on the observed difference. Each
    guardrail is tested always-valid over the daily looks of its metric, at ``alpha``.
    """
    guardrails = ab.check_guardrails(guardrails, result.metrics)
    looks = result.looks()
    treatments = tuple(a for a in result.arms if a != result.control)
    analyses = {}
    for t in treatments:
        t_tau = _default_tau(looks, t, result.control, alpha) if tau is None else tau
        cov = result.pre_reward if result.pre_days > 0 else None
        analyses[t] = ab.analyse(
            result.reward,
            result.arm,
            t,
            result.control,
            covariate=cov,
            looks=looks,
            tau=t_tau,
            alpha=alpha,
            level=level,
        )
    metrics = {
        m: {t: ab.compare(v[result.arm == t], v[result.arm == result.control], level) for t in treatments}
        for m, v in result.metrics.items()
    }
    truth = None if result.true_daily is None else {t: result.true_effects(t) for t in treatments}
    tests = {t: result.guardrails(t, guardrails, alpha=alpha) for t in treatments} if guardrails else {}
    worse = (
        None
        if result.potential_metrics is None
        else {t: {g.name: result.true_worsening(t, g) for g in guardrails} for t in treatments}
    )
    source = f"simulated: {result.n:,} customers (seed {result.seed}), {result.days} days" + (
        f" after a {result.pre_days}-day pre-period under the control" if result.pre_days else ""
    )
    notes = (
        [
            "True effects come from running every arm's policy on all customers with common random numbers "
            "(`envs.experiment`): the mean paired difference over the same customers."
        ]
        if truth
        else []
    )
    return ABReportInputs(
        experiment=result.experiment,
        control=result.control,
        source=source,
        arm_counts={a: int((result.arm == a).sum()) for a in result.arms},
        analyses=analyses,
        metrics=metrics,
        truth=truth,
        alpha=alpha,
        notes=tuple(notes),
        guardrails=tests,
        true_worsening=worse,
    )


Batches = LoggedBatch | Iterable[LoggedBatch] | Callable[[], Iterable[LoggedBatch]]


def _open(batches: Batches) -> Iterable[LoggedBatch]:
    return batches() if callable(batches) else batches


# per-customer metrics a decision log measures: the reward (its rule's), messages sent (decisions that
# contact), their cost, and opt-outs (decisions followed by an opt-out within the rule's window)
LOG_METRICS: tuple[str, ...] = ("reward", "sent", "cost", "opted_out")


def _metric_batches(
    metric: str, batches: Batches, reread: Callable[[object], Iterable[LoggedBatch]] | None
) -> Iterable[LoggedBatch]:
    """The experiment's batches with each decision's value of ``metric`` as its reward."""
    import dataclasses

    from nba.log import RewardRule

    if metric == "reward":
        return _open(batches)
    if metric == "opted_out":
        if reread is None:
            raise ValueError("guardrail_batches: needed to read opt-outs from the log")
        return reread(RewardRule(events=(), opt_out_value=1.0, subtract_cost=False))
    column = {
        "sent": lambda b: (np.asarray(b.action) > 0).astype(np.float64),
        "cost": lambda b: np.asarray(b.cost, np.float64),
    }[metric]
    return (dataclasses.replace(b, reward=column(b)) for b in _open(batches))


def log_inputs(
    batches: Batches,
    *,
    experiment: str,
    control: str,
    start: float,
    days: int,
    pre_batches: Batches | None = None,
    pre_start: float | None = None,
    tau: float | None = None,
    alpha: float = 0.05,
    level: float = 0.95,
    day_h: float = 24.0,
    guardrails: Iterable[ab.Guardrail] = (),
    guardrail_batches: Callable[[object], Iterable[LoggedBatch]] | None = None,
) -> ABReportInputs:
    """Report inputs from the decision log: the experiment's decisions in ``[start, start + days·day_h)``.

    ``batches`` is a :class:`~nba.log.LoggedBatch`, a list of them, or a zero-argument callable that
    returns a fresh iterator (e.g. ``lambda: store.iter_batches(rule, experiment=name)``): it is read
    twice (per-customer totals and daily looks). ``pre_batches`` (read once) holds the decisions of
    ``[pre_start, start)`` whose rewards per customer are the CUPED covariate (0 for a customer
    without any). ``guardrails`` on :data:`LOG_METRICS` are tested over the same daily looks;
    opt-outs are read again through ``guardrail_batches(rule)`` (e.g. ``lambda r:
    store.iter_batches(r, experiment=name)``).
    """
    guardrails = ab.check_guardrails(guardrails, LOG_METRICS)
    if isinstance(batches, Iterable) and not isinstance(batches, LoggedBatch | list | tuple):
        raise ValueError("batches: an iterator can be read only once; pass a list or a callable")
    end = start + day_h * days
    totals = ab.customer_totals(_open(batches), experiment=experiment, start=start, end=end)
    looks = ab.daily_looks(_open(batches), experiment=experiment, start=start, days=days, day_h=day_h)
    covariate = None
    if pre_batches is not None:
        pre = ab.customer_totals(_open(pre_batches), start=pre_start, end=start)
        covariate = pre.lookup(totals.customer_id)
    arms = looks.arms
    if control not in arms:
        raise ValueError(f"control: no customer in arm {control!r}; arms logged: {list(arms)}")
    analyses = {}
    for t in (a for a in arms if a != control):
        t_tau = _default_tau(looks, t, control, alpha) if tau is None else tau
        analyses[t] = ab.analyse(
            totals.total, totals.arm, t, control, covariate=covariate, looks=looks, tau=t_tau, alpha=alpha, level=level
        )
    tests: dict[str, list[ab.GuardrailTest]] = {t: [] for t in analyses}
    for g in guardrails:
        g_looks = ab.daily_looks(
            _metric_batches(g.metric, batches, guardrail_batches),
            experiment=experiment,
            start=start,
            days=days,
            day_h=day_h,
            arms=arms,
        )
        for t in analyses:
            tests[t].append(ab.noninferiority_sequential(g_looks, t, control, g, alpha=alpha))
    return ABReportInputs(
        experiment=experiment,
        control=control,
        source=f"decision log: {len(totals):,} customers, {days} looks of {day_h:g} h from t = {start:g} h",
        arm_counts={a: int((totals.arm == a).sum()) for a in arms},
        analyses=analyses,
        metrics={PRIMARY: {t: a.comparison for t, a in analyses.items()}},
        truth=None,
        alpha=alpha,
        look_unit="day" if day_h == 24.0 else f"{day_h:g} h",
        guardrails={t: tuple(v) for t, v in tests.items() if v},
    )


@dataclass(frozen=True)
class ReportFiles:
    """Paths of what :func:`render_report` wrote."""

    markdown: Path
    html: Path
    images: tuple[Path, ...]

    def all(self) -> tuple[Path, ...]:
        return (self.markdown, self.html, *self.images)


# ====================================================================================== plots
def _plot_estimates(plt, inp: ABReportInputs, path: Path) -> None:
    treatments = inp.treatments
    fig, (left, right) = plt.subplots(
        1,
        2,
        figsize=(13, 1.6 + 0.55 * max(4, len(inp.metrics) * len(treatments))),
        layout="constrained",
        gridspec_kw={"width_ratios": [1.2, 1]},
    )
    # left: relative lift of every metric with its delta-method interval
    labels, y = [], 0
    for m, by_t in inp.metrics.items():
        for t in treatments:
            c = by_t[t]
            if np.isfinite(c.lift):
                color = ESTIMATE_COLOR if c.p_value >= 1 - c.level else ("#2e7d32" if c.diff > 0 else "#c62828")
                err = [[100 * (c.lift - c.lift_ci_low)], [100 * (c.lift_ci_high - c.lift)]]
                left.errorbar(100 * c.lift, y, xerr=err, fmt="o", color=color, capsize=4)
            else:  # a control mean of 0 (no opt-out in its arm, say) gives no relative lift: say so on the row
                left.annotate(
                    f"no relative lift: {inp.control}'s mean is 0",
                    (0, y),
                    xytext=(6, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize=8,
                    color="0.4",
                )
            labels.append(f"{m}\n{t} vs {inp.control}" if len(treatments) > 1 else m)
            y += 1
    left.axvline(0, color="grey", lw=1)
    left.set_yticks(range(len(labels)), labels)
    left.invert_yaxis()
    left.set_xlabel("relative lift (%), treatment vs control, with CI")
    left.set_title(
        f"Lift per metric ({int(100 * next(iter(inp.analyses.values())).comparison.level)}% intervals; "
        "green / red: significantly up / down)"
    )
    left.grid(axis="x", alpha=0.3)
    # right: difference in reward per customer, raw and CUPED, with the truth
    rows = []
    for t, a in inp.analyses.items():
        rows.append((f"{t}: Welch", a.comparison.diff, a.comparison.ci_low, a.comparison.ci_high, ESTIMATE_COLOR, t))
        if a.cuped is not None:
            c = a.cuped.adjusted
            rows.append(
                (
                    f"{t}: CUPED (−{100 * a.cuped.variance_reduction:.0f}% var.)",
                    c.diff,
                    c.ci_low,
                    c.ci_high,
                    CUPED_COLOR,
                    t,
                )
            )
        if a.sequential is not None:
            s = a.sequential
            rows.append(
                (
                    f"{t}: always-valid ({100 * (1 - s.alpha):.0f}% CS)",
                    s.diff[-1],
                    s.cs_low[-1],
                    s.cs_high[-1],
                    "#9467bd",
                    t,
                )
            )
    for i, (_, est, lo, hi, color, t) in enumerate(rows):
        right.errorbar(est, i, xerr=[[est - lo], [hi - est]], fmt="o", color=color, capsize=4)
        if inp.truth is not None:
            right.plot(
                inp.truth[t][-1],
                i,
                marker="|",
                ms=18,
                mew=2.5,
                color=TRUTH_COLOR,
                label="true effect" if i == 0 else None,
            )
    right.axvline(0, color="grey", lw=1)
    right.set_yticks(range(len(rows)), [r[0] for r in rows])
    right.invert_yaxis()
    right.set_xlabel(f"difference in {PRIMARY} per customer (treatment − {inp.control})")
    right.set_title("Primary metric: difference in means")
    right.grid(axis="x", alpha=0.3)
    if inp.truth is not None:
        right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    fig.suptitle(f"Experiment '{inp.experiment}'")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_cumulative(plt, inp: ABReportInputs, path: Path) -> None:
    fig, axes = plt.subplots(
        1, len(inp.treatments), figsize=(8 * len(inp.treatments), 4.8), layout="constrained", squeeze=False
    )
    for ax, (t, a) in zip(axes[0], inp.analyses.items(), strict=True):
        s = a.sequential
        if s is None:
            ax.set_visible(False)
            continue
        x = np.arange(1, s.n_looks + 1)
        z = stats.norm.isf(s.alpha / 2)
        ax.fill_between(
            x,
            s.cs_low,
            s.cs_high,
            color=ESTIMATE_COLOR,
            alpha=0.18,
            label=f"{100 * (1 - s.alpha):.0f}% confidence sequence (always valid)",
        )
        ax.plot(
            x,
            s.diff - z * s.se,
            color=ESTIMATE_COLOR,
            ls="--",
            lw=0.9,
            label=f"{100 * (1 - s.alpha):.0f}% fixed-horizon CI (valid at one planned look)",
        )
        ax.plot(x, s.diff + z * s.se, color=ESTIMATE_COLOR, ls="--", lw=0.9)
        ax.plot(x, s.diff, marker="o", color=ESTIMATE_COLOR, label="estimated difference")
        if inp.truth is not None:
            ax.plot(x, inp.truth[t], color=TRUTH_COLOR, lw=2, label="true difference")
        if s.first_rejection is not None:
            ax.axvline(s.first_rejection + 1, color="black", ls=":", label="first always-valid rejection")
        ax.axhline(0, color="grey", lw=1)
        ax.set_xlabel(f"{inp.look_unit} (cumulative data)")
        ax.set_ylabel(f"cumulative {PRIMARY} per customer, {t} − {inp.control}")
        ax.set_title(f"{t} vs {inp.control}: cumulative difference (mSPRT, τ = {s.tau:.3g})")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_pvalues(plt, inp: ABReportInputs, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 4.8), layout="constrained")
    colors = distinct_colors(len(inp.analyses))
    for k, (t, a) in enumerate(inp.analyses.items()):
        s = a.sequential
        if s is None:
            continue
        x = np.arange(1, s.n_looks + 1)
        ax.plot(x, np.maximum(s.p_value, 1e-12), marker="o", color=colors[k], label=f"{t}: always-valid p (mSPRT)")
        ax.plot(x, np.maximum(s.naive_p, 1e-12), ls="--", color=colors[k], label=f"{t}: naive t-test p at each look")
    ax.axhline(inp.alpha, color=TRUTH_COLOR, lw=1.5, label=f"alpha = {inp.alpha:g}")
    ax.set_yscale("log")
    ax.set_ylim(top=1.5)
    ax.set_xlabel(f"{inp.look_unit} (cumulative data)")
    ax.set_ylabel("p-value (log scale)")
    ax.set_title("Sequential p-values: only the always-valid one may be read at every look")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best", fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_guardrails(plt, inp: ABReportInputs, path: Path) -> None:
    """Each guardrail's worsening and always-valid upper bound, as fractions of its margin (1 = the margin)."""
    rows = [(t, g) for t in inp.treatments for g in inp.guardrails.get(t, ())]
    fig, ax = plt.subplots(figsize=(10, 1.4 + 0.6 * len(rows)), layout="constrained")
    for i, (t, g) in enumerate(rows):
        m = g.margin
        color = "#2e7d32" if g.passed else "#c62828"
        if np.isfinite(g.worsening):
            if np.isfinite(g.lower):
                ax.plot([g.lower / m, g.worsening / m], [i, i], color=color, lw=1, alpha=0.6)
            ax.plot([g.worsening / m, g.bound / m], [i, i], color=color, lw=2.5)
            ax.plot(g.worsening / m, i, "o", color=color)
            ax.plot(g.bound / m, i, "|", color=color, ms=16, mew=2.5)
            ax.annotate(g.status, (g.bound / m, i), textcoords="offset points", xytext=(8, -4), fontsize=8, color=color)
        if inp.true_worsening is not None and g.guardrail.name in inp.true_worsening.get(t, {}):
            ax.plot(
                inp.true_worsening[t][g.guardrail.name] / m,
                i,
                marker="x",
                color=TRUTH_COLOR,
                ms=10,
                ls="none",
                label="true worsening" if i == 0 else None,
            )
    lo, hi = ax.get_xlim()
    ax.set_xlim(min(lo, -0.1), max(hi, 1.25))  # the margin and its label always in view
    ax.axvline(1.0, color=TRUTH_COLOR, ls="--", lw=1.2, label="margin")
    ax.axvline(0.0, color="grey", lw=1)
    labels = [
        f"{g.guardrail.name}\n{t} vs {inp.control}" if len(inp.treatments) > 1 else g.guardrail.name for t, g in rows
    ]
    ax.set_yticks(range(len(rows)), labels)
    ax.invert_yaxis()
    ax.set_xlabel(
        "worsening as a fraction of its margin: estimate (dot), always-valid upper bound (bar), lower bound (thin)"
    )
    ax.set_title(
        f"Guardrails: non-inferior when the bound stays left of the margin (green; red: fails), alpha = {inp.alpha:g}"
    )
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ====================================================================================== text
def _lift(x: float) -> str:
    return percent(x, "+.2f")


def verdict(a: ab.Analysis) -> str:
    """One sentence: what the always-valid test (or, without looks, Welch's test) concludes."""
    s = a.sequential
    if s is not None:
        p = p_value(s.p_value[-1])
        if s.rejected:
            side = "better" if s.diff[-1] > 0 else "worse"
            return (
                f"{a.treatment} is {side} than {a.control} (always-valid p = {p} ≤ {s.alpha:g}, "
                f"first at look {s.first_rejection + 1})"
            )
        return (
            f"no significant difference between {a.treatment} and {a.control} yet "
            f"(always-valid p = {p} > {s.alpha:g}); keep the test running or stop for futility"
        )
    c = a.comparison
    p = p_value(c.p_value)
    if c.significant():
        return f"{a.treatment} is {'better' if c.diff > 0 else 'worse'} than {a.control} (Welch p = {p})"
    return f"no significant difference between {a.treatment} and {a.control} (Welch p = {p})"


def _summary_table(inp: ABReportInputs) -> Table:
    header = ["treatment", "estimator", "difference", "interval", "p-value", "lift", "lift interval"]
    rows = []
    for t, a in inp.analyses.items():
        c = a.comparison
        rows.append(
            [
                t,
                "Welch",
                num(c.diff),
                interval(c.ci_low, c.ci_high),
                p_value(c.p_value),
                _lift(c.lift),
                interval(c.lift_ci_low, c.lift_ci_high, _lift),
            ]
        )
        if a.cuped is not None:
            k = a.cuped.adjusted
            rows.append(
                [
                    t,
                    f"CUPED (θ = {num(a.cuped.theta)}, variance −{100 * a.cuped.variance_reduction:.1f}%)",
                    num(k.diff),
                    interval(k.ci_low, k.ci_high),
                    p_value(k.p_value),
                    _lift(k.lift),
                    interval(k.lift_ci_low, k.lift_ci_high, _lift),
                ]
            )
        if a.sequential is not None:
            s = a.sequential
            rows.append(
                [
                    t,
                    f"mSPRT (τ = {num(s.tau)}): last look's CS, p = min over looks",
                    num(s.diff[-1]),
                    interval(s.cs_low[-1], s.cs_high[-1]),
                    p_value(s.p_value[-1]),
                    "",
                    "",
                ]
            )
        if inp.truth is not None:
            rows.append([t, "true effect", num(inp.truth[t][-1]), "", "", "", ""])
    return Table(header, rows)


def _metric_table(inp: ABReportInputs) -> Table:
    header = [
        "metric",
        "treatment",
        f"mean ({inp.control})",
        "mean (treatment)",
        "difference",
        "interval",
        "Welch p",
        "lift",
    ]
    rows = []
    for m, by_t in inp.metrics.items():
        for t, c in by_t.items():
            rows.append(
                [
                    m,
                    t,
                    num(c.mean_control),
                    num(c.mean_treatment),
                    num(c.diff),
                    interval(c.ci_low, c.ci_high),
                    p_value(c.p_value),
                    _lift(c.lift),
                ]
            )
    return Table(header, rows)


def _margin(x: float, g: ab.Guardrail) -> str:
    return percent(x, "+.3g") if g.relative else num(x, "+.4g")


def _guardrail_table(inp: ABReportInputs) -> Table:
    header = [
        "guardrail",
        "metric",
        "treatment",
        f"mean ({inp.control})",
        "mean (treatment)",
        "worsening",
        "upper bound",
        "margin",
        "p-value",
        "status",
        "power if harmless",
        "true worsening",
    ]
    rows = []
    for t in inp.treatments:
        for g in inp.guardrails.get(t, ()):
            gd = g.guardrail
            true = "" if inp.true_worsening is None else _margin(inp.true_worsening[t].get(gd.name, np.nan), gd)
            rows.append(
                [
                    gd.name,
                    f"{gd.metric} ({gd.better} is better)",
                    t,
                    num(g.mean_control),
                    num(g.mean_treatment),
                    _margin(g.worsening, gd),
                    _margin(g.bound, gd),
                    _margin(g.margin, gd),
                    p_value(g.p_value),
                    g.status if g.passed else g.status.upper(),
                    num(g.power()),
                    true,
                ]
            )
    return Table(header, rows)


_GUARDRAILS_TEXT = (
    "Each guardrail is a non-inferiority test: it holds when the data reject that the treatment worsens its metric "
    "by the margin or more. The upper bound is always valid (one-sided mixture SPRT over the daily looks, read at "
    "the last look); worsening is treatment minus control for a lower-is-better metric (relative ones as a share of "
    "the control's mean). Power if harmless: the chance a treatment with no effect on the metric passes at this "
    "size (at the variance observed); a low one means an inconclusive guardrail needs more customers."
)

# (title, image, text) of the figures shown after the tables, in order
_FIGURES: tuple[tuple[str, str, str], ...] = (
    (
        "Estimates",
        ESTIMATES_PNG,
        "Left: relative lift of every metric with its delta-method interval. Right: the difference in reward per "
        "customer by Welch's t-interval, with CUPED (pre-period reward as covariate) and the always-valid confidence "
        "sequence at the last look.",
    ),
    (
        "Cumulative difference over time",
        CUMULATIVE_PNG,
        "The estimated difference of cumulative reward per customer at each look. The shaded confidence sequence holds "
        "at every look at once, so it may be watched daily; the dashed fixed-horizon interval is valid only at a "
        "single look planned in advance.",
    ),
    (
        "Sequential p-values",
        PVALUES_PNG,
        "Peeking at the naive t-test every day and stopping at the first p ≤ alpha inflates false positives well "
        "above alpha; the always-valid mSPRT p-value does not.",
    ),
)


def _intro(inp: ABReportInputs) -> list[str]:
    arms = ", ".join(f"{a} ({n:,})" for a, n in inp.arm_counts.items())
    return [
        f"Data: {inp.source}.",
        f"Arms (customers): {arms}; control: {inp.control}.",
        "Unit of analysis: the customer (total reward per customer); assignment by hashing the experiment "
        "name with the customer id.",
    ]


# ====================================================================================== entry points
def render_report(inp: ABReportInputs, out_dir: Path) -> ReportFiles:
    """Draw the figures and write ``report.md`` and ``report.html`` into ``out_dir``; return the paths."""
    plt = pyplot()
    if not inp.analyses:
        raise ValueError("analyses: nothing to report (no treatment arm beside the control)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = []
    for draw, name in (
        (_plot_estimates, ESTIMATES_PNG),
        (_plot_cumulative, CUMULATIVE_PNG),
        (_plot_pvalues, PVALUES_PNG),
    ):
        draw(plt, inp, out_dir / name)
        images.append(out_dir / name)
    if inp.guardrails:
        _plot_guardrails(plt, inp, out_dir / GUARDRAILS_PNG)
        images.append(out_dir / GUARDRAILS_PNG)
    md, page = write_pages(
        out_dir,
        "ab",
        title=f"A/B report — experiment '{inp.experiment}'",
        intro=_intro(inp),
        verdicts=[verdict(a) for a in inp.analyses.values()],
        decisions=[(t, inp.verdict(t).reason) for t in inp.treatments],
        summary=_summary_table(inp),
        guardrails=_guardrail_table(inp) if inp.guardrails else None,
        guardrails_text=_GUARDRAILS_TEXT,
        guardrails_image=GUARDRAILS_PNG,
        metrics=_metric_table(inp),
        figures=_FIGURES,
        notes=inp.notes,
    )
    return ReportFiles(md, page, tuple(images))


def write_report(
    scenario: Scenario,
    arms: Mapping[str, Policy],
    out_dir: Path,
    *,
    n: int = 5000,
    days: int = 14,
    seed: int = 0,
    purpose: str = "ab",
    experiment: str = "ab",
    control: str = "champion",
    pre_days: int = 7,
    tau: float | None = None,
    alpha: float = 0.05,
    guardrails: Iterable[ab.Guardrail] = ab.DEFAULT_GUARDRAILS,
    progress: Callable[[int], None] | None = None,
) -> ReportFiles:
    """Simulate an A/B test of ``arms`` (see :func:`envs.experiment.run_experiment`) and render its report."""
    guardrails = ab.check_guardrails(guardrails)
    result = run_experiment(
        scenario,
        arms,
        n=n,
        days=days,
        seed=seed,
        purpose=purpose,
        experiment=experiment,
        control=control,
        pre_days=pre_days,
        progress=progress,
    )
    return render_report(simulated_inputs(result, tau=tau, alpha=alpha, guardrails=guardrails), out_dir)
