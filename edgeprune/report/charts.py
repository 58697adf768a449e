"""The report's charts as Vega-Lite specs built with altair, each with its data inlined.

Charts (the figure numbers are the paper's):

* Fig. 5: SLO attainment and p95 latency versus arrival rate, one line per policy, a band for the 95%
  t-interval across seeds, one panel per setting of the other axes;
* latency CDFs of finished requests (requests that were dropped or never finished keep the curve below 1,
  so its height at the SLO line is the SLO attainment);
* per-stage pruning level and queue length over time, one panel per policy;
* Figs. 3–4: speedup per device (latency at level 0 / latency at the level) and estimated accuracy per
  strategy (the uniform ladder and any measured per-stage vectors) versus the pruning ratio;
* the simulator's relative error against hardware runs, per figure and policy.

Data is passed as inline ``values`` (no altair data transformers, no row limit), thinned where it would
make the page heavy: CDFs to at most ``CDF_POINTS`` points per curve, timelines to at most
``TIMELINE_POINTS`` time bins (maximum level and queue length per bin, so short spikes stay visible).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import altair as alt
import numpy as np
import polars as pl

from edgeprune.profile import Profile
from edgeprune.results import RunResult

__all__ = [
    "CDF_POINTS",
    "TIMELINE_POINTS",
    "Chart",
    "accuracy_chart",
    "cdf_chart",
    "fig5_charts",
    "hw_error_chart",
    "replay_chart",
    "slug",
    "speedup_chart",
    "timeline_charts",
]

CDF_POINTS = 200
TIMELINE_POINTS = 600
WIDTH = 360
HEIGHT = 220


@dataclass(frozen=True)
class Chart:
    """One chart of the report: a file-safe unique ``name``, a title and the Vega-Lite spec."""

    name: str
    title: str
    spec: dict[str, Any]
    caption: str = ""


def slug(text: str) -> str:
    """A file-name-safe lower-case form of ``text``."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s or "x"


