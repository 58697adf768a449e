"""Loading recorded traces and replaying them as arrival times.

:func:`load_trace` reads one time column (see :mod:`traces.readers` for formats) and returns a
:class:`TraceInfo`: sorted seconds after the first event, the absolute origin, and what was dropped and
why.  Unsorted input is sorted with a stable sort, so equal timestamps (several images in one second) are
all kept.  Loads are cached per file version (path, size, modification time), so a sweep that replays one
trace in many scenarios reads it once; the cached arrays are read-only.

:func:`window_trace` cuts a ``[start_s, end_s)`` window and applies a ``speedup``; :func:`load_replay`
does both for a :class:`~traces.spec.ReplayArrivals`; :func:`replay_arrivals` turns that into the
arrival times the simulator asks for (looping if asked).  Library code never prints: callers show
``TraceInfo.describe()`` if they want to tell the user what was dropped.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import math
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from edgeprune.errors import TraceError
from traces.outliers import OutlierCluster, find_clock_resets
from traces.readers import TraceFormat, read_time_column
from traces.spec import ReplayArrivals
from traces.timeparse import TimeUnit, parse_times

__all__ = [
    "ReplayReport",
    "TraceInfo",
    "load_replay",
    "load_trace",
    "loop_period_s",
    "replay_arrivals",
    "replay_report",
    "replay_with_report",
    "window_trace",
]


@dataclass(frozen=True, eq=False)
class TraceInfo:
    """A loaded trace: event times and where they came from.

    ``times_s`` are sorted float64 seconds; after :func:`load_trace` they are relative to the first event
    (``times_s[0] == 0``), after :func:`window_trace` relative to the window start.  ``origin`` is the
    absolute time of the trace's first event, also after windowing (ISO 8601 text for date-time columns,
    UTC with ``Z`` when the file had offsets or a ``timezone`` was given; the raw number in the file's unit
    for numeric ones).  ``n_rows`` counts the rows of the file; ``dropped`` maps each reason to how many
    rows it removed (blank lines, a filter, clock-reset outliers, a window); ``was_sorted`` says whether the
    file was already in time order; ``outliers`` are the clock-reset clusters found (dropped or not, see
    ``outliers_dropped``), with times on the clock of the loaded trace before any drop.  ``groups`` /
    ``sequences`` are the location (or deployment) and sequence id of each kept event, when the file has
    them.  ``file`` is the file read (``source`` starts with it) and ``sha256`` the digest of its bytes, so
    a result can name the trace in a way that is the same in every clone (:attr:`portable_source`).
    Equality is identity (the arrays are not compared).
    """

    times_s: np.ndarray
    origin: str | float
    n_rows: int
    dropped: Mapping[str, int]
    source: str
    column: str
    unit: str
    format: str
    was_sorted: bool
    outliers: tuple[OutlierCluster, ...] = ()
    outliers_dropped: bool = False
    groups: np.ndarray | None = None
    group_column: str = ""
    sequences: np.ndarray | None = None
    file: str = ""
    sha256: str = ""

    @property
    def n_events(self) -> int:
        """The number of events kept."""
        return int(self.times_s.size)

    @property
    def n_dropped(self) -> int:
        """The number of rows dropped, all reasons together."""
        return sum(self.dropped.values())

    @property
    def portable_source(self) -> str:
        """``source`` with the file's name instead of its path: what a result records (same in any clone)."""
        return Path(self.file).name + self.source.removeprefix(self.file) if self.file else self.source

    @property
    def span_s(self) -> float:
        """Time from the first to the last event kept, s."""
        return float(self.times_s[-1] - self.times_s[0]) if self.times_s.size else 0.0

    def outlier_note(self) -> str:
        """What the clock-reset check found, in words ("" when nothing)."""
        if not self.outliers:
            return ""
        n = sum(c.n_rows for c in self.outliers)
        far = max(c.gap_s for c in self.outliers)
        if self.outliers_dropped:
            return f"{n} clock-reset outlier rows dropped ({len(self.outliers)} cluster(s), {_days(far)} away)"
        return (
            f"{n} rows look like a clock reset ({len(self.outliers)} isolated cluster(s), {_days(far)} from the "
            "rest) and are kept; set outliers = 'drop' to drop them"
        )

    def describe(self) -> str:
        """One line for a log or a CLI: what was read, how much was kept, and what was dropped and why."""
        drops = ", ".join(f"{n} {why}" for why, n in self.dropped.items() if n) or "none"
        order = "" if self.was_sorted else ", sorted (file was out of order)"
        note = self.outlier_note()
        return (
            f"{self.source}: {self.n_events} of {self.n_rows} rows over {self.span_s:.6g} s "
            f"(column {self.column!r}, {self.unit}, first event {self.origin}){order}; dropped: {drops}"
            + (f"; {note}" if note and not self.outliers_dropped else "")
        )


