"""Simulator vs hardware without a cluster: the emulated physics given to the prediction, the intervals on the
hardware's figures, and the comparison's bounds and flags (the simulator stands in for the hardware)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from simfixtures import short_scenario, write_case

from edgeprune.scenario import Scenario
from hil.cluster import load_cluster

PHYS = '{ preset = "rpi4b", thermal = { resistance_c_per_w = 16.0, time_constant_s = 10.0, initial_c = 68.2 } }'


def _cluster(tmp_path: Path, emulated: dict[str, str]) -> Path:
    """Four hosts n1..n4, stage s<k> on n<k+1>; ``emulated``: host -> emulate_physics inline table."""
    lines = ['name = "lab"', "[coordinator]", 'listen_address = "10.0.0.1"', "[model]", 'checkpoint = "t.pt"']
    for i in range(1, 5):
        lines += ["[[host]]", f'name = "n{i}"', f'address = "10.0.0.{i}"', 'python = "p"', 'workdir = "/w"']
        if f"n{i}" in emulated:
            lines += [
                f'cpu_cgroup = "/sys/fs/cgroup/cpu/n{i}"',
                "cpu_quota = 0.4",
                'slowdown = "stress"',
                f'thermal_zone_file = "/w/n{i}-temp"',
                f'cpu_freq_file = "/w/n{i}-freq"',
                f"emulate_physics = {emulated[f'n{i}']}",
            ]
    for k in range(4):
        lines += ["[[stage]]", f'name = "s{k}"', f'host = "n{k + 1}"']
    path = tmp_path / "pis.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_emulated_hosts_physics_reaches_the_prediction(tmp_path: Path) -> None:
    """The scenario puts s0, s2 on pi1 and s1, s3 on pi2 (slowed 1.6x in [40, 80) s); the cluster places each
    stage on its own host and emulates n2 (hot) and n3.  The prediction's scenario gets one device per host,
    the emulated ones with the cluster's physics, the slowdown on the hosts pi2 stands for (n2, n4)."""
    from edgeprune.scenario import load_scenario
    from hil.compare import with_cluster_physics
    from sim.runner import draw_streams, run_policy

    sc = load_scenario(write_case(tmp_path / "case", short_scenario(120, slowed_s=(40, 80))))
    cluster = load_cluster(_cluster(tmp_path, {"n2": PHYS, "n3": '{ preset = "rpi4b" }'}))
    got = with_cluster_physics(sc, cluster)
    assert [s.device for s in got.stages] == ["n1", "n2", "n3", "n4"]
    devices = {d.name: d for d in got.devices}
    assert devices["n2"].physics == cluster.host("n2").emulate_physics
    assert devices["n3"].physics == cluster.host("n3").emulate_physics
    assert devices["n1"].physics is None and devices["n4"].physics is None
    assert {d.profile_device for d in got.devices} == {"cpu"}
    assert devices["n2"].physics is not None and devices["n2"].physics.thermal.resistance_c_per_w == 16.0
    assert [(ev.device, ev.slowdown, ev.start_s, ev.end_s) for ev in got.environment] == [
        ("n2", 1.6, 40.0, 80.0),
        ("n4", 1.6, 40.0, 80.0),
    ]
    # the run folder's scenario.toml (written from raw) says what was simulated: it loads back the same
    from edgeprune.runs import scenario_toml

    (tmp_path / "resolved.toml").write_text(scenario_toml(got))
    back = load_scenario(tmp_path / "resolved.toml")
    assert (back.devices, back.stages, back.environment) == (got.devices, got.stages, got.environment)
    res = run_policy(got, got.policies[0], draw_streams(got))  # no-pruning
    tl = res.timeline
    for stage, known in (("s0", False), ("s1", True), ("s2", True), ("s3", False)):
        temps = tl.filter(tl["stage"] == stage)["temp_c"]
        assert (temps.null_count() == 0) == known and (temps.null_count() == temps.len()) == (not known)
    hot = tl.filter(tl["stage"] == "s1")
    assert hot["temp_c"].max() > tl.filter(tl["stage"] == "s2")["temp_c"].max()  # R 16 vs the preset's 10
    # no host emulated: the scenario is left alone
    assert with_cluster_physics(sc, load_cluster(_cluster(tmp_path, {}))) is sc


