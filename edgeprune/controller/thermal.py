"""``thermal``: the bottleneck policy plus a forecast of each node's temperature (a policy that sees heat coming).

Every period it first decides exactly as ``bottleneck`` (same estimators, budget, floor and hysteresis:
this class *is* a :class:`~edgeprune.controller.bottleneck.BottleneckPolicy`).  Then, for every stage
whose node has physics (``PipelineCurves.physics``):

1. **State**: the node's temperature (``StageObs.temp_c``, or the policy's own RC estimate from the
   observed busy time when the backend reports none) and its frequency step (``StageObs.freq_mhz``).
   Where the temperature is reported, the error of the RC prediction over the period, in watts, is
   folded into an EWMA of *extra power* (``calibration_alpha``): a co-located tenant the policy cannot
   see, or a preset that does not fit the node, shows up there.
2. **Forecast** per level ``l``: utilisation ``u = rate x s_l`` (the stage's arrival rate averaged over
   the node's thermal time constant: heat follows the sustained load, not a burst) with ``s_l`` the
   level's service time at the top frequency (the environment factor with the current frequency's
   factor taken out), power ``P_idle + u (P_busy - P_idle) + extra``, and the closed-form RC temperature
   after ``horizon_s`` at the hottest ambient of the horizon (the ambient schedule is advance knowledge).
3. **Pre-empt**: the least level whose forecast stays ``headroom_c`` below the first throttling
   threshold (hysteresis ``relax_c`` before relaxing) — but never more pruning than being throttled
   would force anyway: the least level whose service time fits the budget at the frequency step the node
   settles at under that level's heat (the first step whose steady temperature is ``headroom_c`` below
   its threshold).  Pruning that much early costs no accuracy that throttling would
   not cost later, and keeps the node cooler; pruning beyond it would cost accuracy that throttling
   would not, so there the node is left to throttle and the budget adapts, as in ``bottleneck``.
4. ``objective = "energy"``: from there, prune further wherever it saves dynamic energy per inference
   (``(P_busy - P_idle) x service time``) at the least accuracy cost, while the accuracy floor holds (no
   floor: the highest level).  More pruning never breaks the SLO budget, which is met already.

Without physics for any stage both objectives decide exactly like ``bottleneck``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from edgeprune.config import spec_field
from edgeprune.controller.bottleneck import BottleneckParams, BottleneckPolicy
from edgeprune.controller.contract import Levels, Observation, PipelineCurves, StageObs
from edgeprune.controller.registry import PolicyKind, register
from edgeprune.physics import DevicePhysics, dynamic_power_w, freq_factor, govern, node_power_w, rc_step

__all__ = ["ThermalPolicy", "ThermalPolicyParams"]


@dataclass(frozen=True)
class ThermalPolicyParams(BottleneckParams):
    """Parameters of ``kind = "thermal"`` (the ``bottleneck`` ones plus the forecast's)."""

    horizon_s: float = spec_field(default=60.0, gt=0, doc="how far ahead the temperature is forecast")
    headroom_c: float = spec_field(default=2.0, ge=0, doc="keep the forecast this far below the first threshold")
    relax_c: float = spec_field(default=1.5, ge=0, doc="relax only when the lower level stays this much cooler")
    calibration_alpha: float = spec_field(
        default=0.02, ge=0, le=1, doc="EWMA weight of the power the model misses (learned from the temperature)"
    )
    objective: Literal["slo", "energy"] = spec_field(
        default="slo", doc="slo: prune only against heat; energy: least energy per inference above the floor"
    )


class ThermalPolicy(BottleneckPolicy):
    """``bottleneck`` plus pre-emptive pruning against forecast throttling, optionally energy-minimising."""

    def __init__(self, params: ThermalPolicyParams, curves: PipelineCurves) -> None:
        super().__init__(params, curves)
        self.tp = params
        self._phys = tuple(curves.physics_of(k) for k in range(curves.n_stages))
        self._any_physics = any(p is not None for p in self._phys)
        n = curves.n_stages
        self._heat = [0] * n
        self._temp_est = [p.thermal.start_c if p is not None else math.nan for p in self._phys]
        self._step_est = [0] * n
        self._heat_rate_hz = [0.0] * n  # EWMA of the stage's arrival rate over its node's time constant
        self._extra_w = [0.0] * n  # power the model does not explain (tenants, calibration), learned from T

    def decide(self, observation: Observation) -> Levels:
        """The bottleneck decision, raised where heat is coming (and lowered in energy where allowed)."""
        base = super().decide(observation)
        if not self._any_physics or observation.period_s <= 0:
            return base
        budgets = self._budgets(self._rates.rate_hz, observation)
        levels = list(base)
        for k, st in enumerate(observation.stages):
            phys = self._phys[k]
            if phys is None:
                continue
            temp_c, step = self._observe(k, phys, st, observation)
            heat = self._heat_level(k, phys, temp_c, step, budgets[k], base[k], observation.time_s)
            self._heat[k] = heat
            levels[k] = max(levels[k], heat)
        if self.p.min_accuracy is not None:
            self._apply_floor(levels, budgets)
        if self.tp.objective == "energy":
            self._save_energy(levels)
        return self._answered(levels)

    def _budgets(self, rate_hz: float, obs: Observation) -> list[float]:
        return self._fit(rate_hz, obs)[0]

    def _observe(self, k: int, phys: DevicePhysics, st: StageObs, obs: Observation) -> tuple[float, int]:
        """Fold one period in: temperature and step (observed, else the RC estimate), heat rate, extra power.

        The RC model predicts the temperature at the end of the period from the one at its start and the
        power implied by the observed busy time; when the backend reports the temperature, the prediction
        error, turned into watts, is folded into ``extra_w`` (a co-located tenant the policy cannot see,
        or a preset that does not fit the node).
        """
        th = phys.thermal
        h_s = obs.period_s
        r = th.resistance_c_per_w
        decay = math.exp(-h_s / th.tau_s)
        ran = self._step_est[k]  # the step the period ran at
        util = min(1.0, st.busy_s / h_s)
        power_w = node_power_w(phys, ran, False) + util * dynamic_power_w(phys, ran) + self._extra_w[k]
        predicted = rc_step(self._temp_est[k], th.ambient_at(obs.time_s - h_s), power_w, r, h_s, th.tau_s)
        temp_c = predicted
        if math.isfinite(st.temp_c):
            temp_c = st.temp_c
            top_w = phys.power.idle_w + phys.power.cores * phys.power.busy_core_w[0]
            err_w = (temp_c - predicted) / (r * (1.0 - decay))
            self._extra_w[k] = min(top_w, max(-top_w, self._extra_w[k] + self.tp.calibration_alpha * err_w))
        ladder = phys.dvfs.freqs_mhz
        if math.isfinite(st.freq_mhz):
            step = min(range(len(ladder)), key=lambda i: abs(ladder[i] - st.freq_mhz))
        else:
            step = govern(phys.dvfs, ran, temp_c)
        self._temp_est[k] = temp_c
        self._step_est[k] = step
        self._heat_rate_hz[k] += (1.0 - decay) * (st.arrivals / h_s - self._heat_rate_hz[k])
        return temp_c, step

    def _heat_level(
        self,
        k: int,
        phys: DevicePhysics,
        temp_c: float,
        step: int,
        budget_s: float,
        floor: int,
        now_s: float,
    ) -> int:
        """The pre-emptive level of stage ``k`` (0: none), with hysteresis on relaxing."""
        top_s = self._factor[k] / freq_factor(phys, step)  # factor at the top frequency
        rate_hz = self._heat_rate_hz[k]  # heat follows the load sustained over the time constant, not a burst
        extra_w = self._extra_w[k]
        limit_c = phys.dvfs.soft_limit_c - self.tp.headroom_c
        th = phys.thermal
        ambient_c = max(th.ambient_at(now_s), th.ambient_at(now_s + self.tp.horizon_s))
        forecast = [
            self._forecast_c(phys, temp_c, rate_hz * top_s * self.c.latency_s[k][lvl], extra_w, ambient_c)
            for lvl in range(self._top + 1)
        ]
        wanted = next((lvl for lvl, t in enumerate(forecast) if t < limit_c), self._top)
        relaxed = next((lvl for lvl, t in enumerate(forecast) if t < limit_c - self.tp.relax_c), self._top)
        current = self._heat[k]
        level = wanted if wanted >= current else (relaxed if relaxed < current else current)
        if level <= floor:
            return level
        forced = self._throttled_level(k, phys, top_s, rate_hz, extra_w, budget_s, ambient_c, floor)
        return min(level, forced)

    def _forecast_c(self, phys: DevicePhysics, temp_c: float, util: float, extra_w: float, ambient_c: float) -> float:
        """Temperature after ``horizon_s`` at the top frequency with the stage busy ``util`` of the time."""
        power_w = node_power_w(phys, 0, False) + min(1.0, util) * dynamic_power_w(phys, 0) + extra_w
        th = phys.thermal
        return rc_step(temp_c, ambient_c, power_w, th.resistance_c_per_w, self.tp.horizon_s, th.tau_s)

    def _throttled_level(
        self,
        k: int,
        phys: DevicePhysics,
        top_s: float,
        rate_hz: float,
        extra_w: float,
        budget_s: float,
        ambient_c: float,
        floor: int,
    ) -> int:
        """The level the budget needs once the node has throttled to where it settles (no pre-emption)."""
        th, dv = phys.thermal, phys.dvfs
        n_steps = len(dv.freqs_mhz)
        margin_c = self.tp.headroom_c  # the same margin as the forecast: a level "stays cool" in both or neither
        for lvl in range(floor, self._top + 1):
            for step in range(n_steps):
                s = top_s * freq_factor(phys, step) * self.c.latency_s[k][lvl]
                power_w = node_power_w(phys, step, False) + min(1.0, rate_hz * s) * dynamic_power_w(phys, step)
                power_w += extra_w
                if (
                    step == n_steps - 1
                    or ambient_c + th.resistance_c_per_w * power_w < dv.thresholds_c[step] - margin_c
                ):
                    break
            if s <= budget_s:
                return lvl
        return self._top

    def _save_energy(self, levels: list[int]) -> None:
        """Greedy: prune the stage saving the most dynamic energy per accuracy lost while the floor holds."""
        floor = self.p.min_accuracy
        while True:
            acc = self._acc.of(levels)
            best_k, best_gain = -1, 0.0
            for k, lvl in enumerate(levels):
                phys = self._phys[k]
                if lvl >= self._top or phys is None:
                    continue
                trial = levels.copy()
                trial[k] += 1
                new_acc = self._acc.of(trial)
                if floor is not None and new_acc < floor:
                    continue
                step = self._step_est[k]
                saved_j = (
                    dynamic_power_w(phys, step)
                    * self._factor[k]
                    * (self.c.latency_s[k][lvl] - self.c.latency_s[k][lvl + 1])
                )
                gain = saved_j / max(acc - new_acc, 1e-12)
                if gain > best_gain:
                    best_k, best_gain = k, gain
            if best_k < 0:
                return
            levels[best_k] += 1


def _make(params: ThermalPolicyParams, curves: PipelineCurves) -> ThermalPolicy:
    return ThermalPolicy(params, curves)


register(
    PolicyKind("thermal", ThermalPolicyParams, _make, "bottleneck + pre-emptive pruning against forecast throttling")
)