def _days(span_s: float) -> str:
    return f"{span_s / 86400:.0f} days" if span_s >= 2 * 86400 else f"{span_s / 3600:.1f} h"


def load_trace(
    path: str | Path,
    *,
    format: TraceFormat = "auto",
    column: str | Sequence[str] | None = None,
    unit: TimeUnit = "auto",
    deployment: str | None = None,
    location: str | None = None,
    camera: str | None = None,
    timezone: str | None = None,
    outliers: Literal["keep", "drop"] = "keep",
) -> TraceInfo:
    """Read the time column(s) of a recorded trace into sorted seconds after its first event.

    Raises :class:`~edgeprune.errors.TraceError` (one line naming the file, and the row and column for a
    bad value) for a missing file or column and for NaN, infinite, negative, empty or unparseable times.
    Clock-reset outliers (:mod:`traces.outliers`) are always looked for and reported in
    :attr:`TraceInfo.outliers`; ``outliers = "drop"`` removes them (and counts them in ``dropped``).
    """
    p = Path(path).expanduser()
    try:
        stat = p.stat()
    except FileNotFoundError:
        raise TraceError(f"{p}: trace file not found") from None
    except OSError as exc:
        raise TraceError(f"{p}: cannot read: {exc.strerror}") from None
    cols = column if column is None or isinstance(column, str) else tuple(column)
    filters = tuple((k, v) for k, v in (("deployment", deployment), ("location", location), ("camera", camera)) if v)
    key = _LoadKey(str(p.resolve()), stat.st_mtime_ns, stat.st_size, format, cols, unit, filters, timezone, outliers)
    return _load_cached(key)


@dataclass(frozen=True)
class _LoadKey:
    """Everything a load depends on (the file's version included), hashable for the cache."""

    path: str
    mtime_ns: int
    size: int
    format: TraceFormat
    column: str | tuple[str, ...] | None
    unit: TimeUnit
    filters: tuple[tuple[str, str], ...]
    timezone: str | None
    outliers: Literal["keep", "drop"]


@functools.lru_cache(maxsize=32)
def _load_cached(key: _LoadKey) -> TraceInfo:
    raw = read_time_column(Path(key.path), format=key.format, column=key.column, filters=dict(key.filters))
    parsed = parse_times(raw.values, raw.rows, unit=key.unit, file=raw.file, column=raw.column, timezone=key.timezone)
    order = np.argsort(parsed.rel_s, kind="stable")
    times = parsed.rel_s[order]
    was_sorted = bool(np.all(np.diff(parsed.rel_s) >= 0))
    mask, clusters = find_clock_resets(times)
    dropped = dict(raw.dropped)
    origin = parsed.origin
    keep = np.ones(times.size, dtype=bool)
    if key.outliers == "drop" and mask.any():
        keep = ~mask
        dropped["clock-reset outliers"] = int(mask.sum())
        origin = _shifted_origin(origin, float(times[keep][0]), parsed.unit)
        times = times[keep] - times[keep][0]
    source = raw.file + (f" [{raw.selection}]" if raw.selection else "")
    return TraceInfo(
        times_s=_frozen(times),
        origin=origin,
        n_rows=raw.n_rows,
        dropped=types.MappingProxyType(dropped),
        source=source,
        column=raw.column,
        unit=parsed.unit,
        format=raw.format,
        was_sorted=was_sorted,
        outliers=clusters,
        outliers_dropped=key.outliers == "drop" and bool(clusters),
        groups=_aligned(raw.groups, order, keep),
        group_column=raw.group_column,
        sequences=_aligned(raw.sequences, order, keep),
        file=raw.file,
        sha256=_sha256(Path(raw.file)),
    )


def _sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (streamed: traces can be large)."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _aligned(labels: pl.Series | None, order: np.ndarray, keep: np.ndarray) -> np.ndarray | None:
    """Per-row labels put in time order and filtered like the times (read-only)."""
    if labels is None:
        return None
    out = labels.fill_null("").to_numpy()[order][keep]
    out.flags.writeable = False
    return out


def _shifted_origin(origin: str | float, shift_s: float, unit: str) -> str | float:
    """The absolute time ``shift_s`` seconds after ``origin`` (ISO text or a raw number in ``unit``)."""
    if isinstance(origin, str):
        aware = origin.endswith("Z")
        stamp = dt.datetime.fromisoformat(origin.removesuffix("Z")) + dt.timedelta(seconds=shift_s)
        return stamp.isoformat() + ("Z" if aware else "")
    return origin + shift_s * (1000.0 if unit == "ms" else 1.0)


