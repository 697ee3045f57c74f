"""What the reports share: one renderer (:mod:`training.reports.render`), its templates and CSS.

Each report keeps its own module — :mod:`training.calibration_report`, :mod:`training.ab_report`,
:mod:`training.promotion_report` — with its figures, plots and the content of its tables; the page
(``report.html``, self-contained) and the summary (``report.md``) are written from the templates
in ``templates/`` (``<report>.html.j2`` and ``<report>.md.j2``, on ``page.html.j2`` /
``page.md.j2`` with the shared tables of ``macros.*.j2`` and the one ``report.css``).
"""
