"""Writing a report: one self-contained HTML page, a PNG and an SVG per chart, and a Markdown summary.

``report.html`` inlines the Vega, Vega-Lite and Vega-Embed libraries (the bundle that vl-convert ships,
matching altair's Vega-Lite version) and every chart's data, so it opens offline and references no
network resource.  Each chart is a ``<div class="chart" data-chart="NAME">``; once drawn it gets
``data-rendered="ok"`` (``"error"`` and the message otherwise) and, when every chart has settled,
``<body data-charts="done">``: what the headless-browser test waits for.

Next to it: ``report_files/NAME.png`` and ``NAME.svg`` (rendered by vl-convert, no browser needed) and
``report.md`` with the tables in Markdown and links to the PNGs, for papers and READMEs.  Everything is
built in a temporary folder and moved into place at the end, so an error leaves no partial report.  The
output holds no timestamp: the same inputs give the same files.
"""

from __future__ import annotations

import functools
import hashlib
import html
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from edgeprune.report.build import Report, Section
from edgeprune.report.charts import Chart
from edgeprune.report.tables import format_html, format_markdown
from edgeprune.results import replace_dir

__all__ = ["render_html", "render_markdown", "vega_bundle", "write_report"]

PNG_SCALE = 2.0

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table.results { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
table.results caption { text-align: left; font-weight: bold; padding-bottom: 0.3em; }
table.results th, table.results td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
table.results th:first-child, table.results td:first-child { text-align: left; }
p.note, figcaption { color: #555; font-size: 0.85em; }
figure { margin: 1.5em 0; } .chart { min-height: 50px; }
section.findings { background: #f5f8fc; border-left: 4px solid #0072B2; padding: 0.5em 1em; }
section.findings h2 { margin-top: 0.5em; border: none; } section.findings li { margin: 0.3em 0; }
.side { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
"""

_EMBED_JS = """
(function () {
  var specs = JSON.parse(document.getElementById("edgeprune-specs").textContent);
  var jobs = Object.keys(specs).map(function (name) {
    var el = document.querySelector('[data-chart="' + name + '"]');
    return vegaEmbed(el, specs[name], {renderer: "svg", actions: false})
      .then(function () { el.setAttribute("data-rendered", "ok"); })
      .catch(function (err) { el.setAttribute("data-rendered", "error"); el.textContent = "chart failed: " + err; });
  });
  Promise.all(jobs).then(function () { document.body.setAttribute("data-charts", "done"); });
})();
"""


def _vl_version() -> str | None:
    """The Vega-Lite version altair writes specs for, if vl-convert knows it (else its latest)."""
    import altair as alt
    import vl_convert as vlc

    major_minor = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])
    return major_minor if major_minor in vlc.get_vegalite_versions() else None


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "edgeprune"


@functools.cache
def vega_bundle() -> str:
    """The Vega + Vega-Lite + Vega-Embed JavaScript bundle (built by vl-convert; cached on disk, ~1 MB)."""
    import vl_convert as vlc

    version = _vl_version()
    key = hashlib.sha256(f"{vlc.get_vega_version()}/{version}/{vlc.get_vega_embed_version()}".encode()).hexdigest()
    cached = _cache_dir() / f"vega-bundle-{key[:16]}.js"
    try:
        return cached.read_text(encoding="utf-8")
    except OSError:
        pass
    bundle: str = vlc.javascript_bundle(None, vl_version=version)  # type: ignore[arg-type]  # stub lacks the default
    try:
        from edgeprune.results import atomic_write_text

        atomic_write_text(cached, bundle)
    except OSError:
        pass  # a read-only home only costs the rebuild next time
    return bundle


def _script_safe(js: str) -> str:
    """JavaScript that cannot close the ``<script>`` element it sits in (``<\\/script`` is the same string)."""
    return re.sub(r"(?i)</(script)", r"<\\/\1", js).replace("<!--", "<\\!--")


def _json_safe(doc: object) -> str:
    """JSON for a ``<script type="application/json">`` element: every ``<`` escaped, nothing can close it."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).replace("<", "\\u003c")


def _figure(chart: Chart, files: str) -> str:
    e = html.escape
    caption = f"{e(chart.caption)} · " if chart.caption else ""
    return (
        f'<figure><div class="chart" data-chart="{e(chart.name)}" role="img" aria-label="{e(chart.title)}"></div>'
        f"<figcaption>{caption}"
        f'<a href="{e(files)}/{e(chart.name)}.png">PNG</a> · <a href="{e(files)}/{e(chart.name)}.svg">SVG</a>'
        f"</figcaption></figure>"
    )


def _section_html(sec: Section, files: str) -> str:
    e = html.escape
    parts = [f"<h2>{e(sec.title)}</h2>"]
    if sec.bullets:
        parts.append("<ul>" + "".join(f"<li>{e(b)}</li>" for b in sec.bullets) + "</ul>")
    if sec.text:
        parts.append(f'<p class="note">{e(sec.text)}</p>' if sec.bullets else f"<p>{e(sec.text)}</p>")
    tables = [format_html(t) for t in sec.tables]
    figures = [_figure(c, files) for c in sec.charts]
    if sec.side_by_side and tables and figures:
        parts.append('<div class="side"><div>' + "".join(tables) + "</div>" + figures[0] + "</div>")
        figures = figures[1:]
    else:
        parts += tables
    parts += figures
    cls = ' class="findings" id="findings"' if sec.title == "Findings" else ""
    return f"<section{cls}>" + "\n".join(parts) + "</section>"


def render_html(report: Report, files: str) -> str:
    """The self-contained page (``files``: the folder name the PNG/SVG links point into).

    The findings come first after the title; the inputs are named at the end.
    """
    e = html.escape
    parts = [f"<h1>{e(report.title)}</h1>"]
    parts += [_section_html(sec, files) for sec in report.sections]
    if report.sources:
        parts.append('<p class="note">Inputs: ' + ", ".join(f"<code>{e(s)}</code>" for s in report.sources) + "</p>")
    specs = {c.name: c.spec for sec in report.sections for c in sec.charts}
    specs_json = _json_safe(specs)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(report.title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(parts)
        + f'\n<script type="application/json" id="edgeprune-specs">{specs_json}</script>\n'
        + f"<script>{_script_safe(vega_bundle())}</script>\n<script>{_EMBED_JS}</script>\n</body></html>\n"
    )


def render_markdown(report: Report, files: str) -> str:
    """The Markdown summary: findings first, then tables and links to the PNG (and SVG) of every chart."""
    lines = [f"# {report.title}", ""]
    for sec in report.sections:
        lines += [f"## {sec.title}", ""]
        lines += [f"- {b}" for b in sec.bullets] + ([""] if sec.bullets else [])
        if sec.text:
            lines += [sec.text, ""]
        for t in sec.tables:
            lines += [format_markdown(t)]
        for c in sec.charts:
            lines += [f"![{c.title}]({files}/{c.name}.png)", ""]
            extra = f"{c.caption} · " if c.caption else ""
            lines += [f"*{extra}[SVG]({files}/{c.name}.svg)*", ""]
    if report.sources:
        lines += ["Inputs: " + ", ".join(f"`{s}`" for s in report.sources), ""]
    return "\n".join(lines).rstrip() + "\n"


def _export(chart: Chart, folder: Path) -> None:
    import vl_convert as vlc

    svg: str = vlc.vegalite_to_svg(chart.spec, vl_version=_vl_version())
    (folder / f"{chart.name}.svg").write_text(svg, encoding="utf-8")
    (folder / f"{chart.name}.png").write_bytes(vlc.svg_to_png(svg, scale=PNG_SCALE))  # one layout for both


def write_report(report: Report, out_html: str | Path) -> list[Path]:
    """Write ``out_html``, ``<stem>.md`` and ``<stem>_files/``; return the written paths."""
    out_html = Path(out_html)
    folder = out_html.parent
    files = f"{out_html.stem}_files"
    md_path = folder / f"{out_html.stem}.md"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_html.name}.", suffix=".tmp", dir=folder))
    try:
        (tmp / files).mkdir()
        charts = [c for sec in report.sections for c in sec.charts]
        for c in charts:
            _export(c, tmp / files)
        (tmp / "page.html").write_text(render_html(report, files), encoding="utf-8")
        (tmp / "page.md").write_text(render_markdown(report, files), encoding="utf-8")
        replace_dir(tmp / files, folder / files)
        os.replace(tmp / "page.md", md_path)
        os.replace(tmp / "page.html", out_html)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    written = [out_html, md_path]
    written += [
        folder / files / f"{c.name}.{ext}" for sec in report.sections for c in sec.charts for ext in ("png", "svg")
    ]
    return written
