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


# --- Fig. 5 -------------------------------------------------------------------------------------------


def fig5_charts(table: pl.DataFrame, x: str, x_title: str, group_columns: Sequence[str], name: str) -> list[Chart]:
    """SLO attainment and p95 latency versus ``x`` per policy (``table``: :func:`tables.headline_table`)."""
    setting = (
        pl.concat_str([pl.format(f"{c}={{}}", pl.col(c).cast(pl.String)) for c in group_columns], separator=", ")
        if group_columns
        else pl.lit("all")
    )
    df = table.with_columns(setting.alias("setting"), pl.col(x).cast(pl.Float64).alias("x"))
    multi = df["setting"].n_unique() > 1
    charts = []
    versus = "arrival rate" if "rate" in x else x
    for field, title, scale, y_title in (
        ("slo_attainment", f"SLO attainment vs {versus}", 100.0, "SLO attainment (%)"),
        ("p95_latency_s", f"p95 latency vs {versus}", 1.0, "p95 latency (s)"),
    ):
        data = df.select(
            "x",
            "policy",
            "setting",
            "n",
            (pl.col(field) * scale).alias("mean"),
            (pl.col(f"{field}_lo") * scale).alias("lo"),
            (pl.col(f"{field}_hi") * scale).alias("hi"),
        )
        base = alt.Chart().encode(
            x=alt.X("x:Q", title=x_title, scale=alt.Scale(zero=False)),
            color=alt.Color("policy:N", legend=alt.Legend(symbolType="stroke", symbolOpacity=1, symbolStrokeWidth=3)),
        )
        band = base.mark_area(opacity=0.2).encode(y=alt.Y("lo:Q"), y2="hi:Q")
        line = base.mark_line(point=True).encode(
            y=alt.Y("mean:Q", title=y_title),
            tooltip=["policy:N", "setting:N", "x:Q", "mean:Q", "lo:Q", "hi:Q", "n:Q"],
        )
        layered = alt.layer(band, line, data=TABLE)
        if multi:
            chart = layered.properties(width=WIDTH * 0.75, height=HEIGHT).facet(
                facet=alt.Facet("setting:N", title=None), columns=3
            )
        else:
            chart = layered.properties(width=WIDTH, height=HEIGHT)
        chart = chart.properties(title=f"{title} ({name})")
        charts.append(
            Chart(
                f"{slug(name)}-{slug(field)}-vs-rate",
                f"{title} ({name})",
                _spec(chart, data),
                "line: mean across seeds; band: 95% t-interval",
            )
        )
    return charts


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


def cdf_chart(
    runs: Sequence[tuple[str, Mapping[str, RunResult]]],
    slo_s: float | None,
    name: str,
    title: str,
    *,
    dash: Sequence[str] | None = None,
) -> Chart:
    """Latency CDFs per policy, one panel per labelled run (or one panel with ``dash`` per run)."""
    frames = []
    for i, (label, by_policy) in enumerate(runs):
        for policy, r in by_policy.items():
            f = cdf_frame(r.requests)
            extra = {"run": label, "policy": policy, "variant": dash[i] if dash else label}
            frames.append(f.with_columns(*(pl.lit(v).alias(k) for k, v in extra.items())))
    data = pl.concat(frames) if frames else pl.DataFrame()
    enc: dict[str, Any] = {
        "x": alt.X("latency_s:Q", title="latency (s)"),
        "y": alt.Y("fraction:Q", title="fraction of requests", scale=alt.Scale(domain=[0, 1])),
        "color": alt.Color("policy:N"),
        "tooltip": ["run:N", "policy:N", "latency_s:Q", "fraction:Q"],
    }
    if dash:
        enc["strokeDash"] = alt.StrokeDash("variant:N", title=None)
    lines = alt.Chart().mark_line(interpolate="step-after").encode(**enc)
    layers: list[Any] = [lines]
    if slo_s is not None:
        layers.append(alt.Chart().mark_rule(color="gray", strokeDash=[4, 4]).encode(x=alt.datum(slo_s)))
    layered = alt.layer(*layers, data=TABLE)
    if dash is None and len(runs) > 1:
        chart = layered.properties(width=WIDTH * 0.75, height=HEIGHT * 0.8).facet(
            facet=alt.Facet("run:N", title=None), columns=3
        )
    else:
        chart = layered.properties(width=WIDTH, height=HEIGHT)
    caption = "dashed rule: the SLO; a curve's height there is the SLO attainment"
    return Chart(name, title, _spec(chart.properties(title=title), data), caption)


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


