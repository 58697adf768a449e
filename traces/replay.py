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

import functools
import math
import types
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgeprune.errors import TraceError
from traces.readers import TraceFormat, read_time_column
from traces.spec import ReplayArrivals
from traces.timeparse import TimeUnit, parse_times

__all__ = ["TraceInfo", "load_replay", "load_trace", "loop_period_s", "replay_arrivals", "window_trace"]


@dataclass(frozen=True, eq=False)
class TraceInfo:
    """A loaded trace: event times and where they came from.

    ``times_s`` are sorted float64 seconds; after :func:`load_trace` they are relative to the first event
    (``times_s[0] == 0``), after :func:`window_trace` relative to the window start.  ``origin`` is the
    absolute time of the trace's first event, also after windowing (ISO 8601 text for date-time columns,
    UTC with ``Z`` when the file had offsets; the raw number in the file's unit for numeric ones).
    ``n_rows`` counts the rows of the file; ``dropped`` maps each reason to how many rows it removed (blank
    lines, a deployment filter, a window); ``was_sorted`` says whether the file was already in time order.
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

    @property
    def n_events(self) -> int:
        """The number of events kept."""
        return int(self.times_s.size)

    @property
    def n_dropped(self) -> int:
        """The number of rows dropped, all reasons together."""
        return sum(self.dropped.values())

    @property
    def span_s(self) -> float:
        """Time from the first to the last event kept, s."""
        return float(self.times_s[-1] - self.times_s[0]) if self.times_s.size else 0.0

    def describe(self) -> str:
        """One line for a log or a CLI: what was read, how much was kept, and what was dropped and why."""
        drops = ", ".join(f"{n} {why}" for why, n in self.dropped.items() if n) or "none"
        order = "" if self.was_sorted else ", sorted (file was out of order)"
        return (
            f"{self.source}: {self.n_events} of {self.n_rows} rows over {self.span_s:.6g} s "
            f"(column {self.column!r}, {self.unit}, first event {self.origin}){order}; dropped: {drops}"
        )


def load_trace(
    path: str | Path,
    *,
    format: TraceFormat = "auto",
    column: str | None = None,
    unit: TimeUnit = "auto",
    deployment: str | None = None,
) -> TraceInfo:
    """Read the time column of a recorded trace into sorted seconds after its first event.

    Raises :class:`~edgeprune.errors.TraceError` (one line naming the file, and the row and column for a
    bad value) for a missing file or column and for NaN, infinite, negative, empty or unparseable times.
    """
    p = Path(path).expanduser()
    try:
        stat = p.stat()
    except FileNotFoundError:
        raise TraceError(f"{p}: trace file not found") from None
    except OSError as exc:
        raise TraceError(f"{p}: cannot read: {exc.strerror}") from None
    return _load_cached(str(p.resolve()), stat.st_mtime_ns, stat.st_size, format, column, unit, deployment)


@functools.lru_cache(maxsize=32)
def _load_cached(
    path: str,
    _mtime_ns: int,
    _size: int,
    format: TraceFormat,
    column: str | None,
    unit: TimeUnit,
    deployment: str | None,
) -> TraceInfo:
    raw = read_time_column(Path(path), format=format, column=column, deployment=deployment)
    parsed = parse_times(raw.values, raw.rows, unit=unit, file=raw.file, column=raw.column)
    order = np.argsort(parsed.rel_s, kind="stable")
    times = _frozen(parsed.rel_s[order])
    was_sorted = bool(np.all(np.diff(parsed.rel_s) >= 0))
    source = raw.file + (f" [{raw.selection}]" if raw.selection else "")
    return TraceInfo(
        times_s=times,
        origin=parsed.origin,
        n_rows=raw.n_rows,
        dropped=types.MappingProxyType(dict(raw.dropped)),
        source=source,
        column=raw.column,
        unit=parsed.unit,
        format=raw.format,
        was_sorted=was_sorted,
    )


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
    notes = [f"window [{start_s:g}, {'end' if end_s is None else f'{end_s:g}'}) s"] if (start_s or end_s) else []
    notes += [f"speedup {speedup:g}"] if speedup != 1.0 else []
    source = info.source + (f" ({', '.join(notes)})" if notes else "")
    return replace(info, times_s=times, dropped=types.MappingProxyType(dropped), source=source)


def load_replay(spec: ReplayArrivals) -> TraceInfo:
    """The trace of a replay spec, loaded, windowed and sped up: the arrivals of one pass, from 0.

    Cached like :func:`load_trace`: replaying one spec many times windows the trace once.
    """
    info = load_trace(spec.path, format=spec.format, column=spec.column, unit=spec.unit, deployment=spec.deployment)
    return _window_cached(info, spec.start_s, spec.end_s, spec.speedup)


@functools.lru_cache(maxsize=32)
def _window_cached(info: TraceInfo, start_s: float, end_s: float | None, speedup: float) -> TraceInfo:
    return window_trace(info, start_s=start_s, end_s=end_s, speedup=speedup)


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


def replay_arrivals(spec: ReplayArrivals, *, duration_s: float | None, n_requests: int | None) -> np.ndarray:
    """Arrival times from a recorded trace: the windowed pass, looped if asked, cut to the request."""
    info = load_replay(spec)
    times = info.times_s
    if spec.loop:
        times = _looped(times, loop_period_s(spec, info), duration_s, n_requests)
    elif duration_s is None and n_requests is None:
        return times.copy()
    if duration_s is not None:
        times = times[: int(np.searchsorted(times, duration_s, side="left"))]
    if n_requests is not None:
        if duration_s is None and times.size < n_requests:
            raise TraceError(
                f"{info.source}: only {times.size} arrivals in the trace, n_requests = {n_requests}; "
                "set loop = true or ask for fewer"
            )
        times = times[:n_requests]
    return np.array(times, dtype=np.float64)


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
