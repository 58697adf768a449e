"""What the coordinator saw during one policy's run, turned into the simulator's result schema.

:class:`RunRecorder` collects per-request facts (arrival on the scenario's clock, result time on the
coordinator's monotonic clock, levels served at, the stage that dropped it) and one timeline row per control
period and stage; :meth:`RunRecorder.result` builds the identical :class:`~edgeprune.results.RunResult`
(``requests`` and ``timeline`` with the simulator's columns and types, ``summary`` from
:func:`~edgeprune.results.summarise`).  Each period's node readings (``hil.readings``) fill the simulator's
physics columns (``temp_c``, ``freq_mhz``, ``power_w``: the meter or the node's power model at the measured
utilisation and frequency — an emulated node's utilisation by the emulator's rule —, ``throttled``) plus the
measured ``cpu_stage_s`` / ``cpu_other_s``, and the summary gets the simulator's physics keys from the same
:func:`edgeprune.physics.physics_summary`.  Requests with no result are ``unfinished``, so a run cut short by a
failure still yields a valid, partial result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from edgeprune.controller import Levels, Observation, PipelineCurves, StageObs
from edgeprune.physics import DevicePhysics, MeasuredNode, physics_summary
from edgeprune.records import (
    CPU_TIMELINE,
    DONE,
    DROPPED,
    PHYSICS_TIMELINE,
    RAW_TIMELINE,
    UNFINISHED,
    request_accuracy,
    requests_table,
    timeline_table,
)
from edgeprune.results import RunResult, summarise
from hil.thermal_emulator import emulated_quota_cpus, emulated_util

__all__ = ["RunRecorder", "stage_obs"]


def _reading(report: dict[str, Any], key: str) -> float:
    """A node reading of a report as a float (NaN: unknown)."""
    v = report.get(key)
    return math.nan if v is None else float(v)


def stage_obs(report: dict[str, Any], node: MeasuredNode | None = None) -> StageObs:
    """The controller's per-stage observation from one worker report (with the node's readings: ``node``
    says whether the node is throttled where it has no flag of its own)."""
    freq_mhz = _reading(report, "freq_mhz")
    flag = report.get("throttled")
    throttled = node.throttled(flag, freq_mhz) == 1.0 if node is not None else bool(flag)
    return StageObs(
        level=int(report["level"]),
        queue_len=int(report["queue_len"]),
        busy=bool(report["busy"]),
        arrivals=int(report["arrivals"]),
        served=int(report["served"]),
        busy_s=float(report["busy_s"]),
        nominal_s=float(report["nominal_s"]),
        dropped=int(report["dropped"]),
        temp_c=_reading(report, "temp_c"),
        freq_mhz=freq_mhz,
        throttled=throttled,
    )


@dataclass
class RunRecorder:
    """Facts of one policy's run (see the module docstring)."""

    policy: str
    stage_names: tuple[str, ...]
    arrivals_s: np.ndarray
    warmup_s: float
    curves: PipelineCurves
    sent_s: np.ndarray = field(init=False)
    departure_s: np.ndarray = field(init=False)
    levels: np.ndarray = field(init=False)
    dropped_at: list[str | None] = field(init=False)
    node_physics: Sequence[DevicePhysics | None] = ()  # per stage: its host's power model (cluster file)
    emulated_cpus: Sequence[float | None] = ()  # per stage: its host's quota at the top step if emulated, else None
    timeline: dict[str, list[Any]] = field(
        default_factory=lambda: {c: [] for c in (*RAW_TIMELINE, *PHYSICS_TIMELINE, *CPU_TIMELINE)}
    )
    switches: int = 0
    late_results: int = 0
    period_s: float = 1.0
    nodes: list[MeasuredNode] = field(init=False)  # per stage: its node's readings (edgeprune.physics)
    measured_s: float = 0.0  # time covered by the control periods (the nodes' figures)

    def __post_init__(self) -> None:
        physics = list(self.node_physics) or [None] * len(self.stage_names)
        self.nodes = [MeasuredNode(p) for p in physics]
        n = self.arrivals_s.size
        self.sent_s = np.full(n, np.nan)
        self.departure_s = np.full(n, np.nan)
        self.levels = np.full((n, len(self.stage_names)), -1, dtype=np.int16)
        self.dropped_at = [None] * n

    @property
    def accounted(self) -> int:
        """Requests with a final fate (done or dropped)."""
        return int(np.isfinite(self.departure_s).sum()) + sum(d is not None for d in self.dropped_at)

    def sent(self, rid: int, now_s: float) -> None:
        """Request ``rid`` left the coordinator at ``now_s`` (run clock)."""
        self.sent_s[rid] = now_s

    def result_arrived(self, rid: int, now_s: float, levels: Sequence[int]) -> None:
        """Request ``rid``'s result arrived at ``now_s`` after being served at ``levels``."""
        if not 0 <= rid < self.departure_s.size or np.isfinite(self.departure_s[rid]):
            self.late_results += 1
            return
        self.departure_s[rid] = now_s
        self.levels[rid, : len(levels)] = levels

    def dropped(self, rid: int, stage: int) -> None:
        """Request ``rid`` was dropped at ``stage``'s queue."""
        if 0 <= rid < len(self.dropped_at) and self.dropped_at[rid] is None:
            self.dropped_at[rid] = self.stage_names[stage]

    def period(self, obs: Observation, decided: Levels, reports: Sequence[dict[str, Any]]) -> None:
        """One control period: the observation, the policy's answer and the raw reports."""
        self.period_s = obs.period_s
        for k, (st, rep) in enumerate(zip(obs.stages, reports, strict=True)):
            self.switches += int(rep.get("switches", 0))
            row = (obs.time_s, k, st.level, int(decided[k]), st.queue_len, st.busy, st.arrivals, st.served)
            for name, value in zip(RAW_TIMELINE, (*row, st.busy_s, st.nominal_s, st.dropped), strict=True):
                self.timeline[name].append(value)
            self._node_period(k, obs.period_s, st, rep)
            for rid in rep.get("dropped_ids", []):
                self.dropped(int(rid), k)
        self.measured_s += obs.period_s

    def _node_period(self, k: int, period_s: float, st: StageObs, rep: dict[str, Any]) -> None:
        """Stage ``k``'s node over one period: its readings, CPU times, power and throttle state."""
        temp_c, freq_mhz = st.temp_c, st.freq_mhz
        stage_s, other_s = _reading(rep, "cpu_stage_s"), _reading(rep, "cpu_other_s")
        busy_cores = self._busy_cores(k, period_s, st, stage_s, other_s)
        flag = rep.get("throttled")
        power_w, throttled = self.nodes[k].add(period_s, temp_c, freq_mhz, flag, busy_cores, _reading(rep, "power_w"))
        for name, value in zip(
            (*PHYSICS_TIMELINE, *CPU_TIMELINE), (temp_c, freq_mhz, power_w, throttled, stage_s, other_s), strict=True
        ):
            self.timeline[name].append(value)

    def _busy_cores(self, k: int, period_s: float, st: StageObs, stage_s: float, other_s: float) -> float:
        """Stage ``k``'s node's busy cores over the period: its CPU time per second, or, on a node whose physics
        the coordinator emulates, the emulator's busy fraction (``hil.thermal_emulator.emulated_util``: a capped
        node's CPU time understates how long its services keep a Pi's cores busy) times the cores a service
        uses, so the timeline's power and energy are the emulated node's."""
        if period_s <= 0:
            return math.nan
        phys = self.nodes[k].phys
        base_cpus = self.emulated_cpus[k] if self.emulated_cpus else None
        if base_cpus is None or phys is None or math.isnan(st.freq_mhz) or math.isnan(stage_s + other_s):
            return (stage_s + other_s) / period_s
        freqs = phys.dvfs.freqs_mhz
        step = min(range(len(freqs)), key=lambda i: abs(freqs[i] - st.freq_mhz))  # the emulator's step
        quota_cpus = emulated_quota_cpus(phys, base_cpus, step)
        return emulated_util(st.busy_s, stage_s + other_s, stage_s, period_s, quota_cpus) * phys.service_cores

    def requests_table(self) -> pl.DataFrame:
        """Per-request rows (``edgeprune.records``, shared with the simulator)."""
        done = np.isfinite(self.departure_s)
        names = list(self.stage_names)
        dropped_at = np.array([-1 if d is None else names.index(d) for d in self.dropped_at], dtype=np.int16)
        status = np.where(done, DONE, np.where(dropped_at >= 0, DROPPED, UNFINISHED)).astype(np.uint8)
        levels = np.where(done[:, None], self.levels, -1)
        accuracy = request_accuracy(levels, done, self.curves.accuracy, self.curves.n_levels)
        return requests_table(
            names,
            self.arrivals_s.astype(np.float64),
            self.departure_s,
            status,
            dropped_at,
            levels,
            warmup_s=self.warmup_s,
            accuracy=accuracy,
        )

    def timeline_table(self) -> pl.DataFrame:
        """Per-period rows (``edgeprune.records``, shared with the simulator)."""
        return timeline_table(self.timeline, self.stage_names, self.period_s)

    def result(self, *, slo_s: float, window_end_s: float) -> RunResult:
        """The :class:`RunResult` (summary over ``[warmup_s, window_end_s)``)."""
        requests = self.requests_table()
        summary = summarise(
            requests, slo_s=slo_s, window_start_s=self.warmup_s, window_end_s=window_end_s, switches=self.switches
        )
        completed = int((requests["status"] == "done").sum())
        physics = physics_summary([n.figures() for n in self.nodes], completed, self.measured_s)
        if physics["time_at_freq_s"] or any(physics[k] is not None for k in ("energy_j", "peak_temp_c", "throttled_s")):
            summary.update(physics)  # the simulator's physics keys, from what the nodes reported
        return RunResult(policy=self.policy, requests=requests, timeline=self.timeline_table(), summary=summary)
