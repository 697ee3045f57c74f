"""The reports' shared renderer: number formatting, Markdown and HTML escaping, tables, pages."""

from __future__ import annotations

import math

import pytest

from training.reports import render as r


@pytest.mark.parametrize(
    ("x", "spec", "want"),
    [
        (0.123456, ".4g", "0.1235"),
        (1234567.0, ".4g", "1.235e+06"),
        (0.5, "+.4g", "+0.5"),
        (None, ".4g", "n/a"),
        (math.nan, ".4g", "n/a"),
        (math.inf, "+.4g", "n/a"),
    ],
)
def test_num(x, spec, want):
    assert r.num(x, spec) == want


def test_percent_p_value_interval():
    assert r.percent(0.12345) == "12.3%" and r.percent(-0.0123, "+.2f") == "-1.23%"
    assert r.percent(math.nan) == "n/a" and r.percent(None) == "n/a"
    assert r.p_value(0.5) == "0.5000" and r.p_value(3e-5) == "< 1e-4" and r.p_value(math.nan) == "n/a"
    assert r.interval(0.1, math.nan) == "[0.1, n/a]"
    assert r.interval(0.1, 0.25, r.percent) == "[10%, 25%]"


def test_markdown_cell_and_html_code():
    assert r.md_cell("a | b\nc") == "a \\| b c"
    assert str(r.code_html("run `nba <x>` & 'y'")) == "run <code>nba &lt;x&gt;</code> &amp; &#39;y&#39;"


def test_table_macros():
    t = r.Table(["name", "status"], [["a|b", "PASS"], ["<c>", "FAIL"], ["d", "input"]], status_col=1)
    env = r._ENV
    md = env.get_template("macros.md.j2").module.table(t)
    assert str(md).splitlines() == [
        "| name | status |",
        "|---|---|",
        "| a\\|b | PASS |",
        "| <c> | FAIL |",
        "| d | input |",
    ]
    page = str(env.get_template("macros.html.j2").module.table(t))
    assert '<td class="PASS">PASS</td>' in page and '<td class="FAIL">FAIL</td>' in page
    assert "<td>&lt;c&gt;</td>" in page and "<td>input</td>" in page


def test_write_pages(tmp_path):
    md, page = r.write_pages(
        tmp_path / "out",
        "promotions",
        title="T <1>",
        lines=["see `cmd`"],
        table=r.Table(["#"], [["1"]]),
        image="x.png",
        reasons=["why"],
    )
    assert md == tmp_path / "out" / "report.md" and page == tmp_path / "out" / "report.html"
    text = md.read_text()
    assert text.startswith("# T <1>\n\nsee `cmd`\n") and "| 1 |" in text and "1. why" in text
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert "<h1>T &lt;1&gt;</h1>" in html and "<code>cmd</code>" in html
    assert "border-collapse: collapse" in html  # the one CSS, inlined


def test_a_missing_context_value_is_an_error(tmp_path):
    with pytest.raises(Exception, match="table"):
        r.write_pages(tmp_path, "promotions", title="T", lines=[], image="x.png", reasons=[])
