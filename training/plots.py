"""Figures the training and evaluation jobs log to MLflow and write as PNG.

Each figure function takes plain arrays, writes one PNG and returns its path; :func:`distinct_colors`,
:func:`channel_colors` and :func:`curve_styles` give the series of any figure colours no two alike.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nba.actions import CHANNELS

LINE_STYLES = ("-", "--", "-.", ":")  # with MARKERS, told apart where colours come round again
MARKERS = ("o", "s", "^", "D")
TITLE_CHARS = 75  # a title's characters a line on an 8-inch figure (_fold_title scales them to its width)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fold_title(fig, title: str) -> None:
    """``title`` over the whole figure, folded to its width: above one axes, long tick labels push it past the edge."""
    fig.suptitle(textwrap.fill(title, int(TITLE_CHARS * fig.get_figwidth() / 8)))


def distinct_colors(n: int) -> list[tuple[float, float, float, float]]:
    """``n`` RGBA colours, no two alike: tab10's for up to 10, tab20's for up to 20 (its ten tab10 hues
    first, then their light tints), else ``n`` hues evenly spaced around the colour wheel."""
    import matplotlib

    if n <= 10:
        cmap = matplotlib.colormaps["tab10"]
        return [cmap(i) for i in range(n)]
    if n <= 20:
        cmap = matplotlib.colormaps["tab20"]
        return [cmap(i) for i in [*range(0, 20, 2), *range(1, 20, 2)][:n]]
    cmap = matplotlib.colormaps["hsv"]
    return [cmap(i / n) for i in range(n)]


def channel_colors(channels: Sequence[str]) -> dict[str, tuple[float, float, float, float]]:
    """A colour per channel, no two alike: a built-in channel keeps its own whichever channels a brand declares
    (email is always the same blue) while they number at most 20 with the built-in ones, and a brand's other
    channels take the colours left."""
    names = [*CHANNELS, *dict.fromkeys(c for c in channels if c not in CHANNELS)]
    palette = distinct_colors(max(len(names), 10))
    return {c: palette[names.index(c)] for c in channels}


def curve_styles(n: int) -> list[dict[str, Any]]:
    """Matplotlib line keywords for ``n`` curves, no two drawn alike: a colour each (:func:`distinct_colors`),
    and from the eleventh on another line style and marker too, so a curve is told apart in print as well."""
    return [
        {"color": c, "ls": LINE_STYLES[(i // 10) % 4], "marker": MARKERS[(i // 10) % 4]}
        for i, c in enumerate(distinct_colors(n))
    ]


def learning_curve(
    steps: np.ndarray,
    reward: np.ndarray,
    oracle: np.ndarray,
    no_contact: np.ndarray,
    regret: np.ndarray,
    path: Path,
    title: str,
) -> Path:
    """Mean expected reward per batch beside the oracle and no contact; cumulative regret."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(steps, oracle, label="oracle", color="0.3", ls="--")
    a.plot(steps, reward, label="policy")
    a.plot(steps, no_contact, label="no contact", color="0.6", ls=":")
    a.set(xlabel="decisions", ylabel="expected reward per decision", title="learning curve")
    a.legend()
    b.plot(steps, regret)
    b.set(xlabel="decisions", ylabel="cumulative regret", title="regret against the oracle")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def score_curves(
    curves: Mapping[str, Sequence[float]],
    decisions: Mapping[str, int],
    target: float | None,
    path: Path,
    title: str,
    reference_label: str = "target",
) -> Path:
    """Normalised score of each equal slice of every learner's run, drawn at the slice's middle (and a
    horizontal line at ``target``, labelled ``reference_label``, unless it is None)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 5))
    for (name, curve), style in zip(curves.items(), curve_styles(len(curves)), strict=True):
        k = len(curve)
        ax.plot((np.arange(k) + 0.5) * decisions[name] / k, curve, ms=3, label=name, **style)
    ax.axhline(1.0, color="0.3", ls="--", lw=1, label="oracle")
    if target is not None:
        ax.axhline(target, color="tab:red", ls=":", lw=1, label=f"{reference_label} {target:.3g}")
    ax.axhline(0.0, color="0.6", ls=":", lw=1, label="no contact")
    ax.set(xlabel="decisions", ylabel="normalised score of the slice", title=title)
    ax.legend(bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def channel_mix(shares: Mapping[str, Sequence[float]], channels: Sequence[str], path: Path, title: str) -> Path:
    """Stacked bars: share of decisions per channel (and no contact) for each policy."""
    plt = _plt()
    names = list(shares)
    labels = ["no contact", *channels]
    data = np.array([shares[n] for n in names])  # (P, 1 + C)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(names) + 3), 4))
    bottom = np.zeros(len(names))
    colors = channel_colors(channels)
    for j, label in enumerate(labels):
        ax.bar(names, data[:, j], bottom=bottom, label=label, color="0.85" if j == 0 else colors[label])
        bottom += data[:, j]
    ax.set(ylabel="share of decisions", title=title, ylim=(0, 1))
    ax.legend(bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=8)
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def mix_of(actions: np.ndarray, channel_of: np.ndarray, n_channels: int) -> np.ndarray:
    """(1 + C,) share of decisions that are no contact, then each channel."""
    counts = np.bincount(np.where(actions > 0, channel_of[actions] + 1, 0), minlength=n_channels + 1)
    return counts / max(1, len(actions))


def send_hour_heatmap(
    send_hour: np.ndarray, segment: np.ndarray, contact: np.ndarray, segments: Sequence[str], path: Path, title: str
) -> Path:
    """Share of each segment's messages sent at each local hour of the day."""
    plt = _plt()
    grid = np.zeros((len(segments), 24))
    h = np.floor(send_hour[contact]).astype(int) % 24
    np.add.at(grid, (segment[contact], h), 1)
    grid /= np.maximum(grid.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(10, 0.6 * len(segments) + 1.6))
    im = ax.imshow(grid, aspect="auto", cmap="viridis")
    ax.set(
        xticks=range(0, 24, 2),
        yticks=range(len(segments)),
        yticklabels=list(segments),
        xlabel="local send hour",
        title=title,
    )
    fig.colorbar(im, ax=ax, label="share of the segment's messages")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def estimate_intervals(
    rows: Sequence[tuple[str, float, float, float]],
    path: Path,
    title: str,
    truth: Mapping[str, float] | None = None,
    faded: Mapping[str, str] | None = None,
    reference: float | None = None,
) -> Path:
    """Point estimates with their intervals, one line per (label, value, low, high); true values as marks.

    Labels in ``faded`` (label -> note: unsupported or flagged estimates) are drawn hollow and grey,
    the note beside the label;
    ``reference`` draws a dashed vertical line (the logging policy's own value, say)."""
    plt = _plt()
    faded = dict(faded or {})
    fig, ax = plt.subplots(figsize=(8, 0.38 * len(rows) + 1.5), layout="constrained")
    y = np.arange(len(rows))[::-1]
    for yi, (label, v, lo, hi) in zip(y, rows, strict=True):
        grey = label in faded
        ax.errorbar(
            v,
            yi,
            xerr=[[v - lo], [hi - v]],
            fmt="o",
            color="0.6" if grey else "C0",
            capsize=3,
            mfc="white" if grey else "C0",
        )
        if truth and label in truth:
            ax.plot(truth[label], yi, marker="x", color="C3", ms=9, ls="none")
    if truth:
        ax.plot([], [], marker="x", color="C3", ls="none", label="true value (simulator)")
    if reference is not None:
        ax.axvline(reference, color="0.3", ls="--", lw=1, label="logging policy's own value")
    if truth or reference is not None:
        ax.legend(loc="best", fontsize=8)
    labels = [f"{r[0]} ({faded[r[0]]})" if r[0] in faded else r[0] for r in rows]
    ax.set(yticks=y, yticklabels=labels, xlabel="value per decision")
    _fold_title(fig, title)
    ax.grid(axis="x", alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def intervals_by_estimator(
    estimates: Mapping[str, Mapping[str, tuple[float, float, float, bool]]],
    estimators: Sequence[str],
    path: Path,
    title: str,
    truth: Mapping[str, float] | None = None,
) -> Path:
    """One panel per estimator, side by side on one value axis, a row per policy in each: ``estimates[policy]
    [estimator] = (value, low, high, unsupported)``, unsupported ones hollow and grey; true values as marks."""
    plt = _plt()
    policies = list(estimates)
    fig, axes = plt.subplots(
        1,
        len(estimators),
        figsize=(2.6 * len(estimators) + 2.4, 0.36 * len(policies) + 1.9),
        sharex=True,
        sharey=True,
        layout="constrained",
        squeeze=False,
    )
    y = np.arange(len(policies))[::-1]
    for ax, name in zip(axes[0], estimators, strict=True):
        for yi, policy in zip(y, policies, strict=True):
            if name not in estimates[policy]:
                continue
            v, lo, hi, unsupported = estimates[policy][name]
            color = "0.6" if unsupported else "C0"
            ax.errorbar(
                v,
                yi,
                xerr=[[v - lo], [hi - v]],
                fmt="o",
                color=color,
                capsize=3,
                ms=5,
                mfc="white" if unsupported else color,
            )
            if truth and policy in truth:
                ax.plot(truth[policy], yi, marker="x", color="C3", ms=8, ls="none")
        ax.set_title(name)
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].set(yticks=y, yticklabels=policies)
    fig.supxlabel("value per decision")
    key = "; red x: the true value (simulator)" if truth else ""  # the title is the key (a legend would sit on it)
    _fold_title(fig, title + key)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def predicted_vs_realised(
    predicted: np.ndarray,
    predicted_ci: np.ndarray,
    realised: np.ndarray,
    realised_ci: np.ndarray,
    promoted: np.ndarray,
    path: Path,
    title: str,
    truth: np.ndarray | None = None,
    labels: Sequence[str] | None = None,
) -> Path:
    """One point per promotion: the off-policy predicted lift (x, its interval) against the lift the A/B
    test realised (y, its interval), the diagonal where they agree, true lifts (simulated) as crosses.

    ``predicted_ci`` and ``realised_ci`` are (N, 2) (low, high); ``promoted`` (N,) bool draws the
    moves filled and the refusals hollow; ``truth`` (N,) may hold NaN where unknown.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 6.5))
    x, y = np.asarray(predicted, float), np.asarray(realised, float)
    xe = np.abs(np.asarray(predicted_ci, float) - x[:, None]).T
    ye = np.abs(np.asarray(realised_ci, float) - y[:, None]).T
    promoted = np.asarray(promoted, bool)
    for sel, face, label in ((promoted, "C0", "promoted"), (~promoted, "white", "not promoted")):
        if sel.any():
            ax.errorbar(
                x[sel], y[sel], xerr=xe[:, sel], yerr=ye[:, sel], fmt="o", color="C0", mfc=face, capsize=3, label=label
            )
    shown = [x, y, np.asarray(predicted_ci, float).ravel(), np.asarray(realised_ci, float).ravel()]
    if truth is not None and np.isfinite(truth).any():
        t = np.asarray(truth, float)
        ax.plot(x, t, "x", color="C3", ms=9, label="true lift (simulator)")
        shown.append(t[np.isfinite(t)])
    if labels is not None:
        for xi, yi, text in zip(x, y, labels, strict=True):
            ax.annotate(text, (xi, yi), textcoords="offset points", xytext=(5, 5), fontsize=7)
    values = np.concatenate([v[np.isfinite(v)] for v in shown] + [np.zeros(1)])
    lo, hi = float(values.min()), float(values.max())
    pad = 0.08 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.4", ls="--", lw=1, label="realised = predicted")
    ax.axhline(0, color="0.8", lw=0.8)
    ax.axvline(0, color="0.8", lw=0.8)
    ax.set(
        xlim=(lo - pad, hi + pad),
        ylim=(lo - pad, hi + pad),
        xlabel="predicted lift per decision (off-policy)",
        ylabel="realised lift per decision (A/B test)",
        title=title,
    )
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
