"""The engine's data: the compiled setup and the raw output, shared by the reference model
(``sim.reference``) and the fast path (``sim.window``), two implementations of one model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeprune.physics import DevicePhysics

__all__ = ["DONE", "DROPPED", "NO_LEVEL", "UNFINISHED", "EngineOutput", "SimSetup"]

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
    physics: tuple[DevicePhysics | None, ...] = ()  # per stage: its node's physics (empty: none)
    tenant_seeds: tuple[np.random.SeedSequence, ...] = ()  # per stage: draws its node's tenant schedule

    @property
    def has_physics(self) -> bool:
        """Whether any stage's node has device physics."""
        return any(p is not None for p in self.physics)

    @property
    def n_stages(self) -> int:
        """Number of stages."""
        return len(self.stage_names)

    @property
    def n_ticks(self) -> int:
        """Room for every tick of a run (``n * period_s < end_s``, ``n >= 0``; one more for rounding)."""
        return math.ceil(self.end_s / self.period_s) + 2

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
    timeline: dict[str, np.ndarray]  # edgeprune.records.RAW_TIMELINE (+ PHYSICS_TIMELINE), a column each
    switches: int
    heat: dict[int, Any] | None = None  # per stage with physics: its sim.physics.NodeHeat (log, state)
    start_s: np.ndarray | None = None  # [n, n_stages] service starts (NaN where not served); with physics
