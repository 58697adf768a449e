"""Size limits checked when a scenario is read: refuse a run that cannot fit before drawing anything.

A scenario's request count is ``n_requests`` or ``duration_s`` × the arrival process's mean rate; a typo
such as ``duration_s = 1e9`` or ``rate_hz = 1e308`` would otherwise end minutes later in a numpy
``Unable to allocate 217 GiB`` (or an overflow inside a generator).  :func:`check_run_size` estimates the
request count and the memory the simulator holds for it and raises a one-line
:class:`~edgeprune.errors.ConfigError` naming the key, its value and the limit.

The memory figure is an estimate from a measurement, not a bound: ``scenarios/bursty.toml`` (4 stages, one
policy) peaked at 306 MiB with 100k requests and 790 MiB with 1M on the project's x86 reference machine
(``ru_maxrss``), ~540 B per request, i.e. ~135 B per request and stage; :data:`BYTES_PER_REQUEST_STAGE`
rounds that up, and every policy's results are held until the run ends.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeprune.config import Ctx
from edgeprune.errors import TraceError

__all__ = ["BYTES_PER_REQUEST_STAGE", "BYTES_PER_TICK_STAGE", "MAX_ITEMS", "check_run_size", "memory_limit_bytes"]

#: Simulator memory per request, stage and policy (measured ~135 B, see the module docstring; rounded up).
BYTES_PER_REQUEST_STAGE = 160
#: Memory per controller period and stage: one timeline row (11 eight-byte columns) and its observation;
#: an assumption from the timeline schema, rounded up, not measured.
BYTES_PER_TICK_STAGE = 160
#: Memory per MMPP state visit or schedule piece drawn (a time and a rate, float64); from the generators.
BYTES_PER_PIECE = 16
#: Most items (requests, periods, state changes) of one kind in a run: indices are int32 in places, and
#: 2^31 of them are days of simulation.
MAX_ITEMS = 2**31 - 1
MAX_REQUESTS = MAX_ITEMS
#: A rate that cannot run even one day within MAX_ITEMS is blamed on the rate, not the duration.
_DAY_S = 86400.0


@dataclass(frozen=True)
class _Load:
    """One thing a run holds many of: the key responsible, its value, how many, and bytes for them all."""

    key: str
    value: object
    count: float
    noun: str
    how: str
    bytes_total: float


def memory_limit_bytes() -> int:
    """This machine's physical memory (the largest run that could possibly fit)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):  # not POSIX: no memory limit beyond the counts
        return 2**62


def check_run_size(
    ctx: Ctx,
    *,
    arrivals: Any,
    duration_s: float | None,
    n_requests: int | None,
    drain_s: float,
    n_stages: int,
    periods_s: Sequence[float],
) -> None:
    """Raise a :class:`ConfigError` at the key responsible when a run's sizes exceed the limits.

    ``periods_s`` holds each policy's control period (the scenario's ``policy[i].period_s``).
    """
    loads = _loads(arrivals, duration_s, n_requests, drain_s, n_stages, periods_s)
    limit = memory_limit_bytes()
    total = sum(load.bytes_total for load in loads)
    over = [ld for ld in loads if not math.isfinite(ld.count) or ld.count > MAX_ITEMS]
    if not over and total <= limit:
        return
    worst = over[0] if over else max(loads, key=lambda ld: ld.bytes_total)
    count = f"about {worst.count:.3g}" if math.isfinite(worst.count) else "an unbounded number of"
    memory = f"~{_size(total)} of memory in all" if math.isfinite(total) else "unbounded memory"
    raise ctx.child(worst.key).error(
        worst.value,
        f"{count} {worst.noun}{worst.how}, needing {memory}; "
        f"the limit is {MAX_ITEMS:,} {worst.noun} and {_size(limit)} (this machine's memory)",
    )


