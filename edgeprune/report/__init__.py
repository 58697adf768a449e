"""Policy-comparison reports: polars tables with confidence intervals and altair charts, in one offline page.

:func:`build_report` reads sweep folders, run folders (simulator or hardware) and profiles into
:class:`Report` sections (see :mod:`edgeprune.report.build`); :func:`write_report` writes the
self-contained HTML, a PNG and SVG per chart and a Markdown summary (see :mod:`edgeprune.report.html`).

Modules: ``sources`` (recognising and reading inputs), ``stats`` (t-intervals across seeds), ``findings``
(the generated sentences that open the report), ``tables`` (numbers and their text/Markdown/HTML forms),
``charts`` (Vega-Lite specs), ``build`` (sections), ``html`` (files).  Only ``charts`` and ``html`` need
altair and vl-convert (the ``report`` extra).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Report", "Section", "build_report", "write_report"]

_LAZY = {"Report": "build", "Section": "build", "build_report": "build", "write_report": "html"}


def __getattr__(name: str) -> Any:
    """Import altair-dependent parts on first use, so ``edgeprune.report.tables`` stays light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"edgeprune.report.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'edgeprune.report' has no attribute {name!r}")