def test_the_emulator_fed_the_simulators_busy_time_tracks_its_temperature(tmp_path: Path) -> None:
    """The same physics on both sides: an EmulatorState fed, per governor period, the CPU time the simulated
    node's services used (busy time x the quota at the current step) follows the simulator's temperature
    and frequency steps; what differs is the emulator's period-mean power (the approximation it states)."""
    from edgeprune.scenario import load_scenario
    from hil.compare import with_cluster_physics
    from hil.thermal_emulator import EmulatorState
    from sim.runner import draw_streams, run_policy

    sc = load_scenario(write_case(tmp_path / "case", short_scenario(240, slowed_s=(300, 400))))
    cluster = load_cluster(_cluster(tmp_path, {"n2": PHYS}))
    got = with_cluster_physics(sc, cluster)
    spec = got.policies[0]  # no-pruning
    spec = replace(spec, params=replace(spec.params, period_s=0.25))  # control periods inside each governor period
    tl = run_policy(got, spec, draw_streams(got)).timeline
    node = tl.filter(tl["stage"] == "s1").sort("time_s")
    phys = cluster.host("n2").emulate_physics
    assert phys is not None and phys.dvfs.period_s == 1.0
    state = EmulatorState(phys, 0.4)
    t = node["time_s"].to_numpy()
    busy = (node["served"] * node["service_time_s"]).fill_null(0.0).to_numpy()  # busy time per period
    temps, sim_temps, steps, sim_freqs = [], [], [], []
    for n in range(1, int(t.max())):
        in_period = (t > n - 1 + 1e-9) & (t <= n + 1e-9)
        state.advance(float(n), float(busy[in_period].sum()) * state.quota_cpus, 1.0)
        temps.append(state.temp_c)
        steps.append(state.freq_mhz)
        at = np.flatnonzero(np.isclose(t, n))
        sim_temps.append(float(node["temp_c"][int(at[0])]))
        sim_freqs.append(float(node["freq_mhz"][int(at[0])]))
    err = np.abs(np.asarray(temps) - np.asarray(sim_temps))
    assert max(sim_temps) > 80.0  # the node did heat into throttling
    assert float(np.median(err)) < 0.5 and float(err.max()) < 2.0
    agree = np.mean(np.asarray(steps) == np.asarray(sim_freqs))
    assert agree > 0.9


def test_percentile_interval_covers_the_true_percentile() -> None:
    """Order-statistic intervals on exponential samples: they cover the true p50 / p95 in >= 95% of draws (and
    not in every one: they are not trivially wide), and contain the sample percentile."""
    from hil.compare import percentile_interval

    rng = np.random.default_rng(16)
    for q, n in ((50.0, 100), (95.0, 300)):
        truth = -math.log(1 - q / 100)  # exponential(1) quantile
        hits = 0
        for _ in range(1000):
            x = rng.exponential(1.0, n)
            lo, hi = percentile_interval(x, q)
            point = float(np.percentile(x, q, method="inverted_cdf"))
            assert lo <= point <= hi
            hits += lo <= truth <= hi
        assert 0.945 <= hits / 1000 <= 0.99


def test_percentile_interval_says_when_the_requests_are_too_few() -> None:
    """A p95 of 30 requests or a p99 of 100 has no upper bound; a p50 of 1000 is tight; inf counts (unfinished)."""
    from hil.compare import percentile_interval

    x = np.linspace(0.1, 1.0, 30)
    assert percentile_interval(x, 95.0)[1] == math.inf
    assert percentile_interval(np.linspace(0.1, 1.0, 100), 99.0)[1] == math.inf
    lo, hi = percentile_interval(np.linspace(1.0, 2.0, 1000), 50.0)
    assert 1.45 < lo < 1.5 < hi < 1.55
    with_unfinished = np.concatenate([np.linspace(0.1, 1.0, 900), np.full(100, np.inf)])
    assert percentile_interval(with_unfinished, 95.0) == (math.inf, math.inf)
    assert math.isnan(percentile_interval(np.array([]), 50.0)[0])


def test_attainment_interval_is_clopper_pearson() -> None:
    from hil.compare import attainment_interval

    lo, hi = attainment_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.30849, abs=1e-4)  # 1 - 0.025 ** (1 / 10)
    lo, hi = attainment_interval(95, 100)
    assert lo == pytest.approx(0.88716, abs=1e-4) and hi == pytest.approx(0.98357, abs=1e-4)


