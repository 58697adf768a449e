"""``thermal``: the contract, bottleneck's decisions without physics, pre-emption against heat, energy objective."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest

from edgeprune.checker import check_policy, synthetic_observations
from edgeprune.config import Ctx
from edgeprune.controller import Observation, PipelineCurves, Policy, StageObs, make_policy, policy_from_table
from edgeprune.physics import (
    DevicePhysics,
    NodeState,
    advance,
    device_physics_from_table,
    dynamic_power_w,
    govern,
    initial_state,
)
from tests.test_controller_policies import make_curves

FLOOR = 0.93


def spec(kind: str, **params: Any) -> Any:
    return policy_from_table({"kind": kind, **params}, Ctx("t"), n_stages=4, n_levels=7, has_accuracy=True)


def hot_pi(**thermal: float) -> DevicePhysics:
    return device_physics_from_table({"preset": "rpi4b", "thermal": {"resistance_c_per_w": 11.5, **thermal}}, Ctx("t"))


def with_physics(curves: PipelineCurves, phys: tuple[DevicePhysics | None, ...]) -> PipelineCurves:
    return dataclasses.replace(curves, physics=phys)


@pytest.mark.parametrize("objective", ["slo", "energy"])
def test_passes_the_contract_checker_with_and_without_physics(objective: str) -> None:
    plain = make_curves()
    phys = with_physics(plain, (hot_pi(), None, hot_pi(), hot_pi()))
    for curves in (plain, phys):
        report = check_policy(spec("thermal", objective=objective, min_accuracy=FLOOR), curves, timing_passes=1)
        assert report.n_observations == 241


@pytest.mark.parametrize("objective", ["slo", "energy"])
def test_without_physics_it_decides_exactly_like_bottleneck(objective: str) -> None:
    curves = make_curves()
    thermal = make_policy(spec("thermal", objective=objective, min_accuracy=FLOOR), curves)
    bottleneck = make_policy(spec("bottleneck", min_accuracy=FLOOR), curves)
    answers = [(thermal.decide(o), bottleneck.decide(o)) for o in synthetic_observations(curves, n=240, seed=3)]
    assert all(a == b for a, b in answers)
    assert len({b for _, b in answers}) > 1  # the sequence does make bottleneck move


class HeatPipeline:
    """Closed-loop fluid pipeline whose nodes heat: service time x (f_max / f)^alpha, the RC model, the governor."""

    def __init__(self, curves: PipelineCurves, pol: Policy) -> None:
        self.c, self.pol = curves, pol
        self.state = [initial_state(p) if p is not None else NodeState(math.nan, 0) for p in self._phys]
        self.queue = [0.0] * 4
        self.t = 0.0
        self.levels: tuple[int, ...] = (0, 0, 0, 0)
        self.levels = tuple(pol.decide(Observation(0.0, 0.0, 0, tuple(self._obs(k, 0, 0.0) for k in range(4)))))
        self.history: list[tuple[tuple[int, ...], tuple[bool, ...]]] = []

    @property
    def _phys(self) -> tuple[DevicePhysics | None, ...]:
        return tuple(self.c.physics_of(k) for k in range(4))

    def _service_s(self, k: int) -> float:
        p = self.c.physics_of(k)
        lat = self.c.latency_s[k][self.levels[k]]
        return (
            lat
            if p is None
            else lat * (p.dvfs.freqs_mhz[0] / p.dvfs.freqs_mhz[self.state[k].freq_index]) ** p.dvfs.alpha
        )

    def _obs(self, k: int, arrived: int, served: float) -> StageObs:
        p, st = self.c.physics_of(k), self.state[k]
        s, lat = self._service_s(k), self.c.latency_s[k][self.levels[k]]
        temp, freq = (st.temp_c, p.dvfs.freqs_mhz[st.freq_index]) if p is not None else (math.nan, math.nan)
        q = round(self.queue[k])
        return StageObs(
            self.levels[k],
            max(q - 1, 0),
            q > 0,
            arrived,
            int(served),
            served * s,
            served * lat,
            0,
            temp,
            freq,
            st.throttled,
        )

    def run(self, seconds: int, rate_hz: float) -> None:
        for _ in range(seconds):
            n = round(rate_hz * (self.t + 1.0)) - round(rate_hz * self.t)
            inflow, stages = float(n), []
            for k in range(4):
                s = self._service_s(k)
                served = min(self.queue[k] + inflow, 1.0 / s)
                self.queue[k] += inflow - served
                p = self.c.physics_of(k)
                if p is not None:
                    st, _ = advance(p, self.state[k], self.t, self.t + 1.0, np.array([[self.t, self.t + served * s]]))
                    self.state[k] = NodeState(st.temp_c, govern(p.dvfs, st.freq_index, st.temp_c))
                stages.append(self._obs(k, int(inflow), served))
                inflow = served
            self.t += 1.0
            self.levels = tuple(self.pol.decide(Observation(self.t, 1.0, n, tuple(stages))))
            self.history.append((self.levels, tuple(s.throttled for s in self.state)))


def test_a_node_heating_toward_the_threshold_is_pruned_earlier_than_bottleneck_and_throttles_less() -> None:
    """Stage 1's node at 1.6 req/s: level 0 fits the budget, but its steady temperature (82.6 C) is above
    the 80 C threshold.  ``thermal`` prunes before it gets there; ``bottleneck`` only once throttled."""
    curves = with_physics(make_curves(slo_s=10.0), (None, hot_pi(), None, None))
    runs = {}
    for kind in ("thermal", "bottleneck"):
        pipe = HeatPipeline(curves, make_policy(spec(kind, min_accuracy=0.9), curves))
        pipe.run(900, 1.6)
        runs[kind] = pipe.history
    first = {k: next(i for i, (lv, _) in enumerate(h) if lv[1] > 0) for k, h in runs.items()}
    throttled = {k: sum(th[1] for _, th in h) for k, h in runs.items()}
    assert first["thermal"] < first["bottleneck"]
    assert throttled["bottleneck"] > 0
    assert throttled["thermal"] < throttled["bottleneck"]
    assert all(lv[0] == lv[2] == lv[3] == 0 for lv, _ in runs["thermal"])  # stages without physics: as bottleneck


def _cool_obs(t: float, temp_c: float, levels: tuple[int, ...]) -> Observation:
    st = [StageObs(lv, 0, False, 1, 1, 0.39, 0.39, 0, temp_c, 1500.0, False) for lv in levels]
    return Observation(t, 1.0, 1, tuple(st))


def test_energy_objective_picks_lower_power_levels_when_the_slo_allows() -> None:
    pi = hot_pi()
    curves = with_physics(make_curves(slo_s=10.0), (pi, pi, pi, pi))
    answers = {}
    for objective in ("slo", "energy"):
        pol = make_policy(spec("thermal", objective=objective, min_accuracy=FLOOR), curves)
        levels = pol.decide(_cool_obs(0.0, 40.0, (0, 0, 0, 0)))
        for i in range(1, 30):
            levels = pol.decide(_cool_obs(float(i), 40.0, levels))
        answers[objective] = levels
    assert answers["slo"] == (0, 0, 0, 0)  # cool and lightly loaded: no reason to prune for the SLO or heat
    energy = answers["energy"]
    assert any(energy)
    assert curves.accuracy_of(energy) >= FLOOR  # type: ignore[operator]
    dyn = [dynamic_power_w(pi, 0) * curves.latency_s[k][lv] for k, lv in enumerate(energy)]
    base = [dynamic_power_w(pi, 0) * curves.latency_s[k][0] for k in range(4)]
    assert sum(dyn) < sum(base)
    more = [list(energy) for _ in range(4)]
    for k in range(4):  # no single further step keeps the floor: it went as far as the floor allows
        more[k][k] += 1
        assert energy[k] == 6 or curves.accuracy_of(more[k]) < FLOOR  # type: ignore[operator]