def window_trace(
    info: TraceInfo, *, start_s: float = 0.0, end_s: float | None = None, speedup: float = 1.0
) -> TraceInfo:
    """Keep events in ``[start_s, end_s)`` (trace seconds), shift the window start to 0, divide by ``speedup``.

    Events outside the window are counted in ``dropped`` (``"before start_s"``, ``"at or after end_s"``);
    an empty window is a :class:`TraceError`.
    """
    t = info.times_s
    lo = int(np.searchsorted(t, start_s, side="left"))
    hi = t.size if end_s is None else int(np.searchsorted(t, end_s, side="left"))
    if hi <= lo:
        end = "the end" if end_s is None else f"{end_s:g} s"
        raise TraceError(f"{info.source}: no events in the window [{start_s:g} s, {end}) of a {info.span_s:g} s trace")
    dropped = dict(info.dropped)
    for reason, n in (("before start_s", lo), ("at or after end_s", t.size - hi)):
        if n:
            dropped[reason] = dropped.get(reason, 0) + n
    times = _frozen((t[lo:hi] - start_s) / speedup)
    groups = info.groups[lo:hi] if info.groups is not None else None
    sequences = info.sequences[lo:hi] if info.sequences is not None else None
    notes = [f"window [{start_s:g}, {'end' if end_s is None else f'{end_s:g}'}) s"] if (start_s or end_s) else []
    notes += [f"speedup {speedup:g}"] if speedup != 1.0 else []
    source = info.source + (f" ({', '.join(notes)})" if notes else "")
    return replace(
        info, times_s=times, dropped=types.MappingProxyType(dropped), source=source, groups=groups, sequences=sequences
    )


def load_replay(spec: ReplayArrivals) -> TraceInfo:
    """The trace of a replay spec, loaded, windowed and sped up: the arrivals of one pass, from 0.

    Cached like :func:`load_trace`: replaying one spec many times windows the trace once.
    """
    info = load_trace(
        spec.path,
        format=spec.format,
        column=spec.column,
        unit=spec.unit,
        deployment=spec.deployment,
        location=spec.location,
        camera=spec.camera,
        timezone=spec.timezone,
        outliers=spec.outliers,
    )
    return _window_cached(info, spec.start_s, spec.end_s, spec.speedup, spec.min_kept_fraction)


@functools.lru_cache(maxsize=32)
def _window_cached(
    info: TraceInfo, start_s: float, end_s: float | None, speedup: float, min_kept_fraction: float
) -> TraceInfo:
    windowed = window_trace(info, start_s=start_s, end_s=end_s, speedup=speedup)
    if windowed.n_events < min_kept_fraction * info.n_events:
        share = 100.0 * windowed.n_events / info.n_events
        end = "the end" if end_s is None else f"{end_s:g}"
        hint = " if the times are milliseconds set unit = 'ms';" if info.unit == "s" else ""
        raise TraceError(
            f"{info.source}: the window [{start_s:g}, {end}) s keeps {windowed.n_events} of {info.n_events} rows "
            f"({share:.2g}%) of a {info.span_s:.6g} s trace;{hint} widen start_s / end_s, or set "
            "min_kept_fraction = 0 to replay so small a part on purpose"
        )
    return windowed


def loop_period_s(spec: ReplayArrivals, info: TraceInfo) -> float:
    """The time after which a looped replay starts over, in replay seconds.

    With ``end_s`` it is the window length; otherwise the span of the events plus one mean gap, so the
    looped trace keeps the window's mean rate and the seam gets an ordinary gap, not a collision.
    """
    if spec.end_s is not None:
        return (spec.end_s - spec.start_s) / spec.speedup
    span = info.span_s
    if info.n_events < 2 or span <= 0:
        raise TraceError(f"{info.source}: cannot loop {info.n_events} event(s) spanning {span:g} s; set end_s")
    return span + span / (info.n_events - 1)


@dataclass(frozen=True)
class ReplayReport:
    """What a replay read, kept and dropped, and why: the terminal line and the ``arrivals`` of ``summary.json``.

    ``source`` names the trace by its file's name (with the selection and window), never its path, and
    ``sha256`` is the digest of the file's bytes, so that ``summary.json`` is the same in any clone;
    ``rows_read`` are the rows of the file; ``kept`` the distinct trace rows replayed; ``dropped`` maps each
    reason to a row count (blank lines, filters, clock-reset outliers, outside the window, after
    ``duration_s`` / ``n_requests``), so that ``rows_read == kept + sum(dropped)``; ``arrivals`` is how many
    arrivals the run gets (more than ``kept`` when the replay loops).
    """

    source: str
    sha256: str
    format: str
    column: str
    unit: str
    origin: str | float
    rows_read: int
    kept: int
    dropped: Mapping[str, int]
    arrivals: int
    looped: bool
    outliers: str

    def line(self) -> str:
        """One line for the terminal."""
        drops = ", ".join(f"{n} {why}" for why, n in self.dropped.items() if n) or "none"
        loop = f", looped to {self.arrivals} arrivals" if self.looped else ""
        note = f"; {self.outliers}" if self.outliers else ""
        return (
            f"replay {self.source}: read {self.rows_read} rows, kept {self.kept}{loop}; dropped: {drops} "
            f"(column {self.column!r}, {self.unit}, first event {self.origin}){note}"
        )

    def to_json(self) -> dict[str, object]:
        """The ``arrivals`` entry of ``summary.json`` (plain JSON types, stable keys)."""
        return {
            "kind": "replay",
            "source": self.source,
            "sha256": self.sha256,
            "format": self.format,
            "column": self.column,
            "unit": self.unit,
            "origin": self.origin,
            "rows_read": self.rows_read,
            "kept": self.kept,
            "dropped": dict(self.dropped),
            "arrivals": self.arrivals,
            "looped": self.looped,
            "outliers": self.outliers,
        }


