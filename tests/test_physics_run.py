"""NodeRun: a node's physics through a run, advanced at its change instants as a backend does."""

from __future__ import annotations

import itertools
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeprune.config import Ctx
from edgeprune.physics import (
    DevicePhysics,
    NodeRun,
    NodeState,
    advance,
    device_physics_from_table,
    govern,
    initial_state,
    node_power_w,
)


def physics(**over: object) -> DevicePhysics:
    return device_physics_from_table({"preset": "rpi4b", **over}, Ctx("t"))


def drive(run: NodeRun, end_s: float, busy: list[tuple[float, float]]) -> list[tuple[float, int, float]]:
    """Advance ``run`` change instant by change instant to ``end_s``; return (time, step, factor) after each."""
    seen, first = [], 0  # busy is sorted: intervals before `first` ended before run.t_s
    while run.t_s < end_s:
        t = min(run.next_s, end_s)
        while first < len(busy) and busy[first][1] <= run.t_s:
            first += 1
        last = first
        while last < len(busy) and busy[last][0] < t:
            last += 1
        run.advance(t, busy[first:last])
        seen.append((t, run.state.freq_index, run.factor))
    return seen


def _reference_integral_j(ph: DevicePhysics, run: NodeRun, end_s: float, busy: list[tuple[float, float]]) -> float:
    """∫P dt enumerated piece by piece from the recorded conditions (an independent sum)."""
    edges = sorted({0.0, end_s, *run.edges_s, *(x for iv in busy for x in iv), *run.tenant_times_s})
    edges = [e for e in edges if e <= end_s]
    total = 0.0
    for a, b in itertools.pairwise(edges):
        mid = 0.5 * (a + b)
        j = max(i for i, e in enumerate(run.edges_s) if e <= mid)
        k = max(i for i, e in enumerate(run.tenant_times_s) if e <= mid)
        on = any(s <= mid < e for s, e in busy)
        total += node_power_w(ph, run.steps[j], on, run.shares[j], run.tenant_watts[k]) * (b - a)
    return total


@settings(max_examples=25, deadline=None)
@given(
    lens=st.lists(st.floats(1e-3, 6.0), min_size=2, max_size=60),
    gap=st.floats(0.0, 2.0),
    seed=st.integers(0, 2**31),
    r=st.floats(6.0, 16.0),
)
def test_energy_closes_with_tenants_and_throttling(lens: list[float], gap: float, seed: int, r: float) -> None:
    """Σ request_energy_j + base == ∫P dt (rel 1e-9) with a governor switching steps and a tenant on/off."""
    ph = physics(
        thermal={"resistance_c_per_w": r, "time_constant_s": 8.0, "initial_c": 79.0},
        dvfs={"period_s": 0.7},
        tenant=[{"cpu_share": 0.5, "mean_on_s": 3.0, "mean_off_s": 4.0, "extra_w": 0.3}],
    )
    busy, t = [], 0.0
    for ln in lens:
        busy.append((t + gap, t + gap + ln))
        t += gap + ln
    end_s = t + 2.0
    run = NodeRun(ph, end_s, np.random.default_rng(seed))
    drive(run, end_s, busy)
    tot = run.totals()
    per_request = math.fsum(run.request_energy_j(a, b) for a, b in busy)
    ref = _reference_integral_j(ph, run, end_s, busy)
    assert abs(per_request + tot.base_j - ref) <= 1e-9 * ref
    assert abs(tot.energy_j - ref) <= 1e-9 * ref
    assert abs(sum(tot.time_at_step_s) - end_s) <= 1e-9 * end_s


def test_change_instants_factor_and_determinism() -> None:
    ph = physics(dvfs={"period_s": 0.5}, tenant=[{"cpu_share": 0.25, "mean_on_s": 20, "mean_off_s": 20}])
    busy = [(float(i), i + 0.9) for i in range(3000)]  # 90 % busy: heats past 80 C and throttles

    def one(seed: int) -> tuple[list[tuple[float, int, float]], NodeRun]:
        run = NodeRun(ph, 3000.0, np.random.default_rng(seed))
        return drive(run, 3000.0, busy), run

    a, run = one(1)
    b, _ = one(1)
    assert a == b
    gov = [t for t, _, _ in a if abs(t / 0.5 - round(t / 0.5)) < 1e-9]
    assert gov[:4] == [0.5, 1.0, 1.5, 2.0]  # governor instants at n x period_s, exactly
    tenant_changes = set(run.tenant_times_s[1:])
    assert tenant_changes <= {t for t, _, _ in a}  # every tenant change is a change instant
    tot = run.totals()
    assert tot.throttled_s > 0 and tot.peak_temp_c >= 80.0
    for _, step, factor in a:  # the factor is the frequency's times the tenant's
        assert factor >= (1500.0 / ph.dvfs.freqs_mhz[step]) ** ph.dvfs.alpha - 1e-12
    assert max(f for _, _, f in a) > 1.4  # throttled to 1000 MHz: ~1.47x


def test_node_run_follows_the_reference_functions_exactly() -> None:
    """NodeRun's cached fast path gives the same floats as advance() + govern() called by hand."""
    ph = physics(thermal={"initial_c": 70.0, "schedule_times_s": [400.0], "schedule_ambient_c": [35.0]})
    busy = [(i + 0.1, i + 0.85) for i in range(900)]
    run = NodeRun(ph, 900.0, np.random.default_rng(0))
    state = initial_state(ph)
    temps, steps, energy_j = [], [], 0.0
    for n in range(1, 901):
        t0, t1 = (n - 1) * ph.dvfs.period_s, n * ph.dvfs.period_s
        window = [iv for iv in busy if iv[1] > t0 and iv[0] < t1]
        assert run.next_s == t1
        assert run.advance(t1, window) == advance(ph, state, t0, t1, window)[0].temp_c
        state, e = advance(ph, state, t0, t1, window)
        energy_j += e.total_j
        state = NodeState(state.temp_c, govern(ph.dvfs, state.freq_index, state.temp_c))
        temps.append(state.temp_c)
        steps.append(state.freq_index)
        assert run.state == state
    assert run.totals().energy_j == energy_j
    assert max(steps) > 0 and min(steps) == 0  # it did throttle (at 35 C ambient) and did not at first


def test_a_run_advanced_past_its_end_keeps_logging_changes() -> None:
    """The change log is sized for ``end_s``; a caller that goes on (an emulator without a fixed end) gets
    every further change recorded, the same as a run made long enough from the start."""
    ph = physics(thermal={"resistance_c_per_w": 12.0, "time_constant_s": 5.0, "initial_c": 84.0})
    short, long = NodeRun(ph, 2.0, np.random.default_rng(0)), NodeRun(ph, 200.0, np.random.default_rng(0))
    for run in (short, long):
        while run.t_s < 60.0:
            run.advance(run.next_s, [(run.t_s, run.next_s)] if run.t_s < 30.0 else [])
    assert len(short.edges_s) > 3  # it throttled, then recovered once idle
    assert short.edges_s == long.edges_s and short.steps == long.steps and short.totals() == long.totals()
