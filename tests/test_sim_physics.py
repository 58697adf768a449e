"""Device physics inside the simulator: the reference model and the fast path stay bit-identical with
physics on, energy accounting closes through a whole simulated run, and the governor's equilibrium holds
when the load comes from simulated requests."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sim_engine import _random_setup, curves_of

from edgeprune.config import Ctx
from edgeprune.controller.bottleneck import BottleneckParams, BottleneckPolicy
from edgeprune.controller.contract import Observation
from edgeprune.controller.static import StaticPolicy
from edgeprune.controller.thermal import ThermalPolicy, ThermalPolicyParams
from edgeprune.physics import DevicePhysics, device_physics_from_table, node_power_w, physics_summary
from sim.engine import DONE, EngineOutput, SimSetup, simulate

CTX = Ctx("test.toml", "device[0].physics")


def physics(**over: object) -> DevicePhysics:
    return device_physics_from_table({"preset": "rpi4b", **over}, CTX)


def random_physics(rng: np.random.Generator) -> DevicePhysics:
    """A Pi-like node with random thermal, governor and tenant parameters that throttles in a short run."""
    tenants = (
        [{"cpu_share": float(rng.uniform(0.1, 0.6)), "mean_on_s": float(rng.uniform(2, 20)), "mean_off_s": 10.0}]
        if rng.random() < 0.5
        else []
    )
    return physics(
        thermal={
            "resistance_c_per_w": float(rng.uniform(8, 16)),
            "time_constant_s": float(rng.uniform(2, 30)),
            "ambient_c": float(rng.uniform(20, 40)),
            "initial_c": float(rng.uniform(60, 84)),
        },
        dvfs={"period_s": float(rng.choice([0.25, 0.5, 0.7, 1.0])), "alpha": float(rng.uniform(0.5, 1.0))},
        tenant=tenants,
    )


def _setup(rng: np.random.Generator, k_n: int, n_levels: int) -> SimSetup:
    """The engine property test's random pipeline (speeds, links, slowdowns), with physics on most nodes."""
    phys = tuple(random_physics(rng) if rng.random() < 0.75 else None for _ in range(k_n))
    if all(p is None for p in phys):
        phys = (random_physics(rng), *phys[1:])
    seeds = tuple(np.random.SeedSequence(int(rng.integers(2**31))).spawn(k_n))
    return dataclasses.replace(
        _random_setup(rng, k_n, n_levels, zero_hops=False), end_s=60.0, physics=phys, tenant_seeds=seeds
    )


def _assert_same(a: EngineOutput, b: EngineOutput) -> None:
    for name in ("departure_s", "status", "levels", "service_s", "start_s"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.timeline.keys() == b.timeline.keys()
    for key in a.timeline:  # NaN (no physics on a stage) compares equal here, as in the result files
        np.testing.assert_array_equal(np.asarray(a.timeline[key]), np.asarray(b.timeline[key]))
    assert a.switches == b.switches
    assert a.heat is not None and b.heat is not None
    for k in a.heat:
        assert a.heat[k].run.totals() == b.heat[k].run.totals()
        assert a.heat[k].run.edges_s == b.heat[k].run.edges_s


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    k_n=st.integers(1, 3),
    n_levels=st.integers(1, 4),
    load=st.floats(0.4, 1.5),
    policy_kind=st.sampled_from(["thermal", "bottleneck", "thermal-energy"]),
)
def test_fast_path_equals_reference_with_physics_property(
    seed: int, k_n: int, n_levels: int, load: float, policy_kind: str
) -> None:
    """Random physics (RC, governor period, frequency exponent, tenants), pipelines, loads and policies:
    temperatures, frequencies, energies and every request agree bit for bit, plain and compiled kernels."""
    rng = np.random.default_rng(seed)
    setup = _setup(rng, k_n, n_levels)
    arrivals = np.cumsum(rng.exponential(float(max(m[0] for m in setup.mean_s)) / load, 300))
    q = rng.random((k_n, arrivals.size))
    outs = []
    for path, compiled in (("reference", None), ("fast", False), ("fast", True)):
        curves = curves_of(setup, slo_s=1.0)
        if policy_kind == "bottleneck":
            policy: object = BottleneckPolicy(BottleneckParams(cooldown_s=3.0), curves)
        else:
            objective = "energy" if policy_kind == "thermal-energy" else "slo"
            policy = ThermalPolicy(ThermalPolicyParams(cooldown_s=3.0, objective=objective), curves)
        outs.append(simulate(setup, policy, arrivals, q, path=path, compiled=compiled))  # type: ignore[arg-type]
    assert any(np.isfinite(outs[0].timeline["temp_c"]))
    for other in outs[1:]:
        _assert_same(outs[0], other)


class _Always:
    def __init__(self, level: int) -> None:
        self.level = level

    def decide(self, obs: Observation) -> tuple[int, ...]:
        return (self.level,)


