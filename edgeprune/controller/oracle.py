"""``oracle``: perfect information — the true environment factors and the future arrivals.

Only for reports: it shows how far an online policy is from what its search could do knowing the truth
(a reference, not a proven optimum: it still fixes one vector per period and searches greedily).  It
declares ``wants_oracle = True``, so the backend adds an :class:`~edgeprune.controller.OracleView`.

Every period:

1. **Truth**: the arrival times of the requests now in the pipeline (the last ones to arrive, oldest at the
   last stage: FIFO stages keep order) and of those arriving within ``horizon_s``; each stage's true factor.
2. **Exact forecast** of every one of those requests' latency for a level vector, with each stage's mean
   service time times ``safety`` (the tandem max-plus recursion, vectorised per stage:
   ``D[i] = (i + 1) s + max(t0, cummax_j(R[j] − j s))``).
3. **Greedy path, binary search**: from no pruning, prune one rung of the stage with the longest true
   service time per accuracy lost, never below ``min_accuracy``; the exact latencies only fall along that
   path, so a binary search finds its first vector whose share of known requests within the SLO reaches
   ``target_attainment`` in ~log2(path length) forecasts.  No hysteresis: it knows.

``OracleView.env_factor`` multiplies ``PipelineCurves.latency_s`` (the device speed is already in the
curves), so a slowdown active from time 0 is seen like any other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgeprune.config import spec_field
from edgeprune.controller.contract import Levels, Observation, PipelineCurves
from edgeprune.controller.estimate import AccuracyTable
from edgeprune.controller.greedy import GreedyPath
from edgeprune.controller.params import AdaptiveParams
from edgeprune.controller.registry import PolicyKind, register
from edgeprune.errors import PolicyError

__all__ = ["OracleParams", "OraclePolicy"]


@dataclass(frozen=True)
class OracleParams(AdaptiveParams):
    """Parameters of ``kind = "oracle"``."""

    target_attainment: float = spec_field(default=0.99, gt=0, le=1, doc="share of known requests within the SLO")
    horizon_s: float | None = spec_field(default=None, gt=0, doc="look-ahead (default: 10 periods or the SLO)")
    safety: float = spec_field(default=1.05, ge=1, doc="service times are taken as mean x safety")


@dataclass
class _Known:
    """The requests whose latency the oracle forecasts, oldest first."""

    arrival_s: np.ndarray
    first: list[int]  # first[k]: index of the first request still to be served by stage k
    now_s: float


class OraclePolicy:
    """Greedy search on an exact forecast of the known requests (see the module docstring)."""

    wants_oracle = True

    def __init__(self, params: OracleParams, curves: PipelineCurves) -> None:
        self.p = params
        self.c = curves
        self._top = params.top_level(curves.n_levels)
        self._horizon_s = params.horizon_s if params.horizon_s is not None else max(curves.slo_s, 10 * params.period_s)
        self._acc = AccuracyTable(curves)

    def decide(self, observation: Observation) -> Levels:
        """Levels for the next period (see the module docstring)."""
        view = observation.oracle
        if view is None:
            raise PolicyError("oracle: the backend gave no OracleView (it needs wants_oracle support)")
        factor = list(view.env_factor)
        known = self._known(observation, view.arrivals_s)
        if known.arrival_s.size == 0:
            return (0,) * self.c.n_stages
        return tuple(self._search(known, factor))

    def _known(self, obs: Observation, arrivals_s: np.ndarray) -> _Known:
        now = obs.time_s
        n_now = int(np.searchsorted(arrivals_s, now, side="right"))
        in_system = [st.queue_len + int(st.busy) for st in obs.stages]
        total = min(sum(in_system), n_now)
        n_end = int(np.searchsorted(arrivals_s, now + self._horizon_s, side="right"))
        arr = arrivals_s[n_now - total : n_end]
        first = [min(sum(in_system[k + 1 :]), total) for k in range(len(in_system))]
        return _Known(arrival_s=arr, first=first, now_s=now)

    def latencies(self, known: _Known, service_s: list[float]) -> np.ndarray:
        """Latency of every known request with constant service times (the max-plus recursion)."""
        a = known.arrival_s
        now = known.now_s
        dep = np.maximum(a, now)
        for k, s in enumerate(service_s):
            lo = known.first[k]
            ready = dep[lo:].copy()
            if k > 0:
                ready[: max(known.first[k - 1] - lo, 0)] = now  # entered stage k before now: ready now
                ready += self.c.hop_s[k - 1] * (np.arange(ready.size) >= known.first[k - 1] - lo)
            idx = np.arange(ready.size) * s
            dep[lo:] = idx + s + np.maximum(now, np.maximum.accumulate(ready - idx))
        return dep - a

    def _search(self, known: _Known, factor: list[float]) -> list[int]:
        """First vector on the greedy pruning path that meets the target (the whole path bisected: exact
        latencies can only fall along the path, so the attainment is monotone)."""
        lat = self.c.latency_s
        slo = self.c.slo_s
        safety = self.p.safety
        target = self.p.target_attainment

        def meets(lv: list[int]) -> bool:
            s = [safety * f * lat[k][v] for k, (f, v) in enumerate(zip(factor, lv, strict=True))]
            return float(np.mean(self.latencies(known, s) <= slo)) >= target

        def gain_of(_levels: list[int]) -> Callable[[int, int], float]:
            """The rung's true service time: the bottleneck sets the pipeline's pace."""
            return lambda k, lv: factor[k] * lat[k][lv]

        path = GreedyPath(self.c.n_stages, self._top, self.p.min_accuracy, self._acc, gain_of)
        return path.first_meeting_whole(meets)


def _make(params: OracleParams, curves: PipelineCurves) -> OraclePolicy:
    return OraclePolicy(params, curves)


register(PolicyKind("oracle", OracleParams, _make, "perfect information: true factors and future arrivals"))