def test_comparison_holds_the_projects_bounds_and_flags_thin_rows(tmp_path: Path) -> None:
    """Stand-in hardware: the simulator with pi2's slowdown 1.8x where the prediction states 1.6x.  The table
    prints the project's bounds, the requests behind each figure and the hardware's interval; on a short run
    the p99 interval is unbounded and flagged; with physics the time throttled is compared too."""
    from edgeprune.scenario import load_scenario
    from hil.compare import BOUNDS, compare, format_compare, with_cluster_physics
    from sim.runner import draw_streams, run_policy

    sc = load_scenario(write_case(tmp_path / "case", short_scenario(90, slowed_s=(30, 60))))
    sc = with_cluster_physics(sc, load_cluster(_cluster(tmp_path, {"n2": PHYS})))
    assert BOUNDS == {"p50_latency_s": 5.0, "p95_latency_s": 10.0, "slo_attainment": 3.0, "throttled_s": 10.0}
    streams = draw_streams(sc)
    spec = sc.policies[0]
    truth = replace(sc, environment=tuple(replace(ev, slowdown=1.8) for ev in sc.environment))
    hw, sim = run_policy(truth, spec, streams), run_policy(sc, spec, streams)
    doc = compare({spec.name: hw}, {spec.name: sim}, sc.slo_s)
    rows = doc["policies"][spec.name]
    n = int((~hw.requests["in_warmup"]).sum())
    assert rows["p95_latency_s"]["n_hw"] == n and rows["p95_latency_s"]["bound"] == 10.0
    assert rows["p50_latency_s"]["bound"] == 5.0 and rows["slo_attainment"]["bound"] == 3.0
    lo, hi = rows["p95_latency_s"]["hw_interval"]
    assert lo <= rows["p95_latency_s"]["hw"] <= hi
    p50 = rows["p50_latency_s"]
    assert p50["within_bound"] == (abs(p50["error"]) <= 5.0)
    assert set(rows["within_bounds"]) == {"p50", "p95", "slo", "throttled"}
    th = rows["throttled_s"]
    assert th["hw"] is not None and th["sim"] is not None and th["sim"] > 0  # n2 (R 16) throttles
    text = format_compare(doc)
    assert "±5%" in text and "±10%" in text and "±3pt" in text and "±10" not in text.split("p50_latency_s")[1][:60]
    p99_line = next(line for line in text.splitlines() if "p99_latency_s" in line)
    if rows["p99_latency_s"]["interval_pct"][1] == math.inf:
        assert "+inf%" in p99_line
    p95_line = next(line for line in text.splitlines() if "p95_latency_s" in line)
    assert p95_line.endswith("!") == (rows["p95_latency_s"]["interval_within_bound"] is False)
    assert f"{n:>6}" in p95_line
    assert any(line.startswith(f"{spec.name:<14}throttled_s") for line in text.splitlines())


def test_level_shapes_replay_pruned_levels_that_ran_slower_than_profiled(tmp_path: Path) -> None:
    """Stand-in hardware: the simulator whose services at levels >= 2 take 1.4x their profiled time (as the
    capped local nodes showed, relatively) while the policy knows the profile.  The shapes come back from
    the run's timeline, and the as-realised replay (window factors x shapes, the policy still knowing the
    profile) predicts the run's p95 better than the factors alone."""
    import polars as pl

    from edgeprune.scenario import load_scenario
    from hil.compare import as_realised, compare, level_shapes, realised_factors, with_level_shapes
    from sim.runner import curves_for, draw_streams, run_policy

    sc = load_scenario(write_case(tmp_path / "case", short_scenario(300, slowed_s=(400, 500))))
    spec = next(p for p in sc.policies if p.name == "dynamic")
    streams = draw_streams(sc)
    slow = {st.name: [1.0 if lv < 2 else 1.4 for lv in range(sc.profile.n_levels)] for st in sc.stages}
    truth = with_level_shapes(sc, slow)
    assert curves_for(truth).latency_s[0][2] == pytest.approx(1.4 * curves_for(sc).latency_s[0][2])
    hw = run_policy(truth, spec, streams, known_profile=sc.profile)
    shapes = level_shapes(sc, hw, realised_factors(sc, hw))
    served = hw.timeline.group_by(["stage", "level"]).agg(pl.col("served").sum()).filter(pl.col("served") >= 10)
    checked = 0
    for st in sc.stages:
        levels = served.filter(pl.col("stage") == st.name)["level"].to_list()
        low = [shapes[st.name][lv] for lv in levels if lv < 2]
        high = [shapes[st.name][lv] for lv in levels if lv >= 2]
        if low and high:
            assert min(high) / max(low) == pytest.approx(1.4, rel=0.1)
            checked += 1
    assert checked >= 2
    factors_only = as_realised(sc, realised_factors(sc, hw))
    without = run_policy(factors_only, spec, streams)
    with_shapes = run_policy(with_level_shapes(factors_only, shapes), spec, streams, known_profile=sc.profile)
    doc = compare({"dynamic": hw}, {"dynamic": without}, sc.slo_s, {"dynamic": with_shapes})
    err_without = abs(doc["policies"]["dynamic"]["p95_latency_s"]["error"])
    err_with = abs(doc["as_realised"]["policies"]["dynamic"]["p95_latency_s"]["error"])
    assert err_with < err_without and err_with < 10.0