def _one_node(phys: DevicePhysics, end_s: float, service_s: float = 0.1) -> SimSetup:
    return SimSetup(
        stage_names=("s0",),
        samples_s=(((service_s,),),),
        mean_s=((service_s,),),
        switch_s=0.0,
        hop_tx_s=(),
        hop_latency_s=(),
        env_changes=(),
        initial_factor=(1.0,),
        queue_capacity=None,
        drop_head=False,
        period_s=1.0,
        end_s=end_s,
        physics=(phys,),
        tenant_seeds=(np.random.SeedSequence(3),),
    )


@pytest.mark.parametrize("path", ["fast", "reference"])
def test_energy_accounting_closes_through_a_simulated_run(path: str) -> None:
    """Per-request dynamic energies + the idle part = ∫P dt (relative error <= 1e-9), with throttling and
    a tenant, over the services the simulator actually ran."""
    phys = physics(
        thermal={"time_constant_s": 20.0, "initial_c": 78.0, "ambient_c": 35.0},
        tenant=[{"cpu_share": 0.25, "mean_on_s": 15.0, "mean_off_s": 15.0}],
    )
    setup = _one_node(phys, end_s=300.0)
    rng = np.random.default_rng(1)
    arrivals = np.cumsum(rng.exponential(0.12, 2000))
    arrivals = arrivals[arrivals < 250.0]
    out = simulate(setup, StaticPolicy((0,)), arrivals, rng.random((1, arrivals.size)), path=path)  # type: ignore[arg-type]
    assert out.heat is not None and out.start_s is not None
    node = out.heat[0]
    totals = node.run.totals()
    assert totals.throttled_s > 0  # the governor acted during the run
    per_request = node.request_energy_j(out.start_s[:, 0], out.service_s[:, 0], setup.end_s)
    dynamic_j = math.fsum(np.nan_to_num(per_request))
    assert abs(dynamic_j + totals.base_j - totals.energy_j) <= 1e-9 * totals.energy_j
    assert abs(dynamic_j - totals.busy_j) <= 1e-9 * totals.energy_j
    summary = physics_summary([node.figures()], int((out.status == DONE).sum()), setup.end_s)
    assert summary["energy_j"] == pytest.approx(totals.energy_j, rel=1e-12)
    assert math.fsum(summary["time_at_freq_s"].values()) == pytest.approx(setup.end_s, rel=1e-12)


def test_governor_equilibrium_under_a_constant_simulated_overload() -> None:
    """A queue that never empties keeps the node busy: it settles into throttling where T stays at the
    threshold, time-average frequency within one step of the analytic f* (T_amb + R P(f*) = threshold)."""
    phys = physics(thermal={"time_constant_s": 30.0}, dvfs={"period_s": 0.5})
    dv, th = phys.dvfs, phys.thermal
    t_ss = [th.ambient_c + th.resistance_c_per_w * node_power_w(phys, i, True) for i in range(len(dv.freqs_mhz))]
    k = next(i for i, thr in enumerate(dv.thresholds_c) if t_ss[i + 1] < dv.thresholds_c[i])
    thr = dv.thresholds_c[k]
    f_star = dv.freqs_mhz[k] + (t_ss[k] - thr) / (t_ss[k] - t_ss[k + 1]) * (dv.freqs_mhz[k + 1] - dv.freqs_mhz[k])
    setup = _one_node(phys, end_s=1800.0, service_s=0.05)
    arrivals = np.arange(0.0, 1800.0, 0.02)  # 2.5x the unthrottled capacity: never idle
    out = simulate(setup, _Always(0), arrivals, np.full((1, arrivals.size), 0.5))  # type: ignore[arg-type]
    freq = np.asarray(out.timeline["freq_mhz"])
    temp = np.asarray(out.timeline["temp_c"])
    settled = slice(freq.size // 2, None)
    assert abs(float(freq[settled].mean()) - f_star) <= dv.freqs_mhz[k] - dv.freqs_mhz[k + 1]
    assert abs(float(temp[settled].mean()) - thr) < dv.hysteresis_c + 1.0
    assert float(temp.max()) < dv.hard_limit_c


def test_a_scenario_without_physics_has_no_physics_columns() -> None:
    setup = dataclasses.replace(_one_node(physics(), 10.0), physics=(), tenant_seeds=())
    out = simulate(setup, _Always(0), np.array([0.5, 1.5]), np.full((1, 2), 0.5))  # type: ignore[arg-type]
    assert out.heat is None and "temp_c" not in out.timeline


def test_physics_on_a_device_hosting_two_stages_is_refused(tmp_path: object) -> None:
    """A node's heat comes from one stage's busy intervals: two stages on one node with physics is one line."""
    from pathlib import Path

    from simfixtures import BASE_SCENARIO, write_case

    from edgeprune.errors import ConfigError
    from edgeprune.scenario import load_scenario

    text = BASE_SCENARIO.replace(
        'name = "pi1"\nprofile_device = "cpu"\n',
        'name = "pi1"\nprofile_device = "cpu"\nphysics = { preset = "rpi4b" }\n',
    )
    case = write_case(Path(str(tmp_path)) / "case", text)
    with pytest.raises(ConfigError, match=r"device\[0\]\.physics = 'pi1': device physics models one stage per node"):
        load_scenario(case)
