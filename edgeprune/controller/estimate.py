"""What the adaptive policies estimate from observations: environment factors and the arrival rate.

Shared by ``bottleneck``, ``threshold`` and ``predictive`` so that they see the pipeline the same way and a
comparison between them is a comparison of decisions, not of estimators.  Pure objects, no clock.

**Environment factor.**  ``StageObs.env_factor`` is measured service time over the nominal time the
curves predicted for the levels served (``nominal_s`` is in ``PipelineCurves.latency_s`` units in every
backend), so it multiplies ``latency_s`` directly.  Until a stage has served anything its factor is 1 (the
curves are believed).

**Arrival rate, burst-aware.**  :class:`RateEstimator` keeps a fast and a slow EWMA of the per-period rate
and answers the larger: a burst is seen within a period, a lull does not drop the estimate at once.  With
``z > 0`` the fast estimate counts only beyond its Poisson noise: it answers ``max(slow, fast - z * sd)``
where ``sd = sqrt(fast / (period_s * n_eff))`` is the standard deviation of an EWMA of Poisson counts over
``n_eff = (2 - alpha) / alpha`` periods, so chance fluctuations of a steady load do not read as bursts.  It
also tracks the index of dispersion of per-period counts (variance / mean; 1 for Poisson), the arrival
variability ``ca²`` used by queueing approximations.
"""

from __future__ import annotations

import math

from edgeprune.controller.contract import Observation, PipelineCurves

__all__ = ["AccuracyTable", "FactorEstimator", "RateEstimator"]


class FactorEstimator:
    """EWMA of each stage's environment factor (multiplier of ``PipelineCurves.latency_s``)."""

    def __init__(self, curves: PipelineCurves, alpha: float) -> None:
        self._alpha = alpha
        self.factor = [1.0] * curves.n_stages

    def update(self, obs: Observation) -> list[float]:
        """Fold one period's measurements in; return the current factors (the estimator's own list)."""
        a = self._alpha
        factor = self.factor
        for k, st in enumerate(obs.stages):
            if st.served and st.nominal_s > 0:
                factor[k] = a * (st.busy_s / st.nominal_s) + (1.0 - a) * factor[k]
        return factor


class RateEstimator:
    """Burst-aware arrival rate (max of a fast and a slow EWMA) and the dispersion of per-period counts."""

    def __init__(self, alpha_fast: float, alpha_slow: float, z: float = 0.0) -> None:
        self._af = alpha_fast
        self._as = alpha_slow
        self._z = z
        self._period_s = 1.0
        self.fast_hz: float | None = None
        self.slow_hz = 0.0
        self._mean_n = 0.0
        self._var_n = 0.0

    def update(self, obs: Observation) -> float:
        """Fold one period's arrival count in; return the burst-aware rate (requests per second)."""
        rate = obs.arrivals / obs.period_s
        self._period_s = obs.period_s
        if self.fast_hz is None:
            self.fast_hz = self.slow_hz = rate
            self._mean_n = float(obs.arrivals)
        else:
            self.fast_hz += self._af * (rate - self.fast_hz)
            self.slow_hz += self._as * (rate - self.slow_hz)
            d = obs.arrivals - self._mean_n
            self._mean_n += self._as * d
            self._var_n = (1.0 - self._as) * (self._var_n + self._as * d * d)
        return self.rate_hz

    @property
    def rate_hz(self) -> float:
        """The burst-aware estimate (0 before the first period)."""
        fast = self.fast_hz or 0.0
        if self._z > 0 and fast > 0:
            n_eff = (2.0 - self._af) / self._af
            fast -= self._z * math.sqrt(fast / (self._period_s * n_eff))
        return max(fast, self.slow_hz)

    @property
    def dispersion(self) -> float:
        """Index of dispersion of per-period counts, at least 1 (Poisson) once counts were seen."""
        if self._mean_n <= 1e-9:
            return 1.0
        return max(1.0, self._var_n / self._mean_n)


class AccuracyTable:
    """``PipelineCurves.accuracy_of`` with a memo, for policies that ask it hundreds of times a period.

    The profile's rule (measured vector if known, else the uniform curve at the vector's mean ratio) makes
    the answer depend on the mean ratio only for unmeasured vectors, so the memo is keyed by it and stays
    small (a few dozen entries) whatever the pipeline size; a second memo by vector makes repeated questions
    a dictionary lookup (it holds only the vectors actually asked about).  Without an accuracy curve the estimate is
    ``1 - mean ratio / 1000``: pruning then still costs something, so searches prefer less of it.
    """

    def __init__(self, curves: PipelineCurves) -> None:
        self._curves = curves
        self._ratios = curves.ratios
        acc = curves.accuracy
        self._measured = dict(acc.per_stage) if acc is not None else {}
        self._by_mean: dict[float, float] = {}
        self._memo: dict[tuple[int, ...], float] = {}

    def of(self, levels: list[int] | tuple[int, ...]) -> float:
        """Estimated accuracy of a level vector (the profile's rule, memoised)."""
        key = tuple(levels)
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = self._compute(key)
        return hit

    def _compute(self, key: tuple[int, ...]) -> float:
        hit = self._measured.get(key)
        if hit is not None:
            return hit
        mean = math.fsum(self._ratios[v] for v in key) / len(key)
        value = self._by_mean.get(mean)
        if value is None:
            est = self._curves.accuracy_of(key)
            value = self._by_mean[mean] = est if est is not None else 1.0 - mean / 1000.0
        return value
