"""Drawing arrival times from an :data:`~traces.spec.ArrivalSpec`, vectorised and seeded.

Every synthetic process is written as a *segment drawer*: given the generator and an interval
``[t0, t1)`` it returns the events of that interval (unsorted), keeping whatever state the process
carries across intervals (the MMPP's current state and when it ends).  :func:`generate` then

* with ``duration_s``: draws ``[0, duration_s)`` once, sorts, and keeps the first ``n_requests`` if given;
* with only ``n_requests``: draws successive intervals, doubling the horizon, until at least
  ``n_requests`` events lie before it, and returns the first ``n_requests``.  Extending (rather than
  redrawing with a longer horizon) keeps the law exact: a Poisson-type process restarted at ``t0`` from
  its current state is the same process.

All randomness comes from the ``numpy.random.Generator`` passed in, so equal generator states give equal
arrivals.  A million Poisson or MMPP arrivals take well under a second (one Poisson count per segment,
uniform positions, one sort): ``bench/bench_traces.py`` prints it beside a numpy baseline; no test times it.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from edgeprune.errors import TraceError
from traces.replay import replay_arrivals
from traces.spec import (
    ArrivalSpec,
    CameraTrapArrivals,
    MmppArrivals,
    PoissonArrivals,
    RateScheduleArrivals,
    ReplayArrivals,
    validate,
)

__all__ = ["generate"]

_MAX_EXTENSIONS = 64  # horizon doublings before giving up (2**64 x the first guess: never in practice)


def generate(
    spec: ArrivalSpec,
    rng: np.random.Generator,
    *,
    duration_s: float | None = None,
    n_requests: int | None = None,
) -> np.ndarray:
    """Arrival times in seconds from 0 (float64, sorted non-decreasing) for ``spec``.

    With ``duration_s`` every time is in ``[0, duration_s)``; with ``n_requests`` at most that many (exactly
    that many when ``duration_s`` is not given).  Replays ignore ``rng`` and return the recorded times;
    asking a non-looping replay for more requests than it holds is a :class:`TraceError`.
    """
    _check_request(duration_s, n_requests)
    validate(spec)
    if isinstance(spec, ReplayArrivals):
        return replay_arrivals(spec, duration_s=duration_s, n_requests=n_requests)
    if duration_s is None and n_requests is None:
        raise ValueError("generate: give duration_s, n_requests or both for a synthetic arrival process")
    if isinstance(spec, PoissonArrivals) and duration_s is None and n_requests is not None:
        return np.cumsum(rng.exponential(1.0 / spec.rate_hz, size=n_requests))
    process = _drawer(spec)
    if duration_s is not None:
        times = np.sort(process.draw(rng, 0.0, duration_s))
        times = times[: int(np.searchsorted(times, duration_s, side="left"))]
        return times if n_requests is None else times[:n_requests]
    assert n_requests is not None
    return _first_n(process, rng, n_requests, spec)


def _check_request(duration_s: float | None, n_requests: int | None) -> None:
    if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"generate: duration_s = {duration_s} must be a positive finite number of seconds")
    if n_requests is not None and (isinstance(n_requests, bool) or int(n_requests) != n_requests or n_requests < 0):
        raise ValueError(f"generate: n_requests = {n_requests} must be a non-negative integer")


class _Drawer(Protocol):
    """A process that can draw its events of ``[t0, t1)`` (consecutive calls continue in time)."""

    def draw(self, rng: np.random.Generator, t0: float, t1: float) -> np.ndarray: ...

    def exhausted_after(self, t_s: float) -> bool: ...

    def mean_rate_hz(self) -> float: ...


def _drawer(spec: ArrivalSpec) -> _Drawer:
    if isinstance(spec, PoissonArrivals):
        return _PoissonDrawer(spec)
    if isinstance(spec, MmppArrivals):
        return _MmppDrawer(spec)
    if isinstance(spec, CameraTrapArrivals):
        return _CameraTrapDrawer(spec)
    if isinstance(spec, RateScheduleArrivals):
        return _ScheduleDrawer(spec)
    raise TypeError(f"generate: not an arrival spec: {spec!r}")


def _first_n(process: _Drawer, rng: np.random.Generator, n: int, spec: ArrivalSpec) -> np.ndarray:
    """The first ``n`` events, extending the horizon until ``n`` events are known to precede it."""
    if n == 0:
        return np.empty(0, dtype=np.float64)
    rate = process.mean_rate_hz()
    horizon = (1.05 * n + 10.0 + 4.0 * math.sqrt(n)) / rate
    chunks: list[np.ndarray] = []
    t0 = 0.0
    for _ in range(_MAX_EXTENSIONS):
        chunks.append(process.draw(rng, t0, horizon))
        times = np.sort(np.concatenate(chunks))
        known = int(np.searchsorted(times, horizon, side="left"))  # later draws only add events >= horizon
        if known >= n:
            return times[:n]
        if process.exhausted_after(horizon):
            raise TraceError(
                f"{spec.kind} arrivals: the rate stays 0 after {horizon:g} s: only {known} of {n} arrivals"
            )
        t0, horizon = horizon, 2.0 * horizon
    raise TraceError(f"{spec.kind} arrivals: fewer than {n} arrivals by {horizon:g} s")


def _scatter(rng: np.random.Generator, starts: np.ndarray, lengths: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Poisson events on disjoint intervals ``[starts, starts + lengths)`` at per-interval ``rates``, unsorted."""
    counts = rng.poisson(rates * lengths)
    offsets = rng.random(int(counts.sum()))
    return np.repeat(starts, counts) + offsets * np.repeat(lengths, counts)


