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
    timeline: list[dict[str, Any]] = field(default_factory=list)
    switches: int = 0
    late_results: int = 0

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
        for k, (st, rep) in enumerate(zip(obs.stages, reports, strict=True)):
            self.switches += int(rep.get("switches", 0))
            self.timeline.append(
                {
                    "time_s": obs.time_s,
                    "stage": self.stage_names[k],
                    "level": st.level,
                    "decided": int(decided[k]),
                    "queue_len": st.queue_len,
                    "busy": st.busy,
                    "arrivals": st.arrivals,
                    "arrival_rate_hz": obs.arrival_rate_hz if obs.period_s > 0 else None,
                    "served": st.served,
                    "service_time_s": st.service_time_s,
                    "env_factor": st.env_factor,
                    "dropped": st.dropped,
                }
            )
            for rid in rep.get("dropped_ids", []):
                self.dropped(int(rid), k)

    def _accuracy(self, done: np.ndarray) -> np.ndarray:
        acc = np.full(done.size, np.nan)
        if self.curves.accuracy is None:
            return acc
        for i in np.flatnonzero(done):
            acc[i] = self.curves.accuracy.of(tuple(int(v) for v in self.levels[i]))
        return acc

    def requests_table(self) -> pl.DataFrame:
        """Per-request rows, the simulator's columns and types."""
        done = np.isfinite(self.departure_s)
        dropped = np.array([d is not None for d in self.dropped_at], dtype=bool) & ~done
        status = np.where(done, "done", np.where(dropped, "dropped", "unfinished"))
        cols: dict[str, pl.Series] = {
            "request_id": pl.Series(np.arange(done.size, dtype=np.uint32)),
            "arrival_s": pl.Series(self.arrivals_s.astype(np.float64)),
            "departure_s": pl.Series(self.departure_s, nan_to_null=True),
            "latency_s": pl.Series(np.where(done, self.departure_s - self.arrivals_s, np.nan), nan_to_null=True),
            "status": pl.Series(status.astype(str)),
            "dropped_at": pl.Series(
                [d if s else None for d, s in zip(self.dropped_at, dropped.tolist(), strict=True)], dtype=pl.String
            ),
            "in_warmup": pl.Series(self.arrivals_s < self.warmup_s),
            "accuracy": pl.Series(self._accuracy(done), nan_to_null=True),
        }
        for k, name in enumerate(self.stage_names):
            lv = np.where(done, self.levels[:, k], -1).astype(np.int8)
            cols[f"level_{name}"] = pl.Series(lv).replace(-1, None)
        return pl.DataFrame(cols)

    def timeline_table(self) -> pl.DataFrame:
        """Per-period rows, the simulator's columns and types."""
        schema = {
            "time_s": pl.Float64,
            "stage": pl.String,
            "level": pl.Int8,
            "decided": pl.Int8,
            "queue_len": pl.Int32,
            "busy": pl.Boolean,
            "arrivals": pl.Int32,
            "arrival_rate_hz": pl.Float64,
            "served": pl.Int32,
            "service_time_s": pl.Float64,
            "env_factor": pl.Float64,
            "dropped": pl.Int32,
        }
        return pl.DataFrame(self.timeline, schema=schema)

    def result(self, *, slo_s: float, window_end_s: float) -> RunResult:
        """The :class:`RunResult` (summary over ``[warmup_s, window_end_s)``)."""
        requests = self.requests_table()
        summary = summarise(
            requests, slo_s=slo_s, window_start_s=self.warmup_s, window_end_s=window_end_s, switches=self.switches
        )
        return RunResult(policy=self.policy, requests=requests, timeline=self.timeline_table(), summary=summary)