def replay_arrivals(spec: ReplayArrivals, *, duration_s: float | None, n_requests: int | None) -> np.ndarray:
    """Arrival times from a recorded trace: the windowed pass, looped if asked, cut to the request."""
    return replay_with_report(spec, duration_s=duration_s, n_requests=n_requests)[0]


def replay_report(spec: ReplayArrivals, *, duration_s: float | None, n_requests: int | None) -> ReplayReport:
    """The :class:`ReplayReport` of the arrivals :func:`replay_arrivals` returns for the same arguments."""
    return replay_with_report(spec, duration_s=duration_s, n_requests=n_requests)[1]


def replay_with_report(
    spec: ReplayArrivals, *, duration_s: float | None, n_requests: int | None
) -> tuple[np.ndarray, ReplayReport]:
    """The arrivals of a replay and what it kept and dropped.

    A non-looping replay whose ``duration_s`` would silently cut more than 1 % of the windowed rows is
    refused (set ``end_s`` to replay a part on purpose); asking for more requests than it holds is an error.
    """
    info = load_replay(spec)
    times = info.times_s
    dropped = dict(info.dropped)
    if spec.loop:
        times = _looped(times, loop_period_s(spec, info), duration_s, n_requests)
    if duration_s is not None:
        times = times[: int(np.searchsorted(times, duration_s, side="left"))]
        if not spec.loop and not (n_requests is not None and times.size >= n_requests):
            _refuse_duration_cut(spec, info, duration_s, times.size)
    if n_requests is not None:
        if duration_s is None and times.size < n_requests and not spec.loop:
            raise TraceError(
                f"{info.source}: only {times.size} arrivals in the trace, n_requests = {n_requests}; "
                "set loop = true or ask for fewer"
            )
        times = times[:n_requests]
    kept = info.n_events if spec.loop else int(times.size)
    if not spec.loop and kept < info.n_events:
        why = "after n_requests" if n_requests is not None and kept == n_requests else "after duration_s"
        dropped[why] = info.n_events - kept
    report = ReplayReport(
        source=info.portable_source,
        sha256=info.sha256,
        format=info.format,
        column=info.column,
        unit=info.unit,
        origin=info.origin,
        rows_read=info.n_rows,
        kept=kept,
        dropped=types.MappingProxyType(dropped),
        arrivals=int(times.size),
        looped=spec.loop,
        outliers=info.outlier_note(),
    )
    return np.array(times, dtype=np.float64), report


def _refuse_duration_cut(spec: ReplayArrivals, info: TraceInfo, duration_s: float, kept: int) -> None:
    """No silent cut: ``duration_s`` may drop at most 1 % of the window's rows."""
    cut = info.n_events - kept
    if cut <= 0.01 * info.n_events:
        return
    end_trace_s = spec.start_s + duration_s * spec.speedup
    unit_hint = "; if the times are milliseconds, set unit = 'ms'" if info.unit == "s" else ""
    raise TraceError(
        f"{info.source}: duration_s = {duration_s:g} s replays only {kept} of {info.n_events} rows "
        f"({100.0 * kept / info.n_events:.2g}%) of a {info.span_s:.6g} s replay; set end_s = {end_trace_s:g} "
        f"to replay that part on purpose, loop = true, or a longer duration_s{unit_hint}"
    )


def _looped(times: np.ndarray, period_s: float, duration_s: float | None, n_requests: int | None) -> np.ndarray:
    if duration_s is not None:
        copies = math.ceil(duration_s / period_s) + 1
    elif n_requests is not None:
        copies = math.ceil(n_requests / times.size)
    else:
        raise TraceError("a looped replay needs duration_s or n_requests")
    return (times[None, :] + period_s * np.arange(copies, dtype=np.float64)[:, None]).ravel()


def _frozen(array: np.ndarray) -> np.ndarray:
    out = np.ascontiguousarray(array, dtype=np.float64)
    out.flags.writeable = False
    return out
