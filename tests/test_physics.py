"""Device physics math: RC temperature, energy accounting, governor equilibrium (pure-python driver loops)."""

from __future__ import annotations

import itertools
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeprune.config import Ctx
from edgeprune.physics import (
    DevicePhysics,
    NodeState,
    advance,
    device_physics_from_table,
    dynamic_energy_j,
    freq_factor,
    govern,
    initial_state,
    node_power_w,
    rc_step,
    tenant_schedule,
)

CTX = Ctx("test.toml", "device[0].physics")


def physics(**over: object) -> DevicePhysics:
    """The rpi4b preset with overrides (sub-tables merge key by key)."""
    return device_physics_from_table({"preset": "rpi4b", **over}, CTX)


def test_constant_power_approaches_steady_state_with_time_constant_rc() -> None:
    """Constant full load from ambient: T(t) = T_ss + (T0 - T_ss) exp(-t / RC) at every step, RC = R * C."""
    ph = physics(
        thermal={"capacitance_j_per_c": 6.0, "resistance_c_per_w": 7.0, "ambient_c": 21.0, "initial_c": 21.0},
        dvfs={"thresholds_c": [149.0, 149.5, 150.0], "hard_limit_c": 150.0},  # never throttles
    )
    tau_s = 7.0 * 6.0
    p_w = node_power_w(ph, 0, True)
    t_ss = 21.0 + 7.0 * p_w
    state = initial_state(ph)
    t_s, h_s = 0.0, 0.7
    for _ in range(1000):
        busy = np.array([[t_s - 1.0, t_s + h_s + 1.0]])  # busy throughout (an interval wider than the step)
        state, _ = advance(ph, state, t_s, t_s + h_s, busy)
        t_s += h_s
        expected = t_ss + (21.0 - t_ss) * math.exp(-t_s / tau_s)
        assert abs(state.temp_c - expected) <= 0.01
    assert abs(state.temp_c - t_ss) < 1e-3  # ~17 time constants: at the steady state T_amb + R P
    one_tau = rc_step(21.0, 21.0, p_w, 7.0, tau_s, tau_s)
    assert abs((one_tau - t_ss) / (21.0 - t_ss) - math.exp(-1.0)) < 1e-12


def _euler_reference(ph: DevicePhysics, temp_c: float, t0_s: float, t1_s: float, busy: np.ndarray) -> float:
    """Fine explicit integration of C dT/dt = P - (T - T_amb)/R (an independent check of the closed form)."""
    n = 20000
    dt = (t1_s - t0_s) / n
    tau = ph.thermal.tau_s
    r = ph.thermal.resistance_c_per_w
    for i in range(n):
        mid = t0_s + (i + 0.5) * dt
        on = bool(np.any((busy[:, 0] <= mid) & (mid < busy[:, 1])))
        t_ss = ph.thermal.ambient_at(mid) + r * node_power_w(ph, 0, on)
        temp_c += (t_ss - temp_c) * (1.0 - math.exp(-dt / tau))
    return temp_c


def test_closed_form_over_busy_intervals_and_ambient_schedule_matches_fine_integration() -> None:
    ph = physics(thermal={"time_constant_s": 20.0, "schedule_times_s": [13.0, 31.0], "schedule_ambient_c": [35, 28]})
    busy = np.array([[1.0, 4.5], [6.0, 6.2], [9.0, 19.0], [25.0, 44.0]])
    state = NodeState(40.0, 0)
    end, _ = advance(ph, state, 0.0, 40.0, busy)
    assert abs(end.temp_c - _euler_reference(ph, 40.0, 0.0, 40.0, busy)) < 0.01


def _exact_integral_j(ph: DevicePhysics, t_end_s: float, busy: np.ndarray, gov: list[tuple[float, int]]) -> float:
    """∫P dt by enumerating every constant piece (all edges, power at each piece's midpoint)."""
    edges = sorted({0.0, t_end_s, *(t for t, _ in gov), *busy.ravel().tolist()})
    edges = [e for e in edges if 0.0 <= e <= t_end_s]
    gov_t = np.array([t for t, _ in gov])
    total = 0.0
    for a, b in itertools.pairwise(edges):
        mid = 0.5 * (a + b)
        on = bool(np.any((busy[:, 0] <= mid) & (mid < busy[:, 1])))
        idx = gov[int(np.searchsorted(gov_t, mid, side="right")) - 1][1]
        total += node_power_w(ph, idx, on) * (b - a)
    return total


