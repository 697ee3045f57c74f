"""One renderer for the reports: Jinja2 templates, one CSS, and the number formatting they share.

A report module builds its figures and the text of its tables (:class:`Table`, cells already
formatted with :func:`num`, :func:`percent`, :func:`p_value`, :func:`interval`) and calls
:func:`write_pages` with the name of its templates: ``templates/<name>.md.j2`` becomes ``report.md``
and ``templates/<name>.html.j2`` a self-contained ``report.html`` (its CSS inlined, its PNGs beside
it). The templates find these filters:

* ``num``, ``percent``, ``p_value`` — the formatting functions below (``n/a`` for a missing value);
* ``md`` — a Markdown table cell: ``|`` escaped, line breaks folded;
* ``code`` — HTML prose: escaped, with each `backquoted` span set as ``<code>``.

HTML templates (``*.html.j2``) are autoescaped; Markdown ones are not.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

NA = "n/a"
MARKDOWN = "report.md"
HTML = "report.html"


# ====================================================================================== numbers
def _missing(x: float | None) -> bool:
    return x is None or not math.isfinite(x)


def num(x: float | None, spec: str = ".4g") -> str:
    """``x`` formatted with ``spec`` (four significant digits by default); ``n/a`` when missing or not finite."""
    return NA if _missing(x) else format(x, spec)


def percent(x: float | None, spec: str = ".3g") -> str:
    """``x`` as a percentage (``0.1234`` → ``12.3%``), ``spec`` applied to ``100 x``; ``n/a`` when missing."""
    return NA if _missing(x) else f"{format(100 * x, spec)}%"


def p_value(x: float | None) -> str:
    """A p-value to four decimals, ``< 1e-4`` below that; ``n/a`` when missing."""
    return NA if _missing(x) else ("< 1e-4" if x < 1e-4 else f"{x:.4f}")


def interval(low: float | None, high: float | None, fmt: Callable[[float | None], str] = num) -> str:
    """``[low, high]``, each bound formatted by ``fmt``."""
    return f"[{fmt(low)}, {fmt(high)}]"


# ====================================================================================== tables and text
@dataclass(frozen=True)
class Table:
    """A table of text cells. The page colours the ``PASS`` / ``FAIL`` cells of column ``status_col``."""

    header: Sequence[str]
    rows: Sequence[Sequence[str]]
    status_col: int | None = None


def md_cell(text: str) -> str:
    """``text`` fit for a Markdown table cell: ``|`` escaped, line breaks folded into spaces."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def code_html(text: str) -> Markup:
    """``text`` escaped for HTML, with each `backquoted` span set as ``<code>`` (as Markdown shows it)."""
    parts = str(escape(text)).split("`")
    return Markup("".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts)))


# ====================================================================================== templates
_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("training.reports", "templates"),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
_ENV.filters.update(num=num, percent=percent, p_value=p_value, md=md_cell, code=code_html)


def render(template: str, **context: Any) -> str:
    """Render ``templates/<template>`` with ``context``."""
    return _ENV.get_template(template).render(**context)


def write_pages(out_dir: Path, name: str, **context: Any) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` from ``<name>.md.j2`` and ``<name>.html.j2``; return both paths.

    ``out_dir`` is created if missing. ``context`` must hold ``title`` (the page's heading) and
    whatever the report's templates read.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, page = out_dir / MARKDOWN, out_dir / HTML
    page.write_text(render(f"{name}.html.j2", **context), encoding="utf-8")
    md.write_text(render(f"{name}.md.j2", **context), encoding="utf-8")
    return md, page


def pyplot():
    """``matplotlib.pyplot``, on the Agg backend unless pyplot is already imported (an interactive session's
    backend is left alone)."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