def _records(df: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts (NaN and infinities as null)."""
    rows = df.to_dicts()
    for r in rows:
        for k, v in r.items():
            if isinstance(v, float) and not math.isfinite(v):
                r[k] = None
    return rows


#: Every chart reads the named dataset ``table``; its rows go into the spec's top-level ``datasets``.
TABLE = alt.Data(name="table")


def _spec(chart: Any, data: pl.DataFrame) -> dict[str, Any]:
    """The validated Vega-Lite spec with ``data`` inlined (added after validation: rows need none)."""
    spec: dict[str, Any] = chart.to_dict()
    spec.setdefault("config", {})["font"] = "sans-serif"
    spec["datasets"] = {"table": _records(data)}
    return spec


# --- policy styling ---------------------------------------------------------------------------------------

#: Okabe–Ito colours (colour-blind safe), most distinct first; yellow last (weak on white).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
SHAPES = ("circle", "square", "triangle-up", "diamond", "cross", "triangle-down", "triangle-right", "wedge")
DASHES = ((1, 0), (6, 3), (2, 2), (8, 3, 2, 3), (4, 4), (1, 3), (10, 2), (3, 1, 1, 1))


def policy_style(policies: Sequence[str], field: str = "policy") -> dict[str, Any]:
    """Colour, marker shape and dash per policy, fixed by the policy's position in ``policies``.

    Policies that sit on top of each other stay distinguishable by marker and dash; the same policy has the
    same style in every chart of a report (the report passes the same ``policies`` everywhere).
    """
    names = list(dict.fromkeys(policies))
    k = len(names)
    colours = [PALETTE[i % len(PALETTE)] for i in range(k)]
    shapes = [SHAPES[i % len(SHAPES)] for i in range(k)]
    dashes = [list(DASHES[i % len(DASHES)]) for i in range(k)]
    return {
        "color": alt.Color(f"{field}:N", title=field, scale=alt.Scale(domain=names, range=colours)),
        "shape": alt.Shape(f"{field}:N", title=field, scale=alt.Scale(domain=names, range=shapes)),
        "strokeDash": alt.StrokeDash(f"{field}:N", title=field, scale=alt.Scale(domain=names, range=dashes)),
    }


def _has(df: pl.DataFrame, column: str) -> bool:
    """Whether ``column`` has any value (a layer without data makes Vega warn of an infinite extent)."""
    return column in df.columns and df[column].null_count() < df.height


def _setting_expr(group_columns: Sequence[str]) -> pl.Expr:
    if not group_columns:
        return pl.lit("all")
    return pl.concat_str([pl.format(f"{c}={{}}", pl.col(c).cast(pl.String)) for c in group_columns], separator=", ")


def _facet(layered: Any, multi: bool, field: str = "setting", independent_y: bool = False) -> Any:
    """One panel, or one per ``field`` value (three per row); optionally each panel with its own y scale."""
    if not multi:
        return layered.properties(width=WIDTH, height=HEIGHT)
    chart = layered.properties(width=WIDTH * 0.75, height=HEIGHT).facet(
        facet=alt.Facet(f"{field}:N", title=None), columns=3
    )
    return chart.resolve_scale(y="independent") if independent_y else chart


# --- Fig. 5 -------------------------------------------------------------------------------------------


def _dodge(df: pl.DataFrame, policies: Sequence[str]) -> pl.Expr:
    """A small horizontal offset per policy (0.6% of the x span each), so overlapping lines stay visible."""
    span = (float(df["x"].max()) - float(df["x"].min())) if df.height else 0.0  # type: ignore[arg-type]
    step = 0.006 * span if span > 0 else 0.0
    mid = (len(policies) - 1) / 2
    offsets = {p: (i - mid) * step for i, p in enumerate(policies)}
    return pl.col("x") + pl.col("policy").replace_strict(offsets, default=0.0, return_dtype=pl.Float64)


def _fig5_data(df: pl.DataFrame, field: str, scale: float, log: bool) -> pl.DataFrame:
    """Mean and interval scaled; the interval clipped to the metric's range ([0, 100] %, or > 0 on a log axis)."""
    out = df.select(
        "x",
        "x_plot",
        "policy",
        "setting",
        "n",
        (pl.col(field) * scale).alias("mean"),
        (pl.col(f"{field}_lo") * scale).alias("lo"),
        (pl.col(f"{field}_hi") * scale).alias("hi"),
    )
    if not log:
        return out.with_columns(pl.col("lo").clip(0.0, scale), pl.col("hi").clip(0.0, scale))
    positive = out.filter(pl.col("mean") > 0)["mean"]
    floor = float(positive.min()) / 2 if positive.len() else 1e-3  # type: ignore[arg-type]
    return out.with_columns(pl.col("lo").clip(lower_bound=floor), pl.col("mean").clip(lower_bound=floor))


def fig5_charts(
    table: pl.DataFrame,
    x: str,
    x_title: str,
    group_columns: Sequence[str],
    name: str,
    *,
    policies: Sequence[str] = (),
    target: float | None = None,
    slo_s: float | None = None,
) -> list[Chart]:
    """SLO attainment (linear, 0–100%) and p95 latency (log) versus ``x`` per policy (:func:`tables.headline_table`).

    Each policy has its own colour, marker and dash and is nudged sideways by 0.6% of the x span, so policies
    at the same value (e.g. all at 100%) do not hide one another; intervals are clipped to the metric's range.
    """
    df = table.with_columns(_setting_expr(group_columns).alias("setting"), pl.col(x).cast(pl.Float64).alias("x"))
    pols = list(policies) or df["policy"].unique(maintain_order=True).to_list()
    df = df.with_columns(_dodge(df, pols).alias("x_plot"))
    multi = df["setting"].n_unique() > 1
    style = policy_style(pols)
    versus = "arrival rate" if "rate" in x else x
    charts = []
    for field, title, scale, y_title, log, ref in (
        ("slo_attainment", f"SLO attainment vs {versus}", 100.0, "SLO attainment (%)", False, target),
        ("p95_latency_s", f"p95 latency vs {versus}", 1.0, "p95 latency (s, log scale)", True, slo_s),
    ):
        data = _fig5_data(df, field, scale, log)
        y_scale = alt.Scale(type="log") if log else alt.Scale(domain=[0, 100])
        x_enc = alt.X("x_plot:Q", title=x_title, scale=alt.Scale(zero=False))
        bars = (
            alt.Chart()
            .mark_rule(opacity=0.6)
            .encode(x=x_enc, y=alt.Y("lo:Q", scale=y_scale), y2="hi:Q", color=style["color"])
        )
        line = (
            alt.Chart()
            .mark_line(point=alt.OverlayMarkDef(filled=False, size=50), opacity=0.85)
            .encode(
                x=x_enc,
                y=alt.Y("mean:Q", title=y_title, scale=y_scale),
                tooltip=["policy:N", "setting:N", "x:Q", "mean:Q", "lo:Q", "hi:Q", "n:Q"],
                **style,
            )
        )
        layers: list[Any] = [bars, line] if _has(data, "lo") else [line]
        if ref is not None:
            value = ref * scale if field == "slo_attainment" else ref
            layers.append(alt.Chart().mark_rule(color="gray", strokeDash=[4, 4]).encode(y=alt.datum(value)))
        chart = _facet(alt.layer(*layers, data=TABLE), multi, independent_y=log).properties(title=f"{title} ({name})")
        what = "dashed: the SLO target" if field == "slo_attainment" else "dashed: the SLO"
        charts.append(
            Chart(
                f"{slug(name)}-{slug(field)}-vs-rate",
                f"{title} ({name})",
                _spec(chart, data),
                f"line: mean across seeds; whiskers: 95% t-interval, clipped to the metric's range; {what}; "
                "policies nudged sideways by 0.6% of the axis per policy so overlapping ones stay visible",
            )
        )
    return charts


def sustainable_chart(
    table: pl.DataFrame, regime_columns: Sequence[str], x_title: str, name: str, policies: Sequence[str]
) -> Chart:
    """Sustainable load per policy with its interval across seeds (:func:`findings.sustainable_frame` rows)."""
    data = table.with_columns(_setting_expr(regime_columns).alias("setting")).select(
        "policy",
        "setting",
        "n",
        pl.col("sustainable_x").alias("load"),
        pl.col("sustainable_x_lo").alias("lo"),
        pl.col("sustainable_x_hi").alias("hi"),
        pl.when(pl.col("censored"))
        .then(pl.lit("at least (every tested load)"))
        .otherwise(pl.lit("measured"))
        .alias("bound"),
    )
    style = policy_style(policies)
    y = alt.Y("policy:N", title=None, sort=list(policies))
    base = alt.Chart().encode(y=y, color=style["color"])
    whiskers = base.mark_rule(strokeWidth=2).encode(x=alt.X("lo:Q", title=x_title), x2="hi:Q")
    points = base.mark_point(size=90, filled=True).encode(
        x="load:Q", shape=style["shape"], tooltip=["policy:N", "setting:N", "load:Q", "lo:Q", "hi:Q", "n:Q", "bound:N"]
    )
    multi = data["setting"].n_unique() > 1
    layers = [whiskers, points] if _has(data, "lo") else [points]
    chart = _facet(alt.layer(*layers, data=TABLE), multi).properties(title=f"Sustainable load ({name})")
    return Chart(
        f"{slug(name)}-sustainable-load",
        f"Sustainable load ({name})",
        _spec(chart, data),
        "highest load before the first one below the SLO target; point: mean across seeds, whiskers: 95% t-interval "
        "(clipped to the tested range)",
    )


def pareto_chart(
    table: pl.DataFrame, x: str, group_columns: Sequence[str], name: str, policies: Sequence[str]
) -> Chart:
    """Mean accuracy vs SLO attainment, one point per policy per setting, whiskers both ways (95% t-interval)."""
    data = table.with_columns(_setting_expr([*group_columns, x]).alias("setting")).select(
        "policy",
        "setting",
        "n",
        (pl.col("slo_attainment") * 100).alias("slo"),
        (pl.col("slo_attainment_lo") * 100).clip(0.0, 100.0).alias("slo_lo"),
        (pl.col("slo_attainment_hi") * 100).clip(0.0, 100.0).alias("slo_hi"),
        pl.col("mean_accuracy").alias("accuracy"),
        pl.col("mean_accuracy_lo").clip(0.0, 1.0).alias("acc_lo"),
        pl.col("mean_accuracy_hi").clip(0.0, 1.0).alias("acc_hi"),
    )
    style = policy_style(policies)
    base = alt.Chart().encode(color=style["color"])
    xs = alt.X("slo:Q", title="SLO attainment (%)", scale=alt.Scale(domain=[0, 100]))
    ys = alt.Y("accuracy:Q", title="mean accuracy", scale=alt.Scale(zero=False))
    h = base.mark_rule(opacity=0.5).encode(
        x=alt.X("slo_lo:Q", scale=alt.Scale(domain=[0, 100])), x2="slo_hi:Q", y="accuracy:Q"
    )
    v = base.mark_rule(opacity=0.5).encode(x="slo:Q", y=alt.Y("acc_lo:Q", scale=alt.Scale(zero=False)), y2="acc_hi:Q")
    pts = base.mark_point(size=60, filled=False, strokeWidth=1.5).encode(
        x=xs, y=ys, shape=style["shape"], tooltip=["policy:N", "setting:N", "slo:Q", "accuracy:Q", "n:Q"]
    )
    layers = ([h] if _has(data, "slo_lo") else []) + ([v] if _has(data, "acc_lo") else []) + [pts]
    chart = alt.layer(*layers, data=TABLE).properties(
        width=WIDTH, height=HEIGHT, title=f"Accuracy vs SLO attainment ({name})"
    )
    return Chart(
        f"{slug(name)}-pareto",
        f"Accuracy vs SLO attainment ({name})",
        _spec(chart, data),
        "one point per policy per setting (mean across seeds); whiskers: 95% t-intervals; up and right is better",
    )


# --- latency CDFs ---------------------------------------------------------------------------------------


def cdf_frame(requests: pl.DataFrame, max_points: int = CDF_POINTS) -> pl.DataFrame:
    """Points ``(latency_s, fraction)`` of the empirical CDF over the summary window's requests."""
    req = requests.filter(~pl.col("in_warmup")) if "in_warmup" in requests.columns else requests
    n = req.height
    lat = np.sort(req.filter(pl.col("status") == "done")["latency_s"].drop_nulls().to_numpy())
    if n == 0 or lat.size == 0:
        return pl.DataFrame(schema={"latency_s": pl.Float64, "fraction": pl.Float64})
    idx = np.unique(np.linspace(0, lat.size - 1, min(lat.size, max_points)).round().astype(int))
    return pl.DataFrame({"latency_s": lat[idx], "fraction": (idx + 1) / n})


def _cdf_data(runs: Sequence[tuple[str, Mapping[str, RunResult]]], variants: Sequence[str] | None) -> pl.DataFrame:
    frames = []
    for i, (label, by_policy) in enumerate(runs):
        for policy, r in by_policy.items():
            f = cdf_frame(r.requests)
            extra = {"run": label, "policy": policy, "variant": variants[i] if variants else label}
            frames.append(f.with_columns(*(pl.lit(v).alias(k) for k, v in extra.items())))
    schema = {
        "latency_s": pl.Float64,
        "fraction": pl.Float64,
        "run": pl.String,
        "policy": pl.String,
        "variant": pl.String,
    }
    return pl.concat(frames) if frames else pl.DataFrame(schema=schema)


def cdf_chart(
    runs: Sequence[tuple[str, Mapping[str, RunResult]]],
    slo_s: float | None,
    name: str,
    title: str,
    *,
    policies: Sequence[str] = (),
) -> Chart:
    """Latency CDFs per policy (log latency axis), one panel per labelled run."""
    data = _cdf_data(runs, None)
    style = policy_style(list(policies) or data["policy"].unique(maintain_order=True).to_list())
    lines = (
        alt.Chart()
        .mark_line(interpolate="step-after")
        .encode(
            x=alt.X("latency_s:Q", title="latency (s, log scale)", scale=alt.Scale(type="log")),
            y=alt.Y("fraction:Q", title="fraction of requests", scale=alt.Scale(domain=[0, 1])),
            color=style["color"],
            strokeDash=style["strokeDash"],
            tooltip=["run:N", "policy:N", "latency_s:Q", "fraction:Q"],
        )
    )
    layers: list[Any] = [lines]
    if slo_s is not None:
        layers.append(alt.Chart().mark_rule(color="gray", strokeDash=[4, 4]).encode(x=alt.datum(slo_s)))
    chart = _facet(alt.layer(*layers, data=TABLE), len(runs) > 1, field="run")
    caption = "dashed rule: the SLO; a curve's height there is the SLO attainment"
    return Chart(name, title, _spec(chart.properties(title=title), data), caption)


def sim_hw_cdf_chart(
    pairs: Sequence[tuple[str, Mapping[str, RunResult]]], slo_s: float | None, name: str, title: str
) -> Chart:
    """Simulator and hardware latency CDFs overlaid, one panel per policy (``pairs``: simulator, then hardware)."""
    data = _cdf_data(pairs, ["simulator", "hardware"])
    variant = alt.Scale(domain=["simulator", "hardware"], range=[PALETTE[0], PALETTE[3]])
    lines = (
        alt.Chart()
        .mark_line(interpolate="step-after")
        .encode(
            x=alt.X("latency_s:Q", title="latency (s, log scale)", scale=alt.Scale(type="log")),
            y=alt.Y("fraction:Q", title="fraction of requests", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("variant:N", title=None, scale=variant),
            strokeDash=alt.StrokeDash(
                "variant:N", title=None, scale=alt.Scale(domain=["simulator", "hardware"], range=[[6, 3], [1, 0]])
            ),
            tooltip=["run:N", "policy:N", "latency_s:Q", "fraction:Q"],
        )
    )
    layers: list[Any] = [lines]
    if slo_s is not None:
        layers.append(alt.Chart().mark_rule(color="gray", strokeDash=[2, 2]).encode(x=alt.datum(slo_s)))
    chart = (
        alt.layer(*layers, data=TABLE)
        .properties(width=WIDTH * 0.6, height=HEIGHT * 0.7)
        .facet(facet=alt.Facet("policy:N", title=None), columns=3)
        .properties(title=title)
    )
    return Chart(name, title, _spec(chart, data), "dashed: simulator, solid: hardware; dotted rule: the SLO")


# --- timelines -----------------------------------------------------------------------------------------


def timeline_frame(runs: Mapping[str, RunResult], max_points: int = TIMELINE_POINTS) -> pl.DataFrame:
    """``time_s``, ``stage``, ``policy``, ``level``, ``queue_len``; binned to at most ``max_points`` times."""
    frames = []
    for policy, r in runs.items():
        tl = r.timeline.select("time_s", "stage", "level", "queue_len")
        times = tl["time_s"].unique()
        if times.len() > max_points:
            span = float(times.max()) - float(times.min())  # type: ignore[arg-type]
            bin_s = span / max_points
            tl = (
                tl.with_columns((pl.col("time_s") / bin_s).floor().mul(bin_s).alias("time_s"))
                .group_by("time_s", "stage", maintain_order=True)
                .agg(pl.col("level").max(), pl.col("queue_len").max())
            )
        frames.append(tl.with_columns(pl.lit(policy).alias("policy")))
    return pl.concat(frames).with_columns(pl.col("level").cast(pl.Int64), pl.col("queue_len").cast(pl.Int64))


def timeline_charts(
    label: str, runs: Mapping[str, RunResult], name: str, events: Sequence[tuple[float, float, str]] = ()
) -> list[Chart]:
    """Per-stage pruning level and queue length over time, one row of panels per policy.

    ``events``: environment windows ``(start_s, end_s, label)`` (e.g. a slowed node), shaded in every panel.
    Queue panels each get their own y scale, so a short queue is not flattened by another policy's long one.
    """
    data = timeline_frame(runs).with_columns(pl.lit("line").alias("layer"))
    if events:
        shaded = pl.DataFrame(
            [{"policy": p, "start_s": a, "end_s": b, "event": e} for p in runs for a, b, e in events],
            schema={"policy": pl.String, "start_s": pl.Float64, "end_s": pl.Float64, "event": pl.String},
        ).with_columns(pl.lit("event").alias("layer"))
        data = pl.concat([data, shaded], how="diagonal")
    out = []
    for field, what, y_title in (("level", "pruning level", "level"), ("queue_len", "queue length", "queue")):
        line = (
            alt.Chart()
            .transform_filter(alt.datum.layer == "line")
            .mark_line(interpolate="step-after")
            .encode(
                x=alt.X("time_s:Q", title="time (s)"),
                y=alt.Y(f"{field}:Q", title=y_title),
                color=alt.Color("stage:N", scale=alt.Scale(range=list(PALETTE))),
                tooltip=["policy:N", "stage:N", "time_s:Q", f"{field}:Q"],
            )
        )
        layers: list[Any] = [line]
        if events:
            band = (
                alt.Chart()
                .transform_filter(alt.datum.layer == "event")
                .mark_rect(opacity=0.15, color="#D55E00")
                .encode(x="start_s:Q", x2="end_s:Q", tooltip=["event:N", "start_s:Q", "end_s:Q"])
            )
            layers.insert(0, band)
        chart = (
            alt.layer(*layers, data=TABLE)
            .properties(width=WIDTH * 1.6, height=HEIGHT * 0.5)
            .facet(row=alt.Row("policy:N", title=None))
            .properties(title=f"Per-stage {what} over time ({label})")
        )
        if field == "queue_len":
            chart = chart.resolve_scale(y="independent")
        caption = "shaded: environment events (" + "; ".join(sorted({e for _, _, e in events})) + ")" if events else ""
        if field == "queue_len":
            caption = "; ".join(c for c in (caption, "each panel has its own y scale") if c)
        out.append(Chart(f"{name}-{slug(field)}", f"Per-stage {what} over time ({label})", _spec(chart, data), caption))
    return out


def replay_chart(label: str, runs: Mapping[str, RunResult], replay: Mapping[str, Any], name: str) -> Chart:
    """A replayed trace as the run saw it: arrivals per bin over time beside the log inter-arrival histogram."""
    first = next(iter(runs.values()))
    t = np.sort(first.requests["arrival_s"].to_numpy())
    span = float(t[-1] - t[0]) if t.size > 1 else 0.0
    bin_s = max(1.0, span / 300.0)
    counts = np.bincount(np.floor((t - t[0]) / bin_s).astype(np.int64)) if t.size else np.zeros(0, dtype=np.int64)
    gaps = np.diff(t)
    positive = gaps[gaps > 0]
    edges = _log_edges(positive)
    hist = np.histogram(positive, bins=edges)[0]
    data = pl.concat(
        [
            pl.DataFrame({"panel": "time", "x": np.arange(counts.size) * bin_s, "x2": None, "count": counts}),
            pl.DataFrame({"panel": "gap", "x": edges[:-1], "x2": edges[1:], "count": hist}),
        ],
        how="vertical_relaxed",
    )
    over_time = (
        alt.Chart(TABLE)
        .transform_filter(alt.datum.panel == "time")
        .mark_bar()
        .encode(x=alt.X("x:Q", title="time (s)"), y=alt.Y("count:Q", title=f"arrivals per {bin_s:.3g} s"))
        .properties(width=WIDTH, height=HEIGHT, title="arrivals over time")
    )
    gap_hist = (
        alt.Chart(TABLE)
        .transform_filter(alt.datum.panel == "gap")
        .mark_rect()
        .encode(x=alt.X("x:Q", scale=alt.Scale(type="log"), title="inter-arrival gap (s, log)"), x2="x2:Q", y="count:Q")
        .properties(width=WIDTH, height=HEIGHT, title="inter-arrival gaps")
    )
    title = f"Replayed trace ({label})"
    caption = (
        f"{replay.get('source', '')}: read {replay.get('rows_read')} rows, kept {replay.get('kept')}, "
        f"dropped {dict(replay.get('dropped', {}))}"
    )
    return Chart(name, title, _spec(alt.hconcat(over_time, gap_hist).properties(title=title), data), caption)


# --- profile curves (Figs. 3–4) ------------------------------------------------------------------------


def speedup_frame(profiles: Sequence[tuple[str, Profile]]) -> pl.DataFrame:
    """Per profile, device, stage (and ``pipeline``: every stage summed) and level: speedup vs level 0."""
    rows = []
    for label, prof in profiles:
        for dev_name, dev in prof.devices.items():
            means = [[dev.mean_s(k, lv) for lv in range(prof.n_levels)] for k in range(prof.n_stages)]
            total = [math.fsum(means[k][lv] for k in range(prof.n_stages)) for lv in range(prof.n_levels)]
            series = [("pipeline", total)] + [(f"stage {k}", means[k]) for k in range(prof.n_stages)]
            for stage, lat in series:
                for lv, ratio in enumerate(prof.ratios):
                    rows.append(
                        {
                            "profile": label,
                            "device": dev_name,
                            "stage": stage,
                            "ratio": ratio,
                            "level": lv,
                            "speedup": lat[0] / lat[lv],
                        }
                    )
    return pl.DataFrame(rows)


def speedup_chart(profiles: Sequence[tuple[str, Profile]]) -> Chart:
    """Fig. 3: measured speedup versus pruning ratio, per device, for the pipeline and each stage."""
    df = speedup_frame(profiles)
    enc: dict[str, Any] = {
        "x": alt.X("ratio:Q", title="pruning ratio"),
        "y": alt.Y("speedup:Q", title="speedup vs unpruned (×)"),
        "color": alt.Color("device:N"),
        "tooltip": ["profile:N", "device:N", "stage:N", "ratio:Q", "speedup:Q"],
    }
    if len(profiles) > 1:
        enc["strokeDash"] = alt.StrokeDash("profile:N")
    n_panels = df["stage"].n_unique()
    chart = (
        alt.Chart(TABLE)
        .mark_line(point=True)
        .encode(**enc)
        .properties(width=WIDTH * 0.6, height=HEIGHT * 0.8)
        .facet(facet=alt.Facet("stage:N", title=None, sort=None), columns=min(n_panels, 5))
        .properties(title="Speedup per device (from the profile)")
    )
    return Chart(
        "profile-speedup",
        "Speedup per device (from the profile)",
        _spec(chart, df),
        "mean measured latency at level 0 divided by the mean at each level",
    )


def _strategy(name: str, proxy: bool) -> str:
    return f"{name} (proxy)" if proxy else name


def accuracy_frame(profiles: Sequence[tuple[str, Profile]]) -> pl.DataFrame:
    """Per profile: the uniform ladder and the measured per-stage vectors (at their mean ratio), with the
    profile's interval (``lo``/``hi``, null when the profile has none); proxy strategies say so in their name."""
    rows = []
    for label, prof in profiles:
        acc = prof.accuracy
        if acc is None:
            continue
        bounds = acc.uniform_interval or ((None, None),) * len(acc.uniform)
        for ratio, value, (lo, hi) in zip(prof.ratios, acc.uniform, bounds, strict=True):
            rows.append(
                {
                    "profile": label,
                    "strategy": _strategy("uniform", acc.proxy),
                    "ratio": ratio,
                    "accuracy": value,
                    "lo": lo,
                    "hi": hi,
                    "levels": "",
                }
            )
        for levels, value in acc.per_stage.items():
            lo, hi = acc.per_stage_interval.get(levels, (None, None))
            rows.append(
                {
                    "profile": label,
                    "strategy": _strategy("per-stage (measured)", acc.proxy),
                    "ratio": math.fsum(prof.ratios[v] for v in levels) / len(levels),
                    "accuracy": value,
                    "lo": lo,
                    "hi": hi,
                    "levels": str(list(levels)),
                }
            )
    schema = {k: pl.Float64 for k in ("ratio", "accuracy", "lo", "hi")}
    return pl.DataFrame(rows, schema={"profile": pl.String, "strategy": pl.String, **schema, "levels": pl.String})


def _accuracy_caption(profiles: Sequence[tuple[str, Profile]]) -> str:
    parts = []
    for label, p in profiles:
        a = p.accuracy
        if a is None:
            continue
        what = "PROXY, not the target task's accuracy (see the profile's note)" if a.proxy else "measured"
        if a.uniform_interval is not None:
            n = f" on {a.n_evaluated} images" if a.n_evaluated is not None else ""
            what += f"; whiskers: {a.interval or 'interval'}{n}"
        else:
            what += "; no interval in the profile"
        parts.append(f"{label}: {what}")
    return " · ".join(parts)


def accuracy_chart(profiles: Sequence[tuple[str, Profile]]) -> Chart | None:
    """Fig. 4: accuracy versus pruning ratio per strategy, with the profile's interval; proxies are labelled."""
    df = accuracy_frame(profiles)
    if df.height == 0:
        return None
    proxy = any(p.accuracy is not None and p.accuracy.proxy for _, p in profiles)
    metric = next((p.accuracy.metric for _, p in profiles if p.accuracy is not None), "accuracy")
    title = f"{'Proxy accuracy' if proxy else 'Accuracy'} ({metric}) vs pruning ratio"
    strategies = df["strategy"].unique(maintain_order=True).to_list()
    enc: dict[str, Any] = {
        "x": alt.X("ratio:Q", title="mean pruning ratio", axis=alt.Axis(tickCount=6)),
        "color": alt.Color("strategy:N", scale=alt.Scale(domain=strategies, range=list(PALETTE[: len(strategies)]))),
    }
    if len(profiles) > 1:
        enc["strokeDash"] = alt.StrokeDash("profile:N")
    y_title = f"{metric}{' (PROXY)' if proxy else ''}"
    y = alt.Y("accuracy:Q", title=y_title, scale=alt.Scale(zero=False))
    tooltip = ["profile:N", "strategy:N", "levels:N", "ratio:Q", "accuracy:Q", "lo:Q", "hi:Q"]
    base = alt.Chart().encode(**enc)
    is_uniform = alt.expr.indexof(alt.datum.strategy, "uniform") == 0
    layers: list[Any] = [base.transform_filter(is_uniform).mark_line(point=True).encode(y=y, tooltip=tooltip)]
    if df["levels"].str.len_chars().max():  # measured per-stage vectors (an empty layer makes Vega warn)
        measured = base.transform_filter(~is_uniform).mark_point(filled=True, size=40, opacity=0.7)
        layers.append(measured.encode(y=y, tooltip=tooltip))
    if df["lo"].null_count() < df.height:  # the profile's intervals, where it has them
        whiskers = base.transform_filter("isValid(datum.lo)").mark_rule(opacity=0.5)
        layers.insert(0, whiskers.encode(y=alt.Y("lo:Q", scale=alt.Scale(zero=False)), y2="hi:Q"))
    chart = alt.layer(*layers, data=TABLE).properties(width=WIDTH, height=HEIGHT, title=title)
    return Chart("profile-accuracy", title, _spec(chart, df), _accuracy_caption(profiles))


# --- simulator vs hardware ------------------------------------------------------------------------------


def hw_error_chart(summary: pl.DataFrame, labels: Mapping[str, str]) -> Chart:
    """The simulator's error against hardware per figure and policy (``summary``: mean_ci over ``error``).

    ``labels`` maps summary field names to the axis labels shown.
    """
    df = summary.select(
        "scenario",
        "policy",
        pl.col("metric").replace_strict(dict(labels), default=pl.col("metric")).alias("metric"),
        "n",
        pl.col("error"),
        pl.col("error_lo").alias("lo"),
        pl.col("error_hi").alias("hi"),
    )
    base = alt.Chart().encode(
        x=alt.X("metric:N", title=None, sort=None),
        xOffset=alt.XOffset("policy:N"),
        color=alt.Color("policy:N"),
    )
    bars = base.mark_bar().encode(
        y=alt.Y("error:Q", title="hardware vs simulator (% or points)"),
        tooltip=["scenario:N", "policy:N", "metric:N", "error:Q", "lo:Q", "hi:Q", "n:Q"],
    )
    rules = base.mark_rule(color="black").encode(y="lo:Q", y2="hi:Q")
    layered = alt.layer(*([bars, rules] if _has(df, "lo") else [bars]), data=TABLE)
    if df["scenario"].n_unique() > 1:
        chart = layered.properties(width=WIDTH * 0.75, height=HEIGHT).facet(column=alt.Column("scenario:N"))
    else:
        chart = layered.properties(width=WIDTH, height=HEIGHT)
    title = "Simulator vs hardware: error"
    return Chart(
        "sim-vs-hw-error",
        title,
        _spec(chart.properties(title=title), df),
        "latency, throughput: (hw − sim) / sim in %; SLO: hw − sim in points; whiskers: 95% t-interval",
    )


def _log_edges(positive: np.ndarray) -> np.ndarray:
    """40 log-spaced bin edges from the smallest to the largest value, both exactly included."""
    if positive.size < 2 or positive.min() == positive.max():
        return np.array([positive.min(), positive.min() * 1.0001 + 1e-12]) if positive.size else np.ones(2)
    edges = np.logspace(np.log10(positive.min()), np.log10(positive.max()), 41)
    edges[0], edges[-1] = positive.min(), positive.max()
    return edges
