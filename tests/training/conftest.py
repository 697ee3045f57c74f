"""Fixtures of the training package's tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def saved_figures(monkeypatch):
    """Every matplotlib figure saved while the test runs, as (figure, renderer) pairs: the renderer that drew it
    measures its texts (``text.get_window_extent(renderer)``) after the figure is closed."""
    from matplotlib.figure import Figure

    saved: list = []
    save = Figure.savefig

    def keep(fig, *args, **kwargs):
        save(fig, *args, **kwargs)
        saved.append((fig, fig.canvas.get_renderer()))

    monkeypatch.setattr(Figure, "savefig", keep)
    return saved