def _loads(
    arrivals: Any,
    duration_s: float | None,
    n_requests: int | None,
    drain_s: float,
    n_stages: int,
    periods_s: Sequence[float],
) -> list[_Load]:
    """The run's requests, controller periods and generator pieces, each with the key that sets it."""
    n_policies = max(len(periods_s), 1)
    per_request = n_stages * n_policies * BYTES_PER_REQUEST_STAGE
    rate_key, rate_hz = _mean_rate(arrivals, duration_s)
    loads: list[_Load] = []
    if n_requests is not None:
        loads.append(_Load("n_requests", n_requests, float(n_requests), "requests", "", n_requests * per_request))
        span_s = n_requests / rate_hz if rate_hz else None
    else:
        assert duration_s is not None
        span_s = duration_s
        if rate_hz is not None:
            count = rate_hz * duration_s
            if not math.isfinite(rate_hz) or rate_hz * _DAY_S > MAX_ITEMS:
                key, value, how = rate_key, _value(arrivals, rate_key, rate_hz), f" over {duration_s:g} s"
            else:
                key, value, how = "duration_s", duration_s, f" at a mean arrival rate of {rate_hz:.3g} Hz"
            loads.append(_Load(key, value, count, "requests", how, count * per_request))
    if span_s is None or not math.isfinite(span_s):
        return loads
    for i, period_s in enumerate(periods_s):
        ticks = (span_s + drain_s) / period_s
        how = f" over {span_s + drain_s:g} s"
        memory = ticks * n_stages * BYTES_PER_TICK_STAGE
        loads.append(_Load(f"policy[{i}].period_s", period_s, ticks, "controller periods", how, memory))
    loads.extend(_generator_pieces(arrivals, span_s))
    return loads


def _generator_pieces(arrivals: Any, span_s: float) -> list[_Load]:
    """MMPP state visits and schedule pieces the generator draws over ``span_s``."""
    kind = getattr(arrivals, "kind", "")
    if kind == "mmpp":
        count = span_s / min(arrivals.mean_dwell_s)
        value = list(arrivals.mean_dwell_s)
        how = f" over {span_s:g} s"
        return [_Load("arrivals.mean_dwell_s", value, count, "MMPP state changes", how, count * BYTES_PER_PIECE)]
    if kind == "schedule" and arrivals.repeat_s is not None:
        count = span_s / arrivals.repeat_s * len(arrivals.times_s)
        how = f" over {span_s:g} s"
        return [_Load("arrivals.repeat_s", arrivals.repeat_s, count, "schedule pieces", how, count * BYTES_PER_PIECE)]
    return []


def _value(arrivals: Any, key: str, default: float) -> object:
    value = getattr(arrivals, key.split(".")[-1], default)
    return list(value) if isinstance(value, tuple) else value


def _mean_rate(arrivals: Any, duration_s: float | None) -> tuple[str, float | None]:
    """The key holding the arrival rate and the mean rate over ``[0, duration_s)`` (None: bounded by a trace)."""
    kind = getattr(arrivals, "kind", "")
    if kind == "poisson":
        return "arrivals.rate_hz", float(arrivals.rate_hz)
    if kind == "mmpp":
        with np.errstate(all="ignore"):
            rate = float(arrivals.mean_rate_hz())
        return "arrivals.rates_hz", rate if math.isfinite(rate) else math.inf
    if kind == "camera-trap":  # the unclipped mean burst: an upper bound, cheap for any burst_size_max
        return "arrivals.trigger_rate_hz", float(arrivals.trigger_rate_hz) * float(arrivals.burst_size_mean)
    if kind == "schedule":
        key = "arrivals.mean_rate_hz" if arrivals.mean_rate_hz is not None else "arrivals.rates_hz"
        return key, _schedule_mean(arrivals, duration_s if duration_s is not None else 86400.0)
    if kind == "replay" and arrivals.loop:
        return "arrivals.speedup", _looped_rate(arrivals)
    return "arrivals", None


def _schedule_mean(arrivals: Any, duration_s: float) -> float:
    """Mean of a rate schedule over the run, from a fine grid (exact enough for a limit)."""
    horizon = min(duration_s, 1e12)
    with np.errstate(all="ignore"):
        grid = np.linspace(0.0, horizon, 20001)
        rate = float(np.mean(arrivals.rate_hz_at(grid)))
    return rate if math.isfinite(rate) else math.inf


def _looped_rate(arrivals: Any) -> float | None:
    from traces.replay import load_replay, loop_period_s

    try:
        info = load_replay(arrivals)
        return info.n_events / loop_period_s(arrivals, info)
    except TraceError:  # reported when the arrivals are drawn, with the trace's own message
        return None


def _size(n_bytes: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.3g} {unit}"
    return f"{n_bytes / 2**10:.3g} KiB"
