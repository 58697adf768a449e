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
from typing import Any

import numpy as np

from edgeprune.config import Ctx
from edgeprune.errors import TraceError

__all__ = ["BYTES_PER_REQUEST_STAGE", "MAX_REQUESTS", "check_run_size", "memory_limit_bytes"]

#: Simulator memory per request, stage and policy (measured ~135 B, see the module docstring; rounded up).
BYTES_PER_REQUEST_STAGE = 160
#: Most requests in one run: request indices are int32 in places, and 2^31 requests are days of simulation.
MAX_REQUESTS = 2**31 - 1
#: A rate that cannot run even one day within MAX_REQUESTS is blamed on the rate, not the duration.
_DAY_S = 86400.0


def memory_limit_bytes() -> int:
    """This machine's physical memory (the largest run that could possibly fit)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):  # not POSIX: no memory limit beyond the count
        return 2**62


def check_run_size(
    ctx: Ctx, *, arrivals: Any, duration_s: float | None, n_requests: int | None, n_stages: int, n_policies: int
) -> None:
    """Raise a :class:`ConfigError` at the key responsible when the run's requests or memory exceed the limits."""
    value: object
    if n_requests is not None:
        key, value, count, how = "n_requests", n_requests, float(n_requests), ""
    else:
        assert duration_s is not None
        rate_key, rate_hz = _mean_rate(arrivals, duration_s)
        if rate_hz is None:
            return
        count = rate_hz * duration_s
        if not math.isfinite(rate_hz) or rate_hz * _DAY_S > MAX_REQUESTS:
            key, value, how = rate_key, getattr(arrivals, rate_key.split(".")[-1], rate_hz), f" over {duration_s:g} s"
        else:
            key, value, how = "duration_s", duration_s, f" at a mean arrival rate of {rate_hz:.3g} Hz"
    memory = count * n_stages * n_policies * BYTES_PER_REQUEST_STAGE
    limit = memory_limit_bytes()
    if math.isfinite(count) and count <= MAX_REQUESTS and memory <= limit:
        return
    raise ctx.child(key).error(
        value,
        f"about {count:.3g} requests{how}, needing ~{_size(memory)} of memory for {n_policies} "
        f"policies; the limit is {MAX_REQUESTS:,} requests and {_size(limit)} (this machine's memory)",
    )


def _mean_rate(arrivals: Any, duration_s: float) -> tuple[str, float | None]:
    """The key holding the arrival rate and the mean rate over ``[0, duration_s)`` (None: bounded by a trace)."""
    kind = getattr(arrivals, "kind", "")
    if kind == "poisson":
        return "arrivals.rate_hz", float(arrivals.rate_hz)
    if kind in ("mmpp", "camera-trap"):
        key = "arrivals.rates_hz" if kind == "mmpp" else "arrivals.trigger_rate_hz"
        with np.errstate(all="ignore"):
            rate = float(arrivals.mean_rate_hz())
        return key, rate if math.isfinite(rate) else math.inf
    if kind == "schedule":
        key = "arrivals.mean_rate_hz" if arrivals.mean_rate_hz is not None else "arrivals.rates_hz"
        return key, _schedule_mean(arrivals, duration_s)
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
    if not math.isfinite(n_bytes):
        return "unbounded memory"
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.3g} {unit}"
    return f"{n_bytes / 2**10:.3g} KiB"