def test_sim_vs_hw_document_states_the_emulation_and_both_tables(tmp_path: Path) -> None:
    """The whole comparison on stand-in hardware (the simulator itself): both tables, the per-level shapes
    (1.0 where the run matches its profile), the emulated hosts and the emulator's approximations."""
    from edgeprune.scenario import load_scenario
    from hil.compare import EMULATION_APPROXIMATIONS, format_compare, sim_vs_hw
    from sim.runner import draw_streams, run_policy

    sc = load_scenario(write_case(tmp_path / "case", short_scenario(90, slowed_s=(30, 60))))
    sc = with_cluster_physics_for(sc, tmp_path)
    streams = draw_streams(sc)
    results = [run_policy(sc, p, streams) for p in sc.policies]
    doc = sim_vs_hw(sc, results, None, {"n2": "rpi4b"})
    assert set(doc["policies"]) == set(doc["as_realised"]["policies"]) == {"no-pruning", "dynamic"}
    assert doc["physics"] == {"emulated": {"n2": "rpi4b"}, "approximations": list(EMULATION_APPROXIMATIONS)}
    assert doc["as_realised"]["level_shapes"]["no-pruning"]["s0"] == [1.0] * sc.profile.n_levels  # level 0 only
    for policy in ("no-pruning", "dynamic"):  # the simulator against itself: every bound holds as stated
        assert all(doc["policies"][policy]["within_bounds"].values())
    text = format_compare(doc)
    assert text.startswith("emulated physics given to the simulator on n2 (rpi4b)")
    assert "per level (relative to the stage's factor): s0 " in text


def with_cluster_physics_for(sc: Scenario, tmp_path: Path) -> Scenario:
    """``sc`` on the four-host cluster of :func:`_cluster` with n2 emulated."""
    from hil.compare import with_cluster_physics

    return with_cluster_physics(sc, load_cluster(_cluster(tmp_path, {"n2": PHYS})))


def test_level_shapes_do_not_count_a_slowdown_twice(tmp_path: Path) -> None:
    """pi2 slowed 1.6x in [60, 180): the adaptive policy prunes its stages mostly while slowed, yet with no
    per-level distortion every shape stays ~1 (each period is divided by its window's realised factor)."""
    from edgeprune.scenario import load_scenario
    from hil.compare import level_shapes, realised_factors
    from sim.runner import draw_streams, run_policy

    sc = load_scenario(write_case(tmp_path / "case", short_scenario(240, slowed_s=(60, 180))))
    spec = next(p for p in sc.policies if p.name == "dynamic")
    hw = run_policy(sc, spec, draw_streams(sc))
    shapes = level_shapes(sc, hw, realised_factors(sc, hw))
    for stage in ("s1", "s3"):  # on pi2
        assert max(abs(x - 1.0) for x in shapes[stage]) < 0.1, shapes[stage]


def _drifting(sc: Scenario, slice_s: float, factors: np.ndarray) -> Scenario:
    """``sc`` whose nodes all run at ``factors[i]`` x their profile in ``[i x slice_s, (i + 1) x slice_s)``:
    a shared host whose speed drifts, all nodes together."""
    from edgeprune.scenario import EnvironmentEvent

    times = tuple(float(i * slice_s) for i in range(len(factors)))
    events = tuple(
        EnvironmentEvent(device=d.name, times_s=times, slowdowns=tuple(float(f) for f in factors)) for d in sc.devices
    )
    return replace(sc, environment=events)


def test_drift_slices_replay_a_host_whose_speed_drifts(tmp_path: Path) -> None:
    """Stand-in hardware: the simulator on a host whose speed changes every 5 s (0.7-1.5x, both nodes
    together) where the scenario states none.  The slices come back from the run's timeline, and the replay
    with them predicts the run's p95 within its bound, where one factor for the whole run does not."""
    from edgeprune.scenario import load_scenario
    from hil.compare import compare, drift_factors, realised_factors, realised_inputs
    from sim.runner import draw_streams, run_policy

    sc = load_scenario(write_case(tmp_path / "case", short_scenario(120, slowed_s=(300, 400))))
    truth_f = np.random.default_rng(16).uniform(0.7, 1.5, 24)
    spec = next(p for p in sc.policies if p.name == "no-pruning")
    streams = draw_streams(sc)
    hw = run_policy(_drifting(sc, 5.0, truth_f), spec, streams)
    factors = realised_factors(sc, hw)
    drift = drift_factors(sc, hw, factors)
    for device in ("pi1", "pi2"):
        got = dict(drift[device])
        inside = [i for i in range(1, 23) if i * 5.0 in got]
        assert len(inside) == 22
        err = [abs(got[i * 5.0] / truth_f[i] - 1.0) for i in inside]
        assert float(np.median(err)) < 0.05 and max(err) < 0.2
    errors = {}
    for slice_s in (math.inf, 5.0):
        inp = realised_inputs(sc, hw, factors, slice_s=slice_s, freq_steps=False, dispersion=False)
        replay = run_policy(inp.scenario, spec, streams)
        doc = compare({spec.name: hw}, {spec.name: replay}, sc.slo_s)
        errors[slice_s] = abs(doc["policies"][spec.name]["p95_latency_s"]["error"])
    assert errors[5.0] < 10.0 < errors[math.inf], errors


