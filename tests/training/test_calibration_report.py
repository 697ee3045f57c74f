"""The calibration report: every plot written and valid, every checked target reported, HTML complete."""

from __future__ import annotations

import re

import pytest

from envs.calibration import TARGETS
from envs.scenario import Scenario
from training import calibration_report as cr

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("calibration") / "report"  # does not exist yet: write_report creates it
    days: list[int] = []
    md = cr.write_report(Scenario.default(), out, n=2000, seed=0, progress=days.append)
    return out, md, days


def test_returns_markdown_path_and_reports_progress(report):
    out, md, days = report
    assert md == out / "report.md"
    assert md.is_file() and (out / "report.html").is_file()
    assert days == list(range(cr.DAYS))


@pytest.mark.parametrize("name", cr.IMAGES)
def test_every_png_exists_and_is_valid(report, name):
    out, _, _ = report
    data = (out / name).read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 400 and height >= 300
    assert data.rstrip(b"\x00")[-8:-4] == b"IEND"


def test_markdown_reports_every_target_with_status(report):
    _, md, _ = report
    text = md.read_text()
    assert "nba scenario report --out" in text and "--n 2000 --seed 0" in text
    for t in TARGETS:
        assert t.name in text
        rows = [line for line in text.splitlines() if line.startswith(f"| {t.name} |")]
        assert len(rows) == 1, t.name
        if t.kind == "checked":
            assert re.search(r"\| (PASS|FAIL) \|", rows[0]), rows[0]
        else:
            assert "PASS" not in rows[0] and "FAIL" not in rows[0]
    used = text.index("Used to set inputs")
    for t in TARGETS:
        assert (text.index(f"| {t.name} |") > used) == (t.kind == "input")
    for name in cr.IMAGES:
        assert f"]({name})" in text


def test_html_references_every_image_and_target(report):
    out, _, _ = report
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for name in cr.IMAGES:
        assert f'<img src="{name}"' in page
    for t in TARGETS:
        assert t.name in page
    assert re.search(r'class="(PASS|FAIL)"', page)
