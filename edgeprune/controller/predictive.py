"""``predictive``: forecast SLO attainment over a short horizon and keep the most accurate vector that meets it.

Every period:

1. **Estimate** each stage's environment factor ``f_k`` and the burst-aware arrival rate ``λ`` with the
   dispersion ``ca²`` of per-period counts (``estimate.py``, shared with ``bottleneck``).
2. **Forecast** (:meth:`PredictivePolicy.forecast`) for a level vector ``l``, with ``s_k = f_k ·
   latency_s[k][l_k]``, the requests now at or before stage ``k`` ``B_k``, for an arrival at time ``t`` of
   the horizon ``[0, horizon_s]``:

   * deterministic latency (the tandem queue's max-plus recursion with fluid arrivals):
     ``d(t) = Σ s_k + hops + max(0, max_k(B_k s_k + (λ s_k − 1) t))`` — the backlog ahead of it at its
     worst stage, growing when ``λ s_k > 1`` and draining otherwise;
   * stochastic wait from variability (Kingman per stage, ``ρ_k = λ s_k``):
     ``w = Σ_k s_k ρ_k / (1 − ρ_k) · (ca² + cs_k²) / 2`` with an M/M/1-shaped tail
     ``P(W > x) = ρ exp(−ρ x / w)``, ``ρ = max_k ρ_k``;
   * attainment = the mean over ``n_points`` instants of ``P(d(t) + W ≤ SLO)``.
3. **Search** greedily, not over all ``n_levels^n_stages`` vectors: from no pruning, while the forecast is
   below ``target_attainment``, take the one-rung step with the largest forecast mean-latency gain per
   accuracy lost, never below ``min_accuracy``.  At most ``n_stages · (n_levels − 1)`` steps of
   ``n_stages`` forecasts each, every forecast ``O(n_stages · n_points)``.
4. **Hysteresis**: if the levels in effect are forecast to miss the target, prune at once (to the
   element-wise maximum of the levels in effect and the search's answer, so no stage relaxes on the way
   up, unless that breaks the floor); otherwise relax only after ``cooldown_s`` during which a more
   accurate vector kept meeting the stricter target ``relax_attainment``, then to the least accurate such
   vector seen during the cool-down.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from edgeprune.config import spec_field
from edgeprune.controller.contract import Levels, Observation, PipelineCurves
from edgeprune.controller.estimate import AccuracyTable, FactorEstimator, RateEstimator
from edgeprune.controller.greedy import GreedyPath
from edgeprune.controller.params import AdaptiveParams
from edgeprune.controller.registry import PolicyKind, register

__all__ = ["PredictiveParams", "PredictivePolicy"]

_RHO_CAP = 0.99  # Kingman's formula is used up to this utilisation; the fluid term covers overload
_Z95 = 1.645


@dataclass(frozen=True)
class PredictiveParams(AdaptiveParams):
    """Parameters of ``kind = "predictive"``."""

    target_attainment: float = spec_field(default=0.95, gt=0, lt=1, doc="forecast SLO attainment to reach")
    relax_attainment: float = spec_field(default=0.99, gt=0, le=1, doc="forecast a relaxed vector must reach")
    horizon_s: float | None = spec_field(default=None, gt=0, doc="forecast horizon (default: the SLO)")
    n_points: int = spec_field(default=5, ge=1, doc="instants of the horizon the forecast averages over")
    cooldown_s: float = spec_field(default=10.0, ge=0, doc="time a relaxed vector must keep fitting first")
    factor_alpha: float = spec_field(default=0.5, gt=0, le=1, doc="EWMA weight of the newest environment factor")
    rate_alpha_fast: float = spec_field(default=0.6, gt=0, le=1, doc="EWMA weight, fast arrival-rate estimate")
    rate_alpha_slow: float = spec_field(default=0.05, gt=0, le=1, doc="EWMA weight, slow arrival-rate estimate")
    rate_z: float = spec_field(default=2.0, ge=0, doc="a burst must exceed the fast estimate's noise by z sd")

    def check(self) -> list[tuple[str, object, str]]:
        """Relaxing must demand at least as much as holding, or the policy would flap."""
        if self.relax_attainment < self.target_attainment:
            return [
                ("relax_attainment", self.relax_attainment, f"must be >= target_attainment ({self.target_attainment})")
            ]
        return []


@dataclass
class _State:
    """What the forecast needs from the current observation (rebuilt every period)."""

    factor: list[float]
    rate_hz: float
    ca2: float
    ahead: list[float]  # requests that must pass stage k before a new arrival (cumulative)


class PredictivePolicy:
    """Most accurate level vector whose forecast SLO attainment meets the target (module docstring)."""

    def __init__(self, params: PredictiveParams, curves: PipelineCurves) -> None:
        self.p = params
        self.c = curves
        n = curves.n_stages
        self._top = params.top_level(curves.n_levels)
        self._factors = FactorEstimator(curves, params.factor_alpha)
        self._rates = RateEstimator(params.rate_alpha_fast, params.rate_alpha_slow, params.rate_z)
        self._levels: list[int] = [0] * n
        self._relax_since: float | None = None
        self._relax_to: list[int] | None = None
        self._acc = AccuracyTable(curves)
        self._fixed_s = math.fsum(curves.hop_s)
        horizon = params.horizon_s if params.horizon_s is not None else curves.slo_s
        m = params.n_points
        self._times_s = [(i + 0.5) * horizon / m for i in range(m)]
        self._t_mid_s = self._times_s[m // 2]
        self._cs2 = [_service_cv2(curves, k) for k in range(n)]

    def decide(self, observation: Observation) -> Levels:
        """Levels for the next period (see the module docstring)."""
        if observation.period_s <= 0:
            return tuple(self._levels)
        state = self._observe(observation)
        now = observation.time_s
        current = self._levels
        if self.forecast(state, current)[0] < self.p.target_attainment:
            self._levels = self._no_relaxing(self._search(state, self.p.target_attainment), current)
            self._relax_since = self._relax_to = None
            return tuple(self._levels)
        relaxed = self._search(state, self.p.relax_attainment)
        if self._accuracy(relaxed) <= self._accuracy(current):
            self._relax_since = self._relax_to = None
            return tuple(current)
        if self._relax_since is None or self._relax_to is None:
            self._relax_since, self._relax_to = now, relaxed
        elif self._accuracy(relaxed) < self._accuracy(self._relax_to):
            self._relax_to = relaxed
        if now - self._relax_since >= self.p.cooldown_s:
            self._levels = self._relax_to
            self._relax_since = self._relax_to = None
        return tuple(self._levels)

    def _no_relaxing(self, wanted: list[int], current: list[int]) -> list[int]:
        """While pruning up, no stage relaxes (only the cool-down relaxes): the element-wise maximum, unless
        that breaks the accuracy floor (then the searched vector, which respects it)."""
        both = [max(a, b) for a, b in zip(wanted, current, strict=True)]
        floor = self.p.min_accuracy
        return wanted if floor is not None and self._accuracy(both) < floor else both

    def _observe(self, obs: Observation) -> _State:
        factor = self._factors.update(obs)
        rate = self._rates.update(obs)
        ahead, total = [], 0.0
        for st in obs.stages:
            total += st.queue_len + (0.5 if st.busy else 0.0)
            ahead.append(total)
        return _State(factor=factor, rate_hz=rate, ca2=self._rates.dispersion, ahead=ahead)

    def forecast(self, state: _State, levels: list[int]) -> tuple[float, float]:
        """(SLO attainment, mean latency in s) forecast for ``levels`` over the horizon."""
        lat = self.c.latency_s
        lam = state.rate_hz
        s = [f * lat[k][lv] for k, (f, lv) in enumerate(zip(state.factor, levels, strict=True))]
        base = self._fixed_s + math.fsum(s)
        wait, rho_max, crit = 0.0, 0.0, 0
        for k, sk in enumerate(s):
            rho = min(lam * sk, _RHO_CAP)
            wait += sk * rho / (1.0 - rho) * 0.5 * self._cs2[k]
            if rho > rho_max:
                rho_max, crit = rho, k
        if rho_max > 0:  # arrival variability queues at the bottleneck only (deterministic tandem)
            wait += s[crit] * rho_max / (1.0 - rho_max) * 0.5 * state.ca2
        slo = self.c.slo_s
        hit = lat_sum = 0.0
        for t in self._times_s:
            backlog = 0.0
            for sk, b in zip(s, state.ahead, strict=True):
                backlog = max(backlog, b * sk + (lam * sk - 1.0) * t)
            d = base + backlog
            lat_sum += d
            slack = slo - d
            if slack > 0:
                hit += 1.0 - (rho_max * math.exp(-rho_max * slack / wait) if wait > 0 else 0.0)
        m = len(self._times_s)
        return hit / m, lat_sum / m + wait

    def _search(self, state: _State, target: float) -> list[int]:
        """The first vector on the greedy pruning path whose forecast meets ``target`` (forecast attainment
        rises along the path; see :meth:`GreedyPath.first_meeting`)."""
        path = GreedyPath(
            self.c.n_stages, self._top, self.p.min_accuracy, self._acc, lambda levels: self._gain(state, levels)
        )
        return path.first_meeting(lambda levels: self.forecast(state, levels)[0] >= target)

    def _gain(self, state: _State, levels: list[int]) -> Callable[[int, int], float]:
        """First-order forecast latency gain of pruning stage ``k`` one rung from ``levels``.

        The rung's service-time cut times the forecast latency's sensitivity to that stage: 1, plus the
        Kingman wait's derivative, plus the backlog ahead of an arrival when the stage is the one the
        backlog forecast is worst at (mid-horizon)."""
        lat, lam, t_mid = self.c.latency_s, state.rate_hz, self._t_mid_s
        factor, ahead = state.factor, state.ahead
        s = [factor[k] * lat[k][lv] for k, lv in enumerate(levels)]
        crit, worst, bott = -1, 0.0, 0
        for k, sk in enumerate(s):
            b = ahead[k] * sk + (lam * sk - 1.0) * t_mid
            if b > worst:
                crit, worst = k, b
            if sk > s[bott]:
                bott = k

        def gain(k: int, lv: int) -> float:
            rho = min(lam * s[k], _RHO_CAP)
            var = self._cs2[k] + (state.ca2 if k == bott else 0.0)
            sens = 1.0 + (rho / (1.0 - rho) + rho / ((1.0 - rho) * (1.0 - rho))) * 0.5 * var
            if k == crit:
                sens += ahead[k] + lam * t_mid
            return factor[k] * (lat[k][lv] - lat[k][lv + 1]) * sens

        return gain

    def _accuracy(self, levels: list[int]) -> float:
        return self._acc.of(levels)


def _service_cv2(curves: PipelineCurves, k: int) -> float:
    """Squared coefficient of variation of stage ``k``'s service time, from its profiled mean and p95."""
    mean, p95 = curves.latency_s[k][0], curves.latency_p95_s[k][0]
    cv = max(p95 / mean - 1.0, 0.0) / _Z95 if mean > 0 else 0.0
    return cv * cv


def _make(params: PredictiveParams, curves: PipelineCurves) -> PredictivePolicy:
    return PredictivePolicy(params, curves)


register(
    PolicyKind("predictive", PredictiveParams, _make, "forecast SLO attainment, most accurate vector that meets it")
)
