"""What a recorded trace looks like: rates, burstiness and bursts, as numbers and as a chart.

:func:`inspect_trace` summarises a loaded :class:`~traces.replay.TraceInfo`:

* rows, span, mean and peak arrivals per minute (peak = the busiest 60 s window starting at an arrival);
* burstiness: the coefficient of variation of the inter-arrival times (1 for Poisson), the index of
  dispersion of the per-minute counts (variance / mean, 1 for Poisson) and the peak / mean ratio;
* bursts, per location (or deployment) when the trace has one: frames per trigger, the mean gap inside
  bursts and the median gap between them.  Bursts are the trace's sequences (Camtrap DP ``sequenceID``,
  COCO ``seq_id``) when it has them, else runs of arrivals separated by gaps under ``burst_gap_s``.

:func:`arrivals_chart` draws arrivals over time (counts per bin) beside the inter-arrival distribution
(log-spaced histogram), as an Altair chart; :func:`write_png` saves it with vl-convert.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from traces.fit import default_burst_gap_s
from traces.replay import TraceInfo
from traces.stats import cv_of_gaps, peak_per_minute

__all__ = ["BurstSummary", "TraceSummary", "arrivals_chart", "inspect_trace", "write_png"]

_MAX_BINS = 2000


@dataclass(frozen=True)
class BurstSummary:
    """Bursts of one location (``group`` is "" for the whole trace)."""

    group: str
    n_events: int
    n_bursts: int
    frames_per_trigger_mean: float
    frames_per_trigger_max: int
    gap_within_mean_s: float
    gap_between_median_s: float


@dataclass(frozen=True)
class TraceSummary:
    """Numbers of one trace (see the module docstring); NaN where there are fewer than two arrivals."""

    source: str
    rows: int
    events: int
    span_s: float
    mean_per_min: float
    peak_per_min: int
    cv_gap: float
    dispersion_per_min: float
    peak_to_mean: float
    burst_gap_s: float
    bursts_from: str
    bursts: tuple[BurstSummary, ...]

    def lines(self) -> list[str]:
        """The summary as lines for a terminal."""
        out = [
            f"{self.source}",
            f"rows {self.rows}, events {self.events}, span {self.span_s:.6g} s ({self.span_s / 3600:.3g} h)",
            f"rate per minute: mean {self.mean_per_min:.4g}, peak {self.peak_per_min} "
            f"(peak/mean {self.peak_to_mean:.3g})",
            f"burstiness: CV of inter-arrivals {self.cv_gap:.3g}, index of dispersion (1-min counts) "
            f"{self.dispersion_per_min:.3g}",
            f"bursts ({self.bursts_from}):",
        ]
        for b in self.bursts:
            out.append(
                f"  {b.group or 'all'}: {b.n_events} events in {b.n_bursts} bursts, "
                f"{b.frames_per_trigger_mean:.3g} frames per trigger (max {b.frames_per_trigger_max}), "
                f"gap within {b.gap_within_mean_s:.3g} s, between (median) {b.gap_between_median_s:.4g} s"
            )
        return out

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types."""
        doc = asdict(self)
        doc["bursts"] = [asdict(b) for b in self.bursts]
        return doc


def inspect_trace(info: TraceInfo, *, burst_gap_s: float | None = None) -> TraceSummary:
    """Summarise a loaded trace (see the module docstring)."""
    t = info.times_s
    span = info.span_s
    nan = float("nan")
    cv = cv_of_gaps(t)
    peak = peak_per_minute(t)
    counts = _counts_per_minute(t)
    mean_per_min = float(counts.mean()) if counts.size else nan
    dispersion = float(counts.var() / mean_per_min) if counts.size > 1 and mean_per_min > 0 else nan
    gap_s = default_burst_gap_s(t) if burst_gap_s is None else burst_gap_s
    use_sequences = info.sequences is not None and burst_gap_s is None
    return TraceSummary(
        source=info.source,
        rows=info.n_rows,
        events=info.n_events,
        span_s=span,
        mean_per_min=mean_per_min,
        peak_per_min=peak,
        cv_gap=cv,
        dispersion_per_min=dispersion,
        peak_to_mean=peak / mean_per_min if mean_per_min and mean_per_min > 0 else nan,
        burst_gap_s=gap_s,
        bursts_from="sequence ids" if use_sequences else f"gaps over {gap_s:.3g} s",
        bursts=_bursts_by_group(info, gap_s, use_sequences),
    )


