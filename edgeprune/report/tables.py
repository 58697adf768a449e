"""The report's tables: numbers as polars frames (mean and 95% t-interval across seeds), and their text,
Markdown and HTML renderings.

Every headline figure is shown as ``mean ± half-width`` over the seeds of its group; a group with a single
seed shows the mean alone.  The number of seeds is a column of every table.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from edgeprune.report.stats import LEVEL, mean_ci

__all__ = [
    "HEADLINE",
    "HW_METRICS",
    "DisplayTable",
    "findings_table",
    "format_html",
    "format_markdown",
    "format_text",
    "headline_table",
    "hw_error_frame",
    "hw_error_table",
    "run_table",
    "slo_pivot",
    "sweep_table",
]


@dataclass(frozen=True)
class Metric:
    """A summary field and how to print it."""

    field: str
    label: str
    scale: float = 1.0
    digits: int = 3


#: The headline figures of every comparison table, in column order.
HEADLINE = (
    Metric("slo_attainment", "SLO %", 100.0, 1),
    Metric("p95_latency_s", "p95 s"),
    Metric("p99_latency_s", "p99 s"),
    Metric("throughput_hz", "thr/s", 1.0, 2),
    Metric("goodput_hz", "good/s", 1.0, 2),
    Metric("mean_accuracy", "accuracy"),
)

#: Figures compared between the simulator and hardware.
HW_METRICS = (
    Metric("p50_latency_s", "p50 s"),
    Metric("p95_latency_s", "p95 s"),
    Metric("p99_latency_s", "p99 s"),
    Metric("slo_attainment", "SLO %", 100.0, 1),
    Metric("throughput_hz", "thr/s", 1.0, 2),
)


@dataclass(frozen=True)
class DisplayTable:
    """A table ready to print: a title, column headers and rows of text."""

    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""
    #: Optional per-cell value in [0, 1] (None: plain) that the HTML form turns into a background colour.
    shades: tuple[tuple[float | None, ...], ...] = ()


def _fmt(mean: float | None, lo: float | None, hi: float | None, scale: float, digits: int) -> str:
    if mean is None:
        return "-"
    text = f"{mean * scale:.{digits}f}"
    if lo is not None and hi is not None:
        text += f" ± {(hi - lo) / 2 * scale:.{digits}f}"
    return text


def _fmt_clipped(mean: float | None, lo: float | None, hi: float | None, digits: int) -> str:
    """``mean ± half-width``, or ``mean (lo–hi)`` when the interval was clipped and is no longer symmetric."""
    if mean is None or lo is None or hi is None or abs((hi - mean) - (mean - lo)) <= 1e-9 * max(1.0, abs(mean)):
        return _fmt(mean, lo, hi, 1.0, digits)
    return f"{mean:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})"


def _fmt_value(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


#: Figures added to the comparison tables when the results have them (the device-physics work's energy).
OPTIONAL = (Metric("energy_per_inference_j", "J/inf", 1.0, 3),)


def headline_metrics(columns: Sequence[str]) -> tuple[Metric, ...]:
    """The headline figures, plus the optional ones present in ``columns``."""
    return HEADLINE + tuple(m for m in OPTIONAL if m.field in columns)


def headline_table(results: pl.DataFrame, axis_columns: Sequence[str]) -> pl.DataFrame:
    """Per axis combination and policy: seeds ``n``, mean and interval of every headline figure and rate."""
    metrics = [m.field for m in headline_metrics(results.columns)] + ["offered_rate_hz"]
    ordered = results.sort("cell_index", maintain_order=True) if "cell_index" in results.columns else results
    return mean_ci(ordered, [*axis_columns, "policy"], metrics)


def _display(frame: pl.DataFrame, keys: Sequence[str], metrics: Sequence[Metric], title: str) -> DisplayTable:
    headers = (*keys, "seeds", *(m.label for m in metrics))
    rows = []
    for r in frame.iter_rows(named=True):
        cells = [_fmt_value(r[k]) for k in keys] + [str(r["n"])]
        cells += [_fmt(r[m.field], r[f"{m.field}_lo"], r[f"{m.field}_hi"], m.scale, m.digits) for m in metrics]
        rows.append(tuple(cells))
    note = f"mean ± half-width of the {LEVEL:.0%} t-interval across seeds (none with one seed)"
    return DisplayTable(title, headers, tuple(rows), note)


def sweep_table(results: pl.DataFrame, axis_columns: Sequence[str], title: str = "Policy comparison") -> DisplayTable:
    """The sweep's comparison table (see :func:`headline_table`)."""
    metrics = headline_metrics(results.columns)
    return _display(headline_table(results, axis_columns), [*axis_columns, "policy"], metrics, title)