@settings(max_examples=40, deadline=None)
@given(
    gaps=st.lists(st.floats(0.0, 3.0), min_size=1, max_size=40),
    lens=st.lists(st.floats(1e-4, 4.0), min_size=40, max_size=40),
    period_s=st.floats(0.05, 2.0),
    r=st.floats(3.0, 15.0),
)
def test_energy_accounting_closes(gaps: list[float], lens: list[float], period_s: float, r: float) -> None:
    """Σ per-request dynamic energy + base energy == ∫P dt (rel 1e-9), with the governor switching steps."""
    ph = physics(thermal={"resistance_c_per_w": r, "time_constant_s": 5.0, "initial_c": 78.0})
    starts, t = [], 0.0
    for g, ln in zip(gaps, lens, strict=False):
        starts.append((t + g, t + g + ln))
        t += g + ln
    busy = np.array(starts)
    t_end_s = t + 1.0
    state = initial_state(ph)
    gov = [(0.0, state.freq_index)]
    total_j = base_j = busy_j = 0.0
    t0 = 0.0
    while t0 < t_end_s:
        t1 = min(t0 + period_s, t_end_s)
        state, e = advance(ph, state, t0, t1, busy)
        total_j += e.total_j
        base_j += e.base_j
        busy_j += e.busy_j
        state = NodeState(state.temp_c, govern(ph.dvfs, state.freq_index, state.temp_c))
        gov.append((t1, state.freq_index))
        t0 = t1
    edges = np.array([g[0] for g in gov])
    steps = np.array([g[1] for g in gov])
    per_request = [dynamic_energy_j(ph, a, b, edges, steps) for a, b in busy]
    reference = _exact_integral_j(ph, t_end_s, busy, gov)
    assert abs(math.fsum(per_request) + base_j - reference) <= 1e-9 * reference
    assert abs(total_j - reference) <= 1e-9 * reference
    assert abs(busy_j - math.fsum(per_request)) <= 1e-9 * reference


def test_governor_settles_at_the_analytic_throttling_equilibrium() -> None:
    """Constant full load, T_amb + R P(f_max) above the first threshold: the time-average frequency sits
    within one step of f* where T_amb + R P(f*) = threshold (P linear in f between ladder steps)."""
    ph = physics(thermal={"time_constant_s": 60.0}, dvfs={"period_s": 0.5})
    dv, th = ph.dvfs, ph.thermal
    t_ss = [th.ambient_c + th.resistance_c_per_w * node_power_w(ph, i, True) for i in range(len(dv.freqs_mhz))]
    k = next(i for i, thr in enumerate(dv.thresholds_c) if t_ss[i + 1] < thr)  # heats above thr_k, cools below
    thr = dv.thresholds_c[k]
    frac = (t_ss[k] - thr) / (t_ss[k] - t_ss[k + 1])
    f_star = dv.freqs_mhz[k] + frac * (dv.freqs_mhz[k + 1] - dv.freqs_mhz[k])
    state = initial_state(ph)
    t0, freqs, temps = 0.0, [], []
    for _ in range(int(3600 / dv.period_s)):
        state, _ = advance(ph, state, t0, t0 + dv.period_s, np.array([[0.0, 1e9]]))
        state = NodeState(state.temp_c, govern(dv, state.freq_index, state.temp_c))
        t0 += dv.period_s
        freqs.append(dv.freqs_mhz[state.freq_index])
        temps.append(state.temp_c)
    settled = np.array(freqs[len(freqs) // 2 :])
    step_mhz = dv.freqs_mhz[k] - dv.freqs_mhz[k + 1]
    assert abs(float(settled.mean()) - f_star) <= step_mhz
    assert 0.0 < float(np.mean(settled < dv.freqs_mhz[0])) < 1.0 or k > 0  # it does throttle, and recovers
    assert max(temps[len(temps) // 2 :]) < dv.hard_limit_c
    assert abs(float(np.mean(temps[len(temps) // 2 :])) - thr) < dv.hysteresis_c + 1.0


def test_governor_throttles_at_once_relaxes_with_hysteresis_and_obeys_the_hard_limit() -> None:
    dv = physics().dvfs  # thresholds 80, 82, 84; hysteresis 2; hard limit 85
    assert govern(dv, 0, 79.9) == 0
    assert govern(dv, 0, 80.0) == 1
    assert govern(dv, 0, 83.0) == 2
    assert govern(dv, 1, 79.0) == 1  # not 2 below the threshold yet: hold
    assert govern(dv, 1, 77.9) == 0
    assert govern(dv, 3, 81.0) == 2
    assert govern(dv, 0, 85.0) == 3


def test_service_time_factor_follows_the_frequency_exponent() -> None:
    ph = physics(dvfs={"alpha": 0.5})
    assert freq_factor(ph, 0) == 1.0
    assert abs(freq_factor(ph, 3) - (1500 / 600) ** 0.5) < 1e-12


def test_tenant_schedule_is_deterministic_from_the_generator_and_consistent() -> None:
    ph = physics(
        tenant=[
            {"cpu_share": 0.25, "mean_on_s": 30, "mean_off_s": 90, "extra_w": 0.5},
            {"cpu_share": 0.5, "mean_on_s": 10, "mean_off_s": 10, "distribution": "uniform", "start_on": True},
        ]
    )
    a = tenant_schedule(ph.tenant, 20000.0, np.random.default_rng(5))
    b = tenant_schedule(ph.tenant, 20000.0, np.random.default_rng(5))
    c = tenant_schedule(ph.tenant, 20000.0, np.random.default_rng(6))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])
    times, share, watts = a
    assert times[0] == 0.0 and np.all(np.diff(times) > 0) and times[-1] < 20000.0
    assert set(np.round(share, 9).tolist()) <= {0.0, 0.25, 0.5, 0.75}
    assert share[0] == 0.5  # the second tenant starts on
    on_first = (np.isclose(share, 0.25) | np.isclose(share, 0.75)).astype(float)
    frac = float(np.sum(on_first[:-1] * np.diff(times)) / times[-1])
    assert abs(frac - 0.25) < 0.05  # on 30 s of every 120 s on average
    assert np.array_equal(watts > 0, on_first > 0)