def _counts_per_minute(t: np.ndarray) -> np.ndarray:
    """Arrivals in each whole minute from the first arrival (the last, partial minute included)."""
    if t.size == 0:
        return np.empty(0)
    minutes = np.floor((t - t[0]) / 60.0).astype(np.int64)
    return np.bincount(minutes).astype(np.float64)


def _bursts_by_group(info: TraceInfo, gap_s: float, use_sequences: bool) -> tuple[BurstSummary, ...]:
    groups = info.groups if info.groups is not None else np.full(info.n_events, "", dtype=object)
    out = []
    for group in sorted(set(groups.tolist())):
        mask = groups == group
        seq = info.sequences[mask] if use_sequences and info.sequences is not None else None
        out.append(_burst_summary(str(group), info.times_s[mask], seq, gap_s))
    return tuple(out)


def _burst_summary(group: str, t: np.ndarray, seq: np.ndarray | None, gap_s: float) -> BurstSummary:
    gaps = np.diff(t)
    new = np.concatenate([[True], seq[1:] != seq[:-1]]) if seq is not None else np.concatenate([[True], gaps > gap_s])
    sizes = np.diff(np.flatnonzero(np.concatenate([new, [True]])))
    within, between = gaps[~new[1:]], gaps[new[1:]]
    nan = float("nan")
    return BurstSummary(
        group=group,
        n_events=int(t.size),
        n_bursts=int(sizes.size),
        frames_per_trigger_mean=float(sizes.mean()) if sizes.size else nan,
        frames_per_trigger_max=int(sizes.max()) if sizes.size else 0,
        gap_within_mean_s=float(within.mean()) if within.size else nan,
        gap_between_median_s=float(np.median(between)) if between.size else nan,
    )


def arrivals_chart(info: TraceInfo, title: str = "") -> Any:
    """Arrivals over time (counts per bin of at least a minute) beside the log-spaced inter-arrival histogram."""
    import altair as alt
    import polars as pl

    t = info.times_s
    bin_s = max(60.0, info.span_s / _MAX_BINS)
    idx = np.floor((t - t[0]) / bin_s).astype(np.int64) if t.size else np.empty(0, dtype=np.int64)
    counts = np.bincount(idx) if t.size else np.empty(0, dtype=np.int64)
    unit, scale = ("h", 3600.0) if info.span_s > 3 * 3600 else ("min", 60.0)
    over_time = pl.DataFrame({f"time ({unit})": np.arange(counts.size) * bin_s / scale, "arrivals": counts})
    gaps = np.diff(t)
    positive = gaps[gaps > 0]
    edges = _log_edges(positive)
    hist, edges = np.histogram(positive, bins=edges)
    gap_frame = pl.DataFrame({"gap_from_s": edges[:-1], "gap_to_s": edges[1:], "count": hist})
    left = (
        alt.Chart(over_time)
        .mark_bar()
        .encode(x=alt.X(f"time ({unit}):Q"), y=alt.Y("arrivals:Q", title=f"arrivals per {bin_s:.3g} s"))
        .properties(width=420, height=220, title="arrivals over time")
    )
    right = (
        alt.Chart(gap_frame)
        .mark_rect()
        .encode(
            x=alt.X("gap_from_s:Q", scale=alt.Scale(type="log"), title="inter-arrival gap (s, log)"),
            x2="gap_to_s:Q",
            y=alt.Y("count:Q"),
        )
        .properties(width=320, height=220, title=f"inter-arrival gaps ({int((gaps == 0).sum())} zero gaps not shown)")
    )
    return alt.hconcat(left, right).properties(title=title or info.source)


def write_png(chart: Any, path: Path) -> None:
    """Save an Altair chart as PNG (vl-convert), atomically."""
    import vl_convert as vlc

    png = vlc.vegalite_to_png(chart.to_json(), scale=1.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(png)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _log_edges(positive: np.ndarray) -> np.ndarray:
    """40 log-spaced bin edges from the smallest to the largest value, both exactly included."""
    if positive.size < 2 or positive.min() == positive.max():
        return np.array([positive.min(), positive.min() * 1.0001 + 1e-12]) if positive.size else np.ones(2)
    edges = np.logspace(np.log10(positive.min()), np.log10(positive.max()), 41)
    edges[0], edges[-1] = positive.min(), positive.max()
    return edges