def slo_pivot(table: pl.DataFrame, axis_columns: Sequence[str], target: float, title: str) -> DisplayTable:
    """SLO attainment, one row per axis setting and one column per policy, cells shaded by value.

    ``table``: :func:`headline_table`.  A cell reads ``mean ± half-width`` (%), with a check mark when the
    mean meets ``target``; its shade is the mean attainment.
    """
    policies = table["policy"].unique(maintain_order=True).to_list()
    keys = list(axis_columns)
    settings = table.select(keys).unique(maintain_order=True) if keys else pl.DataFrame([{}])
    rows, shades = [], []
    for setting in settings.iter_rows(named=True):
        sub = table.filter(*[pl.col(c) == v for c, v in setting.items()]) if keys else table
        by_policy = {r["policy"]: r for r in sub.iter_rows(named=True)}
        cells = [_fmt_value(setting[k]) for k in keys] or ["all"]
        row_shades: list[float | None] = [None] * len(cells)
        for pol in policies:
            r = by_policy.get(pol)
            mean = None if r is None else r["slo_attainment"]
            if mean is None or r is None:
                cells.append("-")
                row_shades.append(None)
                continue
            mark = " ✓" if mean >= target else ""
            cells.append(_fmt(mean, r["slo_attainment_lo"], r["slo_attainment_hi"], 100.0, 1) + mark)
            row_shades.append(float(mean))
        rows.append(tuple(cells))
        shades.append(tuple(row_shades))
    note = f"SLO attainment (%), mean ± {LEVEL:.0%} t-interval across seeds; ✓: mean ≥ {target:.0%} (the target)"
    headers = (*(keys or ["setting"]), *policies)
    return DisplayTable(title, tuple(headers), tuple(rows), note, tuple(shades))


def findings_table(table: pl.DataFrame, regime_columns: Sequence[str], unit: str, baseline: str) -> DisplayTable:
    """The per-policy figures behind the findings (:func:`edgeprune.report.findings.sweep_findings`)."""
    energy = [m for m in OPTIONAL if m.field in table.columns]
    headers = [*regime_columns, "policy", "seeds", f"sustainable load{f' ({unit})' if unit else ''}"]
    headers += [f"× {baseline}", "accuracy", f"Δ accuracy vs {baseline}", *(m.label for m in energy)]
    rows = []
    for r in table.iter_rows(named=True):
        load = _fmt_clipped(r["sustainable_x"], r["sustainable_x_lo"], r["sustainable_x_hi"], 2)
        ratio = r["ratio_to_baseline"]
        cells = [*(_fmt_value(r[c]) for c in regime_columns), r["policy"], str(r["n"])]
        cells += [("≥ " if r["censored"] else "") + load, "-" if ratio is None or ratio != ratio else f"{ratio:.2f}"]
        cells += [_fmt(r["mean_accuracy"], r["mean_accuracy_lo"], r["mean_accuracy_hi"], 1.0, 3)]
        delta = r["accuracy_delta"]
        cells.append("-" if delta is None or delta != delta else f"{delta + 0.0:+.3f}".replace("-0.000", "+0.000"))
        cells += [_fmt(r[m.field], r[f"{m.field}_lo"], r[f"{m.field}_hi"], m.scale, m.digits) for m in energy]
        rows.append(tuple(cells))
    note = (
        "sustainable load: highest tested load before the first one below the SLO target, per seed, then mean ± "
        f"{LEVEL:.0%} t-interval (clipped to the tested range); ≥: met at every tested load; accuracy (and "
        "energy) at that load"
    )
    return DisplayTable("Sustainable load per policy", tuple(headers), tuple(rows), note)


def run_table(runs: pl.DataFrame, title: str = "Runs") -> DisplayTable:
    """Run folders grouped by scenario, backend and policy, with intervals across their seeds.

    ``runs``: one row per run folder × policy with ``scenario``, ``backend``, ``seed``, ``policy`` and the
    summary fields.
    """
    metrics = headline_metrics(runs.columns)
    frame = mean_ci(runs, ["scenario", "backend", "policy"], [m.field for m in metrics])
    return _display(frame, ["scenario", "backend", "policy"], metrics, title)


def _error_expr() -> pl.Expr:
    """The hil convention (``hil.compare``): (hw − sim) / sim in %, SLO attainment hw − sim in points."""
    pct = pl.when(pl.col("sim").abs() > 0).then((pl.col("hw") - pl.col("sim")) / pl.col("sim") * 100.0)
    return pl.when(pl.col("metric") == "slo_attainment").then((pl.col("hw") - pl.col("sim")) * 100.0).otherwise(pct)


_HW_SCHEMA: dict[str, Any] = {
    "scenario": pl.String,
    "seed": pl.Int64,
    "policy": pl.String,
    "metric": pl.String,
    "sim": pl.Float64,
    "hw": pl.Float64,
}