def test_service_dispersion_recovers_a_wider_spread(tmp_path: Path) -> None:
    """Stand-in hardware: the simulator whose services spread four times as wide around the profile's means
    (the means kept; cv ~0.2 as on the local cluster).  service_dispersion measures ~4 for every stage from
    the per-period means alone, and the replay widened by it predicts the p95 better than the profile's
    spread."""
    from edgeprune.scenario import load_scenario
    from hil.compare import compare, realised_factors, realised_inputs, service_dispersion, with_dispersion
    from sim.runner import draw_streams, run_policy

    sc = load_scenario(write_case(tmp_path / "case", short_scenario(300, slowed_s=(400, 500))))
    spec = next(p for p in sc.policies if p.name == "no-pruning")
    streams = draw_streams(sc)
    wide = {st.name: 4.0 for st in sc.stages}
    truth = with_dispersion(sc, wide)
    k0 = sc.profile.devices["cpu"].latency_s[0][0]
    assert float(np.mean(truth.profile.devices["cpu"].latency_s[0][0])) == pytest.approx(float(np.mean(k0)))
    hw = run_policy(truth, spec, streams, known_profile=sc.profile)
    factors = realised_factors(sc, hw)
    spread = service_dispersion(sc, hw, factors, {})
    assert all(x == pytest.approx(4.0, rel=0.25) for x in spread.values()), spread
    plain = realised_inputs(sc, hw, factors, freq_steps=False, dispersion=False)
    widened = realised_inputs(sc, hw, factors, freq_steps=False)
    err = {}
    for name, inp in (("plain", plain), ("widened", widened)):
        replay = run_policy(inp.scenario, spec, streams, known_profile=sc.profile)
        doc = compare({spec.name: hw}, {spec.name: replay}, sc.slo_s)
        err[name] = abs(doc["policies"][spec.name]["p95_latency_s"]["error"])
    assert err["widened"] < err["plain"], err  # measured: 3.5 % -> 0.8 %


def test_realised_freq_factors_replay_the_slowdown_a_step_really_caused(tmp_path: Path) -> None:
    """Stand-in hardware: n2 (R = 16 C/W, throttles) whose services slow by (f_max / f)^0.95 where the
    scenario states alpha = 0.5.  The step it ran at comes back at (1500 / 1000)^0.95 = 1.47, and the
    replay's effective ladder slows its services by that."""
    from edgeprune.physics import freq_factor
    from edgeprune.scenario import load_scenario
    from hil.compare import level_shapes, realised_factors, realised_freq_factors, with_realised_ladder
    from sim.runner import draw_streams, run_policy

    sc = with_cluster_physics_for(
        load_scenario(write_case(tmp_path / "case", short_scenario(120, slowed_s=(300, 400)))), tmp_path
    )
    stated_devices = []
    for d in sc.devices:
        phys = d.physics if d.physics is None else replace(d.physics, dvfs=replace(d.physics.dvfs, alpha=0.5))
        stated_devices.append(replace(d, physics=phys))
    stated = replace(sc, devices=tuple(stated_devices))
    spec = stated.policies[0]  # no-pruning
    hw = run_policy(sc, spec, draw_streams(sc))
    assert hw.timeline.filter(hw.timeline["freq_mhz"] == 1000.0).height > 10  # n2 ran throttled
    factors = realised_factors(stated, hw)
    steps = realised_freq_factors(stated, hw, factors, level_shapes(stated, hw, factors))
    assert set(steps) == {"n2"}
    assert steps["n2"][0] == 1.0 and steps["n2"][1] == pytest.approx(1.5**0.95, rel=0.05)
    n2 = {d.name: d for d in with_realised_ladder(stated, steps).devices}["n2"].physics
    assert n2 is not None and freq_factor(n2, 1) == pytest.approx(steps["n2"][1])
