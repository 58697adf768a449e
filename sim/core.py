"""The engine's data: the compiled setup, the raw output, and the pieces both request paths share.

``sim.engine`` (per-event path, bounded queues) and ``sim.window`` (windowed path, unbounded queues) are two
implementations of one model; they import their common types and checks from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from heapq import heappush
from typing import Any

import numpy as np
import simpy
from simpy.events import NORMAL

from edgeprune.controller.contract import Policy, StageObs
from edgeprune.errors import PolicyError

__all__ = [
    "DONE",
    "DROPPED",
    "NO_LEVEL",
    "TIMELINE_COLUMNS",
    "UNFINISHED",
    "EngineOutput",
    "Env",
    "Ev",
    "SimSetup",
    "check_decision",
    "timeline_columns",
]

DONE, DROPPED, UNFINISHED = 0, 1, 2
NO_LEVEL = 255


@dataclass(frozen=True)
class SimSetup:
    """Everything numeric the engine needs, compiled from a scenario and its profile."""

    stage_names: tuple[str, ...]
    samples_s: tuple[tuple[tuple[float, ...], ...], ...]  # [stage][level] sorted latency samples
    mean_s: tuple[tuple[float, ...], ...]  # [stage][level] nominal time: PipelineCurves.latency_s units
    switch_s: float
    hop_tx_s: tuple[float, ...]  # len n_stages - 1
    hop_latency_s: tuple[float, ...]
    env_changes: tuple[tuple[float, int, float], ...]  # (time_s, stage, factor from then on), time-sorted
    initial_factor: tuple[float, ...]  # per stage, at time 0 (1 / speed x slowdowns active at 0)
    queue_capacity: int | None
    drop_head: bool
    period_s: float
    end_s: float  # the simulation stops here; requests still inside are unfinished
    speed: tuple[float, ...] | None = None  # per stage; the oracle's factors exclude it (default all 1)

    @property
    def n_stages(self) -> int:
        """Number of stages."""
        return len(self.stage_names)

    @property
    def n_levels(self) -> int:
        """Rungs on the ladder."""
        return len(self.mean_s[0])


@dataclass
class EngineOutput:
    """Raw per-request and per-period records of one run (converted to tables by ``sim.runner``)."""

    departure_s: np.ndarray
    status: np.ndarray  # DONE / DROPPED / UNFINISHED
    dropped_at: np.ndarray  # stage index, -1 if not dropped
    levels: np.ndarray  # [n, n_stages] uint8, NO_LEVEL where not served
    service_s: np.ndarray  # [n, n_stages] service time incl. switch cost, NaN where not served
    timeline: dict[str, list[Any]]
    switches: int
    events: int


class Ev:
    """The smallest object SimPy's scheduler accepts as an event (``callbacks`` and ``_ok``)."""

    __slots__ = ("_ok", "_value", "callbacks", "job", "stage")

    def __init__(self, stage: int = -1, job: int = -1) -> None:
        self._ok = True
        self._value = None
        self.callbacks: Any = None  # list of callables while scheduled, None once processed (SimPy)
        self.stage = stage
        self.job = job


class Env(simpy.Environment):
    """SimPy's environment plus scheduling at an absolute time (exact tick and arrival times)."""

    def at(self, event: Any, time_s: float) -> None:
        """Schedule ``event`` at absolute time ``time_s`` (never before now)."""
        heappush(self._queue, (max(time_s, self._now), NORMAL, next(self._eid), event))


TIMELINE_COLUMNS = (
    "time_s",
    "stage",
    "level",
    "decided",
    "queue_len",
    "busy",
    "arrivals",
    "served",
    "busy_s",
    "nominal_s",
    "dropped",
)


def timeline_columns(
    log: Sequence[tuple[float, tuple[int, ...], tuple[StageObs, ...]]], k_n: int
) -> dict[str, list[Any]]:
    """The per-period timeline (one row per tick and stage) from the ticks' (time, decision, observation)."""
    if not log:
        return {c: [] for c in TIMELINE_COLUMNS}
    stage_rows = [st for _, _, stages in log for st in stages]
    fields = list(zip(*stage_rows, strict=True))  # StageObs field order = TIMELINE_COLUMNS[4:] with level first
    cols: dict[str, list[Any]] = {
        "time_s": [t for t, _, _ in log for _ in range(k_n)],
        "stage": list(range(k_n)) * len(log),
        "level": list(fields[0]),
        "decided": [v for _, d, _ in log for v in d],
    }
    for name, col in zip(StageObs._fields[1:], fields[1:], strict=True):
        cols[name] = list(col)
    return {c: cols[c] for c in TIMELINE_COLUMNS}


def check_decision(policy: Policy, decided: object, now: float, k_n: int, n_levels: int) -> tuple[int, ...]:
    """A policy's answer must be one ladder level per stage (returned as a tuple of ints); else PolicyError."""
    if type(decided) is tuple and len(decided) == k_n:  # the common answer, checked cheaply
        for v in decided:
            if type(v) is not int or not 0 <= v < n_levels:
                break
        else:
            return decided
    ok = isinstance(decided, (tuple, list)) and len(decided) == k_n
    if ok:
        assert isinstance(decided, (tuple, list))
        for v in decided:
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or not 0 <= v < n_levels:
                ok = False
                break
    if not ok:
        raise PolicyError(
            f"policy {type(policy).__name__} returned {decided!r} at t={now:g}s: "
            f"expected {k_n} levels in 0..{n_levels - 1}"
        )
    assert isinstance(decided, (tuple, list))
    return tuple(int(v) for v in decided)