def hw_error_frame(
    runs: pl.DataFrame, predictions: Sequence[tuple[str, int | None, Mapping[str, Any]]] = ()
) -> pl.DataFrame:
    """Simulator vs hardware per (scenario, seed, policy, figure): ``sim``, ``hw``, ``error``.

    Hardware rows of ``runs`` have ``backend == "hil"``; their simulator twin is a run of any other backend
    with the same scenario name and seed.  A hardware run without a twin among the inputs uses its own
    prediction (``sim_vs_hw.json`` written by ``edgeprune-hil``; ``predictions``: scenario, seed, document).
    ``error``: latency and throughput (hw − sim) / sim in %, SLO attainment hw − sim in points (the
    convention of :mod:`hil.compare`).
    """
    keys = ["scenario", "seed", "policy"]
    fields = [m.field for m in HW_METRICS]
    sim = runs.filter(pl.col("backend") != "hil").select([*keys, *fields])
    hw = runs.filter(pl.col("backend") == "hil").select([*keys, *fields])
    pairs = sim.join(hw, on=keys, suffix="_hw", how="inner")
    frames = [
        pairs.select(
            *keys,
            pl.lit(f).alias("metric"),
            pl.col(f).cast(pl.Float64).alias("sim"),
            pl.col(f"{f}_hw").cast(pl.Float64).alias("hw"),
        )
        for f in fields
    ]
    twins = set(pairs.select("scenario", "seed").iter_rows())
    records = [
        {"scenario": scen, "seed": seed, "policy": pol, "metric": f, "sim": rows[f].get("sim"), "hw": rows[f].get("hw")}
        for scen, seed, doc in predictions
        if (scen, seed) not in twins
        for pol, rows in doc.get("policies", {}).items()
        for f in fields
        if isinstance(rows.get(f), Mapping)
    ]
    frames.append(pl.DataFrame(records, schema=_HW_SCHEMA))
    long = pl.concat([f.cast(_HW_SCHEMA) for f in frames], how="vertical")  # type: ignore[arg-type]
    return long.with_columns(_error_expr().alias("error"))


def hw_error_table(errors: pl.DataFrame) -> DisplayTable:
    """Per scenario, policy and figure: simulator and hardware means and the error, ± CI over seeds."""
    frame = mean_ci(errors, ["scenario", "policy", "metric"], ["sim", "hw", "error"])
    by_field = {m.field: m for m in HW_METRICS}
    rows = []
    for r in frame.iter_rows(named=True):
        m = by_field[r["metric"]]
        unit = " pt" if m.field == "slo_attainment" else " %"
        err = _fmt(r["error"], r["error_lo"], r["error_hi"], 1.0, 1)
        rows.append(
            (
                r["scenario"],
                r["policy"],
                m.label,
                str(r["n"]),
                _fmt(r["sim"], r["sim_lo"], r["sim_hi"], m.scale, m.digits),
                _fmt(r["hw"], r["hw_lo"], r["hw_hi"], m.scale, m.digits),
                err if err == "-" else err + unit,
            )
        )
    note = (
        "error: latency and throughput (hardware − sim) / sim in %, SLO attainment hardware − sim in points; "
        f"± {LEVEL:.0%} t-interval across seeds"
    )
    headers = ("scenario", "policy", "figure", "seeds", "simulator", "hardware", "error")
    return DisplayTable("Simulator vs hardware", headers, tuple(rows), note)


def format_text(table: DisplayTable) -> str:
    """Aligned plain text (first column left, the rest right)."""
    rows = [table.headers, *table.rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(table.headers))]

    def line(r: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))

    out = [line(table.headers), "  ".join("-" * w for w in widths), *(line(r) for r in table.rows)]
    return "\n".join(out)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def format_markdown(table: DisplayTable) -> str:
    """A GitHub-flavoured Markdown table with its title and note."""
    lines = [f"### {table.title}", ""]
    lines.append("| " + " | ".join(_md_cell(h) for h in table.headers) + " |")
    lines.append("|" + "|".join(":--" if i == 0 else "--:" for i in range(len(table.headers))) + "|")
    lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in table.rows]
    if table.note:
        lines += ["", f"*{table.note}*"]
    return "\n".join(lines) + "\n"


def shade_colour(value: float) -> str:
    """Background for a value in [0, 1]: light orange (0) to white (0.5) to light blue (1), colour-blind safe.

    The two ends are lightened Okabe–Ito orange (#E69F00) and blue (#0072B2), so black text stays readable.
    """
    v = min(1.0, max(0.0, value))
    lo, mid, hi = (250, 214, 140), (255, 255, 255), (160, 200, 235)
    a, b, t = (lo, mid, v * 2) if v < 0.5 else (mid, hi, (v - 0.5) * 2)
    r, g, bl = (round(x + (y - x) * t) for x, y in zip(a, b, strict=True))
    return f"#{r:02x}{g:02x}{bl:02x}"


def _td(text: str, shade: float | None) -> str:
    style = f' style="background:{shade_colour(shade)}"' if shade is not None else ""
    return f"<td{style}>{html.escape(text)}</td>"


def format_html(table: DisplayTable) -> str:
    """An HTML ``<table>`` (escaped) with its caption and note; shaded cells get a background colour."""
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in table.headers)
    shades = table.shades or tuple((None,) * len(r) for r in table.rows)
    body = "".join(
        "<tr>" + "".join(_td(c, s) for c, s in zip(r, sh, strict=True)) + "</tr>"
        for r, sh in zip(table.rows, shades, strict=True)
    )
    note = f'<p class="note">{e(table.note)}</p>' if table.note else ""
    return (
        f'<table class="results"><caption>{e(table.title)}</caption><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>{note}"
    )
