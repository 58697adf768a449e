"""``bottleneck``: our reading of the paper's adaptive algorithm.

Every period, per stage:

1. **Environment factor** ``f_k`` = observed / profiled service time (``busy_s / nominal_s``), smoothed by an
   EWMA, in the units of ``PipelineCurves.latency_s`` (``estimate.FactorEstimator``: the simulator's device
   ``speed`` is not counted twice).  It captures heat, co-located load or a slower node without knowing
   the cause.
2. **Arrival rate**, burst-aware (``estimate.RateEstimator``): the larger of a fast and a slow EWMA of the
   per-period rate, so a burst is seen within one period and a lull does not immediately drop the estimate.
3. **Service-time budget** ``b_k`` implied by the rate and the SLO: the stage must keep utilisation under
   ``target_utilization`` at the rate it must sustain (arrivals plus draining its backlog within
   ``drain_horizon_s``), and its M/M/1-style sojourn ``s / (1 - rho)`` must fit its share of the SLO left
   after the network hops.
4. **Least pruning that fits**: the smallest level ``l`` with ``f_k * latency_s[k][l] <= b_k``
   (up to ``max_level``; the largest allowed level if none fits).
5. **Accuracy floor**: while the vector's estimated accuracy is below ``min_accuracy``, relax the stage whose
   relaxation costs the least latency relative to its budget.
6. **Hysteresis**: prune immediately; relax a stage only after ``cooldown_s`` in which a lower level kept
   fitting with margin ``relax_margin``, and then only to the highest level wanted during the cool-down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgeprune.config import spec_field
from edgeprune.controller.contract import Levels, Observation, PipelineCurves
from edgeprune.controller.estimate import AccuracyTable, FactorEstimator, RateEstimator
from edgeprune.controller.params import AdaptiveParams
from edgeprune.controller.registry import PolicyKind, register

__all__ = ["BottleneckParams", "BottleneckPolicy"]


@dataclass(frozen=True)
class BottleneckParams(AdaptiveParams):
    """Parameters of ``kind = "bottleneck"``."""

    target_utilization: float = spec_field(default=0.8, gt=0, lt=1, doc="utilisation cap per stage")
    drain_horizon_s: float | None = spec_field(default=None, gt=0, doc="clear a backlog within (default: SLO)")
    cooldown_s: float = spec_field(default=10.0, ge=0, doc="time a lower level must keep fitting before relaxing")
    relax_margin: float = spec_field(default=0.85, gt=0, le=1, doc="a lower level must fit within margin x budget")
    factor_alpha: float = spec_field(default=0.5, gt=0, le=1, doc="EWMA weight of the newest environment factor")
    rate_alpha_fast: float = spec_field(default=0.6, gt=0, le=1, doc="EWMA weight, fast arrival-rate estimate")
    rate_alpha_slow: float = spec_field(default=0.05, gt=0, le=1, doc="EWMA weight, slow arrival-rate estimate")
    rate_z: float = spec_field(default=1.5, ge=0, doc="a burst must exceed the fast estimate's noise by z sd")


class BottleneckPolicy:
    """Least pruning per stage that fits the budget, with an accuracy floor and hysteresis."""

    def __init__(self, params: BottleneckParams, curves: PipelineCurves) -> None:
        self.p = params
        self.c = curves
        n = curves.n_stages
        self._top = params.top_level(curves.n_levels)
        self._factors = FactorEstimator(curves, params.factor_alpha)
        self._factor = self._factors.factor
        self._rates = RateEstimator(params.rate_alpha_fast, params.rate_alpha_slow, params.rate_z)
        self._levels = [0] * n
        self._held: Levels = (0,) * n  # tuple(self._levels), the very object returned while they hold
        self._answer: Levels = self._held  # a subclass's last answer (:meth:`_answered`)
        self._relax_since: list[float | None] = [None] * n
        self._relax_to = [0] * n
        self._acc = AccuracyTable(curves)
        hops = math.fsum(curves.hop_s)
        self._slo_share_s = max(curves.slo_s - hops, 1e-9) / n
        self._horizon_s = params.drain_horizon_s if params.drain_horizon_s is not None else curves.slo_s

    def decide(self, observation: Observation) -> Levels:
        """Levels for the next period (see the module docstring)."""
        if observation.period_s <= 0:
            return self._held  # the deployment: level 0 everywhere
        self._factors.update(observation)
        rate_hz = self._rates.update(observation)
        budgets, wanted, relaxed = self._fit(rate_hz, observation)
        floored = self.p.min_accuracy is not None
        if floored:
            self._apply_floor(wanted, budgets)
            self._apply_floor(relaxed, budgets)
        changed = self._hysteresis(wanted, relaxed, observation.time_s)
        if floored:
            self._apply_floor(self._levels, budgets)
            changed = True  # maybe: a new tuple, validated again
        if changed:  # else the very tuple returned last period (a backend validates a tuple it has seen once)
            self._held = tuple(self._levels)
        return self._held

    def _answered(self, levels: list[int]) -> Levels:
        """``levels`` as the answer: the previous tuple itself while they hold (a backend validates a tuple
        it has seen once only), else a new one (for subclasses that change levels after :meth:`_hysteresis`)."""
        out = tuple(levels)
        if out != self._answer:
            self._answer = out
        return self._answer

    def _fit(self, rate_hz: float, obs: Observation) -> tuple[list[float], list[int], list[int]]:
        """Per stage: the service-time budget, the least level that fits it, and the least with margin.

        The budget is the largest mean service time a stage may have at this rate, backlog and SLO: the
        smaller of ``target_utilization / need`` and the M/M/1 sojourn bound (``s / (1 - need s) <= share``
        <=> ``s <= share / (1 + need share)``), where ``need`` = rate + backlog / drain horizon.  Written
        as one loop over local variables: the simulator calls this every simulated period.
        """
        rho = self.p.target_utilization
        share_s = self._slo_share_s
        horizon_s = self._horizon_s
        margin = self.p.relax_margin
        top = self._top
        factor = self._factor
        latency = self.c.latency_s
        budgets: list[float] = []
        wanted: list[int] = []
        relaxed: list[int] = []
        for k, st in enumerate(obs.stages):
            need_hz = rate_hz + st.queue_len / horizon_s
            by_rate = rho / need_hz if need_hz > 0 else math.inf
            budget_s = min(by_rate, share_s / (1.0 + need_hz * share_s))
            with_margin_s = margin * budget_s  # <= budget_s: fitting with margin implies fitting
            f = factor[k]
            row = latency[k]
            if f * row[0] <= with_margin_s:  # the common case, level 0 fits with margin: skip the search
                budgets.append(budget_s)
                wanted.append(0)
                relaxed.append(0)
                continue
            w = r = -1
            for lvl in range(top + 1):
                need_s = f * row[lvl]
                if need_s <= budget_s:
                    if w < 0:
                        w = lvl
                    if need_s <= with_margin_s:
                        r = lvl
                        break
            budgets.append(budget_s)
            wanted.append(w if w >= 0 else top)
            relaxed.append(r if r >= 0 else top)
        return budgets, wanted, relaxed

    def _apply_floor(self, levels: list[int], budgets: list[float]) -> None:
        floor = self.p.min_accuracy
        if floor is None:
            return
        while levels and any(levels) and self._acc.of(levels) < floor:
            best_k, best_cost = -1, math.inf
            for k, lvl in enumerate(levels):
                if lvl == 0:
                    continue
                cost = self._factor[k] * self.c.latency_s[k][lvl - 1] / budgets[k]
                if cost < best_cost:
                    best_k, best_cost = k, cost
            levels[best_k] -= 1

    def _hysteresis(self, wanted: list[int], relaxed: list[int], now_s: float) -> bool:
        """Update the current levels (``self._levels``) from this period's wanted levels; whether any changed.

        One call for all stages (not one per stage): the simulator runs this every simulated period.
        """
        levels = self._levels
        since_s = self._relax_since
        relax_to = self._relax_to
        cooldown_s = self.p.cooldown_s
        changed = False
        for k, current in enumerate(levels):
            w = wanted[k]
            if w >= current:  # prune (or hold): at once
                since_s[k] = None
                if w != current:
                    levels[k] = w
                    changed = True
            elif relaxed[k] >= current:  # a lower level fits, but not with margin: hold
                since_s[k] = None
            elif since_s[k] is None:  # start the cool-down
                since_s[k] = now_s
                relax_to[k] = relaxed[k]
            else:
                relax_to[k] = max(relax_to[k], relaxed[k])
                if now_s - since_s[k] >= cooldown_s:  # type: ignore[operator]
                    since_s[k] = None
                    levels[k] = relax_to[k]
                    changed = True
        return changed


def _make(params: BottleneckParams, curves: PipelineCurves) -> BottleneckPolicy:
    return BottleneckPolicy(params, curves)


register(PolicyKind("bottleneck", BottleneckParams, _make, "least pruning that fits the SLO budget"))
