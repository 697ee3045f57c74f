"""The promotions report: what off-policy evaluation predicted against what the A/B test realised.

Every ``promote`` run (``training.jobs.promote``) that had an A/B verdict and an off-policy
prediction logs, per decision, ``predicted_lift`` with ``predicted_lift_low`` / ``_high`` beside
``realised_lift`` with its always-valid interval (and ``true_lift`` when the test was simulated).
:func:`collect` reads them from the tracking store, :func:`render_report` writes
``predicted_vs_realised.png``, ``report.md`` and ``report.html`` (the reports' shared templates,
``training/reports/templates/promotions.*.j2``): whether the off-policy estimates that shortlist
challengers agree with the experiments that follow them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.reports.render import Table, interval, num, write_pages

PLOT_PNG = "predicted_vs_realised.png"


@dataclass(frozen=True)
class PromotionPoint:
    """One promotion decision with both lifts (per decision)."""

    run_id: str
    start_ms: int
    champion: str  # version serving after the decision
    previous: str
    promoted: bool
    ab_run: str
    predicted: float
    predicted_low: float
    predicted_high: float
    realised: float
    realised_low: float
    realised_high: float
    true: float  # NaN when unknown
    reason: str

    @property
    def covered(self) -> bool:
        """The realised lift lies inside the predicted interval."""
        return bool(self.predicted_low <= self.realised <= self.predicted_high)


def collect() -> list[PromotionPoint]:
    """Every finished promote run of the active tracking store that holds a predicted and a realised lift,
    oldest first."""
    import mlflow

    runs = mlflow.search_runs(
        search_all_experiments=True,
        output_format="list",
        filter_string="tags.`nba.job` = 'promote' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"],
    )
    points = []
    for r in runs:
        m, t = r.data.metrics, r.data.tags
        if "predicted_lift" not in m or "realised_lift" not in m:
            continue
        points.append(
            PromotionPoint(
                run_id=r.info.run_id,
                start_ms=int(r.info.start_time),
                champion=t.get("promotion.champion", ""),
                previous=t.get("promotion.previous", ""),
                promoted=t.get("promotion.promoted") == "True",
                ab_run=t.get("promotion.ab_run", ""),
                predicted=m["predicted_lift"],
                predicted_low=m.get("predicted_lift_low", m["predicted_lift"]),
                predicted_high=m.get("predicted_lift_high", m["predicted_lift"]),
                realised=m["realised_lift"],
                realised_low=m.get("realised_lift_low", m["realised_lift"]),
                realised_high=m.get("realised_lift_high", m["realised_lift"]),
                true=m.get("true_lift", float("nan")),
                reason=t.get("promotion.reason", ""),
            )
        )
    return points


@dataclass(frozen=True)
class Summary:
    n: int
    promoted: int
    covered: int  # realised inside the predicted interval
    mean_error: float  # mean of realised - predicted (NaN without points)
    sign_agreement: int  # predicted and realised on the same side of zero
    true_in_realised: int  # simulated: the true lift inside the A/B's interval
    with_truth: int

    def metrics(self) -> dict[str, float]:
        out = {
            "promotions": float(self.n),
            "promoted": float(self.promoted),
            "covered": float(self.covered),
            "sign_agreement": float(self.sign_agreement),
        }
        if self.n:
            out["mean_error"] = self.mean_error
        return out


def summarise(points: list[PromotionPoint]) -> Summary:
    err = np.array([p.realised - p.predicted for p in points])
    truth = [p for p in points if np.isfinite(p.true)]
    return Summary(
        len(points),
        sum(p.promoted for p in points),
        sum(p.covered for p in points),
        float(err.mean()) if len(err) else float("nan"),
        sum(np.sign(p.realised) == np.sign(p.predicted) for p in points),
        sum(p.realised_low <= p.true <= p.realised_high for p in truth),
        len(truth),
    )


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    html: Path
    image: Path

    def all(self) -> tuple[Path, ...]:
        return (self.markdown, self.html, self.image)


def _signed(x: float) -> str:
    return num(x, "+.4g")


def _table(points: list[PromotionPoint]) -> Table:
    header = [
        "#",
        "promote run",
        "version",
        "moved",
        "predicted (interval)",
        "realised (always-valid interval)",
        "true",
        "realised in predicted",
    ]
    rows = []
    for i, p in enumerate(points, 1):
        rows.append(
            [
                str(i),
                p.run_id[:8],
                f"{p.previous} → {p.champion}" if p.promoted else p.champion,
                "yes" if p.promoted else "no",
                f"{_signed(p.predicted)} {interval(p.predicted_low, p.predicted_high, _signed)}",
                f"{_signed(p.realised)} {interval(p.realised_low, p.realised_high, _signed)}",
                "—" if not np.isfinite(p.true) else _signed(p.true),
                "yes" if p.covered else "no",
            ]
        )
    return Table(header, rows)


def _lines(s: Summary) -> list[str]:
    if not s.n:
        return [
            "No promotion in this store has both an off-policy prediction and an A/B result yet: run "
            "`nba promote --ab-run RUN --predicted-lift X --predicted-low L --predicted-high H`."
        ]
    out = [
        f"{s.n} promotion decision(s) with both lifts, {s.promoted} of which moved the champion.",
        f"The realised lift fell inside the predicted interval {s.covered} time(s) out of {s.n}; predicted and "
        f"realised had the same sign {s.sign_agreement} time(s); mean realised − predicted: {s.mean_error:+.4g} "
        "per decision.",
    ]
    if s.with_truth:
        out.append(
            f"Simulated tests: the A/B's always-valid interval held the true lift {s.true_in_realised} time(s) "
            f"out of {s.with_truth}."
        )
    out.append(
        "Lifts are per decision: off-policy estimates are one decision's value (bandit view); an A/B's "
        "difference per customer over its days is divided by its days (one decision a customer a day). "
        "A gap between them is what one-step estimates miss: fatigue, opt-outs and churn that cost later."
    )
    return out


def render_report(points: list[PromotionPoint], out_dir: Path) -> ReportFiles:
    """Write the plot, ``report.md`` and ``report.html`` into ``out_dir``."""
    from training import plots

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    s = summarise(points)
    image = out_dir / PLOT_PNG
    arr = np.array(
        [
            [p.predicted, p.predicted_low, p.predicted_high, p.realised, p.realised_low, p.realised_high, p.true]
            for p in points
        ]
    ).reshape(-1, 7)
    plots.predicted_vs_realised(
        arr[:, 0],
        arr[:, 1:3],
        arr[:, 3],
        arr[:, 4:6],
        np.array([p.promoted for p in points]),
        image,
        "Promotions: off-policy prediction against the A/B test",
        truth=arr[:, 6],
        labels=[str(i) for i in range(1, len(points) + 1)],
    )
    md, page = write_pages(
        out_dir,
        "promotions",
        title="Promotions: predicted against realised lift",
        lines=_lines(s),
        table=_table(points),
        image=PLOT_PNG,
        reasons=[p.reason for p in points],
    )
    return ReportFiles(md, page, image)