class _PoissonDrawer:
    def __init__(self, spec: PoissonArrivals) -> None:
        self.rate_hz = spec.rate_hz

    def draw(self, rng: np.random.Generator, t0: float, t1: float) -> np.ndarray:
        return _scatter(rng, np.array([t0]), np.array([t1 - t0]), np.array([self.rate_hz]))

    def exhausted_after(self, t_s: float) -> bool:
        return False

    def mean_rate_hz(self) -> float:
        return self.rate_hz


class _MmppDrawer:
    """Sojourns (state, start, end) drawn in vectorised batches; Poisson events scattered in each."""

    def __init__(self, spec: MmppArrivals) -> None:
        self.spec = spec
        self.rates_hz = np.asarray(spec.rates_hz, dtype=np.float64)
        self.dwell_s = np.asarray(spec.mean_dwell_s, dtype=np.float64)
        self.jump = spec.jump_matrix()
        self.state = spec.start_state
        self.state_end_s: float | None = None  # when the current sojourn ends; drawn on first use
        self.mean_cycle_s = float(spec.stationary() @ self.dwell_s)

    def mean_rate_hz(self) -> float:
        return self.spec.mean_rate_hz()

    def exhausted_after(self, t_s: float) -> bool:
        return False

    def draw(self, rng: np.random.Generator, t0: float, t1: float) -> np.ndarray:
        if self.state_end_s is None:
            self.state_end_s = t0 + rng.exponential(self.dwell_s[self.state])
        states, ends = [np.array([self.state])], [np.array([self.state_end_s])]
        while ends[-1][-1] <= t1:
            batch = max(8, math.ceil(1.25 * (t1 - ends[-1][-1]) / self.mean_cycle_s))
            s, e = self._sojourns(rng, int(states[-1][-1]), float(ends[-1][-1]), batch)
            states.append(s)
            ends.append(e)
        state, end = np.concatenate(states), np.concatenate(ends)
        last = int(np.searchsorted(end, t1, side="right"))  # first sojourn still running at t1
        state, end = state[: last + 1], end[: last + 1]
        self.state, self.state_end_s = int(state[-1]), float(end[-1])
        start = np.concatenate([[t0], end[:-1]])
        end = np.minimum(end, t1)
        return _scatter(rng, start, np.maximum(end - start, 0.0), self.rates_hz[state])

    def _sojourns(self, rng: np.random.Generator, state: int, t_s: float, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The next ``count`` states after ``state`` and the times their sojourns end."""
        states = self._next_states(rng, state, count)
        ends = t_s + np.cumsum(rng.exponential(self.dwell_s[states]))
        return states, ends

    def _next_states(self, rng: np.random.Generator, state: int, count: int) -> np.ndarray:
        k = self.rates_hz.size
        if self.spec.transition is None and self.spec.next_state == "cyclic":
            return (state + np.arange(1, count + 1)) % k
        if self.spec.transition is None:
            return (state + np.cumsum(rng.integers(1, k, size=count))) % k
        cumulative = np.cumsum(self.jump, axis=1)
        u = rng.random(count)
        out = np.empty(count, dtype=np.int64)
        for i in range(count):  # a Markov chain: sequential, but over sojourns, not arrivals
            state = min(int(np.searchsorted(cumulative[state], u[i], side="right")), k - 1)
            out[i] = state
        return out


class _CameraTrapDrawer:
    """Triggers in ``[t0, t1)`` (Poisson, or an MMPP with ``trigger_modulation``); bursts returned whole."""

    def __init__(self, spec: CameraTrapArrivals) -> None:
        self.spec = spec
        modulated = spec.trigger_process()
        self.triggers: _Drawer = (
            _PoissonDrawer(PoissonArrivals(spec.trigger_rate_hz)) if modulated is None else _MmppDrawer(modulated)
        )

    def mean_rate_hz(self) -> float:
        return self.spec.mean_rate_hz()

    def exhausted_after(self, t_s: float) -> bool:
        return False

    def draw(self, rng: np.random.Generator, t0: float, t1: float) -> np.ndarray:
        spec = self.spec
        triggers = np.sort(self.triggers.draw(rng, t0, t1))
        sizes = self._burst_sizes(rng, triggers.size)
        total = int(sizes.sum())
        first = np.cumsum(sizes) - sizes  # index of each burst's first frame
        gaps = np.full(total, spec.frame_interval_s)
        if spec.frame_jitter_s > 0:
            gaps += spec.frame_jitter_s * rng.random(total)
        gaps[first] = 0.0
        elapsed = np.cumsum(gaps)
        within = elapsed - np.repeat(elapsed[first], sizes)
        return np.repeat(triggers, sizes) + within

    def _burst_sizes(self, rng: np.random.Generator, count: int) -> np.ndarray:
        spec = self.spec
        if spec.burst_size_dist == "fixed":
            sizes = np.full(count, int(spec.burst_size_mean))
        elif spec.burst_size_dist == "geometric":
            sizes = rng.geometric(1.0 / spec.burst_size_mean, size=count)
        else:
            sizes = 1 + rng.poisson(spec.burst_size_mean - 1.0, size=count)
        return np.minimum(sizes, spec.burst_size_max).astype(np.int64)


class _ScheduleDrawer:
    """Exact Poisson per constant-rate piece, thinned by the diurnal factor when there is one."""

    def __init__(self, spec: RateScheduleArrivals) -> None:
        self.spec = spec

    def mean_rate_hz(self) -> float:
        spec = self.spec
        if spec.mean_rate_hz is not None:
            return spec.mean_rate_hz
        rates = np.asarray(spec.rates_hz)
        if spec.repeat_s is not None:
            widths = np.diff([*spec.times_s, spec.repeat_s])
            return float(rates @ widths / spec.repeat_s)
        return float(rates[-1]) if rates[-1] > 0 else float(rates.max())

    def exhausted_after(self, t_s: float) -> bool:
        spec = self.spec
        return (
            spec.mean_rate_hz is None and spec.repeat_s is None and spec.rates_hz[-1] == 0 and t_s >= spec.times_s[-1]
        )

    def draw(self, rng: np.random.Generator, t0: float, t1: float) -> np.ndarray:
        starts, ends = self._pieces(t0, t1)
        lengths = ends - starts
        peak = 1.0 + self.spec.amplitude
        times = _scatter(rng, starts, lengths, self.spec.base_rate_hz(starts + 0.5 * lengths) * peak)
        if self.spec.amplitude == 0:
            return times
        keep = rng.random(times.size) * peak < self.spec.modulation(times)
        return times[keep]

    def _pieces(self, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
        """Constant-base-rate intervals covering ``[t0, t1)``."""
        spec = self.spec
        if spec.mean_rate_hz is not None:
            return np.array([t0]), np.array([t1])
        points = np.asarray(spec.times_s, dtype=np.float64)
        if spec.repeat_s is not None:
            cycles = np.arange(math.floor(t0 / spec.repeat_s), math.floor(t1 / spec.repeat_s) + 1)
            points = (cycles[:, None] * spec.repeat_s + points[None, :]).ravel()
        edges = np.unique(np.clip(np.concatenate([points, [t0, t1]]), t0, t1))
        return edges[:-1], edges[1:]
