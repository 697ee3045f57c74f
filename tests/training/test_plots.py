"""Figures: each function writes a readable PNG of the size it was drawn at."""

from __future__ import annotations

import struct

from training.plots import score_curves


def _png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_score_curves_writes_a_png(tmp_path):
    curves = {"a": [0.0, 0.2, 0.4], "b": [0.1, 0.1, 0.1, 0.3]}
    out = score_curves(curves, {"a": 3000, "b": 20_000}, 0.85, tmp_path / "curves.png", "two learners")
    assert out == tmp_path / "curves.png"
    assert _png_size(out) == (990, 550)  # 9 x 5 inches at 110 dpi
