"""What the coordinator saw during one policy's run, turned into the simulator's result schema.

:class:`RunRecorder` collects per-request facts (arrival on the scenario's clock, result time on the
coordinator's monotonic clock, levels served at, the stage that dropped it) and one timeline row per control
period and stage; :meth:`RunRecorder.result` builds the identical :class:`~edgeprune.results.RunResult`
(``requests`` and ``timeline`` with the simulator's columns and types, ``summary`` from
:func:`~edgeprune.results.summarise`).  Requests with no result are ``unfinished``, so a run cut short by a
failure still yields a valid, partial result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from edgeprune.controller import Levels, Observation, PipelineCurves, StageObs
from edgeprune.records import DONE, DROPPED, RAW_TIMELINE, UNFINISHED, request_accuracy, requests_table, timeline_table
from edgeprune.results import RunResult, summarise

__all__ = ["RunRecorder", "stage_obs"]


def stage_obs(report: dict[str, Any]) -> StageObs:
    """The controller's per-stage observation from one worker report."""
    return StageObs(
        level=int(report["level"]),
        queue_len=int(report["queue_len"]),
        busy=bool(report["busy"]),
        arrivals=int(report["arrivals"]),
        served=int(report["served"]),
        busy_s=float(report["busy_s"]),
        nominal_s=float(report["nominal_s"]),
        dropped=int(report["dropped"]),
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
    timeline: dict[str, list[Any]] = field(default_factory=lambda: {c: [] for c in RAW_TIMELINE})
    switches: int = 0
    late_results: int = 0
    period_s: float = 1.0

    def __post_init__(self) -> None:
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
            for rid in rep.get("dropped_ids", []):
                self.dropped(int(rid), k)

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
        return RunResult(policy=self.policy, requests=requests, timeline=self.timeline_table(), summary=summary)
