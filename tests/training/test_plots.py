"""Figures: each function writes a readable PNG of the size it was drawn at."""

from __future__ import annotations

import struct

from nba.actions import CHANNELS
from training.plots import (
    channel_colors,
    curve_styles,
    distinct_colors,
    estimate_intervals,
    intervals_by_estimator,
    score_curves,
)


def _png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_score_curves_writes_a_png(tmp_path):
    curves = {"a": [0.0, 0.2, 0.4], "b": [0.1, 0.1, 0.1, 0.3]}
    out = score_curves(curves, {"a": 3000, "b": 20_000}, 0.85, tmp_path / "curves.png", "two learners")
    assert out == tmp_path / "curves.png"
    assert _png_size(out) == (990, 550)  # 9 x 5 inches at 110 dpi


def test_distinct_colors_are_all_different_whatever_their_number():
    for n in (1, 7, 10, 11, 13, 20, 21, 64):
        colors = distinct_colors(n)
        assert len(colors) == n
        assert len({tuple(round(v, 6) for v in c) for c in colors}) == n, n
    assert distinct_colors(13)[:10] == distinct_colors(10)  # the first ten keep tab10's colours


def test_thirteen_learning_curves_are_drawn_thirteen_ways(tmp_path):
    # bench/policies.py draws 13 learners: matplotlib's own cycle gave three pairs of them one colour
    styles = curve_styles(13)
    assert len({(s["color"], s["ls"], s["marker"]) for s in styles}) == 13
    assert len({s["color"] for s in styles}) == 13
    assert {s["ls"] for s in styles[:10]} == {"-"} and {s["ls"] for s in styles[10:]} == {"--"}
    curves = {f"learner {i}": [0.01 * i, 0.02 * i] for i in range(13)}
    out = score_curves(curves, dict.fromkeys(curves, 1000), None, tmp_path / "c.png", "thirteen")
    assert _png_size(out) == (990, 550)


def test_channel_colors_keep_the_built_in_ones_and_never_repeat():
    builtin = channel_colors(list(CHANNELS))
    assert channel_colors(["push", "email"]) == {"push": builtin["push"], "email": builtin["email"]}
    brand = ["email", "push", "whatsapp", "rcs", "viber", "line", "kakao", "telegram", "wechat"]
    colors = channel_colors(brand)
    assert colors["email"] == builtin["email"] and colors["push"] == builtin["push"]
    assert len(set(colors.values())) == len(brand)  # whatsapp no longer takes push's colour
    many = [f"channel{i}" for i in range(25)]
    assert len(set(channel_colors([*CHANNELS, *many]).values())) == len(CHANNELS) + 25


def test_an_estimates_long_title_stays_inside_the_figure(tmp_path, saved_figures):
    # the evaluation's ranking figure: its title, over the axes of long labels, ran past the right edge
    rows = [(f"lgbm_squarecb (safe) v{i} · mdr (unsupported)", 1.0, 0.5, 1.5) for i in range(12)]
    title = "policies ranked by mdr (95% intervals; hollow grey: flagged); dashed: the logging policy's own value"
    estimate_intervals(rows, tmp_path / "r.png", title, reference=0.9)
    ((fig, renderer),) = saved_figures
    (text,) = [t for t in [*fig.texts, *(ax.title for ax in fig.axes)] if t.get_text()]  # the title, wherever
    extent = text.get_window_extent(renderer)
    assert text.get_text().replace("\n", " ") == title
    assert fig.bbox.x0 <= extent.x0 and extent.x1 <= fig.bbox.x1 and extent.y1 <= fig.bbox.y1


def test_intervals_by_estimator_draw_a_panel_each_with_a_row_per_policy(tmp_path, saved_figures):
    # the evaluation's ope_intervals.png: one column of 60 rows became a panel per estimator
    policies = [f"policy {i}" for i in range(12)]
    estimators = ["snips", "dm", "dr", "mips", "mdr"]
    estimates = {
        p: {e: (1.0 + i / 10, 0.5, 2.5, (i + j) % 4 == 0) for j, e in enumerate(estimators)}
        for i, p in enumerate(policies)
    }
    out = intervals_by_estimator(
        estimates, estimators, tmp_path / "i.png", "estimates " * 20, dict.fromkeys(policies, 1)
    )
    ((fig, renderer),) = saved_figures
    title = [t for t in fig.texts if t.get_text() == fig.get_suptitle()][0].get_window_extent(renderer)
    assert [ax.get_title() for ax in fig.axes] == estimators
    ticks = fig.axes[0].get_yticklabels()
    assert [t.get_text() for t in ticks] == policies
    assert [t.get_position()[1] for t in ticks] == list(range(11, -1, -1))  # the first policy on top
    hollow = [line for ax in fig.axes for line in ax.lines if line.get_markerfacecolor() == "white"]
    assert len(hollow) == sum(u for p in policies for *_, u in estimates[p].values())  # the unsupported ones
    assert fig.bbox.x0 <= title.x0 and title.x1 <= fig.bbox.x1 and title.y1 <= fig.bbox.y1
    assert _png_size(out)[1] < 800  # 12 policies in rows of about 40 px, not 60 rows