def timeline_charts(label: str, runs: Mapping[str, RunResult], name: str) -> list[Chart]:
    """Per-stage pruning level and queue length over time, one row of panels per policy."""
    data = timeline_frame(runs)
    out = []
    for field, what, y_title in (("level", "pruning level", "level"), ("queue_len", "queue length", "queue")):
        chart = (
            alt.Chart(TABLE)
            .mark_line(interpolate="step-after")
            .encode(
                x=alt.X("time_s:Q", title="time (s)"),
                y=alt.Y(f"{field}:Q", title=y_title),
                color=alt.Color("stage:N"),
                tooltip=["policy:N", "stage:N", "time_s:Q", f"{field}:Q"],
            )
            .properties(width=WIDTH * 1.6, height=HEIGHT * 0.5)
            .facet(row=alt.Row("policy:N", title=None))
            .properties(title=f"Per-stage {what} over time ({label})")
        )
        out.append(Chart(f"{name}-{slug(field)}", f"Per-stage {what} over time ({label})", _spec(chart, data)))
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


def accuracy_frame(profiles: Sequence[tuple[str, Profile]]) -> pl.DataFrame:
    """Per profile: the uniform ladder and the measured per-stage vectors (at their mean ratio)."""
    rows = []
    for label, prof in profiles:
        acc = prof.accuracy
        if acc is None:
            continue
        for ratio, value in zip(prof.ratios, acc.uniform, strict=True):
            rows.append({"profile": label, "strategy": "uniform", "ratio": ratio, "accuracy": value, "levels": ""})
        for levels, value in acc.per_stage.items():
            ratio = math.fsum(prof.ratios[v] for v in levels) / len(levels)
            rows.append(
                {
                    "profile": label,
                    "strategy": "per-stage (measured)",
                    "ratio": ratio,
                    "accuracy": value,
                    "levels": str(list(levels)),
                }
            )
    return pl.DataFrame(
        rows,
        schema={
            "profile": pl.String,
            "strategy": pl.String,
            "ratio": pl.Float64,
            "accuracy": pl.Float64,
            "levels": pl.String,
        },
    )


def accuracy_chart(profiles: Sequence[tuple[str, Profile]]) -> Chart | None:
    """Fig. 4: estimated accuracy versus pruning ratio per strategy; titled as a proxy when it is one."""
    df = accuracy_frame(profiles)
    if df.height == 0:
        return None
    proxy = any(p.accuracy is not None and p.accuracy.proxy for _, p in profiles)
    metric = next((p.accuracy.metric for _, p in profiles if p.accuracy is not None), "accuracy")
    title = f"{'Proxy accuracy' if proxy else 'Accuracy'} ({metric}) vs pruning ratio"
    color = alt.Color("strategy:N")
    enc: dict[str, Any] = {
        "x": alt.X("ratio:Q", title="mean pruning ratio", axis=alt.Axis(tickCount=6)),
        "y": alt.Y("accuracy:Q", title=f"{metric}{' (proxy)' if proxy else ''}", scale=alt.Scale(zero=False)),
        "color": color,
        "tooltip": ["profile:N", "strategy:N", "levels:N", "ratio:Q", "accuracy:Q"],
    }
    if len(profiles) > 1:
        enc["strokeDash"] = alt.StrokeDash("profile:N")
    base = alt.Chart().encode(**enc)
    uniform = base.transform_filter(alt.datum.strategy == "uniform").mark_line(point=True)
    measured = base.transform_filter(alt.datum.strategy != "uniform").mark_point(filled=True, size=60)
    chart = alt.layer(uniform, measured, data=TABLE).properties(width=WIDTH, height=HEIGHT, title=title)
    caption = "PROXY: not the target task's accuracy (see the profile's note)" if proxy else ""
    return Chart("profile-accuracy", title, _spec(chart, df), caption)


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
    layered = alt.layer(bars, rules, data=TABLE)
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
